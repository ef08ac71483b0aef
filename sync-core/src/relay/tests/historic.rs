//! Historic REQs: the budget, timeouts, emptied packs, late NIP-11, filter windows.

use super::*;

#[test]
fn budget_of_three_is_never_exceeded() {
    let mut rig = Rig::new(250, |_| {});
    rig.publish_max_subscriptions(3);
    let mut open = BTreeSet::new();
    let cs = rig.connect();
    rig.answer_all(cs, &mut open, 3);
    let st = rig.e.status();
    assert_eq!(st.relays[0].pending, 0);
    assert_eq!(st.relays[0].confirmed, 251);
}

#[test]
fn historic_reqs_time_out_and_are_retried() {
    let mut rig = Rig::new(1, |_| {});
    let r = rig.relay.clone();
    let cs = rig.connect();
    let sub = Rig::historic(&cs)[0].clone();
    let cs = rig.at(60);
    assert!(
        cs.contains(&Command::Unsubscribe {
            relay: r.clone(),
            subscription: sub
        }),
        "{cs:?}"
    );
    let retried_at = (61..120).find(|s| !Rig::historic(&rig.at(*s)).is_empty());
    // First retry after 5 s ± 20 %.
    assert!(matches!(retried_at, Some(64..=67)), "{retried_at:?}");
    assert_eq!(rig.e.status().relays[0].stats.timeouts, 1);
}

/// A pack emptied by a removed target while its REQ is on the wire is
/// never re-queued and sent as a REQ with no filters.
#[test]
fn an_emptied_pack_is_never_sent_as_a_req_without_filters() {
    let mut rig = Rig::new(1, |_| {});
    let r = rig.relay.clone();
    let mut open = BTreeSet::new();
    let cs = rig.connect();
    rig.answer_all(cs, &mut open, 10);
    // A root and a new repo while live: after the batch delay, the repo's
    // REQ; once it ends, the root's (roots wait for the repo layer).
    let root = issue(7, T - 5, &coord(1, "r0"));
    rig.input(Input::CatalogEvent(&root));
    let ann = announcement(2, "other", T - 5, &["wss://a.example"]);
    rig.input(Input::CatalogEvent(&ann));
    let cs = rig.at(2);
    let hist = subs_of_mode(&cs, SubscriptionMode::Historic);
    assert_eq!(hist.len(), 1, "{cs:?}");
    assert_eq!(hist[0].1.len(), 4, "repo (4) filters, the root waits");
    let cs = rig.input(Input::Eose {
        relay: &r,
        subscription: &hist[0].0,
    });
    let hist = subs_of_mode(&cs, SubscriptionMode::Historic);
    assert_eq!(hist.len(), 1, "{cs:?}");
    assert_eq!(hist[0].1.len(), 3, "root (3) filters");
    // The root is deleted by its author while the REQ is on the wire.
    let del = crate::testutil::ev(7, T, 5, &[&["e", &root.id.to_hex()]]);
    rig.input(Input::CatalogEvent(&del));
    let mut cs = rig.closed(&hist[0].0, "error: bad filter");
    for s in 3..200 {
        cs.extend(rig.at(s));
    }
    for (sub, filters) in subs_of_mode(&cs, SubscriptionMode::Historic) {
        assert!(!filters.is_empty(), "REQ {sub} sent with no filter: {cs:?}");
    }
}

/// NIP-11 arriving after Connected with a smaller budget than the one
/// the first wave used: the surplus is closed and its work re-queued.
#[test]
fn late_nip11_sheds_subscriptions_over_its_budget() {
    let mut rig = Rig::new(1000, |_| {});
    let cs = rig.connect();
    let mut open: BTreeSet<SubscriptionId> = BTreeSet::new();
    for c in &cs {
        if let Command::Subscribe { subscription, .. } = c {
            open.insert(subscription.clone());
        }
    }
    rig.publish_max_subscriptions(3);
    let st = rig.e.status();
    assert!(
        st.relays[0].open_subscriptions <= 3,
        "relay publishes 3, engine holds {} open (sent {})",
        st.relays[0].open_subscriptions,
        open.len()
    );
}

/// A published `max_filters` below a layer's filter count (4 for
/// repos) is still respected: a layer's filters spread over REQs.
#[test]
fn max_filters_below_a_layer_width_is_respected() {
    let mut rig = Rig::new(3, |_| {});
    let r = rig.relay.clone();
    rig.input(Input::RelayInfo {
        relay: &r,
        info: RelayInfo {
            max_filters: Some(2),
            ..RelayInfo::default()
        },
    });
    let cs = rig.connect();
    for c in &cs {
        if let Command::Subscribe {
            filters,
            subscription,
            ..
        } = c
        {
            assert!(
                filters.len() <= 2,
                "{subscription} has {} filters, relay allows 2",
                filters.len()
            );
        }
    }
}

