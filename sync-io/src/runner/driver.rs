//! The driver task: owns the [`Engine`], feeds it every input and carries
//! out its commands. It does I/O only (spawn, send, select); the event
//! path's decisions are the [`Intake`]'s.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use grasp_sync_core::{
    is_catalog_kind, Command, Engine, Input, LocalItem, RelayInfo, RelayUrl, StoreOutcome, Time,
    Verdict,
};
use nostr::event::Event;
use nostr::filter::Filter;
use nostr::message::ClientMessage;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use super::{auth_event, wall_clock, Activity, CatalogLoad, Control, RunnerError};
use crate::config::{IoConfig, NetConfig};
use crate::connection::{self, ConnHandle, ConnId, ConnReport, FromConn, Outgoing};
use crate::intake::{Intake, LinkEvent, Save, SaveTicket, Step};
use crate::metrics::{self, IoCounters};
use crate::net::AddressPolicy;
use crate::persist;
use crate::pipeline::{VerifierPool, VerifyDone};
use crate::store::{EventStore, StoreError};

/// Connection reports taken per wake-up before flushing verification jobs.
const CONN_BURST: usize = 512;
/// How long shutdown waits for in-flight saves and socket closes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What finished off the driver loop: one channel for every kind of
/// completion, so the loop has one arm for them.
enum Done {
    /// Verdicts of a verification job.
    Verified(VerifyDone<ConnId>),
    /// A save finished.
    Stored {
        seq: u64,
        ticket: SaveTicket<OwnedSemaphorePermit>,
        result: Result<StoreOutcome, StoreError>,
    },
    /// A NIP-11 fetch finished (`None`: the relay serves none).
    Info {
        relay: RelayUrl,
        info: Option<RelayInfo>,
    },
    /// The store's answer to the engine's request for NIP-77 items.
    Items {
        relay: RelayUrl,
        request: u64,
        items: Result<Vec<LocalItem>, StoreError>,
    },
    /// A snapshot write finished.
    Snapshot(Result<(), String>),
}

impl From<VerifyDone<ConnId>> for Done {
    fn from(done: VerifyDone<ConnId>) -> Self {
        Done::Verified(done)
    }
}

/// The driver's side of one relay connection: the socket task and whether
/// it opened (the event path's side is in the [`Intake`]).
struct Conn {
    handle: ConnHandle,
    connected: bool,
}

/// A snapshot taken, to be written once every save issued before it is done.
struct PendingSnapshot {
    json: String,
    barrier: u64,
}

/// The driver: I/O only. It spawns (connections, saves, NIP-11 fetches,
/// item queries, snapshot writes), sends, and selects over what comes back;
/// the event path's decisions are the [`Intake`]'s, the sync's the engine's.
pub(super) struct Driver {
    engine: Engine,
    intake: Intake<OwnedSemaphorePermit>,
    config: IoConfig,
    net: Arc<NetConfig>,
    store: Arc<dyn EventStore>,
    conns: HashMap<RelayUrl, Conn>,
    next_conn: ConnId,
    conn_tx: mpsc::Sender<FromConn>,
    conn_rx: mpsc::Receiver<FromConn>,
    verifier: VerifierPool<ConnId>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    info_in_flight: BTreeSet<RelayUrl>,
    /// Store item queries (NIP-77) under way.
    items_in_flight: usize,
    catalog: CatalogLoad,
    snapshot_writing: bool,
    snapshot_pending: Option<PendingSnapshot>,
    next_save: u64,
    saves_in_flight: BTreeSet<u64>,
    io: IoCounters,
    /// Inputs raised while carrying out commands (a send queue overflow).
    deferred: Vec<(RelayUrl, String)>,
    /// The engine's next wake-up as last logged (logged when it changes).
    logged_wakeup: Option<Time>,
    /// Relays already warned about for their refused addresses.
    warned_refused: BTreeSet<RelayUrl>,
}

impl Driver {
    pub(super) fn new(config: IoConfig, engine: Engine, store: Arc<dyn EventStore>) -> Self {
        // The channel never holds more than the connections' permits, plus
        // their connect/disconnect reports; the bound is a backstop.
        let (conn_tx, conn_rx) = mpsc::channel(65_536);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let verifier = VerifierPool::start(config.verify_threads, done_tx.clone());
        Driver {
            engine,
            intake: Intake::new(config.seen_ids_capacity),
            net: Arc::new(config.net.clone()),
            config,
            store,
            conns: HashMap::new(),
            next_conn: 1,
            conn_tx,
            conn_rx,
            verifier,
            done_tx,
            done_rx,
            info_in_flight: BTreeSet::new(),
            items_in_flight: 0,
            catalog: CatalogLoad::Loading,
            snapshot_writing: false,
            snapshot_pending: None,
            next_save: 0,
            saves_in_flight: BTreeSet::new(),
            io: IoCounters::default(),
            deferred: Vec::new(),
            logged_wakeup: None,
            warned_refused: BTreeSet::new(),
        }
    }

