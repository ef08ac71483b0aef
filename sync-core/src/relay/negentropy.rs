//! NIP-77 reconciliation of historic work with one relay (spec section 7):
//! per pack, one filter after the other, the host's local items, NEG-OPEN
//! and NEG-MSG rounds, NEG-CLOSE, then `{"ids":[…]}` REQs for what we lack.
//! NEG-ERR, a refusal NOTICE, silence for 10 s or a drop after NEG-OPEN
//! sends that filter to paged REQ and marks the relay unsupported until the
//! daily pass probes again. While support is unknown (NIP-11 does not list
//! 77) one probe runs alone and other packs wait for its verdict.
//!
//! A job ends as a [`JobDone`]: its pack's targets confirmed, or the pack
//! handed back for paged REQ over the filters that fell back.

use std::collections::{BTreeSet, VecDeque};

use nostr::event::{Event, EventId};
use nostr::filter::Filter;
use nostr::message::SubscriptionId;

use super::out::{Owner, RelayOut};
use super::pack::Pack;
use super::stats::RefusalReason;
use super::timers::{deadline, Deadline, RelayTimer};
use crate::command::SubscriptionMode;
use crate::config::Timing;
use crate::filters::matches;
use crate::info::Budget;
use crate::nip77::{self, LocalItem, Nip77Support, Reconciler, RejectedIds};
use crate::types::{TargetKey, Time};

/// A pack carried out with NIP-77: its filters are reconciled one after the
/// other; a filter that falls back stays open for paged REQ.
#[derive(Clone, Debug)]
pub(crate) struct NegJob {
    pack: Pack,
    /// The filter in work (an index into `pack.filters`).
    filter: usize,
    step: NegStep,
    last_activity: Time,
    /// The relay listed ids of the current filter that it would not send.
    withheld: bool,
}

#[derive(Clone, Debug)]
enum NegStep {
    /// Waiting for the host's local items.
    Items { request: u64 },
    /// NEG-OPEN sent; rounds under way. `answered`: the relay said something;
    /// `local`: how many items we reconcile with (see [`worth_fetching`]).
    Reconcile {
        sub: SubscriptionId,
        reconciler: Box<Reconciler>,
        answered: bool,
        local: usize,
    },
    /// Fetching the needed ids: one REQ on the wire, the rest waiting.
    /// `got`: the wanted ids that arrived (a relay may cap the REQ silently;
    /// what it withheld is asked again while each REQ brings some).
    Fetch {
        sub: SubscriptionId,
        wanted: BTreeSet<EventId>,
        got: BTreeSet<EventId>,
        current: Vec<Filter>,
        rest: VecDeque<Vec<Filter>>,
    },
}

impl NegJob {
    /// The job's pack, to try again later (filters already reconciled stay done).
    pub fn into_pack(self) -> Pack {
        self.pack
    }

    fn neg_sub(&self) -> Option<&SubscriptionId> {
        match &self.step {
            NegStep::Reconcile { sub, .. } => Some(sub),
            _ => None,
        }
    }

    fn fetch_sub(&self) -> Option<&SubscriptionId> {
        match &self.step {
            NegStep::Fetch { sub, .. } => Some(sub),
            _ => None,
        }
    }

    fn unanswered_open(&self) -> bool {
        matches!(
            self.step,
            NegStep::Reconcile {
                answered: false,
                ..
            }
        )
    }

    /// Would an event on the fetch subscription be one we asked for?
    fn fetch_accepts(&self, event: &Event) -> bool {
        let kind = self.pack.filters.get(self.filter).map(|(k, _)| *k);
        match (&self.step, kind) {
            (NegStep::Fetch { wanted, .. }, Some(kind)) => {
                wanted.contains(&event.id) && matches(kind, &self.pack.targets, event)
            }
            _ => false,
        }
    }

