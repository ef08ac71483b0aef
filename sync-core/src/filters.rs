//! The NIP-01 filters of each layer (spec section 3) and how a set of targets
//! of one layer becomes filters. One place decides what is fetched.

use std::collections::BTreeSet;

use nostr::event::Kind;
use nostr::filter::{Filter, SingleLetterTag};
use serde::{Deserialize, Serialize};

use std::str::FromStr;
use std::sync::Arc;

use nostr::event::Event;

use crate::types::{
    parse_event_id, Layer, RepoCoord, TargetKey, KIND_REPO_ANNOUNCEMENT, KIND_REPO_STATE,
};

/// One filter shape of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FilterKind {
    /// L1: `{"kinds":[30617]}`.
    Announcements,
    /// L2: `{"kinds":[30618],"#d":[identifiers]}`.
    RepoState,
    /// L2: `{"#a":[coordinates]}`.
    RepoA,
    /// L2: `{"#A":[coordinates]}`.
    RepoUpperA,
    /// L2: `{"#q":[coordinates]}`.
    RepoQ,
    /// L3: `{"#e":[ids]}`.
    RootE,
    /// L3: `{"#E":[ids]}`.
    RootUpperE,
    /// L3: `{"#q":[ids]}`.
    RootQ,
}

impl FilterKind {
    /// The layer this filter belongs to.
    pub fn layer(self) -> Layer {
        match self {
            FilterKind::Announcements => Layer::Discovery,
            FilterKind::RepoState
            | FilterKind::RepoA
            | FilterKind::RepoUpperA
            | FilterKind::RepoQ => Layer::Repo,
            FilterKind::RootE | FilterKind::RootUpperE | FilterKind::RootQ => Layer::Root,
        }
    }
}

const DISCOVERY_KINDS: &[FilterKind] = &[FilterKind::Announcements];
const REPO_KINDS: &[FilterKind] = &[
    FilterKind::RepoState,
    FilterKind::RepoA,
    FilterKind::RepoUpperA,
    FilterKind::RepoQ,
];
const ROOT_KINDS: &[FilterKind] = &[FilterKind::RootE, FilterKind::RootUpperE, FilterKind::RootQ];

impl Layer {
    /// The filter shapes that together fetch everything of one target of this layer.
    pub fn filter_kinds(self) -> &'static [FilterKind] {
        match self {
            Layer::Discovery => DISCOVERY_KINDS,
            Layer::Repo => REPO_KINDS,
            Layer::Root => ROOT_KINDS,
        }
    }

    /// Targets of this layer that share one filter (discovery has no values).
    pub fn pack_capacity(self, max_values: u32) -> usize {
        match self {
            Layer::Discovery => 1,
            _ => max_values.max(1) as usize,
        }
    }
}

/// The filter of `kind` over `targets` (all of the kind's layer), without
/// paging fields. Values are sorted by `Filter`'s own sets.
pub fn build_filter<'a>(
    kind: FilterKind,
    targets: impl IntoIterator<Item = &'a TargetKey>,
) -> Filter {
    let coords = |targets: &mut dyn Iterator<Item = &'a TargetKey>| -> BTreeSet<String> {
        targets
            .filter_map(|t| match t {
                TargetKey::Repo(c) => Some(c.as_str().to_owned()),
                _ => None,
            })
            .collect()
    };
    let ids = |targets: &mut dyn Iterator<Item = &'a TargetKey>| -> BTreeSet<String> {
        targets
            .filter_map(|t| match t {
                TargetKey::Root(id) => Some(id.to_hex()),
                _ => None,
            })
            .collect()
    };
    let mut it = targets.into_iter();
    match kind {
        FilterKind::Announcements => Filter::new().kind(Kind::Custom(KIND_REPO_ANNOUNCEMENT)),
        FilterKind::RepoState => {
            let ds: BTreeSet<String> = it
                .by_ref()
                .filter_map(|t| match t {
                    TargetKey::Repo(c) => Some(c.identifier.clone()),
                    _ => None,
                })
                .collect();
            Filter::new()
                .kind(Kind::Custom(KIND_REPO_STATE))
                .custom_tags(SingleLetterTag::LOWERCASE_D, ds)
        }
        FilterKind::RepoA => {
            Filter::new().custom_tags(SingleLetterTag::LOWERCASE_A, coords(&mut it))
        }
        FilterKind::RepoUpperA => {
            Filter::new().custom_tags(SingleLetterTag::UPPERCASE_A, coords(&mut it))
        }
        FilterKind::RepoQ => {
            Filter::new().custom_tags(SingleLetterTag::LOWERCASE_Q, coords(&mut it))
        }
        FilterKind::RootE => Filter::new().custom_tags(SingleLetterTag::LOWERCASE_E, ids(&mut it)),
        FilterKind::RootUpperE => {
            Filter::new().custom_tags(SingleLetterTag::UPPERCASE_E, ids(&mut it))
        }
        FilterKind::RootQ => Filter::new().custom_tags(SingleLetterTag::LOWERCASE_Q, ids(&mut it)),
    }
}

