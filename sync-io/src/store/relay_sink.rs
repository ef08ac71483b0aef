//! The relay sink: stores synced events by publishing them to the GRASP
//! service's own relay over a websocket, and reads that relay's catalog
//! events back for the engine.
//!
//! [`RelaySink`] owns two background tasks, each with its own connection to
//! the local relay:
//!
//! - the **publisher** sends `["EVENT", …]` frames and resolves each
//!   [`EventStore::save`] when the matching `OK` arrives. It connects when
//!   there is something to send and reconnects with backoff (1 s doubling to
//!   30 s; back to 1 s once a connection has carried an `OK`). Events whose
//!   `OK` did not arrive are sent again on the next connection, and an `OK`
//!   that does not come within [`RelaySinkOptions::ok_timeout`] triggers a
//!   resend on the same connection: a relay restart delays saves, it does not
//!   lose them.
//! - the **catalog feed** (started by [`EventStore::start_catalog_feed`])
//!   reads every stored event of the [`CATALOG_KINDS`] in pages, then keeps
//!   a live subscription and catches up after every reconnect.
//!
//! # Outcomes
//!
//! | the relay says                          | outcome |
//! |-----------------------------------------|---------|
//! | `OK true`                               | `Stored` |
//! | `OK true/false "duplicate: …"`          | `Duplicate` |
//! | `OK false "rate-limited: …"`            | sent again after [`RelaySinkOptions::rate_limited_retry`] (not an outcome) |
//! | any other `OK false` (reason logged at debug) | `Rejected` |
//! | no `OK` after [`RelaySinkOptions::max_send_attempts`] sends | `Err(StoreError::Relay)` |
//! | the sink is closed or dropped first     | `Err(StoreError::Closed)` |
//!
//! A "send" counts only when the frame went out on a live connection and the
//! connection then broke or the `OK` timed out, so a relay that is down for
//! a long time does not use up attempts; the cap exists so that one event
//! the relay chokes on (dropping the connection each time) cannot stall every
//! other save forever.
//!
//! # Bounds
//!
//! At most [`RelaySinkOptions::max_in_flight`] distinct events are held by
//! the sink (queued, sent, or waiting for their `OK`); a `save` beyond that
//! waits inside `save` for a slot (backpressure to the caller, first come
//! first served), so nothing is queued without bound and nothing is dropped.
//! Saving an event that is already in flight (once it gets a slot) joins
//! the pending save instead of sending it again, and gives the slot back. The catalog feed blocks on the feed
//! channel (and so stops reading its socket) when the receiver is slow.
//!
//! # The catalog feed
//!
//! History is paged newest first with `limit` = [`RelaySinkOptions::page_size`]
//! and an inclusive `until` = the oldest `created_at` of the previous page;
//! ids are deduplicated, and paging ends when two pages in a row bring
//! nothing new (after the first such page, `until` steps one second back so
//! a second holding more events than a page does not loop forever). The
//! page length is never used as an end signal, so relays that silently cap
//! pages below the requested limit are read completely.
//!
//! The live subscription is opened *before* history is read, with
//! `since` = (catch-up point − 10 min), so nothing falls between the two.
//! The catch-up point is the last live `EOSE`, advanced to the moment of the
//! drop while the live subscription stays open. After a reconnect, history
//! is re-read from (catch-up point − [`RelaySinkOptions::catch_up_overlap`]),
//! so events that reached the relay by other paths while we were away are
//! delivered, provided their `created_at` is within that window. Ids are
//! deduplicated over the overlap window, so the feed rarely repeats an
//! event (the engine must still tolerate repeats).
//!
//! Events from the local relay are trusted (it verified them). Frames that
//! are not valid relay messages are counted ([`RelaySinkStats::malformed`]),
//! logged at debug and ignored.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use grasp_sync_core::backoff::exponential;
use grasp_sync_core::{is_catalog_kind, RelayUrl, StoreOutcome};
use nostr::event::{Event, EventId, Kind};
use nostr::filter::Filter;
use nostr::message::{ClientMessage, RelayMessage, SubscriptionId};
use nostr::types::Timestamp;
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::{debug, trace, warn};

