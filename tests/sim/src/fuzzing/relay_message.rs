//! The `relay_message` harness: bytes as relay text frames (one per line)
//! through the steps of sync-io's event pipeline that need no socket, in the
//! runner's order: [`Incoming::parse`] → [`Engine::check_event`] on an engine
//! holding open subscriptions on the relay → [`SeenIds`] → id and signature
//! verification → acceptance → store, with verified events leaving through
//! an [`Inbox`] in arrival order although verification finishes in reverse.
//!
//! Checks: nothing panics; a parsed event survives a JSON round trip; an
//! event that verifies has the id its content hashes to; a seen-cache hit
//! happens only for a matching id; every frame lands in exactly one counter,
//! and the engine counts what the pipeline reports (invalid events are
//! counted, never dropped silently).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use grasp_sync_core::relay::RelayStats;
use grasp_sync_core::{
    is_catalog_kind, Command, Config, Engine, EventCheck, Input, RelayUrl, ServiceId, StoreOutcome,
    Time,
};
use grasp_sync_io::connection::Incoming;
use grasp_sync_io::pipeline::{Inbox, SeenIds};
use nostr::event::{Event, EventId};
use nostr::message::SubscriptionId;

use crate::fixtures::{self, SERVICE, T0};

/// The relay every frame comes from.
pub const RELAY: &str = "wss://r0.example";

/// The repository the engine tracks on [`RELAY`]: author number 1, `repo-0`.
pub const REPO_AUTHOR: u32 = 1;
/// Its identifier.
pub const REPO_D: &str = "repo-0";

/// Where each frame ended up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events verified and taken in (stored, duplicate or refused by acceptance).
    pub valid: u64,
    /// Events answered from the seen-ids cache.
    pub known: u64,
    /// Events for no open subscription, or matching none of its filters.
    pub unwanted: u64,
    /// Events that failed verification, or EVENT frames that did not parse.
    pub invalid: u64,
    /// EOSE, CLOSED, NOTICE, AUTH and OK.
    pub control: u64,
    /// Frames that are not relay messages.
    pub malformed: u64,
    /// Frames over the size cap.
    pub oversized: u64,
}

impl Counts {
    fn total(&self) -> u64 {
        self.valid
            + self.known
            + self.unwanted
            + self.invalid
            + self.control
            + self.malformed
            + self.oversized
    }
}

/// A connected engine with open subscriptions on [`RELAY`], built once.
fn template() -> &'static (Engine, Vec<SubscriptionId>) {
    static TEMPLATE: OnceLock<(Engine, Vec<SubscriptionId>)> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let relay = RelayUrl::parse(RELAY).expect("the relay parses");
        let config = Config::new(ServiceId::parse(SERVICE).expect("the service parses"));
        let mut engine = Engine::new(config);
        let now = Time::from_secs(T0);
        let ann = fixtures::announcement(REPO_AUTHOR, REPO_D, T0 - 3600, &[RELAY], true);
        engine.handle_input(now, Input::Tick);
        engine.handle_input(now, Input::CatalogEvent(&ann));
        engine.handle_input(now, Input::Connected { relay: &relay });
        let later = now.plus(std::time::Duration::from_secs(5));
        engine.handle_input(later, Input::Tick);
        let mut subs = Vec::new();
        while let Some(c) = engine.poll_command() {
            if let Command::Subscribe { subscription, .. } = c {
                if !subs.contains(&subscription) {
                    subs.push(subscription);
                }
            }
        }
        assert!(!subs.is_empty(), "the template engine subscribes");
        (engine, subs)
    })
}

/// The subscription ids open on [`RELAY`] in the harness's engine (for seeds).
pub fn open_subscriptions() -> Vec<SubscriptionId> {
    template().1.clone()
}

/// An item leaving the reorder buffer.
enum Item {
    Event(SubscriptionId, Box<Event>, Verdict),
    Message(Incoming),
}

enum Verdict {
    Unwanted,
    Known(StoreOutcome),
    Valid,
    Invalid,
}

