//! The named deadlines of one relay: each part reports its own
//! (`poll_timeout`), and the relay's next deadline is the soonest of them,
//! with the reason attached so a host can log why the engine wakes up.

use serde::Serialize;

use crate::types::Time;

/// Why a relay wants the engine's attention at some time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelayTimer {
    /// An empty relay's grace period ends (then it is closed and forgotten).
    EmptyGrace,
    /// The next connection attempt after a backoff.
    Retry,
    /// A connection attempt has had no answer for too long.
    ConnectTimeout,
    /// A historic REQ has seen no event and no EOSE for too long.
    HistoricTimeout,
    /// A NIP-77 step (host items, NEG answer, id fetch) is overdue.
    NegTimeout,
    /// A rate-limit cool-down ends.
    Cooldown,
    /// The daily re-sync is due.
    Resync,
    /// Targets no live subscription covers are polled.
    Poll,
    /// An AUTH (or the challenge for one) is overdue.
    Auth,
    /// Queued historic work becomes ready (after a batch delay or a retry backoff).
    PackReady,
    /// A live subscription is due to be (re)opened or updated.
    LiveRetry,
}

impl RelayTimer {
    /// The kebab-case name (for logs).
    pub fn as_str(self) -> &'static str {
        match self {
            RelayTimer::EmptyGrace => "empty-grace",
            RelayTimer::Retry => "retry",
            RelayTimer::ConnectTimeout => "connect-timeout",
            RelayTimer::HistoricTimeout => "historic-timeout",
            RelayTimer::NegTimeout => "neg-timeout",
            RelayTimer::Cooldown => "cooldown",
            RelayTimer::Resync => "resync",
            RelayTimer::Poll => "poll",
            RelayTimer::Auth => "auth",
            RelayTimer::PackReady => "pack-ready",
            RelayTimer::LiveRetry => "live-retry",
        }
    }
}

impl std::fmt::Display for RelayTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A deadline and its reason.
pub type Deadline = (Time, RelayTimer);

/// The sooner of two deadlines; on a tie, the first one given.
pub fn soonest(a: Option<Deadline>, b: Option<Deadline>) -> Option<Deadline> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.0 < x.0 { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// `at` as a deadline of kind `timer`, when there is one.
pub fn deadline(at: Option<Time>, timer: RelayTimer) -> Option<Deadline> {
    at.map(|t| (t, timer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soonest_keeps_the_first_on_a_tie() {
        let t = Time::from_secs;
        let a = Some((t(5), RelayTimer::Retry));
        let b = Some((t(5), RelayTimer::Poll));
        let c = Some((t(4), RelayTimer::Auth));
        assert_eq!(soonest(a, b), a);
        assert_eq!(soonest(a, c), c);
        assert_eq!(soonest(None, b), b);
        assert_eq!(soonest(a, None), a);
        assert_eq!(soonest(None, None), None);
    }
}
