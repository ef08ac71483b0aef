//! The publisher: sends `["EVENT", …]` frames to the local relay and
//! resolves each save when the matching `OK` arrives (see the outcome table
//! in [`super`]). It holds at most `max_in_flight` distinct events
//! ([`Publisher`]); its task ([`run_publisher`]) connects when there is
//! something to send, resends what a broken connection or a silent relay
//! left without an `OK`, and reconnects with backoff.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use grasp_sync_core::{RelayUrl, StoreOutcome};
use nostr::event::{Event, EventId};
use nostr::message::{ClientMessage, RelayMessage};
use tokio::sync::{oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::{debug, trace, warn};

use super::{Backoff, RelaySinkOptions, Shared};
use crate::net::{self, AddressPolicy, RelaySocket};
use crate::store::StoreError;

type Waiter = oneshot::Sender<Result<StoreOutcome, StoreError>>;

/// One event held by the publisher.
pub(super) struct Pending {
    /// Admission order (resends keep it).
    seq: u64,
    /// The `["EVENT", …]` frame.
    frame: Utf8Bytes,
    waiters: Vec<Waiter>,
    /// When it was last sent on the current connection, while its `OK` is
    /// awaited.
    sent_at: Option<Instant>,
    /// Whether its id is in the outbox.
    queued: bool,
    /// Not to be re-sent before this (the relay said `rate-limited`).
    retry_at: Option<Instant>,
    /// Sends that ended without an `OK`.
    failed_sends: u32,
    /// Times it was sent.
    sends: u32,
    /// Its slot; released when the entry is removed.
    _permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct PubState {
    closed: bool,
    next_seq: u64,
    pending: HashMap<EventId, Pending>,
    /// Ids to send on the current connection, in order.
    outbox: VecDeque<EventId>,
}

/// The events held for the local relay, and what wakes the publisher task.
pub(super) struct Publisher {
    url: RelayUrl,
    opts: RelaySinkOptions,
    state: Mutex<PubState>,
    /// Wakes the publisher: new work or a state change.
    pub(super) wake: Notify,
    slots: Arc<Semaphore>,
    /// Events sent more than once.
    pub(super) resends: AtomicU64,
    /// Saves that failed after `max_send_attempts`.
    pub(super) gave_up: AtomicU64,
}

/// What an `OK` means.
#[derive(Debug, PartialEq, Eq)]
enum OkVerdict {
    Outcome(StoreOutcome),
    RetryLater,
}

fn classify_ok(status: bool, message: &str) -> OkVerdict {
    let prefix = message.split(':').next().unwrap_or("").trim();
    if message.contains(':') && prefix == "duplicate" {
        OkVerdict::Outcome(StoreOutcome::Duplicate)
    } else if status {
        OkVerdict::Outcome(StoreOutcome::Stored)
    } else if message.contains(':') && prefix == "rate-limited" {
        OkVerdict::RetryLater
    } else {
        OkVerdict::Outcome(StoreOutcome::Rejected)
    }
}

impl Publisher {
    pub(super) fn new(url: RelayUrl, opts: RelaySinkOptions) -> Self {
        Publisher {
            url,
            slots: Arc::new(Semaphore::new(opts.max_in_flight.max(1))),
            opts,
            state: Mutex::new(PubState::default()),
            wake: Notify::new(),
            resends: AtomicU64::new(0),
            gave_up: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events held now (queued, sent, awaiting `OK`).
    pub(super) fn in_flight(&self) -> usize {
        self.lock().pending.len()
    }

    /// Whether anything waits to be sent or answered.
    fn has_work(&self) -> bool {
        !self.lock().pending.is_empty()
    }

    /// Whether the sink was closed.
    pub(super) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Publishes one event and waits for the relay's verdict (or for a slot
    /// first, when `max_in_flight` events are held).
    pub(super) async fn publish(&self, event: Event) -> Result<StoreOutcome, StoreError> {
        if self.is_closed() {
            return Err(StoreError::Closed);
        }
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let rx = self.admit(&event, permit)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Marks the sink closed and takes every held event (their saves are
    /// failed with [`fail_closed`] once the tasks are told to stop).
    pub(super) fn close(&self) -> Vec<Pending> {
        let pending = {
            let mut st = self.lock();
            st.closed = true;
            st.outbox.clear();
            std::mem::take(&mut st.pending)
        };
        self.slots.close();
        pending.into_values().collect()
    }

    /// Admits one event (a slot is already held) and returns its waiter.
    fn admit(
        &self,
        event: &Event,
        permit: OwnedSemaphorePermit,
    ) -> Result<oneshot::Receiver<Result<StoreOutcome, StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        if st.closed {
            return Err(StoreError::Closed);
        }
        let seq = st.next_seq;
        match st.pending.entry(event.id) {
            Entry::Occupied(mut e) => e.get_mut().waiters.push(tx),
            Entry::Vacant(v) => {
                let frame = ClientMessage::event(event.clone())
                    .try_as_json()
                    .map_err(|e| StoreError::Relay(format!("cannot serialise event: {e}")))?;
                v.insert(Pending {
                    seq,
                    frame: Utf8Bytes::from(frame),
                    waiters: vec![tx],
                    sent_at: None,
                    queued: true,
                    retry_at: None,
                    failed_sends: 0,
                    sends: 0,
                    _permit: permit,
                });
                st.next_seq += 1;
                st.outbox.push_back(event.id);
            }
        }
        drop(st);
        self.wake.notify_one();
        Ok(rx)
    }

    /// Removes an event and answers its waiters.
    fn finish(&self, id: &EventId, result: Result<StoreOutcome, StoreError>) -> bool {
        let entry = self.lock().pending.remove(id);
        match entry {
            Some(p) => {
                for w in p.waiters {
                    let _ = w.send(match &result {
                        Ok(o) => Ok(*o),
                        Err(StoreError::Relay(m)) => Err(StoreError::Relay(m.clone())),
                        Err(StoreError::Database(m)) => Err(StoreError::Database(m.clone())),
                        Err(StoreError::Closed) => Err(StoreError::Closed),
                    });
                }
                true
            }
            None => false,
        }
    }

    /// Counts a send that ended without an `OK`; true if the event has used
    /// up its attempts.
    fn exhausted(&self, p: &mut Pending) -> bool {
        p.failed_sends += 1;
        self.opts.max_send_attempts > 0 && p.failed_sends >= self.opts.max_send_attempts
    }

    fn give_up(&self, ids: Vec<EventId>) {
        for id in ids {
            self.gave_up.fetch_add(1, Ordering::Relaxed);
            warn!(
                relay = %self.url.as_str(),
                event = %id,
                attempts = self.opts.max_send_attempts,
                "the local relay never acknowledged an event; giving up on it"
            );
            self.finish(
                &id,
                Err(StoreError::Relay(format!(
                    "no OK for {id} after {} sends",
                    self.opts.max_send_attempts
                ))),
            );
        }
    }

    /// A connection ended: events sent on it without an `OK` count a failed
    /// send; everything will be queued again on the next connection.
    fn connection_lost(&self) {
        let mut dead = Vec::new();
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            st.outbox.clear();
            for (id, p) in st.pending.iter_mut() {
                p.queued = false;
                if p.sent_at.take().is_some() && self.exhausted(p) {
                    dead.push(*id);
                }
            }
        }
        self.give_up(dead);
    }

    /// A connection opened: queue every held event, oldest admission first
    /// (except those waiting out a rate limit).
    fn connection_opened(&self) {
        let now = Instant::now();
        let mut st = self.lock();
        let mut order: Vec<(u64, EventId)> = Vec::with_capacity(st.pending.len());
        for (id, p) in st.pending.iter_mut() {
            p.sent_at = None;
            p.queued = p.retry_at.is_none_or(|r| r <= now);
            if p.queued {
                p.retry_at = None;
                order.push((p.seq, *id));
            }
        }
        order.sort_unstable();
        st.outbox = order.into_iter().map(|(_, id)| id).collect();
    }

    /// Takes up to `max` frames to send now, marking them sent.
    fn take_outbox(&self, max: usize) -> Vec<Utf8Bytes> {
        let now = Instant::now();
        let mut st = self.lock();
        let mut frames = Vec::new();
        while frames.len() < max {
            let Some(id) = st.outbox.pop_front() else {
                break;
            };
            let Some(p) = st.pending.get_mut(&id) else {
                continue;
            };
            if !p.queued {
                continue;
            }
            p.queued = false;
            if p.sends > 0 {
                self.resends.fetch_add(1, Ordering::Relaxed);
            }
            p.sends = p.sends.saturating_add(1);
            p.sent_at = Some(now);
            frames.push(p.frame.clone());
        }
        frames
    }

    /// `OK` timeouts (resend or give up) and expired rate-limit waits.
    fn check_timers(&self) {
        let now = Instant::now();
        let mut dead = Vec::new();
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            let mut requeue = Vec::new();
            for (id, p) in st.pending.iter_mut() {
                if let Some(sent) = p.sent_at {
                    if now.duration_since(sent) >= self.opts.ok_timeout {
                        p.sent_at = None;
                        if self.exhausted(p) {
                            dead.push(*id);
                        } else {
                            debug!(relay = %self.url.as_str(), event = %id, "no OK in time; sending again");
                            p.queued = true;
                            requeue.push((p.seq, *id));
                        }
                    }
                } else if !p.queued && p.retry_at.is_some_and(|r| r <= now) {
                    p.retry_at = None;
                    p.queued = true;
                    requeue.push((p.seq, *id));
                }
            }
            requeue.sort_unstable();
            st.outbox.extend(requeue.into_iter().map(|(_, id)| id));
        }
        self.give_up(dead);
    }

    fn on_ok(&self, id: EventId, status: bool, message: &str) {
        match classify_ok(status, message) {
            OkVerdict::Outcome(outcome) => {
                if outcome == StoreOutcome::Rejected {
                    debug!(relay = %self.url.as_str(), event = %id, reason = message, "the local relay rejected an event");
                }
                if !self.finish(&id, Ok(outcome)) {
                    trace!(event = %id, "OK for an event not pending (answered twice?)");
                }
            }
            OkVerdict::RetryLater => {
                debug!(relay = %self.url.as_str(), event = %id, reason = message, "rate-limited by the local relay; will send again");
                let mut st = self.lock();
                if let Some(p) = st.pending.get_mut(&id) {
                    p.sent_at = None;
                    if !p.queued {
                        p.retry_at = Some(Instant::now() + self.opts.rate_limited_retry);
                    }
                }
            }
        }
    }
}

/// Answers the saves of events taken by [`Publisher::close`] with `Closed`.
pub(super) fn fail_closed(pending: Vec<Pending>) {
    for p in pending {
        for w in p.waiters {
            let _ = w.send(Err(StoreError::Closed));
        }
    }
}

/// A frame on the publishing connection: `OK`s resolve saves; the rest is
/// logged (and counted when it is not a relay message).
fn on_text(shared: &Shared, text: &str, productive: &AtomicBool) {
    match RelayMessage::from_json(text) {
        Ok(RelayMessage::Ok {
            event_id,
            status,
            message,
        }) => {
            productive.store(true, Ordering::Relaxed);
            shared.publisher.on_ok(event_id, status, &message);
        }
        Ok(RelayMessage::Notice(m)) => {
            debug!(relay = %shared.url.as_str(), notice = %m, "NOTICE from the local relay")
        }
        Ok(RelayMessage::Auth { .. }) => {
            debug!(relay = %shared.url.as_str(), "the local relay asks for AUTH; the sink does not authenticate")
        }
        Ok(other) => trace!(?other, "unexpected message on the publishing connection"),
        Err(e) => shared.malformed(&e.to_string()),
    }
}

/// How a connection ended.
enum ConnEnd {
    Shutdown,
    Broken(String),
}

/// The publisher task: connects when there is something to send, sends,
/// reads `OK`s, reconnects with backoff; ends when the sink shuts down.
pub(super) async fn run_publisher(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut backoff = Backoff::new(shared.opts.backoff_min, shared.opts.backoff_max);
    'outer: loop {
        // Connect only when there is something to send.
        loop {
            if shared.is_shut_down() {
                break 'outer;
            }
            if shared.publisher.has_work() {
                break;
            }
            tokio::select! {
                _ = shared.publisher.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        let attempt = tokio::select! {
            r = net::connect(&shared.url, &shared.net, AddressPolicy::AnyAddress) => Some(r),
            _ = shutdown.changed() => None,
        };
        let Some(attempt) = attempt else {
            break;
        };
        match attempt {
            Ok(socket) => {
                shared.counters.connects.fetch_add(1, Ordering::Relaxed);
                debug!(relay = %shared.url.as_str(), "publisher connected to the local relay");
                let productive = AtomicBool::new(false);
                let end = publish_on(&shared, socket, &mut shutdown, &productive).await;
                shared.publisher.connection_lost();
                match end {
                    ConnEnd::Shutdown => break,
                    ConnEnd::Broken(reason) => {
                        warn!(relay = %shared.url.as_str(), %reason, "publisher lost the local relay; reconnecting");
                        if productive.load(Ordering::Relaxed) {
                            backoff.reset();
                        }
                    }
                }
            }
            Err(e) => {
                warn!(relay = %shared.url.as_str(), error = %e, "cannot reach the local relay")
            }
        }
        let delay = backoff.delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
    }
    shared.shut_down();
}

async fn publish_on(
    shared: &Shared,
    socket: RelaySocket,
    shutdown: &mut watch::Receiver<bool>,
    productive: &AtomicBool,
) -> ConnEnd {
    let (mut sink, mut stream) = socket.split();
    shared.publisher.connection_opened();
    let end = tokio::select! {
        e = write_loop(shared, &mut sink) => ConnEnd::Broken(format!("send failed: {e}")),
        e = read_loop(shared, &mut stream, productive) => ConnEnd::Broken(e),
        _ = shutdown.changed() => ConnEnd::Shutdown,
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    end
}

/// Sends queued frames, checks timers and pings; returns only on a send
/// error.
async fn write_loop(shared: &Shared, sink: &mut SplitSink<RelaySocket, Message>) -> String {
    // Timers are checked at least once a second, and often enough for short
    // `OK` timeouts and ping intervals.
    let every = (shared.opts.ok_timeout / 4)
        .min(shared.net.ping_interval / 2)
        .clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_ping = Instant::now();
    loop {
        let frames = shared.publisher.take_outbox(256);
        if !frames.is_empty() {
            for frame in frames {
                if let Err(e) = sink.feed(Message::Text(frame)).await {
                    return e.to_string();
                }
            }
            if let Err(e) = sink.flush().await {
                return e.to_string();
            }
            continue;
        }
        tokio::select! {
            _ = shared.publisher.wake.notified() => {}
            _ = tick.tick() => {
                shared.publisher.check_timers();
                if last_ping.elapsed() >= shared.net.ping_interval {
                    last_ping = Instant::now();
                    if let Err(e) = sink.send(Message::Ping(Default::default())).await {
                        return e.to_string();
                    }
                }
            }
        }
    }
}

/// Reads `OK`s until the connection breaks; returns why.
async fn read_loop(
    shared: &Shared,
    stream: &mut SplitStream<RelaySocket>,
    productive: &AtomicBool,
) -> String {
    let idle = shared.net.idle_timeout;
    loop {
        let msg = match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => return format!("no frame for {idle:?}"),
            Ok(None) => return "connection closed".into(),
            Ok(Some(Err(e))) => return e.to_string(),
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Text(text) => on_text(shared, text.as_str(), productive),
            Message::Binary(_) => shared.malformed("binary frame"),
            Message::Close(frame) => return format!("closed by the relay ({frame:?})"),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use nostr::event::Event;
    use tokio::sync::mpsc;

    use super::super::testutil::*;
    use super::super::{RelaySink, RelaySinkOptions};
    use super::*;
    use crate::store::EventStore;

    #[test]
    fn ok_classification() {
        use StoreOutcome::*;
        let o = OkVerdict::Outcome;
        assert_eq!(classify_ok(true, ""), o(Stored));
        assert_eq!(
            classify_ok(true, "duplicate: already have it"),
            o(Duplicate)
        );
        assert_eq!(
            classify_ok(false, "duplicate: already have it"),
            o(Duplicate)
        );
        assert_eq!(
            classify_ok(false, "blocked: not a repo we host"),
            o(Rejected)
        );
        assert_eq!(classify_ok(false, "error: unknown"), o(Rejected));
        assert_eq!(classify_ok(false, ""), o(Rejected));
        assert_eq!(classify_ok(false, "duplicate"), o(Rejected));
        assert_eq!(
            classify_ok(false, "rate-limited: slow down"),
            OkVerdict::RetryLater
        );
        assert_eq!(classify_ok(true, "rate-limited: odd"), o(Stored));
    }

    #[tokio::test]
    async fn publish_stored_duplicate_rejected() {
        let port = free_port().await;
        let db = relay_db();
        let _relay = start_relay(port, &db, None).await;
        let sink = RelaySink::start_with(url(port), net(), fast());
        let k = keys(1);
        let ev = signed(&k, 1621, 1_700_000_000, "issue");
        assert_eq!(sink.save(ev.clone()).await.unwrap(), StoreOutcome::Stored);
        assert_eq!(
            sink.save(ev.clone()).await.unwrap(),
            StoreOutcome::Duplicate
        );
        // A well-formed event with someone else's signature.
        let other = signed(&k, 1621, 1_700_000_001, "other");
        let forged = Event::new(
            other.id,
            other.pubkey,
            other.created_at,
            other.kind,
            other.tags.clone(),
            other.content.clone(),
            ev.sig,
        );
        assert_eq!(sink.save(forged).await.unwrap(), StoreOutcome::Rejected);
        assert_eq!(relay_count(&db).await, 1);
        let stats = sink.stats();
        assert_eq!(stats.in_flight, 0);
        assert_eq!(stats.connects, 1);
        sink.close().await.unwrap();
        assert!(matches!(sink.save(ev).await, Err(StoreError::Closed)));
    }

    #[tokio::test]
    async fn many_concurrent_saves_with_small_window() {
        let port = free_port().await;
        let db = relay_db();
        let _relay = start_relay(port, &db, None).await;
        let opts = RelaySinkOptions {
            max_in_flight: 16,
            ..fast()
        };
        let sink = RelaySink::start_with(url(port), net(), opts);
        let k = keys(2);
        let events: Vec<Event> = (0..300)
            .map(|i| signed(&k, 1621, 1_700_000_000 + i, "x"))
            .collect();
        let mut saves: Vec<_> = events.iter().cloned().map(|e| sink.save(e)).collect();
        // The same event twice at once joins the pending save.
        saves.push(sink.save(events[0].clone()));
        let outcomes = tokio::time::timeout(WAIT, futures_util::future::join_all(saves))
            .await
            .unwrap();
        let stored = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(StoreOutcome::Stored)))
            .count();
        assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
        assert!(stored >= 300, "{stored}");
        assert_eq!(relay_count(&db).await, 300);
        assert_eq!(sink.stats().in_flight, 0);
    }

    #[tokio::test]
    async fn lost_ok_is_resent_after_reconnect() {
        let fake = fake_relay(|conn, _, _| {
            if conn == 0 {
                Reply::Hangup
            } else {
                Reply::Ok(true, "")
            }
        })
        .await;
        let sink = RelaySink::start_with(url(fake.port), net(), fast());
        let ev = signed(&keys(7), 1621, 1_700_000_000, "x");
        let outcome = tokio::time::timeout(WAIT, sink.save(ev.clone()))
            .await
            .unwrap();
        assert_eq!(outcome.unwrap(), StoreOutcome::Stored);
        assert_eq!(fake.times(&ev.id), 2);
        let stats = sink.stats();
        assert_eq!(stats.connects, 2);
        assert_eq!(stats.resends, 1);
    }

    #[tokio::test]
    async fn ok_timeout_resends_on_the_same_connection() {
        let fake = fake_relay(|_, nth, _| {
            if nth == 1 {
                Reply::Silent
            } else {
                Reply::Ok(true, "")
            }
        })
        .await;
        let opts = RelaySinkOptions {
            ok_timeout: Duration::from_millis(200),
            ..fast()
        };
        let sink = RelaySink::start_with(url(fake.port), net(), opts);
        let ev = signed(&keys(8), 1621, 1_700_000_000, "x");
        let outcome = tokio::time::timeout(WAIT, sink.save(ev.clone()))
            .await
            .unwrap();
        assert_eq!(outcome.unwrap(), StoreOutcome::Stored);
        assert_eq!(fake.times(&ev.id), 2);
        assert_eq!(sink.stats().connects, 1);
    }

    #[tokio::test]
    async fn malformed_messages_are_counted_and_ignored() {
        let fake = fake_relay(|_, _, _| Reply::Garbage).await;
        let sink = RelaySink::start_with(url(fake.port), net(), fast());
        let ev = signed(&keys(9), 1621, 1_700_000_000, "x");
        let outcome = tokio::time::timeout(WAIT, sink.save(ev)).await.unwrap();
        assert_eq!(outcome.unwrap(), StoreOutcome::Stored);
        let stats = sink.stats();
        assert!(stats.malformed >= 4, "{stats:?}");
        assert_eq!(stats.connects, 1);
    }

    #[tokio::test]
    async fn rate_limited_event_is_sent_again() {
        let fake = fake_relay(|_, nth, _| {
            if nth == 1 {
                Reply::Ok(false, "rate-limited: slow down")
            } else {
                Reply::Ok(false, "duplicate: have it")
            }
        })
        .await;
        let opts = RelaySinkOptions {
            rate_limited_retry: Duration::from_millis(100),
            ..fast()
        };
        let sink = RelaySink::start_with(url(fake.port), net(), opts);
        let ev = signed(&keys(10), 1621, 1_700_000_000, "x");
        let outcome = tokio::time::timeout(WAIT, sink.save(ev.clone()))
            .await
            .unwrap();
        assert_eq!(outcome.unwrap(), StoreOutcome::Duplicate);
        assert_eq!(fake.times(&ev.id), 2);
    }

    #[tokio::test]
    async fn gives_up_after_max_send_attempts() {
        let fake = fake_relay(|_, _, _| Reply::Silent).await;
        let opts = RelaySinkOptions {
            ok_timeout: Duration::from_millis(100),
            max_send_attempts: 3,
            ..fast()
        };
        let sink = RelaySink::start_with(url(fake.port), net(), opts);
        let ev = signed(&keys(11), 1621, 1_700_000_000, "x");
        let outcome = tokio::time::timeout(WAIT, sink.save(ev.clone()))
            .await
            .unwrap();
        assert!(matches!(outcome, Err(StoreError::Relay(_))), "{outcome:?}");
        assert_eq!(fake.times(&ev.id), 3);
        assert_eq!(sink.stats().gave_up, 1);
        assert_eq!(sink.stats().in_flight, 0);
    }

    #[tokio::test]
    async fn in_flight_is_bounded_and_close_fails_pending() {
        let fake = fake_relay(|_, _, _| Reply::Silent).await;
        let opts = RelaySinkOptions {
            max_in_flight: 2,
            ..fast()
        };
        let sink = Arc::new(RelaySink::start_with(url(fake.port), net(), opts));
        let k = keys(12);
        let saves: Vec<_> = (0..5u64)
            .map(|i| {
                let sink = sink.clone();
                let ev = signed(&k, 1621, 1_700_000_000 + i, "x");
                tokio::spawn(async move { sink.save(ev).await })
            })
            .collect();
        wait_for("two events at the relay", || {
            fake.seen.lock().unwrap().len() >= 2
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(fake.seen.lock().unwrap().len(), 2);
        assert_eq!(sink.stats().in_flight, 2);
        sink.close().await.unwrap();
        for s in saves {
            let r = tokio::time::timeout(WAIT, s).await.unwrap().unwrap();
            assert!(matches!(r, Err(StoreError::Closed)), "{r:?}");
        }
        let (tx, _rx) = mpsc::channel(1);
        assert!(matches!(
            sink.start_catalog_feed(tx).await,
            Err(StoreError::Closed)
        ));
    }

    #[tokio::test]
    async fn unreachable_relay_keeps_saves_pending_until_close() {
        let port = free_port().await;
        let sink = Arc::new(RelaySink::start_with(url(port), net(), fast()));
        let s = sink.clone();
        let ev = signed(&keys(13), 1621, 1_700_000_000, "x");
        let save = tokio::spawn(async move { s.save(ev).await });
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!save.is_finished());
        sink.close().await.unwrap();
        let r = tokio::time::timeout(WAIT, save).await.unwrap().unwrap();
        assert!(matches!(r, Err(StoreError::Closed)), "{r:?}");
    }
}
