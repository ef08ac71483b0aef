//! The GRASP acceptance check: would the service accept this event?
//!
//! This module owns the pure decision, used by the I/O shell before it stores
//! an event fetched from a remote relay and by the CLI to explain a verdict.
//! What the service already tracks is supplied by the caller through
//! [`AcceptanceContext`]; nothing here does I/O or verifies signatures.
//!
//! Rules, by event kind:
//!
//! - **30617 announcement**: without a `d` tag it is
//!   [`RejectReason::BadAnnouncement`]. In archive mode it is
//!   [`AcceptReason::Archive`]; otherwise it is
//!   [`AcceptReason::AnnouncementListsService`] when some `relays` tag value
//!   normalises to one of the service's URLs, else
//!   [`RejectReason::AnnouncementWithoutService`].
//! - **30618 repository state**: [`AcceptReason::RepoState`] when its author
//!   may publish state for its `d` identifier, else
//!   [`AcceptReason::TagsRepo`] when it tags a tracked repo (as below), else
//!   [`RejectReason::StateOfUnknownRepo`].
//! - **any other kind** (patches, pull requests, issues, comments, statuses,
//!   deletions, ...): [`AcceptReason::TagsRepo`] when the value of some `a`,
//!   `A` or `q` tag is the coordinate of a tracked repo, else
//!   [`AcceptReason::TagsRoot`] when the value of some `e`, `E` or `q` tag is
//!   the id (64 hex digits) of a tracked root event, else
//!   [`RejectReason::Unrelated`]. Only a tag's first value is read.

use std::fmt;
use std::str::FromStr;

use nostr::event::{Event, EventId};
use nostr::key::PublicKey;

use crate::announcement::{identifier, is_hex64, lists_service};
use crate::types::{RepoCoord, KIND_REPO_ANNOUNCEMENT, KIND_REPO_STATE};
use crate::url::ServiceId;

/// What the service already knows, as needed by [`check_acceptance`].
pub trait AcceptanceContext {
    /// The service we sync into.
    fn service(&self) -> &ServiceId;
    /// Archive mode: every announcement (with a `d` tag) is accepted.
    fn archive(&self) -> bool;
    /// True when the repository with this coordinate is tracked.
    fn is_tracked_repo(&self, coord: &RepoCoord) -> bool;
    /// True when this is an accepted root event (patch, pull request or issue).
    fn is_tracked_root(&self, id: &EventId) -> bool;
    /// True when `author` may publish repository state for `identifier`: it is
    /// the author or a maintainer of a tracked repo with that `d` identifier.
    fn may_publish_state(&self, author: &PublicKey, identifier: &str) -> bool;
    /// The author of the tracked repo whose current announcement is `id`, if
    /// any (a deletion request by that author may name the repo by id).
    /// Defaults to none.
    fn tracked_announcement_author(&self, id: &EventId) -> Option<PublicKey> {
        let _ = id;
        None
    }
}

/// The outcome of [`check_acceptance`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The service would store the event.
    Accept(AcceptReason),
    /// The service would refuse the event.
    Reject(RejectReason),
}

/// Why an event is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcceptReason {
    /// An announcement that lists the service in a `relays` tag.
    AnnouncementListsService,
    /// An announcement accepted because the service runs in archive mode.
    Archive,
    /// A state event from the author or a maintainer of a tracked repo.
    RepoState,
    /// The event tags a tracked repo (`a`, `A` or `q`).
    TagsRepo,
    /// The event tags a tracked root event (`e`, `E` or `q`).
    TagsRoot,
}

/// Why an event is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectReason {
    /// An announcement that does not list the service (and no archive mode).
    AnnouncementWithoutService,
    /// An announcement without a `d` tag.
    BadAnnouncement,
    /// A state event for a repo the service does not track, from someone who
    /// may not publish its state.
    StateOfUnknownRepo,
    /// An event that refers to nothing the service tracks.
    Unrelated,
}

