//! Random but seeded worlds: announcements over a handful of fake relays,
//! each repo with issues, patches, pull requests, comments, statuses and
//! state; relay profiles with page caps, subscription limits and refusal
//! styles, and relays of the peer zoo (nostr-rs-relay, strfry, khatru, the
//! PyPI nostr-relay, rust-nostr's LocalRelay, @nostr-relay/core); outages,
//! live publishes and engine restarts.

use std::time::Duration;

use grasp_sync_core::{RelayUrl, RepoCoord, Time};
use nostr::event::Event;

use crate::fixtures::{self, announcement, comment, coord, root, state, status, T0};
use crate::fuzzing::oracle::BudgetOracle;
use crate::sim::{
    FakeRelay, Fault, HonestyViolation, Nip77Behaviour, Peer, Profile, RefusalStyle, World,
};

/// SplitMix64, for scenario generation only.
#[derive(Clone, Debug)]
pub struct Rand(u64);

impl Rand {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Rand(seed ^ 0x5eed_5eed_5eed_5eed)
    }

    /// Next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `p` percent.
    pub fn chance(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// Knobs of a generated scenario.
#[derive(Clone, Debug)]
pub struct Params {
    /// Fake relays.
    pub relays: usize,
    /// Repos.
    pub repos: usize,
    /// Root events per repo, at most.
    pub roots_per_repo: usize,
    /// Extra events per root (comments, statuses), at most.
    pub replies_per_root: usize,
    /// Outages per relay, at most.
    pub outages: usize,
    /// Whether to restart the engine once mid-run.
    pub restart: bool,
    /// Whether relays may have hostile limits (small subscription caps, silence).
    pub harsh: bool,
    /// Live events published during the run.
    pub live_events: usize,
    /// Announcement changes during the run: a newer version dropping a
    /// relay, a deletion, a new repo announced on a relay.
    pub churn: bool,
    /// Whether relay 0 is a bootstrap relay (connected even when unlisted).
    pub bootstrap: bool,
    /// Whether the host has a key (NIP-42) and some relays require AUTH.
    pub auth: bool,
    /// How every relay treats NEG-OPEN; `None` mixes them (answering,
    /// refusing, silent, dropping, not knowing the verb; some listing 77 in
    /// NIP-11), drawn from a stream of their own so the rest of the world
    /// is the same whatever this says.
    pub nip77: Option<Nip77Behaviour>,
    /// Whether about half the relays are real relays of the peer zoo
    /// ([`Peer`]) instead of the profiles drawn above (and the engine is
    /// sometimes configured with a budget above their subscription caps).
    /// Drawn from a stream of its own: with `false` the world is as before.
    pub zoo: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            relays: 4,
            repos: 6,
            roots_per_repo: 4,
            replies_per_root: 3,
            outages: 2,
            restart: true,
            harsh: true,
            live_events: 10,
            churn: true,
            bootstrap: true,
            auth: true,
            nip77: None,
            zoo: true,
        }
    }
}

/// How long faults may happen; after this everything is healthy.
pub const CHAOS: Duration = Duration::from_secs(4 * 3600);
/// How long after the chaos the world must converge.
pub const HEAL: Duration = Duration::from_secs(4 * 3600);

/// The URL of fake relay `i`.
pub fn relay_url(i: usize) -> RelayUrl {
    fixtures::url(&format!("wss://relay{i}.example"))
}

/// The repository its author deletes during a generated run (with
/// [`Params::churn`]): the last one.
pub fn deleted_repo(p: &Params) -> Option<RepoCoord> {
    (p.churn && p.repos > 0).then(|| coord(p.repos as u32, &format!("repo-{}", p.repos - 1)))
}

