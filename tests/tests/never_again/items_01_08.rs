//! Items 1 to 8 (and where 9 and 10 are) of the "never again" list.

use std::collections::BTreeSet;
use std::time::Duration;

use grasp_sync_core::{Command, Engine, Input, RelayState, RelayUrl, TargetKey, Time};
use grasp_sync_sim::fixtures::*;

use super::support::config;
use super::support::*;

// ----- item 1 ---------------------------------------------------------------

/// Item 1: "A wait that holds the one lock the waker needs (deadlock on rate
/// limit)." In the core a rate-limit cool-down is a deadline reported by
/// [`Engine::next_wakeup`], never a blocking wait: `handle_input` returns at
/// once, another relay keeps being served during the cool-down, and the
/// cooled-down relay resumes the same work when a tick reaches the deadline.
/// (Locks themselves live in the shell and are tested there.)
#[test]
fn never_again_01_rate_limit_wait_is_a_deadline_not_a_lock() {
    let (a, b) = (url(R1), url(R2));
    let ann1 = announcement(1, "one", T0 - 100, &[R1], true);
    let ann2 = announcement(2, "two", T0 - 100, &[R2], true);
    let (mut d, cs) = connected(config(), &[&ann1, &ann2]);
    let ha = on(&a, historic(&cs));
    let hb = on(&b, historic(&cs));
    assert!(!ha.is_empty() && !hb.is_empty(), "{}", show(&cs));

    let limited_at = d.now;
    let out = d.input(Input::Closed {
        relay: &a,
        subscription: &ha[0].id,
        message: "rate-limited: slow down",
    });
    assert!(
        historic(&out).is_empty(),
        "no REQ during the cool-down:\n{}",
        show(&out)
    );
    let cooldown_end = limited_at.plus(secs(65));
    assert_eq!(
        relay_status(&d.engine, &a).cooldown_until,
        Some(cooldown_end)
    );

    // During A's cool-down, B is served as usual.
    d.advance(secs(10));
    let out = eose(&mut d, &hb);
    assert!(
        unsubscribes(&out).contains(&(b.clone(), hb[0].id.clone())),
        "{}",
        show(&out)
    );
    assert_eq!(d.engine.confirmed_targets(&b), d.engine.relay_targets(&b));
    eose(&mut d, &ha[1..]);
    assert_eq!(
        d.engine.next_wakeup(),
        Some(cooldown_end),
        "the wait is a deadline"
    );

    // A resumes at the deadline with the same work.
    let out = tick_until(&mut d, mins(2), |cs| !historic(cs).is_empty())
        .expect("A resumes after its cool-down");
    assert_eq!(d.now, cooldown_end);
    let retried = historic(&out);
    assert!(retried.iter().all(|s| s.relay == a), "{}", show(&out));
    assert_eq!(union(&retried), ha[0].shapes());
}

// ----- item 2 ---------------------------------------------------------------

