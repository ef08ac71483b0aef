//! One remote relay: the only place where its parts meet.
//!
//! Each concern is a type that owns its state, takes values (`now`,
//! `&Budget`, `&Timing`) and returns outcomes; parts never use each other.
//! [`Relay`] routes every input to the part that holds the subscription
//! (one lookup in the owner index), applies what the parts return (targets
//! to confirm or give up, packs to page, budgets to lower), and pumps.
//!
//! | module | owns |
//! |---|---|
//! | `targets` | the targets and where their historic work stands (confirmed, pending, given up) |
//! | `link` | the connection lifecycle, reconnect backoff, the empty grace |
//! | `limits` | NIP-11 limits and the learned subscription cap: the budget |
//! | `historic` | queued packs, historic REQs and their pages, retries, the daily pass and poll schedule |
//! | `live` | live groups, tails, their updates and refusals |
//! | `negentropy` | NIP-77 jobs and the relay's NIP-77 support |
//! | `refusal` | what a `CLOSED` or `NOTICE` says; the rate-limit cool-down |
//! | `auth` | NIP-42 AUTH |
//! | `out` | (shared) commands, fresh ids, the owner index, unanswered REQs |
//! | `pack`, `timers`, `stats` | (shared) the pack value type, named deadlines, counters and reasons |
//! | `inbound` | (of `Relay`) what the relay says, routed to the parts; the refusal table |
//! | `view`, `persist` | (of `Relay`) read-only views; what it saves and restores |

mod auth;
mod historic;
mod limits;
mod link;
mod live;
mod negentropy;
mod out;
mod pack;
mod persist;
mod refusal;
mod stats;
mod targets;
mod timers;
mod view;

use std::collections::{BTreeSet, VecDeque};

use nostr::event::Event;

use self::auth::{Auth, AuthOutcome};
use self::historic::{Historic, Next};
use self::limits::Limits;
use self::link::{Link, Reconnect};
use self::live::{Gap, LiveSet, Shape, Slots};
use self::negentropy::{JobDone, NegJobs};
use self::out::{RelayOut, SubBook};
use self::refusal::{Blamed, Cooldown};
use self::targets::{Removed, TargetBook};
use self::timers::{deadline, soonest, Deadline};
use crate::command::Command;
use crate::config::Config;
use crate::info::{Budget, RelayInfo};
use crate::nip77::RejectedIds;
use crate::rng::Rng;
use crate::types::{Layer, TargetKey, Time};
use crate::url::RelayUrl;

pub use self::stats::{GiveUpReason, RefusalReason, RelayState, RelayStats};
pub use self::timers::RelayTimer;

/// What every relay shares: the configuration, the engine's output queue
/// and the ids the store rejected (NIP-77 items).
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub out: VecDeque<Command>,
    pub rejected: RejectedIds,
}

/// A sending view over a relay's fields and the shared output queue.
macro_rules! out {
    ($relay:ident, $sh:ident) => {
        RelayOut::new(
            &$relay.url,
            &mut $sh.out,
            &mut $relay.subs,
            &mut $relay.stats,
        )
    };
}

// After the macro, which it uses.
mod inbound;

/// One remote relay.
#[derive(Clone, Debug)]
pub struct Relay {
    url: RelayUrl,
    bootstrap: bool,
    rng: Rng,
    /// The deadline the engine's timer set holds for this relay.
    scheduled: Option<Deadline>,
    stats: RelayStats,
    /// Newest `created_at` received per layer (discovery, repo, root).
    last_event_at: [Option<u64>; 3],
    subs: SubBook,
    /// REQs a NOTICE refusal was blamed on, this connection.
    blamed: Blamed,
    targets: TargetBook,
    link: Link,
    limits: Limits,
    historic: Historic,
    live: LiveSet,
    neg: NegJobs,
    cooldown: Cooldown,
    auth: Auth,
}

impl Relay {
    /// A new relay, due to connect at `now`.
    pub(crate) fn new(url: RelayUrl, seed: u64, now: Time) -> Self {
        let rng = Rng::for_stream(seed, url.as_str());
        Relay {
            url,
            bootstrap: false,
            rng,
            scheduled: None,
            stats: RelayStats::default(),
            last_event_at: [None; 3],
            subs: SubBook::default(),
            blamed: Blamed::default(),
            targets: TargetBook::default(),
            link: Link::new(now),
            limits: Limits::default(),
            historic: Historic::default(),
            live: LiveSet::default(),
            neg: NegJobs::default(),
            cooldown: Cooldown::default(),
            auth: Auth::default(),
        }
    }

