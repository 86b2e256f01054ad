//! Decoding server answers into samples: the Responses API poll body, the OpenAI-compatible
//! `/completions` body, and the error envelope. Never panics: anything malformed is a
//! [`ProtocolViolation`], which the engine reports as a `ProtocolError` with the response id.

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Stop,
    Length,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Stop => "stop",
            StopReason::Length => "length",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DecodedSample {
    pub tokens: Vec<u32>,
    pub logprobs: Option<Vec<f64>>,
    pub stop_reason: StopReason,
    pub usage: Usage,
}

/// The token counts a server reports for one sample. Advisory: a missing, null or mistyped
/// count reads as 0 and never fails the sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Prompt tokens served from the server's prefix cache.
    pub cached_tokens: u64,
}

impl Usage {
    /// Read the counts out of a `usage` object. `names` are the (input, output, details)
    /// field names: the Responses API's or the `/completions` API's.
    fn from_raw(raw: Option<&RawValue>, names: (&str, &str, &str)) -> Usage {
        let Some(value) = raw.and_then(|r| serde_json::from_str::<serde_json::Value>(r.get()).ok()) else {
            return Usage::default();
        };
        let count = |v: Option<&serde_json::Value>| v.and_then(serde_json::Value::as_u64).unwrap_or(0);
        Usage {
            input_tokens: count(value.get(names.0)),
            output_tokens: count(value.get(names.1)),
            cached_tokens: count(value.get(names.2).and_then(|d| d.get("cached_tokens"))),
        }
    }
}

const RESPONSES_USAGE: (&str, &str, &str) = ("input_tokens", "output_tokens", "input_tokens_details");
const COMPLETIONS_USAGE: (&str, &str, &str) = ("prompt_tokens", "completion_tokens", "prompt_tokens_details");

/// What one poll of `GET /v1/responses/{id}` says.
#[derive(Clone, Debug, PartialEq)]
pub enum PollOutcome {
    /// Not finished (including statuses we do not know: keep polling).
    Pending,
    Completed(DecodedSample),
    Failed {
        code: Option<String>,
        message: String,
    },
    Cancelled,
    Expired,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolViolation(pub String);

impl std::fmt::Display for ProtocolViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn violation(msg: impl Into<String>) -> ProtocolViolation {
    ProtocolViolation(msg.into())
}

// ---- Responses API ---------------------------------------------------------------------

#[derive(Deserialize)]
struct ResponseBody<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, borrow)]
    output: Option<Vec<OutputItem<'a>>>,
    #[serde(default)]
    error: Option<ErrorObject>,
    #[serde(default)]
    incomplete_details: Option<IncompleteDetails>,
    /// Kept raw: a usage object of an unexpected shape must not fail the sample.
    #[serde(default, borrow)]
    usage: Option<&'a RawValue>,
}

/// Items other than messages (reasoning, tool calls...) may have any content shape,
/// so content stays raw until we know the item is the message we want.
#[derive(Deserialize)]
struct OutputItem<'a> {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ContentBlock {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    token_ids: Option<Vec<u32>>,
    #[serde(default)]
    logprobs: Option<Vec<TokenLogprob>>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct TokenLogprob {
    #[serde(default)]
    token_id: Option<u32>,
    logprob: f64,
}

#[derive(Deserialize, Default)]
struct ErrorObject {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default, rename = "type")]
    error_type: Option<serde_json::Value>,
}

/// What an error answer says: the envelope's `code`, `type` and `message` (or the first
/// line of a body that is not an envelope).
#[derive(Debug, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: Option<String>,
    pub error_type: Option<String>,
    pub message: String,
}

#[derive(Deserialize)]
struct IncompleteDetails {
    #[serde(default)]
    reason: Option<String>,
}

