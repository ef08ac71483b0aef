//! The event path as a sans-IO state machine: everything that happens to a
//! relay's frames between its connection task and the engine, with no
//! sockets, threads, clocks or channels.
//!
//! [`Intake`] owns, per connection attempt, the reorder buffer ([`Inbox`]),
//! the events waiting for and in verification, the subscriptions, NIP-77
//! reconciliations and AUTH event we have open there; and, for all
//! connections, the cache of ids already verified ([`SeenIds`]). It asks the
//! [`Engine`] its two questions ([`Engine::check_event`] when an `EVENT`
//! arrives, [`Engine::check_acceptance`] once it verified and was counted)
//! and counts into the caller's [`IoCounters`]. The host (the runner's
//! driver, or the `relay_message` fuzz harness) does the I/O.
//!
//! # Driving contract
//!
//! - **In:** connection changes ([`Intake::on_link`]) and frames
//!   ([`Intake::on_frame`]) of the attempts opened with [`Intake::connect`];
//!   verdicts of the verification jobs ([`Intake::on_verified`]); store
//!   answers ([`Intake::on_stored`]); and what the host sent, as the engine's
//!   commands were carried out ([`Intake::on_subscribed`] and the other
//!   `on_*` bookkeeping calls, [`Intake::close`]).
//! - **Out:** after every call above, [`Intake::poll`] until it returns
//!   `None`: each [`Step::Input`] is fed to the engine (and its commands
//!   carried out) before the next `poll`, because the next step may ask the
//!   engine again; each [`Step::Save`] is handed to the store, whose answer
//!   comes back through [`Intake::on_stored`]. [`Intake::take_verify_jobs`]
//!   hands out the events to verify, batched per connection.
//!
//! # The path of one `EVENT`
//!
//! Counted on arrival; not for an open subscription or its filters: handed
//! to the engine unverified (it counts it) → id verified before: only the
//! id hash is checked, and the remembered store outcome is replayed →
//! otherwise id and signature verified by the host → the engine
//! (`EventReceived`), in the relay's own order → GRASP acceptance → store →
//! the engine (`EventStored`, then `CatalogEvent` for a newly stored
//! announcement, root event or deletion).
//!
//! Order matters: the engine counts a historic page's events as they arrive
//! and judges the page at its `EOSE`, so a message never overtakes one the
//! relay sent before it, even while signatures are checked in parallel.
//!
//! Back-pressure: every frame carries a permit `P` (opaque here; the runner
//! uses a semaphore permit per connection), released when the intake is
//! done with the frame: for an event that is stored, when the store has
//! answered.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use grasp_sync_core::{is_catalog_kind, Engine, EventCheck, Input, RelayUrl, StoreOutcome};
use nostr::event::{Event, EventId};
use nostr::message::SubscriptionId;

use crate::connection::{ConnId, Incoming};

mod item;
use crate::metrics::IoCounters;
use crate::pipeline::{Inbox, SeenIds, VerifyDone, VerifyJob};
use crate::store::StoreError;
use item::{split, Control, FollowUp, Hand, HandStep, Item, Then, Verdict};

/// Events per verification job: small enough to spread over the threads,
/// large enough to amortise the hand-off.
pub const VERIFY_BATCH: usize = 64;

/// What happened to a connection attempt, as its task reports it.
#[derive(Debug)]
pub enum LinkEvent {
    /// The websocket is open.
    Connected,
    /// The attempt failed before the websocket opened.
    ConnectFailed(String),
    /// The connection ended without us asking.
    Disconnected(String),
}

/// What the host does next (see the driving contract).
#[derive(Debug)]
pub enum Step<'a, P> {
    /// Feed this input to the engine now, and carry out its commands,
    /// before polling again.
    Input(Input<'a>),
    /// Hand this event to the store; give the answer to
    /// [`Intake::on_stored`] with the ticket.
    Save(Save<P>),
}

/// An event to store.
#[derive(Debug)]
pub struct Save<P> {
    /// The event (verified, and accepted by the GRASP rule).
    pub event: Box<Event>,
    /// What the intake needs back with the store's answer.
    pub ticket: SaveTicket<P>,
}

/// Carried through a save and handed back to [`Intake::on_stored`]: the
/// relay, the event's id and time, a copy of a catalog event (to feed the
/// engine once stored) and the frame's permit.
#[derive(Debug)]
pub struct SaveTicket<P> {
    relay: RelayUrl,
    id: EventId,
    created_at: u64,
    catalog: Option<Box<Event>>,
    _permit: P,
}

impl<P> SaveTicket<P> {
    /// The relay the event came from.
    pub fn relay(&self) -> &RelayUrl {
        &self.relay
    }

    /// The event's id.
    pub fn id(&self) -> EventId {
        self.id
    }
}

/// Subscriptions and reconciliations still open on a connection when it is
/// closed (so the host can CLOSE them politely).
#[derive(Debug, Default)]
pub struct OpenWork {
    /// `REQ`s we sent and did not close, and the relay did not close.
    pub subscriptions: BTreeSet<SubscriptionId>,
    /// NIP-77 reconciliations we opened and did not close.
    pub reconciliations: BTreeSet<SubscriptionId>,
}

