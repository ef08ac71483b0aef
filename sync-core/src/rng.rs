//! Seeded, deterministic pseudo-randomness for jitter. The engine never touches
//! OS randomness: every relay gets its own stream derived from the configured
//! seed and its URL, so adding a relay never shifts another relay's jitter.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// SplitMix64: tiny, fast, good enough for jitter, trivially serialisable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator for one relay: the engine seed mixed with the relay's URL.
    pub fn for_stream(seed: u64, stream: &str) -> Self {
        // FNV-1a over the stream name, then mixed with the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in stream.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut rng = Rng {
            state: seed ^ h.rotate_left(17),
        };
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration drawn uniformly from `[lo, hi]` (millisecond resolution).
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let lo_ms = lo.as_millis().min(u128::from(u64::MAX)) as u64;
        let hi_ms = hi.as_millis().min(u128::from(u64::MAX)) as u64;
        if hi_ms <= lo_ms {
            return lo;
        }
        let span = (hi_ms - lo_ms).saturating_add(1);
        Duration::from_millis(lo_ms + self.next_u64() % span)
    }

    /// `base` scaled by a random factor in `[1 - frac, 1 + frac]`.
    pub fn jitter(&mut self, base: Duration, frac: f64) -> Duration {
        let ms = base.as_millis().min(u128::from(u64::MAX)) as u64;
        let frac = if frac.is_finite() {
            frac.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let spread = (ms as f64 * frac) as u64;
        self.between(
            Duration::from_millis(ms.saturating_sub(spread)),
            Duration::from_millis(ms.saturating_add(spread)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::for_stream(7, "wss://a");
        let mut b = Rng::for_stream(7, "wss://a");
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn streams_differ() {
        let mut a = Rng::for_stream(7, "wss://a");
        let mut b = Rng::for_stream(7, "wss://b");
        assert_ne!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn extreme_durations_do_not_panic() {
        let mut r = Rng::for_stream(1, "x");
        let _ = r.between(Duration::ZERO, Duration::MAX);
        let _ = r.jitter(Duration::MAX, 0.5);
        let _ = r.jitter(Duration::from_secs(5), f64::NAN);
    }

    #[test]
    fn between_stays_in_range() {
        let mut r = Rng::for_stream(1, "x");
        for _ in 0..1000 {
            let d = r.between(Duration::from_secs(5), Duration::from_secs(6));
            assert!(d >= Duration::from_secs(5) && d <= Duration::from_secs(6));
        }
        assert_eq!(
            r.between(Duration::from_secs(3), Duration::from_secs(1)),
            Duration::from_secs(3)
        );
    }
}
