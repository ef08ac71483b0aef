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
//! - [`store`]: the [`EventStore`] trait, the embedded LMDB store and the
//!   local-relay sink;
//! - [`persist`]: atomic snapshot files;
//! - [`metrics`]: the Prometheus endpoint;
//! - [`runner`]: the driver loop that ties them together (I/O only).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

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
pub use grasp_sync_core as core;

pub use runner::{Activity, CatalogLoad, Runner, RunnerError, RunnerHandle};
pub use store::{EventStore, StoreError};
