//! Bytes as relay text frames through sync-io's parsing and event path (the
//! runner's own `Intake`).
//! The harness lives in `grasp_sync_sim::fuzzing` (tests/sim/src/fuzzing/,
//! shared with the workspace regression test `tests/tests/fuzz_regressions.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grasp_sync_sim::fuzzing::relay_message::run(data));