/// The id of a response body, if it has one (used on create, where only the id matters).
pub fn response_id(body: &[u8]) -> Result<String, ProtocolViolation> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<String>,
    }
    let parsed: IdOnly = serde_json::from_slice(body).map_err(|e| violation(format!("create answer is not a response object: {e}")))?;
    match parsed.id {
        Some(id) if !id.is_empty() && id.len() <= 512 => Ok(id),
        _ => Err(violation("create answer has no response id")),
    }
}

/// Decode a poll body. `want_logprobs` says whether the request asked for them.
pub fn decode_poll(body: &[u8], want_logprobs: bool) -> Result<PollOutcome, ProtocolViolation> {
    let parsed: ResponseBody = serde_json::from_slice(body).map_err(|e| violation(format!("malformed response JSON: {e}")))?;
    let _ = &parsed.id;
    let status = parsed.status.as_deref().ok_or_else(|| violation("response has no status"))?;
    match status {
        "completed" | "incomplete" => decode_completed(&parsed, status == "incomplete", want_logprobs).map(PollOutcome::Completed),
        "failed" => {
            let err = parsed.error.unwrap_or_default();
            Ok(PollOutcome::Failed {
                code: err.code.as_ref().map(code_text),
                message: err.message.unwrap_or_else(|| "the response failed without a message".into()),
            })
        }
        "cancelled" | "canceled" => Ok(PollOutcome::Cancelled),
        "expired" => Ok(PollOutcome::Expired),
        _ => Ok(PollOutcome::Pending),
    }
}

fn decode_completed(r: &ResponseBody, incomplete: bool, want_logprobs: bool) -> Result<DecodedSample, ProtocolViolation> {
    let fallback_stop = fallback_stop_reason(incomplete, r.incomplete_details.as_ref());
    let usage = Usage::from_raw(r.usage, RESPONSES_USAGE);
    let Some(block) = find_output_text(r)? else {
        // No message at all: a valid empty sample unless usage says tokens were produced.
        if usage.output_tokens > 0 {
            return Err(violation("completed response has no output_text block"));
        }
        return Ok(DecodedSample { tokens: vec![], logprobs: want_logprobs.then(Vec::new), stop_reason: fallback_stop, usage });
    };
    let stop_reason = block.stop_reason.as_deref().map_or(fallback_stop, |s| normalise_stop_reason(s, fallback_stop));
    let tokens = match (&block.token_ids, &block.logprobs) {
        (Some(ids), _) => ids.clone(),
        (None, Some(lps)) => lps
            .iter()
            .map(|lp| lp.token_id.ok_or_else(|| violation("logprobs entry without token_id and no token_ids")))
            .collect::<Result<Vec<u32>, _>>()?,
        (None, None) => vec![],
    };
    let logprobs = if want_logprobs {
        let lps = match &block.logprobs {
            Some(lps) => lps,
            None if tokens.is_empty() => return Ok(DecodedSample { tokens, logprobs: Some(vec![]), stop_reason, usage }),
            None => return Err(violation("logprobs were requested but the response has none")),
        };
        if lps.len() != tokens.len() {
            return Err(violation(format!("{} tokens but {} logprobs", tokens.len(), lps.len())));
        }
        for (lp, tok) in lps.iter().zip(&tokens) {
            if lp.token_id.is_some_and(|id| id != *tok) {
                return Err(violation("logprobs[].token_id disagrees with token_ids"));
            }
            if lp.logprob.is_nan() || lp.logprob > 1e-6 {
                return Err(violation(format!("invalid logprob {}", lp.logprob)));
            }
        }
        Some(lps.iter().map(|lp| lp.logprob).collect())
    } else {
        None
    };
    Ok(DecodedSample { tokens, logprobs, stop_reason, usage })
}

fn find_output_text(r: &ResponseBody) -> Result<Option<ContentBlock>, ProtocolViolation> {
    let Some(items) = &r.output else { return Ok(None) };
    let Some(message) = items.iter().find(|i| i.kind.as_deref() == Some("message")) else { return Ok(None) };
    let Some(content) = message.content else { return Ok(None) };
    let blocks: Vec<ContentBlock> =
        serde_json::from_str(content.get()).map_err(|e| violation(format!("malformed message content: {e}")))?;
    Ok(blocks.into_iter().find(|b| b.kind.as_deref() == Some("output_text")))
}

