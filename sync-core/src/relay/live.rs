//! Live subscriptions of one relay (spec section 3): targets packed into
//! groups within the budget and kept stable, so that adding a target
//! resends one small REQ, not all of them. While the relay is live, new
//! targets go to small *tail* groups; when the slots run out, the tails are
//! folded back into the dense groups.
//!
//! Every REQ goes out under a fresh id, after a `CLOSE` of the one it
//! replaces (a late `CLOSED` or `EVENT` for the old id can never be taken
//! for the new one). A group that could not be open for a while catches up
//! on the gap in its own REQ: `since` the gap's start and an explicit
//! `limit`, so the relay sends what was published meanwhile before EOSE.
//! Only when that fills the limit is the gap handed back, to be fetched by
//! a historic pass. (A relay with a single subscription slot would
//! otherwise take turns forever: each catch-up closes live, which opens a
//! new gap.)

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use nostr::event::Event;
use nostr::filter::Filter;
use nostr::message::SubscriptionId;
use nostr::types::Timestamp;

use super::out::{Owner, RelayOut};
use super::timers::{deadline, Deadline, RelayTimer};
use crate::command::SubscriptionMode;
use crate::config::Timing;
use crate::filters::{build_filter, matches, FilterKind};
use crate::info::Budget;
use crate::types::{Layer, TargetKey, Time};

/// A live group open this much later than it should have been catches up.
const LIVE_GAP_MIN: Duration = Duration::from_secs(1);

/// Values per filter in a tail group: an update resends at most this many
/// values per filter instead of a whole dense group.
pub(crate) const TAIL_VALUES: usize = 10;

/// Replaced live subscriptions remembered for late messages.
const MAX_RETIRED: usize = 8;

/// A live REQ that also asks for what was published during a gap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CatchUp {
    /// When the gap began.
    gap: Time,
    /// `since` of the catch-up (the gap's start minus the safety margin).
    since: Timestamp,
    /// The `limit` asked for.
    limit: u32,
    /// Events received before EOSE.
    received: u32,
}

/// Where a live group stands on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
enum GroupState {
    /// Not on the wire: opens at `retry_at`, when a slot is free.
    Closed,
    /// On the wire as `sub`, asked from `since`. `dirty`: its targets
    /// changed, and an update goes out at `retry_at`. `catch_up`: the REQ
    /// also asks for a gap, and its EOSE has not come yet.
    Open {
        sub: SubscriptionId,
        since: Timestamp,
        dirty: bool,
        catch_up: Option<CatchUp>,
    },
    /// Refused: waits for the daily pass.
    Refused,
}