/// Where every frame handed to the intake ended up, once each. Not a
/// metric (the engine and [`IoCounters`] count what operators see); it is
/// what the tests and the fuzz harness check the intake's accounting with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameTally {
    /// Events verified valid and handed to the engine (then stored, or
    /// refused by acceptance).
    pub verified: u64,
    /// Events answered from the seen-id cache.
    pub known: u64,
    /// Events for no open subscription, or matching none of its filters.
    pub unwanted: u64,
    /// Events that failed verification, and `EVENT` frames that did not parse.
    pub invalid: u64,
    /// EOSE, CLOSED, NOTICE, AUTH, NEG-MSG, NEG-ERR and the `OK` of our AUTH.
    pub control: u64,
    /// `OK`s that answer no AUTH event of ours (dropped).
    pub stray_ok: u64,
    /// Frames that are not relay messages.
    pub malformed: u64,
    /// Frames over the size cap.
    pub oversized: u64,
    /// Frames of a connection closed before they were handed over (dropped
    /// with it), and late frames of an attempt already replaced.
    pub dropped: u64,
}

impl FrameTally {
    /// Every frame counted.
    pub fn total(&self) -> u64 {
        self.verified
            + self.known
            + self.unwanted
            + self.invalid
            + self.control
            + self.stray_ok
            + self.malformed
            + self.oversized
            + self.dropped
    }
}

/// The intake's side of one connection attempt.
#[derive(Debug)]
struct Link<P> {
    relay: RelayUrl,
    inbox: Inbox<Item<P>>,
    /// Events waiting for verification: (place in the inbox, event).
    to_verify: Vec<(u64, Box<Event>)>,
    /// Subscription and permit of each event being verified, by place.
    verifying: HashMap<u64, (SubscriptionId, P)>,
    open_subs: BTreeSet<SubscriptionId>,
    open_negs: BTreeSet<SubscriptionId>,
    /// Our AUTH event awaiting its `OK`: only that `OK` answers the AUTH.
    auth_event: Option<EventId>,
}

impl<P> Link<P> {
    fn new(relay: RelayUrl) -> Self {
        Link {
            relay,
            inbox: Inbox::default(),
            to_verify: Vec::new(),
            verifying: HashMap::new(),
            open_subs: BTreeSet::new(),
            open_negs: BTreeSet::new(),
            auth_event: None,
        }
    }
}

/// The sans-IO event path (see the module documentation). `P` is the
/// back-pressure permit each frame carries.
#[derive(Debug)]
pub struct Intake<P> {
    links: HashMap<ConnId, Link<P>>,
    /// The current attempt of each relay.
    by_relay: HashMap<RelayUrl, ConnId>,
    seen: SeenIds,
    /// Connections that may have items ready, in the order they got them.
    ready: VecDeque<ConnId>,
    /// Store answers waiting to be handed to the engine.
    stored: VecDeque<Hand<P>>,
    /// The item being handed over, once its input went out.
    hand: Option<Hand<P>>,
    /// Ids being stored: a second copy of one (a relay that sends an event
    /// once per filter it matches, as nostr-rs-relay does) is a duplicate,
    /// not a second save.
    saving: HashSet<EventId>,
    tally: FrameTally,
}

impl<P> Intake<P> {
    /// An intake remembering at most `seen_ids_capacity` verified ids.
    pub fn new(seen_ids_capacity: usize) -> Self {
        Intake {
            links: HashMap::new(),
            by_relay: HashMap::new(),
            seen: SeenIds::new(seen_ids_capacity),
            ready: VecDeque::new(),
            stored: VecDeque::new(),
            hand: None,
            saving: HashSet::new(),
            tally: FrameTally::default(),
        }
    }

    // ----- connections and what we sent --------------------------------

    /// A new connection attempt to `relay`; an older one of the same relay
    /// is dropped with what it still held.
    pub fn connect(&mut self, relay: RelayUrl, conn: ConnId) {
        if let Some(old) = self.by_relay.insert(relay.clone(), conn) {
            self.drop_link(old);
        }
        self.links.insert(conn, Link::new(relay));
    }

    /// We dropped the connection to `relay` (the engine asked, or its send
    /// queue overflowed, or we are shutting down). Returns what was still
    /// open on it.
    pub fn close(&mut self, relay: &RelayUrl) -> Option<OpenWork> {
        let conn = self.by_relay.remove(relay)?;
        self.drop_link(conn)
    }

    fn drop_link(&mut self, conn: ConnId) -> Option<OpenWork> {
        let link = self.links.remove(&conn)?;
        if self.by_relay.get(&link.relay) == Some(&conn) {
            self.by_relay.remove(&link.relay);
        }
        self.tally.dropped += link.inbox.len() as u64;
        Some(OpenWork {
            subscriptions: link.open_subs,
            reconciliations: link.open_negs,
        })
    }

    fn link_of(&mut self, relay: &RelayUrl) -> Option<&mut Link<P>> {
        let conn = self.by_relay.get(relay)?;
        self.links.get_mut(conn)
    }

    /// A `REQ` went out on `relay`'s connection.
    pub fn on_subscribed(&mut self, relay: &RelayUrl, subscription: SubscriptionId) {
        if let Some(link) = self.link_of(relay) {
            link.open_subs.insert(subscription);
        }
    }

    /// We closed a subscription (`CLOSE` sent, or about to be).
    pub fn on_unsubscribed(&mut self, relay: &RelayUrl, subscription: &SubscriptionId) {
        if let Some(link) = self.link_of(relay) {
            link.open_subs.remove(subscription);
        }
    }

