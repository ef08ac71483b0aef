//! Items 13 to 15 of the "never again" list.

use std::collections::{BTreeMap, BTreeSet};

use grasp_sync_core::{Command, Engine, Input, RelayUrl, Snapshot, StoreOutcome, TargetKey};
use grasp_sync_sim::fixtures::*;
use nostr::event::Event;
use nostr::message::SubscriptionId;

use super::support::config;
use super::support::*;

// ----- item 13 --------------------------------------------------------------

/// Item 13: "Every new local event re-sending every filter to every relay."
/// On relays that are connected and synced, a new repo announcement or a new
/// root event costs, per relay that lists the repo, at most one new historic
/// REQ (about the new target only) and one live REQ (the update of one live
/// subscription, with at most one `CLOSE` of the id it replaces, or one new
/// small live subscription), after which the relay's live subscriptions cover
/// every target; relays that do not list it get nothing, and events that
/// change nothing cost nothing.
#[test]
fn never_again_13_new_event_does_not_resend_every_filter() {
    let (a, b, c) = (url(R1), url(R2), url(R3));
    let one = coord(1, "one");
    let ann1 = announcement(1, "one", T0 - 100, &[R1, R2], true);
    let ann9 = announcement(9, "nine", T0 - 100, &[R3], true);
    let mut d = synced(config(), &[&ann1, &ann9]);
    run(&mut d, mins(1));

    let live_ids = |d: &Driver| -> BTreeMap<RelayUrl, BTreeSet<SubscriptionId>> {
        [&a, &b, &c]
            .into_iter()
            .map(|r| {
                (
                    r.clone(),
                    open_live(d, r).into_iter().map(|s| s.id).collect(),
                )
            })
            .collect()
    };
    // `new`: the new target; every affected relay must fetch it and only it.
    let check = |d: &Driver,
                 cs: &[Command],
                 before: &BTreeMap<RelayUrl, BTreeSet<SubscriptionId>>,
                 affected: &[&RelayUrl],
                 new: &TargetKey| {
        let new_shapes = target_shapes(&BTreeSet::from([new.clone()]));
        for relay in [&a, &b, &c] {
            let mine: Vec<Command> = cs.iter().filter(|x| x.relay() == relay).cloned().collect();
            if !affected.contains(&relay) {
                assert!(
                    mine.is_empty(),
                    "{relay} is not concerned:\n{}",
                    show(&mine)
                );
                continue;
            }
            let h = historic(&mine);
            let l = live(&mine);
            let u = unsubscribes(&mine);
            assert_eq!(h.len(), 1, "{relay}: one historic REQ:\n{}", show(&mine));
            assert_eq!(
                h[0].shapes(),
                new_shapes,
                "{relay}: history of the new target only"
            );
            assert_eq!(l.len(), 1, "{relay}: one live REQ:\n{}", show(&mine));
            assert!(
                l[0].shapes().is_superset(&new_shapes),
                "{relay}: the live REQ covers the new target"
            );
            assert!(
                u.len() <= 1 && u.iter().all(|(_, id)| before[relay].contains(id)),
                "{relay}: at most the one updated live subscription is closed:\n{}",
                show(&mine)
            );
            assert_eq!(
                mine.len(),
                h.len() + l.len() + u.len(),
                "{relay}: nothing else:\n{}",
                show(&mine)
            );
            let targets = d.engine.relay_targets(relay).expect("known");
            assert!(targets.contains(new));
            assert_eq!(
                union(&open_live(d, relay)),
                target_shapes(&targets),
                "{relay}: live subscriptions cover old and new targets"
            );
        }
    };

    // A new repo listed by A only.
    let ann2 = announcement(2, "two", T0 - 90, &[R1], true);
    let two = TargetKey::Repo(std::sync::Arc::new(coord(2, "two")));
    let before = live_ids(&d);
    let mut cs = d.input(Input::CatalogEvent(&ann2));
    cs.extend(settle(&mut d));
    check(&d, &cs, &before, &[&a], &two);
    eose(&mut d, &historic(&cs));

    // A new issue on repo one: A and B.
    let issue = root(1621, 5, T0 - 10, &one, "bug");
    let before = live_ids(&d);
    let mut cs = d.input(Input::CatalogEvent(&issue));
    cs.extend(settle(&mut d));
    check(&d, &cs, &before, &[&a, &b], &TargetKey::Root(issue.id));
    eose(&mut d, &historic(&cs));

    // A third repo on A: again one REQ and one live REQ, however many
    // subscriptions A holds by now.
    let ann3 = announcement(3, "three", T0 - 80, &[R1], true);
    let three = TargetKey::Repo(std::sync::Arc::new(coord(3, "three")));
    let before = live_ids(&d);
    let mut cs = d.input(Input::CatalogEvent(&ann3));
    cs.extend(settle(&mut d));
    check(&d, &cs, &before, &[&a], &three);
    eose(&mut d, &historic(&cs));
    for r in [&a, &b, &c] {
        assert_eq!(d.engine.confirmed_targets(r), d.engine.relay_targets(r));
    }

    // Events that change nothing cost nothing.
    for e in [&ann2, &ann1] {
        let mut cs = d.input(Input::CatalogEvent(e));
        cs.extend(settle(&mut d));
        assert!(cs.is_empty(), "a repeated announcement:\n{}", show(&cs));
    }
    let mut cs = d.input(Input::CatalogEvent(&issue));
    cs.extend(settle(&mut d));
    assert!(cs.is_empty(), "a repeated root event:\n{}", show(&cs));
    let stranger = root(1621, 5, T0 - 5, &coord(42, "untracked"), "elsewhere");
    let mut cs = d.input(Input::CatalogEvent(&stranger));
    cs.extend(settle(&mut d));
    assert!(
        cs.is_empty(),
        "a root event of an untracked repo:\n{}",
        show(&cs)
    );
}