    /// True when the relay has nothing to do and may be forgotten after grace.
    pub(crate) fn is_empty(&self) -> bool {
        self.targets.is_empty()
            && !self.bootstrap
            && !self.targets.has_pending()
            && self.historic.active_len() == 0
            && self.neg.is_empty()
    }

    /// Notes whether the relay is empty at `now`; true once it has been
    /// empty for the whole grace period (then it is closed and forgotten).
    pub(crate) fn empty_for_grace(&mut self, now: Time, config: &Config) -> bool {
        let empty = self.is_empty();
        self.link.empty_for_grace(empty, now, &config.timing)
    }

    fn wants_connection(&self) -> bool {
        self.bootstrap || !self.targets.is_empty()
    }

    /// The earliest time this relay needs `on_timer`, and why.
    /// Work that is ready but blocked (no free slot) is not a deadline: what
    /// unblocks it (an EOSE, a cool-down ending) calls `pump` itself.
    pub(crate) fn next_deadline(&self, config: &Config, now: Time) -> Option<Deadline> {
        let t = &config.timing;
        let mut d = self.link.poll_timeout(t, self.wants_connection());
        if !self.link.is_connected() {
            return d;
        }
        let free = self.cooldown.until().is_none() && !self.auth.blocks();
        let slot = self.open_subscriptions() < self.budget(config).max_subscriptions as usize;
        d = soonest(d, self.historic.poll_timeout(now, t, free && slot));
        d = soonest(d, self.neg.poll_timeout(t));
        d = soonest(d, deadline(self.cooldown.until(), RelayTimer::Cooldown));
        d = soonest(d, self.auth.poll_timeout());
        if free {
            d = soonest(d, self.live.poll_timeout(now));
        }
        d
    }

    // ----- targets ---------------------------------------------------------

    pub(crate) fn add_target(&mut self, target: TargetKey, now: Time, sh: &mut Shared) {
        if !self.targets.insert(target.clone()) {
            return;
        }
        self.link.not_empty();
        if self.is_connected() {
            let budget = self.budget(&sh.config);
            self.live.add(&target, now, &budget, &sh.config.timing);
            if self.targets.is_new(&target) {
                let cap = target.layer().pack_capacity(budget.max_values_per_filter);
                self.targets.pend(&target);
                self.historic
                    .enqueue_new(target, now, cap, &sh.config.timing);
            }
        } else {
            // Packed in bulk at the next connect: cheaper than one by one.
            self.live.mark_stale();
        }
    }

    pub(crate) fn remove_target(&mut self, target: &TargetKey, sh: &mut Shared) {
        if self.bootstrap && *target == TargetKey::Discovery {
            return; // a bootstrap relay always carries layer 1
        }
        match self.targets.remove(target) {
            Removed::Absent => return,
            Removed::Idle => {}
            Removed::Pending => {
                self.historic.remove_target(target, &mut out!(self, sh));
                self.neg.remove_target(target, &mut out!(self, sh));
            }
        }
        if self.is_connected() {
            self.live.remove(target);
        } else {
            self.live.mark_stale();
        }
    }

    /// Queues packs for `targets` (sorted), `since` bounding them below.
    fn enqueue_all(
        &mut self,
        targets: Vec<TargetKey>,
        since: Option<u64>,
        now: Time,
        config: &Config,
    ) {
        for t in &targets {
            self.targets.pend(t);
        }
        let values = self.budget(config).max_values_per_filter;
        self.historic.enqueue_all(targets, since, now, values);
    }

    /// A gap in live coverage that the live REQ could not prove it caught
    /// up on: a historic pass over its targets, from its start (minus the
    /// safety margin) on.
    fn catch_up(&mut self, (start, targets): Gap, now: Time, config: &Config) {
        let since = start.minus(config.timing.catch_up_margin).as_secs();
        let fresh: BTreeSet<TargetKey> = targets
            .into_iter()
            .filter(|t| self.targets.contains(t))
            .collect();
        self.enqueue_all(fresh.into_iter().collect(), Some(since), now, config);
    }

    /// The three-way difference: queue every target that is neither pending,
    /// confirmed nor given up.
    fn plan_new_work(&mut self, now: Time, config: &Config) {
        let new = self.targets.new_work();
        self.enqueue_all(new, None, now, config);
    }

    /// Applies the end of a NIP-77 step.
    fn apply(&mut self, done: JobDone, now: Time, config: &Config) {
        match done {
            JobDone::Running => {}
            JobDone::Finished(pack) => self.finish_pack(pack, now, config),
            JobDone::Paged(pack) => self.historic.push_front(pack, now),
        }
    }

