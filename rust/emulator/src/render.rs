//! Response objects in the protocol page's shape, serialised once per state change.
use crate::store::{Head, Status};
use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    input_tokens_details: InputTokensDetails,
    output_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct InputTokensDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct Logprob {
    token_id: u32,
    logprob: f32,
}

#[derive(Serialize)]
struct OutputText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: [(); 0],
    token_ids: &'a [u32],
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<Vec<Logprob>>,
    stop_reason: &'a str,
}

#[derive(Serialize)]
struct Message<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    status: &'static str,
    role: &'static str,
    content: [OutputText<'a>; 1],
}

#[derive(Serialize)]
struct ResponseOut<'a, O: Serialize> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    background: bool,
    model: &'a str,
    output: O,
    usage: Option<Usage>,
    error: Option<ErrorOut<'a>>,
    incomplete_details: Option<()>,
    metadata: &'a RawValue,
    max_output_tokens: u32,
    temperature: f64,
    top_p: f64,
}

fn metadata(head: &Head) -> &RawValue {
    // metadata_json is produced by serde_json in validation, so it always parses; fall back to {} anyway.
    serde_json::from_str::<&RawValue>(&head.metadata_json).unwrap_or_else(|_| serde_json::from_str::<&RawValue>("{}").expect("static json"))
}

fn out<O: Serialize>(head: &Head, status: Status, output: O, usage: Option<Usage>, error: Option<ErrorOut>) -> Bytes {
    let r = ResponseOut {
        id: &head.id_str,
        object: "response",
        created_at: head.created_at,
        status: status.as_str(),
        background: head.background,
        model: &head.model,
        output,
        usage,
        error,
        incomplete_details: None,
        metadata: metadata(head),
        max_output_tokens: head.max_output_tokens,
        temperature: head.temperature,
        top_p: head.top_p,
    };
    Bytes::from(serde_json::to_vec(&r).unwrap_or_default())
}

/// queued / in_progress / cancelled: no output yet (or ever).
pub fn live(head: &Head, status: Status) -> Bytes {
    out(head, status, [(); 0], None, None)
}

pub struct Completed<'a> {
    pub text: &'a str,
    pub tokens: &'a [u32],
    pub logprobs: Option<&'a [f32]>,
    pub stop_reason: &'a str,
    pub input_tokens: u64,
    pub cached_tokens: u64,
}

/// A completed raw-token sample. A max-tokens cut is `completed` with `stop_reason: "length"`
/// (never `incomplete`), which is what the client maps to tinker's "length".
pub fn completed(head: &Head, c: &Completed) -> Bytes {
    let logprobs =
        c.logprobs.map(|lp| c.tokens.iter().zip(lp.iter()).map(|(&token_id, &l)| Logprob { token_id, logprob: finite(l) }).collect());
    let msg = Message {
        kind: "message",
        id: format!("msg_{}", head.id_str.trim_start_matches("resp_")),
        status: "completed",
        role: "assistant",
        content: [OutputText {
            kind: "output_text",
            text: c.text,
            annotations: [],
            token_ids: c.tokens,
            logprobs,
            stop_reason: c.stop_reason,
        }],
    };
    let n = c.tokens.len() as u64;
    let usage = Usage {
        input_tokens: c.input_tokens,
        input_tokens_details: InputTokensDetails { cached_tokens: c.cached_tokens },
        output_tokens: n,
        total_tokens: c.input_tokens + n,
    };
    out(head, Status::Completed, [msg], Some(usage), None)
}

pub fn failed(head: &Head, code: &str, message: &str) -> Bytes {
    out(head, Status::Failed, [(); 0], None, Some(ErrorOut { code, message }))
}

/// JSON has no -inf; clamp so a zero-probability token still serialises as a number.
pub fn finite(l: f32) -> f32 {
    if l.is_finite() {
        l
    } else {
        -1.0e4
    }
}
