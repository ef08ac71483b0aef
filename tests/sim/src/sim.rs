//! A deterministic in-memory world for the engine: fake relays holding
//! events, with configurable limits and refusal styles, latency, outages,
//! engine restarts, and a store that feeds what it keeps back to the engine,
//! all in virtual time and all seeded. Like quinn-proto's test `Pair` and
//! str0m's netem: the same seed gives the same run, command for command.
//!
//! Every command the engine emits is checked against the invariants of the
//! behaviour contract as it happens (see [`Violation`]), and after every
//! step the honesty oracles check what the engine reports and how it waits
//! (see [`HonestyOracle`]).
//!
//! | module | owns |
//! |---|---|
//! | `profile` | [`Profile`]: the behaviours a fake relay is made of |
//! | `zoo` | named profiles of real relays ([`Peer`]) |
//! | `relay` | [`FakeRelay`]: what it holds and how it answers a REQ |
//! | `nip77` | NEG-OPEN and NEG-MSG on a fake relay; the store's items |
//! | `honesty` | the no-false-success and no-stall oracles |

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use grasp_sync_core::{
    is_catalog_kind, Command, Config, Engine, EventCheck, Input, RelayInfo, RelayUrl, Snapshot,
    StoreOutcome, TargetKey, Time,
};
use nostr::event::{Event, EventId};
use nostr::filter::Filter;
use nostr::message::SubscriptionId;

use crate::fuzzing::oracle::BudgetOracle;

mod honesty;
mod nip77;
mod profile;
mod relay;
mod zoo;

pub use honesty::{describe, under_target, HonestyOracle, HonestyViolation};
pub use nip77::Nip77Behaviour;
pub use profile::{Bucket, DuplicateId, LimitScope, LimitZero, Profile, RefusalStyle, UntilStyle};
pub use relay::{Episode, FakeRelay};
pub use zoo::{
    Peer, KHATRU_FILTER_LIMIT, LOCAL_RELAY_CAP_CLOSED, NOSTR_RS_CAP_NOTICE, PYPI_CAP_NOTICE,
    STRFRY_CAP_NOTICE,
};

#[derive(Clone, Debug)]
enum Msg {
    Info(RelayInfo),
    Connected,
    ConnectFailed,
    Disconnected,
    Event(SubscriptionId, Box<Event>),
    Eose(SubscriptionId),
    Closed(SubscriptionId, String),
    Notice(String),
    Auth(String),
    AuthOk(bool),
    LocalItems(u64, Filter),
    Negentropy(SubscriptionId, String),
    NegErr(SubscriptionId, String),
}

/// Generation of deliveries that do not belong to a websocket (NIP-11).
const ANY_CONNECTION: u64 = u64::MAX;

#[derive(Clone, Debug)]
struct Delivery {
    relay: RelayUrl,
    generation: u64,
    msg: Msg,
}

/// Something scheduled to happen to the world.
#[derive(Clone, Debug)]
pub enum Fault {
    /// The relay goes down for a while (connections drop, connects fail).
    Down {
        /// Which relay.
        relay: RelayUrl,
        /// For how long.
        duration: Duration,
    },
    /// An event is published to a relay (live traffic).
    Publish {
        /// Where.
        relay: RelayUrl,
        /// What.
        event: Box<Event>,
    },
    /// The relay comes back after an outage.
    Up {
        /// Which relay.
        relay: RelayUrl,
    },
    /// The engine restarts from its saved snapshot.
    Restart,
    /// The host's store receives an event from elsewhere (e.g. a push to our own relay).
    LocalEvent(Box<Event>),
}

/// An invariant the engine broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Subscribed to our own service.
    OwnService(String),
    /// Subscribed to a relay no tracked announcement lists and that is not bootstrap.
    Unlisted(String),
    /// A filter names a value that is not a current target of the relay.
    NotATarget(String),
    /// More subscriptions open than the relay publishes or the engine's budget allows.
    OverBudget(String),
}

/// Counters of what the world delivered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorldStats {
    /// Inputs fed to the engine.
    pub inputs: u64,
    /// Commands the engine emitted.
    pub commands: u64,
    /// Events stored.
    pub stored: u64,
    /// Events the store refused.
    pub rejected: u64,
    /// Engine restarts.
    pub restarts: u64,
    /// Events sent in answer to REQs (paged or by id).
    pub events_sent: u64,
    /// Connection attempts (`Connect` commands).
    pub connects: u64,
}