    pub(super) async fn run(
        &mut self,
        mut control: mpsc::Receiver<Control>,
        mut catalog: mpsc::Receiver<Event>,
        mut loaded: oneshot::Receiver<CatalogLoad>,
        mut metrics: mpsc::Receiver<oneshot::Sender<String>>,
    ) -> Result<(), RunnerError> {
        self.input(Input::Tick);
        // Snapshots, and dropping the I/O series of relays the engine forgot.
        let mut housekeeping = tokio::time::interval(self.config.snapshot_interval);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        housekeeping.tick().await;
        let mut catalog_open = true;
        let mut loading = true;
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
                Some(done) = self.done_rx.recv() => self.on_done(done),
                event = catalog.recv(), if catalog_open => match event {
                    Some(event) => self.input(Input::CatalogEvent(&event)),
                    None => catalog_open = false,
                },
                load = &mut loaded, if loading => {
                    loading = false;
                    // Everything of the first load is queued: take it in
                    // before saying it is loaded.
                    while let Ok(event) = catalog.try_recv() {
                        self.input(Input::CatalogEvent(&event));
                    }
                    self.catalog = load.unwrap_or_else(|_| CatalogLoad::Failed("the catalog feed stopped".into()));
                }
                Some(reply) = metrics.recv() => {
                    let text = metrics::render(&self.engine.status(), &self.io_snapshot());
                    let _ = reply.send(text);
                }
                _ = housekeeping.tick() => {
                    self.forget_gone_relays();
                    self.take_snapshot();
                }
                _ = tokio::time::sleep_until(wake) => self.input(Input::Tick),
                request = control.recv() => match request {
                    Some(Control::Status(reply)) => { let _ = reply.send(self.engine.status()); }
                    Some(Control::IoCounters(reply)) => { let _ = reply.send(self.io_snapshot()); }
                    Some(Control::Activity(reply)) => { let _ = reply.send(self.activity()); }
                    Some(Control::StatusActivity(reply)) => {
                        let _ = reply.send((self.engine.status(), self.activity()));
                    }
                    Some(Control::Admit { event, feed, reply }) => {
                        let _ = reply.send(self.admit(&event, feed));
                    }
                    Some(Control::Catalog { event, reply }) => {
                        self.host_catalog_event(&event);
                        let _ = reply.send(());
                    }
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
    /// totals, so the per-relay map does not grow forever. Runs on the
    /// housekeeping timer, not per scrape: a forgotten relay's I/O series
    /// may outlive it by one interval.
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
        io.connections_open = self.conns.values().filter(|c| c.connected).count() as u64;
        io.verify_queue = self.intake.verify_queue() as u64;
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

    /// Carries out what the intake has ready: each input goes to the engine
    /// (and its commands out) before the intake is asked again.
    fn pump(&mut self) {
        while let Some(step) = self.intake.poll(&self.engine, &mut self.io) {
            let save = match step {
                Step::Input(input) => {
                    track_connection(&mut self.conns, &input);
                    self.engine.handle_input(wall_clock(), input);
                    None
                }
                Step::Save(save) => Some(save),
            };
            if let Some(save) = save {
                self.save(save);
            }
            self.run_commands();
        }
    }

    fn execute(&mut self, command: Command) {
        match command {
            Command::FetchRelayInfo { relay } => self.fetch_info(relay),
            Command::Connect { relay } => {
                if let Some(old) = self.conns.remove(&relay) {
                    old.handle.abort();
                }
                let id = self.next_conn;
                self.next_conn += 1;
                let handle = connection::spawn(
                    relay.clone(),
                    id,
                    Arc::clone(&self.net),
                    AddressPolicy::for_relay(&self.config.engine, &relay),
                    self.config.per_relay_inflight,
                    self.conn_tx.clone(),
                );
                self.intake.connect(relay.clone(), id);
                self.conns.insert(
                    relay,
                    Conn {
                        handle,
                        connected: false,
                    },
                );
            }
            Command::Disconnect { relay } => {
                if let Some(conn) = self.conns.remove(&relay) {
                    conn.handle.close();
                }
                self.intake.close(&relay);
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
                    self.intake.on_subscribed(&relay, subscription);
                }
            }
            Command::Unsubscribe {
                relay,
                subscription,
            } => {
                let text = ClientMessage::close(subscription.clone()).as_json();
                self.send(&relay, text);
                self.intake.on_unsubscribed(&relay, &subscription);
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
                    self.intake.on_neg_opened(&relay, subscription);
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
                self.intake.on_neg_closed(&relay, &subscription);
            }
        }
    }

    /// Asks the store for the `(id, created_at)` items matching `filter`
    /// (off the driver loop); the answer comes back as `Input::LocalItems`.
    fn query_local_items(&mut self, relay: RelayUrl, request: u64, filter: Filter) {
        self.items_in_flight += 1;
        let store = Arc::clone(&self.store);
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            let items = store.negentropy_items(filter).await;
            let _ = tx.send(Done::Items {
                relay,
                request,
                items,
            });
        });
    }

    fn on_local_items(
        &mut self,
        relay: RelayUrl,
        request: u64,
        items: Result<Vec<LocalItem>, StoreError>,
    ) {
        let items = match items {
            Ok(items) => Some(items),
            Err(e) => {
                // The engine reconciles that filter with paged REQ instead.
                self.io.store_errors += 1;
                tracing::warn!(relay = relay.as_str(), error = %e, "NIP-77 items query failed");
                None
            }
        };
        self.input(Input::LocalItems {
            relay: &relay,
            request,
            items: items.as_deref(),
        });
    }

    /// Queues a frame for a relay's writer. A full queue means the relay
    /// stopped reading: the connection is dropped and the engine told.
    fn send(&mut self, relay: &RelayUrl, text: String) -> bool {
        let Some(conn) = self.conns.get(relay) else {
            tracing::debug!(
                relay = relay.as_str(),
                "command for a relay without a connection"
            );
            return false;
        };
        let bytes = text.len() as u64;
        match conn.handle.outgoing.try_send(Outgoing::Text(text)) {
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
                self.intake.close(relay);
                if let Some(conn) = self.conns.remove(relay) {
                    conn.handle.abort();
                    if conn.connected {
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
            self.intake.on_auth_sent(&relay, id);
        }
    }

    fn fetch_info(&mut self, relay: RelayUrl) {
        if !self.info_in_flight.insert(relay.clone()) {
            return;
        }
        let net = Arc::clone(&self.net);
        let policy = AddressPolicy::for_relay(&self.config.engine, &relay);
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            let info = match crate::nip11::fetch(&relay, &net, policy).await {
                Ok(info) => Some(info),
                Err(e) => {
                    tracing::debug!(relay = relay.as_str(), error = %e, "no NIP-11 document");
                    None
                }
            };
            let _ = tx.send(Done::Info { relay, info });
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

    // ----- the service's own relay ------------------------------------------

    /// The acceptance rule for an event the service's relay received; with
    /// `feed`, an accepted catalog event goes to the catalog at once.
    fn admit(&mut self, event: &Event, feed: bool) -> Verdict {
        let verdict = self.engine.check_acceptance(event);
        if feed && verdict.is_accept() {
            self.host_catalog_event(event);
        }
        verdict
    }

    /// An event the service's relay stored: a catalog input when it is
    /// an announcement, a root event or a deletion.
    fn host_catalog_event(&mut self, event: &Event) {
        if is_catalog_kind(event.kind.as_u16()) {
            self.input(Input::CatalogEvent(event));
        }
    }

    // ----- connections, verification, the store --------------------------

    /// A relay learned from an announcement resolves only to addresses the
    /// policy refuses: said once per relay, at WARN (nothing syncs from it
    /// otherwise, silently).
    fn warn_refused_address(&mut self, conn: ConnId, reason: &str) {
        let Some(relay) = self
            .conns
            .iter()
            .find(|(_, c)| c.handle.id == conn)
            .map(|(r, _)| r.clone())
        else {
            return;
        };
        if self.warned_refused.insert(relay.clone()) {
            tracing::warn!(
                relay = relay.as_str(),
                %reason,
                "not syncing from this relay: it resolves only to private addresses (allow them with --allow-private-relays)"
            );
        }
    }

    fn on_conn(&mut self, report: FromConn) {
        let FromConn { conn, kind } = report;
        match kind {
            ConnReport::Connected => self.intake.on_link(conn, LinkEvent::Connected),
            ConnReport::ConnectFailed {
                reason,
                refused_address,
            } => {
                if refused_address {
                    self.warn_refused_address(conn, &reason);
                }
                self.intake.on_link(conn, LinkEvent::ConnectFailed(reason))
            }
            ConnReport::Disconnected(reason) => {
                self.intake.on_link(conn, LinkEvent::Disconnected(reason))
            }
            ConnReport::Message(incoming, bytes, permit) => {
                self.intake
                    .on_frame(&self.engine, &mut self.io, conn, incoming, bytes, permit)
            }
        }
        self.pump();
    }

    /// Sends the events waiting for verification to the verifier threads.
    fn flush_verification(&mut self) {
        for job in self.intake.take_verify_jobs() {
            if self.verifier.submit(job).is_err() {
                tracing::error!("verifier pool stopped");
            }
        }
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Verified(done) => {
                self.intake.on_verified(done);
                self.pump();
            }
            Done::Stored {
                seq,
                ticket,
                result,
            } => self.on_stored(seq, ticket, result),
            Done::Info { relay, info } => self.on_info(relay, info),
            Done::Items {
                relay,
                request,
                items,
            } => {
                self.items_in_flight = self.items_in_flight.saturating_sub(1);
                self.on_local_items(relay, request, items)
            }
            Done::Snapshot(result) => self.on_snapshot_written(result),
        }
    }

    /// What the runner is busy with besides the engine.
    fn activity(&self) -> Activity {
        Activity {
            in_flight: self.intake.in_flight(),
            queries: self.info_in_flight.len() + self.items_in_flight,
            catalog: self.catalog.clone(),
        }
    }

    fn save(&mut self, save: Save<OwnedSemaphorePermit>) {
        let seq = self.next_save;
        self.next_save += 1;
        self.saves_in_flight.insert(seq);
        let store = Arc::clone(&self.store);
        let tx = self.done_tx.clone();
        let Save { event, ticket } = save;
        tokio::spawn(async move {
            let result = store.save(*event).await;
            let _ = tx.send(Done::Stored {
                seq,
                ticket,
                result,
            });
        });
    }

    fn on_stored(
        &mut self,
        seq: u64,
        ticket: SaveTicket<OwnedSemaphorePermit>,
        result: Result<StoreOutcome, StoreError>,
    ) {
        self.saves_in_flight.remove(&seq);
        self.intake.on_stored(ticket, result, &mut self.io);
        self.pump();
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
        let tx = self.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            let result =
                persist::save_atomic(&path, pending.json.as_bytes()).map_err(|e| e.to_string());
            let _ = tx.send(Done::Snapshot(result));
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
        let conns: Vec<(RelayUrl, Conn)> = self.conns.drain().collect();
        let mut closing = Vec::new();
        for (relay, conn) in conns {
            let open = self.intake.close(&relay).unwrap_or_default();
            if conn.connected {
                for sub in &open.subscriptions {
                    let _ = conn
                        .handle
                        .outgoing
                        .try_send(Outgoing::Text(ClientMessage::close(sub.clone()).as_json()));
                }
                for sub in &open.reconciliations {
                    let close = ClientMessage::NegClose {
                        subscription_id: Cow::Borrowed(sub),
                    };
                    let _ = conn
                        .handle
                        .outgoing
                        .try_send(Outgoing::Text(close.as_json()));
                }
            }
            closing.push(conn.handle.close_and_wait(Duration::from_secs(2)));
        }
        futures_util::future::join_all(closing).await;

        // Saves already issued finish before the state is written.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while !self.saves_in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.done_rx.recv()).await {
                Ok(Some(Done::Stored {
                    seq,
                    ticket,
                    result,
                })) => self.on_stored(seq, ticket, result),
                // Nothing else matters any more.
                Ok(Some(_)) => {}
                _ => {
                    tracing::warn!(
                        left = self.saves_in_flight.len(),
                        "saves still in flight at shutdown"
                    );
                    break;
                }
            }
        }
        tracing::debug!(frames = ?self.intake.tally(), "where the frames went");
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

/// Keeps the driver's connections in step with what the intake hands the
/// engine: a connection is open once `Connected` went in, and gone once it
/// failed or ended.
fn track_connection(conns: &mut HashMap<RelayUrl, Conn>, input: &Input<'_>) {
    match input {
        Input::Connected { relay } => {
            if let Some(conn) = conns.get_mut(*relay) {
                conn.connected = true;
            }
        }
        Input::ConnectFailed { relay, .. } | Input::Disconnected { relay, .. } => {
            conns.remove(*relay);
        }
        _ => {}
    }
}
