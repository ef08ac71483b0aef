//! Reading a NIP-34 repository announcement (kind 30617) into what the
//! planner needs.
//!
//! This module owns the interpretation of an announcement's tags: its
//! coordinate (`d`), whether it lists our service (GRASP-01 acceptance), the
//! remote relays to sync from (`relays`, and optionally GRASP-shaped
//! `clone` URLs) with the guard rails of spec section 2, and its
//! maintainers. Every relay candidate that is dropped is reported with the
//! reason, so the I/O shell can count it. Signatures are not checked here.

use std::collections::BTreeSet;
use std::fmt;

use nostr::event::{Event, EventId};
use nostr::key::PublicKey;
use nostr::types::Timestamp;

use crate::types::{RepoCoord, KIND_REPO_ANNOUNCEMENT};
use crate::url::{grasp_clone_relay, RelayUrl, ServiceId};

/// Longest URL text kept in an [`IgnoredUrl`], in bytes.
pub const MAX_IGNORED_URL_LEN: usize = 300;

/// How announcements are read: the service and the guard rails.
#[derive(Clone, Copy, Debug)]
pub struct AnnouncementRules<'a> {
    /// The service we sync into; it is never a sync target.
    pub service: &'a ServiceId,
    /// Also map GRASP-shaped clone URLs to relays.
    pub use_clone_urls: bool,
    /// At most this many relays are kept per announcement (20 by default
    /// elsewhere).
    pub max_relays: usize,
    /// Keep relays whose host is a private IP literal or `localhost` (tests on
    /// 127.0.0.1 need it).
    pub allow_private: bool,
}

/// What the planner needs from one announcement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// The repository: event author plus the `d` identifier.
    pub coord: RepoCoord,
    /// The announcement event's id.
    pub event_id: EventId,
    /// The announcement event's `created_at`.
    pub created_at: Timestamp,
    /// Some `relays` tag value is our service (GRASP-01 acceptance). Clone
    /// URLs do not count.
    pub lists_service: bool,
    /// Remote relays to sync from: sorted, deduplicated, our service
    /// excluded, at most `max_relays` of them.
    pub relays: Vec<RelayUrl>,
    /// Keys from `maintainers` tags (every value of every such tag), invalid
    /// ones skipped; sorted and deduplicated. The author is not added.
    pub maintainers: Vec<PublicKey>,
    /// Every relay or clone value that was dropped, with why: sorted and
    /// deduplicated.
    pub ignored: Vec<IgnoredUrl>,
}

/// A relay candidate that was not kept.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct IgnoredUrl {
    /// The value as it appeared in the tag, cut to at most
    /// [`MAX_IGNORED_URL_LEN`] bytes on a character boundary.
    pub url: String,
    /// Why it was dropped.
    pub reason: IgnoreReason,
}

/// Why a relay candidate was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IgnoreReason {
    /// It failed URL normalisation.
    #[serde(rename = "invalid-url")]
    Invalid,
    /// It is our own service.
    OwnService,
    /// Its host is a private IP literal or `localhost` and private relays are
    /// not allowed.
    PrivateAddress,
    /// The announcement already had `max_relays` relays.
    OverRelayCap,
}

impl IgnoreReason {
    /// A short kebab-case name, as used in logs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::Invalid => "invalid-url",
            IgnoreReason::OwnService => "own-service",
            IgnoreReason::PrivateAddress => "private-address",
            IgnoreReason::OverRelayCap => "over-relay-cap",
        }
    }
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an event could not be read as an announcement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnouncementError {
    /// The event is not of kind 30617.
    #[error("kind {kind} is not a repository announcement (30617)")]
    NotAnnouncement {
        /// The event's kind.
        kind: u16,
    },
    /// The event has no `d` tag.
    #[error("announcement has no d tag")]
    MissingIdentifier,
}

/// Tag values (everything after the tag name) of every tag called `name`,
/// in tag order.
pub(crate) fn tag_values<'e>(event: &'e Event, name: &'e str) -> impl Iterator<Item = &'e str> {
    event
        .tags
        .iter()
        .map(|tag| tag.as_slice())
        .filter(move |slice| slice.first().is_some_and(|n| n == name))
        .flat_map(|slice| slice.get(1..).unwrap_or_default())
        .map(String::as_str)
}