/// The simulated world.
pub struct World {
    /// The engine under test.
    pub engine: Engine,
    config: Config,
    /// Fake relays by URL.
    pub relays: BTreeMap<RelayUrl, FakeRelay>,
    /// Our store.
    pub store: BTreeMap<EventId, Event>,
    /// Virtual time.
    pub now: Time,
    queue: BinaryHeap<Reverse<(Time, u64, usize)>>,
    items: BTreeMap<usize, Delivery>,
    faults: BinaryHeap<Reverse<(Time, u64, usize)>>,
    fault_items: BTreeMap<usize, Fault>,
    seq: u64,
    /// Every command, serialised, in order (while `keep_log` is on).
    pub log: Vec<String>,
    /// Whether commands are kept in `log` (on by default; off for long runs).
    pub keep_log: bool,
    /// When set, every input (abridged) and command with its virtual time,
    /// for debugging a scenario.
    pub trace: Option<Vec<String>>,
    /// A black-box budget oracle fed every input and command, when set.
    pub oracle: Option<BudgetOracle>,
    /// Invariant violations seen.
    pub violations: Vec<Violation>,
    /// Relays ever listed by a tracked announcement in the store, plus bootstrap.
    listed: BTreeSet<RelayUrl>,
    /// Delivery counters.
    pub stats: WorldStats,
    /// Outage end per relay.
    down_until: BTreeMap<RelayUrl, Time>,
    /// Ids the store refused.
    pub rejected: BTreeSet<EventId>,
    /// Messages on the wire from each relay (for its current connection or
    /// an older one), not yet delivered.
    in_flight: BTreeMap<RelayUrl, usize>,
    /// The honesty oracles (on by default; see [`HonestyOracle`]).
    pub honesty: Option<HonestyOracle>,
    /// Relays the current step concerned (its input's, its commands').
    touched: BTreeSet<RelayUrl>,
    /// Events published during the run: where first and when.
    published: BTreeMap<EventId, Time>,
    /// How long each published event took to reach our store.
    pub live_latency: BTreeMap<EventId, Duration>,
}

impl World {
    /// A world at `start` with an engine built from `config`.
    pub fn new(config: Config, start: Time) -> Self {
        let listed = config.bootstrap.iter().cloned().collect();
        World {
            engine: Engine::new(config.clone()),
            config,
            relays: BTreeMap::new(),
            store: BTreeMap::new(),
            now: start,
            queue: BinaryHeap::new(),
            items: BTreeMap::new(),
            faults: BinaryHeap::new(),
            fault_items: BTreeMap::new(),
            seq: 0,
            log: Vec::new(),
            keep_log: true,
            trace: None,
            oracle: None,
            violations: Vec::new(),
            listed,
            stats: WorldStats::default(),
            down_until: BTreeMap::new(),
            rejected: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            honesty: Some(HonestyOracle::default()),
            touched: BTreeSet::new(),
            published: BTreeMap::new(),
            live_latency: BTreeMap::new(),
        }
    }

    /// Messages from `relay` still on the wire.
    pub fn in_flight(&self, relay: &RelayUrl) -> usize {
        self.in_flight.get(relay).copied().unwrap_or(0)
    }

    /// The longest a published event took to reach our store, if any did.
    pub fn slowest_live_event(&self) -> Option<Duration> {
        self.live_latency.values().max().copied()
    }

    /// Adds a fake relay.
    pub fn add_relay(&mut self, relay: FakeRelay) {
        self.relays.insert(relay.url.clone(), relay);
    }

    /// Puts an event on a relay (history, before or during the run; no live delivery).
    pub fn seed(&mut self, relay: &RelayUrl, event: Event) {
        if let Some(r) = self.relays.get_mut(relay) {
            r.events.insert(event.id, event);
        }
    }

    /// Stores an event locally (as the host's store would) and tells the engine.
    pub fn store_local(&mut self, event: Event) {
        self.store_event(None, event);
    }

    /// Schedules a fault at `at`.
    pub fn schedule(&mut self, at: Time, fault: Fault) {
        self.seq += 1;
        let key = self.seq as usize;
        self.fault_items.insert(key, fault);
        self.faults.push(Reverse((at, self.seq, key)));
    }

