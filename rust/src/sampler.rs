//! One task per sample: create -> poll until terminal -> decode, with retries, backoff,
//! deadlines and best-effort server-side cancellation. Nothing here touches Python.

use crate::decode::{self, PollOutcome};
use crate::engine::{Engine, HttpPool, Metrics};
use crate::http1::{self, Http1Pool};
use crate::hub::{Completion, Hub, SampleOutput, SampleStats};
use crate::poll_schedule::PollSchedule;
use crate::request_body::{self, SamplingDefaults, Stop};
use crate::retry::{self, RetryPolicy};
use crate::sample_error::{describe_transport_error, ErrorKind, SampleError};
use bytes::Bytes;
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Sail's background Responses API (create + poll).
    Responses,
    /// An OpenAI-compatible `/completions` endpoint (one synchronous request).
    Completions,
}

/// Everything a completer fixes at construction.
pub struct SamplerConfig {
    pub protocol: Protocol,
    /// Responses: the API root (…/v1 is appended). Completions: the versioned base (…/v1).
    pub base_url: String,
    pub api_key: Option<String>,
    pub defaults: SamplingDefaults,
    pub completion_window: String,
    pub attempt_timeout: Option<Duration>,
    pub sample_timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub poll: PollSchedule,
}

pub struct Sampler {
    pub config: SamplerConfig,
    auth_headers: HeaderMap,
    /// The same headers pre-rendered for the `http1` client (CRLF-terminated lines).
    http1_headers: Vec<u8>,
    /// Parsed once: reqwest would otherwise re-parse (and IDNA-check) the URL per request.
    create_url: reqwest::Url,
    responses_url: reqwest::Url,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Result<Sampler, String> {
        let mut auth_headers = HeaderMap::new();
        auth_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut http1_headers = b"content-type: application/json\r\n".to_vec();
        if let Some(key) = &config.api_key {
            let mut v = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| "api_key: expected printable ASCII".to_string())?;
            v.set_sensitive(true);
            http1_headers.extend_from_slice(b"authorization: ");
            http1_headers.extend_from_slice(v.as_bytes());
            http1_headers.extend_from_slice(b"\r\n");
            auth_headers.insert(AUTHORIZATION, v);
        }
        let base = config.base_url.trim_end_matches('/').to_string();
        let (create_url, responses_url) = match config.protocol {
            Protocol::Responses => (format!("{base}/v1/responses"), format!("{base}/v1/responses/")),
            Protocol::Completions => (format!("{base}/completions"), format!("{base}/")),
        };
        let parse = |u: &str| reqwest::Url::parse(u).map_err(|_| "base_url: expected an http(s) URL".to_string());
        Ok(Sampler { create_url: parse(&create_url)?, responses_url: parse(&responses_url)?, config, auth_headers, http1_headers })
    }

    /// `{base}/v1/responses/{id}` plus `suffix` path segments, without re-parsing the base.
    fn response_url(&self, id: &str, suffix: Option<&str>) -> reqwest::Url {
        let mut url = self.responses_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(id);
            if let Some(s) = suffix {
                segments.push(s);
            }
        }
        url
    }

    /// Idempotency keys go only on scheduled windows: asap-only models reject keyed creates.
    fn uses_idempotency_key(&self) -> bool {
        self.config.protocol == Protocol::Responses && self.config.completion_window != "asap"
    }
}

pub struct SampleJob {
    pub request_id: u64,
    pub prompt: Vec<u32>,
    pub max_tokens: u32,
    pub stop: Stop,
    /// The caller's explicit `prompt_cache_key` (else the completer's setting decides).
    pub prompt_cache_key: Option<String>,
}