/// A group's filters: each pack is the filter kinds it carries (a layer's
/// kinds, or a slice of them when the relay allows fewer filters per REQ
/// than the layer has) and its targets.
type LivePack = (&'static [FilterKind], BTreeSet<TargetKey>);

/// One live subscription.
#[derive(Clone, Debug)]
struct LiveGroup {
    packs: Vec<LivePack>,
    state: GroupState,
    retry_at: Time,
    /// Unexplained refusals so far (the retry backoff).
    attempts: u32,
    /// A small group for targets added while live: updating it is cheap.
    tail: bool,
    /// Already split once after an `error:`-style refusal.
    split: bool,
    /// Since when the group should have been open but was not (refused,
    /// cooling down, no slot): at (re)open its targets catch up on the gap.
    gap_since: Option<Time>,
    /// When targets started joining since it was last sent: the update
    /// waits while they keep arriving (at most the batch delay).
    batch_started: Option<Time>,
}

impl LiveGroup {
    /// A closed group, due at `retry_at`.
    fn new(packs: Vec<LivePack>, retry_at: Time, tail: bool) -> Self {
        LiveGroup {
            packs,
            state: GroupState::Closed,
            retry_at,
            attempts: 0,
            tail,
            split: false,
            gap_since: None,
            batch_started: None,
        }
    }

    /// A target joined at `now`: the group goes out when targets stop
    /// joining (`Timing::batch_until`), or later if it was due later anyway.
    fn batch(&mut self, now: Time, t: &Timing) {
        let started = *self.batch_started.get_or_insert(now);
        self.retry_at = self.retry_at.max(t.batch_until(started, now));
    }

    fn is_open(&self) -> bool {
        matches!(self.state, GroupState::Open { .. })
    }

    fn is_refused(&self) -> bool {
        self.state == GroupState::Refused
    }

    fn is_open_as(&self, sub: &SubscriptionId) -> bool {
        matches!(&self.state, GroupState::Open { sub: s, .. } if s == sub)
    }

    /// Something must go on the wire (an open or an update).
    fn wants_send(&self) -> bool {
        match self.state {
            GroupState::Closed => true,
            GroupState::Open { dirty, .. } => dirty,
            GroupState::Refused => false,
        }
    }

    /// Its targets changed: an open group needs an update.
    fn touch(&mut self) {
        if let GroupState::Open { dirty, .. } = &mut self.state {
            *dirty = true;
        }
    }

    /// No longer on the wire; an open group notes the start of its gap (an
    /// unfinished catch-up keeps the gap it was catching up on).
    fn close(&mut self, now: Time) {
        if let GroupState::Open { catch_up, .. } = &self.state {
            let gap = catch_up.map_or(now, |c| c.gap);
            self.gap_since = Some(self.gap_since.map_or(gap, |g| g.min(gap)));
            self.state = GroupState::Closed;
        }
    }

    fn filter_count(&self) -> usize {
        self.packs.iter().map(|(kinds, _)| kinds.len()).sum()
    }

    fn matches(&self, event: &Event) -> bool {
        self.packs
            .iter()
            .any(|(kinds, set)| kinds.iter().any(|k| matches(*k, set, event)))
    }

    fn targets(&self) -> impl Iterator<Item = &TargetKey> {
        self.packs.iter().flat_map(|(_, set)| set.iter())
    }

    /// The REQ's filters: `limit: 0` (nothing stored) and the group's
    /// `since`, or, while catching up, the gap's `since` and a `limit`.
    fn filters(&self, since: Timestamp, catch_up: Option<&CatchUp>) -> Vec<Filter> {
        let (since, limit) = match catch_up {
            Some(c) => (c.since, c.limit),
            None => (since, 0),
        };
        let mut out = Vec::with_capacity(self.filter_count());
        for (kinds, set) in &self.packs {
            for kind in kinds.iter() {
                out.push(
                    build_filter(*kind, set.iter())
                        .since(since)
                        .limit(limit as usize),
                );
            }
        }
        out
    }
}

/// How many subscriptions live groups may hold in [`LiveSet::flush`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slots {
    /// Live groups open at most.
    pub live_cap: usize,
    /// Subscriptions open at most, live and historic.
    pub max: usize,
    /// Historic subscriptions open now.
    pub historic: usize,
}

/// How live REQs are shaped in [`LiveSet::flush`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    /// `since` of a new live REQ is now minus this (clock-skew allowance).
    pub since_margin: Duration,
    /// A gap is caught up on from its start minus this.
    pub catch_up_margin: Duration,
    /// The `limit` of a catch-up.
    pub catch_up_limit: u32,
}

/// A gap a live REQ could not prove it caught up on (its `limit` was
/// filled): its start and its targets, to fetch with a historic pass.
pub(crate) type Gap = (Time, Vec<TargetKey>);

/// The live groups of one relay.
#[derive(Clone, Debug, Default)]
pub(crate) struct LiveSet {
    groups: Vec<LiveGroup>,
    /// Live subscriptions recently replaced by an update: their late events
    /// are still ours, their late CLOSED is stale.
    retired: VecDeque<SubscriptionId>,
    /// Targets changed while disconnected: the groups are packed anew at
    /// the next connect.
    stale: bool,
}

impl LiveSet {
    // ----- packing -------------------------------------------------------------

    /// Packs every target into dense groups at once (at connect, when
    /// targets changed while disconnected): each layer's `sorted` targets
    /// are cut into packs of the budget's size, placed first-fit.
    pub fn pack_all(&mut self, sorted: &[&TargetKey], budget: &Budget) {
        let max_filters = (budget.max_filters_per_req as usize).max(1);
        self.groups.clear();
        self.stale = false;
        let mut packs: Vec<LivePack> = Vec::new();
        for layer in [Layer::Discovery, Layer::Repo, Layer::Root] {
            let of_layer: Vec<&TargetKey> = sorted
                .iter()
                .copied()
                .filter(|t| t.layer() == layer)
                .collect();
            let cap = layer.pack_capacity(budget.max_values_per_filter);
            for kinds in layer.filter_kinds().chunks(max_filters) {
                for chunk in of_layer.chunks(cap) {
                    packs.push((kinds, chunk.iter().map(|t| (*t).clone()).collect()));
                }
            }
        }
        for (kinds, set) in packs {
            if let Some(g) = self
                .groups
                .iter_mut()
                .find(|g| g.filter_count() + kinds.len() <= max_filters)
            {
                g.packs.push((kinds, set));
                continue;
            }
            self.groups
                .push(LiveGroup::new(vec![(kinds, set)], Time::ZERO, false));
        }
    }

