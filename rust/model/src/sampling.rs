//! Sampling a continuation: the per-request loop, its parameters and stop conditions.
//!
//! Each token is drawn from the model's distribution for the current context, reshaped by
//! the adapter bias, temperature and top-p as described in [`crate::shaping`], and comes
//! with `ln` of its probability under exactly that distribution. With `T == 1`,
//! `top_p >= 1` and no (active) adapter the model's own precomputed table is used directly.

use std::sync::Arc;

use crate::adapter::Adapter;
use crate::ngram::{History, NgramModel};
use crate::rng::SplitMix64;
use crate::shaping::{Shape, ShapedTables};
use crate::table::PROB_ONE;
use crate::{decode_text, EOT_TOKEN, VOCAB_SIZE};

/// Why a sample ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// A stop token, a stop string or [`EOT_TOKEN`] ended the sample.
    Stop,
    /// `max_tokens` tokens were generated.
    Length,
}

impl StopReason {
    /// The wire name: `"stop"` or `"length"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::Stop => "stop",
            StopReason::Length => "length",
        }
    }
}

/// How to sample a continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Upper bound on generated tokens; 0 gives an empty sample with [`StopReason::Length`].
    pub max_tokens: u32,
    /// `0..=2` in the API. 0 (or any value `<= 0`, or NaN) is greedy: the argmax token,
    /// with logprob `0.0`.
    pub temperature: f64,
    /// Nucleus mass in `(0, 1]`; values `>= 1` disable it, values `<= 0` (or NaN) keep
    /// only the most likely token.
    pub top_p: f64,
    /// Generating any of these ends the sample; the stop token is included in the output.
    pub stop_token_ids: Vec<u32>,
    /// The sample ends as soon as its decoded text (generated tokens only, see
    /// [`decode_text`]) contains one of these; the completing token is included. Empty
    /// strings are ignored.
    pub stop_strings: Vec<String>,
    /// Same seed, prompt, params and adapter give the same sample.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { max_tokens: 16, temperature: 1.0, top_p: 1.0, stop_token_ids: Vec::new(), stop_strings: Vec::new(), seed: 0 }
    }
}

/// A sampled continuation: `logprobs[i]` is the natural-log probability of `tokens[i]`
/// under the distribution it was drawn from (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub stop_reason: StopReason,
}

/// Most tokens a `Sample` preallocates room for, whatever `max_tokens` says.
const MAX_PREALLOCATED_TOKENS: usize = 4096;

impl NgramModel {
    /// Sample a continuation of `prompt` (any `u32` ids; ids above 255 other than
    /// [`EOT_TOKEN`] act as unknown context). Deterministic given `params.seed`.
    pub fn sample(&self, prompt: &[u32], adapter: Option<&Adapter>, params: &SamplingParams) -> Sample {
        let sampler = TokenSampler::new(self, adapter, params.temperature, params.top_p);
        let stops = StopConditions::new(&params.stop_token_ids, &params.stop_strings);
        let mut rng = SplitMix64::new(params.seed);
        let mut history = History::after(prompt);

        let max_tokens = params.max_tokens as usize;
        let capacity = max_tokens.min(MAX_PREALLOCATED_TOKENS);
        let mut tokens = Vec::with_capacity(capacity);
        let mut logprobs = Vec::with_capacity(capacity);
        while tokens.len() < max_tokens {
            let table = self.table_for(&history);
            let (token, logprob) = sampler.draw(self, table, &mut rng);
            tokens.push(token);
            logprobs.push(logprob);
            if token == EOT_TOKEN || stops.is_stop_token(token) || stops.text_matches(&tokens) {
                return Sample { tokens, logprobs, stop_reason: StopReason::Stop };
            }
            history.push(token);
        }
        Sample { tokens, logprobs, stop_reason: StopReason::Length }
    }

    /// The full next-token distribution after `context` (same conventions as [`sample`](Self::sample)),
    /// after the adapter bias, temperature and top-p: [`VOCAB_SIZE`] probabilities summing to 1.
    /// A token sampled in this context has logprob `ln(distribution[token])`.
    pub fn next_token_distribution(&self, context: &[u32], adapter: Option<&Adapter>, temperature: f64, top_p: f64) -> Vec<f64> {
        let table = self.table_for(&History::after(context));
        match Shape::new(temperature, top_p, adapter.and_then(Adapter::active_bias)) {
            None => self.table(table).probabilities(),
            Some(shape) => shape.table(self, table).probabilities(),
        }
    }
}

