//! # grasp-sync-sim
//!
//! Pure test support for grasp-sync, shared by the integration tests, the
//! benches, the fuzz targets (`fuzz/`) and, for its datasets, the demo.
//! Deterministic and without an async runtime: nothing here opens a socket,
//! reads the clock or draws OS randomness.
//!
//! | module | owns |
//! |---|---|
//! | [`fixtures`] | hand-made NIP-34 events (fake signatures) and engine configurations |
//! | [`signed`] | really signed, deterministic NIP-34 datasets ([`signed::Dataset`]) |
//! | [`sim`] | the simulation world: fake relays, faults, virtual time, invariant checks |
//! | [`scenario`] | seeded random worlds for the simulation, and the shared run-and-assert helpers |
//! | [`fuzzing`] | the fuzz harnesses (one per target under `fuzz/`) and the budget oracle |

pub mod fixtures;
pub mod fuzzing;
pub mod scenario;
pub mod signed;
pub mod sim;
