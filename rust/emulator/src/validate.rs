//! Request parsing and validation: every 400 names the field in `param` and says what is wrong.
use crate::error::ApiError;
use crate::lora::{redact_url, LoraRef};
use crate::model::encode_text;
use crate::state::AppState;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;

pub const MAX_PROMPT_TOKENS: usize = 2_000_000;
pub const MAX_TOKEN_ID: i64 = (1 << 31) - 1;
pub const MAX_OUTPUT_TOKENS: i64 = 262_144;
pub const LOGPROBS_INCLUDE: &str = "message.output_text.logprobs";

/// Map axum's body-read failures (too large, aborted) into the error envelope.
pub fn body_rejection(r: BytesRejection) -> ApiError {
    let status = r.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, "invalid_request_error", Some("request_too_large"), "Request body is larger than the server's limit")
    } else {
        ApiError::new(status, "invalid_request_error", Some("invalid_body"), format!("Could not read the request body: {}", r.body_text()))
    }
}

/// Deserialize a JSON body; malformed JSON and wrong types become 400s naming the field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("invalid_json", "Request body is empty; expected a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let v: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().iter().find_map(|s| match s {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        });
        let inner = e.inner();
        let is_syntax = inner.is_syntax() || inner.is_eof();
        match field {
            Some(f) if !is_syntax => ApiError::invalid(f, "invalid_type", format!("Invalid value for '{}': {inner}", e.path())),
            _ if is_syntax => ApiError::bad_request("invalid_json", format!("Malformed JSON body: {inner}")),
            _ => ApiError::bad_request("invalid_json", format!("Request body must be a JSON object of the documented shape: {inner}")),
        }
    })?;
    de.end().map_err(|e| ApiError::bad_request("invalid_json", format!("Malformed JSON body: {e}")))?;
    Ok(v)
}

#[derive(Deserialize)]
struct CreateBody {
    model: Option<String>,
    input: Option<Value>,
    raw_prompt_tokens: Option<Vec<i64>>,
    max_output_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop: Option<Value>,
    include: Option<Vec<String>>,
    background: Option<bool>,
    metadata: Option<Map<String, Value>>,
    stream: Option<bool>,
    prompt_cache_key: Option<String>,
}

pub struct CreateReq {
    pub model: Arc<str>,
    pub prompt: Vec<u32>,
    pub max_tokens: u32,
    pub temperature: f64,
    pub top_p: f64,
    pub stop_strings: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub logprobs: bool,
    pub background: bool,
    pub window: String,
    pub lora: LoraRef,
    pub seed: Option<u64>,
    /// `metadata` as echoed back (credentials redacted).
    pub metadata_json: Box<str>,
    /// The routing hint for the simulated prefix cache (None: no key, never a cache hit).
    pub prompt_cache_key: Option<String>,
}

pub fn model(st: &AppState, m: Option<String>) -> Result<Arc<str>, ApiError> {
    let m = m.ok_or_else(|| ApiError::invalid("model", "missing_required_parameter", "Missing required parameter: 'model'"))?;
    st.model(&m).ok_or_else(|| {
        ApiError::invalid(
            "model",
            "model_not_found",
            format!("The model '{m}' does not exist or you do not have access to it (served: {})", st.models.join(", ")),
        )
    })
}

pub fn temperature(t: Option<f64>, param: &str) -> Result<f64, ApiError> {
    let t = t.unwrap_or(1.0);
    if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
        return Err(ApiError::invalid(param, "invalid_value", format!("'{param}' must be between 0 and 2, got {t}")));
    }
    Ok(t)
}

pub fn top_p(p: Option<f64>, param: &str) -> Result<f64, ApiError> {
    let p = p.unwrap_or(1.0);
    if !(p.is_finite() && (0.0..=1.0).contains(&p)) {
        return Err(ApiError::invalid(param, "invalid_value", format!("'{param}' must be between 0 and 1, got {p}")));
    }
    Ok(p)
}

pub fn max_tokens(m: Option<i64>, default: u32, param: &str) -> Result<u32, ApiError> {
    match m {
        None => Ok(default),
        Some(m) if m < 1 => Err(ApiError::invalid(param, "invalid_value", format!("'{param}' must be >= 1, got {m}"))),
        Some(m) if m > MAX_OUTPUT_TOKENS => {
            Err(ApiError::invalid(param, "invalid_value", format!("'{param}' must be <= {MAX_OUTPUT_TOKENS}, got {m}")))
        }
        Some(m) => Ok(m as u32),
    }
}