// ----- item 14 --------------------------------------------------------------

/// Item 14: "Own-relay detection by substring; `https://github.com/...`
/// clone URLs turned into relays." For service `git.example.com`, relays
/// whose names merely contain it are real targets, while spellings of the
/// service itself (`wss://GIT.example.com/`, `ws://git.example.com:80`) never
/// are; a github clone URL creates no relay, while a GRASP-shaped clone URL
/// maps to its relay.
#[test]
fn never_again_14_own_relay_exact_match_and_no_github_relays() {
    let npub = format!("npub1{}", "q".repeat(58));
    assert_eq!(npub.len(), 63);
    let grasp_clone = format!("https://grasp.example.org/{npub}/y.git");
    let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let ann = event(
        pubkey(1),
        T0 - 100,
        30617,
        vec![
            t(&["d", "y"]),
            t(&[
                "relays",
                "wss://git.example.com.evil.org",
                "wss://notgit.example.com",
                "wss://GIT.example.com/",
                "ws://git.example.com:80",
            ]),
            t(&["clone", "https://github.com/x/y.git", &grasp_clone]),
        ],
        "",
    );
    let mut config = config();
    config.bootstrap.push(url("wss://git.example.com"));
    let mut d = Driver::new(config);
    let mut cs = d.input(Input::Tick);
    cs.extend(d.input(Input::CatalogEvent(&ann)));
    assert_eq!(
        d.engine.status().repos,
        1,
        "listing `wss://GIT.example.com/` is listing us"
    );

    let expected: BTreeSet<RelayUrl> = [
        "wss://git.example.com.evil.org",
        "wss://notgit.example.com",
        "wss://grasp.example.org",
    ]
    .into_iter()
    .map(url)
    .collect();
    let known: BTreeSet<RelayUrl> = d.engine.relay_urls().cloned().collect();
    assert_eq!(known, expected);
    let connected: BTreeSet<RelayUrl> = connects(&cs).into_iter().collect();
    assert_eq!(connected, expected, "{}", show(&cs));
    let repo = TargetKey::Repo(std::sync::Arc::new(coord(1, "y")));
    for r in &expected {
        assert!(
            d.engine.relay_targets(r).is_some_and(|t| t.contains(&repo)),
            "{r}"
        );
    }
    for own in [
        "wss://git.example.com",
        "ws://git.example.com",
        "wss://github.com",
    ] {
        let own = url(own);
        assert!(
            d.engine.relay_targets(&own).is_none(),
            "{own} must never be a target"
        );
        assert!(!cs.iter().any(|c| *c.relay() == own), "{}", show(&cs));
    }
}

// ----- item 15 --------------------------------------------------------------

