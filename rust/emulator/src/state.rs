//! Shared server state: the immutable settings, the live (patchable) config, counters and stores.
use crate::archives::Archives;
use crate::config::EmulatorConfig;
use crate::lora::LoraRegistry;
use crate::prefix_cache::PrefixCache;
use crate::reqlog::RequestLog;
use crate::rng;
use crate::stats::Stats;
use crate::store::Store;
use parking_lot::RwLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

pub struct AppState {
    /// Latest config; only `config::LIVE_FIELDS` ever change.
    live: RwLock<Arc<EmulatorConfig>>,
    pub models: Vec<Arc<str>>,
    pub windows: Vec<String>,
    pub default_window: String,
    pub default_max_output_tokens: u32,
    /// Exact bytes of the accepted `Authorization` header value.
    pub auth_header: Box<[u8]>,
    pub seed: u64,
    pub stats: Arc<Stats>,
    pub store: Store,
    pub archives: Archives,
    pub loras: LoraRegistry,
    /// Simulated KV-cache locality per `prompt_cache_key`.
    pub prefix_cache: PrefixCache,
    pub reqlog: Option<RequestLog>,
    /// `http://host:port`, for signed archive URLs.
    pub base_url: String,
    next_response: AtomicU64,
    fault_seq: AtomicU64,
    id_salt: u64,
}

impl AppState {
    pub fn new(cfg: EmulatorConfig, base_url: String, reqlog: Option<RequestLog>) -> Result<AppState, String> {
        let stats = Arc::new(Stats::default());
        let loras = LoraRegistry::new(&cfg, stats.clone())?;
        let salt = rng::mix(cfg.seed ^ 0x5A11_1173);
        Ok(AppState {
            models: cfg.models.iter().map(|m| Arc::from(m.as_str())).collect(),
            windows: cfg.windows.clone(),
            default_window: cfg.default_window.clone(),
            default_max_output_tokens: cfg.default_max_output_tokens,
            auth_header: format!("Bearer {}", cfg.api_key).into_bytes().into_boxed_slice(),
            seed: cfg.seed,
            store: Store::new(stats.clone()),
            archives: Archives::new(base_url.clone()),
            loras,
            prefix_cache: PrefixCache::default(),
            stats,
            reqlog,
            base_url,
            next_response: AtomicU64::new(0),
            fault_seq: AtomicU64::new(0),
            id_salt: salt,
            live: RwLock::new(Arc::new(cfg)),
        })
    }

    pub fn live(&self) -> Arc<EmulatorConfig> {
        self.live.read().clone()
    }

    pub fn set_live(&self, cfg: EmulatorConfig) {
        *self.live.write() = Arc::new(cfg);
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs_f64(self.live.read().retention_seconds.min(1e9))
    }

    pub fn model(&self, name: &str) -> Option<Arc<str>> {
        self.models.iter().find(|m| &***m == name).cloned()
    }

    /// A fresh response number and its public id (a bijective scramble of the counter, so ids are
    /// unique and not sequential-looking).
    pub fn next_response(&self) -> (u64, u64) {
        let n = self.next_response.fetch_add(1, Relaxed);
        (n, rng::mix(n ^ self.id_salt))
    }

    pub fn next_fault_seq(&self) -> u64 {
        self.fault_seq.fetch_add(1, Relaxed)
    }
}

pub fn id_string(id: u64) -> String {
    format!("resp_{id:016x}")
}

pub fn parse_id(s: &str) -> Option<u64> {
    let hex = s.strip_prefix("resp_")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn unix_now_f64() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
