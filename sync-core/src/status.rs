//! The read-only status view (spec section 9): per relay and in total.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Config;
use crate::info::Budget;
use crate::nip77::Nip77Support;
use crate::relay::{GiveUpReason, RefusalReason, Relay, RelayState, RelayStats};
use crate::types::{Layer, TargetKey, Time};
use crate::url::RelayUrl;

/// Engine-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EngineCounters {
    /// Announcements that added or replaced a repo.
    pub announcements_applied: u64,
    /// Announcements older than the version we have.
    pub announcements_stale: u64,
    /// Announcements covered by a deletion request.
    pub announcements_deleted: u64,
    /// Announcements that do not list the service (outside archive mode).
    pub announcements_untracked: u64,
    /// Announcements that could not be parsed.
    pub announcements_invalid: u64,
    /// Root events recorded.
    pub roots_applied: u64,
    /// Repos and roots removed by deletion requests.
    pub deletions_applied: u64,
    /// Events fed through the wrong input.
    pub events_of_wrong_kind: u64,
    /// Ignored URLs and announcements, in total.
    pub ignored_total: u64,
    /// Relays not added because the total relay cap was reached.
    pub relays_over_cap: u64,
    /// Empty relays closed and forgotten.
    pub relays_forgotten: u64,
    /// Inputs naming a relay the engine does not know.
    pub inputs_for_unknown_relays: u64,
    /// Events from relays the engine does not know.
    pub events_from_unknown_relays: u64,
}

/// The status of one relay.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RelayStatus {
    /// The relay.
    pub url: RelayUrl,
    /// Connection state.
    pub state: RelayState,
    /// Given by the operator.
    pub bootstrap: bool,
    /// Targets (discovery, repos and roots).
    pub targets: usize,
    /// Repo targets.
    pub repos: usize,
    /// Root-event targets.
    pub roots: usize,
    /// Targets whose historic sync is confirmed.
    pub confirmed: usize,
    /// Targets in historic work.
    pub pending: usize,
    /// Targets given up until the daily pass, by reason.
    pub given_up: BTreeMap<GiveUpReason, usize>,
    /// Subscriptions open on the relay (live and historic).
    pub open_subscriptions: usize,
    /// Historic batches waiting for a slot.
    pub queued_batches: usize,
    /// Targets with no live subscription (budget exhausted or refused).
    pub live_uncovered: usize,
    /// The budget planned within.
    pub budget: Budget,
    /// Subscription cap learned from refusals.
    pub learned_max_subscriptions: Option<u32>,
    /// Consecutive connection failures.
    pub failures: u32,
    /// Next connection attempt, when disconnected.
    pub retry_at: Option<Time>,
    /// Rate-limit cool-down end.
    pub cooldown_until: Option<Time>,
    /// Last time we knew we were connected.
    pub last_connected: Option<Time>,
    /// Next daily re-sync.
    pub next_resync: Option<Time>,
    /// Newest `created_at` received per layer.
    pub last_event_at: BTreeMap<Layer, u64>,
    /// NIP-77 support as far as the engine knows.
    pub nip77: Nip77Support,
    /// Counters.
    pub stats: RelayStats,
}

impl RelayStatus {
    pub(crate) fn of(r: &Relay, config: &Config) -> Self {
        let layers = [Layer::Discovery, Layer::Repo, Layer::Root];
        RelayStatus {
            url: r.url().clone(),
            state: r.state(),
            bootstrap: r.is_bootstrap(),
            targets: r.target_count(),
            repos: r
                .targets()
                .filter(|t| matches!(t, TargetKey::Repo(_)))
                .count(),
            roots: r
                .targets()
                .filter(|t| matches!(t, TargetKey::Root(_)))
                .count(),
            confirmed: r.confirmed().len(),
            pending: r.pending_targets().count(),
            given_up: r.given_up_counts(),
            open_subscriptions: r.open_subscriptions(),
            queued_batches: r.queued_packs(),
            live_uncovered: r.live_uncovered(),
            budget: r.budget(config),
            learned_max_subscriptions: r.learned_max_subs(),
            failures: r.failures(),
            retry_at: r.retry_at(),
            cooldown_until: r.cooldown_until(),
            last_connected: r.last_connected(),
            next_resync: r.next_resync(),
            last_event_at: layers
                .iter()
                .zip(r.last_event_at().iter())
                .filter_map(|(l, t)| t.map(|t| (*l, t)))
                .collect(),
            nip77: r.nip77(),
            stats: r.stats().clone(),
        }
    }
}

