//! Real relays on 127.0.0.1 for integration tests that run the sync over
//! real websockets: the rust-nostr `LocalRelay` in process ([`local`]), the
//! PyPI `nostr-relay` as a child process ([`python`]), and a scripted
//! misbehaving relay ([`hostile`]); plus the raw NIP-01 client they share
//! ([`client`]).
//!
//! Every harness binds 127.0.0.1 only, is stopped or killed on drop, and
//! offers `url()`, `publish(&[Event])` (waits for every `OK`; panics on a
//! refusal other than `duplicate:`), `fetch(&[Filter])` (one REQ up to
//! `EOSE`) and, for the real relays, `count(Filter)` and `missing(&ids)`.

pub mod client;
pub mod hostile;
pub mod local;
pub mod python;

pub use client::{PublishReport, RelayClient};
pub use hostile::{HostileBuilder, HostileRelay, ReqRecord};
pub use local::{LocalOptions, LocalRelayHarness};
pub use python::{PythonOptions, PythonRelay};
