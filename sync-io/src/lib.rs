//! # grasp-sync-io
//!
//! The I/O shell around [`grasp_sync_core::Engine`]: it will carry out the
//! engine's commands over real websockets (tokio-tungstenite), verify every
//! event that comes back, hand accepted events to a store and feed the
//! results to the engine as inputs.
//!
//! This crate is deliberately empty until that work lands: the engine and its
//! driving contract are complete in `grasp-sync-core`, and this crate only
//! re-exports them so that dependants can already name one crate.
#![forbid(unsafe_code)]

pub use grasp_sync_core as core;
