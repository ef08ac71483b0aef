//! `nostr` 0.44 ⇄ 0.45, field by field (feature `nostr-044`).
//!
//! The two versions share the NIP-01 data model, so an event or a filter
//! crosses by copying its fields: ids, public keys and signatures as their
//! bytes, `created_at` and kinds as integers, tags as their strings. Neither
//! a JSON round trip nor a signature check is paid; the copy is exact, so
//! the id and signature that verified in one version verify in the other.
//!
//! [`nostr`] is `nostr` 0.44 itself (the one `nostr-database` 0.44 and
//! `nostr-relay-builder` 0.44 use), for hosts that need to name its types.

use std::collections::{BTreeMap, BTreeSet};

use ::nostr::event::{Event, EventId, Kind, Tag};
use ::nostr::filter::{Filter, SingleLetterTag};
use ::nostr::key::PublicKey;
use ::nostr::types::Timestamp;

use super::{ConvertError, ToSyncEvent};

/// `nostr` 0.44, as `nostr-database` 0.44 re-exports it.
pub use nostr_database_044::nostr;

/// `nostr-database` 0.44.
pub use nostr_database_044 as database;

use nostr_database_044::nostr as old;

/// A `nostr` 0.44 event as the sync's (0.45) [`Event`].
pub fn event_from_044(event: &old::Event) -> Result<Event, ConvertError> {
    let mut tags = Vec::with_capacity(event.tags.len());
    for tag in event.tags.iter() {
        let tag =
            Tag::parse(tag.as_slice().iter().cloned()).map_err(|_| ConvertError::EmptyTag {
                id: event.id.to_hex(),
            })?;
        tags.push(tag);
    }
    Ok(Event::new(
        EventId::from_byte_array(event.id.to_bytes()),
        PublicKey::from_byte_array(event.pubkey.to_bytes()),
        Timestamp::from_secs(event.created_at.as_secs()),
        Kind::from(event.kind.as_u16()),
        tags,
        event.content.clone(),
        ::nostr::event::Signature::from_byte_array(event.sig.serialize()),
    ))
}

/// The sync's (0.45) [`Event`] as a `nostr` 0.44 event.
pub fn event_to_044(event: &Event) -> Result<old::Event, ConvertError> {
    let mut tags = Vec::with_capacity(event.tags.len());
    for tag in event.tags.iter() {
        let tag = old::Tag::parse(tag.as_slice().iter().cloned()).map_err(|_| {
            ConvertError::EmptyTag {
                id: event.id.to_hex(),
            }
        })?;
        tags.push(tag);
    }
    let sig =
        old::secp256k1::schnorr::Signature::from_slice(event.sig.as_bytes()).map_err(|_| {
            ConvertError::Signature {
                id: event.id.to_hex(),
            }
        })?;
    Ok(old::Event::new(
        old::EventId::from_byte_array(event.id.to_bytes()),
        old::PublicKey::from_byte_array(event.pubkey.to_bytes()),
        old::Timestamp::from_secs(event.created_at.as_secs()),
        old::Kind::from(event.kind.as_u16()),
        tags,
        event.content.clone(),
        sig,
    ))
}

/// The sync's (0.45) [`Filter`] as a `nostr` 0.44 filter (every field: ids,
/// authors, kinds, search, since, until, limit and tag queries).
pub fn filter_to_044(filter: &Filter) -> old::Filter {
    let mut generic_tags: BTreeMap<old::SingleLetterTag, BTreeSet<String>> = BTreeMap::new();
    for (letter, values) in &filter.generic_tags {
        // Every single letter exists in both versions.
        if let Ok(letter) = old::SingleLetterTag::from_char(letter.as_char()) {
            generic_tags.insert(letter, values.clone());
        }
    }
    old::Filter {
        ids: filter.ids.as_ref().map(|ids| {
            ids.iter()
                .map(|id| old::EventId::from_byte_array(id.to_bytes()))
                .collect()
        }),
        authors: filter.authors.as_ref().map(|keys| {
            keys.iter()
                .map(|k| old::PublicKey::from_byte_array(k.to_bytes()))
                .collect()
        }),
        kinds: filter
            .kinds
            .as_ref()
            .map(|kinds| kinds.iter().map(|k| old::Kind::from(k.as_u16())).collect()),
        search: filter.search.clone(),
        since: filter.since.map(|t| old::Timestamp::from_secs(t.as_secs())),
        until: filter.until.map(|t| old::Timestamp::from_secs(t.as_secs())),
        limit: filter.limit,
        generic_tags,
    }
}

