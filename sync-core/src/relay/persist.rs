//! What of a relay survives a restart (spec section 8): saved into a
//! [`SavedRelay`] and restored from one.

use super::Relay;
use crate::snapshot::SavedRelay;
use crate::types::Time;

impl Relay {
    /// What survives a restart (spec section 8), as of `now`.
    pub(crate) fn save(&self, now: Time) -> SavedRelay {
        SavedRelay {
            url: self.url.clone(),
            confirmed: self.targets.confirmed().iter().cloned().collect(),
            last_connected: if self.is_connected() {
                Some(now)
            } else {
                self.link.last_connected()
            },
            last_event_at: self.last_event_at,
            learned_max_subs: self.limits.learned_max_subs(),
            info: self.limits.info().cloned(),
            backoff: self.link.backoff().clone(),
            retry_at: self.link.retry_at(),
            next_resync: self.historic.next_resync(),
            cooldown_strikes: self.cooldown.strikes(),
            rng: self.rng.clone(),
            nip77: self.neg.support(),
        }
    }

    /// Restores saved state (snapshot load): the relay starts disconnected,
    /// due now, with the saved time as its last connection.
    pub(crate) fn restore(&mut self, saved: SavedRelay, now: Time) {
        self.targets.restore_confirmed(saved.confirmed);
        self.link
            .restore(saved.last_connected, saved.backoff, saved.retry_at, now);
        self.last_event_at = saved.last_event_at;
        self.limits.restore(saved.info, saved.learned_max_subs);
        self.historic.restore_resync(saved.next_resync);
        self.cooldown.restore(saved.cooldown_strikes);
        self.rng = saved.rng;
        self.neg.restore(saved.nip77);
    }
}
