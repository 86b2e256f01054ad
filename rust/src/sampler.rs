//! One task per sample: create -> poll until terminal -> decode, with retries, backoff,
//! deadlines and best-effort server-side cancellation. Nothing here touches Python.

use crate::decode::{self, PollOutcome};
use crate::engine::{Engine, HttpPool, Metrics};
use crate::exit_cancel;
use crate::hub::{Completion, Event, Hub, SampleOutput, SampleStats, DEBUG, INFO, WARNING};
use crate::journal::Journal;
use crate::poll_planner::{poll_phase, ColdRole, PollPlanner};
use crate::request_body::{self, SamplingDefaults, Stop};
use crate::retry::{self, RetryPolicy};
use crate::sample_error::{ErrorKind, SampleError};
use crate::transport::{self, Headers};
use bytes::Bytes;
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
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
    pub poll: PollPlanner,
}

pub struct Sampler {
    pub config: SamplerConfig,
    /// Content type and authorization, rendered once.
    headers: Headers,
    /// Parsed once: reqwest would otherwise re-parse (and IDNA-check) the URL per request.
    create_url: reqwest::Url,
    responses_url: reqwest::Url,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Result<Sampler, String> {
        let headers = Headers::new(config.api_key.as_deref())?;
        let base = config.base_url.trim_end_matches('/').to_string();
        let (create_url, responses_url) = match config.protocol {
            Protocol::Responses => (format!("{base}/v1/responses"), format!("{base}/v1/responses/")),
            Protocol::Completions => (format!("{base}/completions"), format!("{base}/")),
        };
        let parse = |u: &str| reqwest::Url::parse(u).map_err(|_| "base_url: expected an http(s) URL".to_string());
        Ok(Sampler { create_url: parse(&create_url)?, responses_url: parse(&responses_url)?, config, headers })
    }

    /// `{base}/v1/responses/{id}` plus `suffix` path segments, without re-parsing the base.
    /// `id` must have passed `check_response_id` (the path segment is percent-encoded, but
    /// `.`/`..` would be taken as dot segments).
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
    pub(crate) fn uses_idempotency_key(&self) -> bool {
        self.config.protocol == Protocol::Responses && self.config.completion_window != "asap"
    }
}

/// A response id we can put in a URL path: not `.` or `..` (dot segments would address the
/// collection or its parent) and no control characters (which URL handling drops or
/// alters, so the poll would name another response). Anything else is percent-encoded.
pub fn check_response_id(id: &str) -> Result<(), String> {
    if id == "." || id == ".." {
        return Err(format!("the server named the response {id:?}, which cannot be a URL path segment"));
    }
    if id.chars().any(char::is_control) {
        return Err(format!("the server named the response {id:?}, which contains control characters"));
    }
    Ok(())
}

pub struct SampleJob {
    pub request_id: u64,
    pub prompt: Vec<u32>,
    pub max_tokens: u32,
    pub stop: Stop,
    /// A caller-derived key (a sampling scope): replays the stored sample of an earlier run,
    /// and the sample is left running on the server when abandoned. None: a random key.
    pub idempotency_key: Option<String>,
    /// The caller's explicit `prompt_cache_key` (else the completer's setting decides).
    pub prompt_cache_key: Option<String>,
    /// Where a scoped sample's response id is recorded, and looked up first (a rerun follows
    /// the recorded response instead of creating).
    pub journal: Option<Arc<Journal>>,
}

/// How many times a scoped sample whose stored response is gone is created again.
const MAX_RECREATES: u32 = 3;

/// Run one sample to its end and hand the result to the hub.
pub async fn run(engine: &'static Engine, pool: HttpPool, sampler: Arc<Sampler>, hub: Arc<Hub>, job: SampleJob, cancel: CancellationToken) {
    Metrics::add(&engine.metrics.samples_started, 1);
    let request_id = job.request_id;
    let scoped = job.idempotency_key.is_some();
    // Unscoped samples are cancelled on the server when the process exits; scoped ones stay.
    let _exit_guard = (!scoped && sampler.config.protocol == Protocol::Responses).then(|| exit_cancel::track_sample(&cancel));
    let mut ctx = Ctx {
        engine,
        pool,
        sampler,
        hub: hub.clone(),
        request_id,
        cancel,
        stats: SampleStats::default(),
        started: Instant::now(),
        scoped,
        gone: false,
        poll_hint: None,
        journal: None,
    };
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
        Err(panic) => {
            Err(SampleError::new(ErrorKind::Internal, format!("internal error in the sail-lite engine: {}", panic_message(&panic))))
        }
    };
    if let Err(e) = &result {
        let kind = match e.kind {
            ErrorKind::Failed => Some("response_failed"),
            ErrorKind::Expired => Some("response_expired"),
            _ => None,
        };
        if let Some(kind) = kind.filter(|_| hub.logs(INFO)) {
            let mut event = Event::new(INFO, kind, request_id, e.message.clone());
            event.status = e.status;
            event.response_id = e.response_id.clone();
            hub.push_event(event);
        }
    }
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
    /// Where log events go (only while the loop's logger would emit them).
    hub: Arc<Hub>,
    request_id: u64,
    cancel: CancellationToken,
    stats: SampleStats,
    started: Instant,
    /// A server's Retry-After on the last successful answer (a pending poll): when to look again.
    poll_hint: Option<Duration>,
    /// The caller's key (a sampling scope): never cancel on the server, re-create when gone.
    scoped: bool,
    /// Set when a scoped sample's stored response turned out gone (404, or already cancelled
    /// or expired when re-attached): the sample is created again under a fresh key.
    gone: bool,
    /// A scoped sample's journal and key: each accepted create's response id is recorded there.
    journal: Option<(Arc<Journal>, String)>,
}

