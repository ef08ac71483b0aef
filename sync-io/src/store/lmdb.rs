//! The embedded store: an LMDB database (nostr-lmdb) in a data directory,
//! for a GRASP service that keeps its events in-process.
//!
//! [`LmdbStore`] owns the database environment in its directory (created if
//! missing) and is the only writer to it. Saves go through nostr-lmdb's
//! ingester thread, which batches concurrent saves into one write
//! transaction, so the runner should keep many saves in flight rather than
//! awaiting them one by one.
//!
//! The store does not judge events: the runner applies the acceptance guard
//! (only what the GRASP service itself would accept: verified id and
//! signature, and the core's acceptance check) before calling
//! [`EventStore::save`]. NIP-09 deletions (kind 5) and NIP-62 requests to
//! vanish are processed by the database as the service's relay would.
//!
//! How nostr-lmdb's save status maps to [`StoreOutcome`]:
//!
//! | `SaveEventStatus`                 | outcome     | why |
//! |-----------------------------------|-------------|-----|
//! | `Success`                         | `Stored`    | new |
//! | `Rejected(Duplicate)`             | `Duplicate` | same id already held |
//! | `Rejected(Replaced)`              | `Duplicate` | an older version of a replaceable/addressable event: we hold a newer one, nothing is missing |
//! | `Rejected(Deleted)`               | `Rejected`  | a deletion request we hold covers it |
//! | `Rejected(Ephemeral \| Expired \| InvalidDelete \| Vanished \| Other)` | `Rejected` | the store will never hold it |
//!
//! The catalog feed ([`EventStore::start_catalog_feed`]) sends only the
//! initial load: every stored event of the [`CATALOG_KINDS`](super::CATALOG_KINDS), newest first.
//! Nothing else writes to this database, so the runner itself feeds the
//! engine the events whose later saves succeed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use grasp_sync_core::StoreOutcome;
use nostr::event::{Event, EventId};
use nostr::filter::Filter;
use nostr::types::Timestamp;
use nostr_database::NostrDatabase;
use nostr_lmdb::NostrLmdb;
use tokio::sync::mpsc;

use super::{catalog, BoxFuture, EventStore, StoreError};

/// Events read per query while streaming the catalog to the engine.
const CATALOG_PAGE: usize = 2000;

/// An [`EventStore`] over an LMDB database in a data directory.
///
/// Cheap to share behind an `Arc`; every method takes `&self`. After
/// [`EventStore::close`], every operation returns [`StoreError::Closed`]
/// and the database is released once the operations already running end.
pub struct LmdbStore {
    db: RwLock<Option<Arc<NostrLmdb>>>,
    dir: PathBuf,
    page: usize,
}

impl std::fmt::Debug for LmdbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmdbStore").field("dir", &self.dir).finish()
    }
}

