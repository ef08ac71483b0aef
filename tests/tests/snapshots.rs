//! Snapshots of the subscriptions the engine plans (spec sections 3, 4, 6).
//!
//! Each test drives the engine through a named scenario and renders every
//! command it emits as one line of text:
//!
//! ```text
//! wss://relay subscribe hist-2 historic [{"kinds":[30617],"limit":500}, ...]
//! ```
//!
//! Filters are shown as `Filter::as_json()`. Value lists longer than
//! [`SHOWN_VALUES`] are shortened to their first and last values with a count,
//! and such a line ends with an FNV-1a digest of the full, unshortened filter
//! JSON, so any change to an elided value still changes the snapshot. Besides
//! the snapshot, each test asserts the budget rules it is about.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use grasp_sync_core::{Command, Input, RelayInfo, RelayUrl, SubscriptionMode};
use grasp_sync_sim::fixtures::{announcement, config, coord, root, url, Driver, T0};
use nostr::filter::Filter;
use nostr::message::SubscriptionId;

/// The one remote relay of every scenario.
const RELAY: &str = "wss://relay.example.org";

/// Value lists longer than this are shortened in the rendering.
const SHOWN_VALUES: usize = 4;

// ----- rendering -------------------------------------------------------------

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A filter's JSON with long value lists shortened; `true` when something was.
fn show_filter(f: &Filter) -> (String, bool) {
    let json = f.as_json();
    let mut out = String::with_capacity(json.len());
    let mut rest = json.as_str();
    let mut elided = false;
    // Filters hold flat arrays only (kinds, tag values), so each `[` pairs with
    // the next `]` outside a string.
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..=open]);
        let close = array_end(&rest[open..])
            .map(|i| open + i)
            .expect("balanced filter JSON");
        let inner = &rest[open..=close];
        let values: Vec<serde_json::Value> = serde_json::from_str(inner).expect("flat JSON array");
        let text = |v: &serde_json::Value| v.to_string();
        if values.len() > SHOWN_VALUES {
            elided = true;
            let _ = write!(
                out,
                "{},{},…{} more…,{}",
                text(&values[0]),
                text(&values[1]),
                values.len() - 3,
                text(&values[values.len() - 1])
            );
        } else {
            out.push_str(&inner[1..inner.len() - 1]);
        }
        out.push(']');
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    (out, elided)
}

/// Index of the `]` closing the array that starts at `s[0]`, skipping strings.
fn array_end(s: &str) -> Option<usize> {
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_str => escaped = true,
            '"' => in_str = !in_str,
            ']' if !in_str => return Some(i),
            _ => {}
        }
    }
    None
}

fn mode_name(mode: SubscriptionMode) -> &'static str {
    match mode {
        SubscriptionMode::Live => "live",
        SubscriptionMode::Historic => "historic",
    }
}

/// One command as one line.
fn line(c: &Command) -> String {
    match c {
        Command::FetchRelayInfo { relay } => format!("{relay} fetch-relay-info"),
        Command::Connect { relay } => format!("{relay} connect"),
        Command::Disconnect { relay } => format!("{relay} disconnect"),
        Command::Unsubscribe {
            relay,
            subscription,
        } => format!("{relay} unsubscribe {subscription}"),
        Command::Authenticate { relay, challenge } => {
            format!("{relay} authenticate {challenge:?}")
        }
        Command::QueryLocalItems {
            relay,
            request,
            filter,
        } => format!(
            "{relay} query-local-items {request} {}",
            show_filter(filter).0
        ),
        Command::NegOpen {
            relay,
            subscription,
            filter,
            message,
        } => format!(
            "{relay} neg-open {subscription} {} ({} hex chars)",
            show_filter(filter).0,
            message.len()
        ),
        Command::NegMsg {
            relay,
            subscription,
            message,
        } => format!(
            "{relay} neg-msg {subscription} ({} hex chars)",
            message.len()
        ),
        Command::NegClose {
            relay,
            subscription,
        } => format!("{relay} neg-close {subscription}"),
        Command::Subscribe {
            relay,
            subscription,
            filters,
            mode,
        } => {
            let mut any_elided = false;
            let shown: Vec<String> = filters
                .iter()
                .map(|f| {
                    let (s, elided) = show_filter(f);
                    any_elided |= elided;
                    s
                })
                .collect();
            let mut l = format!(
                "{relay} subscribe {subscription} {} [{}]",
                mode_name(*mode),
                shown.join(", ")
            );
            if any_elided {
                let full: Vec<String> = filters.iter().map(Filter::as_json).collect();
                let _ = write!(l, " fnv={:016x}", fnv1a(&full.join(",")));
            }
            l
        }
    }
}

