//! Counter-based randomness: every decision is `splitmix64(seed, stream, n)`, so nothing on the hot
//! path takes a lock and a run is reproducible for a given seed and request order.

/// One round of splitmix64.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit value for (seed, stream, n).
pub fn draw(seed: u64, stream: u64, n: u64) -> u64 {
    mix(mix(seed ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93)) ^ n)
}

/// Uniform in [0, 1) from 53 bits.
pub fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

pub const STREAM_LATENCY: u64 = 1;
pub const STREAM_FAULT: u64 = 2;
pub const STREAM_FAULT_PHASE: u64 = 3;
pub const STREAM_SLOW: u64 = 4;
pub const STREAM_FAIL: u64 = 5;
pub const STREAM_SAMPLE: u64 = 6;
pub const STREAM_ID: u64 = 7;
pub const STREAM_LATENCY_SPREAD: u64 = 8;

#[cfg(test)]
mod tests {
    #[test]
    fn unit_in_range() {
        for n in 0..1000 {
            let u = super::unit(super::draw(1, 2, n));
            assert!((0.0..1.0).contains(&u));
        }
    }
}
