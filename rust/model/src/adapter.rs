//! LoRA adapters: validation of PEFT configs and safetensors weights, and the logit bias an
//! adapter applies to the n-gram model.
//!
//! # How an adapter changes the model
//! A LoRA adapter stores, per target module, `lora_A` (`[r, in]`) and `lora_B` (`[out, r]`);
//! the weight update it encodes is `ΔW = lora_B x lora_A`. The n-gram model has no weight
//! matrices to add `ΔW` to, so instead we measure what `ΔW` *does*: it is applied to fixed
//! pseudo-random probe vectors (`y = B (A x)`, costing one pass over the weights, never
//! forming `ΔW`), and the outputs of every module are folded into 257 buckets, one per
//! token. The buckets are centred and scaled to a standard deviation of [`BIAS_SCALE`]
//! logits, clipped to ±[`BIAS_CLIP`], and that per-token bias is added to the model's
//! log-probabilities before temperature and top-p.
//!
//! So the bias depends on every weight of the adapter: a different adapter gives a
//! different bias (and different samples), while an adapter whose `lora_B` is all zeros
//! (PEFT's initialisation) is exactly the identity. Only the direction of the update
//! matters, not its magnitude (`lora_alpha` and weight scale do not change the bias).

use std::fmt;

use serde_json::Value;

use crate::archive::extract_safetensors;
use crate::math::dot_f32;
use crate::rng::{hash_bytes, mix64};
use crate::safetensors::{float_dtype_size, SafeTensors, TensorInfo};
use crate::{MAX_LORA_RANK, VOCAB_SIZE};

/// Standard deviation of an adapter's logit bias, in nats: large enough that samples
/// visibly change, small enough that the corpus' dominant continuations still dominate.
pub const BIAS_SCALE: f64 = 1.0;
/// No token's bias exceeds this magnitude, in nats.
pub const BIAS_CLIP: f64 = 3.0;

/// Why an adapter was rejected. `Display` gives a message fit for an API error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterError {
    /// The archive is not a readable tar or gzip-compressed tar.
    Archive(String),
    /// The archive holds no `adapter_model.safetensors`.
    MissingSafetensors,
    /// The safetensors file is malformed (header length, JSON, offsets, sizes).
    BadSafetensors(String),
    /// The adapter config is not valid JSON or lacks a required field.
    ConfigJson(String),
    /// `peft_type` is not `"LORA"`.
    PeftType(String),
    /// `r` is not in `1..=MAX_LORA_RANK`.
    Rank { r: i64, max: u32 },
    /// A LoRA tensor's rank dimension differs from the config's `r`.
    RankMismatch { tensor: String, expected: u32, found: u64 },
    /// `base_model_name_or_path` names a different base model.
    BaseModel { expected: String, found: String },
    /// `task_type` is present and not `"CAUSAL_LM"`.
    TaskType(String),
    /// The safetensors file has no `lora_A`/`lora_B` tensors.
    NoLoraTensors,
    /// A LoRA tensor has a dtype other than F32, F16, BF16 or F64.
    UnsupportedDtype { tensor: String, dtype: String },
    /// A LoRA tensor is unusable for another reason (shape, missing partner, NaN/inf).
    LoraTensor { tensor: String, reason: String },
}

impl AdapterError {
    /// A short stable identifier of the error kind, e.g. for API error codes and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            AdapterError::Archive(_) => "archive",
            AdapterError::MissingSafetensors => "missing_safetensors",
            AdapterError::BadSafetensors(_) => "bad_safetensors",
            AdapterError::ConfigJson(_) => "config_json",
            AdapterError::PeftType(_) => "peft_type",
            AdapterError::Rank { .. } => "rank",
            AdapterError::RankMismatch { .. } => "rank_mismatch",
            AdapterError::BaseModel { .. } => "base_model",
            AdapterError::TaskType(_) => "task_type",
            AdapterError::NoLoraTensors => "no_lora_tensors",
            AdapterError::UnsupportedDtype { .. } => "unsupported_dtype",
            AdapterError::LoraTensor { .. } => "lora_tensor",
        }
    }
}

