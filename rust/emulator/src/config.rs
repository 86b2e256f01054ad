//! Emulator configuration: the JSON schema the Python side and the CLI send, its defaults,
//! validation (errors name the offending field), and live patches (`EmulatorHandle::update`).
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorConfig {
    /// Interface to bind; loopback by default.
    pub host: String,
    /// 0 picks an ephemeral port.
    pub port: u16,
    /// The one Bearer key accepted on `/v1/*`.
    pub api_key: String,
    /// Served model names, all backed by the byte n-gram model.
    pub models: Vec<String>,
    /// Accepted `metadata.completion_window` values.
    pub windows: Vec<String>,
    /// Window used when a request names none.
    pub default_window: String,
    /// Tokio worker threads of the server runtime.
    pub worker_threads: usize,
    /// Seeds sampling (when `metadata.seed` is absent), latency jitter and fault decisions.
    pub seed: u64,
    pub latency: LatencyConfig,
    pub faults: FaultConfig,
    /// Finished responses are forgotten (404) this long after they finish.
    pub retention_seconds: f64,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// `max_output_tokens` when a create omits it.
    pub default_max_output_tokens: u32,
    /// Optional JSON-lines request log path.
    pub request_log: Option<String>,
    /// Named LoRAs usable as `metadata.lora`.
    pub loras: BTreeMap<String, LoraSpec>,
    /// Timeout of one LoRA archive download.
    pub lora_download_timeout_seconds: f64,
    /// Largest LoRA archive accepted from a URL.
    pub lora_max_archive_bytes: usize,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            host: "127.0.0.1".into(),
            port: 0,
            api_key: "sk-sail-lite-local".into(),
            models: vec!["moonshotai/Kimi-K2.6".into(), "sail-lite/byte-ngram".into()],
            windows: ["asap", "priority", "standard", "flex", "balanced"].iter().map(|s| s.to_string()).collect(),
            default_window: "priority".into(),
            worker_threads: 2,
            seed: 0,
            latency: LatencyConfig::default(),
            faults: FaultConfig::default(),
            retention_seconds: 3600.0,
            max_body_bytes: 64 * 1024 * 1024,
            default_max_output_tokens: 256,
            request_log: None,
            loras: BTreeMap::new(),
            lora_download_timeout_seconds: 30.0,
            lora_max_archive_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Per-window turnaround. With `distribution: "uniform"` (the default) a response's total latency
/// is `windows[w] * scale * (1 + jitter * U(-1, 1))`; with `"lognormal"` (Sail's shape: a median
/// near the window's turn time, a right-skewed spread) it is `windows[w] * scale * exp(sigma * N(0, 1))`.
/// It turns `in_progress` after `in_progress_fraction` of it.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct LatencyConfig {
    pub scale: f64,
    pub jitter: f64,
    /// `uniform` (with `jitter`) or `lognormal` (with `sigma`).
    pub distribution: String,
    /// Log-space standard deviation of the lognormal distribution.
    pub sigma: f64,
    pub in_progress_fraction: f64,
    /// Seconds per window (before `scale`), overlaid on the defaults (asap 0, priority 1,
    /// standard 3, flex 6, balanced 1); windows not listed use `default_seconds`.
    #[serde(deserialize_with = "overlay_windows")]
    pub windows: BTreeMap<String, f64>,
    pub default_seconds: f64,
}

fn default_window_latencies() -> BTreeMap<String, f64> {
    // Sail's windows are minutes long; compressed here so tests and demos stay fast.
    [("asap", 0.0), ("priority", 1.0), ("standard", 3.0), ("flex", 6.0), ("balanced", 1.0)]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect()
}

/// Per-window overrides keep the other windows' defaults (so overriding `priority` leaves `asap` instant).
fn overlay_windows<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let given = BTreeMap::<String, f64>::deserialize(d)?;
    let mut w = default_window_latencies();
    w.extend(given);
    Ok(w)
}

impl Default for LatencyConfig {
    fn default() -> Self {
        LatencyConfig {
            scale: 1.0,
            jitter: 0.2,
            distribution: "uniform".into(),
            sigma: 0.1,
            in_progress_fraction: 0.25,
            windows: default_window_latencies(),
            default_seconds: 1.0,
        }
    }
}

