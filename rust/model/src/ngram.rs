//! The byte-level 4-gram model and its precomputed distribution tables.
//!
//! # Training
//! The corpus is split into documents at blank lines (`"\n\n"`); each document's bytes are
//! followed by [`EOT_TOKEN`]. Positions before the start of a document are padded with a
//! boundary symbol, so "start of document" is an ordinary context.
//!
//! # Probabilities
//! For a history `h` of the last `k` symbols, Witten-Bell interpolation gives
//!
//! ```text
//! P_k(w | h) = (c(h, w) + T(h) * P_{k-1}(w | h')) / (c(h) + T(h))
//! ```
//!
//! where `c(h, w)` counts `w` after `h`, `c(h)` is their sum, `T(h)` is the number of
//! distinct tokens seen after `h` and `h'` drops the oldest symbol. `P_0` interpolates the
//! unigram counts with the uniform distribution the same way. The result is then quantised
//! to integer masses summing to exactly 2^31, each at least [`FLOOR_MASS`] (the uniform floor,
//! about 2.4e-7 per token), and those masses *are* the model's probabilities.
//!
//! # Tables
//! One distribution is stored per context: every 3-symbol history seen at least
//! [`MIN_LONGEST_CONTEXT_COUNT`] times, every 2- and 1-symbol history, and the empty one.
//! A lookup uses the longest stored suffix of the current history, so rare or unseen
//! histories (including unknown token ids in a prompt) back off to shorter ones.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use crate::shaping::ShapedCache;
use crate::{EOT_TOKEN, VOCAB_SIZE};

/// The quantised probability of 1: masses of one distribution sum to exactly this.
pub(crate) const PROB_ONE: u32 = 1 << 31;
/// The smallest mass of any token in any context (the uniform floor): 512 / 2^31.
pub const FLOOR_MASS: u32 = 512;
/// 3-symbol histories seen fewer times than this back off to their 2-symbol suffix; this
/// keeps the table small and stops the model reciting single corpus occurrences verbatim.
pub const MIN_LONGEST_CONTEXT_COUNT: u32 = 2;

/// Symbols a history can hold: the 256 bytes, then these two.
const SYMBOLS: usize = 258;
/// Before the start of a document (and right after an [`EOT_TOKEN`]).
const BOUNDARY: u16 = 256;
/// A prompt token id that is neither a byte nor EOT: never seen in training.
const UNKNOWN: u16 = 257;
const NO_TABLE: u32 = u32::MAX;

static DEFAULT_CORPUS: &[u8] = include_bytes!("../corpus.txt");

/// The last three symbols of a token stream, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct History([u16; 3]);

impl History {
    pub(crate) const START: History = History([BOUNDARY; 3]);

    /// The history at the end of `tokens`: only tokens after the last EOT count.
    pub(crate) fn after(tokens: &[u32]) -> History {
        let mut history = History::START;
        for &token in &tokens[tokens.len().saturating_sub(3)..] {
            history.push(token);
        }
        history
    }

    #[inline]
    pub(crate) fn push(&mut self, token: u32) {
        if token == EOT_TOKEN {
            *self = History::START;
        } else {
            let symbol = if token < 256 { token as u16 } else { UNKNOWN };
            self.0 = [self.0[1], self.0[2], symbol];
        }
    }

    #[inline]
    fn key3(&self) -> u32 {
        (u32::from(self.0[0]) << 18) | (u32::from(self.0[1]) << 9) | u32::from(self.0[2])
    }

    #[inline]
    fn key2(&self) -> usize {
        usize::from(self.0[1]) * SYMBOLS + usize::from(self.0[2])
    }
}