/// Drains an engine driven by hand.
fn drain(e: &mut Engine) -> Vec<Command> {
    let mut out = Vec::new();
    while let Some(c) = e.poll_command() {
        out.push(c);
    }
    out
}

/// Item 15: "Indexes that only grow; nothing persisted; status metrics never
/// written." The status view counts received, stored, duplicate, rejected
/// and invalid events; `Engine::snapshot()` survives JSON and
/// `Engine::restore` keeps confirmed targets, giving a quick reconnect within
/// 15 min of the save and a fresh start after; a newer announcement without a
/// relay and kind-5 deletions both shrink targets, and a relay left empty is
/// forgotten after the 60 s grace.
#[test]
fn never_again_15_indexes_shrink_state_persists_status_counts() {
    let (a, b) = (url(R1), url(R2));
    let one = coord(1, "one");
    let ann1 = announcement(1, "one", T0 - 100, &[R1, R2], true);
    let ann2 = announcement(2, "two", T0 - 100, &[R2], true);
    let issue = root(1621, 5, T0 - 50, &one, "bug");
    let mut d = synced(config(), &[&ann1, &ann2]);
    d.input(Input::CatalogEvent(&issue));
    let cs = settle(&mut d);
    eose(&mut d, &historic(&cs));
    assert_eq!(d.engine.relay_targets(&a).map(|s| s.len()), Some(3));
    assert_eq!(d.engine.relay_targets(&b).map(|s| s.len()), Some(4));
    assert_eq!(d.engine.status().roots, 1);

    // Status counters: received, stored, duplicate, rejected, invalid.
    let another = root(1621, 6, T0 - 40, &one, "another");
    d.input(Input::CatalogEvent(&another));
    let cs = settle(&mut d);
    let (mine, rest): (Vec<Sub>, Vec<Sub>) = historic(&cs)
        .into_iter()
        .partition(|s| s.relay == a && s.json().iter().any(|f| f.contains(&another.id.to_hex())));
    let h = mine.first().cloned().expect("a REQ on A for the new root");
    eose(&mut d, &rest);
    let replies: Vec<Event> = (0..3)
        .map(|n| status(1630 + n, 8, T0 - 10, &another.id))
        .collect();
    for (e, o) in replies.iter().zip([
        StoreOutcome::Stored,
        StoreOutcome::Duplicate,
        StoreOutcome::Rejected,
    ]) {
        d.input(Input::EventReceived {
            relay: &a,
            subscription: &h.id,
            event: e,
        });
        d.input(Input::EventStored {
            relay: &a,
            id: e.id,
            created_at: e.created_at.as_secs(),
            outcome: o,
        });
    }
    d.input(Input::EventInvalid { relay: &a });
    let stray = root(1621, 9, T0, &coord(42, "x"), "stray");
    d.input(Input::EventReceived {
        relay: &a,
        subscription: &SubscriptionId::new("nope"),
        event: &stray,
    });
    let st = relay_status(&d.engine, &a);
    assert_eq!(st.stats.events_received, 3);
    assert_eq!(st.stats.events_stored, 1);
    assert_eq!(st.stats.events_duplicate, 1);
    assert_eq!(st.stats.events_rejected, 1);
    assert_eq!(st.stats.events_invalid, 1);
    assert_eq!(st.stats.events_unrequested, 1);
    assert_eq!(
        st.last_event_at.values().copied().max(),
        Some(T0 - 10),
        "cursor of the newest event"
    );
    let totals = d.engine.status().totals;
    assert_eq!(
        (
            totals.events_received,
            totals.events_stored,
            totals.events_rejected,
            totals.events_invalid,
            totals.events_unwanted
        ),
        (3, 1, 1, 1, 1)
    );
    eose(&mut d, &[h]);
    for r in [&a, &b] {
        assert_eq!(d.engine.confirmed_targets(r), d.engine.relay_targets(r));
    }

    // Persistence: snapshot → JSON → restore keeps confirmed targets.
    let saved_at = d.now;
    let confirmed_a = d.engine.confirmed_targets(&a).expect("A");
    let confirmed_b = d.engine.confirmed_targets(&b).expect("B");
    assert_eq!(confirmed_a.len(), 4);
    let json = serde_json::to_string(&d.engine.snapshot()).expect("serialises");
    assert_eq!(json, d.engine.snapshot().to_json());
    let snap = Snapshot::from_json(&json).expect("parses");
    let restored_at = saved_at.plus(mins(10));
    let mut e = Engine::restore(config(), snap.clone(), restored_at).expect("restores");
    assert_eq!(e.confirmed_targets(&a), Some(confirmed_a.clone()));
    assert_eq!(e.confirmed_targets(&b), Some(confirmed_b.clone()));
    assert_eq!(e.relay_targets(&a), Some(confirmed_a.clone()));
    assert_eq!(e.status().repos, 2);
    assert_eq!(e.status().roots, 2);
    e.handle_input(restored_at, Input::Tick);
    let cs = drain(&mut e);
    assert!(connects(&cs).contains(&a), "{}", show(&cs));
    e.handle_input(restored_at.plus(secs(1)), Input::Connected { relay: &a });
    let hist = historic(&drain(&mut e));
    assert!(!hist.is_empty());
    assert_eq!(
        union(&hist),
        target_shapes(&confirmed_a),
        "catch-up for every confirmed target"
    );
    for f in hist.iter().flat_map(|s| s.filters.iter()) {
        assert_eq!(
            field(f, "since"),
            Some(saved_at.as_secs() - 300),
            "a restart within 15 min of the save is a quick reconnect: {}",
            f.as_json()
        );
    }
    // More than 15 min after the save: a fresh start.
    let late = saved_at.plus(mins(16));
    let mut e = Engine::restore(config(), snap, late).expect("restores");
    e.handle_input(late, Input::Tick);
    e.handle_input(late.plus(secs(1)), Input::Connected { relay: &a });
    let hist = historic(&drain(&mut e));
    assert!(!hist.is_empty());
    for f in hist.iter().flat_map(|s| s.filters.iter()) {
        assert_eq!(field(f, "since"), None, "fresh start: {}", f.as_json());
    }

    // Shrinking: a newer announcement of `one` without A.
    let ann1b = announcement(1, "one", T0 - 10, &[R2], true);
    let mut cs = d.input(Input::CatalogEvent(&ann1b));
    cs.extend(settle(&mut d));
    assert!(
        cs.iter().all(|c| *c.relay() == a),
        "B keeps what it has:\n{}",
        show(&cs)
    );
    assert_eq!(d.engine.relay_targets(&a).map(|s| s.len()), Some(0));
    assert_eq!(d.engine.confirmed_targets(&a).map(|s| s.len()), Some(0));
    assert_eq!(d.engine.relay_targets(&b).map(|s| s.len()), Some(5));
    let out = run(&mut d, secs(50));
    assert!(disconnects(&out).is_empty());
    let out = run(&mut d, secs(10));
    assert_eq!(disconnects(&out), vec![a.clone()], "{}", show(&out));
    assert!(
        d.engine.relay_targets(&a).is_none(),
        "an empty relay is forgotten"
    );
    assert_eq!(d.engine.status().counters.relays_forgotten, 1);
    assert!(d.engine.snapshot().relays.iter().all(|r| r.url != a));

    // Shrinking: kind-5 deletions of both repos (by coordinate and by id).
    let del1 = deletion(1, T0, &[&one], &[]);
    d.input(Input::CatalogEvent(&del1));
    assert_eq!(
        d.engine.relay_targets(&b).map(|s| s.len()),
        Some(2),
        "repo two and discovery left"
    );
    assert_eq!(d.engine.status().repos, 1);
    let del2 = deletion(2, T0, &[], &[&ann2.id]);
    d.input(Input::CatalogEvent(&del2));
    assert_eq!(d.engine.relay_targets(&b).map(|s| s.len()), Some(0));
    assert_eq!(d.engine.status().repos, 0);
    let out = run(&mut d, secs(61));
    assert_eq!(disconnects(&out), vec![b.clone()], "{}", show(&out));
    assert_eq!(d.engine.relay_urls().count(), 0);
    assert_eq!(d.engine.status().counters.deletions_applied, 2);
    assert!(d.engine.snapshot().repos.is_empty());
    // A deleted repo stays deleted (a re-delivered old version is refused).
    let mut cs = d.input(Input::CatalogEvent(&ann1b));
    cs.extend(settle(&mut d));
    assert!(cs.is_empty(), "{}", show(&cs));
    assert_eq!(d.engine.status().counters.announcements_deleted, 1);
}
