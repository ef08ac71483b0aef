//! Regression tests for section 10 of the behaviour contract
//! (`/work/shared/spec/grasp-02-sync.md`, "Never again"): one test (or a
//! small family sharing a prefix) per fault seen in the existing
//! implementation that concerns the core engine.
//!
//! Everything runs in virtual time through [`Driver`] or
//! [`Engine::handle_input`] with explicit [`Time`]s, and every assertion is
//! on concrete commands (relay, subscription id, filter JSON), on the
//! engine's target views, on [`Engine::next_wakeup`] or on [`Engine::status`].
//!
//! Items that do not concern the core:
//!
//! * Item 1 ("a wait that holds the one lock the waker needs") and item 2
//!   ("network I/O while holding global state") are about the shell that
//!   owns sockets, tasks and locks. The core owns no lock, no socket and no
//!   clock, so the only meaningful core checks are that a wait is a deadline
//!   ([`Engine::next_wakeup`]) rather than a blocking call, that one relay's
//!   wait never holds up another relay, and that the engine is a plain,
//!   synchronous, `Send` value whose only output is its command queue. Lock
//!   discipline around the engine (never `await` while holding it, never do
//!   network I/O under it) must be tested in the shell (`sync-io`).
//! * Items 9 and 10 (negentropy disabled forever because rejected events
//!   counted as missing; negentropy against an empty local set) concern
//!   NIP-77 reconciliation: their tests are in `never_again_nip77.rs`, with
//!   a relay that reconciles played by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use grasp_sync_core::{
    Command, Config, Engine, GiveUpReason, Input, RelayState, RelayUrl, Snapshot, StoreOutcome,
    SubscriptionMode, TargetKey, Time,
};
use grasp_sync_sim::fixtures::*;
use nostr::event::Event;
use nostr::filter::{Filter, MatchEventOptions};
use nostr::message::SubscriptionId;
use serde_json::Value;

// ----- helpers ---------------------------------------------------------------

/// The fixture configuration with paged REQ only: these regressions are
/// about paging, subscriptions and refusals (NIP-77 is tested in the core
/// and in the simulation).
fn config() -> Config {
    let mut c = grasp_sync_sim::fixtures::config();
    c.nip77 = false;
    c
}

const R1: &str = "wss://relay.one.example";
const R2: &str = "wss://relay.two.example";
const R3: &str = "wss://relay.three.example";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

