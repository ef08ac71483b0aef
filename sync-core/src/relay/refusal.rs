//! What a relay's refusals say (spec section 5): the `CLOSED` prefix read
//! leniently into a [`Refusal`], a `NOTICE` classified by its words, the
//! REQs a `NOTICE` refusal was [`Blamed`] on, and the rate-limit
//! [`Cooldown`] that doubles on repeats.
//!
//! What each refusal does to the relay's work is the relay's routing table
//! (`Relay::refuse`); this module only reads what was said.

use std::collections::VecDeque;

use nostr::message::SubscriptionId;

use super::stats::RefusalReason;
use crate::backoff::exponential;
use crate::config::Timing;
use crate::types::Time;

/// What a `CLOSED` message says, by its NIP-01 machine-readable prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `rate-limited:` — cool down, then the same work again.
    RateLimited,
    /// Too many subscriptions at once (`rate-limited: too many REQs`,
    /// strfry's NOTICE "too many concurrent REQs"): hold fewer, and retry
    /// at once — no cool-down, the relay is counting, not throttling.
    TooManySubscriptions,
    /// `auth-required:` — AUTH first, if we can.
    AuthRequired,
    /// `restricted:` or `blocked:` — not for us until the daily pass.
    Restricted(RefusalReason),
    /// `error:`, `invalid:` or `unsupported:` — split the work once.
    Malformed(RefusalReason),
    /// Anything else — retry with backoff.
    Other,
}

impl Refusal {
    /// Reads the prefix of a `CLOSED` message: case-insensitive, spaces
    /// around it ignored; an unknown or missing prefix is [`Refusal::Other`].
    pub fn from_closed(message: &str) -> Refusal {
        let prefix = message
            .split_once(':')
            .map(|(p, _)| p.trim().to_ascii_lowercase());
        match prefix.as_deref() {
            Some("rate-limited") if mentions_concurrency(message) => Refusal::TooManySubscriptions,
            Some("rate-limited") => Refusal::RateLimited,
            Some("auth-required") => Refusal::AuthRequired,
            Some("restricted") => Refusal::Restricted(RefusalReason::Restricted),
            Some("blocked") => Refusal::Restricted(RefusalReason::Blocked),
            Some("error") => Refusal::Malformed(RefusalReason::Error),
            Some("invalid") => Refusal::Malformed(RefusalReason::Invalid),
            Some("unsupported") => Refusal::Malformed(RefusalReason::Unsupported),
            _ => Refusal::Other,
        }
    }

    /// The counted reason.
    pub fn reason(self) -> RefusalReason {
        match self {
            Refusal::RateLimited => RefusalReason::RateLimited,
            Refusal::TooManySubscriptions => RefusalReason::TooManySubscriptions,
            Refusal::AuthRequired => RefusalReason::AuthRequired,
            Refusal::Restricted(r) | Refusal::Malformed(r) => r,
            Refusal::Other => RefusalReason::Other,
        }
    }
}

/// What a `NOTICE` may be saying. A NOTICE names no subscription, so the
/// relay blames it on the latest unanswered request of the matching kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Notice {
    /// Reads like a refusal of NIP-77 (strfry's "ERROR: bad msg: unknown
    /// cmd", nostr-rs-relay's "could not parse command", …).
    pub refuses_nip77: bool,
    /// Reads like a refusal of a REQ: a rate limit, or a subscription cap.
    pub refuses_req: Option<Refusal>,
}

/// Phrases of a NOTICE (or `CLOSED rate-limited:`) refusing a REQ for the
/// number of subscriptions open, not for the rate of requests.
const CONCURRENCY_REFUSALS: [&str; 8] = [
    "concurrent",
    "too many reqs",
    "too many subscriptions",
    "too many open",
    "max subscriptions",
    "maximum subscriptions",
    "subscription limit",
    "subscriptions limit",
];

