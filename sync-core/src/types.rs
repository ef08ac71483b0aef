//! Small value types shared by every module: engine time, repo coordinates
//! and the target keys the planner works with.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use nostr::event::EventId;
use nostr::key::PublicKey;
use serde::{Deserialize, Serialize};

/// Wall-clock time in milliseconds since the Unix epoch, as given by the host.
///
/// The engine never reads a clock: every input carries one of these. Wall time
/// (not a monotonic instant) is needed because `since` filters are Unix
/// timestamps. A host whose clock steps backwards is tolerated: all arithmetic
/// saturates and deadlines simply fire late.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Time(u64);

impl Time {
    /// The Unix epoch.
    pub const ZERO: Time = Time(0);
    /// A time later than any real deadline.
    pub const NEVER: Time = Time(u64::MAX);

    /// From milliseconds since the Unix epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Time(ms)
    }

    /// From whole seconds since the Unix epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Time(secs.saturating_mul(1000))
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (rounded down).
    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// This time as a nostr timestamp (seconds).
    pub fn timestamp(self) -> nostr::types::Timestamp {
        nostr::types::Timestamp::from_secs(self.as_secs())
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        Time(
            self.0
                .saturating_add(d.as_millis().min(u64::MAX as u128) as u64),
        )
    }

    /// `self - d`, saturating at the epoch.
    pub fn minus(self, d: Duration) -> Self {
        Time(
            self.0
                .saturating_sub(d.as_millis().min(u64::MAX as u128) as u64),
        )
    }

    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// A fixed, seedless hasher (the Fx scheme: a word at a time), so that hash
/// maps behave identically on every run (the engine never iterates one to
/// produce output without sorting first).
#[derive(Clone, Copy, Debug, Default)]
pub struct FixedHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FixedHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl std::hash::Hasher for FixedHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash map with the deterministic [`FixedHasher`], for hot lookups by key.
pub type KeyMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FixedHasher>>;

/// A hash set with the deterministic [`FixedHasher`].
pub type KeySet<T> = std::collections::HashSet<T, std::hash::BuildHasherDefault<FixedHasher>>;

/// Kind number of a NIP-34 repository announcement.
pub const KIND_REPO_ANNOUNCEMENT: u16 = 30617;
/// Kind number of a NIP-34 repository state event.
pub const KIND_REPO_STATE: u16 = 30618;
/// Kind number of a NIP-34 patch.
pub const KIND_PATCH: u16 = 1617;
/// Kind number of a NIP-34 pull request.
pub const KIND_PULL_REQUEST: u16 = 1618;
/// Kind number of a NIP-34 issue.
pub const KIND_ISSUE: u16 = 1621;
/// Kind number of a NIP-09 deletion request.
pub const KIND_DELETION: u16 = 5;

/// Kinds the engine learns its catalog from: repository announcements,
/// patches, pull requests, issues and deletion requests.
pub const CATALOG_KINDS: [u16; 5] = [
    KIND_REPO_ANNOUNCEMENT,
    KIND_PATCH,
    KIND_PULL_REQUEST,
    KIND_ISSUE,
    KIND_DELETION,
];

/// Whether an event of this kind may change the catalog (one of
/// [`CATALOG_KINDS`]): what a host feeds as
/// [`Input::CatalogEvent`](crate::Input::CatalogEvent) once stored.
pub fn is_catalog_kind(kind: u16) -> bool {
    CATALOG_KINDS.contains(&kind)
}

/// True for the kinds that are root events (patch, pull request, issue).
pub fn is_root_kind(kind: u16) -> bool {
    matches!(kind, KIND_PATCH | KIND_PULL_REQUEST | KIND_ISSUE)
}

/// The coordinate of a repository announcement: `30617:<author-hex>:<d>`.
///
/// Its text form is computed once and kept: filters name coordinates by text,
/// and one coordinate appears in many filters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "RawCoord", into = "RawCoord")]
pub struct RepoCoord {
    /// Author of the announcement.
    pub author: PublicKey,
    /// The `d` identifier.
    pub identifier: String,
    text: Box<str>,
    /// The author's first 8 bytes: most comparisons end here (keys are
    /// random), without a call to compare whole keys.
    prefix: u64,
}

#[derive(Serialize, Deserialize)]
struct RawCoord {
    author: PublicKey,
    identifier: String,
}

impl From<RawCoord> for RepoCoord {
    fn from(raw: RawCoord) -> Self {
        RepoCoord::new(raw.author, raw.identifier)
    }
}

impl From<RepoCoord> for RawCoord {
    fn from(c: RepoCoord) -> Self {
        RawCoord {
            author: c.author,
            identifier: c.identifier,
        }
    }
}

const COORD_PREFIX: &str = "30617:";
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

impl RepoCoord {
    /// A coordinate from its parts.
    pub fn new(author: PublicKey, identifier: impl Into<String>) -> Self {
        let identifier = identifier.into();
        // Built by hand: `format!` with `to_hex` allocated twice per coordinate,
        // and coordinates are made for every tag of every event checked.
        let mut text = String::with_capacity(COORD_PREFIX.len() + 64 + 1 + identifier.len());
        text.push_str(COORD_PREFIX);
        for b in author.as_bytes() {
            text.push(HEX_DIGITS[usize::from(b >> 4)] as char);
            text.push(HEX_DIGITS[usize::from(b & 0x0f)] as char);
        }
        text.push(':');
        text.push_str(&identifier);
        Self::from_parts(author, identifier, text.into_boxed_str())
    }

