//! Starting and stopping a sync: [`Runner::start`] (or a
//! [`RunnerBuilder`], from [`Runner::builder`]) loads the saved state,
//! starts the metrics endpoint and the store's catalog feed, and spawns the
//! driver, one task that owns the [`Engine`] and is the only place its
//! inputs are fed and its commands carried out; [`RunnerHandle`] asks it
//! for status and shuts it down, and an [`Admission`] lets the service's
//! own relay ask it for the acceptance rule and hand it catalog events.
//!
//! The driver does I/O only: it spawns, sends and selects. Everything slow
//! happens elsewhere and reports back: connection tasks
//! ([`crate::connection`]) over a bounded channel (back-pressure), and the
//! verifier threads ([`crate::pipeline`]), store saves, NIP-11 fetches, item
//! queries and snapshot writes over one completion channel. No lock is held
//! across an await; the engine is never shared.
//!
//! What happens to a relay's frames (reordering, verification jobs, the
//! seen-id cache, acceptance, store outcomes, open-subscription and AUTH
//! bookkeeping) is decided by the sans-IO [`Intake`](crate::intake::Intake);
//! the driver carries out its steps.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use grasp_sync_core::{Engine, RelayUrl, Status, Time, Verdict};
use nostr::event::{Event, EventBuilder, FinalizeEvent, Kind, Tag};
use nostr::key::Keys;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::IoConfig;
use crate::metrics::{self, IoCounters};
use crate::persist;
use crate::store::{EventStore, StoreError};

mod admission;
mod builder;
mod driver;
pub use admission::{Admission, AdmissionError};
pub use builder::RunnerBuilder;
use driver::Driver;

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
    StatusActivity(oneshot::Sender<(Status, Activity)>),
    IoCounters(oneshot::Sender<IoCounters>),
    Activity(oneshot::Sender<Activity>),
    /// The service's relay asks for the acceptance rule; `feed`: an
    /// accepted catalog event goes to the catalog too.
    Admit {
        event: Box<Event>,
        feed: bool,
        reply: oneshot::Sender<Verdict>,
    },
    /// The service's relay stored this event.
    Catalog {
        event: Box<Event>,
        reply: oneshot::Sender<()>,
    },
    Shutdown,
}

/// Where the store's catalog feed stands (the repositories, roots and
/// deletions the service holds, which make the engine's targets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatalogLoad {
    /// The first load is under way (or the store cannot be reached yet).
    Loading,
    /// Everything the store held at start is in the engine.
    Loaded,
    /// The store could not be read.
    Failed(String),
}

/// What the runner is busy with besides the engine's own work: a sync is
/// idle when the engine has nothing pending and this is [`Activity::idle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activity {
    /// Frames, verifications and saves not through the event path yet.
    pub in_flight: usize,
    /// NIP-11 fetches and store item queries under way.
    pub queries: usize,
    /// The store's catalog.
    pub catalog: CatalogLoad,
}

impl Activity {
    /// Nothing under way, and the catalog loaded: what the engine reports
    /// now is all there is to know.
    pub fn idle(&self) -> bool {
        self.in_flight == 0 && self.queries == 0 && self.catalog == CatalogLoad::Loaded
    }
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
            Control::StatusActivity(_) => "StatusActivity",
            Control::IoCounters(_) => "IoCounters",
            Control::Activity(_) => "Activity",
            Control::Admit { .. } => "Admit",
            Control::Catalog { .. } => "Catalog",
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

    /// The engine's status and what the runner is busy with, taken at the
    /// same moment (to decide that a sync is finished); `None` once stopped.
    pub async fn status_and_activity(&self) -> Option<(Status, Activity)> {
        let (tx, rx) = oneshot::channel();
        self.control.send(Control::StatusActivity(tx)).await.ok()?;
        rx.await.ok()
    }

    /// What the runner is busy with (see [`Activity::idle`]); `None` once
    /// stopped.
    pub async fn activity(&self) -> Option<Activity> {
        let (tx, rx) = oneshot::channel();
        self.control.send(Control::Activity(tx)).await.ok()?;
        rx.await.ok()
    }

    /// The service relay's way in: the acceptance rule for its write
    /// policy, and catalog events it stored (see [`Admission`]).
    pub fn admission(&self) -> Admission {
        Admission::new(&self.control)
    }

    /// Tells the engine of an event the service's relay stored (see
    /// [`Admission::catalog_event`]): a repository announced on the
    /// service itself is then synced.
    pub async fn catalog_event(
        &self,
        event: &impl crate::compat::ToSyncEvent,
    ) -> Result<(), AdmissionError> {
        self.admission().catalog_event(event).await
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
        config: IoConfig,
        store: Arc<dyn EventStore>,
    ) -> Result<RunnerHandle, RunnerError> {
        RunnerBuilder::new(config).start_shared(store).await
    }

    async fn spawn(
        mut config: IoConfig,
        store: Arc<dyn EventStore>,
        control_tx: mpsc::Sender<Control>,
        control_rx: mpsc::Receiver<Control>,
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
        let (loaded_tx, loaded_rx) = oneshot::channel();
        let feed_store = Arc::clone(&store);
        tokio::spawn(async move {
            let load = match feed_store.start_catalog_feed(catalog_tx).await {
                Ok(()) => CatalogLoad::Loaded,
                Err(e) => {
                    tracing::error!(error = %e, "store catalog feed failed");
                    CatalogLoad::Failed(e.to_string())
                }
            };
            let _ = loaded_tx.send(load);
        });

        let mut driver = Driver::new(config, engine, store);
        let task = tokio::spawn(async move {
            let result = driver
                .run(control_rx, catalog_rx, loaded_rx, metrics_rx)
                .await;
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
