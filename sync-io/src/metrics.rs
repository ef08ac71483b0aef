//! The Prometheus endpoint (spec section 9): the counters the I/O shell
//! keeps ([`IoCounters`]), the text exposition of the engine's
//! [`Status`] together with them ([`render`]), and a small HTTP server
//! ([`serve`]) that asks the driver loop for a fresh rendering on every
//! scrape (the driver owns the engine, so the server never touches it).
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
//! forgotten relay stay in the totals, see [`IoCounters::forget`]).
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

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use grasp_sync_core::{
    GiveUpReason, Nip77Support, RefusalReason, RelayState, RelayStatus, RelayUrl, Status,
};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

/// Counters the I/O shell keeps about one relay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayIoCounters {
    /// Websocket frames read.
    pub frames_received: u64,
    /// `EVENT` frames read.
    pub event_frames_received: u64,
    /// Payload bytes of the `EVENT` frames read.
    pub event_bytes_received: u64,
    /// Payload bytes of the text frames read.
    pub bytes_received: u64,
    /// Payload bytes of the text frames queued for sending.
    pub bytes_sent: u64,
    /// Relay messages that could not be parsed.
    pub messages_malformed: u64,
    /// Frames over the size limit.
    pub frames_oversized: u64,
    /// Events dropped by the seen-id cache before signature verification.
    pub seen_cache_hits: u64,
    /// Connections dropped because their send queue was full.
    pub send_queue_overflows: u64,
    /// NIP-11 fetches that failed (the engine got an empty document).
    pub nip11_failures: u64,
    /// NIP-42 AUTH events sent.
    pub auth_attempts: u64,
}

impl RelayIoCounters {
    /// Adds `other` to these counters (saturating).
    pub fn add(&mut self, other: &RelayIoCounters) {
        self.frames_received = self.frames_received.saturating_add(other.frames_received);
        self.event_frames_received = self
            .event_frames_received
            .saturating_add(other.event_frames_received);
        self.event_bytes_received = self
            .event_bytes_received
            .saturating_add(other.event_bytes_received);
        self.bytes_received = self.bytes_received.saturating_add(other.bytes_received);
        self.bytes_sent = self.bytes_sent.saturating_add(other.bytes_sent);
        self.messages_malformed = self
            .messages_malformed
            .saturating_add(other.messages_malformed);
        self.frames_oversized = self.frames_oversized.saturating_add(other.frames_oversized);
        self.seen_cache_hits = self.seen_cache_hits.saturating_add(other.seen_cache_hits);
        self.send_queue_overflows = self
            .send_queue_overflows
            .saturating_add(other.send_queue_overflows);
        self.nip11_failures = self.nip11_failures.saturating_add(other.nip11_failures);
        self.auth_attempts = self.auth_attempts.saturating_add(other.auth_attempts);
    }
}

/// Counters and gauges kept by the I/O shell (the engine keeps its own in
/// [`Status`]). The driver owns one and hands it to [`render`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Per relay.
    pub per_relay: BTreeMap<RelayUrl, RelayIoCounters>,
    /// Counters of relays removed with [`IoCounters::forget`], kept so that
    /// the totals never go down.
    pub retired: RelayIoCounters,
    /// Websockets open (gauge).
    pub connections_open: u64,
    /// Events waiting for signature verification (gauge).
    pub verify_queue: u64,
    /// Events handed to the store and not answered yet (gauge).
    pub store_inflight: u64,
    /// Store failures.
    pub store_errors: u64,
    /// Snapshots saved.
    pub snapshot_saves: u64,
    /// Snapshot saves that failed.
    pub snapshot_failures: u64,
}

impl IoCounters {
    /// The counters of `relay`, created on first use.
    pub fn relay(&mut self, relay: &RelayUrl) -> &mut RelayIoCounters {
        // Called per frame: clone the URL only the first time.
        if !self.per_relay.contains_key(relay) {
            self.per_relay
                .insert(relay.clone(), RelayIoCounters::default());
        }
        self.per_relay
            .get_mut(relay)
            .expect("the entry was inserted above")
    }

    /// Drops the per-relay series of a relay the engine forgot; its counts
    /// stay in the totals.
    pub fn forget(&mut self, relay: &RelayUrl) {
        if let Some(counters) = self.per_relay.remove(relay) {
            self.retired.add(&counters);
        }
    }

    /// The sum over every relay, forgotten ones included.
    pub fn totals(&self) -> RelayIoCounters {
        let mut total = self.retired.clone();
        for counters in self.per_relay.values() {
            total.add(counters);
        }
        total
    }
}

/// Content type of the Prometheus text format, used by default.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Content type of the OpenMetrics text format, used when the scraper asks
/// for it.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a scrape waits for the driver's rendering before answering 503.
pub const DRIVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Concurrent scrape connections; more are closed at once.
const MAX_CONNECTIONS: usize = 64;

/// A client must send its request head within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

type Labels = Vec<(String, String)>;

/// Escapes a label value for the text format (the encoder writes values as
/// they are).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), escape(v)))
        .collect()
}

