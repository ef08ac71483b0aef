//! The per-relay state machine: connection lifecycle and backoff (spec
//! section 4), live and historic subscriptions packed within the relay's
//! budget (sections 3 and 6), and what the relay says back (section 5).
//!
//! A relay owns three disjoint views of its targets: `confirmed` (historic
//! work ended at EOSE), `pending` (in a historic pack, queued or on the wire)
//! and the rest. New historic work comes only from
//! `targets − pending − confirmed − given_up`.
//!
//! Historic work goes by NIP-77 (spec section 7) unless the relay is known
//! not to support it: per filter, the host's local items, NEG-OPEN and
//! NEG-MSG rounds, NEG-CLOSE, then `{"ids":[…]}` REQs for what we lack.
//! NEG-ERR, a refusal NOTICE, silence for 10 s or a drop after NEG-OPEN
//! sends that filter to paged REQ and marks the relay unsupported until the
//! daily pass probes again. While support is unknown (NIP-11 does not list
//! 77) one probe runs alone and other packs wait for its verdict.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use nostr::event::{Event, EventId};
use nostr::filter::Filter;
use nostr::message::SubscriptionId;
use nostr::types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::command::{Command, SubscriptionMode};
use crate::config::Config;
use crate::filters::{build_filter, matches, FilterKind};
use crate::info::{Budget, RelayInfo};
use crate::nip77::{self, Nip77Support, Reconciler, RejectedIds};
use crate::paging::FilterPaging;
use crate::rng::Rng;
use crate::types::{KeySet, Layer, TargetKey, Time};
use crate::url::RelayUrl;

/// Connection state of a relay as the status view shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelayState {
    /// Not connected; waiting for the next attempt.
    Disconnected,
    /// Failed for over a day; retried once a day.
    Dead,
    /// A connection attempt is under way.
    Connecting,
    /// Connected with historic work pending.
    Syncing,
    /// Connected, nothing pending.
    Live,
}

/// Why work was given up on a relay until the next daily pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GiveUpReason {
    /// `CLOSED restricted:` or `blocked:`.
    Refused,
    /// `auth-required:` with no key, or AUTH failed.
    AuthRequired,
    /// `error:`, `invalid:` or `unsupported:` twice, even after a split.
    Rejected,
    /// Timed out or refused without explanation too many times.
    Unresponsive,
}

/// What the relay sent an event for.
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

/// Counters of one relay.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStats {
    /// Valid events received for our subscriptions.
    pub events_received: u64,
    /// Events the store newly stored.
    pub events_stored: u64,
    /// Events the store already had.
    pub events_duplicate: u64,
    /// Events the store refused.
    pub events_rejected: u64,
    /// Events with a bad id or signature, or malformed.
    pub events_invalid: u64,
    /// Events for subscriptions we do not hold.
    pub events_unrequested: u64,
    /// Events that match none of their subscription's filters.
    pub events_unmatched: u64,
    /// Connection attempts made.
    pub connects: u64,
    /// Failed connection attempts and drops.
    pub failures: u64,
    /// Historic REQs sent (pages included).
    pub reqs_sent: u64,
    /// Historic REQs that timed out.
    pub timeouts: u64,
    /// NOTICEs received.
    pub notices: u64,
    /// Time of the last EOSE.
    pub last_eose: Option<Time>,
    /// Inputs that no longer applied (a late answer to an abandoned attempt).
    pub stale_inputs: u64,
    /// NIP-77 reconciliations completed (one per filter).
    pub reconciliations: u64,
    /// Ids NIP-77 reconciliations found missing (then fetched by id).
    pub reconcile_ids_needed: u64,
    /// Filters that fell back from NIP-77 to paged REQ.
    pub reconcile_fallbacks: u64,
    /// Refusals seen, by reason (`rate-limited`, `restricted`, `notice`, …).
    pub refusals: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Conn {
    Disconnected { retry_at: Time },
    Connecting { since: Time },
    Connected { since: Time },
}

/// Reconnect bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Consecutive failures.
    pub failures: u32,
    /// When the current run of failures began.
    pub failing_since: Option<Time>,
    /// Failed for longer than `dead_after`.
    pub dead: bool,
}

#[derive(Clone, Debug, Default)]
struct Auth {
    challenge: Option<String>,
    /// AUTH sent, no answer yet (with the time it was sent).
    pending_since: Option<Time>,
    authenticated: bool,
    /// Work was refused with `auth-required:` and waits for AUTH.
    needed: bool,
    /// Since when work has waited for AUTH (it waits at most `AUTH_TIMEOUT`
    /// for a challenge and an answer).
    needed_since: Option<Time>,
}

/// A unit of historic work: targets of one layer and the pagination of each
/// of the layer's filters. A pack is carried out with NIP-77 where the relay
/// supports it ([`NegJob`], one filter after the other) and with paged REQ
/// otherwise; a filter that falls back from NIP-77 is paged, the others are
/// done. Either way the pack's targets are confirmed when every filter is.
#[derive(Clone, Debug)]
struct Pack {
    layer: Layer,
    targets: BTreeSet<TargetKey>,
    filters: Vec<(FilterKind, FilterPaging)>,
    since: Option<u64>,
    ready_at: Time,
    /// Timeouts and unexplained refusals so far.
    attempts: u32,
    /// Travels in a REQ of its own (after an `error:`-style refusal of a
    /// shared REQ, to tell which pack the relay objects to).
    alone: bool,
    /// Already halved (or, with one target, retried) after such a refusal.
    split: bool,
    /// Carried by paged REQ only: its open filters fell back from NIP-77.
    paged: bool,
}

impl Pack {
    fn new(layer: Layer, since: Option<u64>, now: Time) -> Self {
        Pack {
            layer,
            targets: BTreeSet::new(),
            filters: layer
                .filter_kinds()
                .iter()
                .map(|k| (*k, FilterPaging::new(since)))
                .collect(),
            since,
            ready_at: now,
            attempts: 0,
            alone: false,
            split: false,
            paged: false,
        }
    }

    fn is_fresh(&self) -> bool {
        self.filters.iter().all(|(_, p)| p.is_fresh())
    }

    fn is_done(&self) -> bool {
        self.filters.iter().all(|(_, p)| p.is_done())
    }

    fn open_filters(&self) -> usize {
        self.filters.iter().filter(|(_, p)| !p.is_done()).count()
    }

    /// Restart pagination from the top (after a lost connection).
    fn restart(&mut self) {
        for (_, p) in &mut self.filters {
            *p = FilterPaging::new(self.since);
        }
    }
}

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
}

/// A pack carried out with NIP-77: its filters are reconciled one after the
/// other; a filter that falls back stays open for paged REQ.
#[derive(Clone, Debug)]
struct NegJob {
    pack: Pack,
    /// The filter in work (an index into `pack.filters`).
    filter: usize,
    step: NegStep,
    last_activity: Time,
}

