//! Our side of a NIP-77 reconciliation when the store is the local relay:
//! the `(id, created_at)` of every event it holds that matches a filter,
//! read with REQ pages over a connection of its own ([`read_items`]).
//! Events are read whole; that is the price of asking a relay rather than
//! a database.

use std::collections::HashMap;

use futures_util::{SinkExt, StreamExt};
use nostr::event::EventId;
use nostr::filter::{Filter, MatchEventOptions};
use nostr::message::{ClientMessage, RelayMessage, SubscriptionId};
use nostr::types::Timestamp;
use tokio_tungstenite::tungstenite::Message;

use super::pager::HistoryPager;
use super::Shared;
use crate::net::RelaySocket;
use crate::store::StoreError;

/// Pages `filter` on the local relay (newest first, see [`super::pager`])
/// and collects the `(id, created_at)` of every event matching it.
pub(super) async fn read_items(
    shared: &Shared,
    ws: &mut RelaySocket,
    filter: Filter,
) -> Result<Vec<(EventId, Timestamp)>, StoreError> {
    let relay_err = |what: String| StoreError::Relay(what);
    let mut seen: HashMap<EventId, Timestamp> = HashMap::new();
    let mut pager = HistoryPager::new(filter.since);
    for page in 0u64.. {
        let sub = SubscriptionId::new(format!("items-{page}"));
        let request = pager.page(filter.clone(), shared.opts.page_size);
        let text = ClientMessage::req(sub.clone(), vec![request]).as_json();
        ws.send(Message::text(text))
            .await
            .map_err(|e| relay_err(e.to_string()))?;
        loop {
            let frame = tokio::time::timeout(shared.opts.answer_timeout, ws.next())
                .await
                .map_err(|_| relay_err("no EOSE for an items page".into()))?;
            let text = match frame {
                None => return Err(relay_err("connection closed".into())),
                Some(Err(e)) => return Err(relay_err(e.to_string())),
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) => return Err(relay_err("closed by the relay".into())),
                Some(Ok(_)) => continue,
            };
            match RelayMessage::from_json(text.as_str()) {
                Ok(RelayMessage::Event {
                    subscription_id,
                    event,
                }) if *subscription_id == sub => {
                    pager.saw(event.created_at);
                    if filter.match_event(&event, MatchEventOptions::new())
                        && seen.insert(event.id, event.created_at).is_none()
                    {
                        pager.fresh();
                    }
                }
                Ok(RelayMessage::EndOfStoredEvents(id)) if *id == sub => break,
                Ok(RelayMessage::Closed {
                    subscription_id,
                    message,
                }) if *subscription_id == sub => {
                    return Err(relay_err(format!("items request refused: {message}")))
                }
                Ok(_) => {}
                Err(e) => shared.malformed(&e.to_string()),
            }
        }
        let _ = ws
            .send(Message::text(ClientMessage::close(sub).as_json()))
            .await;
        if pager.end_page() {
            break;
        }
    }
    Ok(seen.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use nostr::event::{Event, Kind};

    use super::super::testutil::*;
    use super::super::RelaySink;
    use super::*;
    use crate::store::EventStore;

    /// The local relay answers the NIP-77 items request: every matching
    /// event's id and `created_at`, read through a page cap, nothing else.
    #[tokio::test]
    async fn negentropy_items_read_every_match_through_a_page_cap() {
        let port = free_port().await;
        let db = relay_db();
        let _relay = start_relay(port, &db, Some(50)).await;
        let k = keys(6);
        let issues: Vec<Event> = (0..180u64)
            .map(|i| signed(&k, 1621, 1_600_000_000 + i / 3, &format!("issue {i}")))
            .collect();
        for ev in &issues {
            put_direct(&db, ev).await;
        }
        put_direct(&db, &signed(&k, 1, 1_600_000_100, "a note")).await;
        let sink = RelaySink::start_with(url(port), net(), fast());
        let items = tokio::time::timeout(
            WAIT,
            EventStore::negentropy_items(&sink, Filter::new().kind(Kind::from(1621u16))),
        )
        .await
        .unwrap()
        .unwrap();
        let mut got: Vec<(EventId, Timestamp)> = items;
        got.sort();
        let mut want: Vec<(EventId, Timestamp)> =
            issues.iter().map(|e| (e.id, e.created_at)).collect();
        want.sort();
        assert_eq!(got, want);
        sink.close().await.unwrap();
        assert!(EventStore::negentropy_items(&sink, Filter::new())
            .await
            .is_err());
    }
}
