//! The engine: one catalog, one state machine per relay, a timer index and
//! an output queue. It routes inputs, turns catalog changes into per-relay
//! target changes, and fires timers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::str::FromStr;

use nostr::event::{Event, EventId};
use nostr::filter::Filter;
use nostr::key::PublicKey;
use nostr::message::SubscriptionId;

use crate::acceptance::{check_acceptance, AcceptanceContext, Verdict};
use crate::announcement::{parse_announcement, AnnouncementRules, IgnoreReason};
use crate::catalog::{Catalog, TargetDelta, UpsertOutcome};
use crate::command::{Command, EventCheck, Input, StoreOutcome};
use crate::config::Config;
use crate::nip77::RejectedIds;
use crate::relay::{Relay, RelayTimer, Shared};
use crate::snapshot::{
    SavedRelay, SavedRepo, SavedRoot, Snapshot, SnapshotError, SNAPSHOT_VERSION,
};
use crate::status::{EngineCounters, RelayStatus, Status};
use crate::types::{
    is_root_kind, parse_event_id, KeyMap, RepoCoord, TargetKey, Time, KIND_DELETION,
    KIND_REPO_ANNOUNCEMENT,
};
use crate::url::{RelayUrl, ServiceId};

/// How many distinct ignored items the engine remembers for reports.
const IGNORED_MEMORY: usize = 10_000;

/// The GRASP-02 sync engine: a pure, deterministic state machine.
///
/// # Driving contract
///
/// The engine performs no I/O, reads no clock and draws no OS randomness.
/// Its host:
///
/// 1. feeds every input with [`Engine::handle_input`], passing the current
///    wall-clock time (`now`, never earlier than the previous input's); the
///    first call (a [`Input::Tick`] will do) starts the bootstrap relays;
/// 2. after every input, drains [`Engine::poll_command`] until it returns
///    `None` and carries the commands out in order;
/// 3. calls `handle_input(now, Input::Tick)` no later than
///    [`Engine::next_wakeup`] (earlier or extra calls are harmless;
///    [`Engine::next_wakeup_reason`] says which relay and timer it is for).
///
/// Given the same configuration and the same inputs at the same times, the
/// engine emits the same commands, byte for byte.
///
/// # Methods by kind
///
/// - **Inputs (mutate):** [`Engine::handle_input`].
/// - **Outputs (drain, in this order after each input):**
///   [`Engine::poll_command`], then [`Engine::next_wakeup`].
/// - **Questions (no state change, for the host's event path):**
///   [`Engine::check_event`], [`Engine::check_acceptance`],
///   [`Engine::subscription_filters`].
/// - **Views (no state change, any time):** [`Engine::status`],
///   [`Engine::relay_status`], [`Engine::snapshot`], and the per-relay
///   target sets.
///
/// # The host's event path
///
/// Each relay's messages go in in the order the relay sent them (an
/// `EVENT`'s [`Input::EventReceived`] before the `EOSE` after it); only
/// the store's answer ([`Input::EventStored`], step 5) may come later. For
/// each `EVENT` a relay sends:
///
/// 1. [`Engine::check_event`]: is the subscription ours, and does the event
///    match its filters? If not ([`EventCheck::Unrequested`],
///    [`EventCheck::Unmatched`]), feed [`Input::EventReceived`] with the
///    event *unverified* (the engine only counts it) and stop: no signature
///    check, no `EventStored`, no store.
/// 2. Verify id and signature; on failure feed [`Input::EventInvalid`] (not
///    `EventReceived`) and stop. A host that remembers ids it verified
///    may, for a repeated id, check only that the id is the event's hash.
/// 3. Feed [`Input::EventReceived`] (it counts the event for its page).
/// 4. [`Engine::check_acceptance`]: would the service take it? If not, feed
///    [`Input::EventStored`] with [`StoreOutcome::Rejected`] (the id is then
///    kept out of NIP-77 fetches for a day) and stop: it is not stored.
/// 5. Store it and feed [`Input::EventStored`] with the store's outcome
///    ([`StoreOutcome::Stored`], `Duplicate`, or `Rejected`; a failed save
///    counts as `Rejected`). A host that remembers the outcome for an id
///    may feed it again for a repeated id instead of storing again.
/// 6. Only when the outcome is [`StoreOutcome::Stored`] and the event is a
///    catalog kind ([`is_catalog_kind`](crate::is_catalog_kind)), feed
///    [`Input::CatalogEvent`]: announcements, root events and deletions
///    change what is synced. Never for a rejected event.
///
/// # Catalog inputs from elsewhere
///
/// [`Input::CatalogEvent`] also takes, and only takes, catalog events the
/// service's store holds: at start, every one of them (a restored snapshot
/// included); afterwards, those the service's own relay stores from its
/// users (its write policy may ask [`Engine::check_acceptance`] first).
/// Feeding one twice is harmless.
#[derive(Clone, Debug)]
pub struct Engine {
    /// The configuration, the output queue and the rejected ids: what every
    /// relay call shares (a sibling of `relays`, so both borrow at once).
    shared: Shared,
    catalog: Catalog,
    /// Hashed for fast lookups; sorted wherever it is iterated for output.
    relays: KeyMap<RelayUrl, Relay>,
    timers: BTreeSet<(Time, RelayUrl)>,
    counters: EngineCounters,
    ignored: BTreeMap<(String, String), u64>,
    /// Relays refused at the total-relay cap, created when room frees up.
    parked: BTreeSet<RelayUrl>,
    now: Time,
}