/// How each token of one request is drawn, decided once per request.
enum TokenSampler<'a> {
    /// The model's own distribution: its precomputed cumulative table.
    Raw,
    /// A reshaped distribution, from the model's cache for this setting.
    Shaped { shape: Shape<'a>, tables: Arc<ShapedTables> },
}

impl<'a> TokenSampler<'a> {
    fn new(model: &NgramModel, adapter: Option<&'a Adapter>, temperature: f64, top_p: f64) -> Self {
        match Shape::new(temperature, top_p, adapter.and_then(Adapter::active_bias)) {
            None => TokenSampler::Raw,
            Some(shape) => TokenSampler::Shaped { tables: model.shaped_cache().tables(&shape, model.table_count()), shape },
        }
    }

    /// Draw a token from `table`'s (reshaped) distribution: 31 uniform bits against
    /// cumulative masses that sum to exactly 2^31. Returns the token and its logprob.
    #[inline]
    fn draw(&self, model: &NgramModel, table: usize, rng: &mut SplitMix64) -> (u32, f32) {
        let r = (rng.next_u64() >> 33) as u32;
        debug_assert!(r < PROB_ONE);
        let masses = match self {
            TokenSampler::Raw => model.table(table),
            TokenSampler::Shaped { shape, tables } => tables.table(model, shape, table),
        };
        let token = masses.draw(r);
        (token as u32, masses.ln_probability(token) as f32)
    }
}

/// The stop conditions of one request, prepared for per-token checks.
struct StopConditions<'a> {
    stop_token: [bool; VOCAB_SIZE],
    /// Matched against the generated bytes directly: a valid UTF-8 string occurs in the
    /// lossy decoding exactly when its bytes occur in the raw bytes, and a new match must
    /// end at the newest byte.
    byte_strings: Vec<&'a [u8]>,
    /// Strings containing U+FFFD could match a replacement character produced by lossy
    /// decoding, so they are checked against the decoded text (rare, slower).
    decoded_strings: Vec<&'a str>,
}

impl<'a> StopConditions<'a> {
    fn new(stop_token_ids: &[u32], stop_strings: &'a [String]) -> Self {
        let mut stop_token = [false; VOCAB_SIZE];
        for &id in stop_token_ids {
            if let Some(slot) = stop_token.get_mut(id as usize) {
                *slot = true;
            }
        }
        let live = || stop_strings.iter().filter(|s| !s.is_empty());
        StopConditions {
            stop_token,
            byte_strings: live().filter(|s| !s.contains('\u{FFFD}')).map(|s| s.as_bytes()).collect(),
            decoded_strings: live().filter(|s| s.contains('\u{FFFD}')).map(String::as_str).collect(),
        }
    }

    #[inline]
    fn is_stop_token(&self, token: u32) -> bool {
        self.stop_token[token as usize]
    }

    #[inline]
    fn text_matches(&self, tokens: &[u32]) -> bool {
        let suffix_matches =
            |s: &&[u8]| s.len() <= tokens.len() && tokens[tokens.len() - s.len()..].iter().zip(s.iter()).all(|(&t, &b)| t == u32::from(b));
        if self.byte_strings.iter().any(suffix_matches) {
            return true;
        }
        if self.decoded_strings.is_empty() {
            return false;
        }
        let text = decode_text(tokens);
        self.decoded_strings.iter().any(|s| text.contains(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_match_suffixes_only() {
        let strings = vec!["ab".to_string(), String::new()];
        let stops = StopConditions::new(&[1000, 10], &strings);
        assert!(stops.is_stop_token(10));
        assert!(!stops.is_stop_token(11));
        assert!(stops.text_matches(&crate::encode_text("xxab")));
        assert!(!stops.text_matches(&crate::encode_text("xxa")));
        assert!(!stops.text_matches(&crate::encode_text("b")));
    }

    #[test]
    fn replacement_char_stop_strings_match_decoded_text() {
        let strings = vec!["\u{FFFD}".to_string()];
        let stops = StopConditions::new(&[], &strings);
        assert!(!stops.text_matches(&[b'a'.into()]));
        assert!(stops.text_matches(&[b'a'.into(), 0xFF]));
    }
}
