//! The PyPI `nostr-relay` 1.14 as a child process on 127.0.0.1: finding or
//! installing it, writing its configuration, starting it, and killing it.
//!
//! The executable comes from `GRASP_SYNC_NOSTR_RELAY` when set (it must
//! exist), else from `<workspace>/target/test-relays/nostr-relay/bin/nostr-relay`,
//! which is installed there on first use (`python3 -m venv` + `pip install
//! nostr-relay==1.14`, about 40 s) under a lock directory so parallel tests
//! do not race. An installation that fails panics with the reason: the
//! tests are never skipped silently. `.ci/run` installs into the same place.
//!
//! Every instance gets its own temporary directory with a `config.yaml`
//! (own `max_event_size`, the only validator `nostr_relay.validators.is_signed`,
//! `gunicorn.bind: 127.0.0.1:PORT`), an sqlite database and a log file. It
//! is started as `nostr-relay -c config.yaml serve --use-uvicorn`: one
//! process (gunicorn would fork a worker that outlives a killed master).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use nostr::event::{Event, EventId};
use nostr::filter::Filter;

use super::client::{self, PublishReport};
use super::install::{self, InstallSpec};
use super::process::{ProcessSpec, RelayProcess};

pub use super::install::{workspace_root, INSTALLED_MARKER};

/// Environment variable naming the `nostr-relay` executable to use.
pub const ENV_BINARY: &str = "GRASP_SYNC_NOSTR_RELAY";
/// The PyPI version installed when none is found.
pub const VERSION: &str = "1.14";

/// Where the relay is installed when [`ENV_BINARY`] is not set:
/// `<workspace>/target/test-relays/nostr-relay`.
pub fn default_install_dir() -> PathBuf {
    install::test_relays_dir().join("nostr-relay")
}

/// The `nostr-relay` executable: from [`ENV_BINARY`], else the default
/// install directory, installing it there first when missing. Blocking (the
/// install takes tens of seconds); the answer is cached for the process.
/// Panics with the reason when it cannot be found or installed.
pub fn nostr_relay_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            install::find_or_install(&InstallSpec {
                what: "the PyPI nostr-relay 1.14",
                env_var: ENV_BINARY,
                dir: default_install_dir(),
                binary: "bin/nostr-relay",
                version: VERSION,
                lock_stale_after: Duration::from_secs(15 * 60),
                install: pip_install,
                by_hand: format!(
                    "Install it by hand (python3 -m venv DIR && DIR/bin/pip install \
                     nostr-relay=={VERSION}) and set {ENV_BINARY}=DIR/bin/nostr-relay"
                ),
            })
        })
        .clone()
}

fn pip_install(dir: &Path) -> Result<(), String> {
    install::run(Command::new("python3").arg("-m").arg("venv").arg(dir))?;
    install::run(
        Command::new(dir.join("bin/pip"))
            .arg("install")
            .arg("--quiet")
            .arg("--disable-pip-version-check")
            .arg(format!("nostr-relay=={VERSION}")),
    )
}

/// Knobs of the Python relay's configuration.
#[derive(Clone, Debug)]
pub struct PythonOptions {
    /// Events per REQ without `limit`, and the cap on `limit` (shipped: 6000).
    pub max_limit: usize,
    /// Open subscriptions per connection; one more gets a `NOTICE` (shipped: 32).
    pub subscription_limit: usize,
    /// Longest `content` accepted, in characters (here 1 MiB; shipped: 4096).
    pub max_event_size: usize,
}

impl Default for PythonOptions {
    fn default() -> Self {
        PythonOptions {
            max_limit: 6000,
            subscription_limit: 32,
            max_event_size: 1 << 20,
        }
    }
}

/// A running (or stopped) PyPI `nostr-relay` bound to `127.0.0.1:port`,
/// with its sqlite database in a temporary directory. Killed on drop.
#[derive(Debug)]
pub struct PythonRelay {
    process: RelayProcess,
}