impl Engine {
    /// A new engine with no state but its bootstrap relays.
    pub fn new(config: Config) -> Self {
        let mut engine = Engine {
            shared: Shared {
                config,
                out: VecDeque::new(),
                rejected: RejectedIds::default(),
            },
            catalog: Catalog::default(),
            relays: KeyMap::default(),
            timers: BTreeSet::new(),
            counters: EngineCounters::default(),
            ignored: BTreeMap::new(),
            parked: BTreeSet::new(),
            now: Time::ZERO,
        };
        for url in engine.shared.config.bootstrap.clone() {
            if engine.shared.config.service.matches(&url) {
                engine.ignore(IgnoreReason::OwnService.to_string(), url.to_string());
                continue;
            }
            let mut relay = Relay::new(url.clone(), engine.shared.config.seed, Time::ZERO);
            relay.make_bootstrap();
            // Layer 1 on a bootstrap relay, listed or not.
            relay.add_target(TargetKey::Discovery, Time::ZERO, &mut engine.shared);
            engine.relays.insert(url.clone(), relay);
            engine.reschedule(&url);
        }
        engine
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The time of the latest input.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Feeds one input at time `now`. See the driving contract on [`Engine`].
    pub fn handle_input(&mut self, now: Time, input: Input<'_>) {
        self.now = now;
        // Deadlines due by `now` come first: an input at the very instant
        // one falls reschedules the relay, and a deadline is only ever in
        // the future, so it would be dropped unrun.
        self.run_timers(now);
        match input {
            Input::Tick => {}
            Input::CatalogEvent(event) => self.on_catalog_event(event, now),
            Input::RelayInfo { relay, info } => {
                self.with_relay(relay, now, |r, now, ctx| r.on_info(info, now, ctx))
            }
            Input::Connected { relay } => {
                self.with_relay(relay, now, |r, now, ctx| r.on_connected(now, ctx))
            }
            Input::ConnectFailed { relay, .. } => {
                self.with_relay(relay, now, |r, now, ctx| r.on_connect_failed(now, ctx))
            }
            Input::Disconnected { relay, .. } => {
                self.with_relay(relay, now, |r, now, ctx| r.on_disconnected(now, ctx))
            }
            Input::EventReceived {
                relay,
                subscription,
                event,
            } => match self.relays.get_mut(relay) {
                Some(r) => {
                    r.on_event(subscription, event, now);
                    self.touch(relay, now);
                }
                None => self.counters.events_from_unknown_relays += 1,
            },
            Input::EventInvalid { relay } => self.with_relay(relay, now, |r, _, _| r.on_invalid()),
            Input::EventStored {
                relay,
                id,
                created_at,
                outcome,
            } => {
                if outcome == StoreOutcome::Rejected {
                    self.shared.rejected.expire(now);
                    self.shared.rejected.insert(id, created_at, now);
                }
                self.with_relay(relay, now, |r, _, _| r.on_store(outcome))
            }
            Input::LocalItems {
                relay,
                request,
                items,
            } => self.with_relay(relay, now, |r, now, ctx| {
                r.on_local_items(request, items, now, ctx)
            }),
            Input::NegMsg {
                relay,
                subscription,
                message,
            } => self.with_relay(relay, now, |r, now, ctx| {
                r.on_neg_msg(subscription, message, now, ctx)
            }),
            Input::NegErr {
                relay,
                subscription,
                message: _,
            } => self.with_relay(relay, now, |r, now, ctx| {
                r.on_neg_err(subscription, now, ctx)
            }),
            Input::Eose {
                relay,
                subscription,
            } => self.with_relay(relay, now, |r, now, ctx| r.on_eose(subscription, now, ctx)),
            Input::Closed {
                relay,
                subscription,
                message,
            } => self.with_relay(relay, now, |r, now, ctx| {
                r.on_closed(subscription, message, now, ctx)
            }),
            Input::Notice { relay, message } => {
                self.with_relay(relay, now, |r, now, ctx| r.on_notice(message, now, ctx))
            }
            Input::AuthChallenge { relay, challenge } => {
                self.with_relay(relay, now, |r, now, ctx| {
                    r.on_auth_challenge(challenge, now, ctx)
                })
            }
            Input::AuthResult { relay, accepted } => self.with_relay(relay, now, |r, now, ctx| {
                r.on_auth_result(accepted, now, ctx)
            }),
        }
        self.run_timers(now);
    }

    /// The next command for the host, in order.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.shared.out.pop_front()
    }

