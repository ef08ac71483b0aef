//! The `nostr-database` 0.44 backend (feature `nostr-044`): the database of
//! a `nostr-relay-builder` 0.44 relay, or any other 0.44 database. Events
//! and filters cross field by field ([`crate::compat::v044`]).

use std::sync::Arc;

use grasp_sync_core::{LocalItem, StoreOutcome};
use nostr::event::Event;
use nostr::filter::Filter;
use nostr::types::Timestamp;
use nostr_database_044::{IntoNostrDatabase, NostrDatabase, RejectedReason, SaveEventStatus};

use super::{db_err, sealed, Backend, NostrDatabaseStore};
use crate::compat::v044::nostr as old;
use crate::compat::v044::{event_from_044, event_id_from_044, event_to_044, filter_to_044};
use crate::store::{BoxFuture, StoreError};

/// The store over a `nostr-database` 0.44 database; its `on_stored` hook
/// gets `nostr` 0.44 events (what `LocalRelay::notify_event` takes).
pub type DatabaseStore044 = NostrDatabaseStore<Arc<dyn NostrDatabase>>;

impl DatabaseStore044 {
    /// A store over `database` (an `Arc<dyn NostrDatabase>`, an `Arc` of a
    /// database, or a database by value; all `nostr-database` 0.44).
    pub fn new(database: impl IntoNostrDatabase) -> Self {
        NostrDatabaseStore::with_backend(database.into_nostr_database())
    }
}

/// The outcome for a `nostr-database` 0.44 save status (as for 0.45, which
/// adds `Vanished`).
pub fn outcome_of_044(status: SaveEventStatus) -> StoreOutcome {
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
            | RejectedReason::Other,
        ) => StoreOutcome::Rejected,
    }
}

impl sealed::Sealed for Arc<dyn NostrDatabase> {}

impl Backend for Arc<dyn NostrDatabase> {
    type Event = old::Event;

    fn save(&self, event: Event) -> BoxFuture<'_, Result<(StoreOutcome, old::Event), StoreError>> {
        Box::pin(async move {
            // Cannot fail for a valid event (tags are never empty, a
            // signature is 64 bytes); an error counts as a rejection.
            let old = event_to_044(&event).map_err(db_err)?;
            let status = self.save_event(&old).await.map_err(db_err)?;
            Ok((outcome_of_044(status), old))
        })
    }

    fn query(&self, filter: Filter) -> BoxFuture<'_, Result<Vec<Event>, StoreError>> {
        Box::pin(async move {
            let events = NostrDatabase::query(&**self, filter_to_044(&filter))
                .await
                .map_err(db_err)?;
            events
                .into_iter()
                .map(|e| event_from_044(&e).map_err(db_err))
                .collect()
        })
    }

    fn negentropy_items(
        &self,
        filter: Filter,
    ) -> BoxFuture<'_, Result<Vec<LocalItem>, StoreError>> {
        Box::pin(async move {
            let items = NostrDatabase::negentropy_items(&**self, filter_to_044(&filter))
                .await
                .map_err(db_err)?;
            Ok(items
                .into_iter()
                .map(|(id, at)| (event_id_from_044(&id), Timestamp::from_secs(at.as_secs())))
                .collect())
        })
    }
}