    fn deadline(&self, t: &Timing) -> Time {
        match self.step {
            NegStep::Reconcile { .. } => self.last_activity.plus(nip77::ANSWER_TIMEOUT),
            _ => self.last_activity.plus(t.historic_timeout),
        }
    }

    /// Closes whatever the job holds on the wire.
    fn close(&self, out: &mut RelayOut<'_>) {
        match &self.step {
            NegStep::Items { .. } => {}
            NegStep::Reconcile { sub, .. } => out.neg_close(sub),
            NegStep::Fetch { sub, .. } => out.unsubscribe(sub),
        }
    }
}

/// How a NIP-77 step left its job.
#[derive(Debug)]
pub(crate) enum JobDone {
    /// Still in work (or nothing applied).
    Running,
    /// Every filter is done: confirm the pack's targets if it is proven.
    Finished(Pack),
    /// Some filters fell back: page the pack (first in the queue).
    Paged(Pack),
}

/// The NIP-77 jobs of one relay, and what we know of its support.
#[derive(Clone, Debug, Default)]
pub(crate) struct NegJobs {
    support: Nip77Support,
    jobs: Vec<NegJob>,
    next_request: u64,
}

impl NegJobs {
    pub fn support(&self) -> Nip77Support {
        self.support
    }

    pub fn restore(&mut self, support: Nip77Support) {
        self.support = support;
    }

    /// Whether reconciliation may be tried at all.
    pub fn usable(&self) -> bool {
        self.support != Nip77Support::Unsupported
    }

    /// True while support is unknown and NIP-11 does not claim it
    /// (`claimed`): the next reconciliation is a probe.
    pub fn probing(&self, claimed: bool) -> bool {
        self.support == Nip77Support::Unknown && !claimed
    }

    /// The daily pass: support is probed again (not abandoned forever).
    pub fn forgive(&mut self) {
        if self.support == Nip77Support::Unsupported {
            self.support = Nip77Support::Unknown;
        }
    }

    // ----- the job's steps ------------------------------------------------------

    /// Starts reconciling `pack`.
    pub fn start(&mut self, pack: Pack, now: Time, out: &mut RelayOut<'_>) -> JobDone {
        let job = NegJob {
            pack,
            filter: 0,
            step: NegStep::Items { request: 0 },
            last_activity: now,
            withheld: false,
        };
        self.advance(job, now, out)
    }

    /// Moves a job to its next open filter: asks the host for our items, or
    /// finishes the job when no filter is left.
    fn advance(&mut self, mut job: NegJob, now: Time, out: &mut RelayOut<'_>) -> JobDone {
        while job
            .pack
            .filters
            .get(job.filter)
            .is_some_and(|(_, p)| p.is_done())
        {
            job.filter += 1;
        }
        let filter = match job.pack.whole_filter(job.filter) {
            Some(f) if self.usable() && !job.pack.targets.is_empty() => f,
            _ => return Self::finish(job),
        };
        self.next_request += 1;
        job.step = NegStep::Items {
            request: self.next_request,
        };
        job.last_activity = now;
        out.query_local_items(self.next_request, filter);
        self.jobs.push(job);
        JobDone::Running
    }

    /// A job with no filter left: its pack is confirmed exactly as a paged
    /// pass confirms it when every filter was reconciled, or goes back for
    /// paged REQ over the filters that fell back.
    fn finish(job: NegJob) -> JobDone {
        let mut pack = job.pack;
        if pack.is_done() || pack.targets.is_empty() {
            JobDone::Finished(pack)
        } else {
            pack.paged = true;
            JobDone::Paged(pack)
        }
    }

    /// The current filter is paged because reconciling it does not pay
    /// (see [`worth_reconciling`] and [`worth_fetching`]): no fallback, no
    /// change to what we know of the relay's support; the job moves on.
    fn decline(&mut self, mut job: NegJob, now: Time, out: &mut RelayOut<'_>) -> JobDone {
        out.stats.reconcile_declined += 1;
        job.filter += 1;
        self.advance(job, now, out)
    }

