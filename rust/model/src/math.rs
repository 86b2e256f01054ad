//! Small numeric kernels for the per-token sampling loop, written so the compiler can
//! vectorise them (no branches on data, fixed-width accumulators).

/// Below this (natural-log) value a relative weight is flushed to exactly zero: e^-87 is
/// about 1.6e-38, the smallest normal `f32`.
pub(crate) const EXP_FLUSH_BELOW: f32 = -87.0;

/// `e^x` for `x <= 0` in `f32`, accurate to about 2 ulp; `0.0` for `x < EXP_FLUSH_BELOW`
/// (including `-inf`). NaN maps to 0.
///
/// Cody-Waite range reduction `x = n ln2 + r` with `|r| <= ln2/2`, then a degree-6 Taylor
/// polynomial for `e^r`, then `2^n` built directly in the exponent bits. Plain `f32::exp` is
/// a libm call that does not vectorise; this does.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // `x >= -87` is false for NaN, so NaN is flushed too.
    let keep = x >= EXP_FLUSH_BELOW;
    let x = if x > 0.0 {
        0.0
    } else if keep {
        x
    } else {
        EXP_FLUSH_BELOW
    };
    // Round to nearest via the 1.5 * 2^23 trick (|x * log2e| < 2^22 here): the low
    // mantissa bits of `shifted` then hold n = round(x * log2e) as a two's-complement offset.
    let shifted = x * LOG2_E + 12_582_912.0;
    let n = shifted - 12_582_912.0;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n built in the exponent bits with integer ops only (a float->int cast would block
    // vectorisation). n is in [-126, 0], so the biased exponent is in [1, 127]: always normal.
    let biased_exponent = shifted.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127);
    let scale = f32::from_bits(biased_exponent << 23);
    if keep {
        p * scale
    } else {
        0.0
    }
}

/// Maximum of a slice (NaN-free input), with 8 independent lanes so it vectorises.
#[inline]
pub(crate) fn max_f32(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    let mut best = f32::NEG_INFINITY;
    for &v in lanes.iter().chain(chunks.remainder()) {
        if v > best {
            best = v;
        }
    }
    best
}

/// Dot product with 8 independent `f32` lanes (so it vectorises), combined in `f64`.
#[inline]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f64 {
    let mut lanes = [0f32; 8];
    let mut a_chunks = a.chunks_exact(8);
    let mut b_chunks = b.chunks_exact(8);
    for (ca, cb) in (&mut a_chunks).zip(&mut b_chunks) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(ca).zip(cb) {
            *lane += x * y;
        }
    }
    let tail: f64 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(&x, &y)| f64::from(x * y)).sum();
    lanes.iter().map(|&l| f64::from(l)).sum::<f64>() + tail
}

/// Sum of a slice, accumulated in `f64` so the total is exact to ~1e-16 relative.
#[inline]
pub(crate) fn sum_f64(values: &[f32]) -> f64 {
    let mut lanes = [0f64; 4];
    let mut chunks = values.chunks_exact(4);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(v);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f64::from(v)).sum();
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_closely() {
        let mut x = 0.0f32;
        while x > -87.0 {
            let got = exp_nonpositive(x) as f64;
            let want = (x as f64).exp();
            assert!(((got - want) / want).abs() < 4e-7, "x={x} got={got} want={want}");
            x -= 0.0137;
        }
    }

    #[test]
    fn exp_flushes_and_clamps() {
        assert_eq!(exp_nonpositive(-87.5), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(f32::NAN), 0.0);
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(3.0), 1.0);
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..37).map(|i| (i % 5) as f32 - 2.0).collect();
        let want: f64 = a.iter().zip(&b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
        assert!((dot_f32(&a, &b) - want).abs() < 1e-4);
        assert_eq!(dot_f32(&[], &[]), 0.0);
    }

    #[test]
    fn max_and_sum() {
        let v: Vec<f32> = (0..257).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
        assert_eq!(max_f32(&v), 50.0);
        let want: f64 = v.iter().map(|&x| x as f64).sum();
        assert!((sum_f64(&v) - want).abs() < 1e-9);
    }
}
