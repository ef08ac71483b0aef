//! What we track: repo announcements (replaceable, deletable), their root
//! events, and the per-relay target sets derived from them (spec section 2).
//!
//! The catalog answers "which targets should relay R carry?" and reports every
//! change to that answer as a [`TargetDelta`], so the engine only touches the
//! relays an input actually affects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use nostr::event::EventId;
use nostr::key::PublicKey;
use serde::{Deserialize, Serialize};

use crate::announcement::Announcement;
use crate::types::{KeyMap, RepoCoord, TargetKey};
use crate::url::RelayUrl;

/// Coordinates one deletion request may tombstone (a request naming
/// thousands is hostile, not housekeeping).
pub const MAX_DELETED_PER_REQUEST: usize = 100;

/// A change of one relay's target set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetDelta {
    /// The relay whose targets changed.
    pub relay: RelayUrl,
    /// The target.
    pub target: TargetKey,
    /// Added (true) or removed (false).
    pub added: bool,
}

/// One known repo announcement (the winning version of its coordinate).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoEntry {
    /// Id of the winning announcement.
    pub event_id: EventId,
    /// Its `created_at` (seconds).
    pub created_at: u64,
    /// Whether we sync it (it lists the service, or archive mode).
    pub tracked: bool,
    /// Remote relays it lists (normalised, sorted).
    pub relays: Vec<RelayUrl>,
    /// Maintainers it lists.
    pub maintainers: Vec<PublicKey>,
}

/// One known root event (patch, pull request or issue).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootEntry {
    /// Author of the root event.
    pub author: PublicKey,
    /// The repos it tags with `a` tags.
    pub repos: Vec<Arc<RepoCoord>>,
}

/// What happened to an announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpsertOutcome {
    /// New coordinate.
    Added,
    /// Replaced an older version.
    Replaced,
    /// An equal or newer version is already known.
    Stale,
    /// A deletion request covers it.
    Deleted,
    /// Not tracked, and no tracked version to supersede: not kept.
    Untracked,
}

/// The tracked world.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    repos: KeyMap<Arc<RepoCoord>, RepoEntry>,
    /// Coordinates deleted by their author, with the deletion's `created_at`:
    /// versions at or before it stay deleted.
    tombstones: KeyMap<Arc<RepoCoord>, u64>,
    roots: BTreeMap<EventId, RootEntry>,
    repo_roots: KeyMap<Arc<RepoCoord>, BTreeSet<EventId>>,
    deleted_roots: BTreeSet<EventId>,
    /// (maintainer, identifier) → number of tracked repos granting it.
    maintainers: BTreeMap<(PublicKey, String), u32>,
    /// relay → target → number of reasons it is wanted there.
    relay_refs: KeyMap<RelayUrl, KeyMap<TargetKey, u32>>,
    /// Id of each known repo's winning announcement.
    announcement_ids: BTreeMap<EventId, Arc<RepoCoord>>,
}

impl Catalog {
    /// Records an announcement. `tracked` says whether we sync it.
    pub fn upsert_announcement(
        &mut self,
        ann: &Announcement,
        tracked: bool,
        deltas: &mut Vec<TargetDelta>,
    ) -> UpsertOutcome {
        let created_at = ann.created_at.as_secs();
        if self
            .tombstones
            .get(&ann.coord)
            .is_some_and(|deleted_at| created_at <= *deleted_at)
        {
            return UpsertOutcome::Deleted;
        }
        // An untracked announcement matters only as a newer version of a
        // tracked one; otherwise keeping it would let anyone's announcements
        // (layer 1 brings them all) fill memory.
        if !tracked && !self.repos.contains_key(&ann.coord) {
            return UpsertOutcome::Untracked;
        }
        let outcome = match self.repos.get(&ann.coord) {
            Some(old)
                if (old.created_at, std::cmp::Reverse(old.event_id))
                    >= (created_at, std::cmp::Reverse(ann.event_id)) =>
            {
                return UpsertOutcome::Stale;
            }
            Some(_) => UpsertOutcome::Replaced,
            None => UpsertOutcome::Added,
        };
        let coord = self.intern(&ann.coord);
        let new = RepoEntry {
            event_id: ann.event_id,
            created_at,
            tracked,
            // An untracked version is kept only to supersede: no relays.
            relays: if tracked {
                ann.relays.clone()
            } else {
                Vec::new()
            },
            maintainers: if tracked {
                ann.maintainers.clone()
            } else {
                Vec::new()
            },
        };
        let old = self.repos.insert(coord.clone(), new);
        if let Some(old) = &old {
            self.announcement_ids.remove(&old.event_id);
        }
        self.announcement_ids.insert(ann.event_id, coord.clone());
        self.retarget(&coord, old.as_ref(), deltas);
        outcome
    }

