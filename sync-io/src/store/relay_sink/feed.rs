//! The catalog feed: reads every stored event of the [`CATALOG_KINDS`](crate::store::CATALOG_KINDS) on
//! the local relay for the engine, then keeps a live subscription and
//! catches up after every reconnect, over a connection of its own.
//!
//! History is read newest first with the sink's pager ([`super::pager`],
//! `limit` = [`RelaySinkOptions::page_size`](super::RelaySinkOptions::page_size));
//! ids are deduplicated.
//!
//! The live subscription is opened *before* history is read, with
//! `since` = (catch-up point − 10 min), so nothing falls between the two.
//! The catch-up point is the last live `EOSE`, advanced to the moment of the
//! drop while the live subscription stays open. After a reconnect, history
//! is re-read from (catch-up point −
//! [`RelaySinkOptions::catch_up_overlap`](super::RelaySinkOptions::catch_up_overlap)),
//! so events that reached the relay by other paths while we were away are
//! delivered, provided their `created_at` is within that window. Ids are
//! deduplicated over the overlap window, so the feed rarely repeats an
//! event (the engine must still tolerate repeats).
//!
//! Events from the local relay are trusted (it verified them). The feed
//! blocks on the feed channel (and so stops reading its socket) when the
//! receiver is slow.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use grasp_sync_core::is_catalog_kind;
use nostr::event::{Event, EventId};
use nostr::message::{ClientMessage, RelayMessage, SubscriptionId};
use nostr::types::Timestamp;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, trace, warn};

use super::super::catalog::catalog_filter;
use super::pager::HistoryPager;
use super::{unix_now, Backoff, Shared};
use crate::net::{self, AddressPolicy, RelaySocket};
use crate::store::StoreError;

enum FeedEnd {
    /// Shut down, or the receiver was dropped.
    Stop,
    Broken(String),
}

struct Feed {
    shared: Arc<Shared>,
    feed: mpsc::Sender<Event>,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
    shutdown: watch::Receiver<bool>,
    /// Ids sent: all of them during a history pass, afterwards those in the
    /// overlap window.
    seen: HashMap<EventId, Timestamp>,
    prune_at: usize,
    /// The history pass to do (the initial one, or a catch-up).
    run: Option<HistoryPager>,
    /// Unix time we were last known to be caught up.
    caught_up: Option<u64>,
    /// Whether the live subscription reached EOSE on this connection.
    live_ready: bool,
    sub_counter: u64,
    live_id: SubscriptionId,
    last_frame: Instant,
    last_ping: Instant,
}

type Flow<T> = Result<T, FeedEnd>;

impl Feed {
    fn overlap_secs(&self) -> u64 {
        self.shared.opts.catch_up_overlap.as_secs()
    }

    /// Forgets ids older than twice the overlap window (only between
    /// history passes, which need every id).
    fn prune(&mut self) {
        if self.run.is_some() {
            return;
        }
        let floor = unix_now().saturating_sub(2 * self.overlap_secs());
        self.seen.retain(|_, at| at.as_secs() >= floor);
        self.prune_at = (self.seen.len() * 2).max(10_000);
    }

    async fn send(&mut self, ws: &mut RelaySocket, msg: ClientMessage<'_>) -> Flow<()> {
        let text = msg
            .try_as_json()
            .map_err(|e| FeedEnd::Broken(format!("cannot serialise a request: {e}")))?;
        ws.send(Message::text(text))
            .await
            .map_err(|e| FeedEnd::Broken(format!("send failed: {e}")))
    }

    /// Sends one event to the engine unless already sent; true if sent.
    async fn deliver(&mut self, event: Event) -> Flow<bool> {
        if !is_catalog_kind(event.kind.as_u16()) {
            return Ok(false);
        }
        if self.seen.insert(event.id, event.created_at).is_some() {
            return Ok(false);
        }
        if self.run.is_none() && self.seen.len() > self.prune_at {
            self.prune();
        }
        tokio::select! {
            r = self.feed.send(event) => r.map(|_| true).map_err(|_| FeedEnd::Stop),
            _ = self.shutdown.changed() => Err(FeedEnd::Stop),
        }
    }

