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
    assert!(rig.e.status().relays[0].cooldown_until.is_some());
    // Chatter is not a refusal.
    rig.input(Input::Notice {
        relay: &r,
        message: "hello",
    });
    assert_eq!(rig.e.status().relays[0].stats.notices, 2);
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
