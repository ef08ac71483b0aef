//! The vocabulary of an `engine_inputs` case: the steps and the choices they
//! are decoded into (relays, subscriptions, time jumps, store answers,
//! configurations), and the canned pools they pick from.

use arbitrary::Arbitrary;
use grasp_sync_core::{Config, RelayUrl, ServiceId};

use crate::fixtures::SERVICE;

/// Relays the steps pick from: plain, with a path and query, IPv6 and
/// private literals, unicode, our own service, and spellings that
/// normalise to another entry.
pub(super) const RELAY_POOL: [&str; 10] = [
    "wss://r0.example",
    "wss://r1.example",
    "wss://r2.example/nostr?x=1",
    "ws://127.0.0.1:7000",
    "wss://[::1]:8443",
    "wss://xn--nicode-3ya.example",
    "wss://git.example.com",
    "WSS://R0.EXAMPLE:443/",
    "ws://10.1.2.3",
    "wss://r3.example:7777",
];

/// Canned relay texts: every machine-readable prefix and common NOTICEs.
pub(super) const MESSAGES: [&str; 12] = [
    "rate-limited: slow down",
    "auth-required: sign in",
    "restricted: members only",
    "blocked: go away",
    "error: too many filters",
    "invalid: bad filter",
    "unsupported: filter",
    "duplicate: already",
    "pow: 20 bits",
    "ERROR: too many concurrent REQs",
    "",
    "weird: unknown prefix",
];

pub(super) const EVENT_KINDS: [u16; 10] = [30617, 30618, 1617, 1618, 1621, 1111, 1630, 5, 1, 22242];

/// A relay named by a step.
#[derive(Arbitrary, Clone, Debug)]
pub enum RelayChoice {
    /// An entry of the pool.
    Pool(u8),
    /// Any text (the pool's first entry when it does not parse).
    Raw(String),
}

impl RelayChoice {
    pub(super) fn text(&self) -> String {
        match self {
            RelayChoice::Pool(i) => RELAY_POOL[*i as usize % RELAY_POOL.len()].to_owned(),
            RelayChoice::Raw(s) => s.clone(),
        }
    }

    pub(super) fn url(&self) -> RelayUrl {
        RelayUrl::parse(&self.text())
            .or_else(|_| RelayUrl::parse(RELAY_POOL[0]))
            .expect("the pool's first relay parses")
    }
}

/// A relay list entry of an announcement.
#[derive(Arbitrary, Clone, Debug)]
pub enum ListedRelay {
    /// One relay (pool or raw text).
    One(RelayChoice),
    /// Many distinct relays (past the per-announcement cap).
    Many(u8),
    /// A private address of some shape.
    Private(u8),
}

/// A numeric limit in a NIP-11 document.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Limit {
    /// Absent.
    Absent,
    /// 0 (means "none" to the engine).
    Zero,
    /// 1.
    One,
    /// A small number.
    Small(u8),
    /// Anything.
    Any(u32),
}

impl Limit {
    pub(super) fn value(self) -> Option<u32> {
        match self {
            Limit::Absent => None,
            Limit::Zero => Some(0),
            Limit::One => Some(1),
            Limit::Small(n) => Some(u32::from(n)),
            Limit::Any(n) => Some(n),
        }
    }
}

/// A subscription id named by a step.
#[derive(Arbitrary, Clone, Debug)]
pub enum SubChoice {
    /// One the engine opened on that relay (counted back from the latest).
    Recent(u8),
    /// Any text.
    MadeUp(String),
}

/// A time step.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Jump {
    /// Milliseconds forward.
    Millis(u16),
    /// Seconds forward.
    Secs(u16),
    /// Hours forward.
    Hours(u8),
    /// Days forward.
    Days(u8),
    /// Seconds backward.
    BackSecs(u16),
    /// Hours backward.
    BackHours(u8),
    /// To the engine's next wakeup.
    Wakeup,
}

/// What the host's store does with an accepted event.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum StoreChoice {
    /// Nothing reported (verification failed).
    Invalid,
    /// Stored (new).
    Stored,
    /// Already there.
    Duplicate,
    /// The store refused it.
    Rejected,
}

