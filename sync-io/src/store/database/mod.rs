//! rust-nostr databases as the sync's store: the database a relay serves
//! from, written into directly, with an `on_stored` hook so the relay can
//! tell its live subscribers.
//!
//! [`DatabaseStore`] takes any `nostr-database` 0.45 [`NostrDatabase`]
//! (nostr-lmdb 0.45, your own); with the `nostr-044` cargo feature,
//! `DatabaseStore044` takes any `nostr-database` 0.44 one (the database of
//! a `nostr-relay-builder` 0.44 `LocalRelay`, nostr-lmdb 0.44, the memory
//! database). Both are a [`NostrDatabaseStore`] over a [`Backend`]; the 0.44
//! backend converts events and filters field by field inside
//! (`compat::v044`), so the host never sees the sync's `nostr`.
//!
//! What the store does, for either version:
//!
//! - [`EventStore::save`]: `save_event`, the status mapped as for the LMDB
//!   store ([`crate::store::lmdb`]): `Success` → `Stored`, `Duplicate` and
//!   `Replaced` → `Duplicate`, every other refusal → `Rejected`. After a
//!   `Stored`, the hook ([`NostrDatabaseStore::on_stored`]) gets the event
//!   in the database's own type — for a `LocalRelay`,
//!   `move |e| { relay.notify_event(e.clone()); }`, because a relay only
//!   tells its subscribers of the events that come in through its sockets.
//! - [`EventStore::start_catalog_feed`]: every stored announcement, root
//!   event and deletion, newest first, read in pages (memory stays bounded
//!   by a page). Nothing after that: the events the relay receives later
//!   reach the engine through [`Admission`](crate::Admission) (its write
//!   policy), and those the sync stores through the runner itself.
//! - [`EventStore::negentropy_items`]: the database's own
//!   `negentropy_items`.
//! - [`EventStore::close`]: further calls fail with [`StoreError::Closed`];
//!   the database itself is the host's and stays open.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use grasp_sync_core::{LocalItem, StoreOutcome};
use nostr::event::Event;
use nostr::filter::Filter;
use nostr_database::{IntoNostrDatabase, NostrDatabase, RejectedReason, SaveEventStatus};
use tokio::sync::mpsc;

use super::{catalog, BoxFuture, EventStore, StoreError};

#[cfg(feature = "nostr-044")]
mod v044;
#[cfg(feature = "nostr-044")]
pub use v044::DatabaseStore044;

/// Events read per query while streaming the catalog to the engine.
const CATALOG_PAGE: usize = 2000;

/// A rust-nostr database of one `nostr` version, as the store needs it:
/// implemented for `Arc<dyn nostr_database::NostrDatabase>` (0.45) and,
/// with the `nostr-044` feature, for the 0.44 trait object. Sealed.
pub trait Backend: sealed::Sealed + Send + Sync + 'static {
    /// The database's own event type (what the `on_stored` hook gets).
    type Event: Send + Sync + 'static;

    /// Saves one event; the outcome, and the event as the database's type.
    fn save(&self, event: Event) -> BoxFuture<'_, Result<(StoreOutcome, Self::Event), StoreError>>;

    /// Stored events matching `filter` (as the sync's type).
    fn query(&self, filter: Filter) -> BoxFuture<'_, Result<Vec<Event>, StoreError>>;

    /// `(id, created_at)` of the stored events matching `filter`.
    fn negentropy_items(&self, filter: Filter)
        -> BoxFuture<'_, Result<Vec<LocalItem>, StoreError>>;
}

mod sealed {
    pub trait Sealed {}
}

/// The hook called with each newly stored event.
type Hook<E> = Box<dyn Fn(&E) + Send + Sync>;

/// An [`EventStore`] over a rust-nostr database (see the module
/// documentation). Use the aliases [`DatabaseStore`] and (feature
/// `nostr-044`) `DatabaseStore044`.
pub struct NostrDatabaseStore<B: Backend> {
    backend: B,
    on_stored: Option<Hook<B::Event>>,
    closed: AtomicBool,
    page: usize,
}

/// The store over a `nostr-database` 0.45 database (the sync's `nostr`).
pub type DatabaseStore = NostrDatabaseStore<Arc<dyn NostrDatabase>>;

