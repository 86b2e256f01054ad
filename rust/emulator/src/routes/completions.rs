//! OpenAI-compatible `POST /v1/completions` (with vLLM's token-id extensions), served synchronously
//! by the same model. Model names: the served ones, a registered LoRA name, or a Tinker
//! `tinker://<run>/sampler_weights/<id>` path (served by the base model, like Tinker's
//! OpenAI-compatible endpoint).
use crate::error::{json_response, ApiError};
use crate::jobs;
use crate::model::{decode_text, encode_text, Adapter, NgramModel, SamplingParams, EOT_TOKEN};
use crate::render::finite;
use crate::rng;
use crate::state::{unix_now, AppState};
use crate::stats::inc;
use crate::validate;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

#[derive(Deserialize)]
struct Body_ {
    model: Option<String>,
    prompt: Option<Value>,
    max_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop: Option<Value>,
    stop_token_ids: Option<Vec<i64>>,
    logprobs: Option<i64>,
    return_tokens_as_token_ids: Option<bool>,
    return_token_ids: Option<bool>,
    n: Option<i64>,
    stream: Option<bool>,
    echo: Option<bool>,
    seed: Option<i64>,
}

#[derive(Serialize)]
struct Logprobs {
    tokens: Vec<String>,
    token_logprobs: Vec<f32>,
    top_logprobs: Option<Vec<Map<String, Value>>>,
    text_offset: Vec<usize>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    text: &'a str,
    logprobs: Option<Logprobs>,
    finish_reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_ids: Option<&'a [u32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_token_ids: Option<&'a [u32]>,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    completion_tokens: usize,
    total_tokens: usize,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
}

pub const MAX_TOP_LOGPROBS: i64 = 20;

/// Resolve a completions `model`: (adapter to use, if any).
fn model(st: &AppState, name: Option<String>) -> Result<(String, Option<Arc<Adapter>>), ApiError> {
    let name = name.ok_or_else(|| ApiError::invalid("model", "missing_required_parameter", "Missing required parameter: 'model'"))?;
    if let Some(path) = name.strip_prefix("tinker://") {
        let parts: Vec<&str> = path.split('/').collect();
        return match parts.as_slice() {
            [run, "sampler_weights", id] if !run.is_empty() && !id.is_empty() => Ok((name, None)),
            [_, "weights", _] => Err(ApiError::invalid(
                "model",
                "invalid_model",
                format!(
                    "'{name}' is a training-state checkpoint (tinker://.../weights/...), which cannot be sampled; \
                     save sampler weights (save_weights_for_sampler) and use its tinker://<run>/sampler_weights/<id> path"
                ),
            )),
            _ => Err(ApiError::invalid(
                "model",
                "invalid_model",
                format!("'{name}' is not a Tinker sampler path; expected tinker://<run>/sampler_weights/<id>"),
            )),
        };
    }
    if let Some(a) = st.loras.named(&name) {
        return Ok((name, Some(a)));
    }
    validate::model(st, Some(name)).map(|m| (m.to_string(), None))
}

fn prompt(v: Option<&Value>) -> Result<Vec<u32>, ApiError> {
    let bad = || ApiError::invalid("prompt", "invalid_type", "'prompt' must be a string or a list of token ids");
    let single = || ApiError::invalid("prompt", "invalid_value", "Only one prompt per request is supported");
    match v {
        None | Some(Value::Null) => Err(ApiError::invalid("prompt", "missing_required_parameter", "Missing required parameter: 'prompt'")),
        Some(Value::String(s)) => Ok(encode_text(s)),
        Some(Value::Array(items)) if items.is_empty() => Err(ApiError::invalid("prompt", "invalid_value", "'prompt' must not be empty")),
        Some(Value::Array(items)) => {
            if items.iter().all(|x| x.is_i64() || x.is_u64()) {
                let ids: Vec<i64> = items.iter().map(|x| x.as_i64().unwrap_or(-1)).collect();
                return validate::token_ids(&ids, "prompt");
            }
            if items.len() > 1 {
                return Err(if items.iter().all(|x| x.is_string() || x.is_array()) { single() } else { bad() });
            }
            match &items[0] {
                Value::String(s) => Ok(encode_text(s)),
                Value::Array(_) => prompt(Some(&items[0])),
                _ => Err(bad()),
            }
        }
        Some(_) => Err(bad()),
    }
}

fn token_str(t: u32, as_ids: bool) -> String {
    if as_ids {
        format!("token_id:{t}")
    } else if t == EOT_TOKEN {
        "<|endoftext|>".into()
    } else {
        decode_text(&[t])
    }
}