    /// A pack whose every filter is done, paged or reconciled: its targets
    /// are confirmed when every filter proved it saw all the relay holds.
    /// Otherwise (a page cap below one second's events) the unproven filters
    /// get one NIP-77 reconciliation, which does not page, where the relay
    /// allows it; failing that, the targets are reported incomplete.
    fn finish_pack(&mut self, mut pack: pack::Pack, now: Time, config: &Config) {
        if pack.is_proven() {
            self.targets.confirm(pack.targets);
        } else if config.nip77 && self.neg.usable() && !pack.rescued {
            pack.reopen_unproven();
            self.historic.push_front(pack, now);
        } else {
            self.targets.give_up(pack.targets, GiveUpReason::Incomplete);
        }
    }

    fn give_up(&mut self, packs: Vec<pack::Pack>, reason: GiveUpReason) {
        for p in packs {
            self.targets.give_up(p.targets, reason);
        }
    }

    // ----- lifecycle -------------------------------------------------------

    /// Starts a connection attempt when one is due.
    pub(crate) fn maybe_connect(&mut self, now: Time, sh: &mut Shared) {
        if !self.link.due(now, self.wants_connection()) {
            return;
        }
        let mut out = out!(self, sh);
        // Asked with every attempt until a document (or the host's word that
        // there is none: an empty `RelayInfo`) arrives: a relay that was down
        // at first contact still gets planned within its limits.
        if self.limits.info().is_none() {
            out.fetch_info();
        }
        out.stats.connects += 1;
        out.connect();
        self.link.start(now);
    }

    pub(crate) fn on_connected(&mut self, now: Time, sh: &mut Shared) {
        let t = sh.config.timing.clone();
        let has_confirmed = !self.targets.confirmed().is_empty();
        let Some(reconnect) = self.link.connected(now, &t, has_confirmed) else {
            // Not an attempt we are waiting for (e.g. one we already gave up
            // on and told the host to drop): ignore it.
            self.stats.stale_inputs += 1;
            return;
        };
        // A challenge that came with the handshake is kept for this session.
        self.clear_session();
        self.auth.new_session();
        match reconnect {
            Reconnect::Quick { since } => {
                let confirmed = self.targets.confirmed_targets();
                self.enqueue_all(confirmed, Some(since), now, &sh.config);
            }
            Reconnect::Fresh => self.targets.clear_confirmed(),
        }
        self.plan_new_work(now, &sh.config);
        if self.live.is_stale() {
            let budget = self.budget(&sh.config);
            self.live.pack_all(&self.targets.sorted(), &budget);
        }
        self.live.connected(now);
        self.historic.reset_poll();
        // An overdue daily pass (missed while disconnected) runs at the next timer.
        self.historic.schedule_resync(now, &t, &mut self.rng);
        self.pump(now, sh);
    }

    fn lose_connection(&mut self, now: Time, sh: &mut Shared) {
        self.stats.reconcile_fallbacks += self.neg.dropped();
        let open = self.open_subscriptions();
        if self.link.lost(now, &sh.config.timing, &mut self.rng, open) {
            self.limits.learn_lower(open);
        }
        self.stats.failures += 1;
        self.clear_session();
        self.auth.end();
    }

    /// What lives only as long as one connection: historic work on the wire
    /// or queued (confirmed state stays), open live REQs, the cool-down.
    fn clear_session(&mut self) {
        self.historic.end_session();
        self.neg.end_session();
        self.targets.clear_pending();
        self.subs.clear();
        self.blamed.clear();
        self.live.end_session();
        self.cooldown.end();
    }

    pub(crate) fn on_connect_failed(&mut self, now: Time, sh: &mut Shared) {
        if !self.link.is_connecting() {
            // A late report of an attempt already given up (or connected).
            self.stats.stale_inputs += 1;
            return;
        }
        self.lose_connection(now, sh);
    }

    pub(crate) fn on_disconnected(&mut self, now: Time, sh: &mut Shared) {
        if self.link.is_disconnected() {
            return;
        }
        self.lose_connection(now, sh);
    }

    /// Forgets the connection from our side (the engine decided to close it).
    pub(crate) fn close(&mut self, now: Time, sh: &mut Shared) {
        if self.link.is_disconnected() {
            return;
        }
        out!(self, sh).disconnect();
        self.link.close(now);
        self.clear_session();
        self.auth.end();
    }