impl<B: Backend> fmt::Debug for NostrDatabaseStore<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NostrDatabaseStore")
            .field("on_stored", &self.on_stored.is_some())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl<B: Backend> NostrDatabaseStore<B> {
    fn with_backend(backend: B) -> Self {
        NostrDatabaseStore {
            backend,
            on_stored: None,
            closed: AtomicBool::new(false),
            page: CATALOG_PAGE,
        }
    }

    /// Calls `hook` with every event the sync newly stored (not for
    /// duplicates or refusals), in the database's own event type; what it
    /// returns is dropped (so `move |e| relay.notify_event(e.clone())`
    /// will do). It runs on the saving task: keep it short, never block.
    pub fn on_stored<R>(mut self, hook: impl Fn(&B::Event) -> R + Send + Sync + 'static) -> Self {
        self.on_stored = Some(Box::new(move |event| {
            hook(event);
        }));
        self
    }

    fn open(&self) -> Result<&B, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(&self.backend)
    }

    /// Saves one event (see the module documentation).
    pub async fn save_event(&self, event: Event) -> Result<StoreOutcome, StoreError> {
        let (outcome, stored) = self.open()?.save(event).await?;
        if outcome == StoreOutcome::Stored {
            if let Some(hook) = &self.on_stored {
                hook(&stored);
            }
        }
        Ok(outcome)
    }

    /// Stored events matching `filter`, newest first (ties by id).
    pub async fn query(&self, filter: Filter) -> Result<Vec<Event>, StoreError> {
        let mut events = self.open()?.query(filter).await?;
        events.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(events)
    }

    /// Sends every stored catalog event to `feed`, newest first, in pages
    /// of `self.page`.
    async fn feed_catalog(&self, feed: &mpsc::Sender<Event>) -> Result<(), StoreError> {
        catalog::feed_newest_first(|filter| self.query(filter), self.page, feed).await
    }
}

impl DatabaseStore {
    /// A store over `database` (an `Arc<dyn NostrDatabase>`, an `Arc` of a
    /// database, or a database by value).
    pub fn new(database: impl IntoNostrDatabase) -> Self {
        NostrDatabaseStore::with_backend(database.into_nostr_database())
    }
}

impl<B: Backend> EventStore for NostrDatabaseStore<B> {
    fn save(&self, event: Event) -> BoxFuture<'_, Result<StoreOutcome, StoreError>> {
        Box::pin(self.save_event(event))
    }

    fn start_catalog_feed(
        &self,
        feed: mpsc::Sender<Event>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.feed_catalog(&feed).await })
    }

    fn negentropy_items(
        &self,
        filter: Filter,
    ) -> BoxFuture<'_, Result<Vec<LocalItem>, StoreError>> {
        Box::pin(async move { self.open()?.negentropy_items(filter).await })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.closed.store(true, Ordering::Release);
        Box::pin(async { Ok(()) })
    }
}

/// The outcome for a `nostr-database` 0.45 save status.
pub fn outcome_of(status: SaveEventStatus) -> StoreOutcome {
    match status {
        SaveEventStatus::Success => StoreOutcome::Stored,
        SaveEventStatus::Rejected(RejectedReason::Duplicate | RejectedReason::Replaced) => {
            StoreOutcome::Duplicate
        }
        SaveEventStatus::Rejected(
            RejectedReason::Deleted
            | RejectedReason::Ephemeral
            | RejectedReason::Expired
            | RejectedReason::InvalidDelete
            | RejectedReason::Vanished
            | RejectedReason::Other,
        ) => StoreOutcome::Rejected,
    }
}

fn db_err(e: impl fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

impl sealed::Sealed for Arc<dyn NostrDatabase> {}

impl Backend for Arc<dyn NostrDatabase> {
    type Event = Event;

    fn save(&self, event: Event) -> BoxFuture<'_, Result<(StoreOutcome, Event), StoreError>> {
        Box::pin(async move {
            let status = self.save_event(&event).await.map_err(db_err)?;
            Ok((outcome_of(status), event))
        })
    }

    fn query(&self, filter: Filter) -> BoxFuture<'_, Result<Vec<Event>, StoreError>> {
        Box::pin(async move {
            let events = NostrDatabase::query(&**self, filter)
                .await
                .map_err(db_err)?;
            Ok(events.into_iter().collect())
        })
    }

    fn negentropy_items(
        &self,
        filter: Filter,
    ) -> BoxFuture<'_, Result<Vec<LocalItem>, StoreError>> {
        Box::pin(async move {
            NostrDatabase::negentropy_items(&**self, filter)
                .await
                .map_err(db_err)
        })
    }
}

#[cfg(test)]
mod tests;