#[derive(Clone, Debug)]
enum NegStep {
    /// Waiting for the host's local items.
    Items { request: u64 },
    /// NEG-OPEN sent; rounds under way. `answered`: the relay said something.
    Reconcile {
        sub: SubscriptionId,
        reconciler: Box<Reconciler>,
        answered: bool,
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

    fn kind(&self) -> Option<FilterKind> {
        self.pack.filters.get(self.filter).map(|(k, _)| *k)
    }

    /// Would an event on the fetch subscription be one we asked for?
    fn fetch_accepts(&self, event: &Event) -> bool {
        match (&self.step, self.kind()) {
            (NegStep::Fetch { wanted, .. }, Some(kind)) => {
                wanted.contains(&event.id) && matches(kind, &self.pack.targets, event)
            }
            _ => false,
        }
    }

    fn deadline(&self, config: &Config) -> Time {
        match self.step {
            NegStep::Reconcile { .. } => self.last_activity.plus(nip77::ANSWER_TIMEOUT),
            _ => self.last_activity.plus(config.timing.historic_timeout),
        }
    }
}

/// A live subscription: packs of targets, kept stable so that adding a target
/// resends one REQ, not all of them.
#[derive(Clone, Debug)]
struct LiveGroup {
    sub: SubscriptionId,
    /// Each pack: the filter kinds it carries (a layer's kinds, or a slice
    /// of them when the relay allows fewer filters per REQ than the layer
    /// has) and its targets.
    packs: Vec<(&'static [FilterKind], BTreeSet<TargetKey>)>,
    /// `since` of the REQ on the wire, when open.
    since: Option<Timestamp>,
    open: bool,
    dirty: bool,
    refused: bool,
    retry_at: Time,
    attempts: u32,
    /// A small group for targets added while live: updating it is cheap.
    tail: bool,
    /// Already split once after an `error:`-style refusal.
    split: bool,
    /// Since when the group should have been open but was not (refused,
    /// cooling down, no slot): at (re)open its targets catch up on the gap.
    gap_since: Option<Time>,
}

/// A live group open this much later than it should have been catches up.
const LIVE_GAP_MIN: Duration = Duration::from_secs(1);

/// Values per filter in a tail group: an update resends at most this many
/// values per filter instead of a whole dense group.
const TAIL_VALUES: usize = 10;

impl LiveGroup {
    /// A closed group, due at `retry_at`. It gets its subscription id when
    /// it is opened (every REQ goes out under a fresh id).
    fn new(
        packs: Vec<(&'static [FilterKind], BTreeSet<TargetKey>)>,
        retry_at: Time,
        tail: bool,
    ) -> Self {
        LiveGroup {
            sub: SubscriptionId::new(""),
            packs,
            since: None,
            open: false,
            dirty: true,
            refused: false,
            retry_at,
            attempts: 0,
            tail,
            split: false,
            gap_since: None,
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

    /// The REQ's filters: `limit: 0` (nothing stored) and the group's `since`.
    fn filters(&self, since: Timestamp) -> Vec<Filter> {
        let mut out = Vec::with_capacity(self.filter_count());
        for (kinds, set) in &self.packs {
            for kind in kinds.iter() {
                out.push(build_filter(*kind, set.iter()).since(since).limit(0));
            }
        }
        out
    }
}

/// One remote relay.
#[derive(Clone, Debug)]
pub struct Relay {
    pub(crate) url: RelayUrl,
    pub(crate) bootstrap: bool,
    /// Hashed: added and looked up for every input; sorted where iterated.
    pub(crate) targets: KeySet<TargetKey>,
    conn: Conn,
    pub(crate) backoff: Backoff,
    pub(crate) disconnected_at: Option<Time>,
    pub(crate) last_connected: Option<Time>,
    pub(crate) info: Option<RelayInfo>,
    pub(crate) learned_max_subs: Option<u32>,
    pub(crate) next_resync: Option<Time>,
    pub(crate) empty_since: Option<Time>,
    pub(crate) rng: Rng,
    pub(crate) confirmed: BTreeSet<TargetKey>,
    /// Targets in historic work, with how many packs hold each (a target
    /// can be in a full pass and a catch-up at once).
    pending: BTreeMap<TargetKey, u32>,
    pub(crate) given_up: BTreeMap<TargetKey, GiveUpReason>,
    queue: VecDeque<Pack>,
    active: BTreeMap<SubscriptionId, HistoricReq>,
    live: Vec<LiveGroup>,
    pub(crate) cooldown_until: Option<Time>,
    pub(crate) cooldown_strikes: u32,
    auth: Auth,
    /// Live subscriptions recently replaced by an update: their late events
    /// are still ours, their late CLOSED is stale.
    retired: VecDeque<SubscriptionId>,
    /// The deadline the engine's timer set holds for this relay.
    pub(crate) scheduled: Option<Time>,
    /// Targets changed while disconnected: live groups are packed anew at
    /// the next connect.
    live_stale: bool,
    /// REQs sent and not yet answered, most recent last (for NOTICE attribution).
    unanswered: Vec<SubscriptionId>,
    next_sub: u64,
    /// When targets the live budget cannot cover are next polled with a
    /// catch-up REQ, and when they last were.
    poll_at: Option<Time>,
    polled_at: Option<Time>,
    /// Newest `created_at` received per layer (discovery, repo, root).
    pub(crate) last_event_at: [Option<u64>; 3],
    pub(crate) stats: RelayStats,
    /// NIP-77 support as far as we know.
    pub(crate) nip77: Nip77Support,
    /// Packs in NIP-77 reconciliation.
    neg_jobs: Vec<NegJob>,
    next_request: u64,
}

/// Shared context of a relay call.
pub(crate) struct Ctx<'a> {
    pub config: &'a Config,
    pub out: &'a mut VecDeque<Command>,
    /// Ids the store rejected (NIP-77 items).
    pub rejected: &'a RejectedIds,
}

fn layer_index(l: Layer) -> usize {
    match l {
        Layer::Discovery => 0,
        Layer::Repo => 1,
        Layer::Root => 2,
    }
}

impl Relay {
    /// A new relay, due to connect at `now`.
    pub(crate) fn new(url: RelayUrl, seed: u64, now: Time) -> Self {
        let rng = Rng::for_stream(seed, url.as_str());
        Relay {
            url,
            bootstrap: false,
            targets: KeySet::default(),
            conn: Conn::Disconnected { retry_at: now },
            backoff: Backoff::default(),
            disconnected_at: None,
            last_connected: None,
            info: None,
            learned_max_subs: None,
            next_resync: None,
            empty_since: None,
            rng,
            confirmed: BTreeSet::new(),
            pending: BTreeMap::new(),
            given_up: BTreeMap::new(),
            queue: VecDeque::new(),
            active: BTreeMap::new(),
            live: Vec::new(),
            cooldown_until: None,
            cooldown_strikes: 0,
            auth: Auth::default(),
            retired: VecDeque::new(),
            live_stale: false,
            scheduled: None,
            poll_at: None,
            polled_at: None,
            unanswered: Vec::new(),
            next_sub: 0,
            last_event_at: [None; 3],
            stats: RelayStats::default(),
            nip77: Nip77Support::Unknown,
            neg_jobs: Vec::new(),
            next_request: 0,
        }
    }

    // ----- views -----------------------------------------------------------

    /// The relay's state for the status view.
    pub fn state(&self) -> RelayState {
        match self.conn {
            Conn::Disconnected { .. } if self.backoff.dead => RelayState::Dead,
            Conn::Disconnected { .. } => RelayState::Disconnected,
            Conn::Connecting { .. } => RelayState::Connecting,
            Conn::Connected { .. } if self.pending.is_empty() => RelayState::Live,
            Conn::Connected { .. } => RelayState::Syncing,
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        matches!(self.conn, Conn::Connected { .. })
    }

    pub(crate) fn is_disconnected(&self) -> bool {
        matches!(self.conn, Conn::Disconnected { .. })
    }

    pub(crate) fn retry_at(&self) -> Option<Time> {
        match self.conn {
            Conn::Disconnected { retry_at } => Some(retry_at),
            _ => None,
        }
    }

    pub(crate) fn budget(&self, config: &Config) -> Budget {
        Budget::derive(
            &config.default_budget,
            self.info.as_ref(),
            self.learned_max_subs,
        )
    }

    pub(crate) fn pending_targets(&self) -> impl Iterator<Item = &TargetKey> {
        self.pending.keys()
    }

    pub(crate) fn open_subscriptions(&self) -> usize {
        self.active.len() + self.neg_jobs.len() + self.live.iter().filter(|g| g.open).count()
    }

    pub(crate) fn queued_packs(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn live_uncovered(&self) -> usize {
        self.live
            .iter()
            .filter(|g| !g.open)
            .flat_map(|g| g.packs.iter().flat_map(|(_, t)| t.iter()))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// The filters of an open subscription, rebuilt from its targets.
    pub(crate) fn subscription_filters(
        &self,
        sub: &SubscriptionId,
        config: &Config,
    ) -> Option<Vec<Filter>> {
        if let Some(req) = self.active.get(sub) {
            let budget = self.budget(config);
            return Some(
                req.sent
                    .iter()
                    .filter_map(|(pi, fi)| {
                        let p = req.packs.get(*pi)?;
                        let (kind, paging) = p.filters.get(*fi)?;
                        Some(paging.apply(build_filter(*kind, p.targets.iter()), budget.page_limit))
                    })
                    .collect(),
            );
        }
        if let Some(NegStep::Fetch { current, .. }) = self
            .neg_jobs
            .iter()
            .find(|j| j.fetch_sub() == Some(sub))
            .map(|j| &j.step)
        {
            return Some(current.clone());
        }
        let g = self.live.iter().find(|g| g.open && g.sub == *sub)?;
        Some(g.filters(g.since.unwrap_or_default()))
    }

    /// Would an event for `sub` be accepted? (No state change.)
    pub(crate) fn check_event(&self, sub: &SubscriptionId, event: &Event) -> EventCheck {
        if let Some(req) = self.active.get(sub) {
            if req.matching(event).next().is_some() {
                return EventCheck::Accepted(SubscriptionMode::Historic);
            }
            return EventCheck::Unmatched;
        }
        if let Some(job) = self.neg_jobs.iter().find(|j| j.fetch_sub() == Some(sub)) {
            return if job.fetch_accepts(event) {
                EventCheck::Accepted(SubscriptionMode::Historic)
            } else {
                EventCheck::Unmatched
            };
        }
        let live_hit = match self.live.iter().find(|g| g.open && g.sub == *sub) {
            Some(g) => g.matches(event),
            // A live REQ replaced by an update: its late events are judged
            // against what we follow live now.
            None if self.retired.contains(sub) => self.live.iter().any(|g| g.matches(event)),
            None => return EventCheck::Unrequested,
        };
        if live_hit {
            EventCheck::Accepted(SubscriptionMode::Live)
        } else {
            EventCheck::Unmatched
        }
    }

    /// True when the relay has nothing to do and may be forgotten after grace.
    pub(crate) fn is_empty(&self) -> bool {
        self.targets.is_empty()
            && !self.bootstrap
            && self.pending.is_empty()
            && self.active.is_empty()
            && self.neg_jobs.is_empty()
    }

    fn wants_connection(&self) -> bool {
        self.bootstrap || !self.targets.is_empty()
    }

    /// The earliest time this relay needs `on_timer`.
    /// Work that is ready but blocked (no free slot) is not a deadline: what
    /// unblocks it (an EOSE, a cool-down ending) calls `pump` itself.
    pub(crate) fn next_deadline(&self, config: &Config, now: Time) -> Option<Time> {
        let t = &config.timing;
        let mut d: Option<Time> = None;
        let mut at = |x: Time| d = Some(d.map_or(x, |d| d.min(x)));
        if let Some(e) = self.empty_since {
            at(e.plus(t.empty_grace));
        }
        match self.conn {
            Conn::Disconnected { retry_at } => {
                if self.wants_connection() {
                    at(retry_at);
                }
            }
            Conn::Connecting { since } => at(since.plus(t.connect_timeout)),
            Conn::Connected { .. } => {
                for req in self.active.values() {
                    at(req.last_activity.plus(t.historic_timeout));
                }
                for job in &self.neg_jobs {
                    at(job.deadline(config));
                }
                if let Some(c) = self.cooldown_until {
                    at(c);
                }
                if let Some(r) = self.next_resync {
                    at(r);
                }
                if let Some(p) = self.poll_at {
                    at(p);
                }
                if let Some(p) = self.auth.pending_since.or(self.auth_wait_since()) {
                    at(p.plus(AUTH_TIMEOUT));
                }
                if self.cooldown_until.is_none() && !self.auth_blocks() {
                    let budget = self.budget(config);
                    if self.open_subscriptions() < budget.max_subscriptions as usize {
                        if let Some(r) = self
                            .queue
                            .iter()
                            .map(|p| p.ready_at)
                            .filter(|r| *r > now)
                            .min()
                        {
                            at(r);
                        }
                    }
                    for g in self
                        .live
                        .iter()
                        .filter(|g| g.dirty && !g.refused && g.retry_at > now)
                    {
                        at(g.retry_at);
                    }
                }
            }
        }
        d
    }

    fn auth_blocks(&self) -> bool {
        self.auth.needed && !self.auth.authenticated
    }

    // ----- targets ---------------------------------------------------------

    pub(crate) fn add_target(&mut self, target: TargetKey, now: Time, ctx: &mut Ctx<'_>) {
        if !self.targets.insert(target.clone()) {
            return;
        }
        self.empty_since = None;
        if self.is_connected() {
            self.live_add(&target, now, ctx.config);
        } else {
            // Packed in bulk at the next connect: cheaper than one by one.
            self.live_stale = true;
        }
        if self.is_connected()
            && !self.confirmed.contains(&target)
            && !self.pending.contains_key(&target)
            && !self.given_up.contains_key(&target)
        {
            self.enqueue_new(target, now, ctx.config);
        }
    }

    pub(crate) fn remove_target(&mut self, target: &TargetKey, ctx: &mut Ctx<'_>) {
        if self.bootstrap && *target == TargetKey::Discovery {
            return; // a bootstrap relay always carries layer 1
        }
        if !self.targets.remove(target) {
            return;
        }
        self.confirmed.remove(target);
        self.given_up.remove(target);
        if self.pending.remove(target).is_some() {
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
                self.unanswered.retain(|s| *s != sub);
                ctx.out.push_back(Command::Unsubscribe {
                    relay: self.url.clone(),
                    subscription: sub,
                });
            }
            for job in &mut self.neg_jobs {
                job.pack.targets.remove(target);
            }
            let (emptied, kept): (Vec<NegJob>, Vec<NegJob>) = std::mem::take(&mut self.neg_jobs)
                .into_iter()
                .partition(|j| j.pack.targets.is_empty());
            self.neg_jobs = kept;
            for job in emptied {
                self.close_job_sub(&job, ctx);
            }
        }
        if self.is_connected() {
            self.live_remove(target);
        } else {
            self.live_stale = true;
        }
    }

    /// Debug builds check after every input that `pending` counts exactly
    /// the packs that hold each target (a leak would leave work "pending"
    /// forever; a shortfall would confirm targets early).
    #[cfg(debug_assertions)]
    pub(crate) fn check_pending(&self) {
        let mut counted: BTreeMap<&TargetKey, u32> = BTreeMap::new();
        let packs = self
            .queue
            .iter()
            .chain(self.active.values().flat_map(|r| r.packs.iter()))
            .chain(self.neg_jobs.iter().map(|j| &j.pack));
        for p in packs {
            for t in &p.targets {
                *counted.entry(t).or_insert(0) += 1;
            }
        }
        let pending: BTreeMap<&TargetKey, u32> =
            self.pending.iter().map(|(t, n)| (t, *n)).collect();
        debug_assert_eq!(counted, pending, "pending out of step on {}", self.url);
    }

    /// The targets in order (they are hashed for speed; order matters wherever
    /// work is planned from them).
    pub(crate) fn sorted_targets(&self) -> Vec<&TargetKey> {
        let mut t: Vec<&TargetKey> = self.targets.iter().collect();
        t.sort_unstable();
        t
    }

    fn pend(&mut self, t: &TargetKey) {
        *self.pending.entry(t.clone()).or_insert(0) += 1;
    }

    /// One pack fewer holds `t`; true when none does any more.
    fn unpend(&mut self, t: &TargetKey) -> bool {
        match self.pending.get_mut(t) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.pending.remove(t);
                true
            }
            None => false,
        }
    }

    fn enqueue_new(&mut self, target: TargetKey, now: Time, config: &Config) {
        let cap = target
            .layer()
            .pack_capacity(self.budget(config).max_values_per_filter);
        self.pend(&target);
        if let Some(p) = self.queue.iter_mut().rev().find(|p| {
            p.layer == target.layer()
                && p.since.is_none()
                && p.is_fresh()
                && p.attempts == 0
                && !p.alone
        }) {
            if p.targets.len() < cap {
                p.targets.insert(target);
                return;
            }
        }
        // Wait a moment so that targets found together (the roots of one
        // page) share one REQ, and so that the live update goes out first.
        let mut p = Pack::new(target.layer(), None, now.plus(config.timing.batch_delay));
        p.targets.insert(target);
        self.queue.push_back(p);
    }

    /// Queues packs for `targets` (sorted), `since` bounding them below.
    fn enqueue_all(
        &mut self,
        targets: Vec<TargetKey>,
        since: Option<u64>,
        now: Time,
        config: &Config,
    ) {
        let values = self.budget(config).max_values_per_filter;
        let mut by_layer: BTreeMap<Layer, Vec<TargetKey>> = BTreeMap::new();
        for t in targets {
            by_layer.entry(t.layer()).or_default().push(t);
        }
        for (layer, ts) in by_layer {
            for chunk in ts.chunks(layer.pack_capacity(values)) {
                let mut p = Pack::new(layer, since, now);
                for t in chunk {
                    self.pend(t);
                    p.targets.insert(t.clone());
                }
                self.queue.push_back(p);
            }
        }
    }

    /// The three-way difference: queue every target that is neither pending,
    /// confirmed nor given up.
    fn plan_new_work(&mut self, now: Time, config: &Config) {
        let new: Vec<TargetKey> = self
            .sorted_targets()
            .into_iter()
            .filter(|t| {
                !self.pending.contains_key(*t)
                    && !self.confirmed.contains(*t)
                    && !self.given_up.contains_key(*t)
            })
            .cloned()
            .collect();
        self.enqueue_all(new, None, now, config);
    }

    // ----- live ------------------------------------------------------------

    /// Packs every target into dense live groups at once (at connect, when
    /// targets changed while disconnected): each layer's sorted targets are
    /// cut into packs of the budget's size, and packs are placed first-fit.
    fn pack_live(&mut self, config: &Config) {
        let budget = self.budget(config);
        let max_filters = (budget.max_filters_per_req as usize).max(1);
        self.live.clear();
        self.live_stale = false;
        let mut packs: Vec<(&'static [FilterKind], BTreeSet<TargetKey>)> = Vec::new();
        for layer in [Layer::Discovery, Layer::Repo, Layer::Root] {
            let of_layer: Vec<&TargetKey> = self
                .sorted_targets()
                .into_iter()
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
                .live
                .iter_mut()
                .find(|g| g.filter_count() + kinds.len() <= max_filters)
            {
                g.packs.push((kinds, set));
                continue;
            }
            self.live
                .push(LiveGroup::new(vec![(kinds, set)], Time::ZERO, false));
        }
    }

    /// Places a target in a live group. While the relay is live, new targets
    /// go to small *tail* groups, so that one new repo or root resends a few
    /// values, not a whole dense group; when no subscription slot is left for
    /// another tail, the tails are folded into the dense groups (one larger
    /// update, once per many additions).
    fn live_add(&mut self, target: &TargetKey, now: Time, config: &Config) {
        let budget = self.budget(config);
        let live = self.live.iter().any(|g| g.open);
        if live && target.layer() != Layer::Discovery {
            if self.add_to_tail(target, now, config, &budget) {
                return;
            }
            // No slot for another tail: fold them into the dense groups.
            let folded: BTreeSet<TargetKey> = self
                .live
                .iter_mut()
                .filter(|g| g.tail)
                .flat_map(|g| {
                    g.dirty = true;
                    std::mem::take(&mut g.packs)
                        .into_iter()
                        .flat_map(|(_, set)| set)
                })
                .collect();
            for t in &folded {
                self.add_dense(t, now, config, &budget);
            }
        }
        self.add_dense(target, now, config, &budget);
    }

    fn add_to_tail(
        &mut self,
        target: &TargetKey,
        now: Time,
        config: &Config,
        budget: &Budget,
    ) -> bool {
        let batch_at = now.plus(config.timing.batch_delay);
        let kinds = target.layer().filter_kinds();
        let need = kinds.len();
        let max_filters = budget.max_filters_per_req as usize;
        if need > max_filters {
            return false; // a layer spread over REQs is packed densely
        }
        // A tail is small, and never above the relay's value cap.
        let tail_values = TAIL_VALUES.min((budget.max_values_per_filter as usize).max(1));
        if let Some(g) = self
            .live
            .iter_mut()
            .rev()
            .find(|g| g.tail && !g.refused && !g.packs.is_empty())
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
                g.dirty = true;
                g.retry_at = g.retry_at.max(batch_at);
                return true;
            }
        }
        let live_cap = (budget.max_subscriptions as usize).saturating_sub(1).max(1);
        let groups = self.live.iter().filter(|g| !g.packs.is_empty()).count();
        if groups >= live_cap {
            return false;
        }
        self.live.push(LiveGroup::new(
            vec![(kinds, BTreeSet::from([target.clone()]))],
            batch_at,
            true,
        ));
        true
    }

    /// Packs a target densely: into the first dense group with room, once
    /// per slice of its layer's filter kinds that fits a REQ.
    fn add_dense(&mut self, target: &TargetKey, now: Time, config: &Config, budget: &Budget) {
        let max_filters = (budget.max_filters_per_req as usize).max(1);
        for kinds in target.layer().filter_kinds().chunks(max_filters) {
            self.add_dense_kinds(target, kinds, now, config, budget);
        }
    }

    fn add_dense_kinds(
        &mut self,
        target: &TargetKey,
        kinds: &'static [FilterKind],
        now: Time,
        config: &Config,
        budget: &Budget,
    ) {
        // Updates of an open live subscription are batched like new history.
        let batch_at = now.plus(config.timing.batch_delay);
        let cap = target.layer().pack_capacity(budget.max_values_per_filter);
        let max_filters = budget.max_filters_per_req as usize;
        for g in self.live.iter_mut().filter(|g| !g.tail && !g.refused) {
            if let Some((_, set)) = g
                .packs
                .iter_mut()
                .find(|(k, s)| *k == kinds && s.len() < cap)
            {
                set.insert(target.clone());
                g.dirty = true;
                if g.open {
                    g.retry_at = g.retry_at.max(batch_at);
                }
                return;
            }
        }
        for g in self.live.iter_mut().filter(|g| !g.tail && !g.refused) {
            if g.filter_count() + kinds.len() <= max_filters {
                g.packs.push((kinds, BTreeSet::from([target.clone()])));
                g.dirty = true;
                if g.open {
                    g.retry_at = g.retry_at.max(batch_at);
                }
                return;
            }
        }
        self.live.push(LiveGroup::new(
            vec![(kinds, BTreeSet::from([target.clone()]))],
            Time::ZERO,
            false,
        ));
    }

    fn live_remove(&mut self, target: &TargetKey) {
        for g in &mut self.live {
            let before = g.packs.len();
            let mut hit = false;
            for (_, set) in &mut g.packs {
                hit |= set.remove(target);
            }
            g.packs.retain(|(_, s)| !s.is_empty());
            if hit || g.packs.len() != before {
                g.dirty = true;
            }
        }
    }

    // ----- lifecycle -------------------------------------------------------

    /// Starts a connection attempt when one is due.
    pub(crate) fn maybe_connect(&mut self, now: Time, ctx: &mut Ctx<'_>) {
        let Conn::Disconnected { retry_at } = self.conn else {
            return;
        };
        if retry_at > now || !self.wants_connection() {
            return;
        }
        // Asked with every attempt until a document (or the host's word that
        // there is none: an empty `RelayInfo`) arrives: a relay that was down
        // at first contact still gets planned within its limits.
        if self.info.is_none() {
            ctx.out.push_back(Command::FetchRelayInfo {
                relay: self.url.clone(),
            });
        }
        self.stats.connects += 1;
        self.conn = Conn::Connecting { since: now };
        ctx.out.push_back(Command::Connect {
            relay: self.url.clone(),
        });
    }

    pub(crate) fn on_connected(&mut self, now: Time, ctx: &mut Ctx<'_>) {
        if !matches!(self.conn, Conn::Connecting { .. }) {
            // Not an attempt we are waiting for (e.g. one we already gave up
            // on and told the host to drop): ignore it.
            self.stats.stale_inputs += 1;
            return;
        }
        let t = &ctx.config.timing;
        let quick = self
            .disconnected_at
            .is_some_and(|d| now.since(d) < t.quick_reconnect_window)
            && !self.confirmed.is_empty();
        self.conn = Conn::Connected { since: now };
        self.backoff.dead = false;
        // A challenge that came with the handshake is kept for this session.
        let challenge = self.auth.challenge.take();
        self.end_session();
        self.auth.challenge = challenge;
        if quick {
            // Catch up on the gap: since the last moment we know we were
            // connected, minus a safety margin (a Unix timestamp, not a duration).
            let last = self.last_connected.or(self.disconnected_at).unwrap_or(now);
            let since = last.minus(t.catch_up_margin).as_secs();
            let confirmed: Vec<TargetKey> = self
                .confirmed
                .iter()
                .filter(|c| self.targets.contains(*c))
                .cloned()
                .collect();
            self.enqueue_all(confirmed, Some(since), now, ctx.config);
        } else {
            self.confirmed.clear();
        }
        self.plan_new_work(now, ctx.config);
        if self.live_stale {
            self.pack_live(ctx.config);
        }
        for g in &mut self.live {
            g.open = false;
            g.dirty = true;
            g.retry_at = now;
            g.gap_since = Some(now);
        }
        self.last_connected = Some(now);
        self.poll_at = None;
        self.polled_at = None;
        // An overdue daily pass (missed while disconnected) runs at the next timer.
        if self.next_resync.is_none() {
            self.next_resync = Some(now.plus(self.rng.between(t.resync_min, t.resync_max)));
        }
        self.pump(now, ctx);
    }

    fn lose_connection(&mut self, now: Time, ctx: &mut Ctx<'_>) {
        // A relay that drops the connection after NEG-OPEN, before any answer,
        // is taken not to speak NIP-77 (its packs go paged after reconnecting).
        let dropped_on_open = self
            .neg_jobs
            .iter()
            .filter(|j| {
                matches!(
                    j.step,
                    NegStep::Reconcile {
                        answered: false,
                        ..
                    }
                )
            })
            .count();
        if dropped_on_open > 0 {
            self.nip77 = Nip77Support::Unsupported;
            self.stats.reconcile_fallbacks += dropped_on_open as u64;
        }
        let t = &ctx.config.timing;
        if let Conn::Connected { since } = self.conn {
            if now.since(since) >= t.stable_after {
                self.backoff.failures = 0;
                self.backoff.failing_since = None;
            } else if self.open_subscriptions() > 2 {
                // Dropped soon after we opened several subscriptions: some
                // relays answer one too many by closing the connection, so
                // hold fewer next time (otherwise it would flap forever).
                self.learn_lower_budget();
            }
            self.last_connected = Some(now);
            self.disconnected_at = Some(now);
        }
        self.stats.failures += 1;
        self.backoff.failures = self.backoff.failures.saturating_add(1);
        let failing_since = *self.backoff.failing_since.get_or_insert(now);
        let delay = if now.since(failing_since) >= t.dead_after {
            self.backoff.dead = true;
            self.rng.jitter(t.dead_retry, 0.05)
        } else {
            let exp = self.backoff.failures.saturating_sub(1).min(30);
            let base = t
                .backoff_initial
                .saturating_mul(1u32 << exp.min(20))
                .min(t.backoff_max);
            self.rng.jitter(base, t.backoff_jitter).min(t.backoff_max)
        };
        self.conn = Conn::Disconnected {
            retry_at: now.plus(delay.max(Duration::from_millis(1))),
        };
        self.end_session();
    }

    /// What lives only as long as one connection: historic work on the wire
    /// or queued (confirmed state stays), open live REQs, cool-down, AUTH.
    fn end_session(&mut self) {
        self.queue.clear();
        self.active.clear();
        self.neg_jobs.clear();
        self.pending.clear();
        self.unanswered.clear();
        self.retired.clear();
        self.cooldown_until = None;
        self.auth = Auth::default();
        for g in &mut self.live {
            g.open = false;
            g.dirty = true;
        }
    }

    pub(crate) fn on_connect_failed(&mut self, now: Time, ctx: &mut Ctx<'_>) {
        if !matches!(self.conn, Conn::Connecting { .. }) {
            // A late report of an attempt already given up (or connected).
            self.stats.stale_inputs += 1;
            return;
        }
        self.lose_connection(now, ctx);
    }

    pub(crate) fn on_disconnected(&mut self, now: Time, ctx: &mut Ctx<'_>) {
        if self.is_disconnected() {
            return;
        }
        self.lose_connection(now, ctx);
    }

    /// Forgets the connection from our side (the engine decided to close it).
    pub(crate) fn close(&mut self, now: Time, ctx: &mut Ctx<'_>) {
        if !self.is_disconnected() {
            ctx.out.push_back(Command::Disconnect {
                relay: self.url.clone(),
            });
            if let Conn::Connected { .. } = self.conn {
                self.last_connected = Some(now);
                self.disconnected_at = Some(now);
            }
            self.conn = Conn::Disconnected { retry_at: now };
            self.end_session();
        }
    }

    pub(crate) fn on_info(&mut self, info: RelayInfo, now: Time, ctx: &mut Ctx<'_>) {
        let before = self.budget(ctx.config);
        self.info = Some(info);
        if self.budget(ctx.config) != before {
            // Work refused as malformed may only have been too wide for the
            // limits we just learned: plan it again within them.
            self.given_up.retain(|_, r| *r != GiveUpReason::Rejected);
            if self.is_connected() {
                self.plan_new_work(now, ctx.config);
            }
        }
        self.repack_live(now, ctx);
        self.shed_historic(now, ctx);
        self.pump(now, ctx);
    }

    /// Closes historic REQs beyond a budget that shrank under them (a NIP-11
    /// document that arrived after the first wave), keeping their pagination
    /// for later.
    fn shed_historic(&mut self, now: Time, ctx: &mut Ctx<'_>) {
        let max = self.budget(ctx.config).max_subscriptions as usize;
        let live_open = self
            .live
            .iter()
            .filter(|g| g.open)
            .count()
            .min(max.saturating_sub(1).max(1));
        while self.active.len() + self.neg_jobs.len() + live_open > max {
            if let Some(sub) = self.active.keys().next_back().cloned() {
                ctx.out.push_back(Command::Unsubscribe {
                    relay: self.url.clone(),
                    subscription: sub.clone(),
                });
                self.requeue(&sub, now);
            } else if let Some(job) = self.neg_jobs.pop() {
                // A NIP-77 job gives its slot back too; its pack goes back
                // to the queue (filters already reconciled stay done).
                self.close_job_sub(&job, ctx);
                let mut pack = job.pack;
                pack.ready_at = now;
                self.queue.push_front(pack);
            } else {
                break;
            }
        }
    }

    /// Rebuilds the live groups when they no longer fit the budget (limits
    /// learned after they were packed): close them and pack again.
    fn repack_live(&mut self, now: Time, ctx: &mut Ctx<'_>) {
        if !self.is_connected() {
            self.live_stale = true; // packed at the next connect
            return;
        }
        let budget = self.budget(ctx.config);
        let fits = self.live.iter().all(|g| {
            g.filter_count() <= budget.max_filters_per_req as usize
                && g.packs.iter().all(|(kinds, set)| {
                    kinds.first().is_none_or(|k| {
                        set.len() <= k.layer().pack_capacity(budget.max_values_per_filter)
                    })
                })
        });
        if fits {
            return;
        }
        let mut targets = Vec::new();
        for g in std::mem::take(&mut self.live) {
            if g.open {
                self.unanswered.retain(|s| *s != g.sub);
                ctx.out.push_back(Command::Unsubscribe {
                    relay: self.url.clone(),
                    subscription: g.sub.clone(),
                });
            }
            targets.extend(g.packs.into_iter().flat_map(|(_, set)| set));
        }
        targets.sort();
        targets.dedup();
        for t in &targets {
            self.live_add(t, now, ctx.config);
        }
        for g in &mut self.live {
            g.retry_at = now;
        }
    }

    // ----- timers ----------------------------------------------------------

    pub(crate) fn on_timer(&mut self, now: Time, ctx: &mut Ctx<'_>) {
        let t = ctx.config.timing.clone();
        match self.conn {
            Conn::Disconnected { .. } => self.maybe_connect(now, ctx),
            Conn::Connecting { since } => {
                if now.since(since) >= t.connect_timeout {
                    ctx.out.push_back(Command::Disconnect {
                        relay: self.url.clone(),
                    });
                    self.lose_connection(now, ctx);
                }
            }
            Conn::Connected { .. } => {
                self.last_connected = Some(now);
                if self.cooldown_until.is_some_and(|c| c <= now) {
                    self.cooldown_until = None;
                }
                if self
                    .auth
                    .pending_since
                    .or(self.auth_wait_since())
                    .is_some_and(|p| now.since(p) >= AUTH_TIMEOUT)
                {
                    self.auth_failed(now);
                }
                let timed_out: Vec<SubscriptionId> = self
                    .active
                    .iter()
                    .filter(|(_, r)| now.since(r.last_activity) >= t.historic_timeout)
                    .map(|(s, _)| s.clone())
                    .collect();
                if !timed_out.is_empty() {
                    // Silence is a refusal style too: hold fewer at once.
                    self.learn_lower_budget();
                }
                for sub in timed_out {
                    self.stats.timeouts += 1;
                    ctx.out.push_back(Command::Unsubscribe {
                        relay: self.url.clone(),
                        subscription: sub.clone(),
                    });
                    self.retry_later(&sub, now, &t);
                }
                self.neg_timeouts(now, ctx);
                if self.next_resync.is_some_and(|r| r <= now) {
                    self.daily_pass(now, ctx);
                }
                if self.poll_at.is_some_and(|p| p <= now) {
                    self.poll_uncovered(now, ctx.config);
                }
                self.pump(now, ctx);
            }
        }
    }

    /// Re-queues a historic REQ's packs with backoff, or gives them up.
    fn retry_later(&mut self, sub: &SubscriptionId, now: Time, t: &crate::config::Timing) {
        self.unanswered.retain(|s| s != sub);
        let Some(req) = self.active.remove(sub) else {
            return;
        };
        // Packs emptied by removed targets are dropped, never sent bare.
        for mut p in req.packs.into_iter().filter(|p| !p.targets.is_empty()) {
            p.attempts += 1;
            if p.attempts >= t.historic_max_attempts {
                self.give_up(p, GiveUpReason::Unresponsive);
                continue;
            }
            let exp = (p.attempts - 1).min(10);
            let delay = t
                .backoff_initial
                .saturating_mul(1 << exp)
                .min(t.backoff_max);
            p.ready_at = now.plus(self.rng.jitter(delay, t.backoff_jitter));
            self.queue.push_back(p);
        }
    }

    fn give_up(&mut self, p: Pack, reason: GiveUpReason) {
        for t in p.targets {
            self.unpend(&t);
            if !self.confirmed.contains(&t) {
                self.given_up.insert(t, reason);
            }
        }
    }

    fn requeue(&mut self, sub: &SubscriptionId, ready_at: Time) {
        self.unanswered.retain(|s| s != sub);
        if let Some(req) = self.active.remove(sub) {
            for mut p in req.packs.into_iter().filter(|p| !p.targets.is_empty()) {
                p.ready_at = ready_at;
                self.queue.push_front(p);
            }
        }
    }

    /// A catch-up pass over the targets no live subscription covers, from
    /// the previous poll (minus the safety margin) on.
    fn poll_uncovered(&mut self, now: Time, config: &Config) {
        let since = self
            .polled_at
            .unwrap_or(now)
            .minus(config.timing.catch_up_margin)
            .as_secs();
        let uncovered: BTreeSet<TargetKey> = self
            .live
            .iter()
            .filter(|g| !g.open && !g.refused)
            .flat_map(|g| g.packs.iter().flat_map(|(_, set)| set.iter()))
            .filter(|t| !self.given_up.contains_key(*t))
            .cloned()
            .collect();
        self.enqueue_all(uncovered.into_iter().collect(), Some(since), now, config);
        self.polled_at = Some(now);
        self.poll_at = Some(now.plus(config.timing.uncovered_poll));
    }

    /// The daily re-sync: forgive refusals and run a full historic pass over
    /// every target. Confirmed state is kept until the pass replaces it.
    fn daily_pass(&mut self, now: Time, ctx: &mut Ctx<'_>) {
        let t = &ctx.config.timing;
        self.next_resync = Some(now.plus(self.rng.between(t.resync_min, t.resync_max)));
        self.given_up.clear();
        self.learned_max_subs = None;
        // Support is probed again (spec section 7: not abandoned forever).
        if self.nip77 == Nip77Support::Unsupported {
            self.nip77 = Nip77Support::Unknown;
        }
        self.auth.needed = false;
        self.cooldown_strikes = 0;
        for g in &mut self.live {
            if g.refused {
                g.refused = false;
                g.dirty = true;
                g.attempts = 0;
                g.retry_at = now;
            }
        }
        // Confirmed entries for targets we no longer carry are dropped here.
        let targets = &self.targets;
        self.confirmed.retain(|c| targets.contains(c));
        // The full pass supersedes catch-up work (bounded by `since`): queued
        // catch-up packs are dropped, and targets still in one on the wire
        // get a full pack as well. Only targets already in a full pass are
        // left alone.
        let mut superseded = Vec::new();
        self.queue.retain(|p| {
            if p.since.is_some() {
                superseded.extend(p.targets.iter().cloned());
                false
            } else {
                true
            }
        });
        for t in superseded {
            self.unpend(&t);
        }
        let in_full_pass: BTreeSet<&TargetKey> = self
            .queue
            .iter()
            .chain(self.active.values().flat_map(|r| r.packs.iter()))
            .chain(self.neg_jobs.iter().map(|j| &j.pack))
            .filter(|p| p.since.is_none())
            .flat_map(|p| p.targets.iter())
            .collect();
        let all: Vec<TargetKey> = self
            .sorted_targets()
            .into_iter()
            .filter(|t| !in_full_pass.contains(t))
            .cloned()
            .collect();
        self.enqueue_all(all, None, now, ctx.config);
        ctx.out.push_back(Command::FetchRelayInfo {
            relay: self.url.clone(),
        });
    }

    // ----- sending ---------------------------------------------------------

    /// Sends whatever the budget allows: live updates first, then historic pages.
    pub(crate) fn pump(&mut self, now: Time, ctx: &mut Ctx<'_>) {
        if !self.is_connected() || self.cooldown_until.is_some_and(|c| c > now) {
            return;
        }
        let budget = self.budget(ctx.config);
        let max = budget.max_subscriptions as usize;
        let historic_waiting =
            !self.queue.is_empty() || !self.active.is_empty() || !self.neg_jobs.is_empty();
        // With a single slot, live waits until history is done.
        let live_cap = if max >= 2 {
            max - 1
        } else if historic_waiting {
            0
        } else {
            1
        };
        self.flush_live(now, live_cap, max, ctx);
        if self.auth_blocks() {
            return;
        }
        loop {
            if self.open_subscriptions() >= max {
                break;
            }
            if !self.send_next_req(now, &budget, ctx) {
                break;
            }
        }
    }

    /// Sends live updates and opens live groups: at most `live_cap` live
    /// groups, and never past `max` subscriptions with the historic ones.
    fn flush_live(&mut self, now: Time, live_cap: usize, max: usize, ctx: &mut Ctx<'_>) {
        let mut open = self.live.iter().filter(|g| g.open).count();
        let mut gaps: Vec<(Time, Vec<TargetKey>)> = Vec::new();
        // Close open groups beyond the cap, and groups that became empty.
        for g in self.live.iter_mut().rev() {
            if g.open && (open > live_cap || g.packs.is_empty()) {
                self.unanswered.retain(|s| *s != g.sub);
                ctx.out.push_back(Command::Unsubscribe {
                    relay: self.url.clone(),
                    subscription: g.sub.clone(),
                });
                g.open = false;
                g.dirty = !g.packs.is_empty();
                if g.dirty {
                    g.gap_since.get_or_insert(now);
                }
                open -= 1;
            }
        }
        self.live.retain(|g| g.open || !g.packs.is_empty());
        for g in &mut self.live {
            if !g.dirty || g.refused || g.retry_at > now || g.packs.is_empty() {
                continue;
            }
            // NIP-77 jobs hold a slot each, like historic REQs.
            let historic = self.active.len() + self.neg_jobs.len();
            if !g.open && (open >= live_cap || open + historic >= max) {
                continue;
            }
            // `since` a little before now: relays apply it to new events too,
            // and a publisher whose clock runs a few minutes slow must not be
            // missed. An update keeps the `since` of the REQ it replaces.
            let since = match (g.open, g.since) {
                (true, Some(since)) => since,
                _ => now.minus(ctx.config.timing.live_since_margin).timestamp(),
            };
            let filters = g.filters(since);
            if !g.open {
                if let Some(t) = g.gap_since.take().filter(|t| now.since(*t) >= LIVE_GAP_MIN) {
                    let targets: Vec<TargetKey> = g
                        .packs
                        .iter()
                        .flat_map(|(_, set)| set.iter().cloned())
                        .collect();
                    gaps.push((t, targets));
                }
            }
            if g.open {
                // An update goes out under a fresh id, after closing the old
                // one: a late CLOSED or EVENT for the old REQ can then never be
                // mistaken for the new one (same-id replacement is ambiguous).
                ctx.out.push_back(Command::Unsubscribe {
                    relay: self.url.clone(),
                    subscription: g.sub.clone(),
                });
                self.unanswered.retain(|s| *s != g.sub);
                self.retired.push_back(g.sub.clone());
                if self.retired.len() > MAX_RETIRED {
                    self.retired.pop_front();
                }
            } else {
                open += 1;
            }
            self.next_sub += 1;
            g.sub = SubscriptionId::new(format!("live-{}", self.next_sub));
            g.open = true;
            g.dirty = false;
            g.since = Some(since);
            self.unanswered.push(g.sub.clone());
            ctx.out.push_back(Command::Subscribe {
                relay: self.url.clone(),
                subscription: g.sub.clone(),
                filters,
                mode: SubscriptionMode::Live,
            });
        }
        // What was published while a group could not be open is caught up
        // on now that it is (history already sent covers only until then).
        for (t, targets) in gaps {
            let since = t.minus(ctx.config.timing.catch_up_margin).as_secs();
            let fresh: Vec<TargetKey> = targets
                .into_iter()
                .filter(|t| self.targets.contains(t))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            self.enqueue_all(fresh, Some(since), now, ctx.config);
        }
        // Targets no live slot can cover are polled instead, so that what
        // is published to them still arrives (within the poll interval).
        let uncovered = self
            .live
            .iter()
            .any(|g| !g.open && !g.refused && !g.packs.is_empty());
        if !uncovered {
            self.poll_at = None;
        } else if self.poll_at.is_none() {
            self.poll_at = Some(now.plus(ctx.config.timing.uncovered_poll));
            self.polled_at.get_or_insert(now);
        }
    }

    /// Forms one historic REQ from ready packs. Returns false when nothing is ready.
    fn send_next_req(&mut self, now: Time, budget: &Budget, ctx: &mut Ctx<'_>) -> bool {
        self.queue.retain(|p| !p.targets.is_empty());
        // While a probe finds out whether the relay speaks NIP-77, only packs
        // already bound for paged REQ go out.
        let probing = self.neg_probing() && !self.neg_jobs.is_empty();
        let Some(first) = self
            .queue
            .iter()
            .position(|p| p.ready_at <= now && (p.paged || !probing))
        else {
            return false;
        };
        let max_filters = budget.max_filters_per_req as usize;
        let Some(mut head) = self.queue.remove(first) else {
            return false;
        };
        // Coalesce fresh packs of the same shape into the head (values per filter).
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
                                self.unpend(&t);
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
        if !head.paged && ctx.config.nip77 && self.nip77 != Nip77Support::Unsupported {
            self.start_job(head, now, ctx);
            return true;
        }
        // A pack singled out after a refusal travels alone; others share the REQ.
        let alone = head.alone;
        let mut packs = vec![head];
        let mut filters = packs[0].open_filters();
        let mut i = 0;
        while !alone && i < self.queue.len() && filters < max_filters {
            let p = &self.queue[i];
            if p.ready_at <= now && !p.alone && filters + p.open_filters() <= max_filters {
                filters += p.open_filters();
                if let Some(p) = self.queue.remove(i) {
                    packs.push(p);
                }
            } else {
                i += 1;
            }
        }
        self.next_sub += 1;
        let sub = SubscriptionId::new(format!("hist-{}", self.next_sub));
        let mut req = HistoricReq {
            packs,
            sent: Vec::new(),
            last_activity: now,
        };
        let filters = Self::fill_page(&mut req, budget);
        self.send_req(sub, req, filters, now, ctx);
        true
    }

    /// Builds the next page's filters: the REQ's unfinished filters, at most
    /// `max_filters_per_req` of them (a pack wider than that is worked
    /// through in windows, on the same subscription).
    fn fill_page(req: &mut HistoricReq, budget: &Budget) -> Vec<Filter> {
        req.sent.clear();
        let max = (budget.max_filters_per_req as usize).max(1);
        let mut filters = Vec::new();
        for (pi, p) in req.packs.iter_mut().enumerate() {
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
                req.sent.push((pi, fi));
            }
        }
        filters
    }