    fn deliver_at(&mut self, at: Time, relay: &RelayUrl, generation: u64, msg: Msg) {
        if generation != ANY_CONNECTION {
            *self.in_flight.entry(relay.clone()).or_insert(0) += 1;
        }
        self.seq += 1;
        let key = self.seq as usize;
        self.items.insert(
            key,
            Delivery {
                relay: relay.clone(),
                generation,
                msg,
            },
        );
        self.queue.push(Reverse((at, self.seq, key)));
    }

    fn feed(&mut self, input: Input<'_>) {
        self.stats.inputs += 1;
        if let Some(t) = self.trace.as_mut() {
            let mut line = format!("{:.3} <- {input:?}", self.now.as_millis() as f64 / 1000.0);
            line.truncate(400);
            t.push(line);
        }
        if let Some(o) = self.oracle.as_mut() {
            o.on_input(&input);
        }
        if let Some(relay) = input.relay() {
            self.touched.insert(relay.clone());
        }
        self.engine.handle_input(self.now, input);
        self.drain();
        if let Some(o) = self.oracle.as_mut() {
            o.end_step();
        }
        let touched = std::mem::take(&mut self.touched);
        if let Some(mut h) = self.honesty.take() {
            h.after_step(self, &touched);
            self.honesty = Some(h);
        }
    }

    /// Takes the next delivery off the wire and hands it over.
    fn pop_delivery(&mut self) {
        if let Some(Reverse((_, _, key))) = self.queue.pop() {
            if let Some(d) = self.items.remove(&key) {
                if d.generation != ANY_CONNECTION {
                    if let Some(n) = self.in_flight.get_mut(&d.relay) {
                        *n = n.saturating_sub(1);
                    }
                }
                self.handle_delivery(d);
            }
        }
    }

    /// Starts the engine (its first tick).
    pub fn start(&mut self) {
        self.feed(Input::Tick);
    }

