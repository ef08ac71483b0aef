//! Regression tests for section 10 of the behaviour contract
//! (`/work/shared/spec/grasp-02-sync.md`, "Never again"): one test (or a
//! small family sharing a prefix) per fault seen in the existing
//! implementation that concerns the core engine.
//!
//! Everything runs in virtual time through [`Driver`] or
//! [`Engine::handle_input`] with explicit [`Time`]s, and every assertion is
//! on concrete commands (relay, subscription id, filter JSON), on the
//! engine's target views, on [`Engine::next_wakeup`] or on [`Engine::status`].
//!
//! Items that do not concern the core:
//!
//! * Item 1 ("a wait that holds the one lock the waker needs") and item 2
//!   ("network I/O while holding global state") are about the shell that
//!   owns sockets, tasks and locks. The core owns no lock, no socket and no
//!   clock, so the only meaningful core checks are that a wait is a deadline
//!   ([`Engine::next_wakeup`]) rather than a blocking call, that one relay's
//!   wait never holds up another relay, and that the engine is a plain,
//!   synchronous, `Send` value whose only output is its command queue. Lock
//!   discipline around the engine (never `await` while holding it, never do
//!   network I/O under it) must be tested in the shell (`sync-io`).
//! * Items 9 and 10 (negentropy disabled forever because rejected events
//!   counted as missing; negentropy against an empty local set) concern
//!   NIP-77 reconciliation: their tests are in `never_again_nip77.rs`, with
//!   a relay that reconciles played by hand.

mod items_01_08;
mod items_11_12;
mod items_13_15;
mod support;