/// Phrases of a NOTICE refusing a REQ for the rate of requests.
const RATE_REFUSALS: [&str; 5] = [
    "too many",
    "rate limit",
    "rate-limit",
    "ratelimit",
    "slow down",
];

/// Phrases of a NOTICE refusing negentropy.
const NIP77_REFUSALS: [&str; 8] = [
    "negentropy",
    "neg-",
    "unknown",
    "not supported",
    "unsupported",
    "bad msg",
    "could not parse",
    "invalid message",
];

fn mentions_concurrency(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    CONCURRENCY_REFUSALS.iter().any(|p| m.contains(p))
}

impl Notice {
    /// Classifies a NOTICE by its words (case-insensitive).
    pub fn classify(message: &str) -> Notice {
        let m = message.to_ascii_lowercase();
        let refuses_req = if CONCURRENCY_REFUSALS.iter().any(|p| m.contains(p)) {
            Some(Refusal::TooManySubscriptions)
        } else if RATE_REFUSALS.iter().any(|p| m.contains(p)) {
            Some(Refusal::RateLimited)
        } else {
            None
        };
        Notice {
            refuses_nip77: NIP77_REFUSALS.iter().any(|p| m.contains(p)),
            refuses_req,
        }
    }
}

/// REQs a NOTICE refusal was blamed on (and closed). A NOTICE names no
/// subscription, so the blame is a guess: should the relay answer a blamed
/// REQ after all, it was not the refused one, and the blame moves on. The
/// most recent few are remembered, with their place in the sending order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Blamed {
    recent: VecDeque<(SubscriptionId, u64, Refusal)>,
}

/// How many blamed REQs are remembered.
const KEEP_BLAMED: usize = 64;

impl Blamed {
    /// `refusal` is blamed on `sub`, the `seq`-th REQ sent.
    pub fn blame(&mut self, sub: &SubscriptionId, seq: u64, refusal: Refusal) {
        if self.recent.len() == KEEP_BLAMED {
            self.recent.pop_front();
        }
        self.recent.push_back((sub.clone(), seq, refusal));
    }

    /// The relay answered `sub`, which a refusal was blamed on: the blame
    /// was wrong. Its place in the sending order and the refusal.
    pub fn take(&mut self, sub: &SubscriptionId) -> Option<(u64, Refusal)> {
        let i = self.recent.iter().position(|(s, _, _)| s == sub)?;
        self.recent.remove(i).map(|(_, seq, r)| (seq, r))
    }

    /// The connection ended: no REQ of it can be answered any more.
    pub fn clear(&mut self) {
        self.recent.clear();
    }
}

/// A rate-limit cool-down: nothing new is sent until it ends. It starts at
/// `rate_limit_cooldown` and doubles with each strike, up to a cap; an
/// answered request or the daily pass forgives the strikes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cooldown {
    until: Option<Time>,
    strikes: u32,
}

impl Cooldown {
    /// A refusal at `now`: cool down (longer than any cool-down under way).
    pub fn start(&mut self, now: Time, t: &Timing) {
        let d = exponential(
            t.rate_limit_cooldown,
            t.rate_limit_cooldown_max,
            self.strikes,
        );
        self.strikes = self.strikes.saturating_add(1);
        let until = now.plus(d);
        self.until = Some(self.until.map_or(until, |c| c.max(until)));
    }

    /// Cooling down at `now`.
    pub fn active(&self, now: Time) -> bool {
        self.until.is_some_and(|c| c > now)
    }

    /// The end of a cool-down still running at `now`.
    pub fn active_until(&self, now: Time) -> Option<Time> {
        self.until.filter(|c| *c > now)
    }

    /// The end of the cool-down, until a timer clears it.
    pub fn until(&self) -> Option<Time> {
        self.until
    }

    /// Clears a cool-down that ended by `now`.
    pub fn expire(&mut self, now: Time) {
        if self.until.is_some_and(|c| c <= now) {
            self.until = None;
        }
    }