/// A byte-level 4-gram language model with every next-token distribution precomputed.
///
/// Immutable after construction, so one model can be shared by any number of threads.
pub struct NgramModel {
    /// `cdf[t * VOCAB_SIZE + i]` = sum of the masses of tokens `0..=i` in table `t`.
    cdf: Vec<u32>,
    /// `logp[t * VOCAB_SIZE + i]` = ln(mass_i / 2^31), the model's log-probability.
    logp: Vec<f32>,
    by_last3: HashMap<u32, u32, BuildHasherDefault<MulHasher>>,
    by_last2: Vec<u32>,
    by_last1: [u32; SYMBOLS],
    unigram_table: u32,
    /// Reshaped tables for recent sampling settings (see [`crate::shaping`]).
    shaped: ShapedCache,
}

impl std::fmt::Debug for NgramModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NgramModel").field("tables", &self.table_count()).finish()
    }
}

impl NgramModel {
    /// Train a model on `corpus` (any bytes; blank lines separate documents).
    pub fn from_corpus(corpus: &[u8]) -> NgramModel {
        let counts = Counts::from_corpus(corpus);
        counts.into_model()
    }

    /// The model trained on the embedded corpus, built on first use and shared afterwards.
    pub fn default_model() -> &'static NgramModel {
        static MODEL: OnceLock<NgramModel> = OnceLock::new();
        MODEL.get_or_init(|| NgramModel::from_corpus(DEFAULT_CORPUS))
    }

    /// Number of precomputed distributions (contexts) in the model.
    pub fn table_count(&self) -> usize {
        self.cdf.len() / VOCAB_SIZE
    }

    /// The table to use after `history`: the longest stored suffix.
    #[inline]
    pub(crate) fn table_for(&self, history: &History) -> usize {
        if let Some(&t) = self.by_last3.get(&history.key3()) {
            return t as usize;
        }
        let t = self.by_last2[history.key2()];
        if t != NO_TABLE {
            return t as usize;
        }
        let t = self.by_last1[usize::from(history.0[2])];
        if t != NO_TABLE {
            return t as usize;
        }
        self.unigram_table as usize
    }

    pub(crate) fn shaped_cache(&self) -> &ShapedCache {
        &self.shaped
    }

    #[inline]
    pub(crate) fn cdf(&self, table: usize) -> &[u32] {
        &self.cdf[table * VOCAB_SIZE..(table + 1) * VOCAB_SIZE]
    }

    #[inline]
    pub(crate) fn logp(&self, table: usize) -> &[f32] {
        &self.logp[table * VOCAB_SIZE..(table + 1) * VOCAB_SIZE]
    }

    /// The model's own (untempered, unbiased) probabilities in `table`.
    #[cfg(test)]
    pub(crate) fn raw_probabilities(&self, table: usize) -> Vec<f64> {
        probabilities(self.cdf(table))
    }
}

/// Probabilities from cumulative masses (which sum to [`PROB_ONE`]).
pub(crate) fn probabilities(cdf: &[u32]) -> Vec<f64> {
    let mut previous = 0u32;
    cdf.iter()
        .map(|&c| {
            let mass = c - previous;
            previous = c;
            f64::from(mass) / f64::from(PROB_ONE)
        })
        .collect()
}

/// Follower counts for one history.
type Followers = Box<[u32; VOCAB_SIZE]>;

/// N-gram counts at every order, the training-time representation.
struct Counts {
    unigram: [u32; VOCAB_SIZE],
    /// Keyed by the last symbol.
    last1: HashMap<u16, Followers>,
    /// Keyed by `History::key2`.
    last2: HashMap<usize, Followers>,
    /// Keyed by `History::key3`.
    last3: HashMap<u32, Followers>,
}

fn add(map_entry: &mut Followers, token: u32) {
    map_entry[token as usize] += 1;
}

impl Counts {
    fn from_corpus(corpus: &[u8]) -> Counts {
        let mut counts = Counts {
            unigram: [0; VOCAB_SIZE],
            last1: HashMap::new(),
            last2: HashMap::new(),
            last3: HashMap::new(),
        };
        let empty = || Box::new([0u32; VOCAB_SIZE]);
        for document in split_documents(corpus) {
            let mut history = History::START;
            let tokens = document.iter().map(|&b| u32::from(b)).chain([EOT_TOKEN]);
            for token in tokens {
                counts.unigram[token as usize] += 1;
                add(counts.last1.entry(history.0[2]).or_insert_with(empty), token);
                add(counts.last2.entry(history.key2()).or_insert_with(empty), token);
                add(counts.last3.entry(history.key3()).or_insert_with(empty), token);
                history.push(token);
            }
        }
        counts
    }

