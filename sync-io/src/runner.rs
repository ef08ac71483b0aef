//! The driver: one task that owns the [`Engine`] and is the only place its
//! inputs are fed and its commands carried out.
//!
//! Everything slow happens elsewhere and reports back over channels:
//! connection tasks ([`crate::connection`]), the verifier threads
//! ([`crate::pipeline`]), store saves, NIP-11 fetches and snapshot writes.
//! No lock is held across an await; the engine is never shared.
//!
//! An incoming `EVENT` goes: parsed (connection task) → subscription open
//! and filter matched ([`Engine::check_event`]) → id already verified?
//! (bounded cache; then only the cheap id hash is checked) → id and
//! signature verified (verifier threads) → engine (in the relay's own order)
//! → GRASP acceptance check → store → engine (`EventStored`, and the
//! catalog inputs for announcements, root events and deletions).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grasp_sync_core::{
    is_catalog_kind, Command, Engine, EventCheck, Input, RelayInfo, RelayUrl, Status, StoreOutcome,
    Time,
};
use nostr::event::{Event, EventBuilder, EventId, FinalizeEvent, Kind, Tag};
use nostr::filter::Filter;
use nostr::key::Keys;
use nostr::message::{ClientMessage, SubscriptionId};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio::task::JoinHandle;

use crate::config::{IoConfig, NetConfig};
use crate::connection::{self, ConnHandle, ConnId, ConnReport, FromConn, Incoming, Outgoing};
use crate::metrics::{self, IoCounters};
use crate::persist;
use crate::pipeline::{Inbox, SeenIds, VerifierPool, VerifyDone, VerifyJob};
use crate::store::{EventStore, StoreError};

/// Events per verification job: small enough to spread over the threads,
/// large enough to amortise the hand-off.
const VERIFY_BATCH: usize = 64;
/// Connection reports taken per wake-up before flushing verification jobs.
const CONN_BURST: usize = 512;
/// How long shutdown waits for in-flight saves and socket closes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the runner could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The metrics endpoint could not bind.
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The state file could not be written at shutdown.
    #[error("saving state to {path}: {reason}")]
    SaveState {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store failed to close cleanly.
    #[error("closing the store: {0}")]
    Store(#[from] StoreError),
    /// The driver task panicked or was cancelled.
    #[error("driver task failed: {0}")]
    Driver(String),
}

/// Requests to the driver.
enum Control {
    Status(oneshot::Sender<Status>),
    IoCounters(oneshot::Sender<IoCounters>),
    Shutdown,
}

/// A running sync: ask it for status, or shut it down.
#[derive(Debug)]
pub struct RunnerHandle {
    control: mpsc::Sender<Control>,
    task: JoinHandle<Result<(), RunnerError>>,
    metrics_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::Status(_) => "Status",
            Control::IoCounters(_) => "IoCounters",
            Control::Shutdown => "Shutdown",
        })
    }
}

