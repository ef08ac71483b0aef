//! # grasp-sync-io
//!
//! The I/O shell around [`grasp_sync_core::Engine`]. The [`Runner`] owns one
//! engine and carries out its commands over real websockets
//! (tokio-tungstenite, `ws://` and `wss://` with rustls), verifies every
//! event that comes back, hands accepted events to an [`EventStore`] and
//! feeds the results to the engine as inputs.
//!
//! Module map:
//! - [`net`]: address policy, DNS resolution and websocket connect;
//! - [`nip11`]: the relay information document over HTTP;
//! - [`connection`]: one task per relay connection (framing, keepalive,
//!   per-relay backpressure);
//! - [`intake`]: the event path as a sans-IO state machine (reordering,
//!   verification jobs, seen ids, acceptance, store outcomes, the
//!   bookkeeping of what is open on each connection), driven by the runner
//!   and by the `relay_message` fuzz harness alike;
//! - [`pipeline`]: the intake's pieces (seen-id cache, reorder buffer,
//!   verification jobs) and the verifier thread pool;
//! - [`store`]: the [`EventStore`] trait, the embedded LMDB store, the
//!   local-relay sink, and the store over a rust-nostr database (a relay
//!   that embeds the sync);
//! - [`compat`]: events of the host's `nostr` version ([`compat::ToSyncEvent`];
//!   `nostr` 0.44 ⇄ 0.45 with the `nostr-044` feature);
//! - [`persist`]: atomic snapshot files;
//! - [`metrics`]: the Prometheus endpoint;
//! - [`runner`]: the driver loop that ties them together (I/O only), the
//!   [`RunnerBuilder`], and the service relay's [`Admission`].
//!
//! # Cargo features
//!
//! | feature | adds |
//! |---|---|
//! | `nostr-044` | `store::database::DatabaseStore044` over any `nostr-database` 0.44 database, `compat::v044` conversions; brings `nostr` 0.44 |
//! | `relay-builder-044` | [`Admission`] as a `nostr-relay-builder` 0.44 `WritePolicy` (implies `nostr-044`) |
//!
//! Without them the crate uses one `nostr`, 0.45 (re-exported as [`nostr`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod compat;
pub mod config;
pub mod connection;
pub mod intake;
pub mod metrics;
pub mod net;
pub mod nip11;
pub mod persist;
pub mod pipeline;
pub mod runner;
pub mod store;

pub use config::IoConfig;
/// The engine this shell runs.
pub use grasp_sync_core as core;
/// The `nostr` crate of the engine and of this shell (0.45; the same as
/// `grasp_sync_core::nostr`).
pub use nostr;

pub use runner::{
    Activity, Admission, AdmissionError, CatalogLoad, Runner, RunnerBuilder, RunnerError,
    RunnerHandle,
};
pub use store::{EventStore, StoreError};
