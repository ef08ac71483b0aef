//! nostr-rs-relay 0.8.12 as a child process on 127.0.0.1: finding or
//! installing it, writing its configuration, starting it, and killing it.
//!
//! The executable comes from `GRASP_SYNC_NOSTR_RS_RELAY` when set (it must
//! exist), else from
//! `<workspace>/target/test-relays/nostr-rs-relay/bin/nostr-rs-relay`, which
//! is installed there on first use with `cargo install nostr-rs-relay
//! --version 0.8.12 --root DIR` under a lock directory, so parallel
//! tests do not race. That build takes 10–13 minutes on two cores and needs
//! `protoc`; an installation that fails panics with the reason: the tests
//! are never skipped silently. `.ci/run` installs into the same place
//! before the tests run.
//!
//! Every instance gets its own temporary directory with a `config.toml`
//! (bind `127.0.0.1:PORT`, sqlite database in that directory, event and
//! frame sizes of 1–2 MiB, no rate limits), the database and `relay.log`.
//!
//! What the tests rely on (and the engine must survive), observed on this
//! version: each filter of a REQ is its own query with no cap on `limit`
//! (no `limit`: everything), so an event matching two filters comes twice;
//! `until` is inclusive; a REQ identical to an open subscription is ignored
//! silently; a REQ whose filters all say `limit: 0` never gets `EOSE`; the
//! 33rd subscription of a connection gets a `NOTICE`; NIP-11 lists no limit
//! numbers; no NIP-77.

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

/// Environment variable naming the `nostr-rs-relay` executable to use.
pub const ENV_BINARY: &str = "GRASP_SYNC_NOSTR_RS_RELAY";
/// The crates.io version installed when none is found.
pub const VERSION: &str = "0.8.12";

/// Where the relay is installed when [`ENV_BINARY`] is not set:
/// `<workspace>/target/test-relays/nostr-rs-relay` (the executable is
/// `bin/nostr-rs-relay` in it).
pub fn default_install_dir() -> PathBuf {
    install::test_relays_dir().join("nostr-rs-relay")
}

/// The executable if it is there without installing anything: from
/// [`ENV_BINARY`] when set and existing, else from the default install
/// directory when its install finished. For benches, which skip what is
/// not installed instead of building it for minutes.
pub fn installed_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(ENV_BINARY) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let dir = default_install_dir();
    let bin = dir.join("bin/nostr-rs-relay");
    (dir.join(install::INSTALLED_MARKER).is_file() && bin.is_file()).then_some(bin)
}

/// The `nostr-rs-relay` executable: from [`ENV_BINARY`], else the default
/// install directory, installing it there first when missing. Blocking (the
/// install takes minutes); the answer is cached for the process. Panics
/// with the reason when it cannot be found or installed.
pub fn nostr_rs_relay_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            install::find_or_install(&InstallSpec {
                what: "nostr-rs-relay 0.8.12",
                env_var: ENV_BINARY,
                dir: default_install_dir(),
                binary: "bin/nostr-rs-relay",
                version: VERSION,
                // The build alone takes up to 13 minutes on two cores.
                lock_stale_after: Duration::from_secs(45 * 60),
                install: cargo_install,
                by_hand: format!(
                    "Install it by hand (it needs protoc: apt-get install -y protobuf-compiler; \
                     then cargo install nostr-rs-relay --version {VERSION} --root DIR) \
                     and set {ENV_BINARY}=DIR/bin/nostr-rs-relay"
                ),
            })
        })
        .clone()
}

fn cargo_install(dir: &Path) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    install::run(
        Command::new(cargo)
            .args(["install", "nostr-rs-relay", "--version", VERSION])
            // Not `--locked`: its lock file pins `time` 0.3.25, which
            // today's rustc no longer compiles.
            .args(["--quiet", "--root"])
            .arg(dir)
            // A `cargo test` holds the lock on its target directory while
            // the tests run: building into it would wait forever.
            .env_remove("CARGO_TARGET_DIR"),
    )
}

/// A running (or stopped) nostr-rs-relay bound to `127.0.0.1:port`, with
/// its sqlite database in a temporary directory. Killed on drop.
#[derive(Debug)]
pub struct NostrRsRelayHarness {
    process: RelayProcess,
}

impl NostrRsRelayHarness {
    /// Installs the relay if needed, starts it on a free port and waits
    /// until it accepts websockets.
    pub async fn start() -> NostrRsRelayHarness {
        let binary = tokio::task::spawn_blocking(nostr_rs_relay_binary)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let spec = ProcessSpec {
            what: "nostr-rs-relay",
            binary,
            dir_prefix: "grasp-sync-nostr-rs-relay-",
            args: ["--config", "config.toml"].map(OsString::from).to_vec(),
            // Its own levels, whatever the test process's RUST_LOG says (a
            // filter for our crates would silence it): connections and
            // ignored or refused commands, not every stored event.
            envs: vec![(
                "RUST_LOG",
                "nostr_rs_relay=info,nostr_rs_relay::db=warn".to_owned(),
            )],
        };
        let process = RelayProcess::start(spec, |dir, port, name| {
            fs::write(dir.join("config.toml"), config_toml(dir, port, name))
                .expect("write config.toml");
        })
        .await;
        NostrRsRelayHarness { process }
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// The port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// The process id while it runs (benches read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The directory with `config.toml`, the sqlite database and `relay.log`.
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

    /// Publishes over a websocket, waiting for every `OK` (see
    /// [`client::RelayClient::publish`]).
    pub async fn publish(&self, events: &[Event]) -> PublishReport {
        client::publish(&self.url(), events).await
    }

    /// One REQ up to `EOSE` over a websocket.
    pub async fn fetch(&self, filters: &[Filter]) -> Vec<Event> {
        client::fetch(&self.url(), filters).await
    }

    /// Events for `filter` (with an explicit huge `limit`; this relay has
    /// no cap).
    pub async fn count(&self, filter: Filter) -> usize {
        client::count(&self.url(), filter).await
    }

    /// Which of `ids` the relay does not serve.
    pub async fn missing(&self, ids: &BTreeSet<EventId>) -> BTreeSet<EventId> {
        client::missing(&self.url(), ids).await
    }
}

/// The configuration: its defaults (no rate limits, no subscription rate,
/// no kind lists, no NIP-05 checks) except the bind address, the database
/// directory and sizes that fit the tests' events (its default is 128 KiB).
fn config_toml(dir: &Path, port: u16, name: &str) -> String {
    format!(
        r#"[info]
relay_url = "ws://127.0.0.1:{port}/"
name = "{name}"
description = "nostr-rs-relay {VERSION} started by the grasp-sync tests"

[database]
engine = "sqlite"
data_directory = "{data}"

[network]
address = "127.0.0.1"
port = {port}

[limits]
max_event_bytes = 1048576
max_ws_message_bytes = 2097152
max_ws_frame_bytes = 2097152
"#,
        data = dir.display(),
    )
}
