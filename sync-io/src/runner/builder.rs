//! [`RunnerBuilder`]: a sync with sensible defaults, for embedding.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use grasp_sync_core::{Config, RelayUrl, ServiceId};
use nostr::key::Keys;
use tokio::sync::mpsc;

use super::{Admission, Control, Runner, RunnerError, RunnerHandle};
use crate::config::IoConfig;
use crate::store::EventStore;

/// Requests queued for the driver (status, admissions) before they wait.
const CONTROL_QUEUE: usize = 64;

/// Builds and starts a [`Runner`]: from [`Runner::builder`] (the defaults
/// of [`Config::new`] and [`IoConfig::new`]) or [`RunnerBuilder::new`] (a
/// full [`IoConfig`]).
///
/// The defaults: no bootstrap relay (the repositories come from the
/// announcements in the store and those the service admits), the engine's
/// production timings, NIP-77 on, relays on private, loopback and
/// link-local addresses refused (logged at WARN once per relay), no state
/// file (a restart is a full re-sync), no metrics endpoint, no NIP-42 key,
/// one verifier thread per core.
///
/// ```no_run
/// # async fn run(store: impl grasp_sync_io::EventStore) -> Result<(), Box<dyn std::error::Error>> {
/// use grasp_sync_io::core::{RelayUrl, ServiceId};
/// use grasp_sync_io::Runner;
///
/// let sync = Runner::builder(ServiceId::parse("git.example.com")?)
///     .bootstrap(RelayUrl::parse("wss://relay.example.org")?)
///     .state_file("/var/lib/my-relay/grasp-sync.json");
/// let admission = sync.admission(); // for the relay's write policy
/// let handle = sync.start(store).await?;
/// # drop(admission);
/// handle.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RunnerBuilder {
    config: IoConfig,
    control_tx: mpsc::Sender<Control>,
    control_rx: mpsc::Receiver<Control>,
}

impl Runner {
    /// A builder syncing into `service` with the defaults (see
    /// [`RunnerBuilder`]).
    pub fn builder(service: ServiceId) -> RunnerBuilder {
        RunnerBuilder::new(IoConfig::new(Config::new(service)))
    }
}

impl RunnerBuilder {
    /// A builder from a full configuration.
    pub fn new(config: IoConfig) -> Self {
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        RunnerBuilder {
            config,
            control_tx,
            control_rx,
        }
    }

    /// Adds a bootstrap relay: always connected and asked for the
    /// announcements that list the service.
    pub fn bootstrap(mut self, relay: RelayUrl) -> Self {
        if !self.config.engine.bootstrap.contains(&relay) {
            self.config.engine.bootstrap.push(relay);
        }
        self
    }

    /// Adds bootstrap relays (see [`RunnerBuilder::bootstrap`]).
    pub fn bootstrap_relays(self, relays: impl IntoIterator<Item = RelayUrl>) -> Self {
        relays.into_iter().fold(self, RunnerBuilder::bootstrap)
    }

    /// Allows relays on loopback, private and link-local addresses (tests,
    /// a private network). The one setting for it: the engine's
    /// [`Config::allow_private`], which the connections read too.
    pub fn allow_private(mut self, allow: bool) -> Self {
        self.config.engine.allow_private = allow;
        self
    }

    /// Archive mode: track every announcement, not only those that list
    /// the service.
    pub fn archive(mut self, archive: bool) -> Self {
        self.config.engine.archive = archive;
        self
    }

    /// Saves the engine's state to `path` (atomically, every 30 s and at
    /// shutdown) and resumes from it at start: a restart is then a quick
    /// reconnect, not a full re-sync.
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.state_file = Some(path.into());
        self
    }

    /// Serves Prometheus metrics on `addr` (`http://ADDR/metrics`).
    pub fn metrics(mut self, addr: SocketAddr) -> Self {
        self.config.metrics_addr = Some(addr);
        self
    }

    /// Answers NIP-42 AUTH challenges with `keys`.
    pub fn auth_keys(mut self, keys: Keys) -> Self {
        self.config.auth_keys = Some(keys);
        self
    }

    /// Edits any other engine setting (timings, guard rails, NIP-77).
    pub fn engine(mut self, edit: impl FnOnce(&mut Config)) -> Self {
        edit(&mut self.config.engine);
        self
    }

    /// Edits any other shell setting (network limits, verifier threads).
    pub fn io(mut self, edit: impl FnOnce(&mut IoConfig)) -> Self {
        edit(&mut self.config);
        self
    }

    /// The configuration as it stands.
    pub fn config(&self) -> &IoConfig {
        &self.config
    }

    /// The service relay's way in (see [`Admission`]). Taken before
    /// [`RunnerBuilder::start`] so that the relay's write policy can be
    /// built before the store that notifies the relay; its requests wait
    /// until the runner starts, and fail once it stopped or when the
    /// builder is dropped unstarted.
    pub fn admission(&self) -> Admission {
        Admission::new(&self.control_tx)
    }

    /// Starts syncing into `store` (see [`Runner::start`]).
    pub async fn start(self, store: impl EventStore) -> Result<RunnerHandle, RunnerError> {
        self.start_shared(Arc::new(store)).await
    }

    /// [`RunnerBuilder::start`] with a store the caller keeps a handle to.
    pub async fn start_shared(
        self,
        store: Arc<dyn EventStore>,
    ) -> Result<RunnerHandle, RunnerError> {
        Runner::spawn(self.config, store, self.control_tx, self.control_rx).await
    }
}