    /// The current filter falls back to paged REQ; the job moves on.
    pub fn fall_back(&mut self, mut job: NegJob, now: Time, out: &mut RelayOut<'_>) -> JobDone {
        out.stats.reconcile_fallbacks += 1;
        job.filter += 1;
        self.advance(job, now, out)
    }

    /// The host's items for `request` (`items: None`: it could not answer).
    /// `None`: no job asked for them (counted stale).
    pub fn on_local_items(
        &mut self,
        request: u64,
        items: Option<&[LocalItem]>,
        rejected: &RejectedIds,
        max_message_length: Option<u32>,
        now: Time,
        out: &mut RelayOut<'_>,
    ) -> Option<JobDone> {
        let Some(i) = self
            .jobs
            .iter()
            .position(|j| matches!(j.step, NegStep::Items { request: r } if r == request))
        else {
            out.stats.stale_inputs += 1;
            return None;
        };
        let mut job = self.jobs.remove(i);
        if !self.usable() {
            // Another filter found out meanwhile: this one goes paged.
            return Some(self.advance(job, now, out));
        }
        let Some(items) = items else {
            return Some(self.fall_back(job, now, out));
        };
        let local = items.len() + rejected.items(job.pack.since).count();
        if !worth_reconciling(local, job.pack.rescued) {
            return Some(self.decline(job, now, out));
        }
        let ours = items.iter().copied().chain(rejected.items(job.pack.since));
        let filter = job.pack.whole_filter(job.filter);
        let limit = filter.as_ref().map_or(nip77::FRAME_SIZE_LIMIT, |f| {
            nip77::frame_size_limit(max_message_length, f)
        });
        let started = Reconciler::new(ours)
            .map(|r| r.with_frame_limit(limit))
            .and_then(|r| Ok((r.initiate()?, r)));
        match (started, filter) {
            (Ok((message, reconciler)), Some(filter)) => {
                let sub = out.fresh_id("neg");
                out.neg_open(sub.clone(), filter, message);
                job.step = NegStep::Reconcile {
                    sub,
                    reconciler: Box::new(reconciler),
                    answered: false,
                    local,
                };
                job.last_activity = now;
                self.jobs.push(job);
                Some(JobDone::Running)
            }
            _ => Some(self.fall_back(job, now, out)),
        }
    }

    /// `NEG-MSG` on `sub`: the next round, or the ids we lack to fetch.
    /// `None`: not a reconciliation of ours (counted stale).
    pub fn on_msg(
        &mut self,
        sub: &SubscriptionId,
        message: &str,
        budget: &Budget,
        now: Time,
        out: &mut RelayOut<'_>,
    ) -> Option<JobDone> {
        let Some(i) = self.jobs.iter().position(|j| j.neg_sub() == Some(sub)) else {
            out.stats.stale_inputs += 1;
            return None;
        };
        let mut job = self.jobs.remove(i);
        let NegStep::Reconcile {
            reconciler,
            answered,
            local,
            ..
        } = &mut job.step
        else {
            return None;
        };
        *answered = true;
        job.last_activity = now;
        match reconciler.reconcile(message) {
            Ok(Some(next)) => {
                if self.support == Nip77Support::Unknown {
                    self.support = Nip77Support::Supported;
                }
                out.neg_msg(sub, next);
                self.jobs.push(job);
                Some(JobDone::Running)
            }
            Ok(None) => {
                if self.support == Nip77Support::Unknown {
                    self.support = Nip77Support::Supported;
                }
                let need = reconciler.take_need();
                let local = *local;
                out.neg_close(sub);
                out.stats.reconciliations += 1;
                out.stats.reconcile_ids_needed += need.len() as u64;
                if !worth_fetching(need.len(), local, budget.page_limit, job.pack.rescued) {
                    return Some(self.decline(job, now, out));
                }
                let reqs = id_fetches(&need, budget).into();
                Some(self.send_fetch(job, reqs, now, out))
            }
            Err(_) => {
                // Not negentropy as we speak it: paged REQ until the daily pass.
                out.refused(RefusalReason::Nip77Protocol);
                self.support = Nip77Support::Unsupported;
                out.neg_close(sub);
                Some(self.fall_back(job, now, out))
            }
        }
    }

