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

/// A pack emptied by a removed target inside a multi-pack REQ is never
/// re-queued and sent alone as a REQ with no filters.
#[test]
fn an_emptied_pack_is_never_sent_as_a_req_without_filters() {
    let mut rig = Rig::new(1, |_| {});
    let r = rig.relay.clone();
    let mut open = BTreeSet::new();
    let cs = rig.connect();
    rig.answer_all(cs, &mut open, 10);
    // A root and a new repo while live: after the batch delay, one REQ
    // with a root pack and a repo pack.
    let root = issue(7, T - 5, &coord(1, "r0"));
    rig.input(Input::CatalogEvent(&root));
    let ann = announcement(2, "other", T - 5, &["wss://a.example"]);
    rig.input(Input::CatalogEvent(&ann));
    let cs = rig.at(2);
    let hist = subs_of_mode(&cs, SubscriptionMode::Historic);
    assert_eq!(hist.len(), 1, "{cs:?}");
    assert_eq!(hist[0].1.len(), 7, "root (3) + repo (4) filters");
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
    let _ = r;
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