    /// When the engine next needs a [`Input::Tick`]; `None` when nothing is scheduled.
    pub fn next_wakeup(&self) -> Option<Time> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Why the engine wants the next [`Input::Tick`]: the relay and the
    /// named deadline behind [`Engine::next_wakeup`] (for logs and debugging).
    pub fn next_wakeup_reason(&self) -> Option<(Time, &RelayUrl, RelayTimer)> {
        let (at, url) = self.timers.first()?;
        let (_, timer) = self.relays.get(url)?.scheduled()?;
        Some((*at, url, timer))
    }

    /// Whether an `EVENT` from `relay` on `subscription` is wanted: checks that
    /// the subscription is open and that the event matches one of its filters.
    /// Changes nothing; call before verifying the signature.
    pub fn check_event(
        &self,
        relay: &RelayUrl,
        subscription: &SubscriptionId,
        event: &Event,
    ) -> EventCheck {
        match self.relays.get(relay) {
            Some(r) => r.check_event(subscription, event),
            None => EventCheck::Unrequested,
        }
    }

    /// The filters of an open subscription, rebuilt from the engine's state
    /// (the engine keeps no copy of what it sent).
    pub fn subscription_filters(
        &self,
        relay: &RelayUrl,
        subscription: &SubscriptionId,
    ) -> Option<Vec<Filter>> {
        self.relays
            .get(relay)?
            .subscription_filters(subscription, &self.shared.config)
    }

    /// Would the service accept this event (GRASP acceptance)?
    pub fn check_acceptance(&self, event: &Event) -> Verdict {
        check_acceptance(event, self)
    }

    /// The relays the engine knows, in order.
    pub fn relay_urls(&self) -> impl Iterator<Item = &RelayUrl> {
        self.sorted_relays().into_iter().map(|r| r.url())
    }

    fn sorted_relays(&self) -> Vec<&Relay> {
        let mut relays: Vec<&Relay> = self.relays.values().collect();
        relays.sort_by(|a, b| a.url().cmp(b.url()));
        relays
    }

    /// The read-only status view (spec section 9).
    pub fn status(&self) -> Status {
        let relays: Vec<RelayStatus> = self
            .sorted_relays()
            .into_iter()
            .map(|r| RelayStatus::of(r, &self.shared.config))
            .collect();
        Status::new(
            relays,
            self.catalog.tracked_repos(),
            self.catalog.roots().count(),
            self.counters.clone(),
            self.ignored
                .iter()
                .map(|((reason, detail), n)| (reason.clone(), detail.clone(), *n))
                .collect(),
        )
    }

    /// The status of one relay, without building the whole view (cheap to
    /// call per command in simulations of hundreds of relays).
    pub fn relay_status(&self, relay: &RelayUrl) -> Option<RelayStatus> {
        self.relays
            .get(relay)
            .map(|r| RelayStatus::of(r, &self.shared.config))
    }

    /// Targets a relay carries, in order (for tests and tools).
    pub fn relay_targets(&self, relay: &RelayUrl) -> Option<BTreeSet<TargetKey>> {
        self.relays
            .get(relay)
            .map(|r| r.targets().cloned().collect())
    }

    /// Targets whose historic sync is confirmed on a relay.
    pub fn confirmed_targets(&self, relay: &RelayUrl) -> Option<BTreeSet<TargetKey>> {
        self.relays.get(relay).map(|r| r.confirmed().clone())
    }

    /// Targets in historic work on a relay (queued or on the wire).
    pub fn pending_targets(&self, relay: &RelayUrl) -> Option<BTreeSet<TargetKey>> {
        self.relays
            .get(relay)
            .map(|r| r.pending_targets().cloned().collect())
    }

    /// The state that must survive a restart (spec section 8).
    pub fn snapshot(&self) -> Snapshot {
        let now = self.now;
        Snapshot {
            version: SNAPSHOT_VERSION,
            saved_at: now,
            repos: self
                .catalog
                .repos()
                .map(|(c, e)| SavedRepo {
                    coord: (**c).clone(),
                    entry: e.clone(),
                })
                .collect(),
            roots: self
                .catalog
                .roots()
                .map(|(id, r)| SavedRoot {
                    id: *id,
                    author: r.author,
                    repos: r.repos.iter().map(|c| (**c).clone()).collect(),
                })
                .collect(),
            tombstones: self
                .catalog
                .tombstones()
                .map(|(c, at)| ((**c).clone(), *at))
                .collect(),
            deleted_roots: self.catalog.deleted_roots().copied().collect(),
            relays: self
                .sorted_relays()
                .into_iter()
                .map(|r| r.save(now))
                .collect(),
            rejected: self.shared.rejected.entries().collect(),
        }
    }

