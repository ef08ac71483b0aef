//! Connection lifecycle: backoff and connect timeouts.

use super::*;

#[test]
fn backoff_doubles_to_the_cap_then_goes_daily() {
    let mut rig = Rig::new(1, |_| {});
    let r = rig.relay.clone();
    let mut delays = Vec::new();
    let mut t = 0u64;
    for _ in 0..40 {
        rig.input(Input::ConnectFailed {
            relay: &r,
            reason: "refused",
        });
        let next = rig.e.next_wakeup().unwrap();
        delays.push(next.since(rig.now).as_secs());
        t = next.as_secs() - T;
        let cs = rig.at_time(next);
        assert!(
            cs.contains(&Command::Connect { relay: r.clone() }),
            "retried at {t}"
        );
    }
    // 5 s doubling with ±20% jitter, capped at 1 h; then once a day.
    assert!((4..=6).contains(&delays[0]), "{delays:?}");
    assert!((8..=12).contains(&delays[1]), "{delays:?}");
    assert!(delays.iter().all(|d| *d <= 25 * 3600));
    assert!(delays.contains(&3600) || delays.iter().any(|d| (2880..=3600).contains(d)));
    assert!(t > 24 * 3600, "ran past a day of failures: {t}");
    assert!(
        *delays.last().unwrap() >= 20 * 3600,
        "dead relays retry daily: {delays:?}"
    );
    rig.input(Input::ConnectFailed {
        relay: &r,
        reason: "refused",
    });
    assert_eq!(rig.e.status().relays[0].state, RelayState::Dead);
}

#[test]
fn connect_attempts_time_out() {
    let mut rig = Rig::new(1, |_| {});
    let cs = rig.at(30);
    assert!(
        cs.contains(&Command::Disconnect {
            relay: rig.relay.clone()
        }),
        "{cs:?}"
    );
    let cs = rig.at(60);
    assert!(
        cs.contains(&Command::Connect {
            relay: rig.relay.clone()
        }),
        "{cs:?}"
    );
}
