//! # grasp-sync-testkit
//!
//! Real relays on 127.0.0.1 and a harness for the real runner, for the
//! integration tests and for `grasp-sync demo`. Everything binds loopback
//! only; nothing leaves the machine.
//!
//! | module | owns |
//! |---|---|
//! | [`relays`] | rust-nostr's LocalRelay in process, the PyPI `nostr-relay` and nostr-rs-relay as child processes, a scripted hostile relay, and the raw NIP-01 client they share |
//! | [`sync`] | [`sync::SyncUnderTest`]: the runner into a fresh embedded store, with the tests' fast timings ([`sync::test_config`]) |
//!
//! rust-nostr's relay builder brings its own `nostr` (0.44); this crate is
//! the only place it enters the graph. The signed datasets the relays are
//! seeded with come from [`grasp_sync_sim::signed`].

pub mod relays;
pub mod sync;