impl RunnerHandle {
    /// The engine's status view (spec section 9); `None` once stopped.
    pub async fn status(&self) -> Option<Status> {
        let (tx, rx) = oneshot::channel();
        self.control.send(Control::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    /// The I/O shell's own counters; `None` once stopped.
    pub async fn io_counters(&self) -> Option<IoCounters> {
        let (tx, rx) = oneshot::channel();
        self.control.send(Control::IoCounters(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Where the Prometheus endpoint listens, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Whether the driver has stopped (it only stops when asked or on a
    /// bug).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops cleanly: CLOSE every subscription, close every socket, wait
    /// for in-flight saves, save the state, close the store.
    pub async fn shutdown(self) -> Result<(), RunnerError> {
        let _ = self.control.send(Control::Shutdown).await;
        self.task
            .await
            .map_err(|e| RunnerError::Driver(e.to_string()))?
    }

    /// Runs until SIGINT or SIGTERM, then shuts down cleanly.
    pub async fn run_until_signal(self) -> Result<(), RunnerError> {
        shutdown_signal().await;
        tracing::info!("signal received; shutting down");
        self.shutdown().await
    }
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Starts syncing. See the module documentation for what runs where.
#[derive(Debug)]
pub struct Runner;

impl Runner {
    /// Loads the saved state (a corrupt file is set aside and the sync
    /// starts fresh), starts the metrics endpoint and the catalog feed of
    /// `store`, and spawns the driver.
    pub async fn start(
        mut config: IoConfig,
        store: Arc<dyn EventStore>,
    ) -> Result<RunnerHandle, RunnerError> {
        config.engine.auth_enabled = config.auth_keys.is_some();
        let now = wall_clock();
        let engine = load_engine(&config, now);

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (metrics_tx, metrics_rx) = mpsc::channel(16);
        let metrics_addr = match config.metrics_addr {
            Some(addr) => {
                let (bound, _task) = metrics::serve(addr, metrics_tx, shutdown_rx)
                    .await
                    .map_err(|source| RunnerError::Metrics { addr, source })?;
                tracing::info!(%bound, "metrics endpoint listening");
                Some(bound)
            }
            None => None,
        };

        let (catalog_tx, catalog_rx) = mpsc::channel(1024);
        let feed_store = Arc::clone(&store);
        tokio::spawn(async move {
            if let Err(e) = feed_store.start_catalog_feed(catalog_tx).await {
                tracing::error!(error = %e, "store catalog feed failed");
            }
        });

        let (control_tx, control_rx) = mpsc::channel(64);
        let mut driver = Driver::new(config, engine, store);
        let task = tokio::spawn(async move {
            let result = driver.run(control_rx, catalog_rx, metrics_rx).await;
            let _ = shutdown_tx.send(true);
            result
        });
        Ok(RunnerHandle {
            control: control_tx,
            task,
            metrics_addr,
        })
    }
}

/// The current wall-clock time for the engine.
fn wall_clock() -> Time {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Time::from_millis(ms)
}

fn load_engine(config: &IoConfig, now: Time) -> Engine {
    let Some(path) = &config.state_file else {
        return Engine::new(config.engine.clone());
    };
    match persist::load_snapshot(path) {
        Ok(Some(snapshot)) => match Engine::restore(config.engine.clone(), snapshot, now) {
            Ok(engine) => {
                tracing::info!(path = %path.display(), "restored saved state");
                engine
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "saved state unusable; starting fresh");
                set_aside(path);
                Engine::new(config.engine.clone())
            }
        },
        Ok(None) => Engine::new(config.engine.clone()),
        Err(e) => {
            tracing::warn!(error = %e, "saved state unreadable; starting fresh");
            set_aside(path);
            Engine::new(config.engine.clone())
        }
    }
}

fn set_aside(path: &std::path::Path) {
    match persist::quarantine(path) {
        Ok(to) => tracing::warn!(to = %to.display(), "corrupt state file set aside"),
        Err(e) => tracing::warn!(error = %e, "could not set the corrupt state file aside"),
    }
}

/// An item waiting in a connection's reorder buffer.
enum Item {
    Connected,
    ConnectFailed(String),
    Disconnected(String),
    Event {
        subscription: SubscriptionId,
        event: Box<Event>,
        verdict: Verdict,
        permit: OwnedSemaphorePermit,
    },
    Message(Incoming, OwnedSemaphorePermit),
}

/// What the pipeline concluded about an event before the engine sees it.
#[derive(Clone, Copy)]
enum Verdict {
    /// Not for an open subscription or its filters: counted, not verified.
    Unwanted,
    /// Id already verified and stored (or rejected) earlier.
    Known(StoreOutcome),
    /// Id and signature valid.
    Valid,
    /// Bad id or signature.
    Invalid,
}

/// The driver's view of one relay connection.
struct Link {
    conn: ConnHandle,
    connected: bool,
    inbox: Inbox<Item>,
    /// Events waiting for verification: (place in the inbox, event).
    to_verify: Vec<(u64, Box<Event>)>,
    /// Subscription and permit of each event being verified, by place.
    verifying: HashMap<u64, (SubscriptionId, OwnedSemaphorePermit)>,
    /// Subscriptions we opened and have not closed.
    open_subs: BTreeSet<SubscriptionId>,
    /// NIP-77 reconciliations we opened and have not closed.
    open_negs: BTreeSet<SubscriptionId>,
    /// Our AUTH event awaiting its `OK`.
    auth_event: Option<EventId>,
}

/// A finished save.
struct StoreDone {
    relay: RelayUrl,
    seq: u64,
    id: EventId,
    created_at: u64,
    /// Kept for announcements, root events and deletions (catalog input).
    event: Option<Box<Event>>,
    result: Result<StoreOutcome, StoreError>,
    _permit: OwnedSemaphorePermit,
}

/// The store's answer to the engine's request for NIP-77 items.
struct LocalItemsDone {
    relay: RelayUrl,
    request: u64,
    items: Result<Vec<(u64, EventId)>, StoreError>,
}

/// A snapshot taken, to be written once every save issued before it is done.
struct PendingSnapshot {
    json: String,
    barrier: u64,
}

struct Driver {
    engine: Engine,
    config: IoConfig,
    net: Arc<NetConfig>,
    store: Arc<dyn EventStore>,
    links: HashMap<RelayUrl, Link>,
    next_conn: ConnId,
    conn_tx: mpsc::Sender<FromConn>,
    conn_rx: mpsc::Receiver<FromConn>,
    verifier: VerifierPool<(RelayUrl, ConnId)>,
    verify_rx: mpsc::UnboundedReceiver<VerifyDone<(RelayUrl, ConnId)>>,
    store_tx: mpsc::UnboundedSender<StoreDone>,
    store_rx: mpsc::UnboundedReceiver<StoreDone>,
    info_tx: mpsc::UnboundedSender<(RelayUrl, Option<RelayInfo>)>,
    info_rx: mpsc::UnboundedReceiver<(RelayUrl, Option<RelayInfo>)>,
    info_in_flight: BTreeSet<RelayUrl>,
    items_tx: mpsc::UnboundedSender<LocalItemsDone>,
    items_rx: mpsc::UnboundedReceiver<LocalItemsDone>,
    snapshot_tx: mpsc::UnboundedSender<Result<(), String>>,
    snapshot_rx: mpsc::UnboundedReceiver<Result<(), String>>,
    snapshot_writing: bool,
    snapshot_pending: Option<PendingSnapshot>,
    next_save: u64,
    saves_in_flight: BTreeSet<u64>,
    seen: SeenIds,
    io: IoCounters,
    /// Inputs raised while carrying out commands (a send queue overflow).
    deferred: Vec<(RelayUrl, String)>,
    /// The engine's next wake-up as last logged (logged when it changes).
    logged_wakeup: Option<Time>,
}

impl Driver {
    fn new(config: IoConfig, engine: Engine, store: Arc<dyn EventStore>) -> Self {
        // The channel never holds more than the connections' permits, plus
        // their connect/disconnect reports; the bound is a backstop.
        let (conn_tx, conn_rx) = mpsc::channel(65_536);
        let (verify_tx, verify_rx) = mpsc::unbounded_channel();
        let (store_tx, store_rx) = mpsc::unbounded_channel();
        let (info_tx, info_rx) = mpsc::unbounded_channel();
        let (items_tx, items_rx) = mpsc::unbounded_channel();
        let (snapshot_tx, snapshot_rx) = mpsc::unbounded_channel();
        let verifier = VerifierPool::start(config.verify_threads, verify_tx);
        Driver {
            engine,
            net: Arc::new(config.net.clone()),
            seen: SeenIds::new(config.seen_ids_capacity),
            config,
            store,
            links: HashMap::new(),
            next_conn: 1,
            conn_tx,
            conn_rx,
            verifier,
            verify_rx,
            store_tx,
            store_rx,
            info_tx,
            info_rx,
            info_in_flight: BTreeSet::new(),
            items_tx,
            items_rx,
            snapshot_tx,
            snapshot_rx,
            snapshot_writing: false,
            snapshot_pending: None,
            next_save: 0,
            saves_in_flight: BTreeSet::new(),
            io: IoCounters::default(),
            deferred: Vec::new(),
            logged_wakeup: None,
        }
    }

    async fn run(
        &mut self,
        mut control: mpsc::Receiver<Control>,
        mut catalog: mpsc::Receiver<Event>,
        mut metrics: mpsc::Receiver<oneshot::Sender<String>>,
    ) -> Result<(), RunnerError> {
        self.input(Input::Tick);
        let mut snapshot_timer = tokio::time::interval(self.config.snapshot_interval);
        snapshot_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        snapshot_timer.tick().await;
        let mut catalog_open = true;
        loop {
            let wake = self.wake_instant();
            tokio::select! {
                Some(report) = self.conn_rx.recv() => {
                    self.on_conn(report);
                    for _ in 0..CONN_BURST {
                        match self.conn_rx.try_recv() {
                            Ok(report) => self.on_conn(report),
                            Err(_) => break,
                        }
                    }
                    self.flush_verification();
                }
                Some(done) = self.verify_rx.recv() => self.on_verified(done),
                Some(done) = self.store_rx.recv() => self.on_stored(done),
                Some((relay, info)) = self.info_rx.recv() => self.on_info(relay, info),
                Some(done) = self.items_rx.recv() => self.on_local_items(done),
                event = catalog.recv(), if catalog_open => match event {
                    Some(event) => self.input(Input::CatalogEvent(&event)),
                    None => catalog_open = false,
                },
                Some(reply) = metrics.recv() => {
                    self.forget_gone_relays();
                    let text = metrics::render(&self.engine.status(), &self.io_snapshot());
                    let _ = reply.send(text);
                }
                Some(done) = self.snapshot_rx.recv() => self.on_snapshot_written(done),
                _ = snapshot_timer.tick() => self.take_snapshot(),
                _ = tokio::time::sleep_until(wake) => self.input(Input::Tick),
                request = control.recv() => match request {
                    Some(Control::Status(reply)) => { let _ = reply.send(self.engine.status()); }
                    Some(Control::IoCounters(reply)) => { let _ = reply.send(self.io_snapshot()); }
                    Some(Control::Shutdown) | None => return self.shutdown().await,
                },
            }
            self.try_write_snapshot();
        }
    }

    /// When the engine next wants a tick, as a tokio instant (and why, at
    /// debug level, whenever that changes).
    fn wake_instant(&mut self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        if let Some((at, relay, timer)) = self.engine.next_wakeup_reason() {
            if self.logged_wakeup != Some(at) {
                self.logged_wakeup = Some(at);
                tracing::debug!(relay = relay.as_str(), timer = %timer, at_ms = at.as_millis(), "next engine wake-up");
            }
        }
        match self.engine.next_wakeup() {
            Some(at) => {
                let wall = wall_clock();
                now + Duration::from_millis(at.as_millis().saturating_sub(wall.as_millis()))
            }
            // Nothing scheduled: tick now and then anyway (harmless).
            None => now + Duration::from_secs(60),
        }
    }

    /// Moves the I/O counters of relays the engine has forgotten into the
    /// totals, so the per-relay map does not grow forever.
    fn forget_gone_relays(&mut self) {
        let known: BTreeSet<&RelayUrl> = self.engine.relay_urls().collect();
        let gone: Vec<RelayUrl> = self
            .io
            .per_relay
            .keys()
            .filter(|r| !known.contains(r))
            .cloned()
            .collect();
        for relay in gone {
            self.io.forget(&relay);
        }
    }

    fn io_snapshot(&self) -> IoCounters {
        let mut io = self.io.clone();
        io.connections_open = self.links.values().filter(|l| l.connected).count() as u64;
        io.verify_queue = self
            .links
            .values()
            .map(|l| (l.verifying.len() + l.to_verify.len()) as u64)
            .sum();
        io.store_inflight = self.saves_in_flight.len() as u64;
        io
    }

    // ----- engine in, commands out -------------------------------------

    /// Feeds one input and carries out every command it causes.
    fn input(&mut self, input: Input<'_>) {
        self.engine.handle_input(wall_clock(), input);
        self.run_commands();
    }

    fn run_commands(&mut self) {
        loop {
            while let Some(command) = self.engine.poll_command() {
                self.execute(command);
            }
            let Some((relay, reason)) = self.deferred.pop() else {
                return;
            };
            self.engine.handle_input(
                wall_clock(),
                Input::Disconnected {
                    relay: &relay,
                    reason: &reason,
                },
            );
        }
    }

    fn execute(&mut self, command: Command) {
        match command {
            Command::FetchRelayInfo { relay } => self.fetch_info(relay),
            Command::Connect { relay } => {
                if let Some(old) = self.links.remove(&relay) {
                    old.conn.abort();
                }
                let id = self.next_conn;
                self.next_conn += 1;
                let conn = connection::spawn(
                    relay.clone(),
                    id,
                    Arc::clone(&self.net),
                    self.config.per_relay_inflight,
                    self.conn_tx.clone(),
                );
                self.links.insert(
                    relay,
                    Link {
                        conn,
                        connected: false,
                        inbox: Inbox::default(),
                        to_verify: Vec::new(),
                        verifying: HashMap::new(),
                        open_subs: BTreeSet::new(),
                        open_negs: BTreeSet::new(),
                        auth_event: None,
                    },
                );
            }
            Command::Disconnect { relay } => {
                if let Some(link) = self.links.remove(&relay) {
                    link.conn.close();
                }
            }
            Command::Subscribe {
                relay,
                subscription,
                filters,
                ..
            } => {
                let text = ClientMessage::req(subscription.clone(), filters).as_json();
                tracing::trace!(relay = relay.as_str(), %text, "REQ");
                if self.send(&relay, text) {
                    if let Some(link) = self.links.get_mut(&relay) {
                        link.open_subs.insert(subscription);
                    }
                }
            }
            Command::Unsubscribe {
                relay,
                subscription,
            } => {
                let text = ClientMessage::close(subscription.clone()).as_json();
                self.send(&relay, text);
                if let Some(link) = self.links.get_mut(&relay) {
                    link.open_subs.remove(&subscription);
                }
            }
            Command::Authenticate { relay, challenge } => self.authenticate(relay, &challenge),
            Command::QueryLocalItems {
                relay,
                request,
                filter,
            } => self.query_local_items(relay, request, filter),
            Command::NegOpen {
                relay,
                subscription,
                filter,
                message,
            } => {
                let text = ClientMessage::neg_open(subscription.clone(), filter, message).as_json();
                if self.send(&relay, text) {
                    if let Some(link) = self.links.get_mut(&relay) {
                        link.open_negs.insert(subscription);
                    }
                }
            }
            Command::NegMsg {
                relay,
                subscription,
                message,
            } => {
                let text = ClientMessage::NegMsg {
                    subscription_id: Cow::Owned(subscription),
                    message: Cow::Owned(message),
                }
                .as_json();
                self.send(&relay, text);
            }
            Command::NegClose {
                relay,
                subscription,
            } => {
                let text = ClientMessage::NegClose {
                    subscription_id: Cow::Borrowed(&subscription),
                }
                .as_json();
                self.send(&relay, text);
                if let Some(link) = self.links.get_mut(&relay) {
                    link.open_negs.remove(&subscription);
                }
            }
        }
    }

    /// Asks the store for the `(created_at, id)` items matching `filter`
    /// (off the driver loop); the answer comes back as `Input::LocalItems`.
    fn query_local_items(&mut self, relay: RelayUrl, request: u64, filter: Filter) {
        let store = Arc::clone(&self.store);
        let tx = self.items_tx.clone();
        tokio::spawn(async move {
            let items = store.negentropy_items(filter).await.map(|items| {
                items
                    .into_iter()
                    .map(|(id, at)| (at.as_secs(), id))
                    .collect()
            });
            let _ = tx.send(LocalItemsDone {
                relay,
                request,
                items,
            });
        });
    }

    fn on_local_items(&mut self, done: LocalItemsDone) {
        let items = match done.items {
            Ok(items) => Some(items),
            Err(e) => {
                // The engine reconciles that filter with paged REQ instead.
                self.io.store_errors += 1;
                tracing::warn!(relay = done.relay.as_str(), error = %e, "NIP-77 items query failed");
                None
            }
        };
        self.input(Input::LocalItems {
            relay: &done.relay,
            request: done.request,
            items: items.as_deref(),
        });
    }

    /// Queues a frame for a relay's writer. A full queue means the relay
    /// stopped reading: the connection is dropped and the engine told.
    fn send(&mut self, relay: &RelayUrl, text: String) -> bool {
        let Some(link) = self.links.get(relay) else {
            tracing::debug!(
                relay = relay.as_str(),
                "command for a relay without a connection"
            );
            return false;
        };
        let bytes = text.len() as u64;
        match link.conn.outgoing.try_send(Outgoing::Text(text)) {
            Ok(()) => {
                let counters = self.io.relay(relay);
                counters.bytes_sent = counters.bytes_sent.saturating_add(bytes);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    relay = relay.as_str(),
                    "send queue full; dropping the connection"
                );
                self.io.relay(relay).send_queue_overflows += 1;
                if let Some(link) = self.links.remove(relay) {
                    link.conn.abort();
                    if link.connected {
                        self.deferred
                            .push((relay.clone(), "send queue full".to_string()));
                    }
                }
                false
            }
            // The writer is gone; its report is on the way.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn authenticate(&mut self, relay: RelayUrl, challenge: &str) {
        let Some(keys) = self.config.auth_keys.clone() else {
            self.input(Input::AuthResult {
                relay: &relay,
                accepted: false,
            });
            return;
        };
        let event = match auth_event(&keys, &relay, challenge) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(relay = relay.as_str(), error = %e, "cannot build the AUTH event");
                return;
            }
        };
        let id = event.id;
        self.io.relay(&relay).auth_attempts += 1;
        if self.send(&relay, ClientMessage::auth(event).as_json()) {
            if let Some(link) = self.links.get_mut(&relay) {
                link.auth_event = Some(id);
            }
        }
    }

    fn fetch_info(&mut self, relay: RelayUrl) {
        if !self.info_in_flight.insert(relay.clone()) {
            return;
        }
        let net = Arc::clone(&self.net);
        let tx = self.info_tx.clone();
        tokio::spawn(async move {
            let info = match crate::nip11::fetch(&relay, &net).await {
                Ok(info) => Some(info),
                Err(e) => {
                    tracing::debug!(relay = relay.as_str(), error = %e, "no NIP-11 document");
                    None
                }
            };
            let _ = tx.send((relay, info));
        });
    }

    fn on_info(&mut self, relay: RelayUrl, info: Option<RelayInfo>) {
        self.info_in_flight.remove(&relay);
        if info.is_none() {
            self.io.relay(&relay).nip11_failures += 1;
        }
        // A relay without NIP-11 is fine: an empty document stops the asking.
        let info = info.unwrap_or_default();
        self.input(Input::RelayInfo {
            relay: &relay,
            info,
        });
    }

    // ----- connections -------------------------------------------------

    fn on_conn(&mut self, report: FromConn) {
        let FromConn { relay, conn, kind } = report;
        let Some(link) = self.links.get_mut(&relay) else {
            return;
        };
        if link.conn.id != conn {
            return; // a late report of an attempt we already dropped
        }
        match kind {
            ConnReport::Connected => link.inbox.push_ready(Item::Connected),
            ConnReport::ConnectFailed(reason) => link.inbox.push_ready(Item::ConnectFailed(reason)),
            ConnReport::Disconnected(reason) => link.inbox.push_ready(Item::Disconnected(reason)),
            ConnReport::Message(
                Incoming::Event {
                    subscription,
                    event,
                },
                bytes,
                permit,
            ) => {
                let counters = self.io.relay(&relay);
                counters.frames_received += 1;
                counters.event_frames_received += 1;
                counters.event_bytes_received =
                    counters.event_bytes_received.saturating_add(bytes as u64);
                counters.bytes_received = counters.bytes_received.saturating_add(bytes as u64);
                let verdict = match self.engine.check_event(&relay, &subscription, &event) {
                    EventCheck::Accepted(_) => match self.seen.get(&event.id) {
                        // Same id means same content once the id hash checks.
                        Some(outcome) if event.verify_id() => {
                            counters.seen_cache_hits += 1;
                            Some(Verdict::Known(outcome))
                        }
                        _ => None,
                    },
                    EventCheck::Unrequested | EventCheck::Unmatched => Some(Verdict::Unwanted),
                };
                match verdict {
                    Some(verdict) => link.inbox.push_ready(Item::Event {
                        subscription,
                        event,
                        verdict,
                        permit,
                    }),
                    None => {
                        let seq = link.inbox.reserve();
                        link.to_verify.push((seq, event));
                        link.verifying.insert(seq, (subscription, permit));
                    }
                }
            }
            ConnReport::Message(other, bytes, permit) => {
                let counters = self.io.relay(&relay);
                counters.frames_received += 1;
                counters.bytes_received = counters.bytes_received.saturating_add(bytes as u64);
                link.inbox.push_ready(Item::Message(other, permit));
            }
        }
        self.drain(&relay);
    }

    /// Sends the events waiting for verification to the verifier threads.
    fn flush_verification(&mut self) {
        for (relay, link) in self.links.iter_mut() {
            if link.to_verify.is_empty() {
                continue;
            }
            let mut events = std::mem::take(&mut link.to_verify);
            while !events.is_empty() {
                let rest = events.split_off(events.len().min(VERIFY_BATCH));
                let job = VerifyJob {
                    key: (relay.clone(), link.conn.id),
                    events,
                };
                if self.verifier.submit(job).is_err() {
                    tracing::error!("verifier pool stopped");
                }
                events = rest;
            }
        }
    }

    fn on_verified(&mut self, done: VerifyDone<(RelayUrl, ConnId)>) {
        let (relay, conn) = done.key;
        let Some(link) = self.links.get_mut(&relay) else {
            return;
        };
        if link.conn.id != conn {
            return;
        }
        for (seq, event, valid) in done.results {
            let Some((subscription, permit)) = link.verifying.remove(&seq) else {
                continue;
            };
            let verdict = if valid {
                Verdict::Valid
            } else {
                Verdict::Invalid
            };
            link.inbox.fill(
                seq,
                Item::Event {
                    subscription,
                    event,
                    verdict,
                    permit,
                },
            );
        }
        self.drain(&relay);
    }

    /// Hands the relay's ready items to the engine, in arrival order.
    fn drain(&mut self, relay: &RelayUrl) {
        loop {
            let Some(item) = self.links.get_mut(relay).and_then(|l| l.inbox.pop_ready()) else {
                return;
            };
            self.process(relay, item);
        }
    }

    fn process(&mut self, relay: &RelayUrl, item: Item) {
        match item {
            Item::Connected => {
                if let Some(link) = self.links.get_mut(relay) {
                    link.connected = true;
                }
                tracing::info!(relay = relay.as_str(), "connected");
                self.input(Input::Connected { relay });
            }
            Item::ConnectFailed(reason) => {
                self.links.remove(relay);
                tracing::info!(relay = relay.as_str(), %reason, "connection failed");
                self.input(Input::ConnectFailed {
                    relay,
                    reason: &reason,
                });
            }
            Item::Disconnected(reason) => {
                self.links.remove(relay);
                tracing::info!(relay = relay.as_str(), %reason, "disconnected");
                self.input(Input::Disconnected {
                    relay,
                    reason: &reason,
                });
            }
            Item::Event {
                subscription,
                event,
                verdict,
                permit,
            } => self.process_event(relay, &subscription, event, verdict, permit),
            Item::Message(message, _permit) => self.process_message(relay, message),
        }
    }

    fn process_event(
        &mut self,
        relay: &RelayUrl,
        subscription: &SubscriptionId,
        event: Box<Event>,
        verdict: Verdict,
        permit: OwnedSemaphorePermit,
    ) {
        let received = Input::EventReceived {
            relay,
            subscription,
            event: &event,
        };
        match verdict {
            Verdict::Unwanted => self.input(received),
            Verdict::Invalid => {
                tracing::debug!(relay = relay.as_str(), id = %event.id, "invalid event");
                self.input(Input::EventInvalid { relay });
            }
            Verdict::Known(outcome) => {
                self.input(received);
                self.input(Input::EventStored {
                    relay,
                    id: event.id,
                    created_at: event.created_at.as_secs(),
                    outcome,
                });
            }
            Verdict::Valid => {
                self.input(received);
                if !self.engine.check_acceptance(&event).is_accept() {
                    self.seen.insert(event.id, StoreOutcome::Rejected);
                    self.input(Input::EventStored {
                        relay,
                        id: event.id,
                        created_at: event.created_at.as_secs(),
                        outcome: StoreOutcome::Rejected,
                    });
                    return;
                }
                self.save(relay.clone(), event, permit);
            }
        }
    }

    fn save(&mut self, relay: RelayUrl, event: Box<Event>, permit: OwnedSemaphorePermit) {
        let seq = self.next_save;
        self.next_save += 1;
        self.saves_in_flight.insert(seq);
        let store = Arc::clone(&self.store);
        let tx = self.store_tx.clone();
        let id = event.id;
        let created_at = event.created_at.as_secs();
        let keep = is_catalog_kind(event.kind.as_u16()).then(|| event.clone());
        tokio::spawn(async move {
            let result = store.save(*event).await;
            let _ = tx.send(StoreDone {
                relay,
                seq,
                id,
                created_at,
                event: keep,
                result,
                _permit: permit,
            });
        });
    }

    fn on_stored(&mut self, done: StoreDone) {
        self.saves_in_flight.remove(&done.seq);
        let outcome = match done.result {
            Ok(outcome) => {
                self.seen.insert(done.id, outcome);
                outcome
            }
            Err(e) => {
                // Not remembered as seen: a later copy is tried again.
                self.io.store_errors += 1;
                tracing::warn!(relay = done.relay.as_str(), id = %done.id, error = %e, "store failed");
                StoreOutcome::Rejected
            }
        };
        self.input(Input::EventStored {
            relay: &done.relay,
            id: done.id,
            created_at: done.created_at,
            outcome,
        });
        if outcome == StoreOutcome::Stored {
            if let Some(event) = done.event.filter(|e| is_catalog_kind(e.kind.as_u16())) {
                self.input(Input::CatalogEvent(&event));
            }
        }
    }

    fn process_message(&mut self, relay: &RelayUrl, message: Incoming) {
        match message {
            Incoming::Event { .. } => {} // handled before the inbox
            Incoming::Eose(subscription) => {
                tracing::trace!(relay = relay.as_str(), sub = %subscription, "EOSE");
                self.input(Input::Eose {
                    relay,
                    subscription: &subscription,
                })
            }
            Incoming::Closed {
                subscription,
                message,
            } => {
                if let Some(link) = self.links.get_mut(relay) {
                    link.open_subs.remove(&subscription);
                }
                tracing::debug!(relay = relay.as_str(), sub = %subscription, %message, "CLOSED");
                self.input(Input::Closed {
                    relay,
                    subscription: &subscription,
                    message: &message,
                });
            }
            Incoming::Notice(message) => {
                tracing::debug!(relay = relay.as_str(), %message, "NOTICE");
                self.input(Input::Notice {
                    relay,
                    message: &message,
                });
            }
            Incoming::NegMsg {
                subscription,
                message,
            } => self.input(Input::NegMsg {
                relay,
                subscription: &subscription,
                message: &message,
            }),
            Incoming::NegErr {
                subscription,
                message,
            } => {
                tracing::debug!(relay = relay.as_str(), sub = %subscription, %message, "NEG-ERR");
                if let Some(link) = self.links.get_mut(relay) {
                    link.open_negs.remove(&subscription);
                }
                self.input(Input::NegErr {
                    relay,
                    subscription: &subscription,
                    message: &message,
                })
            }
            Incoming::Auth(challenge) => self.input(Input::AuthChallenge {
                relay,
                challenge: &challenge,
            }),
            Incoming::Ok {
                event_id, accepted, ..
            } => {
                let ours = self
                    .links
                    .get_mut(relay)
                    .filter(|l| l.auth_event == Some(event_id))
                    .map(|l| l.auth_event = None)
                    .is_some();
                if ours {
                    self.input(Input::AuthResult { relay, accepted });
                }
            }
            Incoming::InvalidEvent(reason) => {
                tracing::debug!(relay = relay.as_str(), %reason, "unparsable EVENT");
                self.input(Input::EventInvalid { relay });
            }
            Incoming::Malformed(reason) => {
                tracing::debug!(relay = relay.as_str(), %reason, "malformed message");
                self.io.relay(relay).messages_malformed += 1;
            }
            Incoming::Oversized => {
                self.io.relay(relay).frames_oversized += 1;
            }
        }
    }

    // ----- persistence -------------------------------------------------

    /// Takes a snapshot now; it is written once every save issued before it
    /// has finished, so the file never claims events the store lacks.
    fn take_snapshot(&mut self) {
        if self.config.state_file.is_none() || self.snapshot_pending.is_some() {
            return;
        }
        self.snapshot_pending = Some(PendingSnapshot {
            json: self.engine.snapshot().to_json(),
            barrier: self.next_save,
        });
    }

    fn try_write_snapshot(&mut self) {
        if self.snapshot_writing {
            return;
        }
        let ready = match &self.snapshot_pending {
            Some(p) => self.saves_in_flight.first().is_none_or(|s| *s >= p.barrier),
            None => false,
        };
        let (Some(path), true) = (self.config.state_file.clone(), ready) else {
            return;
        };
        let Some(pending) = self.snapshot_pending.take() else {
            return;
        };
        self.snapshot_writing = true;
        let tx = self.snapshot_tx.clone();
        tokio::task::spawn_blocking(move || {
            let result =
                persist::save_atomic(&path, pending.json.as_bytes()).map_err(|e| e.to_string());
            let _ = tx.send(result);
        });
    }

    fn on_snapshot_written(&mut self, result: Result<(), String>) {
        self.snapshot_writing = false;
        match result {
            Ok(()) => self.io.snapshot_saves += 1,
            Err(e) => {
                self.io.snapshot_failures += 1;
                tracing::warn!(error = %e, "saving state failed");
            }
        }
    }

    async fn shutdown(&mut self) -> Result<(), RunnerError> {
        tracing::info!("shutting down: closing subscriptions and sockets");
        let links: Vec<(RelayUrl, Link)> = self.links.drain().collect();
        let mut closing = Vec::new();
        for (_, link) in links {
            if link.connected {
                for sub in &link.open_subs {
                    let _ = link
                        .conn
                        .outgoing
                        .try_send(Outgoing::Text(ClientMessage::close(sub.clone()).as_json()));
                }
                for sub in &link.open_negs {
                    let close = ClientMessage::NegClose {
                        subscription_id: Cow::Borrowed(sub),
                    };
                    let _ = link.conn.outgoing.try_send(Outgoing::Text(close.as_json()));
                }
            }
            closing.push(link.conn.close_and_wait(Duration::from_secs(2)));
        }
        futures_util::future::join_all(closing).await;

        // Saves already issued finish before the state is written.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while !self.saves_in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.store_rx.recv()).await {
                Ok(Some(done)) => self.on_stored(done),
                _ => {
                    tracing::warn!(
                        left = self.saves_in_flight.len(),
                        "saves still in flight at shutdown"
                    );
                    break;
                }
            }
        }
        let mut result = Ok(());
        if let Some(path) = self.config.state_file.clone() {
            let json = self.engine.snapshot().to_json();
            let write = tokio::task::spawn_blocking({
                let path = path.clone();
                move || persist::save_atomic(&path, json.as_bytes())
            })
            .await;
            match write {
                Ok(Ok(())) => tracing::info!(path = %path.display(), "state saved"),
                Ok(Err(e)) => {
                    result = Err(RunnerError::SaveState {
                        path,
                        reason: e.to_string(),
                    })
                }
                Err(e) => {
                    result = Err(RunnerError::SaveState {
                        path,
                        reason: e.to_string(),
                    })
                }
            }
        }
        self.store.close().await?;
        result
    }
}

/// The NIP-42 answer to `challenge`: a signed kind-22242 event naming the
/// relay and the challenge.
pub fn auth_event(keys: &Keys, relay: &RelayUrl, challenge: &str) -> Result<Event, AuthEventError> {
    let err = |e: &dyn std::fmt::Display| AuthEventError(e.to_string());
    let tags = vec![
        Tag::parse(["relay", relay.as_str()]).map_err(|e| err(&e))?,
        Tag::parse(["challenge", challenge]).map_err(|e| err(&e))?,
    ];
    EventBuilder::new(Kind::Authentication, "")
        .tags(tags)
        .finalize(keys)
        .map_err(|e| err(&e))
}

/// The AUTH event could not be built or signed.
#[derive(Debug, thiserror::Error)]
#[error("building the AUTH event: {0}")]
pub struct AuthEventError(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_event_names_relay_and_challenge() {
        let keys = Keys::parse("6b911fd37cdf5c81d4c0adb1ab7fa822ed253ab0ad9aa18d77257c88b29b718e")
            .unwrap();
        let relay = RelayUrl::parse("wss://relay.example.org").unwrap();
        let event = auth_event(&keys, &relay, "c-123").unwrap();
        assert_eq!(event.kind, Kind::Authentication);
        assert!(event.verify().is_ok());
        assert_eq!(event.pubkey, keys.public_key());
        let tags: Vec<Vec<String>> = event.tags.iter().map(|t| t.as_slice().to_vec()).collect();
        assert!(tags.contains(&vec!["relay".to_string(), relay.as_str().to_string()]));
        assert!(tags.contains(&vec!["challenge".to_string(), "c-123".to_string()]));
    }
}
