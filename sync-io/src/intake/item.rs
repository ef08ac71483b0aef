//! What waits in a connection's reorder buffer and what it becomes: the
//! intake's vocabulary. A parsed frame is split into an event or a control
//! message ([`split`]); an item leaving the buffer becomes the engine input
//! it stands for ([`Hand`], one [`Input`] per [`HandStep`]).

use grasp_sync_core::{Input, RelayUrl, StoreOutcome};
use nostr::event::{Event, EventId};
use nostr::message::SubscriptionId;

use super::{LinkEvent, Save};
use crate::connection::Incoming;

/// What the intake concluded about an event before the engine sees it.
#[derive(Clone, Copy, Debug)]
pub(super) enum Verdict {
    /// Not for an open subscription or its filters: counted, not verified.
    Unwanted,
    /// Id already verified and stored (or rejected) earlier.
    Known(StoreOutcome),
    /// Id and signature valid.
    Valid,
    /// Bad id or signature.
    Invalid,
}

/// A relay message other than `EVENT`, as it waits in the inbox.
#[derive(Debug)]
pub(super) enum Control {
    Eose(SubscriptionId),
    Closed {
        subscription: SubscriptionId,
        message: String,
    },
    Notice(String),
    AuthChallenge(String),
    Ok {
        event_id: EventId,
        accepted: bool,
    },
    NegMsg {
        subscription: SubscriptionId,
        message: String,
    },
    NegErr {
        subscription: SubscriptionId,
        message: String,
    },
    /// An `EVENT` frame whose event could not be parsed.
    Unparsable(String),
    Malformed(String),
    Oversized,
}

/// Splits a parsed frame into an event or a control message (moves only).
pub(super) fn split(incoming: Incoming) -> Result<(SubscriptionId, Box<Event>), Control> {
    Err(match incoming {
        Incoming::Event {
            subscription,
            event,
        } => return Ok((subscription, event)),
        Incoming::Eose(subscription) => Control::Eose(subscription),
        Incoming::Closed {
            subscription,
            message,
        } => Control::Closed {
            subscription,
            message,
        },
        Incoming::Notice(message) => Control::Notice(message),
        Incoming::Auth(challenge) => Control::AuthChallenge(challenge),
        Incoming::Ok {
            event_id, accepted, ..
        } => Control::Ok { event_id, accepted },
        Incoming::NegMsg {
            subscription,
            message,
        } => Control::NegMsg {
            subscription,
            message,
        },
        Incoming::NegErr {
            subscription,
            message,
        } => Control::NegErr {
            subscription,
            message,
        },
        Incoming::InvalidEvent(reason) => Control::Unparsable(reason),
        Incoming::Malformed(reason) => Control::Malformed(reason),
        Incoming::Oversized => Control::Oversized,
    })
}

/// An item waiting in a connection's reorder buffer.
#[derive(Debug)]
pub(super) enum Item<P> {
    Link(LinkEvent),
    Event {
        subscription: SubscriptionId,
        event: Box<Event>,
        verdict: Verdict,
        permit: P,
    },
    Control(Control, P),
}

/// After an event's `EventReceived`, what follows.
#[derive(Debug)]
pub(super) enum Then<P> {
    Nothing,
    /// The remembered store outcome (a seen-cache hit).
    Stored(StoreOutcome),
    /// The acceptance check, then the store (the permit travels along).
    Accept(P),
}

/// The engine input the item in hand stands for; each maps to one
/// [`Input`] variant.
#[derive(Debug)]
pub(super) enum HandStep<P> {
    Connected,
    ConnectFailed(String),
    Disconnected(String),
    Eose(SubscriptionId),
    Closed {
        subscription: SubscriptionId,
        message: String,
    },
    Notice(String),
    AuthChallenge(String),
    AuthResult(bool),
    NegMsg {
        subscription: SubscriptionId,
        message: String,
    },
    NegErr {
        subscription: SubscriptionId,
        message: String,
    },
    Invalid,
    Received {
        subscription: SubscriptionId,
        event: Box<Event>,
        then: Then<P>,
    },
    Stored {
        id: EventId,
        created_at: u64,
        outcome: StoreOutcome,
        catalog: Option<Box<Event>>,
    },
    Catalog(Box<Event>),
}

/// The item being handed to the engine, one input per [`Intake::poll`].
/// The relay is its own handle: the connection may be closed by the
/// commands of the item's own input, and the item still finishes.
#[derive(Debug)]
pub(super) struct Hand<P> {
    pub(super) relay: RelayUrl,
    pub(super) step: HandStep<P>,
}

impl<P> Hand<P> {
    pub(super) fn input(&self) -> Input<'_> {
        let relay = &self.relay;
        match &self.step {
            HandStep::Connected => Input::Connected { relay },
            HandStep::ConnectFailed(reason) => Input::ConnectFailed { relay, reason },
            HandStep::Disconnected(reason) => Input::Disconnected { relay, reason },
            HandStep::Eose(subscription) => Input::Eose {
                relay,
                subscription,
            },
            HandStep::Closed {
                subscription,
                message,
            } => Input::Closed {
                relay,
                subscription,
                message,
            },
            HandStep::Notice(message) => Input::Notice { relay, message },
            HandStep::AuthChallenge(challenge) => Input::AuthChallenge { relay, challenge },
            HandStep::AuthResult(accepted) => Input::AuthResult {
                relay,
                accepted: *accepted,
            },
            HandStep::NegMsg {
                subscription,
                message,
            } => Input::NegMsg {
                relay,
                subscription,
                message,
            },
            HandStep::NegErr {
                subscription,
                message,
            } => Input::NegErr {
                relay,
                subscription,
                message,
            },
            HandStep::Invalid => Input::EventInvalid { relay },
            HandStep::Received {
                subscription,
                event,
                ..
            } => Input::EventReceived {
                relay,
                subscription,
                event,
            },
            HandStep::Stored {
                id,
                created_at,
                outcome,
                ..
            } => Input::EventStored {
                relay,
                id: *id,
                created_at: *created_at,
                outcome: *outcome,
            },
            HandStep::Catalog(event) => Input::CatalogEvent(event),
        }
    }
}

/// What follows an item whose input went out.
pub(super) enum FollowUp<P> {
    Hand(Hand<P>),
    Save(Save<P>),
    Done,
}
