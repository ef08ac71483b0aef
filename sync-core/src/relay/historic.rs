//! Historic work of one relay by paged REQ (spec section 3): the queue of
//! packs, the REQs on the wire and their pages, coalescing of packs into
//! REQs within the budget, timeouts and retries with backoff, the daily
//! re-sync schedule and the poll of targets no live subscription covers.
//!
//! Packs bound for NIP-77 leave through [`Next::Reconcile`]; packs coming
//! back from NIP-77 (to be paged) arrive through [`Historic::push_front`].
//! Targets held by packs are counted by the relay's target book, so every
//! call that drops or merges packs returns what it dropped.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use nostr::event::Event;
use nostr::filter::Filter;
use nostr::message::SubscriptionId;

use super::out::{Owner, RelayOut};
use super::pack::Pack;
use super::timers::{deadline, soonest, Deadline, RelayTimer};
use crate::backoff::exponential;
use crate::command::SubscriptionMode;
use crate::config::Timing;
use crate::filters::{build_filter, matches};
use crate::info::Budget;
use crate::paging::{PageBounds, PageEvidence};
use crate::rng::Rng;
use crate::types::{Layer, TargetKey, Time};

/// A historic REQ on the wire.
#[derive(Clone, Debug)]
struct HistoricReq {
    packs: Vec<Pack>,
    /// Filter `i` of the REQ is `packs[sent[i].0].filters[sent[i].1]`.
    sent: Vec<(usize, usize)>,
    last_activity: Time,
}

impl HistoricReq {
    /// Indexes (into `sent`) of the page's filters that `event` matches.
    /// Matching works on the packs' target sets: the engine keeps no copy of
    /// the filters it sent.
    fn matching<'a>(&'a self, event: &'a Event) -> impl Iterator<Item = usize> + 'a {
        self.sent
            .iter()
            .enumerate()
            .filter_map(move |(i, (pi, fi))| {
                let p = self.packs.get(*pi)?;
                let (kind, _) = p.filters.get(*fi)?;
                matches(*kind, &p.targets, event).then_some(i)
            })
    }

    /// Builds the next page's filters: the REQ's unfinished filters, at most
    /// `max_filters_per_req` of them (a pack wider than that is worked
    /// through in windows, on the same subscription).
    fn fill_page(&mut self, budget: &Budget) -> Vec<Filter> {
        self.sent.clear();
        let max = (budget.max_filters_per_req as usize).max(1);
        let mut filters = Vec::new();
        for (pi, p) in self.packs.iter_mut().enumerate() {
            if p.targets.is_empty() {
                continue;
            }
            for (fi, (kind, paging)) in p.filters.iter_mut().enumerate() {
                if paging.is_done() || filters.len() >= max {
                    continue;
                }
                paging.start_page();
                let base = build_filter(*kind, p.targets.iter());
                filters.push(paging.apply(base, budget.page_limit));
                self.sent.push((pi, fi));
            }
        }
        filters
    }
}

/// What [`Historic::next`] did.
#[derive(Debug)]
pub(crate) enum Next {
    /// Nothing is ready.
    Idle,
    /// A REQ went out.
    Sent,
    /// A pack to reconcile with NIP-77 instead.
    Reconcile(Pack),
}

/// What an EOSE ended: packs whose every filter is done (to confirm when
/// proven), and what the page showed of the relay's page sizes.
#[derive(Debug)]
pub(crate) struct Eose {
    pub finished: Vec<Pack>,
    pub shown: PageEvidence,
}

/// What the relay's target book must hear after [`Historic::next`]:
/// `released` targets were held by two packs that became one.
#[derive(Debug)]
pub(crate) struct Taken {
    pub next: Next,
    pub released: Vec<TargetKey>,
}

/// The historic work of one relay.
#[derive(Clone, Debug, Default)]
pub(crate) struct Historic {
    queue: VecDeque<Pack>,
    active: BTreeMap<SubscriptionId, HistoricReq>,
    next_resync: Option<Time>,
    /// When targets the live budget cannot cover are next polled with a
    /// catch-up REQ, and when they last were.
    poll_at: Option<Time>,
    polled_at: Option<Time>,
}

