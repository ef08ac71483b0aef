//! The peer zoo: fake-relay profiles that behave as real relays do, from
//! `/work/shared/notes/test-relays.md` ("Behaviours of real peers a sync
//! engine must survive") and the relays' sources. [`Peer`] names them so
//! generated worlds can draw them; each constructor documents what it
//! imitates and where that was read.

use std::time::Duration;

use super::nip77::Nip77Behaviour;
use super::profile::{
    Bucket, DuplicateId, LimitScope, LimitZero, Profile, RefusalStyle, UntilStyle,
};

/// nostr-rs-relay's NOTICE for its 33rd subscription.
pub const NOSTR_RS_CAP_NOTICE: &str =
    "Subscription error: Maximum concurrent subscription count reached";
/// strfry's NOTICE over `maxSubsPerConnection`.
pub const STRFRY_CAP_NOTICE: &str = "ERROR: too many concurrent REQs";
/// rust-nostr LocalRelay's `CLOSED` over `max_reqs`.
pub const LOCAL_RELAY_CAP_CLOSED: &str = "rate-limited: too many REQs";
/// khatru's `CLOSED` from its filter rate limiter (`FilterIPRateLimiter`).
pub const KHATRU_FILTER_LIMIT: &str =
    "rate-limited: there is a bug in the client, no one should be making so many requests";
/// PyPI nostr-relay's NOTICE for its 33rd subscription (a `StorageError`).
pub const PYPI_CAP_NOTICE: &str = "rejected: too many subscriptions";

/// A real relay implementation the simulation imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// [`Profile::nostr_rs_relay`].
    NostrRsRelay,
    /// [`Profile::strfry`].
    Strfry,
    /// [`Profile::khatru`].
    Khatru,
    /// [`Profile::pypi_nostr_relay`].
    PypiNostrRelay,
    /// [`Profile::local_relay`] with a page cap and a cap on REQs.
    LocalRelay {
        /// `max_filter_limit`.
        cap: Option<usize>,
        /// `max_reqs`.
        max_reqs: usize,
    },
    /// [`Profile::nostr_relay_core`].
    NostrRelayCore,
}

impl Peer {
    /// The profile of this peer.
    pub fn profile(self) -> Profile {
        let profile = match self {
            Peer::NostrRsRelay => Profile::nostr_rs_relay(),
            Peer::Strfry => Profile::strfry(),
            Peer::Khatru => Profile::khatru(),
            Peer::PypiNostrRelay => Profile::pypi_nostr_relay(),
            Peer::LocalRelay { cap, max_reqs } => Profile::local_relay(cap, max_reqs),
            Peer::NostrRelayCore => Profile::nostr_relay_core(),
        };
        Profile {
            peer: Some(self),
            ..profile
        }
    }

    /// A short name (for messages).
    pub fn name(self) -> &'static str {
        match self {
            Peer::NostrRsRelay => "nostr-rs-relay",
            Peer::Strfry => "strfry",
            Peer::Khatru => "khatru",
            Peer::PypiNostrRelay => "pypi-nostr-relay",
            Peer::LocalRelay { .. } => "local-relay",
            Peer::NostrRelayCore => "nostr-relay-core",
        }
    }
}

impl Profile {
    /// nostr-rs-relay 0.8.12 (sqlite), as observed on 127.0.0.1 and read in
    /// its source: each filter is its own query (`ORDER BY created_at DESC
    /// LIMIT n`, no cap; no `limit`: everything), so an event matching two
    /// filters comes twice; `until` inclusive; a REQ identical to an open
    /// one is ignored silently (`has_subscription` compares id and filters;
    /// other filters replace it); a REQ whose filters all say `limit: 0`
    /// runs no query and gets no EOSE; 32 subscriptions, the 33rd gets a
    /// NOTICE; NEG-OPEN gets NOTICE "could not parse command"; NIP-11
    /// without limit numbers.
    pub fn nostr_rs_relay() -> Profile {
        Profile {
            page_cap: None,
            default_limit: usize::MAX,
            limit_scope: LimitScope::PerFilter,
            limit_zero: LimitZero::NoEose,
            until: UntilStyle::Inclusive,
            events_per_filter: true,
            duplicate_id: DuplicateId::IgnoreIdentical,
            max_subs: 32,
            publish_limits: false,
            nip11: true,
            refusal: RefusalStyle::Notice,
            refusal_message: Some(NOSTR_RS_CAP_NOTICE),
            nip77: Nip77Behaviour::Notice("could not parse command"),
            lists_nip77: false,
            ..Profile::default()
        }
    }

