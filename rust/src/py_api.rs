//! The Python-facing classes of `sail_lite._core`: `SamplerClient` (one per completer
//! configuration) and `CompletionHub` (one per event loop). Validation of user arguments
//! lives in Python; this layer only checks what it must to stay memory-safe and typed.

use crate::engine::{self, HttpClientKey};
use crate::hub::{Completion, Event, Hub};
use crate::journal::Journal;
use crate::poll_planner::{PollPlanner, DEFAULT_POLL_OVERHEAD};
use crate::request_body::{PromptCacheKey, SamplingDefaults, Stop};
use crate::retry::RetryPolicy;
use crate::sample_error::SampleError;
use crate::sampler::{self, Protocol, SampleJob, Sampler, SamplerConfig};
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyType};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Sail's limit on prompt length, enforced before any request is made.
const MAX_PROMPT_TOKENS: usize = 2_000_000;
const MAX_TOKEN_ID: i64 = (1 << 31) - 1;
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;
/// A `prompt_cache_key` is a short routing label; the same bound as `_validation.py`'s.
const MAX_CACHE_KEY_CHARS: usize = 256;

static ARGUMENT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A `sail_lite.errors.SailArgumentError` naming the argument.
fn argument_error(py: Python<'_>, argument: &str, expected: &str, got: Option<Bound<'_, PyAny>>) -> PyErr {
    match ARGUMENT_ERROR.import(py, "sail_lite.errors", "SailArgumentError") {
        Ok(cls) => match cls.call1((argument, expected, got)) {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

fn secs(name: &str, v: Option<f64>) -> PyResult<Option<Duration>> {
    match v {
        None => Ok(None),
        // Capped so deadline arithmetic can never overflow; a year is "no deadline" in practice.
        Some(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s.min(MAX_SECONDS)))),
        Some(_) => Err(pyo3::exceptions::PyValueError::new_err(format!("{name}: expected a positive number of seconds"))),
    }
}

/// `prompt_cache_key=`: True (automatic), False/None (off), or a key for every create.
#[derive(FromPyObject)]
enum CacheKeyArg {
    Flag(bool),
    Key(String),
}

/// A caller's key: non-empty, at most [`MAX_CACHE_KEY_CHARS`], no control characters.
fn checked_cache_key(py: Python<'_>, argument: &str, key: String) -> PyResult<String> {
    if key.is_empty() || key.chars().count() > MAX_CACHE_KEY_CHARS || key.chars().any(char::is_control) {
        let expected = format!("a non-empty string of at most {MAX_CACHE_KEY_CHARS} printable characters");
        return Err(argument_error(py, argument, &expected, Some(key.into_pyobject(py)?.into_any())));
    }
    Ok(key)
}

#[pyclass(frozen, module = "sail_lite._core")]
pub struct SamplerClient {
    sampler: Arc<Sampler>,
    http_key: HttpClientKey,
}

#[pymethods]
impl SamplerClient {
    #[new]
    #[pyo3(signature = (*, protocol, base_url, api_key, model, temperature, top_p, request_logprobs, metadata,
        completion_window, timeout=None, poll_timeout=None, max_retries=8, max_connections=256, ca_bundle=None,
        poll_overhead=None, retry_base=None, retry_cap=None,
        prompt_cache_key=Some(CacheKeyArg::Flag(true))))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        protocol: &str,
        base_url: String,
        api_key: Option<String>,
        model: String,
        temperature: f64,
        top_p: f64,
        request_logprobs: bool,
        metadata: BTreeMap<String, String>,
        completion_window: String,
        timeout: Option<f64>,
        poll_timeout: Option<f64>,
        max_retries: u32,
        max_connections: usize,
        ca_bundle: Option<String>,
        poll_overhead: Option<f64>,
        retry_base: Option<f64>,
        retry_cap: Option<f64>,
        prompt_cache_key: Option<CacheKeyArg>,
    ) -> PyResult<Self> {
        let protocol = match protocol {
            "responses" => Protocol::Responses,
            "completions" => Protocol::Completions,
            other => return Err(pyo3::exceptions::PyValueError::new_err(format!("protocol: unknown {other:?}"))),
        };
        let origin = reqwest::Url::parse(&base_url)
            .map_err(|_| pyo3::exceptions::PyValueError::new_err("base_url: expected an http(s) URL"))?
            .origin()
            .ascii_serialization();
        let poll_overhead = match poll_overhead {
            None => DEFAULT_POLL_OVERHEAD,
            Some(x) if x.is_finite() && x > 0.0 && x <= 10.0 => x,
            Some(_) => return Err(pyo3::exceptions::PyValueError::new_err("poll_overhead: expected a number in (0, 10]")),
        };
        let poll = PollPlanner::for_key(&origin, &model, &completion_window, poll_overhead);
        let mut retry = RetryPolicy { max_retries, ..RetryPolicy::default() };
        if let Some(b) = secs("retry_base", retry_base)? {
            retry.base = b;
        }
        if let Some(c) = secs("retry_cap", retry_cap)? {
            retry.cap = c;
        }
        let prompt_cache = match prompt_cache_key {
            Some(CacheKeyArg::Flag(true)) => PromptCacheKey::Automatic,
            Some(CacheKeyArg::Flag(false)) | None => PromptCacheKey::Disabled,
            Some(CacheKeyArg::Key(k)) => PromptCacheKey::Fixed(Python::attach(|py| checked_cache_key(py, "prompt_cache_key", k))?),
        };
        let config = SamplerConfig {
            protocol,
            base_url,
            api_key,
            defaults: SamplingDefaults { model, temperature, top_p, request_logprobs, metadata, prompt_cache },
            completion_window,
            attempt_timeout: secs("timeout", timeout)?,
            sample_timeout: secs("poll_timeout", poll_timeout)?,
            retry,
            poll,
        };
        if let Some(path) = &ca_bundle {
            check_ca_bundle(path).map_err(|expected| Python::attach(|py| argument_error(py, "ca_bundle", &expected, None)))?;
        }
        let sampler = Sampler::new(config).map_err(pyo3::exceptions::PyValueError::new_err)?;
        let http_key = HttpClientKey { origin, ca_bundle, max_connections: max_connections.max(1) };
        Ok(SamplerClient { sampler: Arc::new(sampler), http_key })
    }

    /// Start one sample; its completion arrives through `hub`'s pipe under `request_id`.
    /// `idempotency_key` (a sampling scope's derived key) replaces the random per-sample key;
    /// `prompt_cache_key`, if given, is sent instead of the completer's own key (Sail only).
    /// `journal`: where a scoped sample's response id is recorded and first looked up.
    #[pyo3(signature = (hub, request_id, prompt, max_tokens, stop_strings=None, stop_token_ids=None, idempotency_key=None,
        prompt_cache_key=None, journal=None))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        py: Python<'_>,
        hub: &CompletionHub,
        request_id: u64,
        prompt: &Bound<'_, PyAny>,
        max_tokens: u32,
        stop_strings: Option<Vec<String>>,
        stop_token_ids: Option<&Bound<'_, PyAny>>,
        idempotency_key: Option<String>,
        prompt_cache_key: Option<String>,
        journal: Option<PyRef<'_, ResponseJournal>>,
    ) -> PyResult<()> {
        if let Some(key) = &idempotency_key {
            check_idempotency_key(py, key, &self.sampler)?;
        }
        if journal.is_some() && idempotency_key.is_none() {
            return Err(argument_error(py, "journal", "a sampling scope's idempotency_key to record the response under", None));
        }
        let journal = journal.map(|j| j.inner.clone());
        let prompt = token_ids(py, "model_input", prompt, 1, MAX_PROMPT_TOKENS)?;
        let prompt_cache_key = prompt_cache_key.map(|k| checked_cache_key(py, "prompt_cache_key", k)).transpose()?;
        let stop = match (stop_strings, stop_token_ids) {
            (Some(s), _) if !s.is_empty() => Stop::Strings(s),
            (_, Some(ids)) => Stop::TokenIds(token_ids(py, "stop", ids, 0, 10_000)?),
            _ => Stop::None,
        };
        let engine = engine::engine().map_err(PyRuntimeError::new_err)?;
        let pool = engine.http_pool(&self.http_key).map_err(pyo3::exceptions::PyValueError::new_err)?;
        let cancel = hub.inner.register(request_id).ok_or_else(|| PyRuntimeError::new_err("this event loop's completion hub is closed"))?;
        let job = SampleJob { request_id, prompt, max_tokens, stop, idempotency_key, prompt_cache_key, journal };
        engine.handle.spawn(sampler::run(engine, pool, self.sampler.clone(), hub.inner.clone(), job, cancel));
        Ok(())
    }

    fn __repr__(&self) -> String {
        // Never the key: only what identifies the configuration.
        let c = &self.sampler.config;
        format!("SamplerClient(protocol={:?}, origin={:?}, model={:?})", c.protocol, self.http_key.origin, c.defaults.model)
    }
}