pub fn token_ids(v: &[i64], param: &str) -> Result<Vec<u32>, ApiError> {
    if v.is_empty() {
        return Err(ApiError::invalid(param, "invalid_value", format!("'{param}' must contain at least 1 token")));
    }
    if v.len() > MAX_PROMPT_TOKENS {
        return Err(ApiError::invalid(
            param,
            "invalid_value",
            format!("'{param}' has {} tokens; at most {MAX_PROMPT_TOKENS} are allowed", v.len()),
        ));
    }
    let mut out = Vec::with_capacity(v.len());
    for (i, &t) in v.iter().enumerate() {
        if !(0..=MAX_TOKEN_ID).contains(&t) {
            return Err(ApiError::invalid(param, "invalid_value", format!("'{param}[{i}]' = {t} is not a token id in 0..2^31-1")));
        }
        out.push(t as u32);
    }
    Ok(out)
}

/// `stop`: a string, a list of strings, or a list of token ids.
pub fn stop(v: Option<&Value>, param: &str) -> Result<(Vec<String>, Vec<u32>), ApiError> {
    let bad = || ApiError::invalid(param, "invalid_type", format!("'{param}' must be a string, a list of strings or a list of token ids"));
    match v {
        None | Some(Value::Null) => Ok((vec![], vec![])),
        Some(Value::String(s)) => Ok((vec![s.clone()], vec![])),
        Some(Value::Array(items)) => {
            if items.iter().all(|x| x.is_string()) {
                Ok((items.iter().filter_map(|x| x.as_str().map(String::from)).collect(), vec![]))
            } else if items.iter().all(|x| x.is_i64() || x.is_u64()) {
                let ids: Vec<i64> = items.iter().map(|x| x.as_i64().unwrap_or(-1)).collect();
                let mut out = Vec::with_capacity(ids.len());
                for (i, t) in ids.into_iter().enumerate() {
                    if !(0..=MAX_TOKEN_ID).contains(&t) {
                        return Err(ApiError::invalid(param, "invalid_value", format!("'{param}[{i}]' is not a token id in 0..2^31-1")));
                    }
                    out.push(t as u32);
                }
                Ok((vec![], out))
            } else {
                Err(bad())
            }
        }
        Some(_) => Err(bad()),
    }
}

/// Text of a Responses `input` (a string, or a list of messages/strings), for text requests.
fn input_text(v: &Value) -> Result<String, ApiError> {
    let empty = || ApiError::invalid("input", "invalid_value", "'input' must not be empty");
    match v {
        Value::String(s) if s.is_empty() => Err(empty()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) if items.is_empty() => Err(empty()),
        Value::Array(items) => {
            let mut parts = Vec::new();
            for it in items {
                collect_text(it, &mut parts);
            }
            Ok(parts.join("\n"))
        }
        _ => Err(ApiError::invalid("input", "invalid_type", "'input' must be a string or a list of input items")),
    }
}

fn collect_text(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| collect_text(x, out)),
        Value::Object(o) => {
            if let Some(Value::String(t)) = o.get("text") {
                out.push(t.clone());
            } else if let Some(c) = o.get("content") {
                collect_text(c, out);
            }
        }
        _ => {}
    }
}

fn meta_err(key: &str, code: &'static str, msg: String) -> ApiError {
    ApiError::invalid(format!("metadata.{key}"), code, msg)
}