/// Run one sample to its end and hand the result to the hub.
pub async fn run(engine: &'static Engine, pool: HttpPool, sampler: Arc<Sampler>, hub: Arc<Hub>, job: SampleJob, cancel: CancellationToken) {
    Metrics::add(&engine.metrics.samples_started, 1);
    let request_id = job.request_id;
    let mut ctx = Ctx { engine, pool, sampler, cancel, stats: SampleStats::default(), started: Instant::now() };
    let work = async {
        match ctx.sampler.config.protocol {
            Protocol::Responses => ctx.run_response(job).await,
            Protocol::Completions => ctx.run_completion(job).await,
        }
    };
    // A bug must surface as an exception on the awaiting side, never as a sample that
    // silently never completes.
    let result = match AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(SampleError::new(ErrorKind::Internal, format!("internal error in the sail-lite engine: {}", panic_message(&panic)))),
    };
    let m = &engine.metrics;
    Metrics::add(if result.is_ok() { &m.samples_succeeded } else { &m.samples_failed }, 1);
    if let Ok(out) = &result {
        m.usage.add(&ctx.sampler.config.completion_window, &out.sample.usage);
    }
    hub.push(Completion { request_id, result, stats: ctx.stats });
}

struct Ctx {
    engine: &'static Engine,
    pool: HttpPool,
    sampler: Arc<Sampler>,
    cancel: CancellationToken,
    stats: SampleStats,
    started: Instant,
}

/// Why a wait ended early.
enum Abort {
    Cancelled,
    Deadline,
}

/// One failed HTTP attempt, classified for the retry decision.
enum AttemptFailure {
    Status { status: u16, code: Option<String>, message: String, retry_after: Option<Duration> },
    /// Never reached the server: always safe to retry.
    Connect(String),
    /// The server's certificate was rejected: retrying cannot help.
    Tls(String),
    /// May have reached the server (timeout, reset mid-request).
    Transport { timeout: bool, message: String },
}

impl Ctx {
    fn deadline(&self) -> Option<Instant> {
        // An absurdly long timeout (beyond what Instant can hold) means no deadline.
        self.sampler.config.sample_timeout.and_then(|t| self.started.checked_add(t))
    }

    fn remaining(&self) -> Option<Duration> {
        self.deadline().map(|d| d.saturating_duration_since(Instant::now()))
    }

    fn unit_random(&self) -> f64 {
        rand::random::<f64>()
    }

    /// Sleep unless cancelled or past the sample deadline first.
    async fn sleep(&self, d: Duration) -> Result<(), Abort> {
        let until = Instant::now() + d;
        let deadline = self.deadline();
        let wake = deadline.map_or(until, |dl| dl.min(until));
        tokio::select! {
            _ = self.cancel.cancelled() => Err(Abort::Cancelled),
            _ = tokio::time::sleep_until(wake.into()) => {
                if deadline.is_some_and(|dl| Instant::now() >= dl && dl <= until) { Err(Abort::Deadline) } else { Ok(()) }
            }
        }
    }

    /// One HTTP attempt, bounded by the attempt timeout and the sample deadline.
    async fn attempt(&mut self, method: reqwest::Method, url: &reqwest::Url, body: Option<Bytes>, idem_key: Option<&str>) -> Result<Bytes, AttemptFailure> {
        let _permit = self.pool.permits.acquire().await.expect("the semaphore is never closed");
        let mut timeout = self.sampler.config.attempt_timeout.unwrap_or(Duration::from_secs(600));
        if let Some(rem) = self.remaining() {
            timeout = timeout.min(rem.max(Duration::from_millis(1)));
        }
        self.stats.http_requests += 1;
        Metrics::add(&self.engine.metrics.http_requests, 1);
        let answer = match &self.pool.http1 {
            Some(http1) => self.send_http1(http1, &method, url, body.as_deref(), idem_key, timeout).await?,
            None => self.send_reqwest(method, url, body, idem_key, timeout).await?,
        };
        let status = answer.status;
        if (200..300).contains(&status) {
            return Ok(answer.body);
        }
        let (code, message) = decode::decode_error_body(&answer.body);
        let retry_after = retry::parse_retry_after(answer.retry_after_ms.as_deref(), answer.retry_after.as_deref(), SystemTime::now());
        Err(AttemptFailure::Status { status, code, message, retry_after })
    }

