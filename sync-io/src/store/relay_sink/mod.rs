//! The relay sink: stores synced events by publishing them to the GRASP
//! service's own relay over a websocket, and reads that relay's catalog
//! events back for the engine. The operator named that relay, so it is
//! reached whatever its address (loopback, private): the private-address
//! policy is for relays learned from announcements.
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
//!   reads every stored event of the [`CATALOG_KINDS`](crate::store::CATALOG_KINDS) in pages, then keeps
//!   a live subscription and catches up after every reconnect (see `feed.rs`).
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
//! the pending save instead of sending it again, and gives the slot back. The
//! catalog feed blocks on the feed channel (and so stops reading its
//! socket) when the receiver is slow.
//!
//! # Parts
//!
//! | module | owns |
//! |---|---|
//! | `mod.rs` | [`RelaySink`], its options and counters, the [`EventStore`] impl |
//! | `publisher.rs` | the events held for the relay and the publishing task |
//! | `feed.rs` | the catalog feed task (history passes, live subscription, catch-up) |
//! | `items.rs` | the NIP-77 items query |
//! | `pager.rs` | the newest-first `until` paging that the feed and the items query share |
//!
//! Events from the local relay are trusted (it verified them). Frames that
//! are not valid relay messages, on any of its connections, are counted ([`RelaySinkStats::malformed`]),
//! logged at debug and ignored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grasp_sync_core::backoff::exponential;
use grasp_sync_core::{RelayUrl, StoreOutcome};
use nostr::event::{Event, EventId};
use nostr::filter::Filter;
use nostr::types::Timestamp;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::debug;

use super::{BoxFuture, EventStore, StoreError};
use crate::config::NetConfig;
use crate::net::{self, AddressPolicy};

mod feed;
mod items;
mod pager;
mod publisher;
#[cfg(test)]
mod testutil;

use publisher::Publisher;

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
    malformed: AtomicU64,
}

/// What the sink's tasks share: where the local relay is, how to talk to
/// it, the shutdown signal, the counters, and the publisher's state.
struct Shared {
    url: RelayUrl,
    net: NetConfig,
    opts: RelaySinkOptions,
    shutdown: watch::Sender<bool>,
    counters: Counters,
    publisher: Publisher,
}

impl Shared {
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
        let pending = self.publisher.close();
        self.shutdown.send_replace(true);
        self.publisher.wake.notify_one();
        publisher::fail_closed(pending);
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
            publisher: Publisher::new(url.clone(), opts.clone()),
            url,
            net,
            opts,
            shutdown,
            counters: Counters::default(),
        });
        let publisher = tokio::spawn(publisher::run_publisher(shared.clone()));
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
        let publisher = &self.shared.publisher;
        RelaySinkStats {
            in_flight: publisher.in_flight(),
            connects: c.connects.load(Ordering::Relaxed),
            resends: publisher.resends.load(Ordering::Relaxed),
            gave_up: publisher.gave_up.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
        }
    }

    /// Publishes one event and waits for the relay's verdict.
    pub async fn publish(&self, event: Event) -> Result<StoreOutcome, StoreError> {
        self.shared.publisher.publish(event).await
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
    /// [`CATALOG_KINDS`](crate::store::CATALOG_KINDS) has been queued to `feed` (the receiver must be
    /// drained concurrently). While the local relay is unreachable this
    /// keeps waiting (the feed retries with backoff); dropping the returned
    /// future does not stop the feed, dropping the receiver does. Returns
    /// `Err(Closed)` if the sink is closed first.
    fn start_catalog_feed(
        &self,
        feed: mpsc::Sender<Event>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.shared.publisher.is_closed() {
                return Err(StoreError::Closed);
            }
            let (done_tx, done_rx) = oneshot::channel();
            let task = tokio::spawn(feed::run_feed(self.shared.clone(), feed, done_tx));
            self.push_task(task);
            done_rx.await.unwrap_or(Err(StoreError::Closed))
        })
    }

    /// Reads the `(id, created_at)` of every event on the local relay that
    /// matches `filter`, over a connection of its own: REQ pages newest
    /// first, like the catalog feed's (see `items.rs` and `pager.rs`).
    fn negentropy_items(
        &self,
        filter: Filter,
    ) -> BoxFuture<'_, Result<Vec<(EventId, Timestamp)>, StoreError>> {
        Box::pin(async move {
            if self.shared.is_shut_down() {
                return Err(StoreError::Closed);
            }
            let mut ws = net::connect(
                &self.shared.url,
                &self.shared.net,
                AddressPolicy::AnyAddress,
            )
            .await
            .map_err(|e| StoreError::Relay(e.to_string()))?;
            let result = items::read_items(&self.shared, &mut ws, filter).await;
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

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

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
}
