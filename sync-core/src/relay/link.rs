//! The connection of one relay (spec section 4): its lifecycle
//! (disconnected, connecting, connected), reconnect backoff with seeded
//! jitter, the quick-reconnect window, and the empty-relay grace period.

use std::time::Duration;

use super::stats::RelayState;
use super::timers::{deadline, soonest, Deadline, RelayTimer};
use crate::backoff::{exponential, Backoff};
use crate::config::Timing;
use crate::rng::Rng;
use crate::types::Time;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Conn {
    Disconnected { retry_at: Time },
    Connecting { since: Time },
    Connected { since: Time },
}

/// How a new connection starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reconnect {
    /// Down for less than the quick-reconnect window with confirmed work:
    /// catch up from `since` (seconds, a Unix timestamp).
    Quick { since: u64 },
    /// Everything again.
    Fresh,
}

/// One relay's connection.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    conn: Conn,
    backoff: Backoff,
    disconnected_at: Option<Time>,
    last_connected: Option<Time>,
    /// Since when the relay has had nothing to do.
    empty_since: Option<Time>,
}

impl Link {
    /// Disconnected, due to connect at `now`.
    pub fn new(now: Time) -> Self {
        Link {
            conn: Conn::Disconnected { retry_at: now },
            backoff: Backoff::default(),
            disconnected_at: None,
            last_connected: None,
            empty_since: None,
        }
    }

    /// The state for the status view (`pending`: historic work pending).
    pub fn state(&self, pending: bool) -> RelayState {
        match self.conn {
            Conn::Disconnected { .. } if self.backoff.dead => RelayState::Dead,
            Conn::Disconnected { .. } => RelayState::Disconnected,
            Conn::Connecting { .. } => RelayState::Connecting,
            Conn::Connected { .. } if pending => RelayState::Syncing,
            Conn::Connected { .. } => RelayState::Live,
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.conn, Conn::Connected { .. })
    }

    pub fn is_connecting(&self) -> bool {
        matches!(self.conn, Conn::Connecting { .. })
    }

    pub fn is_disconnected(&self) -> bool {
        matches!(self.conn, Conn::Disconnected { .. })
    }

    /// The next attempt, when disconnected.
    pub fn retry_at(&self) -> Option<Time> {
        match self.conn {
            Conn::Disconnected { retry_at } => Some(retry_at),
            _ => None,
        }
    }

    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    pub fn last_connected(&self) -> Option<Time> {
        self.last_connected
    }

    /// An attempt is due (and wanted).
    pub fn due(&self, now: Time, wanted: bool) -> bool {
        matches!(self.conn, Conn::Disconnected { retry_at } if retry_at <= now && wanted)
    }

    /// An attempt starts.
    pub fn start(&mut self, now: Time) {
        self.conn = Conn::Connecting { since: now };
    }

    /// The attempt succeeded. `None` when no attempt was under way (a late
    /// report of one given up). `has_confirmed`: there is confirmed work a
    /// quick reconnect can keep.
    pub fn connected(&mut self, now: Time, t: &Timing, has_confirmed: bool) -> Option<Reconnect> {
        if !self.is_connecting() {
            return None;
        }
        let quick = self
            .disconnected_at
            .is_some_and(|d| now.since(d) < t.quick_reconnect_window)
            && has_confirmed;
        // Catch up on the gap: since the last moment we know we were
        // connected, minus a safety margin (a Unix timestamp, not a duration).
        let last = self.last_connected.or(self.disconnected_at).unwrap_or(now);
        self.conn = Conn::Connected { since: now };
        self.backoff.dead = false;
        self.last_connected = Some(now);
        Some(if quick {
            Reconnect::Quick {
                since: last.minus(t.catch_up_margin).as_secs(),
            }
        } else {
            Reconnect::Fresh
        })
    }

    /// Still connected at `now` (a timer ran while connected).
    pub fn alive(&mut self, now: Time) {
        if self.is_connected() {
            self.last_connected = Some(now);
        }
    }

    /// The connection was lost (or the attempt failed) at `now`: schedules
    /// the next attempt with backoff. Returns true when the relay dropped
    /// us soon after `open` subscriptions were opened, several of them: some
    /// relays answer one too many that way, so the caller should hold fewer
    /// (otherwise it would flap forever).
    pub fn lost(&mut self, now: Time, t: &Timing, rng: &mut Rng, open: usize) -> bool {
        let mut learn_lower = false;
        if let Conn::Connected { since } = self.conn {
            if now.since(since) >= t.stable_after {
                self.backoff.failures = 0;
                self.backoff.failing_since = None;
            } else if open > 2 {
                learn_lower = true;
            }
            self.last_connected = Some(now);
            self.disconnected_at = Some(now);
        }
        self.backoff.failures = self.backoff.failures.saturating_add(1);
        let failing_since = *self.backoff.failing_since.get_or_insert(now);
        let delay = if now.since(failing_since) >= t.dead_after {
            self.backoff.dead = true;
            rng.jitter(t.dead_retry, 0.05)
        } else {
            let base = exponential(
                t.backoff_initial,
                t.backoff_max,
                self.backoff.failures.saturating_sub(1),
            );
            rng.jitter(base, t.backoff_jitter).min(t.backoff_max)
        };
        self.conn = Conn::Disconnected {
            retry_at: now.plus(delay.max(Duration::from_millis(1))),
        };
        learn_lower
    }

