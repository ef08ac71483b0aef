//! Printing a [`Plan`]: a readable text table, or one JSON document.

use std::fmt::Write as _;

use grasp_sync_core::SubscriptionMode;
use nostr::filter::Filter;
use serde::Serialize;

use super::{Plan, PlannedSubscription};

/// The plan as one pretty-printed JSON document (with a trailing newline):
/// `{"service", "relays": [{"url", "repos", "root_events", "peak_open",
/// "max_subscriptions", "subscriptions": [{"id", "mode", "wave",
/// "filters"}]}], "ignored": [{"reason", "detail"}]}`.
pub fn json(plan: &Plan) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        service: &'a str,
        relays: Vec<Relay<'a>>,
        ignored: Vec<Ignored<'a>>,
    }
    #[derive(Serialize)]
    struct Relay<'a> {
        url: &'a str,
        repos: usize,
        root_events: usize,
        peak_open: usize,
        max_subscriptions: u32,
        subscriptions: Vec<Sub<'a>>,
    }
    #[derive(Serialize)]
    struct Sub<'a> {
        id: &'a str,
        mode: SubscriptionMode,
        wave: u32,
        filters: &'a [Filter],
    }
    #[derive(Serialize)]
    struct Ignored<'a> {
        reason: &'a str,
        detail: &'a str,
    }
    let doc = Doc {
        service: &plan.service,
        relays: plan
            .relays
            .iter()
            .map(|r| Relay {
                url: r.url.as_str(),
                repos: r.repos,
                root_events: r.root_events,
                peak_open: r.peak_open,
                max_subscriptions: r.max_subscriptions,
                subscriptions: r
                    .subscriptions
                    .iter()
                    .map(|s| Sub {
                        id: &s.id,
                        mode: s.mode,
                        wave: s.wave,
                        filters: &s.filters,
                    })
                    .collect(),
            })
            .collect(),
        ignored: plan
            .ignored
            .iter()
            .map(|i| Ignored {
                reason: &i.reason,
                detail: &i.detail,
            })
            .collect(),
    };
    let mut out = serde_json::to_string_pretty(&doc)
        .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()));
    out.push('\n');
    out
}

fn mode_str(mode: SubscriptionMode) -> &'static str {
    match mode {
        SubscriptionMode::Live => "live",
        SubscriptionMode::Historic => "historic",
    }
}

/// A filter as compact JSON.
fn filter_json(f: &Filter) -> String {
    serde_json::to_string(f).unwrap_or_else(|e| format!("<unprintable filter: {e}>"))
}

/// The plan as text: a table per relay (its subscriptions and their filters),
/// then the ignored items and a summary line.
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_text(&mut out, plan);
    out
}

fn write_text(out: &mut String, plan: &Plan) -> std::fmt::Result {
    writeln!(
        out,
        "Sync plan for {} at {} (Unix seconds)",
        plan.service, plan.now
    )?;
    writeln!(
        out,
        "Dry run: every relay connects at once and has no history, so each historic REQ ends at its first EOSE."
    )?;
    writeln!(
        out,
        "WAVE 1 opens when the relay connects; wave n + 1 when a REQ of wave n ends."
    )?;
    if plan.relays.is_empty() {
        writeln!(out, "\nNo relay to sync from.")?;
    }
    for relay in &plan.relays {
        writeln!(out)?;
        writeln!(
            out,
            "{}  (repos: {}, root events: {}, subscriptions: {}, at most {} open at once of {} allowed)",
            relay.url,
            relay.repos,
            relay.root_events,
            relay.subscriptions.len(),
            relay.peak_open,
            relay.max_subscriptions
        )?;
        if relay.subscriptions.is_empty() {
            writeln!(out, "  (no subscriptions)")?;
            continue;
        }
        let id_w = relay
            .subscriptions
            .iter()
            .map(|s| s.id.len())
            .chain(["SUBSCRIPTION".len()])
            .max()
            .unwrap_or(0);
        writeln!(
            out,
            "  {:<id_w$}  {:<8}  {:>4}  FILTERS",
            "SUBSCRIPTION", "MODE", "WAVE"
        )?;
        for sub in &relay.subscriptions {
            write_subscription(out, sub, id_w)?;
        }
    }
    if !plan.idle_relays.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "Known relays with nothing to sync (closed after the empty-relay grace period):"
        )?;
        for url in &plan.idle_relays {
            writeln!(out, "  {url}")?;
        }
    }
    writeln!(out)?;
    if plan.ignored.is_empty() {
        writeln!(out, "Ignored: nothing.")?;
    } else {
        writeln!(out, "Ignored ({}):", plan.ignored.len())?;
        let reason_w = plan
            .ignored
            .iter()
            .map(|i| i.reason.len())
            .chain(["REASON".len()])
            .max()
            .unwrap_or(0);
        writeln!(out, "  {:<reason_w$}  DETAIL", "REASON")?;
        for i in &plan.ignored {
            let times = if i.count > 1 {
                format!(" (seen {} times)", i.count)
            } else {
                String::new()
            };
            writeln!(out, "  {:<reason_w$}  {}{times}", i.reason, i.detail)?;
        }
    }
    let s = &plan.summary;
    let subs: usize = plan.relays.iter().map(|r| r.subscriptions.len()).sum();
    let live: usize = plan
        .relays
        .iter()
        .flat_map(|r| &r.subscriptions)
        .filter(|s| s.mode == SubscriptionMode::Live)
        .count();
    writeln!(out)?;
    writeln!(
        out,
        "Summary: {} read, {} accepted ({}, {}, {}), {} not accepted, {} of other kinds not used, \
         {} skipped as invalid; {}, {} ({} live, {} historic).",
        count(s.read, "event", "events"),
        s.accepted(),
        count(s.announcements, "announcement", "announcements"),
        count(s.roots, "root event", "root events"),
        count(s.deletions, "deletion", "deletions"),
        s.not_accepted,
        s.other_kinds,
        s.skipped,
        count(plan.relays.len(), "relay", "relays"),
        count(subs, "subscription", "subscriptions"),
        live,
        subs - live
    )
}

/// `n` with the singular or plural noun.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn write_subscription(
    out: &mut String,
    sub: &PlannedSubscription,
    id_w: usize,
) -> std::fmt::Result {
    writeln!(
        out,
        "  {:<id_w$}  {:<8}  {:>4}  {}",
        sub.id,
        mode_str(sub.mode),
        sub.wave,
        sub.filters.len()
    )?;
    for f in &sub.filters {
        writeln!(out, "      {}", filter_json(f))?;
    }
    Ok(())
}