impl Historic {
    // ----- queueing ----------------------------------------------------------

    /// Queues one new target (the caller counted it pending): into the
    /// newest batching pack of its layer with room (`cap` targets), or a new
    /// one. A batch goes out once targets stop joining it for a moment (or
    /// after the batch delay), so that targets found together (the roots of
    /// one page) share one REQ and the live update goes out first.
    pub fn enqueue_new(&mut self, target: TargetKey, now: Time, cap: usize, t: &Timing) {
        if let Some(p) = self.queue.iter_mut().rev().find(|p| {
            p.layer == target.layer()
                && p.since.is_none()
                && p.is_fresh()
                && p.attempts == 0
                && !p.alone
        }) {
            if p.targets.len() < cap {
                p.targets.insert(target);
                if let Some(started) = p.batch_started {
                    p.ready_at = p.ready_at.max(t.batch_until(started, now));
                }
                return;
            }
        }
        let mut p = Pack::new(target.layer(), None, t.batch_until(now, now));
        p.batch_started = Some(now);
        p.targets.insert(target);
        self.queue.push_back(p);
    }

    /// Queues packs for `targets` (sorted; the caller counted them pending),
    /// `since` bounding them below, each pack as large as `values` allows.
    pub fn enqueue_all(
        &mut self,
        targets: Vec<TargetKey>,
        since: Option<u64>,
        now: Time,
        values: u32,
    ) {
        let mut by_layer: BTreeMap<Layer, Vec<TargetKey>> = BTreeMap::new();
        for t in targets {
            by_layer.entry(t.layer()).or_default().push(t);
        }
        for (layer, ts) in by_layer {
            for chunk in ts.chunks(layer.pack_capacity(values)) {
                let mut p = Pack::new(layer, since, now);
                p.targets.extend(chunk.iter().cloned());
                self.queue.push_back(p);
            }
        }
    }

    /// Whether the repo layer's pass is under way: a repo pack on the wire,
    /// or queued without a failure yet (one backing off after failures does
    /// not hold the roots up).
    pub fn repo_pass_running(&self) -> bool {
        self.active
            .values()
            .any(|r| r.packs.iter().any(|p| p.layer == Layer::Repo))
            || self
                .queue
                .iter()
                .any(|p| p.layer == Layer::Repo && p.attempts == 0)
    }

    /// Puts a pack first in the queue, ready at `ready_at`.
    pub fn push_front(&mut self, mut pack: Pack, ready_at: Time) {
        pack.ready_at = ready_at;
        self.queue.push_front(pack);
    }

    /// Drops `target` from every pack; REQs left with no target are closed.
    pub fn remove_target(&mut self, target: &TargetKey, out: &mut RelayOut<'_>) {
        for p in &mut self.queue {
            p.targets.remove(target);
        }
        self.queue.retain(|p| !p.targets.is_empty());
        let mut emptied = Vec::new();
        for (sub, req) in &mut self.active {
            for p in &mut req.packs {
                p.targets.remove(target);
            }
            if req.packs.iter().all(|p| p.targets.is_empty()) {
                emptied.push(sub.clone());
            }
        }
        for sub in emptied {
            self.active.remove(&sub);
            out.unsubscribe(&sub);
        }
    }

    // ----- sending -------------------------------------------------------------