    /// Runs until `end` (virtual time).
    pub fn run_until(&mut self, end: Time) {
        loop {
            let next_delivery = self.queue.peek().map(|Reverse((t, _, _))| *t);
            let next_fault = self.faults.peek().map(|Reverse((t, _, _))| *t);
            let wake = self.engine.next_wakeup();
            let next = [next_delivery, next_fault, wake, Some(end)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(end);
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            if next_fault.is_some_and(|t| t <= self.now) {
                if let Some(Reverse((_, _, key))) = self.faults.pop() {
                    if let Some(f) = self.fault_items.remove(&key) {
                        self.apply_fault(f);
                    }
                }
                continue;
            }
            if next_delivery.is_some_and(|t| t <= self.now) {
                self.pop_delivery();
                continue;
            }
            if wake.is_some_and(|t| t <= self.now) {
                self.feed(Input::Tick);
                continue;
            }
            break; // reached `end`
        }
        self.now = self.now.max(end);
        self.feed(Input::Tick);
    }

    /// Lets what is on the wire arrive: processes deliveries (and timers due
    /// before them) until nothing is in flight. Work the engine does on a
    /// schedule (polls, daily passes) then shows as settled, not pending.
    pub fn settle(&mut self) {
        while let Some(Reverse((t, _, _))) = self.queue.peek().copied() {
            if let Some(w) = self.engine.next_wakeup().filter(|w| *w < t) {
                self.now = self.now.max(w);
                self.feed(Input::Tick);
                continue;
            }
            self.now = self.now.max(t);
            self.pop_delivery();
        }
    }

    fn apply_fault(&mut self, fault: Fault) {
        match fault {
            Fault::Up { relay } => {
                if self.down_until.get(&relay).is_some_and(|t| *t <= self.now) {
                    self.down_until.remove(&relay);
                    if let Some(r) = self.relays.get_mut(&relay) {
                        r.up = true;
                    }
                }
            }
            Fault::Down { relay, duration } => {
                let until = self.now.plus(duration);
                if !self.relays.contains_key(&relay) {
                    return;
                }
                let end = self.down_until.entry(relay.clone()).or_insert(until);
                *end = (*end).max(until);
                let end = *end;
                self.schedule(
                    end,
                    Fault::Up {
                        relay: relay.clone(),
                    },
                );
                let Some(r) = self.relays.get_mut(&relay) else {
                    return;
                };
                r.up = false;
                if r.connected {
                    r.drop_connection();
                    let g = r.generation;
                    self.deliver_at(self.now, &relay, g, Msg::Disconnected);
                }
            }
            Fault::Publish { relay, event } => {
                let Some(r) = self.relays.get_mut(&relay) else {
                    return;
                };
                if r.events.insert(event.id, (*event).clone()).is_some() {
                    return;
                }
                r.arrived.insert(event.id, self.now);
                self.published.entry(event.id).or_insert(self.now);
                if !r.connected {
                    return;
                }
                let hits: Vec<SubscriptionId> = r
                    .subs
                    .iter()
                    .filter(|(_, fs)| fs.iter().any(|f| r.selects(f, &event)))
                    .map(|(s, _)| s.clone())
                    .collect();
                let (g, lat) = (r.generation, r.profile.latency);
                for s in hits {
                    self.deliver_at(self.now.plus(lat), &relay, g, Msg::Event(s, event.clone()));
                }
            }
            Fault::Restart => {
                let json = self.engine.snapshot().to_json();
                let snap = Snapshot::from_json(&json).expect("snapshot round-trips");
                self.engine =
                    Engine::restore(self.config.clone(), snap, self.now).expect("restore works");
                self.stats.restarts += 1;
                if let Some(o) = self.oracle.as_mut() {
                    o.on_restart();
                }
                for r in self.relays.values_mut() {
                    r.drop_connection();
                }
                self.feed(Input::Tick);
            }
            Fault::LocalEvent(event) => self.store_event(None, *event),
        }
    }

    fn handle_delivery(&mut self, d: Delivery) {
        let current = self.relays.get(&d.relay).map(|r| r.generation);
        if d.generation != ANY_CONNECTION && current != Some(d.generation) {
            return; // from a connection that no longer exists
        }
        let relay = d.relay;
        match d.msg {
            Msg::Info(info) => self.feed(Input::RelayInfo {
                relay: &relay,
                info,
            }),
            Msg::Connected => self.feed(Input::Connected { relay: &relay }),
            Msg::ConnectFailed => self.feed(Input::ConnectFailed {
                relay: &relay,
                reason: "refused",
            }),
            Msg::Disconnected => self.feed(Input::Disconnected {
                relay: &relay,
                reason: "dropped",
            }),
            Msg::Event(sub, event) => {
                match self.engine.check_event(&relay, &sub, &event) {
                    EventCheck::Accepted(_) => {}
                    _ => {
                        // The host still reports it; the engine counts it.
                        self.feed(Input::EventReceived {
                            relay: &relay,
                            subscription: &sub,
                            event: &event,
                        });
                        return;
                    }
                }
                self.feed(Input::EventReceived {
                    relay: &relay,
                    subscription: &sub,
                    event: &event,
                });
                self.store_event(Some(&relay), *event);
            }
            Msg::Eose(sub) => self.feed(Input::Eose {
                relay: &relay,
                subscription: &sub,
            }),
            Msg::Closed(sub, message) => self.feed(Input::Closed {
                relay: &relay,
                subscription: &sub,
                message: &message,
            }),
            Msg::Notice(message) => self.feed(Input::Notice {
                relay: &relay,
                message: &message,
            }),
            Msg::Auth(challenge) => self.feed(Input::AuthChallenge {
                relay: &relay,
                challenge: &challenge,
            }),
            Msg::AuthOk(accepted) => self.feed(Input::AuthResult {
                relay: &relay,
                accepted,
            }),
            Msg::LocalItems(request, filter) => {
                let items = nip77::items(&self.store, &filter);
                self.feed(Input::LocalItems {
                    relay: &relay,
                    request,
                    items: Some(&items),
                })
            }
            Msg::Negentropy(sub, message) => self.feed(Input::NegMsg {
                relay: &relay,
                subscription: &sub,
                message: &message,
            }),
            Msg::NegErr(sub, message) => self.feed(Input::NegErr {
                relay: &relay,
                subscription: &sub,
                message: &message,
            }),
        }
    }

    /// The host's store: keeps what the service would accept and feeds the
    /// engine what it needs to know (announcements, roots, deletions).
    fn store_event(&mut self, from: Option<&RelayUrl>, event: Event) {
        let accepted = self.engine.check_acceptance(&event).is_accept();
        let outcome = if !accepted {
            StoreOutcome::Rejected
        } else if self.store.contains_key(&event.id) {
            StoreOutcome::Duplicate
        } else {
            StoreOutcome::Stored
        };
        if let Some(relay) = from {
            self.feed(Input::EventStored {
                relay,
                id: event.id,
                created_at: event.created_at.as_secs(),
                outcome,
            });
        }
        match outcome {
            StoreOutcome::Rejected => {
                self.stats.rejected += 1;
                self.rejected.insert(event.id);
            }
            StoreOutcome::Duplicate => {}
            StoreOutcome::Stored => {
                self.stats.stored += 1;
                if let Some(at) = self.published.get(&event.id) {
                    self.live_latency
                        .entry(event.id)
                        .or_insert_with(|| self.now.since(*at));
                }
                self.store.insert(event.id, event.clone());
                match event.kind.as_u16() {
                    30617 => {
                        if let Some(a) = self.parse_relays(&event) {
                            self.listed.extend(a);
                        }
                        self.feed(Input::CatalogEvent(&event));
                    }
                    k if is_catalog_kind(k) => self.feed(Input::CatalogEvent(&event)),
                    _ => {}
                }
            }
        }
    }

    fn parse_relays(&self, event: &Event) -> Option<Vec<RelayUrl>> {
        let mut out = Vec::new();
        for t in event.tags.iter() {
            let s = t.as_slice();
            if s.first().map(String::as_str) == Some("relays") {
                out.extend(s.iter().skip(1).filter_map(|u| RelayUrl::parse(u).ok()));
            }
        }
        Some(out)
    }

    fn drain(&mut self) {
        while let Some(c) = self.engine.poll_command() {
            self.stats.commands += 1;
            self.touched.insert(c.relay().clone());
            if let Some(o) = self.oracle.as_mut() {
                o.on_command(&c);
            }
            if self.keep_log {
                self.log
                    .push(serde_json::to_string(&c).expect("commands serialise"));
            }
            if let Some(t) = self.trace.as_mut() {
                let mut line = format!(
                    "{:.3} -> {}",
                    self.now.as_millis() as f64 / 1000.0,
                    serde_json::to_string(&c).expect("commands serialise")
                );
                line.truncate(400);
                t.push(line);
            }
            self.check(&c);
            self.execute(c);
        }
    }

    /// Checks a command against the invariants.
    fn check(&mut self, c: &Command) {
        let relay = c.relay();
        if self.config.service.matches(relay) {
            self.violations
                .push(Violation::OwnService(relay.to_string()));
        }
        let Command::Subscribe { filters, .. } = c else {
            return;
        };
        if !self.listed.contains(relay) {
            self.violations.push(Violation::Unlisted(relay.to_string()));
        }
        let targets = self.engine.relay_targets(relay).unwrap_or_default();
        let coords: BTreeSet<String> = targets
            .iter()
            .filter_map(|t| match t {
                TargetKey::Repo(c) => Some(c.to_string()),
                _ => None,
            })
            .collect();
        let ds: BTreeSet<String> = targets
            .iter()
            .filter_map(|t| match t {
                TargetKey::Repo(c) => Some(c.identifier.clone()),
                _ => None,
            })
            .collect();
        let ids: BTreeSet<String> = targets
            .iter()
            .filter_map(|t| match t {
                TargetKey::Root(id) => Some(id.to_hex()),
                _ => None,
            })
            .collect();
        for f in filters {
            for (tag, values) in f.generic_tags.iter() {
                for v in values {
                    let ok = match tag.as_char() {
                        'a' | 'A' => coords.contains(v),
                        'd' => ds.contains(v),
                        'e' | 'E' => ids.contains(v),
                        'q' => coords.contains(v) || ids.contains(v),
                        _ => false,
                    };
                    if !ok {
                        self.violations.push(Violation::NotATarget(format!(
                            "{relay} #{} {v}",
                            tag.as_char()
                        )));
                    }
                }
            }
        }
    }

    fn execute(&mut self, c: Command) {
        let now = self.now;
        match c {
            Command::FetchRelayInfo { relay } => {
                let Some(r) = self.relays.get(&relay) else {
                    return;
                };
                if !r.up || !r.profile.nip11 {
                    return;
                }
                let info = RelayInfo {
                    max_subscriptions: r
                        .profile
                        .publish_limits
                        .then_some(r.profile.max_subs as u32),
                    max_filters: r
                        .profile
                        .publish_limits
                        .then_some(r.profile.max_filters.map(|n| n as u32))
                        .flatten(),
                    max_limit: r
                        .profile
                        .publish_limits
                        .then(|| r.profile.page_cap.map(|c| c as u32))
                        .flatten(),
                    supported_nips: if r.profile.lists_nip77 {
                        vec![1, 11, 77]
                    } else {
                        vec![1, 11]
                    },
                    ..RelayInfo::default()
                };
                // NIP-11 is plain HTTP: not tied to any websocket.
                let lat = r.profile.latency;
                self.deliver_at(now.plus(lat), &relay, ANY_CONNECTION, Msg::Info(info));
            }
            Command::Connect { relay } => {
                self.stats.connects += 1;
                let Some(r) = self.relays.get_mut(&relay) else {
                    return; // unknown host: never answers; the engine times out
                };
                r.drop_connection();
                r.episode = Episode::default();
                let (g, lat) = (r.generation, r.profile.latency);
                // khatru's connection rate limit: HTTP 429.
                let limited = r.up
                    && r.profile
                        .connect_limit
                        .as_mut()
                        .is_some_and(|b| !b.take(now));
                if limited {
                    r.connect_refusals += 1;
                }
                if r.up && !limited {
                    r.connected = true;
                    r.reqs_seen = 0;
                    r.authenticated = false;
                    let auth = r.profile.auth;
                    self.deliver_at(now.plus(lat), &relay, g, Msg::Connected);
                    if auth {
                        let challenge = format!("challenge-{g}");
                        self.deliver_at(now.plus(lat), &relay, g, Msg::Auth(challenge));
                    }
                } else {
                    r.connected = false;
                    self.deliver_at(now.plus(lat), &relay, g, Msg::ConnectFailed);
                }
            }
            Command::Disconnect { relay } => {
                if let Some(r) = self.relays.get_mut(&relay) {
                    r.drop_connection();
                }
            }
            Command::Unsubscribe {
                relay,
                subscription,
            } => {
                if let Some(r) = self.relays.get_mut(&relay) {
                    r.subs.retain(|(s, _)| *s != subscription);
                }
            }
            Command::Authenticate { relay, challenge } => {
                let Some(r) = self.relays.get_mut(&relay) else {
                    return;
                };
                if !r.connected {
                    return;
                }
                let ok = challenge == format!("challenge-{}", r.generation);
                r.authenticated |= ok;
                let (g, lat) = (r.generation, r.profile.latency);
                self.deliver_at(now.plus(lat), &relay, g, Msg::AuthOk(ok));
            }
            Command::Subscribe {
                relay,
                subscription,
                filters,
                mode,
            } => self.on_req(relay, subscription, filters, mode),
            Command::QueryLocalItems {
                relay,
                request,
                filter,
            } => {
                // The store answers at once, whatever the relay does.
                self.deliver_at(
                    now,
                    &relay,
                    ANY_CONNECTION,
                    Msg::LocalItems(request, filter),
                );
            }
            Command::NegOpen {
                relay,
                subscription,
                filter,
                message,
            } => self.on_neg_open(relay, subscription, filter, message),
            Command::NegMsg {
                relay,
                subscription,
                message,
            } => self.on_neg_msg(relay, subscription, message),
            Command::NegClose {
                relay,
                subscription,
            } => {
                if let Some(r) = self.relays.get_mut(&relay) {
                    r.negs.remove(&subscription);
                }
            }
        }
    }

    /// Relays whose every target is confirmed and nothing is pending.
    pub fn converged(&self, relay: &RelayUrl) -> bool {
        let targets = self.engine.relay_targets(relay);
        let confirmed = self.engine.confirmed_targets(relay);
        let pending = self.engine.pending_targets(relay);
        match (targets, confirmed, pending) {
            (Some(t), Some(c), Some(p)) => p.is_empty() && t.iter().all(|x| c.contains(x)),
            _ => true,
        }
    }

    /// Events a relay holds that the service accepts, that fall under one of
    /// the relay's current targets, and that our store lacks.
    pub fn missing_from(&self, relay: &RelayUrl) -> Vec<EventId> {
        let Some(r) = self.relays.get(relay) else {
            return Vec::new();
        };
        let targets = self.engine.relay_targets(relay).unwrap_or_default();
        r.events
            .values()
            .filter(|e| {
                targets.iter().any(|t| under_target(t, e))
                    && self.engine.check_acceptance(e).is_accept()
                    && !self.store.contains_key(&e.id)
            })
            .map(|e| e.id)
            .collect()
    }
}