    /// The relay answered: the next refusal starts from the shortest cool-down.
    pub fn forgive(&mut self) {
        self.strikes = 0;
    }

    /// The connection ended: no cool-down (strikes are kept).
    pub fn end(&mut self) {
        self.until = None;
    }

    pub fn strikes(&self) -> u32 {
        self.strikes
    }

    pub fn restore(&mut self, strikes: u32) {
        self.strikes = strikes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_prefixes_are_read_leniently() {
        let cases = [
            ("rate-limited: slow down", Refusal::RateLimited),
            (" Rate-Limited : slow", Refusal::RateLimited),
            ("rate-limited: too many REQs", Refusal::TooManySubscriptions),
            (
                "rate-limited: max subscriptions reached",
                Refusal::TooManySubscriptions,
            ),
            ("auth-required: who are you", Refusal::AuthRequired),
            (
                "restricted: no",
                Refusal::Restricted(RefusalReason::Restricted),
            ),
            (
                "blocked: go away",
                Refusal::Restricted(RefusalReason::Blocked),
            ),
            (
                "error: too complex",
                Refusal::Malformed(RefusalReason::Error),
            ),
            (
                "INVALID: bad filter",
                Refusal::Malformed(RefusalReason::Invalid),
            ),
            (
                "unsupported: #q",
                Refusal::Malformed(RefusalReason::Unsupported),
            ),
            ("duplicate: already open", Refusal::Other),
            ("no prefix at all", Refusal::Other),
            ("", Refusal::Other),
        ];
        for (message, want) in cases {
            assert_eq!(Refusal::from_closed(message), want, "{message:?}");
        }
        assert_eq!(Refusal::Other.reason(), RefusalReason::Other);
        assert_eq!(
            Refusal::Restricted(RefusalReason::Blocked)
                .reason()
                .as_str(),
            "blocked"
        );
    }

    #[test]
    fn notices_are_classified_by_their_words() {
        let cases = [
            // strfry over maxSubsPerConnection
            (
                "ERROR: too many concurrent REQs",
                Some(Refusal::TooManySubscriptions),
            ),
            // nostr-rs-relay over its 32 subscriptions
            (
                "Maximum concurrent subscription count reached",
                Some(Refusal::TooManySubscriptions),
            ),
            ("Slow down, please", Some(Refusal::RateLimited)),
            ("rate limit exceeded", Some(Refusal::RateLimited)),
            ("too many requests", Some(Refusal::RateLimited)),
            ("hello", None),
            ("could not parse command", None),
        ];
        for (message, want) in cases {
            assert_eq!(Notice::classify(message).refuses_req, want, "{message:?}");
        }
        for nip77 in [
            "ERROR: bad msg: unknown cmd",
            "negentropy disabled",
            "unknown or malformed message",
            "could not parse command",
        ] {
            assert!(Notice::classify(nip77).refuses_nip77, "{nip77}");
        }
        assert!(!Notice::classify("ERROR: too many concurrent REQs").refuses_nip77);
    }

    #[test]
    fn cooldowns_double_to_the_cap_and_never_shorten() {
        let t = Timing::default();
        let at = Time::from_secs;
        let mut c = Cooldown::default();
        c.start(at(0), &t);
        assert_eq!(c.until(), Some(at(65)));
        c.start(at(0), &t);
        assert_eq!(c.until(), Some(at(130)));
        assert!(c.active(at(129)) && !c.active(at(130)));
        assert_eq!(c.active_until(at(10)), Some(at(130)));
        c.expire(at(100));
        assert!(c.until().is_some(), "not over yet");
        c.expire(at(130));
        assert_eq!(c.until(), None);
        for _ in 0..20 {
            c.start(at(1000), &t);
        }
        assert_eq!(c.until(), Some(at(1000 + 30 * 60)), "capped");
        c.forgive();
        c.end();
        c.start(at(5000), &t);
        assert_eq!(c.until(), Some(at(5065)));
    }
}
