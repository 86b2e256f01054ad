//! hyper's low-level HTTP/1.1 client (`hyper::client::conn::http1`) with our own pool: the
//! alternative to the hand-written `http1` framing that `transport` can route through, so the
//! two are measured side by side in one run (`SAIL_LITE_HTTP_CLIENT=hyper`; see BENCHMARKS.md,
//! "Transport"). Same contract as `Http1Pool::send`: one origin, keep-alive connections reused
//! most-recent first, a request that is safe to send twice resent once on a fresh connection
//! when a reused one turns out closed before any answer.

use crate::http1::{Connector, SendError, MAX_BODY_BYTES};
use crate::transport::{retry_hints, Response, IDLE_TIMEOUT};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{handshake, SendRequest};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use reqwest::header::{HeaderMap, HeaderValue, HOST, USER_AGENT};
use std::sync::Arc;
use std::time::Instant;

type Sender = SendRequest<Full<Bytes>>;

pub struct HyperPool {
    connector: Connector,
    idle: Mutex<Vec<(Sender, Instant)>>,
    max_idle: usize,
}

/// A request as the hyper route takes it (the same parts `Http1Pool::send` takes pre-rendered).
pub struct HyperRequest<'a> {
    pub method: &'a reqwest::Method,
    /// Path and query.
    pub target: &'a str,
    pub headers: &'a HeaderMap,
    pub idempotency_key: Option<&'a str>,
    pub body: Bytes,
    pub safe_to_resend: bool,
}

/// How one exchange failed: before any answer (the request may be resent when safe) or after.
enum Failure {
    Unanswered(String),
    Answered(SendError),
}

impl Failure {
    fn into_send_error(self) -> SendError {
        match self {
            Failure::Unanswered(m) => SendError::Transport(m),
            Failure::Answered(e) => e,
        }
    }
}

impl HyperPool {
    pub fn new(url: &reqwest::Url, tls: Arc<rustls::ClientConfig>, max_idle: usize) -> Result<HyperPool, String> {
        Ok(HyperPool { connector: Connector::new(url, tls)?, idle: Mutex::new(Vec::new()), max_idle })
    }

    pub async fn send(&self, req: HyperRequest<'_>) -> Result<Response, SendError> {
        let (mut sender, reused) = match self.checkout() {
            Some(sender) => (sender, true),
            None => (self.connect().await?, false),
        };
        match exchange(&mut sender, self.build(&req)?).await {
            Ok(response) => {
                self.checkin(sender);
                Ok(response)
            }
            Err(Failure::Unanswered(_)) if reused && req.safe_to_resend => {
                let mut fresh = self.connect().await?;
                let response = exchange(&mut fresh, self.build(&req)?).await.map_err(Failure::into_send_error)?;
                self.checkin(fresh);
                Ok(response)
            }
            Err(failure) => Err(failure.into_send_error()),
        }
    }

