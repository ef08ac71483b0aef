//! The `relay_message` harness: bytes as relay text frames (one per line)
//! through sync-io's own event path, the [`Intake`] the runner drives: each
//! line is parsed as the connection task parses it ([`Incoming::parse`])
//! and handed to the intake; the harness plays the rest of the host with no
//! sockets: the verifier threads (finishing in reverse order, so the reorder
//! buffer is exercised), an in-memory store, and the engine, whose commands
//! it carries out as far as the intake's bookkeeping goes (subscriptions,
//! reconciliations, and an AUTH event with the fixed id [`AUTH_EVENT_ID`];
//! the connection itself stays up whatever the engine asks).
//!
//! Checks: nothing panics; a parsed event survives a JSON round trip; an
//! event that verifies has the id its content hashes to; the store is never
//! said to have an event it lacks; every frame lands in exactly one place
//! of the intake's tally, and the engine counts what the intake reports
//! (invalid events are counted, never dropped silently).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use grasp_sync_core::relay::RelayStats;
use grasp_sync_core::{Command, Config, Engine, Input, RelayUrl, ServiceId, StoreOutcome, Time};
use grasp_sync_io::connection::{ConnId, Incoming};
use grasp_sync_io::intake::{FrameTally, Intake, Step};
use grasp_sync_io::metrics::IoCounters;
use grasp_sync_io::pipeline::VerifyDone;
use nostr::event::{Event, EventId};
use nostr::message::SubscriptionId;

use crate::fixtures::{self, SERVICE, T0};

/// The relay every frame comes from.
pub const RELAY: &str = "wss://r0.example";

/// The repository the engine tracks on [`RELAY`]: author number 1, `repo-0`.
pub const REPO_AUTHOR: u32 = 1;
/// Its identifier.
pub const REPO_D: &str = "repo-0";

/// The id of the AUTH event the harness "sends" when the engine answers a
/// challenge: an `OK` for this id is the relay's answer, any other `OK` is
/// not.
pub const AUTH_EVENT_ID: [u8; 32] = [0xa5; 32];

/// The harness's one connection attempt.
const CONN: ConnId = 1;

/// A connected engine with open subscriptions on [`RELAY`], built once.
fn template() -> &'static (Engine, Vec<SubscriptionId>) {
    static TEMPLATE: OnceLock<(Engine, Vec<SubscriptionId>)> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let relay = RelayUrl::parse(RELAY).expect("the relay parses");
        let mut config = Config::new(ServiceId::parse(SERVICE).expect("the service parses"));
        // A key is configured: challenges are answered (with AUTH_EVENT_ID).
        config.auth_enabled = true;
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

/// The event path of one fuzz case: the runner's intake, played by a
/// host without sockets.
pub struct Pipeline {
    engine: Engine,
    relay: RelayUrl,
    intake: Intake<()>,
    io: IoCounters,
    /// Our store.
    store: BTreeMap<EventId, Event>,
    now: Time,
    /// Where frames ended up (the intake's tally, as of the last flush).
    pub counts: FrameTally,
    frames: u64,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipeline {
    /// A pipeline around a fresh copy of the template engine, connected to
    /// [`RELAY`] with the template's subscriptions open.
    pub fn new() -> Self {
        let (engine, subs) = template();
        let relay = RelayUrl::parse(RELAY).expect("the relay parses");
        let mut intake = Intake::new(64);
        intake.connect(relay.clone(), CONN);
        for sub in subs {
            intake.on_subscribed(&relay, sub.clone());
        }
        Pipeline {
            engine: engine.clone(),
            relay,
            intake,
            io: IoCounters::default(),
            store: BTreeMap::new(),
            now: Time::from_secs(T0 + 5),
            counts: FrameTally::default(),
            frames: 0,
        }
    }

    /// One text frame, as the connection's reader hands it over.
    pub fn frame(&mut self, text: &str) {
        self.frames += 1;
        let incoming = Incoming::parse(text);
        if let Incoming::Event { event, .. } = &incoming {
            let json = serde_json::to_string(&**event).expect("events serialise");
            let again: Event = serde_json::from_str(&json).expect("an event reads back");
            assert_eq!(again, **event, "an event survives a JSON round trip");
        }
        self.intake
            .on_frame(&self.engine, &mut self.io, CONN, incoming, text.len(), ());
        self.pump();
    }

    /// Verifies what waits (the last job first and each job's events last
    /// first, as threads may finish) and hands everything ready on.
    pub fn flush(&mut self) {
        let mut jobs = self.intake.take_verify_jobs();
        while let Some(job) = jobs.pop() {
            let results = job
                .events
                .into_iter()
                .rev()
                .map(|(seq, event)| {
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
                    (seq, event, valid)
                })
                .collect();
            self.intake.on_verified(VerifyDone {
                key: job.key,
                results,
            });
            self.pump();
        }
        assert_eq!(self.intake.verify_queue(), 0, "every event was verified");
        self.counts = self.intake.tally().clone();
        assert_eq!(
            self.counts.total(),
            self.frames,
            "every frame is counted once"
        );
    }

    /// Carries out the intake's steps, as the runner's driver does.
    fn pump(&mut self) {
        while let Some(step) = self.intake.poll(&self.engine, &mut self.io) {
            let save = match step {
                Step::Input(input) => {
                    if let Input::EventStored {
                        id,
                        outcome: StoreOutcome::Duplicate,
                        ..
                    } = &input
                    {
                        assert!(
                            self.store.contains_key(id),
                            "a duplicate of an event the store lacks"
                        );
                    }
                    self.engine.handle_input(self.now, input);
                    None
                }
                Step::Save(save) => Some(save),
            };
            if let Some(save) = save {
                let outcome = match self.store.insert(save.event.id, (*save.event).clone()) {
                    Some(_) => StoreOutcome::Duplicate,
                    None => StoreOutcome::Stored,
                };
                self.intake
                    .on_stored(save.ticket, Ok(outcome), &mut self.io);
            }
            self.run_commands();
        }
    }

    /// What the runner records of the engine's commands; the rest would be
    /// network I/O.
    fn run_commands(&mut self) {
        while let Some(command) = self.engine.poll_command() {
            match command {
                Command::Subscribe {
                    relay,
                    subscription,
                    ..
                } => self.intake.on_subscribed(&relay, subscription),
                Command::Unsubscribe {
                    relay,
                    subscription,
                } => self.intake.on_unsubscribed(&relay, &subscription),
                Command::NegOpen {
                    relay,
                    subscription,
                    ..
                } => self.intake.on_neg_opened(&relay, subscription),
                Command::NegClose {
                    relay,
                    subscription,
                } => self.intake.on_neg_closed(&relay, &subscription),
                Command::Authenticate { relay, .. } => self
                    .intake
                    .on_auth_sent(&relay, EventId::from_byte_array(AUTH_EVENT_ID)),
                _ => {}
            }
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
        c.verified + c.known + c.unwanted,
        "the engine judges every event taken in"
    );
}