impl fmt::Display for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdapterError::Archive(why) => write!(f, "adapter archive is not a readable tar or tar.gz: {why}"),
            AdapterError::MissingSafetensors => {
                write!(f, "adapter archive does not contain adapter_model.safetensors")
            }
            AdapterError::BadSafetensors(why) => write!(f, "invalid adapter_model.safetensors: {why}"),
            AdapterError::ConfigJson(why) => write!(f, "invalid adapter config: {why}"),
            AdapterError::PeftType(found) => {
                write!(f, "unsupported peft_type {found:?}: only \"LORA\" adapters are supported")
            }
            AdapterError::Rank { r, max } => write!(f, "LoRA rank r={r} is invalid: it must be between 1 and {max}"),
            AdapterError::RankMismatch { tensor, expected, found } => {
                write!(f, "tensor {tensor:?} has rank dimension {found} but the adapter config says r={expected}")
            }
            AdapterError::BaseModel { expected, found } => {
                write!(f, "adapter was trained for base model {found:?}, but this model is {expected:?}")
            }
            AdapterError::TaskType(found) => {
                write!(f, "unsupported task_type {found:?}: only \"CAUSAL_LM\" adapters are supported")
            }
            AdapterError::NoLoraTensors => {
                write!(f, "adapter_model.safetensors contains no lora_A/lora_B tensors")
            }
            AdapterError::UnsupportedDtype { tensor, dtype } => {
                write!(f, "tensor {tensor:?} has dtype {dtype}; LoRA weights must be F32, F16, BF16 or F64")
            }
            AdapterError::LoraTensor { tensor, reason } => write!(f, "tensor {tensor:?}: {reason}"),
        }
    }
}

impl std::error::Error for AdapterError {}

/// The fields of a PEFT `adapter_config.json` that matter here.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    pub peft_type: String,
    pub r: u32,
    pub base_model_name_or_path: String,
    pub lora_alpha: Option<f64>,
    pub task_type: Option<String>,
}

impl AdapterConfig {
    /// Check the config against the LoRA rules and the server's base model name.
    pub fn validate(&self, base_model: &str) -> Result<(), AdapterError> {
        self.validate_intrinsic()?;
        if self.base_model_name_or_path != base_model {
            return Err(AdapterError::BaseModel { expected: base_model.to_string(), found: self.base_model_name_or_path.clone() });
        }
        Ok(())
    }

    /// The checks that do not need the base model name.
    fn validate_intrinsic(&self) -> Result<(), AdapterError> {
        if !self.peft_type.eq_ignore_ascii_case("LORA") {
            return Err(AdapterError::PeftType(self.peft_type.clone()));
        }
        if self.r == 0 || self.r > MAX_LORA_RANK {
            return Err(AdapterError::Rank { r: i64::from(self.r), max: MAX_LORA_RANK });
        }
        match &self.task_type {
            Some(task) if !task.eq_ignore_ascii_case("CAUSAL_LM") => Err(AdapterError::TaskType(task.clone())),
            _ => Ok(()),
        }
    }
}