/// Builds a world from a seed.
pub fn generate(seed: u64, p: &Params) -> World {
    let mut rng = Rand::new(seed);
    let start = Time::from_secs(T0);
    let mut config = fixtures::config();
    if p.bootstrap {
        config.bootstrap.push(relay_url(0));
    }
    config.auth_enabled = p.auth;
    // The simulated relays cover every NIP-77 behaviour (mixed or fixed by
    // `p.nip77`); the engine reconciles where they answer.
    config.nip77 = true;
    let mut zoo_rng = Rand::new(seed ^ 0x007a_6f6f);
    // (Small worlds only: many relays and repos at one value per filter
    // make thousands of REQs, slow to simulate and no more telling.)
    let raise = p.zoo && zoo_rng.chance(30) && p.relays * p.repos <= 60;
    // An operator who allows more subscriptions and packs few values in
    // each: dozens of REQs at once, so the zoo's caps (20, 32) and khatru's
    // filter rate limit get hit.
    let raised_values = 2 + zoo_rng.below(3) as u32;
    let raised_filters = 1 + zoo_rng.below(2) as u32;
    let mut relays = Vec::new();
    let mut nip77_rng = Rand::new(seed ^ 0x006e_6970_3737);
    for i in 0..p.relays {
        let mut profile = Profile {
            page_cap: match rng.below(4) {
                0 => Some(100),
                1 => Some(50),
                _ => None,
            },
            latency: Duration::from_millis(5 + rng.below(200)),
            ..Profile::default()
        };
        if p.harsh {
            profile.max_subs = [3, 5, 10, 32][rng.below(4) as usize];
            profile.publish_limits = rng.chance(50);
            profile.refusal = match rng.below(5) {
                0 => RefusalStyle::Closed,
                1 => RefusalStyle::Notice,
                2 => RefusalStyle::Silence,
                3 => RefusalStyle::Drop,
                _ if profile.max_subs >= 10 => RefusalStyle::Evict,
                _ => RefusalStyle::Closed,
            };
            profile.rate_limit_first = if rng.chance(25) { 2 } else { 0 };
            profile.nip11 = rng.chance(70);
            if rng.chance(20) {
                // A strict relay (strfry's filter validation): few filters per
                // REQ, published, so the engine can plan within it.
                profile.max_filters = Some(2 + rng.below(2) as usize);
                profile.publish_limits = true;
                profile.nip11 = true;
            }
        }
        profile.auth = p.auth && rng.chance(30);
        profile.nip77 = p.nip77.unwrap_or(match nip77_rng.below(6) {
            0 | 1 => Nip77Behaviour::Answer,
            2 => Nip77Behaviour::Refuse,
            3 => Nip77Behaviour::Silent,
            4 => Nip77Behaviour::Drop,
            _ => Nip77Behaviour::Unknown,
        });
        profile.lists_nip77 = nip77_rng.chance(40);
        if p.zoo && zoo_rng.chance(50) {
            let peer = draw_peer(&mut zoo_rng, p.harsh);
            profile = Profile {
                latency: profile.latency,
                auth: profile.auth,
                ..peer.profile()
            };
        }
        relays.push(FakeRelay::new(relay_url(i), profile));
    }
    // Never above a cap that evicts silently: nothing tells the engine (a
    // live subscription would be lost without a word). Nor with a relay
    // that refuses by dropping the connection or in silence: that teaches
    // one subscription per drop (with backoff) or per 60 s timeout, and
    // from 40 it takes hours, or gives the work up.
    let mute = relays.iter().any(|r| {
        matches!(
            r.profile.refusal,
            RefusalStyle::Drop | RefusalStyle::Silence
        )
    });
    if raise && !mute {
        config.default_budget.max_values_per_filter = raised_values;
        config.default_budget.max_filters_per_req = raised_filters;
        let evicting = relays
            .iter()
            .filter(|r| r.profile.refusal == RefusalStyle::Evict)
            .map(|r| r.profile.max_subs as u32);
        config.default_budget.max_subscriptions = evicting.fold(40, u32::min);
    }
    let mut world = World::new(config, start);
    for relay in relays {
        world.add_relay(relay);
    }
    let created = |rng: &mut Rand| T0 - 1 - rng.below(30 * 24 * 3600);
    let mut live: Vec<(RelayUrl, Event)> = Vec::new();
    for r in 0..p.repos {
        let author = 1 + r as u32;
        let d = format!("repo-{r}");
        let n_listed = 1 + rng.below(p.relays.min(3) as u64) as usize;
        let mut listed: Vec<usize> = Vec::new();
        while listed.len() < n_listed {
            let i = rng.below(p.relays as u64) as usize;
            if !listed.contains(&i) {
                listed.push(i);
            }
        }
        let urls: Vec<String> = listed.iter().map(|i| relay_url(*i).to_string()).collect();
        let url_refs: Vec<&str> = urls.iter().map(String::as_str).collect();
        // Most repos list the service; a few do not (they must not be synced).
        let tracked = r == 0 || rng.chance(85);
        let ann = announcement(author, &d, created(&mut rng), &url_refs, tracked);
        let c = coord(author, &d);
        // The announcement is on its relays, and in our store when it lists us.
        for i in &listed {
            world.seed(&relay_url(*i), ann.clone());
        }
        if tracked {
            world.store_local(ann.clone());
        }
        let mut events: Vec<Event> = vec![state(author, &d, created(&mut rng))];
        for k in 0..rng.below(p.roots_per_repo as u64 + 1) {
            let kind = [1617, 1618, 1621][rng.below(3) as usize];
            let who = 100 + rng.below(20) as u32;
            let rt = root(kind, who, created(&mut rng), &c, &format!("root {r}/{k}"));
            for j in 0..rng.below(p.replies_per_root as u64 + 1) {
                let reply = if rng.chance(50) {
                    comment(
                        who + 1,
                        created(&mut rng),
                        &c,
                        &rt.id,
                        &format!("reply {r}/{k}/{j}"),
                    )
                } else {
                    status(
                        1630 + rng.below(4) as u16,
                        author,
                        created(&mut rng),
                        &rt.id,
                    )
                };
                events.push(reply);
            }
            events.push(rt);
        }
        // An unrelated note that must never be stored.
        events.push(fixtures::event(
            fixtures::pubkey(999),
            created(&mut rng),
            1,
            vec![vec!["t".into(), "noise".into()]],
            "unrelated",
        ));
        for e in events {
            // Each event sits on at least one of the repo's relays.
            let first = listed[rng.below(listed.len() as u64) as usize];
            for i in &listed {
                if *i == first || rng.chance(40) {
                    world.seed(&relay_url(*i), e.clone());
                }
            }
        }
        for k in 0..p.live_events / p.repos.max(1) {
            let i = listed[rng.below(listed.len() as u64) as usize];
            let at = T0 + 60 + rng.below(CHAOS.as_secs());
            let e = root(1621, 200 + k as u32, at, &c, &format!("live {r}/{k}"));
            live.push((relay_url(i), e));
        }
    }
    if p.churn && p.repos > 0 {
        // A newer announcement of repo 0 drops one relay (pushed to our relay).
        let at = start.plus(Duration::from_secs(rng.below(CHAOS.as_secs())));
        let keep = [relay_url(0).to_string()];
        let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
        let newer = announcement(1, "repo-0", T0 + 10 + rng.below(1000), &keep, true);
        world.schedule(at, Fault::LocalEvent(Box::new(newer)));
        // The last repo is deleted by its author.
        let at = start.plus(Duration::from_secs(rng.below(CHAOS.as_secs())));
        let deleted = deleted_repo(p).expect("churn with repos deletes one");
        let del = fixtures::deletion(
            p.repos as u32,
            T0 + 2000 + rng.below(1000),
            &[&deleted],
            &[],
        );
        world.schedule(at, Fault::LocalEvent(Box::new(del)));
        // A new repo is announced on a relay: discovered through layer 1.
        let i = rng.below(p.relays as u64) as usize;
        let url = relay_url(i).to_string();
        let at = start.plus(Duration::from_secs(rng.below(CHAOS.as_secs())));
        // Its author's clock runs up to two minutes slow.
        let fresh = announcement(
            500,
            "late-repo",
            at.as_secs() - rng.below(120),
            &[url.as_str()],
            true,
        );
        let c = coord(500, "late-repo");
        world.seed(
            &relay_url(i),
            root(1621, 501, T0 - 500, &c, "an old issue of the late repo"),
        );
        world.schedule(
            at,
            Fault::Publish {
                relay: relay_url(i),
                event: Box::new(fresh),
            },
        );
    }
    for (relay, e) in live {
        let at = Time::from_secs(e.created_at.as_secs());
        world.schedule(
            at,
            Fault::Publish {
                relay,
                event: Box::new(e),
            },
        );
    }
    for i in 0..p.relays {
        for _ in 0..rng.below(p.outages as u64 + 1) {
            let at = start.plus(Duration::from_secs(rng.below(CHAOS.as_secs())));
            let len = Duration::from_secs(30 + rng.below(3 * 3600));
            world.schedule(
                at,
                Fault::Down {
                    relay: relay_url(i),
                    duration: len,
                },
            );
        }
    }
    if p.restart {
        let at = start.plus(Duration::from_secs(rng.below(CHAOS.as_secs())));
        world.schedule(at, Fault::Restart);
    }
    let config = world.engine.config().clone();
    world.oracle = Some(BudgetOracle::new(config.default_budget, config.service));
    world
}

