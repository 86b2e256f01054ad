//! The byte-level n-gram model and its precomputed distribution tables.
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
//! One distribution is stored per context: every history of 3 to [`CONTEXT_LEN`] symbols
//! seen at least [`MIN_LONG_CONTEXT_COUNT`] times, every 2- and 1-symbol history, and the
//! empty one.
//! A lookup uses the longest stored suffix of the current history, so rare or unseen
//! histories (including unknown token ids in a prompt) back off to shorter ones.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use crate::shaping::ShapedCache;
use crate::table::{MassTable, PROB_ONE};
use crate::{EOT_TOKEN, VOCAB_SIZE};

/// The smallest mass of any token in any context (the uniform floor): 512 / 2^31.
pub const FLOOR_MASS: u32 = 512;
/// How many previous tokens the model conditions on (an n-gram model with n = this + 1).
pub const CONTEXT_LEN: usize = 4;
/// Histories of 3 or more symbols seen fewer times than this back off to a shorter suffix;
/// this keeps the tables small and stops the model reciting one-off corpus passages.
pub const MIN_LONG_CONTEXT_COUNT: u32 = 2;

// A history holds 258 symbols: the 256 bytes, then these two.
/// Before the start of a document (and right after an [`EOT_TOKEN`]).
const BOUNDARY: u16 = 256;
/// A prompt token id that is neither a byte nor EOT: never seen in training.
const UNKNOWN: u16 = 257;

static DEFAULT_CORPUS: &[u8] = include_bytes!("../corpus.txt");

/// The last [`CONTEXT_LEN`] symbols of a token stream, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct History([u16; CONTEXT_LEN]);

impl History {
    pub(crate) const START: History = History([BOUNDARY; CONTEXT_LEN]);

    /// The history at the end of `tokens`: only tokens after the last EOT count.
    pub(crate) fn after(tokens: &[u32]) -> History {
        let mut history = History::START;
        for &token in &tokens[tokens.len().saturating_sub(CONTEXT_LEN)..] {
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
            self.0.copy_within(1.., 0);
            self.0[CONTEXT_LEN - 1] = symbol;
        }
    }

    /// The last `k` symbols packed 9 bits each, the newest in the low bits.
    #[inline]
    fn key(&self, k: usize) -> u64 {
        self.0[CONTEXT_LEN - k..].iter().fold(0u64, |key, &s| (key << SYMBOL_BITS) | u64::from(s))
    }
}

/// Bits per symbol in a packed history key (258 symbols fit in 9 bits).
const SYMBOL_BITS: u32 = 9;

/// The key of the newest `k` symbols of a packed key.
fn suffix_key(key: u64, k: usize) -> u64 {
    key & ((1u64 << (SYMBOL_BITS as usize * k)) - 1)
}

type TableIndex = HashMap<u64, u32, BuildHasherDefault<MulHasher>>;

/// A byte-level n-gram model with every next-token distribution precomputed.
///
/// Immutable after construction (apart from an internal cache), so one model can be
/// shared by any number of threads.
pub struct NgramModel {
    /// One distribution per stored history (and one for the empty history).
    tables: Vec<MassTable>,
    /// `by_length[k - 1]` maps a packed `k`-symbol history to its table.
    by_length: Vec<TableIndex>,
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
        let mut model = Counts::from_corpus(corpus).into_model();
        model.order_tables_by_use(corpus);
        model
    }

    /// The model trained on the embedded corpus, built on first use and shared afterwards.
    pub fn default_model() -> &'static NgramModel {
        static MODEL: OnceLock<NgramModel> = OnceLock::new();
        MODEL.get_or_init(|| NgramModel::from_corpus(DEFAULT_CORPUS))
    }

    /// Number of precomputed distributions (contexts) in the model.
    pub fn table_count(&self) -> usize {
        self.tables.len()
    }

    /// The table to use after `history`: that of its longest stored suffix.
    #[inline]
    pub(crate) fn table_for(&self, history: &History) -> usize {
        for k in (1..=CONTEXT_LEN).rev() {
            if let Some(&t) = self.by_length[k - 1].get(&history.key(k)) {
                return t as usize;
            }
        }
        self.unigram_table as usize
    }

    /// Renumber the tables so that those the corpus uses most sit together in memory:
    /// sampling touches a new table per token, and most of them then stay in cache.
    fn order_tables_by_use(&mut self, corpus: &[u8]) {
        let mut uses = vec![0u64; self.table_count()];
        for document in split_documents(corpus) {
            let mut history = History::START;
            for token in document.iter().map(|&b| u32::from(b)).chain([EOT_TOKEN]) {
                uses[self.table_for(&history)] += 1;
                history.push(token);
            }
        }
        let mut order: Vec<usize> = (0..self.table_count()).collect();
        order.sort_by_key(|&t| (std::cmp::Reverse(uses[t]), t));
        let mut new_index = vec![0u32; order.len()];
        for (position, &old) in order.iter().enumerate() {
            new_index[old] = position as u32;
        }
        self.tables = order.iter().map(|&old| self.tables[old].clone()).collect();
        for index in &mut self.by_length {
            for table in index.values_mut() {
                *table = new_index[*table as usize];
            }
        }
        self.unigram_table = new_index[self.unigram_table as usize];
    }

    pub(crate) fn shaped_cache(&self) -> &ShapedCache {
        &self.shaped
    }

    /// The model's own distribution for `table`.
    #[inline]
    pub(crate) fn table(&self, table: usize) -> &MassTable {
        &self.tables[table]
    }
}

/// Follower counts for one history.
type Followers = Box<[u32; VOCAB_SIZE]>;

