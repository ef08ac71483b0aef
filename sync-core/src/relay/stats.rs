//! What a relay reports: its state, its counters, and the closed sets of
//! reasons (why work was given up, why the relay refused us) that metrics
//! labels and the status view use.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::Time;

/// Connection state of a relay as the status view shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelayState {
    /// Not connected; waiting for the next attempt.
    Disconnected,
    /// Failed for over a day; retried once a day.
    Dead,
    /// A connection attempt is under way.
    Connecting,
    /// Connected with historic work pending.
    Syncing,
    /// Connected, nothing pending.
    Live,
}

impl RelayState {
    /// Every state, in order.
    pub const ALL: [RelayState; 5] = [
        RelayState::Disconnected,
        RelayState::Dead,
        RelayState::Connecting,
        RelayState::Syncing,
        RelayState::Live,
    ];

    /// The kebab-case name (as serialised, and as a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            RelayState::Disconnected => "disconnected",
            RelayState::Dead => "dead",
            RelayState::Connecting => "connecting",
            RelayState::Syncing => "syncing",
            RelayState::Live => "live",
        }
    }
}

/// Why work was given up on a relay until the next daily pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GiveUpReason {
    /// `CLOSED restricted:` or `blocked:`.
    Refused,
    /// `auth-required:` with no key, or AUTH failed.
    AuthRequired,
    /// `error:`, `invalid:` or `unsupported:` twice, even after a split.
    Rejected,
    /// Timed out or refused without explanation too many times.
    Unresponsive,
    /// Fetched, but not provably complete: the relay shows fewer events of
    /// one second than it holds (a page cap below a burst) and offers no
    /// NIP-77, or it lists ids it will not send.
    Incomplete,
}

impl GiveUpReason {
    /// Every reason, in order.
    pub const ALL: [GiveUpReason; 5] = [
        GiveUpReason::Refused,
        GiveUpReason::AuthRequired,
        GiveUpReason::Rejected,
        GiveUpReason::Unresponsive,
        GiveUpReason::Incomplete,
    ];

    /// The kebab-case name (as serialised, and as a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::Refused => "refused",
            GiveUpReason::AuthRequired => "auth-required",
            GiveUpReason::Rejected => "rejected",
            GiveUpReason::Unresponsive => "unresponsive",
            GiveUpReason::Incomplete => "incomplete",
        }
    }
}

/// Why a relay refused (or failed) something we asked: the closed set of
/// `stats.refusals` keys and `relay_refusals_total{reason}` labels.
///
/// The variants are declared in the order of their names, so that the
/// derived order is the names' order: maps keyed by it serialise exactly as
/// maps keyed by the names would, and `Borrow<str>` is sound (a map keyed by
/// reasons can be looked up with `"rate-limited"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalReason {
    /// AUTH was answered with a refusal, or never answered.
    AuthFailed,
    /// `CLOSED auth-required:`.
    AuthRequired,
    /// `CLOSED blocked:`.
    Blocked,
    /// `CLOSED error:`.
    Error,
    /// `CLOSED invalid:`.
    Invalid,
    /// `NEG-ERR` for a reconciliation.
    NegErr,
    /// A NIP-77 message we could not take (not negentropy as we speak it).
    Nip77Protocol,
    /// No answer to NEG-OPEN or NEG-MSG within the NIP-77 timeout.
    Nip77Silent,
    /// A NOTICE refusing NIP-77 (e.g. "unknown command").
    Notice,
    /// `CLOSED` with no known prefix.
    Other,
    /// `CLOSED rate-limited:`, or a NOTICE that reads like a rate limit.
    RateLimited,
    /// `CLOSED restricted:`.
    Restricted,
    /// Too many subscriptions at once (a cap on concurrent REQs, by
    /// `CLOSED rate-limited:` or NOTICE).
    TooManySubscriptions,
    /// `CLOSED unsupported:`.
    Unsupported,
}

