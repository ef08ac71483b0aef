//! The `engine_inputs` harness: bytes decode (with `arbitrary`) into an
//! engine configuration and a sequence of steps — announcements with odd
//! relay lists, relay messages for real and made-up subscriptions in any
//! order, NIP-11 documents with odd limits, time jumps forwards and
//! backwards, restarts from a snapshot. After every input: no panic, and the
//! [`BudgetOracle`] finds no budget exceeded. The whole sequence then runs
//! again on a fresh engine and must give the same commands and snapshot.
//!
//! A new [`Input`] variant gets a [`Step`] variant and one arm in
//! [`Harness::step`].

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use grasp_sync_core::nip77;
use grasp_sync_core::types::is_root_kind;
use grasp_sync_core::{
    is_catalog_kind, Budget, Command, Config, Engine, EventCheck, Input, LocalItem, RelayInfo,
    RelayUrl, RepoCoord, Snapshot, StoreOutcome, Time,
};
use nostr::event::{Event, EventId};
use nostr::message::SubscriptionId;
use nostr::types::Timestamp;

mod steps;

pub use self::steps::*;
use self::steps::{EVENT_KINDS, MESSAGES, RELAY_POOL};
use super::oracle::BudgetOracle;
use crate::fixtures::{self, pubkey, SERVICE, T0};

/// A whole fuzz case.
#[derive(Arbitrary, Clone, Debug)]
pub struct Scenario {
    /// The configuration.
    pub config: ConfigChoice,
    /// A cooperative start ([`steady_steps`]: relays, repos) before the
    /// steps, so that short inputs reach relays busy up to their budget.
    pub preset: Option<(u8, u8)>,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// What one run produced.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    /// Every command, serialised, in order.
    pub commands: Vec<String>,
    /// The final snapshot, serialised.
    pub snapshot: String,
    /// Most subscriptions open on one relay at once.
    pub peak_open: usize,
}

/// Runs a fuzz input: decode, run twice, compare. Panics on a broken
/// invariant (that is the point).
pub fn run(data: &[u8]) {
    let Ok(scenario) = Scenario::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let first = play(&scenario);
    let second = play(&scenario);
    assert!(
        first == second,
        "replaying the same inputs gave different commands or snapshots"
    );
}

/// Plays a scenario on a fresh engine, checking the budget after every input.
pub fn play(scenario: &Scenario) -> Outcome {
    let mut h = Harness::new(scenario.config.config());
    let preset = scenario
        .preset
        .map(|(relays, repos)| steady_steps(relays % 4 + 1, repos % 48))
        .unwrap_or_default();
    for step in preset.iter().chain(&scenario.steps) {
        h.step(step);
    }
    let _ = h.engine.status();
    assert!(
        h.oracle.violations().is_empty(),
        "budget violations: {:#?}",
        h.oracle.violations()
    );
    Outcome {
        commands: h.log,
        snapshot: h.engine.snapshot().to_json(),
        peak_open: h.oracle.peak_open,
    }
}

/// An engine, its host's view of it, and the oracle.
pub struct Harness {
    engine: Engine,
    config: Config,
    oracle: BudgetOracle,
    now: Time,
    /// Subscriptions the engine opened, per relay, in order (last 32).
    subs: BTreeMap<RelayUrl, Vec<SubscriptionId>>,
    /// Roots fed so far (for replies and deletions).
    roots: Vec<EventId>,
    /// Local-items queries the engine asked, per relay (last 32).
    requests: BTreeMap<RelayUrl, Vec<u64>>,
    /// The last negentropy message the engine sent per reconciliation.
    neg_sent: BTreeMap<(RelayUrl, SubscriptionId), String>,
    log: Vec<String>,
}

/// How many subscription ids (and local-items queries) per relay steps can name.
const REMEMBERED_SUBS: usize = 32;

/// Adds `item` to a bounded most-recent list (once).
fn remember<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
        if list.len() > REMEMBERED_SUBS {
            list.remove(0);
        }
    }
}