    /// Targets changed while disconnected.
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Places a target in a group. While the relay is live, new targets go
    /// to small tail groups, so that one new repo or root resends a few
    /// values, not a whole dense group; when no subscription slot is left
    /// for another tail, the tails are folded into the dense groups (one
    /// larger update, once per many additions). Updates of open groups are
    /// batched like new history.
    pub fn add(&mut self, target: &TargetKey, now: Time, budget: &Budget, t: &Timing) {
        let live = self.groups.iter().any(|g| g.is_open());
        if live && target.layer() != Layer::Discovery {
            if self.add_to_tail(target, now, budget, t) {
                return;
            }
            let folded: BTreeSet<TargetKey> = self
                .groups
                .iter_mut()
                .filter(|g| g.tail)
                .flat_map(|g| {
                    g.touch();
                    std::mem::take(&mut g.packs)
                        .into_iter()
                        .flat_map(|(_, set)| set)
                })
                .collect();
            for f in &folded {
                self.add_dense(f, now, budget, t);
            }
        }
        self.add_dense(target, now, budget, t);
    }

    fn add_to_tail(&mut self, target: &TargetKey, now: Time, budget: &Budget, t: &Timing) -> bool {
        let kinds = target.layer().filter_kinds();
        let need = kinds.len();
        let max_filters = budget.max_filters_per_req as usize;
        if need > max_filters {
            return false; // a layer spread over REQs is packed densely
        }
        // A tail is small, and never above the relay's value cap.
        let tail_values = TAIL_VALUES.min((budget.max_values_per_filter as usize).max(1));
        if let Some(g) = self
            .groups
            .iter_mut()
            .rev()
            .find(|g| g.tail && !g.is_refused() && !g.packs.is_empty())
        {
            let placed = if let Some((_, set)) = g
                .packs
                .iter_mut()
                .find(|(k, set)| *k == kinds && set.len() < tail_values)
            {
                set.insert(target.clone());
                true
            } else if g.packs.iter().all(|(k, _)| *k != kinds)
                && g.filter_count() + need <= max_filters
            {
                g.packs.push((kinds, BTreeSet::from([target.clone()])));
                true
            } else {
                false
            };
            if placed {
                g.touch();
                g.batch(now, t);
                return true;
            }
        }
        let live_cap = (budget.max_subscriptions as usize).saturating_sub(1).max(1);
        let groups = self.groups.iter().filter(|g| !g.packs.is_empty()).count();
        if groups >= live_cap {
            return false;
        }
        let mut tail = LiveGroup::new(vec![(kinds, BTreeSet::from([target.clone()]))], now, true);
        tail.batch(now, t);
        self.groups.push(tail);
        true
    }

    /// Packs a target densely: into the first dense group with room, once
    /// per slice of its layer's filter kinds that fits a REQ.
    fn add_dense(&mut self, target: &TargetKey, now: Time, budget: &Budget, t: &Timing) {
        let max_filters = (budget.max_filters_per_req as usize).max(1);
        for kinds in target.layer().filter_kinds().chunks(max_filters) {
            self.add_dense_kinds(target, kinds, now, budget, t);
        }
    }

    fn add_dense_kinds(
        &mut self,
        target: &TargetKey,
        kinds: &'static [FilterKind],
        now: Time,
        budget: &Budget,
        t: &Timing,
    ) {
        let cap = target.layer().pack_capacity(budget.max_values_per_filter);
        let max_filters = budget.max_filters_per_req as usize;
        let dense = |g: &&mut LiveGroup| !g.tail && !g.is_refused();
        for g in self.groups.iter_mut().filter(dense) {
            if let Some((_, set)) = g
                .packs
                .iter_mut()
                .find(|(k, s)| *k == kinds && s.len() < cap)
            {
                set.insert(target.clone());
                Self::updated(g, now, t);
                return;
            }
        }
        for g in self.groups.iter_mut().filter(dense) {
            if g.filter_count() + kinds.len() <= max_filters {
                g.packs.push((kinds, BTreeSet::from([target.clone()])));
                Self::updated(g, now, t);
                return;
            }
        }
        self.groups.push(LiveGroup::new(
            vec![(kinds, BTreeSet::from([target.clone()]))],
            Time::ZERO,
            false,
        ));
    }

