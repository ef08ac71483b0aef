//! Reading a local database's catalog (announcements, roots, deletions) for
//! the engine at start-up: the catalog filter and the newest-first pass over
//! it, written once for every store that answers `limit` and `until`
//! exactly (LMDB and any rust-nostr database).

use std::collections::HashSet;
use std::future::Future;

use nostr::event::{Event, EventId, Kind};
use nostr::filter::Filter;
use nostr::types::Timestamp;
use tokio::sync::mpsc;

use super::{StoreError, CATALOG_KINDS};

/// The filter for every catalog event.
pub(crate) fn catalog_filter() -> Filter {
    Filter::new().kinds(CATALOG_KINDS.iter().map(|k| Kind::from(*k)))
}

/// Sends every catalog event `query` finds to `feed`, newest first, in
/// pages of `page` (memory stays bounded by one page, whatever the
/// catalog's size). `query` must honour `limit` and an inclusive `until`:
/// a short page ends the pass. Stops early, without error, when the
/// receiver is dropped.
pub(crate) async fn feed_newest_first<Q, F>(
    mut query: Q,
    page: usize,
    feed: &mpsc::Sender<Event>,
) -> Result<(), StoreError>
where
    Q: FnMut(Filter) -> F,
    F: Future<Output = Result<Vec<Event>, StoreError>>,
{
    let limit = page.max(1);
    let mut until: Option<Timestamp> = None;
    // Ids already sent at the `until` second (it is inclusive).
    let mut boundary: HashSet<EventId> = HashSet::new();
    loop {
        let mut filter = catalog_filter().limit(limit);
        if let Some(u) = until {
            filter = filter.until(u);
        }
        let events = query(filter).await?;
        let Some(oldest) = events.iter().map(|e| e.created_at).min() else {
            return Ok(());
        };
        let full = events.len() >= limit;
        let one_second = events.iter().all(|e| e.created_at == oldest);
        let mut next_boundary = HashSet::new();
        for event in events {
            if event.created_at == oldest {
                next_boundary.insert(event.id);
            }
            if boundary.contains(&event.id) {
                continue;
            }
            if feed.send(event).await.is_err() {
                return Ok(());
            }
        }
        if !full {
            return Ok(());
        }
        if one_second {
            // More events in one second than a page holds: read that second
            // whole, without a limit, then step below it.
            let second = catalog_filter().since(oldest).until(oldest);
            for event in query(second).await? {
                if next_boundary.contains(&event.id) || boundary.contains(&event.id) {
                    continue;
                }
                if feed.send(event).await.is_err() {
                    return Ok(());
                }
            }
            if oldest.as_secs() == 0 {
                return Ok(());
            }
            until = Some(Timestamp::from_secs(oldest.as_secs() - 1));
            boundary.clear();
        } else {
            until = Some(oldest);
            boundary = next_boundary;
        }
    }
}
