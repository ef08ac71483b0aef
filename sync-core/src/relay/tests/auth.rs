//! NIP-42 AUTH with and without a key.

use super::*;

#[test]
fn auth_required_without_a_key_gives_up_with_a_key_authenticates() {
    let mut rig = Rig::new(1, |_| {});
    let cs = rig.connect();
    let sub = Rig::historic(&cs)[0].clone();
    rig.closed(&sub, "auth-required: who are you");
    assert_eq!(
        rig.e.status().relays[0]
            .given_up
            .get(&GiveUpReason::AuthRequired),
        Some(&2)
    );

    let mut rig = Rig::new(1, |c| c.auth_enabled = true);
    let r = rig.relay.clone();
    let cs = rig.connect();
    let sub = Rig::historic(&cs)[0].clone();
    rig.input(Input::AuthChallenge {
        relay: &r,
        challenge: "abc",
    });
    let cs = rig.closed(&sub, "auth-required: sign in");
    assert!(Rig::historic(&cs).is_empty(), "waits for AUTH: {cs:?}");
    let cs = rig.input(Input::AuthResult {
        relay: &r,
        accepted: true,
    });
    assert_eq!(Rig::historic(&cs).len(), 1, "resent after AUTH: {cs:?}");
}

#[test]
fn challenge_is_answered_when_a_key_is_configured() {
    let mut rig = Rig::new(1, |c| c.auth_enabled = true);
    let r = rig.relay.clone();
    rig.connect();
    let cs = rig.input(Input::AuthChallenge {
        relay: &r,
        challenge: "xyz",
    });
    assert_eq!(
        cs,
        vec![Command::Authenticate {
            relay: r,
            challenge: "xyz".into()
        }]
    );
}

/// A relay that still answers `auth-required:` after an accepted AUTH
/// refuses us: no AUTH+REQ loop.
#[test]
fn auth_required_after_accepted_auth_is_a_refusal() {
    let mut rig = Rig::new(1, |c| c.auth_enabled = true);
    let r = rig.relay.clone();
    let cs = rig.connect();
    let mut sub = Rig::historic(&cs)[0].clone();
    rig.input(Input::AuthChallenge {
        relay: &r,
        challenge: "abc",
    });
    rig.input(Input::AuthResult {
        relay: &r,
        accepted: true,
    });
    let mut reqs = 0;
    for _ in 0..200 {
        let cs = rig.closed(&sub, "auth-required: you are not on the list");
        let cs2 = rig.input(Input::AuthResult {
            relay: &r,
            accepted: true,
        });
        let h: Vec<_> = Rig::historic(&cs)
            .into_iter()
            .chain(Rig::historic(&cs2))
            .collect();
        if h.is_empty() {
            break;
        }
        reqs += 1;
        sub = h[0].clone();
    }
    // All at the same instant: 200 REQ + 200 AUTH round trips, zero backoff.
    assert!(
        reqs < 10,
        "re-sent {reqs} times at t+0 without backoff or give-up"
    );
}

/// `auth-required` with a key but no challenge yet: the work must not
/// wait (with no timer) until the daily pass.
#[test]
fn auth_required_without_a_challenge_does_not_stall() {
    let mut rig = Rig::new(1, |c| c.auth_enabled = true);
    let cs = rig.connect();
    let sub = Rig::historic(&cs)[0].clone();
    rig.closed(&sub, "auth-required: sign in");
    let wake = rig.e.next_wakeup().unwrap();
    let st = rig.e.status();
    assert!(
        wake.since(rig.now).as_secs() < 3600,
        "pending {} with next wakeup in {} h",
        st.relays[0].pending,
        wake.since(rig.now).as_secs() / 3600
    );
}