/// How a per-relay metric is totalled.
#[derive(Clone, Copy)]
enum Total {
    /// `grasp_sync_<name>`: the sum over relays.
    Sum(&'static str),
    /// `grasp_sync_<name>`: the largest value over relays.
    Max(&'static str),
    /// No total.
    None,
}

/// A per-relay metric without extra labels.
struct Def {
    /// Name after `relay_`.
    name: &'static str,
    help: &'static str,
    counter: bool,
    total: Total,
    get: fn(&RelayStatus, &RelayIoCounters) -> Option<u64>,
}

fn secs(t: Option<grasp_sync_core::Time>) -> Option<u64> {
    t.map(|t| t.as_secs())
}

fn count_u64(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

fn n(v: usize) -> Option<u64> {
    Some(count_u64(v))
}

const RELAY_DEFS: &[Def] = &[
    Def {
        name: "bootstrap",
        help: "1 for a relay given by the operator",
        counter: false,
        total: Total::Sum("bootstrap_relays"),
        get: |r, _| Some(u64::from(r.bootstrap)),
    },
    Def {
        name: "targets",
        help: "Targets (discovery, repos and roots)",
        counter: false,
        total: Total::Sum("targets"),
        get: |r, _| n(r.targets),
    },
    Def {
        name: "repo_targets",
        help: "Repo targets",
        counter: false,
        total: Total::Sum("repo_targets"),
        get: |r, _| n(r.repos),
    },
    Def {
        name: "root_targets",
        help: "Root-event targets",
        counter: false,
        total: Total::Sum("root_targets"),
        get: |r, _| n(r.roots),
    },
    Def {
        name: "confirmed_targets",
        help: "Targets whose historic sync is confirmed",
        counter: false,
        total: Total::Sum("confirmed_targets"),
        get: |r, _| n(r.confirmed),
    },
    Def {
        name: "pending_targets",
        help: "Targets in historic work",
        counter: false,
        total: Total::Sum("pending_targets"),
        get: |r, _| n(r.pending),
    },
    Def {
        name: "open_subscriptions",
        help: "Subscriptions open (live and historic)",
        counter: false,
        total: Total::Sum("open_subscriptions"),
        get: |r, _| n(r.open_subscriptions),
    },
    Def {
        name: "queued_batches",
        help: "Historic batches waiting for a subscription slot",
        counter: false,
        total: Total::Sum("queued_batches"),
        get: |r, _| n(r.queued_batches),
    },
    Def {
        name: "live_uncovered_targets",
        help: "Targets without a live subscription (budget exhausted or refused)",
        counter: false,
        total: Total::Sum("live_uncovered_targets"),
        get: |r, _| n(r.live_uncovered),
    },
    Def {
        name: "events_received",
        help: "Valid events received for our subscriptions",
        counter: true,
        total: Total::Sum("events_received"),
        get: |r, _| Some(r.stats.events_received),
    },
    Def {
        name: "events_stored",
        help: "Events the store newly stored",
        counter: true,
        total: Total::Sum("events_stored"),
        get: |r, _| Some(r.stats.events_stored),
    },
    Def {
        name: "events_duplicate",
        help: "Events the store already had",
        counter: true,
        total: Total::Sum("events_duplicate"),
        get: |r, _| Some(r.stats.events_duplicate),
    },
    Def {
        name: "events_rejected",
        help: "Events the store refused",
        counter: true,
        total: Total::Sum("events_rejected"),
        get: |r, _| Some(r.stats.events_rejected),
    },
    Def {
        name: "events_invalid",
        help: "Events with a bad id or signature, or malformed",
        counter: true,
        total: Total::Sum("events_invalid"),
        get: |r, _| Some(r.stats.events_invalid),
    },
    Def {
        name: "events_unrequested",
        help: "Events for subscriptions we do not hold",
        counter: true,
        total: Total::Sum("events_unrequested"),
        get: |r, _| Some(r.stats.events_unrequested),
    },
    Def {
        name: "events_unmatched",
        help: "Events matching none of their subscription's filters",
        counter: true,
        total: Total::Sum("events_unmatched"),
        get: |r, _| Some(r.stats.events_unmatched),
    },
    Def {
        name: "connects",
        help: "Connection attempts",
        counter: true,
        total: Total::Sum("connects"),
        get: |r, _| Some(r.stats.connects),
    },
    Def {
        name: "failures",
        help: "Failed connection attempts and drops",
        counter: true,
        total: Total::Sum("failures"),
        get: |r, _| Some(r.stats.failures),
    },
    Def {
        name: "reqs_sent",
        help: "Historic REQs sent (pages included)",
        counter: true,
        total: Total::Sum("reqs_sent"),
        get: |r, _| Some(r.stats.reqs_sent),
    },
    Def {
        name: "timeouts",
        help: "Historic REQs that timed out",
        counter: true,
        total: Total::Sum("timeouts"),
        get: |r, _| Some(r.stats.timeouts),
    },
    Def {
        name: "notices",
        help: "NOTICEs received",
        counter: true,
        total: Total::Sum("notices"),
        get: |r, _| Some(r.stats.notices),
    },
    Def {
        name: "stale_inputs",
        help: "Inputs that no longer applied (late answers to abandoned attempts)",
        counter: true,
        total: Total::Sum("stale_inputs"),
        get: |r, _| Some(r.stats.stale_inputs),
    },
    Def {
        name: "reconciliations",
        help: "NIP-77 reconciliations completed (one per filter)",
        counter: true,
        total: Total::Sum("reconciliations"),
        get: |r, _| Some(r.stats.reconciliations),
    },
    Def {
        name: "reconcile_ids_needed",
        help: "Ids NIP-77 reconciliations found missing",
        counter: true,
        total: Total::Sum("reconcile_ids_needed"),
        get: |r, _| Some(r.stats.reconcile_ids_needed),
    },
    Def {
        name: "reconcile_fallbacks",
        help: "Filters that fell back from NIP-77 to paged REQ",
        counter: true,
        total: Total::Sum("reconcile_fallbacks"),
        get: |r, _| Some(r.stats.reconcile_fallbacks),
    },
    Def {
        name: "last_eose_timestamp_seconds",
        help: "Time of the last EOSE (unix seconds)",
        counter: false,
        total: Total::Max("last_eose_timestamp_seconds"),
        get: |r, _| secs(r.stats.last_eose),
    },
    Def {
        name: "consecutive_failures",
        help: "Current run of consecutive connection failures",
        counter: false,
        total: Total::None,
        get: |r, _| Some(u64::from(r.failures)),
    },
    Def {
        name: "retry_at_timestamp_seconds",
        help: "Next connection attempt after backoff (unix seconds)",
        counter: false,
        total: Total::None,
        get: |r, _| secs(r.retry_at),
    },
    Def {
        name: "cooldown_until_timestamp_seconds",
        help: "End of the rate-limit cool-down (unix seconds)",
        counter: false,
        total: Total::None,
        get: |r, _| secs(r.cooldown_until),
    },
    Def {
        name: "last_connected_timestamp_seconds",
        help: "Last time the relay was known connected (unix seconds)",
        counter: false,
        total: Total::None,
        get: |r, _| secs(r.last_connected),
    },
    Def {
        name: "next_resync_timestamp_seconds",
        help: "Next daily re-sync (unix seconds)",
        counter: false,
        total: Total::None,
        get: |r, _| secs(r.next_resync),
    },
    Def {
        name: "learned_max_subscriptions",
        help: "Subscription cap learned from refusals",
        counter: false,
        total: Total::None,
        get: |r, _| r.learned_max_subscriptions.map(u64::from),
    },
    Def {
        name: "nip77_supported",
        help: "NIP-77 support: 1 supported, 0 unsupported until the daily pass (no sample while unknown)",
        counter: false,
        total: Total::None,
        get: |r, _| match r.nip77 {
            Nip77Support::Unknown => None,
            Nip77Support::Supported => Some(1),
            Nip77Support::Unsupported => Some(0),
        },
    },
    Def {
        name: "budget_max_subscriptions",
        help: "Planning budget: concurrent subscriptions",
        counter: false,
        total: Total::None,
        get: |r, _| Some(u64::from(r.budget.max_subscriptions)),
    },
    Def {
        name: "budget_max_filters_per_req",
        help: "Planning budget: filters in one REQ",
        counter: false,
        total: Total::None,
        get: |r, _| Some(u64::from(r.budget.max_filters_per_req)),
    },
    Def {
        name: "budget_max_values_per_filter",
        help: "Planning budget: values in one tag list of a filter",
        counter: false,
        total: Total::None,
        get: |r, _| Some(u64::from(r.budget.max_values_per_filter)),
    },
    Def {
        name: "budget_page_limit",
        help: "Planning budget: explicit limit of a historic page",
        counter: false,
        total: Total::None,
        get: |r, _| Some(u64::from(r.budget.page_limit)),
    },
    Def {
        name: "budget_max_page_limit",
        help: "Planning budget: largest limit asked for",
        counter: false,
        total: Total::None,
        get: |r, _| Some(u64::from(r.budget.max_page_limit)),
    },
];

/// Reads one of a relay's I/O counters.
type IoGetter = fn(&RelayIoCounters) -> u64;

/// The I/O shell's per-relay counters: name after `relay_`, help, getter
/// (totalled from [`IoCounters::totals`]).
const IO_DEFS: &[(&str, &str, IoGetter)] = &[
    ("frames_received", "Websocket frames read", |c| {
        c.frames_received
    }),
    ("event_frames_received", "EVENT frames read", |c| {
        c.event_frames_received
    }),
    (
        "event_bytes_received",
        "Payload bytes of the EVENT frames read",
        |c| c.event_bytes_received,
    ),
    (
        "bytes_received",
        "Payload bytes of the text frames read",
        |c| c.bytes_received,
    ),
    (
        "bytes_sent",
        "Payload bytes of the text frames queued for sending",
        |c| c.bytes_sent,
    ),
    (
        "messages_malformed",
        "Relay messages that could not be parsed",
        |c| c.messages_malformed,
    ),
    ("frames_oversized", "Frames over the size limit", |c| {
        c.frames_oversized
    }),
    (
        "seen_cache_hits",
        "Events dropped by the seen-id cache before signature verification",
        |c| c.seen_cache_hits,
    ),
    (
        "send_queue_overflows",
        "Connections dropped because their send queue was full",
        |c| c.send_queue_overflows,
    ),
    ("nip11_failures", "NIP-11 fetches that failed", |c| {
        c.nip11_failures
    }),
    ("auth_attempts", "NIP-42 AUTH events sent", |c| {
        c.auth_attempts
    }),
];

/// One metric family with its samples in a fixed order (prometheus-client's
/// `Family` keeps a hash map, so its samples come out in a different order on
/// every scrape; this keeps the exposition stable and diffable).
#[derive(Debug)]
struct Series {
    counter: bool,
    /// Samples in output order; an empty label set is a plain sample.
    samples: Vec<(Labels, u64)>,
}

impl EncodeMetric for Series {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, value) in &self.samples {
            if labels.is_empty() {
                self.encode_value(&mut encoder, value)?;
            } else {
                let mut sample = encoder.encode_family(labels)?;
                self.encode_value(&mut sample, value)?;
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        if self.counter {
            MetricType::Counter
        } else {
            MetricType::Gauge
        }
    }
}

impl Series {
    fn encode_value(
        &self,
        encoder: &mut MetricEncoder,
        value: &u64,
    ) -> Result<(), std::fmt::Error> {
        if self.counter {
            encoder.encode_counter::<NoLabelSet, _, u64>(value, None)
        } else {
            encoder.encode_gauge(value)
        }
    }
}

/// A fresh registry and helpers to add families to it.
struct Out {
    registry: Registry,
}

impl Out {
    fn family(&mut self, name: &str, help: &str, counter: bool, samples: Vec<(Labels, u64)>) {
        self.registry
            .register(name, help, Series { counter, samples });
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, false, vec![(Labels::new(), value)]);
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, true, vec![(Labels::new(), value)]);
    }
}

/// Renders the engine's status and the shell's counters in the text
/// exposition format (see the module documentation for every metric).
/// Families and samples come out in a fixed order: relays sorted by URL,
/// enumerated labels in declaration order.
pub fn render(status: &Status, io: &IoCounters) -> String {
    let mut out = Out {
        registry: Registry::with_prefix("grasp_sync"),
    };
    let empty_io = RelayIoCounters::default();
    let relay_label = |r: &RelayStatus| labels(&[("relay", r.url.as_str())]);

    // Relay state, with the count per state as its total.
    let mut state = Vec::new();
    for r in &status.relays {
        for s in RelayState::ALL {
            state.push((
                labels(&[("relay", r.url.as_str()), ("state", s.as_str())]),
                u64::from(r.state == s),
            ));
        }
    }
    out.family(
        "relay_state",
        "Connection state of the relay (1 for the current state)",
        false,
        state,
    );
    let per_state = RelayState::ALL
        .iter()
        .map(|s| {
            let count = status.relays.iter().filter(|r| r.state == *s).count();
            (labels(&[("state", s.as_str())]), count_u64(count))
        })
        .collect();
    out.family("relays", "Relays per connection state", false, per_state);

    // Simple per-relay metrics and their totals.
    for def in RELAY_DEFS {
        let values: Vec<(Labels, u64)> = status
            .relays
            .iter()
            .filter_map(|r| {
                let io = io.per_relay.get(&r.url).unwrap_or(&empty_io);
                (def.get)(r, io).map(|v| (relay_label(r), v))
            })
            .collect();
        let vs = values.iter().map(|(_, v)| *v).collect::<Vec<_>>();
        out.family(
            &format!("relay_{}", def.name),
            def.help,
            def.counter,
            values,
        );
        match def.total {
            Total::Sum(name) => out.family(
                name,
                &format!("{}, summed over relays", def.help),
                def.counter,
                vec![(
                    Labels::new(),
                    vs.iter().fold(0u64, |a, v| a.saturating_add(*v)),
                )],
            ),
            Total::Max(name) => out.family(
                name,
                &format!("{}, newest over relays", def.help),
                def.counter,
                vs.iter()
                    .max()
                    .map(|m| (Labels::new(), *m))
                    .into_iter()
                    .collect(),
            ),
            Total::None => {}
        }
    }

    // Given-up targets by reason.
    let mut given_up = Vec::new();
    for r in &status.relays {
        for reason in GiveUpReason::ALL {
            given_up.push((
                labels(&[("relay", r.url.as_str()), ("reason", reason.as_str())]),
                count_u64(r.given_up.get(&reason).copied().unwrap_or(0)),
            ));
        }
    }
    out.family(
        "relay_given_up_targets",
        "Targets given up until the daily pass, by reason",
        false,
        given_up,
    );
    let given_up_total = GiveUpReason::ALL
        .iter()
        .map(|reason| {
            let sum = status
                .relays
                .iter()
                .map(|r| count_u64(r.given_up.get(reason).copied().unwrap_or(0)))
                .fold(0u64, u64::saturating_add);
            (labels(&[("reason", reason.as_str())]), sum)
        })
        .collect();
    out.family(
        "given_up_targets",
        "Targets given up until the daily pass, by reason, summed over relays",
        false,
        given_up_total,
    );

    // Refusals by reason.
    let mut refusals = Vec::new();
    let mut refusal_sums: BTreeMap<RefusalReason, u64> = BTreeMap::new();
    for r in &status.relays {
        for (reason, v) in &r.stats.refusals {
            refusals.push((
                labels(&[("relay", r.url.as_str()), ("reason", reason.as_str())]),
                *v,
            ));
            let sum = refusal_sums.entry(*reason).or_insert(0);
            *sum = sum.saturating_add(*v);
        }
    }
    out.family("relay_refusals", "Refusals seen, by reason", true, refusals);
    out.family(
        "refusals",
        "Refusals seen, by reason, summed over relays",
        true,
        refusal_sums
            .into_iter()
            .map(|(reason, v)| (labels(&[("reason", reason.as_str())]), v))
            .collect(),
    );

    // Newest created_at per layer.
    let mut last_event = Vec::new();
    for r in &status.relays {
        for (layer, t) in &r.last_event_at {
            last_event.push((
                labels(&[("relay", r.url.as_str()), ("layer", layer.as_str())]),
                *t,
            ));
        }
    }
    out.family(
        "relay_last_event_timestamp_seconds",
        "Newest created_at received, per layer (unix seconds)",
        false,
        last_event,
    );

    // The shell's per-relay counters: every relay the engine knows, and any
    // other the shell still counts.
    let io_relays: BTreeSet<&RelayUrl> = status
        .relays
        .iter()
        .map(|r| &r.url)
        .chain(io.per_relay.keys())
        .collect();
    let io_totals = io.totals();
    for (name, help, get) in IO_DEFS {
        let samples = io_relays
            .iter()
            .map(|url| {
                let c = io.per_relay.get(*url).unwrap_or(&empty_io);
                (labels(&[("relay", url.as_str())]), get(c))
            })
            .collect();
        out.family(&format!("relay_{name}"), help, true, samples);
        out.counter(
            name,
            &format!("{help}, summed over relays"),
            get(&io_totals),
        );
    }

    // Engine-wide.
    let c = &status.counters;
    out.gauge("repos_tracked", "Tracked repos", count_u64(status.repos));
    out.gauge(
        "roots_tracked",
        "Known root events",
        count_u64(status.roots),
    );
    for (name, help, v) in [
        (
            "announcements_applied",
            "Announcements that added or replaced a repo",
            c.announcements_applied,
        ),
        (
            "announcements_stale",
            "Announcements older than the version we have",
            c.announcements_stale,
        ),
        (
            "announcements_deleted",
            "Announcements covered by a deletion request",
            c.announcements_deleted,
        ),
        (
            "announcements_untracked",
            "Announcements that do not list the service (outside archive mode)",
            c.announcements_untracked,
        ),
        (
            "announcements_invalid",
            "Announcements that could not be parsed",
            c.announcements_invalid,
        ),
        ("roots_applied", "Root events recorded", c.roots_applied),
        (
            "deletions_applied",
            "Repos and roots removed by deletion requests",
            c.deletions_applied,
        ),
        (
            "events_of_wrong_kind",
            "Events fed through the wrong input",
            c.events_of_wrong_kind,
        ),
        ("ignored", "Ignored URLs and announcements", c.ignored_total),
        (
            "relays_over_cap",
            "Relays not added because the total relay cap was reached",
            c.relays_over_cap,
        ),
        (
            "relays_forgotten",
            "Empty relays closed and forgotten",
            c.relays_forgotten,
        ),
        (
            "inputs_for_unknown_relays",
            "Inputs naming a relay the engine does not know",
            c.inputs_for_unknown_relays,
        ),
        (
            "events_from_unknown_relays",
            "Events from relays the engine does not know",
            c.events_from_unknown_relays,
        ),
    ] {
        out.counter(name, help, v);
    }

    // The shell.
    out.gauge("connections_open", "Websockets open", io.connections_open);
    out.gauge(
        "verify_queue",
        "Events waiting for signature verification",
        io.verify_queue,
    );
    out.gauge(
        "store_inflight",
        "Events handed to the store and not answered yet",
        io.store_inflight,
    );
    out.counter("store_errors", "Store failures", io.store_errors);
    out.counter("snapshot_saves", "Snapshots saved", io.snapshot_saves);
    out.counter(
        "snapshot_failures",
        "Snapshot saves that failed",
        io.snapshot_failures,
    );

    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &out.registry);
    text
}

