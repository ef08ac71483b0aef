//! Items 11 and 12 of the "never again" list.

use std::collections::BTreeSet;

use grasp_sync_core::{
    Command, Config, GiveUpReason, Input, RelayState, RelayUrl, StoreOutcome, SubscriptionMode,
    Time,
};
use grasp_sync_sim::fixtures::*;
use nostr::event::Event;
use nostr::filter::Filter;
use nostr::message::SubscriptionId;

use super::support::config;
use super::support::*;

// ----- item 11 --------------------------------------------------------------

/// Item 11: "Pagination that counts only stored events and stops early, or
/// loops forever on one timestamp." Three relays: one that caps pages
/// silently below our `limit` and whose every event the store rejects (all of
/// them must still be fetched); one with a burst of events sharing one
/// `created_at` larger than a page (fetched whole by pages with a doubled
/// limit); and one that ignores `since`/`until` and always sends
/// the same one-second page (pagination must end, stepping below the second).
#[test]
fn never_again_11_pagination_counts_every_event_and_never_loops_on_one_second() {
    let relay = url(R1);
    let repo = coord(1, "repo");
    let ann = announcement(1, "repo", T0 - 100_000, &[R1], true);

    // (a) Silent cap of 20 under a limit of 50; the store rejects everything.
    let mut cfg = config();
    cfg.default_budget.page_limit = 50;
    cfg.default_budget.max_page_limit = 200;
    let (mut d, cs) = connected(cfg, &[&ann]);
    let events: Vec<Event> = (0..100)
        .map(|i| root(1621, 7, T0 - 1000 - i * 10, &repo, &format!("issue {i}")))
        .collect();
    let fake = FakeRelay {
        events: events.clone(),
        cap: 20,
        ignores_bounds: false,
    };
    let run = drive_pages(&mut d, &fake, |_| StoreOutcome::Rejected, cs, 50);
    let got: BTreeSet<_> = run.sent.iter().copied().collect();
    let all: BTreeSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(
        got, all,
        "every event is fetched though the store rejected every one"
    );
    assert_eq!(
        d.engine.confirmed_targets(&relay),
        d.engine.relay_targets(&relay)
    );
    // Pages of the `#a` filter: explicit limit, `until` stepping down.
    let a_pages: Vec<Filter> = run
        .reqs
        .iter()
        .flat_map(|r| r.filters.iter())
        .filter(|f| f.as_json().contains(r##""#a""##))
        .cloned()
        .collect();
    assert!(
        a_pages.len() >= 5,
        "a short page is not the end: {} pages",
        a_pages.len()
    );
    let mut last_until = u64::MAX;
    for (i, f) in a_pages.iter().enumerate() {
        assert_eq!(field(f, "limit"), Some(50), "{}", f.as_json());
        let until = field(f, "until");
        if i == 0 {
            assert_eq!(until, None);
        } else {
            let u = until.expect("later pages carry until");
            assert!(u < last_until, "until must step down: {}", f.as_json());
            last_until = u;
        }
    }
    let st = relay_status(&d.engine, &relay);
    assert_eq!(st.stats.events_received, run.sent.len() as u64);
    assert_eq!(st.stats.events_rejected, run.sent.len() as u64);
    assert_eq!(st.stats.events_stored, 0);

    // (b) 50 events in one second, between 10 newer and 10 older; the relay
    // honours limits up to 100; our page is 20, our cap 80.
    let mut cfg = config();
    cfg.default_budget.page_limit = 20;
    cfg.default_budget.max_page_limit = 80;
    let (mut d, cs) = connected(cfg, &[&ann]);
    let burst = T0 - 5000;
    let mut events: Vec<Event> = (0..10)
        .map(|i| root(1621, 7, burst + 100 + i, &repo, &format!("newer {i}")))
        .collect();
    events.extend((0..50).map(|i| root(1621, 7, burst, &repo, &format!("burst {i}"))));
    events.extend((0..10).map(|i| root(1621, 7, burst - 100 - i, &repo, &format!("older {i}"))));
    let fake = FakeRelay {
        events: events.clone(),
        cap: 100,
        ignores_bounds: false,
    };
    let outcome = |e: &Event| {
        if e.id.as_bytes()[0] % 2 == 0 {
            StoreOutcome::Stored
        } else {
            StoreOutcome::Rejected
        }
    };
    let run = drive_pages(&mut d, &fake, outcome, cs, 40);
    let got: BTreeSet<_> = run.sent.iter().copied().collect();
    let all: BTreeSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(
        got.len(),
        all.len(),
        "a one-second burst larger than a page is fetched whole"
    );
    assert_eq!(got, all);
    // Pages reach the burst second with a doubled limit: a page that filled
    // its limit with new events makes the next one twice as large (growing
    // pages), and a page of that second alone that brought nothing new asks
    // it again with a doubled limit (the tie rule); never above our cap.
    let at_burst: Vec<&Filter> = run
        .reqs
        .iter()
        .flat_map(|r| r.filters.iter())
        .filter(|f| field(f, "until") == Some(burst))
        .collect();
    assert!(!at_burst.is_empty(), "pages reach the burst second");
    assert!(
        at_burst.iter().any(|f| field(f, "limit") == Some(40)),
        "with the limit doubled: {:?}",
        at_burst.iter().map(|f| f.as_json()).collect::<Vec<_>>()
    );
    assert!(
        run.reqs
            .iter()
            .flat_map(|r| r.filters.iter())
            .all(|f| field(f, "limit").unwrap_or(0) <= 80),
        "up to the cap"
    );
    assert_eq!(
        d.engine.confirmed_targets(&relay),
        d.engine.relay_targets(&relay)
    );

    // (c) A relay that ignores `since`/`until` and always sends the same 25
    // events of one second.
    let mut cfg = config();
    cfg.default_budget.page_limit = 20;
    cfg.default_budget.max_page_limit = 80;
    let (mut d, cs) = connected(cfg, &[&ann]);
    let events: Vec<Event> = (0..25)
        .map(|i| root(1621, 7, burst, &repo, &format!("stuck {i}")))
        .collect();
    let fake = FakeRelay {
        events: events.clone(),
        cap: 25,
        ignores_bounds: true,
    };
    let run = drive_pages(&mut d, &fake, |_| StoreOutcome::Duplicate, cs, 20);
    let a_pages: Vec<Filter> = run
        .reqs
        .iter()
        .flat_map(|r| r.filters.iter())
        .filter(|f| f.as_json().contains(r##""#a""##))
        .cloned()
        .collect();
    assert!(
        a_pages.iter().any(|f| field(f, "until") == Some(burst - 1)),
        "after the one-second pages, until steps below the second: {:?}",
        a_pages.iter().map(Filter::as_json).collect::<Vec<_>>()
    );
    assert_eq!(
        d.engine.confirmed_targets(&relay),
        d.engine.relay_targets(&relay)
    );
    assert!(d
        .engine
        .pending_targets(&relay)
        .is_some_and(|p| p.is_empty()));
}

// ----- item 12 --------------------------------------------------------------

/// A relay with two repos, connected, its historic REQs outstanding.
fn two_repos(cfg: Config) -> (Driver, Vec<Command>) {
    let ann1 = announcement(1, "one", T0 - 100, &[R1], true);
    let ann2 = announcement(2, "two", T0 - 100, &[R1], true);
    connected(cfg, &[&ann1, &ann2])
}

/// The layer-2 shapes of the two repos of [`two_repos`].
fn two_repo_shapes() -> Atoms {
    repo_shapes(&[&coord(1, "one"), &coord(2, "two")])
        .into_iter()
        .filter(|a| !is_discovery(a))
        .collect()
}

/// Of the historic REQs in `cs`, answers every one but the REQ carrying the
/// repos' `#a` filter, and returns that one.
fn isolate_repo_req(d: &mut Driver, cs: &[Command]) -> Sub {
    let hist = historic(cs);
    let (mine, rest): (Vec<Sub>, Vec<Sub>) = hist
        .into_iter()
        .partition(|s| s.json().iter().any(|f| f.contains(r##""#a""##)));
    assert_eq!(mine.len(), 1, "{}", show(cs));
    eose(d, &rest);
    mine.into_iter().next().expect("one")
}

/// Asserts that `sub` is no longer held: events for it are unrequested.
fn assert_not_held(d: &Driver, relay: &RelayUrl, sub: &SubscriptionId) {
    assert!(
        d.engine.subscription_filters(relay, sub).is_none(),
        "{sub} still held"
    );
    let e = root(1621, 9, T0, &coord(1, "one"), "late");
    assert_eq!(
        d.engine.check_event(relay, sub, &e),
        grasp_sync_core::EventCheck::Unrequested
    );
}

/// Item 12: "Pending batches with no timeout; `CLOSED` ignored; its
/// subscription id lost." A historic REQ that sees no event and no EOSE for
/// 60 s is closed (`CLOSE` with its id) and retried with backoff for the same
/// work; a batch that keeps timing out is given up (reported), never left
/// pending forever, and the daily pass tries it again.
#[test]
fn never_again_12_pending_batches_time_out_and_closed_is_handled() {
    let relay = url(R1);
    let (mut d, cs) = two_repos(config());
    let first = historic(&cs);
    assert!(!first.is_empty(), "{}", show(&cs));
    let sent_at = d.now;
    assert_eq!(
        d.engine.next_wakeup(),
        Some(sent_at.plus(secs(60))),
        "a pending REQ has a deadline"
    );
    let cs =
        tick_until(&mut d, mins(2), |cs| !unsubscribes(cs).is_empty()).expect("the REQ times out");
    assert_eq!(d.now, sent_at.plus(secs(60)));
    let closed: BTreeSet<SubscriptionId> = unsubscribes(&cs).into_iter().map(|(_, s)| s).collect();
    let ids: BTreeSet<SubscriptionId> = first.iter().map(|s| s.id.clone()).collect();
    assert_eq!(closed, ids, "{}", show(&cs));
    assert!(
        historic(&cs).is_empty(),
        "retried with backoff, not at once:\n{}",
        show(&cs)
    );
    for s in &first {
        assert_not_held(&d, &relay, &s.id);
    }
    assert_eq!(
        relay_status(&d.engine, &relay).stats.timeouts,
        first.len() as u64
    );
    assert_eq!(
        d.engine.pending_targets(&relay),
        d.engine.relay_targets(&relay)
    );
    let timed_out_at = d.now;
    let cs = tick_until(&mut d, secs(30), |cs| !historic(cs).is_empty()).expect("a retry");
    let delay = d.now.since(timed_out_at);
    assert!(
        delay >= secs(4) && delay <= secs(6),
        "retry after {delay:?}"
    );
    let mut retried = historic(&cs);
    assert!(retried.iter().all(|s| !ids.contains(&s.id)), "a new REQ");
    let cs = eose(&mut d, &retried);
    retried.extend(historic(&cs));
    let cs = run(&mut d, mins(2));
    retried.extend(historic(&cs));
    eose(&mut d, &historic(&cs));
    assert_eq!(union(&retried), union(&first), "the same work is retried");
    assert_eq!(
        d.engine.confirmed_targets(&relay),
        d.engine.relay_targets(&relay)
    );

    // A relay that never answers: within hours the batch is given up.
    let (mut d, cs) = two_repos(config());
    let first = historic(&cs);
    run(&mut d, hours(3));
    assert!(
        d.engine
            .pending_targets(&relay)
            .is_some_and(|p| p.is_empty()),
        "a batch is never left pending forever"
    );
    let st = relay_status(&d.engine, &relay);
    let targets = d.engine.relay_targets(&relay).map_or(0, |s| s.len());
    assert_eq!(st.given_up.get(&GiveUpReason::Unresponsive), Some(&targets));
    assert!(st.stats.timeouts >= 2);
    assert_eq!(st.state, RelayState::Live);

    // The daily pass tries again.
    let resync = st.next_resync.expect("daily pass");
    let wait = resync.since(d.now).saturating_add(secs(1));
    let cs = tick_until(&mut d, wait, |cs| !historic(cs).is_empty())
        .expect("the daily pass retries given-up work");
    assert_eq!(union(&historic(&cs)), union(&first));
}

/// Item 12, `CLOSED rate-limited:`: the relay is cooled down 65 s (doubling
/// on a repeat), its concurrent-REQ budget is lowered, the closed id is no
/// longer held, and the same work is retried after the cool-down.
#[test]
fn never_again_12_closed_rate_limited() {
    let relay = url(R1);
    let mut cfg = config();
    // Four filters per REQ: discovery and the repos travel in REQs of their
    // own, so more subscriptions are open when the relay objects.
    cfg.default_budget.max_filters_per_req = 4;
    let (mut d, cs) = two_repos(cfg);
    let h = isolate_repo_req(&mut d, &cs);
    assert_eq!(h.shapes(), two_repo_shapes());
    let open_before = relay_status(&d.engine, &relay).open_subscriptions;
    assert!(open_before >= 3, "precondition: {open_before} open");
    let t = d.now;
    // A rate limit (a cap on concurrent REQs, "too many REQs", is not one:
    // see the concurrency tests of issue 15).
    let out = d.input(Input::Closed {
        relay: &relay,
        subscription: &h.id,
        message: "rate-limited: slow down",
    });
    assert!(historic(&out).is_empty(), "{}", show(&out));
    assert_not_held(&d, &relay, &h.id);
    let st = relay_status(&d.engine, &relay);
    assert_eq!(st.cooldown_until, Some(t.plus(secs(65))));
    let learned = st.learned_max_subscriptions.expect("a learned budget");
    assert!(
        learned < open_before as u32,
        "learned {learned} with {open_before} open"
    );
    assert!(st.budget.max_subscriptions <= learned);
    assert_eq!(st.stats.refusals.get("rate-limited"), Some(&1));
    let out = tick_until(&mut d, mins(3), |cs| !historic(cs).is_empty()).expect("a retry");
    assert_eq!(d.now, t.plus(secs(65)), "retried when the cool-down ends");
    let retry = historic(&out);
    assert_eq!(union(&retry), h.shapes());
    // A repeat doubles the cool-down.
    let t = d.now;
    d.input(Input::Closed {
        relay: &relay,
        subscription: &retry[0].id,
        message: "rate-limited: still too many",
    });
    assert_eq!(
        relay_status(&d.engine, &relay).cooldown_until,
        Some(t.plus(secs(130)))
    );
    assert_not_held(&d, &relay, &retry[0].id);
}

/// Item 12, `CLOSED auth-required:` with no key configured: the work is
/// given up (reported as auth-required) and not asked again until the daily
/// pass, which does ask again.
#[test]
fn never_again_12_closed_auth_required_without_key() {
    let relay = url(R1);
    let mut cfg = config();
    cfg.default_budget.max_filters_per_req = 4;
    let (mut d, cs) = two_repos(cfg);
    let h = isolate_repo_req(&mut d, &cs);
    let out = d.input(Input::Closed {
        relay: &relay,
        subscription: &h.id,
        message: "auth-required: we only serve members",
    });
    assert!(historic(&out).is_empty(), "{}", show(&out));
    assert!(!out
        .iter()
        .any(|c| matches!(c, Command::Authenticate { .. })));
    assert_not_held(&d, &relay, &h.id);
    let st = relay_status(&d.engine, &relay);
    assert_eq!(st.given_up.get(&GiveUpReason::AuthRequired), Some(&2));
    assert_eq!(st.stats.refusals.get("auth-required"), Some(&1));
    assert!(d
        .engine
        .pending_targets(&relay)
        .is_some_and(|p| p.is_empty()));
    let resync = st.next_resync.expect("daily pass");
    let (out, at_pass) = around_daily_pass(&mut d, resync);
    assert!(
        historic(&out).is_empty(),
        "asked again before the daily pass:\n{}",
        show(&out)
    );
    let out = at_pass;
    assert!(
        union(&historic(&out)).is_superset(&h.shapes()),
        "{}",
        show(&out)
    );
}

/// Item 12, `CLOSED auth-required:` with a key (`Config::auth_enabled`): the
/// engine answers the relay's AUTH challenge and, once accepted, resends the
/// same work; the closed id is not held meanwhile.
#[test]
fn never_again_12_closed_auth_required_with_key() {
    let relay = url(R1);
    let mut cfg = config();
    cfg.auth_enabled = true;
    cfg.default_budget.max_filters_per_req = 4;
    let (mut d, cs) = two_repos(cfg);
    let h = isolate_repo_req(&mut d, &cs);
    let out = d.input(Input::Closed {
        relay: &relay,
        subscription: &h.id,
        message: "auth-required: please authenticate",
    });
    assert!(
        historic(&out).is_empty(),
        "not resent before AUTH:\n{}",
        show(&out)
    );
    assert_not_held(&d, &relay, &h.id);
    let out = d.input(Input::AuthChallenge {
        relay: &relay,
        challenge: "c-123",
    });
    assert_eq!(
        out,
        vec![Command::Authenticate {
            relay: relay.clone(),
            challenge: "c-123".to_owned()
        }]
    );
    let mut out = d.input(Input::AuthResult {
        relay: &relay,
        accepted: true,
    });
    if historic(&out).is_empty() {
        out.extend(settle(&mut d));
    }
    let again = historic(&out);
    assert_eq!(union(&again), h.shapes(), "{}", show(&out));
    let st = relay_status(&d.engine, &relay);
    assert!(st.given_up.is_empty());
    eose(&mut d, &again);
    assert_eq!(
        d.engine.confirmed_targets(&relay),
        d.engine.relay_targets(&relay)
    );
}

/// Item 12, `CLOSED restricted:` (and `blocked:` on the live subscription):
/// the relay refuses us; the work stops, is reported, and is retried only at
/// the daily pass.
#[test]
fn never_again_12_closed_restricted() {
    let relay = url(R1);
    let (mut d, cs) = two_repos(config());
    let h = isolate_repo_req(&mut d, &cs);
    let lv = live(&cs).remove(0);
    let out = d.input(Input::Closed {
        relay: &relay,
        subscription: &h.id,
        message: "restricted: not on the allow list",
    });
    assert!(historic(&out).is_empty(), "{}", show(&out));
    assert_not_held(&d, &relay, &h.id);
    let st = relay_status(&d.engine, &relay);
    let given_up: usize = st.given_up.values().sum();
    assert_eq!(
        st.given_up.get(&GiveUpReason::Refused),
        Some(&given_up),
        "{:?}",
        st.given_up
    );
    assert!(given_up >= 2, "both repos given up: {:?}", st.given_up);
    assert_eq!(st.stats.refusals.get("restricted"), Some(&1));
    // The live subscription refused with `blocked:` is not reopened either.
    let out = d.input(Input::Closed {
        relay: &relay,
        subscription: &lv.id,
        message: "blocked: go away",
    });
    assert!(subs(&out).is_empty(), "{}", show(&out));
    assert_not_held(&d, &relay, &lv.id);
    assert_eq!(
        relay_status(&d.engine, &relay)
            .stats
            .refusals
            .get("blocked"),
        Some(&1)
    );
    let resync = st.next_resync.expect("daily pass");
    let (out, at_pass) = around_daily_pass(&mut d, resync);
    assert!(
        subs(&out).is_empty(),
        "asked again before the daily pass:\n{}",
        show(&out)
    );
    let out = at_pass;
    assert!(
        union(&historic(&out)).is_superset(&h.shapes()),
        "{}",
        show(&out)
    );
    assert!(
        union(&live(&out)).is_superset(&lv.shapes()),
        "the live subscription is reopened at the daily pass:\n{}",
        show(&out)
    );
}

/// Item 12, `CLOSED error:` / `invalid:` / `unsupported:`: the filter is
/// split once and the halves retried; a half refused again is given up for
/// this relay and reported, and not asked again before the daily pass.
#[test]
fn never_again_12_closed_error_splits_then_gives_up() {
    let relay = url(R1);
    let mut cfg = config();
    // Four filters per REQ: the two repos' filters travel in a REQ of their own.
    cfg.default_budget.max_filters_per_req = 4;
    let (mut d, cs) = two_repos(cfg);
    let (one, two) = (coord(1, "one"), coord(2, "two"));
    let repo_req = isolate_repo_req(&mut d, &cs);
    assert_eq!(repo_req.shapes(), two_repo_shapes());
    let mut out = d.input(Input::Closed {
        relay: &relay,
        subscription: &repo_req.id,
        message: "error: too many tag values",
    });
    assert_not_held(&d, &relay, &repo_req.id);
    if historic(&out).len() < 2 {
        out.extend(settle(&mut d));
    }
    let halves = historic(&out);
    assert_eq!(halves.len(), 2, "split in two:\n{}", show(&out));
    let only = |c: &grasp_sync_core::RepoCoord| -> Atoms {
        repo_shapes(&[c])
            .into_iter()
            .filter(|a| !is_discovery(a))
            .collect()
    };
    let got: Vec<Atoms> = halves.iter().map(Sub::shapes).collect();
    assert!(
        got.contains(&only(&one)) && got.contains(&only(&two)),
        "{got:?}"
    );
    // One half succeeds, the other is refused again.
    eose(&mut d, &halves[..1]);
    let out = d.input(Input::Closed {
        relay: &relay,
        subscription: &halves[1].id,
        message: "invalid: still bad",
    });
    assert!(
        historic(&out).is_empty(),
        "given up after the split:\n{}",
        show(&out)
    );
    assert_not_held(&d, &relay, &halves[1].id);
    let st = relay_status(&d.engine, &relay);
    assert_eq!(st.given_up.get(&GiveUpReason::Rejected), Some(&1));
    assert_eq!(st.stats.refusals.get("error"), Some(&1));
    assert_eq!(st.stats.refusals.get("invalid"), Some(&1));
    assert_eq!(
        d.engine.confirmed_targets(&relay).map(|s| s.len()),
        Some(2),
        "discovery and the good half"
    );
    let out = run(&mut d, hours(2));
    assert!(historic(&out).is_empty(), "{}", show(&out));
}

/// Item 12, `CLOSED error:` on a REQ that carries discovery and the repos'
/// filters together (the default packing): the repos' filter must still be
/// split once and its halves retried before any repo is given up (spec
/// section 5: "split the filter once and retry the halves; if that fails
/// too, give the item up"). Separating the REQ into its packs alone is not a
/// split of the filter: a refused two-repo filter must not cost both repos.
#[test]

fn never_again_12_closed_error_splits_the_filter_in_a_shared_req() {
    let relay = url(R1);
    let (one, two) = (coord(1, "one"), coord(2, "two"));
    let (mut d, cs) = two_repos(config());
    let req = isolate_repo_req(&mut d, &cs);
    assert!(
        req.shapes().iter().any(is_discovery),
        "precondition: discovery travels with the repos"
    );
    let mut out = d.input(Input::Closed {
        relay: &relay,
        subscription: &req.id,
        message: "error: bad filter",
    });
    out.extend(settle(&mut d));
    // Discovery alone is fine; the repos' filter is refused again.
    let retried = historic(&out);
    let (disc, repos): (Vec<Sub>, Vec<Sub>) = retried
        .into_iter()
        .partition(|s| s.shapes().iter().all(is_discovery));
    eose(&mut d, &disc);
    assert_eq!(repos.len(), 1, "{}", show(&out));
    assert_eq!(repos[0].shapes(), two_repo_shapes());
    let mut out = d.input(Input::Closed {
        relay: &relay,
        subscription: &repos[0].id,
        message: "error: bad filter",
    });
    out.extend(settle(&mut d));
    let only = |c: &grasp_sync_core::RepoCoord| -> Atoms {
        repo_shapes(&[c])
            .into_iter()
            .filter(|a| !is_discovery(a))
            .collect()
    };
    let halves: Vec<Atoms> = historic(&out).iter().map(Sub::shapes).collect();
    assert!(
        halves.contains(&only(&one)) && halves.contains(&only(&two)),
        "the two-repo filter was given up without being split: given up {:?}\n{}",
        relay_status(&d.engine, &relay).given_up,
        show(&out)
    );
}

/// Item 12, `CLOSED` with no known prefix, on a historic and on a live
/// subscription: retried with backoff (5 s, jittered) for the same work, and
/// the closed id is accounted for (not held meanwhile).
#[test]
fn never_again_12_closed_unprefixed_retries_with_backoff() {
    let relay = url(R1);
    let (mut d, cs) = two_repos(config());
    let h = isolate_repo_req(&mut d, &cs);
    let lv = live(&cs).remove(0);
    let t = d.now;
    let out = d.input(Input::Closed {
        relay: &relay,
        subscription: &h.id,
        message: "shutting down",
    });
    assert!(historic(&out).is_empty(), "{}", show(&out));
    assert_not_held(&d, &relay, &h.id);
    assert_eq!(
        relay_status(&d.engine, &relay).stats.refusals.get("other"),
        Some(&1)
    );
    let out = d.input(Input::Closed {
        relay: &relay,
        subscription: &lv.id,
        message: "",
    });
    assert!(live(&out).is_empty(), "{}", show(&out));
    assert_not_held(&d, &relay, &lv.id);
    let timed = ticks_for(&mut d, secs(12));
    let first = |mode: SubscriptionMode| -> Option<Time> {
        timed
            .iter()
            .find(|(_, c)| matches!(c, Command::Subscribe { mode: m, .. } if *m == mode))
            .map(|(at, _)| *at)
    };
    for mode in [SubscriptionMode::Historic, SubscriptionMode::Live] {
        let at = first(mode).unwrap_or_else(|| panic!("no {mode:?} retry"));
        let delay = at.since(t);
        assert!(
            delay >= secs(4) && delay <= secs(6),
            "{mode:?} retry after {delay:?}"
        );
    }
    let all: Vec<Command> = timed.into_iter().map(|(_, c)| c).collect();
    assert_eq!(union(&historic(&all)), h.shapes(), "{}", show(&all));
    let relive = live(&all);
    assert_eq!(relive.len(), 1, "{}", show(&all));
    assert_eq!(relive[0].shapes(), lv.shapes());
}

/// Item 12, the subscription id: a `CLOSED` or EOSE that arrives late for a
/// subscription we already replaced or closed is accounted to that old id
/// only. It must not close, retry or give up the work now running under
/// other ids.
#[test]
fn never_again_12_closed_for_an_old_id_touches_nothing_else() {
    let relay = url(R1);
    let ann1 = announcement(1, "one", T0 - 100, &[R1], true);
    let mut d = synced(config(), &[&ann1]);
    // Churn: two repos added one at a time, then a quick reconnect.
    for (n, name) in [(2, "two"), (3, "three")] {
        let ann = announcement(n, name, T0 - 90, &[R1], true);
        d.input(Input::CatalogEvent(&ann));
        let cs = settle(&mut d);
        eose(&mut d, &historic(&cs));
    }
    d.advance(mins(1));
    d.input(Input::Disconnected {
        relay: &relay,
        reason: "reset",
    });
    tick_until(&mut d, mins(1), |cs| connects(cs).contains(&relay)).expect("reconnect");
    let cs = d.input(Input::Connected { relay: &relay });
    eose(&mut d, &historic(&cs));
    // Now a REQ in flight for a fourth repo.
    let ann4 = announcement(4, "four", T0 - 80, &[R1], true);
    d.input(Input::CatalogEvent(&ann4));
    let cs = settle(&mut d);
    let in_flight = historic(&cs);
    assert_eq!(in_flight.len(), 1, "{}", show(&cs));

    let all_ids: BTreeSet<SubscriptionId> =
        on(&relay, subs(&d.log)).into_iter().map(|s| s.id).collect();
    let (held, stale): (Vec<SubscriptionId>, Vec<SubscriptionId>) = all_ids
        .into_iter()
        .partition(|id| d.engine.subscription_filters(&relay, id).is_some());
    assert!(stale.len() >= 3, "precondition: old ids {stale:?}");
    let held_filters: Vec<Vec<Filter>> = held
        .iter()
        .map(|id| {
            d.engine
                .subscription_filters(&relay, id)
                .expect("held")
                .to_vec()
        })
        .collect();
    let before = relay_status(&d.engine, &relay);

    let mut out = Vec::new();
    for old in &stale {
        for message in [
            "error: late",
            "restricted: late",
            "auth-required: late",
            "late",
        ] {
            out.extend(d.input(Input::Closed {
                relay: &relay,
                subscription: old,
                message,
            }));
        }
        out.extend(d.input(Input::Eose {
            relay: &relay,
            subscription: old,
        }));
    }
    out.extend(settle(&mut d));
    assert!(out.is_empty(), "{}", show(&out));
    for (id, filters) in held.iter().zip(&held_filters) {
        assert_eq!(
            d.engine
                .subscription_filters(&relay, id)
                .map(|f| f.to_vec()),
            Some(filters.clone()),
            "{id} was touched by a late answer to another id"
        );
    }
    let after = relay_status(&d.engine, &relay);
    assert!(after.given_up.is_empty(), "{:?}", after.given_up);
    assert_eq!(after.pending, before.pending);
    assert_eq!(after.open_subscriptions, before.open_subscriptions);
    assert_eq!(after.cooldown_until, None);
    eose(&mut d, &in_flight);
    assert_eq!(
        d.engine.confirmed_targets(&relay),
        d.engine.relay_targets(&relay)
    );
}
