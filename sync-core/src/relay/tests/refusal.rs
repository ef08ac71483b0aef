//! What CLOSED and NOTICE refusals do to the work.

use super::*;

#[test]
fn rate_limited_cools_down_and_learns() {
    let mut rig = Rig::new(1, |_| {});
    let cs = rig.connect();
    let sub = Rig::historic(&cs)[0].clone();
    let cs = rig.closed(&sub, "rate-limited: slow down");
    assert!(
        Rig::historic(&cs).is_empty(),
        "nothing during the cool-down"
    );
    let st = rig.e.status();
    assert_eq!(st.relays[0].cooldown_until, Some(Time::from_secs(T + 65)));
    assert_eq!(st.relays[0].learned_max_subscriptions, Some(2));
    assert!(Rig::historic(&rig.at(64)).is_empty());
    assert_eq!(
        Rig::historic(&rig.at(65)).len(),
        1,
        "the same work again after 65 s"
    );
}

#[test]
fn restricted_work_waits_for_the_daily_pass() {
    let mut rig = Rig::new(1, |_| {});
    let cs = rig.connect();
    let sub = Rig::historic(&cs)[0].clone();
    rig.closed(&sub, "restricted: not for you");
    let st = rig.e.status();
    assert_eq!(st.relays[0].given_up.get(&GiveUpReason::Refused), Some(&2));
    assert!(Rig::historic(&rig.at(3600)).is_empty());
    let resync = st.relays[0].next_resync.unwrap();
    assert!(resync >= Time::from_secs(T + 23 * 3600) && resync <= Time::from_secs(T + 25 * 3600));
    assert_eq!(Rig::historic(&rig.at_time(resync)).len(), 1);
}

#[test]
fn errors_split_once_then_give_up() {
    let mut rig = Rig::new(4, |_| {});
    let cs = rig.connect();
    let sub = Rig::historic(&cs)[0].clone();
    // One REQ holds discovery and the repo pack: first each goes alone.
    let cs = rig.closed(&sub, "error: too complex");
    let alone = Rig::historic(&cs);
    assert_eq!(alone.len(), 2, "{cs:?}");
    // Refused again: the 4 repos are halved, discovery (one target) tried once more.
    let mut halves = Vec::new();
    for s in &alone {
        halves.extend(Rig::historic(&rig.closed(s, "invalid: still no")));
    }
    assert_eq!(halves.len(), 3, "two halves and discovery");
    assert_eq!(rig.e.status().relays[0].given_up.len(), 0);
    // Refused once more: given up until the daily pass.
    for s in &halves {
        assert!(Rig::historic(&rig.closed(s, "unsupported: no")).is_empty());
    }
    let st = rig.e.status();
    assert_eq!(st.relays[0].given_up.get(&GiveUpReason::Rejected), Some(&5));
    assert_eq!(st.relays[0].pending, 0);
}

#[test]
fn notice_refusal_blames_the_latest_unanswered_req() {
    let mut rig = Rig::new(1, |_| {});
    let r = rig.relay.clone();
    let cs = rig.connect();
    let sub = Rig::historic(&cs)[0].clone();
    let cs = rig.input(Input::Notice {
        relay: &r,
        message: "ERROR: too many concurrent REQs",
    });
    assert!(
        cs.contains(&Command::Unsubscribe {
            relay: r.clone(),
            subscription: sub
        }),
        "{cs:?}"
    );
    // A cap on concurrent REQs (strfry's words): hold fewer, no cool-down.
    let st = &rig.e.status().relays[0];
    assert_eq!(st.cooldown_until, None);
    assert_eq!(st.learned_max_subscriptions, Some(1));
    // Chatter is not a refusal.
    rig.input(Input::Notice {
        relay: &r,
        message: "hello",
    });
    assert_eq!(rig.e.status().relays[0].stats.notices, 2);
    // A rate limit is: the relay cools down.
    rig.input(Input::Notice {
        relay: &r,
        message: "slow down, please",
    });
    assert!(rig.e.status().relays[0].cooldown_until.is_some());
}

