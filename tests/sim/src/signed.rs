//! Real, signed NIP-34 data for the integration tests that run the sync over
//! real websockets against real relays.
//!
//! This module owns deterministic key derivation ([`Signer::keys`]),
//! deterministic BIP-340 signing ([`Signer::sign`]: the auxiliary randomness
//! is derived from the event id, so the same inputs give the same bytes), and
//! the [`Dataset`]: repositories announced on a set of relays, with every
//! kind of event the engine fetches and a few that it must never store.
//!
//! Every event here verifies with [`Event::verify`] except the ones made by
//! [`forge_signature`] on purpose.

use std::collections::{BTreeMap, BTreeSet};

use grasp_sync_core::RepoCoord;
use nostr::event::{Event, EventId};
use nostr::key::{Keys, PublicKey};
use nostr::nips::nip19::ToBech32;
use nostr::types::Timestamp;

mod signer;

use self::signer::commit;
pub use self::signer::{forge_signature, signer, Signer};

/// Default `created_at` of the first dataset event: 2025-01-01T00:00:00Z
/// (the same instant as [`crate::fixtures::T0`]).
pub const DEFAULT_BASE_TIME: u64 = 1_735_689_600;

/// Kind of a repository announcement.
pub const KIND_ANNOUNCEMENT: u16 = 30617;
/// Kind of a repository state event.
pub const KIND_STATE: u16 = 30618;
/// Kind of a patch (a root event).
pub const KIND_PATCH: u16 = 1617;
/// Kind of a pull request (a root event).
pub const KIND_PULL_REQUEST: u16 = 1618;
/// Kind of an issue (a root event).
pub const KIND_ISSUE: u16 = 1621;
/// Kind of a NIP-22 comment.
pub const KIND_COMMENT: u16 = 1111;
/// Kind of a short text note (used for `q` quotes).
pub const KIND_NOTE: u16 = 1;
/// The status kinds: open, applied/merged, closed, draft.
pub const STATUS_KINDS: [u16; 4] = [1630, 1631, 1632, 1633];

/// SplitMix64 step: a well-mixed 64-bit value from a counter.
fn tag(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// A repository of a [`Dataset`]: its keys, coordinate, announcement and
/// root events.
#[derive(Clone, Debug)]
pub struct Repo {
    /// The announcing author.
    pub owner: Keys,
    /// A maintainer listed in the announcement (it publishes a state event too).
    pub maintainer: Keys,
    /// The `d` identifier.
    pub d: String,
    /// `30617:<owner-hex>:<d>`.
    pub coord: RepoCoord,
    /// Whether the announcement lists the service (false: a foreign repo
    /// whose events must never be stored).
    pub hosted: bool,
    /// The kind-30617 announcement.
    pub announcement: Event,
    /// Its root events (issues, patches, pull requests), in creation order.
    pub roots: Vec<Event>,
}

impl Repo {
    /// The owner's public key.
    pub fn owner_pubkey(&self) -> PublicKey {
        self.owner.public_key()
    }

    /// The owner's `npub1...`.
    pub fn npub(&self) -> String {
        self.owner
            .public_key()
            .to_bech32()
            .expect("a public key encodes")
    }
}

/// Which events [`Dataset::add_bulk`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BulkKind {
    /// Issues tagging the repo (layer 2, `#a`); each becomes a root event.
    Issues,
    /// NIP-22 comments on the repo's first root event (layer 3, `#E`/`#e`).
    RootComments,
    /// Alternating issues and root comments.
    #[default]
    Mixed,
}

/// How many extra events [`Dataset::add_bulk`] makes, and how.
#[derive(Clone, Debug)]
pub struct Bulk {
    /// Index of the hosted repo (in [`Dataset::repos`]).
    pub repo: usize,
    /// Number of events.
    pub count: usize,
    /// The first `same_second` events all share `newest` as `created_at`
    /// (to exercise tie paging); the rest go back one second each.
    pub same_second: usize,
    /// What to make.
    pub kind: BulkKind,
    /// The newest `created_at`; default: one day after the dataset's base time.
    pub newest: Option<u64>,
}

impl Bulk {
    /// `count` mixed events on hosted repo `repo`, half of them in one second.
    pub fn new(repo: usize, count: usize) -> Self {
        Bulk {
            repo,
            count,
            same_second: count / 2,
            kind: BulkKind::Mixed,
            newest: None,
        }
    }