    /// The next relay message; `Ok(None)` when `deadline` passes first.
    async fn recv(
        &mut self,
        ws: &mut RelaySocket,
        deadline: Option<Instant>,
    ) -> Flow<Option<RelayMessage<'static>>> {
        enum Got {
            Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
            PingDue,
            Stop,
            Deadline,
        }
        loop {
            let ping_due = self.last_ping + self.shared.net.ping_interval;
            let got = tokio::select! {
                m = ws.next() => Got::Frame(m),
                _ = tokio::time::sleep_until(ping_due) => Got::PingDue,
                _ = self.shutdown.changed() => Got::Stop,
                _ = self.feed.closed() => Got::Stop,
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => Got::Deadline,
            };
            match got {
                Got::Stop => return Err(FeedEnd::Stop),
                Got::Deadline => return Ok(None),
                Got::PingDue => {
                    if self.last_frame.elapsed() >= self.shared.net.idle_timeout {
                        return Err(FeedEnd::Broken(format!(
                            "no frame for {:?}",
                            self.shared.net.idle_timeout
                        )));
                    }
                    self.last_ping = Instant::now();
                    ws.send(Message::Ping(Default::default()))
                        .await
                        .map_err(|e| FeedEnd::Broken(format!("ping failed: {e}")))?;
                }
                Got::Frame(None) => return Err(FeedEnd::Broken("connection closed".into())),
                Got::Frame(Some(Err(e))) => return Err(FeedEnd::Broken(e.to_string())),
                Got::Frame(Some(Ok(frame))) => {
                    self.last_frame = Instant::now();
                    match frame {
                        Message::Text(text) => match RelayMessage::from_json(text.as_str()) {
                            Ok(m) => return Ok(Some(m)),
                            Err(e) => self.shared.malformed(&e.to_string()),
                        },
                        Message::Binary(_) => self.shared.malformed("binary frame"),
                        Message::Close(frame) => {
                            return Err(FeedEnd::Broken(format!("closed by the relay ({frame:?})")))
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
            }
        }
    }

    /// Handles a message that is not for the history page being read.
    async fn on_other(&mut self, msg: RelayMessage<'static>) -> Flow<()> {
        match msg {
            RelayMessage::Event {
                subscription_id,
                event,
            } => {
                if *subscription_id == self.live_id {
                    self.deliver(event.into_owned()).await?;
                } else {
                    trace!(sub = %subscription_id, "event for a closed subscription");
                }
            }
            RelayMessage::EndOfStoredEvents(sub) => {
                if *sub == self.live_id {
                    self.live_ready = true;
                    self.caught_up = Some(unix_now());
                    self.prune();
                }
            }
            RelayMessage::Closed {
                subscription_id,
                message,
            } => {
                if *subscription_id == self.live_id {
                    return Err(FeedEnd::Broken(format!(
                        "live subscription closed by the relay: {message}"
                    )));
                }
            }
            RelayMessage::Notice(m) => {
                debug!(relay = %self.shared.url.as_str(), notice = %m, "NOTICE from the local relay")
            }
            other => trace!(?other, "ignored message on the feed connection"),
        }
        Ok(())
    }

    /// One connection: live subscription, then the pending history pass,
    /// then live events until the connection ends.
    async fn on_connection(&mut self, ws: &mut RelaySocket) -> FeedEnd {
        self.live_ready = false;
        self.last_frame = Instant::now();
        self.last_ping = Instant::now();
        let result = self.serve(ws).await;
        if self.live_ready {
            // Caught up until the moment the connection ended.
            self.caught_up = Some(unix_now());
        }
        match result {
            Ok(()) => FeedEnd::Broken("connection ended".into()),
            Err(end) => end,
        }
    }

    async fn serve(&mut self, ws: &mut RelaySocket) -> Flow<()> {
        let overlap = self.overlap_secs();
        if self.run.is_none() {
            let from = self
                .caught_up
                .unwrap_or_else(unix_now)
                .saturating_sub(overlap);
            self.run = Some(HistoryPager::new(Some(Timestamp::from_secs(from))));
        }
        let live_since = self
            .caught_up
            .unwrap_or_else(unix_now)
            .saturating_sub(overlap);
        let live = catalog_filter().since(Timestamp::from_secs(live_since));
        let live_id = self.live_id.clone();
        self.send(ws, ClientMessage::req(live_id, vec![live]))
            .await?;

        while let Some(run) = self.run {
            self.read_page(ws, run).await?;
        }
        if let Some(done) = self.done.take() {
            let _ = done.send(Ok(()));
        }

        loop {
            // Without a deadline `recv` never returns `Ok(None)`.
            if let Some(msg) = self.recv(ws, None).await? {
                self.on_other(msg).await?;
            }
        }
    }

    /// Reads one history page and advances (or ends) the pass.
    async fn read_page(&mut self, ws: &mut RelaySocket, mut pager: HistoryPager) -> Flow<()> {
        self.sub_counter += 1;
        let sub = SubscriptionId::new(format!("catalog-h{}", self.sub_counter));
        let filter = pager.page(catalog_filter(), self.shared.opts.page_size);
        self.send(ws, ClientMessage::req(sub.clone(), vec![filter]))
            .await?;
        let answer_timeout = self.shared.opts.answer_timeout;
        let mut deadline = Instant::now() + answer_timeout;
        loop {
            let Some(msg) = self.recv(ws, Some(deadline)).await? else {
                return Err(FeedEnd::Broken(format!(
                    "no EOSE for a history page within {answer_timeout:?}"
                )));
            };
            match msg {
                RelayMessage::Event {
                    subscription_id,
                    event,
                } if *subscription_id == sub => {
                    deadline = Instant::now() + answer_timeout;
                    let event = event.into_owned();
                    if !pager.saw(event.created_at) {
                        trace!("history event newer than the page's until");
                    }
                    if self.deliver(event).await? {
                        pager.fresh();
                    }
                }
                RelayMessage::EndOfStoredEvents(id) if *id == sub => break,
                RelayMessage::Closed {
                    subscription_id,
                    message,
                } if *subscription_id == sub => {
                    return Err(FeedEnd::Broken(format!(
                        "history request refused: {message}"
                    )));
                }
                other => self.on_other(other).await?,
            }
        }
        self.send(ws, ClientMessage::close(sub)).await?;

        if pager.end_page() {
            self.run = None;
            if self.caught_up.is_none() {
                self.caught_up = Some(unix_now());
            }
            self.prune();
        } else {
            self.run = Some(pager);
        }
        Ok(())
    }
}

/// The catalog feed task: connects (with backoff), keeps the live
/// subscription and runs the history passes until the sink shuts down or
/// the receiver is dropped; `done` is answered once the first pass is queued.
pub(super) async fn run_feed(
    shared: Arc<Shared>,
    feed: mpsc::Sender<Event>,
    done: oneshot::Sender<Result<(), StoreError>>,
) {
    let shutdown = shared.shutdown.subscribe();
    let mut f = Feed {
        shared: shared.clone(),
        feed,
        done: Some(done),
        shutdown,
        seen: HashMap::new(),
        prune_at: 10_000,
        run: Some(HistoryPager::new(None)),
        caught_up: None,
        live_ready: false,
        sub_counter: 0,
        live_id: SubscriptionId::new("catalog-live"),
        last_frame: Instant::now(),
        last_ping: Instant::now(),
    };
    let mut backoff = Backoff::new(shared.opts.backoff_min, shared.opts.backoff_max);
    loop {
        if shared.is_shut_down() || f.feed.is_closed() {
            break;
        }
        let attempt = tokio::select! {
            r = net::connect(&shared.url, &shared.net, AddressPolicy::AnyAddress) => Some(r),
            _ = f.shutdown.changed() => None,
            _ = f.feed.closed() => None,
        };
        let Some(attempt) = attempt else {
            break;
        };
        match attempt {
            Ok(mut ws) => {
                shared.counters.connects.fetch_add(1, Ordering::Relaxed);
                debug!(relay = %shared.url.as_str(), "catalog feed connected to the local relay");
                let end = f.on_connection(&mut ws).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                match end {
                    FeedEnd::Stop => break,
                    FeedEnd::Broken(reason) => {
                        warn!(relay = %shared.url.as_str(), %reason, "catalog feed lost the local relay; reconnecting");
                        if f.live_ready {
                            backoff.reset();
                        }
                    }
                }
            }
            Err(e) => {
                warn!(relay = %shared.url.as_str(), error = %e, "catalog feed cannot reach the local relay")
            }
        }
        let delay = backoff.delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = f.shutdown.changed() => {}
            _ = f.feed.closed() => {}
        }
    }
    if let Some(done) = f.done.take() {
        let result = if shared.is_shut_down() {
            Err(StoreError::Closed)
        } else {
            Ok(())
        };
        let _ = done.send(result);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use nostr::event::Event;
    use nostr_relay_builder::prelude as nrb;
    use nostr_relay_builder::prelude::NostrDatabase as _;

    use super::super::testutil::*;
    use super::super::RelaySink;
    use super::*;
    use crate::store::{EventStore, StoreOutcome};

    #[tokio::test]
    async fn catalog_feed_delivers_history_through_a_page_cap_then_live() {
        let port = free_port().await;
        let db = relay_db();
        // The relay silently caps every page at 100 (we ask for 500).
        let _relay = start_relay(port, &db, Some(100)).await;
        let k = keys(3);
        let mut expected = Vec::new();
        let kinds = [30617u16, 1617, 1618, 1621, 5];
        for i in 0..1200u64 {
            let kind = kinds[(i % 5) as usize];
            // Four events share each second; the deletions point nowhere.
            let ev = signed(&k, kind, 1_600_000_000 + i / 4, &format!("event {i}"));
            put_direct(&db, &ev).await;
            expected.push(ev);
        }
        for i in 0..50u64 {
            put_direct(&db, &signed(&k, 1, 1_600_000_000 + i, "note")).await;
        }
        let stored = relay_count(&db).await;
        assert!(stored >= 1200, "{stored}");
        let catalog_now = db
            .count(nrb::Filter::new().kinds(kinds.iter().map(|k| nrb::Kind::from(*k))))
            .await
            .unwrap();

        let sink = RelaySink::start_with(url(port), net(), fast());
        let (tx, rx) = mpsc::channel(16);
        let got = collector(rx);
        tokio::time::timeout(WAIT, sink.start_catalog_feed(tx))
            .await
            .unwrap()
            .unwrap();
        wait_for("history", || got.lock().unwrap().len() >= catalog_now).await;
        {
            let got = got.lock().unwrap();
            let set = ids(&got);
            assert_eq!(set.len(), got.len(), "an event was delivered twice");
            assert_eq!(set.len(), catalog_now);
            let stored_expected: HashSet<EventId> = ids(&expected);
            assert!(set.is_subset(&stored_expected));
        }

        // Live: a new catalog event published through the sink reaches the
        // feed; a note does not.
        let now = unix_now();
        let live = signed(&k, 1621, now, "new issue");
        let note = signed(&k, 1, now, "new note");
        assert_eq!(sink.save(note.clone()).await.unwrap(), StoreOutcome::Stored);
        assert_eq!(sink.save(live.clone()).await.unwrap(), StoreOutcome::Stored);
        wait_for("live event", || {
            got.lock().unwrap().iter().any(|e| e.id == live.id)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = got.lock().unwrap();
        assert!(!got.iter().any(|e| e.id == note.id));
        assert_eq!(ids(&got).len(), got.len());
    }

    #[tokio::test]
    async fn paging_past_a_crowded_second_terminates() {
        let port = free_port().await;
        let db = relay_db();
        let _relay = start_relay(port, &db, Some(100)).await;
        let k = keys(4);
        for i in 0..250u64 {
            put_direct(
                &db,
                &signed(&k, 1617, 1_600_000_500, &format!("same second {i}")),
            )
            .await;
        }
        let older: Vec<Event> = (0..30u64)
            .map(|i| signed(&k, 1617, 1_600_000_000 + i, "older"))
            .collect();
        for ev in &older {
            put_direct(&db, ev).await;
        }
        let sink = RelaySink::start_with(url(port), net(), fast());
        let (tx, rx) = mpsc::channel(16);
        let got = collector(rx);
        tokio::time::timeout(WAIT, sink.start_catalog_feed(tx))
            .await
            .unwrap()
            .unwrap();
        // The crowded second yields at most one capped page, and paging
        // carries on past it to the older events.
        let older_ids = ids(&older);
        wait_for("older events", || {
            ids(&got.lock().unwrap()).is_superset(&older_ids)
        })
        .await;
        assert!(got.lock().unwrap().len() >= 130);
    }

    #[tokio::test]
    async fn dropped_receiver_stops_the_feed() {
        let port = free_port().await;
        let db = relay_db();
        let _relay = start_relay(port, &db, None).await;
        let sink = RelaySink::start_with(url(port), net(), fast());
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let r = tokio::time::timeout(WAIT, sink.start_catalog_feed(tx))
            .await
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
}