pub async fn create(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response<Body> {
    match run(st, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(st: Arc<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response<Body>, ApiError> {
    let body = body.map_err(validate::body_rejection)?;
    let b: Body_ = validate::parse_json(&body)?;
    let (model_name, adapter) = model(&st, b.model)?;
    if b.stream == Some(true) {
        return Err(ApiError::invalid("stream", "unsupported_parameter", "Streaming is not supported by this server"));
    }
    if b.echo == Some(true) {
        return Err(ApiError::invalid("echo", "unsupported_parameter", "'echo' is not supported by this server"));
    }
    if b.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n", "invalid_value", "Only n=1 is supported"));
    }
    let prompt_ids = prompt(b.prompt.as_ref())?;
    let max_tokens = validate::max_tokens(b.max_tokens, 16, "max_tokens")?;
    let temperature = validate::temperature(b.temperature, "temperature")?;
    let top_p = validate::top_p(b.top_p, "top_p")?;
    let (stop_strings, mut stop_ids) = validate::stop(b.stop.as_ref(), "stop")?;
    if let Some(ids) = &b.stop_token_ids {
        if !ids.is_empty() {
            stop_ids.extend(validate::token_ids(ids, "stop_token_ids")?);
        }
    }
    let top_k = match b.logprobs {
        None => None,
        Some(k) if (0..=MAX_TOP_LOGPROBS).contains(&k) => Some(k as usize),
        Some(k) => {
            return Err(ApiError::invalid(
                "logprobs",
                "invalid_value",
                format!("'logprobs' must be between 0 and {MAX_TOP_LOGPROBS}, got {k}"),
            ))
        }
    };
    let as_ids = b.return_tokens_as_token_ids.unwrap_or(false);
    let (n, _) = st.next_response();
    let seed = b.seed.map(|s| s as u64).unwrap_or_else(|| rng::draw(st.seed, rng::STREAM_SAMPLE, n));
    let delay = st.live().latency.seconds_for("asap");
    if delay > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(delay.min(3600.0))).await;
    }
    let params = SamplingParams { max_tokens, temperature, top_p, stop_token_ids: stop_ids, stop_strings, seed };
    let (prompt_ids, s) = jobs::sample(prompt_ids, adapter.clone(), params)
        .await
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", Some("server_error"), "Sampling failed"))?;
    inc(&st.stats.openai_completions);
    st.stats.tokens_generated.fetch_add(s.tokens.len() as u64, Relaxed);

    let text = decode_text(&s.tokens);
    let logprobs = top_k.map(|k| {
        let tokens: Vec<String> = s.tokens.iter().map(|&t| token_str(t, as_ids)).collect();
        let mut off = 0;
        let text_offset = tokens
            .iter()
            .map(|t| {
                let o = off;
                off += if as_ids { 0 } else { t.len() };
                o
            })
            .collect();
        let top = (k > 0).then(|| top_logprobs(&prompt_ids, &s.tokens, adapter.as_deref(), temperature, top_p, k, as_ids));
        Logprobs { tokens, token_logprobs: s.logprobs.iter().map(|&l| finite(l)).collect(), top_logprobs: top, text_offset }
    });
    let with_ids = b.return_token_ids.unwrap_or(false);
    let out = Completion {
        id: format!("cmpl-{:016x}", rng::mix(n ^ 0xC0FFEE)),
        object: "text_completion",
        created: unix_now(),
        model: &model_name,
        choices: [Choice {
            index: 0,
            text: &text,
            logprobs,
            finish_reason: s.stop_reason.as_str(),
            token_ids: with_ids.then_some(&s.tokens[..]),
            prompt_token_ids: with_ids.then_some(&prompt_ids[..]),
        }],
        usage: Usage {
            prompt_tokens: prompt_ids.len(),
            completion_tokens: s.tokens.len(),
            total_tokens: prompt_ids.len() + s.tokens.len(),
        },
    };
    let bytes = serde_json::to_vec(&out).unwrap_or_default();
    Ok(json_response(StatusCode::OK, Bytes::from(bytes)))
}

/// The `k` most likely tokens at each position (plus the sampled one), under the distribution the
/// sampled token was drawn from.
fn top_logprobs(
    prompt: &[u32],
    tokens: &[u32],
    adapter: Option<&Adapter>,
    temperature: f64,
    top_p: f64,
    k: usize,
    as_ids: bool,
) -> Vec<Map<String, Value>> {
    // The model only looks at a short suffix, so a bounded tail of the prompt is enough context.
    let tail = &prompt[prompt.len().saturating_sub(32)..];
    let mut ctx: Vec<u32> = Vec::with_capacity(tail.len() + tokens.len());
    ctx.extend_from_slice(tail);
    let m = NgramModel::default_model();
    let mut out = Vec::with_capacity(tokens.len());
    for &t in tokens {
        let dist = m.next_token_distribution(&ctx, adapter, temperature, top_p);
        let mut idx: Vec<usize> = (0..dist.len()).filter(|&i| dist[i] > 0.0).collect();
        idx.sort_by(|&a, &b| dist[b].partial_cmp(&dist[a]).unwrap_or(std::cmp::Ordering::Equal));
        let mut map = Map::new();
        for &i in idx.iter().take(k).chain(std::iter::once(&(t as usize))) {
            let p = dist.get(i).copied().unwrap_or(0.0);
            let lp = if p > 0.0 { p.ln() } else { -1.0e4 };
            map.entry(token_str(i as u32, as_ids)).or_insert(Value::from(lp));
        }
        out.push(map);
        ctx.push(t);
    }
    out
}