    /// `NEG-ERR` on `sub`: the relay does not reconcile with us.
    /// `None`: not a reconciliation of ours (counted stale).
    pub fn on_err(
        &mut self,
        sub: &SubscriptionId,
        now: Time,
        out: &mut RelayOut<'_>,
    ) -> Option<JobDone> {
        let Some(i) = self.jobs.iter().position(|j| j.neg_sub() == Some(sub)) else {
            out.stats.stale_inputs += 1;
            return None;
        };
        let job = self.jobs.remove(i);
        out.forget(sub);
        out.refused(RefusalReason::NegErr);
        self.support = Nip77Support::Unsupported;
        Some(self.fall_back(job, now, out))
    }

    /// Sends the next `{"ids":[…]}` REQ of a reconciled filter, or ends the
    /// filter when none is left. A relay that lists ids it will not send is
    /// not asked again (`withheld`), but the filter is then not proven
    /// complete.
    fn send_fetch(
        &mut self,
        mut job: NegJob,
        mut reqs: VecDeque<Vec<Filter>>,
        now: Time,
        out: &mut RelayOut<'_>,
    ) -> JobDone {
        let Some(filters) = reqs.pop_front() else {
            if let Some((_, paging)) = job.pack.filters.get_mut(job.filter) {
                if std::mem::take(&mut job.withheld) {
                    paging.finish_unproven();
                    // NIP-77 had its chance: no second reconciliation.
                    job.pack.rescued = true;
                } else {
                    paging.finish();
                }
            }
            job.filter += 1;
            return self.advance(job, now, out);
        };
        let sub = out.fresh_id("hist");
        let wanted: BTreeSet<EventId> = filters
            .iter()
            .flat_map(|f| f.ids.iter().flatten().copied())
            .collect();
        out.subscribe(
            sub.clone(),
            filters.clone(),
            SubscriptionMode::Historic,
            Owner::NegFetch,
            now,
        );
        job.step = NegStep::Fetch {
            sub,
            wanted,
            got: BTreeSet::new(),
            current: filters,
            rest: reqs,
        };
        job.last_activity = now;
        self.jobs.push(job);
        JobDone::Running
    }

    /// An event on a fetch REQ `sub`: whether we asked for it (`None`: not
    /// a fetch of ours).
    pub fn on_fetch_event(
        &mut self,
        sub: &SubscriptionId,
        event: &Event,
        now: Time,
    ) -> Option<bool> {
        let job = self.jobs.iter_mut().find(|j| j.fetch_sub() == Some(sub))?;
        if !job.fetch_accepts(event) {
            return Some(false);
        }
        if let NegStep::Fetch { got, .. } = &mut job.step {
            got.insert(event.id);
        }
        job.last_activity = now;
        Some(true)
    }

    /// Whether an event on `sub` is one a fetch asked for (`None`: not a
    /// fetch of ours). Changes nothing.
    pub fn check_event(&self, sub: &SubscriptionId, event: &Event) -> Option<bool> {
        self.jobs
            .iter()
            .find(|j| j.fetch_sub() == Some(sub))
            .map(|j| j.fetch_accepts(event))
    }