    /// Takes the first ready pack: coalesces fresh packs of the same shape
    /// into it (values per filter), then either hands it over for NIP-77
    /// (`reconcile`) or sends it, with more ready packs, as one REQ within
    /// the filters-per-REQ budget. While a probe finds out whether the relay
    /// speaks NIP-77 (`probing`), only packs already bound for paged REQ go.
    ///
    /// Packs of roots newly found wait while the repo layer's pass is under
    /// way (`hold_roots`): the roots its pages bring then go out in full
    /// packs, and the relay answers one kind of query at a time. (Catch-ups
    /// and daily passes queue full packs already and do not wait.)
    pub fn next(
        &mut self,
        now: Time,
        budget: &Budget,
        (probing, reconcile, hold_roots): (bool, bool, bool),
        out: &mut RelayOut<'_>,
    ) -> Taken {
        let mut released = Vec::new();
        self.queue.retain(|p| !p.targets.is_empty());
        let held = |p: &Pack| hold_roots && p.layer == Layer::Root && p.batch_started.is_some();
        let Some(first) = self
            .queue
            .iter()
            .position(|p| p.ready_at <= now && (p.paged || !probing) && !held(p))
        else {
            return Taken {
                next: Next::Idle,
                released,
            };
        };
        let max_filters = budget.max_filters_per_req as usize;
        let Some(mut head) = self.queue.remove(first) else {
            return Taken {
                next: Next::Idle,
                released,
            };
        };
        if head.is_fresh() && !head.alone {
            let cap = head.layer.pack_capacity(budget.max_values_per_filter);
            let mut i = 0;
            while i < self.queue.len() && head.targets.len() < cap {
                let p = &self.queue[i];
                if p.ready_at <= now
                    && p.layer == head.layer
                    && p.since == head.since
                    && p.is_fresh()
                    && !p.alone
                    && p.paged == head.paged
                    && head.targets.len() + p.targets.len() <= cap
                {
                    if let Some(p) = self.queue.remove(i) {
                        for t in p.targets {
                            // Held by both packs: one pack fewer holds it now.
                            if head.targets.contains(&t) {
                                released.push(t);
                            } else {
                                head.targets.insert(t);
                            }
                        }
                        head.attempts = head.attempts.max(p.attempts);
                    }
                } else {
                    i += 1;
                }
            }
        }
        if !head.paged && reconcile {
            return Taken {
                next: Next::Reconcile(head),
                released,
            };
        }
        // A pack singled out after a refusal travels alone; others share the REQ.
        let alone = head.alone;
        let mut filters = head.open_filters();
        let mut packs = vec![head];
        let mut i = 0;
        while !alone && i < self.queue.len() && filters < max_filters {
            let p = &self.queue[i];
            // A pack bound for NIP-77 is not paged along.
            if p.ready_at <= now
                && !p.alone
                && !held(p)
                && (p.paged || !reconcile)
                && filters + p.open_filters() <= max_filters
            {
                filters += p.open_filters();
                if let Some(p) = self.queue.remove(i) {
                    packs.push(p);
                }
            } else {
                i += 1;
            }
        }
        let sub = out.fresh_id("hist");
        let req = HistoricReq {
            packs,
            sent: Vec::new(),
            last_activity: now,
        };
        self.send(sub, req, budget, now, out);
        Taken {
            next: Next::Sent,
            released,
        }
    }

    /// Sends the next page of `req` under `sub`.
    fn send(
        &mut self,
        sub: SubscriptionId,
        mut req: HistoricReq,
        budget: &Budget,
        now: Time,
        out: &mut RelayOut<'_>,
    ) {
        let filters = req.fill_page(budget);
        req.last_activity = now;
        out.subscribe(
            sub.clone(),
            filters,
            SubscriptionMode::Historic,
            Owner::Historic,
            now,
        );
        self.active.insert(sub, req);
    }

    // ----- what the relay says -------------------------------------------------

    /// Whether an event on `sub` matches the page (`None`: not a historic REQ).
    pub fn check_event(&self, sub: &SubscriptionId, event: &Event) -> Option<bool> {
        self.active
            .get(sub)
            .map(|req| req.matching(event).next().is_some())
    }

