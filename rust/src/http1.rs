//! A lean HTTP/1.1 keep-alive client for the sample hot path (create and poll).
//!
//! Why not reqwest here: a sample is two small JSON requests, and at thousands of samples a
//! second reqwest's general machinery (URL re-parsing, header maps, tower layers, a pool and
//! a connection task per request hand-off) cost more CPU than the requests themselves. Here a
//! request is one pre-rendered head plus body, written with one call on a pooled connection
//! the sample task owns for the duration of the exchange, and the answer is parsed in place.
//!
//! What it does not do (the reqwest client still serves those cases, see `transport`): proxies,
//! HTTP/2, redirects (never followed anyway), compression. Timeouts and cancellation belong to
//! the caller: dropping the future drops the connection, which then never returns to the pool.

use crate::transport::{Response, CONNECT_TIMEOUT, IDLE_TIMEOUT};
use bytes::Bytes;
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

const REAP_INTERVAL: Duration = Duration::from_secs(1);
const MAX_HEAD_BYTES: usize = 64 * 1024;
pub const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;
const MAX_HEADERS: usize = 64;

/// Why a request got no answer. The variants match the sampler's retry classes.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: the request never left.
    Connect(String),
    /// The server's certificate was rejected.
    Certificate(String),
    /// The connection failed after the request may have been sent.
    Transport(String),
    /// The server answered, but not in HTTP/1.1 we accept (malformed framing, a body over
    /// the limit, an unsupported transfer coding): retrying would get the same answer.
    Protocol(String),
    /// The request itself cannot be written (CR, LF or NUL in the target or a header).
    InvalidRequest(String),
}

/// How to open a connection to one origin: TCP, then TLS for https. Shared by this module's
/// pool and the hyper-based one `transport` can measure against it.
pub struct Connector {
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// `host:port` as the `host` header carries it.
    pub authority: String,
}

impl Connector {
    /// A connector for `url`'s origin (http or https), trusting the roots `tls` names.
    pub fn new(url: &reqwest::Url, tls: Arc<rustls::ClientConfig>) -> Result<Connector, String> {
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err("base_url: expected a URL with a host".into()),
        };
        let port = url.port_or_known_default().ok_or("base_url: expected an http(s) URL")?;
        let tls = match url.scheme() {
            "http" => None,
            "https" => {
                let name =
                    ServerName::try_from(host.clone()).map_err(|_| "base_url: the host is not a valid TLS server name".to_string())?;
                Some((tokio_rustls::TlsConnector::from(tls), name))
            }
            _ => return Err("base_url: expected an http(s) URL".into()),
        };
        let authority = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => unreachable!("checked above"),
        };
        Ok(Connector { host, port, tls, authority })
    }

    /// A fresh connection, TLS-wrapped for https.
    pub async fn connect(&self) -> Result<Stream, SendError> {
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((self.host.as_str(), self.port))).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(SendError::Connect(format!("could not connect to {}:{}: {e}", self.host, self.port))),
            Err(_) => return Err(SendError::Connect(format!("connecting to {}:{} timed out", self.host, self.port))),
        };
        // Requests are written whole; waiting to coalesce them would only add latency.
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some((connector, name)) => match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp)).await {
                Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls))),
                Ok(Err(e)) if is_certificate_error(&e) => Err(SendError::Certificate(format!("{}: {e}", self.host))),
                Ok(Err(e)) => Err(SendError::Connect(format!("TLS handshake with {} failed: {e}", self.host))),
                Err(_) => Err(SendError::Connect(format!("TLS handshake with {} timed out", self.host))),
            },
        }
    }
}

/// One origin's connections.
pub struct Http1Pool {
    connector: Connector,
    /// `host` header plus the fixed headers every request carries, pre-rendered.
    host_line: String,
    idle: Mutex<Vec<(Conn, Instant)>>,
    max_idle: usize,
}

impl Http1Pool {
    /// A pool for `url`'s origin (http or https), trusting the roots `tls` names.
    pub fn new(url: &reqwest::Url, tls: Arc<rustls::ClientConfig>, max_idle: usize) -> Result<Http1Pool, String> {
        let connector = Connector::new(url, tls)?;
        let host_line = format!("host: {}\r\nuser-agent: sail-lite/{}\r\n", connector.authority, env!("CARGO_PKG_VERSION"));
        Ok(Http1Pool { connector, host_line, idle: Mutex::new(Vec::new()), max_idle })
    }