    /// strfry with its configuration defaults: `limit` clamped to 500
    /// (`maxFilterLimit`, also the default), published in NIP-11 with
    /// `max_subscriptions` 200 (`maxSubsPerConnection`); over it a REQ gets
    /// NOTICE "ERROR: too many concurrent REQs", not CLOSED; NIP-77
    /// answered (listed), NEG-ERR "blocked: too many query results" above
    /// 1,000,000 events (`maxSyncEvents`); events once per REQ.
    pub fn strfry() -> Profile {
        Profile {
            page_cap: Some(500),
            default_limit: 500,
            max_subs: 200,
            publish_limits: true,
            nip11: true,
            refusal: RefusalStyle::Notice,
            refusal_message: Some(STRFRY_CAP_NOTICE),
            nip77: Nip77Behaviour::Answer,
            lists_nip77: true,
            neg_max_items: Some(1_000_000),
            ..Profile::default()
        }
    }

    /// khatru with `policies.ApplySaneDefaults` (ngit-relay, the reference
    /// GRASP server, runs on it) over an eventstore backend: a per-IP
    /// bucket of 20 filters a minute with a burst of 100 (a filter with
    /// `limit: 0` asks for nothing and takes none); over it the REQ gets
    /// `CLOSED "rate-limited: …"`; connections limited to 1 per 5 minutes,
    /// burst 3 (HTTP 429); each filter queried on its own (events once per
    /// filter), `limit` clamped to the eventstore's `MaxLimit` of 500 (also
    /// the default); no subscription cap; negentropy off ("failed to parse
    /// envelope: unknown label"); NIP-11 without limits.
    pub fn khatru() -> Profile {
        Profile {
            page_cap: Some(500),
            default_limit: 500,
            events_per_filter: true,
            max_subs: usize::MAX,
            publish_limits: false,
            nip11: true,
            filter_limit: Some(Bucket::new(20, Duration::from_secs(60), 100)),
            filter_limit_message: KHATRU_FILTER_LIMIT,
            connect_limit: Some(Bucket::new(1, Duration::from_secs(300), 3)),
            nip77: Nip77Behaviour::Notice("failed to parse envelope: unknown label"),
            lists_nip77: false,
            ..Profile::default()
        }
    }

    /// The PyPI nostr-relay 1.14 (sqlite storage), from its source: one
    /// query per REQ (`WHERE (f1) OR (f2) … ORDER BY created_at DESC LIMIT
    /// n`, `n` the last non-zero `limit`, at most `max_limit` 6000, which is
    /// also the default), so `limit: 0` is ignored and events come once;
    /// `until` exclusive (`created_at < until`); the 33rd subscription gets
    /// NOTICE "rejected: too many subscriptions"; NEG-OPEN is ignored
    /// silently; NIP-11 served without limits.
    pub fn pypi_nostr_relay() -> Profile {
        Profile {
            page_cap: None,
            default_limit: 6000,
            limit_scope: LimitScope::Shared,
            limit_zero: LimitZero::Ignored,
            until: UntilStyle::Exclusive,
            max_subs: 32,
            publish_limits: false,
            nip11: true,
            refusal: RefusalStyle::Notice,
            refusal_message: Some(PYPI_CAP_NOTICE),
            nip77: Nip77Behaviour::Silent,
            lists_nip77: false,
            ..Profile::default()
        }
    }

    /// rust-nostr's LocalRelay (`nostr-relay-builder` 0.44), from its
    /// source: an explicit `limit` clamped to `max_filter_limit` (`cap`)
    /// silently, `{"ids"}` filters included (the engine asks them with a
    /// `limit`); no `limit`: 500; more than `max_reqs` subscriptions get
    /// `CLOSED "rate-limited: too many REQs"`; an `{"ids"}` REQ that got
    /// every id is closed after EOSE with `CLOSED ""`; events once per REQ;
    /// NIP-77 answered (not listed: no NIP-11 at all).
    pub fn local_relay(cap: Option<usize>, max_reqs: usize) -> Profile {
        Profile {
            page_cap: cap,
            ids_capped: true,
            default_limit: 500,
            closes_complete_ids: true,
            max_subs: max_reqs,
            publish_limits: false,
            nip11: false,
            refusal: RefusalStyle::Closed,
            refusal_message: Some(LOCAL_RELAY_CAP_CLOSED),
            nip77: Nip77Behaviour::Answer,
            lists_nip77: false,
            ..Profile::default()
        }
    }

    /// @nostr-relay/core 0.0.40 behind a small `ws` wrapper: an LRU of 20
    /// subscriptions, the 21st silently evicts the oldest; no `limit`: 100;
    /// `limit` silently capped at 1000; unknown verbs get NOTICE "invalid:
    /// unknown message type"; no NIP-11 (the wrapper writes none).
    pub fn nostr_relay_core() -> Profile {
        Profile {
            page_cap: Some(1000),
            default_limit: 100,
            max_subs: 20,
            refusal: RefusalStyle::Evict,
            publish_limits: false,
            nip11: false,
            nip77: Nip77Behaviour::Notice("invalid: unknown message type"),
            lists_nip77: false,
            ..Profile::default()
        }
    }
}
