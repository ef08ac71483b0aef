//! How a fake relay behaves: [`Profile`] and the closed sets of behaviours
//! it is made of. Each field is one behaviour seen on a real relay (see
//! `zoo` for the named profiles that combine them as real relays do);
//! `Profile::default()` is a plain, well-behaved NIP-01 relay.

use std::time::Duration;

use grasp_sync_core::Time;

use super::nip77::Nip77Behaviour;
use super::zoo::Peer;

/// How a fake relay says no when asked for more subscriptions than it allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalStyle {
    /// `CLOSED` for the refused REQ (rust-nostr LocalRelay:
    /// `"rate-limited: too many REQs"`).
    Closed,
    /// A `NOTICE` naming no subscription (strfry: "ERROR: too many
    /// concurrent REQs"; nostr-rs-relay: "Subscription error: Maximum
    /// concurrent subscription count reached").
    Notice,
    /// Nothing at all: the REQ is dropped.
    Silence,
    /// The LRU style (@nostr-relay/core): the oldest subscription is
    /// silently evicted and the new one served.
    Evict,
    /// The connection is dropped.
    Drop,
}

impl RefusalStyle {
    /// The text sent when a profile gives none.
    pub fn default_message(self) -> &'static str {
        match self {
            RefusalStyle::Closed => "rate-limited: too many subscriptions",
            RefusalStyle::Notice => "ERROR: too many concurrent REQs",
            RefusalStyle::Silence | RefusalStyle::Evict | RefusalStyle::Drop => "",
        }
    }
}

/// What a relay does with a REQ whose id is already open on the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DuplicateId {
    /// The new REQ replaces the old one and is answered (NIP-01).
    Replace,
    /// A REQ identical to the open one (same id, same filters) is ignored
    /// silently: no EVENT, EOSE, CLOSED or NOTICE; other filters replace it
    /// (nostr-rs-relay 0.8.12: "client sent duplicate subscription, ignoring").
    IgnoreIdentical,
    /// Any REQ on an open id is ignored silently.
    Ignore,
}

/// How a relay reads `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UntilStyle {
    /// `created_at <= until` (NIP-01).
    Inclusive,
    /// `created_at < until` (PyPI nostr-relay: `created_at < %d`).
    Exclusive,
}

/// What a relay does with `limit: 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitZero {
    /// No stored events, then EOSE (NIP-01).
    Honoured,
    /// No stored events; a REQ whose filters all say `limit: 0` never gets
    /// EOSE (nostr-rs-relay: no database query, so nothing ends it).
    NoEose,
    /// Read as no limit at all: stored events up to the default limit, then
    /// EOSE (PyPI nostr-relay: `if filter.limit:` is false for 0).
    Ignored,
}

/// How `limit` applies to a REQ of several filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitScope {
    /// Each filter gets its own `limit` (NIP-01).
    PerFilter,
    /// One query for the whole REQ: the filters are OR-ed and the last
    /// filter's non-zero `limit` (else the default) caps the union (PyPI
    /// nostr-relay's SQL: `WHERE (f1) OR (f2) … ORDER BY created_at DESC
    /// LIMIT n`).
    Shared,
}

/// A rate limiter as khatru writes it (`startRateLimitSystem`): a counter
/// that each use raises by one while below `max`, lowered by
/// `per_interval` every `interval`. A use at `max` is refused (and not
/// counted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Uses forgiven per interval.
    pub per_interval: u32,
    /// The interval.
    pub interval: Duration,
    /// Uses allowed in a burst.
    pub max: u32,
    level: u32,
    drained_at: Option<Time>,
}

impl Bucket {
    /// An empty bucket.
    pub fn new(per_interval: u32, interval: Duration, max: u32) -> Self {
        Bucket {
            per_interval,
            interval,
            max,
            level: 0,
            drained_at: None,
        }
    }

    /// One use at `now`: false when it is refused.
    pub fn take(&mut self, now: Time) -> bool {
        let anchor = *self.drained_at.get_or_insert(now);
        let step = self.interval.as_millis().max(1) as u64;
        let ticks = now.as_millis().saturating_sub(anchor.as_millis()) / step;
        if ticks > 0 {
            let forgiven = ticks.saturating_mul(u64::from(self.per_interval));
            self.level = self
                .level
                .saturating_sub(u32::try_from(forgiven).unwrap_or(u32::MAX));
            self.drained_at = Some(Time::from_millis(anchor.as_millis() + ticks * step));
        }
        if self.level < self.max {
            self.level += 1;
            true
        } else {
            false
        }
    }
}

