//! The state that survives a restart (spec section 8): the catalog, and per
//! relay the cursors, confirmed targets, learned limits and backoff. Saved as
//! JSON by the host (atomically: temporary file and rename).

use nostr::event::EventId;
use nostr::key::PublicKey;
use serde::{Deserialize, Serialize};

use crate::nip77::Nip77Support;

use crate::backoff::Backoff;
use crate::catalog::RepoEntry;
use crate::info::RelayInfo;
use crate::rng::Rng;
use crate::types::{RepoCoord, TargetKey, Time};
use crate::url::RelayUrl;

/// Format version of [`Snapshot`].
pub const SNAPSHOT_VERSION: u32 = 1;

/// Why a snapshot could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Written by another version.
    #[error("snapshot format {found} is not supported (expected {expected})")]
    Version {
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// Not valid JSON for a snapshot.
    #[error("snapshot is not valid: {0}")]
    Json(#[from] serde_json::Error),
}

/// Everything the engine saves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version.
    pub version: u32,
    /// When it was taken.
    pub saved_at: Time,
    /// Known repos.
    pub repos: Vec<SavedRepo>,
    /// Known root events.
    pub roots: Vec<SavedRoot>,
    /// Deleted coordinates with the deletion time (seconds).
    pub tombstones: Vec<(RepoCoord, u64)>,
    /// Deleted root ids.
    pub deleted_roots: Vec<EventId>,
    /// Per relay.
    pub relays: Vec<SavedRelay>,
    /// Ids the store rejected, with `created_at` and when (NIP-77 items),
    /// oldest first.
    #[serde(default)]
    pub rejected: Vec<(EventId, u64, Time)>,
}

impl Snapshot {
    /// As JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// From JSON.
    pub fn from_json(json: &str) -> Result<Snapshot, SnapshotError> {
        Ok(serde_json::from_str(json)?)
    }
}

/// A saved repo.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedRepo {
    /// Its coordinate.
    pub coord: RepoCoord,
    /// What we know of it.
    pub entry: RepoEntry,
}

/// A saved root event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedRoot {
    /// Its id.
    pub id: EventId,
    /// Its author.
    pub author: PublicKey,
    /// Repos it tags.
    pub repos: Vec<RepoCoord>,
}

/// A saved relay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedRelay {
    /// The relay.
    pub url: RelayUrl,
    /// Confirmed targets.
    pub confirmed: Vec<TargetKey>,
    /// Last time we knew we were connected (the snapshot time if connected).
    pub last_connected: Option<Time>,
    /// Newest `created_at` received per layer.
    pub last_event_at: [Option<u64>; 3],
    /// Subscription cap learned from refusals.
    pub learned_max_subs: Option<u32>,
    /// NIP-11 limits.
    pub info: Option<RelayInfo>,
    /// Backoff.
    pub backoff: Backoff,
    /// Next attempt, when disconnected.
    pub retry_at: Option<Time>,
    /// Next daily re-sync.
    pub next_resync: Option<Time>,
    /// Rate-limit strikes.
    pub cooldown_strikes: u32,
    /// Jitter stream position.
    pub rng: Rng,
    /// NIP-77 support as last seen ("unsupported" lasts until the daily pass).
    #[serde(default)]
    pub nip77: Nip77Support,
}