    fn build(&self, req: &HyperRequest<'_>) -> Result<hyper::Request<Full<Bytes>>, SendError> {
        let mut builder = hyper::Request::builder()
            .method(req.method.clone())
            .uri(req.target)
            .header(HOST, self.connector.authority.as_str())
            .header(USER_AGENT, concat!("sail-lite/", env!("CARGO_PKG_VERSION")));
        if let Some(headers) = builder.headers_mut() {
            headers.extend(req.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(key) = req.idempotency_key {
            let value = HeaderValue::from_str(key)
                .map_err(|_| SendError::InvalidRequest("the idempotency key is not a valid header value".into()))?;
            builder = builder.header("idempotency-key", value);
        }
        builder
            .body(Full::new(req.body.clone()))
            .map_err(|_| SendError::InvalidRequest("the request target contains a space, CR, LF or NUL".into()))
    }

    /// The most recently used idle connection that is still open and young enough.
    fn checkout(&self) -> Option<Sender> {
        let mut idle = self.idle.lock();
        while let Some((sender, since)) = idle.pop() {
            if since.elapsed() < IDLE_TIMEOUT && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn checkin(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock();
        // Dropping a sender ends its connection task, which closes the socket.
        idle.retain(|(s, since)| since.elapsed() < IDLE_TIMEOUT && !s.is_closed());
        if idle.len() < self.max_idle {
            idle.push((sender, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<Sender, SendError> {
        let stream = self.connector.connect().await?;
        let (sender, connection) =
            handshake(TokioIo::new(stream)).await.map_err(|e| SendError::Connect(format!("HTTP/1.1 handshake failed: {e}")))?;
        // The connection task drives the socket; it ends when the sender is dropped or the
        // server closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

async fn exchange(sender: &mut Sender, request: hyper::Request<Full<Bytes>>) -> Result<Response, Failure> {
    sender.ready().await.map_err(|e| Failure::Unanswered(format!("the connection closed: {e}")))?;
    let response = sender.send_request(request).await.map_err(|e| {
        if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
            Failure::Answered(SendError::Protocol(format!("malformed HTTP answer: {e}")))
        } else {
            Failure::Unanswered(format!("sending the request failed: {e}"))
        }
    })?;
    let status = response.status().as_u16();
    let (retry_after_ms, retry_after, should_retry) = retry_hints(response.headers());
    let body = match Limited::new(response.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Failure::Answered(SendError::Protocol("the response body is larger than 256 MiB".into())))
        }
        Err(e) if e.downcast_ref::<hyper::Error>().is_some_and(is_malformed_body) => {
            return Err(Failure::Answered(SendError::Protocol(format!("malformed HTTP body: {e}"))))
        }
        Err(e) => return Err(Failure::Answered(SendError::Transport(format!("reading the answer failed: {e}")))),
    };
    Ok(Response { status, retry_after_ms, retry_after, should_retry, body })
}

/// hyper reports a malformed body (a bad chunk size, say) as a body error whose source is an
/// `InvalidInput`/`InvalidData` I/O error; a connection that broke is another I/O kind.
fn is_malformed_body(e: &hyper::Error) -> bool {
    if e.is_parse() {
        return true;
    }
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    io.is_some_and(|io| matches!(io.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn tls() -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Arc::new(config)
    }

    /// A loopback server answering each connection's requests with `replies` in turn (one
    /// reply per request read), then closing: what the pool must survive.
    async fn serve(replies: Vec<&'static [u8]>, per_connection: usize) -> reqwest::Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = reqwest::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move {
            let mut replies = replies.into_iter();
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                for _ in 0..per_connection {
                    let mut buf = [0u8; 4096];
                    if sock.read(&mut buf).await.unwrap_or(0) == 0 {
                        break;
                    }
                    let Some(reply) = replies.next() else { return };
                    let _ = sock.write_all(reply).await;
                }
            }
        });
        url
    }

    fn get<'a>(headers: &'a HeaderMap, method: &'a reqwest::Method) -> HyperRequest<'a> {
        HyperRequest { method, target: "/v1/responses/r1", headers, idempotency_key: None, body: Bytes::new(), safe_to_resend: true }
    }

    #[tokio::test]
    async fn answers_reuse_connections_and_decode_chunked_bodies() {
        let url = serve(
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                b"HTTP/1.1 503 No\r\nRetry-After: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
            ],
            2,
        )
        .await;
        let pool = HyperPool::new(&url, tls(), 4).unwrap();
        let (headers, method) = (HeaderMap::new(), reqwest::Method::GET);
        let first = pool.send(get(&headers, &method)).await.unwrap();
        assert_eq!((first.status, &first.body[..]), (200, &b"ok"[..]));
        let second = pool.send(get(&headers, &method)).await.unwrap();
        assert_eq!((second.status, &second.body[..], second.retry_after.as_deref()), (503, &b"ab"[..], Some("3")));
    }

    #[tokio::test]
    async fn a_closed_idle_connection_is_resent_only_when_safe() {
        // One answer per connection, then the server closes: the second request finds its
        // reused connection closed.
        let ok: &'static [u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let url = serve(vec![ok, ok, ok], 1).await;
        let pool = HyperPool::new(&url, tls(), 4).unwrap();
        let (headers, method) = (HeaderMap::new(), reqwest::Method::GET);
        assert_eq!(pool.send(get(&headers, &method)).await.unwrap().status, 200);
        assert_eq!(pool.send(get(&headers, &method)).await.unwrap().status, 200);
    }

    #[tokio::test]
    async fn malformed_answers_are_protocol_errors() {
        let url = serve(vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n"], 1).await;
        let pool = HyperPool::new(&url, tls(), 4).unwrap();
        let (headers, method) = (HeaderMap::new(), reqwest::Method::GET);
        match pool.send(get(&headers, &method)).await {
            Err(SendError::Protocol(_)) => {}
            Err(other) => panic!("expected a protocol error, got {other:?}"),
            Ok(r) => panic!("expected a protocol error, got status {}", r.status),
        }
    }

    #[tokio::test]
    async fn refused_connections_are_connect_errors() {
        let url = reqwest::Url::parse("http://127.0.0.1:9").unwrap();
        let pool = HyperPool::new(&url, tls(), 4).unwrap();
        let (headers, method) = (HeaderMap::new(), reqwest::Method::GET);
        assert!(matches!(pool.send(get(&headers, &method)).await, Err(SendError::Connect(_))));
    }
}
