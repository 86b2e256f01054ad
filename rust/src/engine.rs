//! The process-wide engine: one small tokio runtime and one pooled HTTP client per
//! (origin, TLS options), built lazily and rebuilt in a forked child.
//!
//! Fork: a child inherits the parent's engine memory but none of its threads. Dropping the
//! inherited runtime or clients would wait for threads that do not exist (a hang), so the
//! engine is tagged with the PID that built it and a child simply builds a new one, leaking
//! the old one on purpose. Engines are leaked (never freed) for the same reason at exit:
//! interpreter shutdown never waits on tokio, and tokio never calls into Python.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use crate::http1::Http1Pool;
use tokio::sync::Semaphore;

pub struct Engine {
    pid: u32,
    /// Where sample tasks are spawned (from the Python thread or from other tasks).
    pub handle: tokio::runtime::Handle,
    clients: Mutex<HashMap<HttpClientKey, HttpPool>>,
    pub metrics: Metrics,
}

/// The clients of one origin plus the bound on its concurrent requests (so 50,000 pending
/// samples never mean 50,000 sockets). Creates and polls go through the lean `http1` client;
/// reqwest serves cancels, and everything when a proxy is configured (it honours the proxy
/// environment variables, which `http1` does not implement).
#[derive(Clone)]
pub struct HttpPool {
    pub client: reqwest::Client,
    pub http1: Option<Arc<Http1Pool>>,
    pub permits: Arc<Semaphore>,
}

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
        ]
    }
}

static ENGINE: AtomicPtr<Engine> = AtomicPtr::new(std::ptr::null_mut());

/// Worker threads: Python is the bottleneck, so few; overridable with SAIL_LITE_WORKER_THREADS.
fn worker_threads() -> usize {
    std::env::var("SAIL_LITE_WORKER_THREADS").ok().and_then(|v| v.parse().ok()).filter(|n| *n >= 1).unwrap_or(DEFAULT_WORKER_THREADS)
}

const DEFAULT_WORKER_THREADS: usize = 1;

/// One worker: a current-thread runtime driven by a dedicated thread, so the HTTP connection
/// tasks and the sample tasks wake each other without cross-thread hand-offs (measured to
/// cost less CPU per sample). More workers: tokio's work-stealing scheduler.
fn start_runtime() -> Result<tokio::runtime::Handle, String> {
    let threads = worker_threads();
    if threads == 1 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("could not start the sail-lite runtime: {e}"))?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("sail-lite-engine".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .map_err(|e| format!("could not start the sail-lite engine thread: {e}"))?;
        return Ok(handle);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("sail-lite-engine")
        .enable_all()
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
        let pool = build_pool(key, &self.handle)?;
        Ok(self.clients.lock().entry(key.clone()).or_insert(pool).clone())
    }
}

fn build_pool(key: &HttpClientKey, runtime: &tokio::runtime::Handle) -> Result<HttpPool, String> {
    let mut builder = reqwest::Client::builder()
        // Our APIs never redirect; following one could hand the bearer token to another host.
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(key.max_connections)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(30))
        .user_agent(concat!("sail-lite/", env!("CARGO_PKG_VERSION")))
        .https_only(false);
    let ca_pem = match &key.ca_bundle {
        Some(path) => Some(std::fs::read(path).map_err(|e| format!("ca_bundle: cannot read the CA bundle file: {e}"))?),
        None => None,
    };
    if let Some(pem) = &ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("ca_bundle: not a PEM bundle: {e}"))?;
        if certs.is_empty() {
            return Err("ca_bundle: the file holds no PEM certificates".into());
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build().map_err(|e| format!("could not build the HTTP client: {e}"))?;
    let http1 = if proxy_configured() {
        None
    } else {
        let origin = reqwest::Url::parse(&key.origin).map_err(|_| "base_url: expected an http(s) URL".to_string())?;
        let pool = Arc::new(Http1Pool::new(&origin, ca_pem.as_deref(), key.max_connections)?);
        Http1Pool::start_reaper(&pool, runtime);
        Some(pool)
    };
    Ok(HttpPool { client, http1, permits: Arc::new(Semaphore::new(key.max_connections)) })
}

/// Whether the environment names a proxy (then reqwest, which applies it and NO_PROXY, sends
/// everything).
fn proxy_configured() -> bool {
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}