    /// Send one request and read its whole answer. `headers`: blocks of extra header lines,
    /// each line ending in CRLF. `safe_to_resend`: the request may be sent again if a reused
    /// connection turns out to have been closed by the server before it answered (idempotent
    /// or keyed requests).
    pub async fn send(
        &self,
        method: &str,
        target: &str,
        headers: &[&[u8]],
        body: &[u8],
        safe_to_resend: bool,
    ) -> Result<Response, SendError> {
        check_request_head(method, target, headers)?;
        let request = self.render(method, target, headers, body);
        let (mut conn, reused) = match self.checkout() {
            Some(conn) => (conn, true),
            None => (self.connect().await?, false),
        };
        match conn.exchange(&request, method == "HEAD").await {
            Ok((response, reusable)) => {
                if reusable {
                    self.checkin(conn);
                }
                Ok(response)
            }
            // The server closed an idle connection just as we reused it: it never saw the
            // request, but only a request that is safe to send twice is sent again.
            Err(ExchangeError { answered: false, .. }) if reused && safe_to_resend => {
                let mut fresh = self.connect().await?;
                let (response, reusable) = fresh.exchange(&request, method == "HEAD").await.map_err(ExchangeError::into_send_error)?;
                if reusable {
                    self.checkin(fresh);
                }
                Ok(response)
            }
            Err(e) => Err(e.into_send_error()),
        }
    }

    fn render(&self, method: &str, target: &str, headers: &[&[u8]], body: &[u8]) -> Vec<u8> {
        let extra: usize = headers.iter().map(|h| h.len()).sum();
        let mut out = Vec::with_capacity(method.len() + target.len() + self.host_line.len() + extra + body.len() + 64);
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        out.extend_from_slice(self.host_line.as_bytes());
        for block in headers {
            out.extend_from_slice(block);
        }
        if !body.is_empty() || method == "POST" {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(body.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }

    /// The most recently used idle connection that is still open.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock();
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < IDLE_TIMEOUT && conn.looks_open() {
                return Some(conn);
            }
        }
        None
    }

    /// Close idle connections the server has closed or that sat unused too long, every
    /// second, so sockets never linger half-closed while the pool is quiet. Stops when the
    /// pool is dropped.
    pub fn start_reaper(pool: &Arc<Http1Pool>, runtime: &tokio::runtime::Handle) {
        let pool = Arc::downgrade(pool);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(REAP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.idle.lock().retain(|(conn, since)| since.elapsed() < IDLE_TIMEOUT && conn.looks_open());
            }
        });
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock();
        if idle.len() < self.max_idle {
            idle.push((conn, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let stream = self.connector.connect().await?;
        Ok(Conn { stream, buf: Vec::with_capacity(8 * 1024) })
    }
}

fn is_certificate_error(e: &io::Error) -> bool {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).is_some_and(is_certificate_rejection)
}