// ----- budget checks ---------------------------------------------------------

/// Subscriptions open per relay, followed command by command.
#[derive(Default)]
struct OpenSubs {
    open: BTreeMap<RelayUrl, BTreeSet<SubscriptionId>>,
    /// The most ever open at once on any relay.
    peak: usize,
}

impl OpenSubs {
    fn feed(&mut self, c: &Command) {
        match c {
            Command::Subscribe {
                relay,
                subscription,
                ..
            } => {
                // A REQ with an id already open replaces it: no new slot.
                let set = self.open.entry(relay.clone()).or_default();
                set.insert(subscription.clone());
                self.peak = self.peak.max(set.len());
            }
            Command::Unsubscribe {
                relay,
                subscription,
            } => {
                let closed = self
                    .open
                    .get_mut(relay)
                    .is_some_and(|s| s.remove(subscription));
                assert!(
                    closed,
                    "CLOSE of a subscription that is not open: {}",
                    line(c)
                );
            }
            Command::Disconnect { relay } => self.lost(relay),
            _ => {}
        }
    }

    /// The connection is gone, and with it every subscription.
    fn lost(&mut self, relay: &RelayUrl) {
        self.open.remove(relay);
    }

    fn count(&self, relay: &RelayUrl) -> usize {
        self.open.get(relay).map_or(0, BTreeSet::len)
    }
}

/// The largest value list of a filter (tag values, ids, kinds, authors).
fn values_in(f: &Filter) -> usize {
    let v: serde_json::Value = serde_json::from_str(&f.as_json()).expect("filter JSON");
    v.as_object()
        .expect("filter is an object")
        .values()
        .filter_map(|x| x.as_array().map(Vec::len))
        .max()
        .unwrap_or(0)
}

/// Asserts the default packing budget (section 6) on every REQ.
fn assert_packed(cs: &[Command], max_filters: usize, max_values: usize) {
    for c in cs {
        if let Command::Subscribe { filters, .. } = c {
            assert!(
                !filters.is_empty() && filters.len() <= max_filters,
                "{} filters in one REQ: {}",
                filters.len(),
                line(c)
            );
            for f in filters {
                assert!(
                    values_in(f) <= max_values,
                    "over {max_values} values in {}",
                    f.as_json()
                );
            }
        }
    }
}

fn is_historic(c: &Command) -> bool {
    matches!(
        c,
        Command::Subscribe {
            mode: SubscriptionMode::Historic,
            ..
        }
    )
}

fn is_live(c: &Command) -> bool {
    matches!(
        c,
        Command::Subscribe {
            mode: SubscriptionMode::Live,
            ..
        }
    )
}

// ----- a recorded scenario ---------------------------------------------------

/// A driver that renders every step into a transcript and follows open
/// subscriptions.
struct Scenario {
    d: Driver,
    text: String,
    subs: OpenSubs,
}

impl Scenario {
    fn new() -> Self {
        // Transcripts of the paged planner (NIP-77 has its own tests).
        let mut config = config();
        config.nip77 = false;
        Scenario {
            d: Driver::new(config),
            text: String::new(),
            subs: OpenSubs::default(),
        }
    }

    /// Records one step: a heading with the time, then its commands.
    fn record(&mut self, title: &str, cs: &[Command]) {
        let at = self.d.now.as_secs();
        let _ = writeln!(self.text, "## t=T0+{}s ({at}) {title}", at - T0);
        for c in cs {
            self.subs.feed(c);
            let _ = writeln!(self.text, "{}", line(c));
        }
        if cs.is_empty() {
            self.text.push_str("(no commands)\n");
        }
    }