    async fn send_http1(
        &self,
        http1: &Http1Pool,
        method: &reqwest::Method,
        url: &reqwest::Url,
        body: Option<&[u8]>,
        idem_key: Option<&str>,
        timeout: Duration,
    ) -> Result<http1::Response, AttemptFailure> {
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let key_line = idem_key.map(|k| format!("idempotency-key: {k}\r\n")).unwrap_or_default();
        let headers = [self.sampler.http1_headers.as_slice(), key_line.as_bytes()];
        // Polls are reads, and a keyed create replays the same sample: both may be resent
        // on a fresh connection if a pooled one turns out closed.
        let safe_to_resend = *method == reqwest::Method::GET || idem_key.is_some();
        let sent = http1.send(method.as_str(), &target, &headers, body.unwrap_or_default(), safe_to_resend);
        match tokio::time::timeout(timeout, Box::pin(sent)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(http1::SendError::Connect(m))) => Err(AttemptFailure::Connect(m)),
            Ok(Err(http1::SendError::Certificate(m))) => Err(AttemptFailure::Tls(m)),
            Ok(Err(http1::SendError::Transport(m))) => Err(AttemptFailure::Transport { timeout: false, message: m }),
            Err(_) => Err(AttemptFailure::Transport { timeout: true, message: format!("timed out after {:.1} s", timeout.as_secs_f64()) }),
        }
    }

    /// The reqwest path (a proxy is configured), with the same outcome shape.
    async fn send_reqwest(
        &self,
        method: reqwest::Method,
        url: &reqwest::Url,
        body: Option<Bytes>,
        idem_key: Option<&str>,
        timeout: Duration,
    ) -> Result<http1::Response, AttemptFailure> {
        let mut req = self.pool.client.request(method, url.clone()).headers(self.sampler.auth_headers.clone()).timeout(timeout);
        if let Some(key) = idem_key {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        // Boxed so the sample's own future stays small while thousands of them wait.
        let resp = match Box::pin(req.send()).await {
            Ok(r) => r,
            Err(e) if e.is_connect() && is_certificate_error(&e) => return Err(AttemptFailure::Tls(describe_transport_error(&e))),
            Err(e) if e.is_connect() => return Err(AttemptFailure::Connect(describe_transport_error(&e))),
            Err(e) => return Err(AttemptFailure::Transport { timeout: e.is_timeout(), message: describe_transport_error(&e) }),
        };
        let status = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (retry_after_ms, retry_after) = (header("retry-after-ms"), header("retry-after"));
        match Box::pin(resp.bytes()).await {
            Ok(body) => Ok(http1::Response { status, retry_after_ms, retry_after, body }),
            Err(e) => Err(AttemptFailure::Transport { timeout: e.is_timeout(), message: describe_transport_error(&e) }),
        }
    }

    /// Attempts with retries. `reached_server_retry` says whether failures that may have
    /// reached the server (timeouts, resets, 5xx) may be retried (not for asap creates).
    async fn with_retries(
        &mut self,
        what: &str,
        method: reqwest::Method,
        url: &reqwest::Url,
        body: Option<Bytes>,
        idem_key: Option<&str>,
        reached_server_retry: bool,
        response_id: Option<&str>,
    ) -> Result<Bytes, SampleError> {
        let policy = self.sampler.config.retry;
        let mut retry = 0u32;
        loop {
            let failure = match self.attempt(method.clone(), url, body.clone(), idem_key).await {
                Ok(bytes) => return Ok(bytes),
                Err(f) => f,
            };
            let (retryable, hint, err) = classify(what, failure, reached_server_retry);
            let err = err.with_response_id(response_id);
            let exhausted = retry >= policy.max_retries;
            if !retryable || exhausted {
                return Err(SampleError { attempts: retry + 1, ..err });
            }
            let delay = policy.delay(retry, hint, self.unit_random());
            // A server hint longer than the time we have left is not slept through.
            if self.remaining().is_some_and(|rem| delay >= rem) {
                let mut e = err;
                if e.kind == ErrorKind::Timeout || e.kind == ErrorKind::Connection {
                    e.message = format!("{} (sample deadline reached)", e.message);
                } else {
                    e.message = format!("{} (retry not possible before the sample deadline)", e.message);
                }
                return Err(SampleError { attempts: retry + 1, ..e });
            }
            match self.sleep(delay).await {
                Ok(()) => {}
                Err(Abort::Cancelled) => return Err(cancelled_error(response_id)),
                Err(Abort::Deadline) => return Err(deadline_error(self.sampler.config.sample_timeout, response_id)),
            }
            retry += 1;
            self.stats.retries += 1;
            Metrics::add(&self.engine.metrics.retries, 1);
        }
    }

    async fn run_response(&mut self, job: SampleJob) -> Result<SampleOutput, SampleError> {
        let sampler = self.sampler.clone();
        let want_logprobs = sampler.config.defaults.request_logprobs;
        let body = Bytes::from(request_body::responses_create(&sampler.config.defaults, &job.prompt, job.max_tokens, &job.stop, job.prompt_cache_key.as_deref()));
        drop(job);
        let key = sampler.uses_idempotency_key().then(new_idempotency_key);
        // The create attempt itself is not raced against cancellation: abandoning it midway
        // would leave a sample we cannot name (and so cannot cancel) running on the server.
        let created = self.with_retries("create", reqwest::Method::POST, &sampler.create_url, Some(body), key.as_deref(), key.is_some(), None).await?;
        let id = decode::response_id(&created).map_err(|v| SampleError::new(ErrorKind::Protocol, v.0))?;
        // A server may answer a create with a finished response; no poll needed then.
        let mut outcome = decode::decode_poll(&created, want_logprobs).unwrap_or(PollOutcome::Pending);
        let poll_url = sampler.response_url(&id, None);
        loop {
            match outcome {
                PollOutcome::Pending => {}
                PollOutcome::Completed(sample) => return Ok(SampleOutput { sample, response_id: Some(id) }),
                PollOutcome::Failed { code, message } => {
                    let mut e = SampleError::new(ErrorKind::Failed, format!("response {id} failed: {message}"));
                    e.code = code;
                    return Err(e.with_response_id(Some(&id)));
                }
                PollOutcome::Cancelled => {
                    return Err(SampleError::new(ErrorKind::Cancelled, format!("response {id} was cancelled by the server")).with_response_id(Some(&id)))
                }
                PollOutcome::Expired => {
                    return Err(SampleError::new(ErrorKind::Expired, format!("response {id} expired before it completed")).with_response_id(Some(&id)))
                }
            }
            if self.cancel.is_cancelled() {
                self.spawn_server_cancel(&id);
                return Err(cancelled_error(Some(&id)));
            }
            let delay = sampler.config.poll.next_delay(self.started.elapsed());
            match self.sleep(delay).await {
                Ok(()) => {}
                Err(abort) => {
                    self.spawn_server_cancel(&id);
                    return Err(match abort {
                        Abort::Cancelled => cancelled_error(Some(&id)),
                        Abort::Deadline => deadline_error(sampler.config.sample_timeout, Some(&id)),
                    });
                }
            }
            self.stats.polls += 1;
            let cancel = self.cancel.clone();
            let polled = tokio::select! {
                r = self.poll_once(&poll_url, &id) => r,
                _ = cancel.cancelled() => Err(cancelled_error(Some(&id))),
            };
            let bytes = match polled {
                Ok(b) => b,
                Err(e) => {
                    // We are giving up on a response that may still be running (caller cancel,
                    // deadline, dead or failing server): stop it server-side too. A 404 means
                    // it is gone already.
                    if e.kind != ErrorKind::Expired {
                        self.spawn_server_cancel(&id);
                    }
                    return Err(e);
                }
            };
            outcome = match decode::decode_poll(&bytes, want_logprobs) {
                Ok(o) => o,
                Err(v) => {
                    self.spawn_server_cancel(&id);
                    return Err(SampleError::new(ErrorKind::Protocol, format!("response {id}: {}", v.0)).with_response_id(Some(&id)));
                }
            };
        }
    }

    async fn poll_once(&mut self, url: &reqwest::Url, id: &str) -> Result<Bytes, SampleError> {
        match self.with_retries("poll", reqwest::Method::GET, url, None, None, true, Some(id)).await {
            Err(e) if e.status == Some(404) => {
                Err(SampleError { kind: ErrorKind::Expired, message: format!("response {id} is gone (404 while polling: expired or deleted)"), ..e })
            }
            other => other,
        }
    }

    /// Best effort: tell the server to stop (and stop billing) a sample nobody waits for.
    fn spawn_server_cancel(&self, id: &str) {
        let url = self.sampler.response_url(id, Some("cancel"));
        let pool = self.pool.clone();
        let headers = self.sampler.auth_headers.clone();
        let engine = self.engine;
        engine.handle.spawn(async move {
            for attempt in 0..3u32 {
                let _permit = pool.permits.acquire().await.expect("the semaphore is never closed");
                Metrics::add(&engine.metrics.http_requests, 1);
                let sent = pool.client.post(url.clone()).headers(headers.clone()).body("{}").timeout(Duration::from_secs(10)).send().await;
                match sent {
                    Ok(r) if !retry::is_transient_status(r.status().as_u16()) => {
                        Metrics::add(&engine.metrics.cancels_sent, 1);
                        return;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100 << attempt)).await,
                }
            }
        });
    }

    async fn run_completion(&mut self, job: SampleJob) -> Result<SampleOutput, SampleError> {
        let sampler = self.sampler.clone();
        let want_logprobs = sampler.config.defaults.request_logprobs;
        let body = Bytes::from(request_body::openai_completion(&sampler.config.defaults, &job.prompt, job.max_tokens, &job.stop));
        drop(job);
        let cancel = self.cancel.clone();
        let fut = self.with_retries("completion", reqwest::Method::POST, &sampler.create_url, Some(body), None, true, None);
        let bytes = tokio::select! {
            r = fut => r?,
            _ = cancel.cancelled() => return Err(cancelled_error(None)),
        };
        let sample = decode::decode_completion(&bytes, want_logprobs).map_err(|v| SampleError::new(ErrorKind::Protocol, v.0))?;
        Ok(SampleOutput { sample, response_id: None })
    }
}

