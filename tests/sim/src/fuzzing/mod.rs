//! Fuzz harnesses, one module per cargo-fuzz target under `fuzz/`. Each
//! target's logic lives here only: the fuzz targets call these functions
//! (the fuzz crate depends on this one by path), and
//! `tests/tests/fuzz_regressions.rs` replays every committed seed and crash
//! file through the same functions under `cargo test`.

pub mod announcement;
pub mod engine_inputs;
pub mod oracle;
pub mod relay_message;
