//! What the engine asks its host to do, and what the host tells it.

use nostr::event::{Event, EventId};
use nostr::filter::Filter;
use nostr::message::SubscriptionId;
use serde::{Deserialize, Serialize};

use crate::info::RelayInfo;
use crate::nip77::LocalItem;
use crate::url::RelayUrl;

/// Whether a subscription stays open for new events or ends at EOSE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubscriptionMode {
    /// `since` = now, `limit: 0`, kept open.
    Live,
    /// A page of history, ended by EOSE.
    Historic,
}

/// What the relay sent an event for (the answer of
/// [`Engine::check_event`](crate::Engine::check_event)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventCheck {
    /// A subscription we hold, and the event matches one of its filters.
    Accepted(SubscriptionMode),
    /// No subscription of that id is open.
    Unrequested,
    /// The subscription is open but none of its filters matches the event.
    Unmatched,
}

/// How the store took an event (for the counters of spec section 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreOutcome {
    /// Newly stored.
    Stored,
    /// Already there.
    Duplicate,
    /// Refused (not acceptable to the service, or invalid for the store).
    Rejected,
}

/// A command for the host. Commands come out in a deterministic order.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    /// Fetch the relay's NIP-11 document and report it with [`Input::RelayInfo`]
    /// (an empty `RelayInfo` when the relay serves none, so that the engine
    /// stops asking; it asks again with each connection attempt until then).
    FetchRelayInfo {
        /// The relay.
        relay: RelayUrl,
    },
    /// Open a websocket; report [`Input::Connected`] or [`Input::ConnectFailed`].
    Connect {
        /// The relay.
        relay: RelayUrl,
    },
    /// Close the websocket. The engine already counts the relay as disconnected:
    /// do not report [`Input::Disconnected`] for it.
    Disconnect {
        /// The relay.
        relay: RelayUrl,
    },
    /// Send `["REQ", subscription, filters...]`. The id is never one that
    /// is open on the relay: the next page of a historic pass, or an updated
    /// live subscription, goes out under a fresh id after the old one is
    /// closed (some relays silently ignore a REQ on an open id).
    Subscribe {
        /// The relay.
        relay: RelayUrl,
        /// The subscription id.
        subscription: SubscriptionId,
        /// The filters.
        filters: Vec<Filter>,
        /// Live or historic.
        mode: SubscriptionMode,
    },
    /// Send `["CLOSE", subscription]`.
    Unsubscribe {
        /// The relay.
        relay: RelayUrl,
        /// The subscription id.
        subscription: SubscriptionId,
    },
    /// Look up the store's `(id, created_at)` items matching `filter` (no
    /// `limit`: all of them) and report them with [`Input::LocalItems`]
    /// carrying the same `request` (NIP-77 reconciliation, spec section 7).
    QueryLocalItems {
        /// The relay the reconciliation is with.
        relay: RelayUrl,
        /// Echoed in the answer.
        request: u64,
        /// What to match.
        filter: Filter,
    },
    /// Send `["NEG-OPEN", subscription, filter, message]`.
    NegOpen {
        /// The relay.
        relay: RelayUrl,
        /// The reconciliation's subscription id.
        subscription: SubscriptionId,
        /// The filter reconciled.
        filter: Filter,
        /// The initial negentropy message (hex).
        message: String,
    },
    /// Send `["NEG-MSG", subscription, message]`.
    NegMsg {
        /// The relay.
        relay: RelayUrl,
        /// The reconciliation's subscription id.
        subscription: SubscriptionId,
        /// The negentropy message (hex).
        message: String,
    },
    /// Send `["NEG-CLOSE", subscription]`.
    NegClose {
        /// The relay.
        relay: RelayUrl,
        /// The reconciliation's subscription id.
        subscription: SubscriptionId,
    },
    /// Answer a NIP-42 challenge with a signed kind-22242 event; report
    /// [`Input::AuthResult`] when the relay's `OK` arrives.
    Authenticate {
        /// The relay.
        relay: RelayUrl,
        /// The challenge to sign.
        challenge: String,
    },
}

impl Command {
    /// The relay the command is for.
    pub fn relay(&self) -> &RelayUrl {
        match self {
            Command::FetchRelayInfo { relay }
            | Command::Connect { relay }
            | Command::Disconnect { relay }
            | Command::Subscribe { relay, .. }
            | Command::Unsubscribe { relay, .. }
            | Command::QueryLocalItems { relay, .. }
            | Command::NegOpen { relay, .. }
            | Command::NegMsg { relay, .. }
            | Command::NegClose { relay, .. }
            | Command::Authenticate { relay, .. } => relay,
        }
    }
}

