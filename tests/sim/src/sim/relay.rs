//! A fake relay: what it holds, its open subscriptions, and how it answers a
//! REQ under its [`Profile`] (page caps, `limit` and `until` as real relays
//! read them, events sent once per filter, ignored duplicate ids,
//! subscription caps and rate limits in their real styles).

use std::collections::{BTreeMap, BTreeSet};

use grasp_sync_core::{RelayUrl, SubscriptionMode, Time};
use nostr::event::{Event, EventId};
use nostr::filter::{Filter, MatchEventOptions};
use nostr::message::SubscriptionId;

use super::profile::{DuplicateId, LimitScope, LimitZero, Profile, RefusalStyle, UntilStyle};
use super::{Msg, Violation, World};

/// What the relay did on its current connection that lets the engine wait:
/// the stall oracle only holds a relay to answering at once while it has
/// answered everything itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Episode {
    /// Requests it dropped without a word (a silent refusal, an ignored
    /// duplicate id, a historic REQ left without EOSE, a NEG-OPEN left
    /// unanswered): the engine may wait out a timeout, then back off.
    pub silent: u32,
    /// Rate limits it sent (`rate-limited:` not about concurrency, a
    /// rate-limit NOTICE): the engine may cool down.
    pub rate_limits: u32,
    /// Refusals the engine may answer with a backoff (`CLOSED` without a
    /// known prefix, AUTH).
    pub other: u32,
}

/// A fake relay.
#[derive(Clone, Debug)]
pub struct FakeRelay {
    /// Its URL.
    pub url: RelayUrl,
    /// Its behaviour.
    pub profile: Profile,
    /// What it holds.
    pub events: BTreeMap<EventId, Event>,
    /// When events published during the run arrived (seeded ones are absent:
    /// held from the start).
    pub arrived: BTreeMap<EventId, Time>,
    /// Reachable.
    pub up: bool,
    pub(super) connected: bool,
    pub(super) generation: u64,
    /// Open subscriptions, in opening order.
    pub(super) subs: Vec<(SubscriptionId, Vec<Filter>)>,
    pub(super) reqs_seen: u32,
    pub(super) authenticated: bool,
    /// Most subscriptions ever open at once.
    pub peak_subs: usize,
    /// Open NIP-77 reconciliations and their filters.
    pub(super) negs: BTreeMap<SubscriptionId, Filter>,
    /// NEG-OPENs received.
    pub neg_opens: u32,
    /// REQs received (all connections).
    pub reqs: u64,
    /// REQs it ignored silently for reusing an open id.
    pub ignored_duplicates: u64,
    /// REQs refused for its subscription cap (any style).
    pub cap_refusals: u64,
    /// REQs refused by its filter rate limit.
    pub filter_limit_refusals: u64,
    /// Connections refused by its connection rate limit.
    pub connect_refusals: u64,
    /// Subscriptions evicted to make room (the LRU style).
    pub evictions: u64,
    /// The current connection's record (see [`Episode`]).
    pub episode: Episode,
}

impl FakeRelay {
    /// A relay with a profile and no events.
    pub fn new(url: RelayUrl, profile: Profile) -> Self {
        FakeRelay {
            url,
            profile,
            events: BTreeMap::new(),
            arrived: BTreeMap::new(),
            up: true,
            connected: false,
            generation: 0,
            subs: Vec::new(),
            reqs_seen: 0,
            authenticated: false,
            peak_subs: 0,
            negs: BTreeMap::new(),
            neg_opens: 0,
            reqs: 0,
            ignored_duplicates: 0,
            cap_refusals: 0,
            filter_limit_refusals: 0,
            connect_refusals: 0,
            evictions: 0,
            episode: Episode::default(),
        }
    }

    /// Whether a websocket to it is open.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Subscriptions open on it now.
    pub fn open_subscriptions(&self) -> usize {
        self.subs.len()
    }

    /// Whether `filter` selects `event` as this relay reads it (`until`
    /// inclusive or exclusive).
    pub fn selects(&self, filter: &Filter, event: &Event) -> bool {
        filter.match_event(event, MatchEventOptions::new())
            && !(self.profile.until == UntilStyle::Exclusive
                && filter.until == Some(event.created_at))
    }

    fn newest_first(events: &mut [&Event]) {
        events.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    }

    /// The stored events a REQ gets, in the order sent (repeats included
    /// when the relay sends an event once per matching filter).
    pub fn query(&self, filters: &[Filter]) -> Vec<Event> {
        let p = &self.profile;
        if p.limit_scope == LimitScope::Shared {
            let mut matching: Vec<&Event> = self
                .events
                .values()
                .filter(|e| filters.iter().any(|f| self.selects(f, e)))
                .collect();
            Self::newest_first(&mut matching);
            let asked = filters
                .iter()
                .rev()
                .find_map(|f| f.limit.filter(|l| *l > 0));
            let mut n = asked.map_or(p.default_limit, |l| l.min(p.default_limit));
            if let Some(cap) = p.page_cap {
                n = n.min(cap);
            }
            return matching.into_iter().take(n).cloned().collect();
        }
        let mut sent: Vec<&Event> = Vec::new();
        for f in filters {
            let mut matching: Vec<&Event> = self
                .events
                .values()
                .filter(|e| self.selects(f, e))
                .collect();
            Self::newest_first(&mut matching);
            let n = p.effective_limit(f.limit, f.ids.is_some());
            sent.extend(matching.into_iter().take(n));
        }
        if !p.events_per_filter {
            let mut seen = BTreeSet::new();
            sent.retain(|e| seen.insert(e.id));
            Self::newest_first(&mut sent);
        }
        sent.into_iter().cloned().collect()
    }