/// The behaviour of a fake relay.
#[derive(Clone, Debug)]
pub struct Profile {
    /// The real relay this profile imitates, if any.
    pub peer: Option<Peer>,
    /// Silent cap on events per filter per REQ (whatever `limit` says; a
    /// clamp of `limit`).
    pub page_cap: Option<usize>,
    /// Whether the cap also applies to `{"ids": …}` filters (rust-nostr's
    /// LocalRelay clamps their explicit `limit` too).
    pub ids_capped: bool,
    /// Limit applied when a filter has none.
    pub default_limit: usize,
    /// How `limit` applies to a REQ of several filters.
    pub limit_scope: LimitScope,
    /// What `limit: 0` does.
    pub limit_zero: LimitZero,
    /// How `until` is read.
    pub until: UntilStyle,
    /// Whether an event matching several filters of one REQ is sent once
    /// per filter (nostr-rs-relay and khatru query each filter on its own).
    pub events_per_filter: bool,
    /// What a REQ on an open id does.
    pub duplicate_id: DuplicateId,
    /// A REQ of `{"ids"}` filters that brought every id asked is closed by
    /// the relay after its EOSE with `CLOSED ""` (rust-nostr's LocalRelay).
    pub closes_complete_ids: bool,
    /// Concurrent subscriptions allowed.
    pub max_subs: usize,
    /// Whether NIP-11 publishes `max_subscriptions` (and `max_limit`, the
    /// page cap, and `max_filters`).
    pub publish_limits: bool,
    /// Whether the relay serves NIP-11 at all.
    pub nip11: bool,
    /// What happens over `max_subs`.
    pub refusal: RefusalStyle,
    /// The text of that refusal (default: [`RefusalStyle::default_message`]).
    pub refusal_message: Option<&'static str>,
    /// The first N REQs are answered `CLOSED "rate-limited: slow down"`.
    pub rate_limit_first: u32,
    /// A per-client rate limit on filters (khatru's `FilterIPRateLimiter`):
    /// each filter of a REQ that asks for stored events takes one use; the
    /// first refused one fails the REQ with `CLOSED` and `filter_limit_message`.
    /// It outlives connections (it is per IP).
    pub filter_limit: Option<Bucket>,
    /// The text of that refusal.
    pub filter_limit_message: &'static str,
    /// A per-client rate limit on connections (khatru's
    /// `ConnectionRateLimiter`): a refused connection fails (HTTP 429).
    pub connect_limit: Option<Bucket>,
    /// One-way latency.
    pub latency: Duration,
    /// Filters allowed in one REQ (published with the limits); more gets
    /// `CLOSED "error: too many filters"`.
    pub max_filters: Option<usize>,
    /// NIP-42: sends an AUTH challenge on connect and refuses REQs with
    /// `CLOSED "auth-required: …"` until the client has authenticated.
    pub auth: bool,
    /// How it treats NEG-OPEN (NIP-77).
    pub nip77: Nip77Behaviour,
    /// Whether NIP-11 lists 77 in `supported_nips`.
    pub lists_nip77: bool,
    /// NEG-OPEN over a filter matching more events than this gets
    /// `NEG-ERR "blocked: too many query results"` (strfry's
    /// `maxSyncEvents`, 1,000,000 by default).
    pub neg_max_items: Option<usize>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            peer: None,
            page_cap: None,
            ids_capped: true,
            default_limit: 500,
            limit_scope: LimitScope::PerFilter,
            limit_zero: LimitZero::Honoured,
            until: UntilStyle::Inclusive,
            events_per_filter: false,
            duplicate_id: DuplicateId::Replace,
            closes_complete_ids: false,
            max_subs: 32,
            publish_limits: false,
            nip11: true,
            refusal: RefusalStyle::Closed,
            refusal_message: None,
            rate_limit_first: 0,
            filter_limit: None,
            filter_limit_message: "rate-limited: slow down",
            connect_limit: None,
            latency: Duration::from_millis(20),
            auth: false,
            max_filters: None,
            nip77: Nip77Behaviour::Unknown,
            lists_nip77: false,
            neg_max_items: None,
        }
    }
}

impl Profile {
    /// The text of a refusal over `max_subs`.
    pub fn refusal_text(&self) -> &'static str {
        self.refusal_message
            .unwrap_or_else(|| self.refusal.default_message())
    }

    /// The `limit` a filter gets: what it asked (or the default), `limit:
    /// 0` as the profile reads it, clamped by the page cap.
    pub fn effective_limit(&self, limit: Option<usize>, has_ids: bool) -> usize {
        let n = match limit {
            None => self.default_limit,
            Some(0) if self.limit_zero == LimitZero::Ignored => self.default_limit,
            Some(n) => n,
        };
        match self.page_cap {
            Some(cap) if self.ids_capped || !has_ids => n.min(cap),
            _ => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_then_the_rate() {
        let mut b = Bucket::new(20, Duration::from_secs(60), 100);
        let t0 = Time::from_secs(1_000);
        assert_eq!((0..150).filter(|_| b.take(t0)).count(), 100);
        // 59 s later nothing was forgiven yet; at 60 s twenty uses were.
        assert!(!b.take(t0.plus(Duration::from_secs(59))));
        let t1 = t0.plus(Duration::from_secs(60));
        assert_eq!((0..50).filter(|_| b.take(t1)).count(), 20);
        // Ten idle minutes empty it.
        let t2 = t1.plus(Duration::from_secs(600));
        assert_eq!((0..150).filter(|_| b.take(t2)).count(), 100);
    }

    #[test]
    fn effective_limits() {
        let p = Profile {
            page_cap: Some(100),
            ids_capped: false,
            limit_zero: LimitZero::Ignored,
            default_limit: 6000,
            ..Profile::default()
        };
        assert_eq!(p.effective_limit(Some(500), false), 100);
        assert_eq!(p.effective_limit(Some(500), true), 500);
        assert_eq!(p.effective_limit(Some(0), true), 6000);
        assert_eq!(p.effective_limit(None, false), 100);
    }
}