/// The pipeline state for one fuzz case.
pub struct Pipeline {
    engine: Engine,
    relay: RelayUrl,
    seen: SeenIds,
    inbox: Inbox<Item>,
    /// Events waiting for "verification", with their place in the inbox.
    verifying: Vec<(u64, SubscriptionId, Box<Event>)>,
    /// Our store.
    store: BTreeMap<EventId, Event>,
    now: Time,
    /// Where frames ended up.
    pub counts: Counts,
    frames: u64,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipeline {
    /// A pipeline around a fresh copy of the template engine.
    pub fn new() -> Self {
        Pipeline {
            engine: template().0.clone(),
            relay: RelayUrl::parse(RELAY).expect("the relay parses"),
            seen: SeenIds::new(64),
            inbox: Inbox::default(),
            verifying: Vec::new(),
            store: BTreeMap::new(),
            now: Time::from_secs(T0 + 5),
            counts: Counts::default(),
            frames: 0,
        }
    }

    /// One text frame, as the connection's reader hands it over.
    pub fn frame(&mut self, text: &str) {
        self.frames += 1;
        match Incoming::parse(text) {
            Incoming::Event {
                subscription,
                event,
            } => {
                let json = serde_json::to_string(&*event).expect("events serialise");
                let again: Event = serde_json::from_str(&json).expect("an event reads back");
                assert_eq!(again, *event, "an event survives a JSON round trip");
                let verdict = match self.engine.check_event(&self.relay, &subscription, &event) {
                    EventCheck::Accepted(_) => match self.seen.get(&event.id) {
                        Some(outcome) if event.verify_id() => Some(Verdict::Known(outcome)),
                        _ => None,
                    },
                    EventCheck::Unrequested | EventCheck::Unmatched => Some(Verdict::Unwanted),
                };
                match verdict {
                    Some(v) => self.inbox.push_ready(Item::Event(subscription, event, v)),
                    None => {
                        let seq = self.inbox.reserve();
                        self.verifying.push((seq, subscription, event));
                    }
                }
            }
            other => self.inbox.push_ready(Item::Message(other)),
        }
    }

    /// Verifies what waits (last first, as threads may finish) and hands
    /// everything ready to the engine in arrival order.
    pub fn flush(&mut self) {
        while let Some((seq, sub, event)) = self.verifying.pop() {
            let valid = event.verify().is_ok();
            if valid {
                let id = EventId::compute(
                    &event.pubkey,
                    &event.created_at,
                    &event.kind,
                    &event.tags,
                    &event.content,
                );
                assert_eq!(id, event.id, "a verified event has the id it hashes to");
            }
            let v = if valid {
                Verdict::Valid
            } else {
                Verdict::Invalid
            };
            self.inbox.fill(seq, Item::Event(sub, event, v));
        }
        while let Some(item) = self.inbox.pop_ready() {
            self.process(item);
        }
        assert!(self.inbox.is_empty(), "every frame left the reorder buffer");
        assert_eq!(
            self.counts.total(),
            self.frames,
            "every frame is counted once"
        );
    }

    fn input(&mut self, input: Input<'_>) {
        self.engine.handle_input(self.now, input);
        while self.engine.poll_command().is_some() {}
    }

    fn process(&mut self, item: Item) {
        let relay = self.relay.clone();
        match item {
            Item::Event(sub, event, verdict) => {
                let received = Input::EventReceived {
                    relay: &relay,
                    subscription: &sub,
                    event: &event,
                };
                match verdict {
                    Verdict::Unwanted => {
                        self.counts.unwanted += 1;
                        self.input(received);
                    }
                    Verdict::Invalid => {
                        self.counts.invalid += 1;
                        self.input(Input::EventInvalid { relay: &relay });
                    }
                    Verdict::Known(outcome) => {
                        self.counts.known += 1;
                        assert!(
                            self.store.contains_key(&event.id)
                                || outcome != StoreOutcome::Duplicate
                        );
                        self.input(received);
                        self.input(Input::EventStored {
                            relay: &relay,
                            id: event.id,
                            created_at: event.created_at.as_secs(),
                            outcome,
                        });
                    }
                    Verdict::Valid => {
                        self.counts.valid += 1;
                        self.input(received);
                        let outcome = if !self.engine.check_acceptance(&event).is_accept() {
                            StoreOutcome::Rejected
                        } else if self.store.insert(event.id, (*event).clone()).is_some() {
                            StoreOutcome::Duplicate
                        } else {
                            StoreOutcome::Stored
                        };
                        self.seen.insert(event.id, outcome);
                        self.input(Input::EventStored {
                            relay: &relay,
                            id: event.id,
                            created_at: event.created_at.as_secs(),
                            outcome,
                        });
                        if outcome == StoreOutcome::Stored && is_catalog_kind(event.kind.as_u16()) {
                            self.input(Input::CatalogEvent(&event));
                        }
                    }
                }
            }
            Item::Message(message) => match message {
                Incoming::Event { .. } => unreachable!("events are handled before the inbox"),
                Incoming::Eose(subscription) => {
                    self.counts.control += 1;
                    self.input(Input::Eose {
                        relay: &relay,
                        subscription: &subscription,
                    });
                }
                Incoming::Closed {
                    subscription,
                    message,
                } => {
                    self.counts.control += 1;
                    self.input(Input::Closed {
                        relay: &relay,
                        subscription: &subscription,
                        message: &message,
                    });
                }
                Incoming::Notice(message) => {
                    self.counts.control += 1;
                    self.input(Input::Notice {
                        relay: &relay,
                        message: &message,
                    });
                }
                Incoming::Auth(challenge) => {
                    self.counts.control += 1;
                    self.input(Input::AuthChallenge {
                        relay: &relay,
                        challenge: &challenge,
                    });
                }
                Incoming::Ok { accepted, .. } => {
                    self.counts.control += 1;
                    self.input(Input::AuthResult {
                        relay: &relay,
                        accepted,
                    });
                }
                Incoming::NegMsg {
                    subscription,
                    message,
                } => {
                    self.counts.control += 1;
                    self.input(Input::NegMsg {
                        relay: &relay,
                        subscription: &subscription,
                        message: &message,
                    });
                }
                Incoming::NegErr {
                    subscription,
                    message,
                } => {
                    self.counts.control += 1;
                    self.input(Input::NegErr {
                        relay: &relay,
                        subscription: &subscription,
                        message: &message,
                    });
                }
                Incoming::InvalidEvent(_) => {
                    self.counts.invalid += 1;
                    self.input(Input::EventInvalid { relay: &relay });
                }
                Incoming::Malformed(_) => self.counts.malformed += 1,
                Incoming::Oversized => self.counts.oversized += 1,
            },
        }
    }

    /// The engine's counters for the relay (`None` once it forgot the relay).
    pub fn stats(&self) -> Option<RelayStats> {
        self.engine
            .status()
            .relays
            .into_iter()
            .find(|r| r.url == self.relay)
            .map(|r| r.stats)
    }
}

/// Runs a fuzz input: every line is a frame; frames are verified in
/// batches of up to four, as the runner batches them.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut p = Pipeline::new();
    let before = p.stats().expect("the template knows its relay");
    for (i, line) in text.lines().enumerate() {
        p.frame(line);
        if i % 4 == 3 {
            p.flush();
        }
    }
    p.flush();
    let Some(after) = p.stats() else {
        return; // a deletion in the frames ended the relay's work
    };
    let c = &p.counts;
    assert_eq!(
        after.events_invalid - before.events_invalid,
        c.invalid,
        "the engine counts every invalid event"
    );
    // The engine judges an event again when it arrives (a subscription may
    // have closed meanwhile), so only the sum is fixed.
    let judged = |s: &RelayStats| s.events_received + s.events_unrequested + s.events_unmatched;
    assert_eq!(
        judged(&after) - judged(&before),
        c.valid + c.known + c.unwanted,
        "the engine judges every event taken in"
    );
}