    /// An event on `sub`: when it matches, every filter it matches counts it
    /// for its page. `None`: not a historic REQ; `Some(matched)` otherwise.
    pub fn on_event(&mut self, sub: &SubscriptionId, event: &Event, now: Time) -> Option<bool> {
        let req = self.active.get_mut(sub)?;
        // Matched once, for both the verdict and paging.
        let hits: Vec<(usize, usize)> = req
            .matching(event)
            .filter_map(|i| req.sent.get(i).copied())
            .collect();
        if hits.is_empty() {
            return Some(false);
        }
        req.last_activity = now;
        let at = event.created_at.as_secs();
        let shared = hits.len() > 1;
        for (pi, fi) in hits {
            if let Some((_, paging)) = req.packs.get_mut(pi).and_then(|p| p.filters.get_mut(fi)) {
                if shared {
                    paging.observe_shared(event.id, at);
                } else {
                    paging.observe(event.id, at);
                }
            }
        }
        Some(true)
    }

    /// EOSE on `sub`: each filter of the page decides its next page. Packs
    /// whose every filter is done are returned (to be confirmed when
    /// proven); the rest go on with the next page under a fresh id, or wait
    /// in the queue when `cooling` says until when (a cool-down, or no slot
    /// for the next page). `None`: not a historic REQ.
    pub fn on_eose(
        &mut self,
        sub: &SubscriptionId,
        now: Time,
        budget: &Budget,
        bounds: &PageBounds,
        cooling: Option<Time>,
        out: &mut RelayOut<'_>,
    ) -> Option<Eose> {
        let mut req = self.active.remove(sub)?;
        let mut shown = PageEvidence::default();
        for (pi, fi) in req.sent.clone() {
            if let Some((_, paging)) = req.packs.get_mut(pi).and_then(|p| p.filters.get_mut(fi)) {
                paging.end_page_within(bounds);
                shown.merge(paging.shown());
            }
        }
        let mut finished = Vec::new();
        let mut remaining = Vec::new();
        for p in req.packs {
            if p.targets.is_empty() {
                continue;
            }
            if p.is_done() {
                finished.push(p);
            } else {
                remaining.push(p);
            }
        }
        // Some relays keep a subscription open after EOSE and ignore a REQ
        // on an open id (nostr-rs-relay): close it, and send the next page
        // under a fresh id, so no late message of this page is taken for it.
        out.unsubscribe(sub);
        if remaining.is_empty() || cooling.is_some() {
            // While cooling down, the rest of the pass waits (pagination kept).
            for p in remaining {
                self.push_front(p, cooling.unwrap_or(now));
            }
        } else {
            req.packs = remaining;
            let next = out.fresh_id("hist");
            self.send(next, req, budget, now, out);
        }
        Some(Eose { finished, shown })
    }

    /// The filters of the page on the wire under `sub`.
    pub fn subscription_filters(
        &self,
        sub: &SubscriptionId,
        budget: &Budget,
    ) -> Option<Vec<Filter>> {
        let req = self.active.get(sub)?;
        Some(
            req.sent
                .iter()
                .filter_map(|(pi, fi)| {
                    let p = req.packs.get(*pi)?;
                    let (kind, paging) = p.filters.get(*fi)?;
                    Some(paging.apply(build_filter(*kind, p.targets.iter()), budget.page_limit))
                })
                .collect(),
        )
    }

    // ----- failures ------------------------------------------------------------