use super::{BoxFuture, EventStore, StoreError, CATALOG_KINDS};
use crate::config::NetConfig;
use crate::net::{self, RelaySocket};

/// Tuning of a [`RelaySink`]. The defaults suit production.
#[derive(Clone, Debug)]
pub struct RelaySinkOptions {
    /// Distinct events held at once (queued, sent or awaiting `OK`); further
    /// saves wait for a slot.
    pub max_in_flight: usize,
    /// An `OK` not received this long after sending triggers a resend.
    pub ok_timeout: Duration,
    /// Sends without an `OK` (connection broke or `OK` timed out) before a
    /// save fails with [`StoreError::Relay`]; `0` retries forever.
    pub max_send_attempts: u32,
    /// Delay before re-sending an event the relay answered `rate-limited:`.
    pub rate_limited_retry: Duration,
    /// First reconnect delay (doubled after each failure).
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// `limit` of each catalog history page.
    pub page_size: usize,
    /// How far before the catch-up point history is re-read after a
    /// reconnect, and how old a live event may be (`since` of the live
    /// subscription).
    pub catch_up_overlap: Duration,
    /// Silence while waiting for a history page's `EOSE` that counts as a
    /// broken connection.
    pub answer_timeout: Duration,
}

impl Default for RelaySinkOptions {
    fn default() -> Self {
        RelaySinkOptions {
            max_in_flight: 1024,
            ok_timeout: Duration::from_secs(30),
            max_send_attempts: 10,
            rate_limited_retry: Duration::from_secs(5),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            page_size: 500,
            catch_up_overlap: Duration::from_secs(600),
            answer_timeout: Duration::from_secs(30),
        }
    }
}

/// Counters of a [`RelaySink`], for metrics and the status view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelaySinkStats {
    /// Events held by the publisher now (queued, sent, awaiting `OK`).
    pub in_flight: usize,
    /// Connections opened (publisher and feed).
    pub connects: u64,
    /// Events sent more than once (reconnect, `OK` timeout, rate limit).
    pub resends: u64,
    /// Saves that failed after [`RelaySinkOptions::max_send_attempts`].
    pub gave_up: u64,
    /// Frames from the relay that were not valid relay messages.
    pub malformed: u64,
}

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    resends: AtomicU64,
    gave_up: AtomicU64,
    malformed: AtomicU64,
}

type Waiter = oneshot::Sender<Result<StoreOutcome, StoreError>>;

/// One event held by the publisher.
struct Pending {
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

struct Shared {
    url: RelayUrl,
    net: NetConfig,
    opts: RelaySinkOptions,
    state: Mutex<PubState>,
    /// Wakes the publisher: new work or a state change.
    wake: Notify,
    slots: Arc<Semaphore>,
    shutdown: watch::Sender<bool>,
    counters: Counters,
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn catalog_filter() -> Filter {
    Filter::new().kinds(CATALOG_KINDS.iter().map(|k| Kind::from(*k)))
}

/// Reconnect delays: `min`, doubling to `max` (the core's backoff formula).
struct Backoff {
    failures: u32,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            failures: 0,
            min,
            max: max.max(min),
        }
    }

    fn reset(&mut self) {
        self.failures = 0;
    }

