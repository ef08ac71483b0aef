//! An arbitrary sequence of engine inputs: no panic, no budget exceeded,
//! the same commands on replay.
//! The harness lives in `grasp_sync_sim::fuzzing` (tests/sim/src/fuzzing/,
//! shared with the workspace regression test `tests/tests/fuzz_regressions.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grasp_sync_sim::fuzzing::engine_inputs::run(data));