impl Harness {
    /// A fresh engine at `T0`, started with a tick.
    pub fn new(config: Config) -> Self {
        let oracle = BudgetOracle::new(config.default_budget, config.service.clone());
        let mut h = Harness {
            engine: Engine::new(config.clone()),
            config,
            oracle,
            now: Time::from_secs(T0),
            subs: BTreeMap::new(),
            roots: Vec::new(),
            requests: BTreeMap::new(),
            neg_sent: BTreeMap::new(),
            log: Vec::new(),
        };
        h.feed(Input::Tick);
        h
    }

    /// The oracle's budget for a relay.
    pub fn budget(&self, relay: &RelayUrl) -> Budget {
        self.oracle.budget(relay)
    }

    fn feed(&mut self, input: Input<'_>) {
        self.oracle.on_input(&input);
        self.engine.handle_input(self.now, input);
        while let Some(c) = self.engine.poll_command() {
            self.oracle.on_command(&c);
            match &c {
                Command::Subscribe {
                    relay,
                    subscription,
                    ..
                } => self.remember_sub(relay, subscription),
                Command::NegOpen {
                    relay,
                    subscription,
                    message,
                    ..
                }
                | Command::NegMsg {
                    relay,
                    subscription,
                    message,
                } => {
                    self.remember_sub(relay, subscription);
                    self.neg_sent
                        .insert((relay.clone(), subscription.clone()), message.clone());
                }
                Command::QueryLocalItems { relay, request, .. } => {
                    remember(self.requests.entry(relay.clone()).or_default(), *request);
                }
                _ => {}
            }
            self.log
                .push(serde_json::to_string(&c).expect("commands serialise"));
        }
        self.oracle.end_step();
        if let Some(v) = self.oracle.violations().first() {
            panic!("budget exceeded: {v}");
        }
    }

    fn remember_sub(&mut self, relay: &RelayUrl, subscription: &SubscriptionId) {
        remember(
            self.subs.entry(relay.clone()).or_default(),
            subscription.clone(),
        );
    }

    fn request(&self, relay: &RelayUrl, choice: &RequestChoice) -> u64 {
        match choice {
            RequestChoice::Recent(i) => self
                .requests
                .get(relay)
                .filter(|l| !l.is_empty())
                .map_or(0, |l| l[l.len() - 1 - (*i as usize % l.len())]),
            RequestChoice::MadeUp(n) => *n,
        }
    }

    fn items(&self, choices: &[ItemChoice]) -> Vec<LocalItem> {
        choices
            .iter()
            .map(|c| match *c {
                ItemChoice::Root(i, age) if !self.roots.is_empty() => (
                    self.roots[i as usize % self.roots.len()],
                    Timestamp::from_secs(self.created(age)),
                ),
                ItemChoice::Root(i, age) | ItemChoice::MadeUp(i, age) => (
                    EventId::from_byte_array([i; 32]),
                    Timestamp::from_secs(self.created(age)),
                ),
            })
            .collect()
    }

    fn sub(&self, relay: &RelayUrl, choice: &SubChoice) -> SubscriptionId {
        match choice {
            SubChoice::Recent(i) => self
                .subs
                .get(relay)
                .filter(|l| !l.is_empty())
                .map(|l| l[l.len() - 1 - (*i as usize % l.len())].clone())
                .unwrap_or_else(|| SubscriptionId::new("none")),
            SubChoice::MadeUp(s) => SubscriptionId::new(s.as_str()),
        }
    }

    fn created(&self, age: i32) -> u64 {
        (self.now.as_secs() as i64 - i64::from(age)).max(0) as u64
    }

    fn event(&self, e: &EventChoice) -> Event {
        let kind = EVENT_KINDS[e.kind as usize % EVENT_KINDS.len()];
        let created = self.created(e.age);
        let repo = fixtures::coord(u32::from(e.author), &format!("repo-{}", e.repo));
        let root = e
            .root
            .filter(|_| !self.roots.is_empty())
            .map(|i| self.roots[i as usize % self.roots.len()]);
        match (kind, root) {
            (30617, _) => fixtures::announcement(
                u32::from(e.author),
                &format!("repo-{}", e.repo),
                created,
                &[RELAY_POOL[e.repo as usize % RELAY_POOL.len()]],
                true,
            ),
            (30618, _) => fixtures::state(u32::from(e.author), &repo.identifier, created),
            (5, root) => fixtures::deletion(
                u32::from(e.author),
                created,
                &[&repo],
                &root.iter().collect::<Vec<_>>(),
            ),
            (1111, Some(r)) => {
                fixtures::comment(u32::from(e.author), created, &repo, &r, &e.content)
            }
            (1630, Some(r)) => fixtures::status(1630, u32::from(e.author), created, &r),
            (k, _) => fixtures::root(k, u32::from(e.author), created, &repo, &e.content),
        }
    }