/// The one definition of "the server's certificate was rejected" (both routes use it).
pub fn is_certificate_rejection(e: &rustls::Error) -> bool {
    matches!(e, rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
}

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

struct Conn {
    stream: Stream,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
}

struct ExchangeError {
    /// Whether any byte of an answer arrived (if not, the server may never have seen the request).
    answered: bool,
    /// The answer broke the protocol (as opposed to the connection breaking).
    protocol: bool,
    message: String,
}

impl ExchangeError {
    fn new(answered: bool, message: impl Into<String>) -> ExchangeError {
        ExchangeError { answered, protocol: false, message: message.into() }
    }

    fn protocol(message: impl Into<String>) -> ExchangeError {
        ExchangeError { answered: true, protocol: true, message: message.into() }
    }

    fn into_send_error(self) -> SendError {
        if self.protocol {
            SendError::Protocol(self.message)
        } else {
            SendError::Transport(self.message)
        }
    }
}

impl Conn {
    /// An idle connection the server has closed (or sent something unasked on) is readable.
    fn looks_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.tcp().try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Write `request`, read the answer. Returns it and whether the connection may be reused.
    async fn exchange(&mut self, request: &[u8], head_only: bool) -> Result<(Response, bool), ExchangeError> {
        self.buf.clear();
        let wrote = async {
            self.stream.write_all(request).await?;
            self.stream.flush().await
        };
        if let Err(e) = wrote.await {
            return Err(ExchangeError::new(false, format!("sending the request failed: {e}")));
        }
        let head = self.read_head().await?;
        let no_body = head_only || head.status == 204 || head.status == 304 || (100..200).contains(&head.status);
        let (body, framed) = if no_body {
            (Bytes::new(), true)
        } else if head.chunked {
            (self.read_chunked().await?, true)
        } else if let Some(len) = head.content_length {
            (self.read_exact_body(len).await?, true)
        } else {
            (self.read_to_end().await?, false)
        };
        // After a 101 (never asked for) the connection no longer speaks HTTP/1.1. A head with
        // both content-length and transfer-encoding may be a smuggling attempt: never reuse.
        let reusable = framed && head.keep_alive && !head.ambiguous_length && self.buf.is_empty() && head.status != 101;
        let response = Response {
            status: head.status,
            retry_after_ms: head.retry_after_ms,
            retry_after: head.retry_after,
            should_retry: head.should_retry,
            body,
        };
        Ok((response, reusable))
    }

    /// Read more bytes into `buf`; end of stream is an error (`what` says what was cut short).
    async fn fill(&mut self, what: &str) -> Result<(), ExchangeError> {
        let answered = !self.buf.is_empty() || what != "response head";
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8192);
        }
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err(ExchangeError::new(answered, format!("the server closed the connection before the end of the {what}"))),
            Ok(_) => Ok(()),
            Err(e) => Err(ExchangeError::new(answered, format!("reading the {what} failed: {e}"))),
        }
    }

    async fn read_head(&mut self) -> Result<Head, ExchangeError> {
        // After an interim answer the server has surely seen the request: never resend it.
        let mut interim_seen = false;
        loop {
            if !self.buf.is_empty() {
                if let Some((head, consumed)) = parse_head(&self.buf).map_err(ExchangeError::protocol)? {
                    self.buf.drain(..consumed);
                    // Interim answers (100 Continue, 103 Early Hints) precede the real one.
                    // 101 would switch protocols, which we never ask for: it stays final.
                    if (100..200).contains(&head.status) && head.status != 101 {
                        interim_seen = true;
                        continue;
                    }
                    return Ok(head);
                }
                if self.buf.len() > MAX_HEAD_BYTES {
                    return Err(ExchangeError::protocol("the response head is larger than 64 KiB"));
                }
            }
            if let Err(mut e) = self.fill("response head").await {
                e.answered |= interim_seen;
                return Err(e);
            }
        }
    }

    async fn read_exact_body(&mut self, len: usize) -> Result<Bytes, ExchangeError> {
        if len > MAX_BODY_BYTES {
            return Err(ExchangeError::protocol(format!("the response body ({len} bytes) is larger than 256 MiB")));
        }
        while self.buf.len() < len {
            self.fill("response body").await?;
        }
        let rest = self.buf.split_off(len);
        let body = std::mem::replace(&mut self.buf, rest);
        Ok(Bytes::from(body))
    }

    async fn read_to_end(&mut self) -> Result<Bytes, ExchangeError> {
        loop {
            if self.buf.len() > MAX_BODY_BYTES {
                return Err(ExchangeError::protocol("the response body is larger than 256 MiB"));
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Ok(Bytes::from(std::mem::take(&mut self.buf))),
                Ok(_) => {}
                Err(e) => return Err(ExchangeError::new(true, format!("reading the response body failed: {e}"))),
            }
        }
    }

    async fn read_chunked(&mut self) -> Result<Bytes, ExchangeError> {
        let mut body = Vec::new();
        let mut pos = 0; // parse position in `buf`
        loop {
            match next_chunk(&self.buf, pos, body.len()).map_err(ExchangeError::protocol)? {
                ChunkStep::NeedMore => self.fill("response body").await?,
                ChunkStep::Data { start, end } => {
                    body.extend_from_slice(&self.buf[start..end]);
                    pos = end + 2;
                }
                ChunkStep::End { consumed } => {
                    self.buf.drain(..consumed);
                    return Ok(Bytes::from(body));
                }
            }
        }
    }
}