    /// Feeds one input, records and returns its commands.
    fn input(&mut self, title: &str, input: Input<'_>) -> Vec<Command> {
        if let Input::Disconnected { relay, .. } = &input {
            self.subs.lost(relay);
        }
        let cs = self.d.input(input);
        self.record(title, &cs);
        cs
    }

    /// Answers EOSE to every historic REQ in `cs` and to every one that
    /// follows (an empty relay), one step per EOSE; returns every command.
    fn eose_all(&mut self, cs: &[Command]) -> Vec<Command> {
        let mut todo: VecDeque<(RelayUrl, SubscriptionId)> = VecDeque::new();
        let push = |todo: &mut VecDeque<_>, cs: &[Command]| {
            for c in cs {
                if let Command::Subscribe {
                    relay,
                    subscription,
                    mode: SubscriptionMode::Historic,
                    ..
                } = c
                {
                    todo.push_back((relay.clone(), subscription.clone()));
                }
            }
        };
        push(&mut todo, cs);
        let mut all = Vec::new();
        while let Some((relay, sub)) = todo.pop_front() {
            let out = self.input(
                &format!("EOSE {relay} {sub}"),
                Input::Eose {
                    relay: &relay,
                    subscription: &sub,
                },
            );
            push(&mut todo, &out);
            all.extend(out);
        }
        all
    }
}

fn tracked(author: u32, d: &str) -> nostr::event::Event {
    announcement(author, d, T0 - 3600, &[RELAY], true)
}

// ----- scenarios -------------------------------------------------------------

/// One announcement listing one relay: the relay is connected; on `Connected`
/// one live REQ (`since` = now less the live margin, `limit:0`) and one historic REQ (explicit
/// `limit:500`) carry the discovery filter `{"kinds":[30617]}` and the four
/// repo filters (`30618`+`#d`, `#a`, `#A`, `#q`); an empty page (EOSE) confirms
/// the repo and the historic REQ is closed while the live one stays open.
/// Every target of `relay` confirmed: `n` of them (discovery included).
fn assert_confirmed(s: &Scenario, relay: &RelayUrl, n: usize, what: &str) {
    let confirmed = s.d.engine.confirmed_targets(relay).expect("relay known");
    assert_eq!(confirmed.len(), n, "{what}");
}

/// Never more than `max` subscriptions open at once on the relay.
fn assert_peak(s: &Scenario, max: usize) {
    assert!(
        s.subs.peak <= max,
        "{} subscriptions open at once",
        s.subs.peak
    );
}

#[test]
fn one_repo() {
    let mut s = Scenario::new();
    let relay = url(RELAY);
    let ann = tracked(1, "repo");
    let cs = s.input("announcement 30617:<1>:repo", Input::CatalogEvent(&ann));
    assert!(cs.iter().any(|c| matches!(c, Command::Connect { .. })));
    let cs = s.input("connected", Input::Connected { relay: &relay });
    assert_eq!(cs.iter().filter(|c| is_live(c)).count(), 1);
    assert_eq!(cs.iter().filter(|c| is_historic(c)).count(), 1);
    assert_packed(&cs, 10, 100);
    for c in &cs {
        if let Command::Subscribe { filters, mode, .. } = c {
            for f in filters {
                match mode {
                    SubscriptionMode::Live => {
                        assert_eq!(f.limit, Some(0), "{}", f.as_json());
                        assert!(f.since.is_some(), "{}", f.as_json());
                    }
                    SubscriptionMode::Historic => {
                        assert_eq!(f.limit, Some(500), "{}", f.as_json());
                        assert!(f.since.is_none() && f.until.is_none(), "{}", f.as_json());
                    }
                }
            }
        }
    }
    s.eose_all(&cs);
    assert_eq!(
        s.subs.count(&relay),
        1,
        "only the live subscription stays open"
    );
    let confirmed = s.d.engine.confirmed_targets(&relay).expect("relay known");
    assert_eq!(confirmed.len(), 2, "discovery and the repo are confirmed");
    insta::assert_snapshot!(s.text);
}

