//! NIP-77 negentropy (spec section 7): the initiator side of one filter's
//! reconciliation, what the engine remembers about a relay's support, and
//! the ids the store rejected (kept as items so they are not fetched again).
//!
//! The `negentropy` crate does the set reconciliation. It reads no clock and
//! draws no randomness; the one thing in it that is not deterministic is the
//! *order* of the needed ids it reports (it collects them through a
//! `HashSet`), so they are gathered into a sorted set here.
//!
//! The per-relay driving (NEG-OPEN, rounds, NEG-CLOSE, fetching the needed
//! ids, falling back to paged REQ) lives in the relay state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use negentropy::{Id, Negentropy, NegentropyStorageVector};
use nostr::event::EventId;
use nostr::filter::Filter;
use nostr::types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::types::Time;

/// One NIP-77 item: an event's id and its `created_at`, in the order
/// rust-nostr's `NostrDatabase::negentropy_items` returns them. Every item
/// list in this crate and in its host's store trait has this shape.
pub type LocalItem = (EventId, Timestamp);

/// Largest negentropy message we build (the crate's frame size limit): the
/// value strfry and nostr-sdk use (128 KiB halved for hex, minus JSON overhead).
pub const FRAME_SIZE_LIMIT: u64 = 60_000;

/// The smallest frame size limit the negentropy crate accepts.
pub const MIN_FRAME_SIZE_LIMIT: u64 = 4096;

/// The frame size limit for a reconciliation of `filter` with a relay that
/// takes messages of at most `max_message_length` bytes (NIP-11): our
/// messages are hex (twice the bytes) inside a JSON frame that also carries
/// the filter. Never above [`FRAME_SIZE_LIMIT`] nor below the crate's minimum.
pub fn frame_size_limit(max_message_length: Option<u32>, filter: &Filter) -> u64 {
    match max_message_length {
        None => FRAME_SIZE_LIMIT,
        Some(max) => {
            let overhead = filter.as_json().len() as u64 + 200;
            (u64::from(max).saturating_sub(overhead) / 2)
                .clamp(MIN_FRAME_SIZE_LIMIT, FRAME_SIZE_LIMIT)
        }
    }
}

/// How long a NEG-OPEN or NEG-MSG may go unanswered before the filter falls
/// back to paged REQ.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How many rejected ids the engine remembers (the oldest are forgotten first).
pub const REJECTED_MEMORY: usize = 10_000;

/// How long a rejected id is remembered: the store's verdict may change
/// (an event refused before its repository was known), so it is asked again
/// after this.
pub const REJECTED_TTL: Duration = Duration::from_secs(24 * 3600);

/// What the engine knows about a relay's NIP-77 support.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Nip77Support {
    /// Not known yet: the next reconciliation is a probe.
    #[default]
    Unknown,
    /// A reconciliation got an answer (or NIP-11 lists 77 and nothing failed).
    Supported,
    /// A reconciliation failed (NEG-ERR, refusal NOTICE, silence, a drop
    /// after NEG-OPEN): paged REQ until the daily pass probes again.
    Unsupported,
}

/// Why a reconciliation step failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Nip77Error {
    /// The relay's message is not lowercase hex.
    #[error("negentropy message is not hex")]
    Hex,
    /// The negentropy protocol failed (bad message, unsupported version, …).
    #[error("negentropy: {0}")]
    Protocol(String),
}

impl From<negentropy::Error> for Nip77Error {
    fn from(e: negentropy::Error) -> Self {
        Nip77Error::Protocol(e.to_string())
    }
}

/// The initiator of one filter's reconciliation: our items (sealed) and the
/// ids the relay has that we lack, gathered over the rounds.
#[derive(Clone, Debug)]
pub struct Reconciler {
    storage: NegentropyStorageVector,
    need: BTreeSet<EventId>,
    rounds: u32,
    frame_limit: u64,
}

impl Reconciler {
    /// A reconciler over our items (duplicates are fine).
    pub fn new(items: impl IntoIterator<Item = LocalItem>) -> Result<Self, Nip77Error> {
        let storage = sealed_storage(items)?;
        Ok(Reconciler {
            storage,
            need: BTreeSet::new(),
            rounds: 0,
            frame_limit: FRAME_SIZE_LIMIT,
        })
    }

    /// Builds our messages within `limit` bytes (before hex), clamped to
    /// what the crate accepts (see [`frame_size_limit`]).
    pub fn with_frame_limit(mut self, limit: u64) -> Self {
        self.frame_limit = limit.clamp(MIN_FRAME_SIZE_LIMIT, FRAME_SIZE_LIMIT);
        self
    }

