//! The small *real* language model behind the sail-lite emulator.
//!
//! # The model
//! [`NgramModel`] is a byte-level 5-gram model: token ids `0..=255` are raw bytes and
//! [`EOT_TOKEN`] (256) ends a document. The next-token distribution conditions on the last
//! four tokens and uses Witten-Bell interpolation down through shorter histories to the
//! unigram statistics, mixed with a small uniform floor so that every token has non-zero
//! probability. Every distribution is precomputed when the model is built (see [`ngram`]),
//! so drawing a token costs a hash lookup or two and a scan of two cache lines.
//!
//! The default model ([`NgramModel::default_model`]) is trained on `corpus.txt`, a small
//! embedded English text (prose, simple Q/A lines and single-digit sums), in which blank
//! lines separate documents.
//!
//! # Log-probabilities
//! Every sampled token comes with the natural log of its probability under the distribution
//! it was *actually drawn from*: the model's log-probabilities plus the adapter's logit
//! bias, divided by the temperature, softmaxed, truncated to the top-p nucleus and
//! renormalised (details in [`shaping`]). [`NgramModel::next_token_distribution`] returns
//! that same distribution, so for every sampled token
//! `logprob == ln(next_token_distribution(..)[token])` (up to `f32` rounding of the
//! logprob). Greedy decoding (temperature 0) draws from a point mass, so its logprob is
//! always `0.0`. All distributions are held as integer masses summing to exactly 2^31 and
//! tokens are drawn from them exactly, so "the distribution" is never an approximation of
//! what was sampled.
//!
//! # Adapters
//! An [`Adapter`] is a validated PEFT LoRA adapter. Its `lora_B x lora_A` weights are folded
//! into a per-token logit bias that is added to the model's log-probabilities before
//! temperature and top-p; see [`adapter`] for how.
//!
//! The crate does no I/O: archives and configs are parsed from bytes handed to it.

pub mod adapter;
mod archive;
mod math;
pub mod ngram;
mod rng;
mod safetensors;
pub mod sampling;
pub mod shaping;
mod table;
mod testdata;

pub use adapter::{parse_adapter_config, Adapter, AdapterConfig, AdapterError};
pub use ngram::NgramModel;
pub use sampling::{Sample, SamplingParams, StopReason};
pub use testdata::{make_test_adapter_config, make_test_archive, make_test_safetensors};

/// The end-of-text token: ends a document, and a sample (with [`StopReason::Stop`]).
pub const EOT_TOKEN: u32 = 256;
/// Number of token ids the model can produce: 256 bytes plus [`EOT_TOKEN`].
pub const VOCAB_SIZE: usize = 257;
/// The largest LoRA rank `r` an adapter for this base model may have.
pub const MAX_LORA_RANK: u32 = 32;

/// Decode token ids to text: ids `0..=255` are UTF-8 bytes (invalid sequences become U+FFFD);
/// [`EOT_TOKEN`] and any other id above 255 are dropped.
pub fn decode_text(tokens: &[u32]) -> String {
    let bytes: Vec<u8> = tokens.iter().filter(|&&t| t < 256).map(|&t| t as u8).collect();
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
    }
}

/// Encode text as token ids: one id per UTF-8 byte.
pub fn encode_text(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}