/// The `d` identifier of an addressable event: the value of its first `d`
/// tag (empty when that tag has no value), `None` when there is no `d` tag.
pub fn identifier(event: &Event) -> Option<&str> {
    event
        .tags
        .iter()
        .map(|tag| tag.as_slice())
        .find(|slice| slice.first().is_some_and(|n| n == "d"))
        .map(|slice| slice.get(1).map_or("", String::as_str))
}

/// True when some value of some `relays` tag normalises to a URL of
/// `service` (GRASP-01 acceptance). The event's kind is not checked.
pub fn lists_service(event: &Event, service: &ServiceId) -> bool {
    tag_values(event, "relays")
        .filter_map(|v| RelayUrl::parse(v).ok())
        .any(|url| service.matches(&url))
}

/// True when `s` is exactly 64 ASCII hex digits.
pub(crate) fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads a kind-30617 announcement under `rules`.
///
/// Relay candidates are taken in tag order: every value of every `relays`
/// tag, then (when `use_clone_urls`) the relays of GRASP-shaped `clone`
/// values. Each candidate is, in this order: dropped as
/// [`IgnoreReason::Invalid`] if it fails normalisation; dropped as
/// [`IgnoreReason::OwnService`] if the service matches it (from a `relays`
/// tag this also sets `lists_service`); dropped as
/// [`IgnoreReason::PrivateAddress`] if it is a private literal and
/// `allow_private` is off; skipped silently if already kept; dropped as
/// [`IgnoreReason::OverRelayCap`] once `max_relays` are kept; else kept.
/// Clone URLs that are not GRASP-shaped are not relays and are not reported.
/// Maintainer keys must be 64 hex digits.
pub fn parse_announcement(
    event: &Event,
    rules: &AnnouncementRules<'_>,
) -> Result<Announcement, AnnouncementError> {
    let kind = event.kind.as_u16();
    if kind != KIND_REPO_ANNOUNCEMENT {
        return Err(AnnouncementError::NotAnnouncement { kind });
    }
    let d = identifier(event).ok_or(AnnouncementError::MissingIdentifier)?;

    let mut lists = false;
    let mut kept: BTreeSet<RelayUrl> = BTreeSet::new();
    let mut ignored: BTreeSet<IgnoredUrl> = BTreeSet::new();
    let ignore = |ignored: &mut BTreeSet<IgnoredUrl>, raw: &str, reason: IgnoreReason| {
        ignored.insert(IgnoredUrl {
            url: truncate(raw, MAX_IGNORED_URL_LEN).to_owned(),
            reason,
        });
    };

    let from_relays = tag_values(event, "relays").map(|raw| (raw, RelayUrl::parse(raw).ok(), true));
    let from_clones = tag_values(event, "clone")
        .filter(|_| rules.use_clone_urls)
        .filter_map(|raw| grasp_clone_relay(raw).map(|url| (raw, Some(url), false)));

    for (raw, parsed, is_relays_tag) in from_relays.chain(from_clones) {
        let Some(url) = parsed else {
            ignore(&mut ignored, raw, IgnoreReason::Invalid);
            continue;
        };
        if rules.service.matches(&url) {
            lists |= is_relays_tag;
            ignore(&mut ignored, raw, IgnoreReason::OwnService);
        } else if !rules.allow_private && url.is_private_ip_literal() {
            ignore(&mut ignored, raw, IgnoreReason::PrivateAddress);
        } else if kept.contains(&url) {
            // A duplicate of a relay already kept.
        } else if kept.len() >= rules.max_relays {
            ignore(&mut ignored, raw, IgnoreReason::OverRelayCap);
        } else {
            kept.insert(url);
        }
    }

    let maintainers: BTreeSet<PublicKey> = tag_values(event, "maintainers")
        .filter(|v| is_hex64(v))
        .filter_map(|v| PublicKey::from_hex(v).ok())
        .collect();

    Ok(Announcement {
        coord: RepoCoord::new(event.pubkey, d),
        event_id: event.id,
        created_at: event.created_at,
        lists_service: lists,
        relays: kept.into_iter().collect(),
        maintainers: maintainers.into_iter().collect(),
        ignored: ignored.into_iter().collect(),
    })
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    s.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::event::Signature;
    use nostr::event::{Kind, Tag};
    use proptest::prelude::*;

    const AUTHOR: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const M1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const M2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const NPUB: &str = "npub1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq";

    fn pk(hex: &str) -> PublicKey {
        PublicKey::from_hex(hex).unwrap()
    }

    fn event(kind: u16, tags: &[&[&str]]) -> Event {
        let tags = tags.iter().map(|t| Tag::parse(t.iter().copied()).unwrap());
        Event::new(
            EventId::from_byte_array([7u8; 32]),
            pk(AUTHOR),
            Timestamp::from_secs(1_700_000_000),
            Kind::from(kind),
            tags,
            "",
            Signature::from_byte_array([1u8; 64]),
        )
    }

    fn service() -> ServiceId {
        ServiceId::parse("git.example.com").unwrap()
    }

    fn rules(service: &ServiceId) -> AnnouncementRules<'_> {
        AnnouncementRules {
            service,
            use_clone_urls: false,
            max_relays: 20,
            allow_private: false,
        }
    }

    fn urls(a: &Announcement) -> Vec<&str> {
        a.relays.iter().map(RelayUrl::as_str).collect()
    }

    fn ignored(a: &Announcement) -> Vec<(&str, IgnoreReason)> {
        a.ignored
            .iter()
            .map(|i| (i.url.as_str(), i.reason))
            .collect()
    }

    #[test]
    fn basic_fields() {
        let svc = service();
        let ev = event(
            30617,
            &[
                &["d", "my-repo"],
                &["d", "second"],
                &["name", "x"],
                &["relays", "wss://relay.b.com", "wss://git.example.com"],
            ],
        );
        let a = parse_announcement(&ev, &rules(&svc)).unwrap();
        assert_eq!(a.coord, RepoCoord::new(pk(AUTHOR), "my-repo"));
        assert_eq!(a.event_id, ev.id);
        assert_eq!(a.created_at, Timestamp::from_secs(1_700_000_000));
        assert!(a.lists_service);
        assert_eq!(urls(&a), ["wss://relay.b.com"]);
        assert_eq!(
            ignored(&a),
            [("wss://git.example.com", IgnoreReason::OwnService)]
        );
        assert!(a.maintainers.is_empty());
    }

    #[test]
    fn kind_and_identifier() {
        let svc = service();
        assert_eq!(
            parse_announcement(&event(30618, &[&["d", "x"]]), &rules(&svc)),
            Err(AnnouncementError::NotAnnouncement { kind: 30618 })
        );
        assert_eq!(
            parse_announcement(&event(30617, &[&["relays", "wss://a.com"]]), &rules(&svc)),
            Err(AnnouncementError::MissingIdentifier)
        );
        let empty = parse_announcement(&event(30617, &[&["d", ""]]), &rules(&svc)).unwrap();
        assert_eq!(empty.coord.identifier, "");
        let bare = parse_announcement(&event(30617, &[&["d"]]), &rules(&svc)).unwrap();
        assert_eq!(bare.coord.identifier, "");
        assert_eq!(
            identifier(&event(1, &[&["e", "x"], &["d", "q"]])),
            Some("q")
        );
        assert_eq!(identifier(&event(1, &[&["D", "x"]])), None);
    }

    #[test]
    fn multi_valued_and_repeated_relays_tags() {
        let svc = service();
        let ev = event(
            30617,
            &[
                &["d", "r"],
                &["relays", "wss://c.com", "wss://a.com/"],
                &["relays"],
                &["relays", "WSS://A.COM", "wss://b.com:443", "ftp://x", ""],
                &["relays", "wss://GIT.example.com/"],
            ],
        );
        let a = parse_announcement(&ev, &rules(&svc)).unwrap();
        assert_eq!(urls(&a), ["wss://a.com", "wss://b.com", "wss://c.com"]);
        assert!(a.lists_service);
        assert_eq!(
            ignored(&a),
            [
                ("", IgnoreReason::Invalid),
                ("ftp://x", IgnoreReason::Invalid),
                ("wss://GIT.example.com/", IgnoreReason::OwnService),
            ]
        );
    }

    #[test]
    fn own_service_is_exact_not_substring() {
        let svc = service();
        let ev = event(
            30617,
            &[
                &["d", "r"],
                &[
                    "relays",
                    "wss://git.example.com.evil.org",
                    "wss://notgit.example.com",
                ],
            ],
        );
        let a = parse_announcement(&ev, &rules(&svc)).unwrap();
        assert!(!a.lists_service);
        assert_eq!(
            urls(&a),
            ["wss://git.example.com.evil.org", "wss://notgit.example.com"]
        );
        assert!(a.ignored.is_empty());
    }

    #[test]
    fn private_addresses() {
        let svc = ServiceId::parse("127.0.0.1:7777").unwrap();
        let ev = event(
            30617,
            &[
                &["d", "r"],
                &[
                    "relays",
                    "ws://127.0.0.1:7777",
                    "ws://127.0.0.1:7778",
                    "ws://localhost:1",
                    "wss://public.example",
                ],
            ],
        );
        let strict = parse_announcement(&ev, &rules(&svc)).unwrap();
        assert!(strict.lists_service);
        assert_eq!(urls(&strict), ["wss://public.example"]);
        assert_eq!(
            ignored(&strict),
            [
                ("ws://127.0.0.1:7777", IgnoreReason::OwnService),
                ("ws://127.0.0.1:7778", IgnoreReason::PrivateAddress),
                ("ws://localhost:1", IgnoreReason::PrivateAddress),
            ]
        );
        let lax = parse_announcement(
            &ev,
            &AnnouncementRules {
                allow_private: true,
                ..rules(&svc)
            },
        )
        .unwrap();
        assert_eq!(
            urls(&lax),
            [
                "ws://127.0.0.1:7778",
                "ws://localhost:1",
                "wss://public.example"
            ]
        );
        assert_eq!(
            ignored(&lax),
            [("ws://127.0.0.1:7777", IgnoreReason::OwnService)]
        );
    }

    #[test]
    fn relay_cap_keeps_first_in_tag_order() {
        let svc = service();
        let ev = event(
            30617,
            &[
                &["d", "r"],
                &["relays", "wss://z.com", "wss://y.com", "wss://z.com/"],
                &["relays", "wss://x.com", "wss://a.com", "wss://y.com"],
            ],
        );
        let capped = AnnouncementRules {
            max_relays: 3,
            ..rules(&svc)
        };
        let a = parse_announcement(&ev, &capped).unwrap();
        assert_eq!(urls(&a), ["wss://x.com", "wss://y.com", "wss://z.com"]);
        assert_eq!(ignored(&a), [("wss://a.com", IgnoreReason::OverRelayCap)]);

        let zero = AnnouncementRules {
            max_relays: 0,
            ..rules(&svc)
        };
        let a = parse_announcement(&ev, &zero).unwrap();
        assert!(a.relays.is_empty());
        // Reported as written: `wss://z.com` and `wss://z.com/` both appear.
        assert_eq!(a.ignored.len(), 5);
        assert!(a
            .ignored
            .iter()
            .all(|i| i.reason == IgnoreReason::OverRelayCap));
    }

    #[test]
    fn clone_urls() {
        let svc = service();
        let grasp = format!("https://grasp.one/{NPUB}/r.git");
        let own = format!("https://git.example.com/{NPUB}/r.git");
        let local = format!("http://10.0.0.1:8080/{NPUB}/r.git");
        let ev = event(
            30617,
            &[
                &["d", "r"],
                &[
                    "clone",
                    "https://github.com/owner/r.git",
                    &grasp,
                    &own,
                    "git@github.com:owner/r.git",
                ],
                &["clone", &local, "ssh://x/r.git"],
                &["relays", "wss://relay.b.com"],
            ],
        );
        let off = parse_announcement(&ev, &rules(&svc)).unwrap();
        assert_eq!(urls(&off), ["wss://relay.b.com"]);
        assert!(off.ignored.is_empty());
        assert!(!off.lists_service);

        let on = AnnouncementRules {
            use_clone_urls: true,
            ..rules(&svc)
        };
        let a = parse_announcement(&ev, &on).unwrap();
        assert_eq!(urls(&a), ["wss://grasp.one", "wss://relay.b.com"]);
        // A clone URL on our own service is dropped but is not a listing.
        assert!(!a.lists_service);
        assert_eq!(
            ignored(&a),
            [
                (local.as_str(), IgnoreReason::PrivateAddress),
                (own.as_str(), IgnoreReason::OwnService),
            ]
        );

        // Relays tags come first for the cap.
        let capped = AnnouncementRules {
            use_clone_urls: true,
            max_relays: 1,
            ..rules(&svc)
        };
        let a = parse_announcement(&ev, &capped).unwrap();
        assert_eq!(urls(&a), ["wss://relay.b.com"]);
        assert!(a.ignored.contains(&IgnoredUrl {
            url: grasp.clone(),
            reason: IgnoreReason::OverRelayCap
        }));

        // A clone URL that duplicates a kept relay is silently merged.
        let dup = event(
            30617,
            &[
                &["d", "r"],
                &["relays", "wss://grasp.one"],
                &["clone", &grasp],
            ],
        );
        let a = parse_announcement(&dup, &on).unwrap();
        assert_eq!(urls(&a), ["wss://grasp.one"]);
        assert!(a.ignored.is_empty());
    }

    #[test]
    fn maintainers() {
        let svc = service();
        let ev = event(
            30617,
            &[
                &["d", "r"],
                &["maintainers", M2, "not-a-key", M1],
                &["maintainers", M1, AUTHOR],
                &["maintainers"],
                &["maintainers", &format!("{M1}00")],
                &["maintainers", &M1.to_uppercase()],
            ],
        );
        let a = parse_announcement(&ev, &rules(&svc)).unwrap();
        assert_eq!(a.maintainers, [pk(M1), pk(M2), pk(AUTHOR)]);

        let no_author = event(30617, &[&["d", "r"], &["maintainers", M1]]);
        let a = parse_announcement(&no_author, &rules(&svc)).unwrap();
        assert_eq!(a.maintainers, [pk(M1)]);
    }

    #[test]
    fn ignored_urls_are_truncated_on_char_boundary() {
        let svc = service();
        let long = format!("ws://bad host/{}", "é".repeat(400));
        let ev = event(30617, &[&["d", "r"], &["relays", &long]]);
        let a = parse_announcement(&ev, &rules(&svc)).unwrap();
        let [only] = a.ignored.as_slice() else {
            panic!("{:?}", a.ignored)
        };
        assert_eq!(only.reason, IgnoreReason::Invalid);
        assert!(only.url.len() <= MAX_IGNORED_URL_LEN);
        assert!(only.url.len() >= MAX_IGNORED_URL_LEN - 1);
        assert!(long.starts_with(&only.url));
    }

    #[test]
    fn reason_names() {
        assert_eq!(IgnoreReason::Invalid.to_string(), "invalid-url");
        assert_eq!(IgnoreReason::OwnService.to_string(), "own-service");
        assert_eq!(IgnoreReason::PrivateAddress.to_string(), "private-address");
        assert_eq!(IgnoreReason::OverRelayCap.to_string(), "over-relay-cap");
        for r in [
            IgnoreReason::Invalid,
            IgnoreReason::OwnService,
            IgnoreReason::PrivateAddress,
            IgnoreReason::OverRelayCap,
        ] {
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
    }

    fn tag_strategy() -> impl Strategy<Value = Vec<String>> {
        let name = prop_oneof![
            Just("relays".to_owned()),
            Just("clone".to_owned()),
            Just("maintainers".to_owned()),
            Just("d".to_owned()),
            "[a-z]{1,3}",
        ];
        let value = prop_oneof![
            Just("wss://git.example.com".to_owned()),
            Just("ws://127.0.0.1:7777".to_owned()),
            "wss://[a-e]\\.com",
            Just(format!("https://h.com/{NPUB}/r.git")),
            Just(M1.to_owned()),
            "\\PC{0,12}",
        ];
        (name, prop::collection::vec(value, 0..4)).prop_map(|(n, mut v)| {
            v.insert(0, n);
            v
        })
    }

    proptest! {
        #[test]
        fn output_is_sorted_deduplicated_and_capped(
            tags in prop::collection::vec(tag_strategy(), 0..12),
            max in 0usize..5,
            clones: bool,
            private: bool,
        ) {
            let svc = service();
            let refs: Vec<Vec<&str>> = tags.iter().map(|t| t.iter().map(String::as_str).collect()).collect();
            let slices: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
            let ev = event(30617, &slices);
            let rules = AnnouncementRules { service: &svc, use_clone_urls: clones, max_relays: max, allow_private: private };
            match parse_announcement(&ev, &rules) {
                Ok(a) => {
                    prop_assert!(a.relays.len() <= max);
                    prop_assert!(a.relays.windows(2).all(|w| w[0] < w[1]));
                    prop_assert!(a.maintainers.windows(2).all(|w| w[0] < w[1]));
                    prop_assert!(a.ignored.windows(2).all(|w| w[0] < w[1]));
                    prop_assert!(a.relays.iter().all(|r| !svc.matches(r)));
                    prop_assert!(private || a.relays.iter().all(|r| !r.is_private_ip_literal()));
                    prop_assert_eq!(a.lists_service, lists_service(&ev, &svc));
                    // Deterministic: the same input gives the same output.
                    prop_assert_eq!(parse_announcement(&ev, &rules), Ok(a));
                }
                Err(e) => prop_assert_eq!(e, AnnouncementError::MissingIdentifier),
            }
        }
    }
}