/// Why a wait ended early.
enum Abort {
    Cancelled,
    Deadline,
}

/// One failed HTTP attempt, classified for the retry decision.
enum AttemptFailure {
    Status {
        status: u16,
        code: Option<String>,
        error_type: Option<String>,
        message: String,
        retry_after: Option<Duration>,
        should_retry: Option<bool>,
    },
    /// Never reached the server: always safe to retry.
    Connect(String),
    /// The server's certificate was rejected: retrying cannot help.
    Tls(String),
    /// May have reached the server (timeout, reset mid-request).
    Transport { timeout: bool, message: String },
    /// The answer broke the protocol (framing, size): retrying would get the same answer.
    Protocol(String),
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

    /// One HTTP attempt, bounded by the attempt timeout and the sample deadline (which also
    /// bounds the wait for a connection slot: poll_timeout covers queueing).
    async fn attempt(
        &mut self,
        method: reqwest::Method,
        url: &reqwest::Url,
        body: Option<Bytes>,
        idem_key: Option<&str>,
        may_resend: bool,
    ) -> Result<Bytes, AttemptFailure> {
        let mut timeout = self.sampler.config.attempt_timeout.unwrap_or(Duration::from_secs(600));
        if let Some(rem) = self.remaining() {
            timeout = timeout.min(rem.max(Duration::from_millis(1)));
        }
        self.stats.http_requests += 1;
        Metrics::add(&self.engine.metrics.http_requests, 1);
        let request = transport::Request {
            method,
            url,
            body,
            headers: &self.sampler.headers,
            idempotency_key: idem_key,
            may_resend,
            timeout,
            deadline: self.deadline(),
        };
        let answer = self.pool.send(request).await.map_err(|e| match e {
            transport::SendError::NoSlot => AttemptFailure::Transport {
                timeout: true,
                message: "no connection slot became free before the sample deadline (max_connections reached)".into(),
            },
            transport::SendError::Connect(m) => AttemptFailure::Connect(m),
            transport::SendError::Certificate(m) => AttemptFailure::Tls(m),
            transport::SendError::Transport { timeout, message } => AttemptFailure::Transport { timeout, message },
            transport::SendError::Protocol(m) => AttemptFailure::Protocol(m),
        })?;
        let status = answer.status;
        if (200..300).contains(&status) {
            self.poll_hint = match (&answer.retry_after_ms, &answer.retry_after) {
                (None, None) => None,
                (ms, secs) => retry::parse_retry_after(ms.as_deref(), secs.as_deref(), SystemTime::now()),
            };
            return Ok(answer.body);
        }
        let decode::ErrorBody { code, error_type, message } = decode::decode_error_body(&answer.body);
        let retry_after = retry::parse_retry_after(answer.retry_after_ms.as_deref(), answer.retry_after.as_deref(), SystemTime::now());
        Err(AttemptFailure::Status { status, code, error_type, message, retry_after, should_retry: answer.should_retry })
    }

