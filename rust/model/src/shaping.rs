//! Reshaping a context's distribution by an adapter bias, temperature and top-p, and a
//! cache of reshaped tables per sampling setting.
//!
//! # The reshaped distribution
//! With model log-probabilities `lp_i` for the context and adapter bias `b_i` (zero
//! without an adapter):
//!
//! 1. logits `z_i = lp_i + b_i`;
//! 2. temperature `T > 0`: weights `w_i = exp((z_i - max_j z_j) / T)`, computed in `f32`
//!    (weights below `e^-87` relative to the top token are exactly 0);
//! 3. top-p `p < 1`: keep the smallest set of highest-weight tokens whose weight reaches
//!    `p` times the total (ties broken towards lower ids, at least one token), zero the rest;
//! 4. normalise and quantise to integer masses summing to exactly 2^31 (rounding down,
//!    the remainder going to the most likely token): `q_i = mass_i / 2^31`.
//!
//! `q` is *the* distribution: tokens are drawn from it exactly (31 random bits against
//! the cumulative masses) and their logprob is `ln q_token`. Greedy decoding (`T <= 0`)
//! is the point mass on the argmax of `z` (lowest id on ties).
//!
//! # Why a cache
//! Steps 1-4 cost a pass over all 257 logits (plus a small sort for top-p) per token, ten
//! times the cost of a plain table lookup. Servers tend to reuse a handful of settings
//! (one temperature, one top-p, one adapter), so the reshaped table of each (setting,
//! context) is computed on first use and kept: the model's cache holds up to
//! [`MAX_CACHED_SETTINGS`] settings, each filling at most one table per model context
//! (~1 KB each). The result is identical with or without the cache.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use crate::math::{exp_nonpositive, max_f32, sum_f64};
use crate::ngram::NgramModel;
use crate::table::{MassTable, PROB_ONE};
use crate::VOCAB_SIZE;

/// How many sampling settings keep their reshaped tables; the oldest setting is dropped
/// when a new one arrives. Bounds the cache at roughly this many times the model size.
pub const MAX_CACHED_SETTINGS: usize = 16;

/// Temperature / top-p part of a sampling setting.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shaping {
    Greedy,
    Tempered { inv_temperature: f32, top_p: f64 },
}

/// Everything besides the context that determines a reshaped distribution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape<'a> {
    shaping: Shaping,
    bias: Option<&'a [f32; VOCAB_SIZE]>,
    /// Identifies `bias` for caching (the adapter's weight fingerprint).
    bias_id: Option<u64>,
}

