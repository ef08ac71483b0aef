//! What a relay tells us about its limits (the NIP-11 `limitation` object and
//! `supported_nips`), and the per-relay budget the planner derives from it.

use serde::{Deserialize, Serialize};

/// The subset of a NIP-11 relay information document that planning uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayInfo {
    /// `limitation.max_subscriptions`.
    pub max_subscriptions: Option<u32>,
    /// `limitation.max_filters` (not in NIP-11 proper, but published by some relays).
    pub max_filters: Option<u32>,
    /// `limitation.max_limit`.
    pub max_limit: Option<u32>,
    /// `limitation.max_message_length`.
    pub max_message_length: Option<u32>,
    /// `limitation.max_subid_length`.
    pub max_subid_length: Option<u32>,
    /// `limitation.auth_required`.
    pub auth_required: bool,
    /// `supported_nips`, sorted.
    pub supported_nips: Vec<u16>,
}

/// Why a NIP-11 document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    /// Not JSON, or not an object.
    #[error("relay information document is not a JSON object: {0}")]
    Json(#[from] serde_json::Error),
}

impl RelayInfo {
    /// Reads the fields we use from a NIP-11 JSON document. Unknown fields and
    /// fields of the wrong type are ignored (relays publish all sorts), so only
    /// a document that is not a JSON object at all is an error.
    pub fn from_nip11_json(json: &str) -> Result<RelayInfo, InfoError> {
        let value: serde_json::Value = serde_json::from_str(json)?;
        let Some(obj) = value.as_object() else {
            return Err(InfoError::Json(serde::de::Error::custom("not an object")));
        };
        let lim = obj.get("limitation").and_then(|v| v.as_object());
        let num = |key: &str| -> Option<u32> {
            lim.and_then(|l| l.get(key))
                .and_then(|v| v.as_u64())
                .map(|n| n.min(u64::from(u32::MAX)) as u32)
        };
        let mut supported_nips: Vec<u16> = obj
            .get("supported_nips")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|n| {
                        n.as_u64()
                            .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
                            .and_then(|n| u16::try_from(n).ok())
                    })
                    .collect()
            })
            .unwrap_or_default();
        supported_nips.sort_unstable();
        supported_nips.dedup();
        Ok(RelayInfo {
            max_subscriptions: num("max_subscriptions"),
            max_filters: num("max_filters"),
            max_limit: num("max_limit"),
            max_message_length: num("max_message_length"),
            max_subid_length: num("max_subid_length"),
            auth_required: lim
                .and_then(|l| l.get("auth_required"))
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            supported_nips,
        })
    }

    /// Whether the relay says it supports a NIP.
    pub fn supports(&self, nip: u16) -> bool {
        self.supported_nips.binary_search(&nip).is_ok()
    }
}

/// We never hold more subscriptions on one relay than this, whatever it publishes.
pub const MAX_PUBLISHED_SUBSCRIPTIONS: u32 = 64;

/// Planning limits for one relay: conservative defaults (spec section 6),
/// narrowed by NIP-11 and by what refusals taught us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Concurrent subscriptions (live and historic together).
    pub max_subscriptions: u32,
    /// Filters in one REQ.
    pub max_filters_per_req: u32,
    /// Values in one tag (or `ids`) list of a filter.
    pub max_values_per_filter: u32,
    /// The explicit `limit` of a historic pass's first page; pages that come
    /// back full with new events double it for the next.
    pub page_limit: u32,
    /// The largest `limit` we ever ask for (growing pages and doubling on a
    /// one-second page stop here).
    pub max_page_limit: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_subscriptions: 10,
            max_filters_per_req: 10,
            max_values_per_filter: 100,
            page_limit: 500,
            max_page_limit: 4000,
        }
    }
}

impl Budget {
    /// The budget for a relay: `defaults`, narrowed by its NIP-11 document and
    /// by a learned subscription cap. Every field is at least 1.
    pub fn derive(
        defaults: &Budget,
        info: Option<&RelayInfo>,
        learned_max_subs: Option<u32>,
    ) -> Budget {
        let mut b = *defaults;
        if let Some(info) = info {
            if let Some(n) = info.max_subscriptions.filter(|n| *n > 0) {
                // A published limit replaces the conservative default, within reason.
                b.max_subscriptions = n.min(MAX_PUBLISHED_SUBSCRIPTIONS);
            }
            if let Some(n) = info.max_filters.filter(|n| *n > 0) {
                b.max_filters_per_req = b.max_filters_per_req.min(n);
            }
            if let Some(n) = info.max_limit.filter(|n| *n > 0) {
                b.page_limit = b.page_limit.min(n);
                b.max_page_limit = n;
            }
            if let Some(len) = info.max_message_length.filter(|n| *n > 0) {
                // A value costs at most ~100 bytes in JSON (a coordinate with a
                // long d-tag); keep a whole REQ under the relay's frame limit.
                let room = len.saturating_sub(512) / 100;
                let per_filter = (room / b.max_filters_per_req.max(1)).max(1);
                b.max_values_per_filter = b.max_values_per_filter.min(per_filter);
                if room < b.max_filters_per_req {
                    b.max_filters_per_req = room.max(1);
                }
            }
        }
        if let Some(n) = learned_max_subs {
            b.max_subscriptions = b.max_subscriptions.min(n);
        }
        b.max_subscriptions = b.max_subscriptions.max(1);
        b.max_filters_per_req = b.max_filters_per_req.max(1);
        b.max_values_per_filter = b.max_values_per_filter.max(1);
        b.page_limit = b.page_limit.max(1);
        b.max_page_limit = b.max_page_limit.max(b.page_limit);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limitation_and_nips() {
        let doc = r#"{"name":"x","supported_nips":[1,"11",77,1],
            "limitation":{"max_subscriptions":3,"max_limit":200,"auth_required":true,"max_message_length":"big"}}"#;
        let info = RelayInfo::from_nip11_json(doc).unwrap();
        assert_eq!(info.max_subscriptions, Some(3));
        assert_eq!(info.max_limit, Some(200));
        assert_eq!(info.max_message_length, None);
        assert!(info.auth_required);
        assert_eq!(info.supported_nips, vec![1, 11, 77]);
        assert!(info.supports(77));
    }

    #[test]
    fn rejects_non_objects() {
        assert!(RelayInfo::from_nip11_json("[1]").is_err());
        assert!(RelayInfo::from_nip11_json("nope").is_err());
        assert_eq!(
            RelayInfo::from_nip11_json("{}").unwrap(),
            RelayInfo::default()
        );
    }

    #[test]
    fn budget_narrows() {
        let info = RelayInfo {
            max_subscriptions: Some(3),
            max_limit: Some(100),
            ..RelayInfo::default()
        };
        let b = Budget::derive(&Budget::default(), Some(&info), None);
        assert_eq!(b.max_subscriptions, 3);
        assert_eq!(b.page_limit, 100);
        assert_eq!(b.max_page_limit, 100);
        let b = Budget::derive(&Budget::default(), Some(&info), Some(2));
        assert_eq!(b.max_subscriptions, 2);
        let small = RelayInfo {
            max_message_length: Some(4096),
            ..RelayInfo::default()
        };
        let b = Budget::derive(&Budget::default(), Some(&small), None);
        assert!(b.max_filters_per_req * b.max_values_per_filter * 100 <= 4096);
    }
}