/// An input to the engine. Every input is handed over with the current time.
#[derive(Clone, Debug)]
pub enum Input<'a> {
    /// Nothing happened; time passed (call at [`Engine::next_wakeup`](crate::Engine::next_wakeup)).
    Tick,
    /// An event the service's store holds (or, for `plan`, read) that may
    /// change the catalog: a repository announcement (kind 30617), a root
    /// event (1617, 1618, 1621) or a deletion request (kind 5). The engine
    /// routes it by kind; any other kind is counted (`events_of_wrong_kind`)
    /// and ignored. Feed only events the store holds (see "Catalog inputs
    /// from elsewhere" on [`Engine`](crate::Engine)): after a sync's save,
    /// only for [`StoreOutcome::Stored`]; a rejected event must not make its
    /// repo or root a target.
    CatalogEvent(&'a Event),
    /// The relay's NIP-11 document (after [`Command::FetchRelayInfo`]).
    RelayInfo {
        /// The relay.
        relay: &'a RelayUrl,
        /// What it publishes.
        info: RelayInfo,
    },
    /// The websocket is open.
    Connected {
        /// The relay.
        relay: &'a RelayUrl,
    },
    /// The connection attempt failed.
    ConnectFailed {
        /// The relay.
        relay: &'a RelayUrl,
        /// Why (for logs).
        reason: &'a str,
    },
    /// The websocket closed or broke.
    Disconnected {
        /// The relay.
        relay: &'a RelayUrl,
        /// Why (for logs).
        reason: &'a str,
    },
    /// An `EVENT` from the relay. When [`Engine::check_event`](crate::Engine::check_event)
    /// accepts it, feed it only after its id and signature verified; an
    /// unwanted one (unrequested or unmatched) is fed unverified, to be
    /// counted. See the host's event path on [`Engine`](crate::Engine).
    EventReceived {
        /// The relay.
        relay: &'a RelayUrl,
        /// Its subscription id.
        subscription: &'a SubscriptionId,
        /// The event.
        event: &'a Event,
    },
    /// An `EVENT` that failed verification or could not be parsed.
    EventInvalid {
        /// The relay.
        relay: &'a RelayUrl,
    },
    /// What the store did with an event from this relay that was fed as a
    /// verified [`Input::EventReceived`]: [`StoreOutcome::Rejected`] when
    /// the acceptance check refused it (it was not stored) or the save
    /// failed. Never for an unwanted or invalid event.
    EventStored {
        /// The relay.
        relay: &'a RelayUrl,
        /// The event's id.
        id: EventId,
        /// The event's `created_at` (seconds): a rejected event is kept as a
        /// NIP-77 item so that it is not fetched again.
        created_at: u64,
        /// The store's answer.
        outcome: StoreOutcome,
    },
    /// The answer to [`Command::QueryLocalItems`]: `None` when the store
    /// could not answer (the filter then falls back to paged REQ).
    LocalItems {
        /// The relay of the command.
        relay: &'a RelayUrl,
        /// The command's `request`.
        request: u64,
        /// `(id, created_at)` of every stored event matching the filter, in
        /// any order: what rust-nostr's `NostrDatabase::negentropy_items`
        /// returns, and what the I/O shell's store trait returns.
        items: Option<&'a [LocalItem]>,
    },
    /// `["NEG-MSG", subscription, message]`.
    NegMsg {
        /// The relay.
        relay: &'a RelayUrl,
        /// Its subscription id.
        subscription: &'a SubscriptionId,
        /// The negentropy message (hex).
        message: &'a str,
    },
    /// `["NEG-ERR", subscription, reason]`.
    NegErr {
        /// The relay.
        relay: &'a RelayUrl,
        /// Its subscription id.
        subscription: &'a SubscriptionId,
        /// The reason.
        message: &'a str,
    },
    /// `EOSE`.
    Eose {
        /// The relay.
        relay: &'a RelayUrl,
        /// Its subscription id.
        subscription: &'a SubscriptionId,
    },
    /// `CLOSED`.
    Closed {
        /// The relay.
        relay: &'a RelayUrl,
        /// Its subscription id.
        subscription: &'a SubscriptionId,
        /// The message, with its machine-readable prefix.
        message: &'a str,
    },
    /// `NOTICE`.
    Notice {
        /// The relay.
        relay: &'a RelayUrl,
        /// The free text.
        message: &'a str,
    },
    /// `AUTH` challenge.
    AuthChallenge {
        /// The relay.
        relay: &'a RelayUrl,
        /// The challenge.
        challenge: &'a str,
    },
    /// The relay's `OK` for our AUTH event.
    AuthResult {
        /// The relay.
        relay: &'a RelayUrl,
        /// Whether it accepted.
        accepted: bool,
    },
}

impl<'a> Input<'a> {
    /// The relay the input is about, if any (borrowed as long as the input's
    /// data, not just the input).
    pub fn relay(&self) -> Option<&'a RelayUrl> {
        match self {
            Input::Tick | Input::CatalogEvent(_) => None,
            Input::RelayInfo { relay, .. }
            | Input::Connected { relay }
            | Input::ConnectFailed { relay, .. }
            | Input::Disconnected { relay, .. }
            | Input::EventReceived { relay, .. }
            | Input::EventInvalid { relay }
            | Input::EventStored { relay, .. }
            | Input::LocalItems { relay, .. }
            | Input::NegMsg { relay, .. }
            | Input::NegErr { relay, .. }
            | Input::Eose { relay, .. }
            | Input::Closed { relay, .. }
            | Input::Notice { relay, .. }
            | Input::AuthChallenge { relay, .. }
            | Input::AuthResult { relay, .. } => Some(relay),
        }
    }
}
