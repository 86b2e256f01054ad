//! The engine's one HTTP seam: creates, polls and cancels all go through `Transport::send`.
//!
//! A `Transport` serves one origin (with one CA bundle and one connection limit). It owns
//! the TLS configuration (platform roots plus the CA bundle, read and parsed once), the
//! connection pool and its idle timeout, the bound on concurrent requests, and the route:
//! the lean `http1` client, or reqwest when the environment names a proxy (reqwest applies
//! the proxy variables and NO_PROXY; `http1` does not implement proxies). Callers see one
//! request type, one answer type and one error type whichever route carries them.
//!
//! `SAIL_LITE_HTTP_CLIENT=hyper` routes direct requests through hyper's own HTTP/1.1 client
//! (`hyper_pool`) instead of `http1`: kept so the benchmark that chose `http1` can be re-run
//! from this code (BENCHMARKS.md, "Transport"), not as a user setting.

use crate::engine::HttpClientKey;
use crate::http1::{self, Http1Pool};
use crate::hyper_pool::{HyperPool, HyperRequest};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use rustls::pki_types::{pem::PemObject, CertificateDer};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Idle pooled connections older than this are not reused (servers commonly drop them at 60 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The answer to one request: what the sampler needs of it.
pub struct Response {
    pub status: u16,
    pub retry_after_ms: Option<String>,
    pub retry_after: Option<String>,
    /// `x-should-retry: true|false`: the server's own word on retrying (OpenAI's convention).
    pub should_retry: Option<bool>,
    pub body: Bytes,
}

/// Why a request got no answer. The variants match the retry policy's classes.
#[derive(Debug)]
pub enum SendError {
    /// No connection slot became free before the caller's deadline: nothing was sent.
    NoSlot,
    /// No connection could be made: the request never left.
    Connect(String),
    /// The server's certificate was rejected.
    Certificate(String),
    /// The connection failed or timed out after the request may have been sent.
    Transport { timeout: bool, message: String },
    /// The server answered outside the protocol, or the request could not be written.
    Protocol(String),
}

/// The headers every request of one completer carries, rendered once for either route.
pub struct Headers {
    /// CRLF-terminated lines for `http1`.
    lines: Vec<u8>,
    /// The same for reqwest (the key marked sensitive).
    map: HeaderMap,
}

impl Headers {
    pub fn new(api_key: Option<&str>) -> Result<Headers, String> {
        let mut map = HeaderMap::new();
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut lines = b"content-type: application/json\r\n".to_vec();
        if let Some(key) = api_key {
            let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| "api_key: expected printable ASCII".to_string())?;
            v.set_sensitive(true);
            lines.extend_from_slice(b"authorization: ");
            lines.extend_from_slice(v.as_bytes());
            lines.extend_from_slice(b"\r\n");
            map.insert(AUTHORIZATION, v);
        }
        Ok(Headers { lines, map })
    }

    #[cfg(test)]
    pub fn lines(&self) -> &[u8] {
        &self.lines
    }
}

/// One request.
pub struct Request<'a> {
    /// It may reach the server twice (polls, cancels, keyed creates), so a pooled connection
    /// found closed before any answer may be retried on a fresh one.
    pub may_resend: bool,
    pub method: reqwest::Method,
    pub url: &'a reqwest::Url,
    pub body: Option<Bytes>,
    pub headers: &'a Headers,
    pub idempotency_key: Option<&'a str>,
    /// Bounds the exchange once a connection slot is held.
    pub timeout: Duration,
    /// Bounds the wait for a connection slot and the exchange (the sample deadline), if any.
    pub deadline: Option<Instant>,
}

enum Route {
    Direct(Arc<Http1Pool>),
    Hyper(HyperPool),
    Proxied(reqwest::Client),
}

pub struct Transport {
    route: Route,
    /// At most `max_connections` requests in flight to this origin (so 50,000 pending samples
    /// never mean 50,000 sockets).
    permits: Semaphore,
}