    fn engine(&self) -> Result<Negentropy<'_, NegentropyStorageVector>, Nip77Error> {
        Ok(Negentropy::borrowed(&self.storage, self.frame_limit)?)
    }

    /// The initial message (hex) for NEG-OPEN.
    pub fn initiate(&self) -> Result<String, Nip77Error> {
        let mut neg = self.engine()?;
        Ok(to_hex(&neg.initiate()?))
    }

    /// Takes the relay's NEG-MSG (hex). Returns the next message to send, or
    /// `None` when the sets are reconciled (then send NEG-CLOSE).
    pub fn reconcile(&mut self, message: &str) -> Result<Option<String>, Nip77Error> {
        let query = from_hex(message)?;
        // The initiator keeps no state between rounds but its storage: a
        // fresh instance per round is the same as one kept alive.
        let mut neg = self.engine()?;
        neg.set_initiator();
        let mut have = Vec::new();
        let mut need = Vec::new();
        let next = neg.reconcile_with_ids(&query, &mut have, &mut need)?;
        self.rounds += 1;
        self.need.extend(
            need.iter()
                .map(|id| EventId::from_byte_array(id.to_bytes())),
        );
        Ok(next.map(|m| to_hex(&m)))
    }

    /// The ids the relay has and we lack, so far.
    pub fn need(&self) -> &BTreeSet<EventId> {
        &self.need
    }

    /// Takes the needed ids out.
    pub fn take_need(&mut self) -> BTreeSet<EventId> {
        std::mem::take(&mut self.need)
    }

    /// Rounds answered so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// Our items.
    pub fn len(&self) -> usize {
        use negentropy::NegentropyStorageBase;
        self.storage.size().unwrap_or(0)
    }

    /// True when we hold no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The relay side of one round: what a NIP-77 relay holding `items` answers
/// to `message` (hex in, hex out). The engine never needs it; simulated
/// relays and tests do.
pub fn respond(
    items: impl IntoIterator<Item = LocalItem>,
    message: &str,
) -> Result<String, Nip77Error> {
    let storage = sealed_storage(items)?;
    let mut neg = Negentropy::borrowed(&storage, FRAME_SIZE_LIMIT)?;
    Ok(to_hex(&neg.reconcile(&from_hex(message)?)?))
}

/// The negentropy storage of `items`, sealed.
fn sealed_storage(
    items: impl IntoIterator<Item = LocalItem>,
) -> Result<NegentropyStorageVector, Nip77Error> {
    let mut storage = NegentropyStorageVector::new();
    for (id, created_at) in items {
        storage.insert(created_at.as_secs(), Id::from_byte_array(id.to_bytes()))?;
    }
    storage.seal()?;
    Ok(storage)
}

/// The `{"ids":[…]}` filters that fetch `ids`, grouped into REQs: at most
/// `per_filter` ids per filter and `per_req` filters per REQ. Each filter's
/// `limit` is its id count, so relays with a small default limit send all.
pub fn id_requests(ids: &BTreeSet<EventId>, per_filter: u32, per_req: u32) -> Vec<Vec<Filter>> {
    let ids: Vec<EventId> = ids.iter().copied().collect();
    let filters: Vec<Filter> = ids
        .chunks(per_filter.max(1) as usize)
        .map(|c| Filter::new().ids(c.iter().copied()).limit(c.len()))
        .collect();
    filters
        .chunks(per_req.max(1) as usize)
        .map(|c| c.to_vec())
        .collect()
}

/// Ids the store rejected, with their `created_at`: added to every
/// reconciliation's items so that the relay does not offer them again.
/// Bounded: at most [`REJECTED_MEMORY`] ids, each for [`REJECTED_TTL`].
#[derive(Clone, Debug, Default)]
pub struct RejectedIds {
    by_id: BTreeMap<EventId, (u64, Time)>,
    order: VecDeque<EventId>,
}