    fn delay(&mut self) -> Duration {
        let d = exponential(self.min, self.max, self.failures);
        self.failures = self.failures.saturating_add(1);
        d
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn malformed(&self, what: &str) {
        self.counters.malformed.fetch_add(1, Ordering::Relaxed);
        debug!(relay = %self.url.as_str(), what, "ignoring a malformed message from the local relay");
    }

    fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Marks the sink closed, stops the tasks and fails every pending save
    /// with `Closed`. Idempotent.
    fn shut_down(&self) {
        let pending = {
            let mut st = self.lock();
            st.closed = true;
            st.outbox.clear();
            std::mem::take(&mut st.pending)
        };
        self.slots.close();
        self.shutdown.send_replace(true);
        self.wake.notify_one();
        for (_, p) in pending {
            for w in p.waiters {
                let _ = w.send(Err(StoreError::Closed));
            }
        }
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
            self.counters.gave_up.fetch_add(1, Ordering::Relaxed);
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
                self.counters.resends.fetch_add(1, Ordering::Relaxed);
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

    fn on_publisher_text(&self, text: &str, productive: &AtomicBool) {
        match RelayMessage::from_json(text) {
            Ok(RelayMessage::Ok {
                event_id,
                status,
                message,
            }) => {
                productive.store(true, Ordering::Relaxed);
                self.on_ok(event_id, status, &message);
            }
            Ok(RelayMessage::Notice(m)) => {
                debug!(relay = %self.url.as_str(), notice = %m, "NOTICE from the local relay")
            }
            Ok(RelayMessage::Auth { .. }) => {
                debug!(relay = %self.url.as_str(), "the local relay asks for AUTH; the sink does not authenticate")
            }
            Ok(other) => trace!(?other, "unexpected message on the publishing connection"),
            Err(e) => self.malformed(&e.to_string()),
        }
    }
}

/// How a connection ended.
enum ConnEnd {
    Shutdown,
    Broken(String),
}

/// Publishes events to the service's own relay and reads its catalog (see
/// the module documentation). Dropping it shuts it down like
/// [`EventStore::close`].
pub struct RelaySink {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for RelaySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySink")
            .field("url", &self.shared.url.as_str())
            .field("stats", &self.stats())
            .finish()
    }
}

impl RelaySink {
    /// Starts a sink for the relay at `url` with the default options. Must
    /// be called inside a tokio runtime; the connection is opened when the
    /// first event is saved.
    pub fn start(url: RelayUrl, net: NetConfig) -> RelaySink {
        Self::start_with(url, net, RelaySinkOptions::default())
    }

    /// Starts a sink with explicit options.
    pub fn start_with(url: RelayUrl, net: NetConfig, opts: RelaySinkOptions) -> RelaySink {
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            url,
            net,
            slots: Arc::new(Semaphore::new(opts.max_in_flight.max(1))),
            opts,
            state: Mutex::new(PubState::default()),
            wake: Notify::new(),
            shutdown,
            counters: Counters::default(),
        });
        let publisher = tokio::spawn(run_publisher(shared.clone()));
        RelaySink {
            shared,
            tasks: Mutex::new(vec![publisher]),
        }
    }

    /// The relay this sink writes to.
    pub fn url(&self) -> &RelayUrl {
        &self.shared.url
    }

    /// The current counters.
    pub fn stats(&self) -> RelaySinkStats {
        let c = &self.shared.counters;
        RelaySinkStats {
            in_flight: self.shared.lock().pending.len(),
            connects: c.connects.load(Ordering::Relaxed),
            resends: c.resends.load(Ordering::Relaxed),
            gave_up: c.gave_up.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
        }
    }

    /// Publishes one event and waits for the relay's verdict.
    pub async fn publish(&self, event: Event) -> Result<StoreOutcome, StoreError> {
        if self.shared.lock().closed {
            return Err(StoreError::Closed);
        }
        let permit = self
            .shared
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let rx = self.shared.admit(&event, permit)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    fn push_task(&self, task: JoinHandle<()>) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }
}

impl Drop for RelaySink {
    fn drop(&mut self) {
        self.shared.shut_down();
    }
}