    /// Records a root event tagging `repos`.
    pub fn add_root(
        &mut self,
        id: EventId,
        author: PublicKey,
        repos: &[RepoCoord],
        deltas: &mut Vec<TargetDelta>,
    ) -> bool {
        if self.deleted_roots.contains(&id) || self.roots.contains_key(&id) || repos.is_empty() {
            return false;
        }
        let mut coords: Vec<Arc<RepoCoord>> = repos.iter().map(|c| self.intern(c)).collect();
        coords.sort();
        coords.dedup();
        for c in &coords {
            self.repo_roots.entry(c.clone()).or_default().insert(id);
            if let Some(entry) = self.repos.get(c).filter(|e| e.tracked) {
                for relay in entry.relays.clone() {
                    self.add_ref(&relay, TargetKey::Root(id), deltas);
                }
            }
        }
        self.roots.insert(
            id,
            RootEntry {
                author,
                repos: coords,
            },
        );
        true
    }

    /// Applies a deletion request by `author` at `created_at` naming
    /// coordinates and event ids. Only the author's own events are removed.
    pub fn delete(
        &mut self,
        author: &PublicKey,
        created_at: u64,
        coords: &[RepoCoord],
        ids: &[EventId],
        deltas: &mut Vec<TargetDelta>,
    ) -> usize {
        let mut removed = 0;
        // A deletion request is bounded in what it can make us remember.
        for c in coords
            .iter()
            .filter(|c| c.author == *author)
            .take(MAX_DELETED_PER_REQUEST)
        {
            let coord = self.intern(c);
            let t = self.tombstones.entry(coord.clone()).or_insert(0);
            *t = (*t).max(created_at);
            if self
                .repos
                .get(&coord)
                .is_some_and(|e| e.created_at <= created_at)
            {
                self.remove_repo(&coord, deltas);
                removed += 1;
            }
        }
        for id in ids {
            let by_announcement = self
                .announcement_ids
                .get(id)
                .filter(|c| c.author == *author)
                .and_then(|c| self.repos.get(c).map(|e| (c.clone(), e.created_at)));
            if let Some((coord, at)) = by_announcement {
                let t = self.tombstones.entry(coord.clone()).or_insert(0);
                *t = (*t).max(at);
                self.remove_repo(&coord, deltas);
                removed += 1;
            } else if self.roots.get(id).is_some_and(|r| r.author == *author) {
                self.remove_root(*id, deltas);
                self.deleted_roots.insert(*id);
                removed += 1;
            }
        }
        removed
    }

    /// The targets a relay should carry (without bootstrap discovery).
    pub fn relay_targets(&self, relay: &RelayUrl) -> impl Iterator<Item = &TargetKey> {
        let mut targets: Vec<&TargetKey> = self
            .relay_refs
            .get(relay)
            .into_iter()
            .flat_map(|m| m.keys())
            .collect();
        targets.sort();
        targets.into_iter()
    }

    /// Relays that carry at least one target, in order.
    pub fn relays(&self) -> impl Iterator<Item = &RelayUrl> {
        let mut urls: Vec<&RelayUrl> = self.relay_refs.keys().collect();
        urls.sort();
        urls.into_iter()
    }

    /// Whether a repo is tracked.
    pub fn is_tracked_repo(&self, coord: &RepoCoord) -> bool {
        self.repos.get(coord).is_some_and(|e| e.tracked)
    }

    /// Whether a root event tags a tracked repo.
    pub fn is_tracked_root(&self, id: &EventId) -> bool {
        self.roots
            .get(id)
            .is_some_and(|r| r.repos.iter().any(|c| self.is_tracked_repo(c)))
    }

    /// Whether `author` may publish state (30618) for identifier `d`.
    pub fn may_publish_state(&self, author: &PublicKey, identifier: &str) -> bool {
        self.is_tracked_repo(&RepoCoord::new(*author, identifier))
            || self
                .maintainers
                .contains_key(&(*author, identifier.to_owned()))
    }

    /// Every known repo, in coordinate order.
    pub fn repos(&self) -> impl Iterator<Item = (&Arc<RepoCoord>, &RepoEntry)> {
        let mut repos: Vec<_> = self.repos.iter().collect();
        repos.sort_by(|a, b| a.0.cmp(b.0));
        repos.into_iter()
    }