    /// A dense group got a target: an open one is updated once the batch is over.
    fn updated(g: &mut LiveGroup, now: Time, t: &Timing) {
        if g.is_open() {
            g.touch();
            g.batch(now, t);
        }
    }

    /// Drops a target from every group.
    pub fn remove(&mut self, target: &TargetKey) {
        for g in &mut self.groups {
            let before = g.packs.len();
            let mut hit = false;
            for (_, set) in &mut g.packs {
                hit |= set.remove(target);
            }
            g.packs.retain(|(_, s)| !s.is_empty());
            if hit || g.packs.len() != before {
                g.touch();
            }
        }
    }

    /// Whether every group fits `budget` (filters per REQ, values per filter).
    fn fits(&self, budget: &Budget) -> bool {
        self.groups.iter().all(|g| {
            g.filter_count() <= budget.max_filters_per_req as usize
                && g.packs.iter().all(|(kinds, set)| {
                    kinds.first().is_none_or(|k| {
                        set.len() <= k.layer().pack_capacity(budget.max_values_per_filter)
                    })
                })
        })
    }

    /// Rebuilds the groups when they no longer fit the budget (limits
    /// learned after they were packed): closes them and packs again.
    pub fn repack(&mut self, now: Time, budget: &Budget, t: &Timing, out: &mut RelayOut<'_>) {
        if self.fits(budget) {
            return;
        }
        let mut targets = Vec::new();
        for g in std::mem::take(&mut self.groups) {
            if let GroupState::Open { sub, .. } = &g.state {
                out.unsubscribe(sub);
            }
            targets.extend(g.packs.into_iter().flat_map(|(_, set)| set));
        }
        targets.sort();
        targets.dedup();
        for target in &targets {
            self.add(target, now, budget, t);
        }
        for g in &mut self.groups {
            g.retry_at = now;
        }
    }

    // ----- sending -------------------------------------------------------------

    /// Sends updates and opens groups: at most `live_cap` groups open, and
    /// never past `max` subscriptions with the `historic` ones. `since` of a
    /// new REQ is a little before now: relays apply it to new events too,
    /// and a publisher whose clock runs a few minutes slow must not be
    /// missed; an update keeps the `since` of the REQ it replaces. A group
    /// opening after a gap catches up on it in the same REQ. Returns whether
    /// some targets have no live subscription (no slot): poll them.
    /// Closes open groups beyond `live_cap` (newest first), and groups
    /// that became empty; opens nothing. Returns how many stay open. (Their
    /// targets are then polled until a slot frees.)
    pub fn shed(&mut self, live_cap: usize, now: Time, out: &mut RelayOut<'_>) -> usize {
        let mut open = self.open_count();
        for g in self.groups.iter_mut().rev() {
            if let GroupState::Open { sub, .. } = &g.state {
                if open > live_cap || g.packs.is_empty() {
                    out.unsubscribe(sub);
                    if g.packs.is_empty() {
                        g.state = GroupState::Closed; // dropped below
                    } else {
                        g.close(now);
                    }
                    open -= 1;
                }
            }
        }
        self.groups.retain(|g| g.is_open() || !g.packs.is_empty());
        open
    }

