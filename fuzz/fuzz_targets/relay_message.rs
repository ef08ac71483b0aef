//! Bytes as relay text frames through sync-io's parsing and event pipeline.
//! The harness lives in `tests/src/fuzzing/` (shared with the workspace
//! regression test `tests/tests/fuzz_regressions.rs`).
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/src/fixtures.rs"]
mod fixtures;
#[allow(dead_code)]
#[path = "../../tests/src/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::relay_message::run(data));
