//! sail-emulator: a local Sail server (the raw-token Responses protocol, OpenAI `/v1/completions`,
//! Tinker-style signed archive hosting) backed by the byte n-gram model, with configurable latency
//! and fault injection. Built to never be the bottleneck of a benchmark.
//!
//! ```no_run
//! let h = sail_emulator::EmulatorHandle::start(Default::default()).unwrap();
//! println!("listening on {}", h.local_addr());
//! h.shutdown();
//! ```
pub mod archives;
pub mod config;
pub mod error;
pub mod faults;
pub mod jobs;
pub mod lora;
pub mod model;
pub mod prefix_cache;
pub mod render;
pub mod reqlog;
pub mod rng;
pub mod routes;
pub mod server;
pub mod state;
pub mod stats;
pub mod store;
pub mod validate;

pub use config::{EmulatorConfig, FaultConfig, LatencyConfig, LoraSpec};

use parking_lot::Mutex;
use state::AppState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

/// Why `start` failed: a bad config (a ValueError in Python) or the socket (an OSError).
#[derive(Debug, Clone)]
pub enum StartError {
    Config(String),
    Bind(String),
    Runtime(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(m) | StartError::Bind(m) | StartError::Runtime(m) => f.write_str(m),
        }
    }
}

struct Running {
    shutdown: watch::Sender<bool>,
    thread: JoinHandle<()>,
}

/// A running emulator. Dropping it shuts it down.
pub struct EmulatorHandle {
    addr: SocketAddr,
    state: Arc<AppState>,
    running: Mutex<Option<Running>>,
}

impl EmulatorHandle {
    /// Bind, spawn the server runtime on a background thread and return once listening.
    pub fn start(config: EmulatorConfig) -> Result<EmulatorHandle, String> {
        Self::start_detailed(config).map_err(|e| e.to_string())
    }

    pub fn start_detailed(config: EmulatorConfig) -> Result<EmulatorHandle, StartError> {
        config.validate().map_err(StartError::Config)?;
        // Build the model's tables now, not on the first request.
        let _ = model::NgramModel::default_model();
        let listener = std::net::TcpListener::bind((config.host.as_str(), config.port))
            .map_err(|e| StartError::Bind(format!("cannot listen on {}:{}: {e}", config.host, config.port)))?;
        let addr = listener.local_addr().map_err(|e| StartError::Bind(e.to_string()))?;
        listener.set_nonblocking(true).map_err(|e| StartError::Bind(e.to_string()))?;
        let host = if addr.is_ipv6() { format!("[{}]", addr.ip()) } else { addr.ip().to_string() };
        let base_url = format!("http://{host}:{}", addr.port());
        let reqlog = match &config.request_log {
            Some(p) => Some(reqlog::RequestLog::open(p).map_err(StartError::Config)?),
            None => None,
        };
        let workers = config.worker_threads;
        let max_body = config.max_body_bytes;
        let state = Arc::new(AppState::new(config, base_url, reqlog).map_err(StartError::Config)?);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .max_blocking_threads(8)
            .thread_name("sail-emulator")
            .enable_all()
            .build()
            .map_err(|e| StartError::Runtime(format!("cannot start the emulator runtime: {e}")))?;
        let listener = {
            let _g = rt.enter();
            tokio::net::TcpListener::from_std(listener).map_err(|e| StartError::Bind(e.to_string()))?
        };
        let (tx, rx) = watch::channel(false);
        let router = routes::router(state.clone(), max_body);
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("sail-emulator-main".into())
            .spawn(move || {
                rt.block_on(server::serve(listener, st, router, rx));
                // Drops every connection and pending job still on the runtime.
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .map_err(|e| StartError::Runtime(format!("cannot spawn the emulator thread: {e}")))?;
        Ok(EmulatorHandle { addr, state, running: Mutex::new(Some(Running { shutdown: tx, thread })) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port` (the API root, without `/v1`).
    pub fn base_url(&self) -> &str {
        &self.state.base_url
    }

    pub fn stats(&self) -> serde_json::Value {
        self.state.stats.to_json(self.state.store.len())
    }

    pub fn reset_stats(&self) {
        self.state.stats.reset();
    }

    /// Change `latency`, `faults` or `retention_seconds` live (a JSON merge patch).
    pub fn update(&self, patch: serde_json::Value) -> Result<(), String> {
        let cur = self.state.live();
        let next = config::patched(&cur, &patch)?;
        self.state.set_live(next);
        Ok(())
    }

    /// The live config (with the API key).
    pub fn config(&self) -> EmulatorConfig {
        (*self.state.live()).clone()
    }

    /// Host an archive; returns its absolute signed URL, valid for `ttl`.
    pub fn add_archive(&self, name: &str, bytes: Vec<u8>, ttl: Duration) -> String {
        self.state.archives.add(name, bytes, ttl)
    }

    /// Stop accepting, close every connection, join the runtime thread. Idempotent.
    pub fn shutdown(&self) {
        let running = self.running.lock().take();
        if let Some(r) = running {
            let _ = r.shutdown.send(true);
            let _ = r.thread.join();
        }
        if let Some(log) = &self.state.reqlog {
            log.close();
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.lock().as_ref().is_some_and(|r| !r.thread.is_finished())
    }

    /// Block until `shutdown` is called from elsewhere (or the server stops).
    pub fn wait(&self) {
        loop {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Run in the foreground until the process is killed (for a CLI).
pub fn run_forever(config: EmulatorConfig) -> Result<(), String> {
    let h = EmulatorHandle::start(config)?;
    eprintln!("sail emulator listening on {}", h.base_url());
    h.wait();
    Ok(())
}