    fn from_parts(author: PublicKey, identifier: String, text: Box<str>) -> Self {
        let mut first = [0u8; 8];
        first.copy_from_slice(&author.as_bytes()[..8]);
        RepoCoord {
            author,
            identifier,
            text,
            prefix: u64::from_be_bytes(first),
        }
    }

    /// The text form, `30617:<author-hex>:<d>`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for RepoCoord {
    fn eq(&self, other: &Self) -> bool {
        self.author == other.author && self.identifier == other.identifier
    }
}

impl Eq for RepoCoord {}

impl PartialOrd for RepoCoord {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RepoCoord {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Same order as comparing (author bytes, identifier): the prefix is
        // the author's first bytes, big-endian.
        self.prefix.cmp(&other.prefix).then_with(|| {
            (self.author.as_bytes(), &self.identifier)
                .cmp(&(other.author.as_bytes(), &other.identifier))
        })
    }
}

impl std::hash::Hash for RepoCoord {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.author.as_bytes().hash(state);
        self.identifier.hash(state);
    }
}

impl fmt::Display for RepoCoord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses a 64-digit hex event id (nostr's own parser accepts longer input).
pub fn parse_event_id(s: &str) -> Option<EventId> {
    if s.len() != 64 {
        return None;
    }
    EventId::from_hex(s).ok()
}

/// Why a string is not a repo coordinate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    /// Not of the form `30617:<hex>:<d>`.
    #[error("not a 30617 coordinate: {0:?}")]
    Shape(String),
    /// The author part is not a valid public key.
    #[error("bad author key in coordinate: {0:?}")]
    Author(String),
}

impl FromStr for RepoCoord {
    type Err = CoordError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ':');
        let (Some(kind), Some(author), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CoordError::Shape(s.to_owned()));
        };
        if kind != "30617" {
            return Err(CoordError::Shape(s.to_owned()));
        }
        // `from_hex` takes the first 32 bytes of longer input: insist on 64 digits.
        if author.len() != 64 {
            return Err(CoordError::Author(author.to_owned()));
        }
        let key = PublicKey::from_hex(author).map_err(|_| CoordError::Author(author.to_owned()))?;
        if author.bytes().any(|b| b.is_ascii_uppercase()) {
            return Ok(RepoCoord::new(key, d));
        }
        // Already the canonical text: keep it rather than writing it again.
        Ok(RepoCoord::from_parts(key, d.to_owned(), s.into()))
    }
}

/// One thing we keep in sync on a relay. Together with the relay it forms a
/// *target* (spec section 1).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TargetKey {
    /// Layer 1: announcements on this relay (`{"kinds":[30617]}`).
    Discovery,
    /// Layer 2: a tracked repository (shared, so a key costs one pointer).
    Repo(Arc<RepoCoord>),
    /// Layer 3: a root event (patch, pull request or issue) of a tracked repo.
    Root(EventId),
}

impl TargetKey {
    /// The layer this target belongs to.
    pub fn layer(&self) -> Layer {
        match self {
            TargetKey::Discovery => Layer::Discovery,
            TargetKey::Repo(_) => Layer::Repo,
            TargetKey::Root(_) => Layer::Root,
        }
    }
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetKey::Discovery => f.write_str("discovery"),
            TargetKey::Repo(c) => write!(f, "repo {c}"),
            TargetKey::Root(id) => write!(f, "root {}", id.to_hex()),
        }
    }
}

/// The three layers of spec section 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Layer {
    /// L1: per relay.
    Discovery,
    /// L2: per repo.
    Repo,
    /// L3: per root event.
    Root,
}

impl Layer {
    /// Every layer, in order.
    pub const ALL: [Layer; 3] = [Layer::Discovery, Layer::Repo, Layer::Root];

    /// The lower-case name (a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Discovery => "discovery",
            Layer::Repo => "repo",
            Layer::Root => "root",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

    #[test]
    fn a_coordinate_reads_and_writes_the_same_text() {
        let text = format!("30617:{KEY}:my-repo");
        let parsed: RepoCoord = text.parse().unwrap();
        let built = RepoCoord::new(PublicKey::from_hex(KEY).unwrap(), "my-repo");
        assert_eq!(parsed, built);
        assert_eq!(parsed.as_str(), text);
        assert_eq!(built.as_str(), text);
        assert_eq!(parsed.cmp(&built), std::cmp::Ordering::Equal);
    }

    #[test]
    fn an_uppercase_author_is_written_in_lowercase() {
        let upper = format!("30617:{}:r", KEY.to_uppercase());
        let parsed: RepoCoord = upper.parse().unwrap();
        assert_eq!(parsed.as_str(), format!("30617:{KEY}:r"));
    }

    #[test]
    fn malformed_coordinates_are_refused() {
        for bad in [
            "30617:abc:r",
            &format!("30618:{KEY}:r"),
            "30617",
            &format!("30617:{KEY}"),
        ] {
            assert!(bad.parse::<RepoCoord>().is_err(), "{bad}");
        }
    }
}