/// 300 repos on one relay, ingested before it connects: on `Connected` the
/// plan packs 100 values per filter and at most 10 filters per REQ, so 300
/// repos take two live REQs and two historic REQs (not 300 of each), and the
/// relay never holds more than 10 subscriptions; EOSE on an empty relay closes
/// both historic REQs and leaves the two live ones.
#[test]
fn three_hundred_repos_on_one_relay() {
    let mut s = Scenario::new();
    let relay = url(RELAY);
    let anns: Vec<_> = (0..300u32)
        .map(|i| tracked(1000 + i, &format!("repo-{i:03}")))
        .collect();
    let mut ingest = Vec::new();
    for a in &anns {
        ingest.extend(s.d.input(Input::CatalogEvent(a)));
    }
    s.record(
        "300 announcements ingested (relay not yet connected)",
        &ingest,
    );
    let cs = s.input("connected", Input::Connected { relay: &relay });
    let drained = s.eose_all(&cs);
    let all: Vec<Command> = cs.iter().chain(&drained).cloned().collect();
    assert_packed(&all, 10, 100);
    assert_peak(&s, 10);
    let reqs: BTreeSet<_> = all
        .iter()
        .filter_map(|c| match c {
            Command::Subscribe { subscription, .. } => Some(subscription.clone()),
            _ => None,
        })
        .collect();
    assert!(
        reqs.len() <= 4,
        "300 repos planned as {} subscriptions",
        reqs.len()
    );
    assert_confirmed(&s, &relay, 301, "every repo and discovery are confirmed");
    insta::assert_snapshot!(s.text);
}

/// One synced repo, then 30 root events (patches, PRs, issues) arriving while
/// the relay is live, in three bursts of 10. The engine waits the batch delay
/// after new work, so each burst costs exactly one new historic REQ
/// (`#e`/`#E`/`#q` over that burst's ids, `limit:500`) and one live
/// subscription change: the burst's roots go to a small tail live group (at
/// most 10 values per filter), so the dense live group of the repo is never
/// resent. Never one REQ per root, never a resend of the repo's history, and
/// nothing at all until the batch delay has passed.
#[test]
fn repo_with_thirty_root_events() {
    let mut s = Scenario::new();
    let relay = url(RELAY);
    let ann = tracked(1, "repo");
    s.input("announcement 30617:<1>:repo", Input::CatalogEvent(&ann));
    let cs = s.input("connected", Input::Connected { relay: &relay });
    s.eose_all(&cs);
    let repo = coord(1, "repo");
    let kinds = [1617u16, 1618, 1621];
    let roots: Vec<_> = (0..30u32)
        .map(|i| {
            let kind = kinds[i as usize % kinds.len()];
            root(
                kind,
                100 + i,
                T0 - 600 + u64::from(i),
                &repo,
                &format!("root {i}"),
            )
        })
        .collect();
    let batch_delay = s.d.engine.config().timing.batch_delay;
    for (b, burst) in roots.chunks(10).enumerate() {
        let cs = s.d.advance(Duration::from_secs(10));
        s.record("10 s later", &cs);
        let mut immediate = Vec::new();
        for r in burst {
            immediate.extend(s.d.input(Input::CatalogEvent(r)));
        }
        let ids: Vec<String> = burst
            .iter()
            .map(|r| format!("{}:{}", r.kind.as_u16(), &r.id.to_hex()[..8]))
            .collect();
        s.record(
            &format!("burst {}: roots {}", b + 1, ids.join(" ")),
            &immediate,
        );
        assert!(immediate.is_empty(), "new work waits the batch delay");
        let cs = s.d.run_for(batch_delay);
        s.record("batch delay passed", &cs);
        let historic = cs.iter().filter(|c| is_historic(c)).count();
        let live = cs.iter().filter(|c| is_live(c)).count();
        assert_eq!(historic, 1, "burst {} costs one historic REQ", b + 1);
        assert_eq!(live, 1, "burst {} costs one live update", b + 1);
        assert!(
            cs.len() <= 3,
            "burst {}: only the live swap and one REQ",
            b + 1
        );
        assert_packed(&cs, 10, 100);
        let drained = s.eose_all(&cs);
        assert_packed(&drained, 10, 100);
    }
    assert_peak(&s, 10);
    // The dense live group of the connect, plus one small tail group per
    // burst (roots added while live go to tails of at most 10 values, so an
    // update never resends the dense group).
    assert_eq!(s.subs.count(&relay), 4, "only live subscriptions stay open");
    assert_confirmed(
        &s,
        &relay,
        32,
        "discovery, the repo and 30 roots are confirmed",
    );
    insta::assert_snapshot!(s.text);
}