/// Fault injection. Rates are probabilities per request of the classes in `apply_to`;
/// the HTTP faults (429, 5xx, drop) are mutually exclusive and their rates must sum to <= 1.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Request classes faults apply to: `create`, `poll`, `cancel`, `completions`, `models`, `archives`.
    pub apply_to: Vec<String>,
    pub rate_429: f64,
    /// Sent as `Retry-After` (whole seconds, rounded up) and `retry-after-ms`.
    pub retry_after_seconds: f64,
    pub rate_500: f64,
    pub rate_502: f64,
    pub rate_503: f64,
    /// Close the TCP connection (RST) without answering.
    pub rate_drop: f64,
    /// Delay the answer by `slow_seconds` (independent of the faults above).
    pub rate_slow: f64,
    pub slow_seconds: f64,
    /// A created response later ends `failed` with error code `server_error`.
    pub rate_fail: f64,
    /// Fraction of create faults (5xx/429/drop) injected *after* the response was created.
    pub after_create_fraction: f64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            apply_to: vec!["create".into(), "poll".into()],
            rate_429: 0.0,
            retry_after_seconds: 1.0,
            rate_500: 0.0,
            rate_502: 0.0,
            rate_503: 0.0,
            rate_drop: 0.0,
            rate_slow: 0.0,
            slow_seconds: 2.0,
            rate_fail: 0.0,
            after_create_fraction: 0.5,
        }
    }
}

impl FaultConfig {
    pub fn any_http_fault(&self) -> bool {
        self.rate_429 + self.rate_500 + self.rate_502 + self.rate_503 + self.rate_drop + self.rate_slow > 0.0
    }
}

/// A LoRA registered under a name. Either synthetic (`rank` + `seed`, built with the model's
/// test-adapter generator) or loaded from `path`: a PEFT directory (adapter_config.json +
/// adapter_model.safetensors), a `.safetensors` file, or a Tinker `.tar`/`.tar.gz` archive.
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LoraSpec {
    pub rank: Option<u32>,
    pub seed: Option<u64>,
    pub path: Option<String>,
    /// adapter_config.json content (object or JSON string); required for a `.safetensors` file or an archive
    /// that lacks one.
    pub adapter_config: Option<Value>,
    /// Base model the adapter is for; defaults to the first served model.
    pub base_model: Option<String>,
}

pub const CLASSES: &[&str] = &["create", "poll", "cancel", "completions", "models", "archives"];

fn rate(name: &str, v: f64) -> Result<(), String> {
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{name} must be a probability in [0, 1], got {v}"));
    }
    Ok(())
}

fn nonneg(name: &str, v: f64) -> Result<(), String> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{name} must be a finite number >= 0, got {v}"));
    }
    Ok(())
}

