//! The Prometheus endpoint (spec section 9), in three parts:
//!
//! | module | owns |
//! |---|---|
//! | [`counters`] | the counters the I/O shell keeps ([`IoCounters`], one [`IoCounter`] per per-relay counter) |
//! | [`exposition`] | the metric definitions and the text exposition of the engine's [`Status`](grasp_sync_core::Status) with them ([`render`]) |
//! | [`server`] | the HTTP endpoint ([`serve`]), which asks the driver loop for a fresh rendering on every scrape (the driver owns the engine, so the server never touches it) |
//!
//! This page is the naming scheme and the table of every metric; a unit
//! test checks that every family the exposition emits is in the tables and
//! every name in the tables is emitted.
//!
//! # Naming scheme
//!
//! Every metric is prefixed `grasp_sync_`. A per-relay metric is called
//! `grasp_sync_relay_<m>` and carries a `relay` label (the normalised relay
//! URL); its total over all relays is `grasp_sync_<m>` with the same other
//! labels and no `relay` label. Counters end in `_total` (OpenMetrics
//! style, added by the encoder), so `grasp_sync_relay_events_stored_total{relay=…}`
//! sums to `grasp_sync_events_stored_total`. Instants are unix-second
//! gauges named `…_timestamp_seconds`. Label sets are complete where they
//! are enumerations: every relay has one `relay_state` sample per state
//! (1 for the current one, 0 otherwise) and one `relay_given_up_targets`
//! sample per reason. Metrics "when present" have no sample while the value
//! is unknown. Totals are sums over the relays currently known; a relay the
//! engine forgets takes its engine counters with it (the I/O counters of a
//! forgotten relay stay in the totals, see [`IoCounters::forget`]; the
//! runner moves them there on its housekeeping tick, every snapshot
//! interval, not on every scrape).
//!
//! # Metrics
//!
//! Per relay (label `relay`), with their totals:
//!
//! | per relay | total | type | meaning |
//! |---|---|---|---|
//! | `relay_state{state}` | `relays{state}` | gauge | connection state (`disconnected`, `dead`, `connecting`, `syncing`, `live`); the total counts relays per state |
//! | `relay_bootstrap` | `bootstrap_relays` | gauge | 1 for a bootstrap relay |
//! | `relay_targets` | `targets` | gauge | targets (discovery, repos, roots) |
//! | `relay_repo_targets` | `repo_targets` | gauge | repo targets |
//! | `relay_root_targets` | `root_targets` | gauge | root-event targets |
//! | `relay_confirmed_targets` | `confirmed_targets` | gauge | historic sync confirmed |
//! | `relay_pending_targets` | `pending_targets` | gauge | historic work pending |
//! | `relay_given_up_targets{reason}` | `given_up_targets{reason}` | gauge | given up until the daily pass (`refused`, `auth-required`, `rejected`, `unresponsive`) |
//! | `relay_open_subscriptions` | `open_subscriptions` | gauge | subscriptions open (live and historic) |
//! | `relay_queued_batches` | `queued_batches` | gauge | historic batches waiting for a slot |
//! | `relay_live_uncovered_targets` | `live_uncovered_targets` | gauge | targets without a live subscription |
//! | `relay_events_received_total` | `events_received_total` | counter | valid events for our subscriptions |
//! | `relay_events_stored_total` | `events_stored_total` | counter | newly stored |
//! | `relay_events_duplicate_total` | `events_duplicate_total` | counter | already in the store |
//! | `relay_events_rejected_total` | `events_rejected_total` | counter | refused by the store |
//! | `relay_events_invalid_total` | `events_invalid_total` | counter | bad id or signature, malformed |
//! | `relay_events_unrequested_total` | `events_unrequested_total` | counter | for a subscription we do not hold |
//! | `relay_events_unmatched_total` | `events_unmatched_total` | counter | matching none of the subscription's filters |
//! | `relay_connects_total` | `connects_total` | counter | connection attempts |
//! | `relay_failures_total` | `failures_total` | counter | failed attempts and drops |
//! | `relay_reqs_sent_total` | `reqs_sent_total` | counter | historic REQs sent (pages included) |
//! | `relay_timeouts_total` | `timeouts_total` | counter | historic REQs that timed out |
//! | `relay_notices_total` | `notices_total` | counter | NOTICEs received |
//! | `relay_stale_inputs_total` | `stale_inputs_total` | counter | late answers to abandoned attempts |
//! | `relay_reconciliations_total` | `reconciliations_total` | counter | NIP-77 reconciliations completed (one per filter) |
//! | `relay_reconcile_ids_needed_total` | `reconcile_ids_needed_total` | counter | ids NIP-77 found missing (then fetched by id) |
//! | `relay_reconcile_fallbacks_total` | `reconcile_fallbacks_total` | counter | filters that fell back from NIP-77 to paged REQ |
//! | `relay_reconcile_declined_total` | `reconcile_declined_total` | counter | filters paged because reconciling them would not pay (empty local set, more missing than held) |
//! | `relay_refusals_total{reason}` | `refusals_total{reason}` | counter | refusals by reason (`rate-limited`, `restricted`, `notice`, …) |
//! | `relay_last_eose_timestamp_seconds` | `last_eose_timestamp_seconds` | gauge | last EOSE, when present; the total is the newest |
//! | `relay_frames_received_total` | `frames_received_total` | counter | websocket frames read (I/O) |
//! | `relay_event_frames_received_total` | `event_frames_received_total` | counter | `EVENT` frames read (I/O) |
//! | `relay_event_bytes_received_total` | `event_bytes_received_total` | counter | payload bytes of the `EVENT` frames read (I/O) |
//! | `relay_bytes_received_total` | `bytes_received_total` | counter | text frame payload bytes read (I/O) |
//! | `relay_bytes_sent_total` | `bytes_sent_total` | counter | text frame payload bytes queued for sending (I/O) |
//! | `relay_messages_malformed_total` | `messages_malformed_total` | counter | relay messages that could not be parsed (I/O) |
//! | `relay_frames_oversized_total` | `frames_oversized_total` | counter | frames over the size limit (I/O) |
//! | `relay_seen_cache_hits_total` | `seen_cache_hits_total` | counter | events dropped by the seen-id cache before verification (I/O) |
//! | `relay_send_queue_overflows_total` | `send_queue_overflows_total` | counter | connections dropped for a full send queue (I/O) |
//! | `relay_nip11_failures_total` | `nip11_failures_total` | counter | NIP-11 fetches that failed (I/O) |
//! | `relay_auth_attempts_total` | `auth_attempts_total` | counter | NIP-42 AUTH events sent (I/O) |
//!
//! Per relay only (a sum would mean nothing):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `relay_consecutive_failures` | gauge | current run of connection failures |
//! | `relay_retry_at_timestamp_seconds` | gauge | next connection attempt (backoff), when present |
//! | `relay_cooldown_until_timestamp_seconds` | gauge | rate-limit cool-down end, when present |
//! | `relay_last_connected_timestamp_seconds` | gauge | last time known connected, when present |
//! | `relay_next_resync_timestamp_seconds` | gauge | next daily re-sync, when present |
//! | `relay_last_event_timestamp_seconds{layer}` | gauge | newest `created_at` received per layer (`discovery`, `repo`, `root`), when present |
//! | `relay_learned_max_subscriptions` | gauge | subscription cap learned from refusals, when present |
//! | `relay_nip77_supported` | gauge | NIP-77 support: 1 supported, 0 unsupported (until the daily pass), no sample while unknown |
//! | `relay_budget_max_subscriptions` | gauge | planning budget: concurrent subscriptions |
//! | `relay_budget_max_filters_per_req` | gauge | planning budget: filters per REQ |
//! | `relay_budget_max_values_per_filter` | gauge | planning budget: values per tag list |
//! | `relay_budget_page_limit` | gauge | planning budget: `limit` of a historic page |
//! | `relay_budget_max_page_limit` | gauge | planning budget: largest `limit` asked for |
//!
//! Engine-wide (no labels):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `repos_tracked` | gauge | tracked repos |
//! | `roots_tracked` | gauge | known root events |
//! | `announcements_applied_total` | counter | announcements that added or replaced a repo |
//! | `announcements_stale_total` | counter | older than the version we have |
//! | `announcements_deleted_total` | counter | covered by a deletion request |
//! | `announcements_untracked_total` | counter | not listing the service (outside archive mode) |
//! | `announcements_invalid_total` | counter | could not be parsed |
//! | `roots_applied_total` | counter | root events recorded |
//! | `deletions_applied_total` | counter | repos and roots removed by deletion requests |
//! | `events_of_wrong_kind_total` | counter | events fed through the wrong input |
//! | `ignored_total` | counter | ignored URLs and announcements |
//! | `relays_over_cap_total` | counter | relays not added because of the relay cap |
//! | `relays_forgotten_total` | counter | empty relays closed and forgotten |
//! | `inputs_for_unknown_relays_total` | counter | inputs naming an unknown relay |
//! | `events_from_unknown_relays_total` | counter | events from unknown relays |
//!
//! I/O shell (no labels):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `connections_open` | gauge | websockets open |
//! | `verify_queue` | gauge | events waiting for signature verification |
//! | `store_inflight` | gauge | events handed to the store, not answered yet |
//! | `store_errors_total` | counter | store failures |
//! | `snapshot_saves_total` | counter | snapshots saved |
//! | `snapshot_failures_total` | counter | snapshot saves that failed |
//!
//! # Endpoint
//!
//! [`serve`] answers `GET /metrics` and `GET /` (and `HEAD`) with the text
//! from the driver, 503 when the driver does not answer within
//! [`DRIVER_TIMEOUT`], 405 for other methods and 404 for other paths. The
//! body is produced by `prometheus-client` (OpenMetrics text, ending in
//! `# EOF`, which the Prometheus text parser reads as a comment). It is
//! served as [`TEXT_CONTENT_TYPE`], or as [`OPENMETRICS_CONTENT_TYPE`] when
//! the scraper's `Accept` header asks for OpenMetrics (Prometheus does), so
//! that counter metadata is read correctly.