    /// An engine restored from a snapshot at time `now`. Every relay starts
    /// disconnected and due; one that was connected less than the quick
    /// reconnect window before the snapshot was saved gets a quick reconnect.
    pub fn restore(config: Config, snapshot: Snapshot, now: Time) -> Result<Engine, SnapshotError> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version {
                found: snapshot.version,
                expected: SNAPSHOT_VERSION,
            });
        }
        let mut engine = Engine::new(config);
        engine.now = now;
        for (coord, at) in &snapshot.tombstones {
            engine.catalog.restore_tombstone(coord, *at);
        }
        for id in &snapshot.deleted_roots {
            engine.catalog.restore_deleted_root(*id);
        }
        for (id, created_at, when) in &snapshot.rejected {
            engine.shared.rejected.insert(*id, *created_at, *when);
        }
        engine.shared.rejected.expire(now);
        let mut deltas = Vec::new();
        for repo in snapshot.repos {
            engine
                .catalog
                .restore_repo(&repo.coord, repo.entry, &mut deltas);
        }
        for root in snapshot.roots {
            engine
                .catalog
                .add_root(root.id, root.author, &root.repos, &mut deltas);
        }
        for saved in snapshot.relays {
            let confirmed: Vec<TargetKey> = saved
                .confirmed
                .iter()
                .map(|t| match t {
                    TargetKey::Repo(c) => TargetKey::Repo(engine.catalog.intern(c)),
                    other => other.clone(),
                })
                .collect();
            let url = saved.url.clone();
            engine.create_relay(&url, now);
            if let Some(relay) = engine.relays.get_mut(&url) {
                relay.restore(SavedRelay { confirmed, ..saved }, now);
            }
            engine.reschedule(&url);
        }
        engine.apply(deltas, now);
        // Relays restored without targets start their empty grace now.
        let urls: Vec<RelayUrl> = engine.relay_urls().cloned().collect();
        for url in urls {
            engine.touch(&url, now);
        }
        Ok(engine)
    }

    // ----- inputs ------------------------------------------------------------

    /// Routes a catalog event by kind.
    fn on_catalog_event(&mut self, event: &Event, now: Time) {
        match event.kind.as_u16() {
            KIND_REPO_ANNOUNCEMENT => self.on_announcement(event, now),
            KIND_DELETION => self.on_deletion(event, now),
            k if is_root_kind(k) => self.on_root(event, now),
            _ => self.counters.events_of_wrong_kind += 1,
        }
    }

    fn on_announcement(&mut self, event: &Event, now: Time) {
        let config = &self.shared.config;
        let rules = AnnouncementRules {
            service: &config.service,
            use_clone_urls: config.use_clone_urls,
            max_relays: config.max_relays_per_announcement,
            allow_private: config.allow_private,
        };
        let ann = match parse_announcement(event, &rules) {
            Ok(a) => a,
            Err(e) => {
                self.counters.announcements_invalid += 1;
                self.ignore(
                    "bad-announcement".to_owned(),
                    format!("{}: {e}", event.id.to_hex()),
                );
                return;
            }
        };
        // Listing our own service is what tracked announcements do: not news.
        for ig in ann
            .ignored
            .iter()
            .filter(|i| i.reason != IgnoreReason::OwnService)
        {
            self.ignore(ig.reason.to_string(), ig.url.clone());
        }
        let tracked = self.shared.config.archive || ann.lists_service;
        if !tracked {
            self.counters.announcements_untracked += 1;
        }
        let mut deltas = Vec::new();
        match self.catalog.upsert_announcement(&ann, tracked, &mut deltas) {
            UpsertOutcome::Added | UpsertOutcome::Replaced => {
                self.counters.announcements_applied += 1
            }
            UpsertOutcome::Stale => self.counters.announcements_stale += 1,
            UpsertOutcome::Deleted => self.counters.announcements_deleted += 1,
            UpsertOutcome::Untracked => {}
        }
        self.apply(deltas, now);
    }

    fn on_root(&mut self, event: &Event, now: Time) {
        let repos: Vec<RepoCoord> = event
            .tags
            .iter()
            .filter_map(|t| match t.as_slice() {
                [k, v, ..] if k == "a" => RepoCoord::from_str(v).ok(),
                _ => None,
            })
            .collect();
        let mut deltas = Vec::new();
        if self
            .catalog
            .add_root(event.id, event.pubkey, &repos, &mut deltas)
        {
            self.counters.roots_applied += 1;
        }
        self.apply(deltas, now);
    }

    fn on_deletion(&mut self, event: &Event, now: Time) {
        let mut coords = Vec::new();
        let mut ids = Vec::new();
        for t in event.tags.iter() {
            match t.as_slice() {
                [k, v, ..] if k == "a" => coords.extend(RepoCoord::from_str(v).ok()),
                [k, v, ..] if k == "e" => ids.extend(parse_event_id(v)),
                _ => {}
            }
        }
        let mut deltas = Vec::new();
        let n = self.catalog.delete(
            &event.pubkey,
            event.created_at.as_secs(),
            &coords,
            &ids,
            &mut deltas,
        );
        self.counters.deletions_applied += n as u64;
        self.apply(deltas, now);
    }

    // ----- plumbing ------------------------------------------------------------

    fn ignore(&mut self, reason: String, detail: String) {
        self.counters.ignored_total += 1;
        let key = (reason, detail);
        if let Some(n) = self.ignored.get_mut(&key) {
            *n += 1;
        } else if self.ignored.len() < IGNORED_MEMORY {
            self.ignored.insert(key, 1);
        }
    }

    /// Applies target changes to relays, creating relays as needed.
    fn apply(&mut self, deltas: Vec<TargetDelta>, now: Time) {
        // Touched relays in first-touched order (deterministic, and tiny).
        let mut touched: Vec<RelayUrl> = Vec::new();
        for d in deltas {
            let known = self.relays.contains_key(&d.relay);
            if d.added && !known {
                if self.relays.len() >= self.shared.config.max_relays_total {
                    if self.parked.insert(d.relay.clone()) {
                        self.counters.relays_over_cap += 1;
                        self.ignore("over-total-relay-cap".to_owned(), d.relay.to_string());
                    }
                    continue;
                }
                self.create_relay(&d.relay, now);
            }
            let Some(relay) = self.relays.get_mut(&d.relay) else {
                continue;
            };
            if d.added {
                relay.add_target(d.target, now, &mut self.shared);
            } else {
                relay.remove_target(&d.target, &mut self.shared);
            }
            if !touched.contains(&d.relay) {
                touched.push(d.relay);
            }
        }
        for url in touched {
            if let Some(relay) = self.relays.get_mut(&url) {
                relay.maybe_connect(now, &mut self.shared);
                relay.pump(now, &mut self.shared);
            }
            self.touch(&url, now);
        }
    }

    /// Creates a relay with every target the catalog has for it (not only
    /// the one that brought it: a relay parked at the cap missed the rest).
    fn create_relay(&mut self, url: &RelayUrl, now: Time) {
        self.parked.remove(url);
        let targets: Vec<TargetKey> = self.catalog.relay_targets(url).cloned().collect();
        let seed = self.shared.config.seed;
        let relay = self
            .relays
            .entry(url.clone())
            .or_insert_with(|| Relay::new(url.clone(), seed, now));
        for t in targets {
            relay.add_target(t, now, &mut self.shared);
        }
    }

    /// Room under the relay cap: create parked relays that still have targets.
    fn unpark(&mut self, now: Time) {
        let parked: Vec<RelayUrl> = self.parked.iter().cloned().collect();
        for url in parked {
            if self.relays.len() >= self.shared.config.max_relays_total {
                break;
            }
            self.parked.remove(&url);
            if self.catalog.relay_targets(&url).next().is_some() {
                self.create_relay(&url, now);
                if let Some(relay) = self.relays.get_mut(&url) {
                    relay.maybe_connect(now, &mut self.shared);
                }
                self.reschedule(&url);
            }
        }
    }

    fn with_relay(
        &mut self,
        url: &RelayUrl,
        now: Time,
        f: impl FnOnce(&mut Relay, Time, &mut Shared),
    ) {
        let Some(relay) = self.relays.get_mut(url) else {
            self.counters.inputs_for_unknown_relays += 1;
            return;
        };
        f(relay, now, &mut self.shared);
        self.touch(url, now);
    }

    /// After a relay changed: forget it if it stayed empty past its grace,
    /// and re-index its next deadline.
    fn touch(&mut self, url: &RelayUrl, now: Time) {
        let Some(relay) = self.relays.get_mut(url) else {
            return;
        };
        if relay.empty_for_grace(now, &self.shared.config) {
            relay.close(now, &mut self.shared);
            if let Some((t, _)) = relay.set_scheduled(None) {
                self.timers.remove(&(t, url.clone()));
            }
            self.relays.remove(url);
            self.counters.relays_forgotten += 1;
            self.unpark(now);
            return;
        }
        self.reschedule(url);
    }

    /// Re-indexes a relay's next deadline in the timer set.
    fn reschedule(&mut self, url: &RelayUrl) {
        let now = self.now;
        let Some(relay) = self.relays.get_mut(url) else {
            return;
        };
        #[cfg(debug_assertions)]
        relay.check_invariants();
        let next = relay.next_deadline(&self.shared.config, now);
        let old = relay.set_scheduled(next);
        if old.map(|(t, _)| t) == next.map(|(t, _)| t) {
            return;
        }
        if let Some((old, _)) = old {
            self.timers.remove(&(old, url.clone()));
        }
        if let Some((next, _)) = next {
            self.timers.insert((next, url.clone()));
        }
    }

    fn run_timers(&mut self, now: Time) {
        let due: Vec<RelayUrl> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, u)| u.clone())
            .collect();
        for url in due {
            if let Some(relay) = self.relays.get_mut(&url) {
                relay.on_timer(now, &mut self.shared);
            }
            self.touch(&url, now);
        }
    }
}