    pub fn flush(
        &mut self,
        now: Time,
        slots: Slots,
        shape: &Shape,
        out: &mut RelayOut<'_>,
    ) -> bool {
        let mut open = self.shed(slots.live_cap, now, out);
        for g in &mut self.groups {
            if !g.wants_send() || g.retry_at > now || g.packs.is_empty() {
                continue;
            }
            if !g.is_open() && (open >= slots.live_cap || open + slots.historic >= slots.max) {
                continue;
            }
            let (since, catch_up) = match &g.state {
                GroupState::Open {
                    sub,
                    since,
                    catch_up,
                    ..
                } => {
                    // An update goes out under a fresh id, after closing the old one.
                    out.unsubscribe(sub);
                    self.retired.push_back(sub.clone());
                    if self.retired.len() > MAX_RETIRED {
                        self.retired.pop_front();
                    }
                    (*since, catch_up.map(|c| CatchUp { received: 0, ..c }))
                }
                _ => {
                    open += 1;
                    let catch_up = g
                        .gap_since
                        .take()
                        .filter(|t| now.since(*t) >= LIVE_GAP_MIN)
                        .map(|gap| CatchUp {
                            gap,
                            since: gap.minus(shape.catch_up_margin).timestamp(),
                            limit: shape.catch_up_limit,
                            received: 0,
                        });
                    (now.minus(shape.since_margin).timestamp(), catch_up)
                }
            };
            let sub = out.fresh_id("live");
            out.subscribe(
                sub.clone(),
                g.filters(since, catch_up.as_ref()),
                SubscriptionMode::Live,
                Owner::Live,
                now,
            );
            g.state = GroupState::Open {
                sub,
                since,
                dirty: false,
                catch_up,
            };
            g.batch_started = None;
        }
        // Targets no live slot can cover are polled instead, so that what
        // is published to them still arrives (within the poll interval).
        self.groups
            .iter()
            .any(|g| !g.is_open() && !g.is_refused() && !g.packs.is_empty())
    }

    // ----- what the relay says -------------------------------------------------

