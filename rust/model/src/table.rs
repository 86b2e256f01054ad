//! [`MassTable`]: the one representation of a next-token distribution, as integer masses
//! summing to exactly 2^31, laid out so that drawing a token touches two cache lines.

use crate::VOCAB_SIZE;

/// The quantised probability of 1: the masses of one distribution sum to exactly this.
pub(crate) const PROB_ONE: u32 = 1 << 31;

/// Tokens per block: 16 `u32`s fill one 64-byte cache line.
const BLOCK: usize = 16;
/// Blocks of cumulative masses per table (the last holds only the EOT token).
const BLOCKS: usize = VOCAB_SIZE.div_ceil(BLOCK);

/// Cumulative masses plus a one-line summary of every block's end. Drawing scans the
/// summary line to find the block, then the block's line to find the token: two cache
/// lines, where a binary search over 257 entries would touch five or six. Memory latency,
/// not arithmetic, dominates sampling from thousands of tables.
#[derive(Clone)]
#[repr(C, align(64))]
pub(crate) struct MassTable {
    /// `block_ends[j]` = cumulative mass through the last token of block `j`.
    block_ends: [u32; BLOCK],
    /// `cumulative[i]` = masses of tokens `0..=i`; padded with `PROB_ONE`.
    cumulative: [u32; BLOCKS * BLOCK],
}

impl MassTable {
    /// Build from masses that sum to exactly [`PROB_ONE`].
    pub(crate) fn from_masses(masses: &[u32; VOCAB_SIZE]) -> MassTable {
        let mut cumulative = [PROB_ONE; BLOCKS * BLOCK];
        let mut running = 0u32;
        for (c, &m) in cumulative.iter_mut().zip(masses) {
            running += m;
            *c = running;
        }
        debug_assert_eq!(running, PROB_ONE);
        let mut block_ends = [PROB_ONE; BLOCK];
        for (j, end) in block_ends.iter_mut().enumerate() {
            *end = cumulative[j * BLOCK + BLOCK - 1];
        }
        MassTable { block_ends, cumulative }
    }

    /// The token whose cumulative range contains `r` (uniform in `[0, PROB_ONE)`): token
    /// `i` is drawn with probability `mass(i) / 2^31` exactly.
    #[inline]
    pub(crate) fn draw(&self, r: u32) -> usize {
        // Counting (rather than searching) is branch-free and vectorises.
        let block = self.block_ends.iter().filter(|&&end| end <= r).count();
        let start = block * BLOCK;
        let within = self.cumulative[start..start + BLOCK].iter().filter(|&&c| c <= r).count();
        start + within
    }

    /// The mass of `token`.
    #[inline]
    pub(crate) fn mass(&self, token: usize) -> u32 {
        self.cumulative[token] - if token == 0 { 0 } else { self.cumulative[token - 1] }
    }

    /// `ln(mass(token) / 2^31)`.
    #[inline]
    pub(crate) fn ln_probability(&self, token: usize) -> f64 {
        (f64::from(self.mass(token)) / f64::from(PROB_ONE)).ln()
    }

    /// All probabilities, `mass / 2^31`.
    pub(crate) fn probabilities(&self) -> Vec<f64> {
        (0..VOCAB_SIZE).map(|i| f64::from(self.mass(i)) / f64::from(PROB_ONE)).collect()
    }

    /// All log-probabilities (`-inf` for zero masses), as `f32`.
    pub(crate) fn log_probabilities(&self) -> [f32; VOCAB_SIZE] {
        let mut logp = [0f32; VOCAB_SIZE];
        for (i, lp) in logp.iter_mut().enumerate() {
            *lp = self.ln_probability(i) as f32;
        }
        logp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draw_inverts_the_cumulative_masses() {
        let mut masses = [0u32; VOCAB_SIZE];
        masses[0] = 10;
        masses[15] = 5;
        masses[16] = 1;
        masses[200] = 7;
        masses[VOCAB_SIZE - 1] = PROB_ONE - 23;
        let table = MassTable::from_masses(&masses);
        assert_eq!(table.draw(0), 0);
        assert_eq!(table.draw(9), 0);
        assert_eq!(table.draw(10), 15);
        assert_eq!(table.draw(14), 15);
        assert_eq!(table.draw(15), 16);
        assert_eq!(table.draw(16), 200);
        assert_eq!(table.draw(22), 200);
        assert_eq!(table.draw(23), VOCAB_SIZE - 1);
        assert_eq!(table.draw(PROB_ONE - 1), VOCAB_SIZE - 1);
        assert_eq!(table.mass(15), 5);
        assert_eq!(table.mass(1), 0);
        assert_eq!(table.probabilities().iter().sum::<f64>(), 1.0);
        assert_eq!(std::mem::size_of::<MassTable>(), 18 * 64);
    }

    #[test]
    fn draw_matches_a_linear_scan_everywhere() {
        let mut masses = [0u32; VOCAB_SIZE];
        let mut left = PROB_ONE;
        for (i, m) in masses.iter_mut().enumerate().take(VOCAB_SIZE - 1) {
            *m = ((i as u32 * 7919) % 1000) * 1000;
            left -= *m;
        }
        masses[VOCAB_SIZE - 1] = left;
        let table = MassTable::from_masses(&masses);
        let mut r = 0u32;
        while r < PROB_ONE {
            let mut running = 0u32;
            let expected = (0..VOCAB_SIZE)
                .find(|&i| {
                    running += masses[i];
                    running > r
                })
                .unwrap();
            assert_eq!(table.draw(r), expected, "r = {r}");
            r += 99_991;
        }
    }
}