/// Whether `event` matches the filter of `kind` over `targets`, ignoring the
/// time bounds and `limit` (paging hints, not acceptance rules). Equivalent to
/// `build_filter(kind, targets).match_event(..)` without building the filter.
pub fn matches(kind: FilterKind, targets: &BTreeSet<TargetKey>, event: &Event) -> bool {
    let tag_values = |name: &'static str| {
        event.tags.iter().filter_map(move |t| match t.as_slice() {
            [k, v, ..] if k == name => Some(v.as_str()),
            _ => None,
        })
    };
    let has_coord = |name: &'static str| {
        tag_values(name).any(|v| {
            RepoCoord::from_str(v).is_ok_and(|c| targets.contains(&TargetKey::Repo(Arc::new(c))))
        })
    };
    let has_root = |name: &'static str| {
        tag_values(name)
            .any(|v| parse_event_id(v).is_some_and(|id| targets.contains(&TargetKey::Root(id))))
    };
    match kind {
        FilterKind::Announcements => event.kind.as_u16() == KIND_REPO_ANNOUNCEMENT,
        FilterKind::RepoState => {
            event.kind.as_u16() == KIND_REPO_STATE
                && tag_values("d").any(|d| {
                    targets
                        .iter()
                        .any(|t| matches!(t, TargetKey::Repo(c) if c.identifier == d))
                })
        }
        FilterKind::RepoA => has_coord("a"),
        FilterKind::RepoUpperA => has_coord("A"),
        FilterKind::RepoQ => has_coord("q"),
        FilterKind::RootE => has_root("e"),
        FilterKind::RootUpperE => has_root("E"),
        FilterKind::RootQ => has_root("q"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::RepoCoord;
    use std::sync::Arc;

    fn coord(d: &str) -> TargetKey {
        let pk = nostr::key::PublicKey::from_hex(
            "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
        )
        .unwrap();
        TargetKey::Repo(Arc::new(RepoCoord::new(pk, d)))
    }

    #[test]
    fn repo_filters_match_the_contract() {
        let ts = [coord("b"), coord("a")];
        let state = build_filter(FilterKind::RepoState, ts.iter()).as_json();
        assert_eq!(state, r##"{"kinds":[30618],"#d":["a","b"]}"##);
        let a = build_filter(FilterKind::RepoA, ts.iter()).as_json();
        assert!(a.starts_with(r##"{"#a":["30617:79be"##), "{a}");
        let q = build_filter(FilterKind::RepoQ, ts.iter()).as_json();
        assert!(q.starts_with(r##"{"#q":["##), "{q}");
        let upper = build_filter(FilterKind::RepoUpperA, ts.iter()).as_json();
        assert!(upper.starts_with(r##"{"#A":["##), "{upper}");
    }

    #[test]
    fn matching_agrees_with_the_built_filter() {
        use crate::testutil::{coord as c, ev, issue};
        use nostr::filter::MatchEventOptions;
        let opts = MatchEventOptions {
            since: false,
            until: false,
            nip50: false,
            ..MatchEventOptions::new()
        };
        let repo = TargetKey::Repo(Arc::new(c(1, "r")));
        let i = issue(5, 10, &c(1, "r"));
        let root = TargetKey::Root(i.id);
        let repos = BTreeSet::from([repo]);
        let roots = BTreeSet::from([root]);
        let events = [
            i.clone(),
            issue(5, 10, &c(1, "other")),
            ev(1, 10, 30618, &[&["d", "r"]]),
            ev(2, 10, 30618, &[&["d", "x"]]),
            ev(3, 10, 30617, &[&["d", "r"]]),
            ev(
                3,
                10,
                1111,
                &[&["A", &c(1, "r").to_string()], &["E", &i.id.to_hex()]],
            ),
            ev(3, 10, 1630, &[&["e", &i.id.to_hex(), "", "root"]]),
            ev(3, 10, 1, &[&["q", &i.id.to_hex()]]),
            ev(3, 10, 1, &[&["q", &c(1, "r").to_string()]]),
            ev(3, 10, 1, &[&["a", "30617:zz:r"]]),
        ];
        for e in &events {
            for layer in [Layer::Discovery, Layer::Repo, Layer::Root] {
                let set = if layer == Layer::Root { &roots } else { &repos };
                for kind in layer.filter_kinds() {
                    let built = build_filter(*kind, set.iter()).match_event(e, opts);
                    assert_eq!(matches(*kind, set, e), built, "{kind:?} {}", e.as_json());
                }
            }
        }
    }

    #[test]
    fn discovery_filter() {
        assert_eq!(
            build_filter(FilterKind::Announcements, [&TargetKey::Discovery]).as_json(),
            r#"{"kinds":[30617]}"#
        );
    }

    #[test]
    fn root_filters() {
        let id = nostr::event::EventId::from_hex(
            "0000000000000000000000000000000000000000000000000000000000000001",
        )
        .unwrap();
        let t = [TargetKey::Root(id)];
        assert_eq!(
            build_filter(FilterKind::RootUpperE, t.iter()).as_json(),
            format!(r##"{{"#E":["{}"]}}"##, id.to_hex())
        );
        assert_eq!(Layer::Root.filter_kinds().len(), 3);
    }
}
