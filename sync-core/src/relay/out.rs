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
use std::time::Duration;

use nostr::filter::Filter;
use nostr::message::SubscriptionId;

use super::stats::{RefusalReason, RelayStats};
use crate::command::{Command, SubscriptionMode};
use crate::types::Time;
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
    /// may be about them (a NIP-77 job's `{"ids"}` REQ too). NIP-77
    /// messages are judged by their own rules.
    fn awaits_answer(self) -> bool {
        matches!(self, Owner::Historic | Owner::Live | Owner::NegFetch)
    }
}

/// A REQ as sent: its id, its place in the sending order and when.
#[derive(Clone, Debug)]
struct Sent {
    sub: SubscriptionId,
    seq: u64,
    at: Time,
}

/// The relay's side of subscription ids: who owns each open one, which
/// REQs are unanswered, the fastest round trip seen, and the counter fresh
/// ids come from.
#[derive(Clone, Debug, Default)]
pub(crate) struct SubBook {
    owners: BTreeMap<SubscriptionId, Owner>,
    /// REQs sent and not yet answered, in sending order.
    unanswered: Vec<Sent>,
    /// The fastest first answer to a REQ on this connection.
    min_rtt: Option<Duration>,
    /// REQs sent on this connection.
    sent: u64,
    next_sub: u64,
}

impl SubBook {
    /// Who holds `sub`, if it is open.
    pub fn owner(&self, sub: &SubscriptionId) -> Option<Owner> {
        self.owners.get(sub).copied()
    }

    /// The REQ a refusal NOTICE arriving at `now` is most likely about: the
    /// most recent unanswered REQ that was sent at least the fastest round
    /// trip ago (one sent since cannot have reached the relay and been
    /// refused yet: the engine often sends more REQs, pages and retries,
    /// while a NOTICE is on the wire). None when every unanswered REQ is
    /// younger: the NOTICE is about one we closed before its answer.
    /// Before any round trip was measured, the most recent unanswered REQ.
    pub fn blame_candidate(&self, now: Time) -> Option<&SubscriptionId> {
        let rtt = self.min_rtt.unwrap_or(Duration::ZERO);
        self.unanswered
            .iter()
            .rev()
            .find(|s| s.at.plus(rtt) <= now)
            .map(|s| &s.sub)
    }

    /// The most recent REQ with no answer yet among those sent before the
    /// `seq`-th; a historic one rather than a live one (a live REQ whose
    /// filters all say `limit: 0` may never be answered: nostr-rs-relay
    /// sends no EOSE for it, so its silence proves nothing).
    pub fn latest_unanswered_before(&self, seq: u64) -> Option<&SubscriptionId> {
        let before = || self.unanswered.iter().rev().filter(|s| s.seq < seq);
        before()
            .find(|s| self.owner(&s.sub) != Some(Owner::Live))
            .or_else(|| before().next())
            .map(|s| &s.sub)
    }

    /// The relay answered `sub` (an event or EOSE) at `now`.
    pub fn answered(&mut self, sub: &SubscriptionId, now: Time) {
        if let Some(i) = self.unanswered.iter().position(|s| s.sub == *sub) {
            let rtt = now.since(self.unanswered.remove(i).at);
            self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        }
    }

    /// The place in the sending order of `sub`, sent and not yet answered.
    pub fn unanswered_seq(&self, sub: &SubscriptionId) -> Option<u64> {
        self.unanswered
            .iter()
            .find(|s| s.sub == *sub)
            .map(|s| s.seq)
    }

    /// The subscription is no longer held (the relay closed it, or its
    /// owner dropped it): not owned, not unanswered.
    pub fn forget(&mut self, sub: &SubscriptionId) {
        self.unanswered.retain(|s| s.sub != *sub);
        self.owners.remove(sub);
    }

    /// The connection ended: nothing is open any more.
    pub fn clear(&mut self) {
        self.owners.clear();
        self.unanswered.clear();
        self.min_rtt = None;
        self.sent = 0;
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
        now: Time,
    ) {
        if mode == SubscriptionMode::Historic {
            self.stats.reqs_sent += 1;
        }
        if owner.awaits_answer() {
            self.subs.sent += 1;
            self.subs.unanswered.retain(|s| s.sub != sub);
            self.subs.unanswered.push(Sent {
                sub: sub.clone(),
                seq: self.subs.sent,
                at: now,
            });
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