    /// We close the connection ourselves (the relay has nothing to do):
    /// due again at once should work come. False when already disconnected.
    pub fn close(&mut self, now: Time) -> bool {
        if self.is_disconnected() {
            return false;
        }
        if self.is_connected() {
            self.last_connected = Some(now);
            self.disconnected_at = Some(now);
        }
        self.conn = Conn::Disconnected { retry_at: now };
        true
    }

    /// An attempt that has had no answer for the connect timeout.
    pub fn attempt_timed_out(&self, now: Time, t: &Timing) -> bool {
        matches!(self.conn, Conn::Connecting { since } if now.since(since) >= t.connect_timeout)
    }

    /// Notes whether the relay has nothing to do at `now`; true when it has
    /// had nothing to do for the whole grace period.
    pub fn empty_for_grace(&mut self, empty: bool, now: Time, t: &Timing) -> bool {
        if !empty {
            self.empty_since = None;
            return false;
        }
        let since = *self.empty_since.get_or_insert(now);
        now.since(since) >= t.empty_grace
    }

    /// A target arrived: the relay is not empty.
    pub fn not_empty(&mut self) {
        self.empty_since = None;
    }

    /// The link's own deadlines: the empty grace, and the next attempt
    /// (`wanted`) or the attempt's timeout.
    pub fn poll_timeout(&self, t: &Timing, wanted: bool) -> Option<Deadline> {
        let empty = deadline(
            self.empty_since.map(|e| e.plus(t.empty_grace)),
            RelayTimer::EmptyGrace,
        );
        let conn = match self.conn {
            Conn::Disconnected { retry_at } if wanted => Some((retry_at, RelayTimer::Retry)),
            Conn::Disconnected { .. } | Conn::Connected { .. } => None,
            Conn::Connecting { since } => {
                Some((since.plus(t.connect_timeout), RelayTimer::ConnectTimeout))
            }
        };
        soonest(empty, conn)
    }

    /// Restores saved state: disconnected, due `now` (a dead relay keeps
    /// its daily retry), with the saved time as the last connection.
    pub fn restore(
        &mut self,
        last_connected: Option<Time>,
        backoff: Backoff,
        retry_at: Option<Time>,
        now: Time,
    ) {
        self.last_connected = last_connected;
        self.disconnected_at = last_connected;
        let retry_at = if backoff.dead {
            retry_at.unwrap_or(now)
        } else {
            now
        };
        self.backoff = backoff;
        self.conn = Conn::Disconnected { retry_at };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Time {
        Time::from_secs(1_700_000_000 + s)
    }

    #[test]
    fn quick_reconnect_is_measured_from_the_drop() {
        let timing = Timing::default();
        let mut rng = Rng::for_stream(1, "x");
        let mut l = Link::new(t(0));
        assert!(l.due(t(0), true));
        assert!(!l.due(t(0), false), "nothing wanted");
        l.start(t(0));
        assert_eq!(l.connected(t(1), &timing, true), Some(Reconnect::Fresh));
        assert_eq!(
            l.connected(t(1), &timing, true),
            None,
            "no attempt under way"
        );
        // Connected for an hour, then dropped; back 14 minutes later.
        l.alive(t(3600));
        assert!(
            !l.lost(t(3601), &timing, &mut rng, 5),
            "a stable connection"
        );
        l.start(t(3601 + 14 * 60));
        assert_eq!(
            l.connected(t(3601 + 14 * 60), &timing, true),
            Some(Reconnect::Quick {
                since: t(3601).as_secs() - 300
            })
        );
        l.lost(t(4000), &timing, &mut rng, 0);
        l.start(t(4000 + 15 * 60));
        assert_eq!(
            l.connected(t(4000 + 15 * 60), &timing, true),
            Some(Reconnect::Fresh)
        );
    }

    #[test]
    fn a_drop_soon_after_opening_several_asks_for_fewer() {
        let timing = Timing::default();
        let mut rng = Rng::for_stream(1, "x");
        let mut l = Link::new(t(0));
        l.start(t(0));
        l.connected(t(0), &timing, false);
        assert!(l.lost(t(2), &timing, &mut rng, 3));
        assert_eq!(l.state(false), RelayState::Disconnected);
        let retry = l.retry_at().unwrap();
        assert!(retry > t(2) && retry <= t(2 + 6), "5 s ± 20 %: {retry:?}");
        assert_eq!(
            l.poll_timeout(&timing, true),
            Some((retry, RelayTimer::Retry))
        );
        assert_eq!(l.poll_timeout(&timing, false), None);
    }

    #[test]
    fn the_empty_grace_runs_from_the_first_empty_moment() {
        let timing = Timing::default();
        let mut l = Link::new(t(0));
        assert!(!l.empty_for_grace(true, t(0), &timing));
        assert!(!l.empty_for_grace(true, t(59), &timing));
        assert!(l.empty_for_grace(true, t(60), &timing));
        l.not_empty();
        assert!(!l.empty_for_grace(true, t(61), &timing));
        assert_eq!(
            l.poll_timeout(&timing, false),
            Some((t(121), RelayTimer::EmptyGrace))
        );
    }
}
