//! Bytes as an event JSON (or lines of relay and clone URLs) through URL
//! normalisation, announcement parsing and the engine's announcement input.
//! The harness lives in `grasp_sync_sim::fuzzing` (tests/sim/src/fuzzing/,
//! shared with the workspace regression test `tests/tests/fuzz_regressions.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grasp_sync_sim::fuzzing::announcement::run(data));
