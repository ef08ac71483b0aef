//! Shared helpers of the "never again" tests: the fixture configuration,
//! command views (subscriptions, atoms), fake relays and drivers.

use std::collections::BTreeSet;
use std::time::Duration;

use grasp_sync_core::{
    Command, Config, Engine, Input, RelayUrl, StoreOutcome, SubscriptionMode, TargetKey, Time,
};
use grasp_sync_sim::fixtures::*;
use nostr::event::Event;
use nostr::filter::{Filter, MatchEventOptions};
use nostr::message::SubscriptionId;
use serde_json::Value;

/// The fixture configuration with paged REQ only: these regressions are
/// about paging, subscriptions and refusals (NIP-77 is tested in the core
/// and in the simulation).
pub(crate) fn config() -> Config {
    let mut c = grasp_sync_sim::fixtures::config();
    c.nip77 = false;
    c
}

pub(crate) const R1: &str = "wss://relay.one.example";
pub(crate) const R2: &str = "wss://relay.two.example";
pub(crate) const R3: &str = "wss://relay.three.example";

pub(crate) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub(crate) fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

pub(crate) fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

/// Commands as JSON lines (for assertion messages).
pub(crate) fn show(cs: &[Command]) -> String {
    cs.iter()
        .map(|c| serde_json::to_string(c).expect("commands serialise"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `Subscribe` command, flattened.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sub {
    pub(crate) relay: RelayUrl,
    pub(crate) id: SubscriptionId,
    pub(crate) filters: Vec<Filter>,
    pub(crate) mode: SubscriptionMode,
}

impl Sub {
    pub(crate) fn json(&self) -> Vec<String> {
        self.filters.iter().map(Filter::as_json).collect()
    }

    /// What the subscription fetches, as [`Atoms`].
    pub(crate) fn shapes(&self) -> Atoms {
        self.filters.iter().flat_map(|f| atoms(&shape(f))).collect()
    }
}

/// What a set of filters fetches, independent of how values are packed into
/// filters and filters into REQs: one atom per (filter keys, key, value).
/// `{"#a":[x,y]}` and `{"#a":[x]},{"#a":[y]}` have the same atoms.
pub(crate) type Atoms = BTreeSet<(String, String, String)>;

/// The atoms of one filter's JSON (paging fields must be stripped first).
pub(crate) fn atoms(filter_json: &str) -> Atoms {
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

pub(crate) fn atoms_of<'a>(shapes: impl IntoIterator<Item = &'a String>) -> Atoms {
    shapes.into_iter().flat_map(|s| atoms(s)).collect()
}

/// The atom of layer-1 discovery, `{"kinds":[30617]}`.
pub(crate) fn is_discovery(a: &(String, String, String)) -> bool {
    a.0 == "kinds" && a.2 == "30617"
}

pub(crate) fn shape(f: &Filter) -> String {
    let mut f = f.clone();
    f.since = None;
    f.until = None;
    f.limit = None;
    f.as_json()
}

pub(crate) fn subs(cs: &[Command]) -> Vec<Sub> {
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

pub(crate) fn historic(cs: &[Command]) -> Vec<Sub> {
    subs(cs)
        .into_iter()
        .filter(|s| s.mode == SubscriptionMode::Historic)
        .collect()
}

pub(crate) fn live(cs: &[Command]) -> Vec<Sub> {
    subs(cs)
        .into_iter()
        .filter(|s| s.mode == SubscriptionMode::Live)
        .collect()
}

pub(crate) fn connects(cs: &[Command]) -> Vec<RelayUrl> {
    cs.iter()
        .filter_map(|c| match c {
            Command::Connect { relay } => Some(relay.clone()),
            _ => None,
        })
        .collect()
}

pub(crate) fn disconnects(cs: &[Command]) -> Vec<RelayUrl> {
    cs.iter()
        .filter_map(|c| match c {
            Command::Disconnect { relay } => Some(relay.clone()),
            _ => None,
        })
        .collect()
}

pub(crate) fn unsubscribes(cs: &[Command]) -> Vec<(RelayUrl, SubscriptionId)> {
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
pub(crate) fn field(f: &Filter, key: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(&f.as_json()).expect("filter JSON");
    v.get(key).and_then(Value::as_u64)
}

/// The filter shapes (no paging fields) of a relay carrying `repos` (by
/// coordinate string) and discovery.
pub(crate) fn repo_shapes(repos: &[&grasp_sync_core::RepoCoord]) -> Atoms {
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
pub(crate) fn synced(config: Config, anns: &[&Event]) -> Driver {
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
pub(crate) fn connected(config: Config, anns: &[&Event]) -> (Driver, Vec<Command>) {
    let mut d = Driver::new(config);
    let mut cs = Vec::new();
    for a in anns {
        cs.extend(d.input(Input::CatalogEvent(a)));
    }
    let out = d.connect_all(&cs);
    (d, out)
}

pub(crate) fn relay_status(e: &Engine, relay: &RelayUrl) -> grasp_sync_core::RelayStatus {
    e.status()
        .relays
        .into_iter()
        .find(|r| r.url == *relay)
        .unwrap_or_else(|| panic!("{relay} has no status"))
}

/// Fails every connection attempt of `relay` until `until`; returns the
/// commands of the first attempt at or after `until` (left unanswered).
pub(crate) fn fail_until(d: &mut Driver, relay: &RelayUrl, until: Time) -> Vec<Command> {
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
pub(crate) struct FakeRelay {
    pub(crate) events: Vec<Event>,
    pub(crate) cap: usize,
    pub(crate) ignores_bounds: bool,
}

impl FakeRelay {
    pub(crate) fn answer(&self, filters: &[Filter]) -> Vec<Event> {
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
pub(crate) struct PageRun {
    /// Every historic REQ, in order.
    pub(crate) reqs: Vec<Sub>,
    /// Every event sent (ids), with repeats.
    pub(crate) sent: Vec<nostr::event::EventId>,
}

/// Answers every historic REQ among `cs` (and every follow-up page) from
/// `fake`, sending each event with [`Input::EventReceived`] and the store's
/// verdict, then EOSE. Stops when no historic REQ is left, or fails after
/// `max_pages`.
pub(crate) fn drive_pages(
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
pub(crate) fn around_daily_pass(d: &mut Driver, resync: Time) -> (Vec<Command>, Vec<Command>) {
    let before = run(d, resync.since(d.now).saturating_sub(secs(1)));
    let at = run(d, secs(2));
    (before, at)
}

pub(crate) fn run(d: &mut Driver, dur: Duration) -> Vec<Command> {
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
pub(crate) fn open_live(d: &Driver, relay: &RelayUrl) -> Vec<Sub> {
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
pub(crate) fn settle(d: &mut Driver) -> Vec<Command> {
    run(d, secs(5))
}

/// Ticks at every wakeup for up to `limit` and stops at the first tick whose
/// commands satisfy `pred`, returning them (`d.now` is that tick's time).
pub(crate) fn tick_until(
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
pub(crate) fn union(subs: &[Sub]) -> Atoms {
    subs.iter().flat_map(Sub::shapes).collect()
}

pub(crate) fn on(relay: &RelayUrl, subs: Vec<Sub>) -> Vec<Sub> {
    subs.into_iter().filter(|s| s.relay == *relay).collect()
}

/// Answers the subscriptions (and every follow-up page) with EOSE.
pub(crate) fn eose(d: &mut Driver, subs: &[Sub]) -> Vec<Command> {
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
pub(crate) fn root_shapes(id: &nostr::event::EventId) -> Atoms {
    let id = id.to_hex();
    atoms_of(&[
        format!(r##"{{"#e":["{id}"]}}"##),
        format!(r##"{{"#E":["{id}"]}}"##),
        format!(r##"{{"#q":["{id}"]}}"##),
    ])
}

pub(crate) const DISCOVERY: &str = r#"{"kinds":[30617]}"#;

/// The filter shapes (no paging fields) that cover `targets`, one filter per
/// shape with every value packed in (spec section 3).
pub(crate) fn target_shapes(targets: &BTreeSet<TargetKey>) -> Atoms {
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
pub(crate) fn ticks_for(d: &mut Driver, dur: Duration) -> Vec<(Time, Command)> {
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