/// Found against a LocalRelay allowing 2 concurrent REQs: every refusal of
/// a third ("rate-limited: too many REQs") started a 65 s cool-down that
/// doubled, though the budget was already learned; 6 repos took 135–265 s.
/// A concurrency refusal lowers the budget and retries at once.
#[test]
fn concurrency_refusals_lower_the_budget_without_a_cool_down() {
    let mut rig = Rig::new(40, |c| c.default_budget.max_values_per_filter = 5);
    let r = rig.relay.clone();
    let mut open: BTreeSet<SubscriptionId> = BTreeSet::new();
    let mut todo = rig.connect();
    let mut done_at = None;
    for step in 0..2000u64 {
        let mut next = Vec::new();
        for c in &todo {
            match c {
                Command::Subscribe { subscription, .. } => {
                    if open.len() >= 2 {
                        // The relay holds two; it refuses the third.
                        next.extend(rig.closed(subscription, "rate-limited: too many REQs"));
                    } else {
                        open.insert(subscription.clone());
                        if subscription.as_str().starts_with("hist-") {
                            next.extend(rig.input(Input::Eose {
                                relay: &r,
                                subscription,
                            }));
                        }
                    }
                }
                Command::Unsubscribe { subscription, .. } => {
                    open.remove(subscription);
                }
                _ => {}
            }
        }
        todo = next;
        if rig.e.status().relays[0].pending == 0 {
            done_at = Some(rig.now);
            break;
        }
        if todo.is_empty() {
            todo = rig.at(step + 1);
        }
    }
    let st = &rig.e.status().relays[0];
    assert_eq!(
        st.cooldown_until, None,
        "no cool-down for a subscription cap"
    );
    assert_eq!(st.learned_max_subscriptions, Some(2));
    let done_at = done_at.expect("every target confirmed");
    assert!(
        done_at.since(Time::from_secs(T)).as_secs() < 5,
        "took {:?}",
        done_at.since(Time::from_secs(T))
    );
}

#[test]
fn a_closed_acknowledging_our_close_is_not_a_refusal() {
    let mut rig = Rig::new(1, |_| {});
    rig.connect();
    let gone = SubscriptionId::new("hist-999");
    rig.closed(&gone, "");
    let st = &rig.e.status().relays[0];
    assert!(st.stats.refusals.is_empty(), "{:?}", st.stats.refusals);
    assert_eq!(st.stats.stale_inputs, 1);
}

/// Found against a LocalRelay with `max_reqs` 1: after 5 minutes, 1 of 7
/// targets confirmed and nothing stored. A relay that serves one REQ at a
/// time is served by taking turns between history and live: history first,
/// then live stays open, with no churn once everything is confirmed.
#[test]
fn a_relay_serving_one_req_at_a_time_is_served_in_turns() {
    let mut rig = Rig::new(6, |_| {});
    let r = rig.relay.clone();
    let mut open: BTreeSet<SubscriptionId> = BTreeSet::new();
    let mut todo = rig.connect();
    let mut sent_after_done = 0;
    let mut done_at = None;
    // Historic REQs are answered (EOSE) two seconds after they are sent.
    let mut answers: Vec<(u64, SubscriptionId)> = Vec::new();
    for step in 0..600u64 {
        let mut next = Vec::new();
        for c in &todo {
            match c {
                Command::Subscribe { subscription, .. } => {
                    if done_at.is_some() {
                        sent_after_done += 1;
                    }
                    if !open.is_empty() {
                        next.extend(rig.closed(subscription, "rate-limited: too many REQs"));
                    } else {
                        open.insert(subscription.clone());
                        if subscription.as_str().starts_with("hist-") {
                            answers.push((step + 2, subscription.clone()));
                        }
                    }
                }
                Command::Unsubscribe { subscription, .. } => {
                    open.remove(subscription);
                }
                _ => {}
            }
        }
        todo = next;
        if done_at.is_none() && rig.e.status().relays[0].pending == 0 {
            done_at = Some(rig.now);
        }
        if todo.is_empty() {
            todo = rig.at(step + 1);
            let due: Vec<SubscriptionId> = answers
                .iter()
                .filter(|(at, s)| *at <= step + 1 && open.contains(s))
                .map(|(_, s)| s.clone())
                .collect();
            answers.retain(|(at, _)| *at > step + 1);
            for sub in due {
                todo.extend(rig.input(Input::Eose {
                    relay: &r,
                    subscription: &sub,
                }));
            }
        }
    }
    let st = &rig.e.status().relays[0];
    let done_at = done_at.unwrap_or_else(|| panic!("not all confirmed: {st:#?}"));
    assert!(
        done_at.since(Time::from_secs(T)).as_secs() < 60,
        "took {:?}",
        done_at.since(Time::from_secs(T))
    );
    assert_eq!(st.confirmed, st.targets);
    assert_eq!(st.learned_max_subscriptions, Some(1));
    assert_eq!(st.live_uncovered, 0, "live again once history is done");
    assert_eq!(open.len(), 1, "the live subscription: {open:?}");
    assert!(
        sent_after_done <= 3,
        "{sent_after_done} REQs once synced: churn"
    );
}

