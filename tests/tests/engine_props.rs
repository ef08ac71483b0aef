//! Property tests on raw input sequences: whatever arrives, in whatever
//! order and at whatever (even backwards) times, the engine never panics,
//! never opens a subscription beyond its budget, never subscribes to the
//! service or to an unknown relay, and replays identically.

use std::collections::{BTreeMap, BTreeSet};

use grasp_sync_core::{Command, Engine, Input, RelayInfo, RelayUrl, StoreOutcome, Time};
use grasp_sync_sim::fixtures::{self, announcement, coord, deletion, root, T0};
use nostr::event::Event;
use nostr::message::SubscriptionId;
use proptest::prelude::*;

const RELAYS: [&str; 4] = [
    "wss://r0.example",
    "wss://r1.example",
    "wss://r2.example",
    "ws://127.0.0.1:7000",
];

#[derive(Clone, Debug)]
enum Op {
    Announce {
        author: u32,
        repo: u8,
        age: u64,
        relays: Vec<usize>,
        service: bool,
    },
    Root {
        author: u32,
        repo: u8,
    },
    Delete {
        author: u32,
        repo: u8,
    },
    Info {
        relay: usize,
        max_subs: u32,
    },
    Connected(usize),
    ConnectFailed(usize),
    Disconnected(usize),
    Eose {
        relay: usize,
        sub: usize,
    },
    Closed {
        relay: usize,
        sub: usize,
        prefix: usize,
    },
    Notice {
        relay: usize,
        msg: usize,
    },
    Event {
        relay: usize,
        sub: usize,
        event: usize,
        stored: bool,
    },
    Challenge(usize),
    AuthResult {
        relay: usize,
        ok: bool,
    },
    Advance(i64),
    /// The host answers a NIP-77 items request (`ok` false: the store failed).
    LocalItems {
        req: usize,
        ok: bool,
    },
    /// A NEG-MSG (from a fixed set, valid or not) on some subscription.
    NegMsg {
        relay: usize,
        sub: usize,
        msg: usize,
    },
    /// A NEG-ERR on some subscription.
    NegErr {
        relay: usize,
        sub: usize,
    },
}

/// NEG-MSG payloads: "done" (version byte only), a skip, garbage, another
/// protocol version, empty.
const NEG_MSGS: [&str; 5] = ["61", "6100", "zz", "62", ""];

const PREFIXES: [&str; 9] = [
    "rate-limited: slow",
    "auth-required: sign",
    "restricted: no",
    "blocked: no",
    "error: x",
    "invalid: y",
    "unsupported: z",
    "weird: w",
    "no prefix at all",
];
const NOTICES: [&str; 4] = [
    "ERROR: too many concurrent REQs",
    "hello",
    "rate limit exceeded",
    "",
];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u32..4,
            0u8..3,
            0u64..100_000,
            proptest::collection::vec(0usize..4, 0..4),
            any::<bool>()
        )
            .prop_map(|(author, repo, age, relays, service)| Op::Announce {
                author,
                repo,
                age,
                relays,
                service
            }),
        (0u32..4, 0u8..3).prop_map(|(author, repo)| Op::Root { author, repo }),
        (0u32..4, 0u8..3).prop_map(|(author, repo)| Op::Delete { author, repo }),
        (0usize..4, 0u32..5).prop_map(|(relay, max_subs)| Op::Info { relay, max_subs }),
        (0usize..4).prop_map(Op::Connected),
        (0usize..4).prop_map(Op::ConnectFailed),
        (0usize..4).prop_map(Op::Disconnected),
        (0usize..4, 0usize..64).prop_map(|(relay, sub)| Op::Eose { relay, sub }),
        (0usize..4, 0usize..64, 0usize..PREFIXES.len())
            .prop_map(|(relay, sub, prefix)| Op::Closed { relay, sub, prefix }),
        (0usize..4, 0usize..NOTICES.len()).prop_map(|(relay, msg)| Op::Notice { relay, msg }),
        (0usize..4, 0usize..64, 0usize..64, any::<bool>()).prop_map(
            |(relay, sub, event, stored)| Op::Event {
                relay,
                sub,
                event,
                stored
            }
        ),
        (0usize..4).prop_map(Op::Challenge),
        (0usize..4, any::<bool>()).prop_map(|(relay, ok)| Op::AuthResult { relay, ok }),
        (-20_000i64..4_000_000).prop_map(Op::Advance),
        (0usize..64, any::<bool>()).prop_map(|(req, ok)| Op::LocalItems { req, ok }),
        (0usize..4, 0usize..64, 0usize..NEG_MSGS.len()).prop_map(|(relay, sub, msg)| Op::NegMsg {
            relay,
            sub,
            msg
        }),
        (0usize..4, 0usize..64).prop_map(|(relay, sub)| Op::NegErr { relay, sub }),
    ]
}

