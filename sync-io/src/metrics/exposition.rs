//! The text exposition: [`render`] turns the engine's [`Status`] and the
//! shell's [`IoCounters`] into Prometheus/OpenMetrics text, every family
//! and sample in a fixed order. The metric definitions live here (the
//! per-relay ones in `RELAY_DEFS`, the I/O ones in [`IoCounter`]); the
//! module documentation of [`super`] is their table, and a test keeps the
//! two in step.

use std::collections::{BTreeMap, BTreeSet};

use grasp_sync_core::{
    GiveUpReason, Nip77Support, RefusalReason, RelayState, RelayStatus, RelayUrl, Status,
};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::counters::{IoCounter, IoCounters, RelayIoCounters};

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
        name: "reconcile_declined",
        help: "Filters paged because reconciling them would not pay",
        counter: true,
        total: Total::Sum("reconcile_declined"),
        get: |r, _| Some(r.stats.reconcile_declined),
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
    for &counter in IoCounter::ALL {
        let samples = io_relays
            .iter()
            .map(|url| {
                let c = io.per_relay.get(*url).unwrap_or(&empty_io);
                (labels(&[("relay", url.as_str())]), c.get(counter))
            })
            .collect();
        let (name, help) = (counter.name(), counter.help());
        out.family(&format!("relay_{name}"), help, true, samples);
        out.counter(
            name,
            &format!("{help}, summed over relays"),
            io_totals.get(counter),
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

#[cfg(test)]
mod tests {
    use grasp_sync_core::{Config, Engine, ServiceId};

    use super::*;
    use crate::metrics::testutil::{check_exposition, io, status, OTHER, RELAY};

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
}