    /// EOSE on a fetch REQ `sub` (`None`: not a fetch of ours). Ids the
    /// relay withheld (a silent cap, as LocalRelay applies to `ids` too)
    /// are asked again as long as each REQ brings some; a REQ that brings
    /// none of its ids ends that (no retry loop without progress), and the
    /// filter is then not proven complete.
    pub fn on_fetch_eose(
        &mut self,
        sub: &SubscriptionId,
        budget: &Budget,
        now: Time,
        out: &mut RelayOut<'_>,
    ) -> Option<JobDone> {
        let i = self.jobs.iter().position(|j| j.fetch_sub() == Some(sub))?;
        let mut job = self.jobs.remove(i);
        job.close(out);
        let rest = match &mut job.step {
            NegStep::Fetch {
                wanted, got, rest, ..
            } => {
                let mut rest = std::mem::take(rest);
                let withheld: BTreeSet<EventId> = wanted.difference(got).copied().collect();
                if !withheld.is_empty() && got.is_empty() {
                    job.withheld = true;
                } else if !withheld.is_empty() {
                    for req in id_fetches(&withheld, budget).into_iter().rev() {
                        rest.push_front(req);
                    }
                }
                rest
            }
            _ => VecDeque::new(),
        };
        Some(self.send_fetch(job, rest, now, out))
    }

    /// The job holding `sub` (NEG-OPEN or a fetch), taken out because the
    /// relay closed it.
    pub fn take(&mut self, sub: &SubscriptionId) -> Option<NegJob> {
        let i = self
            .jobs
            .iter()
            .position(|j| j.neg_sub() == Some(sub) || j.fetch_sub() == Some(sub))?;
        Some(self.jobs.remove(i))
    }

    /// A job the relay refused (not for a rate limit): its current filter
    /// falls back to paged REQ; a refused NEG-OPEN means no NIP-77 with us.
    pub fn refused(&mut self, job: NegJob, now: Time, out: &mut RelayOut<'_>) -> JobDone {
        if job.neg_sub().is_some() {
            self.support = Nip77Support::Unsupported;
        }
        self.fall_back(job, now, out)
    }

    /// A NOTICE refusing NIP-77: it names no subscription, so the latest
    /// NEG-OPEN still waiting for its first answer (else the latest in
    /// rounds) is the one refused. `None`: no reconciliation to blame.
    pub fn on_refusal_notice(&mut self, now: Time, out: &mut RelayOut<'_>) -> Option<JobDone> {
        let i = self
            .jobs
            .iter()
            .rposition(NegJob::unanswered_open)
            .or_else(|| self.jobs.iter().rposition(|j| j.neg_sub().is_some()))?;
        let job = self.jobs.remove(i);
        out.refused(RefusalReason::Notice);
        self.support = Nip77Support::Unsupported;
        job.close(out);
        Some(self.fall_back(job, now, out))
    }

    /// Jobs whose relay went quiet at `now`: silence after NEG-OPEN or
    /// NEG-MSG means no NIP-77; a host or fetch that does not answer only
    /// ends the filter's NIP-77 attempt.
    pub fn timeouts(&mut self, now: Time, t: &Timing, out: &mut RelayOut<'_>) -> Vec<JobDone> {
        let (late, fine): (Vec<NegJob>, Vec<NegJob>) = std::mem::take(&mut self.jobs)
            .into_iter()
            .partition(|j| j.deadline(t) <= now);
        self.jobs = fine;
        let mut done = Vec::new();
        for job in late {
            match job.step {
                NegStep::Reconcile { .. } => {
                    out.refused(RefusalReason::Nip77Silent);
                    self.support = Nip77Support::Unsupported;
                }
                NegStep::Fetch { .. } => out.stats.timeouts += 1,
                NegStep::Items { .. } => {}
            }
            job.close(out);
            done.push(self.fall_back(job, now, out));
        }
        done
    }

    /// The connection dropped. A relay that drops it after NEG-OPEN, before
    /// any answer, is taken not to speak NIP-77 (its packs go paged after
    /// reconnecting). Returns the filters that fell back that way.
    pub fn dropped(&mut self) -> u64 {
        let n = self.jobs.iter().filter(|j| j.unanswered_open()).count() as u64;
        if n > 0 {
            self.support = Nip77Support::Unsupported;
        }
        n
    }

