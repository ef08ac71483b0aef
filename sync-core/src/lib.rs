//! # grasp-sync-core
//!
//! A pure, deterministic, sans-IO state machine for GRASP-02 proactive sync:
//! it decides which relays to connect to and which NIP-01 subscriptions to
//! hold on each, so that a GRASP relay fetches (and keeps fetching) every
//! event about the NIP-34 repositories it hosts.
//!
//! The engine does no I/O, reads no clock and draws no OS randomness. Inputs
//! ([`Input`]) go in with the current time; commands ([`Command`]) come out.
//! The same inputs at the same times give the same commands, byte for byte.
//! See [`Engine`] for the driving contract.
//!
//! ```
//! use grasp_sync_core::{Command, Config, Engine, Input, RelayUrl, ServiceId, Time};
//!
//! let mut config = Config::new(ServiceId::parse("git.example.com").unwrap());
//! config.bootstrap.push(RelayUrl::parse("wss://relay.example.org").unwrap());
//! let mut engine = Engine::new(config);
//! engine.handle_input(Time::from_secs(1_700_000_000), Input::Tick);
//! let mut commands = Vec::new();
//! while let Some(c) = engine.poll_command() {
//!     commands.push(c);
//! }
//! assert!(matches!(commands.last(), Some(Command::Connect { .. })));
//! ```
//!
//! # Module map
//!
//! | module | owns |
//! |---|---|
//! | [`engine`] | the [`Engine`]: routes inputs, turns catalog changes into relay targets, fires timers |
//! | [`command`] | the vocabulary with the host: [`Input`], [`Command`], [`EventCheck`], [`StoreOutcome`] |
//! | [`catalog`] | tracked repos, root events and deletions, and which relay carries what |
//! | [`announcement`] | reading a kind-30617 announcement into relays (guard rails included) |
//! | [`acceptance`] | the GRASP acceptance rule for the service's store |
//! | [`relay`] | one remote relay: its connection, targets, historic and live subscriptions, NIP-77, refusals, AUTH |
//! | [`paging`] | pagination of one historic filter with `limit` and `until` |
//! | [`nip77`] | the negentropy initiator, id fetches and rejected ids |
//! | [`filters`] | the filters of each layer, and matching events against them |
//! | [`info`] | NIP-11 limits and the budget derived from them |
//! | [`backoff`] | the one exponential backoff formula, and reconnect bookkeeping |
//! | [`status`], [`snapshot`] | what the operator sees, and what survives a restart |
//! | [`config`], [`types`], [`url`], [`rng`] | configuration, keys and time, relay URLs, seeded jitter |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acceptance;
pub mod announcement;
pub mod backoff;
pub mod catalog;
pub mod command;
pub mod config;
pub mod engine;
pub mod filters;
pub mod info;
pub mod nip77;
pub mod paging;
pub mod relay;
pub mod rng;
pub mod snapshot;
pub mod status;
#[cfg(test)]
mod testutil;
pub mod types;
pub mod url;

/// The README's examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The `nostr` crate this engine's types come from (0.45): use it for the
/// [`Event`](nostr::event::Event), [`Filter`](nostr::filter::Filter) and id
/// types you hand the engine, so that your versions always agree.
pub use nostr;

pub use acceptance::{check_acceptance, AcceptanceContext, Verdict};
pub use command::{Command, EventCheck, Input, StoreOutcome, SubscriptionMode};
pub use config::{Config, Timing};
pub use engine::Engine;
pub use info::{Budget, RelayInfo};
pub use nip77::{LocalItem, Nip77Support};
pub use relay::{GiveUpReason, RefusalReason, RelayState, RelayStats, RelayTimer};
pub use snapshot::{Snapshot, SnapshotError};
pub use status::{RelayStatus, Status};
pub use types::{is_catalog_kind, Layer, RepoCoord, TargetKey, Time};
pub use url::{RelayUrl, ServiceId};