    /// The open group `sub` is taken off the wire and retried at `at` (a
    /// rate limit, AUTH, a refusal without reason: `count` it then).
    pub fn retry(&mut self, sub: &SubscriptionId, now: Time, at: Time, count: bool) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.is_open_as(sub)) {
            g.close(now);
            g.retry_at = at;
            if count {
                g.attempts += 1;
            }
        }
    }

    /// Unexplained refusals so far of the open group `sub`.
    pub fn attempts(&self, sub: &SubscriptionId) -> u32 {
        self.groups
            .iter()
            .find(|g| g.is_open_as(sub))
            .map_or(0, |g| g.attempts)
    }

    /// An `error:`-style refusal of the open group `sub`: split it in two
    /// (by packs, or by halving its one pack) and retry the halves at once.
    /// A group refused again after a split waits for the daily pass.
    pub fn split(&mut self, sub: &SubscriptionId, now: Time) {
        let Some(i) = self.groups.iter().position(|g| g.is_open_as(sub)) else {
            return;
        };
        if self.groups[i].split {
            self.groups[i].state = GroupState::Refused;
            return;
        }
        let mut g = self.groups.remove(i);
        let mut halves = [Vec::new(), Vec::new()];
        if g.packs.len() > 1 {
            let second = g.packs.split_off(g.packs.len() / 2);
            halves = [std::mem::take(&mut g.packs), second];
        } else if let Some((kinds, set)) = g.packs.pop() {
            if set.len() > 1 {
                let mut a = set;
                let b = a.split_off(
                    &a.iter()
                        .nth(a.len() / 2)
                        .cloned()
                        .unwrap_or(TargetKey::Discovery),
                );
                halves = [vec![(kinds, a)], vec![(kinds, b)]];
            } else {
                halves = [vec![(kinds, set)], Vec::new()];
            }
        }
        for packs in halves.into_iter().filter(|p| !p.is_empty()) {
            let mut half = LiveGroup::new(packs, now, g.tail);
            half.attempts = g.attempts;
            half.split = true;
            half.gap_since = Some(now);
            self.groups.push(half);
        }
    }

    /// The open group `sub` is refused until the daily pass.
    pub fn refuse(&mut self, sub: &SubscriptionId) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.is_open_as(sub)) {
            g.state = GroupState::Refused;
        }
    }

    /// Every closed group is refused until the daily pass (AUTH failed).
    pub fn refuse_closed(&mut self) {
        for g in &mut self.groups {
            if g.state == GroupState::Closed {
                g.state = GroupState::Refused;
            }
        }
    }

    /// The daily pass: refused groups are tried again at once.
    pub fn reopen_refused(&mut self, now: Time) {
        for g in &mut self.groups {
            if g.is_refused() {
                g.state = GroupState::Closed;
                g.attempts = 0;
                g.retry_at = now;
            }
        }
    }

    /// The connection ended: nothing is on the wire.
    pub fn end_session(&mut self) {
        self.retired.clear();
        for g in &mut self.groups {
            if g.is_open() {
                g.state = GroupState::Closed;
            }
        }
    }

    /// Connected at `now`: every group opens as soon as it can, catching up
    /// on the time it was not open.
    pub fn connected(&mut self, now: Time) {
        for g in &mut self.groups {
            if g.is_open() {
                g.state = GroupState::Closed;
            }
            g.retry_at = now;
            g.gap_since = Some(now);
        }
    }

    /// An event on `sub`: whether it is one we follow (`None`: not a live
    /// subscription of ours), counted towards a catch-up's limit.
    pub fn on_event(&mut self, sub: &SubscriptionId, event: &Event) -> Option<bool> {
        let hit = self.check_event(sub, event)?;
        if hit {
            if let Some(GroupState::Open {
                catch_up: Some(c), ..
            }) = self
                .groups
                .iter_mut()
                .find(|g| g.is_open_as(sub))
                .map(|g| &mut g.state)
            {
                c.received = c.received.saturating_add(1);
            }
        }
        Some(hit)
    }

    /// EOSE on the live subscription `sub`: a catch-up that filled its
    /// limit may have missed part of its gap, which is returned, to be
    /// fetched by a historic pass.
    pub fn on_eose(&mut self, sub: &SubscriptionId) -> Option<Gap> {
        let g = self.groups.iter_mut().find(|g| g.is_open_as(sub))?;
        let GroupState::Open { catch_up, .. } = &mut g.state else {
            return None;
        };
        let c = catch_up.take()?;
        (c.received >= c.limit).then(|| (c.gap, g.targets().cloned().collect()))
    }

    /// Whether an event on `sub` is one we follow (`None`: not a live
    /// subscription of ours). A live REQ replaced by an update is still
    /// ours for late events, judged against what we follow live now.
    pub fn check_event(&self, sub: &SubscriptionId, event: &Event) -> Option<bool> {
        match self.groups.iter().find(|g| g.is_open_as(sub)) {
            Some(g) => Some(g.matches(event)),
            None if self.retired.contains(sub) => {
                Some(self.groups.iter().any(|g| g.matches(event)))
            }
            None => None,
        }
    }

    /// The filters of the open group `sub`.
    pub fn subscription_filters(&self, sub: &SubscriptionId) -> Option<Vec<Filter>> {
        self.groups.iter().find_map(|g| match &g.state {
            GroupState::Open {
                sub: s,
                since,
                catch_up,
                ..
            } if s == sub => Some(g.filters(*since, catch_up.as_ref())),
            _ => None,
        })
    }

    // ----- views ---------------------------------------------------------------

    /// Groups on the wire.
    pub fn open_count(&self) -> usize {
        self.groups.iter().filter(|g| g.is_open()).count()
    }

    /// Targets with no live subscription (closed or refused groups).
    pub fn uncovered_count(&self) -> usize {
        self.groups
            .iter()
            .filter(|g| !g.is_open())
            .flat_map(|g| g.targets())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Targets waiting for a live slot (not refused): what a poll covers.
    pub fn waiting_targets(&self) -> impl Iterator<Item = &TargetKey> {
        self.groups
            .iter()
            .filter(|g| !g.is_open() && !g.is_refused())
            .flat_map(|g| g.targets())
    }

    /// Open live subscription ids (debug checks).
    #[cfg(debug_assertions)]
    pub fn subs(&self) -> impl Iterator<Item = &SubscriptionId> {
        self.groups.iter().filter_map(|g| match &g.state {
            GroupState::Open { sub, .. } => Some(sub),
            _ => None,
        })
    }

    /// When a group is next due to open or update (after `now`).
    pub fn poll_timeout(&self, now: Time) -> Option<Deadline> {
        deadline(
            self.groups
                .iter()
                .filter(|g| g.wants_send() && g.retry_at > now)
                .map(|g| g.retry_at)
                .min(),
            RelayTimer::LiveRetry,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use nostr::event::EventId;

    use super::*;
    use crate::command::Command;
    use crate::relay::out::SubBook;
    use crate::relay::stats::RelayStats;
    use crate::types::RepoCoord;
    use crate::url::RelayUrl;

    fn root(n: u32) -> TargetKey {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_be_bytes());
        TargetKey::Root(EventId::from_byte_array(b))
    }

    fn repo(n: u8) -> TargetKey {
        let pk = nostr::key::PublicKey::from_byte_array([n.max(1); 32]);
        TargetKey::Repo(std::sync::Arc::new(RepoCoord::new(pk, format!("r{n}"))))
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

        /// The largest number of values in one filter of any REQ sent.
        fn widest(&self) -> usize {
            self.out
                .iter()
                .filter_map(|c| match c {
                    Command::Subscribe { filters, .. } => Some(filters),
                    _ => None,
                })
                .flatten()
                .map(|f| f.generic_tags.values().map(|v| v.len()).max().unwrap_or(0))
                .max()
                .unwrap_or(0)
        }
    }

    const SEC: Duration = Duration::from_secs(1);

    /// Batches close after a second (quiet or not).
    fn timing() -> Timing {
        Timing {
            batch_delay: SEC,
            batch_quiet: SEC,
            ..Timing::default()
        }
    }

    const SHAPE: Shape = Shape {
        since_margin: SEC,
        catch_up_margin: SEC,
        catch_up_limit: 500,
    };

    fn slots(live_cap: usize, max: usize, historic: usize) -> Slots {
        Slots {
            live_cap,
            max,
            historic,
        }
    }

    #[test]
    fn a_tail_never_exceeds_the_value_cap() {
        for cap in [1u32, 2, 3, 10, 100] {
            let budget = Budget {
                max_values_per_filter: cap,
                ..Budget::default()
            };
            let mut live = LiveSet::default();
            let mut w = Wire::new();
            let t0 = Time::from_secs(1000);
            live.pack_all(&[&repo(1)], &budget);
            live.flush(t0, slots(9, 10, 0), &SHAPE, &mut w.out());
            for n in 0..40 {
                live.add(&root(n), t0, &budget, &timing());
            }
            live.flush(t0.plus(SEC), slots(9, 10, 0), &SHAPE, &mut w.out());
            assert!(w.widest() <= cap as usize, "cap {cap}: {}", w.widest());
            if cap >= TAIL_VALUES as u32 {
                assert_eq!(live.uncovered_count(), 0, "cap {cap}: all followed");
            }
        }
    }

    #[test]
    fn live_and_historic_stay_within_the_budget() {
        for max in 1..6usize {
            for historic in 0..=max {
                let budget = Budget {
                    max_subscriptions: max as u32,
                    max_values_per_filter: 3,
                    max_filters_per_req: 3,
                    ..Budget::default()
                };
                let targets: Vec<TargetKey> = (0..30).map(root).chain((1..5).map(repo)).collect();
                let sorted: Vec<&TargetKey> = targets.iter().collect();
                let mut live = LiveSet::default();
                let mut w = Wire::new();
                live.pack_all(&sorted, &budget);
                let live_cap = max.saturating_sub(1).max(1);
                live.flush(
                    Time::from_secs(5),
                    slots(live_cap, max, historic),
                    &SHAPE,
                    &mut w.out(),
                );
                let open = live.open_count();
                assert!(open <= live_cap, "max {max}: {open} open");
                assert!(
                    open + historic <= max || open == 0,
                    "max {max}, historic {historic}: {open} live open"
                );
                assert_eq!(open == 0, historic >= max, "a free slot is used");
            }
        }
    }

    #[test]
    fn an_update_goes_out_under_a_fresh_id_after_closing_the_old() {
        let budget = Budget::default();
        let mut live = LiveSet::default();
        let mut w = Wire::new();
        let t0 = Time::from_secs(1000);
        live.pack_all(&[&repo(1)], &budget);
        live.flush(t0, slots(9, 10, 0), &SHAPE, &mut w.out());
        // A new root while live: a tail of its own, opened after the delay.
        live.add(&root(1), t0, &budget, &timing());
        live.flush(t0.plus(SEC), slots(9, 10, 0), &SHAPE, &mut w.out());
        assert_eq!(live.open_count(), 2);
        // The next root updates the tail.
        let t1 = t0.plus(SEC);
        live.add(&root(2), t1, &budget, &timing());
        w.out.clear();
        live.flush(t1, slots(9, 10, 0), &SHAPE, &mut w.out());
        assert!(w.out.is_empty(), "batched: nothing before the delay");
        live.flush(t1.plus(SEC), slots(9, 10, 0), &SHAPE, &mut w.out());
        let sent: Vec<&Command> = w.out.iter().collect();
        assert_eq!(sent.len(), 2, "{sent:?}");
        let (
            Command::Unsubscribe {
                subscription: old, ..
            },
            Command::Subscribe {
                subscription: new, ..
            },
        ) = (sent[0], sent[1])
        else {
            panic!("{sent:?}");
        };
        assert_ne!(old, new);
        assert_eq!(live.open_count(), 2);
    }
}
