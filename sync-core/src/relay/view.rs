//! Read-only views of a relay: what the engine and the status view ask of
//! it (counts, times, where its work stands), and which part's filters an
//! open subscription carries.

use std::collections::{BTreeMap, BTreeSet};

use nostr::event::Event;
use nostr::filter::Filter;
use nostr::message::SubscriptionId;

use super::out::Owner;
use super::timers::Deadline;
use super::{GiveUpReason, Relay, RelayState, RelayStats};
use crate::command::{EventCheck, SubscriptionMode};
use crate::config::Config;
use crate::info::Budget;
use crate::nip77::Nip77Support;
use crate::types::{TargetKey, Time};
use crate::url::RelayUrl;

impl Relay {
    pub(crate) fn url(&self) -> &RelayUrl {
        &self.url
    }

    pub(crate) fn is_bootstrap(&self) -> bool {
        self.bootstrap
    }

    /// Given by the operator: always connected, always carries layer 1.
    pub(crate) fn make_bootstrap(&mut self) {
        self.bootstrap = true;
    }

    /// The relay's state for the status view.
    pub fn state(&self) -> RelayState {
        self.link.state(self.targets.has_pending())
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    pub(crate) fn retry_at(&self) -> Option<Time> {
        self.link.retry_at()
    }

    pub(crate) fn budget(&self, config: &Config) -> Budget {
        self.limits.budget(&config.default_budget)
    }

    pub(crate) fn targets(&self) -> impl Iterator<Item = &TargetKey> {
        self.targets.iter()
    }

    pub(crate) fn target_count(&self) -> usize {
        self.targets.len()
    }

    pub(crate) fn confirmed(&self) -> &BTreeSet<TargetKey> {
        self.targets.confirmed()
    }

    pub(crate) fn pending_targets(&self) -> impl Iterator<Item = &TargetKey> {
        self.targets.pending()
    }

    pub(crate) fn given_up_counts(&self) -> BTreeMap<GiveUpReason, usize> {
        self.targets.given_up_counts()
    }

    pub(crate) fn open_subscriptions(&self) -> usize {
        self.historic.active_len() + self.neg.len() + self.live.open_count()
    }

    pub(crate) fn queued_packs(&self) -> usize {
        self.historic.queued_len()
    }

    pub(crate) fn live_uncovered(&self) -> usize {
        self.live.uncovered_count()
    }

    pub(crate) fn learned_max_subs(&self) -> Option<u32> {
        self.limits.learned_max_subs()
    }

    pub(crate) fn failures(&self) -> u32 {
        self.link.backoff().failures
    }

    pub(crate) fn cooldown_until(&self) -> Option<Time> {
        self.cooldown.until()
    }

    pub(crate) fn last_connected(&self) -> Option<Time> {
        self.link.last_connected()
    }

    pub(crate) fn next_resync(&self) -> Option<Time> {
        self.historic.next_resync()
    }

    pub(crate) fn last_event_at(&self) -> [Option<u64>; 3] {
        self.last_event_at
    }

    pub(crate) fn nip77(&self) -> Nip77Support {
        self.neg.support()
    }

    pub(crate) fn stats(&self) -> &RelayStats {
        &self.stats
    }

    pub(crate) fn scheduled(&self) -> Option<Deadline> {
        self.scheduled
    }

    /// Records what the engine's timer set holds; returns the previous one.
    pub(crate) fn set_scheduled(&mut self, next: Option<Deadline>) -> Option<Deadline> {
        std::mem::replace(&mut self.scheduled, next)
    }

    /// The filters of an open subscription, rebuilt from its targets.
    pub(crate) fn subscription_filters(
        &self,
        sub: &SubscriptionId,
        config: &Config,
    ) -> Option<Vec<Filter>> {
        match self.subs.owner(sub)? {
            Owner::Historic => self
                .historic
                .subscription_filters(sub, &self.budget(config)),
            Owner::NegFetch => self.neg.subscription_filters(sub),
            Owner::Live => self.live.subscription_filters(sub),
            Owner::NegOpen => None,
        }
    }

    /// Would an event for `sub` be accepted? (No state change.)
    pub(crate) fn check_event(&self, sub: &SubscriptionId, event: &Event) -> EventCheck {
        let verdict = match self.subs.owner(sub) {
            Some(Owner::Historic) => self
                .historic
                .check_event(sub, event)
                .map(|hit| (hit, SubscriptionMode::Historic)),
            Some(Owner::NegFetch) => self
                .neg
                .check_event(sub, event)
                .map(|hit| (hit, SubscriptionMode::Historic)),
            Some(Owner::NegOpen) => None,
            Some(Owner::Live) | None => self
                .live
                .check_event(sub, event)
                .map(|hit| (hit, SubscriptionMode::Live)),
        };
        match verdict {
            Some((true, mode)) => EventCheck::Accepted(mode),
            Some((false, _)) => EventCheck::Unmatched,
            None => EventCheck::Unrequested,
        }
    }

    /// Checks, in debug builds after every input, that the bookkeeping that
    /// mirrors the parts is exact: `pending` counts the packs holding each
    /// target, and the owner index holds exactly the open subscriptions.
    #[cfg(debug_assertions)]
    pub(crate) fn check_invariants(&self) {
        let packs = self.historic.packs().chain(self.neg.packs());
        debug_assert!(
            self.targets.check(packs.map(|p| &p.targets)),
            "pending out of step on {}",
            self.url
        );
        let mut owners = std::collections::BTreeMap::new();
        owners.extend(self.historic.subs().map(|s| (s.clone(), Owner::Historic)));
        owners.extend(self.live.subs().map(|s| (s.clone(), Owner::Live)));
        owners.extend(self.neg.subs().map(|(s, o)| (s.clone(), o)));
        debug_assert_eq!(
            &owners,
            self.subs.owners(),
            "owner index out of step on {}",
            self.url
        );
    }
}