/// N-gram counts at every order, the training-time representation.
struct Counts {
    unigram: [u32; VOCAB_SIZE],
    /// `by_length[k - 1]`: follower counts keyed by packed `k`-symbol histories.
    by_length: Vec<HashMap<u64, Followers>>,
}

impl Counts {
    fn from_corpus(corpus: &[u8]) -> Counts {
        let mut counts = Counts { unigram: [0; VOCAB_SIZE], by_length: vec![HashMap::new(); CONTEXT_LEN] };
        for document in split_documents(corpus) {
            let mut history = History::START;
            for token in document.iter().map(|&b| u32::from(b)).chain([EOT_TOKEN]) {
                counts.unigram[token as usize] += 1;
                for (k, level) in (1..=CONTEXT_LEN).zip(&mut counts.by_length) {
                    level.entry(history.key(k)).or_insert_with(|| Box::new([0; VOCAB_SIZE]))[token as usize] += 1;
                }
                history.push(token);
            }
        }
        counts
    }

    fn into_model(self) -> NgramModel {
        let mut builder = TableBuilder::default();
        let unigram = interpolate(&self.unigram, &[1.0 / VOCAB_SIZE as f64; VOCAB_SIZE]);
        let unigram_table = builder.push(&unigram);

        let mut by_length = Vec::with_capacity(CONTEXT_LEN);
        // Distributions of the previous (one shorter) history length, for interpolation.
        let mut shorter: HashMap<u64, Box<[f64; VOCAB_SIZE]>> = HashMap::new();
        for (k, level) in (1..=CONTEXT_LEN).zip(&self.by_length) {
            let mut index = TableIndex::default();
            let mut current = HashMap::new();
            // Sorted so table numbering is reproducible.
            let mut keys: Vec<u64> = level.keys().copied().collect();
            keys.sort_unstable();
            for key in keys {
                let followers = &level[&key];
                if k >= 3 && followers.iter().sum::<u32>() < MIN_LONG_CONTEXT_COUNT {
                    continue;
                }
                // A stored history's suffix is always stored: it was seen at least as often.
                let lower = if k == 1 { &unigram } else { &*shorter[&suffix_key(key, k - 1)] };
                let p = interpolate(followers, lower);
                index.insert(key, builder.push(&p));
                current.insert(key, Box::new(p));
            }
            by_length.push(index);
            shorter = current;
        }

        NgramModel { tables: builder.tables, by_length, unigram_table, shaped: ShapedCache::default() }
    }
}

/// Witten-Bell: mix the empirical follower distribution with `lower` by the number of
/// distinct followers. With no counts at all the result is `lower` itself.
fn interpolate(followers: &[u32; VOCAB_SIZE], lower: &[f64; VOCAB_SIZE]) -> [f64; VOCAB_SIZE] {
    let total: f64 = followers.iter().map(|&c| f64::from(c)).sum();
    let distinct = followers.iter().filter(|&&c| c > 0).count() as f64;
    let denominator = total + distinct;
    let mut p = [0f64; VOCAB_SIZE];
    for (i, slot) in p.iter_mut().enumerate() {
        *slot = if denominator > 0.0 { (f64::from(followers[i]) + distinct * lower[i]) / denominator } else { lower[i] };
    }
    p
}

/// Accumulates quantised tables.
#[derive(Default)]
struct TableBuilder {
    tables: Vec<MassTable>,
}

impl TableBuilder {
    /// Quantise `p` and append it; returns the table index.
    fn push(&mut self, p: &[f64; VOCAB_SIZE]) -> u32 {
        self.tables.push(MassTable::from_masses(&quantise(p)));
        (self.tables.len() - 1) as u32
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
            let table = model.table(t);
            let total: u64 = (0..VOCAB_SIZE).map(|i| u64::from(table.mass(i))).sum();
            assert_eq!(total, u64::from(PROB_ONE));
            assert!((0..VOCAB_SIZE).all(|i| table.mass(i) >= FLOOR_MASS));
        }
    }

    fn padded(symbols: &[u16]) -> History {
        let mut history = [BOUNDARY; CONTEXT_LEN];
        history[CONTEXT_LEN - symbols.len()..].copy_from_slice(symbols);
        History(history)
    }

    #[test]
    fn history_keeps_tokens_after_last_eot() {
        assert_eq!(History::after(&[]), History::START);
        let long: Vec<u32> = (1..=10).collect();
        let tail: Vec<u16> = (11 - CONTEXT_LEN as u16..=10).collect();
        assert_eq!(History::after(&long), padded(&tail));
        assert_eq!(History::after(&[1, 2, EOT_TOKEN, 4]), padded(&[4]));
        assert_eq!(History::after(&[7, 8, EOT_TOKEN]), History::START);
        assert_eq!(History::after(&[1, 999]), padded(&[1, UNKNOWN]));
    }

    #[test]
    fn unknown_history_backs_off_to_unigram() {
        let model = NgramModel::default_model();
        assert_eq!(model.table_for(&padded(&[b'a'.into(), UNKNOWN])), model.unigram_table as usize);
        // An unknown id further back only shortens the usable history.
        let th = padded(&[116, 104]);
        let th_table = model.by_length[1][&th.key(2)] as usize;
        assert_eq!(model.table_for(&History::after(&[999, 116, 104])), th_table);
    }

    #[test]
    fn model_learns_the_corpus() {
        let model = NgramModel::default_model();
        // "th" is almost always followed by "e" in English prose.
        let p = model.table(model.table_for(&History::after(&[32, 116, 104]))).probabilities();
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
        let p = model.table(model.table_for(&History::START)).probabilities();
        assert!(p.iter().all(|&x| (x - 1.0 / VOCAB_SIZE as f64).abs() < 1e-6));
    }
}