/// Commands as JSON lines (for assertion messages).
fn show(cs: &[Command]) -> String {
    cs.iter()
        .map(|c| serde_json::to_string(c).expect("commands serialise"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `Subscribe` command, flattened.
#[derive(Clone, Debug, PartialEq)]
struct Sub {
    relay: RelayUrl,
    id: SubscriptionId,
    filters: Vec<Filter>,
    mode: SubscriptionMode,
}

impl Sub {
    fn json(&self) -> Vec<String> {
        self.filters.iter().map(Filter::as_json).collect()
    }

    /// What the subscription fetches, as [`Atoms`].
    fn shapes(&self) -> Atoms {
        self.filters.iter().flat_map(|f| atoms(&shape(f))).collect()
    }
}

/// What a set of filters fetches, independent of how values are packed into
/// filters and filters into REQs: one atom per (filter keys, key, value).
/// `{"#a":[x,y]}` and `{"#a":[x]},{"#a":[y]}` have the same atoms.
type Atoms = BTreeSet<(String, String, String)>;

/// The atoms of one filter's JSON (paging fields must be stripped first).
fn atoms(filter_json: &str) -> Atoms {
    let v: Value = serde_json::from_str(filter_json).expect("filter JSON");
    let obj = v.as_object().expect("a filter is an object");
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    let keys = keys.join(",");
    let mut out = Atoms::new();
    for (k, vals) in obj {
        for val in vals.as_array().map(Vec::as_slice).unwrap_or_default() {
            out.insert((keys.clone(), k.clone(), val.to_string()));
        }
    }
    out
}

fn atoms_of<'a>(shapes: impl IntoIterator<Item = &'a String>) -> Atoms {
    shapes.into_iter().flat_map(|s| atoms(s)).collect()
}

/// The atom of layer-1 discovery, `{"kinds":[30617]}`.
fn is_discovery(a: &(String, String, String)) -> bool {
    a.0 == "kinds" && a.2 == "30617"
}

fn shape(f: &Filter) -> String {
    let mut f = f.clone();
    f.since = None;
    f.until = None;
    f.limit = None;
    f.as_json()
}

fn subs(cs: &[Command]) -> Vec<Sub> {
    cs.iter()
        .filter_map(|c| match c {
            Command::Subscribe {
                relay,
                subscription,
                filters,
                mode,
            } => Some(Sub {
                relay: relay.clone(),
                id: subscription.clone(),
                filters: filters.clone(),
                mode: *mode,
            }),
            _ => None,
        })
        .collect()
}

fn historic(cs: &[Command]) -> Vec<Sub> {
    subs(cs)
        .into_iter()
        .filter(|s| s.mode == SubscriptionMode::Historic)
        .collect()
}

fn live(cs: &[Command]) -> Vec<Sub> {
    subs(cs)
        .into_iter()
        .filter(|s| s.mode == SubscriptionMode::Live)
        .collect()
}

fn connects(cs: &[Command]) -> Vec<RelayUrl> {
    cs.iter()
        .filter_map(|c| match c {
            Command::Connect { relay } => Some(relay.clone()),
            _ => None,
        })
        .collect()
}

fn disconnects(cs: &[Command]) -> Vec<RelayUrl> {
    cs.iter()
        .filter_map(|c| match c {
            Command::Disconnect { relay } => Some(relay.clone()),
            _ => None,
        })
        .collect()
}

fn unsubscribes(cs: &[Command]) -> Vec<(RelayUrl, SubscriptionId)> {
    cs.iter()
        .filter_map(|c| match c {
            Command::Unsubscribe {
                relay,
                subscription,
            } => Some((relay.clone(), subscription.clone())),
            _ => None,
        })
        .collect()
}

/// A numeric field of a filter (`since`, `until`, `limit`).
fn field(f: &Filter, key: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(&f.as_json()).expect("filter JSON");
    v.get(key).and_then(Value::as_u64)
}

/// The filter shapes (no paging fields) of a relay carrying `repos` (by
/// coordinate string) and discovery.
fn repo_shapes(repos: &[&grasp_sync_core::RepoCoord]) -> Atoms {
    let coords: Vec<String> = repos.iter().map(|c| format!("\"{c}\"")).collect();
    let coords = coords.join(",");
    let ds: Vec<String> = repos
        .iter()
        .map(|c| format!("\"{}\"", c.identifier))
        .collect();
    let ds = ds.join(",");
    atoms_of(&[
        r#"{"kinds":[30617]}"#.to_owned(),
        format!(r##"{{"kinds":[30618],"#d":[{ds}]}}"##),
        format!(r##"{{"#a":[{coords}]}}"##),
        format!(r##"{{"#A":[{coords}]}}"##),
        format!(r##"{{"#q":[{coords}]}}"##),
    ])
}

/// Feeds the announcements, connects every relay they name and answers every
/// historic REQ with EOSE: every relay ends connected, live and confirmed.
fn synced(config: Config, anns: &[&Event]) -> Driver {
    let mut d = Driver::new(config);
    let mut cs = Vec::new();
    for a in anns {
        cs.extend(d.input(Input::CatalogEvent(a)));
    }
    let cs = d.connect_all(&cs);
    d.eose_all(cs);
    for r in d.engine.relay_urls() {
        assert_eq!(
            d.engine.confirmed_targets(r),
            d.engine.relay_targets(r),
            "setup: {r} is not confirmed"
        );
    }
    d
}

/// Feeds the announcements and connects: returns the commands the connection
/// caused (live and historic REQs, none answered).
fn connected(config: Config, anns: &[&Event]) -> (Driver, Vec<Command>) {
    let mut d = Driver::new(config);
    let mut cs = Vec::new();
    for a in anns {
        cs.extend(d.input(Input::CatalogEvent(a)));
    }
    let out = d.connect_all(&cs);
    (d, out)
}

fn relay_status(e: &Engine, relay: &RelayUrl) -> grasp_sync_core::RelayStatus {
    e.status()
        .relays
        .into_iter()
        .find(|r| r.url == *relay)
        .unwrap_or_else(|| panic!("{relay} has no status"))
}

/// Fails every connection attempt of `relay` until `until`; returns the
/// commands of the first attempt at or after `until` (left unanswered).
fn fail_until(d: &mut Driver, relay: &RelayUrl, until: Time) -> Vec<Command> {
    for _ in 0..10_000 {
        let w = d
            .engine
            .next_wakeup()
            .expect("a relay with targets always has a wakeup");
        d.now = w.max(d.now);
        let cs = d.input(Input::Tick);
        if connects(&cs).contains(relay) {
            if d.now >= until {
                return cs;
            }
            d.input(Input::ConnectFailed {
                relay,
                reason: "refused",
            });
        }
    }
    panic!("no connection attempt reached {until}");
}

/// A relay holding `events` that answers REQs like a real one: per filter,
/// newest first (ties by id), at most `min(limit, cap)` events. A relay with
/// `ignores_bounds` disregards `since` and `until` (and then `limit`).
struct FakeRelay {
    events: Vec<Event>,
    cap: usize,
    ignores_bounds: bool,
}

impl FakeRelay {
    fn answer(&self, filters: &[Filter]) -> Vec<Event> {
        let opts = MatchEventOptions::new()
            .since(!self.ignores_bounds)
            .until(!self.ignores_bounds);
        let mut out = Vec::new();
        for f in filters {
            let mut m: Vec<&Event> = self
                .events
                .iter()
                .filter(|e| f.match_event(e, opts))
                .collect();
            m.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
            let n = if self.ignores_bounds {
                self.cap
            } else {
                f.limit.unwrap_or(usize::MAX).min(self.cap)
            };
            out.extend(m.into_iter().take(n).cloned());
        }
        out
    }
}

/// What a run of historic pages looked like.
#[derive(Default)]
struct PageRun {
    /// Every historic REQ, in order.
    reqs: Vec<Sub>,
    /// Every event sent (ids), with repeats.
    sent: Vec<nostr::event::EventId>,
}

/// Answers every historic REQ among `cs` (and every follow-up page) from
/// `fake`, sending each event with [`Input::EventReceived`] and the store's
/// verdict, then EOSE. Stops when no historic REQ is left, or fails after
/// `max_pages`.
fn drive_pages(
    d: &mut Driver,
    fake: &FakeRelay,
    outcome: impl Fn(&Event) -> StoreOutcome,
    cs: Vec<Command>,
    max_pages: usize,
) -> PageRun {
    let mut run = PageRun::default();
    let mut todo: Vec<Sub> = historic(&cs);
    while let Some(req) = todo.first().cloned() {
        todo.remove(0);
        assert!(
            run.reqs.len() < max_pages,
            "pagination does not end: {} pages, last {:?}",
            run.reqs.len(),
            req.json()
        );
        run.reqs.push(req.clone());
        let mut next = Vec::new();
        for e in fake.answer(&req.filters) {
            run.sent.push(e.id);
            next.extend(d.input(Input::EventReceived {
                relay: &req.relay,
                subscription: &req.id,
                event: &e,
            }));
            next.extend(d.input(Input::EventStored {
                relay: &req.relay,
                id: e.id,
                created_at: e.created_at.as_secs(),
                outcome: outcome(&e),
            }));
        }
        next.extend(d.input(Input::Eose {
            relay: &req.relay,
            subscription: &req.id,
        }));
        todo.extend(historic(&next));
    }
    run
}

/// Like [`Driver::run_for`] (ticks at every wakeup up to `now + dur`, returns
/// every command), but fails instead of spinning when the engine keeps asking
/// for ticks without time moving on (a deadline that never clears).
/// Runs to one second before the daily pass due at `resync`, then two
/// seconds past it: the commands before, and those around the pass.
fn around_daily_pass(d: &mut Driver, resync: Time) -> (Vec<Command>, Vec<Command>) {
    let before = run(d, resync.since(d.now).saturating_sub(secs(1)));
    let at = run(d, secs(2));
    (before, at)
}

fn run(d: &mut Driver, dur: Duration) -> Vec<Command> {
    let end = d.now.plus(dur);
    let mut out = Vec::new();
    let mut same = 0;
    while let Some(w) = d.engine.next_wakeup() {
        if w > end {
            break;
        }
        if w <= d.now {
            same += 1;
            assert!(
                same < 1_000,
                "the engine keeps asking for a tick at {w} (now {})",
                d.now
            );
        } else {
            same = 0;
        }
        d.now = w.max(d.now);
        out.extend(d.input(Input::Tick));
    }
    d.now = end;
    out.extend(d.input(Input::Tick));
    out
}

/// The live subscriptions the engine holds open on `relay` now (every live id
/// ever sent that it still holds, with its current filters).
fn open_live(d: &Driver, relay: &RelayUrl) -> Vec<Sub> {
    let ids: BTreeSet<SubscriptionId> = on(relay, live(&d.log)).into_iter().map(|s| s.id).collect();
    ids.into_iter()
        .filter_map(|id| {
            let filters = d.engine.subscription_filters(relay, &id)?.to_vec();
            Some(Sub {
                relay: relay.clone(),
                id,
                filters,
                mode: SubscriptionMode::Live,
            })
        })
        .collect()
}

/// Lets batched work go out: ticks through the next few seconds.
fn settle(d: &mut Driver) -> Vec<Command> {
    run(d, secs(5))
}

/// Ticks at every wakeup for up to `limit` and stops at the first tick whose
/// commands satisfy `pred`, returning them (`d.now` is that tick's time).
fn tick_until(
    d: &mut Driver,
    limit: Duration,
    pred: impl Fn(&[Command]) -> bool,
) -> Option<Vec<Command>> {
    let end = d.now.plus(limit);
    for _ in 0..100_000 {
        let w = match d.engine.next_wakeup() {
            Some(w) if w <= end => w,
            _ => {
                d.now = end;
                let cs = d.input(Input::Tick);
                return pred(&cs).then_some(cs);
            }
        };
        d.now = w.max(d.now);
        let cs = d.input(Input::Tick);
        if pred(&cs) {
            return Some(cs);
        }
    }
    panic!("the engine keeps asking for ticks at {}", d.now);
}

/// The union of the subscriptions' filter shapes.
fn union(subs: &[Sub]) -> Atoms {
    subs.iter().flat_map(Sub::shapes).collect()
}

fn on(relay: &RelayUrl, subs: Vec<Sub>) -> Vec<Sub> {
    subs.into_iter().filter(|s| s.relay == *relay).collect()
}

/// Answers the subscriptions (and every follow-up page) with EOSE.
fn eose(d: &mut Driver, subs: &[Sub]) -> Vec<Command> {
    let cs = subs
        .iter()
        .map(|s| Command::Subscribe {
            relay: s.relay.clone(),
            subscription: s.id.clone(),
            filters: s.filters.clone(),
            mode: s.mode,
        })
        .collect();
    d.eose_all(cs)
}

/// The filter shapes of a root event's layer-3 filters.
fn root_shapes(id: &nostr::event::EventId) -> Atoms {
    let id = id.to_hex();
    atoms_of(&[
        format!(r##"{{"#e":["{id}"]}}"##),
        format!(r##"{{"#E":["{id}"]}}"##),
        format!(r##"{{"#q":["{id}"]}}"##),
    ])
}

const DISCOVERY: &str = r#"{"kinds":[30617]}"#;

/// The filter shapes (no paging fields) that cover `targets`, one filter per
/// shape with every value packed in (spec section 3).
fn target_shapes(targets: &BTreeSet<TargetKey>) -> Atoms {
    use nostr::event::Kind;
    use nostr::filter::SingleLetterTag;
    let mut coords = BTreeSet::new();
    let mut ds = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut out = BTreeSet::new();
    for t in targets {
        match t {
            TargetKey::Discovery => {
                out.insert(DISCOVERY.to_owned());
            }
            TargetKey::Repo(c) => {
                coords.insert(c.to_string());
                ds.insert(c.identifier.clone());
            }
            TargetKey::Root(id) => {
                ids.insert(id.to_hex());
            }
        }
    }
    if !coords.is_empty() {
        out.insert(
            Filter::new()
                .kind(Kind::Custom(30618))
                .custom_tags(SingleLetterTag::LOWERCASE_D, ds)
                .as_json(),
        );
        for tag in [
            SingleLetterTag::LOWERCASE_A,
            SingleLetterTag::UPPERCASE_A,
            SingleLetterTag::LOWERCASE_Q,
        ] {
            out.insert(Filter::new().custom_tags(tag, coords.clone()).as_json());
        }
    }
    if !ids.is_empty() {
        for tag in [
            SingleLetterTag::LOWERCASE_E,
            SingleLetterTag::UPPERCASE_E,
            SingleLetterTag::LOWERCASE_Q,
        ] {
            out.insert(Filter::new().custom_tags(tag, ids.clone()).as_json());
        }
    }
    atoms_of(&out)
}

/// Ticks at every wakeup for `dur`; returns every command with the time of
/// the tick that caused it.
fn ticks_for(d: &mut Driver, dur: Duration) -> Vec<(Time, Command)> {
    let end = d.now.plus(dur);
    let mut out = Vec::new();
    while let Some(w) = d.engine.next_wakeup() {
        if w > end {
            break;
        }
        d.now = w.max(d.now);
        let now = d.now;
        out.extend(d.input(Input::Tick).into_iter().map(|c| (now, c)));
    }
    d.now = end;
    out.extend(d.input(Input::Tick).into_iter().map(|c| (end, c)));
    out
}
// ----- item 1 ---------------------------------------------------------------

/// Item 1: "A wait that holds the one lock the waker needs (deadlock on rate
/// limit)." In the core a rate-limit cool-down is a deadline reported by
/// [`Engine::next_wakeup`], never a blocking wait: `handle_input` returns at
/// once, another relay keeps being served during the cool-down, and the
/// cooled-down relay resumes the same work when a tick reaches the deadline.
/// (Locks themselves live in the shell and are tested there.)
#[test]
fn never_again_01_rate_limit_wait_is_a_deadline_not_a_lock() {
    let (a, b) = (url(R1), url(R2));
    let ann1 = announcement(1, "one", T0 - 100, &[R1], true);
    let ann2 = announcement(2, "two", T0 - 100, &[R2], true);
    let (mut d, cs) = connected(config(), &[&ann1, &ann2]);
    let ha = on(&a, historic(&cs));
    let hb = on(&b, historic(&cs));
    assert!(!ha.is_empty() && !hb.is_empty(), "{}", show(&cs));

    let limited_at = d.now;
    let out = d.input(Input::Closed {
        relay: &a,
        subscription: &ha[0].id,
        message: "rate-limited: slow down",
    });
    assert!(
        historic(&out).is_empty(),
        "no REQ during the cool-down:\n{}",
        show(&out)
    );
    let cooldown_end = limited_at.plus(secs(65));
    assert_eq!(
        relay_status(&d.engine, &a).cooldown_until,
        Some(cooldown_end)
    );

    // During A's cool-down, B is served as usual.
    d.advance(secs(10));
    let out = eose(&mut d, &hb);
    assert!(
        unsubscribes(&out).contains(&(b.clone(), hb[0].id.clone())),
        "{}",
        show(&out)
    );
    assert_eq!(d.engine.confirmed_targets(&b), d.engine.relay_targets(&b));
    eose(&mut d, &ha[1..]);
    assert_eq!(
        d.engine.next_wakeup(),
        Some(cooldown_end),
        "the wait is a deadline"
    );

    // A resumes at the deadline with the same work.
    let out = tick_until(&mut d, mins(2), |cs| !historic(cs).is_empty())
        .expect("A resumes after its cool-down");
    assert_eq!(d.now, cooldown_end);
    let retried = historic(&out);
    assert!(retried.iter().all(|s| s.relay == a), "{}", show(&out));
    assert_eq!(union(&retried), ha[0].shapes());
}

// ----- item 2 ---------------------------------------------------------------

/// Item 2: "Network I/O while holding global state." The core owns no I/O:
/// its API is synchronous, `handle_input` returns nothing, and everything it
/// wants done comes out as [`Command`]s from `poll_command`. The engine is a
/// plain `Send` value (the shell may move it between threads and must drop
/// any lock before carrying commands out), and it holds no hidden handle: a
/// clone fed the same inputs at the same times emits the same commands, byte
/// for byte. That the shell never does network I/O under its engine lock is
/// the shell's test.
#[test]
fn never_again_02_engine_is_sync_and_owns_no_io() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Engine>();
    assert_send::<Command>();

    let mut config = config();
    config.bootstrap.push(url(R3));
    let mut e = Engine::new(config);
    let t = Time::from_secs(T0);
    // Returns unit: nothing is done inside the call, only queued.
    let () = e.handle_input(t, Input::Tick);
    let mut twin = e.clone();

    let ann = announcement(1, "repo", T0 - 100, &[R1], true);
    let feed = |e: &mut Engine| -> Vec<String> {
        let mut out = Vec::new();
        let drain = |e: &mut Engine, out: &mut Vec<String>| {
            while let Some(c) = e.poll_command() {
                out.push(serde_json::to_string(&c).expect("serialises"));
            }
        };
        drain(e, &mut out);
        e.handle_input(t.plus(secs(1)), Input::CatalogEvent(&ann));
        drain(e, &mut out);
        let r1 = url(R1);
        e.handle_input(t.plus(secs(2)), Input::Connected { relay: &r1 });
        drain(e, &mut out);
        let r3 = url(R3);
        e.handle_input(
            t.plus(secs(3)),
            Input::ConnectFailed {
                relay: &r3,
                reason: "x",
            },
        );
        drain(e, &mut out);
        e.handle_input(t.plus(secs(60)), Input::Tick);
        drain(e, &mut out);
        out
    };
    let a = feed(&mut e);
    let b = feed(&mut twin);
    assert!(!a.is_empty());
    assert_eq!(a, b, "the same inputs must give the same commands");
    assert!(a.iter().any(|c| c.contains(r#""command":"connect""#)));
}

// ----- item 3 ---------------------------------------------------------------

/// Item 3: "Quick reconnect with a `since` that is a duration instead of a
/// timestamp." After a short drop, the catch-up REQ must carry `since` = (the
/// moment of the drop, the last time we were connected) − 5 min as a Unix
/// timestamp, on every filter, for every confirmed target.
#[test]
fn never_again_03_quick_reconnect_since_is_a_timestamp() {
    let relay = url(R1);
    let ann = announcement(1, "repo", T0 - 100, &[R1], true);
    let repo = coord(1, "repo");
    let mut d = synced(config(), &[&ann]);
    let connected_at = d.now;

    d.advance(mins(10));
    let dropped_at = d.now;
    d.input(Input::Disconnected {
        relay: &relay,
        reason: "reset",
    });
    let cs = run(&mut d, secs(10));
    assert_eq!(connects(&cs), vec![relay.clone()], "{}", show(&cs));
    let cs = d.input(Input::Connected { relay: &relay });

    let hist = historic(&cs);
    assert_eq!(hist.len(), 1, "one catch-up REQ:\n{}", show(&cs));
    assert_eq!(
        hist[0].shapes(),
        repo_shapes(&[&repo]),
        "covers every confirmed target"
    );
    let expected = dropped_at.as_secs() - 300;
    assert!(expected > 1_700_000_000);
    for f in &hist[0].filters {
        let since = field(f, "since");
        assert_eq!(
            since,
            Some(expected),
            "since must be drop - 5 min: {}",
            f.as_json()
        );
        // Not a duration (the 10 min uptime, the 10 s downtime or the 5 min
        // margin) and not the connect time minus the margin.
        assert_ne!(since, Some(connected_at.as_secs() - 300));
        assert!(since.unwrap_or(0) > 1_000_000_000);
        assert_eq!(field(f, "until"), None);
    }
}

// ----- item 4 ---------------------------------------------------------------

/// Item 4: "Reconnect that reopens live subscriptions but never catches up on
/// the gap." A reconnect must both reopen the live subscription (`since`
/// about now, `limit:0`, every target) and run historic catch-up covering the
/// whole gap for every confirmed target (repos and roots), and that catch-up
/// must end with the targets confirmed again. After a long drop, the whole
/// history is fetched again (no `since`).
#[test]
fn never_again_04_reconnect_catches_up_on_the_gap() {
    let relay = url(R1);
    let ann1 = announcement(1, "one", T0 - 100, &[R1], true);
    let ann2 = announcement(2, "two", T0 - 100, &[R1], true);
    let (one, two) = (coord(1, "one"), coord(2, "two"));
    let issue = root(1621, 3, T0 - 50, &one, "bug");
    let mut d = synced(config(), &[&ann1, &ann2]);
    d.input(Input::CatalogEvent(&issue));
    let cs = settle(&mut d);
    d.eose_all(cs);
    let targets = d.engine.relay_targets(&relay).expect("targets");
    assert_eq!(targets.len(), 4, "discovery, two repos, one root");
    assert_eq!(d.engine.confirmed_targets(&relay), Some(targets.clone()));
    let mut expected = repo_shapes(&[&one, &two]);
    expected.extend(root_shapes(&issue.id));

    // Quick: a gap of a few seconds.
    d.advance(mins(30));
    let dropped_at = d.now;
    d.input(Input::Disconnected {
        relay: &relay,
        reason: "reset",
    });
    let cs = tick_until(&mut d, mins(1), |cs| connects(cs).contains(&relay))
        .expect("a reconnect attempt");
    assert!(connects(&cs).contains(&relay));
    let reconnected_at = d.now;
    let cs = d.input(Input::Connected { relay: &relay });

    let lv = live(&cs);
    assert!(
        !lv.is_empty(),
        "the live subscription is reopened:\n{}",
        show(&cs)
    );
    assert_eq!(union(&lv), expected, "live covers every target");
    for f in lv.iter().flat_map(|s| s.filters.iter()) {
        let since = field(f, "since").expect("live has since");
        assert!(
            since <= reconnected_at.as_secs() && since + 900 >= reconnected_at.as_secs(),
            "live since is about now: {}",
            f.as_json()
        );
        assert_eq!(field(f, "limit"), Some(0));
    }
    let hist = historic(&cs);
    assert!(
        !hist.is_empty(),
        "no catch-up after reconnect:\n{}",
        show(&cs)
    );
    for f in hist.iter().flat_map(|h| h.filters.iter()) {
        let since = field(f, "since").expect("catch-up is bounded below");
        assert!(
            since <= dropped_at.as_secs(),
            "the gap starts at the drop: {}",
            f.as_json()
        );
        assert_eq!(
            field(f, "until"),
            None,
            "the gap reaches now: {}",
            f.as_json()
        );
    }
    assert_eq!(
        union(&hist),
        expected,
        "catch-up covers every confirmed target"
    );
    assert_eq!(d.engine.pending_targets(&relay), Some(targets.clone()));
    eose(&mut d, &hist);
    assert_eq!(d.engine.confirmed_targets(&relay), Some(targets.clone()));
    assert!(d
        .engine
        .pending_targets(&relay)
        .is_some_and(|p| p.is_empty()));
    assert_eq!(relay_status(&d.engine, &relay).state, RelayState::Live);

    // Long: a 20 min gap is a fresh start, the whole history again.
    d.advance(mins(30));
    d.input(Input::Disconnected {
        relay: &relay,
        reason: "reset",
    });
    let at = d.now.plus(mins(20));
    fail_until(&mut d, &relay, at);
    let cs = d.input(Input::Connected { relay: &relay });
    let hist = historic(&cs);
    assert!(!hist.is_empty(), "{}", show(&cs));
    for f in hist.iter().flat_map(|h| h.filters.iter()) {
        assert_eq!(field(f, "since"), None, "fresh start: {}", f.as_json());
    }
    assert_eq!(union(&hist), expected);
    assert_eq!(union(&live(&cs)), expected);
}

// ----- item 5 ---------------------------------------------------------------

/// Item 5: "The 15-minute window measured from the last connect instead of
/// the drop." A relay that was connected for hours and dropped a moment ago
/// gets a quick reconnect; one that has been down 15 min or more (counted
/// from the drop) gets a fresh start, however short its last connection.
#[test]
fn never_again_05_window_measured_from_the_drop() {
    let relay = url(R1);
    let ann = announcement(1, "repo", T0 - 100, &[R1], true);
    let repo = coord(1, "repo");

    // Connected two hours, dropped, back within seconds: quick.
    let mut d = synced(config(), &[&ann]);
    d.advance(hours(2));
    let dropped_at = d.now;
    d.input(Input::Disconnected {
        relay: &relay,
        reason: "reset",
    });
    let cs = run(&mut d, secs(10));
    assert_eq!(connects(&cs), vec![relay.clone()]);
    let cs = d.input(Input::Connected { relay: &relay });
    let hist = historic(&cs);
    assert_eq!(hist.len(), 1, "{}", show(&cs));
    assert_eq!(hist[0].shapes(), repo_shapes(&[&repo]));
    for f in &hist[0].filters {
        assert_eq!(
            field(f, "since"),
            Some(dropped_at.as_secs() - 300),
            "{}",
            f.as_json()
        );
    }
    d.eose_all(cs);

    // Dropped again after a minute, back after about 10 min of failed
    // attempts: still within the window (measured from the drop), quick.
    d.advance(mins(1));
    let dropped_at = d.now;
    d.input(Input::Disconnected {
        relay: &relay,
        reason: "reset",
    });
    fail_until(&mut d, &relay, dropped_at.plus(mins(9)));
    let down = d.now.since(dropped_at);
    assert!(
        down >= mins(9) && down < mins(15),
        "precondition: down {down:?}"
    );
    let cs = d.input(Input::Connected { relay: &relay });
    let hist = historic(&cs);
    assert_eq!(hist.len(), 1, "{}", show(&cs));
    for f in &hist[0].filters {
        assert_eq!(
            field(f, "since"),
            Some(dropped_at.as_secs() - 300),
            "{}",
            f.as_json()
        );
    }
    assert_eq!(
        d.engine.confirmed_targets(&relay),
        d.engine.relay_targets(&relay),
        "a quick reconnect keeps confirmed state"
    );
    d.eose_all(cs);

    // Connected one minute, down 15 min or more: fresh start.
    d.advance(mins(1));
    let dropped_at = d.now;
    d.input(Input::Disconnected {
        relay: &relay,
        reason: "reset",
    });
    fail_until(&mut d, &relay, dropped_at.plus(mins(15)));
    assert!(d.now.since(dropped_at) >= mins(15));
    let cs = d.input(Input::Connected { relay: &relay });
    let hist = historic(&cs);
    assert_eq!(hist.len(), 1, "{}", show(&cs));
    for f in &hist[0].filters {
        assert_eq!(field(f, "since"), None, "fresh start: {}", f.as_json());
    }
    assert_eq!(
        d.engine.confirmed_targets(&relay).map(|s| s.len()),
        Some(0),
        "a fresh start re-confirms everything"
    );
    assert_eq!(
        d.engine.pending_targets(&relay),
        d.engine.relay_targets(&relay)
    );
}

// ----- item 6 ---------------------------------------------------------------

/// Checks the retry schedule of a relay whose every connection attempt fails,
/// starting with the attempt in `first` (made at `d.now`). Returns the number
/// of attempts made over `days` days.
fn check_retry_schedule(d: &mut Driver, relay: &RelayUrl, first: &[Command], days: u64) -> usize {
    assert!(
        connects(first).contains(relay),
        "first attempt:\n{}",
        show(first)
    );
    let start = d.now;
    let mut attempts = 1;
    // The very first attempt hangs: the connect timeout (30 s) fails it.
    let cs = run(d, secs(31));
    assert!(
        disconnects(&cs).contains(relay),
        "a hung attempt is abandoned:\n{}",
        show(&cs)
    );
    let mut failed_at = start.plus(secs(30));
    let mut failures: u32 = 1;
    let end = start.plus(hours(24 * days));
    loop {
        let w = d
            .engine
            .next_wakeup()
            .expect("a failing relay is never parked");
        let delay = w.since(failed_at);
        // Failing since the hung first attempt was abandoned.
        if failed_at.since(start.plus(secs(30))) >= hours(24) {
            // Dead: retried once a day (with 5 % jitter).
            assert_eq!(relay_status(&d.engine, relay).state, RelayState::Dead);
            assert!(
                delay >= Duration::from_secs(82_080) && delay <= Duration::from_secs(90_720),
                "dead relay retried after {delay:?} (failure {failures})"
            );
        } else {
            let base = (5u64 << (failures - 1).min(20)).min(3600);
            let lo = Duration::from_millis(base * 800);
            let hi = Duration::from_millis((base * 1200).min(3_600_000));
            assert!(
                delay >= lo && delay <= hi,
                "failure {failures}: retry after {delay:?}, expected {lo:?}..={hi:?}"
            );
            assert_eq!(
                relay_status(&d.engine, relay).state,
                RelayState::Disconnected
            );
        }
        if w > end {
            break;
        }
        d.now = w;
        let cs = d.input(Input::Tick);
        assert_eq!(
            connects(&cs),
            vec![relay.clone()],
            "retry {failures}:\n{}",
            show(&cs)
        );
        attempts += 1;
        d.advance(secs(2));
        d.input(Input::ConnectFailed {
            relay,
            reason: "refused",
        });
        failed_at = d.now;
        failures += 1;
        assert_eq!(relay_status(&d.engine, relay).failures, failures);
    }
    // And it still connects when the relay comes back.
    d.now = d.engine.next_wakeup().expect("wakeup");
    let cs = d.input(Input::Tick);
    assert_eq!(connects(&cs), vec![relay.clone()]);
    d.input(Input::Connected { relay });
    assert!(matches!(
        relay_status(&d.engine, relay).state,
        RelayState::Syncing | RelayState::Live
    ));
    attempts
}

/// Item 6: "A bootstrap or new relay whose first connect fails and is never
/// retried." Both a bootstrap relay (`Config::bootstrap`) and a relay first
/// seen in an announcement are retried after a failed (or hung) first
/// connect: 5 s doubling to the 1 h cap (±20 % jitter), then, after 24 h of
/// failures, once a day (dead), and never parked.
#[test]
fn never_again_06_failed_first_connect_is_retried() {
    // Bootstrap relay.
    let relay = url(R3);
    let mut cfg = config();
    cfg.bootstrap.push(relay.clone());
    let mut d = Driver::new(cfg);
    let first = d.input(Input::Tick);
    let n = check_retry_schedule(&mut d, &relay, &first, 4);
    // 5 s .. 1 h ≈ 11 attempts to reach the cap, then ~21 hourly ones, then daily.
    assert!((30..=40).contains(&n), "{n} attempts over four days");

    // A relay from an announcement.
    let relay = url(R1);
    let ann = announcement(1, "repo", T0 - 100, &[R1], true);
    let mut d = Driver::new(config());
    let first = d.input(Input::CatalogEvent(&ann));
    let n = check_retry_schedule(&mut d, &relay, &first, 4);
    assert!((30..=40).contains(&n), "{n} attempts over four days");
}

/// Item 6, continued: a bootstrap relay that finally connects does the work
/// it is there for, layer-1 discovery (`{"kinds":[30617]}`), even when no
/// announcement lists it.
#[test]
fn never_again_06_bootstrap_relay_runs_discovery_once_connected() {
    let relay = url(R3);
    let mut config = config();
    config.bootstrap.push(relay.clone());
    let mut d = Driver::new(config);
    let cs = d.input(Input::Tick);
    assert_eq!(connects(&cs), vec![relay.clone()]);
    d.input(Input::ConnectFailed {
        relay: &relay,
        reason: "refused",
    });
    let cs = run(&mut d, secs(10));
    assert_eq!(connects(&cs), vec![relay.clone()]);
    let cs = d.input(Input::Connected { relay: &relay });
    assert!(
        union(&historic(&cs)).iter().any(is_discovery),
        "a bootstrap relay must run discovery:\n{}",
        show(&cs)
    );
    assert!(union(&live(&cs)).iter().any(is_discovery), "{}", show(&cs));
}

/// Item 6, continued: a bootstrap relay keeps its layer-1 discovery when an
/// announcement that listed it is replaced by one that does not (spec
/// section 1: a bootstrap relay is always connected, even when no
/// announcement lists it). Its discovery is the operator's, not the
/// announcement's, and must not be dropped with the announcement's targets.
#[test]
fn never_again_06_bootstrap_relay_keeps_discovery_when_unlisted() {
    let boot = url(R3);
    let mut config = config();
    config.bootstrap.push(boot.clone());
    let mut d = Driver::new(config);
    let cs = d.input(Input::Tick);
    let cs = d.connect_all(&cs);
    d.eose_all(cs);
    let discovery = BTreeSet::from([TargetKey::Discovery]);
    assert_eq!(d.engine.relay_targets(&boot), Some(discovery.clone()));

    let listed = announcement(1, "repo", T0 - 100, &[R3], true);
    d.input(Input::CatalogEvent(&listed));
    let cs = settle(&mut d);
    d.eose_all(cs);
    assert_eq!(d.engine.relay_targets(&boot).map(|s| s.len()), Some(2));

    let unlisted = announcement(1, "repo", T0 - 50, &[R1], true);
    d.input(Input::CatalogEvent(&unlisted));
    let cs = settle(&mut d);
    assert_eq!(
        d.engine.relay_targets(&boot),
        Some(discovery.clone()),
        "the bootstrap relay lost its discovery:\n{}",
        show(&cs)
    );
    assert_eq!(
        union(&open_live(&d, &boot)),
        target_shapes(&discovery),
        "the live discovery subscription is still open:\n{}",
        show(&cs)
    );
}

// ----- item 7 ---------------------------------------------------------------

/// Item 7: "Empty-relay cleanup that closes a relay while its first batch is
/// pending." A new relay whose first historic batch is still being answered
/// (events trickling in), or has gone unanswered and is being retried, is
/// never closed, however long past the 60 s grace; neither is a bootstrap
/// relay that no announcement lists. Only a relay with no targets and
/// nothing pending is.
#[test]
fn never_again_07_empty_relay_not_closed_while_first_batch_pending() {
    let relay = url(R1);
    let ann = announcement(1, "repo", T0 - 100, &[R1], true);
    let repo = coord(1, "repo");
    let (mut d, cs) = connected(config(), &[&ann]);
    let first = historic(&cs);
    assert_eq!(first.len(), 1, "{}", show(&cs));
    let sub = first[0].id.clone();

    // The first batch is answered slowly: one event every 30 s for 5 min.
    let mut all = Vec::new();
    for i in 0..10 {
        all.extend(d.advance(secs(30)));
        let e = root(1621, 9, T0 - 1000 - i, &repo, &format!("issue {i}"));
        all.extend(d.input(Input::EventReceived {
            relay: &relay,
            subscription: &sub,
            event: &e,
        }));
        assert_eq!(relay_status(&d.engine, &relay).state, RelayState::Syncing);
    }
    assert!(
        disconnects(&all).is_empty(),
        "closed while its first batch was pending:\n{}",
        show(&all)
    );
    assert!(unsubscribes(&all).is_empty(), "{}", show(&all));
    assert!(!d
        .engine
        .pending_targets(&relay)
        .expect("still known")
        .is_empty());

    // Then it goes silent: timeouts and retries, still not closed.
    let all = run(&mut d, mins(5));
    assert!(disconnects(&all).is_empty(), "{}", show(&all));
    assert!(d.engine.relay_urls().any(|u| *u == relay));
    assert!(!d
        .engine
        .pending_targets(&relay)
        .expect("still known")
        .is_empty());
    assert_eq!(d.engine.status().counters.relays_forgotten, 0);

    // A bootstrap relay that no announcement lists is never closed either.
    let boot = url(R3);
    let mut cfg = config();
    cfg.bootstrap.push(boot.clone());
    let mut d = Driver::new(cfg);
    let cs = d.input(Input::Tick);
    d.connect_all(&cs);
    let all = run(&mut d, mins(10));
    assert!(disconnects(&all).is_empty(), "{}", show(&all));
    assert!(d.engine.relay_urls().any(|u| *u == boot));

    // Whereas a relay that lost its targets is closed after the grace.
    let ann = announcement(1, "repo", T0 - 100, &[R1], true);
    let (mut d, _) = connected(config(), &[&ann]);
    let newer = announcement(1, "repo", T0 - 50, &[R2], true);
    let cs = d.input(Input::CatalogEvent(&newer));
    d.connect_all(&cs);
    assert_eq!(d.engine.relay_targets(&relay).map(|s| s.len()), Some(0));
    let all = run(&mut d, secs(59));
    assert!(disconnects(&all).is_empty());
    let all = run(&mut d, secs(2));
    assert_eq!(disconnects(&all), vec![relay.clone()], "{}", show(&all));
    assert!(d.engine.relay_targets(&relay).is_none());
}

// ----- item 8 ---------------------------------------------------------------

/// Two relays carrying one repo, synced; A drops 5 min before its daily pass
/// and fails to reconnect until 4 min after it. Returns the driver (with A's
/// reconnect attempt pending), A's targets and the drop time.
fn down_across_daily_pass() -> (Driver, BTreeSet<TargetKey>, Time) {
    let a = url(R1);
    let ann = announcement(1, "repo", T0 - 100, &[R1, R2], true);
    let mut d = synced(config(), &[&ann]);
    let targets = d.engine.relay_targets(&a).expect("targets");
    let resync_a = relay_status(&d.engine, &a)
        .next_resync
        .expect("A has a daily pass");
    assert!(resync_a >= d.now.plus(hours(23)) && resync_a <= d.now.plus(hours(25)));
    let drop_at = resync_a.minus(mins(5));
    let wait = drop_at.since(d.now);
    run(&mut d, wait);
    d.input(Input::Disconnected {
        relay: &a,
        reason: "reset",
    });
    assert_eq!(relay_status(&d.engine, &a).last_connected, Some(drop_at));
    let cs = fail_until(&mut d, &a, resync_a.plus(mins(4)));
    assert!(connects(&cs).contains(&a));
    assert!(d.now > resync_a && d.now.since(drop_at) < mins(15));
    (d, targets, drop_at)
}

/// Item 8: "The daily pass wiping the state of a disconnected relay." When a
/// relay's daily re-sync falls due while it is disconnected, its confirmed
/// targets, cursors and targets stay as they were, so a reconnect within
/// 15 min of the drop is still a quick catch-up from the drop; a connected
/// relay's daily pass runs a full pass and keeps its confirmed state until
/// the pass replaces it.
#[test]
fn never_again_08_daily_pass_keeps_disconnected_relay_state() {
    let (a, b) = (url(R1), url(R2));
    let repo = coord(1, "repo");
    let (mut d, targets, drop_at) = down_across_daily_pass();

    // While down across its daily pass, A's state is intact.
    assert_eq!(
        d.engine.confirmed_targets(&a),
        Some(targets.clone()),
        "confirmed state wiped"
    );
    assert_eq!(d.engine.relay_targets(&a), Some(targets.clone()));
    assert_eq!(relay_status(&d.engine, &a).last_connected, Some(drop_at));
    let snap = d.engine.snapshot();
    let saved = snap.relays.iter().find(|r| r.url == a).expect("A saved");
    assert_eq!(saved.confirmed.len(), targets.len());
    assert_eq!(saved.last_connected, Some(drop_at));

    // A comes back: a quick catch-up from the drop, not a wiped full sync.
    let cs = d.input(Input::Connected { relay: &a });
    let catch_up: Vec<Sub> = historic(&cs)
        .into_iter()
        .filter(|s| {
            s.filters
                .iter()
                .all(|f| field(f, "since") == Some(drop_at.as_secs() - 300))
        })
        .collect();
    assert_eq!(
        union(&catch_up),
        repo_shapes(&[&repo]),
        "quick catch-up from the drop:\n{}",
        show(&cs)
    );
    eose(&mut d, &historic(&cs));
    assert_eq!(d.engine.confirmed_targets(&a), Some(targets.clone()));

    // B, connected at its own daily pass, runs a full pass and keeps its
    // confirmed state meanwhile.
    let resync_b = relay_status(&d.engine, &b).next_resync.expect("B");
    let already = on(&b, historic(&d.log)).len();
    let pass = if already >= 2 {
        on(&b, historic(&d.log))[1..].to_vec()
    } else {
        let wait = resync_b.since(d.now).saturating_add(secs(1));
        let cs = tick_until(&mut d, wait, |cs| !on(&b, historic(cs)).is_empty())
            .expect("B's daily pass");
        on(&b, historic(&cs))
    };
    assert_eq!(union(&pass), repo_shapes(&[&repo]));
    for f in pass.iter().flat_map(|s| s.filters.iter()) {
        assert_eq!(
            field(f, "since"),
            None,
            "a daily pass is full: {}",
            f.as_json()
        );
    }
    assert_eq!(
        d.engine.confirmed_targets(&b),
        Some(targets.clone()),
        "kept until the pass replaces it"
    );
}

/// Item 8, continued: the daily pass a relay missed while it was down is not
/// lost either. After the quick catch-up of a relay that was disconnected when
/// its pass fell due, a full historic pass (no `since`) runs soon, rather than
/// the relay going two days without one (spec section 4: every 23–25 h).
#[test]

fn never_again_08_missed_daily_pass_runs_after_reconnect() {
    let a = url(R1);
    let repo = coord(1, "repo");
    let (mut d, _, _) = down_across_daily_pass();
    let reconnected_at = d.now;
    let cs = d.input(Input::Connected { relay: &a });
    let mut seen = on(&a, historic(&cs));
    eose(&mut d, &historic(&cs));
    let cs = run(&mut d, mins(10));
    seen.extend(on(&a, historic(&cs)));
    eose(&mut d, &historic(&cs));
    let full: Vec<Sub> = seen
        .into_iter()
        .filter(|s| s.filters.iter().all(|f| field(f, "since").is_none()))
        .collect();
    assert_eq!(
        union(&full),
        repo_shapes(&[&repo]),
        "the missed daily pass must still run (reconnected at {reconnected_at}); next pass at {:?}",
        relay_status(&d.engine, &a).next_resync
    );
}

// ----- items 9 and 10 ---------------------------------------------------------
//
// Item 9 ("negentropy disabled forever because rejected events counted as
// missing") and item 10 ("negentropy run against an empty local set") belong
// to the NIP-77 work: the engine has no NEG-OPEN/NEG-MSG commands and no input
// for the store's id set yet, so there is nothing in the core to test. See the
// module documentation.

// ----- item 11 --------------------------------------------------------------

/// Item 11: "Pagination that counts only stored events and stops early, or
/// loops forever on one timestamp." Three relays: one that caps pages
/// silently below our `limit` and whose every event the store rejects (all of
/// them must still be fetched); one with a burst of events sharing one
/// `created_at` larger than a page (fetched by asking that second alone with
/// a doubled limit); and one that ignores `since`/`until` and always sends
/// the same one-second page (pagination must end, stepping below the second).
#[test]
fn never_again_11_pagination_counts_every_event_and_never_loops_on_one_second() {
    let relay = url(R1);
    let repo = coord(1, "repo");
    let ann = announcement(1, "repo", T0 - 100_000, &[R1], true);

    // (a) Silent cap of 20 under a limit of 50; the store rejects everything.
    let mut cfg = config();
    cfg.default_budget.page_limit = 50;
    cfg.default_budget.max_page_limit = 200;
    let (mut d, cs) = connected(cfg, &[&ann]);
    let events: Vec<Event> = (0..100)
        .map(|i| root(1621, 7, T0 - 1000 - i * 10, &repo, &format!("issue {i}")))
        .collect();
    let fake = FakeRelay {
        events: events.clone(),
        cap: 20,
        ignores_bounds: false,
    };
    let run = drive_pages(&mut d, &fake, |_| StoreOutcome::Rejected, cs, 50);
    let got: BTreeSet<_> = run.sent.iter().copied().collect();
    let all: BTreeSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(
        got, all,
        "every event is fetched though the store rejected every one"
    );
    assert_eq!(
        d.engine.confirmed_targets(&relay),
        d.engine.relay_targets(&relay)
    );
    // Pages of the `#a` filter: explicit limit, `until` stepping down.
    let a_pages: Vec<Filter> = run
        .reqs
        .iter()
        .flat_map(|r| r.filters.iter())
        .filter(|f| f.as_json().contains(r##""#a""##))
        .cloned()
        .collect();
    assert!(
        a_pages.len() >= 5,
        "a short page is not the end: {} pages",
        a_pages.len()
    );
    let mut last_until = u64::MAX;
    for (i, f) in a_pages.iter().enumerate() {
        assert_eq!(field(f, "limit"), Some(50), "{}", f.as_json());
        let until = field(f, "until");
        if i == 0 {
            assert_eq!(until, None);
        } else {
            let u = until.expect("later pages carry until");
            assert!(u < last_until, "until must step down: {}", f.as_json());
            last_until = u;
        }
    }
    let st = relay_status(&d.engine, &relay);
    assert_eq!(st.stats.events_received, run.sent.len() as u64);
    assert_eq!(st.stats.events_rejected, run.sent.len() as u64);
    assert_eq!(st.stats.events_stored, 0);

    // (b) 50 events in one second, between 10 newer and 10 older; the relay
    // honours limits up to 100; our page is 20, our cap 80.
    let mut cfg = config();
    cfg.default_budget.page_limit = 20;
    cfg.default_budget.max_page_limit = 80;
    let (mut d, cs) = connected(cfg, &[&ann]);
    let burst = T0 - 5000;
    let mut events: Vec<Event> = (0..10)
        .map(|i| root(1621, 7, burst + 100 + i, &repo, &format!("newer {i}")))
        .collect();
    events.extend((0..50).map(|i| root(1621, 7, burst, &repo, &format!("burst {i}"))));
    events.extend((0..10).map(|i| root(1621, 7, burst - 100 - i, &repo, &format!("older {i}"))));
    let fake = FakeRelay {
        events: events.clone(),
        cap: 100,
        ignores_bounds: false,
    };
    let outcome = |e: &Event| {
        if e.id.as_bytes()[0] % 2 == 0 {
            StoreOutcome::Stored
        } else {
            StoreOutcome::Rejected
        }
    };
    let run = drive_pages(&mut d, &fake, outcome, cs, 40);
    let got: BTreeSet<_> = run.sent.iter().copied().collect();
    let all: BTreeSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(
        got.len(),
        all.len(),
        "a one-second burst larger than a page is fetched whole"
    );
    assert_eq!(got, all);
    let tie: Vec<&Filter> = run
        .reqs
        .iter()
        .flat_map(|r| r.filters.iter())
        .filter(|f| field(f, "since") == Some(burst) && field(f, "until") == Some(burst))
        .collect();
    assert!(!tie.is_empty(), "the burst second is asked alone");
    assert!(
        tie.iter().any(|f| field(f, "limit") == Some(40)),
        "with the limit doubled: {:?}",
        tie.iter().map(|f| f.as_json()).collect::<Vec<_>>()
    );
    assert!(
        tie.iter().all(|f| field(f, "limit").unwrap_or(0) <= 80),
        "up to the cap"
    );
    assert_eq!(
        d.engine.confirmed_targets(&relay),
        d.engine.relay_targets(&relay)
    );

    // (c) A relay that ignores `since`/`until` and always sends the same 25
    // events of one second.
    let mut cfg = config();
    cfg.default_budget.page_limit = 20;
    cfg.default_budget.max_page_limit = 80;
    let (mut d, cs) = connected(cfg, &[&ann]);
    let events: Vec<Event> = (0..25)
        .map(|i| root(1621, 7, burst, &repo, &format!("stuck {i}")))
        .collect();
    let fake = FakeRelay {
        events: events.clone(),
        cap: 25,
        ignores_bounds: true,
    };
    let run = drive_pages(&mut d, &fake, |_| StoreOutcome::Duplicate, cs, 20);
    let a_pages: Vec<Filter> = run
        .reqs
        .iter()
        .flat_map(|r| r.filters.iter())
        .filter(|f| f.as_json().contains(r##""#a""##))
        .cloned()
        .collect();
    assert!(
        a_pages.iter().any(|f| field(f, "until") == Some(burst - 1)),
        "after the one-second pages, until steps below the second: {:?}",
        a_pages.iter().map(Filter::as_json).collect::<Vec<_>>()
    );
    assert_eq!(
        d.engine.confirmed_targets(&relay),
        d.engine.relay_targets(&relay)
    );
    assert!(d
        .engine
        .pending_targets(&relay)
        .is_some_and(|p| p.is_empty()));
}

// ----- item 12 --------------------------------------------------------------

/// A relay with two repos, connected, its historic REQs outstanding.
fn two_repos(cfg: Config) -> (Driver, Vec<Command>) {
    let ann1 = announcement(1, "one", T0 - 100, &[R1], true);
    let ann2 = announcement(2, "two", T0 - 100, &[R1], true);
    connected(cfg, &[&ann1, &ann2])
}

/// The layer-2 shapes of the two repos of [`two_repos`].
fn two_repo_shapes() -> Atoms {
    repo_shapes(&[&coord(1, "one"), &coord(2, "two")])
        .into_iter()
        .filter(|a| !is_discovery(a))
        .collect()
}

/// Of the historic REQs in `cs`, answers every one but the REQ carrying the
/// repos' `#a` filter, and returns that one.
fn isolate_repo_req(d: &mut Driver, cs: &[Command]) -> Sub {
    let hist = historic(cs);
    let (mine, rest): (Vec<Sub>, Vec<Sub>) = hist
        .into_iter()
        .partition(|s| s.json().iter().any(|f| f.contains(r##""#a""##)));
    assert_eq!(mine.len(), 1, "{}", show(cs));
    eose(d, &rest);
    mine.into_iter().next().expect("one")
}

/// Asserts that `sub` is no longer held: events for it are unrequested.
fn assert_not_held(d: &Driver, relay: &RelayUrl, sub: &SubscriptionId) {
    assert!(
        d.engine.subscription_filters(relay, sub).is_none(),
        "{sub} still held"
    );
    let e = root(1621, 9, T0, &coord(1, "one"), "late");
    assert_eq!(
        d.engine.check_event(relay, sub, &e),
        grasp_sync_core::EventCheck::Unrequested
    );
}

/// Item 12: "Pending batches with no timeout; `CLOSED` ignored; its
/// subscription id lost." A historic REQ that sees no event and no EOSE for
/// 60 s is closed (`CLOSE` with its id) and retried with backoff for the same
/// work; a batch that keeps timing out is given up (reported), never left
/// pending forever, and the daily pass tries it again.
#[test]
fn never_again_12_pending_batches_time_out_and_closed_is_handled() {
    let relay = url(R1);
    let (mut d, cs) = two_repos(config());
    let first = historic(&cs);
    assert!(!first.is_empty(), "{}", show(&cs));
    let sent_at = d.now;
    assert_eq!(
        d.engine.next_wakeup(),
        Some(sent_at.plus(secs(60))),
        "a pending REQ has a deadline"
    );
    let cs =
        tick_until(&mut d, mins(2), |cs| !unsubscribes(cs).is_empty()).expect("the REQ times out");
    assert_eq!(d.now, sent_at.plus(secs(60)));
    let closed: BTreeSet<SubscriptionId> = unsubscribes(&cs).into_iter().map(|(_, s)| s).collect();
    let ids: BTreeSet<SubscriptionId> = first.iter().map(|s| s.id.clone()).collect();
    assert_eq!(closed, ids, "{}", show(&cs));
    assert!(
        historic(&cs).is_empty(),
        "retried with backoff, not at once:\n{}",
        show(&cs)
    );
    for s in &first {
        assert_not_held(&d, &relay, &s.id);
    }
    assert_eq!(
        relay_status(&d.engine, &relay).stats.timeouts,
        first.len() as u64
    );
    assert_eq!(
        d.engine.pending_targets(&relay),
        d.engine.relay_targets(&relay)
    );
    let timed_out_at = d.now;
    let cs = tick_until(&mut d, secs(30), |cs| !historic(cs).is_empty()).expect("a retry");
    let delay = d.now.since(timed_out_at);
    assert!(
        delay >= secs(4) && delay <= secs(6),
        "retry after {delay:?}"
    );
    let mut retried = historic(&cs);
    assert!(retried.iter().all(|s| !ids.contains(&s.id)), "a new REQ");
    let cs = eose(&mut d, &retried);
    retried.extend(historic(&cs));
    let cs = run(&mut d, mins(2));
    retried.extend(historic(&cs));
    eose(&mut d, &historic(&cs));
    assert_eq!(union(&retried), union(&first), "the same work is retried");
    assert_eq!(
        d.engine.confirmed_targets(&relay),
        d.engine.relay_targets(&relay)
    );

    // A relay that never answers: within hours the batch is given up.
    let (mut d, cs) = two_repos(config());
    let first = historic(&cs);
    run(&mut d, hours(3));
    assert!(
        d.engine
            .pending_targets(&relay)
            .is_some_and(|p| p.is_empty()),
        "a batch is never left pending forever"
    );
    let st = relay_status(&d.engine, &relay);
    let targets = d.engine.relay_targets(&relay).map_or(0, |s| s.len());
    assert_eq!(st.given_up.get(&GiveUpReason::Unresponsive), Some(&targets));
    assert!(st.stats.timeouts >= 2);
    assert_eq!(st.state, RelayState::Live);

    // The daily pass tries again.
    let resync = st.next_resync.expect("daily pass");
    let wait = resync.since(d.now).saturating_add(secs(1));
    let cs = tick_until(&mut d, wait, |cs| !historic(cs).is_empty())
        .expect("the daily pass retries given-up work");
    assert_eq!(union(&historic(&cs)), union(&first));
}

/// Item 12, `CLOSED rate-limited:`: the relay is cooled down 65 s (doubling
/// on a repeat), its concurrent-REQ budget is lowered, the closed id is no
/// longer held, and the same work is retried after the cool-down.
#[test]
fn never_again_12_closed_rate_limited() {
    let relay = url(R1);
    let mut cfg = config();
    // Four filters per REQ: discovery and the repos travel in REQs of their
    // own, so more subscriptions are open when the relay objects.
    cfg.default_budget.max_filters_per_req = 4;
    let (mut d, cs) = two_repos(cfg);
    let h = isolate_repo_req(&mut d, &cs);
    assert_eq!(h.shapes(), two_repo_shapes());
    let open_before = relay_status(&d.engine, &relay).open_subscriptions;
    assert!(open_before >= 3, "precondition: {open_before} open");
    let t = d.now;
    // A rate limit (a cap on concurrent REQs, "too many REQs", is not one:
    // see the concurrency tests of issue 15).
    let out = d.input(Input::Closed {
        relay: &relay,
        subscription: &h.id,
        message: "rate-limited: slow down",
    });
    assert!(historic(&out).is_empty(), "{}", show(&out));
    assert_not_held(&d, &relay, &h.id);
    let st = relay_status(&d.engine, &relay);
    assert_eq!(st.cooldown_until, Some(t.plus(secs(65))));
    let learned = st.learned_max_subscriptions.expect("a learned budget");
    assert!(
        learned < open_before as u32,
        "learned {learned} with {open_before} open"
    );
    assert!(st.budget.max_subscriptions <= learned);
    assert_eq!(st.stats.refusals.get("rate-limited"), Some(&1));
    let out = tick_until(&mut d, mins(3), |cs| !historic(cs).is_empty()).expect("a retry");
    assert_eq!(d.now, t.plus(secs(65)), "retried when the cool-down ends");
    let retry = historic(&out);
    assert_eq!(union(&retry), h.shapes());
    // A repeat doubles the cool-down.
    let t = d.now;
    d.input(Input::Closed {
        relay: &relay,
        subscription: &retry[0].id,
        message: "rate-limited: still too many",
    });
    assert_eq!(
        relay_status(&d.engine, &relay).cooldown_until,
        Some(t.plus(secs(130)))
    );
    assert_not_held(&d, &relay, &retry[0].id);
}

/// Item 12, `CLOSED auth-required:` with no key configured: the work is
/// given up (reported as auth-required) and not asked again until the daily
/// pass, which does ask again.
#[test]
fn never_again_12_closed_auth_required_without_key() {
    let relay = url(R1);
    let mut cfg = config();
    cfg.default_budget.max_filters_per_req = 4;
    let (mut d, cs) = two_repos(cfg);
    let h = isolate_repo_req(&mut d, &cs);
    let out = d.input(Input::Closed {
        relay: &relay,
        subscription: &h.id,
        message: "auth-required: we only serve members",
    });
    assert!(historic(&out).is_empty(), "{}", show(&out));
    assert!(!out
        .iter()
        .any(|c| matches!(c, Command::Authenticate { .. })));
    assert_not_held(&d, &relay, &h.id);
    let st = relay_status(&d.engine, &relay);
    assert_eq!(st.given_up.get(&GiveUpReason::AuthRequired), Some(&2));
    assert_eq!(st.stats.refusals.get("auth-required"), Some(&1));
    assert!(d
        .engine
        .pending_targets(&relay)
        .is_some_and(|p| p.is_empty()));
    let resync = st.next_resync.expect("daily pass");
    let (out, at_pass) = around_daily_pass(&mut d, resync);
    assert!(
        historic(&out).is_empty(),
        "asked again before the daily pass:\n{}",
        show(&out)
    );
    let out = at_pass;
    assert!(
        union(&historic(&out)).is_superset(&h.shapes()),
        "{}",
        show(&out)
    );
}

/// Item 12, `CLOSED auth-required:` with a key (`Config::auth_enabled`): the
/// engine answers the relay's AUTH challenge and, once accepted, resends the
/// same work; the closed id is not held meanwhile.
#[test]
fn never_again_12_closed_auth_required_with_key() {
    let relay = url(R1);
    let mut cfg = config();
    cfg.auth_enabled = true;
    cfg.default_budget.max_filters_per_req = 4;
    let (mut d, cs) = two_repos(cfg);
    let h = isolate_repo_req(&mut d, &cs);
    let out = d.input(Input::Closed {
        relay: &relay,
        subscription: &h.id,
        message: "auth-required: please authenticate",
    });
    assert!(
        historic(&out).is_empty(),
        "not resent before AUTH:\n{}",
        show(&out)
    );
    assert_not_held(&d, &relay, &h.id);
    let out = d.input(Input::AuthChallenge {
        relay: &relay,
        challenge: "c-123",
    });
    assert_eq!(
        out,
        vec![Command::Authenticate {
            relay: relay.clone(),
            challenge: "c-123".to_owned()
        }]
    );
    let mut out = d.input(Input::AuthResult {
        relay: &relay,
        accepted: true,
    });
    if historic(&out).is_empty() {
        out.extend(settle(&mut d));
    }
    let again = historic(&out);
    assert_eq!(union(&again), h.shapes(), "{}", show(&out));
    let st = relay_status(&d.engine, &relay);
    assert!(st.given_up.is_empty());
    eose(&mut d, &again);
    assert_eq!(
        d.engine.confirmed_targets(&relay),
        d.engine.relay_targets(&relay)
    );
}

/// Item 12, `CLOSED restricted:` (and `blocked:` on the live subscription):
/// the relay refuses us; the work stops, is reported, and is retried only at
/// the daily pass.
#[test]
fn never_again_12_closed_restricted() {
    let relay = url(R1);
    let (mut d, cs) = two_repos(config());
    let h = isolate_repo_req(&mut d, &cs);
    let lv = live(&cs).remove(0);
    let out = d.input(Input::Closed {
        relay: &relay,
        subscription: &h.id,
        message: "restricted: not on the allow list",
    });
    assert!(historic(&out).is_empty(), "{}", show(&out));
    assert_not_held(&d, &relay, &h.id);
    let st = relay_status(&d.engine, &relay);
    let given_up: usize = st.given_up.values().sum();
    assert_eq!(
        st.given_up.get(&GiveUpReason::Refused),
        Some(&given_up),
        "{:?}",
        st.given_up
    );
    assert!(given_up >= 2, "both repos given up: {:?}", st.given_up);
    assert_eq!(st.stats.refusals.get("restricted"), Some(&1));
    // The live subscription refused with `blocked:` is not reopened either.
    let out = d.input(Input::Closed {
        relay: &relay,
        subscription: &lv.id,
        message: "blocked: go away",
    });
    assert!(subs(&out).is_empty(), "{}", show(&out));
    assert_not_held(&d, &relay, &lv.id);
    assert_eq!(
        relay_status(&d.engine, &relay)
            .stats
            .refusals
            .get("blocked"),
        Some(&1)
    );
    let resync = st.next_resync.expect("daily pass");
    let (out, at_pass) = around_daily_pass(&mut d, resync);
    assert!(
        subs(&out).is_empty(),
        "asked again before the daily pass:\n{}",
        show(&out)
    );
    let out = at_pass;
    assert!(
        union(&historic(&out)).is_superset(&h.shapes()),
        "{}",
        show(&out)
    );
    assert!(
        union(&live(&out)).is_superset(&lv.shapes()),
        "the live subscription is reopened at the daily pass:\n{}",
        show(&out)
    );
}

/// Item 12, `CLOSED error:` / `invalid:` / `unsupported:`: the filter is
/// split once and the halves retried; a half refused again is given up for
/// this relay and reported, and not asked again before the daily pass.
#[test]
fn never_again_12_closed_error_splits_then_gives_up() {
    let relay = url(R1);
    let mut cfg = config();
    // Four filters per REQ: the two repos' filters travel in a REQ of their own.
    cfg.default_budget.max_filters_per_req = 4;
    let (mut d, cs) = two_repos(cfg);
    let (one, two) = (coord(1, "one"), coord(2, "two"));
    let repo_req = isolate_repo_req(&mut d, &cs);
    assert_eq!(repo_req.shapes(), two_repo_shapes());
    let mut out = d.input(Input::Closed {
        relay: &relay,
        subscription: &repo_req.id,
        message: "error: too many tag values",
    });
    assert_not_held(&d, &relay, &repo_req.id);
    if historic(&out).len() < 2 {
        out.extend(settle(&mut d));
    }
    let halves = historic(&out);
    assert_eq!(halves.len(), 2, "split in two:\n{}", show(&out));
    let only = |c: &grasp_sync_core::RepoCoord| -> Atoms {
        repo_shapes(&[c])
            .into_iter()
            .filter(|a| !is_discovery(a))
            .collect()
    };
    let got: Vec<Atoms> = halves.iter().map(Sub::shapes).collect();
    assert!(
        got.contains(&only(&one)) && got.contains(&only(&two)),
        "{got:?}"
    );
    // One half succeeds, the other is refused again.
    eose(&mut d, &halves[..1]);
    let out = d.input(Input::Closed {
        relay: &relay,
        subscription: &halves[1].id,
        message: "invalid: still bad",
    });
    assert!(
        historic(&out).is_empty(),
        "given up after the split:\n{}",
        show(&out)
    );
    assert_not_held(&d, &relay, &halves[1].id);
    let st = relay_status(&d.engine, &relay);
    assert_eq!(st.given_up.get(&GiveUpReason::Rejected), Some(&1));
    assert_eq!(st.stats.refusals.get("error"), Some(&1));
    assert_eq!(st.stats.refusals.get("invalid"), Some(&1));
    assert_eq!(
        d.engine.confirmed_targets(&relay).map(|s| s.len()),
        Some(2),
        "discovery and the good half"
    );
    let out = run(&mut d, hours(2));
    assert!(historic(&out).is_empty(), "{}", show(&out));
}

/// Item 12, `CLOSED error:` on a REQ that carries discovery and the repos'
/// filters together (the default packing): the repos' filter must still be
/// split once and its halves retried before any repo is given up (spec
/// section 5: "split the filter once and retry the halves; if that fails
/// too, give the item up"). Separating the REQ into its packs alone is not a
/// split of the filter: a refused two-repo filter must not cost both repos.
#[test]

fn never_again_12_closed_error_splits_the_filter_in_a_shared_req() {
    let relay = url(R1);
    let (one, two) = (coord(1, "one"), coord(2, "two"));
    let (mut d, cs) = two_repos(config());
    let req = isolate_repo_req(&mut d, &cs);
    assert!(
        req.shapes().iter().any(is_discovery),
        "precondition: discovery travels with the repos"
    );
    let mut out = d.input(Input::Closed {
        relay: &relay,
        subscription: &req.id,
        message: "error: bad filter",
    });
    out.extend(settle(&mut d));
    // Discovery alone is fine; the repos' filter is refused again.
    let retried = historic(&out);
    let (disc, repos): (Vec<Sub>, Vec<Sub>) = retried
        .into_iter()
        .partition(|s| s.shapes().iter().all(is_discovery));
    eose(&mut d, &disc);
    assert_eq!(repos.len(), 1, "{}", show(&out));
    assert_eq!(repos[0].shapes(), two_repo_shapes());
    let mut out = d.input(Input::Closed {
        relay: &relay,
        subscription: &repos[0].id,
        message: "error: bad filter",
    });
    out.extend(settle(&mut d));
    let only = |c: &grasp_sync_core::RepoCoord| -> Atoms {
        repo_shapes(&[c])
            .into_iter()
            .filter(|a| !is_discovery(a))
            .collect()
    };
    let halves: Vec<Atoms> = historic(&out).iter().map(Sub::shapes).collect();
    assert!(
        halves.contains(&only(&one)) && halves.contains(&only(&two)),
        "the two-repo filter was given up without being split: given up {:?}\n{}",
        relay_status(&d.engine, &relay).given_up,
        show(&out)
    );
}

/// Item 12, `CLOSED` with no known prefix, on a historic and on a live
/// subscription: retried with backoff (5 s, jittered) for the same work, and
/// the closed id is accounted for (not held meanwhile).
#[test]
fn never_again_12_closed_unprefixed_retries_with_backoff() {
    let relay = url(R1);
    let (mut d, cs) = two_repos(config());
    let h = isolate_repo_req(&mut d, &cs);
    let lv = live(&cs).remove(0);
    let t = d.now;
    let out = d.input(Input::Closed {
        relay: &relay,
        subscription: &h.id,
        message: "shutting down",
    });
    assert!(historic(&out).is_empty(), "{}", show(&out));
    assert_not_held(&d, &relay, &h.id);
    assert_eq!(
        relay_status(&d.engine, &relay).stats.refusals.get("other"),
        Some(&1)
    );
    let out = d.input(Input::Closed {
        relay: &relay,
        subscription: &lv.id,
        message: "",
    });
    assert!(live(&out).is_empty(), "{}", show(&out));
    assert_not_held(&d, &relay, &lv.id);
    let timed = ticks_for(&mut d, secs(12));
    let first = |mode: SubscriptionMode| -> Option<Time> {
        timed
            .iter()
            .find(|(_, c)| matches!(c, Command::Subscribe { mode: m, .. } if *m == mode))
            .map(|(at, _)| *at)
    };
    for mode in [SubscriptionMode::Historic, SubscriptionMode::Live] {
        let at = first(mode).unwrap_or_else(|| panic!("no {mode:?} retry"));
        let delay = at.since(t);
        assert!(
            delay >= secs(4) && delay <= secs(6),
            "{mode:?} retry after {delay:?}"
        );
    }
    let all: Vec<Command> = timed.into_iter().map(|(_, c)| c).collect();
    assert_eq!(union(&historic(&all)), h.shapes(), "{}", show(&all));
    let relive = live(&all);
    assert_eq!(relive.len(), 1, "{}", show(&all));
    assert_eq!(relive[0].shapes(), lv.shapes());
}

/// Item 12, the subscription id: a `CLOSED` or EOSE that arrives late for a
/// subscription we already replaced or closed is accounted to that old id
/// only. It must not close, retry or give up the work now running under
/// other ids.
#[test]
fn never_again_12_closed_for_an_old_id_touches_nothing_else() {
    let relay = url(R1);
    let ann1 = announcement(1, "one", T0 - 100, &[R1], true);
    let mut d = synced(config(), &[&ann1]);
    // Churn: two repos added one at a time, then a quick reconnect.
    for (n, name) in [(2, "two"), (3, "three")] {
        let ann = announcement(n, name, T0 - 90, &[R1], true);
        d.input(Input::CatalogEvent(&ann));
        let cs = settle(&mut d);
        eose(&mut d, &historic(&cs));
    }
    d.advance(mins(1));
    d.input(Input::Disconnected {
        relay: &relay,
        reason: "reset",
    });
    tick_until(&mut d, mins(1), |cs| connects(cs).contains(&relay)).expect("reconnect");
    let cs = d.input(Input::Connected { relay: &relay });
    eose(&mut d, &historic(&cs));
    // Now a REQ in flight for a fourth repo.
    let ann4 = announcement(4, "four", T0 - 80, &[R1], true);
    d.input(Input::CatalogEvent(&ann4));
    let cs = settle(&mut d);
    let in_flight = historic(&cs);
    assert_eq!(in_flight.len(), 1, "{}", show(&cs));

    let all_ids: BTreeSet<SubscriptionId> =
        on(&relay, subs(&d.log)).into_iter().map(|s| s.id).collect();
    let (held, stale): (Vec<SubscriptionId>, Vec<SubscriptionId>) = all_ids
        .into_iter()
        .partition(|id| d.engine.subscription_filters(&relay, id).is_some());
    assert!(stale.len() >= 3, "precondition: old ids {stale:?}");
    let held_filters: Vec<Vec<Filter>> = held
        .iter()
        .map(|id| {
            d.engine
                .subscription_filters(&relay, id)
                .expect("held")
                .to_vec()
        })
        .collect();
    let before = relay_status(&d.engine, &relay);

    let mut out = Vec::new();
    for old in &stale {
        for message in [
            "error: late",
            "restricted: late",
            "auth-required: late",
            "late",
        ] {
            out.extend(d.input(Input::Closed {
                relay: &relay,
                subscription: old,
                message,
            }));
        }
        out.extend(d.input(Input::Eose {
            relay: &relay,
            subscription: old,
        }));
    }
    out.extend(settle(&mut d));
    assert!(out.is_empty(), "{}", show(&out));
    for (id, filters) in held.iter().zip(&held_filters) {
        assert_eq!(
            d.engine
                .subscription_filters(&relay, id)
                .map(|f| f.to_vec()),
            Some(filters.clone()),
            "{id} was touched by a late answer to another id"
        );
    }
    let after = relay_status(&d.engine, &relay);
    assert!(after.given_up.is_empty(), "{:?}", after.given_up);
    assert_eq!(after.pending, before.pending);
    assert_eq!(after.open_subscriptions, before.open_subscriptions);
    assert_eq!(after.cooldown_until, None);
    eose(&mut d, &in_flight);
    assert_eq!(
        d.engine.confirmed_targets(&relay),
        d.engine.relay_targets(&relay)
    );
}

// ----- item 13 --------------------------------------------------------------

/// Item 13: "Every new local event re-sending every filter to every relay."
/// On relays that are connected and synced, a new repo announcement or a new
/// root event costs, per relay that lists the repo, at most one new historic
/// REQ (about the new target only) and one live REQ (the update of one live
/// subscription, with at most one `CLOSE` of the id it replaces, or one new
/// small live subscription), after which the relay's live subscriptions cover
/// every target; relays that do not list it get nothing, and events that
/// change nothing cost nothing.
#[test]
fn never_again_13_new_event_does_not_resend_every_filter() {
    let (a, b, c) = (url(R1), url(R2), url(R3));
    let one = coord(1, "one");
    let ann1 = announcement(1, "one", T0 - 100, &[R1, R2], true);
    let ann9 = announcement(9, "nine", T0 - 100, &[R3], true);
    let mut d = synced(config(), &[&ann1, &ann9]);
    run(&mut d, mins(1));

    let live_ids = |d: &Driver| -> BTreeMap<RelayUrl, BTreeSet<SubscriptionId>> {
        [&a, &b, &c]
            .into_iter()
            .map(|r| {
                (
                    r.clone(),
                    open_live(d, r).into_iter().map(|s| s.id).collect(),
                )
            })
            .collect()
    };
    // `new`: the new target; every affected relay must fetch it and only it.
    let check = |d: &Driver,
                 cs: &[Command],
                 before: &BTreeMap<RelayUrl, BTreeSet<SubscriptionId>>,
                 affected: &[&RelayUrl],
                 new: &TargetKey| {
        let new_shapes = target_shapes(&BTreeSet::from([new.clone()]));
        for relay in [&a, &b, &c] {
            let mine: Vec<Command> = cs.iter().filter(|x| x.relay() == relay).cloned().collect();
            if !affected.contains(&relay) {
                assert!(
                    mine.is_empty(),
                    "{relay} is not concerned:\n{}",
                    show(&mine)
                );
                continue;
            }
            let h = historic(&mine);
            let l = live(&mine);
            let u = unsubscribes(&mine);
            assert_eq!(h.len(), 1, "{relay}: one historic REQ:\n{}", show(&mine));
            assert_eq!(
                h[0].shapes(),
                new_shapes,
                "{relay}: history of the new target only"
            );
            assert_eq!(l.len(), 1, "{relay}: one live REQ:\n{}", show(&mine));
            assert!(
                l[0].shapes().is_superset(&new_shapes),
                "{relay}: the live REQ covers the new target"
            );
            assert!(
                u.len() <= 1 && u.iter().all(|(_, id)| before[relay].contains(id)),
                "{relay}: at most the one updated live subscription is closed:\n{}",
                show(&mine)
            );
            assert_eq!(
                mine.len(),
                h.len() + l.len() + u.len(),
                "{relay}: nothing else:\n{}",
                show(&mine)
            );
            let targets = d.engine.relay_targets(relay).expect("known");
            assert!(targets.contains(new));
            assert_eq!(
                union(&open_live(d, relay)),
                target_shapes(&targets),
                "{relay}: live subscriptions cover old and new targets"
            );
        }
    };

    // A new repo listed by A only.
    let ann2 = announcement(2, "two", T0 - 90, &[R1], true);
    let two = TargetKey::Repo(std::sync::Arc::new(coord(2, "two")));
    let before = live_ids(&d);
    let mut cs = d.input(Input::CatalogEvent(&ann2));
    cs.extend(settle(&mut d));
    check(&d, &cs, &before, &[&a], &two);
    eose(&mut d, &historic(&cs));

    // A new issue on repo one: A and B.
    let issue = root(1621, 5, T0 - 10, &one, "bug");
    let before = live_ids(&d);
    let mut cs = d.input(Input::CatalogEvent(&issue));
    cs.extend(settle(&mut d));
    check(&d, &cs, &before, &[&a, &b], &TargetKey::Root(issue.id));
    eose(&mut d, &historic(&cs));

    // A third repo on A: again one REQ and one live REQ, however many
    // subscriptions A holds by now.
    let ann3 = announcement(3, "three", T0 - 80, &[R1], true);
    let three = TargetKey::Repo(std::sync::Arc::new(coord(3, "three")));
    let before = live_ids(&d);
    let mut cs = d.input(Input::CatalogEvent(&ann3));
    cs.extend(settle(&mut d));
    check(&d, &cs, &before, &[&a], &three);
    eose(&mut d, &historic(&cs));
    for r in [&a, &b, &c] {
        assert_eq!(d.engine.confirmed_targets(r), d.engine.relay_targets(r));
    }

    // Events that change nothing cost nothing.
    for e in [&ann2, &ann1] {
        let mut cs = d.input(Input::CatalogEvent(e));
        cs.extend(settle(&mut d));
        assert!(cs.is_empty(), "a repeated announcement:\n{}", show(&cs));
    }
    let mut cs = d.input(Input::CatalogEvent(&issue));
    cs.extend(settle(&mut d));
    assert!(cs.is_empty(), "a repeated root event:\n{}", show(&cs));
    let stranger = root(1621, 5, T0 - 5, &coord(42, "untracked"), "elsewhere");
    let mut cs = d.input(Input::CatalogEvent(&stranger));
    cs.extend(settle(&mut d));
    assert!(
        cs.is_empty(),
        "a root event of an untracked repo:\n{}",
        show(&cs)
    );
}

// ----- item 14 --------------------------------------------------------------

/// Item 14: "Own-relay detection by substring; `https://github.com/...`
/// clone URLs turned into relays." For service `git.example.com`, relays
/// whose names merely contain it are real targets, while spellings of the
/// service itself (`wss://GIT.example.com/`, `ws://git.example.com:80`) never
/// are; a github clone URL creates no relay, while a GRASP-shaped clone URL
/// maps to its relay.
#[test]
fn never_again_14_own_relay_exact_match_and_no_github_relays() {
    let npub = format!("npub1{}", "q".repeat(58));
    assert_eq!(npub.len(), 63);
    let grasp_clone = format!("https://grasp.example.org/{npub}/y.git");
    let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let ann = event(
        pubkey(1),
        T0 - 100,
        30617,
        vec![
            t(&["d", "y"]),
            t(&[
                "relays",
                "wss://git.example.com.evil.org",
                "wss://notgit.example.com",
                "wss://GIT.example.com/",
                "ws://git.example.com:80",
            ]),
            t(&["clone", "https://github.com/x/y.git", &grasp_clone]),
        ],
        "",
    );
    let mut config = config();
    config.bootstrap.push(url("wss://git.example.com"));
    let mut d = Driver::new(config);
    let mut cs = d.input(Input::Tick);
    cs.extend(d.input(Input::CatalogEvent(&ann)));
    assert_eq!(
        d.engine.status().repos,
        1,
        "listing `wss://GIT.example.com/` is listing us"
    );

    let expected: BTreeSet<RelayUrl> = [
        "wss://git.example.com.evil.org",
        "wss://notgit.example.com",
        "wss://grasp.example.org",
    ]
    .into_iter()
    .map(url)
    .collect();
    let known: BTreeSet<RelayUrl> = d.engine.relay_urls().cloned().collect();
    assert_eq!(known, expected);
    let connected: BTreeSet<RelayUrl> = connects(&cs).into_iter().collect();
    assert_eq!(connected, expected, "{}", show(&cs));
    let repo = TargetKey::Repo(std::sync::Arc::new(coord(1, "y")));
    for r in &expected {
        assert!(
            d.engine.relay_targets(r).is_some_and(|t| t.contains(&repo)),
            "{r}"
        );
    }
    for own in [
        "wss://git.example.com",
        "ws://git.example.com",
        "wss://github.com",
    ] {
        let own = url(own);
        assert!(
            d.engine.relay_targets(&own).is_none(),
            "{own} must never be a target"
        );
        assert!(!cs.iter().any(|c| *c.relay() == own), "{}", show(&cs));
    }
}

// ----- item 15 --------------------------------------------------------------

/// Drains an engine driven by hand.
fn drain(e: &mut Engine) -> Vec<Command> {
    let mut out = Vec::new();
    while let Some(c) = e.poll_command() {
        out.push(c);
    }
    out
}

/// Item 15: "Indexes that only grow; nothing persisted; status metrics never
/// written." The status view counts received, stored, duplicate, rejected
/// and invalid events; `Engine::snapshot()` survives JSON and
/// `Engine::restore` keeps confirmed targets, giving a quick reconnect within
/// 15 min of the save and a fresh start after; a newer announcement without a
/// relay and kind-5 deletions both shrink targets, and a relay left empty is
/// forgotten after the 60 s grace.
#[test]
fn never_again_15_indexes_shrink_state_persists_status_counts() {
    let (a, b) = (url(R1), url(R2));
    let one = coord(1, "one");
    let ann1 = announcement(1, "one", T0 - 100, &[R1, R2], true);
    let ann2 = announcement(2, "two", T0 - 100, &[R2], true);
    let issue = root(1621, 5, T0 - 50, &one, "bug");
    let mut d = synced(config(), &[&ann1, &ann2]);
    d.input(Input::CatalogEvent(&issue));
    let cs = settle(&mut d);
    eose(&mut d, &historic(&cs));
    assert_eq!(d.engine.relay_targets(&a).map(|s| s.len()), Some(3));
    assert_eq!(d.engine.relay_targets(&b).map(|s| s.len()), Some(4));
    assert_eq!(d.engine.status().roots, 1);

    // Status counters: received, stored, duplicate, rejected, invalid.
    let another = root(1621, 6, T0 - 40, &one, "another");
    d.input(Input::CatalogEvent(&another));
    let cs = settle(&mut d);
    let (mine, rest): (Vec<Sub>, Vec<Sub>) = historic(&cs)
        .into_iter()
        .partition(|s| s.relay == a && s.json().iter().any(|f| f.contains(&another.id.to_hex())));
    let h = mine.first().cloned().expect("a REQ on A for the new root");
    eose(&mut d, &rest);
    let replies: Vec<Event> = (0..3)
        .map(|n| status(1630 + n, 8, T0 - 10, &another.id))
        .collect();
    for (e, o) in replies.iter().zip([
        StoreOutcome::Stored,
        StoreOutcome::Duplicate,
        StoreOutcome::Rejected,
    ]) {
        d.input(Input::EventReceived {
            relay: &a,
            subscription: &h.id,
            event: e,
        });
        d.input(Input::EventStored {
            relay: &a,
            id: e.id,
            created_at: e.created_at.as_secs(),
            outcome: o,
        });
    }
    d.input(Input::EventInvalid { relay: &a });
    let stray = root(1621, 9, T0, &coord(42, "x"), "stray");
    d.input(Input::EventReceived {
        relay: &a,
        subscription: &SubscriptionId::new("nope"),
        event: &stray,
    });
    let st = relay_status(&d.engine, &a);
    assert_eq!(st.stats.events_received, 3);
    assert_eq!(st.stats.events_stored, 1);
    assert_eq!(st.stats.events_duplicate, 1);
    assert_eq!(st.stats.events_rejected, 1);
    assert_eq!(st.stats.events_invalid, 1);
    assert_eq!(st.stats.events_unrequested, 1);
    assert_eq!(
        st.last_event_at.values().copied().max(),
        Some(T0 - 10),
        "cursor of the newest event"
    );
    let totals = d.engine.status().totals;
    assert_eq!(
        (
            totals.events_received,
            totals.events_stored,
            totals.events_rejected,
            totals.events_invalid,
            totals.events_unwanted
        ),
        (3, 1, 1, 1, 1)
    );
    eose(&mut d, &[h]);
    for r in [&a, &b] {
        assert_eq!(d.engine.confirmed_targets(r), d.engine.relay_targets(r));
    }

    // Persistence: snapshot → JSON → restore keeps confirmed targets.
    let saved_at = d.now;
    let confirmed_a = d.engine.confirmed_targets(&a).expect("A");
    let confirmed_b = d.engine.confirmed_targets(&b).expect("B");
    assert_eq!(confirmed_a.len(), 4);
    let json = serde_json::to_string(&d.engine.snapshot()).expect("serialises");
    assert_eq!(json, d.engine.snapshot().to_json());
    let snap = Snapshot::from_json(&json).expect("parses");
    let restored_at = saved_at.plus(mins(10));
    let mut e = Engine::restore(config(), snap.clone(), restored_at).expect("restores");
    assert_eq!(e.confirmed_targets(&a), Some(confirmed_a.clone()));
    assert_eq!(e.confirmed_targets(&b), Some(confirmed_b.clone()));
    assert_eq!(e.relay_targets(&a), Some(confirmed_a.clone()));
    assert_eq!(e.status().repos, 2);
    assert_eq!(e.status().roots, 2);
    e.handle_input(restored_at, Input::Tick);
    let cs = drain(&mut e);
    assert!(connects(&cs).contains(&a), "{}", show(&cs));
    e.handle_input(restored_at.plus(secs(1)), Input::Connected { relay: &a });
    let hist = historic(&drain(&mut e));
    assert!(!hist.is_empty());
    assert_eq!(
        union(&hist),
        target_shapes(&confirmed_a),
        "catch-up for every confirmed target"
    );
    for f in hist.iter().flat_map(|s| s.filters.iter()) {
        assert_eq!(
            field(f, "since"),
            Some(saved_at.as_secs() - 300),
            "a restart within 15 min of the save is a quick reconnect: {}",
            f.as_json()
        );
    }
    // More than 15 min after the save: a fresh start.
    let late = saved_at.plus(mins(16));
    let mut e = Engine::restore(config(), snap, late).expect("restores");
    e.handle_input(late, Input::Tick);
    e.handle_input(late.plus(secs(1)), Input::Connected { relay: &a });
    let hist = historic(&drain(&mut e));
    assert!(!hist.is_empty());
    for f in hist.iter().flat_map(|s| s.filters.iter()) {
        assert_eq!(field(f, "since"), None, "fresh start: {}", f.as_json());
    }

    // Shrinking: a newer announcement of `one` without A.
    let ann1b = announcement(1, "one", T0 - 10, &[R2], true);
    let mut cs = d.input(Input::CatalogEvent(&ann1b));
    cs.extend(settle(&mut d));
    assert!(
        cs.iter().all(|c| *c.relay() == a),
        "B keeps what it has:\n{}",
        show(&cs)
    );
    assert_eq!(d.engine.relay_targets(&a).map(|s| s.len()), Some(0));
    assert_eq!(d.engine.confirmed_targets(&a).map(|s| s.len()), Some(0));
    assert_eq!(d.engine.relay_targets(&b).map(|s| s.len()), Some(5));
    let out = run(&mut d, secs(50));
    assert!(disconnects(&out).is_empty());
    let out = run(&mut d, secs(10));
    assert_eq!(disconnects(&out), vec![a.clone()], "{}", show(&out));
    assert!(
        d.engine.relay_targets(&a).is_none(),
        "an empty relay is forgotten"
    );
    assert_eq!(d.engine.status().counters.relays_forgotten, 1);
    assert!(d.engine.snapshot().relays.iter().all(|r| r.url != a));

    // Shrinking: kind-5 deletions of both repos (by coordinate and by id).
    let del1 = deletion(1, T0, &[&one], &[]);
    d.input(Input::CatalogEvent(&del1));
    assert_eq!(
        d.engine.relay_targets(&b).map(|s| s.len()),
        Some(2),
        "repo two and discovery left"
    );
    assert_eq!(d.engine.status().repos, 1);
    let del2 = deletion(2, T0, &[], &[&ann2.id]);
    d.input(Input::CatalogEvent(&del2));
    assert_eq!(d.engine.relay_targets(&b).map(|s| s.len()), Some(0));
    assert_eq!(d.engine.status().repos, 0);
    let out = run(&mut d, secs(61));
    assert_eq!(disconnects(&out), vec![b.clone()], "{}", show(&out));
    assert_eq!(d.engine.relay_urls().count(), 0);
    assert_eq!(d.engine.status().counters.deletions_applied, 2);
    assert!(d.engine.snapshot().repos.is_empty());
    // A deleted repo stays deleted (a re-delivered old version is refused).
    let mut cs = d.input(Input::CatalogEvent(&ann1b));
    cs.extend(settle(&mut d));
    assert!(cs.is_empty(), "{}", show(&cs));
    assert_eq!(d.engine.status().counters.announcements_deleted, 1);
}
