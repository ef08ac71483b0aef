//! Target bookkeeping of one relay: what it carries, and the three disjoint
//! views of it — `confirmed` (historic work ended at EOSE), `pending` (in a
//! historic pack, queued, on the wire or in a NIP-77 job) and `given_up`
//! (until the daily pass). New historic work comes only from
//! `targets − pending − confirmed − given_up` ([`TargetBook::new_work`]).

use std::collections::{BTreeMap, BTreeSet};

use super::stats::GiveUpReason;
use crate::types::{KeySet, TargetKey};

/// The targets of one relay and where their historic work stands.
#[derive(Clone, Debug, Default)]
pub(crate) struct TargetBook {
    /// Hashed: added and looked up for every input; sorted where iterated.
    targets: KeySet<TargetKey>,
    confirmed: BTreeSet<TargetKey>,
    /// Targets in historic work, with how many packs hold each (a target
    /// can be in a full pass and a catch-up at once).
    pending: BTreeMap<TargetKey, u32>,
    given_up: BTreeMap<TargetKey, GiveUpReason>,
}

/// What removing a target found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Removed {
    /// It was not a target.
    Absent,
    /// It was, with no historic work under way.
    Idle,
    /// It was, and packs hold it: they must drop it.
    Pending,
}

impl TargetBook {
    /// Adds a target; false when it was one already.
    pub fn insert(&mut self, t: TargetKey) -> bool {
        self.targets.insert(t)
    }

    /// Removes a target and everything known about it.
    pub fn remove(&mut self, t: &TargetKey) -> Removed {
        if !self.targets.remove(t) {
            return Removed::Absent;
        }
        self.confirmed.remove(t);
        self.given_up.remove(t);
        if self.pending.remove(t).is_some() {
            Removed::Pending
        } else {
            Removed::Idle
        }
    }

