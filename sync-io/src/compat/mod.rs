//! Events of the nostr version a host works in, handed to the sync.
//!
//! The engine and this shell use `nostr` 0.45 ([`crate::nostr`]). A relay
//! built on an older rust-nostr (today the newest stable
//! `nostr-relay-builder`, 0.44, brings `nostr` 0.44) has events of another
//! type. [`ToSyncEvent`] is what the host-facing calls
//! ([`Admission`](crate::Admission), [`RunnerHandle::catalog_event`](crate::RunnerHandle::catalog_event))
//! take, so the host passes its own events and the conversion happens here.
//!
//! With the `nostr-044` cargo feature, `v044` converts events and filters
//! between `nostr` 0.44 and 0.45 field by field: ids, keys and signatures
//! as bytes, tags as their strings, no JSON round trip and no second
//! signature check (the fields are copied, so an event that verified in
//! one version verifies in the other).

use nostr::event::Event;

#[cfg(feature = "nostr-044")]
pub mod v044;

#[cfg(feature = "relay-builder-044")]
mod relay_builder;

/// An event could not be carried over to the sync's `nostr` version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A tag without any value (no nostr version accepts one).
    #[error("event {id}: empty tag")]
    EmptyTag {
        /// The event's id (hex).
        id: String,
    },
    /// A signature of the wrong length.
    #[error("event {id}: malformed signature")]
    Signature {
        /// The event's id (hex).
        id: String,
    },
}

/// An event the sync can take: the sync's own [`Event`] as it is, or (with
/// the `nostr-044` feature) a `nostr` 0.44 event, converted field by field.
pub trait ToSyncEvent {
    /// The event as the sync's `nostr` type.
    fn to_sync_event(&self) -> Result<Event, ConvertError>;
}

impl ToSyncEvent for Event {
    fn to_sync_event(&self) -> Result<Event, ConvertError> {
        Ok(self.clone())
    }
}

impl<T: ToSyncEvent + ?Sized> ToSyncEvent for &T {
    fn to_sync_event(&self) -> Result<Event, ConvertError> {
        (**self).to_sync_event()
    }
}