    /// A `NEG-OPEN` went out on `relay`'s connection.
    pub fn on_neg_opened(&mut self, relay: &RelayUrl, subscription: SubscriptionId) {
        if let Some(link) = self.link_of(relay) {
            link.open_negs.insert(subscription);
        }
    }

    /// We closed a reconciliation (`NEG-CLOSE`).
    pub fn on_neg_closed(&mut self, relay: &RelayUrl, subscription: &SubscriptionId) {
        if let Some(link) = self.link_of(relay) {
            link.open_negs.remove(subscription);
        }
    }

    /// Our AUTH event `id` went out on `relay`'s connection: its `OK`, and
    /// no other, is the relay's answer.
    pub fn on_auth_sent(&mut self, relay: &RelayUrl, id: EventId) {
        if let Some(link) = self.link_of(relay) {
            link.auth_event = Some(id);
        }
    }

    // ----- what connections report ----------------------------------------

    /// A connection opened, failed or ended. Late reports of a replaced
    /// attempt are ignored.
    pub fn on_link(&mut self, conn: ConnId, event: LinkEvent) {
        if let Some(link) = self.links.get_mut(&conn) {
            link.inbox.push_ready(Item::Link(event));
            self.mark_ready(conn);
        }
    }

    /// One parsed frame of `bytes` payload bytes from connection `conn`,
    /// holding `permit` until the intake is done with it.
    pub fn on_frame(
        &mut self,
        engine: &Engine,
        io: &mut IoCounters,
        conn: ConnId,
        incoming: Incoming,
        bytes: usize,
        permit: P,
    ) {
        let Some(link) = self.links.get_mut(&conn) else {
            // A late frame of an attempt we already dropped.
            self.tally.dropped += 1;
            return;
        };
        let bytes = bytes as u64;
        let counters = io.relay(&link.relay);
        counters.frames_received += 1;
        counters.bytes_received = counters.bytes_received.saturating_add(bytes);
        match split(incoming) {
            Ok((subscription, event)) => {
                counters.event_frames_received += 1;
                counters.event_bytes_received = counters.event_bytes_received.saturating_add(bytes);
                let verdict = match engine.check_event(&link.relay, &subscription, &event) {
                    EventCheck::Accepted(_) => match self.seen.get(&event.id) {
                        // Same id means same content once the id hash checks.
                        Some(outcome) if event.verify_id() => {
                            counters.seen_cache_hits += 1;
                            Some(Verdict::Known(outcome))
                        }
                        _ => None,
                    },
                    EventCheck::Unrequested | EventCheck::Unmatched => Some(Verdict::Unwanted),
                };
                match verdict {
                    Some(verdict) => link.inbox.push_ready(Item::Event {
                        subscription,
                        event,
                        verdict,
                        permit,
                    }),
                    None => {
                        let seq = link.inbox.reserve();
                        link.to_verify.push((seq, event));
                        link.verifying.insert(seq, (subscription, permit));
                    }
                }
            }
            Err(control) => link.inbox.push_ready(Item::Control(control, permit)),
        }
        self.mark_ready(conn);
    }

    fn mark_ready(&mut self, conn: ConnId) {
        if self.ready.back() != Some(&conn) {
            self.ready.push_back(conn);
        }
    }

    // ----- verification -----------------------------------------------------

    /// The events waiting for verification, in jobs of at most
    /// [`VERIFY_BATCH`] events of one connection each.
    pub fn take_verify_jobs(&mut self) -> Vec<VerifyJob<ConnId>> {
        let mut jobs = Vec::new();
        for (conn, link) in &mut self.links {
            let mut events = std::mem::take(&mut link.to_verify);
            while !events.is_empty() {
                let rest = events.split_off(events.len().min(VERIFY_BATCH));
                jobs.push(VerifyJob { key: *conn, events });
                events = rest;
            }
        }
        jobs
    }

    /// The verdicts of a job. Verdicts for a connection closed meanwhile
    /// are dropped (its frames were counted as dropped with it).
    pub fn on_verified(&mut self, done: VerifyDone<ConnId>) {
        let conn = done.key;
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        for (seq, event, valid) in done.results {
            let Some((subscription, permit)) = link.verifying.remove(&seq) else {
                continue;
            };
            let verdict = if valid {
                Verdict::Valid
            } else {
                Verdict::Invalid
            };
            link.inbox.fill(
                seq,
                Item::Event {
                    subscription,
                    event,
                    verdict,
                    permit,
                },
            );
        }
        self.mark_ready(conn);
    }

    // ----- the store ----------------------------------------------------------

    /// The store's answer for a [`Save`]. A failed save is counted, handed
    /// to the engine as a rejection and not remembered as seen (a later
    /// copy is tried again). The frame's permit is released.
    pub fn on_stored(
        &mut self,
        ticket: SaveTicket<P>,
        result: Result<StoreOutcome, StoreError>,
        io: &mut IoCounters,
    ) {
        let SaveTicket {
            relay,
            id,
            created_at,
            catalog,
            ..
        } = ticket;
        self.saving.remove(&id);
        let outcome = match result {
            Ok(outcome) => {
                self.seen.insert(id, outcome);
                outcome
            }
            Err(e) => {
                io.store_errors += 1;
                tracing::warn!(relay = relay.as_str(), %id, error = %e, "store failed");
                StoreOutcome::Rejected
            }
        };
        self.stored.push_back(Hand {
            relay,
            step: HandStep::Stored {
                id,
                created_at,
                outcome,
                catalog,
            },
        });
    }

