//! NIP-42 AUTH with one relay: the challenge it gave, whether AUTH is on the
//! wire, accepted, or awaited by work the relay refused with
//! `auth-required:`, and how long that may take.

use std::time::Duration;

use super::timers::{deadline, Deadline, RelayTimer};
use crate::types::Time;

/// How long an AUTH (or the challenge for one) may take.
pub(crate) const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where AUTH stands. `needed_since`: since when work refused with
/// `auth-required:` has waited for it (that work is held back meanwhile).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum AuthState {
    /// Nothing asked, nothing sent.
    #[default]
    Idle,
    /// Work waits for AUTH, and none is on the wire (no challenge yet).
    Waiting { needed_since: Time },
    /// AUTH sent at `at`, no answer yet.
    Sent {
        at: Time,
        needed_since: Option<Time>,
    },
    /// The relay accepted our AUTH.
    Accepted { needed_since: Option<Time> },
}

/// What an AUTH outcome means for the work that waited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthOutcome {
    /// Accepted: held work may go.
    Accepted,
    /// Refused or timed out, and nothing waited for it.
    Failed,
    /// Refused or timed out while work waited: give that work up.
    FailedWhileNeeded,
}

/// AUTH with one relay.
#[derive(Clone, Debug, Default)]
pub(crate) struct Auth {
    challenge: Option<String>,
    state: AuthState,
}

impl Auth {
    /// A new connection: a challenge that came with the handshake is kept,
    /// everything else starts over.
    pub fn new_session(&mut self) {
        self.state = AuthState::Idle;
    }

    /// The connection ended.
    pub fn end(&mut self) {
        *self = Auth::default();
    }

    /// The relay sent a challenge: whatever was accepted before no longer is.
    pub fn on_challenge(&mut self, challenge: &str) {
        self.challenge = Some(challenge.to_owned());
        if let AuthState::Accepted { needed_since } = self.state {
            self.state = match needed_since {
                Some(needed_since) => AuthState::Waiting { needed_since },
                None => AuthState::Idle,
            };
        }
    }

    /// The challenge to answer now, if one should be answered: a key is
    /// configured (`enabled`), the relay is connected, a challenge is known
    /// and no AUTH is on the wire. Marks the AUTH sent.
    pub fn challenge_to_answer(
        &mut self,
        now: Time,
        enabled: bool,
        connected: bool,
    ) -> Option<String> {
        if !enabled || !connected || matches!(self.state, AuthState::Sent { .. }) {
            return None;
        }
        let challenge = self.challenge.clone()?;
        let needed_since = self.needed_since();
        self.state = AuthState::Sent {
            at: now,
            needed_since,
        };
        Some(challenge)
    }

    /// Work was refused with `auth-required:` at `now` and waits for AUTH.
    pub fn need(&mut self, now: Time) {
        self.state = match std::mem::take(&mut self.state) {
            AuthState::Idle => AuthState::Waiting { needed_since: now },
            AuthState::Sent { at, needed_since } => AuthState::Sent {
                at,
                needed_since: Some(needed_since.unwrap_or(now)),
            },
            other => other,
        };
    }

    /// The relay answered our AUTH.
    pub fn on_result(&mut self, accepted: bool) -> AuthOutcome {
        if accepted {
            self.state = AuthState::Accepted {
                needed_since: self.needed_since(),
            };
            AuthOutcome::Accepted
        } else {
            self.fail()
        }
    }

    /// AUTH failed: nothing waits for it any more.
    pub fn fail(&mut self) -> AuthOutcome {
        let needed = self.blocks();
        self.state = AuthState::Idle;
        if needed {
            AuthOutcome::FailedWhileNeeded
        } else {
            AuthOutcome::Failed
        }
    }

    /// The daily pass: work no longer waits for AUTH (it is asked again).
    pub fn forgive(&mut self) {
        self.state = match std::mem::take(&mut self.state) {
            AuthState::Waiting { .. } => AuthState::Idle,
            AuthState::Sent { at, .. } => AuthState::Sent {
                at,
                needed_since: None,
            },
            AuthState::Accepted { .. } => AuthState::Accepted { needed_since: None },
            AuthState::Idle => AuthState::Idle,
        };
    }