    /// Every known root, in id order.
    pub fn roots(&self) -> impl Iterator<Item = (&EventId, &RootEntry)> {
        self.roots.iter()
    }

    /// Deleted coordinates with their deletion time.
    pub fn tombstones(&self) -> impl Iterator<Item = (&Arc<RepoCoord>, &u64)> {
        let mut t: Vec<_> = self.tombstones.iter().collect();
        t.sort_by(|a, b| a.0.cmp(b.0));
        t.into_iter()
    }

    /// Deleted root ids.
    pub fn deleted_roots(&self) -> impl Iterator<Item = &EventId> {
        self.deleted_roots.iter()
    }

    /// Number of tracked repos.
    pub fn tracked_repos(&self) -> usize {
        self.repos.values().filter(|e| e.tracked).count()
    }

    /// Restores a saved repo entry (snapshot load).
    pub fn restore_repo(
        &mut self,
        coord: &RepoCoord,
        entry: RepoEntry,
        deltas: &mut Vec<TargetDelta>,
    ) {
        let coord = self.intern(coord);
        self.announcement_ids.insert(entry.event_id, coord.clone());
        let old = self.repos.insert(coord.clone(), entry);
        self.retarget(&coord, old.as_ref(), deltas);
    }

    /// Restores a tombstone (snapshot load).
    pub fn restore_tombstone(&mut self, coord: &RepoCoord, at: u64) {
        let coord = self.intern(coord);
        self.tombstones.insert(coord, at);
    }

    /// Restores a deleted root id (snapshot load).
    pub fn restore_deleted_root(&mut self, id: EventId) {
        self.deleted_roots.insert(id);
    }

    /// The shared key of a coordinate (one allocation per coordinate).
    pub fn intern(&self, coord: &RepoCoord) -> Arc<RepoCoord> {
        if let Some((k, _)) = self.repos.get_key_value(coord) {
            return k.clone();
        }
        if !self.repo_roots.is_empty() {
            if let Some((k, _)) = self.repo_roots.get_key_value(coord) {
                return k.clone();
            }
        }
        if !self.tombstones.is_empty() {
            if let Some((k, _)) = self.tombstones.get_key_value(coord) {
                return k.clone();
            }
        }
        Arc::new(coord.clone())
    }

    /// Removes a deleted repo, and the root events that belonged to it alone
    /// (an index must not keep what nothing can use).
    fn remove_repo(&mut self, coord: &Arc<RepoCoord>, deltas: &mut Vec<TargetDelta>) {
        if let Some(old) = self.repos.remove(coord) {
            self.announcement_ids.remove(&old.event_id);
            self.untarget(coord, &old, deltas);
        }
        for id in self.repo_roots.remove(coord).unwrap_or_default() {
            if let Some(root) = self.roots.get_mut(&id) {
                root.repos.retain(|c| c != coord);
                if root.repos.is_empty() {
                    self.roots.remove(&id);
                }
            }
        }
    }

    /// The author of the tracked repo whose winning announcement is `id`.
    pub fn tracked_announcement_author(&self, id: &EventId) -> Option<PublicKey> {
        self.announcement_ids
            .get(id)
            .filter(|c| self.is_tracked_repo(c))
            .map(|c| c.author)
    }

    fn remove_root(&mut self, id: EventId, deltas: &mut Vec<TargetDelta>) {
        let Some(root) = self.roots.remove(&id) else {
            return;
        };
        for c in &root.repos {
            if let Some(set) = self.repo_roots.get_mut(c) {
                set.remove(&id);
                if set.is_empty() {
                    self.repo_roots.remove(c);
                }
            }
            if let Some(entry) = self.repos.get(c).filter(|e| e.tracked) {
                for relay in entry.relays.clone() {
                    self.del_ref(&relay, &TargetKey::Root(id), deltas);
                }
            }
        }
    }

    /// Moves a repo's targets from `old`'s relays to its current entry's.
    fn retarget(
        &mut self,
        coord: &Arc<RepoCoord>,
        old: Option<&RepoEntry>,
        deltas: &mut Vec<TargetDelta>,
    ) {
        let Some(new) = self.repos.get(coord).cloned() else {
            return;
        };
        // Add first, then remove, so a relay kept by both versions never
        // drops to zero references (no spurious remove/add churn).
        if new.tracked {
            self.grant(coord, &new);
            for relay in &new.relays {
                self.add_repo_refs(relay, coord, deltas);
            }
        }
        if let Some(old) = old {
            self.untarget(coord, old, deltas);
        }
    }