fn db_err(e: nostr_database::error::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// The outcome for a nostr-lmdb save status: nostr-lmdb speaks
/// `nostr-database` 0.45, mapped once for every such database.
pub use super::database::outcome_of;

impl LmdbStore {
    /// Opens (creating if needed) the LMDB database in `dir`.
    pub async fn open(dir: &Path) -> Result<LmdbStore, StoreError> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| StoreError::Database(format!("cannot create {}: {e}", dir.display())))?;
        let db = NostrLmdb::builder(dir)
            .build()
            .await
            .map_err(|e| StoreError::Database(format!("cannot open {}: {e}", dir.display())))?;
        Ok(LmdbStore {
            db: RwLock::new(Some(Arc::new(db))),
            dir: dir.to_path_buf(),
            page: CATALOG_PAGE,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database, or `Closed`. The lock is held only to clone the `Arc`.
    fn db(&self) -> Result<Arc<NostrLmdb>, StoreError> {
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        guard.clone().ok_or(StoreError::Closed)
    }

    /// Stored events matching `filter`, newest first (ties by id).
    pub async fn query(&self, filter: Filter) -> Result<Vec<Event>, StoreError> {
        let db = self.db()?;
        let events = db.query(filter).await.map_err(db_err)?;
        let mut v: Vec<Event> = events.into_iter().collect();
        v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    /// How many stored events match `filter`.
    pub async fn count(&self, filter: Filter) -> Result<usize, StoreError> {
        let db = self.db()?;
        db.count(filter).await.map_err(db_err)
    }

    /// `(id, created_at)` of the stored events matching `filter`, for NIP-77
    /// reconciliation.
    pub async fn negentropy_items(
        &self,
        filter: Filter,
    ) -> Result<Vec<(EventId, Timestamp)>, StoreError> {
        let db = self.db()?;
        db.negentropy_items(filter).await.map_err(db_err)
    }

    /// Saves one event and maps the status (see the module documentation).
    pub async fn save_event(&self, event: &Event) -> Result<StoreOutcome, StoreError> {
        let db = self.db()?;
        let status = db.save_event(event).await.map_err(db_err)?;
        Ok(outcome_of(status))
    }

    /// Sends every stored catalog event to `feed`, newest first, in pages
    /// of `self.page`.
    async fn feed_catalog(&self, feed: &mpsc::Sender<Event>) -> Result<(), StoreError> {
        catalog::feed_newest_first(|filter| self.query(filter), self.page, feed).await
    }
}

impl EventStore for LmdbStore {
    fn save(&self, event: Event) -> BoxFuture<'_, Result<StoreOutcome, StoreError>> {
        Box::pin(async move { self.save_event(&event).await })
    }

    /// Sends every stored event of the [`CATALOG_KINDS`](super::CATALOG_KINDS) to `feed` (newest
    /// first) and returns when the last one is queued. The receiver must be
    /// drained concurrently when the catalog may exceed the channel's
    /// capacity. Nothing is sent afterwards (see the module documentation).
    fn start_catalog_feed(
        &self,
        feed: mpsc::Sender<Event>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.feed_catalog(&feed).await })
    }

    fn negentropy_items(
        &self,
        filter: Filter,
    ) -> BoxFuture<'_, Result<Vec<(EventId, Timestamp)>, StoreError>> {
        Box::pin(LmdbStore::negentropy_items(self, filter))
    }

    /// Refuses further operations and releases the database once the
    /// operations already running end (each committed write is durable).
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let db = self.db.write().unwrap_or_else(|p| p.into_inner()).take();
            drop(db);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::event::{EventBuilder, FinalizeEvent, Kind, Tag};
    use nostr::key::{Keys, SecretKey};
    use nostr_database::{RejectedReason, SaveEventStatus};
    use std::collections::HashSet;

    fn keys(n: u8) -> Keys {
        let mut b = [0x11u8; 32];
        b[31] = n;
        Keys::new(SecretKey::from_slice(&b).unwrap())
    }

    fn signed(k: &Keys, kind: u16, at: u64, tags: Vec<Tag>, content: &str) -> Event {
        EventBuilder::new(Kind::from(kind), content)
            .tags(tags)
            .custom_created_at(Timestamp::from_secs(at))
            .finalize(k)
            .unwrap()
    }

    fn announcement(k: &Keys, d: &str, at: u64) -> Event {
        signed(
            k,
            30617,
            at,
            vec![
                Tag::identifier(d),
                Tag::parse(["relays", "wss://git.example.com"]).unwrap(),
            ],
            "",
        )
    }

    async fn collect_feed(store: &LmdbStore) -> Vec<Event> {
        let (tx, mut rx) = mpsc::channel(4);
        let reader = tokio::spawn(async move {
            let mut v = Vec::new();
            while let Some(e) = rx.recv().await {
                v.push(e);
            }
            v
        });
        store.start_catalog_feed(tx).await.unwrap();
        reader.await.unwrap()
    }

    #[tokio::test]
    async fn save_duplicate_and_query() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(&dir.path().join("db")).await.unwrap();
        let k = keys(1);
        let note = signed(&k, 1621, 1_700_000_000, vec![], "issue");
        assert_eq!(
            store.save(note.clone()).await.unwrap(),
            StoreOutcome::Stored
        );
        assert_eq!(
            store.save(note.clone()).await.unwrap(),
            StoreOutcome::Duplicate
        );
        let got = store.query(Filter::new().id(note.id)).await.unwrap();
        assert_eq!(got, vec![note.clone()]);
        assert_eq!(store.count(Filter::new()).await.unwrap(), 1);
        let items = store.negentropy_items(Filter::new()).await.unwrap();
        assert_eq!(items, vec![(note.id, note.created_at)]);
    }

    #[tokio::test]
    async fn concurrent_saves_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path()).await.unwrap();
        let k = keys(2);
        let events: Vec<Event> = (0..200)
            .map(|i| signed(&k, 1621, 1_700_000_000 + i, vec![], "x"))
            .collect();
        let outcomes =
            futures_util::future::join_all(events.iter().cloned().map(|e| store.save(e))).await;
        assert!(outcomes
            .into_iter()
            .all(|o| o.unwrap() == StoreOutcome::Stored));
        assert_eq!(store.count(Filter::new()).await.unwrap(), 200);
    }

    #[tokio::test]
    async fn replaceable_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path()).await.unwrap();
        let k = keys(3);
        let old = announcement(&k, "repo", 1_700_000_000);
        let new = announcement(&k, "repo", 1_700_000_100);
        assert_eq!(store.save(old.clone()).await.unwrap(), StoreOutcome::Stored);
        assert_eq!(store.save(new.clone()).await.unwrap(), StoreOutcome::Stored);
        // The older version arriving again: we hold a newer one.
        assert_eq!(store.save(old).await.unwrap(), StoreOutcome::Duplicate);
        let got = store
            .query(Filter::new().kind(Kind::from(30617)))
            .await
            .unwrap();
        assert_eq!(got, vec![new]);
    }

    #[tokio::test]
    async fn deleted_and_ephemeral_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path()).await.unwrap();
        let k = keys(4);
        let issue = signed(&k, 1621, 1_700_000_000, vec![], "to delete");
        assert_eq!(
            store.save(issue.clone()).await.unwrap(),
            StoreOutcome::Stored
        );
        let deletion = signed(&k, 5, 1_700_000_010, vec![Tag::event(issue.id)], "");
        assert_eq!(store.save(deletion).await.unwrap(), StoreOutcome::Stored);
        assert!(store
            .query(Filter::new().id(issue.id))
            .await
            .unwrap()
            .is_empty());
        // The deleted event arriving again from another relay.
        assert_eq!(store.save(issue).await.unwrap(), StoreOutcome::Rejected);
        let eph = signed(&k, 20001, 1_700_000_000, vec![], "");
        assert_eq!(store.save(eph).await.unwrap(), StoreOutcome::Rejected);
    }

    #[tokio::test]
    async fn catalog_feed_sends_every_catalog_event_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LmdbStore::open(dir.path()).await.unwrap();
        store.page = 7; // many pages, boundaries inside and across seconds
        let k = keys(5);
        let mut expected = HashSet::new();
        let mut saves = Vec::new();
        for i in 0..40u64 {
            // Several events share each second.
            let ev = signed(
                &k,
                1621,
                1_700_000_000 + i / 3,
                vec![],
                &format!("issue {i}"),
            );
            expected.insert(ev.id);
            saves.push(ev);
        }
        // Twenty events in one second: more than a page.
        for i in 0..20u64 {
            let ev = signed(&k, 1617, 1_600_000_000, vec![], &format!("patch {i}"));
            expected.insert(ev.id);
            saves.push(ev);
        }
        let ann = announcement(&k, "repo", 1_650_000_000);
        expected.insert(ann.id);
        saves.push(ann);
        // Not catalog kinds: must not be fed.
        saves.push(signed(&k, 1, 1_700_000_000, vec![], "note"));
        saves.push(signed(&k, 1630, 1_700_000_000, vec![], "status"));
        for ev in saves {
            assert_eq!(store.save(ev).await.unwrap(), StoreOutcome::Stored);
        }

        let fed = collect_feed(&store).await;
        let ids: HashSet<EventId> = fed.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), fed.len(), "an event was fed twice");
        assert_eq!(ids, expected);

        // Default page size: same set.
        store.page = CATALOG_PAGE;
        let fed = collect_feed(&store).await;
        assert_eq!(fed.iter().map(|e| e.id).collect::<HashSet<_>>(), expected);
    }

    #[tokio::test]
    async fn catalog_feed_of_empty_store_and_dropped_receiver() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path()).await.unwrap();
        assert!(collect_feed(&store).await.is_empty());
        let k = keys(6);
        for i in 0..5 {
            store
                .save(signed(&k, 1621, 1_700_000_000 + i, vec![], "x"))
                .await
                .unwrap();
        }
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        store.start_catalog_feed(tx).await.unwrap();
    }

    #[tokio::test]
    async fn closed_store_refuses_and_reopens_with_data() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys(7);
        let ev = signed(&k, 1621, 1_700_000_000, vec![], "kept");
        {
            let store = LmdbStore::open(dir.path()).await.unwrap();
            store.save(ev.clone()).await.unwrap();
            store.close().await.unwrap();
            assert!(matches!(
                store.save(ev.clone()).await,
                Err(StoreError::Closed)
            ));
            assert!(matches!(
                store.query(Filter::new()).await,
                Err(StoreError::Closed)
            ));
        }
        let store = LmdbStore::open(dir.path()).await.unwrap();
        assert_eq!(store.query(Filter::new()).await.unwrap(), vec![ev.clone()]);
        assert_eq!(store.save(ev).await.unwrap(), StoreOutcome::Duplicate);
    }

    #[test]
    fn outcome_mapping() {
        use RejectedReason::*;
        assert_eq!(outcome_of(SaveEventStatus::Success), StoreOutcome::Stored);
        for r in [Duplicate, Replaced] {
            assert_eq!(
                outcome_of(SaveEventStatus::Rejected(r)),
                StoreOutcome::Duplicate
            );
        }
        for r in [Deleted, Ephemeral, Expired, InvalidDelete, Vanished, Other] {
            assert_eq!(
                outcome_of(SaveEventStatus::Rejected(r)),
                StoreOutcome::Rejected
            );
        }
    }
}