/// What the client needs from a response head.
#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    keep_alive: bool,
    retry_after_ms: Option<String>,
    retry_after: Option<String>,
    should_retry: Option<bool>,
    /// Both content-length and transfer-encoding were sent: the body is read as chunked, but
    /// the connection is not reused.
    ambiguous_length: bool,
}

/// Parse a response head; `None` if incomplete, else the head and the bytes it used.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let consumed = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed HTTP response head: {e}")),
    };
    let status = response.code.ok_or("malformed HTTP response head: no status")?;
    let mut head = Head {
        status,
        content_length: None,
        chunked: false,
        // HTTP/1.0 closes unless asked otherwise; 1.1 keeps alive unless told to close.
        keep_alive: response.version == Some(1),
        retry_after_ms: None,
        retry_after: None,
        should_retry: None,
        ambiguous_length: false,
    };
    let mut transfer_encoding = false;
    for h in response.headers.iter() {
        let value = || String::from_utf8_lossy(h.value).trim().to_string();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n =
                std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok()).ok_or("malformed content-length header")?;
            if head.content_length.is_some_and(|m| m != n) {
                return Err("conflicting content-length headers".into());
            }
            head.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only `chunked` alone is accepted: we never ask for compression, and a coding we
            // cannot undo would hand the decoder bytes it cannot read.
            let codings = value().to_ascii_lowercase();
            for coding in codings.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if coding != "chunked" || head.chunked {
                    return Err(format!("unsupported transfer-encoding {codings:?} (only chunked is accepted)"));
                }
                head.chunked = true;
            }
            transfer_encoding = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = value().to_ascii_lowercase();
            if v.split(',').any(|t| t.trim() == "close") {
                head.keep_alive = false;
            } else if v.split(',').any(|t| t.trim() == "keep-alive") {
                head.keep_alive = true;
            }
        } else if h.name.eq_ignore_ascii_case("retry-after-ms") {
            head.retry_after_ms = Some(value());
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = Some(value());
        } else if h.name.eq_ignore_ascii_case("x-should-retry") {
            head.should_retry = crate::retry::parse_should_retry(&value());
        }
    }
    if transfer_encoding && !head.chunked {
        return Err("empty transfer-encoding header".into());
    }
    if head.chunked && head.content_length.is_some() {
        // RFC 9112 6.3: chunked framing wins over content-length, and the connection is
        // closed afterwards.
        head.content_length = None;
        head.ambiguous_length = true;
    }
    Ok(Some((head, consumed)))
}

#[derive(Debug, PartialEq)]
enum ChunkStep {
    NeedMore,
    /// A chunk's data is `buf[start..end]`, followed by CRLF (checked).
    Data {
        start: usize,
        end: usize,
    },
    /// The last chunk and trailers end at `consumed`.
    End {
        consumed: usize,
    },
}

/// The chunk size lines we accept: 1-15 hex digits (a 256 MiB body needs 8), then optional
/// extensions. Longer sizes could overflow, so they are refused before any arithmetic.
const MAX_CHUNK_SIZE_DIGITS: usize = 15;
const MAX_CHUNK_LINE: usize = 1024;

/// The next step of decoding a chunked body in `buf` from `pos`, when `decoded` body bytes
/// are already out. Pure and total: every index is checked, so no input can panic.
fn next_chunk(buf: &[u8], pos: usize, decoded: usize) -> Result<ChunkStep, String> {
    let rest = buf.get(pos..).ok_or("malformed chunked body (position past the end)")?;
    let Some(line_end) = find_crlf(rest) else {
        return if rest.len() > MAX_CHUNK_LINE {
            Err("malformed chunked body (chunk size line too long)".into())
        } else {
            Ok(ChunkStep::NeedMore)
        };
    };
    let len = parse_chunk_size(&rest[..line_end])?;
    let header = pos + line_end + 2;
    if len == 0 {
        // Last chunk: skip trailer lines up to the empty line.
        let mut at = header;
        loop {
            let tail = &buf[at.min(buf.len())..];
            let Some(end) = find_crlf(tail) else {
                return if tail.len() > MAX_HEAD_BYTES {
                    Err("malformed chunked body (trailers too long)".into())
                } else {
                    Ok(ChunkStep::NeedMore)
                };
            };
            at += end + 2;
            if end == 0 {
                return Ok(ChunkStep::End { consumed: at });
            }
        }
    }
    if decoded.saturating_add(len) > MAX_BODY_BYTES {
        return Err("the response body is larger than 256 MiB".into());
    }
    // len <= 256 MiB and header <= buf.len(), so these sums cannot overflow.
    let end = header + len;
    if buf.len() < end + 2 {
        return Ok(ChunkStep::NeedMore);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err("malformed chunked body (a chunk does not end in CRLF)".into());
    }
    Ok(ChunkStep::Data { start: header, end })
}