    pub fn contains(&self, t: &TargetKey) -> bool {
        self.targets.contains(t)
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// The targets, unordered (hashed).
    pub fn iter(&self) -> impl Iterator<Item = &TargetKey> {
        self.targets.iter()
    }

    /// The targets in order (order matters wherever work is planned from them).
    pub fn sorted(&self) -> Vec<&TargetKey> {
        let mut t: Vec<&TargetKey> = self.targets.iter().collect();
        t.sort_unstable();
        t
    }

    /// Neither pending, confirmed nor given up: nothing is known of it yet.
    pub fn is_new(&self, t: &TargetKey) -> bool {
        !self.pending.contains_key(t)
            && !self.confirmed.contains(t)
            && !self.given_up.contains_key(t)
    }

    /// The three-way difference, in order: targets with no historic work
    /// done, under way or given up.
    pub fn new_work(&self) -> Vec<TargetKey> {
        self.sorted()
            .into_iter()
            .filter(|t| self.is_new(t))
            .cloned()
            .collect()
    }

    /// One more pack holds `t`.
    pub fn pend(&mut self, t: &TargetKey) {
        *self.pending.entry(t.clone()).or_insert(0) += 1;
    }

    /// One pack fewer holds `t`; true when none does any more.
    pub fn unpend(&mut self, t: &TargetKey) -> bool {
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

    /// A pack holding `targets` finished every filter: each is confirmed
    /// once no other pack holds it, unless it stopped being a target.
    pub fn confirm(&mut self, targets: impl IntoIterator<Item = TargetKey>) {
        for t in targets {
            if self.unpend(&t) && self.targets.contains(&t) {
                self.given_up.remove(&t);
                self.confirmed.insert(t);
            }
        }
    }

    /// A pack holding `targets` is given up for `reason` (what was
    /// confirmed before stays confirmed).
    pub fn give_up(&mut self, targets: impl IntoIterator<Item = TargetKey>, reason: GiveUpReason) {
        for t in targets {
            self.unpend(&t);
            if !self.confirmed.contains(&t) {
                self.given_up.insert(t, reason);
            }
        }
    }

    /// Forgets every refusal (the daily pass).
    pub fn forgive(&mut self) {
        self.given_up.clear();
    }

    /// Forgets work refused as malformed: it may only have been too wide
    /// for limits learned since.
    pub fn forgive_rejected(&mut self) {
        self.given_up.retain(|_, r| *r != GiveUpReason::Rejected);
    }

    pub fn is_given_up(&self, t: &TargetKey) -> bool {
        self.given_up.contains_key(t)
    }

    /// Given-up targets counted by reason.
    pub fn given_up_counts(&self) -> BTreeMap<GiveUpReason, usize> {
        let mut counts = BTreeMap::new();
        for reason in self.given_up.values() {
            *counts.entry(*reason).or_insert(0) += 1;
        }
        counts
    }

    pub fn confirmed(&self) -> &BTreeSet<TargetKey> {
        &self.confirmed
    }

    /// Confirmed targets that are still targets, in order (what a quick
    /// reconnect catches up on).
    pub fn confirmed_targets(&self) -> Vec<TargetKey> {
        self.confirmed
            .iter()
            .filter(|c| self.targets.contains(*c))
            .cloned()
            .collect()
    }

    /// Forgets confirmations (a fresh start).
    pub fn clear_confirmed(&mut self) {
        self.confirmed.clear();
    }

    /// Drops confirmations of targets no longer carried.
    pub fn prune_confirmed(&mut self) {
        let targets = &self.targets;
        self.confirmed.retain(|c| targets.contains(c));
    }

    /// Restores saved confirmations.
    pub fn restore_confirmed(&mut self, confirmed: impl IntoIterator<Item = TargetKey>) {
        self.confirmed = confirmed.into_iter().collect();
    }

    pub fn pending(&self) -> impl Iterator<Item = &TargetKey> {
        self.pending.keys()
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The connection ended: every pack is gone.
    pub fn clear_pending(&mut self) {
        self.pending.clear();
    }

    /// Checks that `pending` counts exactly the packs holding each target
    /// (`packs`: every pack's target set). A leak would leave work
    /// "pending" forever; a shortfall would confirm targets early.
    #[cfg(debug_assertions)]
    pub fn check<'a>(&self, packs: impl Iterator<Item = &'a BTreeSet<TargetKey>>) -> bool {
        let mut counted: BTreeMap<&TargetKey, u32> = BTreeMap::new();
        for p in packs {
            for t in p {
                *counted.entry(t).or_insert(0) += 1;
            }
        }
        let pending: BTreeMap<&TargetKey, u32> =
            self.pending.iter().map(|(t, n)| (t, *n)).collect();
        counted == pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::event::EventId;

    fn root(n: u8) -> TargetKey {
        TargetKey::Root(EventId::from_byte_array([n; 32]))
    }

    #[test]
    fn new_work_is_the_three_way_difference() {
        let mut b = TargetBook::default();
        for n in 1..=5 {
            assert!(b.insert(root(n)));
        }
        assert!(!b.insert(root(1)), "already a target");
        b.pend(&root(1));
        b.pend(&root(2));
        b.confirm([root(2)]);
        b.pend(&root(3));
        b.give_up([root(3)], GiveUpReason::Refused);
        assert_eq!(b.new_work(), vec![root(4), root(5)]);
        assert_eq!(b.pending().cloned().collect::<Vec<_>>(), vec![root(1)]);
        assert_eq!(b.confirmed().len(), 1);
        assert_eq!(b.given_up_counts().get(&GiveUpReason::Refused), Some(&1));
        b.forgive();
        assert_eq!(b.new_work(), vec![root(3), root(4), root(5)]);
    }

    #[test]
    fn a_target_in_two_packs_is_confirmed_when_both_end() {
        let mut b = TargetBook::default();
        b.insert(root(1));
        b.pend(&root(1));
        b.pend(&root(1));
        b.confirm([root(1)]);
        assert!(b.confirmed().is_empty(), "another pack still holds it");
        assert!(b.has_pending());
        b.confirm([root(1)]);
        assert!(b.confirmed().contains(&root(1)));
        assert!(!b.has_pending());
        let packs = [BTreeSet::from([root(1)])];
        assert!(
            !b.check(packs.iter()),
            "counted against a pack that is gone"
        );
        assert!(b.check(std::iter::empty()));
    }

    #[test]
    fn removal_reports_pending_work_and_forgets_everything() {
        let mut b = TargetBook::default();
        b.insert(root(1));
        b.insert(root(2));
        b.pend(&root(1));
        b.pend(&root(2));
        b.confirm([root(2)]);
        assert_eq!(b.remove(&root(1)), Removed::Pending);
        assert_eq!(b.remove(&root(2)), Removed::Idle);
        assert_eq!(b.remove(&root(2)), Removed::Absent);
        assert!(b.is_empty() && !b.has_pending() && b.confirmed().is_empty());
    }

    #[test]
    fn confirmation_of_a_removed_target_is_dropped_and_given_up_keeps_confirmed() {
        let mut b = TargetBook::default();
        b.insert(root(1));
        b.pend(&root(1));
        b.confirm([root(1)]);
        b.pend(&root(1));
        b.give_up([root(1)], GiveUpReason::Unresponsive);
        assert!(b.confirmed().contains(&root(1)), "confirmed before, stays");
        assert!(!b.is_given_up(&root(1)));
        b.insert(root(9));
        b.pend(&root(9));
        b.remove(&root(9));
        b.confirm([root(9)]);
        assert!(!b.confirmed().contains(&root(9)));
    }
}