    /// Sets how many events share the newest second.
    pub fn same_second(mut self, n: usize) -> Self {
        self.same_second = n;
        self
    }

    /// Sets what to make.
    pub fn kind(mut self, kind: BulkKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets the newest `created_at`.
    pub fn newest(mut self, created_at: u64) -> Self {
        self.newest = Some(created_at);
        self
    }
}

/// Sizes and names of a [`Dataset`]; build it with [`DatasetBuilder::build`].
#[derive(Clone, Debug)]
pub struct DatasetBuilder {
    service: String,
    relays: Vec<String>,
    seed: u64,
    base_time: u64,
    repos: usize,
    foreign_repos: usize,
    issues: usize,
    patches: usize,
    prs: usize,
    comments: usize,
}

impl DatasetBuilder {
    /// Key family seed (default 1). Different seeds give disjoint keys.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// `created_at` of the first event (default [`DEFAULT_BASE_TIME`]).
    pub fn base_time(mut self, t: u64) -> Self {
        self.base_time = t;
        self
    }

    /// Hosted repos: their announcements list the service (default 2).
    pub fn repos(mut self, n: usize) -> Self {
        self.repos = n;
        self
    }

    /// Foreign repos: announced on the same relays without the service; none
    /// of their events may be stored (default 1).
    pub fn foreign_repos(mut self, n: usize) -> Self {
        self.foreign_repos = n;
        self
    }

    /// Issues per repo (default 2).
    pub fn issues(mut self, n: usize) -> Self {
        self.issues = n;
        self
    }

    /// Patches per repo (default 1).
    pub fn patches(mut self, n: usize) -> Self {
        self.patches = n;
        self
    }

    /// Pull requests per repo (default 1).
    pub fn prs(mut self, n: usize) -> Self {
        self.prs = n;
        self
    }

    /// Top-level comments per root event, each with one reply (default 1).
    pub fn comments(mut self, n: usize) -> Self {
        self.comments = n;
        self
    }

    /// Generates and signs everything.
    pub fn build(self) -> Dataset {
        let mut ds = Dataset {
            service: self.service.clone(),
            relays: self.relays.clone(),
            seed: self.seed,
            base_time: self.base_time,
            repos: Vec::new(),
            foreign: Vec::new(),
            participants: (0..4)
                .map(|i| signer().keys(self.seed, 0x7000 + i))
                .collect(),
            stranger: signer().keys(self.seed, 0x6000),
            events: Vec::new(),
            index: BTreeMap::new(),
            expected: BTreeSet::new(),
            unrelated: BTreeSet::new(),
            counter: 0,
        };
        for f in 0..self.foreign_repos {
            let repo = ds.make_repo(1000 + f, false);
            ds.foreign.push(repo);
        }
        for r in 0..self.repos {
            let repo = ds.make_repo(r, true);
            ds.repos.push(repo);
        }
        for f in 0..ds.foreign.len() {
            ds.fill_foreign(f);
        }
        for r in 0..ds.repos.len() {
            ds.fill_hosted(r, &self);
        }
        ds
    }
}

/// A deterministic set of real signed NIP-34 events about repositories
/// announced on a set of relays, split into what a correct sync into the
/// service stores ([`Dataset::expected`]) and what it must never store
/// ([`Dataset::unrelated`]).
///
/// Per hosted repo: the announcement (listing every relay and the service in
/// `relays`, a GRASP clone URL on the service and a github one, a
/// maintainer); state events by the owner and by the maintainer; issues,
/// patches and pull requests (`a` tag); a status on every root (`e` only)
/// and an `a`+`e` status on the first; a repo comment (`A`+`a`) and a reply
/// to it that only has `A`; a note quoting the coordinate (`q`); per root, top-level
/// comments (`E`+`e`) each with a reply that only has `E`, and a note
/// quoting the root id (`q`). The first repo also has an issue whose first
/// `a` tag names a foreign repo and whose second names it.
///
/// Unrelated: every event of the foreign repos (announcement, state, issue,
/// comment, status, quote), a state event by a stranger that uses a hosted
/// repo's `d` (it matches the `#d` filter but must be refused), and a reply
/// that only `e`-tags a repo comment (not a root).
#[derive(Clone, Debug)]
pub struct Dataset {
    service: String,
    relays: Vec<String>,
    seed: u64,
    base_time: u64,
    repos: Vec<Repo>,
    foreign: Vec<Repo>,
    participants: Vec<Keys>,
    stranger: Keys,
    events: Vec<Event>,
    index: BTreeMap<EventId, usize>,
    expected: BTreeSet<EventId>,
    unrelated: BTreeSet<EventId>,
    counter: u64,
}

impl Dataset {
    /// A builder for repos announced on `relays` (URLs such as
    /// `ws://127.0.0.1:4242`) and hosted by `service` (a domain such as
    /// `git.example.com` or `127.0.0.1:7777`).
    pub fn builder<S: AsRef<str>>(service: &str, relays: &[S]) -> DatasetBuilder {
        DatasetBuilder {
            service: service.to_owned(),
            relays: relays.iter().map(|r| r.as_ref().to_owned()).collect(),
            seed: 1,
            base_time: DEFAULT_BASE_TIME,
            repos: 2,
            foreign_repos: 1,
            issues: 2,
            patches: 1,
            prs: 1,
            comments: 1,
        }
    }