impl Verdict {
    /// True for [`Verdict::Accept`].
    pub fn is_accept(&self) -> bool {
        matches!(self, Verdict::Accept(_))
    }
}

impl AcceptReason {
    /// A short kebab-case name, as used in logs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            AcceptReason::AnnouncementListsService => "announcement-lists-service",
            AcceptReason::Archive => "archive",
            AcceptReason::RepoState => "repo-state",
            AcceptReason::TagsRepo => "tags-repo",
            AcceptReason::TagsRoot => "tags-root",
        }
    }
}

impl RejectReason {
    /// A short kebab-case name, as used in logs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::AnnouncementWithoutService => "announcement-without-service",
            RejectReason::BadAnnouncement => "bad-announcement",
            RejectReason::StateOfUnknownRepo => "state-of-unknown-repo",
            RejectReason::Unrelated => "unrelated",
        }
    }
}

impl fmt::Display for AcceptReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept(r) => write!(f, "accept ({r})"),
            Verdict::Reject(r) => write!(f, "reject ({r})"),
        }
    }
}

/// First values of every tag whose name is one of `names`, in tag order.
fn first_values<'e>(event: &'e Event, names: &'e [&str]) -> impl Iterator<Item = &'e str> {
    event
        .tags
        .iter()
        .filter_map(move |tag| match tag.as_slice() {
            [name, value, ..] if names.contains(&name.as_str()) => Some(value.as_str()),
            _ => None,
        })
}

/// True when some `a`, `A` or `q` tag names a tracked repo.
fn tags_tracked_repo(event: &Event, ctx: &impl AcceptanceContext) -> bool {
    first_values(event, &["a", "A", "q"])
        .filter_map(|v| RepoCoord::from_str(v).ok())
        .any(|coord| ctx.is_tracked_repo(&coord))
}

/// True when some `e`, `E` or `q` tag names a tracked root event.
fn tags_tracked_root(event: &Event, ctx: &impl AcceptanceContext) -> bool {
    first_values(event, &["e", "E", "q"])
        .filter(|v| is_hex64(v))
        .filter_map(|v| EventId::from_hex(v).ok())
        .any(|id| ctx.is_tracked_root(&id))
}

