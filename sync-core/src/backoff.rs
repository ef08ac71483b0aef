//! Exponential backoff: the one formula every retry delay uses (reconnects,
//! historic retries, live retries, rate-limit cool-downs, and the I/O
//! shell's own reconnects), and the reconnect bookkeeping a relay saves.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::Time;

/// Doublings past which the delay cannot grow any more: `initial × 2^20`
/// is past any sensible cap.
const MAX_DOUBLINGS: u32 = 20;

/// The delay after `n` earlier tries: `initial` doubled `n` times, never
/// above `max`.
pub fn exponential(initial: Duration, max: Duration, n: u32) -> Duration {
    initial
        .saturating_mul(1u32 << n.min(MAX_DOUBLINGS))
        .min(max)
}

/// A relay's reconnect bookkeeping (spec section 4), saved across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Consecutive failures.
    pub failures: u32,
    /// When the current run of failures began.
    pub failing_since: Option<Time>,
    /// Failed for longer than `dead_after`.
    pub dead: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap() {
        let s = Duration::from_secs;
        let d: Vec<u64> = (0..8)
            .map(|n| exponential(s(5), s(100), n).as_secs())
            .collect();
        assert_eq!(d, [5, 10, 20, 40, 80, 100, 100, 100]);
        assert_eq!(exponential(s(5), s(3600), u32::MAX), s(3600));
        assert_eq!(exponential(s(5), s(1), 3), s(1), "the cap wins");
        assert_eq!(
            exponential(Duration::MAX, Duration::MAX, 40),
            Duration::MAX,
            "saturates"
        );
    }
}
