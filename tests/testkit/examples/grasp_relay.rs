//! A GRASP relay on `nostr-relay-builder` 0.44 that embeds grasp-sync, in
//! one process: its write policy is the GRASP acceptance rule, and every
//! repository it hosts (announced on it, or found on its bootstrap relays)
//! is kept in sync, history then live, from the relays its announcement
//! lists, straight into the relay's own database. Its users see synced
//! events live like any other.
//!
//! ```sh
//! cargo run -p grasp-sync-testkit --example grasp_relay -- 7777 ws://127.0.0.1:4242
//! ```
//!
//! (serves `ws://127.0.0.1:7777` as the service `127.0.0.1:7777`; the
//! other arguments are bootstrap relays). The integration test
//! `tests/tests/embed.rs` starts it in-process through [`start`].
//!
//! The sync glue is every line marked `// sync`: 11 lines (the builder,
//! the write policy, the store that notifies the relay's subscribers, the
//! handle, start and shutdown); the rest is the relay itself.

use std::error::Error;

use grasp_sync_io::core::{RelayUrl, ServiceId};
use grasp_sync_io::runner::shutdown_signal;
use grasp_sync_io::store::database::DatabaseStore044;
use grasp_sync_io::{Runner, RunnerBuilder, RunnerError, RunnerHandle};
use nostr_relay_builder::prelude::{
    LocalRelay, MemoryDatabase, MemoryDatabaseOptions, RelayBuilder,
};

/// The relay and the sync inside it.
pub struct GraspRelay {
    /// The relay (nostr-relay-builder).
    pub relay: LocalRelay,
    /// The sync.
    pub sync: RunnerHandle, // sync
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
}

/// Serves `127.0.0.1:port` and starts `sync` (a builder for the service
/// `127.0.0.1:port`) into the relay's database.
pub async fn start(port: u16, sync: RunnerBuilder) -> Result<GraspRelay, Box<dyn Error>> {
    // In production: nostr-lmdb 0.44 (`NostrLMDB::open(path)`), the same way.
    let database = MemoryDatabase::with_opts(MemoryDatabaseOptions {
        events: true,
        max_events: None,
    });
    let builder = RelayBuilder::default()
        .port(port)
        .database(database.clone());
    // The write policy: the GRASP acceptance rule, and the announcements,
    // roots and deletions users publish here go to the sync.
    let relay = LocalRelay::new(builder.write_policy(sync.admission())); // sync

    // The store: the relay's database; its subscribers see synced events.
    let notify = relay.clone(); // sync
    let store = DatabaseStore044::new(database); // sync
    let store = store.on_stored(move |e| notify.notify_event(e.clone())); // sync
    let sync = sync.start(store).await?; // sync
    relay.run().await?;
    let url = relay.url().await.to_string();
    Ok(GraspRelay { relay, sync, url })
}

impl GraspRelay {
    /// Stops the relay, then the sync (in-flight saves finish, state saved).
    pub async fn shutdown(self) -> Result<(), RunnerError> {
        self.relay.shutdown();
        self.sync.shutdown().await // sync
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().as_deref().unwrap_or("7777").parse()?;
    let service = ServiceId::parse(&format!("127.0.0.1:{port}"))?; // sync
    let bootstrap: Vec<RelayUrl> = args.map(|r| r.parse()).collect::<Result<_, _>>()?; // sync

    // Loopback peers: allow private addresses (refused by default).
    let sync = Runner::builder(service).allow_private(true); // sync
    let sync = sync.bootstrap_relays(bootstrap); // sync
    let relay = start(port, sync).await?;
    println!("GRASP relay on {}; Ctrl-C stops it", relay.url);
    shutdown_signal().await;
    Ok(relay.shutdown().await?)
}