    fn send_req(
        &mut self,
        sub: SubscriptionId,
        mut req: HistoricReq,
        filters: Vec<Filter>,
        now: Time,
        ctx: &mut Ctx<'_>,
    ) {
        req.last_activity = now;
        self.stats.reqs_sent += 1;
        self.unanswered.retain(|s| *s != sub);
        self.unanswered.push(sub.clone());
        ctx.out.push_back(Command::Subscribe {
            relay: self.url.clone(),
            subscription: sub.clone(),
            filters,
            mode: SubscriptionMode::Historic,
        });
        self.active.insert(sub, req);
    }

    // ----- what the relay says ----------------------------------------------

    pub(crate) fn on_event(
        &mut self,
        sub: &SubscriptionId,
        event: &Event,
        now: Time,
    ) -> EventCheck {
        if let Some(job) = self
            .neg_jobs
            .iter_mut()
            .find(|j| j.fetch_sub() == Some(sub))
        {
            if !job.fetch_accepts(event) {
                self.stats.events_unmatched += 1;
                return EventCheck::Unmatched;
            }
            if let NegStep::Fetch { got, .. } = &mut job.step {
                got.insert(event.id);
            }
            job.last_activity = now;
            self.stats.events_received += 1;
            let at = event.created_at.as_secs();
            if let Some(c) = self.last_event_at.get_mut(layer_index(event_layer(event))) {
                *c = Some(c.map_or(at, |c| c.max(at)));
            }
            return EventCheck::Accepted(SubscriptionMode::Historic);
        }
        // Historic events are matched once, for both the verdict and paging.
        let hits: Option<Vec<(usize, usize)>> = self.active.get(sub).map(|req| {
            req.matching(event)
                .filter_map(|i| req.sent.get(i).copied())
                .collect()
        });
        let check = match &hits {
            Some(h) if h.is_empty() => EventCheck::Unmatched,
            Some(_) => EventCheck::Accepted(SubscriptionMode::Historic),
            None => self.check_event(sub, event),
        };
        match check {
            EventCheck::Unrequested => self.stats.events_unrequested += 1,
            EventCheck::Unmatched => self.stats.events_unmatched += 1,
            EventCheck::Accepted(_) => {
                self.stats.events_received += 1;
                self.unanswered.retain(|s| s != sub);
                let at = event.created_at.as_secs();
                if let Some(c) = self.last_event_at.get_mut(layer_index(event_layer(event))) {
                    *c = Some(c.map_or(at, |c| c.max(at)));
                }
                if let (Some(req), Some(hits)) = (self.active.get_mut(sub), hits) {
                    req.last_activity = now;
                    for (pi, fi) in hits {
                        if let Some((_, paging)) =
                            req.packs.get_mut(pi).and_then(|p| p.filters.get_mut(fi))
                        {
                            paging.observe(event.id, at);
                        }
                    }
                }
            }
        }
        check
    }

