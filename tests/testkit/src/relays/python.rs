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
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use nostr::event::{Event, EventId};
use nostr::filter::Filter;

use super::client::{self, PublishReport, RelayClient};

/// Environment variable naming the `nostr-relay` executable to use.
pub const ENV_BINARY: &str = "GRASP_SYNC_NOSTR_RELAY";
/// The PyPI version installed when none is found.
pub const VERSION: &str = "1.14";
/// File written into the install directory once `pip install` succeeded.
pub const INSTALLED_MARKER: &str = ".installed";

/// The workspace root (this crate lives in `<workspace>/tests/testkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the testkit crate lives inside the workspace")
        .to_path_buf()
}

/// Where the relay is installed when [`ENV_BINARY`] is not set:
/// `<workspace>/target/test-relays/nostr-relay`.
pub fn default_install_dir() -> PathBuf {
    workspace_root().join("target/test-relays/nostr-relay")
}

/// The `nostr-relay` executable: from [`ENV_BINARY`], else the default
/// install directory, installing it there first when missing. Blocking (the
/// install takes tens of seconds); the answer is cached for the process.
/// Panics with the reason when it cannot be found or installed.
pub fn nostr_relay_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(find_or_install).clone()
}

fn find_or_install() -> PathBuf {
    if let Some(p) = std::env::var_os(ENV_BINARY) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{ENV_BINARY}={} does not name an existing file (unset it to install the PyPI \
             nostr-relay {VERSION} under target/test-relays)",
            p.display()
        );
        return p;
    }
    let dir = default_install_dir();
    let bin = dir.join("bin/nostr-relay");
    let installed = |dir: &Path| dir.join(INSTALLED_MARKER).is_file() && bin.is_file();
    if installed(&dir) {
        return bin;
    }
    let _lock = DirLock::acquire(&dir.with_file_name("nostr-relay.lock"));
    if installed(&dir) {
        return bin;
    }
    if let Err(e) = install(&dir) {
        panic!(
            "the PyPI nostr-relay {VERSION} is needed by these tests and could not be installed \
             into {}: {e}\nInstall it by hand (python3 -m venv DIR && DIR/bin/pip install \
             nostr-relay=={VERSION}) and set {ENV_BINARY}=DIR/bin/nostr-relay",
            dir.display()
        );
    }
    bin
}

fn install(dir: &Path) -> Result<(), String> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("cannot remove a partial install: {e}"))?;
    }
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("cannot create {parent:?}: {e}"))?;
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(dir))?;
    run(Command::new(dir.join("bin/pip"))
        .arg("install")
        .arg("--quiet")
        .arg("--disable-pip-version-check")
        .arg(format!("nostr-relay=={VERSION}")))?;
    if !dir.join("bin/nostr-relay").is_file() {
        return Err("pip succeeded but bin/nostr-relay is missing".to_owned());
    }
    fs::write(dir.join(INSTALLED_MARKER), VERSION).map_err(|e| e.to_string())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let what = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A cross-process lock: a directory that exists while held. A lock older
/// than 15 minutes is considered abandoned.
struct DirLock(PathBuf);

impl DirLock {
    fn acquire(path: &Path) -> DirLock {
        if let Some(parent) = path.parent() {
            let _ = fs::create_dir_all(parent);
        }
        let start = std::time::Instant::now();
        loop {
            match fs::create_dir(path) {
                Ok(()) => return DirLock(path.to_path_buf()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_some_and(|age| age > Duration::from_secs(15 * 60));
                    if stale {
                        let _ = fs::remove_dir(path);
                        continue;
                    }
                    assert!(
                        start.elapsed() < Duration::from_secs(20 * 60),
                        "waited 20 min for the install lock {}",
                        path.display()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("cannot create the install lock {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
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
pub struct PythonRelay {
    dir: tempfile::TempDir,
    port: u16,
    binary: PathBuf,
    child: Option<Child>,
    /// Unique `relay_name`, to recognise our process on the port.
    name: String,
}

impl std::fmt::Debug for PythonRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonRelay")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish()
    }
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
        let dir = tempfile::Builder::new()
            .prefix("grasp-sync-nostr-relay-")
            .tempdir()
            .expect("temporary directory");
        let mut relay = PythonRelay {
            dir,
            port: 0,
            binary,
            child: None,
            name: String::new(),
        };
        // The port may be taken by another process between the check and
        // the relay's bind: the relay then exits, and another port is tried.
        for attempt in 1..=5 {
            relay.port = client::free_port();
            relay.name = format!(
                "grasp-sync test relay {}-{}",
                std::process::id(),
                relay.port
            );
            let config = config_yaml(&options, relay.dir.path(), relay.port, &relay.name);
            fs::write(relay.dir.path().join("config.yaml"), config).expect("write config.yaml");
            relay.spawn();
            match relay.wait_ready().await {
                Ok(()) => return relay,
                Err(e) if attempt < 5 && relay.child.is_none() => {
                    tracing::warn!("python relay on port {}: {e}; another port", relay.port);
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the last attempt panics")
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory with `config.yaml`, `nostr.sqlite3` and `relay.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The relay's output so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
    }

    /// Kills the process (its connections drop; the database stays).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }

    /// Starts the process again on the same port and database, and waits
    /// until it serves (panics with its log after 60 s or if it exits).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the python relay is already running");
        self.spawn();
        if let Err(e) = self.wait_ready().await {
            panic!("{e}");
        }
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("relay.log"))
            .expect("open relay.log");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.path().join("config.yaml"))
            .arg("serve")
            .arg("--use-uvicorn")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// Waits until our process (its NIP-11 name is checked, so another
    /// server on the port does not count) accepts websockets. On exit the
    /// child is reaped and `self.child` is `None`.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "the python relay exited ({status}) before serving on port {}:\n{}",
                    self.port,
                    self.log()
                ));
            }
            let ours = client::nip11(self.port)
                .await
                .is_some_and(|doc| doc.contains(&self.name));
            if ours {
                if let Ok(c) = RelayClient::try_connect(&self.url()).await {
                    c.close().await;
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the python relay does not serve on {} after 60 s:\n{}",
                    self.url(),
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

impl Drop for PythonRelay {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