/// An event a relay sends.
#[derive(Arbitrary, Clone, Debug)]
pub struct EventChoice {
    pub(super) kind: u8,
    pub(super) author: u8,
    pub(super) repo: u8,
    /// Seconds before (or after, when negative) now.
    pub(super) age: i32,
    /// Reply to a root fed earlier (by index).
    pub(super) root: Option<u8>,
    pub(super) content: String,
}

/// One step of a scenario.
#[derive(Arbitrary, Clone, Debug)]
pub enum Step {
    /// `Input::Tick`.
    Tick,
    /// Time passes (or runs backwards), then a tick.
    Jump(Jump),
    /// An announcement the host stored.
    Announce {
        /// Author number.
        author: u8,
        /// Repo number (its `d` tag), or a raw `d`.
        repo: u8,
        /// A raw `d` instead.
        raw_d: Option<String>,
        /// Seconds before now.
        age: i32,
        /// The `relays` tag.
        relays: Vec<ListedRelay>,
        /// `clone` URLs on these hosts (GRASP-shaped).
        clones: Vec<RelayChoice>,
        /// Whether it lists our service.
        lists_service: bool,
        /// Maintainers (author numbers).
        maintainers: Vec<u8>,
        /// A second `relays` tag.
        second_tag: bool,
    },
    /// Many repos at once (one author each), all listing the same relays:
    /// the way to relays with more work than their budget holds at once.
    AnnounceMany {
        /// The first repo number.
        first: u8,
        /// How many repos.
        count: u8,
        /// Their relays.
        relays: Vec<RelayChoice>,
        /// Whether they list our service.
        lists_service: bool,
    },
    /// A root event the host stored.
    Root(EventChoice),
    /// A deletion the host stored, of a repo and maybe a root.
    Delete {
        /// Author number.
        author: u8,
        /// Repo number.
        repo: u8,
        /// A root fed earlier.
        root: Option<u8>,
    },
    /// A NIP-11 document.
    Info {
        /// The relay.
        relay: RelayChoice,
        /// `max_subscriptions`.
        max_subscriptions: Limit,
        /// `max_filters`.
        max_filters: Limit,
        /// `max_limit`.
        max_limit: Limit,
        /// `max_message_length`.
        max_message_length: Limit,
        /// `auth_required`.
        auth_required: bool,
        /// `supported_nips`.
        nips: Vec<u16>,
    },
    /// The websocket opened.
    Connected(RelayChoice),
    /// The attempt failed.
    ConnectFailed(RelayChoice),
    /// The websocket closed.
    Disconnected(RelayChoice),
    /// An `EVENT`, verified, then stored as the host would.
    Event {
        /// The relay.
        relay: RelayChoice,
        /// Its subscription.
        sub: SubChoice,
        /// The event.
        event: EventChoice,
        /// The store's answer.
        store: StoreChoice,
    },
    /// An `EVENT` that failed verification.
    EventInvalid(RelayChoice),
    /// A store answer out of the blue.
    EventStored(RelayChoice, StoreChoice),
    /// `EOSE`.
    Eose(RelayChoice, SubChoice),
    /// `EOSE` for every subscription the engine opened on the relay.
    EoseAll(RelayChoice),
    /// `CLOSED` with a canned or raw message.
    Closed {
        /// The relay.
        relay: RelayChoice,
        /// The subscription.
        sub: SubChoice,
        /// Index into the canned messages.
        message: u8,
        /// A raw message instead.
        raw: Option<String>,
    },
    /// `NOTICE`.
    Notice(RelayChoice, u8),
    /// `AUTH` challenge.
    AuthChallenge(RelayChoice, String),
    /// `OK` for our AUTH event.
    AuthResult(RelayChoice, bool),
    /// The host restarts the engine from its snapshot.
    Restart,
    /// The host's answer to a NIP-77 local-items query.
    LocalItems {
        /// The relay.
        relay: RelayChoice,
        /// Which query it answers.
        request: RequestChoice,
        /// The items (`None`: the store could not answer).
        items: Option<Vec<ItemChoice>>,
    },
    /// `NEG-MSG`.
    NegMsg {
        /// The relay.
        relay: RelayChoice,
        /// Its subscription.
        sub: SubChoice,
        /// What it says.
        payload: NegPayload,
    },
    /// `NEG-ERR`.
    NegErr {
        /// The relay.
        relay: RelayChoice,
        /// Its subscription.
        sub: SubChoice,
        /// The reason.
        message: String,
    },
}