impl AcceptanceContext for Engine {
    fn service(&self) -> &ServiceId {
        &self.shared.config.service
    }

    fn archive(&self) -> bool {
        self.shared.config.archive
    }

    fn is_tracked_repo(&self, coord: &RepoCoord) -> bool {
        self.catalog.is_tracked_repo(coord)
    }

    fn is_tracked_root(&self, id: &EventId) -> bool {
        self.catalog.is_tracked_root(id)
    }

    fn may_publish_state(&self, author: &PublicKey, identifier: &str) -> bool {
        self.catalog.may_publish_state(author, identifier)
    }

    fn tracked_announcement_author(&self, id: &EventId) -> Option<PublicKey> {
        self.catalog.tracked_announcement_author(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::SubscriptionMode;
    use crate::testutil::{announcement, coord, issue, url, SERVICE};
    use std::time::Duration;

    const T: u64 = 1_700_000_000;

    /// An engine that pages with REQ (NIP-77 has tests of its own).
    fn engine() -> Engine {
        let mut config = Config::new(ServiceId::parse(SERVICE).unwrap());
        config.nip77 = false;
        Engine::new(config)
    }

    fn drain(e: &mut Engine) -> Vec<Command> {
        std::iter::from_fn(|| e.poll_command()).collect()
    }

    /// Plays a fixed input log against a fresh engine and returns every
    /// command as JSON.
    fn play() -> Vec<String> {
        let mut e = engine();
        let a = url("wss://a.example");
        let b = url("wss://b.example");
        let ann1 = announcement(1, "one", T - 50, &["wss://a.example", "wss://b.example"]);
        let ann2 = announcement(2, "two", T - 40, &["wss://b.example"]);
        let root = issue(3, T - 30, &coord(1, "one"));
        let mut out = Vec::new();
        let mut step = |e: &mut Engine, at: u64, input: Input<'_>| {
            e.handle_input(Time::from_millis(at), input);
            out.extend(drain(e).iter().map(|c| serde_json::to_string(c).unwrap()));
        };
        let ms = T * 1000;
        step(&mut e, ms, Input::CatalogEvent(&ann1));
        step(&mut e, ms + 1, Input::CatalogEvent(&ann2));
        step(&mut e, ms + 5, Input::Connected { relay: &a });
        step(
            &mut e,
            ms + 6,
            Input::ConnectFailed {
                relay: &b,
                reason: "refused",
            },
        );
        step(&mut e, ms + 7, Input::CatalogEvent(&root));
        let mut t = ms + 10;
        while let Some(w) = e.next_wakeup() {
            if w.as_millis() > ms + 3_600_000 {
                break;
            }
            t = t.max(w.as_millis());
            step(&mut e, t, Input::Tick);
            if t > ms + 20_000 {
                step(&mut e, t, Input::Connected { relay: &b });
            }
        }
        out
    }

    #[test]
    fn same_input_log_same_commands() {
        let first = play();
        assert!(first.len() > 5, "{first:?}");
        assert_eq!(first, play());
    }

    #[test]
    fn bootstrap_relays_connect_on_the_first_input() {
        let mut config = Config::new(ServiceId::parse(SERVICE).unwrap());
        config.nip77 = false;
        config.bootstrap = vec![url("wss://boot.example"), url("wss://git.example.com")];
        let mut e = Engine::new(config);
        e.handle_input(Time::from_secs(T), Input::Tick);
        let cs = drain(&mut e);
        assert_eq!(
            cs,
            vec![
                Command::FetchRelayInfo {
                    relay: url("wss://boot.example")
                },
                Command::Connect {
                    relay: url("wss://boot.example")
                },
            ],
            "the service itself is never a bootstrap relay"
        );
        e.handle_input(
            Time::from_secs(T + 1),
            Input::Connected {
                relay: &url("wss://boot.example"),
            },
        );
        let cs = drain(&mut e);
        // Discovery only: live and historic `{"kinds":[30617]}`.
        assert_eq!(cs.len(), 2, "{cs:?}");
        for c in &cs {
            let Command::Subscribe { filters, .. } = c else {
                panic!("{c:?}")
            };
            assert_eq!(filters.len(), 1);
            assert_eq!(filters[0].kinds.as_ref().map(|k| k.len()), Some(1));
        }
    }

    #[test]
    fn events_are_checked_against_open_subscriptions() {
        let mut e = engine();
        let a = url("wss://a.example");
        let ann = announcement(1, "one", T - 50, &["wss://a.example"]);
        e.handle_input(Time::from_secs(T), Input::CatalogEvent(&ann));
        e.handle_input(Time::from_secs(T), Input::Connected { relay: &a });
        let cs = drain(&mut e);
        let hist = cs
            .iter()
            .find_map(|c| match c {
                Command::Subscribe {
                    subscription,
                    mode: SubscriptionMode::Historic,
                    ..
                } => Some(subscription.clone()),
                _ => None,
            })
            .unwrap();
        let ours = issue(5, T - 10, &coord(1, "one"));
        let other = issue(5, T - 10, &coord(1, "unrelated"));
        assert_eq!(
            e.check_event(&a, &hist, &ours),
            EventCheck::Accepted(SubscriptionMode::Historic)
        );
        assert_eq!(e.check_event(&a, &hist, &other), EventCheck::Unmatched);
        let never = SubscriptionId::new("never-opened");
        assert_eq!(e.check_event(&a, &never, &ours), EventCheck::Unrequested);
        e.handle_input(
            Time::from_secs(T),
            Input::EventReceived {
                relay: &a,
                subscription: &never,
                event: &ours,
            },
        );
        e.handle_input(
            Time::from_secs(T),
            Input::EventReceived {
                relay: &a,
                subscription: &hist,
                event: &other,
            },
        );
        e.handle_input(
            Time::from_secs(T),
            Input::EventReceived {
                relay: &a,
                subscription: &hist,
                event: &ours,
            },
        );
        let st = e.status();
        let r = &st.relays[0];
        assert_eq!(
            (
                r.stats.events_received,
                r.stats.events_unrequested,
                r.stats.events_unmatched
            ),
            (1, 1, 1)
        );
        // An unknown relay is counted, not created.
        e.handle_input(
            Time::from_secs(T),
            Input::Eose {
                relay: &url("wss://x.example"),
                subscription: &hist,
            },
        );
        assert_eq!(e.status().counters.inputs_for_unknown_relays, 1);
    }

    #[test]
    fn acceptance_uses_the_catalog() {
        let mut e = engine();
        let ann = announcement(1, "one", T - 50, &["wss://a.example"]);
        assert!(e.check_acceptance(&ann).is_accept());
        e.handle_input(Time::from_secs(T), Input::CatalogEvent(&ann));
        assert!(e
            .check_acceptance(&issue(4, T, &coord(1, "one")))
            .is_accept());
        assert!(!e
            .check_acceptance(&issue(4, T, &coord(1, "two")))
            .is_accept());
    }

    #[test]
    fn deletion_by_announcement_id_is_accepted_and_applied() {
        let mut e = engine();
        let ann = announcement(1, "one", T - 50, &["wss://a.example"]);
        e.handle_input(Time::from_secs(T), Input::CatalogEvent(&ann));
        let stranger = crate::testutil::ev(2, T, 5, &[&["e", &ann.id.to_hex()]]);
        assert!(!e.check_acceptance(&stranger).is_accept());
        let del = crate::testutil::ev(1, T, 5, &[&["e", &ann.id.to_hex()]]);
        assert!(e.check_acceptance(&del).is_accept());
        e.handle_input(Time::from_secs(T), Input::CatalogEvent(&del));
        assert_eq!(e.status().repos, 0);
    }

    #[test]
    fn total_relay_cap_is_a_counted_drop() {
        let mut config = Config::new(ServiceId::parse(SERVICE).unwrap());
        config.max_relays_total = 1;
        let mut e = Engine::new(config);
        let ann = announcement(1, "one", T - 50, &["wss://a.example", "wss://b.example"]);
        e.handle_input(Time::from_secs(T), Input::CatalogEvent(&ann));
        assert_eq!(e.relay_urls().count(), 1);
        assert_eq!(e.status().counters.relays_over_cap, 1);
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let mut e = engine();
        let a = url("wss://a.example");
        let ann = announcement(1, "one", T - 50, &["wss://a.example"]);
        e.handle_input(Time::from_secs(T), Input::CatalogEvent(&ann));
        e.handle_input(Time::from_secs(T), Input::Connected { relay: &a });
        for c in drain(&mut e) {
            if let Command::Subscribe {
                subscription,
                mode: SubscriptionMode::Historic,
                ..
            } = c
            {
                e.handle_input(
                    Time::from_secs(T + 1),
                    Input::Eose {
                        relay: &a,
                        subscription: &subscription,
                    },
                );
            }
        }
        let snap = e.snapshot();
        let json = snap.to_json();
        let back = Snapshot::from_json(&json).unwrap();
        assert_eq!(back, snap);
        let config = e.config().clone();
        let mut r = Engine::restore(config.clone(), back, Time::from_secs(T + 60)).unwrap();
        assert_eq!(r.confirmed_targets(&a), e.confirmed_targets(&a));
        assert!(Snapshot::from_json("{").is_err());
        let mut wrong = e.snapshot();
        wrong.version = 99;
        assert!(Engine::restore(config, wrong, Time::from_secs(T)).is_err());
        // The restored engine reconnects at once.
        r.handle_input(Time::from_secs(T + 60), Input::Tick);
        assert!(drain(&mut r).contains(&Command::Connect { relay: a.clone() }));
        let _ = Duration::ZERO;
    }

    /// a relay refused by the total-relay cap is never created
    /// later, even when room frees up: its repo is parked forever; a later
    /// root creates it with a partial target set.
    #[test]
    fn a_relay_refused_by_the_cap_is_created_whole_when_room_frees() {
        let mut config = Config::new(ServiceId::parse(SERVICE).unwrap());
        config.max_relays_total = 1;
        let mut e = Engine::new(config);
        let a = url("wss://a.example");
        let b = url("wss://b.example");
        let ann1 = announcement(1, "one", T - 50, &["wss://a.example"]);
        let ann2 = announcement(2, "two", T - 50, &["wss://b.example"]);
        e.handle_input(Time::from_secs(T), Input::CatalogEvent(&ann1));
        e.handle_input(Time::from_secs(T), Input::CatalogEvent(&ann2));
        assert!(e.relay_targets(&b).is_none());
        // ann1 is deleted: relay a empties and is forgotten after the grace.
        let del = crate::testutil::ev(1, T + 1, 5, &[&["e", &ann1.id.to_hex()]]);
        e.handle_input(Time::from_secs(T + 1), Input::CatalogEvent(&del));
        for s in 2..200 {
            e.handle_input(Time::from_secs(T + s), Input::Tick);
        }
        assert!(e.relay_targets(&a).is_none(), "a forgotten");
        // A root of repo two arrives: b is created, but with the root only.
        e.handle_input(
            Time::from_secs(T + 300),
            Input::CatalogEvent(&issue(3, T, &coord(2, "two"))),
        );
        let tb = e.relay_targets(&b).unwrap_or_default();
        assert!(
            tb.contains(&TargetKey::Discovery) && tb.len() == 3,
            "relay b targets after room freed: {:?}",
            tb.iter().map(|t| t.to_string()).collect::<Vec<_>>()
        );
    }

    /// a relay restored from a snapshot with no targets (e.g. a
    /// bootstrap relay removed from the config, or a relay in its empty
    /// grace) is never forgotten: no timer, never touched.
    #[test]
    fn a_restored_relay_without_targets_is_forgotten() {
        let mut config = Config::new(ServiceId::parse(SERVICE).unwrap());
        config.bootstrap = vec![url("wss://boot.example")];
        let mut e = Engine::new(config);
        e.handle_input(Time::from_secs(T), Input::Tick);
        let snap = e.snapshot();
        let mut e2 = Engine::restore(
            Config::new(ServiceId::parse(SERVICE).unwrap()),
            snap,
            Time::from_secs(T + 10),
        )
        .unwrap();
        for h in 0..48 {
            e2.handle_input(Time::from_secs(T + 10 + h * 3600), Input::Tick);
        }
        assert_eq!(
            e2.relay_urls().count(),
            0,
            "still carried after 2 days; next_wakeup={:?}",
            e2.next_wakeup()
        );
    }

    /// every untracked announcement seen (discovery of every relay)
    /// is kept in the catalog forever, relay list and all.
    #[test]
    fn untracked_announcements_are_not_accumulated() {
        let mut e = engine();
        for i in 0..5000u32 {
            let ev = crate::testutil::ev(
                (i % 250) as u8 + 1,
                T,
                30617,
                &[
                    &["d", &format!("x{i}")],
                    &["relays", "wss://elsewhere.example"],
                ],
            );
            e.handle_input(Time::from_secs(T), Input::CatalogEvent(&ev));
        }
        assert_eq!(e.status().repos, 0);
        assert!(
            e.snapshot().repos.len() < 5000,
            "kept {} untracked entries",
            e.snapshot().repos.len()
        );
    }

    #[test]
    fn relay_status_is_the_status_views_entry() {
        let mut config = Config::new(ServiceId::parse("git.example.com").unwrap());
        let url = RelayUrl::parse("wss://relay.example").unwrap();
        config.bootstrap.push(url.clone());
        let mut e = Engine::new(config);
        e.handle_input(Time::from_secs(T), Input::Tick);
        let whole = e.status().relays.into_iter().find(|r| r.url == url);
        assert_eq!(e.relay_status(&url), whole);
        let unknown = RelayUrl::parse("wss://unknown.example").unwrap();
        assert_eq!(e.relay_status(&unknown), None);
    }
}