impl Transport {
    pub fn new(key: &HttpClientKey, runtime: &tokio::runtime::Handle) -> Result<Arc<Transport>, String> {
        let ca_pem = match &key.ca_bundle {
            Some(path) => Some(std::fs::read(path).map_err(|e| format!("ca_bundle: cannot read the CA bundle file: {e}"))?),
            None => None,
        };
        let tls = Arc::new(tls_config(ca_pem.as_deref())?);
        let origin = reqwest::Url::parse(&key.origin).map_err(|_| "base_url: expected an http(s) URL".to_string())?;
        let route = if proxy_configured() {
            let client = reqwest::Client::builder()
                // Our APIs never redirect; following one could hand the bearer token to another host.
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(key.max_connections)
                .pool_idle_timeout(IDLE_TIMEOUT)
                .tcp_nodelay(true)
                .connect_timeout(CONNECT_TIMEOUT)
                .user_agent(concat!("sail-lite/", env!("CARGO_PKG_VERSION")))
                .use_preconfigured_tls((*tls).clone())
                .build()
                .map_err(|e| format!("could not build the HTTP client: {e}"))?;
            Route::Proxied(client)
        } else if std::env::var("SAIL_LITE_HTTP_CLIENT").is_ok_and(|v| v == "hyper") {
            Route::Hyper(HyperPool::new(&origin, tls, key.max_connections)?)
        } else {
            let pool = Arc::new(Http1Pool::new(&origin, tls, key.max_connections)?);
            Http1Pool::start_reaper(&pool, runtime);
            Route::Direct(pool)
        };
        Ok(Arc::new(Transport { route, permits: Semaphore::new(key.max_connections) }))
    }

    /// Send one request and read its whole answer (any status).
    pub async fn send(&self, req: Request<'_>) -> Result<Response, SendError> {
        let permit = self.permits.acquire();
        let _permit = match req.deadline {
            None => permit.await,
            Some(deadline) => tokio::time::timeout_at(deadline.into(), permit).await.map_err(|_| SendError::NoSlot)?,
        }
        .expect("the semaphore is never closed");
        // The time spent queueing for the slot comes off the deadline.
        let timeout = match req.deadline {
            Some(deadline) => req.timeout.min(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))),
            None => req.timeout,
        };
        let sent = async {
            match &self.route {
                Route::Direct(pool) => send_direct(pool, req).await,
                Route::Hyper(pool) => send_hyper(pool, req).await,
                Route::Proxied(client) => send_proxied(client, req).await,
            }
        };
        // Boxed so the sample's own future stays small while thousands of them wait.
        match tokio::time::timeout(timeout, Box::pin(sent)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Transport { timeout: true, message: format!("timed out after {:.1} s", timeout.as_secs_f64()) }),
        }
    }
}

/// Path and query: what the request line names (both direct routes send to their pool's origin).
fn request_target(url: &reqwest::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// The retry hints of an answer's headers: `retry-after-ms`, `retry-after`, `x-should-retry`
/// (for the routes whose client parses headers into a map; `http1` reads them while parsing).
pub fn retry_hints(headers: &HeaderMap) -> (Option<String>, Option<String>, Option<bool>) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let should_retry = header("x-should-retry").as_deref().and_then(crate::retry::parse_should_retry);
    (header("retry-after-ms"), header("retry-after"), should_retry)
}

async fn send_direct(pool: &Http1Pool, req: Request<'_>) -> Result<Response, SendError> {
    let target = request_target(req.url);
    let key_line = req.idempotency_key.map(|k| format!("idempotency-key: {k}\r\n")).unwrap_or_default();
    let headers = [req.headers.lines.as_slice(), key_line.as_bytes()];
    let body = req.body.as_deref().unwrap_or_default();
    pool.send(req.method.as_str(), &target, &headers, body, req.may_resend).await.map_err(SendError::from)
}

impl From<http1::SendError> for SendError {
    fn from(e: http1::SendError) -> SendError {
        match e {
            http1::SendError::Connect(m) => SendError::Connect(m),
            http1::SendError::Certificate(m) => SendError::Certificate(m),
            http1::SendError::Transport(m) => SendError::Transport { timeout: false, message: m },
            http1::SendError::Protocol(m) | http1::SendError::InvalidRequest(m) => SendError::Protocol(m),
        }
    }
}

async fn send_hyper(pool: &HyperPool, req: Request<'_>) -> Result<Response, SendError> {
    let target = request_target(req.url);
    let request = HyperRequest {
        method: &req.method,
        target: &target,
        headers: &req.headers.map,
        idempotency_key: req.idempotency_key,
        body: req.body.unwrap_or_default(),
        safe_to_resend: req.may_resend,
    };
    pool.send(request).await.map_err(SendError::from)
}

