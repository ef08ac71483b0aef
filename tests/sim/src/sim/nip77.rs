//! NIP-77 on the simulated relays: how a fake relay treats NEG-OPEN (answer
//! with the `negentropy` crate as responder, NEG-ERR, a refusal NOTICE in
//! its real words, silence, or a dropped connection; strfry's NEG-ERR over
//! too many results), and the store's side (our items).

use std::collections::BTreeMap;

use grasp_sync_core::nip77;
use grasp_sync_core::{LocalItem, RelayUrl};
use nostr::event::{Event, EventId};
use nostr::filter::{Filter, MatchEventOptions};
use nostr::message::SubscriptionId;

use super::{Msg, World};

/// How a fake relay treats NEG-OPEN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nip77Behaviour {
    /// An old relay that does not know the verb: `NOTICE "ERROR: bad msg:
    /// unknown cmd"` (strfry before NIP-77).
    Unknown,
    /// Reconciles (the negentropy crate as responder).
    Answer,
    /// `NEG-ERR "blocked: …"`.
    Refuse,
    /// No answer at all.
    Silent,
    /// Drops the connection.
    Drop,
    /// A NOTICE with these words (nostr-rs-relay: "could not parse
    /// command"; khatru without negentropy: "failed to parse envelope:
    /// unknown label"; @nostr-relay/core: "invalid: unknown message type").
    Notice(&'static str),
}

/// `(id, created_at)` of every event in `events` matching `filter`.
pub(super) fn items(events: &BTreeMap<EventId, Event>, filter: &Filter) -> Vec<LocalItem> {
    events
        .values()
        .filter(|e| filter.match_event(e, MatchEventOptions::new()))
        .map(|e| (e.id, e.created_at))
        .collect()
}

impl World {
    pub(super) fn on_neg_open(
        &mut self,
        relay: RelayUrl,
        sub: SubscriptionId,
        filter: Filter,
        message: String,
    ) {
        let now = self.now;
        let Some(r) = self.relays.get_mut(&relay) else {
            return;
        };
        if !r.connected {
            return;
        }
        r.neg_opens += 1;
        let (g, at) = (r.generation, now.plus(r.profile.latency));
        match r.profile.nip77 {
            Nip77Behaviour::Unknown => self.deliver_at(
                at,
                &relay,
                g,
                Msg::Notice("ERROR: bad msg: unknown cmd".into()),
            ),
            Nip77Behaviour::Refuse => self.deliver_at(
                at,
                &relay,
                g,
                Msg::NegErr(sub, "blocked: not for you".into()),
            ),
            Nip77Behaviour::Notice(text) => {
                self.deliver_at(at, &relay, g, Msg::Notice(text.into()))
            }
            Nip77Behaviour::Silent => r.episode.silent += 1,
            Nip77Behaviour::Drop => {
                r.drop_connection();
                let g = r.generation;
                self.deliver_at(now, &relay, g, Msg::Disconnected);
            }
            Nip77Behaviour::Answer
                if r.profile
                    .neg_max_items
                    .is_some_and(|max| items(&r.events, &filter).len() > max) =>
            {
                self.deliver_at(
                    at,
                    &relay,
                    g,
                    Msg::NegErr(sub, "blocked: too many query results".into()),
                )
            }
            Nip77Behaviour::Answer => {
                r.negs.insert(sub.clone(), filter);
                self.answer(relay, sub, message);
            }
        }
    }

    pub(super) fn on_neg_msg(&mut self, relay: RelayUrl, sub: SubscriptionId, message: String) {
        let known = self
            .relays
            .get(&relay)
            .is_some_and(|r| r.connected && r.negs.contains_key(&sub));
        if known {
            self.answer(relay, sub, message);
        }
    }

    fn answer(&mut self, relay: RelayUrl, sub: SubscriptionId, message: String) {
        let now = self.now;
        let Some(r) = self.relays.get(&relay) else {
            return;
        };
        let Some(filter) = r.negs.get(&sub) else {
            return;
        };
        let (g, at) = (r.generation, now.plus(r.profile.latency));
        let msg = match nip77::respond(items(&r.events, filter), &message) {
            Ok(answer) => Msg::Negentropy(sub, answer),
            Err(e) => Msg::NegErr(sub, format!("error: {e}")),
        };
        self.deliver_at(at, &relay, g, msg);
    }
}
