//! Where synced events go: the [`EventStore`] trait and its implementations:
//! the embedded LMDB database ([`lmdb::LmdbStore`]), the sink that publishes
//! to the service's own relay ([`relay_sink::RelaySink`]), and the database
//! of a relay that embeds the sync, any rust-nostr `NostrDatabase`
//! ([`database::DatabaseStore`], and `DatabaseStore044` for `nostr` 0.44
//! with the `nostr-044` feature).

use std::future::Future;
use std::pin::Pin;

use grasp_sync_core::{LocalItem, StoreOutcome};
use nostr::event::Event;
use nostr::filter::Filter;
use tokio::sync::mpsc;

mod catalog;
pub mod database;
pub mod lmdb;
pub mod relay_sink;

/// A boxed, sendable future (the trait is object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub use grasp_sync_core::types::CATALOG_KINDS;

/// Why a store operation failed. A failed save is counted by the runner as a
/// rejection and logged; it never stops the sync.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded database failed.
    #[error("database: {0}")]
    Database(String),
    /// The local relay could not be reached or broke the connection.
    #[error("local relay: {0}")]
    Relay(String),
    /// The store is shut down.
    #[error("store closed")]
    Closed,
}

/// A destination for verified events.
///
/// The runner calls [`EventStore::save`] only for events whose id and
/// signature it verified and which pass the core's GRASP acceptance check.
/// Many saves may be in flight at once; implementations batch them.
pub trait EventStore: Send + Sync + 'static {
    /// Stores one event and says what happened to it. `Rejected` means the
    /// store (or the relay behind it) refused it; the runner records that so
    /// the event is not fetched again.
    fn save(&self, event: Event) -> BoxFuture<'_, Result<StoreOutcome, StoreError>>;

    /// Starts feeding the engine's catalog: sends every stored event of the
    /// [`CATALOG_KINDS`] to `feed` now and, for stores that learn of events
    /// by other paths (the local relay), keeps sending new ones until `feed`
    /// is closed. Returns once the initial load has been queued.
    fn start_catalog_feed(
        &self,
        feed: mpsc::Sender<Event>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The `(id, created_at)` of every stored event matching `filter` (its
    /// `limit` ignored): our side of a NIP-77 reconciliation, handed to the
    /// engine as they are ([`Input::LocalItems`](grasp_sync_core::Input::LocalItems)
    /// takes the same [`LocalItem`]s, which is also what rust-nostr's
    /// `NostrDatabase::negentropy_items` returns). An error makes the engine
    /// page that filter with REQ instead.
    fn negentropy_items(&self, filter: Filter)
        -> BoxFuture<'_, Result<Vec<LocalItem>, StoreError>>;

    /// Flushes pending writes and releases the store.
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