impl<'a> Shape<'a> {
    /// The setting for these request parameters, or `None` when they leave the model's
    /// distribution unchanged (`T == 1`, `top_p >= 1`, no active bias).
    pub(crate) fn new(temperature: f64, top_p: f64, bias: Option<(&'a [f32; VOCAB_SIZE], u64)>) -> Option<Self> {
        let (bias, bias_id) = match bias {
            Some((b, id)) => (Some(b), Some(id)),
            None => (None, None),
        };
        let shaping = if temperature.is_nan() || temperature <= 0.0 {
            Shaping::Greedy
        } else {
            // NaN or <= 0 keeps only the top token; >= 1 disables top-p.
            let top_p = if top_p.is_nan() { 0.0 } else { top_p.clamp(0.0, 1.0) };
            if temperature == 1.0 && top_p == 1.0 && bias.is_none() {
                return None;
            }
            // Capped so that (z - max) * inv_temperature never computes 0 * inf for tiny T.
            Shaping::Tempered { inv_temperature: (1.0 / temperature).min(1e30) as f32, top_p }
        };
        Some(Shape { shaping, bias, bias_id })
    }

    fn key(&self) -> ShapeKey {
        let (inv_temperature_bits, top_p_bits) = match self.shaping {
            Shaping::Greedy => (None, 0),
            Shaping::Tempered { inv_temperature, top_p } => (Some(inv_temperature.to_bits()), top_p.to_bits()),
        };
        ShapeKey { inv_temperature_bits, top_p_bits, bias_id: self.bias_id }
    }

    /// The reshaped distribution of one model table.
    pub(crate) fn table(&self, model: &NgramModel, table: usize) -> MassTable {
        let z = logits(model, table, self.bias);
        let masses = match self.shaping {
            Shaping::Greedy => {
                let mut masses = [0u32; VOCAB_SIZE];
                masses[argmax(&z)] = PROB_ONE;
                masses
            }
            Shaping::Tempered { inv_temperature, top_p } => {
                let mut weights = tempered_weights(&z, inv_temperature);
                let mut total = sum_f64(&weights);
                if top_p < 1.0 {
                    total = keep_nucleus(&mut weights, total, top_p);
                }
                quantise(&weights, total)
            }
        };
        MassTable::from_masses(&masses)
    }
}

/// Model log-probabilities plus the adapter bias.
fn logits(model: &NgramModel, table: usize, bias: Option<&[f32; VOCAB_SIZE]>) -> [f32; VOCAB_SIZE] {
    let mut z = model.table(table).log_probabilities();
    if let Some(bias) = bias {
        for (zi, bi) in z.iter_mut().zip(bias) {
            *zi += bi;
        }
    }
    z
}

/// Index of the largest value, lowest index on ties.
fn argmax(values: &[f32; VOCAB_SIZE]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// `exp((z_i - max z) / T)`, the unnormalised tempered weights.
fn tempered_weights(z: &[f32; VOCAB_SIZE], inv_temperature: f32) -> [f32; VOCAB_SIZE] {
    let max = max_f32(z);
    let mut weights = [0f32; VOCAB_SIZE];
    for (w, &zi) in weights.iter_mut().zip(z) {
        *w = exp_nonpositive((zi - max) * inv_temperature);
    }
    weights
}

/// Zero every weight outside the top-p nucleus; returns the nucleus' total weight.
///
/// Only tokens with weight `>= (1 - p) * total / V` can be in the nucleus: the lighter ones
/// together weigh less than `(1 - p) * total`, so the heavier ones alone already reach
/// `p * total`. Sorting just those candidates keeps this cheap for peaked distributions.
fn keep_nucleus(weights: &mut [f32; VOCAB_SIZE], total: f64, top_p: f64) -> f64 {
    let needed = top_p * total;
    let cutoff = ((1.0 - top_p) * total / VOCAB_SIZE as f64) as f32;
    let mut candidates: Vec<(f32, u16)> =
        weights.iter().enumerate().filter(|&(_, &w)| w >= cutoff && w > 0.0).map(|(i, &w)| (w, i as u16)).collect();
    candidates.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));

    let mut keep = [false; VOCAB_SIZE];
    let mut kept = 0.0f64;
    for &(w, i) in &candidates {
        keep[usize::from(i)] = true;
        kept += f64::from(w);
        if kept >= needed {
            break;
        }
    }
    for (w, &k) in weights.iter_mut().zip(&keep) {
        if !k {
            *w = 0.0;
        }
    }
    sum_f64(weights)
}

/// Integer masses `floor(w_i / total * 2^31)`, the remainder going to the heaviest token,
/// so they sum to exactly 2^31. Zero weights stay zero.
fn quantise(weights: &[f32; VOCAB_SIZE], total: f64) -> [u32; VOCAB_SIZE] {
    let scale = f64::from(PROB_ONE) / total;
    let mut masses = [0u32; VOCAB_SIZE];
    let mut assigned = 0u64;
    for (m, &w) in masses.iter_mut().zip(weights) {
        *m = (f64::from(w) * scale).floor().min(f64::from(PROB_ONE)) as u32;
        assigned += u64::from(*m);
    }
    let heaviest = argmax(weights);
    let remainder = u64::from(PROB_ONE).saturating_sub(assigned);
    masses[heaviest] += remainder as u32;
    // Float rounding could in principle over-assign by a few units; take them back from
    // the heaviest token, which holds almost all of the mass anyway.
    let excess = assigned.saturating_sub(u64::from(PROB_ONE)) as u32;
    masses[heaviest] -= excess.min(masses[heaviest]);
    masses
}

/// Identity of a sampling setting (bit patterns, so equal settings compare equal exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ShapeKey {
    inv_temperature_bits: Option<u32>,
    top_p_bits: u64,
    bias_id: Option<u64>,
}