    pub fn is_accepted(&self) -> bool {
        matches!(self.state, AuthState::Accepted { .. })
    }

    /// Work waits for AUTH: no historic REQ goes out meanwhile.
    pub fn blocks(&self) -> bool {
        match self.state {
            AuthState::Waiting { .. } => true,
            AuthState::Sent { needed_since, .. } => needed_since.is_some(),
            AuthState::Idle | AuthState::Accepted { .. } => false,
        }
    }

    fn needed_since(&self) -> Option<Time> {
        match self.state {
            AuthState::Idle => None,
            AuthState::Waiting { needed_since } => Some(needed_since),
            AuthState::Sent { needed_since, .. } | AuthState::Accepted { needed_since } => {
                needed_since
            }
        }
    }

    /// When an AUTH on the wire, or a wait for a challenge, has taken too long.
    pub fn poll_timeout(&self) -> Option<Deadline> {
        let since = match self.state {
            AuthState::Sent { at, .. } => Some(at),
            AuthState::Waiting { needed_since } => Some(needed_since),
            AuthState::Idle | AuthState::Accepted { .. } => None,
        };
        deadline(since.map(|s| s.plus(AUTH_TIMEOUT)), RelayTimer::Auth)
    }

    /// The AUTH (or the wait for a challenge) has taken too long at `now`.
    pub fn timed_out(&self, now: Time) -> bool {
        self.poll_timeout().is_some_and(|(at, _)| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Time {
        Time::from_secs(s)
    }

    #[test]
    fn refused_work_waits_for_a_challenge_then_for_the_answer() {
        let mut a = Auth::default();
        assert!(!a.blocks());
        a.need(at(0));
        assert!(a.blocks());
        assert_eq!(
            a.challenge_to_answer(at(1), true, true),
            None,
            "no challenge yet"
        );
        assert_eq!(a.poll_timeout(), Some((at(10), RelayTimer::Auth)));
        a.on_challenge("c1");
        assert_eq!(
            a.challenge_to_answer(at(2), true, true),
            Some("c1".to_owned())
        );
        assert_eq!(
            a.challenge_to_answer(at(3), true, true),
            None,
            "one AUTH at a time"
        );
        assert_eq!(a.poll_timeout(), Some((at(12), RelayTimer::Auth)));
        assert!(a.blocks());
        assert_eq!(a.on_result(true), AuthOutcome::Accepted);
        assert!(a.is_accepted() && !a.blocks());
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn failure_gives_up_only_what_waited() {
        let mut a = Auth::default();
        a.on_challenge("c");
        assert!(a.challenge_to_answer(at(0), true, true).is_some());
        assert_eq!(a.on_result(false), AuthOutcome::Failed);
        a.need(at(5));
        assert!(a.timed_out(at(15)) && !a.timed_out(at(14)));
        assert_eq!(a.fail(), AuthOutcome::FailedWhileNeeded);
        assert!(!a.blocks());
        assert_eq!(a.challenge_to_answer(at(20), false, true), None, "no key");
        assert_eq!(
            a.challenge_to_answer(at(20), true, false),
            None,
            "not connected"
        );
    }

    #[test]
    fn a_new_challenge_after_acceptance_holds_work_again() {
        let mut a = Auth::default();
        a.need(at(0));
        a.on_challenge("c1");
        a.challenge_to_answer(at(1), true, true);
        a.on_result(true);
        a.on_challenge("c2");
        assert!(a.blocks(), "the needed work waits for the new AUTH");
        a.forgive();
        assert!(!a.blocks());
        a.new_session();
        assert_eq!(
            a.challenge_to_answer(at(9), true, true),
            Some("c2".to_owned()),
            "kept"
        );
        a.end();
        assert_eq!(a.challenge_to_answer(at(9), true, true), None);
    }
}