async fn send_proxied(client: &reqwest::Client, req: Request<'_>) -> Result<Response, SendError> {
    let mut builder = client.request(req.method, req.url.clone()).headers(req.headers.map.clone());
    if let Some(key) = req.idempotency_key {
        builder = builder.header("Idempotency-Key", key);
    }
    if let Some(b) = req.body {
        builder = builder.body(b);
    }
    let resp = match builder.send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() && is_certificate_error(&e) => return Err(SendError::Certificate(describe_reqwest_error(&e))),
        Err(e) if e.is_connect() => return Err(SendError::Connect(describe_reqwest_error(&e))),
        Err(e) => return Err(SendError::Transport { timeout: e.is_timeout(), message: describe_reqwest_error(&e) }),
    };
    let status = resp.status().as_u16();
    let (retry_after_ms, retry_after, should_retry) = retry_hints(resp.headers());
    if resp.content_length().is_some_and(|n| n > http1::MAX_BODY_BYTES as u64) {
        return Err(SendError::Protocol("the response body is larger than 256 MiB".into()));
    }
    match resp.bytes().await {
        Ok(body) if body.len() > http1::MAX_BODY_BYTES => Err(SendError::Protocol("the response body is larger than 256 MiB".into())),
        Ok(body) => Ok(Response { status, retry_after_ms, retry_after, should_retry, body }),
        Err(e) => Err(SendError::Transport { timeout: e.is_timeout(), message: describe_reqwest_error(&e) }),
    }
}

/// rustls reports an untrusted or invalid server certificate as `InvalidCertificate` (or no
/// certificate at all) somewhere in reqwest's source chain.
fn is_certificate_error(err: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some_and(http1::is_certificate_rejection) {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()).is_some_and(http1::is_certificate_rejection) {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// reqwest's errors carry the full URL (signed-URL-like query strings, hosts we do not want in
/// logs): keep only the kind of failure and the URL-free source chain.
fn describe_reqwest_error(err: &reqwest::Error) -> String {
    crate::sample_error::describe_transport_error(err)
}

/// The one TLS configuration of an origin: the platform's roots (honouring SSL_CERT_FILE/DIR,
/// skipping certificates it cannot parse, like reqwest's native-roots mode) plus `ca_bundle`.
fn tls_config(ca_bundle: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(pem) = ca_bundle {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("ca_bundle: not a PEM bundle: {e}"))?;
            roots.add(cert).map_err(|e| format!("ca_bundle: unusable certificate: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("ca_bundle: the file holds no PEM certificates".into());
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("could not configure TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Whether the environment names a proxy (then reqwest, which applies it and NO_PROXY, sends
/// everything).
fn proxy_configured() -> bool {
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_rendered_once_and_keys_must_be_printable() {
        let h = Headers::new(Some("sk-1")).unwrap();
        assert_eq!(h.lines(), b"content-type: application/json\r\nauthorization: Bearer sk-1\r\n");
        assert!(h.map.get(AUTHORIZATION).unwrap().is_sensitive());
        assert!(Headers::new(Some("a\r\nb")).is_err());
        assert_eq!(Headers::new(None).unwrap().lines(), b"content-type: application/json\r\n");
    }

    #[test]
    fn ca_bundles_must_hold_certificates() {
        assert!(tls_config(None).is_ok());
        assert!(tls_config(Some(b"not pem")).unwrap_err().contains("no PEM certificates"));
    }

    #[tokio::test]
    async fn the_slot_wait_is_bounded_by_the_deadline() {
        let key = HttpClientKey { origin: "http://127.0.0.1:9".into(), ca_bundle: None, max_connections: 1 };
        let t = Transport::new(&key, &tokio::runtime::Handle::current()).unwrap();
        let _held = t.permits.acquire().await.unwrap();
        let headers = Headers::new(None).unwrap();
        let url = reqwest::Url::parse("http://127.0.0.1:9/x").unwrap();
        let req = Request {
            may_resend: true,
            method: reqwest::Method::GET,
            url: &url,
            body: None,
            headers: &headers,
            idempotency_key: None,
            timeout: Duration::from_secs(60),
            deadline: Some(Instant::now() + Duration::from_millis(50)),
        };
        assert!(matches!(t.send(req).await, Err(SendError::NoSlot)));
    }
}