/// A rate limit reported on a subscription we had already replaced (a live
/// update under a fresh id) still lowers the budget, and what is open is
/// fitted into it at once: before, the engine kept one subscription too
/// many and a NIP-77 job went on to open a REQ over the budget (seen in a
/// harsh simulated world).
#[test]
fn a_lowered_budget_closes_what_no_longer_fits() {
    let mut rig = Rig::new(1, |_| {});
    let r = rig.relay.clone();
    let cs = rig.connect();
    let live_before: Vec<SubscriptionId> = subs_of_mode(&cs, SubscriptionMode::Live)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    // Two roots a second apart: a live tail, then its update under a fresh id.
    rig.input(Input::CatalogEvent(&issue(7, T - 5, &coord(1, "r0"))));
    let cs = rig.at(1);
    let tail = subs_of_mode(&cs, SubscriptionMode::Live);
    assert_eq!(tail.len(), 1, "{cs:?}");
    rig.input(Input::CatalogEvent(&issue(8, T - 4, &coord(1, "r0"))));
    rig.at(2);
    let open = rig.e.status().relays[0].open_subscriptions;
    assert!(open >= 3, "{open} open, live {live_before:?}");
    // The relay refuses the replaced tail.
    rig.closed(&tail[0].0, "rate-limited: slow down");
    let st = &rig.e.status().relays[0];
    assert_eq!(st.budget.max_subscriptions as usize, open - 1);
    assert!(
        st.open_subscriptions <= st.budget.max_subscriptions as usize,
        "{} open over a budget of {}",
        st.open_subscriptions,
        st.budget.max_subscriptions
    );
    let _ = r;
}