/// The reshaped tables of one setting, one lazily filled slot per model table.
pub(crate) struct ShapedTables {
    tables: Box<[OnceLock<Box<MassTable>>]>,
}

impl ShapedTables {
    fn new(table_count: usize) -> Self {
        ShapedTables { tables: (0..table_count).map(|_| OnceLock::new()).collect() }
    }

    /// The reshaped distribution of `table`, computed on first use.
    #[inline]
    pub(crate) fn table(&self, model: &NgramModel, shape: &Shape<'_>, table: usize) -> &MassTable {
        self.tables[table].get_or_init(|| Box::new(shape.table(model, table)))
    }
}

/// Reshaped tables for the most recent [`MAX_CACHED_SETTINGS`] sampling settings.
#[derive(Default)]
pub(crate) struct ShapedCache {
    entries: RwLock<Vec<(ShapeKey, Arc<ShapedTables>)>>,
}

impl ShapedCache {
    /// The (possibly still empty) tables of `shape`'s setting.
    pub(crate) fn tables(&self, shape: &Shape<'_>, table_count: usize) -> Arc<ShapedTables> {
        let key = shape.key();
        let find = |entries: &[(ShapeKey, Arc<ShapedTables>)]| entries.iter().find(|(k, _)| *k == key).map(|(_, t)| Arc::clone(t));
        if let Some(found) = find(&self.entries.read().unwrap_or_else(PoisonError::into_inner)) {
            return found;
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = find(&entries) {
            return found;
        }
        if entries.len() >= MAX_CACHED_SETTINGS {
            // Requests still holding the evicted Arc keep using it.
            entries.remove(0);
        }
        let tables = Arc::new(ShapedTables::new(table_count));
        entries.push((key, Arc::clone(&tables)));
        tables
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nucleus_keeps_smallest_top_set() {
        let mut w = [0f32; VOCAB_SIZE];
        // Exactly representable weights so the boundary case is exact.
        w[3] = 0.5;
        w[7] = 0.25;
        w[9] = 0.125;
        w[11] = 0.125;
        let total = sum_f64(&w);
        let kept = keep_nucleus(&mut w, total, 0.75);
        assert_eq!(kept, 0.75);
        assert!(w[3] > 0.0 && w[7] > 0.0 && w[9] == 0.0 && w[11] == 0.0);
    }

    #[test]
    fn nucleus_ties_prefer_lower_ids_and_keep_one_token() {
        let mut w = [1f32; VOCAB_SIZE];
        let total = sum_f64(&w);
        let kept = keep_nucleus(&mut w, total, 0.0);
        assert_eq!(kept, 1.0);
        assert_eq!(w[0], 1.0);
        assert!(w[1..].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn quantised_masses_sum_exactly() {
        let mut w = [0f32; VOCAB_SIZE];
        for (i, x) in w.iter_mut().enumerate() {
            *x = 1.0 / (1.0 + i as f32);
        }
        w[100] = 0.0;
        let masses = quantise(&w, sum_f64(&w));
        assert_eq!(masses.iter().map(|&m| u64::from(m)).sum::<u64>(), u64::from(PROB_ONE));
        assert_eq!(masses[100], 0);
        assert!(masses[0] > masses[1]);
    }

    #[test]
    fn identity_settings_need_no_shape() {
        assert!(Shape::new(1.0, 1.0, None).is_none());
        assert!(Shape::new(1.0, 1.5, None).is_none());
        assert!(Shape::new(1.0, 0.9, None).is_some());
        assert!(Shape::new(0.0, 1.0, None).is_some());
        assert!(Shape::new(f64::NAN, 1.0, None).is_some());
    }

    #[test]
    fn cache_is_bounded_and_reuses_settings() {
        let cache = ShapedCache::default();
        let a = cache.tables(&Shape::new(0.5, 1.0, None).unwrap(), 4);
        let again = cache.tables(&Shape::new(0.5, 1.0, None).unwrap(), 4);
        assert!(Arc::ptr_eq(&a, &again));
        for i in 0..3 * MAX_CACHED_SETTINGS {
            cache.tables(&Shape::new(0.1 + i as f64 * 0.01, 1.0, None).unwrap(), 4);
        }
        assert_eq!(cache.len(), MAX_CACHED_SETTINGS);
    }
}