fn fallback_stop_reason(incomplete: bool, details: Option<&IncompleteDetails>) -> StopReason {
    let max_tokens = details.and_then(|d| d.reason.as_deref()).is_some_and(|r| r.contains("max") || r.contains("length"));
    if incomplete || max_tokens {
        StopReason::Length
    } else {
        StopReason::Stop
    }
}

/// Map the many spellings servers use onto tinker's two stop reasons.
pub fn normalise_stop_reason(raw: &str, fallback: StopReason) -> StopReason {
    match raw {
        "length" | "max_tokens" | "max_output_tokens" | "max_length" => StopReason::Length,
        "stop" | "eos" | "end_turn" | "stop_sequence" | "stop_token" | "eos_token" => StopReason::Stop,
        _ => fallback,
    }
}

fn code_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---- Error envelope --------------------------------------------------------------------

/// `(code, message)` from an error body; a non-JSON body gives its first line, shortened.
pub fn decode_error_body(body: &[u8]) -> ErrorBody {
    #[derive(Deserialize)]
    struct Envelope {
        error: Option<ErrorObject>,
    }
    if let Ok(Envelope { error: Some(err) }) = serde_json::from_slice::<Envelope>(body) {
        let code = err.code.as_ref().map(code_text);
        let error_type = err.error_type.as_ref().map(code_text);
        return ErrorBody { code, error_type, message: err.message.unwrap_or_default() };
    }
    let text = String::from_utf8_lossy(body);
    let first = text.lines().next().unwrap_or("").trim();
    let short: String = first.chars().take(200).collect();
    ErrorBody { code: None, error_type: None, message: short }
}

// ---- OpenAI-compatible /completions ---------------------------------------------------

#[derive(Deserialize)]
struct CompletionBody<'a> {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default, borrow)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    token_ids: Option<Vec<u32>>,
    #[serde(default)]
    logprobs: Option<ChoiceLogprobs>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceLogprobs {
    #[serde(default)]
    tokens: Option<Vec<String>>,
    #[serde(default)]
    token_logprobs: Option<Vec<Option<f64>>>,
}

/// Decode a `/completions` answer (vLLM / SGLang / Tinker flavours).
pub fn decode_completion(body: &[u8], want_logprobs: bool) -> Result<DecodedSample, ProtocolViolation> {
    let parsed: CompletionBody = serde_json::from_slice(body).map_err(|e| violation(format!("malformed completion JSON: {e}")))?;
    let usage = Usage::from_raw(parsed.usage, COMPLETIONS_USAGE);
    let choice = parsed.choices.into_iter().next().ok_or_else(|| violation("completion has no choices"))?;
    let stop_reason = match choice.finish_reason.as_deref() {
        Some(r) => normalise_stop_reason(r, StopReason::Stop),
        None => StopReason::Stop,
    };
    let tokens = match (&choice.token_ids, choice.logprobs.as_ref().and_then(|l| l.tokens.as_ref())) {
        (Some(ids), _) => ids.clone(),
        (None, Some(strs)) => strs.iter().map(|s| parse_token_id_string(s)).collect::<Result<_, _>>()?,
        (None, None) => return Err(violation("completion carries neither token_ids nor token_id:N logprob tokens")),
    };
    let logprobs = if want_logprobs {
        let lps = choice
            .logprobs
            .as_ref()
            .and_then(|l| l.token_logprobs.as_ref())
            .ok_or_else(|| violation("logprobs were requested but the completion has none"))?;
        if lps.len() != tokens.len() {
            return Err(violation(format!("{} tokens but {} logprobs", tokens.len(), lps.len())));
        }
        Some(
            lps.iter()
                .map(|lp| match lp {
                    Some(v) if !v.is_nan() && *v <= 1e-6 => Ok(*v),
                    _ => Err(violation("missing or invalid token logprob")),
                })
                .collect::<Result<_, _>>()?,
        )
    } else {
        None
    };
    Ok(DecodedSample { tokens, logprobs, stop_reason, usage })
}

