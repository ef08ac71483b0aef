//! A relay running as a child process on 127.0.0.1, shared by the PyPI
//! `nostr-relay` and nostr-rs-relay harnesses: its temporary directory
//! (configuration, database, `relay.log`), choosing a free port, starting
//! it, waiting until *our* process serves websockets there, stopping and
//! restarting it on the same port and database, and killing it on drop.
//!
//! Another process may take the chosen port between the check and the
//! relay's bind: the relay then exits and another port is tried. A server
//! that is not ours answering on the port is told apart by the unique name
//! the relay publishes in its NIP-11 document.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::client::{self, RelayClient};

/// How long a relay may take to serve after its start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Ports tried before giving up.
const PORT_ATTEMPTS: u32 = 5;

/// How to start one relay process.
pub(crate) struct ProcessSpec {
    /// What the messages call it ("the python relay").
    pub what: &'static str,
    /// The executable.
    pub binary: PathBuf,
    /// Prefix of the temporary directory's name.
    pub dir_prefix: &'static str,
    /// Arguments, run with the temporary directory as working directory.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub envs: Vec<(&'static str, String)>,
}

/// A running (or stopped) relay process; killed on drop.
pub(crate) struct RelayProcess {
    spec: ProcessSpec,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// The unique name it publishes in NIP-11, to recognise it on the port.
    name: String,
}

impl std::fmt::Debug for RelayProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayProcess")
            .field("what", &self.spec.what)
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl RelayProcess {
    /// Starts the relay on a free port and waits until it accepts
    /// websockets. `write_config(dir, port, name)` writes its configuration
    /// into `dir` for that port, publishing `name` in its NIP-11 document;
    /// it is called again for every port tried. Panics with the relay's log
    /// when it does not come up.
    pub(crate) async fn start(
        spec: ProcessSpec,
        mut write_config: impl FnMut(&Path, u16, &str),
    ) -> RelayProcess {
        let dir = tempfile::Builder::new()
            .prefix(spec.dir_prefix)
            .tempdir()
            .expect("temporary directory");
        let mut relay = RelayProcess {
            spec,
            dir,
            port: 0,
            child: None,
            name: String::new(),
        };
        for attempt in 1..=PORT_ATTEMPTS {
            relay.port = client::free_port();
            relay.name = format!(
                "grasp-sync test relay {}-{}",
                std::process::id(),
                relay.port
            );
            write_config(relay.dir.path(), relay.port, &relay.name);
            relay.spawn();
            match relay.wait_ready().await {
                Ok(()) => return relay,
                Err(e) if attempt < PORT_ATTEMPTS && relay.child.is_none() => {
                    tracing::warn!(
                        "{} on port {}: {e}; another port",
                        relay.spec.what,
                        relay.port
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the last attempt panics")
    }

    /// `ws://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The port (the same across restarts).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The process id while it runs (benches read its CPU time).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The temporary directory.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The relay's output so far.
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
    }

    /// Kills the process (its connections drop; the database stays).
    pub(crate) async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }

    /// Starts the process again on the same port and database, and waits
    /// until it serves (panics with its log after 60 s or if it exits).
    pub(crate) async fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "{} is already running",
            self.spec.what
        );
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
        let binary: &PathBuf = &self.spec.binary;
        let child = Command::new(binary)
            .args(&self.spec.args)
            .envs(self.spec.envs.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        self.child = Some(child);
    }

    /// Waits until our process (its NIP-11 name is checked, so another
    /// server on the port does not count) accepts websockets. On exit the
    /// child is reaped and `self.child` is `None`.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let what = self.spec.what;
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "{what} exited ({status}) before serving on port {}:\n{}",
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
                    "{what} does not serve on {} after {READY_TIMEOUT:?}:\n{}",
                    self.url(),
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