/// A response journal (see `journal.rs`): opened once per path and shared by the samples
/// of the scopes that name it.
#[pyclass(frozen, weakref, module = "sail_lite._core")]
pub struct ResponseJournal {
    inner: Arc<Journal>,
}

#[pymethods]
impl ResponseJournal {
    #[new]
    fn new(path: std::path::PathBuf) -> PyResult<Self> {
        let journal =
            Journal::open(&path).map_err(|e| PyOSError::new_err(format!("cannot open the response journal {}: {e}", path.display())))?;
        Ok(ResponseJournal { inner: Arc::new(journal) })
    }

    #[getter]
    fn path(&self) -> String {
        self.inner.path().to_string_lossy().into_owned()
    }

    /// The response recorded for `key`, if any.
    fn lookup(&self, key: &str) -> Option<String> {
        self.inner.lookup(key)
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!("ResponseJournal({:?}, {} responses)", self.inner.path().display().to_string(), self.inner.len())
    }
}

/// Sail's limits on an `Idempotency-Key` (<= 255 visible ASCII characters, room left for a
/// re-creation suffix), and only where keys may be sent (not `asap`, not `/completions`).
fn check_idempotency_key(py: Python<'_>, key: &str, sampler: &Sampler) -> PyResult<()> {
    if !sampler.uses_idempotency_key() {
        let expected = "a scheduled completion window (not 'asap', whose models reject idempotency keys) on the Responses protocol";
        return Err(argument_error(py, "sampling_scope", expected, None));
    }
    if key.is_empty() || key.len() > 240 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(argument_error(py, "idempotency_key", "1 to 240 visible ASCII characters", None));
    }
    Ok(())
}