    fn into_model(self) -> NgramModel {
        let mut builder = TableBuilder::default();

        let unigram = interpolate(&self.unigram, &[1.0 / VOCAB_SIZE as f64; VOCAB_SIZE]);
        let unigram_table = builder.push(&unigram);

        let mut by_last1 = [NO_TABLE; SYMBOLS];
        let mut p1 = HashMap::new();
        for (&symbol, followers) in &self.last1 {
            let p = interpolate(followers, &unigram);
            by_last1[usize::from(symbol)] = builder.push(&p);
            p1.insert(symbol, p);
        }

        let mut by_last2 = vec![NO_TABLE; SYMBOLS * SYMBOLS];
        let mut p2 = HashMap::new();
        for (&key, followers) in &self.last2 {
            let lower = &p1[&((key % SYMBOLS) as u16)];
            let p = interpolate(followers, lower);
            by_last2[key] = builder.push(&p);
            p2.insert(key, p);
        }

        let mut by_last3 = HashMap::default();
        // Sorted so table numbering (and thus memory layout) is reproducible.
        let mut keys3: Vec<u32> = self.last3.keys().copied().collect();
        keys3.sort_unstable();
        for key in keys3 {
            let followers = &self.last3[&key];
            if followers.iter().sum::<u32>() < MIN_LONGEST_CONTEXT_COUNT {
                continue;
            }
            let lower = &p2[&suffix_key2(key)];
            let p = interpolate(followers, lower);
            by_last3.insert(key, builder.push(&p));
        }

        NgramModel {
            cdf: builder.cdf,
            logp: builder.logp,
            by_last3,
            by_last2,
            by_last1,
            unigram_table,
            shaped: ShapedCache::default(),
        }
    }
}

/// The `key2` of the last two symbols of a 3-symbol key.
fn suffix_key2(key3: u32) -> usize {
    let last2 = (key3 & ((1 << 18) - 1)) as usize;
    (last2 >> 9) * SYMBOLS + (last2 & 511)
}

/// Witten-Bell: mix the empirical follower distribution with `lower` by the number of
/// distinct followers. With no counts at all the result is `lower` itself.
fn interpolate(followers: &[u32; VOCAB_SIZE], lower: &[f64; VOCAB_SIZE]) -> [f64; VOCAB_SIZE] {
    let total: f64 = followers.iter().map(|&c| f64::from(c)).sum();
    let distinct = followers.iter().filter(|&&c| c > 0).count() as f64;
    let denominator = total + distinct;
    let mut p = [0f64; VOCAB_SIZE];
    for (i, slot) in p.iter_mut().enumerate() {
        *slot = if denominator > 0.0 {
            (f64::from(followers[i]) + distinct * lower[i]) / denominator
        } else {
            lower[i]
        };
    }
    p
}

/// Accumulates quantised tables.
#[derive(Default)]
struct TableBuilder {
    cdf: Vec<u32>,
    logp: Vec<f32>,
}

impl TableBuilder {
    /// Quantise `p` and append it; returns the table index.
    fn push(&mut self, p: &[f64; VOCAB_SIZE]) -> u32 {
        let masses = quantise(p);
        let index = (self.cdf.len() / VOCAB_SIZE) as u32;
        let mut running = 0u32;
        for &mass in &masses {
            running += mass;
            self.cdf.push(running);
            self.logp.push((f64::from(mass) / f64::from(PROB_ONE)).ln() as f32);
        }
        debug_assert_eq!(running, PROB_ONE);
        index
    }
}