/// Which local-items query an answer is for.
#[derive(Arbitrary, Clone, Debug)]
pub enum RequestChoice {
    /// One the engine asked on that relay (counted back from the latest).
    Recent(u8),
    /// Any number.
    MadeUp(u64),
}

/// A NIP-77 item (`(id, created_at)`, a `LocalItem`).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum ItemChoice {
    /// A root fed earlier, at its age.
    Root(u8, i32),
    /// A made-up id.
    MadeUp(u8, i32),
}

/// The payload of a `NEG-MSG`.
#[derive(Arbitrary, Clone, Debug)]
pub enum NegPayload {
    /// What a NIP-77 relay holding these items answers to the last message
    /// the engine sent on that subscription (the negentropy crate as
    /// responder).
    Respond(Vec<ItemChoice>),
    /// Arbitrary bytes, hex-encoded.
    Bytes(Vec<u8>),
    /// Any text.
    Raw(String),
}

/// The engine's configuration.
#[derive(Arbitrary, Clone, Debug, Default)]
pub struct ConfigChoice {
    /// Bootstrap relays (the first three).
    pub bootstrap: Vec<RelayChoice>,
    /// `default_budget.max_subscriptions`.
    pub max_subscriptions: Option<u8>,
    /// `default_budget.max_filters_per_req`.
    pub max_filters_per_req: Option<u8>,
    /// `default_budget.max_values_per_filter`.
    pub max_values_per_filter: Option<u8>,
    /// `default_budget.page_limit`.
    pub page_limit: Option<u16>,
    /// `max_relays_per_announcement`.
    pub max_relays_per_announcement: Option<u8>,
    /// `max_relays_total`.
    pub max_relays_total: Option<u8>,
    /// `allow_private`.
    pub allow_private: bool,
    /// `use_clone_urls`.
    pub use_clone_urls: bool,
    /// `auth_enabled`.
    pub auth_enabled: bool,
    /// `archive`.
    pub archive: bool,
    /// `seed`.
    pub seed: u64,
    /// `nip77`: reconcile with NIP-77 where relays answer.
    pub nip77: bool,
}

impl ConfigChoice {
    pub(super) fn config(&self) -> Config {
        let mut c = Config::new(ServiceId::parse(SERVICE).expect("the fixture service parses"));
        c.bootstrap = self
            .bootstrap
            .iter()
            .take(3)
            .map(RelayChoice::url)
            .collect();
        let b = &mut c.default_budget;
        let or = |v: Option<u8>, d: u32| v.map_or(d, u32::from);
        b.max_subscriptions = or(self.max_subscriptions, b.max_subscriptions);
        b.max_filters_per_req = or(self.max_filters_per_req, b.max_filters_per_req);
        b.max_values_per_filter = or(self.max_values_per_filter, b.max_values_per_filter);
        if let Some(p) = self.page_limit {
            b.page_limit = u32::from(p);
            b.max_page_limit = b.max_page_limit.max(b.page_limit);
        }
        if let Some(n) = self.max_relays_per_announcement {
            c.max_relays_per_announcement = usize::from(n);
        }
        if let Some(n) = self.max_relays_total {
            c.max_relays_total = usize::from(n);
        }
        c.allow_private = self.allow_private;
        c.use_clone_urls = self.use_clone_urls;
        c.auth_enabled = self.auth_enabled;
        c.archive = self.archive;
        c.seed = self.seed;
        c.nip77 = self.nip77;
        c
    }
}
