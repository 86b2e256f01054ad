//! LoRA adapters: the ones registered by name in the config, and Tinker signed-URL archives downloaded
//! on demand and cached per URL. Signed URLs are bearer credentials: they are never logged, never put
//! in an error message, and the cache keys on a hash of them.
use crate::config::{EmulatorConfig, LoraSpec};
use crate::model::{make_test_adapter_config, make_test_safetensors, parse_adapter_config, Adapter};
use crate::stats::{inc, Stats};
use parking_lot::Mutex;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::OnceCell;

pub enum LoraRef {
    None,
    Named(Arc<Adapter>),
    Url { url: String, config_json: String },
}

#[derive(Debug, Clone)]
pub struct LoraError {
    pub code: &'static str,
    pub message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> LoraError {
    LoraError { code, message: message.into() }
}

const CACHE_MAX: usize = 256;

pub struct LoraRegistry {
    named: HashMap<String, Arc<Adapter>>,
    cache: Mutex<HashMap<u64, Arc<OnceCell<Arc<Adapter>>>>>,
    hasher: RandomState,
    client: OnceLock<reqwest::Client>,
    timeout: Duration,
    max_bytes: usize,
    stats: Arc<Stats>,
    served: Vec<String>,
}

impl LoraRegistry {
    pub fn new(cfg: &EmulatorConfig, stats: Arc<Stats>) -> Result<LoraRegistry, String> {
        let mut named = HashMap::new();
        for (name, spec) in &cfg.loras {
            let a = load_spec(spec, &cfg.models).map_err(|e| format!("loras.{name}: {e}"))?;
            named.insert(name.clone(), Arc::new(a));
        }
        Ok(LoraRegistry {
            named,
            cache: Mutex::new(HashMap::new()),
            hasher: RandomState::new(),
            client: OnceLock::new(),
            timeout: Duration::from_secs_f64(cfg.lora_download_timeout_seconds.clamp(0.001, 3600.0)),
            max_bytes: cfg.lora_max_archive_bytes,
            stats,
            served: cfg.models.clone(),
        })
    }

    pub fn named(&self, name: &str) -> Option<Arc<Adapter>> {
        self.named.get(name).cloned()
    }

    fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            reqwest::Client::builder()
                .no_proxy()
                .timeout(self.timeout)
                .connect_timeout(self.timeout.min(Duration::from_secs(10)))
                .build()
                .unwrap_or_default()
        })
    }

    /// The adapter to sample with, downloading a URL archive on first use.
    /// All served names are backed by the same model, so an adapter made for any of them is
    /// loaded against the name its config gives (when that name is served).
    fn base_for<'a>(&self, config_json: &str, request_model: &'a str) -> std::borrow::Cow<'a, str> {
        let named = serde_json::from_str::<serde_json::Value>(config_json)
            .ok()
            .and_then(|v| v.get("base_model_name_or_path").and_then(|b| b.as_str()).map(String::from));
        match named {
            Some(b) if self.served.contains(&b) => std::borrow::Cow::Owned(b),
            _ => std::borrow::Cow::Borrowed(request_model),
        }
    }

    pub async fn resolve(&self, r: &LoraRef, base_model: &str) -> Result<Option<Arc<Adapter>>, LoraError> {
        match r {
            LoraRef::None => Ok(None),
            LoraRef::Named(a) => Ok(Some(a.clone())),
            LoraRef::Url { url, config_json } => {
                if let Some(exp) = url_expiry(url) {
                    if crate::state::unix_now_f64() >= exp {
                        return Err(err("lora_url_expired", "The signed LoRA archive URL has expired; resolve a fresh one"));
                    }
                }
                let base = self.base_for(config_json, base_model);
                let base_model: &str = &base;
                let key = self.hasher.hash_one((url.as_str(), config_json.as_str(), base_model));
                let cell = {
                    let mut c = self.cache.lock();
                    if c.len() >= CACHE_MAX && !c.contains_key(&key) {
                        c.clear();
                    }
                    c.entry(key).or_default().clone()
                };
                if let Some(a) = cell.get() {
                    inc(&self.stats.lora_cache_hits);
                    return Ok(Some(a.clone()));
                }
                let a = cell.get_or_try_init(|| self.download(url, config_json, base_model)).await?;
                Ok(Some(a.clone()))
            }
        }
    }

    async fn download(&self, url: &str, config_json: &str, base_model: &str) -> Result<Arc<Adapter>, LoraError> {
        inc(&self.stats.lora_downloads);
        let host = url_host(url);
        let unreachable = |why: String| err("lora_url_unreachable", format!("Could not download the LoRA archive from {host}: {why}"));
        let resp = self.client().get(url).send().await.map_err(|e| unreachable(describe(&e)))?;
        let status = resp.status().as_u16();
        if status == 403 || status == 410 {
            return Err(err(
                "lora_url_expired",
                format!("The LoRA archive host {host} answered HTTP {status}: the signed URL has expired or is no longer valid; resolve a fresh one"),
            ));
        }
        if !(200..300).contains(&status) {
            return Err(unreachable(format!("the host answered HTTP {status}")));
        }
        let mut resp = resp;
        let mut data = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if data.len() + c.len() > self.max_bytes {
                        return Err(err("invalid_lora_adapter", format!("The LoRA archive is larger than {} bytes", self.max_bytes)));
                    }
                    data.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => return Err(unreachable(describe(&e))),
            }
        }
        let (cfg, base) = (config_json.to_string(), base_model.to_string());
        let loaded = tokio::task::spawn_blocking(move || Adapter::from_archive(&data, &cfg, &base).map_err(|e| e.to_string()))
            .await
            .map_err(|_| err("invalid_lora_adapter", "The LoRA archive could not be loaded"))?;
        loaded.map(Arc::new).map_err(|e| err("invalid_lora_adapter", format!("The LoRA archive is not a valid adapter: {e}")))
    }
}

