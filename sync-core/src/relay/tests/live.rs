//! Live groups: tails, folding, splits and refused groups.

use super::*;

/// Found by the `engine_inputs` fuzzer: a tail held up to 10 values
/// whatever the value cap.
#[test]
fn tails_respect_a_value_cap_below_their_size() {
    let mut rig = Rig::new(1, |c| c.default_budget.max_values_per_filter = 2);
    rig.connect();
    for i in 0..6u32 {
        rig.input(Input::CatalogEvent(&issue(
            10 + i as u8,
            T - 5,
            &coord(1, "r0"),
        )));
    }
    let cs = rig.at(1);
    for c in &cs {
        if let Command::Subscribe { filters, .. } = c {
            for f in filters {
                let values = f.generic_tags.values().map(|v| v.len()).max().unwrap_or(0);
                assert!(values <= 2, "{c:?}");
            }
        }
    }
    assert!(cs.iter().any(|c| matches!(
        c,
        Command::Subscribe {
            mode: SubscriptionMode::Live,
            ..
        }
    )));
}

#[test]
fn live_additions_go_to_a_small_tail_updated_under_fresh_ids() {
    let mut rig = Rig::new(1, |_| {});
    let r = rig.relay.clone();
    let cs = rig.connect();
    // The first pass ends (its REQs answered), the live REQ stays.
    let mut open = BTreeSet::new();
    rig.answer_all(cs.clone(), &mut open, 10);
    let live = |cs: &[Command]| -> Vec<(SubscriptionId, usize)> {
        cs.iter()
            .filter_map(|c| match c {
                Command::Subscribe {
                    subscription,
                    mode: SubscriptionMode::Live,
                    filters,
                    ..
                } => Some((subscription.clone(), filters.len())),
                _ => None,
            })
            .collect()
    };
    let dense = live(&cs)[0].0.clone();
    // A new root while live: a tail subscription of its own (3 filters),
    // the dense group untouched.
    rig.input(Input::CatalogEvent(&issue(7, T - 5, &coord(1, "r0"))));
    let cs = rig.at(1);
    let tail = live(&cs);
    assert_eq!(tail.len(), 1, "{cs:?}");
    assert_eq!(tail[0].1, 3);
    assert!(
        !cs.iter().any(|c| matches!(c, Command::Unsubscribe { .. })),
        "{cs:?}"
    );
    assert_eq!(Rig::historic(&cs).len(), 1, "one REQ for the new root");
    // The next root updates the tail: old id closed first, a fresh id opened.
    rig.input(Input::CatalogEvent(&issue(8, T - 4, &coord(1, "r0"))));
    let cs = rig.at(2);
    assert_eq!(
        cs.first(),
        Some(&Command::Unsubscribe {
            relay: r.clone(),
            subscription: tail[0].0.clone()
        }),
        "{cs:?}"
    );
    let updated = live(&cs);
    assert_eq!(updated.len(), 1);
    assert_ne!(updated[0].0, tail[0].0);
    assert_ne!(updated[0].0, dense);
    // A late CLOSED for the old tail id changes nothing.
    let open = rig.e.status().relays[0].open_subscriptions;
    rig.closed(&tail[0].0, "error: whatever");
    assert_eq!(rig.e.status().relays[0].open_subscriptions, open);
}

#[test]
fn tails_fold_into_dense_groups_when_slots_run_out() {
    let mut rig = Rig::new(1, |_| {});
    rig.publish_max_subscriptions(3);
    let mut open = BTreeSet::new();
    let cs = rig.connect();
    rig.answer_all(cs, &mut open, 3);
    for i in 0..40u64 {
        let cs = rig.input(Input::CatalogEvent(&issue(9, T - 100 + i, &coord(1, "r0"))));
        rig.answer_all(cs, &mut open, 3);
        let cs = rig.at(i + 2);
        rig.answer_all(cs, &mut open, 3);
    }
    let cs = rig.at(100);
    rig.answer_all(cs, &mut open, 3);
    let st = rig.e.status();
    assert_eq!(
        st.relays[0].live_uncovered, 0,
        "every target is followed live"
    );
    assert!(st.relays[0].open_subscriptions <= 2);
    assert_eq!(st.relays[0].confirmed, 42);
}

/// `CLOSED error:` on a live REQ splits the group and retries the halves
/// (spec section 5), instead of dropping live sync of all its targets.
#[test]
fn live_error_splits_the_group_instead_of_dropping_it() {
    let mut rig = Rig::new(50, |_| {});
    let mut open = BTreeSet::new();
    let cs = rig.connect();
    let live = subs_of_mode(&cs, SubscriptionMode::Live);
    assert_eq!(live.len(), 1);
    let filters = live[0].1.len();
    rig.answer_all(cs, &mut open, 10);
    // Refused with `error:`: split in two, both halves retried at once.
    let cs = rig.closed(&live[0].0, "error: too many tags");
    let halves = subs_of_mode(&cs, SubscriptionMode::Live);
    assert_eq!(halves.len(), 2, "{cs:?}");
    assert_eq!(halves.iter().map(|(_, f)| f.len()).sum::<usize>(), filters);
    assert_eq!(rig.e.status().relays[0].live_uncovered, 0);
    // A half refused again waits for the daily pass; the other stays.
    let cs = rig.closed(&halves[1].0, "error: still too many");
    assert!(
        subs_of_mode(&cs, SubscriptionMode::Live).is_empty(),
        "{cs:?}"
    );
    let uncovered = rig.e.status().relays[0].live_uncovered;
    assert!(uncovered > 0 && uncovered < 51, "{uncovered}");
}

/// After the only live group is refused, a new target does not join it:
/// it is followed live in a group of its own.
#[test]
fn new_targets_avoid_refused_live_groups() {
    let mut rig = Rig::new(1, |_| {});
    let mut open = BTreeSet::new();
    let cs = rig.connect();
    let live = subs_of_mode(&cs, SubscriptionMode::Live);
    rig.answer_all(cs, &mut open, 10);
    rig.closed(&live[0].0, "restricted: not for you");
    let mut cs = rig.input(Input::CatalogEvent(&issue(7, T - 5, &coord(1, "r0"))));
    let mut got = false;
    for s in 1..3600 {
        cs.extend(rig.at(s));
        if subs_of_mode(&cs, SubscriptionMode::Live)
            .iter()
            .any(|(_, f)| f.len() == 3)
        {
            got = true;
            break;
        }
        let r = rig.relay.clone();
        for sub in Rig::historic(&cs) {
            rig.input(Input::Eose {
                relay: &r,
                subscription: &sub,
            });
        }
        cs.clear();
    }
    assert!(
        got,
        "new root never subscribed live; live_uncovered={}",
        rig.e.status().relays[0].live_uncovered
    );
}
