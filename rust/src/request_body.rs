//! Request bodies, serialised straight from borrowed data (no intermediate JSON values).

use serde::Serialize;
use std::collections::BTreeMap;

/// A stop condition as the servers take it: strings or token ids, never both.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
    None,
    Strings(Vec<String>),
    TokenIds(Vec<u32>),
}

/// The fixed part of every request a completer sends (built once per completer).
#[derive(Clone, Debug)]
pub struct SamplingDefaults {
    pub model: String,
    pub temperature: f64,
    pub top_p: f64,
    pub request_logprobs: bool,
    /// Sail: the full metadata object, completion window and LoRA keys included.
    pub metadata: BTreeMap<String, String>,
    /// Sail: which `prompt_cache_key` creates carry when the caller names none.
    pub prompt_cache: PromptCacheKey,
}

/// The completer's `prompt_cache_key` setting (a routing hint for Sail's prefix caches).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptCacheKey {
    /// A key derived from the model and the prompt's leading tokens (see [`automatic_cache_key`]).
    Automatic,
    /// This key on every create.
    Fixed(String),
    /// No key at all.
    Disabled,
}

/// How many leading prompt tokens the automatic key covers. Samples of one GRPO group share
/// the whole prompt, and later turns of a conversation extend the first turn's prompt, so
/// both agree on these tokens (a first turn shorter than this gets a key per turn length).
pub const CACHE_KEY_PREFIX_TOKENS: usize = 256;

/// FNV-1a (64 bit): stable across processes and builds, unlike std's randomly seeded hasher,
/// so every worker of a job derives the same key for the same prompt.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The automatic `prompt_cache_key`: a digest of the model and of at most
/// [`CACHE_KEY_PREFIX_TOKENS`] leading prompt tokens. Two 64-bit FNV-1a lanes with different
/// offsets make accidental collisions between unrelated prompts negligible.
pub fn automatic_cache_key(model: &str, prompt: &[u32]) -> String {
    let lead = &prompt[..prompt.len().min(CACHE_KEY_PREFIX_TOKENS)];
    let mut lanes = [0xcbf2_9ce4_8422_2325u64, 0x6c62_272e_07bb_0142u64];
    for lane in &mut lanes {
        *lane = fnv1a(*lane, model.as_bytes());
        *lane = fnv1a(*lane, &[0xff]); // model/token boundary
        for t in lead {
            *lane = fnv1a(*lane, &t.to_le_bytes());
        }
    }
    format!("sl1-{:016x}{:016x}", lanes[0], lanes[1])
}

/// The key one create carries: the caller's explicit one, else the completer's setting.
pub fn cache_key_for<'a>(d: &'a SamplingDefaults, explicit: Option<&'a str>, prompt: &[u32]) -> Option<std::borrow::Cow<'a, str>> {
    use std::borrow::Cow;
    if let Some(k) = explicit {
        return Some(Cow::Borrowed(k));
    }
    match &d.prompt_cache {
        PromptCacheKey::Automatic => Some(Cow::Owned(automatic_cache_key(&d.model, prompt))),
        PromptCacheKey::Fixed(k) => Some(Cow::Borrowed(k)),
        PromptCacheKey::Disabled => None,
    }
}

#[derive(Serialize)]
struct CreateResponse<'a> {
    model: &'a str,
    /// Sail ignores `input` when `raw_prompt_tokens` is set, but requires it non-empty.
    input: &'static str,
    raw_prompt_tokens: &'a [u32],
    max_output_tokens: u32,
    temperature: f64,
    top_p: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<StopField<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    include: Option<[&'static str; 1]>,
    background: bool,
    metadata: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_cache_key: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum StopField<'a> {
    Strings(&'a [String]),
    TokenIds(&'a [u32]),
}

fn stop_field(stop: &Stop) -> Option<StopField<'_>> {
    match stop {
        Stop::None => None,
        Stop::Strings(s) if s.is_empty() => None,
        Stop::TokenIds(t) if t.is_empty() => None,
        Stop::Strings(s) => Some(StopField::Strings(s)),
        Stop::TokenIds(t) => Some(StopField::TokenIds(t)),
    }
}

/// `POST /v1/responses` body for one raw-token background sample. `cache_key` is the caller's
/// explicit `prompt_cache_key` (else the completer's setting decides).
pub fn responses_create(d: &SamplingDefaults, prompt: &[u32], max_tokens: u32, stop: &Stop, cache_key: Option<&str>) -> Vec<u8> {
    let cache_key = cache_key_for(d, cache_key, prompt);
    let body = CreateResponse {
        model: &d.model,
        input: "raw_prompt_tokens",
        raw_prompt_tokens: prompt,
        max_output_tokens: max_tokens,
        temperature: d.temperature,
        top_p: d.top_p,
        stop: stop_field(stop),
        include: d.request_logprobs.then_some(["message.output_text.logprobs"]),
        background: true,
        metadata: &d.metadata,
        prompt_cache_key: cache_key.as_deref(),
    };
    serde_json::to_vec(&body).expect("serialising plain data cannot fail")
}

#[derive(Serialize)]
struct CreateCompletion<'a> {
    model: &'a str,
    prompt: &'a [u32],
    max_tokens: u32,
    temperature: f64,
    top_p: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_token_ids: Option<&'a [u32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<u32>,
    /// vLLM: render logprob tokens as "token_id:N" and return the sampled ids outright.
    return_tokens_as_token_ids: bool,
    return_token_ids: bool,
    /// Token ids in, token ids out: never let the server strip or add special tokens.
    skip_special_tokens: bool,
    n: u32,
    stream: bool,
}