/// Integer masses proportional to `p`, each at least `FLOOR_MASS`, summing to `PROB_ONE`.
fn quantise(p: &[f64; VOCAB_SIZE]) -> [u32; VOCAB_SIZE] {
    let spread = f64::from(PROB_ONE - FLOOR_MASS * VOCAB_SIZE as u32);
    let total: f64 = p.iter().sum();
    let mut masses = [0u32; VOCAB_SIZE];
    for (mass, &pi) in masses.iter_mut().zip(p) {
        *mass = FLOOR_MASS + (spread * pi / total).floor() as u32;
    }
    // Rounding down leaves a small remainder; give it to the most likely token.
    let assigned: u64 = masses.iter().map(|&m| u64::from(m)).sum();
    let top = (0..VOCAB_SIZE).max_by_key(|&i| (masses[i], std::cmp::Reverse(i))).unwrap_or(0);
    masses[top] += (u64::from(PROB_ONE) - assigned) as u32;
    masses
}

/// Documents are separated by blank lines; surrounding whitespace is trimmed.
fn split_documents(corpus: &[u8]) -> Vec<&[u8]> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < corpus.len() {
        if corpus[i] == b'\n' && corpus[i + 1] == b'\n' {
            documents.push(&corpus[start..i]);
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    documents.push(&corpus[start.min(corpus.len())..]);
    documents.into_iter().map(<[u8]>::trim_ascii).filter(|d| !d.is_empty()).collect()
}

/// A multiplicative hasher for the `u32` history keys: much cheaper than SipHash, and the
/// keys come from our own corpus, not from an adversary.
#[derive(Default)]
pub(crate) struct MulHasher(u64);

impl Hasher for MulHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
    }

    fn write_u32(&mut self, key: u32) {
        // High bits of the product are well mixed; hashbrown uses the top 7 bits as a tag.
        self.0 = u64::from(key).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_a_full_distribution_with_a_floor() {
        let model = NgramModel::default_model();
        assert!(model.table_count() > 1000, "{} tables", model.table_count());
        for t in 0..model.table_count() {
            let cdf = model.cdf(t);
            assert_eq!(cdf[VOCAB_SIZE - 1], PROB_ONE);
            let mut previous = 0;
            for &c in cdf {
                assert!(c - previous >= FLOOR_MASS);
                previous = c;
            }
        }
    }

    #[test]
    fn history_keeps_tokens_after_last_eot() {
        assert_eq!(History::after(&[]), History::START);
        assert_eq!(History::after(&[1, 2, 3, 4]), History([2, 3, 4]));
        assert_eq!(History::after(&[1, 2, EOT_TOKEN, 4]), History([BOUNDARY, BOUNDARY, 4]));
        assert_eq!(History::after(&[7, 8, EOT_TOKEN]), History::START);
        assert_eq!(History::after(&[1, 999]), History([BOUNDARY, 1, UNKNOWN]));
    }

    #[test]
    fn unknown_history_backs_off_to_unigram() {
        let model = NgramModel::default_model();
        let history = History([UNKNOWN, UNKNOWN, UNKNOWN]);
        assert_eq!(model.table_for(&history), model.unigram_table as usize);
    }

    #[test]
    fn model_learns_the_corpus() {
        let model = NgramModel::default_model();
        // "th" is almost always followed by "e" in English prose.
        let p = model.raw_probabilities(model.table_for(&History::after(&[32, 116, 104])));
        let best = (0..VOCAB_SIZE).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert_eq!(best, b'e' as usize);
        assert!(p[b'e' as usize] > 0.5);
    }

    #[test]
    fn documents_split_at_blank_lines() {
        assert_eq!(split_documents(b"a b\nc\n\n\n d \n\n"), vec![&b"a b\nc"[..], &b"d"[..]]);
        assert!(split_documents(b"").is_empty());
    }

    #[test]
    fn empty_corpus_gives_uniform_model() {
        let model = NgramModel::from_corpus(b"");
        let p = model.raw_probabilities(model.table_for(&History::START));
        assert!(p.iter().all(|&x| (x - 1.0 / VOCAB_SIZE as f64).abs() < 1e-6));
    }
}