/// Found by the peer zoo (a relay that caps subscriptions with a NOTICE,
/// as nostr-rs-relay does, and an engine allowed more): by the time the
/// NOTICE for a REQ arrived, the engine had sent more REQs, and blamed the
/// latest of them; the refused REQ then waited out its 60 s timeout while
/// the relay answered everything else. A blamed REQ that the relay answers
/// after all passes the blame on to the latest unanswered REQ sent before it.
#[test]
fn a_notice_blamed_on_a_req_answered_later_moves_to_an_earlier_one() {
    let mut rig = Rig::new(3, |c| c.default_budget.max_values_per_filter = 1);
    let r = rig.relay.clone();
    let cs = rig.connect();
    let hist = Rig::historic(&cs);
    assert!(hist.len() >= 2, "{cs:?}");
    // Everything is answered but the first historic REQ (the relay refused
    // it) and the last one (pipelined behind it, still on the wire).
    let (refused, later) = (hist[0].clone(), hist[hist.len() - 1].clone());
    for (sub, _) in subs_of_mode(&cs, SubscriptionMode::Live) {
        rig.input(Input::Eose {
            relay: &r,
            subscription: &sub,
        });
    }
    for sub in &hist[1..hist.len() - 1] {
        rig.input(Input::Eose {
            relay: &r,
            subscription: sub,
        });
    }
    let cs = rig.input(Input::Notice {
        relay: &r,
        message: "Subscription error: Maximum concurrent subscription count reached",
    });
    // The latest unanswered REQ is blamed (the relay's words name none).
    assert!(cs.contains(&Command::Unsubscribe {
        relay: r.clone(),
        subscription: later.clone()
    }));
    // It was not the one: its EOSE comes. The refused one is sent again at
    // once, without waiting for its timeout.
    let cs = rig.input(Input::Eose {
        relay: &r,
        subscription: &later,
    });
    assert!(
        cs.contains(&Command::Unsubscribe {
            relay: r.clone(),
            subscription: refused.clone()
        }),
        "{cs:?}"
    );
    assert!(!Rig::historic(&cs).is_empty(), "{cs:?}");
    let st = &rig.e.status().relays[0];
    assert_eq!(
        st.stats.refusals.values().sum::<u64>(),
        1,
        "one NOTICE, one refusal"
    );
    assert_eq!(st.cooldown_until, None);
}

/// Found by the peer zoo (LocalRelay serving one REQ at a time, and live
/// updates whose old REQs the engine had already closed or replaced when
/// their refusals came): each such refusal lowered the budget by one below
/// what was open, and once a single subscription was open, each started or
/// doubled a cool-down: 30 minutes of nothing. A cap refusal of a REQ we
/// no longer hold is counted and changes nothing else.
#[test]
fn a_cap_refusal_of_an_id_no_longer_held_neither_lowers_nor_cools() {
    let mut rig = Rig::new(30, |c| c.default_budget.max_values_per_filter = 1);
    let cs = rig.connect();
    assert_eq!(rig.e.status().relays[0].open_subscriptions, 10, "{cs:?}");
    for i in 0..12 {
        let gone = SubscriptionId::new(format!("live-{}", 900 + i));
        rig.closed(&gone, "rate-limited: too many REQs");
    }
    let st = &rig.e.status().relays[0];
    assert_eq!(st.cooldown_until, None);
    assert_eq!(st.learned_max_subscriptions, None);
    assert_eq!(st.open_subscriptions, 10);
    assert_eq!(
        st.stats
            .refusals
            .get(&crate::relay::RefusalReason::TooManySubscriptions),
        Some(&12)
    );
}

/// Found by the peer zoo (khatru's 20 filters a minute, 1,200 roots the
/// live budget could not cover): serving one poll of the uncovered targets
/// took longer than the poll interval, each poll queued every uncovered
/// target again, and the queue grew to thousands of packs while the first
/// sync never ended. A poll skips targets a queued pack already holds.
#[test]
fn polls_of_uncovered_targets_do_not_pile_up_behind_a_rate_limit() {
    // 30 repos, one per live group: 10 subscriptions cannot cover them.
    let mut rig = Rig::new(30, |c| c.default_budget.max_values_per_filter = 1);
    let mut open = BTreeSet::new();
    let cs = rig.connect();
    rig.answer_all(cs, &mut open, 10);
    assert!(rig.e.status().relays[0].live_uncovered > 0);
    // From now on the relay refuses every REQ as rate-limited.
    let mut most_queued = 0;
    for s in 1..4 * 3600 {
        let cs = rig.at(s);
        for sub in Rig::historic(&cs) {
            rig.closed(&sub, "rate-limited: slow down");
        }
        most_queued = most_queued.max(rig.e.status().relays[0].queued_batches);
    }
    // One target per pack here: never more packs than targets (it grew
    // past 1,200 in four hours before).
    assert!(most_queued <= 30, "{most_queued} packs queued at once");
}