struct Run {
    log: Vec<String>,
    violations: Vec<String>,
}

fn play(ops: &[Op], auth: bool, nip77: bool) -> Run {
    let mut config = fixtures::config();
    config.auth_enabled = auth;
    config.nip77 = nip77;
    config.bootstrap = vec![fixtures::url(RELAYS[0])];
    let mut engine = Engine::new(config.clone());
    let relays: Vec<RelayUrl> = RELAYS.iter().map(|s| fixtures::url(s)).collect();
    let mut now = Time::from_secs(T0);
    let mut subs: Vec<(usize, SubscriptionId)> = Vec::new();
    let mut requests: Vec<(usize, u64)> = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    let mut open: BTreeMap<RelayUrl, BTreeSet<SubscriptionId>> = BTreeMap::new();
    let mut known: BTreeSet<RelayUrl> = config.bootstrap.iter().cloned().collect();
    let mut run = Run {
        log: Vec::new(),
        violations: Vec::new(),
    };
    engine.handle_input(now, Input::Tick);
    for op in ops {
        let mut closed_by_relay: Option<(RelayUrl, SubscriptionId)> = None;
        match op {
            Op::Announce {
                author,
                repo,
                age,
                relays: rs,
                service,
            } => {
                let urls: Vec<&str> = rs.iter().map(|i| RELAYS[*i]).collect();
                let a = announcement(*author, &format!("r{repo}"), T0 - age, &urls, *service);
                if *service {
                    known.extend(urls.iter().map(|u| fixtures::url(u)));
                }
                events.push(a.clone());
                engine.handle_input(now, Input::CatalogEvent(&a));
            }
            Op::Root { author, repo } => {
                let r = root(
                    1621,
                    50 + author,
                    T0 - 10,
                    &coord(*author, &format!("r{repo}")),
                    "x",
                );
                events.push(r.clone());
                engine.handle_input(now, Input::CatalogEvent(&r));
            }
            Op::Delete { author, repo } => {
                let c = coord(*author, &format!("r{repo}"));
                let d = deletion(*author, now.as_secs(), &[&c], &[]);
                engine.handle_input(now, Input::CatalogEvent(&d));
            }
            Op::Info { relay, max_subs } => engine.handle_input(
                now,
                Input::RelayInfo {
                    relay: &relays[*relay],
                    info: RelayInfo {
                        max_subscriptions: Some(*max_subs),
                        ..RelayInfo::default()
                    },
                },
            ),
            Op::Connected(i) => engine.handle_input(now, Input::Connected { relay: &relays[*i] }),
            Op::ConnectFailed(i) => engine.handle_input(
                now,
                Input::ConnectFailed {
                    relay: &relays[*i],
                    reason: "x",
                },
            ),
            Op::Disconnected(i) => {
                open.remove(&relays[*i]);
                engine.handle_input(
                    now,
                    Input::Disconnected {
                        relay: &relays[*i],
                        reason: "x",
                    },
                )
            }
            Op::Eose { relay, sub } => {
                if let Some((r, s)) = pick(&subs, *relay, *sub) {
                    engine.handle_input(
                        now,
                        Input::Eose {
                            relay: &relays[r],
                            subscription: &s,
                        },
                    );
                }
            }
            Op::Closed { relay, sub, prefix } => {
                if let Some((r, s)) = pick(&subs, *relay, *sub) {
                    closed_by_relay = Some((relays[r].clone(), s.clone()));
                    engine.handle_input(
                        now,
                        Input::Closed {
                            relay: &relays[r],
                            subscription: &s,
                            message: PREFIXES[*prefix],
                        },
                    );
                }
            }
            Op::Notice { relay, msg } => engine.handle_input(
                now,
                Input::Notice {
                    relay: &relays[*relay],
                    message: NOTICES[*msg],
                },
            ),
            Op::Event {
                relay,
                sub,
                event,
                stored,
            } => {
                if let (Some((r, s)), Some(e)) = (
                    pick(&subs, *relay, *sub),
                    events.get(event % events.len().max(1)),
                ) {
                    engine.handle_input(
                        now,
                        Input::EventReceived {
                            relay: &relays[r],
                            subscription: &s,
                            event: e,
                        },
                    );
                    let outcome = if *stored {
                        StoreOutcome::Stored
                    } else {
                        StoreOutcome::Rejected
                    };
                    engine.handle_input(
                        now,
                        Input::EventStored {
                            relay: &relays[r],
                            id: e.id,
                            created_at: e.created_at.as_secs(),
                            outcome,
                        },
                    );
                }
            }
            Op::Challenge(i) => engine.handle_input(
                now,
                Input::AuthChallenge {
                    relay: &relays[*i],
                    challenge: "c",
                },
            ),
            Op::AuthResult { relay, ok } => engine.handle_input(
                now,
                Input::AuthResult {
                    relay: &relays[*relay],
                    accepted: *ok,
                },
            ),
            Op::LocalItems { req, ok } => {
                if !requests.is_empty() {
                    let (r, request) = requests[req % requests.len()];
                    let items: Vec<grasp_sync_core::LocalItem> = events
                        .iter()
                        .step_by(2)
                        .map(|e| (e.id, e.created_at))
                        .collect();
                    engine.handle_input(
                        now,
                        Input::LocalItems {
                            relay: &relays[r],
                            request,
                            items: ok.then_some(items.as_slice()),
                        },
                    );
                }
            }
            Op::NegMsg { relay, sub, msg } => {
                if let Some((r, s)) = pick(&subs, *relay, *sub) {
                    engine.handle_input(
                        now,
                        Input::NegMsg {
                            relay: &relays[r],
                            subscription: &s,
                            message: NEG_MSGS[*msg],
                        },
                    );
                }
            }
            Op::NegErr { relay, sub } => {
                if let Some((r, s)) = pick(&subs, *relay, *sub) {
                    closed_by_relay = Some((relays[r].clone(), s.clone()));
                    engine.handle_input(
                        now,
                        Input::NegErr {
                            relay: &relays[r],
                            subscription: &s,
                            message: "blocked: no",
                        },
                    );
                }
            }
            Op::Advance(ms) => {
                // Time may step backwards: the engine must cope.
                now = Time::from_millis(now.as_millis().saturating_add_signed(*ms));
                engine.handle_input(now, Input::Tick);
            }
        }
        if let Some((r, s)) = closed_by_relay {
            if let Some(set) = open.get_mut(&r) {
                set.remove(&s);
            }
        }
        let budgets: BTreeMap<RelayUrl, u32> = engine
            .status()
            .relays
            .into_iter()
            .map(|r| (r.url, r.budget.max_subscriptions))
            .collect();
        while let Some(c) = engine.poll_command() {
            run.log.push(serde_json::to_string(&c).expect("serialises"));
            let relay = c.relay().clone();
            if config.service.matches(&relay) {
                run.violations.push(format!("own service: {c:?}"));
            }
            match c {
                Command::Subscribe { subscription, .. } => {
                    if !known.contains(&relay) {
                        run.violations.push(format!("unlisted relay {relay}"));
                    }
                    let i = RELAYS
                        .iter()
                        .position(|u| fixtures::url(u) == relay)
                        .unwrap_or(0);
                    subs.push((i, subscription.clone()));
                    let set = open.entry(relay.clone()).or_default();
                    let is_new = set.insert(subscription);
                    let budget = budgets.get(&relay).copied().unwrap_or(10) as usize;
                    if is_new && set.len() > budget {
                        run.violations
                            .push(format!("{relay}: {} open, budget {budget}", set.len()));
                    }
                }
                Command::NegOpen { subscription, .. } => {
                    let i = RELAYS
                        .iter()
                        .position(|u| fixtures::url(u) == relay)
                        .unwrap_or(0);
                    subs.push((i, subscription.clone()));
                    let set = open.entry(relay.clone()).or_default();
                    let is_new = set.insert(subscription);
                    let budget = budgets.get(&relay).copied().unwrap_or(10) as usize;
                    if is_new && set.len() > budget {
                        run.violations
                            .push(format!("{relay}: {} open, budget {budget}", set.len()));
                    }
                }
                Command::QueryLocalItems { request, .. } => {
                    let i = RELAYS
                        .iter()
                        .position(|u| fixtures::url(u) == relay)
                        .unwrap_or(0);
                    requests.push((i, request));
                }
                Command::Unsubscribe { subscription, .. }
                | Command::NegClose { subscription, .. } => {
                    if let Some(set) = open.get_mut(&relay) {
                        set.remove(&subscription);
                    }
                }
                Command::Disconnect { .. } | Command::Connect { .. } => {
                    open.remove(&relay);
                }
                _ => {}
            }
        }
        // Engine-side view must agree with its own budget, too.
        for r in engine.status().relays {
            if r.open_subscriptions > r.budget.max_subscriptions as usize + 1 {
                run.violations.push(format!(
                    "{}: status shows {} open",
                    r.url, r.open_subscriptions
                ));
            }
        }
    }
    run
}