    fn untarget(&mut self, coord: &Arc<RepoCoord>, old: &RepoEntry, deltas: &mut Vec<TargetDelta>) {
        if !old.tracked {
            return;
        }
        self.revoke(coord, old);
        for relay in &old.relays {
            self.del_repo_refs(relay, coord, deltas);
        }
    }

    fn grant(&mut self, coord: &RepoCoord, entry: &RepoEntry) {
        for m in &entry.maintainers {
            *self
                .maintainers
                .entry((*m, coord.identifier.clone()))
                .or_insert(0) += 1;
        }
    }

    fn revoke(&mut self, coord: &RepoCoord, entry: &RepoEntry) {
        for m in &entry.maintainers {
            let key = (*m, coord.identifier.clone());
            if let Some(n) = self.maintainers.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.maintainers.remove(&key);
                }
            }
        }
    }

    fn add_repo_refs(
        &mut self,
        relay: &RelayUrl,
        coord: &Arc<RepoCoord>,
        deltas: &mut Vec<TargetDelta>,
    ) {
        self.add_ref(relay, TargetKey::Discovery, deltas);
        self.add_ref(relay, TargetKey::Repo(coord.clone()), deltas);
        let roots: Vec<EventId> = self
            .repo_roots
            .get(coord)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in roots {
            self.add_ref(relay, TargetKey::Root(id), deltas);
        }
    }

    fn del_repo_refs(
        &mut self,
        relay: &RelayUrl,
        coord: &Arc<RepoCoord>,
        deltas: &mut Vec<TargetDelta>,
    ) {
        let roots: Vec<EventId> = self
            .repo_roots
            .get(coord)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in roots {
            self.del_ref(relay, &TargetKey::Root(id), deltas);
        }
        self.del_ref(relay, &TargetKey::Repo(coord.clone()), deltas);
        self.del_ref(relay, &TargetKey::Discovery, deltas);
    }

    fn add_ref(&mut self, relay: &RelayUrl, target: TargetKey, deltas: &mut Vec<TargetDelta>) {
        let refs = self.relay_refs.entry(relay.clone()).or_default();
        let n = refs.entry(target.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            deltas.push(TargetDelta {
                relay: relay.clone(),
                target,
                added: true,
            });
        }
    }

    fn del_ref(&mut self, relay: &RelayUrl, target: &TargetKey, deltas: &mut Vec<TargetDelta>) {
        let Some(refs) = self.relay_refs.get_mut(relay) else {
            return;
        };
        let Some(n) = refs.get_mut(target) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            refs.remove(target);
            deltas.push(TargetDelta {
                relay: relay.clone(),
                target: target.clone(),
                added: false,
            });
            if refs.is_empty() {
                self.relay_refs.remove(relay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announcement::{parse_announcement, AnnouncementRules};
    use crate::testutil::{announcement, coord, ev, issue, pk, url, SERVICE};
    use crate::url::ServiceId;

    fn parse(e: &nostr::event::Event) -> Announcement {
        let service = ServiceId::parse(SERVICE).unwrap();
        let rules = AnnouncementRules {
            service: &service,
            use_clone_urls: true,
            max_relays: 20,
            allow_private: false,
        };
        parse_announcement(e, &rules).unwrap()
    }

    fn targets(c: &Catalog, relay: &str) -> Vec<String> {
        c.relay_targets(&url(relay))
            .map(|t| t.to_string())
            .collect()
    }

    #[test]
    fn newest_announcement_wins_and_moves_targets() {
        let mut c = Catalog::default();
        let mut d = Vec::new();
        let old = parse(&announcement(
            1,
            "r",
            100,
            &["wss://a.example", "wss://b.example"],
        ));
        assert_eq!(
            c.upsert_announcement(&old, true, &mut d),
            UpsertOutcome::Added
        );
        assert_eq!(d.iter().filter(|x| x.added).count(), 4); // discovery + repo on a and b
        d.clear();
        let new = parse(&announcement(1, "r", 200, &["wss://a.example"]));
        assert_eq!(
            c.upsert_announcement(&new, true, &mut d),
            UpsertOutcome::Replaced
        );
        // Relay a keeps both targets (no churn); relay b loses both.
        assert!(d
            .iter()
            .all(|x| !x.added && x.relay == url("wss://b.example")));
        assert_eq!(d.len(), 2);
        assert!(targets(&c, "wss://b.example").is_empty());
        d.clear();
        assert_eq!(
            c.upsert_announcement(&old, true, &mut d),
            UpsertOutcome::Stale
        );
        assert!(d.is_empty());
    }

    #[test]
    fn ties_go_to_the_lowest_id() {
        let mut c = Catalog::default();
        let mut d = Vec::new();
        let x = parse(&announcement(1, "r", 100, &["wss://a.example"]));
        let y = parse(&announcement(1, "r", 100, &["wss://b.example"]));
        let (low, high) = if x.event_id < y.event_id {
            (x, y)
        } else {
            (y, x)
        };
        c.upsert_announcement(&high, true, &mut d);
        assert_eq!(
            c.upsert_announcement(&low, true, &mut d),
            UpsertOutcome::Replaced
        );
        assert_eq!(
            c.upsert_announcement(&high, true, &mut d),
            UpsertOutcome::Stale
        );
    }

    #[test]
    fn roots_follow_their_repos_relays() {
        let mut c = Catalog::default();
        let mut d = Vec::new();
        let r = coord(1, "r");
        let i = issue(9, 150, &r);
        // A root seen before its repo is remembered and appears with it.
        assert!(c.add_root(i.id, i.pubkey, std::slice::from_ref(&r), &mut d));
        assert!(d.is_empty());
        c.upsert_announcement(
            &parse(&announcement(1, "r", 100, &["wss://a.example"])),
            true,
            &mut d,
        );
        assert!(targets(&c, "wss://a.example").contains(&format!("root {}", i.id.to_hex())));
        assert!(c.is_tracked_root(&i.id));
        // The same root again changes nothing.
        assert!(!c.add_root(i.id, i.pubkey, &[r], &mut d));
    }

    #[test]
    fn deletion_by_author_removes_and_blocks_older_versions() {
        let mut c = Catalog::default();
        let mut d = Vec::new();
        let a = parse(&announcement(1, "r", 100, &["wss://a.example"]));
        c.upsert_announcement(&a, true, &mut d);
        d.clear();
        // Someone else cannot delete it.
        assert_eq!(c.delete(&pk(2), 300, &[coord(1, "r")], &[], &mut d), 0);
        assert!(c.is_tracked_repo(&coord(1, "r")));
        assert_eq!(c.delete(&pk(1), 300, &[coord(1, "r")], &[], &mut d), 1);
        assert!(!c.is_tracked_repo(&coord(1, "r")));
        assert!(targets(&c, "wss://a.example").is_empty());
        // A version from before the deletion stays deleted; a later one is new.
        assert_eq!(
            c.upsert_announcement(&a, true, &mut d),
            UpsertOutcome::Deleted
        );
        let later = parse(&announcement(1, "r", 400, &["wss://a.example"]));
        assert_eq!(
            c.upsert_announcement(&later, true, &mut d),
            UpsertOutcome::Added
        );
    }

    #[test]
    fn deletion_by_id_removes_repo_or_root() {
        let mut c = Catalog::default();
        let mut d = Vec::new();
        let e = announcement(1, "r", 100, &["wss://a.example"]);
        c.upsert_announcement(&parse(&e), true, &mut d);
        let i = issue(9, 150, &coord(1, "r"));
        c.add_root(i.id, i.pubkey, &[coord(1, "r")], &mut d);
        assert_eq!(c.delete(&pk(9), 200, &[], &[i.id], &mut d), 1);
        assert!(!c.is_tracked_root(&i.id));
        assert!(
            !c.add_root(i.id, i.pubkey, &[coord(1, "r")], &mut d),
            "deleted roots stay deleted"
        );
        assert_eq!(c.delete(&pk(1), 200, &[], &[e.id], &mut d), 1);
        assert!(c.relays().next().is_none());
    }

    #[test]
    fn untracked_repos_have_no_targets_and_maintainers_may_publish_state() {
        let mut c = Catalog::default();
        let mut d = Vec::new();
        let m = pk(7).to_hex();
        let e = ev(
            1,
            100,
            30617,
            &[
                &["d", "r"],
                &["relays", "wss://a.example"],
                &["maintainers", &m],
            ],
        );
        c.upsert_announcement(&parse(&e), false, &mut d);
        assert!(d.is_empty());
        assert!(!c.may_publish_state(&pk(7), "r"));
        c.upsert_announcement(
            &parse(&ev(
                1,
                101,
                30617,
                &[
                    &["d", "r"],
                    &["relays", "wss://a.example"],
                    &["maintainers", &m],
                ],
            )),
            true,
            &mut d,
        );
        assert!(c.may_publish_state(&pk(7), "r"));
        assert!(c.may_publish_state(&pk(1), "r"));
        assert!(!c.may_publish_state(&pk(8), "r"));
    }
}