    /// The service domain.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The relay URLs every announcement lists.
    pub fn relays(&self) -> &[String] {
        &self.relays
    }

    /// The base `created_at`.
    pub fn base_time(&self) -> u64 {
        self.base_time
    }

    /// Hosted repos (announcements list the service).
    pub fn repos(&self) -> &[Repo] {
        &self.repos
    }

    /// Foreign repos (announcements do not list the service).
    pub fn foreign_repos(&self) -> &[Repo] {
        &self.foreign
    }

    /// Every event, in a publishable order (announcements and roots before
    /// what refers to them).
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The event with this id, if it is part of the dataset.
    pub fn event(&self, id: &EventId) -> Option<&Event> {
        self.index.get(id).map(|&i| &self.events[i])
    }

    /// Every announcement, hosted and foreign.
    pub fn announcements(&self) -> Vec<Event> {
        self.events
            .iter()
            .filter(|e| e.kind.as_u16() == KIND_ANNOUNCEMENT)
            .cloned()
            .collect()
    }

    /// Root events of hosted repos (patches, pull requests, issues, including
    /// those added later).
    pub fn roots(&self) -> Vec<Event> {
        self.repos.iter().flat_map(|r| r.roots.clone()).collect()
    }

    /// Ids a correct sync into the service stores.
    pub fn expected(&self) -> BTreeSet<EventId> {
        self.expected.clone()
    }

    /// The events of [`Dataset::expected`], in dataset order.
    pub fn expected_events(&self) -> Vec<Event> {
        self.events
            .iter()
            .filter(|e| self.expected.contains(&e.id))
            .cloned()
            .collect()
    }

    /// Ids that must never be stored.
    pub fn unrelated(&self) -> BTreeSet<EventId> {
        self.unrelated.clone()
    }

    /// The events of [`Dataset::unrelated`], in dataset order.
    pub fn unrelated_events(&self) -> Vec<Event> {
        self.events
            .iter()
            .filter(|e| self.unrelated.contains(&e.id))
            .cloned()
            .collect()
    }

    /// Splits the events over `n` relays: every announcement goes to every
    /// part, every other event to exactly one part (round robin), so only a
    /// sync that reads every relay gets everything.
    pub fn partition(&self, n: usize) -> Vec<Vec<Event>> {
        let n = n.max(1);
        let mut parts = vec![Vec::new(); n];
        let mut next = 0;
        for e in &self.events {
            if e.kind.as_u16() == KIND_ANNOUNCEMENT {
                for p in &mut parts {
                    p.push(e.clone());
                }
            } else {
                parts[next % n].push(e.clone());
                next += 1;
            }
        }
        parts
    }

    /// Adds `bulk.count` extra expected events to a hosted repo and returns
    /// them (publish them wherever the test needs them).
    pub fn add_bulk(&mut self, bulk: Bulk) -> Vec<Event> {
        let newest = bulk.newest.unwrap_or(self.base_time + 86_400);
        let repo = bulk.repo;
        let mut out = Vec::with_capacity(bulk.count);
        for i in 0..bulk.count {
            let created_at = if i < bulk.same_second {
                newest
            } else {
                newest.saturating_sub((i - bulk.same_second + 1) as u64)
            };
            let issue = match bulk.kind {
                BulkKind::Issues => true,
                BulkKind::RootComments => false,
                BulkKind::Mixed => i % 2 == 0,
            };
            let ev = if issue {
                self.new_issue(repo, created_at)
            } else {
                self.new_root_comment(repo, created_at)
            };
            out.push(ev);
        }
        out
    }