/// A peer of the zoo; in harsh worlds LocalRelay serves as few as one REQ
/// at a time and caps pages at 5.
pub fn draw_peer(rng: &mut Rand, harsh: bool) -> Peer {
    match rng.below(6) {
        0 => Peer::NostrRsRelay,
        1 => Peer::Strfry,
        2 => Peer::Khatru,
        3 => Peer::PypiNostrRelay,
        4 if harsh => Peer::LocalRelay {
            cap: [Some(5), Some(100), None][rng.below(3) as usize],
            max_reqs: [1, 2, 3][rng.below(3) as usize],
        },
        4 => Peer::LocalRelay {
            cap: [Some(500), None][rng.below(2) as usize],
            max_reqs: 500,
        },
        _ => Peer::NostrRelayCore,
    }
}

/// Starts a world and runs it until every relay has converged (every
/// target confirmed, nothing pending, nothing held that we lack), checking
/// every 100 ms of virtual time; returns how long that took, or `None`
/// after `limit`. The world is then settled.
pub fn run_to_convergence(world: &mut World, limit: Duration) -> Option<Duration> {
    let start = world.now;
    world.start();
    let step = Duration::from_millis(100);
    let done = |w: &World| {
        w.relays
            .keys()
            .all(|u| w.converged(u) && w.missing_from(u).is_empty())
    };
    let mut took = None;
    while world.now.since(start) < limit {
        world.run_until(world.now.plus(step));
        if done(world) {
            took = Some(world.now.since(start));
            break;
        }
    }
    world.settle();
    took
}