/// `POST {base}/completions` body (OpenAI-compatible servers: vLLM, SGLang, Tinker).
pub fn openai_completion(d: &SamplingDefaults, prompt: &[u32], max_tokens: u32, stop: &Stop) -> Vec<u8> {
    let (stop, stop_token_ids) = match stop {
        Stop::Strings(s) if !s.is_empty() => (Some(s.as_slice()), None),
        Stop::TokenIds(t) if !t.is_empty() => (None, Some(t.as_slice())),
        _ => (None, None),
    };
    let body = CreateCompletion {
        model: &d.model,
        prompt,
        max_tokens,
        temperature: d.temperature,
        top_p: d.top_p,
        stop,
        stop_token_ids,
        logprobs: d.request_logprobs.then_some(0),
        return_tokens_as_token_ids: true,
        return_token_ids: true,
        skip_special_tokens: false,
        n: 1,
        stream: false,
    };
    serde_json::to_vec(&body).expect("serialising plain data cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> SamplingDefaults {
        let mut metadata = BTreeMap::new();
        metadata.insert("completion_window".to_string(), "priority".to_string());
        SamplingDefaults {
            model: "m".into(),
            temperature: 0.7,
            top_p: 1.0,
            request_logprobs: true,
            metadata,
            prompt_cache: PromptCacheKey::Automatic,
        }
    }

    #[test]
    fn create_body_shape() {
        let body = responses_create(&defaults(), &[1, 2, 3], 16, &Stop::Strings(vec!["\n".into()]), None);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["raw_prompt_tokens"], serde_json::json!([1, 2, 3]));
        assert_eq!(v["max_output_tokens"], 16);
        assert_eq!(v["stop"], serde_json::json!(["\n"]));
        assert_eq!(v["include"], serde_json::json!(["message.output_text.logprobs"]));
        assert_eq!(v["background"], true);
        assert_eq!(v["metadata"]["completion_window"], "priority");
        assert!(v["input"].as_str().is_some_and(|s| !s.is_empty()));

        let mut d = defaults();
        d.request_logprobs = false;
        let v: serde_json::Value = serde_json::from_slice(&responses_create(&d, &[1], 1, &Stop::None, None)).unwrap();
        assert!(v.get("include").is_none() && v.get("stop").is_none());
        let v: serde_json::Value = serde_json::from_slice(&responses_create(&d, &[1], 1, &Stop::TokenIds(vec![7]), None)).unwrap();
        assert_eq!(v["stop"], serde_json::json!([7]));
    }

    #[test]
    fn completion_body_shape() {
        let v: serde_json::Value = serde_json::from_slice(&openai_completion(&defaults(), &[5, 6], 8, &Stop::TokenIds(vec![9]))).unwrap();
        assert_eq!(v["prompt"], serde_json::json!([5, 6]));
        assert_eq!(v["stop_token_ids"], serde_json::json!([9]));
        assert_eq!(v["logprobs"], 0);
        assert_eq!(v["return_tokens_as_token_ids"], true);
        assert!(v.get("stop").is_none());
    }

    fn key_of(d: &SamplingDefaults, prompt: &[u32], explicit: Option<&str>) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&responses_create(d, prompt, 4, &Stop::None, explicit)).unwrap();
        v.get("prompt_cache_key").map(|k| k.as_str().expect("the key is a string").to_string())
    }

    #[test]
    fn automatic_key_follows_the_leading_tokens_and_the_model() {
        let d = defaults();
        let group: Vec<u32> = (0..40).collect();
        let first = key_of(&d, &group, None).expect("automatic keys are on by default");
        assert_eq!(key_of(&d, &group, None).as_deref(), Some(first.as_str()), "a GRPO group shares one key");
        assert_ne!(key_of(&d, &[0, 1, 2], None).as_deref(), Some(first.as_str()), "another prompt, another key");
        // A second turn extends the first turn's prompt: beyond the covered prefix, same key.
        let turn1: Vec<u32> = (0..CACHE_KEY_PREFIX_TOKENS as u32 + 10).collect();
        let mut turn2 = turn1.clone();
        turn2.extend([7, 7, 7]);
        assert_eq!(key_of(&d, &turn1, None), key_of(&d, &turn2, None));
        let mut other_model = defaults();
        other_model.model = "m2".into();
        assert_ne!(key_of(&other_model, &group, None).as_deref(), Some(first.as_str()));
        // Pinned (computed independently in Python): the key must never change between processes or releases.
        assert_eq!(automatic_cache_key("m", &[1, 2, 3]), "sl1-d4aa3966937003357c88ea930c7728e6");
    }

    #[test]
    fn explicit_fixed_and_disabled_keys() {
        let mut d = defaults();
        assert_eq!(key_of(&d, &[1, 2], Some("conv-9")).as_deref(), Some("conv-9"), "an explicit key wins");
        d.prompt_cache = PromptCacheKey::Fixed("job-1".into());
        assert_eq!(key_of(&d, &[1, 2], None).as_deref(), Some("job-1"));
        assert_eq!(key_of(&d, &[1, 2], Some("conv-9")).as_deref(), Some("conv-9"));
        d.prompt_cache = PromptCacheKey::Disabled;
        assert_eq!(key_of(&d, &[1, 2], None), None, "disabled: no key on the wire");
        // /completions never carries one.
        let v: serde_json::Value = serde_json::from_slice(&openai_completion(&defaults(), &[1], 1, &Stop::None)).unwrap();
        assert!(v.get("prompt_cache_key").is_none());
    }
}