    // ----- out ------------------------------------------------------------------

    /// The next thing for the host to do, or `None` when nothing is ready.
    /// See the driving contract: feed a [`Step::Input`] to the engine before
    /// polling again.
    pub fn poll<'a>(&'a mut self, engine: &Engine, io: &mut IoCounters) -> Option<Step<'a, P>> {
        if let Some(save) = self.advance(engine, io) {
            return Some(Step::Save(save));
        }
        let hand: &'a Hand<P> = self.hand.as_ref()?;
        Some(Step::Input(hand.input()))
    }

    /// Finishes the item whose input went out and takes the next one into
    /// `self.hand`; returns a save instead when that is what comes next.
    fn advance(&mut self, engine: &Engine, io: &mut IoCounters) -> Option<Save<P>> {
        if let Some(done) = self.hand.take() {
            match self.follow_up(done, engine) {
                FollowUp::Hand(next) => {
                    self.hand = Some(next);
                    return None;
                }
                FollowUp::Save(save) => return Some(save),
                FollowUp::Done => {}
            }
        }
        if let Some(stored) = self.stored.pop_front() {
            self.hand = Some(stored);
            return None;
        }
        while let Some(&conn) = self.ready.front() {
            let Some(link) = self.links.get_mut(&conn) else {
                self.ready.pop_front();
                continue;
            };
            let Some(item) = link.inbox.pop_ready() else {
                self.ready.pop_front();
                continue;
            };
            let relay = link.relay.clone();
            if let Some(step) = self.take_item(conn, &relay, item, io) {
                self.hand = Some(Hand { relay, step });
                return None;
            }
        }
        None
    }

    /// What follows an item once the engine has its input.
    fn follow_up(&mut self, done: Hand<P>, engine: &Engine) -> FollowUp<P> {
        let Hand { relay, step } = done;
        match step {
            HandStep::Received {
                event,
                then: Then::Stored(outcome),
                ..
            } => FollowUp::Hand(Hand {
                relay,
                step: HandStep::Stored {
                    id: event.id,
                    created_at: event.created_at.as_secs(),
                    outcome,
                    catalog: None,
                },
            }),
            HandStep::Received {
                event,
                then: Then::Accept(permit),
                ..
            } => {
                let id = event.id;
                let created_at = event.created_at.as_secs();
                if !engine.check_acceptance(&event).is_accept() {
                    self.seen.insert(id, StoreOutcome::Rejected);
                    return FollowUp::Hand(Hand {
                        relay,
                        step: HandStep::Stored {
                            id,
                            created_at,
                            outcome: StoreOutcome::Rejected,
                            catalog: None,
                        },
                    });
                }
                if !self.saving.insert(id) {
                    return FollowUp::Hand(Hand {
                        relay,
                        step: HandStep::Stored {
                            id,
                            created_at,
                            outcome: StoreOutcome::Duplicate,
                            catalog: None,
                        },
                    });
                }
                let catalog = is_catalog_kind(event.kind.as_u16()).then(|| event.clone());
                FollowUp::Save(Save {
                    event,
                    ticket: SaveTicket {
                        relay,
                        id,
                        created_at,
                        catalog,
                        _permit: permit,
                    },
                })
            }
            HandStep::Stored {
                outcome: StoreOutcome::Stored,
                catalog: Some(event),
                ..
            } => FollowUp::Hand(Hand {
                relay,
                step: HandStep::Catalog(event),
            }),
            _ => FollowUp::Done,
        }
    }

    /// Turns an item leaving the inbox into the input it stands for, or
    /// counts it and returns `None` when it stands for none.
    fn take_item(
        &mut self,
        conn: ConnId,
        relay: &RelayUrl,
        item: Item<P>,
        io: &mut IoCounters,
    ) -> Option<HandStep<P>> {
        match item {
            Item::Link(LinkEvent::Connected) => {
                tracing::info!(relay = relay.as_str(), "connected");
                Some(HandStep::Connected)
            }
            Item::Link(LinkEvent::ConnectFailed(reason)) => {
                tracing::info!(relay = relay.as_str(), %reason, "connection failed");
                self.drop_link(conn);
                Some(HandStep::ConnectFailed(reason))
            }
            Item::Link(LinkEvent::Disconnected(reason)) => {
                tracing::info!(relay = relay.as_str(), %reason, "disconnected");
                self.drop_link(conn);
                Some(HandStep::Disconnected(reason))
            }
            Item::Event {
                subscription,
                event,
                verdict,
                permit,
            } => {
                let then = match verdict {
                    Verdict::Unwanted => {
                        self.tally.unwanted += 1;
                        Then::Nothing
                    }
                    Verdict::Known(outcome) => {
                        self.tally.known += 1;
                        Then::Stored(outcome)
                    }
                    Verdict::Valid => {
                        self.tally.verified += 1;
                        Then::Accept(permit)
                    }
                    Verdict::Invalid => {
                        self.tally.invalid += 1;
                        tracing::debug!(relay = relay.as_str(), id = %event.id, "invalid event");
                        return Some(HandStep::Invalid);
                    }
                };
                Some(HandStep::Received {
                    subscription,
                    event,
                    then,
                })
            }
            Item::Control(control, _permit) => self.take_control(conn, relay, control, io),
        }
    }

    fn take_control(
        &mut self,
        conn: ConnId,
        relay: &RelayUrl,
        control: Control,
        io: &mut IoCounters,
    ) -> Option<HandStep<P>> {
        let link = self.links.get_mut(&conn)?;
        let step = match control {
            Control::Eose(subscription) => {
                tracing::trace!(relay = relay.as_str(), sub = %subscription, "EOSE");
                HandStep::Eose(subscription)
            }
            Control::Closed {
                subscription,
                message,
            } => {
                tracing::debug!(relay = relay.as_str(), sub = %subscription, %message, "CLOSED");
                link.open_subs.remove(&subscription);
                HandStep::Closed {
                    subscription,
                    message,
                }
            }
            Control::Notice(message) => {
                tracing::debug!(relay = relay.as_str(), %message, "NOTICE");
                HandStep::Notice(message)
            }
            Control::AuthChallenge(challenge) => HandStep::AuthChallenge(challenge),
            Control::Ok { event_id, accepted } => {
                if link.auth_event != Some(event_id) {
                    self.tally.stray_ok += 1;
                    return None;
                }
                link.auth_event = None;
                HandStep::AuthResult(accepted)
            }
            Control::NegMsg {
                subscription,
                message,
            } => HandStep::NegMsg {
                subscription,
                message,
            },
            Control::NegErr {
                subscription,
                message,
            } => {
                tracing::debug!(relay = relay.as_str(), sub = %subscription, %message, "NEG-ERR");
                link.open_negs.remove(&subscription);
                HandStep::NegErr {
                    subscription,
                    message,
                }
            }
            Control::Unparsable(reason) => {
                tracing::debug!(relay = relay.as_str(), %reason, "unparsable EVENT");
                self.tally.invalid += 1;
                return Some(HandStep::Invalid);
            }
            Control::Malformed(reason) => {
                tracing::debug!(relay = relay.as_str(), %reason, "malformed message");
                io.relay(relay).messages_malformed += 1;
                self.tally.malformed += 1;
                return None;
            }
            Control::Oversized => {
                io.relay(relay).frames_oversized += 1;
                self.tally.oversized += 1;
                return None;
            }
        };
        self.tally.control += 1;
        Some(step)
    }

    // ----- views --------------------------------------------------------------

    /// Events waiting for, or in, verification (each has its place in
    /// `verifying` from arrival to verdict; `to_verify` only holds those
    /// not yet handed out, so it is not added).
    pub fn verify_queue(&self) -> usize {
        self.links.values().map(|l| l.verifying.len()).sum()
    }

    /// Work not through the event path yet: items waiting in an inbox (in
    /// verification or ready), saves under way, store answers not yet handed
    /// to the engine. Zero means every frame received so far was fully
    /// taken in (a `--once` run waits for that).
    pub fn in_flight(&self) -> usize {
        self.links.values().map(|l| l.inbox.len()).sum::<usize>()
            + self.saving.len()
            + self.stored.len()
            + usize::from(self.hand.is_some())
    }

    /// Where every frame ended up so far.
    pub fn tally(&self) -> &FrameTally {
        &self.tally
    }

    /// Ids remembered as verified.
    pub fn seen_ids(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use grasp_sync_core::{Command, Config, ServiceId, Time};
    use nostr::event::{EventBuilder, FinalizeEvent, Kind, Tag};
    use nostr::key::Keys;
    use nostr::message::RelayMessage;

    use super::*;
    use crate::pipeline::VerifyDone;

    const SERVICE: &str = "git.example.com";
    const RELAY: &str = "wss://relay.example.org";
    const CONN: ConnId = 7;

    /// A frame's permit: the rig counts how many are still held.
    type Permit = Arc<()>;

    /// A host without sockets: an engine connected to [`RELAY`] with its
    /// discovery subscriptions open, the intake, and what the steps did.
    struct Rig {
        engine: Engine,
        intake: Intake<Permit>,
        io: IoCounters,
        relay: RelayUrl,
        now: Time,
        sub: SubscriptionId,
        permits: Permit,
        /// Saves the store has not answered yet.
        saves: Vec<Save<Permit>>,
        /// The inputs handed to the engine, in short.
        log: Vec<String>,
        keys: Keys,
    }

    fn wall() -> Time {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        Time::from_secs(secs)
    }

    fn short(input: &Input<'_>) -> String {
        match input {
            Input::Connected { .. } => "connected".into(),
            Input::Disconnected { .. } => "disconnected".into(),
            Input::EventReceived { .. } => "received".into(),
            Input::EventInvalid { .. } => "invalid".into(),
            Input::EventStored { outcome, .. } => format!("stored:{outcome:?}"),
            Input::CatalogEvent(_) => "catalog".into(),
            Input::Eose { .. } => "eose".into(),
            Input::Closed { .. } => "closed".into(),
            Input::Notice { .. } => "notice".into(),
            Input::AuthChallenge { .. } => "challenge".into(),
            Input::AuthResult { accepted, .. } => format!("auth:{accepted}"),
            Input::NegErr { .. } => "neg-err".into(),
            other => format!("{other:?}"),
        }
    }

    impl Rig {
        fn new() -> Rig {
            let relay = RelayUrl::parse(RELAY).unwrap();
            let mut config = Config::new(ServiceId::parse(SERVICE).unwrap());
            config.bootstrap.push(relay.clone());
            config.nip77 = false;
            config.auth_enabled = true;
            let now = wall();
            let mut engine = Engine::new(config);
            engine.handle_input(now, Input::Tick);
            while engine.poll_command().is_some() {}
            let mut rig = Rig {
                engine,
                intake: Intake::new(16),
                io: IoCounters::default(),
                relay: relay.clone(),
                now,
                sub: SubscriptionId::new("none yet"),
                permits: Arc::new(()),
                saves: Vec::new(),
                log: Vec::new(),
                keys: Keys::generate(),
            };
            rig.intake.connect(relay.clone(), CONN);
            rig.intake.on_link(CONN, LinkEvent::Connected);
            rig.pump();
            rig.engine.handle_input(
                now,
                Input::RelayInfo {
                    relay: &relay,
                    info: Default::default(),
                },
            );
            rig.run_commands();
            rig.now = now.plus(Duration::from_secs(5));
            rig.engine.handle_input(rig.now, Input::Tick);
            rig.run_commands();
            assert_ne!(rig.sub.as_str(), "none yet", "the engine subscribed");
            assert_eq!(rig.take_log(), ["connected"]);
            rig
        }

        fn run_commands(&mut self) {
            while let Some(command) = self.engine.poll_command() {
                match command {
                    Command::Subscribe {
                        relay,
                        subscription,
                        ..
                    } => {
                        self.sub = subscription.clone();
                        self.intake.on_subscribed(&relay, subscription);
                    }
                    Command::Unsubscribe {
                        relay,
                        subscription,
                    } => self.intake.on_unsubscribed(&relay, &subscription),
                    _ => {}
                }
            }
        }

        fn pump(&mut self) {
            while let Some(step) = self.intake.poll(&self.engine, &mut self.io) {
                match step {
                    Step::Input(input) => {
                        self.log.push(short(&input));
                        self.engine.handle_input(self.now, input);
                    }
                    Step::Save(save) => {
                        self.log.push("save".into());
                        self.saves.push(save);
                    }
                }
                self.run_commands();
            }
        }

        fn take_log(&mut self) -> Vec<String> {
            std::mem::take(&mut self.log)
        }

        fn permits_held(&self) -> usize {
            Arc::strong_count(&self.permits) - 1
        }

        fn frame(&mut self, text: &str) {
            let permit = Arc::clone(&self.permits);
            self.intake.on_frame(
                &self.engine,
                &mut self.io,
                CONN,
                Incoming::parse(text),
                text.len(),
                permit,
            );
            self.pump();
        }

        fn event_frame(&mut self, event: &Event) {
            let text = RelayMessage::event(self.sub.clone(), event.clone()).as_json();
            self.frame(&text);
        }

        /// Plays the verifier threads: every waiting event, with `valid`
        /// for each, in reverse order.
        fn verify(&mut self, valid: impl Fn(&Event) -> bool) -> usize {
            let mut n = 0;
            for job in self.intake.take_verify_jobs() {
                let results: Vec<_> = job
                    .events
                    .into_iter()
                    .rev()
                    .map(|(seq, event)| {
                        let ok = valid(&event);
                        (seq, event, ok)
                    })
                    .collect();
                n += results.len();
                self.intake.on_verified(VerifyDone {
                    key: job.key,
                    results,
                });
                self.pump();
            }
            n
        }

        /// The store answers the oldest pending save.
        fn store_answers(&mut self, result: Result<StoreOutcome, StoreError>) -> EventId {
            let save = self.saves.remove(0);
            let id = save.ticket.id();
            assert_eq!(save.event.id, id);
            self.intake.on_stored(save.ticket, result, &mut self.io);
            self.pump();
            id
        }

        fn io(&mut self) -> crate::metrics::RelayIoCounters {
            self.io.relay(&self.relay).clone()
        }

        /// An announcement, listing the service or not.
        fn announcement(&self, d: &str, lists_service: bool) -> Event {
            let mut relays = vec!["relays".to_owned(), "wss://relay.example.net".to_owned()];
            if lists_service {
                relays.push(format!("wss://{SERVICE}"));
            }
            let tags = vec![Tag::parse(["d", d]).unwrap(), Tag::parse(relays).unwrap()];
            EventBuilder::new(Kind::from(30617), "")
                .tags(tags)
                .finalize(&self.keys)
                .unwrap()
        }
    }

    #[test]
    fn an_eose_never_overtakes_the_events_before_it() {
        let mut rig = Rig::new();
        let a = rig.announcement("a", true);
        let b = rig.announcement("b", true);
        rig.event_frame(&a);
        rig.event_frame(&b);
        let eose = format!(r#"["EOSE","{}"]"#, rig.sub);
        rig.frame(&eose);
        assert!(rig.take_log().is_empty(), "the EOSE waits for the events");
        assert_eq!(rig.intake.verify_queue(), 2);
        assert_eq!(rig.permits_held(), 3);
        // Verdicts come back in reverse; the engine still gets a, b, EOSE.
        assert_eq!(rig.verify(|_| true), 2);
        assert_eq!(
            rig.take_log(),
            ["received", "save", "received", "save", "eose"]
        );
        assert_eq!(rig.saves[0].event.id, a.id);
        // The events hold their permits until the store has answered.
        assert_eq!(rig.permits_held(), 2);
        rig.store_answers(Ok(StoreOutcome::Stored));
        rig.store_answers(Ok(StoreOutcome::Duplicate));
        assert_eq!(
            rig.take_log(),
            ["stored:Stored", "catalog", "stored:Duplicate"],
            "only a newly stored catalog event is a catalog input"
        );
        assert_eq!(rig.permits_held(), 0);
        let io = rig.io();
        assert_eq!((io.frames_received, io.event_frames_received), (3, 2));
        assert_eq!(rig.intake.tally().verified, 2);
        assert_eq!(rig.intake.tally().control, 1);
    }

    /// nostr-rs-relay sends an event once per filter of the REQ it matches:
    /// two copies arrive before either is stored. Before, both were saved,
    /// and a race in the store could report both as newly stored (STORED 29
    /// for 27 distinct events). The second copy is a duplicate, not a save.
    #[test]
    fn a_second_copy_while_the_first_is_stored_is_a_duplicate() {
        let mut rig = Rig::new();
        let a = rig.announcement("a", true);
        rig.event_frame(&a);
        rig.event_frame(&a);
        assert_eq!(rig.intake.in_flight(), 2);
        rig.verify(|_| true);
        assert_eq!(
            rig.take_log(),
            ["received", "save", "received", "stored:Duplicate"]
        );
        assert_eq!(rig.saves.len(), 1, "one save for one id");
        assert_eq!(rig.intake.in_flight(), 1, "the save under way");
        rig.store_answers(Ok(StoreOutcome::Stored));
        assert_eq!(rig.take_log(), ["stored:Stored", "catalog"]);
        assert_eq!(rig.intake.in_flight(), 0, "everything taken in");
        assert_eq!(rig.permits_held(), 0);
    }

    #[test]
    fn only_the_ok_of_our_auth_event_answers_the_auth() {
        let mut rig = Rig::new();
        rig.frame(r#"["AUTH","challenge-1"]"#);
        assert_eq!(rig.take_log(), ["challenge"]);
        let ours = EventId::from_byte_array([1; 32]);
        let other = EventId::from_byte_array([2; 32]);
        rig.intake.on_auth_sent(&rig.relay.clone(), ours);
        rig.frame(&format!(r#"["OK","{}",true,""]"#, other.to_hex()));
        assert!(rig.take_log().is_empty(), "someone else's OK");
        rig.frame(&format!(r#"["OK","{}",false,"auth: no"]"#, ours.to_hex()));
        assert_eq!(rig.take_log(), ["auth:false"]);
        rig.frame(&format!(r#"["OK","{}",true,""]"#, ours.to_hex()));
        assert!(rig.take_log().is_empty(), "answered once only");
        assert_eq!(rig.intake.tally().stray_ok, 2);
        assert_eq!(rig.intake.tally().control, 2);
        assert_eq!(rig.permits_held(), 0);
    }

    #[test]
    fn a_seen_id_skips_verification_and_replays_the_outcome() {
        let mut rig = Rig::new();
        let a = rig.announcement("a", true);
        rig.event_frame(&a);
        rig.verify(|_| true);
        rig.store_answers(Ok(StoreOutcome::Stored));
        rig.take_log();
        rig.event_frame(&a);
        assert_eq!(rig.intake.verify_queue(), 0, "no second verification");
        assert_eq!(
            rig.take_log(),
            ["received", "stored:Duplicate"],
            "a remembered Stored reads as Duplicate"
        );
        assert_eq!(rig.io().seen_cache_hits, 1);
        assert_eq!(rig.intake.tally().known, 1);
        // A copy under the same id with other content fails the id hash and
        // is verified like any stranger.
        let mut json: serde_json::Value = serde_json::from_str(&a.as_json()).unwrap();
        json["content"] = "changed".into();
        let forged = format!(r#"["EVENT","{}",{json}]"#, rig.sub);
        rig.frame(&forged);
        assert_eq!(rig.intake.verify_queue(), 1);
        rig.verify(|e| e.verify().is_ok());
        assert_eq!(rig.take_log(), ["invalid"]);
        assert_eq!(rig.io().seen_cache_hits, 1);
    }

    #[test]
    fn an_event_the_service_would_refuse_is_a_remembered_rejection() {
        let mut rig = Rig::new();
        let stranger = rig.announcement("elsewhere", false);
        rig.event_frame(&stranger);
        rig.verify(|_| true);
        assert_eq!(rig.take_log(), ["received", "stored:Rejected"]);
        assert!(rig.saves.is_empty(), "never offered to the store");
        assert_eq!(rig.permits_held(), 0);
        rig.event_frame(&stranger);
        assert_eq!(rig.take_log(), ["received", "stored:Rejected"]);
        assert_eq!(rig.intake.tally().known, 1);
    }

    #[test]
    fn a_store_failure_is_counted_and_not_remembered() {
        let mut rig = Rig::new();
        let a = rig.announcement("a", true);
        rig.event_frame(&a);
        rig.verify(|_| true);
        rig.take_log();
        rig.store_answers(Err(StoreError::Database("disk full".into())));
        assert_eq!(
            rig.take_log(),
            ["stored:Rejected"],
            "a failed save is a rejection, and no catalog input"
        );
        assert_eq!(rig.io.store_errors, 1);
        assert_eq!(rig.permits_held(), 0);
        // The next copy is verified and offered again.
        rig.event_frame(&a);
        assert_eq!(rig.verify(|_| true), 1);
        assert_eq!(rig.take_log(), ["received", "save"]);
    }

    #[test]
    fn unwanted_invalid_and_malformed_frames_are_counted_once() {
        let mut rig = Rig::new();
        let a = rig.announcement("a", true);
        let nobody = RelayMessage::event(SubscriptionId::new("nobody"), a.clone()).as_json();
        rig.frame(&nobody);
        assert_eq!(
            rig.take_log(),
            ["received"],
            "unrequested: counted, not verified"
        );
        assert_eq!(rig.intake.verify_queue(), 0);
        rig.event_frame(&a);
        rig.verify(|_| false);
        rig.frame(r#"["EVENT","x",{"bad":1}]"#);
        rig.frame("not json");
        rig.frame(r#"["NOTICE","hello"]"#);
        rig.intake.on_frame(
            &rig.engine,
            &mut rig.io,
            CONN,
            Incoming::Oversized,
            0,
            Arc::clone(&rig.permits),
        );
        rig.pump();
        assert_eq!(rig.take_log(), ["invalid", "invalid", "notice"]);
        let io = rig.io();
        assert_eq!(io.messages_malformed, 1);
        assert_eq!(io.frames_oversized, 1);
        assert_eq!(io.frames_received, 6);
        let tally = rig.intake.tally();
        assert_eq!(
            (
                tally.unwanted,
                tally.invalid,
                tally.malformed,
                tally.oversized,
                tally.control
            ),
            (1, 2, 1, 1, 1)
        );
        assert_eq!(tally.total(), 6);
        assert_eq!(rig.permits_held(), 0);
    }

    #[test]
    fn a_replaced_connection_drops_what_it_held_and_its_late_frames() {
        let mut rig = Rig::new();
        let a = rig.announcement("a", true);
        rig.event_frame(&a);
        rig.frame(&format!(r#"["EOSE","{}"]"#, rig.sub));
        let jobs = rig.intake.take_verify_jobs();
        assert_eq!(jobs.len(), 1);
        // The engine reconnects: a new attempt replaces the old one.
        rig.intake.connect(rig.relay.clone(), CONN + 1);
        assert_eq!(rig.intake.tally().dropped, 2);
        assert_eq!(
            rig.permits_held(),
            0,
            "the dropped frames' permits are free"
        );
        // Its verdicts and frames come late and change nothing.
        for job in jobs {
            let results = job.events.into_iter().map(|(s, e)| (s, e, true)).collect();
            rig.intake.on_verified(VerifyDone {
                key: job.key,
                results,
            });
        }
        rig.frame(r#"["NOTICE","late"]"#);
        rig.pump();
        assert!(rig.take_log().is_empty());
        assert_eq!(rig.intake.tally().dropped, 3);
        assert_eq!(rig.io().frames_received, 2, "late frames are not read");
    }

    #[test]
    fn closing_returns_what_is_still_open() {
        let mut rig = Rig::new();
        let relay = rig.relay.clone();
        let gone = SubscriptionId::new("gone");
        rig.intake.on_subscribed(&relay, gone.clone());
        rig.intake
            .on_neg_opened(&relay, SubscriptionId::new("neg-1"));
        rig.intake
            .on_neg_opened(&relay, SubscriptionId::new("neg-2"));
        rig.intake
            .on_neg_closed(&relay, &SubscriptionId::new("neg-1"));
        rig.frame(r#"["CLOSED","gone","error: shutting down"]"#);
        rig.frame(r#"["NEG-ERR","neg-2","blocked: no"]"#);
        assert_eq!(rig.take_log(), ["closed", "neg-err"]);
        let open = rig.intake.close(&relay).expect("the link was open");
        assert!(!open.subscriptions.contains(&gone));
        assert!(open.subscriptions.contains(&rig.sub));
        assert!(open.reconciliations.is_empty());
        assert!(rig.intake.close(&relay).is_none());
    }

    /// The host closes the connection while an event is in hand (its own
    /// input made the engine disconnect): the event still reaches the
    /// store; what waited behind it is dropped, and counted.
    #[test]
    fn an_item_finishes_when_its_own_input_closes_the_connection() {
        let mut rig = Rig::new();
        let a = rig.announcement("a", true);
        rig.event_frame(&a);
        rig.frame(r#"["NOTICE","after"]"#);
        for job in rig.intake.take_verify_jobs() {
            let results = job.events.into_iter().map(|(s, e)| (s, e, true)).collect();
            rig.intake.on_verified(VerifyDone {
                key: job.key,
                results,
            });
        }
        let step = rig.intake.poll(&rig.engine, &mut rig.io);
        assert!(matches!(
            step,
            Some(Step::Input(Input::EventReceived { .. }))
        ));
        let relay = rig.relay.clone();
        rig.intake.close(&relay);
        assert!(matches!(
            rig.intake.poll(&rig.engine, &mut rig.io),
            Some(Step::Save(_))
        ));
        assert!(rig.intake.poll(&rig.engine, &mut rig.io).is_none());
        assert_eq!(rig.intake.tally().dropped, 1);
    }
}
