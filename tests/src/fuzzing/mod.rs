//! Fuzz harnesses, one module per cargo-fuzz target under `fuzz/`. Each
//! target's logic lives here only: the fuzz targets include this module by
//! path, and `tests/tests/fuzz_regressions.rs` replays every committed seed
//! and crash file through the same functions under `cargo test`.
//!
//! The modules use only `grasp-sync-core`, `grasp-sync-io`, `nostr`,
//! `arbitrary`, `serde_json` and [`crate::fixtures`], so that the fuzz crate
//! can build them without the rest of this crate.

pub mod announcement;
pub mod engine_inputs;
pub mod oracle;
pub mod relay_message;
