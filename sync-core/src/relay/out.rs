//! What a relay sends, in one place: the commands for the host, the fresh
//! subscription ids they go under, which part owns each id open on the
//! relay, which REQs the relay has not answered yet (a NOTICE names no
//! subscription, so it is blamed on the latest of them), and the counts of
//! what was sent.
//!
//! Every part of a relay sends through a [`RelayOut`]; none pushes commands
//! itself, so the owner index and the unanswered list cannot drift from the
//! commands.

use std::collections::{BTreeMap, VecDeque};

use nostr::filter::Filter;
use nostr::message::SubscriptionId;

use super::stats::{RefusalReason, RelayStats};
use crate::command::{Command, SubscriptionMode};
use crate::url::RelayUrl;

/// Which part of a relay holds an open subscription id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Owner {
    /// A historic REQ (a page of packs).
    Historic,
    /// A live group.
    Live,
    /// A NIP-77 reconciliation (NEG-OPEN sent).
    NegOpen,
    /// A NIP-77 job's `{"ids":…}` REQ.
    NegFetch,
}

impl Owner {
    /// REQs the relay answers with EOSE or a first event; a NOTICE refusal
    /// may be about them. (NIP-77 messages and id fetches are judged by
    /// their own rules.)
    fn awaits_answer(self) -> bool {
        matches!(self, Owner::Historic | Owner::Live)
    }
}

/// The relay's side of subscription ids: who owns each open one, which
/// REQs are unanswered, and the counter fresh ids come from.
#[derive(Clone, Debug, Default)]
pub(crate) struct SubBook {
    owners: BTreeMap<SubscriptionId, Owner>,
    /// REQs sent and not yet answered, most recent last.
    unanswered: Vec<SubscriptionId>,
    next_sub: u64,
}

impl SubBook {
    /// Who holds `sub`, if it is open.
    pub fn owner(&self, sub: &SubscriptionId) -> Option<Owner> {
        self.owners.get(sub).copied()
    }

    /// The most recent REQ with no answer yet.
    pub fn latest_unanswered(&self) -> Option<&SubscriptionId> {
        self.unanswered.last()
    }

    /// The relay answered `sub` (an event or EOSE).
    pub fn answered(&mut self, sub: &SubscriptionId) {
        self.unanswered.retain(|s| s != sub);
    }

    /// The subscription is no longer held (the relay closed it, or its
    /// owner dropped it): not owned, not unanswered.
    pub fn forget(&mut self, sub: &SubscriptionId) {
        self.unanswered.retain(|s| s != sub);
        self.owners.remove(sub);
    }

    /// The connection ended: nothing is open any more.
    pub fn clear(&mut self) {
        self.owners.clear();
        self.unanswered.clear();
    }

    /// Every open id with its owner (debug checks).
    #[cfg(debug_assertions)]
    pub fn owners(&self) -> &BTreeMap<SubscriptionId, Owner> {
        &self.owners
    }
}

/// A borrowed view for sending to one relay.
pub(crate) struct RelayOut<'a> {
    url: &'a RelayUrl,
    out: &'a mut VecDeque<Command>,
    subs: &'a mut SubBook,
    /// The relay's counters: what a part sends or learns is counted where it happens.
    pub stats: &'a mut RelayStats,
}

impl<'a> RelayOut<'a> {
    pub fn new(
        url: &'a RelayUrl,
        out: &'a mut VecDeque<Command>,
        subs: &'a mut SubBook,
        stats: &'a mut RelayStats,
    ) -> Self {
        RelayOut {
            url,
            out,
            subs,
            stats,
        }
    }

    fn push(&mut self, command: Command) {
        self.out.push_back(command);
    }

    /// A subscription id never used on this relay, as `<prefix>-<n>`.
    pub fn fresh_id(&mut self, prefix: &str) -> SubscriptionId {
        self.subs.next_sub += 1;
        SubscriptionId::new(format!("{prefix}-{}", self.subs.next_sub))
    }

    /// Sends `["REQ", sub, filters…]` on behalf of `owner`.
    pub fn subscribe(
        &mut self,
        sub: SubscriptionId,
        filters: Vec<Filter>,
        mode: SubscriptionMode,
        owner: Owner,
    ) {
        if mode == SubscriptionMode::Historic {
            self.stats.reqs_sent += 1;
        }
        if owner.awaits_answer() {
            self.subs.unanswered.retain(|s| *s != sub);
            self.subs.unanswered.push(sub.clone());
        }
        self.subs.owners.insert(sub.clone(), owner);
        self.push(Command::Subscribe {
            relay: self.url.clone(),
            subscription: sub,
            filters,
            mode,
        });
    }

    /// Sends `["CLOSE", sub]`; the id is no longer held.
    pub fn unsubscribe(&mut self, sub: &SubscriptionId) {
        self.subs.forget(sub);
        self.push(Command::Unsubscribe {
            relay: self.url.clone(),
            subscription: sub.clone(),
        });
    }

    /// The subscription is no longer held, with nothing to send (the relay
    /// closed it itself).
    pub fn forget(&mut self, sub: &SubscriptionId) {
        self.subs.forget(sub);
    }

    /// Sends `["NEG-OPEN", sub, filter, message]`.
    pub fn neg_open(&mut self, sub: SubscriptionId, filter: Filter, message: String) {
        self.subs.owners.insert(sub.clone(), Owner::NegOpen);
        self.push(Command::NegOpen {
            relay: self.url.clone(),
            subscription: sub,
            filter,
            message,
        });
    }

    /// Sends `["NEG-MSG", sub, message]`.
    pub fn neg_msg(&mut self, sub: &SubscriptionId, message: String) {
        self.push(Command::NegMsg {
            relay: self.url.clone(),
            subscription: sub.clone(),
            message,
        });
    }

    /// Sends `["NEG-CLOSE", sub]`; the reconciliation is no longer held.
    pub fn neg_close(&mut self, sub: &SubscriptionId) {
        self.subs.forget(sub);
        self.push(Command::NegClose {
            relay: self.url.clone(),
            subscription: sub.clone(),
        });
    }

    /// Asks the host for the store's items matching `filter`.
    pub fn query_local_items(&mut self, request: u64, filter: Filter) {
        self.push(Command::QueryLocalItems {
            relay: self.url.clone(),
            request,
            filter,
        });
    }

    /// Asks the host for the relay's NIP-11 document.
    pub fn fetch_info(&mut self) {
        self.push(Command::FetchRelayInfo {
            relay: self.url.clone(),
        });
    }

    /// Asks the host to open the websocket.
    pub fn connect(&mut self) {
        self.push(Command::Connect {
            relay: self.url.clone(),
        });
    }

    /// Asks the host to close the websocket.
    pub fn disconnect(&mut self) {
        self.push(Command::Disconnect {
            relay: self.url.clone(),
        });
    }

    /// Asks the host to answer an AUTH challenge.
    pub fn authenticate(&mut self, challenge: String) {
        self.push(Command::Authenticate {
            relay: self.url.clone(),
            challenge,
        });
    }

    /// Counts a refusal.
    pub fn refused(&mut self, reason: RefusalReason) {
        self.stats.refused(reason);
    }
}