    fn announcement(&self, step: &Step) -> Option<Event> {
        let Step::Announce {
            author,
            repo,
            raw_d,
            age,
            relays,
            clones,
            lists_service,
            maintainers,
            second_tag,
        } = step
        else {
            return None;
        };
        let d = raw_d.clone().unwrap_or_else(|| format!("repo-{repo}"));
        let mut listed = vec!["relays".to_owned()];
        for r in relays {
            match r {
                ListedRelay::One(c) => listed.push(c.text()),
                ListedRelay::Many(n) => {
                    listed.extend((0..*n).map(|i| format!("wss://many{i}.example")))
                }
                ListedRelay::Private(n) => listed.push(match n % 4 {
                    0 => format!("ws://192.168.0.{n}"),
                    1 => format!("ws://localhost:{}", 7000 + u16::from(*n)),
                    2 => "wss://[fe80::1]".to_owned(),
                    _ => format!("ws://127.0.0.{n}:7000"),
                }),
            }
        }
        if *lists_service {
            listed.push(format!("wss://{SERVICE}"));
        }
        let mut tags = vec![vec!["d".to_owned(), d.clone()], listed.clone()];
        if *second_tag {
            tags.push(listed);
        }
        if !clones.is_empty() {
            let mut clone = vec!["clone".to_owned()];
            // A plausible npub (the bech32 alphabet, 63 characters).
            let npub = format!("npub1{}", "q".repeat(58 - (*author as usize % 3)));
            for c in clones {
                let host = c.text();
                let host = host
                    .trim_start_matches("wss://")
                    .trim_start_matches("ws://");
                clone.push(format!("https://{host}/{npub}/{d}.git"));
            }
            tags.push(clone);
        }
        if !maintainers.is_empty() {
            let mut m = vec!["maintainers".to_owned()];
            m.extend(maintainers.iter().map(|n| pubkey(u32::from(*n)).to_hex()));
            tags.push(m);
        }
        Some(fixtures::event(
            pubkey(u32::from(*author)),
            self.created(*age),
            30617,
            tags,
            "",
        ))
    }