/// A `nostr` 0.44 filter as the sync's (0.45) [`Filter`].
pub fn filter_from_044(filter: &old::Filter) -> Filter {
    let mut out = Filter::new();
    out.ids = filter.ids.as_ref().map(|ids| {
        ids.iter()
            .map(|id| EventId::from_byte_array(id.to_bytes()))
            .collect()
    });
    out.authors = filter.authors.as_ref().map(|keys| {
        keys.iter()
            .map(|k| PublicKey::from_byte_array(k.to_bytes()))
            .collect()
    });
    out.kinds = filter
        .kinds
        .as_ref()
        .map(|kinds| kinds.iter().map(|k| Kind::from(k.as_u16())).collect());
    out.search = filter.search.clone();
    out.since = filter.since.map(|t| Timestamp::from_secs(t.as_secs()));
    out.until = filter.until.map(|t| Timestamp::from_secs(t.as_secs()));
    out.limit = filter.limit;
    for (letter, values) in &filter.generic_tags {
        if let Ok(letter) = SingleLetterTag::from_char(letter.as_char()) {
            out.generic_tags.insert(letter, values.clone());
        }
    }
    out
}

/// A `nostr` 0.44 event id as the sync's.
pub fn event_id_from_044(id: &old::EventId) -> EventId {
    EventId::from_byte_array(id.to_bytes())
}

impl ToSyncEvent for old::Event {
    fn to_sync_event(&self) -> Result<Event, ConvertError> {
        event_from_044(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::nostr::event::{EventBuilder, FinalizeEvent};
    use ::nostr::key::{Keys, SecretKey};
    use old::JsonUtil as _;

    fn keys() -> Keys {
        Keys::new(SecretKey::from_slice(&[0x21; 32]).unwrap())
    }

    fn sample() -> Event {
        EventBuilder::new(Kind::from(1621u16), "an issue\nwith \"quotes\" and ünïcode")
            .tags([
                Tag::parse(["a", "30617:abc:repo", "wss://relay.example.org"]).unwrap(),
                Tag::parse(["subject", "title"]).unwrap(),
                Tag::parse(["t"]).unwrap(),
                Tag::parse(["x", "", "empty value kept"]).unwrap(),
            ])
            .custom_created_at(Timestamp::from_secs(1_700_000_123))
            .finalize(&keys())
            .unwrap()
    }

    #[test]
    fn events_cross_both_ways_exactly_and_still_verify() {
        let event = sample();
        let old = event_to_044(&event).unwrap();
        // The same event as JSON says: the same id, keys, tags and signature.
        assert_eq!(
            old.as_json(),
            old::Event::from_json(event.as_json()).unwrap().as_json()
        );
        assert!(old.verify().is_ok(), "0.44 verifies the copied signature");
        let back = event_from_044(&old).unwrap();
        assert_eq!(back, event);
        assert!(back.verify().is_ok());
        assert_eq!(old.to_sync_event().unwrap(), event);
        assert_eq!(event_id_from_044(&old.id), event.id);
    }

    #[test]
    fn filters_cross_both_ways_with_every_field() {
        let event = sample();
        let filter = Filter::new()
            .id(event.id)
            .author(event.pubkey)
            .kinds([Kind::from(1621u16), Kind::from(30617u16)])
            .search("words")
            .since(Timestamp::from_secs(10))
            .until(Timestamp::from_secs(20))
            .limit(7)
            .custom_tag(SingleLetterTag::from_char('a').unwrap(), "30617:abc:repo")
            .custom_tag(SingleLetterTag::from_char('E').unwrap(), event.id.to_hex());
        let old = filter_to_044(&filter);
        let json: serde_json::Value = serde_json::from_str(&old.as_json()).unwrap();
        let want: serde_json::Value = serde_json::from_str(&filter.as_json()).unwrap();
        assert_eq!(json, want);
        assert_eq!(filter_from_044(&old), filter);
    }
}