/// Fail at construction, not at the first sample, on a CA bundle that cannot be used.
fn check_ca_bundle(path: &str) -> Result<(), String> {
    let pem = std::fs::read(path).map_err(|_| "a readable PEM file of CA certificates".to_string())?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(()),
        _ => Err("a PEM file holding at least one CA certificate".to_string()),
    }
}

/// Read a Python sequence of ints as token ids, with a typed error naming `argument`.
fn token_ids(py: Python<'_>, argument: &str, seq: &Bound<'_, PyAny>, min_len: usize, max_len: usize) -> PyResult<Vec<u32>> {
    let list = match seq.cast::<PyList>() {
        Ok(l) => l.clone(),
        Err(_) => PyList::new(
            py,
            seq.try_iter().map_err(|_| argument_error(py, argument, "a list of token ids", None))?.collect::<PyResult<Vec<_>>>()?,
        )?,
    };
    let n = list.len();
    if n < min_len || n > max_len {
        let expected = format!("between {min_len} and {max_len} token ids");
        return Err(argument_error(py, argument, &expected, Some(n.into_pyobject(py)?.into_any())));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // The hot path of every call (512+ ids): exact ints read through the C API without a
        // reference-counted handle per item. No Python code runs in this loop, so the list
        // cannot change under us.
        // SAFETY: `i < n == len(list)` and we hold the GIL; the item is a borrowed reference.
        let item = unsafe { pyo3::ffi::PyList_GetItem(list.as_ptr(), i as isize) };
        if !item.is_null() && unsafe { pyo3::ffi::PyLong_CheckExact(item) } != 0 {
            // SAFETY: an exact int; overflow reports -1 with an error set, handled below.
            let v = unsafe { pyo3::ffi::PyLong_AsLongLong(item) };
            if (0..=MAX_TOKEN_ID).contains(&v) {
                out.push(v as u32);
                continue;
            }
        }
        // Anything else (out of range, overflowing, a bool, a non-int, an int subclass) takes
        // the checked path, which names the argument and the offending value.
        out.push(checked_token_id(py, argument, &list.get_item(i)?)?);
    }
    Ok(out)
}