    pub(crate) fn on_info(&mut self, info: RelayInfo, now: Time, sh: &mut Shared) {
        let before = self.budget(&sh.config);
        self.limits.set_info(info);
        if self.budget(&sh.config) != before {
            // Work refused as malformed may only have been too wide for the
            // limits we just learned: plan it again within them.
            self.targets.forgive_rejected();
            if self.is_connected() {
                self.plan_new_work(now, &sh.config);
            }
        }
        if self.is_connected() {
            let budget = self.budget(&sh.config);
            let t = sh.config.timing.clone();
            self.live.repack(now, &budget, &t, &mut out!(self, sh));
        } else {
            self.live.mark_stale(); // packed at the next connect
        }
        self.fit_budget(now, sh);
        self.pump(now, sh);
    }

    /// How many live subscriptions `max` slots leave room for: all but one
    /// (history always gets a slot); with a single slot, live waits until
    /// history is done.
    fn live_cap(&self, max: usize) -> usize {
        let historic_waiting = !self.historic.is_idle() || !self.neg.is_empty();
        if max >= 2 {
            max - 1
        } else if historic_waiting {
            0
        } else {
            1
        }
    }

    /// Fits what is open into a budget that shrank under it (a NIP-11
    /// document that arrived after the first wave, a rate limit or a
    /// subscription cap): live groups beyond their share close (their
    /// targets are polled meanwhile), then historic REQs and NIP-77 jobs,
    /// newest first, keeping their pagination for later. Only CLOSEs go
    /// out, so this is fine during a cool-down.
    fn fit_budget(&mut self, now: Time, sh: &mut Shared) {
        let max = self.budget(&sh.config).max_subscriptions as usize;
        let live_cap = self.live_cap(max);
        let live_open = self.live.shed(
            live_cap,
            now,
            &mut RelayOut::new(&self.url, &mut sh.out, &mut self.subs, &mut self.stats),
        );
        while self.historic.active_len() + self.neg.len() + live_open > max {
            if let Some(sub) = self.historic.last_active() {
                out!(self, sh).unsubscribe(&sub);
                self.historic.requeue(&sub, now);
            } else if let Some(pack) = self.neg.pop(&mut out!(self, sh)) {
                self.historic.push_front(pack, now);
            } else {
                break;
            }
        }
    }

    // ----- timers ----------------------------------------------------------

    pub(crate) fn on_timer(&mut self, now: Time, sh: &mut Shared) {
        if self.link.is_disconnected() {
            self.maybe_connect(now, sh);
            return;
        }
        let t = sh.config.timing.clone();
        if self.link.is_connecting() {
            if self.link.attempt_timed_out(now, &t) {
                out!(self, sh).disconnect();
                self.lose_connection(now, sh);
            }
            return;
        }
        self.link.alive(now);
        self.cooldown.expire(now);
        if self.auth.timed_out(now) && self.auth.fail() == AuthOutcome::FailedWhileNeeded {
            self.auth_gave_up();
        }
        let timed_out = self.historic.timed_out(now, &t);
        if !timed_out.is_empty() {
            // Silence is a refusal style too: hold fewer at once.
            self.limits.learn_lower(self.open_subscriptions());
        }
        for sub in timed_out {
            let mut out = out!(self, sh);
            out.stats.timeouts += 1;
            out.unsubscribe(&sub);
            let given_up = self.historic.retry_later(&sub, now, &t, &mut self.rng);
            self.give_up(given_up, GiveUpReason::Unresponsive);
        }
        for done in self.neg.timeouts(now, &t, &mut out!(self, sh)) {
            self.apply(done, now, &sh.config);
        }
        if self.historic.resync_due(now) {
            self.daily_pass(now, sh);
        }
        if self.historic.poll_due(now) {
            // One poll at a time: against a relay that serves a poll slower
            // than the poll interval (khatru's 20 filters a minute), polls
            // would otherwise follow each other without end and the relay
            // would never be idle.
            if self.historic.catching_up() || self.neg.packs().any(|p| p.since.is_some()) {
                self.historic.defer_poll(now, &t);
            } else {
                self.poll_uncovered(now, &sh.config);
            }
        }
        self.pump(now, sh);
    }

    /// A catch-up pass over the targets no live subscription covers, from
    /// the previous poll (minus the safety margin) on. Targets a queued pack
    /// already holds are skipped: that pack asks for everything up to when
    /// it is sent, and later polls start before then. (Against a rate-limited
    /// relay, where a poll takes longer than the poll interval to serve,
    /// each poll used to queue every uncovered target again: the queue grew
    /// without bound and the first sync never ended.)
    fn poll_uncovered(&mut self, now: Time, config: &Config) {
        let since = self.historic.start_poll(now, &config.timing);
        let queued: BTreeSet<&TargetKey> = self.historic.queued_targets().collect();
        let uncovered: BTreeSet<TargetKey> = self
            .live
            .waiting_targets()
            .filter(|t| !self.targets.is_given_up(t) && !queued.contains(t))
            .cloned()
            .collect();
        self.enqueue_all(uncovered.into_iter().collect(), Some(since), now, config);
    }