impl EventStore for RelaySink {
    fn save(&self, event: Event) -> BoxFuture<'_, Result<StoreOutcome, StoreError>> {
        Box::pin(self.publish(event))
    }

    /// Spawns the catalog feed and returns once the history of the
    /// [`CATALOG_KINDS`] has been queued to `feed` (the receiver must be
    /// drained concurrently). While the local relay is unreachable this
    /// keeps waiting (the feed retries with backoff); dropping the returned
    /// future does not stop the feed, dropping the receiver does. Returns
    /// `Err(Closed)` if the sink is closed first.
    fn start_catalog_feed(
        &self,
        feed: mpsc::Sender<Event>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.shared.lock().closed {
                return Err(StoreError::Closed);
            }
            let (done_tx, done_rx) = oneshot::channel();
            let task = tokio::spawn(run_feed(self.shared.clone(), feed, done_tx));
            self.push_task(task);
            done_rx.await.unwrap_or(Err(StoreError::Closed))
        })
    }

    /// Reads the `(id, created_at)` of every event on the local relay that
    /// matches `filter`, over a connection of its own: REQ pages newest
    /// first (`until` paging, ids deduplicated, ended by two pages in a row
    /// with nothing new, like the catalog feed). Events are read whole;
    /// that is the price of asking a relay rather than a database.
    fn negentropy_items(
        &self,
        filter: Filter,
    ) -> BoxFuture<'_, Result<Vec<(EventId, Timestamp)>, StoreError>> {
        Box::pin(async move {
            if self.shared.is_shut_down() {
                return Err(StoreError::Closed);
            }
            let mut ws = net::connect(&self.shared.url, &self.shared.net)
                .await
                .map_err(|e| StoreError::Relay(e.to_string()))?;
            let result = read_items(&self.shared, &mut ws, filter).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
            result
        })
    }

    /// Stops both tasks; saves still pending return `Err(Closed)`.
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.shared.shut_down();
            let tasks: Vec<JoinHandle<()>> =
                std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
            for t in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
            }
            Ok(())
        })
    }
}

