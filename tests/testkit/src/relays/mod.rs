//! Real relays on 127.0.0.1 for integration tests that run the sync over
//! real websockets: the rust-nostr `LocalRelay` in process ([`local`]), the
//! PyPI `nostr-relay` ([`python`]) and nostr-rs-relay ([`nostr_rs`]) as
//! child processes, and a scripted misbehaving relay ([`hostile`]); plus
//! the raw NIP-01 client they share ([`client`]) and what the child-process
//! relays share: finding or installing them ([`install`]) and running them.
//!
//! Every harness binds 127.0.0.1 only, is stopped or killed on drop, and
//! offers `url()`, `publish(&[Event])` (waits for every `OK`; panics on a
//! refusal other than `duplicate:`), `fetch(&[Filter])` (one REQ up to
//! `EOSE`) and, for the real relays, `count(Filter)` and `missing(&ids)`.

pub mod client;
pub mod hostile;
pub mod install;
pub mod local;
pub mod nostr_rs;
mod process;
pub mod python;

use std::future::Future;
use std::time::Duration;

pub use client::{PublishReport, RelayClient};
pub use hostile::{HostileBuilder, HostileRelay, ReqRecord};
pub use local::{LocalOptions, LocalRelayHarness};
pub use nostr_rs::NostrRsRelayHarness;
pub use python::{PythonOptions, PythonRelay};

/// What every harness has in common (handy for helpers over mixed peers).
pub trait TestRelay {
    /// `ws://127.0.0.1:PORT`.
    fn url(&self) -> String;
    /// The port on 127.0.0.1.
    fn port(&self) -> u16;
}

impl TestRelay for LocalRelayHarness {
    fn url(&self) -> String {
        LocalRelayHarness::url(self)
    }
    fn port(&self) -> u16 {
        LocalRelayHarness::port(self)
    }
}

impl TestRelay for PythonRelay {
    fn url(&self) -> String {
        PythonRelay::url(self)
    }
    fn port(&self) -> u16 {
        PythonRelay::port(self)
    }
}

impl TestRelay for NostrRsRelayHarness {
    fn url(&self) -> String {
        NostrRsRelayHarness::url(self)
    }
    fn port(&self) -> u16 {
        NostrRsRelayHarness::port(self)
    }
}

impl TestRelay for HostileRelay {
    fn url(&self) -> String {
        HostileRelay::url(self)
    }
    fn port(&self) -> u16 {
        HostileRelay::port(self)
    }
}

/// Polls `check` every 50 ms until it returns true; panics with `what` after
/// `timeout`. For "eventually the store holds everything" assertions.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