/// Runs a world through its chaos and healing periods, then lets it settle.
pub fn run(world: &mut World) {
    world.start();
    let end = world.now.plus(CHAOS).plus(HEAL);
    world.run_until(end);
    world.settle();
}

/// Asserts the world ended as the contract wants: no invariant broken,
/// every relay converged with nothing left that we lack, nothing unrelated
/// stored.
pub fn assert_converged(world: &World, what: &str) {
    assert!(
        world.violations.is_empty(),
        "{what}: violations {:?}",
        world.violations
    );
    for (url, _) in world.relays.iter() {
        assert!(
            world.converged(url),
            "{what}: {url} did not converge: {:#?}",
            world.engine.status().relays.iter().find(|r| &r.url == url)
        );
        let missing = world.missing_from(url);
        assert!(
            missing.is_empty(),
            "{what}: {url} still holds {} events we lack",
            missing.len()
        );
    }
    // Nothing unrelated was stored.
    assert!(
        world.store.values().all(|e| e.kind.as_u16() != 1),
        "{what}: stored a note"
    );
    assert_honest(world, what);
}

/// Asserts the honesty oracles found nothing: no target confirmed while its
/// relay held an event we lack (during the run and at its end), no relay
/// that answered everything left idle with work (see
/// [`HonestyOracle`](crate::sim::HonestyOracle)), and, when attached, no
/// budget exceeded.
pub fn assert_honest(world: &World, what: &str) {
    let dishonest: Vec<HonestyViolation> = world.honesty_violations_at_end();
    assert!(
        dishonest.is_empty(),
        "{what}: {} honesty violations, first: {}",
        dishonest.len(),
        dishonest
            .iter()
            .take(5)
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    );
    if let Some(o) = world.oracle.as_ref() {
        assert!(
            o.violations().is_empty(),
            "{what}: budget violations: {}",
            o.violations()
                .iter()
                .take(5)
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
}