/// Found against nostr-rs-relay, which keeps a subscription open after EOSE
/// and silently ignores a REQ that reuses an open id: the next page went out
/// on the same id and waited out the historic timeout. Every REQ must use an
/// id not open on the relay (ours are closed first, then a fresh one).
#[test]
fn no_req_reuses_an_id_open_on_the_relay() {
    let mut rig = Rig::new(1, |_| {});
    let r = rig.relay.clone();
    let mut open: BTreeSet<SubscriptionId> = BTreeSet::new();
    let track = |cs: &[Command], open: &mut BTreeSet<SubscriptionId>| {
        for c in cs {
            match c {
                Command::Subscribe { subscription, .. } => {
                    assert!(
                        open.insert(subscription.clone()),
                        "REQ on {subscription}, still open on the relay: {cs:?}"
                    );
                }
                Command::Unsubscribe { subscription, .. } => {
                    open.remove(subscription);
                }
                _ => {}
            }
        }
    };
    let cs = rig.connect();
    track(&cs, &mut open);
    let sub = Rig::historic(&cs)[0].clone();
    // A full page of 500 issues of repo r0, one per second: more pages follow.
    for i in 0..500u64 {
        let e = issue((i % 200) as u8 + 3, T - 1000 - i, &coord(1, "r0"));
        rig.input(Input::EventReceived {
            relay: &r,
            subscription: &sub,
            event: &e,
        });
    }
    let cs = rig.input(Input::Eose {
        relay: &r,
        subscription: &sub,
    });
    assert!(!Rig::historic(&cs).is_empty(), "a next page: {cs:?}");
    track(&cs, &mut open);
}

/// `--once` ended every first sync 4 s after its last EOSE, and each new
/// root waited the whole 1 s batch delay on the critical path. A batch of
/// new targets goes out as soon as no other joins it for a moment.
#[test]
fn a_batch_goes_out_once_targets_stop_joining() {
    let mut rig = Rig::new(1, |_| {});
    let mut open = BTreeSet::new();
    let cs = rig.connect();
    rig.answer_all(cs, &mut open, 10);
    let ms = T * 1000;
    rig.input(Input::CatalogEvent(&issue(7, T - 5, &coord(1, "r0"))));
    let cs = rig.at_time(Time::from_millis(ms + 100));
    assert_eq!(Rig::historic(&cs).len(), 1, "a lone root at once: {cs:?}");
    // Roots that keep arriving (every 30 ms) share one REQ, up to the delay.
    rig.answer_all(cs, &mut open, 10);
    let mut reqs = Vec::new();
    for i in 0..50u64 {
        rig.now = Time::from_millis(ms + 1000 + i * 30);
        let cs = rig.input(Input::CatalogEvent(&issue(
            20 + i as u8,
            T - 5,
            &coord(1, "r0"),
        )));
        reqs.extend(Rig::historic(&cs));
        let cs = rig.at_time(rig.now);
        reqs.extend(Rig::historic(&cs));
    }
    let cs = rig.at_time(Time::from_millis(ms + 4000));
    reqs.extend(Rig::historic(&cs));
    assert!(
        (2..=3).contains(&reqs.len()),
        "1.5 s of roots in batches of at most 1 s: {} REQs",
        reqs.len()
    );
}

/// Roots found while the repo layer's pass is on the wire wait for it, then
/// go out in full packs (issue 12: one kind of query at a time, fewer REQs
/// for the relay to answer).
#[test]
fn roots_wait_for_the_repo_pass_then_go_out_in_full_packs() {
    let mut rig = Rig::new(1, |_| {});
    let r = rig.relay.clone();
    let cs = rig.connect();
    let hist = subs_of_mode(&cs, SubscriptionMode::Historic);
    let repo_req = hist
        .iter()
        .find(|(_, fs)| fs.iter().any(|f| f.as_json().contains("\"#a\"")))
        .map(|(s, _)| s.clone())
        .expect("the repo layer's REQ");
    for i in 0..250u64 {
        let root = issue((i % 200) as u8 + 3, T - 1000 + i, &coord(1, "r0"));
        rig.input(Input::CatalogEvent(&root));
    }
    let mut waiting = Vec::new();
    for s in 1..30 {
        waiting.extend(rig.at(s));
    }
    let early: Vec<_> = subs_of_mode(&waiting, SubscriptionMode::Historic);
    assert!(
        early.is_empty(),
        "{} root REQs during the repo pass",
        early.len()
    );
    assert!(rig.e.status().relays[0].pending >= 250);
    let cs = rig.input(Input::Eose {
        relay: &r,
        subscription: &repo_req,
    });
    let roots = subs_of_mode(&cs, SubscriptionMode::Historic);
    let filters: usize = roots.iter().map(|(_, fs)| fs.len()).sum();
    assert_eq!(filters, 9, "3 packs (100, 100, 50 roots) × 3 filters");
    assert_eq!(roots.len(), 1, "within 10 filters per REQ: one REQ");
}

/// Found by the peer zoo (a strfry-like relay, 50 ms away, where the EOSE
/// of a live update arrived at the very millisecond a new root's batch was
/// due): the input rescheduled the relay's timers before they ran, the due
/// deadline was dropped (a deadline is only ever in the future), and the
/// batch waited 394 s for something else to pump the relay. Timers due at
/// an input's time run before the input.
#[test]
fn an_input_at_the_instant_a_batch_is_due_does_not_lose_it() {
    let mut rig = Rig::new(1, |_| {});
    let r = rig.relay.clone();
    let mut open = BTreeSet::new();
    let cs = rig.connect();
    rig.answer_all(cs, &mut open, 10);
    let ms = T * 1000;
    rig.now = Time::from_millis(ms);
    rig.input(Input::CatalogEvent(&issue(7, T - 5, &coord(1, "r0"))));
    let due = rig.e.next_wakeup().expect("the batch is due soon");
    assert!(due.since(rig.now) < Duration::from_secs(1), "{due:?}");
    // Something from the relay at that very instant, whose handling sends
    // nothing by itself (the store's answer for an event).
    rig.now = due;
    let cs = rig.input(Input::EventStored {
        relay: &r,
        id: issue(8, T - 6, &coord(1, "r0")).id,
        created_at: T - 6,
        outcome: StoreOutcome::Duplicate,
    });
    assert_eq!(Rig::historic(&cs).len(), 1, "the batch goes out: {cs:?}");
}