    /// REQs silent (no event, no EOSE) for the historic timeout at `now`.
    pub fn timed_out(&self, now: Time, t: &Timing) -> Vec<SubscriptionId> {
        self.active
            .iter()
            .filter(|(_, r)| now.since(r.last_activity) >= t.historic_timeout)
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Takes a REQ off the wire and queues its packs again with backoff;
    /// packs out of attempts are returned, to be given up.
    pub fn retry_later(
        &mut self,
        sub: &SubscriptionId,
        now: Time,
        t: &Timing,
        rng: &mut Rng,
    ) -> Vec<Pack> {
        let mut given_up = Vec::new();
        let Some(req) = self.active.remove(sub) else {
            return given_up;
        };
        // Packs emptied by removed targets are dropped, never sent bare.
        for mut p in req.packs.into_iter().filter(|p| !p.targets.is_empty()) {
            p.attempts += 1;
            if p.attempts >= t.historic_max_attempts {
                given_up.push(p);
                continue;
            }
            let delay = exponential(t.backoff_initial, t.backoff_max, p.attempts - 1);
            p.ready_at = now.plus(rng.jitter(delay, t.backoff_jitter));
            self.queue.push_back(p);
        }
        given_up
    }

    /// Takes a REQ off the wire and queues its packs first, ready at
    /// `ready_at`, pagination kept.
    pub fn requeue(&mut self, sub: &SubscriptionId, ready_at: Time) {
        if let Some(req) = self.active.remove(sub) {
            for p in req.packs.into_iter().filter(|p| !p.targets.is_empty()) {
                self.push_front(p, ready_at);
            }
        }
    }

    /// Takes a REQ off the wire for good: its packs, to be given up.
    pub fn take(&mut self, sub: &SubscriptionId) -> Option<Vec<Pack>> {
        self.active.remove(sub).map(|req| req.packs)
    }

    /// An `error:`-style refusal of a REQ: first each pack goes again in a
    /// REQ of its own (to find which one the relay objects to); a pack
    /// refused alone is halved and retried once; refused after that, it is
    /// returned, to be given up. `None`: not a historic REQ.
    pub fn split_refused(&mut self, sub: &SubscriptionId, now: Time) -> Option<Vec<Pack>> {
        let req = self.active.remove(sub)?;
        let mut given_up = Vec::new();
        let packs: Vec<Pack> = req
            .packs
            .into_iter()
            .filter(|p| !p.targets.is_empty())
            .collect();
        let many = packs.len() > 1;
        for mut p in packs {
            if many {
                p.alone = true;
                self.push_front(p, now);
            } else if p.split {
                given_up.push(p);
            } else if p.targets.len() < 2 {
                // Nothing to halve: one more try, alone.
                p.alone = true;
                p.split = true;
                self.push_front(p, now);
            } else {
                let mut a = p.clone();
                let mut b = p;
                let half = a.targets.len() / 2;
                let rest: BTreeSet<TargetKey> = a.targets.iter().skip(half).cloned().collect();
                a.targets.retain(|t| !rest.contains(t));
                b.targets = rest;
                for x in [&mut a, &mut b] {
                    x.alone = true;
                    x.split = true;
                    x.restart();
                }
                self.push_front(b, now);
                self.push_front(a, now);
            }
        }
        Some(given_up)
    }

    /// The REQ to close first when the budget shrinks under the open ones.
    pub fn last_active(&self) -> Option<SubscriptionId> {
        self.active.keys().next_back().cloned()
    }

    /// Empties the queue (AUTH failed: what waited is given up).
    pub fn drain_queue(&mut self) -> Vec<Pack> {
        self.queue.drain(..).collect()
    }

    /// The connection ended: historic work on the wire or queued is gone
    /// (the caller forgets it as pending).
    pub fn end_session(&mut self) {
        self.queue.clear();
        self.active.clear();
    }

    // ----- passes --------------------------------------------------------------

    /// The daily pass supersedes catch-up work (bounded by `since`): queued
    /// catch-up packs are dropped and their targets returned (one pack fewer
    /// holds each).
    pub fn supersede_catch_up(&mut self) -> Vec<TargetKey> {
        let mut superseded = Vec::new();
        self.queue.retain(|p| {
            if p.since.is_some() {
                superseded.extend(p.targets.iter().cloned());
                false
            } else {
                true
            }
        });
        superseded
    }

    /// Targets held by a pack not sent yet. When it goes out it asks for
    /// everything from its `since` (or ever) to then, so a poll need not
    /// ask for them again.
    pub fn queued_targets(&self) -> impl Iterator<Item = &TargetKey> {
        self.queue.iter().flat_map(|p| p.targets.iter())
    }

    /// Targets in a full (unbounded) pass, queued or on the wire.
    pub fn full_pass_targets(&self) -> impl Iterator<Item = &TargetKey> {
        self.packs()
            .filter(|p| p.since.is_none())
            .flat_map(|p| p.targets.iter())
    }

    /// The daily re-sync, when one is not scheduled yet: 23–25 h from `now`.
    pub fn schedule_resync(&mut self, now: Time, t: &Timing, rng: &mut Rng) {
        if self.next_resync.is_none() {
            self.reschedule_resync(now, t, rng);
        }
    }

    /// The next daily re-sync: 23–25 h from `now`.
    pub fn reschedule_resync(&mut self, now: Time, t: &Timing, rng: &mut Rng) {
        self.next_resync = Some(now.plus(rng.between(t.resync_min, t.resync_max)));
    }

    pub fn resync_due(&self, now: Time) -> bool {
        self.next_resync.is_some_and(|r| r <= now)
    }

    pub fn next_resync(&self) -> Option<Time> {
        self.next_resync
    }

    pub fn restore_resync(&mut self, next_resync: Option<Time>) {
        self.next_resync = next_resync;
    }

    /// A poll of uncovered targets is due.
    pub fn poll_due(&self, now: Time) -> bool {
        self.poll_at.is_some_and(|p| p <= now)
    }

    /// A poll starts at `now`: returns its `since` (the previous poll minus
    /// the safety margin) and schedules the next.
    pub fn start_poll(&mut self, now: Time, t: &Timing) -> u64 {
        let since = self
            .polled_at
            .unwrap_or(now)
            .minus(t.catch_up_margin)
            .as_secs();
        self.polled_at = Some(now);
        self.poll_at = Some(now.plus(t.uncovered_poll));
        since
    }

    /// The poll due now waits: the previous one is still being served (a
    /// relay that takes longer to serve a poll than the poll interval).
    /// It is tried again an interval later; its `since` still starts at the
    /// last poll that ran, so nothing between is skipped.
    pub fn defer_poll(&mut self, now: Time, t: &Timing) {
        self.poll_at = Some(now.plus(t.uncovered_poll));
    }

    /// Whether catch-up work (packs bounded by `since`) is queued or on the
    /// wire.
    pub fn catching_up(&self) -> bool {
        self.packs().any(|p| p.since.is_some())
    }

    /// Whether some targets have no live subscription: they are polled
    /// every `uncovered_poll` while so.
    pub fn set_uncovered(&mut self, uncovered: bool, now: Time, t: &Timing) {
        if !uncovered {
            self.poll_at = None;
        } else if self.poll_at.is_none() {
            self.poll_at = Some(now.plus(t.uncovered_poll));
            self.polled_at.get_or_insert(now);
        }
    }

    /// A new connection: polls start over.
    pub fn reset_poll(&mut self) {
        self.poll_at = None;
        self.polled_at = None;
    }

    // ----- views ---------------------------------------------------------------

    /// REQs on the wire.
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Packs waiting.
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// Nothing queued and nothing on the wire.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.active.is_empty()
    }