/// Would the service accept `event`? See the module documentation for the
/// rules. Signatures are not checked.
pub fn check_acceptance(event: &Event, ctx: &impl AcceptanceContext) -> Verdict {
    match event.kind.as_u16() {
        KIND_REPO_ANNOUNCEMENT => {
            if identifier(event).is_none() {
                Verdict::Reject(RejectReason::BadAnnouncement)
            } else if ctx.archive() {
                Verdict::Accept(AcceptReason::Archive)
            } else if lists_service(event, ctx.service()) {
                Verdict::Accept(AcceptReason::AnnouncementListsService)
            } else {
                Verdict::Reject(RejectReason::AnnouncementWithoutService)
            }
        }
        KIND_REPO_STATE => {
            if identifier(event).is_some_and(|d| ctx.may_publish_state(&event.pubkey, d)) {
                Verdict::Accept(AcceptReason::RepoState)
            } else if tags_tracked_repo(event, ctx) {
                Verdict::Accept(AcceptReason::TagsRepo)
            } else {
                Verdict::Reject(RejectReason::StateOfUnknownRepo)
            }
        }
        _ => {
            if tags_tracked_repo(event, ctx) {
                Verdict::Accept(AcceptReason::TagsRepo)
            } else if tags_tracked_root(event, ctx) {
                Verdict::Accept(AcceptReason::TagsRoot)
            } else if event.kind.as_u16() == crate::types::KIND_DELETION
                && event.tags.iter().any(|t| match t.as_slice() {
                    [k, v, ..] if k == "e" => {
                        crate::types::parse_event_id(v)
                            .and_then(|id| ctx.tracked_announcement_author(&id))
                            == Some(event.pubkey)
                    }
                    _ => false,
                })
            {
                // A deletion request naming a tracked announcement by its id.
                Verdict::Accept(AcceptReason::TagsRepo)
            } else {
                Verdict::Reject(RejectReason::Unrelated)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    use nostr::event::{Kind, Signature, Tag};
    use nostr::types::Timestamp;
    use proptest::prelude::*;

    const AUTHOR: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const MAINT: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const STRANGER: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    const ROOT: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const OTHER_ID: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn pk(hex: &str) -> PublicKey {
        PublicKey::from_hex(hex).unwrap()
    }

    fn coord(d: &str) -> String {
        RepoCoord::new(pk(AUTHOR), d).to_string()
    }

    struct Ctx {
        service: ServiceId,
        archive: bool,
        repos: BTreeSet<RepoCoord>,
        roots: BTreeSet<EventId>,
        /// `d` identifier → who may publish its state.
        publishers: BTreeMap<String, BTreeSet<PublicKey>>,
    }

    impl Ctx {
        fn new() -> Self {
            let repo = RepoCoord::new(pk(AUTHOR), "tracked");
            let mut publishers = BTreeMap::new();
            publishers.insert(
                "tracked".to_owned(),
                [pk(AUTHOR), pk(MAINT)].into_iter().collect(),
            );
            Ctx {
                service: ServiceId::parse("git.example.com").unwrap(),
                archive: false,
                repos: [repo].into_iter().collect(),
                roots: [EventId::from_hex(ROOT).unwrap()].into_iter().collect(),
                publishers,
            }
        }
    }

    impl AcceptanceContext for Ctx {
        fn service(&self) -> &ServiceId {
            &self.service
        }
        fn archive(&self) -> bool {
            self.archive
        }
        fn is_tracked_repo(&self, coord: &RepoCoord) -> bool {
            self.repos.contains(coord)
        }
        fn is_tracked_root(&self, id: &EventId) -> bool {
            self.roots.contains(id)
        }
        fn may_publish_state(&self, author: &PublicKey, identifier: &str) -> bool {
            self.publishers
                .get(identifier)
                .is_some_and(|set| set.contains(author))
        }
    }

    fn event_by(author: &str, kind: u16, tags: &[&[&str]]) -> Event {
        let tags = tags.iter().map(|t| Tag::parse(t.iter().copied()).unwrap());
        Event::new(
            EventId::from_byte_array([9u8; 32]),
            pk(author),
            Timestamp::from_secs(1_700_000_000),
            Kind::from(kind),
            tags,
            "",
            Signature::from_byte_array([1u8; 64]),
        )
    }

    fn event(kind: u16, tags: &[&[&str]]) -> Event {
        event_by(STRANGER, kind, tags)
    }

    fn accept(r: AcceptReason) -> Verdict {
        Verdict::Accept(r)
    }

    fn reject(r: RejectReason) -> Verdict {
        Verdict::Reject(r)
    }

    #[test]
    fn announcements() {
        let mut ctx = Ctx::new();
        let listing = event(
            30617,
            &[
                &["d", "x"],
                &["relays", "wss://a.com", "WSS://Git.Example.com/"],
            ],
        );
        let not_listing = event(
            30617,
            &[&["d", "x"], &["relays", "wss://git.example.com.evil.org"]],
        );
        let clone_only = event(
            30617,
            &[
                &["d", "x"],
                &["clone", "https://git.example.com/npub1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq/x.git"],
            ],
        );
        let no_d = event(30617, &[&["relays", "wss://git.example.com"]]);
        assert_eq!(
            check_acceptance(&listing, &ctx),
            accept(AcceptReason::AnnouncementListsService)
        );
        assert_eq!(
            check_acceptance(&not_listing, &ctx),
            reject(RejectReason::AnnouncementWithoutService)
        );
        assert_eq!(
            check_acceptance(&clone_only, &ctx),
            reject(RejectReason::AnnouncementWithoutService)
        );
        assert_eq!(
            check_acceptance(&no_d, &ctx),
            reject(RejectReason::BadAnnouncement)
        );
        ctx.archive = true;
        assert_eq!(
            check_acceptance(&listing, &ctx),
            accept(AcceptReason::Archive)
        );
        assert_eq!(
            check_acceptance(&not_listing, &ctx),
            accept(AcceptReason::Archive)
        );
        assert_eq!(
            check_acceptance(&no_d, &ctx),
            reject(RejectReason::BadAnnouncement)
        );
    }

    #[test]
    fn announcement_on_a_local_service() {
        let mut ctx = Ctx::new();
        ctx.service = ServiceId::parse("127.0.0.1:7777").unwrap();
        let ev = event(30617, &[&["d", "x"], &["relays", "ws://127.0.0.1:7777"]]);
        assert_eq!(
            check_acceptance(&ev, &ctx),
            accept(AcceptReason::AnnouncementListsService)
        );
        let other_port = event(30617, &[&["d", "x"], &["relays", "ws://127.0.0.1:7778"]]);
        assert_eq!(
            check_acceptance(&other_port, &ctx),
            reject(RejectReason::AnnouncementWithoutService)
        );
    }

    #[test]
    fn repo_state() {
        let ctx = Ctx::new();
        let by =
            |author: &str, tags: &[&[&str]]| check_acceptance(&event_by(author, 30618, tags), &ctx);
        assert_eq!(
            by(AUTHOR, &[&["d", "tracked"]]),
            accept(AcceptReason::RepoState)
        );
        assert_eq!(
            by(MAINT, &[&["d", "tracked"]]),
            accept(AcceptReason::RepoState)
        );
        assert_eq!(
            by(STRANGER, &[&["d", "tracked"]]),
            reject(RejectReason::StateOfUnknownRepo)
        );
        assert_eq!(
            by(AUTHOR, &[&["d", "unknown"]]),
            reject(RejectReason::StateOfUnknownRepo)
        );
        assert_eq!(by(AUTHOR, &[]), reject(RejectReason::StateOfUnknownRepo));
        let tracked = coord("tracked");
        assert_eq!(
            by(STRANGER, &[&["d", "unknown"], &["a", &tracked]]),
            accept(AcceptReason::TagsRepo)
        );
        // Tagging a root is not enough for a state event.
        assert_eq!(
            by(STRANGER, &[&["d", "unknown"], &["e", ROOT]]),
            reject(RejectReason::StateOfUnknownRepo)
        );
    }

    #[test]
    fn other_kinds_by_repo_tag() {
        let ctx = Ctx::new();
        let tracked = coord("tracked");
        let untracked = coord("other");
        for name in ["a", "A", "q"] {
            for kind in [1617, 1618, 1619, 1621, 1630, 1111, 5] {
                assert_eq!(
                    check_acceptance(&event(kind, &[&[name, &tracked]]), &ctx),
                    accept(AcceptReason::TagsRepo),
                    "{name} {kind}"
                );
            }
        }
        // Any of several `a` tags counts, not only the first.
        assert_eq!(
            check_acceptance(
                &event(1617, &[&["a", &untracked], &["a", &tracked, "wss://r"]]),
                &ctx
            ),
            accept(AcceptReason::TagsRepo)
        );
        for tags in [
            vec![vec!["a", untracked.as_str()]],
            vec![vec!["p", tracked.as_str()]],
            vec![vec!["a"]],
            vec![vec!["a", "30617:nothex:tracked"]],
            vec![vec!["a", "30618:aaaa:tracked"]],
            vec![vec!["x", "a", tracked.as_str()]],
        ] {
            let refs: Vec<&[&str]> = tags.iter().map(Vec::as_slice).collect();
            assert_eq!(
                check_acceptance(&event(1617, &refs), &ctx),
                reject(RejectReason::Unrelated),
                "{tags:?}"
            );
        }
        // The repo reason wins over the root reason.
        assert_eq!(
            check_acceptance(&event(1111, &[&["e", ROOT], &["a", &tracked]]), &ctx),
            accept(AcceptReason::TagsRepo)
        );
    }

    #[test]
    fn other_kinds_by_root_tag() {
        let ctx = Ctx::new();
        for name in ["e", "E", "q"] {
            assert_eq!(
                check_acceptance(&event(1111, &[&[name, ROOT, "wss://r", "root"]]), &ctx),
                accept(AcceptReason::TagsRoot),
                "{name}"
            );
        }
        let upper = ROOT.to_uppercase();
        assert_eq!(
            check_acceptance(&event(1630, &[&["e", &upper]]), &ctx),
            accept(AcceptReason::TagsRoot)
        );
        let too_long = format!("{ROOT}11");
        for tags in [
            vec![vec!["e", OTHER_ID]],
            vec![vec!["e", too_long.as_str()]],
            vec![vec!["e", &ROOT[..63]]],
            vec![vec!["p", ROOT]],
            vec![vec!["a", ROOT]],
            vec![vec!["e"]],
        ] {
            let refs: Vec<&[&str]> = tags.iter().map(Vec::as_slice).collect();
            assert_eq!(
                check_acceptance(&event(1111, &refs), &ctx),
                reject(RejectReason::Unrelated),
                "{tags:?}"
            );
        }
        assert_eq!(
            check_acceptance(&event(1111, &[&["e", OTHER_ID], &["E", ROOT]]), &ctx),
            accept(AcceptReason::TagsRoot)
        );
        assert_eq!(
            check_acceptance(&event(1, &[]), &ctx),
            reject(RejectReason::Unrelated)
        );
    }

    #[test]
    fn verdict_helpers() {
        assert!(accept(AcceptReason::TagsRoot).is_accept());
        assert!(!reject(RejectReason::Unrelated).is_accept());
        assert_eq!(
            accept(AcceptReason::TagsRepo).to_string(),
            "accept (tags-repo)"
        );
        assert_eq!(
            reject(RejectReason::StateOfUnknownRepo).to_string(),
            "reject (state-of-unknown-repo)"
        );
        assert_eq!(
            serde_json::to_string(&accept(AcceptReason::AnnouncementListsService)).unwrap(),
            r#"{"accept":"announcement-lists-service"}"#
        );
        assert_eq!(
            serde_json::to_string(&reject(RejectReason::BadAnnouncement)).unwrap(),
            r#"{"reject":"bad-announcement"}"#
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_is_deterministic(
            kind in prop_oneof![Just(30617u16), Just(30618u16), Just(1617u16), any::<u16>()],
            tags in prop::collection::vec(
                prop::collection::vec(prop_oneof![
                    Just("a".to_owned()), Just("e".to_owned()), Just("q".to_owned()),
                    Just("d".to_owned()), Just("relays".to_owned()),
                    Just(ROOT.to_owned()), Just(coord("tracked")), Just("tracked".to_owned()),
                    Just("wss://git.example.com".to_owned()), "\\PC{0,10}",
                ], 1..4),
                0..6),
            archive: bool,
        ) {
            let mut ctx = Ctx::new();
            ctx.archive = archive;
            let refs: Vec<Vec<&str>> = tags.iter().map(|t| t.iter().map(String::as_str).collect()).collect();
            let slices: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
            let ev = event(kind, &slices);
            let v = check_acceptance(&ev, &ctx);
            prop_assert_eq!(v, check_acceptance(&ev, &ctx));
            if kind == 30617 {
                prop_assert_eq!(
                    v.is_accept(),
                    identifier(&ev).is_some() && (archive || lists_service(&ev, &ctx.service))
                );
            }
        }
    }
}