    /// Drops `target` from every job; jobs left with no target are closed.
    pub fn remove_target(&mut self, target: &TargetKey, out: &mut RelayOut<'_>) {
        for job in &mut self.jobs {
            job.pack.targets.remove(target);
        }
        let (emptied, kept): (Vec<NegJob>, Vec<NegJob>) = std::mem::take(&mut self.jobs)
            .into_iter()
            .partition(|j| j.pack.targets.is_empty());
        self.jobs = kept;
        for job in emptied {
            job.close(out);
        }
    }

    /// Takes the newest job off the wire (the budget shrank): its pack, with
    /// the filters already reconciled done.
    pub fn pop(&mut self, out: &mut RelayOut<'_>) -> Option<Pack> {
        let job = self.jobs.pop()?;
        job.close(out);
        Some(job.pack)
    }

    /// The connection ended: every job is gone (the caller forgets them as pending).
    pub fn end_session(&mut self) {
        self.jobs.clear();
    }

    // ----- views ---------------------------------------------------------------

    /// Jobs in work (each holds a subscription slot).
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Every job's pack.
    pub fn packs(&self) -> impl Iterator<Item = &Pack> {
        self.jobs.iter().map(|j| &j.pack)
    }

    /// The filters of the fetch REQ `sub`.
    pub fn subscription_filters(&self, sub: &SubscriptionId) -> Option<Vec<Filter>> {
        self.jobs.iter().find_map(|j| match &j.step {
            NegStep::Fetch {
                sub: s, current, ..
            } if s == sub => Some(current.clone()),
            _ => None,
        })
    }

    /// Open NIP-77 ids with their owner kind (debug checks).
    #[cfg(debug_assertions)]
    pub fn subs(&self) -> impl Iterator<Item = (&SubscriptionId, Owner)> {
        self.jobs.iter().filter_map(|j| match &j.step {
            NegStep::Reconcile { sub, .. } => Some((sub, Owner::NegOpen)),
            NegStep::Fetch { sub, .. } => Some((sub, Owner::NegFetch)),
            NegStep::Items { .. } => None,
        })
    }

    /// When the first job becomes overdue.
    pub fn poll_timeout(&self, t: &Timing) -> Option<Deadline> {
        deadline(
            self.jobs.iter().map(|j| j.deadline(t)).min(),
            RelayTimer::NegTimeout,
        )
    }
}

/// Whether a filter is worth reconciling, given how many items we hold for
/// it (`local`: the store's matching events plus the ids it rejected). With
/// none, NIP-77 would list every id the relay holds and then fetch them all
/// by id: on the sync bench (50,000 issues, LocalRelay) that was 2.2× slower
/// and 5.5× more CPU on the relay than paging ("never again" item 10). A
/// rescue of filters paging could not prove always reconciles: paging was
/// already tried.
fn worth_reconciling(local: usize, rescue: bool) -> bool {
    rescue || local > 0
}

/// Whether the `need` ids a reconciliation found missing are worth fetching
/// by id rather than paging the filter. Paging brings what we lack plus what
/// we hold (`local`), so when we lack more than we hold it downloads at most
/// twice what the ids would, and costs the relay far less per event than
/// id lookups; up to one page (`page_limit`) the ids are fetched whatever
/// we hold. A rescue always fetches by id (its filter could not be paged).
fn worth_fetching(need: usize, local: usize, page_limit: u32, rescue: bool) -> bool {
    rescue || need <= local.max(page_limit as usize)
}

/// The `{"ids":…}` REQs that fetch `ids` within the budget: per filter no
/// more ids than values allowed nor than one page's `limit`.
fn id_fetches(ids: &BTreeSet<EventId>, budget: &Budget) -> Vec<Vec<Filter>> {
    let per_filter = budget.max_values_per_filter.min(budget.page_limit);
    nip77::id_requests(ids, per_filter, budget.max_filters_per_req)
}
