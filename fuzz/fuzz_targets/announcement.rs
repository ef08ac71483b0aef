//! Bytes as an event JSON (or lines of relay and clone URLs) through URL
//! normalisation, announcement parsing and the engine's announcement input.
//! The harness lives in `tests/src/fuzzing/` (shared with the workspace
//! regression test `tests/tests/fuzz_regressions.rs`).
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/src/fixtures.rs"]
mod fixtures;
#[allow(dead_code)]
#[path = "../../tests/src/fuzzing/mod.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::announcement::run(data));