impl PythonRelay {
    /// Installs the relay if needed, starts it with
    /// [`PythonOptions::default`] on a free port and waits until it accepts
    /// websockets.
    pub async fn start() -> PythonRelay {
        Self::start_with(PythonOptions::default()).await
    }

    /// As [`PythonRelay::start`] with `options`.
    pub async fn start_with(options: PythonOptions) -> PythonRelay {
        let binary = tokio::task::spawn_blocking(nostr_relay_binary)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        // `--use-uvicorn`: one process (gunicorn would fork a worker that
        // outlives a killed master).
        let spec = ProcessSpec {
            what: "the python relay",
            binary,
            dir_prefix: "grasp-sync-nostr-relay-",
            args: ["-c", "config.yaml", "serve", "--use-uvicorn"]
                .map(OsString::from)
                .to_vec(),
            envs: Vec::new(),
        };
        let process = RelayProcess::start(spec, |dir, port, name| {
            fs::write(
                dir.join("config.yaml"),
                config_yaml(&options, dir, port, name),
            )
            .expect("write config.yaml");
        })
        .await;
        PythonRelay { process }
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// The port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// The directory with `config.yaml`, `nostr.sqlite3` and `relay.log`.
    pub fn dir(&self) -> &Path {
        self.process.dir()
    }

    /// The relay's output so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Kills the process (its connections drop; the database stays).
    pub async fn stop(&mut self) {
        self.process.stop().await;
    }

    /// Starts the process again on the same port and database, and waits
    /// until it serves (panics with its log after 60 s or if it exits).
    pub async fn start_again(&mut self) {
        self.process.start_again().await;
    }

    /// [`PythonRelay::stop`] then [`PythonRelay::start_again`].
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Publishes over a websocket, waiting for every `OK` (see
    /// [`client::RelayClient::publish`]).
    pub async fn publish(&self, events: &[Event]) -> PublishReport {
        client::publish(&self.url(), events).await
    }

    /// One REQ up to `EOSE` over a websocket (the relay's caps apply).
    pub async fn fetch(&self, filters: &[Filter]) -> Vec<Event> {
        client::fetch(&self.url(), filters).await
    }

    /// Events for `filter` with an explicit huge `limit` (capped by
    /// [`PythonOptions::max_limit`]).
    pub async fn count(&self, filter: Filter) -> usize {
        client::count(&self.url(), filter).await
    }

    /// Which of `ids` the relay does not serve.
    pub async fn missing(&self, ids: &BTreeSet<EventId>) -> BTreeSet<EventId> {
        client::missing(&self.url(), ids).await
    }
}

fn config_yaml(o: &PythonOptions, dir: &Path, port: u16, name: &str) -> String {
    let db = dir.join("nostr.sqlite3");
    format!(
        r#"DEBUG: false
relay_name: "{name}"
relay_description: PyPI nostr-relay {VERSION} started by the grasp-sync tests
max_event_size: {max_event_size}
# Ten years: dataset events are dated 2025.
oldest_event: 315360000
subscription_limit: {subscription_limit}
max_limit: {max_limit}
message_timeout: 1800
storage:
  sqlalchemy.url: sqlite+aiosqlite:///{db}
  num_concurrent_reqs: 10
  num_concurrent_adds: 2
  validators:
    - nostr_relay.validators.is_signed
gunicorn:
  bind: 127.0.0.1:{port}
  workers: 1
  loglevel: warning
  reload: false
verification:
  nip05_verification: disabled
  expiration: 2592000
  update_frequency: 3600
authentication:
  enabled: false
logging:
  version: 1
  formatters:
    simple:
      format: "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
  handlers:
    console:
      class: logging.StreamHandler
      level: WARNING
      formatter: simple
      stream: ext://sys.stdout
  loggers:
    nostr_relay:
      level: WARNING
      handlers: [console]
      propagate: false
  root:
    level: WARNING
    handlers: [console]
"#,
        max_event_size = o.max_event_size,
        subscription_limit = o.subscription_limit,
        max_limit = o.max_limit,
        db = db.display(),
    )
}