    /// Ends the connection on the relay's side.
    pub(super) fn drop_connection(&mut self) {
        self.connected = false;
        self.subs.clear();
        self.negs.clear();
        self.generation += 1;
    }
}

impl World {
    pub(super) fn on_req(
        &mut self,
        relay: RelayUrl,
        sub: SubscriptionId,
        filters: Vec<Filter>,
        mode: SubscriptionMode,
    ) {
        let now = self.now;
        let budget_max = self
            .engine
            .relay_status(&relay)
            .map(|r| r.budget.max_subscriptions as usize);
        let Some(r) = self.relays.get_mut(&relay) else {
            return;
        };
        if !r.connected {
            return;
        }
        let (g, lat) = (r.generation, r.profile.latency);
        let at = now.plus(lat);
        r.reqs_seen += 1;
        r.reqs += 1;
        let closed = |text: &str| Msg::Closed(sub.clone(), text.to_owned());
        if r.profile.auth && !r.authenticated {
            r.subs.retain(|(s, _)| *s != sub);
            r.episode.other += 1;
            let msg = closed("auth-required: sign in first");
            self.deliver_at(at, &relay, g, msg);
            return;
        }
        if r.profile.max_filters.is_some_and(|m| filters.len() > m) {
            r.subs.retain(|(s, _)| *s != sub);
            let msg = closed("error: too many filters");
            self.deliver_at(at, &relay, g, msg);
            return;
        }
        if r.reqs_seen <= r.profile.rate_limit_first {
            r.subs.retain(|(s, _)| *s != sub);
            r.episode.rate_limits += 1;
            let msg = closed("rate-limited: slow down");
            self.deliver_at(at, &relay, g, msg);
            return;
        }
        let open = r.subs.iter().find(|(s, _)| *s == sub).map(|(_, f)| f);
        let ignored = match (open, r.profile.duplicate_id) {
            (None, _) | (_, DuplicateId::Replace) => false,
            (Some(f), DuplicateId::IgnoreIdentical) => *f == filters,
            (Some(_), DuplicateId::Ignore) => true,
        };
        if ignored {
            r.ignored_duplicates += 1;
            r.episode.silent += 1;
            return;
        }
        // khatru: each filter that asks for stored events takes a use; the
        // first one refused fails the whole REQ.
        if let Some(bucket) = r.profile.filter_limit.as_mut() {
            let asking = filters.iter().filter(|f| f.limit != Some(0)).count();
            if (0..asking).any(|_| !bucket.take(now)) {
                r.subs.retain(|(s, _)| *s != sub);
                r.filter_limit_refusals += 1;
                r.episode.rate_limits += 1;
                let msg = closed(r.profile.filter_limit_message);
                self.deliver_at(at, &relay, g, msg);
                return;
            }
        }
        let replacing = open.is_some();
        if !replacing && r.subs.len() >= r.profile.max_subs {
            r.cap_refusals += 1;
            let text = r.profile.refusal_text();
            match r.profile.refusal {
                // A cap on concurrent subscriptions, whatever the words:
                // never a reason to cool down.
                RefusalStyle::Closed => {
                    self.deliver_at(at, &relay, g, Msg::Closed(sub, text.into()));
                    return;
                }
                RefusalStyle::Notice => {
                    self.deliver_at(at, &relay, g, Msg::Notice(text.into()));
                    return;
                }
                RefusalStyle::Silence => {
                    r.episode.silent += 1;
                    return;
                }
                RefusalStyle::Drop => {
                    r.drop_connection();
                    let g = r.generation;
                    self.deliver_at(now, &relay, g, Msg::Disconnected);
                    return;
                }
                RefusalStyle::Evict => {
                    r.subs.remove(0);
                    r.evictions += 1;
                }
            }
        }
        r.subs.retain(|(s, _)| *s != sub);
        r.subs.push((sub.clone(), filters.clone()));
        r.peak_subs = r.peak_subs.max(r.subs.len());
        let published = (r.profile.nip11 && r.profile.publish_limits).then_some(r.profile.max_subs);
        let open = r.subs.len();
        let events = r.query(&filters);
        let only_limit_zero = filters.iter().all(|f| f.limit == Some(0));
        let eose = !(only_limit_zero && r.profile.limit_zero == LimitZero::NoEose);
        if !eose && mode == SubscriptionMode::Historic {
            r.episode.silent += 1;
        }
        // rust-nostr's LocalRelay closes an `{"ids"}` REQ that got every id.
        let ids_asked: Option<usize> = filters
            .iter()
            .map(|f| f.ids.as_ref().map(|i| i.len()))
            .sum();
        let complete_ids = r.profile.closes_complete_ids && ids_asked == Some(events.len());
        if complete_ids {
            r.subs.retain(|(s, _)| *s != sub);
        }
        if published.is_some_and(|p| open > p) || budget_max.is_some_and(|b| open > b) {
            self.violations.push(Violation::OverBudget(format!(
                "{relay}: {open} open (published {published:?}, budget {budget_max:?})"
            )));
        }
        self.stats.events_sent += events.len() as u64;
        for e in events {
            self.deliver_at(at, &relay, g, Msg::Event(sub.clone(), Box::new(e)));
        }
        if eose {
            self.deliver_at(at, &relay, g, Msg::Eose(sub.clone()));
        }
        if complete_ids {
            self.deliver_at(at, &relay, g, Msg::Closed(sub, String::new()));
        }
    }
}