/// 250 repos on a relay whose NIP-11 document says `max_subscriptions: 3`,
/// read before it connects: the plan keeps two live REQs and runs historic
/// REQs one at a time, so at no point are more than 3 subscriptions open,
/// through to the end of the EOSE drain.
#[test]
fn nip11_max_subscriptions_three() {
    let mut s = Scenario::new();
    let relay = url(RELAY);
    let anns: Vec<_> = (0..250u32)
        .map(|i| tracked(2000 + i, &format!("repo-{i:03}")))
        .collect();
    let mut ingest = Vec::new();
    for a in &anns {
        ingest.extend(s.d.input(Input::CatalogEvent(a)));
    }
    s.record(
        "250 announcements ingested (relay not yet connected)",
        &ingest,
    );
    let info = RelayInfo {
        max_subscriptions: Some(3),
        ..RelayInfo::default()
    };
    s.input(
        "NIP-11 max_subscriptions 3",
        Input::RelayInfo {
            relay: &relay,
            info,
        },
    );
    let cs = s.input("connected", Input::Connected { relay: &relay });
    assert!(s.subs.count(&relay) <= 3);
    let drained = s.eose_all(&cs);
    assert_packed(&cs, 10, 100);
    assert_packed(&drained, 10, 100);
    assert_peak(&s, 3);
    assert_confirmed(&s, &relay, 251, "every repo and discovery are confirmed");
    insta::assert_snapshot!(s.text);
}

/// One synced repo; the connection drops 10 minutes later and comes back 2
/// minutes after that (well inside the 15-minute window). The reconnect keeps
/// confirmed state: one historic catch-up REQ whose filters all carry `since`
/// = disconnect time − 300 s as a Unix timestamp, and the live REQ reopened
/// with `since` = the reconnect time (less the engine's live clock-skew
/// margin, `Timing::live_since_margin`).
#[test]
fn quick_reconnect() {
    let mut s = Scenario::new();
    let relay = url(RELAY);
    let ann = tracked(1, "repo");
    s.input("announcement 30617:<1>:repo", Input::CatalogEvent(&ann));
    let cs = s.input("connected", Input::Connected { relay: &relay });
    s.eose_all(&cs);
    let cs = s.d.run_for(Duration::from_secs(600));
    s.record("10 minutes live", &cs);
    let dropped_at = s.d.now;
    s.input(
        "disconnected",
        Input::Disconnected {
            relay: &relay,
            reason: "test drop",
        },
    );
    let cs = s.d.advance(Duration::from_secs(120));
    s.record("2 minutes later (reconnect due after backoff)", &cs);
    assert!(
        cs.iter().any(|c| matches!(c, Command::Connect { .. })),
        "reconnect after backoff"
    );
    let reconnected_at = s.d.now;
    let cs = s.input("connected", Input::Connected { relay: &relay });
    let catch_up_since = dropped_at.minus(Duration::from_secs(300)).as_secs();
    // The engine opens live REQs a configured margin before now (clock-skew
    // allowance; the spec text says `since` = now).
    let margin = s.d.engine.config().timing.live_since_margin;
    let live_since = reconnected_at.minus(margin).as_secs();
    assert_eq!(catch_up_since, T0 + 300);
    let mut historic = 0;
    let mut live = 0;
    for c in &cs {
        if let Command::Subscribe { filters, mode, .. } = c {
            let want = match mode {
                SubscriptionMode::Historic => {
                    historic += 1;
                    catch_up_since
                }
                SubscriptionMode::Live => {
                    live += 1;
                    live_since
                }
            };
            for f in filters {
                assert_eq!(f.since.map(|t| t.as_secs()), Some(want), "{}", f.as_json());
            }
        }
    }
    assert_eq!(
        (historic, live),
        (1, 1),
        "one catch-up REQ and the live REQ"
    );
    s.eose_all(&cs);
    assert_eq!(s.subs.count(&relay), 1);
    let confirmed = s.d.engine.confirmed_targets(&relay).expect("relay known");
    assert_eq!(confirmed.len(), 2);
    insta::assert_snapshot!(s.text);
}