/// Pages `filter` on the local relay and collects `(id, created_at)`.
async fn read_items(
    shared: &Shared,
    ws: &mut RelaySocket,
    filter: Filter,
) -> Result<Vec<(EventId, Timestamp)>, StoreError> {
    let relay_err = |what: String| StoreError::Relay(what);
    let limit = shared.opts.page_size.max(1);
    let mut seen: HashMap<EventId, Timestamp> = HashMap::new();
    let mut until: Option<Timestamp> = None;
    let mut idle_pages = 0u8;
    for page in 0u64.. {
        let sub = SubscriptionId::new(format!("items-{page}"));
        let mut f = filter.clone().limit(limit);
        if let Some(u) = until {
            f = f.until(u);
        }
        let text = ClientMessage::req(sub.clone(), vec![f]).as_json();
        ws.send(Message::text(text))
            .await
            .map_err(|e| relay_err(e.to_string()))?;
        let mut oldest: Option<Timestamp> = None;
        let mut new = 0usize;
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
                    if until.is_none_or(|u| event.created_at <= u) {
                        oldest = Some(oldest.map_or(event.created_at, |o| o.min(event.created_at)));
                    }
                    if filter.match_event(&event, nostr::filter::MatchEventOptions::new())
                        && seen.insert(event.id, event.created_at).is_none()
                    {
                        new += 1;
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
        match oldest {
            None => break,
            Some(o) if new > 0 => {
                until = Some(o);
                idle_pages = 0;
            }
            Some(o) => {
                idle_pages += 1;
                if idle_pages >= 2 || o.as_secs() == 0 {
                    break;
                }
                until = Some(Timestamp::from_secs(o.as_secs() - 1));
            }
        }
        if let (Some(s), Some(u)) = (filter.since, until) {
            if u < s {
                break;
            }
        }
    }
    Ok(seen.into_iter().collect())
}

// ---------------------------------------------------------------------------
// Publisher

async fn run_publisher(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut backoff = Backoff::new(shared.opts.backoff_min, shared.opts.backoff_max);
    'outer: loop {
        // Connect only when there is something to send.
        loop {
            if shared.is_shut_down() {
                break 'outer;
            }
            if !shared.lock().pending.is_empty() {
                break;
            }
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        let attempt = tokio::select! {
            r = net::connect(&shared.url, &shared.net) => Some(r),
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
                shared.connection_lost();
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
    shared.connection_opened();
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
        let frames = shared.take_outbox(256);
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
            _ = shared.wake.notified() => {}
            _ = tick.tick() => {
                shared.check_timers();
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
            Message::Text(text) => shared.on_publisher_text(text.as_str(), productive),
            Message::Binary(_) => shared.malformed("binary frame"),
            Message::Close(frame) => return format!("closed by the relay ({frame:?})"),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Catalog feed

/// An unfinished pass over the catalog history.
#[derive(Clone, Copy, Debug)]
struct HistoryRun {
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    /// Consecutive pages that brought nothing new.
    idle_pages: u8,
}

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
    run: Option<HistoryRun>,
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
            self.run = Some(HistoryRun {
                since: Some(Timestamp::from_secs(from)),
                until: None,
                idle_pages: 0,
            });
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
    async fn read_page(&mut self, ws: &mut RelaySocket, run: HistoryRun) -> Flow<()> {
        self.sub_counter += 1;
        let sub = SubscriptionId::new(format!("catalog-h{}", self.sub_counter));
        let mut filter = catalog_filter().limit(self.shared.opts.page_size.max(1));
        if let Some(s) = run.since {
            filter = filter.since(s);
        }
        if let Some(u) = run.until {
            filter = filter.until(u);
        }
        self.send(ws, ClientMessage::req(sub.clone(), vec![filter]))
            .await?;
        let answer_timeout = self.shared.opts.answer_timeout;
        let mut deadline = Instant::now() + answer_timeout;
        let mut oldest: Option<Timestamp> = None;
        let mut new = 0usize;
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
                    if run.until.is_some_and(|u| event.created_at > u) {
                        // Ignoring `until`: not a step backwards.
                        trace!("history event newer than the page's until");
                    } else {
                        oldest = Some(oldest.map_or(event.created_at, |o| o.min(event.created_at)));
                    }
                    if self.deliver(event).await? {
                        new += 1;
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

        let mut next = run;
        let finished = match oldest {
            None => true,
            Some(o) if new > 0 => {
                next.until = Some(o);
                next.idle_pages = 0;
                false
            }
            Some(o) => {
                next.idle_pages += 1;
                if next.idle_pages >= 2 || o.as_secs() == 0 {
                    true
                } else {
                    next.until = Some(Timestamp::from_secs(o.as_secs() - 1));
                    false
                }
            }
        };
        let below_since = matches!((next.since, next.until), (Some(s), Some(u)) if u < s);
        if finished || below_since {
            self.run = None;
            if self.caught_up.is_none() {
                self.caught_up = Some(unix_now());
            }
            self.prune();
        } else {
            self.run = Some(next);
        }
        Ok(())
    }
}

async fn run_feed(
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
        run: Some(HistoryRun {
            since: None,
            until: None,
            idle_pages: 0,
        }),
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
            r = net::connect(&shared.url, &shared.net) => Some(r),
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
    use std::net::{IpAddr, Ipv4Addr};

    use nostr::event::{EventBuilder, FinalizeEvent, Tag};
    use nostr::key::{Keys, SecretKey};
    use nostr_relay_builder::prelude as nrb;
    use nostr_relay_builder::prelude::{JsonUtil as _, NostrDatabase as _};
    use tokio::net::TcpListener;

    use super::*;

    const WAIT: Duration = Duration::from_secs(30);

    fn net() -> NetConfig {
        NetConfig {
            allow_private_addresses: true,
            connect_timeout: Duration::from_secs(2),
            ..NetConfig::default()
        }
    }

    fn fast() -> RelaySinkOptions {
        RelaySinkOptions {
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(400),
            ..RelaySinkOptions::default()
        }
    }

    fn keys(n: u8) -> Keys {
        let mut b = [0x22u8; 32];
        b[31] = n;
        Keys::new(SecretKey::from_slice(&b).unwrap())
    }

    /// A signed event; announcements get a unique `d` tag, deletions a `k`
    /// tag only (so nothing is replaced or deleted by accident).
    fn signed(k: &Keys, kind: u16, at: u64, content: &str) -> Event {
        let tag = match kind {
            30617 => Tag::identifier(format!("repo-{content}")),
            5 => Tag::parse(["k", "1621"]).unwrap(),
            _ => Tag::parse(["a", &format!("30617:{}:repo", k.public_key())]).unwrap(),
        };
        EventBuilder::new(Kind::from(kind), content)
            .tags([tag])
            .custom_created_at(Timestamp::from_secs(at))
            .finalize(k)
            .unwrap()
    }

    fn url(port: u16) -> RelayUrl {
        RelayUrl::parse(&format!("ws://127.0.0.1:{port}")).unwrap()
    }

    async fn free_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    }

    type RelayDb = Arc<nrb::MemoryDatabase>;

    fn relay_db() -> RelayDb {
        Arc::new(nrb::MemoryDatabase::with_opts(nrb::MemoryDatabaseOptions {
            events: true,
            max_events: None,
        }))
    }

    async fn start_relay(
        port: u16,
        db: &RelayDb,
        max_filter_limit: Option<usize>,
    ) -> nrb::LocalRelay {
        let mut builder = nrb::RelayBuilder::default()
            .addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .port(port)
            .database(db.clone())
            .rate_limit(nrb::RateLimit {
                max_reqs: 500,
                notes_per_minute: 1_000_000,
            });
        if let Some(max) = max_filter_limit {
            builder = builder.max_filter_limit(max);
        }
        let relay = nrb::LocalRelay::new(builder);
        relay.run().await.unwrap();
        relay
    }

    /// Stores an event straight into the relay's database (another path).
    async fn put_direct(db: &RelayDb, ev: &Event) {
        let ev = nrb::Event::from_json(ev.as_json()).unwrap();
        db.save_event(&ev).await.unwrap();
    }

    async fn relay_count(db: &RelayDb) -> usize {
        db.count(nrb::Filter::new()).await.unwrap()
    }

    /// Drains a feed into a shared list.
    fn collector(mut rx: mpsc::Receiver<Event>) -> Arc<Mutex<Vec<Event>>> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                g.lock().unwrap().push(e);
            }
        });
        got
    }

    async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn ids(events: &[Event]) -> HashSet<EventId> {
        events.iter().map(|e| e.id).collect()
    }

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
    async fn relay_restart_with_pending_saves_and_feed_catch_up() {
        let port = free_port().await;
        let db = relay_db();
        let relay = start_relay(port, &db, None).await;
        let sink = Arc::new(RelaySink::start_with(url(port), net(), fast()));
        let k = keys(5);
        let first = signed(&k, 1621, unix_now(), "before");
        assert_eq!(
            sink.save(first.clone()).await.unwrap(),
            StoreOutcome::Stored
        );
        let (tx, rx) = mpsc::channel(16);
        let got = collector(rx);
        tokio::time::timeout(WAIT, sink.start_catalog_feed(tx))
            .await
            .unwrap()
            .unwrap();
        wait_for("first event on the feed", || {
            got.lock().unwrap().iter().any(|e| e.id == first.id)
        })
        .await;

        // LocalRelay's shutdown only ends sessions idle at that moment (a
        // session busy with a message misses it and lives on), so let the
        // feed's last history page and CLOSE settle first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        relay.shutdown();
        drop(relay);
        tokio::time::sleep(Duration::from_millis(300)).await;

        let now = unix_now();
        let events: Vec<Event> = (0..40u64)
            .map(|i| signed(&k, 1617, now, &format!("during downtime {i}")))
            .collect();
        let saves: Vec<_> = events
            .iter()
            .cloned()
            .map(|e| {
                let sink = sink.clone();
                tokio::spawn(async move { sink.save(e).await })
            })
            .collect();
        // Arrives at the relay by another path while we are away.
        let other_path = signed(&keys(6), 30617, now, "announcement");
        put_direct(&db, &other_path).await;

        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            saves.iter().all(|s| !s.is_finished()),
            "a save finished while the relay was down"
        );
        assert_eq!(sink.stats().in_flight, 40);

        let _relay = start_relay(port, &db, None).await;
        for s in saves {
            let outcome = tokio::time::timeout(WAIT, s).await.unwrap().unwrap();
            assert_eq!(outcome.unwrap(), StoreOutcome::Stored);
        }
        assert_eq!(relay_count(&db).await, 42);
        wait_for("catch-up and live events on the feed", || {
            let got = ids(&got.lock().unwrap());
            got.contains(&other_path.id) && events.iter().all(|e| got.contains(&e.id))
        })
        .await;
        let got = got.lock().unwrap();
        assert_eq!(ids(&got).len(), got.len(), "an event was delivered twice");
        assert!(sink.stats().connects >= 4);
    }

    #[tokio::test]
    async fn idle_connections_stay_up_with_pings() {
        let port = free_port().await;
        let db = relay_db();
        let _relay = start_relay(port, &db, None).await;
        let net = NetConfig {
            ping_interval: Duration::from_millis(150),
            idle_timeout: Duration::from_millis(600),
            ..net()
        };
        let sink = RelaySink::start_with(url(port), net, fast());
        let (tx, rx) = mpsc::channel(16);
        let _got = collector(rx);
        tokio::time::timeout(WAIT, sink.start_catalog_feed(tx))
            .await
            .unwrap()
            .unwrap();
        let ev = signed(&keys(14), 1621, unix_now(), "x");
        assert_eq!(sink.save(ev).await.unwrap(), StoreOutcome::Stored);
        // Several idle timeouts long, with nothing but pings and pongs.
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(sink.stats().connects, 2, "{:?}", sink.stats());
        let ev = signed(&keys(14), 1621, unix_now(), "y");
        assert_eq!(sink.save(ev).await.unwrap(), StoreOutcome::Stored);
        assert_eq!(sink.stats().connects, 2);
    }

    // --- A scripted relay for the paths a real relay rarely takes -------------

    #[derive(Clone, Copy, Debug)]
    enum Reply {
        Ok(bool, &'static str),
        Silent,
        Garbage,
        Hangup,
    }

    struct Fake {
        port: u16,
        /// (connection number, event id) for every EVENT received.
        seen: Arc<Mutex<Vec<(usize, EventId)>>>,
    }

    impl Fake {
        fn times(&self, id: &EventId) -> usize {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, i)| i == id)
                .count()
        }
    }

    /// `script(connection, nth time this id is seen, id)` decides the reply.
    async fn fake_relay<F>(script: F) -> Fake
    where
        F: Fn(usize, usize, EventId) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<(usize, EventId)>>> = Arc::default();
        let script = Arc::new(script);
        let s = seen.clone();
        tokio::spawn(async move {
            let mut conn = 0;
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, script) = (s.clone(), script.clone());
                let n = conn;
                conn += 1;
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        let Message::Text(text) = msg else { continue };
                        let Ok(ClientMessage::Event(ev)) = ClientMessage::from_json(text.as_str())
                        else {
                            continue;
                        };
                        let nth = {
                            let mut seen = seen.lock().unwrap();
                            seen.push((n, ev.id));
                            seen.iter().filter(|(_, i)| *i == ev.id).count()
                        };
                        let ok = |status: bool, m: &str| {
                            Message::text(RelayMessage::ok(ev.id, status, m.to_string()).as_json())
                        };
                        match script(n, nth, ev.id) {
                            Reply::Ok(status, m) => {
                                let _ = ws.send(ok(status, m)).await;
                            }
                            Reply::Silent => {}
                            Reply::Garbage => {
                                let _ = ws.send(Message::text("not json")).await;
                                let _ = ws.send(Message::binary(vec![1u8, 2, 3])).await;
                                let _ = ws.send(Message::text("[\"OK\"]")).await;
                                let _ = ws.send(Message::text("[\"OK\",\"zz\",true,\"\"]")).await;
                                let _ = ws.send(ok(true, "")).await;
                            }
                            Reply::Hangup => return,
                        }
                    }
                });
            }
        });
        Fake { port, seen }
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