pub mod counters;
pub mod exposition;
pub mod server;
#[cfg(test)]
mod testutil;

pub use counters::{IoCounter, IoCounters, RelayIoCounters};
pub use exposition::render;
pub use server::{serve, DRIVER_TIMEOUT, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::testutil::{io, status};
    use super::*;

    /// Every metric name of the tables above: the backquoted first cell of
    /// each row, and the second cell of the rows of the per-relay table
    /// (their totals), without label names.
    fn documented() -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for line in include_str!("mod.rs").lines() {
            let Some(row) = line.strip_prefix("//! | `") else {
                continue;
            };
            let cells: Vec<&str> = row.split(" | ").collect();
            let totals = cells.len() == 4;
            for cell in cells.iter().take(if totals { 2 } else { 1 }) {
                let name = cell.trim_matches('`');
                let name = name.split('{').next().unwrap_or(name);
                names.insert(name.to_owned());
            }
        }
        names
    }

    /// Every family the exposition emits, as its samples are named
    /// (counters with `_total`), without the `grasp_sync_` prefix.
    fn emitted() -> BTreeSet<String> {
        render(&status(), &io())
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE grasp_sync_"))
            .map(|rest| match rest.split_once(' ') {
                Some((name, "counter")) => format!("{name}_total"),
                Some((name, _)) => name.to_owned(),
                None => rest.to_owned(),
            })
            .collect()
    }

    #[test]
    fn the_tables_name_every_metric_and_only_those() {
        let documented = documented();
        let emitted = emitted();
        assert!(
            documented.len() > 50,
            "the tables were read: {documented:?}"
        );
        let undocumented: Vec<_> = emitted.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "not in the tables: {undocumented:?}"
        );
        let missing: Vec<_> = documented.difference(&emitted).collect();
        assert!(missing.is_empty(), "documented, never emitted: {missing:?}");
        for &counter in IoCounter::ALL {
            let name = format!("relay_{}_total", counter.name());
            assert!(documented.contains(&name), "{name}");
        }
    }
}
