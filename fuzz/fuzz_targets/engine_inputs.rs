//! An arbitrary sequence of engine inputs: no panic, no budget exceeded,
//! the same commands on replay.
//! The harness lives in `tests/src/fuzzing/` (shared with the workspace
//! regression test `tests/tests/fuzz_regressions.rs`).
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/src/fixtures.rs"]
mod fixtures;
#[allow(dead_code)]
#[path = "../../tests/src/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::engine_inputs::run(data));