impl EmulatorConfig {
    /// Parse JSON (unknown fields rejected; errors name the field path).
    pub fn from_json(text: &str) -> Result<EmulatorConfig, String> {
        let mut de = serde_json::Deserializer::from_str(text);
        let cfg: EmulatorConfig = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_value(v: Value) -> Result<EmulatorConfig, String> {
        let cfg: EmulatorConfig = serde_path_to_error::deserialize(v).map_err(path_error)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.host.is_empty() {
            return Err("host must not be empty".into());
        }
        if self.api_key.is_empty() {
            return Err("api_key must not be empty".into());
        }
        if self.models.is_empty() || self.models.iter().any(|m| m.is_empty()) {
            return Err("models must be a non-empty list of non-empty names".into());
        }
        if self.windows.is_empty() {
            return Err("windows must not be empty".into());
        }
        if !self.windows.contains(&self.default_window) {
            return Err(format!("default_window {:?} is not one of windows", self.default_window));
        }
        if self.worker_threads == 0 || self.worker_threads > 64 {
            return Err("worker_threads must be in 1..=64".into());
        }
        nonneg("retention_seconds", self.retention_seconds)?;
        if self.max_body_bytes < 1024 {
            return Err("max_body_bytes must be >= 1024".into());
        }
        if self.default_max_output_tokens == 0 {
            return Err("default_max_output_tokens must be >= 1".into());
        }
        nonneg("lora_download_timeout_seconds", self.lora_download_timeout_seconds)?;
        self.latency.validate()?;
        self.faults.validate()?;
        for (name, spec) in &self.loras {
            if name.is_empty() || name.starts_with("http://") || name.starts_with("https://") {
                return Err(format!("loras: invalid LoRA name {name:?}"));
            }
            match (&spec.path, spec.rank) {
                (None, None) => return Err(format!("loras.{name}: give either `path` or `rank` (+ `seed`)")),
                (Some(_), Some(_)) => return Err(format!("loras.{name}: give `path` or `rank`, not both")),
                _ => {}
            }
        }
        Ok(())
    }
}

impl LatencyConfig {
    fn validate(&self) -> Result<(), String> {
        nonneg("latency.scale", self.scale)?;
        rate("latency.jitter", self.jitter)?;
        if !matches!(self.distribution.as_str(), "uniform" | "lognormal") {
            return Err(format!("latency.distribution must be \"uniform\" or \"lognormal\", got {:?}", self.distribution));
        }
        if !(self.sigma.is_finite() && (0.0..=3.0).contains(&self.sigma)) {
            return Err(format!("latency.sigma must be a number in [0, 3], got {}", self.sigma));
        }
        rate("latency.in_progress_fraction", self.in_progress_fraction)?;
        nonneg("latency.default_seconds", self.default_seconds)?;
        for (k, v) in &self.windows {
            nonneg(&format!("latency.windows.{k}"), *v)?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn validate_for_test(&self) -> Result<(), String> {
        self.validate()
    }

    pub fn seconds_for(&self, window: &str) -> f64 {
        self.windows.get(window).copied().unwrap_or(self.default_seconds) * self.scale
    }
}

impl FaultConfig {
    fn validate(&self) -> Result<(), String> {
        for c in &self.apply_to {
            if !CLASSES.contains(&c.as_str()) {
                return Err(format!("faults.apply_to: unknown request class {c:?} (known: {})", CLASSES.join(", ")));
            }
        }
        rate("faults.rate_429", self.rate_429)?;
        rate("faults.rate_500", self.rate_500)?;
        rate("faults.rate_502", self.rate_502)?;
        rate("faults.rate_503", self.rate_503)?;
        rate("faults.rate_drop", self.rate_drop)?;
        rate("faults.rate_slow", self.rate_slow)?;
        rate("faults.rate_fail", self.rate_fail)?;
        rate("faults.after_create_fraction", self.after_create_fraction)?;
        nonneg("faults.retry_after_seconds", self.retry_after_seconds)?;
        nonneg("faults.slow_seconds", self.slow_seconds)?;
        let sum = self.rate_429 + self.rate_500 + self.rate_502 + self.rate_503 + self.rate_drop;
        if sum > 1.0 + 1e-9 {
            return Err(format!("faults: rate_429 + rate_500 + rate_502 + rate_503 + rate_drop must be <= 1, got {sum}"));
        }
        Ok(())
    }
}

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> String {
    let path = e.path().to_string();
    if path.is_empty() || path == "." {
        format!("invalid emulator config: {}", e.inner())
    } else {
        format!("invalid emulator config at {path}: {}", e.inner())
    }
}

/// Fields a running emulator can change.
pub const LIVE_FIELDS: &[&str] = &["latency", "faults", "retention_seconds"];

/// RFC 7396 JSON merge patch: objects merge recursively, `null` removes (back to the default).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(Default::default());
        }
        if let Value::Object(t) = target {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
    } else {
        *target = patch.clone();
    }
}

/// Apply a live patch to `cfg`; only `LIVE_FIELDS` may change.
pub fn patched(cfg: &EmulatorConfig, patch: &Value) -> Result<EmulatorConfig, String> {
    let obj = patch.as_object().ok_or("update: the patch must be a JSON object")?;
    for k in obj.keys() {
        if !LIVE_FIELDS.contains(&k.as_str()) {
            return Err(format!("update: {k} cannot be changed on a running emulator (live fields: {})", LIVE_FIELDS.join(", ")));
        }
    }
    let mut v = serde_json::to_value(cfg).map_err(|e| e.to_string())?;
    merge_patch(&mut v, patch);
    EmulatorConfig::from_value(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        EmulatorConfig::default().validate().unwrap();
        let c = EmulatorConfig::from_json("{}").unwrap();
        assert_eq!(c.api_key, "sk-sail-lite-local");
    }

    #[test]
    fn errors_name_field() {
        let e = EmulatorConfig::from_json(r#"{"faults": {"rate_429": "x"}}"#).unwrap_err();
        assert!(e.contains("faults.rate_429"), "{e}");
        let e = EmulatorConfig::from_json(r#"{"faults": {"rate_429": 2}}"#).unwrap_err();
        assert!(e.contains("faults.rate_429"), "{e}");
        let e = EmulatorConfig::from_json(r#"{"bogus": 1}"#).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn patch_merges() {
        let c = EmulatorConfig::default();
        let p = serde_json::json!({"latency": {"scale": 0.0}, "faults": {"rate_500": 0.5}});
        let c2 = patched(&c, &p).unwrap();
        assert_eq!(c2.latency.scale, 0.0);
        assert_eq!(c2.latency.windows["standard"], 3.0);
        assert_eq!(c2.faults.rate_500, 0.5);
        assert!(patched(&c, &serde_json::json!({"port": 1})).is_err());
        let c3 = EmulatorConfig::from_json(r#"{"latency": {"windows": {"priority": 5}}}"#).unwrap();
        assert_eq!(c3.latency.windows["priority"], 5.0);
        assert_eq!(c3.latency.windows["asap"], 0.0);
    }
}
