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

/// `POST /v1/responses` body for one raw-token background sample.
pub fn responses_create(d: &SamplingDefaults, prompt: &[u32], max_tokens: u32, stop: &Stop) -> Vec<u8> {
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
        SamplingDefaults { model: "m".into(), temperature: 0.7, top_p: 1.0, request_logprobs: true, metadata }
    }

    #[test]
    fn create_body_shape() {
        let body = responses_create(&defaults(), &[1, 2, 3], 16, &Stop::Strings(vec!["\n".into()]));
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
        let v: serde_json::Value = serde_json::from_slice(&responses_create(&d, &[1], 1, &Stop::None)).unwrap();
        assert!(v.get("include").is_none() && v.get("stop").is_none());
        let v: serde_json::Value = serde_json::from_slice(&responses_create(&d, &[1], 1, &Stop::TokenIds(vec![7]))).unwrap();
        assert_eq!(v["stop"], serde_json::json!([7]));
    }

    #[test]
    fn completion_body_shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&openai_completion(&defaults(), &[5, 6], 8, &Stop::TokenIds(vec![9]))).unwrap();
        assert_eq!(v["prompt"], serde_json::json!([5, 6]));
        assert_eq!(v["stop_token_ids"], serde_json::json!([9]));
        assert_eq!(v["logprobs"], 0);
        assert_eq!(v["return_tokens_as_token_ids"], true);
        assert!(v.get("stop").is_none());
    }
}