/// Sums over every relay.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Relays known.
    pub relays: usize,
    /// Relays by state.
    pub by_state: BTreeMap<RelayState, usize>,
    /// (relay, target) pairs.
    pub targets: usize,
    /// Confirmed pairs.
    pub confirmed: usize,
    /// Pending pairs.
    pub pending: usize,
    /// Given-up pairs.
    pub given_up: usize,
    /// Open subscriptions.
    pub open_subscriptions: usize,
    /// Events received.
    pub events_received: u64,
    /// Events stored.
    pub events_stored: u64,
    /// Events rejected by the store.
    pub events_rejected: u64,
    /// Invalid events.
    pub events_invalid: u64,
    /// Unrequested or unmatched events.
    pub events_unwanted: u64,
    /// Failures.
    pub failures: u64,
    /// NIP-77 reconciliations completed.
    pub reconciliations: u64,
    /// Ids NIP-77 found missing.
    pub reconcile_ids_needed: u64,
    /// Filters that fell back from NIP-77 to paged REQ.
    pub reconcile_fallbacks: u64,
    /// Filters paged because reconciling them would not pay.
    pub reconcile_declined: u64,
    /// Refusals by reason.
    pub refusals: BTreeMap<RefusalReason, u64>,
}

/// One ignored item (a URL or an announcement) with how often it was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ignored {
    /// Why (kebab-case).
    pub reason: String,
    /// What.
    pub detail: String,
    /// How often.
    pub count: u64,
}

/// The whole status view.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    /// Tracked repos.
    pub repos: usize,
    /// Known root events.
    pub roots: usize,
    /// Per relay, sorted by URL.
    pub relays: Vec<RelayStatus>,
    /// Totals.
    pub totals: Totals,
    /// Engine counters.
    pub counters: EngineCounters,
    /// Ignored items (first ten thousand distinct ones).
    pub ignored: Vec<Ignored>,
}

impl Status {
    pub(crate) fn new(
        relays: Vec<RelayStatus>,
        repos: usize,
        roots: usize,
        counters: EngineCounters,
        ignored: Vec<(String, String, u64)>,
    ) -> Self {
        let mut t = Totals {
            relays: relays.len(),
            ..Totals::default()
        };
        for r in &relays {
            *t.by_state.entry(r.state).or_insert(0) += 1;
            t.targets += r.targets;
            t.confirmed += r.confirmed;
            t.pending += r.pending;
            t.given_up += r.given_up.values().sum::<usize>();
            t.open_subscriptions += r.open_subscriptions;
            t.events_received += r.stats.events_received;
            t.events_stored += r.stats.events_stored;
            t.events_rejected += r.stats.events_rejected;
            t.events_invalid += r.stats.events_invalid;
            t.events_unwanted += r.stats.events_unrequested + r.stats.events_unmatched;
            t.failures += r.stats.failures;
            t.reconciliations += r.stats.reconciliations;
            t.reconcile_ids_needed += r.stats.reconcile_ids_needed;
            t.reconcile_fallbacks += r.stats.reconcile_fallbacks;
            t.reconcile_declined += r.stats.reconcile_declined;
            for (k, v) in &r.stats.refusals {
                *t.refusals.entry(*k).or_insert(0) += v;
            }
        }
        Status {
            repos,
            roots,
            relays,
            totals: t,
            counters,
            ignored: ignored
                .into_iter()
                .map(|(reason, detail, count)| Ignored {
                    reason,
                    detail,
                    count,
                })
                .collect(),
        }
    }
}