/// vLLM's `return_tokens_as_token_ids` renders tokens as `"token_id:123"`.
fn parse_token_id_string(s: &str) -> Result<u32, ProtocolViolation> {
    s.strip_prefix("token_id:")
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| violation("logprobs.tokens entries are not token_id:N (ask the server for return_tokens_as_token_ids)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DONE: &str = r#"{"id":"resp_1","status":"completed","model":"m","output":[{"type":"reasoning","content":"x"},
        {"type":"message","content":[{"type":"output_text","text":"abc","token_ids":[11,12,13],
        "logprobs":[{"token_id":11,"logprob":-0.1},{"token_id":12,"logprob":-1.3},{"token_id":13,"logprob":-0.02}],
        "stop_reason":"stop"}]}],"usage":{"input_tokens":3,"output_tokens":3,"total_tokens":6},"error":null,"extra":1}"#;

    #[test]
    fn completed_sample() {
        let out = decode_poll(DONE.as_bytes(), true).unwrap();
        assert_eq!(
            out,
            PollOutcome::Completed(DecodedSample {
                tokens: vec![11, 12, 13],
                logprobs: Some(vec![-0.1, -1.3, -0.02]),
                stop_reason: StopReason::Stop,
                usage: Usage { input_tokens: 3, output_tokens: 3, cached_tokens: 0 },
            })
        );
        let PollOutcome::Completed(s) = decode_poll(DONE.as_bytes(), false).unwrap() else { panic!() };
        assert_eq!(s.logprobs, None);
    }

    fn usage_of(usage: &str) -> Result<Usage, ProtocolViolation> {
        let body = format!(
            r#"{{"status":"completed","output":[{{"type":"message","content":[{{"type":"output_text","token_ids":[1]}}]}}],"usage":{usage}}}"#
        );
        match decode_poll(body.as_bytes(), false)? {
            PollOutcome::Completed(s) => Ok(s.usage),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_with_cached_tokens() {
        let u = usage_of(
            r#"{"input_tokens":300,"output_tokens":1,"input_tokens_details":{"cached_tokens":256},"output_tokens_details":{"reasoning_tokens":0}}"#,
        );
        assert_eq!(u, Ok(Usage { input_tokens: 300, output_tokens: 1, cached_tokens: 256 }));
        let c = br#"{"choices":[{"token_ids":[1],"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":8}}}"#;
        assert_eq!(decode_completion(c, false).unwrap().usage, Usage { input_tokens: 9, output_tokens: 1, cached_tokens: 8 });
        assert_eq!(decode_completion(br#"{"choices":[{"token_ids":[1]}]}"#, false).unwrap().usage, Usage::default());
    }

    #[test]
    fn odd_usage_reads_as_zero_and_never_fails_the_sample() {
        for odd in [
            "null",
            "{}",
            "7",
            r#""lots""#,
            "[1,2]",
            r#"{"input_tokens":null,"output_tokens":null,"input_tokens_details":null}"#,
            r#"{"input_tokens":"12","output_tokens":-1,"input_tokens_details":{"cached_tokens":"3"}}"#,
            r#"{"input_tokens":1.5,"output_tokens":1e30,"input_tokens_details":[1]}"#,
            r#"{"input_tokens":{"a":[1,{}]},"input_tokens_details":{"cached_tokens":{"x":1}}}"#,
            r#"{"input_tokens":99999999999999999999999999,"input_tokens_details":"cached"}"#,
        ] {
            assert_eq!(usage_of(odd), Ok(Usage::default()), "{odd}");
        }
        let partial = usage_of(r#"{"input_tokens":5,"output_tokens":"1","input_tokens_details":{"cached_tokens":4}}"#);
        assert_eq!(partial, Ok(Usage { input_tokens: 5, output_tokens: 0, cached_tokens: 4 }));
    }

    #[test]
    fn tokens_rebuilt_from_logprobs() {
        let body = r#"{"status":"completed","output":[{"type":"message","content":[{"type":"output_text",
            "logprobs":[{"token_id":5,"logprob":-0.5}]}]}]}"#;
        let PollOutcome::Completed(s) = decode_poll(body.as_bytes(), true).unwrap() else { panic!() };
        assert_eq!(s.tokens, vec![5]);
    }

    #[test]
    fn statuses() {
        for st in ["queued", "pending", "in_progress", "running", "something_new"] {
            let body = format!(r#"{{"id":"r","status":"{st}"}}"#);
            assert_eq!(decode_poll(body.as_bytes(), true).unwrap(), PollOutcome::Pending, "{st}");
        }
        assert_eq!(decode_poll(br#"{"status":"canceled"}"#, true).unwrap(), PollOutcome::Cancelled);
        assert_eq!(decode_poll(br#"{"status":"cancelled"}"#, true).unwrap(), PollOutcome::Cancelled);
        assert_eq!(decode_poll(br#"{"status":"expired"}"#, true).unwrap(), PollOutcome::Expired);
        assert_eq!(
            decode_poll(br#"{"status":"failed","error":{"code":"server_error","message":"boom"}}"#, true).unwrap(),
            PollOutcome::Failed { code: Some("server_error".into()), message: "boom".into() }
        );
    }

    #[test]
    fn stop_reason_normalised() {
        let mk = |status: &str, sr: &str, details: &str| {
            format!(
                r#"{{"status":"{status}","incomplete_details":{details},"output":[{{"type":"message","content":[{{"type":"output_text","token_ids":[1],{sr}"logprobs":[{{"token_id":1,"logprob":-1}}]}}]}}]}}"#
            )
        };
        let get = |b: String| match decode_poll(b.as_bytes(), true).unwrap() {
            PollOutcome::Completed(s) => s.stop_reason,
            o => panic!("{o:?}"),
        };
        assert_eq!(get(mk("completed", r#""stop_reason":"length","#, "null")), StopReason::Length);
        assert_eq!(get(mk("completed", r#""stop_reason":"completed","#, "null")), StopReason::Stop);
        assert_eq!(get(mk("incomplete", r#""stop_reason":"unknown","#, "null")), StopReason::Length);
        assert_eq!(get(mk("incomplete", "", "null")), StopReason::Length);
        assert_eq!(get(mk("completed", "", r#"{"reason":"max_output_tokens"}"#)), StopReason::Length);
        assert_eq!(get(mk("completed", "", "null")), StopReason::Stop);
    }

    #[test]
    fn empty_sample_is_valid() {
        let body = br#"{"status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"","token_ids":[],"logprobs":[]}]}]}"#;
        let PollOutcome::Completed(s) = decode_poll(body, true).unwrap() else { panic!() };
        assert!(s.tokens.is_empty());
        assert_eq!(s.logprobs, Some(vec![]));
        let PollOutcome::Completed(s) = decode_poll(br#"{"status":"completed","output":[]}"#, true).unwrap() else { panic!() };
        assert!(s.tokens.is_empty());
    }

    #[test]
    fn malformed_is_a_violation() {
        let bad: &[&[u8]] = &[
            b"",
            b"not json",
            b"{\"status\":\"completed\"",
            b"[]",
            br#"{"id":"r"}"#,
            br#"{"status":7}"#,
            br#"{"status":"completed","output":[{"type":"message","content":[{"type":"output_text","token_ids":[1,2],"logprobs":[{"token_id":1,"logprob":-1}]}]}]}"#,
            br#"{"status":"completed","output":[{"type":"message","content":[{"type":"output_text","token_ids":[-1]}]}]}"#,
            br#"{"status":"completed","output":[{"type":"message","content":[{"type":"output_text","token_ids":[1]}]}]}"#,
            br#"{"status":"completed","output":[{"type":"message","content":[{"type":"output_text","token_ids":[1],"logprobs":[{"token_id":2,"logprob":-1}]}]}]}"#,
            br#"{"status":"completed","output":[{"type":"message","content":"oops"}]}"#,
            br#"{"status":"completed","output":[],"usage":{"output_tokens":4}}"#,
            br#"{"status":"completed","output":[{"type":"message","content":[{"type":"output_text","token_ids":[1],"logprobs":[{"token_id":1,"logprob":3.5}]}]}]}"#,
        ];
        for b in bad {
            assert!(decode_poll(b, true).is_err(), "{}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn error_envelope() {
        assert_eq!(
            decode_error_body(
                br#"{"error":{"message":"bad top_p","type":"invalid_request_error","param":"top_p","code":"invalid_value"}}"#
            ),
            ErrorBody { code: Some("invalid_value".into()), error_type: Some("invalid_request_error".into()), message: "bad top_p".into() }
        );
        assert_eq!(
            decode_error_body(b"<html>502 Bad Gateway</html>\nmore"),
            ErrorBody { code: None, error_type: None, message: "<html>502 Bad Gateway</html>".into() }
        );
    }

    #[test]
    fn completions() {
        let vllm = br#"{"id":"cmpl","choices":[{"text":"ab","token_ids":[97,98],"logprobs":{"tokens":["token_id:97","token_id:98"],"token_logprobs":[-0.5,-0.25]},"finish_reason":"length"}]}"#;
        let s = decode_completion(vllm, true).unwrap();
        assert_eq!((s.tokens.clone(), s.stop_reason), (vec![97, 98], StopReason::Length));
        assert_eq!(s.logprobs, Some(vec![-0.5, -0.25]));
        let no_ids = br#"{"choices":[{"logprobs":{"tokens":["token_id:7"],"token_logprobs":[-1.0]},"finish_reason":"stop"}]}"#;
        assert_eq!(decode_completion(no_ids, true).unwrap().tokens, vec![7]);
        assert!(decode_completion(br#"{"choices":[]}"#, true).is_err());
        assert!(decode_completion(br#"{"choices":[{"logprobs":{"tokens":["hello"],"token_logprobs":[-1.0]}}]}"#, true).is_err());
        assert!(decode_completion(br#"{"choices":[{"token_ids":[1],"logprobs":{"token_logprobs":[null]}}]}"#, true).is_err());
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512), lp in any::<bool>()) {
            let _ = decode_poll(&body, lp);
            let _ = decode_completion(&body, lp);
            let _ = decode_error_body(&body);
            let _ = response_id(&body);
        }

        #[test]
        fn never_panics_on_truncated_valid_json(cut in 0usize..DONE.len()) {
            let _ = decode_poll(&DONE.as_bytes()[..cut], true);
        }

        #[test]
        fn decoded_lengths_always_agree(n in 0usize..300, m in 0usize..300) {
            let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            let lps: Vec<String> = (0..m).map(|i| format!(r#"{{"token_id":{i},"logprob":-0.5}}"#)).collect();
            let body = format!(r#"{{"status":"completed","output":[{{"type":"message","content":[{{"type":"output_text","token_ids":[{}],"logprobs":[{}]}}]}}]}}"#, ids.join(","), lps.join(","));
            match decode_poll(body.as_bytes(), true) {
                Ok(PollOutcome::Completed(s)) => prop_assert_eq!(s.tokens.len(), s.logprobs.unwrap().len()),
                Ok(other) => prop_assert!(false, "{:?}", other),
                Err(_) => prop_assert!(n != m, "equal lengths must decode"),
            }
        }
    }
}
