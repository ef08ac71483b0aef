//! Workspace-level test support for grasp-sync: event fixtures, a scripted
//! driver, and a deterministic in-memory simulation world (fake relays,
//! faults, virtual time) that drives the engine to convergence; for the
//! integration tests over real websockets, real signed NIP-34 data
//! ([`signed`]) and real relays on 127.0.0.1 ([`relays`]).

pub mod fixtures;
pub mod fuzzing;
pub mod relays;
pub mod scenario;
pub mod signed;
pub mod sim;
pub mod sync;