/// Serves the metrics endpoint on `addr` until `shutdown` becomes true (or
/// its sender is dropped). Each scrape sends a oneshot sender through
/// `requests`; the driver answers with [`render`]'s text. Returns the bound
/// address (so port 0 works) and the server task.
pub async fn serve(
    addr: SocketAddr,
    requests: mpsc::Sender<oneshot::Sender<String>>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    serve_with(addr, requests, shutdown, DRIVER_TIMEOUT).await
}

async fn serve_with(
    addr: SocketAddr,
    requests: mpsc::Sender<oneshot::Sender<String>>,
    mut shutdown: watch::Receiver<bool>,
    driver_timeout: Duration,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "metrics endpoint listening");
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if connections.len() >= MAX_CONNECTIONS {
                            tracing::debug!(%peer, "metrics: too many connections");
                            continue;
                        }
                        let requests = requests.clone();
                        connections.spawn(connection(stream, requests, driver_timeout));
                    }
                    Err(e) => {
                        // Out of descriptors and the like: do not spin.
                        tracing::warn!(error = %e, "metrics: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
        tracing::info!(addr = %local, "metrics endpoint stopped");
    });
    Ok((local, task))
}

async fn connection(
    stream: TcpStream,
    requests: mpsc::Sender<oneshot::Sender<String>>,
    driver_timeout: Duration,
) {
    let service = hyper::service::service_fn(move |req| {
        let requests = requests.clone();
        async move { Ok::<_, Infallible>(answer(req, &requests, driver_timeout).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "metrics connection");
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn answer(
    req: Request<Incoming>,
    requests: &mpsc::Sender<oneshot::Sender<String>>,
    driver_timeout: Duration,
) -> Response<Full<Bytes>> {
    if !matches!(req.uri().path(), "/metrics" | "/") {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let openmetrics = req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let rendered = tokio::time::timeout(driver_timeout, async {
        let (tx, rx) = oneshot::channel();
        requests.send(tx).await.ok()?;
        rx.await.ok()
    })
    .await
    .ok()
    .flatten();
    let Some(text) = rendered else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "metrics unavailable\n");
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(if openmetrics {
            OPENMETRICS_CONTENT_TYPE
        } else {
            TEXT_CONTENT_TYPE
        }),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use grasp_sync_core::{Config, Engine, Input, RelayInfo, ServiceId, Time};
    use std::collections::HashSet;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const RELAY: &str = "wss://relay.example.org";
    const OTHER: &str = "wss://other.example.net/path";

    fn status() -> Status {
        let mut config = Config::new(ServiceId::parse("git.example.com").unwrap());
        config.bootstrap.push(RelayUrl::parse(RELAY).unwrap());
        config.bootstrap.push(RelayUrl::parse(OTHER).unwrap());
        let mut engine = Engine::new(config);
        let now = Time::from_secs(1_700_000_000);
        engine.handle_input(now, Input::Tick);
        while engine.poll_command().is_some() {}
        let relay = RelayUrl::parse(RELAY).unwrap();
        let info = RelayInfo {
            max_subscriptions: Some(5),
            max_limit: Some(200),
            ..RelayInfo::default()
        };
        engine.handle_input(
            now,
            Input::RelayInfo {
                relay: &relay,
                info,
            },
        );
        engine.handle_input(now, Input::Connected { relay: &relay });
        engine.handle_input(
            now,
            Input::Notice {
                relay: &relay,
                message: "hello",
            },
        );
        let other = RelayUrl::parse(OTHER).unwrap();
        engine.handle_input(
            now,
            Input::ConnectFailed {
                relay: &other,
                reason: "refused",
            },
        );
        while engine.poll_command().is_some() {}
        engine.status()
    }

    fn io() -> IoCounters {
        let mut io = IoCounters {
            connections_open: 1,
            verify_queue: 3,
            snapshot_saves: 2,
            ..IoCounters::default()
        };
        io.relay(&RelayUrl::parse(RELAY).unwrap()).frames_received = 12;
        io.relay(&RelayUrl::parse(OTHER).unwrap()).nip11_failures = 1;
        let gone = RelayUrl::parse("wss://gone.example.com").unwrap();
        io.relay(&gone).frames_received = 5;
        io.forget(&gone);
        io
    }

    /// A sample line: name, labels (raw text between the braces), value.
    fn parse_sample(line: &str) -> (String, String, f64) {
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i..]),
            None => {
                let (name, value) = line.split_once(' ').expect("name value");
                return (name.to_string(), String::new(), value.parse().unwrap());
            }
        };
        // Find the closing brace outside quoted values.
        let mut in_quotes = false;
        let mut escaped = false;
        let mut end = None;
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                '}' if !in_quotes => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.expect("closing brace");
        let labels = &rest[1..end];
        let value = rest[end + 1..]
            .strip_prefix(' ')
            .expect("space before value");
        (
            name.to_string(),
            labels.to_string(),
            value.parse().unwrap_or_else(|_| panic!("value in {line}")),
        )
    }

    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// Checks the exposition's shape and returns `sample line → value`.
    fn check_exposition(text: &str) -> BTreeMap<String, f64> {
        let mut families: BTreeMap<String, String> = BTreeMap::new();
        let mut helps = HashSet::new();
        let mut samples = BTreeMap::new();
        let mut current: Option<(String, String)> = None;
        assert!(text.ends_with("# EOF\n"));
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.is_empty(), "{line}");
                assert!(helps.insert(name.to_string()), "HELP twice: {name}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(valid_name(name), "{name}");
                assert!(name.starts_with("grasp_sync_"), "{name}");
                assert!(helps.contains(name), "TYPE without HELP: {name}");
                assert!(
                    families
                        .insert(name.to_string(), kind.to_string())
                        .is_none(),
                    "family twice: {name}"
                );
                current = Some((name.to_string(), kind.to_string()));
            } else if line == "# EOF" {
            } else {
                assert!(!line.starts_with('#'), "{line}");
                let (name, labels, value) = parse_sample(line);
                let (family, kind) = current.clone().expect("sample after TYPE");
                match kind.as_str() {
                    "counter" => assert_eq!(name, format!("{family}_total"), "{line}"),
                    "gauge" => assert_eq!(name, family, "{line}"),
                    other => panic!("unexpected type {other}"),
                }
                assert!(value >= 0.0, "{line}");
                let key = format!("{name}{{{labels}}}");
                assert!(samples.insert(key, value).is_none(), "sample twice: {line}");
            }
        }
        // Per-relay and total families never share a name.
        let names: HashSet<_> = families.keys().collect();
        assert_eq!(names.len(), families.len());
        samples
    }

    #[test]
    fn renders_a_real_engine_status() {
        let status = status();
        let text = render(&status, &io());
        let samples = check_exposition(&text);
        assert_eq!(text, render(&status, &io()), "the output is stable");
        let get = |key: &str| -> f64 {
            *samples
                .get(key)
                .unwrap_or_else(|| panic!("missing {key} in\n{text}"))
        };
        let relay = status
            .relays
            .iter()
            .find(|r| r.url.as_str() == RELAY)
            .unwrap();
        let current = relay.state.as_str();
        assert!(matches!(
            relay.state,
            RelayState::Syncing | RelayState::Live
        ));
        for s in RelayState::ALL {
            let expected = if s.as_str() == current { 1.0 } else { 0.0 };
            assert_eq!(
                get(&format!(
                    r#"grasp_sync_relay_state{{relay="{RELAY}",state="{}"}}"#,
                    s.as_str()
                )),
                expected
            );
        }
        assert_eq!(get(r#"grasp_sync_relays{state="disconnected"}"#), 1.0);
        assert_eq!(
            get(&format!(r#"grasp_sync_relays{{state="{current}"}}"#)),
            1.0
        );
        assert_eq!(
            get(&format!(r#"grasp_sync_relay_bootstrap{{relay="{RELAY}"}}"#)),
            1.0
        );
        assert_eq!(get("grasp_sync_bootstrap_relays{}"), 2.0);
        assert_eq!(
            get(&format!(r#"grasp_sync_relay_targets{{relay="{RELAY}"}}"#)),
            relay.targets as f64
        );
        assert_eq!(
            get(&format!(
                r#"grasp_sync_relay_open_subscriptions{{relay="{RELAY}"}}"#
            )),
            relay.open_subscriptions as f64
        );
        assert!(relay.open_subscriptions > 0);
        assert_eq!(
            get("grasp_sync_open_subscriptions{}"),
            status.totals.open_subscriptions as f64
        );
        assert_eq!(
            get(&format!(
                r#"grasp_sync_relay_notices_total{{relay="{RELAY}"}}"#
            )),
            1.0
        );
        assert_eq!(get("grasp_sync_notices_total{}"), 1.0);
        assert_eq!(get("grasp_sync_connects_total{}"), 2.0);
        assert_eq!(get("grasp_sync_failures_total{}"), 1.0);
        assert_eq!(
            get(&format!(
                r#"grasp_sync_relay_budget_max_subscriptions{{relay="{RELAY}"}}"#
            )),
            5.0
        );
        assert_eq!(
            get(&format!(
                r#"grasp_sync_relay_budget_page_limit{{relay="{RELAY}"}}"#
            )),
            200.0
        );
        assert_eq!(
            get(&format!(
                r#"grasp_sync_relay_last_connected_timestamp_seconds{{relay="{RELAY}"}}"#
            )),
            1_700_000_000.0
        );
        // The failed relay waits for its backoff; the connected one does not.
        let retry = get(&format!(
            r#"grasp_sync_relay_retry_at_timestamp_seconds{{relay="{OTHER}"}}"#
        ));
        assert!(retry > 1_700_000_000.0, "{retry}");
        assert!(!samples.contains_key(&format!(
            r#"grasp_sync_relay_retry_at_timestamp_seconds{{relay="{RELAY}"}}"#
        )));
        assert_eq!(
            get(&format!(
                r#"grasp_sync_relay_consecutive_failures{{relay="{OTHER}"}}"#
            )),
            1.0
        );
        assert_eq!(
            get(&format!(
                r#"grasp_sync_relay_given_up_targets{{relay="{RELAY}",reason="auth-required"}}"#
            )),
            0.0
        );
        assert_eq!(get(r#"grasp_sync_given_up_targets{reason="refused"}"#), 0.0);
        // Engine-wide.
        assert_eq!(get("grasp_sync_repos_tracked{}"), 0.0);
        assert_eq!(get("grasp_sync_announcements_applied_total{}"), 0.0);
        assert_eq!(get("grasp_sync_relays_over_cap_total{}"), 0.0);
        // The shell: per relay, totals with a forgotten relay, globals.
        assert_eq!(
            get(&format!(
                r#"grasp_sync_relay_frames_received_total{{relay="{RELAY}"}}"#
            )),
            12.0
        );
        assert_eq!(get("grasp_sync_frames_received_total{}"), 17.0);
        assert_eq!(
            get(&format!(
                r#"grasp_sync_relay_nip11_failures_total{{relay="{OTHER}"}}"#
            )),
            1.0
        );
        assert_eq!(get("grasp_sync_connections_open{}"), 1.0);
        assert_eq!(get("grasp_sync_verify_queue{}"), 3.0);
        assert_eq!(get("grasp_sync_snapshot_saves_total{}"), 2.0);
        assert!(
            text.contains("# HELP grasp_sync_relay_events_stored Events the store newly stored.\n")
        );
        assert!(text.contains("# TYPE grasp_sync_relay_events_stored counter\n"));
        // Every documented family is there.
        for family in [
            "relay_last_eose_timestamp_seconds",
            "last_eose_timestamp_seconds",
            "relay_cooldown_until_timestamp_seconds",
            "relay_learned_max_subscriptions",
            "relay_last_event_timestamp_seconds",
            "refusals",
            "relay_refusals",
            "store_inflight",
            "store_errors",
            "snapshot_failures",
            "events_from_unknown_relays",
        ] {
            assert!(
                text.contains(&format!("# TYPE grasp_sync_{family} ")),
                "{family}"
            );
        }
    }

    #[test]
    fn empty_status_renders() {
        let engine = Engine::new(Config::new(ServiceId::parse("git.example.com").unwrap()));
        let text = render(&engine.status(), &IoCounters::default());
        let samples = check_exposition(&text);
        assert_eq!(
            samples.get(r#"grasp_sync_relays{state="live"}"#),
            Some(&0.0)
        );
        assert_eq!(
            samples.get("grasp_sync_events_received_total{}"),
            Some(&0.0)
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
        // Refusal reasons are a closed set now (no free text reaches a
        // label); a NIP-77 protocol failure is one fixed label.
        let mut status = status();
        status.relays[0]
            .stats
            .refusals
            .insert(RefusalReason::Nip77Protocol, 2);
        let text = render(&status, &IoCounters::default());
        let samples = check_exposition(&text);
        let key = format!(
            r#"grasp_sync_relay_refusals_total{{relay="{}",reason="nip77-protocol"}}"#,
            status.relays[0].url
        );
        assert_eq!(samples.get(&key), Some(&2.0), "{text}");
    }

    #[test]
    fn io_totals_survive_forget() {
        let mut io = IoCounters::default();
        let url = RelayUrl::parse(RELAY).unwrap();
        io.relay(&url).auth_attempts = 2;
        io.relay(&url).auth_attempts += 1;
        assert_eq!(io.totals().auth_attempts, 3);
        io.forget(&url);
        assert!(io.per_relay.is_empty());
        assert_eq!(io.totals().auth_attempts, 3);
    }

    /// A fake driver: answers every request with `body`, counting them.
    fn driver(body: &'static str) -> mpsc::Sender<oneshot::Sender<String>> {
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<String>>(4);
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(body.to_string());
            }
        });
        tx
    }

    async fn get(addr: SocketAddr, request: &str) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
            .await
            .expect("response in time")
            .unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    fn request(method: &str, path: &str, extra: &str) -> String {
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn serves_metrics_from_the_driver() {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), driver("m 1\n"), stop_rx)
            .await
            .unwrap();
        assert_ne!(addr.port(), 0);
        for path in ["/metrics", "/"] {
            let (status, head, body) = get(addr, &request("GET", path, "")).await;
            assert_eq!(status, 200);
            assert!(
                head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
                "{head}"
            );
            assert_eq!(body, "m 1\n");
        }
        let (status, head, _) = get(
            addr,
            &request(
                "GET",
                "/metrics",
                "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n",
            ),
        )
        .await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{head}"
        );
        let (status, _, body) = get(addr, &request("GET", "/nope", "")).await;
        assert_eq!(status, 404);
        assert_eq!(body, "not found\n");
        let (status, head, _) =
            get(addr, &request("POST", "/metrics", "Content-Length: 0\r\n")).await;
        assert_eq!(status, 405);
        assert!(head.contains("allow: get, head"), "{head}");

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("server stops")
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn real_rendering_over_http() {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<String>>(1);
        let status = status();
        let io = io();
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(render(&status, &io));
            }
        });
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), tx, stop_rx)
            .await
            .unwrap();
        let (code, _, body) = get(addr, &request("GET", "/metrics", "")).await;
        assert_eq!(code, 200);
        let samples = check_exposition(&body);
        assert_eq!(
            samples.get("grasp_sync_frames_received_total{}"),
            Some(&17.0)
        );
        drop(stop_tx); // a dropped sender stops the server too
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("server stops")
            .unwrap();
    }

    #[tokio::test]
    async fn silent_or_gone_driver_gives_503() {
        let (_stop_tx, stop_rx) = watch::channel(false);
        // A driver that takes requests and never answers them.
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<String>>(4);
        let hoard = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Some(reply) = rx.recv().await {
                kept.push(reply);
            }
        });
        let (addr, _task) = serve_with(
            "127.0.0.1:0".parse().unwrap(),
            tx,
            stop_rx.clone(),
            Duration::from_millis(200),
        )
        .await
        .unwrap();
        let (status, _, body) = get(addr, &request("GET", "/metrics", "")).await;
        assert_eq!(status, 503);
        assert_eq!(body, "metrics unavailable\n");
        hoard.abort();

        // A driver that is gone: 503 at once.
        let (tx, rx) = mpsc::channel::<oneshot::Sender<String>>(1);
        drop(rx);
        let (addr, _task) = serve("127.0.0.1:0".parse().unwrap(), tx, stop_rx)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let (status, _, _) = get(addr, &request("GET", "/metrics", "")).await;
        assert_eq!(status, 503);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