fn checked_token_id(py: Python<'_>, argument: &str, item: &Bound<'_, PyAny>) -> PyResult<u32> {
    let _ = PyErr::take(py); // an overflow in the fast path left an error set
    match item.extract::<i64>() {
        Ok(v) if (0..=MAX_TOKEN_ID).contains(&v) && !item.is_instance_of::<pyo3::types::PyBool>() => Ok(v as u32),
        _ => Err(argument_error(py, argument, "token ids: ints in 0..2**31-1", Some(item.clone()))),
    }
}

#[pyclass(frozen, module = "sail_lite._core")]
pub struct CompletionHub {
    inner: Arc<Hub>,
}

#[pymethods]
impl CompletionHub {
    #[new]
    fn new() -> PyResult<Self> {
        let hub = Hub::new().map_err(|e| PyOSError::new_err(format!("could not create the completion pipe: {e}")))?;
        Ok(CompletionHub { inner: Arc::new(hub) })
    }

    /// The pipe end to watch with `loop.add_reader`.
    #[getter]
    fn fd(&self) -> i32 {
        self.inner.read_fd()
    }

    /// Everything finished since the last drain, as `Completion`s.
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let done = self.inner.take();
        let out = PyList::empty(py);
        for c in done {
            out.append(Bound::new(py, PyCompletion::from_engine(py, c)?)?)?;
        }
        Ok(out)
    }

    /// The log events queued since the last call (none while logging is off).
    fn drain_events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for e in self.inner.take_events() {
            out.append(Bound::new(py, PyEngineEvent::from(e))?)?;
        }
        Ok(out)
    }

    /// Queue events at `level` and above (a `logging` level; above CRITICAL: none).
    fn set_log_level(&self, level: i64) {
        self.inner.set_log_level(level);
    }

    fn cancel(&self, request_id: u64) {
        self.inner.cancel(request_id);
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    /// Cancel all in-flight samples of this hub and close its pipe.
    fn close(&self) {
        self.inner.close();
    }
}

/// One finished sample as Python sees it (`sail_lite._core.Completion`). Adding a field is
/// one line here plus its value in `from_engine` (and its line in `_core.pyi`).
#[pyclass(frozen, get_all, name = "Completion", module = "sail_lite._core")]
pub struct PyCompletion {
    request_id: u64,
    /// The sampled token ids; None when the sample failed.
    tokens: Option<Py<PyList>>,
    logprobs: Option<Py<PyList>>,
    stop_reason: Option<&'static str>,
    response_id: Option<String>,
    /// HTTP retries this sample needed (whatever its outcome).
    retries: u32,
    /// Prompt tokens the server reported as prefix-cache hits (`usage...cached_tokens`; 0 on errors).
    prompt_cache_hit_tokens: u64,
    error: Option<Py<PyEngineError>>,
}

impl PyCompletion {
    fn from_engine(py: Python<'_>, c: Completion) -> PyResult<Self> {
        let retries = c.stats.retries;
        let request_id = c.request_id;
        Ok(match c.result {
            Ok(out) => PyCompletion {
                request_id,
                tokens: Some(PyList::new(py, &out.sample.tokens)?.unbind()),
                logprobs: out.sample.logprobs.as_ref().map(|lps| PyList::new(py, lps)).transpose()?.map(Bound::unbind),
                stop_reason: Some(out.sample.stop_reason.as_str()),
                response_id: out.response_id,
                retries,
                prompt_cache_hit_tokens: out.sample.usage.cached_tokens,
                error: None,
            },
            Err(e) => PyCompletion {
                request_id,
                tokens: None,
                logprobs: None,
                stop_reason: None,
                response_id: e.response_id.clone(),
                retries,
                prompt_cache_hit_tokens: 0,
                error: Some(Py::new(py, PyEngineError::from(e))?),
            },
        })
    }
}