    /// A new expected issue on hosted repo `repo` at `created_at` (it
    /// becomes one of the repo's roots).
    pub fn new_issue(&mut self, repo: usize, created_at: u64) -> Event {
        self.counter += 1;
        let n = self.counter;
        let r = &self.repos[repo];
        let author = self.participants[(n % 4) as usize].clone();
        let ev = signer().sign(
            &author,
            created_at,
            KIND_ISSUE,
            vec![
                tag(&["a", r.coord.as_str()]),
                tag(&["p", &r.owner.public_key().to_hex()]),
                tag(&["subject", &format!("extra issue {n}")]),
            ],
            &format!("extra issue {n} on {}", r.d),
        );
        self.repos[repo].roots.push(ev.clone());
        self.push(ev.clone(), true);
        ev
    }

    /// A new expected NIP-22 comment on the first root of hosted repo `repo`
    /// at `created_at` (`E` and `e` tags name the root).
    pub fn new_root_comment(&mut self, repo: usize, created_at: u64) -> Event {
        self.counter += 1;
        let n = self.counter;
        let author = self.participants[(n % 4) as usize].clone();
        let root = self.repos[repo]
            .roots
            .first()
            .expect("the repo has a root event")
            .clone();
        let ev = comment_on_root(&author, created_at, &root, &format!("extra comment {n}"));
        self.push(ev.clone(), true);
        ev
    }

    /// A fresh expected issue on hosted repo `repo`, created now (for live
    /// subscriptions and catch-up after a disconnect).
    pub fn live_issue(&mut self, repo: usize) -> Event {
        self.new_issue(repo, Timestamp::now().as_secs())
    }

    /// A fresh expected comment on the first root of hosted repo `repo`,
    /// created now.
    pub fn live_comment(&mut self, repo: usize) -> Event {
        self.new_root_comment(repo, Timestamp::now().as_secs())
    }

    fn push(&mut self, ev: Event, expected: bool) {
        let fresh = self.index.insert(ev.id, self.events.len()).is_none();
        assert!(fresh, "dataset made a duplicate event");
        if expected {
            self.expected.insert(ev.id);
        } else {
            self.unrelated.insert(ev.id);
        }
        self.events.push(ev);
    }

    fn make_repo(&mut self, n: usize, hosted: bool) -> Repo {
        let s = signer();
        let owner = s.keys(self.seed, 0x1000 + n as u64);
        let maintainer = s.keys(self.seed, 0x2000 + n as u64);
        let d = if hosted {
            format!("repo-{n}")
        } else {
            format!("foreign-{n}")
        };
        let coord = RepoCoord::new(owner.public_key(), d.clone());
        let npub = owner.public_key().to_bech32().expect("npub");
        let mut relays = vec!["relays".to_owned()];
        relays.extend(self.relays.iter().cloned());
        let mut clone = vec!["clone".to_owned()];
        if hosted {
            relays.push(format!("wss://{}", self.service));
            clone.push(format!("https://{}/{npub}/{d}.git", self.service));
        }
        clone.push(format!("https://github.com/example/{d}.git"));
        let t = self.base_time + (n as u64 % 1000) * 1000;
        let announcement = s.sign(
            &owner,
            t,
            KIND_ANNOUNCEMENT,
            vec![
                tag(&["d", &d]),
                tag(&["name", &d]),
                tag(&["description", &format!("test repository {d}")]),
                clone,
                relays,
                tag(&["maintainers", &maintainer.public_key().to_hex()]),
                tag(&["r", &commit(n as u64), "euc"]),
            ],
            "",
        );
        self.push(announcement.clone(), hosted);
        Repo {
            owner,
            maintainer,
            d,
            coord,
            hosted,
            announcement,
            roots: Vec::new(),
        }
    }

    fn state(&self, keys: &Keys, d: &str, t: u64, n: u64) -> Event {
        signer().sign(
            keys,
            t,
            KIND_STATE,
            vec![
                tag(&["d", d]),
                tag(&["refs/heads/main", &commit(n)]),
                tag(&["HEAD", "ref: refs/heads/main"]),
            ],
            "",
        )
    }