impl RejectedIds {
    /// Remembers a rejected event.
    pub fn insert(&mut self, id: EventId, created_at: u64, now: Time) {
        if self.by_id.insert(id, (created_at, now)).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > REJECTED_MEMORY {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    /// Forgets ids rejected more than [`REJECTED_TTL`] before `now`.
    pub fn expire(&mut self, now: Time) {
        while let Some(id) = self.order.front() {
            match self.by_id.get(id) {
                Some((_, at)) if now.since(*at) < REJECTED_TTL => break,
                _ => {
                    if let Some(id) = self.order.pop_front() {
                        self.by_id.remove(&id);
                    }
                }
            }
        }
    }

    /// The remembered items with `created_at` at or after `since`.
    pub fn items(&self, since: Option<u64>) -> impl Iterator<Item = LocalItem> + '_ {
        self.by_id
            .iter()
            .filter(move |(_, (at, _))| since.is_none_or(|s| *at >= s))
            .map(|(id, (at, _))| (*id, Timestamp::from_secs(*at)))
    }

    /// Every remembered id with its `created_at` and rejection time, oldest
    /// rejection first (what a snapshot saves; [`RejectedIds::insert`] them
    /// in this order to restore).
    pub fn entries(&self) -> impl Iterator<Item = (EventId, u64, Time)> + '_ {
        self.order
            .iter()
            .filter_map(|id| self.by_id.get(id).map(|(at, when)| (*id, *at, *when)))
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

fn from_hex(s: &str) -> Result<Vec<u8>, Nip77Error> {
    let digit = |c: u8| -> Result<u8, Nip77Error> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(Nip77Error::Hex),
        }
    };
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return Err(Nip77Error::Hex);
    }
    b.chunks(2)
        .map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> EventId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_be_bytes());
        b[31] = 7;
        EventId::from_byte_array(b)
    }

    fn item(at: u64, n: u32) -> LocalItem {
        (id(n), Timestamp::from_secs(at))
    }

    fn run(ours: &[LocalItem], theirs: &[LocalItem]) -> (BTreeSet<EventId>, u32) {
        let mut r = Reconciler::new(ours.iter().copied()).unwrap();
        let mut msg = r.initiate().unwrap();
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(msg.len() as u64 <= 2 * FRAME_SIZE_LIMIT);
            let answer = respond(theirs.iter().copied(), &msg).unwrap();
            match r.reconcile(&answer).unwrap() {
                Some(next) => msg = next,
                None => break,
            }
        }
        (r.take_need(), rounds)
    }

    #[test]
    fn finds_exactly_what_we_lack() {
        let theirs: Vec<LocalItem> = (0..5000).map(|i| item(1000 + i as u64, i)).collect();
        let ours: Vec<LocalItem> = theirs
            .iter()
            .copied()
            .filter(|(_, at)| at.as_secs() % 100 != 0)
            .chain([item(5, 90_000)]) // one they lack: not our business
            .collect();
        let (need, rounds) = run(&ours, &theirs);
        let expected: BTreeSet<EventId> = theirs
            .iter()
            .filter(|(_, at)| at.as_secs() % 100 == 0)
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(need, expected);
        assert!(rounds <= 4, "{rounds} rounds");
    }

    #[test]
    fn equal_sets_need_nothing_and_empty_ours_needs_all() {
        let theirs: Vec<LocalItem> = (0..300).map(|i| item(i as u64, i)).collect();
        assert!(run(&theirs, &theirs).0.is_empty());
        assert_eq!(run(&[], &theirs).0.len(), 300);
    }

    #[test]
    fn messages_are_deterministic() {
        let items: Vec<LocalItem> = (0..2000).map(|i| item(i as u64 / 3, i)).collect();
        let a = Reconciler::new(items.iter().copied()).unwrap();
        let b = Reconciler::new(items.iter().rev().copied()).unwrap();
        assert_eq!(a.initiate().unwrap(), b.initiate().unwrap());
    }

    #[test]
    fn bad_messages_are_errors_not_panics() {
        let mut r = Reconciler::new([item(1, 1)]).unwrap();
        assert_eq!(r.reconcile("zz"), Err(Nip77Error::Hex));
        assert_eq!(r.reconcile("abc"), Err(Nip77Error::Hex));
        assert!(r.reconcile("").is_err());
        assert!(r.reconcile("62").is_err(), "another protocol version");
    }

    #[test]
    fn id_requests_stay_inside_the_budget() {
        let ids: BTreeSet<EventId> = (0..250).map(id).collect();
        let reqs = id_requests(&ids, 100, 2);
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].len(), 2);
        assert_eq!(reqs[1].len(), 1);
        let total: usize = reqs
            .iter()
            .flatten()
            .map(|f| f.ids.as_ref().map_or(0, |s| s.len()))
            .sum();
        assert_eq!(total, 250);
        assert!(id_requests(&BTreeSet::new(), 100, 2).is_empty());
    }

    #[test]
    fn rejected_ids_are_bounded_and_expire() {
        let mut r = RejectedIds::default();
        let t0 = Time::from_secs(1_000_000);
        for i in 0..(REJECTED_MEMORY as u32 + 10) {
            r.insert(id(i), u64::from(i), t0);
        }
        assert_eq!(r.len(), REJECTED_MEMORY);
        assert_eq!(r.items(Some(REJECTED_MEMORY as u64)).count(), 10);
        r.expire(t0.plus(REJECTED_TTL));
        assert!(r.is_empty());
    }

    #[test]
    fn frame_limits_follow_the_relays_message_limit() {
        let f = Filter::new().kinds([nostr::event::Kind::Custom(1621)]);
        assert_eq!(frame_size_limit(None, &f), FRAME_SIZE_LIMIT);
        assert_eq!(frame_size_limit(Some(1 << 20), &f), FRAME_SIZE_LIMIT);
        let small = frame_size_limit(Some(32_768), &f);
        assert!(small < 16_384 && small > 15_000, "{small}");
        assert_eq!(frame_size_limit(Some(100), &f), MIN_FRAME_SIZE_LIMIT);
        // Messages stay within the limit (hex is twice the bytes).
        let theirs: Vec<LocalItem> = (0..20_000).map(|i| item(i as u64, i)).collect();
        let mut r = Reconciler::new([]).unwrap().with_frame_limit(small);
        let first = r.initiate().unwrap();
        let answer = respond(theirs.iter().copied(), &first).unwrap();
        if let Some(next) = r.reconcile(&answer).unwrap() {
            assert!(next.len() as u64 <= 2 * small, "{}", next.len());
        }
    }
}