impl RefusalReason {
    /// Every reason, in order.
    pub const ALL: [RefusalReason; 14] = [
        RefusalReason::AuthFailed,
        RefusalReason::AuthRequired,
        RefusalReason::Blocked,
        RefusalReason::Error,
        RefusalReason::Invalid,
        RefusalReason::NegErr,
        RefusalReason::Nip77Protocol,
        RefusalReason::Nip77Silent,
        RefusalReason::Notice,
        RefusalReason::Other,
        RefusalReason::RateLimited,
        RefusalReason::Restricted,
        RefusalReason::TooManySubscriptions,
        RefusalReason::Unsupported,
    ];

    /// The kebab-case name (as serialised, and as a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::AuthFailed => "auth-failed",
            RefusalReason::AuthRequired => "auth-required",
            RefusalReason::Blocked => "blocked",
            RefusalReason::Error => "error",
            RefusalReason::Invalid => "invalid",
            RefusalReason::NegErr => "neg-err",
            RefusalReason::Nip77Protocol => "nip77-protocol",
            RefusalReason::Nip77Silent => "nip77-silent",
            RefusalReason::Notice => "notice",
            RefusalReason::Other => "other",
            RefusalReason::RateLimited => "rate-limited",
            RefusalReason::Restricted => "restricted",
            RefusalReason::TooManySubscriptions => "too-many-subscriptions",
            RefusalReason::Unsupported => "unsupported",
        }
    }
}

impl RefusalReason {
    /// A refusal of NIP-77 (the filter falls back to paged REQ): not a
    /// refusal of sync work.
    pub fn is_nip77(self) -> bool {
        matches!(
            self,
            RefusalReason::NegErr
                | RefusalReason::Nip77Protocol
                | RefusalReason::Nip77Silent
                | RefusalReason::Notice
        )
    }
}

impl Borrow<str> for RefusalReason {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters of one relay.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStats {
    /// Valid events received for our subscriptions.
    pub events_received: u64,
    /// Events the store newly stored.
    pub events_stored: u64,
    /// Events the store already had.
    pub events_duplicate: u64,
    /// Events the store refused.
    pub events_rejected: u64,
    /// Events with a bad id or signature, or malformed.
    pub events_invalid: u64,
    /// Events for subscriptions we do not hold.
    pub events_unrequested: u64,
    /// Events that match none of their subscription's filters.
    pub events_unmatched: u64,
    /// Connection attempts made.
    pub connects: u64,
    /// Failed connection attempts and drops.
    pub failures: u64,
    /// Historic REQs sent (pages included).
    pub reqs_sent: u64,
    /// Historic REQs that timed out.
    pub timeouts: u64,
    /// NOTICEs received.
    pub notices: u64,
    /// Time of the last EOSE.
    pub last_eose: Option<Time>,
    /// Inputs that no longer applied (a late answer to an abandoned attempt).
    pub stale_inputs: u64,
    /// NIP-77 reconciliations completed (one per filter).
    pub reconciliations: u64,
    /// Ids NIP-77 reconciliations found missing (then fetched by id).
    pub reconcile_ids_needed: u64,
    /// Filters that fell back from NIP-77 to paged REQ.
    pub reconcile_fallbacks: u64,
    /// Filters paged by choice because reconciling them would not pay (an
    /// empty local set, or more missing than held); not a fallback.
    #[serde(default)]
    pub reconcile_declined: u64,
    /// Refusals seen, by reason.
    pub refusals: BTreeMap<RefusalReason, u64>,
}

impl RelayStats {
    /// Counts one refusal.
    pub(crate) fn refused(&mut self, reason: RefusalReason) {
        *self.refusals.entry(reason).or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Borrow<str>` needs the reasons to order as their names do.
    #[test]
    fn reasons_order_as_their_names() {
        let names: Vec<&str> = RefusalReason::ALL.iter().map(|r| r.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        let mut by_enum = RefusalReason::ALL;
        by_enum.sort();
        assert_eq!(by_enum, RefusalReason::ALL);
        for r in RefusalReason::ALL {
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        for s in RelayState::ALL {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        for g in GiveUpReason::ALL {
            assert_eq!(
                serde_json::to_string(&g).unwrap(),
                format!("\"{}\"", g.as_str())
            );
        }
    }
}