    /// Every pack, queued or on the wire.
    pub fn packs(&self) -> impl Iterator<Item = &Pack> {
        self.queue
            .iter()
            .chain(self.active.values().flat_map(|r| r.packs.iter()))
    }

    /// Open historic subscription ids (debug checks).
    #[cfg(debug_assertions)]
    pub fn subs(&self) -> impl Iterator<Item = &SubscriptionId> {
        self.active.keys()
    }

    /// Deadlines: REQ timeouts, the daily re-sync, the poll, and — when the
    /// relay may send (`may_send`) — queued packs becoming ready.
    pub fn poll_timeout(&self, now: Time, t: &Timing, may_send: bool) -> Option<Deadline> {
        let timeout = deadline(
            self.active
                .values()
                .map(|r| r.last_activity.plus(t.historic_timeout))
                .min(),
            RelayTimer::HistoricTimeout,
        );
        let ready = if may_send {
            deadline(
                self.queue
                    .iter()
                    .map(|p| p.ready_at)
                    .filter(|r| *r > now)
                    .min(),
                RelayTimer::PackReady,
            )
        } else {
            None
        };
        let d = soonest(timeout, deadline(self.next_resync, RelayTimer::Resync));
        let d = soonest(d, deadline(self.poll_at, RelayTimer::Poll));
        soonest(d, ready)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use nostr::event::EventId;

    use super::*;
    use crate::command::Command;
    use crate::relay::out::SubBook;
    use crate::relay::stats::RelayStats;
    use crate::url::RelayUrl;

    fn root(n: u32) -> TargetKey {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_be_bytes());
        TargetKey::Root(EventId::from_byte_array(b))
    }