    pub(crate) fn on_eose(&mut self, sub: &SubscriptionId, now: Time, ctx: &mut Ctx<'_>) {
        self.unanswered.retain(|s| s != sub);
        self.stats.last_eose = Some(now);
        if let Some(i) = self
            .neg_jobs
            .iter()
            .position(|j| j.fetch_sub() == Some(sub))
        {
            let job = self.neg_jobs.remove(i);
            self.cooldown_strikes = 0;
            self.on_fetch_eose(job, now, ctx);
            self.pump(now, ctx);
            return;
        }
        let Some(mut req) = self.active.remove(sub) else {
            return; // live EOSE, or stale: noted and ignored
        };
        self.cooldown_strikes = 0;
        let budget = self.budget(ctx.config);
        for (pi, fi) in req.sent.clone() {
            if let Some((_, paging)) = req.packs.get_mut(pi).and_then(|p| p.filters.get_mut(fi)) {
                paging.end_page(budget.page_limit, budget.max_page_limit);
            }
        }
        let mut remaining = Vec::new();
        for p in req.packs {
            if p.targets.is_empty() {
                continue;
            }
            if p.is_done() {
                self.confirm(p.targets);
            } else {
                remaining.push(p);
            }
        }
        let cooling = self.cooldown_until.filter(|c| *c > now);
        if remaining.is_empty() || cooling.is_some() {
            ctx.out.push_back(Command::Unsubscribe {
                relay: self.url.clone(),
                subscription: sub.clone(),
            });
            // While cooling down, the rest of the pass waits (pagination kept).
            for mut p in remaining {
                p.ready_at = cooling.unwrap_or(now);
                self.queue.push_front(p);
            }
        } else {
            // Next page on the same subscription id: the REQ replaces the old
            // one, and pages are strictly sequential (sent after EOSE), so no
            // late message of the previous page can be confused with this one.
            req.packs = remaining;
            let filters = Self::fill_page(&mut req, &budget);
            self.send_req(sub.clone(), req, filters, now, ctx);
        }
        self.pump(now, ctx);
    }

    pub(crate) fn on_closed(
        &mut self,
        sub: &SubscriptionId,
        message: &str,
        now: Time,
        ctx: &mut Ctx<'_>,
    ) {
        let prefix = message
            .split_once(':')
            .map(|(p, _)| p.trim().to_ascii_lowercase());
        let reason = match prefix.as_deref() {
            Some(
                p @ ("rate-limited" | "auth-required" | "restricted" | "blocked" | "error"
                | "invalid" | "unsupported"),
            ) => p.to_owned(),
            _ => "other".to_owned(),
        };
        let held = self.active.contains_key(sub)
            || self.live.iter().any(|g| g.open && g.sub == *sub)
            || self
                .neg_jobs
                .iter()
                .any(|j| j.neg_sub() == Some(sub) || j.fetch_sub() == Some(sub));
        if !held && reason != "rate-limited" {
            // Some relays (rust-nostr's LocalRelay) acknowledge our CLOSE
            // with a CLOSED: not a refusal of anything we hold.
            self.unanswered.retain(|s| s != sub);
            self.stats.stale_inputs += 1;
            return;
        }
        self.refuse(sub, &reason, now, ctx);
    }

    fn refuse(&mut self, sub: &SubscriptionId, reason: &str, now: Time, ctx: &mut Ctx<'_>) {
        *self.stats.refusals.entry(reason.to_owned()).or_insert(0) += 1;
        self.unanswered.retain(|s| s != sub);
        let t = ctx.config.timing.clone();
        if let Some(i) = self
            .neg_jobs
            .iter()
            .position(|j| j.neg_sub() == Some(sub) || j.fetch_sub() == Some(sub))
        {
            let job = self.neg_jobs.remove(i);
            if job.neg_sub().is_some() {
                // A CLOSED for NEG-OPEN: the relay does not reconcile with us.
                self.nip77 = Nip77Support::Unsupported;
            }
            if reason == "rate-limited" {
                self.learn_lower_budget();
                self.cool_down(now, &t);
            }
            self.fall_back(job, now, ctx);
            self.pump(now, ctx);
            return;
        }
        let is_live = self.live.iter().any(|g| g.sub == *sub && g.open);
        if !is_live && !self.active.contains_key(sub) {
            if reason == "rate-limited" {
                self.cool_down(now, &t);
            }
            return; // a subscription we no longer hold
        }
        match reason {
            "rate-limited" => {
                self.learn_lower_budget();
                self.cool_down(now, &t);
                let until = self.cooldown_until.unwrap_or(now);
                self.requeue(sub, until);
                self.live_retry(sub, now, until, false);
            }
            "auth-required" if ctx.config.auth_enabled && self.auth.authenticated => {
                // Authenticated and still refused: this relay does not serve
                // us. Asking again would only loop.
                self.give_up_sub(sub, GiveUpReason::AuthRequired);
            }
            "auth-required" if ctx.config.auth_enabled => {
                self.auth.needed = true;
                self.auth.needed_since.get_or_insert(now);
                self.requeue(sub, now);
                self.live_retry(sub, now, now, false);
                self.try_authenticate(now, ctx);
            }
            "auth-required" => {
                self.give_up_sub(sub, GiveUpReason::AuthRequired);
            }
            "restricted" | "blocked" => {
                self.give_up_sub(sub, GiveUpReason::Refused);
            }
            "error" | "invalid" | "unsupported" => {
                if let Some(req) = self.active.remove(sub) {
                    let packs: Vec<Pack> = req
                        .packs
                        .into_iter()
                        .filter(|p| !p.targets.is_empty())
                        .collect();
                    let many = packs.len() > 1;
                    for mut p in packs {
                        if many {
                            // First find out which pack the relay objects to:
                            // each goes again in a REQ of its own.
                            p.alone = true;
                            p.ready_at = now;
                            self.queue.push_front(p);
                        } else if p.split {
                            self.give_up(p, GiveUpReason::Rejected);
                        } else if p.targets.len() < 2 {
                            // Nothing to halve: one more try, alone.
                            p.alone = true;
                            p.split = true;
                            p.ready_at = now;
                            self.queue.push_front(p);
                        } else {
                            let mut a = p.clone();
                            let mut b = p;
                            let half = a.targets.len() / 2;
                            let rest: BTreeSet<TargetKey> =
                                a.targets.iter().skip(half).cloned().collect();
                            a.targets.retain(|t| !rest.contains(t));
                            b.targets = rest;
                            for x in [&mut a, &mut b] {
                                x.alone = true;
                                x.split = true;
                                x.ready_at = now;
                                x.restart();
                            }
                            self.queue.push_front(b);
                            self.queue.push_front(a);
                        }
                    }
                } else {
                    self.split_live(sub, now);
                }
            }
            _ => {
                if self.active.contains_key(sub) {
                    self.retry_later(sub, now, &t);
                } else {
                    let attempts = self
                        .live
                        .iter()
                        .find(|g| g.sub == *sub)
                        .map_or(0, |g| g.attempts);
                    let delay = t
                        .backoff_initial
                        .saturating_mul(1 << attempts.min(10))
                        .min(t.backoff_max);
                    let at = now.plus(self.rng.jitter(delay, t.backoff_jitter));
                    self.live_retry(sub, now, at, true);
                }
            }
        }
        self.pump(now, ctx);
    }