    fn fill_foreign(&mut self, f: usize) {
        let s = signer();
        let r = self.foreign[f].clone();
        let t = r.announcement.created_at.as_secs();
        let state = self.state(&r.owner, &r.d, t + 1, 9000 + f as u64);
        self.push(state, false);
        let issue = s.sign(
            &self.participants[0],
            t + 2,
            KIND_ISSUE,
            vec![
                tag(&["a", r.coord.as_str()]),
                tag(&["p", &r.owner.public_key().to_hex()]),
                tag(&["subject", "foreign issue"]),
            ],
            "an issue of a repo the service does not host",
        );
        self.foreign[f].roots.push(issue.clone());
        self.push(issue.clone(), false);
        let c = comment_on_root(&self.participants[1], t + 3, &issue, "foreign comment");
        self.push(c, false);
        let st = status(&r.owner, t + 4, STATUS_KINDS[2], &issue, None);
        self.push(st, false);
        let q = s.sign(
            &self.participants[2],
            t + 5,
            KIND_NOTE,
            vec![tag(&["q", r.coord.as_str()])],
            "quoting a foreign repo",
        );
        self.push(q, false);
    }

    fn fill_hosted(&mut self, ri: usize, sizes: &DatasetBuilder) {
        let s = signer();
        let r = self.repos[ri].clone();
        let owner_hex = r.owner.public_key().to_hex();
        let coord = r.coord.as_str().to_owned();
        let mut t = r.announcement.created_at.as_secs() + 1;
        let mut next_t = || {
            t += 1;
            t
        };

        // State: owner and maintainer (both may publish it).
        let st = self.state(&r.owner, &r.d, next_t(), 100 * ri as u64);
        self.push(st, true);
        let st = self.state(&r.maintainer, &r.d, next_t(), 100 * ri as u64 + 1);
        self.push(st, true);
        if ri == 0 {
            // A stranger's state under the same `d`: fetched by `#d`, refused.
            let st = self.state(&self.stranger.clone(), &r.d, next_t(), 666);
            self.push(st, false);
        }

        // Root events.
        let mut roots = Vec::new();
        for i in 0..sizes.issues {
            let author = &self.participants[i % 4];
            roots.push(s.sign(
                author,
                next_t(),
                KIND_ISSUE,
                vec![
                    tag(&["a", &coord]),
                    tag(&["p", &owner_hex]),
                    tag(&["subject", &format!("issue {i} of {}", r.d)]),
                    tag(&["t", "bug"]),
                ],
                &format!("issue {i}: something is broken in {}", r.d),
            ));
        }
        for i in 0..sizes.patches {
            let author = &self.participants[(i + 1) % 4];
            let c = commit(1000 * ri as u64 + i as u64);
            let p = commit(1000 * ri as u64 + i as u64 + 500);
            roots.push(s.sign(
                author,
                next_t(),
                KIND_PATCH,
                vec![
                    tag(&["a", &coord]),
                    tag(&["p", &owner_hex]),
                    tag(&["t", "root"]),
                    tag(&["commit", &c]),
                    tag(&["parent-commit", &p]),
                ],
                &format!(
                    "From {c} Mon Sep 17 00:00:00 2001\nSubject: [PATCH] fix {i}\n\n---\n a | 1 +\n"
                ),
            ));
        }
        for i in 0..sizes.prs {
            let author = &self.participants[(i + 2) % 4];
            roots.push(s.sign(
                author,
                next_t(),
                KIND_PULL_REQUEST,
                vec![
                    tag(&["a", &coord]),
                    tag(&["p", &owner_hex]),
                    tag(&["subject", &format!("pull request {i}")]),
                    tag(&["c", &commit(7000 + 1000 * ri as u64 + i as u64)]),
                    tag(&[
                        "clone",
                        &format!("https://{}/{}/{}.git", self.service, r.npub(), r.d),
                    ]),
                    tag(&["branch-name", &format!("feature-{i}")]),
                ],
                &format!("please merge feature {i}"),
            ));
        }
        if ri == 0 {
            if let Some(f) = self.foreign.first() {
                // The hosted repo is only in the second `a` tag.
                roots.push(s.sign(
                    &self.participants[3],
                    next_t(),
                    KIND_ISSUE,
                    vec![
                        tag(&["a", f.coord.as_str()]),
                        tag(&["a", &coord]),
                        tag(&["subject", "affects two repos"]),
                    ],
                    "cross-repo issue",
                ));
            }
        }
        for root in &roots {
            self.push(root.clone(), true);
        }
        self.repos[ri].roots.extend(roots.iter().cloned());

        // Repo-level comment (`A` + `a`) and a reply that only has `A`.
        let author = self.participants[1].clone();
        let repo_comment = s.sign(
            &author,
            next_t(),
            KIND_COMMENT,
            vec![
                tag(&["A", &coord]),
                tag(&["K", "30617"]),
                tag(&["P", &owner_hex]),
                tag(&["a", &coord]),
                tag(&["k", "30617"]),
                tag(&["p", &owner_hex]),
            ],
            "nice repo",
        );
        self.push(repo_comment.clone(), true);
        let reply = s.sign(
            &self.participants[2],
            next_t(),
            KIND_COMMENT,
            vec![
                tag(&["A", &coord]),
                tag(&["K", "30617"]),
                tag(&["P", &owner_hex]),
                tag(&[
                    "e",
                    &repo_comment.id.to_hex(),
                    "",
                    &author.public_key().to_hex(),
                ]),
                tag(&["k", "1111"]),
                tag(&["p", &author.public_key().to_hex()]),
            ],
            "agreed",
        );
        self.push(reply, true);
        if ri == 0 {
            // Only `e`-tags a comment (not a root): nothing to track it by.
            let orphan = s.sign(
                &self.stranger.clone(),
                next_t(),
                KIND_NOTE,
                vec![tag(&["e", &repo_comment.id.to_hex()])],
                "reply to a comment, no scope tags",
            );
            self.push(orphan, false);
        }
        // A note quoting the repo coordinate.
        let q = s.sign(
            &self.participants[3],
            next_t(),
            KIND_NOTE,
            vec![tag(&["q", &coord])],
            "look at this repo",
        );
        self.push(q, true);

        // Per root: statuses, comments with replies, a quote.
        for (i, root) in roots.iter().enumerate() {
            let st = status(
                &r.owner,
                next_t(),
                STATUS_KINDS[i % 4],
                root,
                None, // `e` only
            );
            self.push(st, true);
            if i == 0 {
                let st = status(&r.maintainer, next_t(), STATUS_KINDS[1], root, Some(&coord));
                self.push(st, true);
            }
            for c in 0..sizes.comments {
                let author = self.participants[(i + c) % 4].clone();
                let top = comment_on_root(&author, next_t(), root, &format!("comment {c}"));
                self.push(top.clone(), true);
                let other = &self.participants[(i + c + 1) % 4];
                let reply = s.sign(
                    other,
                    next_t(),
                    KIND_COMMENT,
                    vec![
                        tag(&["E", &root.id.to_hex(), "", &root.pubkey.to_hex()]),
                        tag(&["K", &root.kind.as_u16().to_string()]),
                        tag(&["P", &root.pubkey.to_hex()]),
                        tag(&["e", &top.id.to_hex(), "", &author.public_key().to_hex()]),
                        tag(&["k", "1111"]),
                        tag(&["p", &author.public_key().to_hex()]),
                    ],
                    &format!("reply to comment {c}"),
                );
                self.push(reply, true);
            }
            let q = s.sign(
                &self.participants[(i + 3) % 4],
                next_t(),
                KIND_NOTE,
                vec![tag(&["q", &root.id.to_hex()])],
                "quoting a root event",
            );
            self.push(q, true);
        }
    }
}

/// A top-level NIP-22 comment on a root event: `E`/`K`/`P` and `e`/`k`/`p`
/// all name the root.
fn comment_on_root(author: &Keys, created_at: u64, root: &Event, content: &str) -> Event {
    let id = root.id.to_hex();
    let pk = root.pubkey.to_hex();
    let k = root.kind.as_u16().to_string();
    signer().sign(
        author,
        created_at,
        KIND_COMMENT,
        vec![
            tag(&["E", &id, "", &pk]),
            tag(&["K", &k]),
            tag(&["P", &pk]),
            tag(&["e", &id, "", &pk]),
            tag(&["k", &k]),
            tag(&["p", &pk]),
        ],
        content,
    )
}

/// A status event on a root: `e` with the `root` marker, `p` of the root's
/// author, and an `a` tag when `coord` is given.
fn status(author: &Keys, created_at: u64, kind: u16, root: &Event, coord: Option<&str>) -> Event {
    let mut tags = vec![
        tag(&["e", &root.id.to_hex(), "", "root"]),
        tag(&["p", &root.pubkey.to_hex()]),
    ];
    if let Some(c) = coord {
        tags.push(tag(&["a", c]));
    }
    signer().sign(author, created_at, kind, tags, "")
}