    struct Wire {
        url: RelayUrl,
        out: VecDeque<Command>,
        subs: SubBook,
        stats: RelayStats,
    }

    impl Wire {
        fn new() -> Self {
            Wire {
                url: RelayUrl::parse("wss://a.example").unwrap(),
                out: VecDeque::new(),
                subs: SubBook::default(),
                stats: RelayStats::default(),
            }
        }

        fn out(&mut self) -> RelayOut<'_> {
            RelayOut::new(&self.url, &mut self.out, &mut self.subs, &mut self.stats)
        }

        fn reqs(&self) -> Vec<Vec<Filter>> {
            self.out
                .iter()
                .filter_map(|c| match c {
                    Command::Subscribe { filters, .. } => Some(filters.clone()),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn fresh_packs_of_one_layer_coalesce_up_to_the_value_cap() {
        let budget = Budget {
            max_values_per_filter: 5,
            ..Budget::default()
        };
        let t0 = Time::from_secs(100);
        let mut h = Historic::default();
        // Twelve roots found at different moments: twelve one-target packs
        // (enqueue_new merges only into the newest pack, here kept apart by
        // a cap of 1), ready together.
        let instant = Timing {
            batch_delay: Duration::ZERO,
            ..Timing::default()
        };
        for n in 0..12 {
            h.enqueue_new(root(n), t0, 1, &instant);
        }
        assert_eq!(h.queued_len(), 12);
        let mut w = Wire::new();
        let taken = h.next(t0, &budget, (false, false, false), &mut w.out());
        assert!(matches!(taken.next, Next::Sent));
        assert!(taken.released.is_empty());
        let reqs = w.reqs();
        assert_eq!(reqs.len(), 1);
        // One pack of 5 roots (3 filters), then two more packs fill the REQ
        // up to its 10 filters: 5 + 5 + 2 targets... within 10 filters: 3 packs.
        assert_eq!(reqs[0].len(), 9, "{:?}", reqs[0]);
        let widest = reqs[0]
            .iter()
            .map(|f| f.generic_tags.values().map(|v| v.len()).max().unwrap_or(0))
            .max();
        assert_eq!(widest, Some(5));
        assert_eq!(h.active_len(), 1);
    }

    #[test]
    fn a_target_in_two_merged_packs_is_released_once() {
        let budget = Budget::default();
        let t0 = Time::from_secs(100);
        let mut h = Historic::default();
        h.enqueue_all(vec![root(1), root(2)], None, t0, 100);
        h.enqueue_all(vec![root(2), root(3)], None, t0, 100);
        let mut w = Wire::new();
        let taken = h.next(t0, &budget, (false, false, false), &mut w.out());
        assert_eq!(taken.released, vec![root(2)]);
        assert_eq!(h.queued_len(), 0);
    }

    #[test]
    fn packs_not_ready_wait_and_nip77_takes_unpaged_packs() {
        let budget = Budget::default();
        let t0 = Time::from_secs(100);
        let mut h = Historic::default();
        h.enqueue_new(root(1), t0, 10, &Timing::default());
        let mut w = Wire::new();
        assert!(matches!(
            h.next(t0, &budget, (false, true, false), &mut w.out()).next,
            Next::Idle
        ));
        assert_eq!(
            h.poll_timeout(t0, &Timing::default(), true).map(|d| d.1),
            Some(RelayTimer::PackReady)
        );
        let later = t0.plus(Timing::default().batch_quiet);
        assert!(matches!(
            h.next(later, &budget, (false, true, false), &mut w.out())
                .next,
            Next::Reconcile(_)
        ));
        assert!(w.out.is_empty(), "a reconciled pack sends no REQ here");
    }
}