/// Item 2: "Network I/O while holding global state." The core owns no I/O:
/// its API is synchronous, `handle_input` returns nothing, and everything it
/// wants done comes out as [`Command`]s from `poll_command`. The engine is a
/// plain `Send` value (the shell may move it between threads and must drop
/// any lock before carrying commands out), and it holds no hidden handle: a
/// clone fed the same inputs at the same times emits the same commands, byte
/// for byte. That the shell never does network I/O under its engine lock is
/// the shell's test.
#[test]
fn never_again_02_engine_is_sync_and_owns_no_io() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Engine>();
    assert_send::<Command>();

    let mut config = config();
    config.bootstrap.push(url(R3));
    let mut e = Engine::new(config);
    let t = Time::from_secs(T0);
    // Returns unit: nothing is done inside the call, only queued.
    let () = e.handle_input(t, Input::Tick);
    let mut twin = e.clone();

    let ann = announcement(1, "repo", T0 - 100, &[R1], true);
    let feed = |e: &mut Engine| -> Vec<String> {
        let mut out = Vec::new();
        let drain = |e: &mut Engine, out: &mut Vec<String>| {
            while let Some(c) = e.poll_command() {
                out.push(serde_json::to_string(&c).expect("serialises"));
            }
        };
        drain(e, &mut out);
        e.handle_input(t.plus(secs(1)), Input::CatalogEvent(&ann));
        drain(e, &mut out);
        let r1 = url(R1);
        e.handle_input(t.plus(secs(2)), Input::Connected { relay: &r1 });
        drain(e, &mut out);
        let r3 = url(R3);
        e.handle_input(
            t.plus(secs(3)),
            Input::ConnectFailed {
                relay: &r3,
                reason: "x",
            },
        );
        drain(e, &mut out);
        e.handle_input(t.plus(secs(60)), Input::Tick);
        drain(e, &mut out);
        out
    };
    let a = feed(&mut e);
    let b = feed(&mut twin);
    assert!(!a.is_empty());
    assert_eq!(a, b, "the same inputs must give the same commands");
    assert!(a.iter().any(|c| c.contains(r#""command":"connect""#)));
}

// ----- item 3 ---------------------------------------------------------------

/// Item 3: "Quick reconnect with a `since` that is a duration instead of a
/// timestamp." After a short drop, the catch-up REQ must carry `since` = (the
/// moment of the drop, the last time we were connected) − 5 min as a Unix
/// timestamp, on every filter, for every confirmed target.
#[test]
fn never_again_03_quick_reconnect_since_is_a_timestamp() {
    let relay = url(R1);
    let ann = announcement(1, "repo", T0 - 100, &[R1], true);
    let repo = coord(1, "repo");
    let mut d = synced(config(), &[&ann]);
    let connected_at = d.now;

    d.advance(mins(10));
    let dropped_at = d.now;
    d.input(Input::Disconnected {
        relay: &relay,
        reason: "reset",
    });
    let cs = run(&mut d, secs(10));
    assert_eq!(connects(&cs), vec![relay.clone()], "{}", show(&cs));
    let cs = d.input(Input::Connected { relay: &relay });

    let hist = historic(&cs);
    assert_eq!(hist.len(), 1, "one catch-up REQ:\n{}", show(&cs));
    assert_eq!(
        hist[0].shapes(),
        repo_shapes(&[&repo]),
        "covers every confirmed target"
    );
    let expected = dropped_at.as_secs() - 300;
    assert!(expected > 1_700_000_000);
    for f in &hist[0].filters {
        let since = field(f, "since");
        assert_eq!(
            since,
            Some(expected),
            "since must be drop - 5 min: {}",
            f.as_json()
        );
        // Not a duration (the 10 min uptime, the 10 s downtime or the 5 min
        // margin) and not the connect time minus the margin.
        assert_ne!(since, Some(connected_at.as_secs() - 300));
        assert!(since.unwrap_or(0) > 1_000_000_000);
        assert_eq!(field(f, "until"), None);
    }
}

// ----- item 4 ---------------------------------------------------------------

/// Item 4: "Reconnect that reopens live subscriptions but never catches up on
/// the gap." A reconnect must both reopen the live subscription (`since`
/// about now, `limit:0`, every target) and run historic catch-up covering the
/// whole gap for every confirmed target (repos and roots), and that catch-up
/// must end with the targets confirmed again. After a long drop, the whole
/// history is fetched again (no `since`).
#[test]
fn never_again_04_reconnect_catches_up_on_the_gap() {
    let relay = url(R1);
    let ann1 = announcement(1, "one", T0 - 100, &[R1], true);
    let ann2 = announcement(2, "two", T0 - 100, &[R1], true);
    let (one, two) = (coord(1, "one"), coord(2, "two"));
    let issue = root(1621, 3, T0 - 50, &one, "bug");
    let mut d = synced(config(), &[&ann1, &ann2]);
    d.input(Input::CatalogEvent(&issue));
    let cs = settle(&mut d);
    d.eose_all(cs);
    let targets = d.engine.relay_targets(&relay).expect("targets");
    assert_eq!(targets.len(), 4, "discovery, two repos, one root");
    assert_eq!(d.engine.confirmed_targets(&relay), Some(targets.clone()));
    let mut expected = repo_shapes(&[&one, &two]);
    expected.extend(root_shapes(&issue.id));

    // Quick: a gap of a few seconds.
    d.advance(mins(30));
    let dropped_at = d.now;
    d.input(Input::Disconnected {
        relay: &relay,
        reason: "reset",
    });
    let cs = tick_until(&mut d, mins(1), |cs| connects(cs).contains(&relay))
        .expect("a reconnect attempt");
    assert!(connects(&cs).contains(&relay));
    let reconnected_at = d.now;
    let cs = d.input(Input::Connected { relay: &relay });

    let lv = live(&cs);
    assert!(
        !lv.is_empty(),
        "the live subscription is reopened:\n{}",
        show(&cs)
    );
    assert_eq!(union(&lv), expected, "live covers every target");
    for f in lv.iter().flat_map(|s| s.filters.iter()) {
        let since = field(f, "since").expect("live has since");
        assert!(
            since <= reconnected_at.as_secs() && since + 900 >= reconnected_at.as_secs(),
            "live since is about now: {}",
            f.as_json()
        );
        assert_eq!(field(f, "limit"), Some(0));
    }
    let hist = historic(&cs);
    assert!(
        !hist.is_empty(),
        "no catch-up after reconnect:\n{}",
        show(&cs)
    );
    for f in hist.iter().flat_map(|h| h.filters.iter()) {
        let since = field(f, "since").expect("catch-up is bounded below");
        assert!(
            since <= dropped_at.as_secs(),
            "the gap starts at the drop: {}",
            f.as_json()
        );
        assert_eq!(
            field(f, "until"),
            None,
            "the gap reaches now: {}",
            f.as_json()
        );
    }
    assert_eq!(
        union(&hist),
        expected,
        "catch-up covers every confirmed target"
    );
    assert_eq!(d.engine.pending_targets(&relay), Some(targets.clone()));
    eose(&mut d, &hist);
    assert_eq!(d.engine.confirmed_targets(&relay), Some(targets.clone()));
    assert!(d
        .engine
        .pending_targets(&relay)
        .is_some_and(|p| p.is_empty()));
    assert_eq!(relay_status(&d.engine, &relay).state, RelayState::Live);

    // Long: a 20 min gap is a fresh start, the whole history again.
    d.advance(mins(30));
    d.input(Input::Disconnected {
        relay: &relay,
        reason: "reset",
    });
    let at = d.now.plus(mins(20));
    fail_until(&mut d, &relay, at);
    let cs = d.input(Input::Connected { relay: &relay });
    let hist = historic(&cs);
    assert!(!hist.is_empty(), "{}", show(&cs));
    for f in hist.iter().flat_map(|h| h.filters.iter()) {
        assert_eq!(field(f, "since"), None, "fresh start: {}", f.as_json());
    }
    assert_eq!(union(&hist), expected);
    assert_eq!(union(&live(&cs)), expected);
}

// ----- item 5 ---------------------------------------------------------------

/// Item 5: "The 15-minute window measured from the last connect instead of
/// the drop." A relay that was connected for hours and dropped a moment ago
/// gets a quick reconnect; one that has been down 15 min or more (counted
/// from the drop) gets a fresh start, however short its last connection.
#[test]
fn never_again_05_window_measured_from_the_drop() {
    let relay = url(R1);
    let ann = announcement(1, "repo", T0 - 100, &[R1], true);
    let repo = coord(1, "repo");

    // Connected two hours, dropped, back within seconds: quick.
    let mut d = synced(config(), &[&ann]);
    d.advance(hours(2));
    let dropped_at = d.now;
    d.input(Input::Disconnected {
        relay: &relay,
        reason: "reset",
    });
    let cs = run(&mut d, secs(10));
    assert_eq!(connects(&cs), vec![relay.clone()]);
    let cs = d.input(Input::Connected { relay: &relay });
    let hist = historic(&cs);
    assert_eq!(hist.len(), 1, "{}", show(&cs));
    assert_eq!(hist[0].shapes(), repo_shapes(&[&repo]));
    for f in &hist[0].filters {
        assert_eq!(
            field(f, "since"),
            Some(dropped_at.as_secs() - 300),
            "{}",
            f.as_json()
        );
    }
    d.eose_all(cs);

    // Dropped again after a minute, back after about 10 min of failed
    // attempts: still within the window (measured from the drop), quick.
    d.advance(mins(1));
    let dropped_at = d.now;
    d.input(Input::Disconnected {
        relay: &relay,
        reason: "reset",
    });
    fail_until(&mut d, &relay, dropped_at.plus(mins(9)));
    let down = d.now.since(dropped_at);
    assert!(
        down >= mins(9) && down < mins(15),
        "precondition: down {down:?}"
    );
    let cs = d.input(Input::Connected { relay: &relay });
    let hist = historic(&cs);
    assert_eq!(hist.len(), 1, "{}", show(&cs));
    for f in &hist[0].filters {
        assert_eq!(
            field(f, "since"),
            Some(dropped_at.as_secs() - 300),
            "{}",
            f.as_json()
        );
    }
    assert_eq!(
        d.engine.confirmed_targets(&relay),
        d.engine.relay_targets(&relay),
        "a quick reconnect keeps confirmed state"
    );
    d.eose_all(cs);

    // Connected one minute, down 15 min or more: fresh start.
    d.advance(mins(1));
    let dropped_at = d.now;
    d.input(Input::Disconnected {
        relay: &relay,
        reason: "reset",
    });
    fail_until(&mut d, &relay, dropped_at.plus(mins(15)));
    assert!(d.now.since(dropped_at) >= mins(15));
    let cs = d.input(Input::Connected { relay: &relay });
    let hist = historic(&cs);
    assert_eq!(hist.len(), 1, "{}", show(&cs));
    for f in &hist[0].filters {
        assert_eq!(field(f, "since"), None, "fresh start: {}", f.as_json());
    }
    assert_eq!(
        d.engine.confirmed_targets(&relay).map(|s| s.len()),
        Some(0),
        "a fresh start re-confirms everything"
    );
    assert_eq!(
        d.engine.pending_targets(&relay),
        d.engine.relay_targets(&relay)
    );
}

// ----- item 6 ---------------------------------------------------------------

/// Checks the retry schedule of a relay whose every connection attempt fails,
/// starting with the attempt in `first` (made at `d.now`). Returns the number
/// of attempts made over `days` days.
fn check_retry_schedule(d: &mut Driver, relay: &RelayUrl, first: &[Command], days: u64) -> usize {
    assert!(
        connects(first).contains(relay),
        "first attempt:\n{}",
        show(first)
    );
    let start = d.now;
    let mut attempts = 1;
    // The very first attempt hangs: the connect timeout (30 s) fails it.
    let cs = run(d, secs(31));
    assert!(
        disconnects(&cs).contains(relay),
        "a hung attempt is abandoned:\n{}",
        show(&cs)
    );
    let mut failed_at = start.plus(secs(30));
    let mut failures: u32 = 1;
    let end = start.plus(hours(24 * days));
    loop {
        let w = d
            .engine
            .next_wakeup()
            .expect("a failing relay is never parked");
        let delay = w.since(failed_at);
        // Failing since the hung first attempt was abandoned.
        if failed_at.since(start.plus(secs(30))) >= hours(24) {
            // Dead: retried once a day (with 5 % jitter).
            assert_eq!(relay_status(&d.engine, relay).state, RelayState::Dead);
            assert!(
                delay >= Duration::from_secs(82_080) && delay <= Duration::from_secs(90_720),
                "dead relay retried after {delay:?} (failure {failures})"
            );
        } else {
            let base = (5u64 << (failures - 1).min(20)).min(3600);
            let lo = Duration::from_millis(base * 800);
            let hi = Duration::from_millis((base * 1200).min(3_600_000));
            assert!(
                delay >= lo && delay <= hi,
                "failure {failures}: retry after {delay:?}, expected {lo:?}..={hi:?}"
            );
            assert_eq!(
                relay_status(&d.engine, relay).state,
                RelayState::Disconnected
            );
        }
        if w > end {
            break;
        }
        d.now = w;
        let cs = d.input(Input::Tick);
        assert_eq!(
            connects(&cs),
            vec![relay.clone()],
            "retry {failures}:\n{}",
            show(&cs)
        );
        attempts += 1;
        d.advance(secs(2));
        d.input(Input::ConnectFailed {
            relay,
            reason: "refused",
        });
        failed_at = d.now;
        failures += 1;
        assert_eq!(relay_status(&d.engine, relay).failures, failures);
    }
    // And it still connects when the relay comes back.
    d.now = d.engine.next_wakeup().expect("wakeup");
    let cs = d.input(Input::Tick);
    assert_eq!(connects(&cs), vec![relay.clone()]);
    d.input(Input::Connected { relay });
    assert!(matches!(
        relay_status(&d.engine, relay).state,
        RelayState::Syncing | RelayState::Live
    ));
    attempts
}

/// Item 6: "A bootstrap or new relay whose first connect fails and is never
/// retried." Both a bootstrap relay (`Config::bootstrap`) and a relay first
/// seen in an announcement are retried after a failed (or hung) first
/// connect: 5 s doubling to the 1 h cap (±20 % jitter), then, after 24 h of
/// failures, once a day (dead), and never parked.
#[test]
fn never_again_06_failed_first_connect_is_retried() {
    // Bootstrap relay.
    let relay = url(R3);
    let mut cfg = config();
    cfg.bootstrap.push(relay.clone());
    let mut d = Driver::new(cfg);
    let first = d.input(Input::Tick);
    let n = check_retry_schedule(&mut d, &relay, &first, 4);
    // 5 s .. 1 h ≈ 11 attempts to reach the cap, then ~21 hourly ones, then daily.
    assert!((30..=40).contains(&n), "{n} attempts over four days");

    // A relay from an announcement.
    let relay = url(R1);
    let ann = announcement(1, "repo", T0 - 100, &[R1], true);
    let mut d = Driver::new(config());
    let first = d.input(Input::CatalogEvent(&ann));
    let n = check_retry_schedule(&mut d, &relay, &first, 4);
    assert!((30..=40).contains(&n), "{n} attempts over four days");
}

/// Item 6, continued: a bootstrap relay that finally connects does the work
/// it is there for, layer-1 discovery (`{"kinds":[30617]}`), even when no
/// announcement lists it.
#[test]
fn never_again_06_bootstrap_relay_runs_discovery_once_connected() {
    let relay = url(R3);
    let mut config = config();
    config.bootstrap.push(relay.clone());
    let mut d = Driver::new(config);
    let cs = d.input(Input::Tick);
    assert_eq!(connects(&cs), vec![relay.clone()]);
    d.input(Input::ConnectFailed {
        relay: &relay,
        reason: "refused",
    });
    let cs = run(&mut d, secs(10));
    assert_eq!(connects(&cs), vec![relay.clone()]);
    let cs = d.input(Input::Connected { relay: &relay });
    assert!(
        union(&historic(&cs)).iter().any(is_discovery),
        "a bootstrap relay must run discovery:\n{}",
        show(&cs)
    );
    assert!(union(&live(&cs)).iter().any(is_discovery), "{}", show(&cs));
}

/// Item 6, continued: a bootstrap relay keeps its layer-1 discovery when an
/// announcement that listed it is replaced by one that does not (spec
/// section 1: a bootstrap relay is always connected, even when no
/// announcement lists it). Its discovery is the operator's, not the
/// announcement's, and must not be dropped with the announcement's targets.
#[test]
fn never_again_06_bootstrap_relay_keeps_discovery_when_unlisted() {
    let boot = url(R3);
    let mut config = config();
    config.bootstrap.push(boot.clone());
    let mut d = Driver::new(config);
    let cs = d.input(Input::Tick);
    let cs = d.connect_all(&cs);
    d.eose_all(cs);
    let discovery = BTreeSet::from([TargetKey::Discovery]);
    assert_eq!(d.engine.relay_targets(&boot), Some(discovery.clone()));

    let listed = announcement(1, "repo", T0 - 100, &[R3], true);
    d.input(Input::CatalogEvent(&listed));
    let cs = settle(&mut d);
    d.eose_all(cs);
    assert_eq!(d.engine.relay_targets(&boot).map(|s| s.len()), Some(2));

    let unlisted = announcement(1, "repo", T0 - 50, &[R1], true);
    d.input(Input::CatalogEvent(&unlisted));
    let cs = settle(&mut d);
    assert_eq!(
        d.engine.relay_targets(&boot),
        Some(discovery.clone()),
        "the bootstrap relay lost its discovery:\n{}",
        show(&cs)
    );
    assert_eq!(
        union(&open_live(&d, &boot)),
        target_shapes(&discovery),
        "the live discovery subscription is still open:\n{}",
        show(&cs)
    );
}

// ----- item 7 ---------------------------------------------------------------

/// Item 7: "Empty-relay cleanup that closes a relay while its first batch is
/// pending." A new relay whose first historic batch is still being answered
/// (events trickling in), or has gone unanswered and is being retried, is
/// never closed, however long past the 60 s grace; neither is a bootstrap
/// relay that no announcement lists. Only a relay with no targets and
/// nothing pending is.
#[test]
fn never_again_07_empty_relay_not_closed_while_first_batch_pending() {
    let relay = url(R1);
    let ann = announcement(1, "repo", T0 - 100, &[R1], true);
    let repo = coord(1, "repo");
    let (mut d, cs) = connected(config(), &[&ann]);
    let first = historic(&cs);
    assert_eq!(first.len(), 1, "{}", show(&cs));
    let sub = first[0].id.clone();

    // The first batch is answered slowly: one event every 30 s for 5 min.
    let mut all = Vec::new();
    for i in 0..10 {
        all.extend(d.advance(secs(30)));
        let e = root(1621, 9, T0 - 1000 - i, &repo, &format!("issue {i}"));
        all.extend(d.input(Input::EventReceived {
            relay: &relay,
            subscription: &sub,
            event: &e,
        }));
        assert_eq!(relay_status(&d.engine, &relay).state, RelayState::Syncing);
    }
    assert!(
        disconnects(&all).is_empty(),
        "closed while its first batch was pending:\n{}",
        show(&all)
    );
    assert!(unsubscribes(&all).is_empty(), "{}", show(&all));
    assert!(!d
        .engine
        .pending_targets(&relay)
        .expect("still known")
        .is_empty());

    // Then it goes silent: timeouts and retries, still not closed.
    let all = run(&mut d, mins(5));
    assert!(disconnects(&all).is_empty(), "{}", show(&all));
    assert!(d.engine.relay_urls().any(|u| *u == relay));
    assert!(!d
        .engine
        .pending_targets(&relay)
        .expect("still known")
        .is_empty());
    assert_eq!(d.engine.status().counters.relays_forgotten, 0);

    // A bootstrap relay that no announcement lists is never closed either.
    let boot = url(R3);
    let mut cfg = config();
    cfg.bootstrap.push(boot.clone());
    let mut d = Driver::new(cfg);
    let cs = d.input(Input::Tick);
    d.connect_all(&cs);
    let all = run(&mut d, mins(10));
    assert!(disconnects(&all).is_empty(), "{}", show(&all));
    assert!(d.engine.relay_urls().any(|u| *u == boot));

    // Whereas a relay that lost its targets is closed after the grace.
    let ann = announcement(1, "repo", T0 - 100, &[R1], true);
    let (mut d, _) = connected(config(), &[&ann]);
    let newer = announcement(1, "repo", T0 - 50, &[R2], true);
    let cs = d.input(Input::CatalogEvent(&newer));
    d.connect_all(&cs);
    assert_eq!(d.engine.relay_targets(&relay).map(|s| s.len()), Some(0));
    let all = run(&mut d, secs(59));
    assert!(disconnects(&all).is_empty());
    let all = run(&mut d, secs(2));
    assert_eq!(disconnects(&all), vec![relay.clone()], "{}", show(&all));
    assert!(d.engine.relay_targets(&relay).is_none());
}

// ----- item 8 ---------------------------------------------------------------

/// Two relays carrying one repo, synced; A drops 5 min before its daily pass
/// and fails to reconnect until 4 min after it. Returns the driver (with A's
/// reconnect attempt pending), A's targets and the drop time.
fn down_across_daily_pass() -> (Driver, BTreeSet<TargetKey>, Time) {
    let a = url(R1);
    let ann = announcement(1, "repo", T0 - 100, &[R1, R2], true);
    let mut d = synced(config(), &[&ann]);
    let targets = d.engine.relay_targets(&a).expect("targets");
    let resync_a = relay_status(&d.engine, &a)
        .next_resync
        .expect("A has a daily pass");
    assert!(resync_a >= d.now.plus(hours(23)) && resync_a <= d.now.plus(hours(25)));
    let drop_at = resync_a.minus(mins(5));
    let wait = drop_at.since(d.now);
    run(&mut d, wait);
    d.input(Input::Disconnected {
        relay: &a,
        reason: "reset",
    });
    assert_eq!(relay_status(&d.engine, &a).last_connected, Some(drop_at));
    let cs = fail_until(&mut d, &a, resync_a.plus(mins(4)));
    assert!(connects(&cs).contains(&a));
    assert!(d.now > resync_a && d.now.since(drop_at) < mins(15));
    (d, targets, drop_at)
}

/// Item 8: "The daily pass wiping the state of a disconnected relay." When a
/// relay's daily re-sync falls due while it is disconnected, its confirmed
/// targets, cursors and targets stay as they were, so a reconnect within
/// 15 min of the drop is still a quick catch-up from the drop; a connected
/// relay's daily pass runs a full pass and keeps its confirmed state until
/// the pass replaces it.
#[test]
fn never_again_08_daily_pass_keeps_disconnected_relay_state() {
    let (a, b) = (url(R1), url(R2));
    let repo = coord(1, "repo");
    let (mut d, targets, drop_at) = down_across_daily_pass();

    // While down across its daily pass, A's state is intact.
    assert_eq!(
        d.engine.confirmed_targets(&a),
        Some(targets.clone()),
        "confirmed state wiped"
    );
    assert_eq!(d.engine.relay_targets(&a), Some(targets.clone()));
    assert_eq!(relay_status(&d.engine, &a).last_connected, Some(drop_at));
    let snap = d.engine.snapshot();
    let saved = snap.relays.iter().find(|r| r.url == a).expect("A saved");
    assert_eq!(saved.confirmed.len(), targets.len());
    assert_eq!(saved.last_connected, Some(drop_at));

    // A comes back: a quick catch-up from the drop, not a wiped full sync.
    let cs = d.input(Input::Connected { relay: &a });
    let catch_up: Vec<Sub> = historic(&cs)
        .into_iter()
        .filter(|s| {
            s.filters
                .iter()
                .all(|f| field(f, "since") == Some(drop_at.as_secs() - 300))
        })
        .collect();
    assert_eq!(
        union(&catch_up),
        repo_shapes(&[&repo]),
        "quick catch-up from the drop:\n{}",
        show(&cs)
    );
    eose(&mut d, &historic(&cs));
    assert_eq!(d.engine.confirmed_targets(&a), Some(targets.clone()));

    // B, connected at its own daily pass, runs a full pass and keeps its
    // confirmed state meanwhile.
    let resync_b = relay_status(&d.engine, &b).next_resync.expect("B");
    let already = on(&b, historic(&d.log)).len();
    let pass = if already >= 2 {
        on(&b, historic(&d.log))[1..].to_vec()
    } else {
        let wait = resync_b.since(d.now).saturating_add(secs(1));
        let cs = tick_until(&mut d, wait, |cs| !on(&b, historic(cs)).is_empty())
            .expect("B's daily pass");
        on(&b, historic(&cs))
    };
    assert_eq!(union(&pass), repo_shapes(&[&repo]));
    for f in pass.iter().flat_map(|s| s.filters.iter()) {
        assert_eq!(
            field(f, "since"),
            None,
            "a daily pass is full: {}",
            f.as_json()
        );
    }
    assert_eq!(
        d.engine.confirmed_targets(&b),
        Some(targets.clone()),
        "kept until the pass replaces it"
    );
}

/// Item 8, continued: the daily pass a relay missed while it was down is not
/// lost either. After the quick catch-up of a relay that was disconnected when
/// its pass fell due, a full historic pass (no `since`) runs soon, rather than
/// the relay going two days without one (spec section 4: every 23–25 h).
#[test]

fn never_again_08_missed_daily_pass_runs_after_reconnect() {
    let a = url(R1);
    let repo = coord(1, "repo");
    let (mut d, _, _) = down_across_daily_pass();
    let reconnected_at = d.now;
    let cs = d.input(Input::Connected { relay: &a });
    let mut seen = on(&a, historic(&cs));
    eose(&mut d, &historic(&cs));
    let cs = run(&mut d, mins(10));
    seen.extend(on(&a, historic(&cs)));
    eose(&mut d, &historic(&cs));
    let full: Vec<Sub> = seen
        .into_iter()
        .filter(|s| s.filters.iter().all(|f| field(f, "since").is_none()))
        .collect();
    assert_eq!(
        union(&full),
        repo_shapes(&[&repo]),
        "the missed daily pass must still run (reconnected at {reconnected_at}); next pass at {:?}",
        relay_status(&d.engine, &a).next_resync
    );
}

// ----- items 9 and 10 ---------------------------------------------------------
//
// Item 9 ("negentropy disabled forever because rejected events counted as
// missing") and item 10 ("negentropy run against an empty local set") are
// tested in `never_again_nip77.rs`, where a relay that reconciles is played
// by hand.