/// reqwest's own messages include the URL; describe the failure without it.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "the download timed out".into()
    } else if e.is_connect() {
        "the host refused or did not accept the connection".into()
    } else if e.is_body() || e.is_decode() {
        "the download was interrupted".into()
    } else {
        "the request failed".into()
    }
}

/// `scheme://host[:port]` of a URL (no path, no query).
pub fn url_host(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host); // drop userinfo
    format!("{scheme}://{host}")
}

/// A URL safe to show: the query (which carries the signature) and any userinfo removed.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        let base = url.split(['?', '#']).next().unwrap_or("");
        return if url.contains('?') { format!("{base}?<redacted>") } else { base.to_string() };
    };
    let path_start = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..path_start];
    let host = host.rsplit('@').next().unwrap_or(host);
    let path = rest[path_start..].split(['?', '#']).next().unwrap_or("");
    let redacted = if rest[path_start..].contains('?') { "?<redacted>" } else { "" };
    format!("{scheme}://{host}{path}{redacted}")
}

/// The expiry (unix seconds) a signed URL carries in its query, if any.
pub fn url_expiry(url: &str) -> Option<f64> {
    let q = url.split_once('?')?.1.split('#').next()?;
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k.eq_ignore_ascii_case("expires") {
            return v.parse::<f64>().ok();
        }
    }
    None
}

fn config_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The base-model name to validate a registered adapter against: `base_model` if given, else the
/// one its config names when served, else the first served model.
fn spec_base(spec: &LoraSpec, cfg_text: Option<&str>, served: &[String]) -> String {
    if let Some(b) = &spec.base_model {
        return b.clone();
    }
    let named = cfg_text
        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        .and_then(|v| v.get("base_model_name_or_path").and_then(|b| b.as_str()).map(String::from));
    match named {
        Some(b) if served.contains(&b) => b,
        _ => served[0].clone(),
    }
}

fn load_spec(spec: &LoraSpec, served: &[String]) -> Result<Adapter, String> {
    if let Some(r) = spec.rank {
        let base = &spec_base(spec, None, served);
        let st = make_test_safetensors(r, spec.seed.unwrap_or(0));
        let cfg = parse_adapter_config(&make_test_adapter_config(r, base)).map_err(|e| e.to_string())?;
        return Adapter::from_safetensors(&st, &cfg, base).map_err(|e| e.to_string());
    }
    let path = spec.path.as_deref().ok_or("give `path` or `rank`")?;
    let p = std::path::Path::new(path);
    let given_cfg = spec.adapter_config.as_ref().map(config_text);
    if p.is_dir() {
        let cfg = match given_cfg {
            Some(c) => c,
            None => std::fs::read_to_string(p.join("adapter_config.json")).map_err(|e| format!("{path}/adapter_config.json: {e}"))?,
        };
        let base = &spec_base(spec, Some(&cfg), served);
        let st = std::fs::read(p.join("adapter_model.safetensors")).map_err(|e| format!("{path}/adapter_model.safetensors: {e}"))?;
        let cfg = parse_adapter_config(&cfg).map_err(|e| e.to_string())?;
        return Adapter::from_safetensors(&st, &cfg, base).map_err(|e| e.to_string());
    }
    let bytes = std::fs::read(p).map_err(|e| format!("{path}: {e}"))?;
    let cfg = given_cfg.ok_or("`adapter_config` is required with a .safetensors file or an archive")?;
    let base = &spec_base(spec, Some(&cfg), served);
    if path.ends_with(".safetensors") {
        let cfg = parse_adapter_config(&cfg).map_err(|e| e.to_string())?;
        Adapter::from_safetensors(&bytes, &cfg, base).map_err(|e| e.to_string())
    } else {
        Adapter::from_archive(&bytes, &cfg, base).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        let u = "https://user:pw@storage.example.com/ckpt/a.tar?expires=1&signature=abc#x";
        assert_eq!(redact_url(u), "https://storage.example.com/ckpt/a.tar?<redacted>");
        assert_eq!(url_host(u), "https://storage.example.com");
        assert_eq!(url_expiry(u), Some(1.0));
        assert_eq!(url_expiry("http://h/a"), None);
        assert_eq!(redact_url("ckpt?sig=1"), "ckpt?<redacted>");
        assert_eq!(redact_url("gs://b/o?X-Goog-Signature=1"), "gs://b/o?<redacted>");
    }
}