    /// Holds one subscription fewer than are open now. Two slots (one live,
    /// one historic) is the floor: a relay that refuses even that is rate
    /// limiting, not counting.
    fn learn_lower_budget(&mut self) {
        let learned = (self.open_subscriptions() as u32).saturating_sub(1).max(2);
        self.learned_max_subs = Some(self.learned_max_subs.map_or(learned, |l| l.min(learned)));
    }

    fn live_retry(&mut self, sub: &SubscriptionId, now: Time, at: Time, count: bool) {
        if let Some(g) = self.live.iter_mut().find(|g| g.sub == *sub) {
            if g.open {
                g.gap_since.get_or_insert(now);
            }
            g.open = false;
            g.dirty = true;
            g.retry_at = at;
            if count {
                g.attempts += 1;
            }
        }
    }

    /// An `error:`-style refusal of a live REQ: split the group in two (by
    /// packs, or by halving its one pack) and retry the halves; a group
    /// refused again after a split waits for the daily pass.
    fn split_live(&mut self, sub: &SubscriptionId, now: Time) {
        let Some(i) = self.live.iter().position(|g| g.sub == *sub) else {
            return;
        };
        if self.live[i].split {
            self.give_up_sub(sub, GiveUpReason::Rejected);
            return;
        }
        let mut g = self.live.remove(i);
        self.unanswered.retain(|s| s != sub);
        let mut halves = [Vec::new(), Vec::new()];
        if g.packs.len() > 1 {
            let second = g.packs.split_off(g.packs.len() / 2);
            halves = [std::mem::take(&mut g.packs), second];
        } else if let Some((layer, set)) = g.packs.pop() {
            if set.len() > 1 {
                let mut a = set;
                let b = a.split_off(
                    &a.iter()
                        .nth(a.len() / 2)
                        .cloned()
                        .unwrap_or(TargetKey::Discovery),
                );
                halves = [vec![(layer, a)], vec![(layer, b)]];
            } else {
                halves = [vec![(layer, set)], Vec::new()];
            }
        }
        for packs in halves.into_iter().filter(|p| !p.is_empty()) {
            let mut half = LiveGroup::new(packs, now, g.tail);
            half.attempts = g.attempts;
            half.split = true;
            half.gap_since = Some(now);
            self.live.push(half);
        }
    }

    fn give_up_sub(&mut self, sub: &SubscriptionId, reason: GiveUpReason) {
        if let Some(req) = self.active.remove(sub) {
            for p in req.packs {
                self.give_up(p, reason);
            }
        }
        if let Some(g) = self.live.iter_mut().find(|g| g.sub == *sub) {
            g.open = false;
            g.refused = true;
            g.dirty = true;
        }
    }

    fn cool_down(&mut self, now: Time, t: &crate::config::Timing) {
        let d = t
            .rate_limit_cooldown
            .saturating_mul(1 << self.cooldown_strikes.min(10))
            .min(t.rate_limit_cooldown_max);
        self.cooldown_strikes = self.cooldown_strikes.saturating_add(1);
        let until = now.plus(d);
        self.cooldown_until = Some(self.cooldown_until.map_or(until, |c| c.max(until)));
    }

    pub(crate) fn on_notice(&mut self, message: &str, now: Time, ctx: &mut Ctx<'_>) {
        self.stats.notices += 1;
        if nip77::is_refusal_notice(message) {
            // A NOTICE names no subscription: the latest NEG-OPEN still
            // waiting for its first answer is the one refused.
            let refused = self
                .neg_jobs
                .iter()
                .rposition(|j| {
                    matches!(
                        j.step,
                        NegStep::Reconcile {
                            answered: false,
                            ..
                        }
                    )
                })
                .or_else(|| self.neg_jobs.iter().rposition(|j| j.neg_sub().is_some()));
            if let Some(i) = refused {
                let job = self.neg_jobs.remove(i);
                *self.stats.refusals.entry("notice".to_owned()).or_insert(0) += 1;
                self.nip77 = Nip77Support::Unsupported;
                self.close_job_sub(&job, ctx);
                self.fall_back(job, now, ctx);
                self.pump(now, ctx);
                return;
            }
        }
        let m = message.to_ascii_lowercase();
        let refusal = [
            "too many",
            "rate limit",
            "rate-limit",
            "ratelimit",
            "slow down",
            "maximum concurrent",
            "max subscriptions",
            "subscription limit",
        ]
        .iter()
        .any(|p| m.contains(p));
        if !refusal {
            return;
        }
        match self.unanswered.last().cloned() {
            Some(sub) => {
                // A NOTICE names no subscription: whichever REQ the relay
                // refused, closing the one we blame keeps both sides' counts
                // equal (a wrongly blamed REQ is re-sent; a wrongly spared one
                // times out).
                ctx.out.push_back(Command::Unsubscribe {
                    relay: self.url.clone(),
                    subscription: sub.clone(),
                });
                self.refuse(&sub, "rate-limited", now, ctx)
            }
            None => {
                *self
                    .stats
                    .refusals
                    .entry("rate-limited".to_owned())
                    .or_insert(0) += 1;
                let t = ctx.config.timing.clone();
                self.cool_down(now, &t);
            }
        }
    }

    pub(crate) fn on_auth_challenge(&mut self, challenge: &str, now: Time, ctx: &mut Ctx<'_>) {
        self.auth.challenge = Some(challenge.to_owned());
        self.auth.authenticated = false;
        self.try_authenticate(now, ctx);
    }

    fn try_authenticate(&mut self, now: Time, ctx: &mut Ctx<'_>) {
        if !ctx.config.auth_enabled || self.auth.pending_since.is_some() || !self.is_connected() {
            return;
        }
        if let Some(challenge) = self.auth.challenge.clone() {
            self.auth.pending_since = Some(now);
            ctx.out.push_back(Command::Authenticate {
                relay: self.url.clone(),
                challenge,
            });
        }
    }

    pub(crate) fn on_auth_result(&mut self, accepted: bool, now: Time, ctx: &mut Ctx<'_>) {
        self.auth.pending_since = None;
        if accepted {
            self.auth.authenticated = true;
            self.pump(now, ctx);
        } else {
            self.auth_failed(now);
        }
    }

    /// Since when work has waited for AUTH with no AUTH on the wire.
    fn auth_wait_since(&self) -> Option<Time> {
        if self.auth.needed && !self.auth.authenticated && self.auth.pending_since.is_none() {
            self.auth.needed_since
        } else {
            None
        }
    }

    fn auth_failed(&mut self, _now: Time) {
        self.auth.pending_since = None;
        if !self.auth.needed {
            return;
        }
        // Everything waiting for AUTH is given up until the daily pass.
        self.auth.needed = false;
        self.auth.needed_since = None;
        *self
            .stats
            .refusals
            .entry("auth-failed".to_owned())
            .or_insert(0) += 1;
        let queued: Vec<Pack> = self.queue.drain(..).collect();
        for p in queued {
            self.give_up(p, GiveUpReason::AuthRequired);
        }
        for g in &mut self.live {
            if !g.open {
                g.refused = true;
            }
        }
    }

    // ----- NIP-77 ------------------------------------------------------------

    /// True while support is unknown and NIP-11 does not claim it: the next
    /// reconciliation is a probe, and other packs wait for its verdict.
    fn neg_probing(&self) -> bool {
        self.nip77 == Nip77Support::Unknown && !self.info.as_ref().is_some_and(|i| i.supports(77))
    }

    /// The filter reconciled for `job`'s current filter: the paged filter
    /// without `limit` and `until` (the whole range at once).
    fn neg_filter(pack: &Pack, filter: usize) -> Option<Filter> {
        let (kind, _) = pack.filters.get(filter)?;
        let f = build_filter(*kind, pack.targets.iter());
        Some(match pack.since {
            Some(s) => f.since(Timestamp::from_secs(s)),
            None => f,
        })
    }

    fn start_job(&mut self, pack: Pack, now: Time, ctx: &mut Ctx<'_>) {
        let job = NegJob {
            pack,
            filter: 0,
            step: NegStep::Items { request: 0 },
            last_activity: now,
        };
        self.advance(job, now, ctx);
    }

    /// Moves a job to its next open filter: asks the host for our items, or
    /// finishes the job when no filter is left.
    fn advance(&mut self, mut job: NegJob, now: Time, ctx: &mut Ctx<'_>) {
        while job
            .pack
            .filters
            .get(job.filter)
            .is_some_and(|(_, p)| p.is_done())
        {
            job.filter += 1;
        }
        let filter = match Self::neg_filter(&job.pack, job.filter) {
            Some(f) if self.nip77 != Nip77Support::Unsupported && !job.pack.targets.is_empty() => f,
            _ => return self.finish_job(job, now),
        };
        self.next_request += 1;
        job.step = NegStep::Items {
            request: self.next_request,
        };
        job.last_activity = now;
        ctx.out.push_back(Command::QueryLocalItems {
            relay: self.url.clone(),
            request: self.next_request,
            filter,
        });
        self.neg_jobs.push(job);
    }

    /// The current filter falls back to paged REQ; the job moves on.
    fn fall_back(&mut self, mut job: NegJob, now: Time, ctx: &mut Ctx<'_>) {
        self.stats.reconcile_fallbacks += 1;
        job.filter += 1;
        self.advance(job, now, ctx);
    }

    /// The targets of a pack whose every filter ended: confirmed, unless
    /// they stopped being targets meanwhile.
    fn confirm(&mut self, targets: impl IntoIterator<Item = TargetKey>) {
        for t in targets {
            if self.unpend(&t) && self.targets.contains(&t) {
                self.given_up.remove(&t);
                self.confirmed.insert(t);
            }
        }
    }

    /// A job with no filter left: its pack is confirmed exactly as a paged
    /// pass confirms it when every filter was reconciled, or goes back to
    /// the queue for paged REQ over the filters that fell back.
    fn finish_job(&mut self, job: NegJob, now: Time) {
        let mut pack = job.pack;
        if pack.targets.is_empty() {
            return;
        }
        if pack.is_done() {
            self.confirm(pack.targets);
        } else {
            pack.paged = true;
            pack.ready_at = now;
            self.queue.push_front(pack);
        }
    }

    /// Closes whatever the job holds on the wire.
    fn close_job_sub(&self, job: &NegJob, ctx: &mut Ctx<'_>) {
        match &job.step {
            NegStep::Items { .. } => {}
            NegStep::Reconcile { sub, .. } => ctx.out.push_back(Command::NegClose {
                relay: self.url.clone(),
                subscription: sub.clone(),
            }),
            NegStep::Fetch { sub, .. } => ctx.out.push_back(Command::Unsubscribe {
                relay: self.url.clone(),
                subscription: sub.clone(),
            }),
        }
    }

    pub(crate) fn on_local_items(
        &mut self,
        request: u64,
        items: Option<&[(u64, EventId)]>,
        now: Time,
        ctx: &mut Ctx<'_>,
    ) {
        let Some(i) = self
            .neg_jobs
            .iter()
            .position(|j| matches!(j.step, NegStep::Items { request: r } if r == request))
        else {
            self.stats.stale_inputs += 1;
            return;
        };
        let mut job = self.neg_jobs.remove(i);
        if self.nip77 == Nip77Support::Unsupported {
            // Another filter found out meanwhile: this one goes paged.
            self.advance(job, now, ctx);
            self.pump(now, ctx);
            return;
        }
        let Some(items) = items else {
            self.fall_back(job, now, ctx);
            self.pump(now, ctx);
            return;
        };
        let ours = items
            .iter()
            .copied()
            .chain(ctx.rejected.items(job.pack.since));
        let filter = Self::neg_filter(&job.pack, job.filter);
        let limit = filter.as_ref().map_or(nip77::FRAME_SIZE_LIMIT, |f| {
            nip77::frame_size_limit(self.info.as_ref().and_then(|i| i.max_message_length), f)
        });
        let started = Reconciler::new(ours)
            .map(|r| r.with_frame_limit(limit))
            .and_then(|r| Ok((r.initiate()?, r)));
        match (started, filter) {
            (Ok((message, reconciler)), Some(filter)) => {
                self.next_sub += 1;
                let sub = SubscriptionId::new(format!("neg-{}", self.next_sub));
                ctx.out.push_back(Command::NegOpen {
                    relay: self.url.clone(),
                    subscription: sub.clone(),
                    filter,
                    message,
                });
                job.step = NegStep::Reconcile {
                    sub,
                    reconciler: Box::new(reconciler),
                    answered: false,
                };
                job.last_activity = now;
                self.neg_jobs.push(job);
            }
            _ => self.fall_back(job, now, ctx),
        }
        self.pump(now, ctx);
    }

