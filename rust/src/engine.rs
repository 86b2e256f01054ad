//! The process-wide engine: one small tokio runtime and one `Transport` per
//! (origin, TLS options, limit), built lazily and rebuilt in a forked child.
//!
//! Fork: a child inherits the parent's engine memory but none of its threads. Dropping the
//! inherited runtime or clients would wait for threads that do not exist (a hang), so the
//! engine is tagged with the PID that built it and a child simply builds a new one, leaking
//! the old one on purpose. Engines are leaked (never freed) for the same reason at exit:
//! interpreter shutdown never waits on tokio, and tokio never calls into Python.

use crate::transport::Transport;
use crate::wake_coalescing;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;

pub struct Engine {
    pid: u32,
    /// Where sample tasks are spawned (from the Python thread or from other tasks).
    pub handle: tokio::runtime::Handle,
    clients: Mutex<HashMap<HttpClientKey, HttpPool>>,
    pub metrics: Metrics,
}

/// The transport of one origin (see `transport`): its pool, TLS, limits and route.
pub type HttpPool = Arc<Transport>;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct HttpClientKey {
    pub origin: String,
    pub ca_bundle: Option<String>,
    pub max_connections: usize,
}

#[derive(Default)]
pub struct Metrics {
    pub http_requests: AtomicU64,
    pub retries: AtomicU64,
    pub samples_started: AtomicU64,
    pub samples_succeeded: AtomicU64,
    pub samples_failed: AtomicU64,
    pub cancels_sent: AtomicU64,
    /// Creates and polls started (Responses protocol), so requests per sample can be read.
    pub creates: AtomicU64,
    pub polls: AtomicU64,
    /// Scoped samples created again because their stored response was gone.
    pub samples_recreated: AtomicU64,
    /// Scoped samples that followed the response a journal recorded for their key.
    pub samples_reattached: AtomicU64,
    /// Token usage per completion window (see `engine_metrics()`).
    pub usage: crate::usage_totals::UsageTotals,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("http_requests", g(&self.http_requests)),
            ("retries", g(&self.retries)),
            ("samples_started", g(&self.samples_started)),
            ("samples_succeeded", g(&self.samples_succeeded)),
            ("samples_failed", g(&self.samples_failed)),
            ("cancels_sent", g(&self.cancels_sent)),
            ("creates", g(&self.creates)),
            ("polls", g(&self.polls)),
            ("samples_recreated", g(&self.samples_recreated)),
            ("samples_reattached", g(&self.samples_reattached)),
            ("samples_cancelled_at_exit", crate::exit_cancel::EXIT_CANCELLED.load(Ordering::Relaxed)),
        ]
    }
}

static ENGINE: AtomicPtr<Engine> = AtomicPtr::new(std::ptr::null_mut());

/// Worker threads: Python is the bottleneck, so few; overridable with SAIL_LITE_WORKER_THREADS.
fn worker_threads() -> usize {
    std::env::var("SAIL_LITE_WORKER_THREADS").ok().and_then(|v| v.parse().ok()).filter(|n| *n >= 1).unwrap_or(DEFAULT_WORKER_THREADS)
}

const DEFAULT_WORKER_THREADS: usize = 1;

const ENGINE_THREAD_NAME: &str = "sail-lite-engine";

/// A panic on an engine thread is caught where it can happen (`sampler::run` reports it as an
/// `internal` error on the sample), so the default hook's message and backtrace on stderr
/// would only be noise, and noise a hostile server could provoke at will. Other threads
/// (Python's, the emulator's) keep the previous hook.
fn silence_engine_thread_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some(ENGINE_THREAD_NAME) {
                previous(info);
            }
        }));
    });
}

/// One worker: a current-thread runtime driven by a dedicated thread, so the HTTP connection
/// tasks and the sample tasks wake each other without cross-thread hand-offs (measured to
/// cost less CPU per sample). More workers: tokio's work-stealing scheduler.
fn start_runtime() -> Result<tokio::runtime::Handle, String> {
    silence_engine_thread_panics();
    let threads = worker_threads();
    if threads == 1 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(wake_coalescing::before_sleep)
            .on_thread_unpark(wake_coalescing::after_wake)
            .build()
            .map_err(|e| format!("could not start the sail-lite runtime: {e}"))?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name(ENGINE_THREAD_NAME.into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .map_err(|e| format!("could not start the sail-lite engine thread: {e}"))?;
        return Ok(handle);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(ENGINE_THREAD_NAME)
        .enable_all()
        .on_thread_park(wake_coalescing::before_sleep)
        .on_thread_unpark(wake_coalescing::after_wake)
        .build()
        .map_err(|e| format!("could not start the sail-lite runtime: {e}"))?;
    let handle = rt.handle().clone();
    // Never dropped: dropping a runtime waits for its workers, which must never happen at
    // interpreter exit or in a forked child.
    std::mem::forget(rt);
    Ok(handle)
}

/// The engine of this process, built on first use (and again in a forked child).
pub fn engine() -> Result<&'static Engine, String> {
    let current = ENGINE.load(Ordering::Acquire);
    let pid = std::process::id();
    // SAFETY: engines are leaked boxes, never freed, so any non-null pointer stays valid.
    if let Some(e) = unsafe { current.as_ref() } {
        if e.pid == pid {
            return Ok(e);
        }
    }
    // Two threads racing here may both start a runtime; the loser's stays idle (harmless,
    // and it happens at most once per process).
    let handle = start_runtime()?;
    let fresh = Box::into_raw(Box::new(Engine { pid, handle, clients: Mutex::new(HashMap::new()), metrics: Metrics::default() }));
    match ENGINE.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // The replaced engine (if any) belongs to a parent process: leak it.
        Ok(_) => Ok(unsafe { &*fresh }),
        Err(winner) => {
            // SAFETY: see above.
            Ok(unsafe { &*winner })
        }
    }
}

impl Engine {
    pub fn http_pool(&self, key: &HttpClientKey) -> Result<HttpPool, String> {
        if let Some(pool) = self.clients.lock().get(key) {
            return Ok(pool.clone());
        }
        let pool = Transport::new(key, &self.handle)?;
        Ok(self.clients.lock().entry(key.clone()).or_insert(pool).clone())
    }
}