/// Decide whether a failed attempt is retried, and build the error reported if not.
fn classify(what: &str, failure: AttemptFailure, reached_server_retry: bool) -> (bool, Option<Duration>, SampleError) {
    match failure {
        AttemptFailure::Connect(msg) => (true, None, SampleError::new(ErrorKind::Connection, format!("{what}: {msg}"))),
        AttemptFailure::Tls(msg) => (
            false,
            None,
            SampleError::new(ErrorKind::Connection, format!("{what}: TLS certificate verification failed ({msg}); pass ca_bundle= to trust a private CA")),
        ),
        AttemptFailure::Transport { timeout, message } => {
            let kind = if timeout { ErrorKind::Timeout } else { ErrorKind::Connection };
            (reached_server_retry, None, SampleError::new(kind, format!("{what}: {message}")))
        }
        AttemptFailure::Status { status, code, message, retry_after } => {
            // A 429 is the server refusing the request outright, so even an unkeyed create may retry it.
            let retryable = retry::is_transient_status(status) && (reached_server_retry || status == 429);
            let shown = if message.is_empty() { String::new() } else { format!(": {message}") };
            let code_part = code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default();
            let mut e = SampleError::new(ErrorKind::Status, format!("{what} failed with HTTP {status}{code_part}{shown}"));
            e.status = Some(status);
            e.code = code;
            (retryable, retry_after, e)
        }
    }
}

/// rustls reports an untrusted or invalid server certificate somewhere in the source chain.
fn is_certificate_error(err: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let text = s.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("unknownissuer") {
            return true;
        }
        source = s.source();
    }
    false
}

fn cancelled_error(id: Option<&str>) -> SampleError {
    SampleError::new(ErrorKind::Cancelled, "the sample was cancelled by the caller").with_response_id(id)
}

fn deadline_error(limit: Option<Duration>, id: Option<&str>) -> SampleError {
    let secs = limit.map_or(0.0, |d| d.as_secs_f64());
    let what = if id.is_some() { "; the server was asked to cancel it" } else { "" };
    SampleError::new(ErrorKind::Timeout, format!("the sample did not finish within poll_timeout={secs}s{what}")).with_response_id(id)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// One key per logical sample, reused on every attempt of its create.
fn new_idempotency_key() -> String {
    format!("sail-lite-{:032x}", rand::random::<u128>())
}