fn pick(
    subs: &[(usize, SubscriptionId)],
    relay: usize,
    sub: usize,
) -> Option<(usize, SubscriptionId)> {
    if subs.is_empty() {
        return None;
    }
    let (r, s) = &subs[sub % subs.len()];
    // Mostly the subscription's own relay, sometimes a wrong one.
    Some((if relay == 3 { (r + 1) % 4 } else { *r }, s.clone()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_input_sequence_is_safe_and_replays(
        ops in proptest::collection::vec(op(), 1..120),
        auth in any::<bool>(),
        nip77 in any::<bool>(),
    ) {
        let a = play(&ops, auth, nip77);
        prop_assert!(a.violations.is_empty(), "{:?}", a.violations);
        let b = play(&ops, auth, nip77);
        prop_assert_eq!(a.log, b.log);
    }
}

/// The generator reaches the interesting states: a short scripted sequence
/// opens live and historic subscriptions and pages through them.
#[test]
fn scripted_sequence_exercises_subscriptions() {
    let ops = vec![
        Op::Announce {
            author: 1,
            repo: 0,
            age: 50,
            relays: vec![1, 2],
            service: true,
        },
        Op::Connected(1),
        Op::Root { author: 1, repo: 0 },
        Op::Advance(2_000),
        Op::Event {
            relay: 1,
            sub: 1,
            event: 0,
            stored: true,
        },
        Op::Eose { relay: 1, sub: 1 },
        Op::Closed {
            relay: 1,
            sub: 2,
            prefix: 0,
        },
        Op::Advance(70_000),
    ];
    let run = play(&ops, false, false);
    assert!(run.violations.is_empty(), "{:?}", run.violations);
    let subscribes = run
        .log
        .iter()
        .filter(|l| l.contains("\"subscribe\""))
        .count();
    assert!(subscribes >= 4, "{:#?}", run.log);
}
