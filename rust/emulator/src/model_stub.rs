//! Stand-in for the `sail-model` crate API until it lands (same names and signatures), so the server
//! can be built and tested meanwhile. `engine.rs` picks this or the real crate.
#![allow(dead_code)]

pub const EOT_TOKEN: u32 = 256;
pub const VOCAB_SIZE: usize = 257;
pub const MAX_LORA_RANK: u32 = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Stop,
    Length,
}
impl StopReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::Stop => "stop",
            StopReason::Length => "length",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct SamplingParams {
    pub max_tokens: u32,
    pub temperature: f64,
    pub top_p: f64,
    pub stop_token_ids: Vec<u32>,
    pub stop_strings: Vec<String>,
    pub seed: u64,
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub stop_reason: StopReason,
}

pub struct NgramModel;
static MODEL: NgramModel = NgramModel;

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl NgramModel {
    pub fn default_model() -> &'static NgramModel {
        &MODEL
    }
    pub fn sample(&self, prompt: &[u32], adapter: Option<&Adapter>, params: &SamplingParams) -> Sample {
        let mut s = params.seed ^ adapter.map(|a| a.fp).unwrap_or(0) ^ prompt.last().copied().unwrap_or(0) as u64;
        let mut tokens = Vec::new();
        let mut logprobs = Vec::new();
        let mut text = String::new();
        while (tokens.len() as u32) < params.max_tokens {
            s = mix(s);
            let t = if s % 23 == 0 { EOT_TOKEN } else { (b'a' as u64 + (s >> 8) % 26) as u32 };
            tokens.push(t);
            logprobs.push(-((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0);
            if t == EOT_TOKEN || params.stop_token_ids.contains(&t) {
                return Sample { tokens, logprobs, stop_reason: StopReason::Stop };
            }
            text.push(t as u8 as char);
            if params.stop_strings.iter().any(|x| !x.is_empty() && text.ends_with(x.as_str())) {
                return Sample { tokens, logprobs, stop_reason: StopReason::Stop };
            }
        }
        Sample { tokens, logprobs, stop_reason: StopReason::Length }
    }
}

pub fn decode_text(tokens: &[u32]) -> String {
    let bytes: Vec<u8> = tokens.iter().filter(|&&t| t < 256).map(|&t| t as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
pub fn encode_text(text: &str) -> Vec<u32> {
    text.bytes().map(|b| b as u32).collect()
}

#[derive(Clone, Debug)]
pub struct AdapterConfig {
    pub peft_type: String,
    pub r: u32,
    pub base_model_name_or_path: String,
    pub lora_alpha: Option<f64>,
    pub task_type: Option<String>,
}

#[derive(Debug)]
pub struct AdapterError(pub String);
impl std::fmt::Display for AdapterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Adapter {
    fp: u64,
}
impl Adapter {
    pub fn from_archive(archive: &[u8], adapter_config_json: &str, base_model: &str) -> Result<Adapter, AdapterError> {
        let cfg = parse_adapter_config(adapter_config_json)?;
        if archive.len() < 512 {
            return Err(AdapterError("archive is not a tar file".into()));
        }
        Self::check(&cfg, base_model)?;
        Ok(Adapter { fp: mix(archive.len() as u64 ^ cfg.r as u64) })
    }
    pub fn from_safetensors(st: &[u8], config: &AdapterConfig, base_model: &str) -> Result<Adapter, AdapterError> {
        Self::check(config, base_model)?;
        Ok(Adapter { fp: mix(st.len() as u64 ^ config.r as u64) })
    }
    fn check(cfg: &AdapterConfig, _base: &str) -> Result<(), AdapterError> {
        if cfg.r == 0 || cfg.r > MAX_LORA_RANK {
            return Err(AdapterError(format!("rank {} exceeds the maximum {MAX_LORA_RANK}", cfg.r)));
        }
        Ok(())
    }
    pub fn fingerprint(&self) -> u64 {
        self.fp
    }
}

pub fn parse_adapter_config(json: &str) -> Result<AdapterConfig, AdapterError> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| AdapterError(format!("adapter_config.json: {e}")))?;
    let r = v.get("r").and_then(|x| x.as_u64()).ok_or_else(|| AdapterError("adapter_config.json: missing r".into()))?;
    Ok(AdapterConfig {
        peft_type: v.get("peft_type").and_then(|x| x.as_str()).unwrap_or("LORA").into(),
        r: r as u32,
        base_model_name_or_path: v.get("base_model_name_or_path").and_then(|x| x.as_str()).unwrap_or("").into(),
        lora_alpha: v.get("lora_alpha").and_then(|x| x.as_f64()),
        task_type: v.get("task_type").and_then(|x| x.as_str()).map(String::from),
    })
}

pub fn make_test_safetensors(r: u32, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; 64 + r as usize];
    v[0] = seed as u8;
    v
}
pub fn make_test_archive(r: u32, seed: u64, _base_model: &str, _gzip: bool) -> Vec<u8> {
    let mut v = vec![0u8; 1024 + r as usize];
    v[0] = seed as u8;
    v
}