    /// The daily re-sync: forgive refusals and run a full historic pass over
    /// every target. Confirmed state is kept until the pass replaces it.
    fn daily_pass(&mut self, now: Time, sh: &mut Shared) {
        let t = &sh.config.timing;
        self.historic.reschedule_resync(now, t, &mut self.rng);
        self.targets.forgive();
        self.limits.forget_learned();
        self.neg.forgive();
        self.auth.forgive();
        self.cooldown.forgive();
        self.live.reopen_refused(now);
        // Confirmed entries for targets we no longer carry are dropped here.
        self.targets.prune_confirmed();
        // The full pass supersedes catch-up work (bounded by `since`): queued
        // catch-up packs are dropped, and targets still in one on the wire
        // get a full pack as well. Only targets already in a full pass are
        // left alone.
        for t in self.historic.supersede_catch_up() {
            self.targets.unpend(&t);
        }
        let all: Vec<TargetKey> = {
            let in_full_pass: BTreeSet<&TargetKey> = self
                .historic
                .full_pass_targets()
                .chain(
                    self.neg
                        .packs()
                        .filter(|p| p.since.is_none())
                        .flat_map(|p| p.targets.iter()),
                )
                .collect();
            self.targets
                .sorted()
                .into_iter()
                .filter(|t| !in_full_pass.contains(t))
                .cloned()
                .collect()
        };
        self.enqueue_all(all, None, now, &sh.config);
        out!(self, sh).fetch_info();
    }

    // ----- sending ---------------------------------------------------------

    /// Sends whatever the budget allows: live updates first, then historic pages.
    pub(crate) fn pump(&mut self, now: Time, sh: &mut Shared) {
        if !self.is_connected() || self.cooldown.active(now) {
            return;
        }
        let budget = self.budget(&sh.config);
        let max = budget.max_subscriptions as usize;
        let historic_open = self.historic.active_len() + self.neg.len();
        let live_cap = self.live_cap(max);
        let t = &sh.config.timing;
        let slots = Slots {
            live_cap,
            max,
            historic: historic_open,
        };
        let shape = Shape {
            since_margin: t.live_since_margin,
            catch_up_margin: t.catch_up_margin,
            catch_up_limit: budget.page_limit,
        };
        let uncovered = self.live.flush(
            now,
            slots,
            &shape,
            &mut RelayOut::new(&self.url, &mut sh.out, &mut self.subs, &mut self.stats),
        );
        self.historic.set_uncovered(uncovered, now, t);
        if self.auth.blocks() {
            return;
        }
        while self.open_subscriptions() < max && self.send_next_req(now, &budget, sh) {}
    }

    /// Sends one historic REQ or starts one NIP-77 job from ready packs.
    /// Returns false when nothing is ready.
    fn send_next_req(&mut self, now: Time, budget: &Budget, sh: &mut Shared) -> bool {
        // While a probe finds out whether the relay speaks NIP-77, only packs
        // already bound for paged REQ go out.
        let probing = self.neg.probing(self.limits.claims_nip77()) && !self.neg.is_empty();
        let reconcile = sh.config.nip77 && self.neg.usable();
        let hold_roots =
            self.historic.repo_pass_running() || self.neg.packs().any(|p| p.layer == Layer::Repo);
        let taken = self.historic.next(
            now,
            budget,
            (probing, reconcile, hold_roots),
            &mut out!(self, sh),
        );
        for t in &taken.released {
            self.targets.unpend(t);
        }
        match taken.next {
            Next::Idle => false,
            Next::Sent => true,
            Next::Reconcile(pack) => {
                let done = self.neg.start(pack, now, &mut out!(self, sh));
                self.apply(done, now, &sh.config);
                true
            }
        }
    }
}

fn layer_index(l: Layer) -> usize {
    match l {
        Layer::Discovery => 0,
        Layer::Repo => 1,
        Layer::Root => 2,
    }
}

fn event_layer(event: &Event) -> Layer {
    match event.kind.as_u16() {
        crate::types::KIND_REPO_ANNOUNCEMENT => Layer::Discovery,
        k if crate::types::is_root_kind(k) || k == crate::types::KIND_REPO_STATE => Layer::Repo,
        _ => Layer::Root,
    }
}

#[cfg(test)]
mod tests;