    /// Feeds one step.
    pub fn step(&mut self, step: &Step) {
        match step {
            Step::Tick => self.feed(Input::Tick),
            Step::Jump(j) => {
                let ms = self.now.as_millis();
                let to = match *j {
                    Jump::Millis(n) => ms.saturating_add(u64::from(n)),
                    Jump::Secs(n) => ms.saturating_add(u64::from(n) * 1000),
                    Jump::Hours(n) => ms.saturating_add(u64::from(n) * 3_600_000),
                    Jump::Days(n) => ms.saturating_add(u64::from(n) * 86_400_000),
                    Jump::BackSecs(n) => ms.saturating_sub(u64::from(n) * 1000),
                    Jump::BackHours(n) => ms.saturating_sub(u64::from(n) * 3_600_000),
                    Jump::Wakeup => self
                        .engine
                        .next_wakeup()
                        .map_or(ms, |t| t.as_millis().max(ms)),
                };
                self.now = Time::from_millis(to);
                self.feed(Input::Tick);
            }
            Step::Announce { .. } => {
                if let Some(event) = self.announcement(step) {
                    self.feed(Input::CatalogEvent(&event));
                }
            }
            Step::AnnounceMany {
                first,
                count,
                relays,
                lists_service,
            } => {
                let urls: Vec<String> = relays.iter().take(4).map(RelayChoice::text).collect();
                let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
                for i in 0..u32::from(*count) {
                    let n = u32::from(*first) + i;
                    let event = fixtures::announcement(
                        n,
                        &format!("repo-{n}"),
                        self.now.as_secs().saturating_sub(60),
                        &urls,
                        *lists_service,
                    );
                    self.feed(Input::CatalogEvent(&event));
                }
            }
            Step::Root(e) => {
                let event = self.event(e);
                self.roots.push(event.id);
                self.feed(Input::CatalogEvent(&event));
            }
            Step::Delete { author, repo, root } => {
                let repo = RepoCoord::new(pubkey(u32::from(*author)), format!("repo-{repo}"));
                let root = root
                    .filter(|_| !self.roots.is_empty())
                    .map(|i| self.roots[i as usize % self.roots.len()]);
                let ids: Vec<&EventId> = root.iter().collect();
                let event =
                    fixtures::deletion(u32::from(*author), self.now.as_secs(), &[&repo], &ids);
                self.feed(Input::CatalogEvent(&event));
            }
            Step::Info {
                relay,
                max_subscriptions,
                max_filters,
                max_limit,
                max_message_length,
                auth_required,
                nips,
            } => {
                let mut supported_nips = nips.clone();
                supported_nips.sort_unstable();
                supported_nips.dedup();
                let info = RelayInfo {
                    max_subscriptions: max_subscriptions.value(),
                    max_filters: max_filters.value(),
                    max_limit: max_limit.value(),
                    max_message_length: max_message_length.value(),
                    max_subid_length: None,
                    auth_required: *auth_required,
                    supported_nips,
                };
                let relay = relay.url();
                self.feed(Input::RelayInfo {
                    relay: &relay,
                    info,
                });
            }
            Step::Connected(r) => {
                let relay = r.url();
                self.feed(Input::Connected { relay: &relay });
            }
            Step::ConnectFailed(r) => {
                let relay = r.url();
                self.feed(Input::ConnectFailed {
                    relay: &relay,
                    reason: "refused",
                });
            }
            Step::Disconnected(r) => {
                let relay = r.url();
                self.feed(Input::Disconnected {
                    relay: &relay,
                    reason: "reset",
                });
            }
            Step::Event {
                relay,
                sub,
                event,
                store,
            } => {
                let relay = relay.url();
                let subscription = self.sub(&relay, sub);
                let event = self.event(event);
                self.receive(&relay, &subscription, &event, *store);
            }
            Step::EventInvalid(r) => {
                let relay = r.url();
                self.feed(Input::EventInvalid { relay: &relay });
            }
            Step::EventStored(r, store) => {
                let relay = r.url();
                let outcome = match store {
                    StoreChoice::Stored => StoreOutcome::Stored,
                    StoreChoice::Duplicate => StoreOutcome::Duplicate,
                    StoreChoice::Invalid | StoreChoice::Rejected => StoreOutcome::Rejected,
                };
                let id = self
                    .roots
                    .last()
                    .copied()
                    .unwrap_or(EventId::from_byte_array([0; 32]));
                let created_at = self.now.as_secs();
                self.feed(Input::EventStored {
                    relay: &relay,
                    id,
                    created_at,
                    outcome,
                });
            }
            Step::Eose(r, sub) => {
                let relay = r.url();
                let subscription = self.sub(&relay, sub);
                self.feed(Input::Eose {
                    relay: &relay,
                    subscription: &subscription,
                });
            }
            Step::EoseAll(r) => {
                let relay = r.url();
                let subs = self.subs.get(&relay).cloned().unwrap_or_default();
                for subscription in subs {
                    self.feed(Input::Eose {
                        relay: &relay,
                        subscription: &subscription,
                    });
                }
            }
            Step::Closed {
                relay,
                sub,
                message,
                raw,
            } => {
                let relay = relay.url();
                let subscription = self.sub(&relay, sub);
                let message = raw
                    .clone()
                    .unwrap_or_else(|| MESSAGES[*message as usize % MESSAGES.len()].to_owned());
                self.feed(Input::Closed {
                    relay: &relay,
                    subscription: &subscription,
                    message: &message,
                });
            }
            Step::Notice(r, m) => {
                let relay = r.url();
                self.feed(Input::Notice {
                    relay: &relay,
                    message: MESSAGES[*m as usize % MESSAGES.len()],
                });
            }
            Step::AuthChallenge(r, challenge) => {
                let relay = r.url();
                self.feed(Input::AuthChallenge {
                    relay: &relay,
                    challenge,
                });
            }
            Step::AuthResult(r, accepted) => {
                let relay = r.url();
                self.feed(Input::AuthResult {
                    relay: &relay,
                    accepted: *accepted,
                });
            }
            Step::LocalItems {
                relay,
                request,
                items,
            } => {
                let relay = relay.url();
                let request = self.request(&relay, request);
                let items = items.as_ref().map(|c| self.items(c));
                self.feed(Input::LocalItems {
                    relay: &relay,
                    request,
                    items: items.as_deref(),
                });
            }
            Step::NegMsg {
                relay,
                sub,
                payload,
            } => {
                let relay = relay.url();
                let subscription = self.sub(&relay, sub);
                let message = match payload {
                    NegPayload::Respond(items) => {
                        let sent = self
                            .neg_sent
                            .get(&(relay.clone(), subscription.clone()))
                            .cloned()
                            .unwrap_or_default();
                        nip77::respond(self.items(items), &sent).unwrap_or_else(|e| e.to_string())
                    }
                    NegPayload::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
                    NegPayload::Raw(s) => s.clone(),
                };
                self.feed(Input::NegMsg {
                    relay: &relay,
                    subscription: &subscription,
                    message: &message,
                });
            }
            Step::NegErr {
                relay,
                sub,
                message,
            } => {
                let relay = relay.url();
                let subscription = self.sub(&relay, sub);
                self.feed(Input::NegErr {
                    relay: &relay,
                    subscription: &subscription,
                    message,
                });
            }
            Step::Restart => {
                let json = self.engine.snapshot().to_json();
                let snapshot = Snapshot::from_json(&json).expect("a snapshot reads back");
                self.engine = Engine::restore(self.config.clone(), snapshot, self.now)
                    .expect("an engine restores from its own snapshot");
                self.oracle.on_restart();
                self.feed(Input::Tick);
            }
        }
    }