    pub(crate) fn on_neg_msg(
        &mut self,
        sub: &SubscriptionId,
        message: &str,
        now: Time,
        ctx: &mut Ctx<'_>,
    ) {
        let Some(i) = self.neg_jobs.iter().position(|j| j.neg_sub() == Some(sub)) else {
            self.stats.stale_inputs += 1;
            return;
        };
        let mut job = self.neg_jobs.remove(i);
        let NegStep::Reconcile {
            reconciler,
            answered,
            ..
        } = &mut job.step
        else {
            return;
        };
        *answered = true;
        job.last_activity = now;
        match reconciler.reconcile(message) {
            Ok(Some(next)) => {
                if self.nip77 == Nip77Support::Unknown {
                    self.nip77 = Nip77Support::Supported;
                }
                ctx.out.push_back(Command::NegMsg {
                    relay: self.url.clone(),
                    subscription: sub.clone(),
                    message: next,
                });
                self.neg_jobs.push(job);
            }
            Ok(None) => {
                if self.nip77 == Nip77Support::Unknown {
                    self.nip77 = Nip77Support::Supported;
                }
                let need = reconciler.take_need();
                ctx.out.push_back(Command::NegClose {
                    relay: self.url.clone(),
                    subscription: sub.clone(),
                });
                self.stats.reconciliations += 1;
                self.stats.reconcile_ids_needed += need.len() as u64;
                let reqs = self.id_fetches(&need, ctx.config).into();
                self.send_fetch(job, reqs, now, ctx);
            }
            Err(e) => {
                // Not negentropy as we speak it: paged REQ until the daily pass.
                *self
                    .stats
                    .refusals
                    .entry(format!("nip77: {e}"))
                    .or_insert(0) += 1;
                self.nip77 = Nip77Support::Unsupported;
                ctx.out.push_back(Command::NegClose {
                    relay: self.url.clone(),
                    subscription: sub.clone(),
                });
                self.fall_back(job, now, ctx);
            }
        }
        self.pump(now, ctx);
    }

    pub(crate) fn on_neg_err(
        &mut self,
        sub: &SubscriptionId,
        _message: &str,
        now: Time,
        ctx: &mut Ctx<'_>,
    ) {
        let Some(i) = self.neg_jobs.iter().position(|j| j.neg_sub() == Some(sub)) else {
            self.stats.stale_inputs += 1;
            return;
        };
        let job = self.neg_jobs.remove(i);
        *self.stats.refusals.entry("neg-err".to_owned()).or_insert(0) += 1;
        self.nip77 = Nip77Support::Unsupported;
        self.fall_back(job, now, ctx);
        self.pump(now, ctx);
    }

    /// Sends the next `{"ids":[…]}` REQ of a reconciled filter, or ends the
    /// filter when none is left: its needed ids count as received whatever
    /// came (a relay that lists an id it will not send is not asked again).
    fn send_fetch(
        &mut self,
        mut job: NegJob,
        mut reqs: VecDeque<Vec<Filter>>,
        now: Time,
        ctx: &mut Ctx<'_>,
    ) {
        let Some(filters) = reqs.pop_front() else {
            if let Some((_, paging)) = job.pack.filters.get_mut(job.filter) {
                paging.finish();
            }
            job.filter += 1;
            return self.advance(job, now, ctx);
        };
        self.next_sub += 1;
        let sub = SubscriptionId::new(format!("hist-{}", self.next_sub));
        let wanted: BTreeSet<EventId> = filters
            .iter()
            .flat_map(|f| f.ids.iter().flatten().copied())
            .collect();
        self.stats.reqs_sent += 1;
        ctx.out.push_back(Command::Subscribe {
            relay: self.url.clone(),
            subscription: sub.clone(),
            filters: filters.clone(),
            mode: SubscriptionMode::Historic,
        });
        job.step = NegStep::Fetch {
            sub,
            wanted,
            got: BTreeSet::new(),
            current: filters,
            rest: reqs,
        };
        job.last_activity = now;
        self.neg_jobs.push(job);
    }

    /// The `{"ids":…}` REQs that fetch `ids` within the budget: per filter
    /// no more ids than values allowed nor than one page's `limit`.
    fn id_fetches(&self, ids: &BTreeSet<EventId>, config: &Config) -> Vec<Vec<Filter>> {
        let budget = self.budget(config);
        let per_filter = budget.max_values_per_filter.min(budget.page_limit);
        nip77::id_requests(ids, per_filter, budget.max_filters_per_req)
    }

    fn on_fetch_eose(&mut self, mut job: NegJob, now: Time, ctx: &mut Ctx<'_>) {
        self.close_job_sub(&job, ctx);
        let rest = match &mut job.step {
            NegStep::Fetch {
                wanted, got, rest, ..
            } => {
                let mut rest = std::mem::take(rest);
                let withheld: BTreeSet<EventId> = wanted.difference(got).copied().collect();
                let progress = !got.is_empty();
                // A relay that caps every filter's `limit` (silently, below
                // its NIP-11 or without one) sends part of each REQ: ask
                // for the rest again as long as each REQ brings something.
                // A REQ that brings none of its ids ends that; those ids
                // count as received (no retry loop without progress).
                if !withheld.is_empty() && progress {
                    for req in self.id_fetches(&withheld, ctx.config).into_iter().rev() {
                        rest.push_front(req);
                    }
                }
                rest
            }
            _ => VecDeque::new(),
        };
        self.send_fetch(job, rest, now, ctx);
    }

    /// Jobs whose relay went quiet: silence after NEG-OPEN or NEG-MSG means
    /// no NIP-77; a host or fetch that does not answer only ends the filter's
    /// NIP-77 attempt.
    fn neg_timeouts(&mut self, now: Time, ctx: &mut Ctx<'_>) {
        let (late, fine): (Vec<NegJob>, Vec<NegJob>) = std::mem::take(&mut self.neg_jobs)
            .into_iter()
            .partition(|j| j.deadline(ctx.config) <= now);
        self.neg_jobs = fine;
        for job in late {
            match job.step {
                NegStep::Reconcile { .. } => {
                    *self
                        .stats
                        .refusals
                        .entry("nip77-silent".to_owned())
                        .or_insert(0) += 1;
                    self.nip77 = Nip77Support::Unsupported;
                }
                NegStep::Fetch { .. } => self.stats.timeouts += 1,
                NegStep::Items { .. } => {}
            }
            self.close_job_sub(&job, ctx);
            self.fall_back(job, now, ctx);
        }
    }

    pub(crate) fn on_store(&mut self, outcome: StoreOutcome) {
        match outcome {
            StoreOutcome::Stored => self.stats.events_stored += 1,
            StoreOutcome::Duplicate => self.stats.events_duplicate += 1,
            StoreOutcome::Rejected => self.stats.events_rejected += 1,
        }
    }

    pub(crate) fn on_invalid(&mut self) {
        self.stats.events_invalid += 1;
    }