#[pymethods]
impl PyCompletion {
    fn __repr__(&self) -> String {
        let outcome = match &self.error {
            Some(_) => "error".to_string(),
            None => format!("stop_reason={:?}", self.stop_reason.unwrap_or("")),
        };
        format!("Completion(request_id={}, {outcome}, retries={})", self.request_id, self.retries)
    }
}

/// Why a sample failed, as the engine saw it (`sail_lite._core.EngineError`);
/// `sail_lite.errors.from_engine` turns it into the matching exception, redacting its texts.
#[pyclass(frozen, get_all, name = "EngineError", module = "sail_lite._core")]
pub struct PyEngineError {
    /// One of `ErrorKind::as_str` (`status`, `timeout`, ...), mapped 1:1 to Python classes.
    kind: &'static str,
    /// Not yet redacted: may quote what a server sent back.
    message: String,
    status: Option<u16>,
    code: Option<String>,
    error_type: Option<String>,
    response_id: Option<String>,
    attempts: u32,
}

impl From<SampleError> for PyEngineError {
    fn from(e: SampleError) -> Self {
        PyEngineError {
            kind: e.kind.as_str(),
            message: e.message,
            status: e.status,
            code: e.code,
            error_type: e.error_type,
            response_id: e.response_id,
            attempts: e.attempts,
        }
    }
}

/// Cancel this process's unscoped in-flight samples on the server and wait, at most
/// `timeout` seconds (the GIL released), until those cancels were sent. For exit hooks.
#[pyfunction]
fn cancel_unscoped_samples(py: Python<'_>, timeout: f64) -> usize {
    let limit = Duration::from_secs_f64(if timeout.is_finite() { timeout.clamp(0.0, 3600.0) } else { 0.0 });
    py.detach(|| crate::exit_cancel::cancel_all_and_wait(limit))
}

#[pymethods]
impl PyEngineError {
    fn __repr__(&self) -> String {
        // Never the message or the server's texts: they are redacted only in Python.
        format!("EngineError(kind={:?}, status={:?}, attempts={})", self.kind, self.status, self.attempts)
    }
}

/// A log event of the engine (`sail_lite._core.EngineEvent`), emitted by `sail_lite._logging`.
#[pyclass(frozen, get_all, name = "EngineEvent", module = "sail_lite._core")]
pub struct PyEngineEvent {
    level: u8,
    kind: &'static str,
    request_id: u64,
    /// Not yet redacted: may quote what a server sent back.
    message: String,
    status: Option<u16>,
    attempt: u32,
    max_attempts: u32,
    delay: Option<f64>,
    response_id: Option<String>,
}

impl From<Event> for PyEngineEvent {
    fn from(e: Event) -> Self {
        let Event { level, kind, request_id, message, status, attempt, max_attempts, delay, response_id } = e;
        PyEngineEvent { level, kind, request_id, message, status, attempt, max_attempts, delay, response_id }
    }
}

#[pymethods]
impl PyEngineEvent {
    fn __repr__(&self) -> String {
        format!("EngineEvent(kind={:?}, request_id={}, level={})", self.kind, self.request_id, self.level)
    }
}

/// Process-wide engine counters (for summaries and tests).
#[pyfunction]
fn engine_metrics(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    if let Ok(e) = engine::engine() {
        for (k, v) in e.metrics.snapshot() {
            d.set_item(k, v)?;
        }
        for (k, v) in e.metrics.usage.snapshot() {
            d.set_item(k, v)?;
        }
    }
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SamplerClient>()?;
    m.add_class::<CompletionHub>()?;
    m.add_class::<ResponseJournal>()?;
    m.add_class::<PyCompletion>()?;
    m.add_class::<PyEngineError>()?;
    m.add_class::<PyEngineEvent>()?;
    m.add_function(wrap_pyfunction!(engine_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(cancel_unscoped_samples, m)?)?;
    Ok(())
}