    /// An `EVENT` as the host takes it in: ask the engine, "verify", check
    /// acceptance, store, and report catalog events.
    fn receive(
        &mut self,
        relay: &RelayUrl,
        subscription: &SubscriptionId,
        event: &Event,
        store: StoreChoice,
    ) {
        let wanted = matches!(
            self.engine.check_event(relay, subscription, event),
            EventCheck::Accepted(_)
        );
        if wanted && matches!(store, StoreChoice::Invalid) {
            self.feed(Input::EventInvalid { relay });
            return;
        }
        self.feed(Input::EventReceived {
            relay,
            subscription,
            event,
        });
        if !wanted {
            return;
        }
        let outcome = if !self.engine.check_acceptance(event).is_accept() {
            StoreOutcome::Rejected
        } else {
            match store {
                StoreChoice::Stored => StoreOutcome::Stored,
                StoreChoice::Duplicate => StoreOutcome::Duplicate,
                StoreChoice::Invalid | StoreChoice::Rejected => StoreOutcome::Rejected,
            }
        };
        self.feed(Input::EventStored {
            relay,
            id: event.id,
            created_at: event.created_at.as_secs(),
            outcome,
        });
        if outcome != StoreOutcome::Stored {
            return;
        }
        let kind = event.kind.as_u16();
        if is_root_kind(kind) {
            self.roots.push(event.id);
        }
        if is_catalog_kind(kind) {
            self.feed(Input::CatalogEvent(event));
        }
    }
}

/// Steps of a cooperative world: repos announced on `relays` pool relays,
/// every relay connects and answers every REQ with EOSE.
pub fn steady_steps(relays: u8, repos: u8) -> Vec<Step> {
    let mut steps = Vec::new();
    for r in 0..repos {
        steps.push(Step::Announce {
            author: r,
            repo: r,
            raw_d: None,
            age: 3600,
            relays: (0..relays)
                .map(|i| ListedRelay::One(RelayChoice::Pool(i)))
                .collect(),
            clones: Vec::new(),
            lists_service: true,
            maintainers: Vec::new(),
            second_tag: false,
        });
    }
    steps.push(Step::Jump(Jump::Secs(1)));
    for i in 0..relays {
        steps.push(Step::Connected(RelayChoice::Pool(i)));
    }
    steps.push(Step::Jump(Jump::Secs(2)));
    for i in 0..relays {
        steps.push(Step::EoseAll(RelayChoice::Pool(i)));
    }
    steps.push(Step::Jump(Jump::Wakeup));
    steps
}
