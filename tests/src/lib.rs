//! Workspace-level test support for grasp-sync: event fixtures, a scripted
//! driver, and a deterministic in-memory simulation world (fake relays,
//! faults, virtual time) that drives the engine to convergence.

pub mod fixtures;
pub mod scenario;
pub mod sim;
