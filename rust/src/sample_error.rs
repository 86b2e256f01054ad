//! The one error type a sample ends with, mirrored 1:1 by Python's `sail_lite.errors`
//! (the `kind` picks the class; see `errors.from_engine`).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Status,
    Timeout,
    Connection,
    Failed,
    Cancelled,
    Expired,
    Protocol,
    /// A bug in the engine (a caught panic).
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Status => "status",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connection => "connection",
            ErrorKind::Failed => "failed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Expired => "expired",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Internal => "internal",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SampleError {
    pub kind: ErrorKind,
    pub message: String,
    pub status: Option<u16>,
    pub code: Option<String>,
    /// The error envelope's `type` (e.g. `invalid_request_error`), for status errors.
    pub error_type: Option<String>,
    pub response_id: Option<String>,
    pub attempts: u32,
}

impl SampleError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        SampleError { kind, message: message.into(), status: None, code: None, error_type: None, response_id: None, attempts: 0 }
    }

    pub fn with_response_id(mut self, id: Option<&str>) -> Self {
        if self.response_id.is_none() {
            self.response_id = id.map(str::to_owned);
        }
        self
    }
}

/// Errors from reqwest carry the full URL; ours may carry signed-URL-like query strings
/// or hosts we do not want in logs. Keep only the kind of failure, never the URL.
pub fn describe_transport_error(err: &reqwest::Error) -> String {
    let what = if err.is_connect() {
        "could not connect"
    } else if err.is_timeout() {
        "timed out"
    } else if err.is_body() || err.is_decode() {
        "the connection broke while reading the answer"
    } else if err.is_request() {
        "the request could not be completed (connection closed or reset)"
    } else {
        "transport error"
    };
    // The source chain (e.g. "connection refused", "connection reset by peer") is URL-free.
    let mut detail = String::new();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {detail}")
    }
}