    /// Restores saved state (snapshot load): the relay starts disconnected,
    /// due now, with the saved time as its last connection.
    pub(crate) fn restore(&mut self, saved: crate::snapshot::SavedRelay, now: Time) {
        self.confirmed = saved.confirmed.into_iter().collect();
        self.last_connected = saved.last_connected;
        self.disconnected_at = saved.last_connected;
        self.last_event_at = saved.last_event_at;
        self.learned_max_subs = saved.learned_max_subs;
        self.info = saved.info;
        self.backoff = saved.backoff;
        self.next_resync = saved.next_resync;
        self.cooldown_strikes = saved.cooldown_strikes;
        self.rng = saved.rng;
        self.nip77 = saved.nip77;
        let retry_at = if self.backoff.dead {
            saved.retry_at.unwrap_or(now)
        } else {
            now
        };
        self.conn = Conn::Disconnected { retry_at };
    }
}

/// Replaced live subscriptions remembered for late messages.
const MAX_RETIRED: usize = 8;

/// How long an AUTH may go unanswered.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

fn event_layer(event: &Event) -> Layer {
    match event.kind.as_u16() {
        crate::types::KIND_REPO_ANNOUNCEMENT => Layer::Discovery,
        k if crate::types::is_root_kind(k) || k == crate::types::KIND_REPO_STATE => Layer::Repo,
        _ => Layer::Root,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Input;
    use crate::engine::Engine;
    use crate::testutil::{announcement, coord, issue, url, SERVICE};
    use crate::url::ServiceId;

    const T: u64 = 1_700_000_000;

    struct Rig {
        e: Engine,
        now: Time,
        relay: RelayUrl,
    }

    impl Rig {
        fn new(repos: usize, config: impl FnOnce(&mut Config)) -> Rig {
            let mut c = Config::new(ServiceId::parse(SERVICE).unwrap());
            // These tests are about paged REQ; NIP-77 tests turn it on.
            c.nip77 = false;
            config(&mut c);
            let mut e = Engine::new(c);
            let now = Time::from_secs(T);
            for i in 0..repos {
                let ann = announcement(
                    (i % 250) as u8 + 1,
                    &format!("r{i}"),
                    T - 100,
                    &["wss://a.example"],
                );
                e.handle_input(now, Input::AnnouncementSeen(&ann));
            }
            let mut rig = Rig {
                e,
                now,
                relay: url("wss://a.example"),
            };
            rig.drain();
            rig
        }

        fn drain(&mut self) -> Vec<Command> {
            std::iter::from_fn(|| self.e.poll_command()).collect()
        }

        fn input(&mut self, i: Input<'_>) -> Vec<Command> {
            self.e.handle_input(self.now, i);
            self.drain()
        }

        fn at(&mut self, secs: u64) -> Vec<Command> {
            self.at_time(Time::from_secs(T + secs))
        }

        fn at_time(&mut self, t: Time) -> Vec<Command> {
            self.now = t;
            self.input(Input::Tick)
        }

        fn connect(&mut self) -> Vec<Command> {
            let r = self.relay.clone();
            self.input(Input::Connected { relay: &r })
        }

        fn historic(cs: &[Command]) -> Vec<SubscriptionId> {
            cs.iter()
                .filter_map(|c| match c {
                    Command::Subscribe {
                        subscription,
                        mode: SubscriptionMode::Historic,
                        ..
                    } => Some(subscription.clone()),
                    _ => None,
                })
                .collect()
        }

        /// The relay's NIP-11 says `max_subscriptions: n`.
        fn publish_max_subscriptions(&mut self, n: u32) {
            let r = self.relay.clone();
            self.input(Input::RelayInfo {
                relay: &r,
                info: RelayInfo {
                    max_subscriptions: Some(n),
                    ..RelayInfo::default()
                },
            });
        }

        /// Answers every historic REQ in `first`, and in what follows, with
        /// EOSE (an empty relay), tracking open subscriptions in `open` and
        /// asserting they never exceed `max`.
        fn answer_all(
            &mut self,
            first: Vec<Command>,
            open: &mut BTreeSet<SubscriptionId>,
            max: usize,
        ) {
            let r = self.relay.clone();
            let mut todo = first;
            let mut rounds = 0;
            while !todo.is_empty() {
                rounds += 1;
                assert!(rounds < 1000, "no end to the work");
                for c in &todo {
                    match c {
                        Command::Subscribe { subscription, .. } => {
                            open.insert(subscription.clone());
                        }
                        Command::Unsubscribe { subscription, .. } => {
                            open.remove(subscription);
                        }
                        _ => {}
                    }
                    assert!(open.len() <= max, "{open:?}");
                }
                let mut next = Vec::new();
                for sub in Rig::historic(&todo) {
                    next.extend(self.input(Input::Eose {
                        relay: &r,
                        subscription: &sub,
                    }));
                }
                todo = next;
            }
        }

        fn closed(&mut self, sub: &SubscriptionId, msg: &str) -> Vec<Command> {
            let r = self.relay.clone();
            self.input(Input::Closed {
                relay: &r,
                subscription: sub,
                message: msg,
            })
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_then_goes_daily() {
        let mut rig = Rig::new(1, |_| {});
        let r = rig.relay.clone();
        let mut delays = Vec::new();
        let mut t = 0u64;
        for _ in 0..40 {
            rig.input(Input::ConnectFailed {
                relay: &r,
                reason: "refused",
            });
            let next = rig.e.next_wakeup().unwrap();
            delays.push(next.since(rig.now).as_secs());
            t = next.as_secs() - T;
            let cs = rig.at_time(next);
            assert!(
                cs.contains(&Command::Connect { relay: r.clone() }),
                "retried at {t}"
            );
        }
        // 5 s doubling with ±20% jitter, capped at 1 h; then once a day.
        assert!((4..=6).contains(&delays[0]), "{delays:?}");
        assert!((8..=12).contains(&delays[1]), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= 25 * 3600));
        assert!(delays.contains(&3600) || delays.iter().any(|d| (2880..=3600).contains(d)));
        assert!(t > 24 * 3600, "ran past a day of failures: {t}");
        assert!(
            *delays.last().unwrap() >= 20 * 3600,
            "dead relays retry daily: {delays:?}"
        );
        rig.input(Input::ConnectFailed {
            relay: &r,
            reason: "refused",
        });
        assert_eq!(rig.e.status().relays[0].state, RelayState::Dead);
    }

    #[test]
    fn connect_attempts_time_out() {
        let mut rig = Rig::new(1, |_| {});
        let cs = rig.at(30);
        assert!(
            cs.contains(&Command::Disconnect {
                relay: rig.relay.clone()
            }),
            "{cs:?}"
        );
        let cs = rig.at(60);
        assert!(
            cs.contains(&Command::Connect {
                relay: rig.relay.clone()
            }),
            "{cs:?}"
        );
    }

    #[test]
    fn budget_of_three_is_never_exceeded() {
        let mut rig = Rig::new(250, |_| {});
        rig.publish_max_subscriptions(3);
        let mut open = BTreeSet::new();
        let cs = rig.connect();
        rig.answer_all(cs, &mut open, 3);
        let st = rig.e.status();
        assert_eq!(st.relays[0].pending, 0);
        assert_eq!(st.relays[0].confirmed, 251);
    }

    #[test]
    fn rate_limited_cools_down_and_learns() {
        let mut rig = Rig::new(1, |_| {});
        let cs = rig.connect();
        let sub = Rig::historic(&cs)[0].clone();
        let cs = rig.closed(&sub, "rate-limited: slow down");
        assert!(
            Rig::historic(&cs).is_empty(),
            "nothing during the cool-down"
        );
        let st = rig.e.status();
        assert_eq!(st.relays[0].cooldown_until, Some(Time::from_secs(T + 65)));
        assert_eq!(st.relays[0].learned_max_subscriptions, Some(2));
        assert!(Rig::historic(&rig.at(64)).is_empty());
        assert_eq!(
            Rig::historic(&rig.at(65)).len(),
            1,
            "the same work again after 65 s"
        );
    }

    #[test]
    fn restricted_work_waits_for_the_daily_pass() {
        let mut rig = Rig::new(1, |_| {});
        let cs = rig.connect();
        let sub = Rig::historic(&cs)[0].clone();
        rig.closed(&sub, "restricted: not for you");
        let st = rig.e.status();
        assert_eq!(st.relays[0].given_up.get(&GiveUpReason::Refused), Some(&2));
        assert!(Rig::historic(&rig.at(3600)).is_empty());
        let resync = st.relays[0].next_resync.unwrap();
        assert!(
            resync >= Time::from_secs(T + 23 * 3600) && resync <= Time::from_secs(T + 25 * 3600)
        );
        assert_eq!(Rig::historic(&rig.at_time(resync)).len(), 1);
    }

    #[test]
    fn errors_split_once_then_give_up() {
        let mut rig = Rig::new(4, |_| {});
        let cs = rig.connect();
        let sub = Rig::historic(&cs)[0].clone();
        // One REQ holds discovery and the repo pack: first each goes alone.
        let cs = rig.closed(&sub, "error: too complex");
        let alone = Rig::historic(&cs);
        assert_eq!(alone.len(), 2, "{cs:?}");
        // Refused again: the 4 repos are halved, discovery (one target) tried once more.
        let mut halves = Vec::new();
        for s in &alone {
            halves.extend(Rig::historic(&rig.closed(s, "invalid: still no")));
        }
        assert_eq!(halves.len(), 3, "two halves and discovery");
        assert_eq!(rig.e.status().relays[0].given_up.len(), 0);
        // Refused once more: given up until the daily pass.
        for s in &halves {
            assert!(Rig::historic(&rig.closed(s, "unsupported: no")).is_empty());
        }
        let st = rig.e.status();
        assert_eq!(st.relays[0].given_up.get(&GiveUpReason::Rejected), Some(&5));
        assert_eq!(st.relays[0].pending, 0);
    }

    #[test]
    fn auth_required_without_a_key_gives_up_with_a_key_authenticates() {
        let mut rig = Rig::new(1, |_| {});
        let cs = rig.connect();
        let sub = Rig::historic(&cs)[0].clone();
        rig.closed(&sub, "auth-required: who are you");
        assert_eq!(
            rig.e.status().relays[0]
                .given_up
                .get(&GiveUpReason::AuthRequired),
            Some(&2)
        );

        let mut rig = Rig::new(1, |c| c.auth_enabled = true);
        let r = rig.relay.clone();
        let cs = rig.connect();
        let sub = Rig::historic(&cs)[0].clone();
        rig.input(Input::AuthChallenge {
            relay: &r,
            challenge: "abc",
        });
        let cs = rig.closed(&sub, "auth-required: sign in");
        assert!(Rig::historic(&cs).is_empty(), "waits for AUTH: {cs:?}");
        let cs = rig.input(Input::AuthResult {
            relay: &r,
            accepted: true,
        });
        assert_eq!(Rig::historic(&cs).len(), 1, "resent after AUTH: {cs:?}");
    }

    #[test]
    fn challenge_is_answered_when_a_key_is_configured() {
        let mut rig = Rig::new(1, |c| c.auth_enabled = true);
        let r = rig.relay.clone();
        rig.connect();
        let cs = rig.input(Input::AuthChallenge {
            relay: &r,
            challenge: "xyz",
        });
        assert_eq!(
            cs,
            vec![Command::Authenticate {
                relay: r,
                challenge: "xyz".into()
            }]
        );
    }

    #[test]
    fn notice_refusal_blames_the_latest_unanswered_req() {
        let mut rig = Rig::new(1, |_| {});
        let r = rig.relay.clone();
        let cs = rig.connect();
        let sub = Rig::historic(&cs)[0].clone();
        let cs = rig.input(Input::Notice {
            relay: &r,
            message: "ERROR: too many concurrent REQs",
        });
        assert!(
            cs.contains(&Command::Unsubscribe {
                relay: r.clone(),
                subscription: sub
            }),
            "{cs:?}"
        );
        assert!(rig.e.status().relays[0].cooldown_until.is_some());
        // Chatter is not a refusal.
        rig.input(Input::Notice {
            relay: &r,
            message: "hello",
        });
        assert_eq!(rig.e.status().relays[0].stats.notices, 2);
    }

    /// Found by the `engine_inputs` fuzzer: a tail held up to 10 values
    /// whatever the value cap.
    #[test]
    fn tails_respect_a_value_cap_below_their_size() {
        let mut rig = Rig::new(1, |c| c.default_budget.max_values_per_filter = 2);
        rig.connect();
        for i in 0..6u32 {
            rig.input(Input::RootEventSeen(&issue(
                10 + i as u8,
                T - 5,
                &coord(1, "r0"),
            )));
        }
        let cs = rig.at(1);
        for c in &cs {
            if let Command::Subscribe { filters, .. } = c {
                for f in filters {
                    let values = f.generic_tags.values().map(|v| v.len()).max().unwrap_or(0);
                    assert!(values <= 2, "{c:?}");
                }
            }
        }
        assert!(cs.iter().any(|c| matches!(
            c,
            Command::Subscribe {
                mode: SubscriptionMode::Live,
                ..
            }
        )));
    }

    #[test]
    fn live_additions_go_to_a_small_tail_updated_under_fresh_ids() {
        let mut rig = Rig::new(1, |_| {});
        let r = rig.relay.clone();
        let cs = rig.connect();
        let live = |cs: &[Command]| -> Vec<(SubscriptionId, usize)> {
            cs.iter()
                .filter_map(|c| match c {
                    Command::Subscribe {
                        subscription,
                        mode: SubscriptionMode::Live,
                        filters,
                        ..
                    } => Some((subscription.clone(), filters.len())),
                    _ => None,
                })
                .collect()
        };
        let dense = live(&cs)[0].0.clone();
        // A new root while live: a tail subscription of its own (3 filters),
        // the dense group untouched.
        rig.input(Input::RootEventSeen(&issue(7, T - 5, &coord(1, "r0"))));
        let cs = rig.at(1);
        let tail = live(&cs);
        assert_eq!(tail.len(), 1, "{cs:?}");
        assert_eq!(tail[0].1, 3);
        assert!(
            !cs.iter().any(|c| matches!(c, Command::Unsubscribe { .. })),
            "{cs:?}"
        );
        assert_eq!(Rig::historic(&cs).len(), 1, "one REQ for the new root");
        // The next root updates the tail: old id closed first, a fresh id opened.
        rig.input(Input::RootEventSeen(&issue(8, T - 4, &coord(1, "r0"))));
        let cs = rig.at(2);
        assert_eq!(
            cs.first(),
            Some(&Command::Unsubscribe {
                relay: r.clone(),
                subscription: tail[0].0.clone()
            }),
            "{cs:?}"
        );
        let updated = live(&cs);
        assert_eq!(updated.len(), 1);
        assert_ne!(updated[0].0, tail[0].0);
        assert_ne!(updated[0].0, dense);
        // A late CLOSED for the old tail id changes nothing.
        let open = rig.e.status().relays[0].open_subscriptions;
        rig.closed(&tail[0].0, "error: whatever");
        assert_eq!(rig.e.status().relays[0].open_subscriptions, open);
    }

    #[test]
    fn tails_fold_into_dense_groups_when_slots_run_out() {
        let mut rig = Rig::new(1, |_| {});
        rig.publish_max_subscriptions(3);
        let mut open = BTreeSet::new();
        let cs = rig.connect();
        rig.answer_all(cs, &mut open, 3);
        for i in 0..40u64 {
            let cs = rig.input(Input::RootEventSeen(&issue(
                9,
                T - 100 + i,
                &coord(1, "r0"),
            )));
            rig.answer_all(cs, &mut open, 3);
            let cs = rig.at(i + 2);
            rig.answer_all(cs, &mut open, 3);
        }
        let cs = rig.at(100);
        rig.answer_all(cs, &mut open, 3);
        let st = rig.e.status();
        assert_eq!(
            st.relays[0].live_uncovered, 0,
            "every target is followed live"
        );
        assert!(st.relays[0].open_subscriptions <= 2);
        assert_eq!(st.relays[0].confirmed, 42);
    }

    #[test]
    fn historic_reqs_time_out_and_are_retried() {
        let mut rig = Rig::new(1, |_| {});
        let r = rig.relay.clone();
        let cs = rig.connect();
        let sub = Rig::historic(&cs)[0].clone();
        let cs = rig.at(60);
        assert!(
            cs.contains(&Command::Unsubscribe {
                relay: r.clone(),
                subscription: sub
            }),
            "{cs:?}"
        );
        let retried_at = (61..120).find(|s| !Rig::historic(&rig.at(*s)).is_empty());
        // First retry after 5 s ± 20 %.
        assert!(matches!(retried_at, Some(64..=67)), "{retried_at:?}");
        assert_eq!(rig.e.status().relays[0].stats.timeouts, 1);
    }

    fn subs_of_mode(cs: &[Command], mode: SubscriptionMode) -> Vec<(SubscriptionId, Vec<Filter>)> {
        cs.iter()
            .filter_map(|c| match c {
                Command::Subscribe {
                    subscription,
                    filters,
                    mode: m,
                    ..
                } if *m == mode => Some((subscription.clone(), filters.clone())),
                _ => None,
            })
            .collect()
    }

    /// A relay that still answers `auth-required:` after an accepted AUTH
    /// refuses us: no AUTH+REQ loop.
    #[test]
    fn auth_required_after_accepted_auth_is_a_refusal() {
        let mut rig = Rig::new(1, |c| c.auth_enabled = true);
        let r = rig.relay.clone();
        let cs = rig.connect();
        let mut sub = Rig::historic(&cs)[0].clone();
        rig.input(Input::AuthChallenge {
            relay: &r,
            challenge: "abc",
        });
        rig.input(Input::AuthResult {
            relay: &r,
            accepted: true,
        });
        let mut reqs = 0;
        for _ in 0..200 {
            let cs = rig.closed(&sub, "auth-required: you are not on the list");
            let cs2 = rig.input(Input::AuthResult {
                relay: &r,
                accepted: true,
            });
            let h: Vec<_> = Rig::historic(&cs)
                .into_iter()
                .chain(Rig::historic(&cs2))
                .collect();
            if h.is_empty() {
                break;
            }
            reqs += 1;
            sub = h[0].clone();
        }
        // All at the same instant: 200 REQ + 200 AUTH round trips, zero backoff.
        assert!(
            reqs < 10,
            "re-sent {reqs} times at t+0 without backoff or give-up"
        );
    }

    /// `CLOSED error:` on a live REQ splits the group and retries the halves
    /// (spec section 5), instead of dropping live sync of all its targets.
    #[test]
    fn live_error_splits_the_group_instead_of_dropping_it() {
        let mut rig = Rig::new(50, |_| {});
        let mut open = BTreeSet::new();
        let cs = rig.connect();
        let live = subs_of_mode(&cs, SubscriptionMode::Live);
        assert_eq!(live.len(), 1);
        let filters = live[0].1.len();
        rig.answer_all(cs, &mut open, 10);
        // Refused with `error:`: split in two, both halves retried at once.
        let cs = rig.closed(&live[0].0, "error: too many tags");
        let halves = subs_of_mode(&cs, SubscriptionMode::Live);
        assert_eq!(halves.len(), 2, "{cs:?}");
        assert_eq!(halves.iter().map(|(_, f)| f.len()).sum::<usize>(), filters);
        assert_eq!(rig.e.status().relays[0].live_uncovered, 0);
        // A half refused again waits for the daily pass; the other stays.
        let cs = rig.closed(&halves[1].0, "error: still too many");
        assert!(
            subs_of_mode(&cs, SubscriptionMode::Live).is_empty(),
            "{cs:?}"
        );
        let uncovered = rig.e.status().relays[0].live_uncovered;
        assert!(uncovered > 0 && uncovered < 51, "{uncovered}");
    }

    /// A pack emptied by a removed target inside a multi-pack REQ is never
    /// re-queued and sent alone as a REQ with no filters.
    #[test]
    fn an_emptied_pack_is_never_sent_as_a_req_without_filters() {
        let mut rig = Rig::new(1, |_| {});
        let r = rig.relay.clone();
        let mut open = BTreeSet::new();
        let cs = rig.connect();
        rig.answer_all(cs, &mut open, 10);
        // A root and a new repo while live: after the batch delay, one REQ
        // with a root pack and a repo pack.
        let root = issue(7, T - 5, &coord(1, "r0"));
        rig.input(Input::RootEventSeen(&root));
        let ann = announcement(2, "other", T - 5, &["wss://a.example"]);
        rig.input(Input::AnnouncementSeen(&ann));
        let cs = rig.at(2);
        let hist = subs_of_mode(&cs, SubscriptionMode::Historic);
        assert_eq!(hist.len(), 1, "{cs:?}");
        assert_eq!(hist[0].1.len(), 7, "root (3) + repo (4) filters");
        // The root is deleted by its author while the REQ is on the wire.
        let del = crate::testutil::ev(7, T, 5, &[&["e", &root.id.to_hex()]]);
        rig.input(Input::DeletionSeen(&del));
        let mut cs = rig.closed(&hist[0].0, "error: bad filter");
        for s in 3..200 {
            cs.extend(rig.at(s));
        }
        for (sub, filters) in subs_of_mode(&cs, SubscriptionMode::Historic) {
            assert!(!filters.is_empty(), "REQ {sub} sent with no filter: {cs:?}");
        }
        let _ = r;
    }

    /// NIP-11 arriving after Connected with a smaller budget than the one
    /// the first wave used: the surplus is closed and its work re-queued.
    #[test]
    fn late_nip11_sheds_subscriptions_over_its_budget() {
        let mut rig = Rig::new(1000, |_| {});
        let cs = rig.connect();
        let mut open: BTreeSet<SubscriptionId> = BTreeSet::new();
        for c in &cs {
            if let Command::Subscribe { subscription, .. } = c {
                open.insert(subscription.clone());
            }
        }
        rig.publish_max_subscriptions(3);
        let st = rig.e.status();
        assert!(
            st.relays[0].open_subscriptions <= 3,
            "relay publishes 3, engine holds {} open (sent {})",
            st.relays[0].open_subscriptions,
            open.len()
        );
    }

    /// A published `max_filters` below a layer's filter count (4 for
    /// repos) is still respected: a layer's filters spread over REQs.
    #[test]
    fn max_filters_below_a_layer_width_is_respected() {
        let mut rig = Rig::new(3, |_| {});
        let r = rig.relay.clone();
        rig.input(Input::RelayInfo {
            relay: &r,
            info: RelayInfo {
                max_filters: Some(2),
                ..RelayInfo::default()
            },
        });
        let cs = rig.connect();
        for c in &cs {
            if let Command::Subscribe {
                filters,
                subscription,
                ..
            } = c
            {
                assert!(
                    filters.len() <= 2,
                    "{subscription} has {} filters, relay allows 2",
                    filters.len()
                );
            }
        }
    }

    /// After the only live group is refused, a new target does not join it:
    /// it is followed live in a group of its own.
    #[test]
    fn new_targets_avoid_refused_live_groups() {
        let mut rig = Rig::new(1, |_| {});
        let mut open = BTreeSet::new();
        let cs = rig.connect();
        let live = subs_of_mode(&cs, SubscriptionMode::Live);
        rig.answer_all(cs, &mut open, 10);
        rig.closed(&live[0].0, "restricted: not for you");
        let mut cs = rig.input(Input::RootEventSeen(&issue(7, T - 5, &coord(1, "r0"))));
        let mut got = false;
        for s in 1..3600 {
            cs.extend(rig.at(s));
            if subs_of_mode(&cs, SubscriptionMode::Live)
                .iter()
                .any(|(_, f)| f.len() == 3)
            {
                got = true;
                break;
            }
            let r = rig.relay.clone();
            for sub in Rig::historic(&cs) {
                rig.input(Input::Eose {
                    relay: &r,
                    subscription: &sub,
                });
            }
            cs.clear();
        }
        assert!(
            got,
            "new root never subscribed live; live_uncovered={}",
            rig.e.status().relays[0].live_uncovered
        );
    }

    /// `auth-required` with a key but no challenge yet: the work must not
    /// wait (with no timer) until the daily pass.
    #[test]
    fn auth_required_without_a_challenge_does_not_stall() {
        let mut rig = Rig::new(1, |c| c.auth_enabled = true);
        let cs = rig.connect();
        let sub = Rig::historic(&cs)[0].clone();
        rig.closed(&sub, "auth-required: sign in");
        let wake = rig.e.next_wakeup().unwrap();
        let st = rig.e.status();
        assert!(
            wake.since(rig.now).as_secs() < 3600,
            "pending {} with next wakeup in {} h",
            st.relays[0].pending,
            wake.since(rig.now).as_secs() / 3600
        );
    }
    // ----- NIP-77 ------------------------------------------------------------

    /// How the fake relay treats NEG-OPEN.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum NegMode {
        Answer,
        Err,
        Silent,
        Notice,
    }

    /// A fake relay holding `theirs`, and a store holding `ours`.
    struct NegWorld {
        theirs: Vec<Event>,
        ours: Vec<Event>,
        mode: NegMode,
        /// Ids sent in answer to `{"ids":…}` REQs.
        fetched: Vec<EventId>,
        neg_opens: usize,
        paged_reqs: usize,
        /// `{"ids":…}` REQs received.
        id_reqs: usize,
        /// Lists its events in NEG-MSG but sends none when asked by id.
        withhold: bool,
        /// Sends at most this many events per filter (a silent page cap,
        /// applied to `{"ids":…}` filters too, as LocalRelay does).
        cap: Option<usize>,
        open_negs: BTreeMap<SubscriptionId, Filter>,
    }

    impl NegWorld {
        fn new(theirs: Vec<Event>, ours: Vec<Event>, mode: NegMode) -> Self {
            NegWorld {
                theirs,
                ours,
                mode,
                fetched: Vec::new(),
                neg_opens: 0,
                paged_reqs: 0,
                id_reqs: 0,
                withhold: false,
                cap: None,
                open_negs: BTreeMap::new(),
            }
        }

        fn items(events: &[Event], f: &Filter) -> Vec<(u64, EventId)> {
            events
                .iter()
                .filter(|e| f.match_event(e, nostr::filter::MatchEventOptions::new()))
                .map(|e| (e.created_at.as_secs(), e.id))
                .collect()
        }

        /// Answers commands until none is left (timers are not run).
        fn serve(&mut self, rig: &mut Rig, first: Vec<Command>) {
            let r = rig.relay.clone();
            let mut todo: VecDeque<Command> = first.into();
            let mut steps = 0;
            while let Some(c) = todo.pop_front() {
                steps += 1;
                assert!(steps < 100_000, "no end to the work");
                let out = match c {
                    Command::QueryLocalItems {
                        request, filter, ..
                    } => {
                        let items = Self::items(&self.ours, &filter);
                        rig.input(Input::LocalItems {
                            relay: &r,
                            request,
                            items: Some(&items),
                        })
                    }
                    Command::NegOpen {
                        subscription,
                        filter,
                        message,
                        ..
                    } => {
                        self.neg_opens += 1;
                        match self.mode {
                            NegMode::Answer => {
                                let answer =
                                    nip77::respond(Self::items(&self.theirs, &filter), &message)
                                        .unwrap();
                                self.open_negs.insert(subscription.clone(), filter);
                                rig.input(Input::NegMsg {
                                    relay: &r,
                                    subscription: &subscription,
                                    message: &answer,
                                })
                            }
                            NegMode::Err => rig.input(Input::NegErr {
                                relay: &r,
                                subscription: &subscription,
                                message: "blocked: no",
                            }),
                            NegMode::Notice => rig.input(Input::Notice {
                                relay: &r,
                                message: "ERROR: bad msg: unknown cmd",
                            }),
                            NegMode::Silent => Vec::new(),
                        }
                    }
                    Command::NegMsg {
                        subscription,
                        message,
                        ..
                    } => {
                        let filter = self.open_negs[&subscription].clone();
                        let answer =
                            nip77::respond(Self::items(&self.theirs, &filter), &message).unwrap();
                        rig.input(Input::NegMsg {
                            relay: &r,
                            subscription: &subscription,
                            message: &answer,
                        })
                    }
                    Command::NegClose { subscription, .. } => {
                        self.open_negs.remove(&subscription);
                        Vec::new()
                    }
                    Command::Subscribe {
                        subscription,
                        filters,
                        mode: SubscriptionMode::Historic,
                        ..
                    } => {
                        let by_id = filters.iter().all(|f| f.ids.is_some());
                        if by_id {
                            self.id_reqs += 1;
                        } else {
                            self.paged_reqs += 1;
                        }
                        let mut out = Vec::new();
                        let mut events: Vec<Event> = Vec::new();
                        for f in filters.iter().filter(|_| !(by_id && self.withhold)) {
                            let matching = self.theirs.iter().filter(|e| {
                                f.match_event(e, nostr::filter::MatchEventOptions::new())
                                    && !events.iter().any(|x| x.id == e.id)
                            });
                            let taken: Vec<Event> = matching
                                .take(self.cap.unwrap_or(usize::MAX))
                                .cloned()
                                .collect();
                            events.extend(taken);
                        }
                        for e in &events {
                            if by_id {
                                self.fetched.push(e.id);
                            }
                            out.extend(rig.input(Input::EventReceived {
                                relay: &r,
                                subscription: &subscription,
                                event: e,
                            }));
                            let stored = if self.ours.iter().any(|o| o.id == e.id) {
                                StoreOutcome::Duplicate
                            } else {
                                self.ours.push(e.clone());
                                StoreOutcome::Stored
                            };
                            out.extend(rig.input(Input::EventStored {
                                relay: &r,
                                id: e.id,
                                created_at: e.created_at.as_secs(),
                                outcome: stored,
                            }));
                        }
                        out.extend(rig.input(Input::Eose {
                            relay: &r,
                            subscription: &subscription,
                        }));
                        out
                    }
                    _ => Vec::new(),
                };
                todo.extend(out);
            }
        }
    }

    fn repo_events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| issue((i % 200) as u8 + 3, T - 10_000 + i as u64, &coord(1, "r0")))
            .collect()
    }