/// `1a` or `1A;ext=1`: strictly hex digits (no sign, no spaces inside), then extensions.
fn parse_chunk_size(line: &[u8]) -> Result<usize, String> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = digits.trim_ascii();
    let shown = || String::from_utf8_lossy(&digits[..digits.len().min(32)]).into_owned();
    if digits.is_empty() || digits.len() > MAX_CHUNK_SIZE_DIGITS || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(format!("malformed chunked body (chunk size {:?})", shown()));
    }
    digits.iter().try_fold(0usize, |n, &d| {
        let v = (d as char).to_digit(16).unwrap_or(0) as usize;
        n.checked_mul(16).and_then(|n| n.checked_add(v)).ok_or_else(|| format!("malformed chunked body (chunk size {:?})", shown()))
    })
}

/// A request head must not carry CR, LF or NUL anywhere but its line ends: one in a target or
/// header value would let a caller-supplied string inject headers.
fn check_request_head(method: &str, target: &str, headers: &[&[u8]]) -> Result<(), SendError> {
    let bad = |b: &u8| matches!(b, b'\r' | b'\n' | 0);
    if method.bytes().any(|b| bad(&b) || b == b' ') || target.bytes().any(|b| bad(&b) || b == b' ') {
        return Err(SendError::InvalidRequest("the request target contains a space, CR, LF or NUL".into()));
    }
    for block in headers {
        // Each block is whole lines ending in CRLF: nothing but those line ends may be CR/LF.
        for line in block.split_inclusive(|&b| b == b'\n') {
            let body = line.strip_suffix(b"\r\n").unwrap_or(line);
            if body.iter().any(bad) {
                return Err(SendError::InvalidRequest("a request header contains CR, LF or NUL".into()));
            }
        }
    }
    Ok(())
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    fn test_tls() -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = rustls::RootCertStore::empty();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    #[test]
    fn parses_a_keep_alive_head() {
        let raw = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 12\r\nRetry-After: 2\r\nretry-after-ms: 1500\r\n\r\n{\"error\":{}}";
        let (head, used) = parse_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 429);
        assert_eq!(head.content_length, Some(12));
        assert!(head.keep_alive && !head.chunked);
        assert_eq!(head.retry_after.as_deref(), Some("2"));
        assert_eq!(head.retry_after_ms.as_deref(), Some("1500"));
        assert_eq!(&raw[used..], b"{\"error\":{}}");
    }

    #[test]
    fn incomplete_and_malformed_heads() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
        assert!(parse_head(b"NOT HTTP\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").is_err());
    }

    #[test]
    fn connection_close_and_http10_are_not_reused() {
        let (h, _) = parse_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let (h, _) = parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let (h, _) = parse_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").unwrap().unwrap();
        assert!(h.keep_alive);
    }

    #[test]
    fn chunked_wins_over_content_length_but_the_connection_is_not_reused() {
        let (h, _) = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap();
        assert!(h.chunked && h.ambiguous_length);
        assert_eq!(h.content_length, None);
    }

    #[test]
    fn transfer_codings_other_than_chunked_are_refused() {
        for te in ["gzip, chunked", "gzip", "chunked, chunked", "identity", ""] {
            let raw = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert!(parse_head(raw.as_bytes()).is_err(), "{te:?}");
        }
    }

    #[test]
    fn should_retry_header() {
        let (h, _) = parse_head(b"HTTP/1.1 503 X\r\nx-should-retry: false\r\nContent-Length: 0\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.should_retry, Some(false));
        let (h, _) = parse_head(b"HTTP/1.1 400 X\r\nX-Should-Retry: true\r\nContent-Length: 0\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.should_retry, Some(true));
    }

    #[test]
    fn chunk_steps() {
        assert_eq!(next_chunk(b"1a", 0, 0).unwrap(), ChunkStep::NeedMore);
        assert_eq!(next_chunk(b"1A;ext=1\r\nabc", 0, 0).unwrap(), ChunkStep::NeedMore);
        assert_eq!(next_chunk(b"3;ext=1\r\nabc\r\n", 0, 0).unwrap(), ChunkStep::Data { start: 9, end: 12 });
        assert_eq!(next_chunk(b"xx3\r\nabc\r\n", 2, 0).unwrap(), ChunkStep::Data { start: 5, end: 8 });
        assert_eq!(next_chunk(b"0\r\n", 0, 0).unwrap(), ChunkStep::NeedMore);
        assert_eq!(next_chunk(b"0\r\n\r\nNEXT", 0, 0).unwrap(), ChunkStep::End { consumed: 5 });
        assert_eq!(next_chunk(b"0\r\nX-Trailer: 1\r\n\r\n", 0, 0).unwrap(), ChunkStep::End { consumed: 19 });
        assert!(next_chunk(b"3\r\nabcXY", 0, 0).is_err());
        for bad in [&b"zz\r\n"[..], b"-1\r\n", b"+1\r\n", b"\r\n", b"1 2\r\n", b"0x10\r\n"] {
            assert!(next_chunk(bad, 0, 0).is_err(), "{bad:?}");
        }
    }

    /// Regression: `1\r\nx\r\nffffffffffffffff\r\nAB` overflowed `header + len` and panicked.
    #[test]
    fn huge_chunk_sizes_are_errors_not_panics() {
        let raw = b"1\r\nx\r\nffffffffffffffff\r\nAB";
        let ChunkStep::Data { end, .. } = next_chunk(raw, 0, 0).unwrap() else { panic!("first chunk") };
        assert!(next_chunk(raw, end + 2, 1).unwrap_err().contains("chunk size"));
        assert!(next_chunk(b"10000001\r\n", 0, 0).unwrap_err().contains("256 MiB"));
        assert!(next_chunk(b"10\r\n", 0, MAX_BODY_BYTES - 1).unwrap_err().contains("256 MiB"));
    }

    #[test]
    fn request_heads_with_cr_lf_or_nul_are_refused() {
        assert!(check_request_head("GET", "/v1/responses/abc", &[b"a: b\r\nc: d\r\n"]).is_ok());
        assert!(check_request_head("GET", "/v1/x\r\nevil: 1", &[]).is_err());
        assert!(check_request_head("GET", "/v1/x\0", &[]).is_err());
        assert!(check_request_head("GET", "/a b", &[]).is_err());
        assert!(check_request_head("GET", "/", &[b"a: b\rc\r\n"]).is_err());
        assert!(check_request_head("GET", "/", &[b"a: b\nc: d\r\n"]).is_err());
        assert!(check_request_head("GET", "/", &[b"a: \0\r\n"]).is_err());
    }

    /// Decode a whole chunked body held in `buf`, as `read_chunked` does, without I/O.
    fn decode_chunked(buf: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let (mut pos, mut body) = (0, Vec::new());
        loop {
            match next_chunk(buf, pos, body.len())? {
                ChunkStep::NeedMore => return Ok(None),
                ChunkStep::Data { start, end } => {
                    assert!(start >= pos && end >= start && end + 2 <= buf.len());
                    body.extend_from_slice(&buf[start..end]);
                    pos = end + 2;
                }
                ChunkStep::End { consumed } => {
                    assert!(consumed <= buf.len());
                    return Ok(Some(body));
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Fuzz-style: no byte string makes the response parser panic.
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if let Ok(Some((head, used))) = parse_head(&raw) {
                proptest::prop_assert!(used <= raw.len());
                let _ = head;
            }
            let _ = decode_chunked(&raw);
            for pos in [0, 1, raw.len(), raw.len() + 1] {
                let _ = next_chunk(&raw, pos, 0);
            }
        }

        /// Bytes that look like chunked framing (hex-ish sizes, CRLFs) never panic either, and
        /// a well-formed encoding always decodes back to its data.
        #[test]
        fn chunk_like_bytes_never_panic(
            parts in proptest::collection::vec(proptest::prop_oneof![
                proptest::prelude::Just(b"\r\n".to_vec()),
                "[0-9a-fA-F]{1,20}".prop_map(|s| s.into_bytes()),
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8),
            ], 0..16),
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..40), 0..6),
        ) {
            let _ = decode_chunked(&parts.concat());
            let mut wire = Vec::new();
            for c in &chunks {
                wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            proptest::prop_assert_eq!(decode_chunked(&wire).unwrap(), Some(chunks.concat()));
        }
    }

    /// A loopback server answering each connection with the given raw bytes per request.
    async fn serve(replies: Vec<&'static [u8]>) -> (reqwest::Url, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = reqwest::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let task = tokio::spawn(async move {
            let mut connections = 0;
            let mut replies = replies.into_iter();
            while let Ok((mut socket, _)) = listener.accept().await {
                connections += 1;
                loop {
                    let mut buf = vec![0u8; 65536];
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    match replies.next() {
                        Some([]) => break, // close without answering
                        Some(r) => socket.write_all(r).await.unwrap(),
                        None => return connections,
                    }
                    if replies.len() == 0 {
                        return connections;
                    }
                }
                if replies.len() == 0 {
                    return connections;
                }
            }
            connections
        });
        (url, task)
    }

    #[tokio::test]
    async fn skips_interim_answers_reuses_connections_and_decodes_chunked_bodies() {
        let (url, server) = serve(vec![
            b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
        ])
        .await;
        let pool = Http1Pool::new(&url, test_tls(), 4).unwrap();
        let a = pool.send("GET", "/a", &[], b"", true).await.unwrap();
        assert_eq!((a.status, &a.body[..]), (200, &b"ok"[..]));
        let b = pool.send("POST", "/b", &[b"content-type: application/json\r\n"], b"{}", true).await.unwrap();
        assert_eq!(&b.body[..], b"abcde");
        let c = pool.send("GET", "/c", &[], b"", true).await.unwrap();
        assert_eq!((c.status, c.retry_after.as_deref()), (503, Some("1")));
        assert_eq!(server.await.unwrap(), 1, "all three requests shared one connection");
    }

    #[tokio::test]
    async fn a_closed_idle_connection_is_resent_only_when_safe() {
        // First connection answers once, then closes on the next request without answering.
        let (url, _server) =
            serve(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"]).await;
        let pool = Http1Pool::new(&url, test_tls(), 4).unwrap();
        pool.send("GET", "/", &[], b"", true).await.unwrap();
        let again = pool.send("GET", "/", &[], b"", true).await.unwrap();
        assert_eq!(&again.body[..], b"x");

        let (url, _server) = serve(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b""]).await;
        let pool = Http1Pool::new(&url, test_tls(), 4).unwrap();
        pool.send("POST", "/", &[], b"{}", false).await.unwrap();
        assert!(matches!(pool.send("POST", "/", &[], b"{}", false).await, Err(SendError::Transport(_))));
    }

    #[tokio::test]
    async fn the_reaper_closes_connections_the_server_closed() {
        let (url, server) = serve(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]).await;
        let pool = Arc::new(Http1Pool::new(&url, test_tls(), 4).unwrap());
        Http1Pool::start_reaper(&pool, &tokio::runtime::Handle::current());
        pool.send("GET", "/", &[], b"", true).await.unwrap();
        assert_eq!(pool.idle.lock().len(), 1);
        server.await.unwrap(); // the server is gone, and with it its end of the connection
        tokio::time::sleep(REAP_INTERVAL * 2).await;
        assert_eq!(pool.idle.lock().len(), 0, "the half-closed connection was not dropped");
    }

    #[tokio::test]
    async fn refused_connections_are_connect_errors() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = reqwest::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        drop(listener);
        let pool = Http1Pool::new(&url, test_tls(), 4).unwrap();
        assert!(matches!(pool.send("GET", "/", &[], b"", true).await, Err(SendError::Connect(_))));
    }
}