/// Parse a PEFT adapter config JSON and check `peft_type`, `r` and `task_type` (the base
/// model is checked by [`Adapter::from_archive`] / [`Adapter::from_safetensors`]).
/// Fields other than those in [`AdapterConfig`] are ignored.
pub fn parse_adapter_config(json: &str) -> Result<AdapterConfig, AdapterError> {
    let value: Value = serde_json::from_str(json).map_err(|e| AdapterError::ConfigJson(format!("not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(AdapterError::ConfigJson("must be a JSON object".to_string()));
    };
    let present = |name: &str| fields.get(name).filter(|v| !v.is_null());
    let required_string = |name: &str| match present(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(AdapterError::ConfigJson(format!("{name} must be a string"))),
        None => Err(AdapterError::ConfigJson(format!("missing required field {name}"))),
    };
    let optional_string = |name: &str| match present(name) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(AdapterError::ConfigJson(format!("{name} must be a string"))),
        None => Ok(None),
    };

    let peft_type = required_string("peft_type")?;
    let r = match present("r") {
        Some(Value::Number(n)) => {
            if let Some(r) = n.as_u64() {
                r
            } else if let Some(r) = n.as_i64() {
                return Err(AdapterError::Rank { r, max: MAX_LORA_RANK });
            } else {
                return Err(AdapterError::ConfigJson(format!("r must be an integer, got {n}")));
            }
        }
        Some(_) => return Err(AdapterError::ConfigJson("r must be an integer".to_string())),
        None => return Err(AdapterError::ConfigJson("missing required field r".to_string())),
    };
    let r = u32::try_from(r).map_err(|_| AdapterError::Rank { r: i64::try_from(r).unwrap_or(i64::MAX), max: MAX_LORA_RANK })?;
    let base_model_name_or_path = required_string("base_model_name_or_path")?;
    let lora_alpha = match present("lora_alpha") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => return Err(AdapterError::ConfigJson("lora_alpha must be a number".to_string())),
        None => None,
    };
    let task_type = optional_string("task_type")?;

    let config = AdapterConfig { peft_type, r, base_model_name_or_path, lora_alpha, task_type };
    config.validate_intrinsic()?;
    Ok(config)
}

/// A validated LoRA adapter, reduced to the per-token logit bias it applies.
///
/// Cheap to share: the server can parse an adapter once and reuse it (e.g. behind an `Arc`)
/// for every request that names it.
#[derive(Clone)]
pub struct Adapter {
    config: AdapterConfig,
    bias: Box<[f32; VOCAB_SIZE]>,
    /// False when the bias is all zeros (e.g. `lora_B` still at its zero initialisation).
    active: bool,
    fingerprint: u64,
    parameter_count: u64,
}

impl fmt::Debug for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adapter")
            .field("config", &self.config)
            .field("fingerprint", &format_args!("{:016x}", self.fingerprint))
            .field("parameter_count", &self.parameter_count)
            .field("active", &self.active)
            .finish()
    }
}

/// The two halves of one LoRA update.
struct LoraPair<'t> {
    a: &'t TensorInfo,
    b: &'t TensorInfo,
}

impl Adapter {
    /// Parse and validate an uploaded adapter: a tar or gzip-compressed tar (detected by its
    /// magic bytes) holding `adapter_model.safetensors` (at any directory depth), or that bare
    /// safetensors file itself (tinker 0.38 signs per-file URLs), checked
    /// against `adapter_config_json` and the server's `base_model` name. An
    /// `adapter_config.json` inside the archive is ignored: the separately given config rules.
    pub fn from_archive(archive: &[u8], adapter_config_json: &str, base_model: &str) -> Result<Adapter, AdapterError> {
        let config = parse_adapter_config(adapter_config_json)?;
        config.validate(base_model)?;
        let safetensors = extract_safetensors(archive)?;
        Adapter::from_safetensors(&safetensors, &config, base_model)
    }

    /// Build an adapter from the bytes of an `adapter_model.safetensors` file.
    pub fn from_safetensors(safetensors: &[u8], config: &AdapterConfig, base_model: &str) -> Result<Adapter, AdapterError> {
        config.validate(base_model)?;
        let file = SafeTensors::parse(safetensors).map_err(AdapterError::BadSafetensors)?;
        let pairs = lora_pairs(&file, config.r)?;
        let buckets = fold_updates(&file, &pairs)?;
        let (bias, active) = standardise(&buckets);
        let mut fingerprint = 0;
        let mut parameter_count = 0;
        for pair in &pairs {
            for tensor in [pair.a, pair.b] {
                fingerprint = hash_bytes(fingerprint, tensor.name.as_bytes());
                fingerprint = hash_bytes(fingerprint, tensor.dtype.as_bytes());
                let shape: Vec<u8> = tensor.shape.iter().flat_map(|d| d.to_le_bytes()).collect();
                fingerprint = hash_bytes(fingerprint, &shape);
                fingerprint = hash_bytes(fingerprint, file.bytes(tensor));
                parameter_count += tensor.shape.iter().product::<u64>();
            }
        }
        Ok(Adapter { config: config.clone(), bias: Box::new(bias), active, fingerprint, parameter_count })
    }