    fn nip77_rig() -> Rig {
        Rig::new(1, |c| c.nip77 = true)
    }

    #[test]
    fn nip77_fetches_exactly_the_missing_events_and_confirms() {
        let theirs = repo_events(300);
        let ours: Vec<Event> = theirs.iter().skip(7).cloned().collect();
        let mut rig = nip77_rig();
        let first = rig.connect();
        let probes = first
            .iter()
            .filter(|c| matches!(c, Command::QueryLocalItems { .. }))
            .count();
        assert_eq!(probes, 1, "one probe while support is unknown: {first:?}");
        let mut w = NegWorld::new(theirs.clone(), ours, NegMode::Answer);
        w.serve(&mut rig, first);
        let mut fetched = w.fetched.clone();
        fetched.sort();
        let mut missing: Vec<EventId> = theirs.iter().take(7).map(|e| e.id).collect();
        missing.sort();
        assert_eq!(fetched, missing);
        assert_eq!(w.paged_reqs, 0);
        let st = rig.e.status();
        let rs = &st.relays[0];
        assert_eq!(rs.nip77, Nip77Support::Supported);
        assert_eq!(rs.pending, 0);
        assert_eq!(rs.confirmed, rs.targets);
        assert_eq!(rs.stats.reconcile_ids_needed, 7);
        assert_eq!(rs.stats.reconcile_fallbacks, 0);
        assert!(rs.stats.reconciliations >= 4, "{:?}", rs.stats);
        // A second sync of the unchanged relay fetches nothing.
        let r = rig.relay.clone();
        rig.input(Input::Disconnected {
            relay: &r,
            reason: "test",
        });
        let next = rig.e.next_wakeup().unwrap();
        rig.at_time(next.plus(Duration::from_secs(3600)));
        let again = rig.connect();
        let mut w2 = NegWorld::new(theirs, w.ours.clone(), NegMode::Answer);
        w2.serve(&mut rig, again);
        assert!(w2.fetched.is_empty(), "{:?}", w2.fetched);
        assert_eq!(w2.paged_reqs, 0);
    }

    fn falls_back(mode: NegMode, wait: bool) -> (Rig, NegWorld) {
        let theirs = repo_events(40);
        let mut rig = nip77_rig();
        let first = rig.connect();
        let mut w = NegWorld::new(theirs, Vec::new(), mode);
        w.serve(&mut rig, first);
        if wait {
            let cs = rig.at(10);
            w.serve(&mut rig, cs);
        }
        let rs = &rig.e.status().relays[0];
        assert_eq!(rs.nip77, Nip77Support::Unsupported);
        assert_eq!(rs.pending, 0, "everything was paged instead");
        assert_eq!(rs.confirmed, rs.targets);
        assert!(rs.stats.reconcile_fallbacks >= 1);
        assert_eq!(w.neg_opens, 1, "one probe, then paged REQ only");
        assert!(w.paged_reqs > 0);
        (rig, w)
    }

    #[test]
    fn nip77_neg_err_falls_back_to_paged_req() {
        falls_back(NegMode::Err, false);
    }

    #[test]
    fn nip77_refusal_notice_falls_back() {
        falls_back(NegMode::Notice, false);
    }

    #[test]
    fn nip77_silence_falls_back_after_ten_seconds() {
        let theirs = repo_events(5);
        let mut rig = nip77_rig();
        let first = rig.connect();
        let mut w = NegWorld::new(theirs, Vec::new(), NegMode::Silent);
        w.serve(&mut rig, first);
        assert_eq!(rig.e.status().relays[0].nip77, Nip77Support::Unknown);
        assert_eq!(w.paged_reqs, 0, "the others wait for the probe");
        let cs = rig.at(9);
        assert!(Rig::historic(&cs).is_empty(), "still waiting at 9 s");
        falls_back(NegMode::Silent, true);
    }

    #[test]
    fn nip77_drop_after_neg_open_means_unsupported_until_the_daily_pass() {
        let theirs = repo_events(5);
        let mut rig = nip77_rig();
        let first = rig.connect();
        let mut w = NegWorld::new(theirs.clone(), Vec::new(), NegMode::Silent);
        w.serve(&mut rig, first);
        let r = rig.relay.clone();
        rig.input(Input::Disconnected {
            relay: &r,
            reason: "closed by relay",
        });
        assert_eq!(rig.e.status().relays[0].nip77, Nip77Support::Unsupported);
        let next = rig.e.next_wakeup().unwrap();
        rig.at_time(next);
        let again = rig.connect();
        let mut w2 = NegWorld::new(theirs.clone(), Vec::new(), NegMode::Answer);
        w2.serve(&mut rig, again);
        assert_eq!(w2.neg_opens, 0);
        assert!(w2.paged_reqs > 0);
        // The snapshot remembers it.
        let snap = rig.e.snapshot();
        assert_eq!(snap.relays[0].nip77, Nip77Support::Unsupported);
        // The daily pass probes again.
        let resync = rig.e.status().relays[0].next_resync.unwrap();
        let cs = rig.at_time(resync);
        let mut w3 = NegWorld::new(theirs, w2.ours.clone(), NegMode::Answer);
        w3.serve(&mut rig, cs);
        assert!(w3.neg_opens >= 4, "one per filter: {}", w3.neg_opens);
        assert_eq!(w3.paged_reqs, 0);
        assert!(w3.fetched.is_empty());
        assert_eq!(rig.e.status().relays[0].nip77, Nip77Support::Supported);
    }

    #[test]
    fn nip77_listed_in_nip11_but_refused_falls_back() {
        let theirs = repo_events(20);
        let mut rig = nip77_rig();
        let r = rig.relay.clone();
        rig.input(Input::RelayInfo {
            relay: &r,
            info: RelayInfo {
                supported_nips: vec![1, 11, 77],
                ..RelayInfo::default()
            },
        });
        let first = rig.connect();
        let probes = first
            .iter()
            .filter(|c| matches!(c, Command::QueryLocalItems { .. }))
            .count();
        assert!(probes > 1, "listed: no probe needed, packs start together");
        let mut w = NegWorld::new(theirs, Vec::new(), NegMode::Err);
        w.serve(&mut rig, first);
        let rs = &rig.e.status().relays[0];
        assert_eq!(rs.nip77, Nip77Support::Unsupported);
        assert_eq!(rs.confirmed, rs.targets);
        assert_eq!(rs.pending, 0);
    }

    #[test]
    fn nip77_rejected_ids_are_not_fetched_again() {
        let theirs = repo_events(30);
        let mut rig = nip77_rig();
        let r = rig.relay.clone();
        // The store refused one of them earlier.
        rig.input(Input::EventStored {
            relay: &r,
            id: theirs[3].id,
            created_at: theirs[3].created_at.as_secs(),
            outcome: StoreOutcome::Rejected,
        });
        let first = rig.connect();
        let mut w = NegWorld::new(theirs.clone(), Vec::new(), NegMode::Answer);
        w.serve(&mut rig, first);
        assert_eq!(w.fetched.len(), 29);
        assert!(!w.fetched.contains(&theirs[3].id));
    }

    #[test]
    fn nip77_ids_the_relay_withholds_count_as_received_once() {
        let theirs = repo_events(250);
        let mut rig = Rig::new(1, |c| {
            c.nip77 = true;
            c.default_budget.max_values_per_filter = 100;
            c.default_budget.max_filters_per_req = 2;
        });
        let first = rig.connect();
        let mut w = NegWorld::new(theirs, Vec::new(), NegMode::Answer);
        w.withhold = true;
        w.serve(&mut rig, first);
        let rs = &rig.e.status().relays[0];
        assert!(w.fetched.is_empty());
        assert_eq!(rs.pending, 0, "no retry loop: the pass ended");
        assert_eq!(rs.confirmed, rs.targets);
        // 250 ids of the #a filter: 3 filters of ≤ 100 ids, 2 per REQ.
        assert_eq!(rs.stats.reconcile_ids_needed, 250);
        assert_eq!(w.id_reqs, 2, "each id asked once, within the budget");
        assert_eq!(w.paged_reqs, 0);
    }

    #[test]
    fn nip77_ids_a_capped_relay_sends_in_part_are_asked_again() {
        let theirs = repo_events(250);
        let mut rig = Rig::new(1, |c| {
            c.nip77 = true;
            c.default_budget.max_values_per_filter = 100;
            c.default_budget.max_filters_per_req = 2;
        });
        let first = rig.connect();
        let mut w = NegWorld::new(theirs.clone(), Vec::new(), NegMode::Answer);
        w.cap = Some(25);
        w.serve(&mut rig, first);
        let fetched: BTreeSet<EventId> = w.fetched.iter().copied().collect();
        let all: BTreeSet<EventId> = theirs.iter().map(|e| e.id).collect();
        assert_eq!(fetched, all, "every id arrives, 25 per filter at a time");
        let rs = &rig.e.status().relays[0];
        assert_eq!(rs.confirmed, rs.targets);
        assert_eq!(w.paged_reqs, 0);
    }

    #[test]
    fn a_closed_acknowledging_our_close_is_not_a_refusal() {
        let mut rig = Rig::new(1, |_| {});
        rig.connect();
        let gone = SubscriptionId::new("hist-999");
        rig.closed(&gone, "");
        let st = &rig.e.status().relays[0];
        assert!(st.stats.refusals.is_empty(), "{:?}", st.stats.refusals);
        assert_eq!(st.stats.stale_inputs, 1);
    }

    #[test]
    fn nip77_runs_are_deterministic() {
        let run = || {
            let theirs = repo_events(120);
            let ours: Vec<Event> = theirs.iter().step_by(3).cloned().collect();
            let mut rig = nip77_rig();
            let first = rig.connect();
            let mut log: Vec<String> = first
                .iter()
                .map(|c| serde_json::to_string(c).unwrap())
                .collect();
            let mut w = NegWorld::new(theirs, ours, NegMode::Answer);
            w.serve(&mut rig, first);
            log.extend(w.fetched.iter().map(|id| id.to_hex()));
            log.push(serde_json::to_string(&rig.e.status()).unwrap());
            log
        };
        assert_eq!(run(), run());
    }
}