    /// Attempts with retries. `reached_server_retry` says whether failures that may have
    /// reached the server (timeouts, resets, 5xx) may be retried (not for asap creates).
    #[allow(clippy::too_many_arguments)]
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
            // Polls are reads, and a keyed create replays the same sample: both may be resent
            // on a fresh connection if a pooled one turns out closed.
            let may_resend = method == reqwest::Method::GET || idem_key.is_some();
            let failure = match self.attempt(method.clone(), url, body.clone(), idem_key, may_resend).await {
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
            if self.hub.logs(INFO) {
                let (attempt, max_attempts) = (retry + 1, policy.max_retries.saturating_add(1));
                let message = format!("{}; retrying in {:.3} s (attempt {attempt} of {max_attempts})", err.message, delay.as_secs_f64());
                let mut event = Event::new(INFO, "retry", self.request_id, message);
                event.status = err.status;
                event.attempt = attempt;
                event.max_attempts = max_attempts;
                event.delay = Some(delay.as_secs_f64());
                event.response_id = response_id.map(str::to_owned);
                self.hub.push_event(event);
            }
            // A server hint longer than the time we have left is not slept through.
            if !retry::fits_before_deadline(delay, self.remaining()) {
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
        let body = Bytes::from(request_body::responses_create(
            &self.sampler.config.defaults,
            &job.prompt,
            job.max_tokens,
            &job.stop,
            job.prompt_cache_key.as_deref(),
        ));
        let Some(scope_key) = job.idempotency_key else {
            drop(job);
            let key = self.sampler.uses_idempotency_key().then(new_idempotency_key);
            return self.create_and_poll(body, key).await;
        };
        drop(job.prompt);
        let mut recreated = 0u32;
        if let Some(id) = job.journal.as_ref().and_then(|j| j.lookup(&scope_key)).filter(|id| check_response_id(id).is_ok()) {
            // An earlier run recorded this key's response: follow it, whatever body this run
            // would send (a re-exported LoRA has a new URL, which Sail would refuse for the key).
            Metrics::add(&self.engine.metrics.samples_reattached, 1);
            self.gone = false;
            let result = self.attach(id).await;
            if !(result.is_err() && self.gone) || self.cancel.is_cancelled() {
                return result;
            }
            // Gone: the key's reservation holds (or refuses) that response, so start afresh.
            recreated = 1;
            Metrics::add(&self.engine.metrics.samples_recreated, 1);
        }
        self.journal = job.journal.map(|j| (j, scope_key.clone()));
        loop {
            // A re-created sample gets a fresh key derived from the scope's, so it cannot land
            // on the gone response's reservation again (and a rerun derives the same keys).
            let key = if recreated == 0 { scope_key.clone() } else { format!("{scope_key}~r{recreated}") };
            self.gone = false;
            let result = self.create_and_poll(body.clone(), Some(key)).await;
            if !(result.is_err() && self.gone && recreated < MAX_RECREATES) || self.cancel.is_cancelled() {
                return result;
            }
            recreated += 1;
            Metrics::add(&self.engine.metrics.samples_recreated, 1);
        }
    }

    /// Create one response (under `key`) and poll it to its end.
    async fn create_and_poll(&mut self, body: Bytes, key: Option<String>) -> Result<SampleOutput, SampleError> {
        let sampler = self.sampler.clone();
        if self.cancel.is_cancelled() {
            // Abandoned before its create was sent (e.g. at exit): nothing to start or cancel.
            return Err(cancelled_error(None));
        }
        // The create attempt itself is not raced against cancellation: abandoning it midway
        // would leave a sample we cannot name (and so cannot cancel) running on the server.
        Metrics::add(&self.engine.metrics.creates, 1);
        let created = match self
            .with_retries("create", reqwest::Method::POST, &sampler.create_url, Some(body), key.as_deref(), key.is_some(), None)
            .await
        {
            Ok(bytes) => bytes,
            Err(e) => {
                // A scoped key stored with another body (e.g. the LoRA URL was signed again since
                // the earlier run): that stored sample cannot be re-attached to, so it counts as gone.
                self.gone = self.scoped && e.status == Some(400) && e.code.as_deref() == Some("idempotency_error");
                return Err(e);
            }
        };
        // Service time is measured from here: polls are planned, and completions learned, on it.
        let created_at = Instant::now();
        let id = decode::response_id(&created).map_err(|v| SampleError::new(ErrorKind::Protocol, v.0))?;
        // An id we cannot address can be neither polled nor cancelled.
        check_response_id(&id).map_err(|m| SampleError::new(ErrorKind::Protocol, m).with_response_id(Some(&id)))?;
        self.journal_response(&id);
        // A server may answer a create with a finished response; no poll needed then.
        let outcome = decode::decode_poll(&created, sampler.config.defaults.request_logprobs).unwrap_or(PollOutcome::Pending);
        // A scoped create that re-attached to a response already cancelled or expired: gone.
        self.gone = self.scoped && matches!(outcome, PollOutcome::Cancelled | PollOutcome::Expired);
        self.follow(id, created_at, outcome, true).await
    }

    /// Follow a response an earlier run created (its id from the journal): look at once, then
    /// poll it to its end. Its service time is unknown here, so nothing is learned from it.
    async fn attach(&mut self, id: String) -> Result<SampleOutput, SampleError> {
        if self.cancel.is_cancelled() {
            return Err(cancelled_error(Some(&id)));
        }
        let polled_at = Instant::now();
        let outcome = match self.look(&self.sampler.response_url(&id, None), &id).await {
            Ok(outcome) => outcome,
            Err(e) => {
                self.gone = e.kind == ErrorKind::Expired;
                return Err(e);
            }
        };
        self.gone = matches!(outcome, PollOutcome::Cancelled | PollOutcome::Expired);
        self.follow(id, polled_at, outcome, false).await
    }

    /// Record a scoped sample's response id in its journal (if it has one), so a rerun can
    /// follow it even when its create body differs.
    fn journal_response(&self, id: &str) {
        let Some((journal, key)) = &self.journal else { return };
        if let Err(e) = journal.record(key, id) {
            if self.hub.logs(WARNING) {
                let message = format!("could not record response {id} in the journal {}: {e}", journal.path().display());
                let mut event = Event::new(WARNING, "journal_failed", self.request_id, message);
                event.response_id = Some(id.to_owned());
                self.hub.push_event(event);
            }
        }
    }

    /// Poll `id` from its last `outcome` until it ends. `since` is when it was created (or first
    /// seen); `learn`: whether its completion teaches the poll planner.
    async fn follow(&mut self, id: String, since: Instant, mut outcome: PollOutcome, learn: bool) -> Result<SampleOutput, SampleError> {
        let sampler = self.sampler.clone();
        let poll_url = sampler.response_url(&id, None);
        let mut last_pending = Duration::ZERO;
        let (mut cold_role, cold_news) = (ColdRole::default(), sampler.config.poll.cold_news());
        let mut in_flight = sampler.config.poll.start(learn);
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
                    if self.hub.logs(INFO) {
                        let mut event =
                            Event::new(INFO, "response_cancelled", self.request_id, format!("response {id} was cancelled by the server"));
                        event.response_id = Some(id.clone());
                        self.hub.push_event(event);
                    }
                    return Err(SampleError::new(ErrorKind::Cancelled, format!("response {id} was cancelled by the server"))
                        .with_response_id(Some(&id)));
                }
                PollOutcome::Expired => {
                    return Err(SampleError::new(ErrorKind::Expired, format!("response {id} expired before it completed"))
                        .with_response_id(Some(&id)))
                }
            }
            if self.cancel.is_cancelled() {
                self.spawn_server_cancel(&id);
                return Err(cancelled_error(Some(&id)));
            }
            // Plan from the last answer, and re-plan on waking while the wait is long: other
            // samples' completions may have moved the estimate meanwhile (a cohort finishes together).
            let (planned_from, hint) = (since.elapsed(), self.poll_hint.take());
            loop {
                // Cold, a completion learned by any sample of the key re-plans this one at once
                // (listening before planning, so none is missed in between).
                let mut news = std::pin::pin!(cold_news.next());
                let cold = sampler.config.poll.is_cold();
                if cold {
                    news.as_mut().enable();
                }
                let phase = poll_phase(self.request_id, self.stats.polls);
                let poll_at = sampler.config.poll.next_poll(planned_from, hint, phase, &mut cold_role);
                let now = since.elapsed();
                if poll_at <= now {
                    break;
                }
                let slot_fraction = if cold { COLD_POLL_SLOT_FRACTION } else { POLL_SLOT_FRACTION };
                let wake = match hint {
                    Some(_) => Wake::Poll(poll_at - now),
                    None => plan_wake(poll_at - now, now, process_epoch().elapsed(), slot_fraction),
                };
                // Every wake-up re-plans; one at the poll's slot boundary then finds it due
                // (`Wake::PollNow`) unless new completions moved the plan past that slot.
                let recheck = match wake {
                    Wake::PollNow => break,
                    Wake::Poll(d) | Wake::Replan(d) => d,
                };
                let slept = if cold {
                    tokio::select! {
                        slept = self.sleep(recheck) => slept,
                        () = news => Ok(()),
                    }
                } else {
                    self.sleep(recheck).await
                };
                match slept {
                    Ok(()) => {}
                    Err(abort) => {
                        self.spawn_server_cancel(&id);
                        return Err(match abort {
                            Abort::Cancelled => cancelled_error(Some(&id)),
                            Abort::Deadline => deadline_error(sampler.config.sample_timeout, Some(&id)),
                        });
                    }
                }
            }
            let poll_sent = since.elapsed();
            outcome = match self.look(&poll_url, &id).await {
                Ok(o) => o,
                Err(e) => {
                    // We are giving up on a response that may still be running (caller cancel,
                    // deadline, dead or failing server, a broken answer): stop it server-side
                    // too. A 404 means it is gone already.
                    if e.kind != ErrorKind::Expired {
                        self.spawn_server_cancel(&id);
                    }
                    self.gone = self.scoped && e.status == Some(404);
                    return Err(e);
                }
            };
            match outcome {
                PollOutcome::Pending => {
                    last_pending = poll_sent;
                    in_flight.still_pending(poll_sent);
                }
                PollOutcome::Completed(_) if learn => sampler.config.poll.observe(last_pending, poll_sent, &mut in_flight),
                _ => {}
            }
        }
    }

    /// One poll of `id` (with retries), decoded; a cancelled sample stops waiting for it.
    async fn look(&mut self, poll_url: &reqwest::Url, id: &str) -> Result<PollOutcome, SampleError> {
        self.stats.polls += 1;
        Metrics::add(&self.engine.metrics.polls, 1);
        let cancel = self.cancel.clone();
        let bytes = tokio::select! {
            r = self.poll_once(poll_url, id) => r,
            _ = cancel.cancelled() => Err(cancelled_error(Some(id))),
        }?;
        decode::decode_poll(&bytes, self.sampler.config.defaults.request_logprobs)
            .map_err(|v| SampleError::new(ErrorKind::Protocol, format!("response {id}: {}", v.0)).with_response_id(Some(id)))
    }

    async fn poll_once(&mut self, url: &reqwest::Url, id: &str) -> Result<Bytes, SampleError> {
        match self.with_retries("poll", reqwest::Method::GET, url, None, None, true, Some(id)).await {
            Err(e) if e.status == Some(404) => Err(SampleError {
                kind: ErrorKind::Expired,
                message: format!("response {id} is gone (404 while polling: expired or deleted)"),
                ..e
            }),
            other => other,
        }
    }

    /// Best effort: tell the server to stop (and stop billing) a sample nobody waits for.
    fn spawn_server_cancel(&self, id: &str) {
        if check_response_id(id).is_err() {
            return;
        }
        if self.scoped {
            // Left running on purpose: a rerun of the scope re-attaches to it.
            return;
        }
        let in_progress = exit_cancel::track_server_cancel();
        if self.hub.logs(DEBUG) {
            let mut event = Event::new(DEBUG, "server_cancel", self.request_id, format!("asking the server to cancel response {id}"));
            event.response_id = Some(id.to_owned());
            self.hub.push_event(event);
        }
        let url = self.sampler.response_url(id, Some("cancel"));
        let pool = self.pool.clone();
        let sampler = self.sampler.clone();
        let engine = self.engine;
        engine.handle.spawn(async move {
            let _in_progress = in_progress;
            for attempt in 0..retry::CANCEL_ATTEMPTS {
                Metrics::add(&engine.metrics.http_requests, 1);
                // The transport holds a connection slot for the request only, never through
                // the backoff below.
                let request = transport::Request {
                    method: reqwest::Method::POST,
                    url: &url,
                    body: Some(Bytes::from_static(b"{}")),
                    headers: &sampler.headers,
                    idempotency_key: None,
                    may_resend: true, // cancelling twice is harmless
                    timeout: CANCEL_TIMEOUT,
                    deadline: None,
                };
                let status = pool.send(request).await.ok().map(|r| r.status);
                if retry::cancel_settled(status) {
                    Metrics::add(&engine.metrics.cancels_sent, 1);
                    return;
                }
                tokio::time::sleep(retry::cancel_backoff(attempt)).await;
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

/// Build the error a failed attempt is reported as, and ask the retry policy whether it is
/// retried (and with which server hint).
fn classify(what: &str, failure: AttemptFailure, may_resend: bool) -> (bool, Option<Duration>, SampleError) {
    let (class, hint, err) = match failure {
        AttemptFailure::Connect(msg) => (retry::Failure::Connect, None, SampleError::new(ErrorKind::Connection, format!("{what}: {msg}"))),
        AttemptFailure::Tls(msg) => (
            retry::Failure::Certificate,
            None,
            SampleError::new(
                ErrorKind::Connection,
                format!("{what}: TLS certificate verification failed ({msg}); pass ca_bundle= to trust a private CA"),
            ),
        ),
        AttemptFailure::Transport { timeout, message } => {
            let kind = if timeout { ErrorKind::Timeout } else { ErrorKind::Connection };
            (retry::Failure::Transport, None, SampleError::new(kind, format!("{what}: {message}")))
        }
        AttemptFailure::Protocol(message) => (
            retry::Failure::Protocol,
            None,
            SampleError::new(ErrorKind::Protocol, format!("{what}: the server's answer is not valid HTTP/1.1: {message}")),
        ),
        AttemptFailure::Status { status, code, error_type, message, retry_after, should_retry } => {
            let shown = if message.is_empty() { String::new() } else { format!(": {message}") };
            let code_part = code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default();
            let mut e = SampleError::new(ErrorKind::Status, format!("{what} failed with HTTP {status}{code_part}{shown}"));
            e.status = Some(status);
            e.code = code;
            e.error_type = error_type;
            (retry::Failure::Status { status, should_retry }, retry_after, e)
        }
    };
    (retry::is_retryable(class, may_resend), hint, err)
}

/// Each server-side cancel attempt gets this long.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The shortest wait between re-plans of a pending sample (re-planning takes no request).
const REPLAN_MIN_WAIT: Duration = Duration::from_millis(100);

/// A waiting sample's wake-ups land on slots of absolute time shared by the process, so
/// samples whose plans differ a little (a cold cohort's spread polls, a cohort's creates spread
/// over a second) wake, and poll, together instead of costing the engine thread a wake-up each.
/// A poll moves to the nearest boundary of a slot of a power of two milliseconds, at most
/// `POLL_SLOT_FRACTION` of the sample's elapsed time: at most half that early or late, and as
/// often one as the other, so lateness is unchanged on average.
const POLL_SLOT_FRACTION: f64 = 0.02;
/// Cold, polls are spread on purpose (scouts probe the prior) and come a cold step (~18%) apart,
/// so they share coarser slots (moved at most 4% of elapsed either way): in 2% slots a cold
/// cohort's polls came at so many instants that many cost the engine thread two wake-ups of
/// their own (one to send, one to read): 0.9-1.1 per sample against 0.2-0.3 warm (BENCHMARKS.md).
const COLD_POLL_SLOT_FRACTION: f64 = 0.08;
const POLL_MAX_SLOT_MS: f64 = 4096.0;
/// A re-plan-only wake-up (no poll due yet) adds no lateness, so it is rounded up (to a slot at
/// most this fraction of the elapsed time, never past the poll's boundary). A coarser 1/16
/// saved no more CPU, and its standard-like warm runs made more requests in 5 of 6 (BENCHMARKS.md).
const REPLAN_SLOT_FRACTION: f64 = 1.0 / 64.0;
const REPLAN_MAX_SLOT_MS: f64 = 4096.0;

fn process_epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// What a waiting sample does next.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Wake {
    /// Poll at once (the poll's slot boundary has passed).
    PollNow,
    /// Sleep this long, to the poll's slot boundary (then re-plan: the poll is due unless the
    /// estimate moved it past that slot).
    Poll(Duration),
    /// Sleep this long, then re-plan (other samples' completions may have moved the estimate).
    Replan(Duration),
}

/// The next wake-up of a sample whose poll is due `until_poll` from now, at `elapsed` since its
/// create (`since_epoch`: now on the shared clock), its poll moved to a slot of at most
/// `slot_fraction` of `elapsed`. It re-plans every half its elapsed time (at least
/// `REPLAN_MIN_WAIT`) until the poll comes first.
fn plan_wake(until_poll: Duration, elapsed: Duration, since_epoch: Duration, slot_fraction: f64) -> Wake {
    let poll = nearest_slot_wait(until_poll, elapsed, since_epoch, slot_fraction);
    let replan = elapsed.mul_f64(0.5).max(REPLAN_MIN_WAIT);
    if replan < poll {
        let coarse =
            slot_size(elapsed, REPLAN_SLOT_FRACTION, REPLAN_MAX_SLOT_MS).map_or(replan, |slot| round_up(replan, since_epoch, slot));
        if coarse < poll {
            return Wake::Replan(coarse);
        }
    }
    if poll.is_zero() {
        Wake::PollNow
    } else {
        Wake::Poll(poll)
    }
}

/// A slot of a power of two milliseconds, at most `fraction` of `elapsed` and `max_ms`; none
/// under 2 ms (the timer's resolution is 1 ms).
fn slot_size(elapsed: Duration, fraction: f64, max_ms: f64) -> Option<u128> {
    let slot_ms = (elapsed.as_secs_f64() * fraction * 1e3).min(max_ms);
    (slot_ms >= 2.0).then(|| Duration::from_millis(1u64 << (slot_ms.log2().floor() as u32)).as_nanos())
}

/// `wait` from now, extended to the end of its slot.
fn round_up(wait: Duration, since_epoch: Duration, slot: u128) -> Duration {
    let target = (since_epoch + wait).as_nanos();
    wait + Duration::from_nanos((target.div_ceil(slot) * slot - target) as u64)
}

/// `until_poll` from now, moved to the nearest boundary of the poll's slot (zero if that has passed).
fn nearest_slot_wait(until_poll: Duration, elapsed: Duration, since_epoch: Duration, slot_fraction: f64) -> Duration {
    let Some(slot) = slot_size(elapsed, slot_fraction, POLL_MAX_SLOT_MS) else {
        return until_poll;
    };
    let (now, target) = (since_epoch.as_nanos(), (since_epoch + until_poll).as_nanos());
    let nearest = (target + slot / 2) / slot * slot;
    Duration::from_nanos(nearest.saturating_sub(now) as u64)
}

/// One key per logical sample, reused on every attempt of its create.
fn new_idempotency_key() -> String {
    format!("sail-lite-{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn polls_move_to_the_nearest_shared_slot_and_re_plans_never_pass_them() {
        let ms = Duration::from_millis;
        let warm = POLL_SLOT_FRACTION;
        let epoch_now = Duration::from_nanos(7_000_000_321);
        let poll_wait = |w: Wake| match w {
            Wake::Poll(d) => d,
            Wake::PollNow => Duration::ZERO,
            Wake::Replan(d) => panic!("a re-plan at {d:?}"),
        };
        // Early on (a slot under 2 ms: elapsed < 100 ms) nothing moves.
        assert_eq!(plan_wake(ms(5), ms(30), epoch_now, warm), Wake::Poll(ms(5)));
        // 15 s elapsed: 256 ms poll slots (<= 2%); two samples whose polls are 40 ms apart poll together.
        let a = poll_wait(plan_wake(ms(1_000), ms(15_000), epoch_now, warm));
        let b = poll_wait(plan_wake(ms(1_040), ms(15_000), epoch_now, warm));
        assert_eq!(a, b);
        assert_eq!((epoch_now + a).as_nanos() % 256_000_000, 0);
        // A poll whose nearest boundary has passed is due now.
        let boundary = Duration::from_nanos(7_168_000_000);
        assert_eq!(plan_wake(ms(10), ms(15_000), boundary + ms(20), warm), Wake::PollNow);
        // 8 s elapsed, poll due in 5 s: a re-plan at +4 s, rounded up to a 64 ms slot (<= 1/64 of 8 s).
        let Wake::Replan(r) = plan_wake(ms(5_000), ms(8_000), epoch_now, warm) else { panic!() };
        assert!(r >= ms(4_000) && r <= ms(4_000) + ms(8_000) / 64, "{r:?}");
        assert_eq!((epoch_now + r).as_nanos() % 64_000_000, 0);
        // Samples 60 ms apart in age (a cohort's creates) whose polls differ share the re-plan.
        assert_eq!(plan_wake(ms(6_300), ms(7_950), epoch_now, warm), Wake::Replan(r));
        // A re-plan the slot would round up onto (or past) the poll's boundary is the poll's
        // wake-up: at 8.2 s both slots are 128 ms; the re-plan (11.109 s) and the poll (11.159 s)
        // both land on 11.136 s.
        let later = epoch_now + ms(9);
        let Wake::Poll(p) = plan_wake(ms(4_150), ms(8_200), later, warm) else { panic!() };
        assert_eq!((later + p).as_nanos(), 11_136_000_000);
        // Cold, 15 s elapsed: 1,024 ms slots (<= 8%); polls 400 ms apart share one.
        let cold = |u| poll_wait(plan_wake(ms(u), ms(15_000), epoch_now, COLD_POLL_SLOT_FRACTION));
        assert_eq!(cold(3_000), cold(3_400));
        assert_eq!((epoch_now + cold(3_000)).as_nanos() % 1_024_000_000, 0);
        // Properties: a poll moves by at most half a slot (<= 1% of elapsed warm, 4% cold) either
        // way; a re-plan comes no earlier than planned and never after the poll would have.
        for fraction in [POLL_SLOT_FRACTION, COLD_POLL_SLOT_FRACTION] {
            for elapsed in [0u64, 5, 31, 99, 100, 900, 3_000, 15_000, 90_000, 600_000, 3_600_000] {
                for until_poll in [1u64, 40, 150, 700, 2_000, 9_000, 60_000, 400_000] {
                    for epoch in [epoch_now, epoch_now + ms(elapsed / 3 + 1), Duration::from_secs(86_400)] {
                        let (e, u) = (ms(elapsed), ms(until_poll));
                        let half_slot = e.mul_f64(fraction / 2.0).min(ms(2_048));
                        let poll = nearest_slot_wait(u, e, epoch, fraction);
                        assert!(poll + half_slot >= u && poll <= u + half_slot, "{e:?} {u:?}: {poll:?}");
                        match plan_wake(u, e, epoch, fraction) {
                            Wake::PollNow => assert!(poll.is_zero()),
                            Wake::Poll(d) => assert_eq!(d, poll),
                            Wake::Replan(d) => {
                                let replan = e.mul_f64(0.5).max(REPLAN_MIN_WAIT);
                                assert!(d >= replan && d < poll && d <= replan + e / 64, "{e:?} {u:?}: {d:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    fn sampler(base_url: &str) -> Sampler {
        Sampler::new(SamplerConfig {
            protocol: Protocol::Responses,
            base_url: base_url.into(),
            api_key: Some("sk-test".into()),
            defaults: SamplingDefaults {
                model: "m".into(),
                temperature: 1.0,
                top_p: 1.0,
                request_logprobs: true,
                metadata: BTreeMap::new(),
                prompt_cache: crate::request_body::PromptCacheKey::Automatic,
            },
            completion_window: "priority".into(),
            attempt_timeout: None,
            sample_timeout: None,
            retry: RetryPolicy::default(),
            poll: crate::poll_planner::PollPlanner::for_key(base_url, "m", "priority", crate::poll_planner::DEFAULT_POLL_OVERHEAD),
        })
        .unwrap()
    }

    #[test]
    fn dot_segments_and_control_characters_are_not_response_ids() {
        for bad in [".", "..", "resp\r\nx", "a\0b", "tab\there", "\u{85}"] {
            assert!(check_response_id(bad).is_err(), "{bad:?}");
        }
        for good in ["resp_1", "...", ".hidden", "a/../b", "a?b", "a b", "ü"] {
            assert!(check_response_id(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn response_ids_stay_one_path_segment() {
        let s = sampler("http://127.0.0.1:9/api/");
        assert_eq!(s.response_url("resp_1", None).as_str(), "http://127.0.0.1:9/api/v1/responses/resp_1");
        assert_eq!(s.response_url("a/../b", Some("cancel")).path(), "/api/v1/responses/a%2F..%2Fb/cancel");
        let odd = s.response_url("a?b c#d", None);
        assert_eq!((odd.path(), odd.query()), ("/api/v1/responses/a%3Fb%20c%23d", None));
        assert_eq!(s.response_url("...", None).path(), "/api/v1/responses/...");
    }

    #[test]
    fn only_scheduled_windows_use_idempotency_keys() {
        let mut s = sampler("http://127.0.0.1:9");
        assert!(s.uses_idempotency_key());
        s.config.completion_window = "asap".into();
        assert!(!s.uses_idempotency_key());
        s.config.completion_window = "priority".into();
        s.config.protocol = Protocol::Completions;
        assert!(!s.uses_idempotency_key());
    }

    #[test]
    fn api_keys_must_be_printable_and_are_rendered_once() {
        let mut config = sampler("http://127.0.0.1:9").config;
        config.api_key = Some("bad\nkey".into());
        assert!(Sampler::new(config).is_err());
        let s = sampler("http://127.0.0.1:9");
        assert_eq!(s.headers.lines(), b"content-type: application/json\r\nauthorization: Bearer sk-test\r\n");
    }

    #[test]
    fn failures_become_typed_errors() {
        let (retry, _, e) = classify("poll", AttemptFailure::Protocol("bad chunk".into()), true);
        assert!(!retry);
        assert_eq!(e.kind, ErrorKind::Protocol);
        assert!(e.message.contains("bad chunk"));
        let status = |status, should_retry| AttemptFailure::Status {
            status,
            code: Some("busy".into()),
            error_type: None,
            message: "try later".into(),
            retry_after: Some(Duration::from_secs(1)),
            should_retry,
        };
        let (retry, hint, e) = classify("create", status(503, None), true);
        assert!(retry);
        assert_eq!(hint, Some(Duration::from_secs(1)));
        assert_eq!((e.kind, e.status, e.code.as_deref()), (ErrorKind::Status, Some(503), Some("busy")));
        assert_eq!(e.message, "create failed with HTTP 503 (busy): try later");
        assert!(!classify("create", status(503, Some(false)), true).0);
        assert!(!classify("create", status(503, None), false).0, "an unkeyed create is not resent");
        let (retry, _, e) = classify("poll", AttemptFailure::Transport { timeout: true, message: "timed out".into() }, true);
        assert!(retry);
        assert_eq!(e.kind, ErrorKind::Timeout);
        let (retry, _, e) = classify("poll", AttemptFailure::Tls("unknown issuer".into()), true);
        assert!(!retry && e.kind == ErrorKind::Connection && e.message.contains("ca_bundle"));
    }

    #[test]
    fn terminal_error_messages() {
        let e = deadline_error(Some(Duration::from_millis(1500)), Some("resp_1"));
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert_eq!(e.response_id.as_deref(), Some("resp_1"));
        assert!(e.message.contains("poll_timeout=1.5s") && e.message.contains("cancel"));
        let e = cancelled_error(None);
        assert_eq!((e.kind, e.response_id), (ErrorKind::Cancelled, None));
        let panic: Box<dyn std::any::Any + Send> = Box::new("boom");
        assert_eq!(panic_message(&panic), "boom");
        let panic: Box<dyn std::any::Any + Send> = Box::new(7u8);
        assert_eq!(panic_message(&panic), "a panic without a message");
    }

    #[test]
    fn idempotency_keys_are_fresh() {
        let (a, b) = (new_idempotency_key(), new_idempotency_key());
        assert_ne!(a, b);
        assert!(a.starts_with("sail-lite-") && a.len() == "sail-lite-".len() + 32);
    }
}