    /// A stable 64-bit id of the LoRA weights (names, dtypes, shapes and bytes of every
    /// `lora_A`/`lora_B` tensor), for logs and caches.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The validated config the adapter was loaded with.
    pub fn config(&self) -> &AdapterConfig {
        &self.config
    }

    /// The LoRA rank `r`.
    pub fn rank(&self) -> u32 {
        self.config.r
    }

    /// Number of LoRA parameters (elements of all `lora_A`/`lora_B` tensors).
    pub fn parameter_count(&self) -> u64 {
        self.parameter_count
    }

    /// The per-token logit bias (length [`VOCAB_SIZE`]) added to the model's log-probabilities.
    pub fn logit_bias(&self) -> &[f32] {
        &self.bias[..]
    }

    /// The bias and the fingerprint identifying it, or `None` when the bias is all zeros
    /// and sampling can ignore the adapter.
    pub(crate) fn active_bias(&self) -> Option<(&[f32; VOCAB_SIZE], u64)> {
        self.active.then_some((&*self.bias, self.fingerprint))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum LoraRole {
    A,
    B,
}

/// `lora_A` / `lora_B` tensors are recognised by a dot-separated name segment, as PEFT
/// writes them (`...q_proj.lora_A.weight`, `...q_proj.lora_A.default.weight`).
fn lora_role(name: &str) -> Option<LoraRole> {
    name.split('.').find_map(|segment| match segment {
        "lora_A" => Some(LoraRole::A),
        "lora_B" => Some(LoraRole::B),
        _ => None,
    })
}

fn partner_name(a_name: &str) -> String {
    a_name.split('.').map(|s| if s == "lora_A" { "lora_B" } else { s }).collect::<Vec<_>>().join(".")
}

/// Check every LoRA tensor's dtype, shape and rank, and pair each `lora_A` with its `lora_B`.
fn lora_pairs<'f>(file: &'f SafeTensors<'_>, r: u32) -> Result<Vec<LoraPair<'f>>, AdapterError> {
    let lora: Vec<(&TensorInfo, LoraRole)> = file.tensors.iter().filter_map(|t| lora_role(&t.name).map(|role| (t, role))).collect();
    if lora.is_empty() {
        return Err(AdapterError::NoLoraTensors);
    }
    for &(tensor, role) in &lora {
        let bad = |reason: String| AdapterError::LoraTensor { tensor: tensor.name.clone(), reason };
        if tensor.shape.len() != 2 {
            return Err(bad(format!("LoRA weights must be 2-D, got shape {:?}", tensor.shape)));
        }
        if float_dtype_size(&tensor.dtype).is_none() {
            return Err(AdapterError::UnsupportedDtype { tensor: tensor.name.clone(), dtype: tensor.dtype.clone() });
        }
        // lora_A is [r, in]; lora_B is [out, r].
        let rank_dim = if role == LoraRole::A { tensor.shape[0] } else { tensor.shape[1] };
        if rank_dim != u64::from(r) {
            return Err(AdapterError::RankMismatch { tensor: tensor.name.clone(), expected: r, found: rank_dim });
        }
    }
    let find = |name: &str| lora.iter().find(|(t, role)| *role == LoraRole::B && t.name == name).map(|(t, _)| *t);
    let mut pairs = Vec::new();
    for &(a, role) in &lora {
        if role != LoraRole::A {
            continue;
        }
        let b = find(&partner_name(&a.name)).ok_or_else(|| AdapterError::LoraTensor {
            tensor: a.name.clone(),
            reason: format!("no matching lora_B tensor {:?}", partner_name(&a.name)),
        })?;
        pairs.push(LoraPair { a, b });
    }
    if let Some(&(orphan, _)) = lora.iter().find(|(t, role)| *role == LoraRole::B && !pairs.iter().any(|p| p.b.name == t.name)) {
        return Err(AdapterError::LoraTensor { tensor: orphan.name.clone(), reason: "no matching lora_A tensor".to_string() });
    }
    Ok(pairs)
}

/// A deterministic probe value in `[-1, 1)` for input `index` of probe `probe` of a module.
fn probe_value(salt: u64, probe: usize, index: usize) -> f64 {
    let bits = mix64(salt ^ mix64(((probe as u64) << 32) ^ index as u64));
    (bits >> 11) as f64 * (2.0 / (1u64 << 53) as f64) - 1.0
}

/// Most multiply-adds spent probing one adapter (~50 ms): bounds the cost of adapters with
/// many narrow modules, which would otherwise need up to 257 probes each.
const PROBE_WORK_BUDGET: u64 = 1 << 26;

/// Apply every module's `B (A x)` to probe vectors and fold the outputs into one bucket per
/// token. Modules with fewer than 257 outputs get several probes so that every bucket
/// receives outputs (within [`PROBE_WORK_BUDGET`]).
fn fold_updates(file: &SafeTensors<'_>, pairs: &[LoraPair<'_>]) -> Result<[f64; VOCAB_SIZE], AdapterError> {
    // One probe costs one multiply-add per LoRA parameter.
    let parameters: u64 = pairs.iter().map(|p| p.a.shape[0] * p.a.shape[1] + p.b.shape[0] * p.b.shape[1]).fold(0u64, u64::saturating_add);
    let probe_limit = (PROBE_WORK_BUDGET / parameters.max(1)).max(1) as usize;
    let mut buckets = [0f64; VOCAB_SIZE];
    let mut row = Vec::new();
    for pair in pairs {
        let rank = pair.a.shape[0] as usize;
        let inputs = pair.a.shape[1] as usize;
        let outputs = pair.b.shape[0] as usize;
        let probes = VOCAB_SIZE.div_ceil(outputs.max(1)).min(probe_limit);
        let salt = hash_bytes(0, pair.a.name.as_bytes());
        let offset = (salt % VOCAB_SIZE as u64) as usize;

        // probe_vectors[p * inputs + j]: input j of probe p.
        let probe_vectors: Vec<f32> = (0..probes).flat_map(|p| (0..inputs).map(move |j| probe_value(salt, p, j) as f32)).collect();
        // hidden[p * rank + k] = (A x_p)_k, one lora_A row at a time.
        let mut hidden = vec![0f32; probes * rank];
        for k in 0..rank {
            read_finite_row(file, pair.a, k, inputs, &mut row)?;
            for p in 0..probes {
                hidden[p * rank + k] = dot_f32(&row, &probe_vectors[p * inputs..(p + 1) * inputs]) as f32;
            }
        }
        // (B h_p)_i, one lora_B row at a time, folded into the token buckets.
        for i in 0..outputs {
            read_finite_row(file, pair.b, i, rank, &mut row)?;
            for p in 0..probes {
                let y = dot_f32(&row, &hidden[p * rank..(p + 1) * rank]);
                buckets[(offset + p * outputs + i) % VOCAB_SIZE] += y;
            }
        }
    }
    Ok(buckets)
}

/// Row `index` (of length `len`) of a 2-D float tensor, rejecting NaN and infinity.
fn read_finite_row(file: &SafeTensors<'_>, tensor: &TensorInfo, index: usize, len: usize, row: &mut Vec<f32>) -> Result<(), AdapterError> {
    if !file.read_f32(tensor, index * len, len, row) {
        return Err(AdapterError::UnsupportedDtype { tensor: tensor.name.clone(), dtype: tensor.dtype.clone() });
    }
    if row.iter().any(|v| !v.is_finite()) {
        return Err(AdapterError::LoraTensor { tensor: tensor.name.clone(), reason: "contains NaN or infinity".to_string() });
    }
    Ok(())
}

/// Centre the buckets and scale them to `BIAS_SCALE` standard deviation, clipped. All-equal
/// buckets (no effective update) give a zero bias and `active == false`.
fn standardise(buckets: &[f64; VOCAB_SIZE]) -> ([f32; VOCAB_SIZE], bool) {
    let mean = buckets.iter().sum::<f64>() / VOCAB_SIZE as f64;
    let variance = buckets.iter().map(|&v| (v - mean) * (v - mean)).sum::<f64>() / VOCAB_SIZE as f64;
    let std = variance.sqrt();
    let mut bias = [0f32; VOCAB_SIZE];
    // Relative threshold: float noise in an all-zero-B adapter is not an update.
    if std.is_nan() || std <= 1e-12 * (1.0 + mean.abs()) {
        return (bias, false);
    }
    for (out, &v) in bias.iter_mut().zip(buckets) {
        *out = (BIAS_SCALE * (v - mean) / std).clamp(-BIAS_CLIP, BIAS_CLIP) as f32;
    }
    (bias, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "sail-ngram";

    fn config(r: u32) -> AdapterConfig {
        AdapterConfig {
            peft_type: "LORA".into(),
            r,
            base_model_name_or_path: BASE.into(),
            lora_alpha: Some(16.0),
            task_type: Some("CAUSAL_LM".into()),
        }
    }

    #[test]
    fn parses_a_peft_config() {
        let json = r#"{"peft_type": "lora", "r": 8, "lora_alpha": 16, "base_model_name_or_path": "m",
                       "task_type": null, "target_modules": ["q_proj"], "lora_dropout": 0.05}"#;
        let c = parse_adapter_config(json).unwrap();
        assert_eq!(c.r, 8);
        assert_eq!(c.lora_alpha, Some(16.0));
        assert_eq!(c.task_type, None);
        assert_eq!(c.base_model_name_or_path, "m");
    }

    #[test]
    fn config_errors_are_typed() {
        let err = |json: &str| parse_adapter_config(json).unwrap_err();
        let ok = r#""base_model_name_or_path": "m""#;
        assert!(matches!(err("{"), AdapterError::ConfigJson(_)));
        assert!(matches!(err("[1]"), AdapterError::ConfigJson(_)));
        assert!(matches!(err(&format!(r#"{{"peft_type": "PREFIX_TUNING", "r": 8, {ok}}}"#)), AdapterError::PeftType(_)));
        assert!(matches!(err(&format!(r#"{{"peft_type": "LORA", "r": 0, {ok}}}"#)), AdapterError::Rank { r: 0, .. }));
        assert!(matches!(err(&format!(r#"{{"peft_type": "LORA", "r": -4, {ok}}}"#)), AdapterError::Rank { r: -4, .. }));
        assert!(matches!(err(&format!(r#"{{"peft_type": "LORA", "r": 64, {ok}}}"#)), AdapterError::Rank { r: 64, .. }));
        assert!(matches!(err(&format!(r#"{{"peft_type": "LORA", "r": 99999999999, {ok}}}"#)), AdapterError::Rank { .. }));
        assert!(matches!(err(&format!(r#"{{"peft_type": "LORA", "r": 8.5, {ok}}}"#)), AdapterError::ConfigJson(_)));
        assert!(matches!(err(&format!(r#"{{"peft_type": "LORA", "r": "8", {ok}}}"#)), AdapterError::ConfigJson(_)));
        assert!(matches!(err(r#"{"peft_type": "LORA", "r": 8}"#), AdapterError::ConfigJson(_)));
        assert!(matches!(err(&format!(r#"{{"peft_type": "LORA", "r": 8, "task_type": "SEQ_CLS", {ok}}}"#)), AdapterError::TaskType(_)));
    }

    #[test]
    fn display_messages_are_clear() {
        let e = AdapterError::Rank { r: 64, max: 32 };
        assert_eq!(e.to_string(), "LoRA rank r=64 is invalid: it must be between 1 and 32");
        assert_eq!(e.code(), "rank");
        let e = AdapterError::BaseModel { expected: "a".into(), found: "b".into() };
        assert!(e.to_string().contains("\"b\"") && e.to_string().contains("\"a\""));
    }

    #[test]
    fn zero_lora_b_is_the_identity() {
        let a: Vec<u8> = (0..4 * 8).flat_map(|i| (i as f32 * 0.1).to_le_bytes()).collect();
        let b = vec![0u8; 8 * 4 * 4];
        let file = crate::safetensors::serialize(
            &[("m.lora_A.weight".into(), "F32", vec![4, 8], a), ("m.lora_B.weight".into(), "F32", vec![8, 4], b)],
            &[],
        );
        let adapter = Adapter::from_safetensors(&file, &config(4), BASE).unwrap();
        assert!(adapter.active_bias().is_none());
        assert!(adapter.logit_bias().iter().all(|&x| x == 0.0));
    }

    #[test]
    fn bias_is_standardised_and_depends_on_weights() {
        let one = Adapter::from_safetensors(&crate::make_test_safetensors(8, 1), &config(8), BASE).unwrap();
        let two = Adapter::from_safetensors(&crate::make_test_safetensors(8, 2), &config(8), BASE).unwrap();
        let bias = one.logit_bias();
        assert_eq!(bias.len(), VOCAB_SIZE);
        let mean = bias.iter().map(|&x| x as f64).sum::<f64>() / VOCAB_SIZE as f64;
        let std = (bias.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / VOCAB_SIZE as f64).sqrt();
        assert!(mean.abs() < 0.05 && (std - BIAS_SCALE).abs() < 0.1, "mean {mean} std {std}");
        assert_ne!(one.logit_bias(), two.logit_bias());
        assert_ne!(one.fingerprint(), two.fingerprint());
        assert_eq!(one.parameter_count(), 2 * (8 * 64 + 64 * 8));
    }

    #[test]
    fn unpaired_and_misshapen_tensors_are_rejected() {
        let f32s = |n: usize| (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect::<Vec<u8>>();
        let only_a = crate::safetensors::serialize(&[("m.lora_A.weight".into(), "F32", vec![4, 2], f32s(8))], &[]);
        assert!(matches!(Adapter::from_safetensors(&only_a, &config(4), BASE), Err(AdapterError::LoraTensor { .. })));
        let three_d = crate::safetensors::serialize(&[("m.lora_A.weight".into(), "F32", vec![4, 2, 1], f32s(8))], &[]);
        assert!(matches!(Adapter::from_safetensors(&three_d, &config(4), BASE), Err(AdapterError::LoraTensor { .. })));
        let ints = crate::safetensors::serialize(&[("m.lora_A.weight".into(), "I32", vec![4, 2], f32s(8))], &[]);
        assert!(matches!(Adapter::from_safetensors(&ints, &config(4), BASE), Err(AdapterError::UnsupportedDtype { .. })));
        let nan: Vec<u8> = [f32::NAN.to_le_bytes(); 8].concat();
        let nans = crate::safetensors::serialize(
            &[("m.lora_A.weight".into(), "F32", vec![4, 2], nan), ("m.lora_B.weight".into(), "F32", vec![2, 4], f32s(8))],
            &[],
        );
        assert!(matches!(Adapter::from_safetensors(&nans, &config(4), BASE), Err(AdapterError::LoraTensor { .. })));
        let none = crate::safetensors::serialize(&[("embed.weight".into(), "F32", vec![2], f32s(2))], &[]);
        assert_eq!(Adapter::from_safetensors(&none, &config(4), BASE).unwrap_err(), AdapterError::NoLoraTensors);
    }
}