pub fn create(st: &AppState, body: &[u8]) -> Result<CreateReq, ApiError> {
    let b: CreateBody = parse_json(body)?;
    let model = model(st, b.model)?;
    if b.stream == Some(true) {
        return Err(ApiError::invalid(
            "stream",
            "unsupported_parameter",
            "Streaming is not supported by this server; poll the response instead",
        ));
    }
    let input = b.input.as_ref().filter(|v| !v.is_null());
    let input = input.ok_or_else(|| ApiError::invalid("input", "missing_required_parameter", "Missing required parameter: 'input'"))?;
    let text = input_text(input)?;
    let raw = b.raw_prompt_tokens.is_some();
    let prompt = match &b.raw_prompt_tokens {
        Some(t) => token_ids(t, "raw_prompt_tokens")?,
        None => encode_text(&text),
    };
    let max_tokens = max_tokens(b.max_output_tokens, st.default_max_output_tokens, "max_output_tokens")?;
    let temperature = temperature(b.temperature, "temperature")?;
    let top_p = top_p(b.top_p, "top_p")?;
    let (stop_strings, stop_token_ids) = stop(b.stop.as_ref(), "stop")?;
    let logprobs = b.include.as_ref().is_some_and(|i| i.iter().any(|x| x == LOGPROBS_INCLUDE));

    let meta = b.metadata.unwrap_or_default();
    for (k, v) in &meta {
        if !v.is_string() {
            return Err(meta_err(k, "invalid_type", format!("metadata values must be strings; 'metadata.{k}' is not")));
        }
    }
    let get = |k: &str| meta.get(k).and_then(|v| v.as_str());
    let window = get("completion_window").unwrap_or(&st.default_window).to_string();
    if !st.windows.contains(&window) {
        return Err(meta_err(
            "completion_window",
            "unsupported_completion_window",
            format!("Unknown completion window '{window}' (supported: {})", st.windows.join(", ")),
        ));
    }
    let seed = match get("seed") {
        None => None,
        Some(s) => Some(
            s.trim()
                .parse::<i64>()
                .map(|x| x as u64)
                .or_else(|_| s.trim().parse::<u64>())
                .map_err(|_| meta_err("seed", "invalid_value", "'metadata.seed' must be an integer string".into()))?,
        ),
    };
    // LoRA metadata only applies to raw-token requests; text requests are served by the base model.
    let lora = match (raw, get("lora")) {
        (true, Some(name)) if !name.is_empty() => {
            if window == "asap" {
                return Err(meta_err(
                    "lora",
                    "lora_not_supported_on_window",
                    "LoRA adapters are not served on the 'asap' window; use a scheduled window such as 'priority'".into(),
                ));
            }
            if name.starts_with("http://") || name.starts_with("https://") {
                let cfg = get("tinker_adapter_config").ok_or_else(|| {
                    meta_err(
                        "tinker_adapter_config",
                        "missing_required_parameter",
                        "'metadata.tinker_adapter_config' (the adapter_config.json) is required when 'metadata.lora' is a URL".into(),
                    )
                })?;
                if !serde_json::from_str::<Value>(cfg).is_ok_and(|v| v.is_object()) {
                    return Err(meta_err(
                        "tinker_adapter_config",
                        "invalid_value",
                        "'metadata.tinker_adapter_config' must be a JSON object".into(),
                    ));
                }
                LoraRef::Url { url: name.to_string(), config_json: cfg.to_string() }
            } else {
                let a = st.loras.named(name).ok_or_else(|| {
                    // Anything URL-like may carry a signature: never echo its query.
                    let shown = if name.contains("://") || name.contains('?') { redact_url(name) } else { name.to_string() };
                    meta_err(
                        "lora",
                        "lora_not_found",
                        format!("No LoRA named '{shown}' is registered with this server (a Tinker archive must be an http(s) URL)"),
                    )
                })?;
                LoraRef::Named(a)
            }
        }
        _ => LoraRef::None,
    };
    let metadata_json = echo_metadata(meta);
    if b.prompt_cache_key.as_ref().is_some_and(|k| k.chars().count() > crate::prefix_cache::MAX_KEY_CHARS) {
        return Err(ApiError::invalid(
            "prompt_cache_key",
            "invalid_value",
            format!("'prompt_cache_key' must be at most {} characters", crate::prefix_cache::MAX_KEY_CHARS),
        ));
    }
    Ok(CreateReq {
        model,
        prompt,
        max_tokens,
        temperature,
        top_p,
        stop_strings,
        stop_token_ids,
        logprobs,
        background: b.background.unwrap_or(false),
        window,
        lora,
        seed,
        metadata_json,
        prompt_cache_key: b.prompt_cache_key,
    })
}

/// The metadata echoed in responses, with bearer-like values redacted.
fn echo_metadata(mut meta: Map<String, Value>) -> Box<str> {
    if let Some(Value::String(u)) = meta.get_mut("lora") {
        if u.contains("://") || u.contains('?') {
            *u = redact_url(u);
        }
    }
    if meta.contains_key("webhook_token") {
        meta.insert("webhook_token".into(), Value::String("<redacted>".into()));
    }
    serde_json::to_string(&meta).unwrap_or_else(|_| "{}".into()).into_boxed_str()
}

/// `Idempotency-Key`: optional, at most 255 characters of visible ASCII.
pub fn idempotency_key(h: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = h.get("idempotency-key") else { return Ok(None) };
    let bad = |m: &str| ApiError::invalid("Idempotency-Key", "invalid_idempotency_key", m.to_string());
    let s = v.to_str().map_err(|_| bad("Idempotency-Key must be visible ASCII"))?;
    if s.is_empty() {
        return Err(bad("Idempotency-Key must not be empty"));
    }
    if s.len() > 255 {
        return Err(bad("Idempotency-Key must be at most 255 characters"));
    }
    Ok(Some(s.to_string()))
}
