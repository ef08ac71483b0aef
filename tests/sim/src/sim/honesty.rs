//! Oracles on what the engine *reports* and how it *waits*, checked by the
//! world after every step (each input the engine handles):
//!
//! - **No false success.** When a target becomes confirmed on a relay,
//!   every event the relay held for it before that target's historic work
//!   began (the step it last became pending) and that the service accepts
//!   is in our store or was rejected by it. Events that arrived later are
//!   the live subscription's to deliver, and are held to the same rule by
//!   [`World::honesty_violations_at_end`] once the world has settled.
//! - **No stall.** A relay that has answered every request of the current
//!   connection (no silent drop, no rate limit or unexplained refusal:
//!   see [`Episode`](super::Episode)) never has historic work (targets
//!   pending or batches queued) while nothing is on the wire from it for
//!   longer than [`HonestyOracle::stall_limit`] of virtual time. Measured
//!   from the step at which the relay had last nothing left to send us to
//!   the next step at which the engine asks it something (or stops holding
//!   work); a rate-limit cool-down the relay asked for is excused while it
//!   runs, a concurrency refusal never is.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use grasp_sync_core::{RelayUrl, TargetKey, Time};
use nostr::event::{Event, EventId};

use super::World;

/// A report the engine should not have made, or a wait it should not have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HonestyViolation {
    /// A target reported confirmed on a relay that holds an event for it we
    /// neither stored nor rejected.
    FalseSuccess {
        /// The relay.
        relay: RelayUrl,
        /// The target.
        target: String,
        /// An event the relay holds for it and we lack.
        missing: EventId,
        /// When the target was confirmed.
        at: Time,
    },
    /// A relay that answered everything had historic work and nothing on
    /// the wire for too long.
    Stall {
        /// The relay.
        relay: RelayUrl,
        /// When the wait began.
        since: Time,
        /// How long it lasted (at least).
        waited: Duration,
        /// Pending targets and queued batches then.
        work: (usize, usize),
        /// Why the engine woke up next, as it says.
        next_wakeup: String,
    },
}

impl fmt::Display for HonestyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HonestyViolation::FalseSuccess {
                relay,
                target,
                missing,
                at,
            } => write!(
                f,
                "{relay}: {target} confirmed at {} s while {missing} is missing",
                at.as_secs()
            ),
            HonestyViolation::Stall {
                relay,
                since,
                waited,
                work,
                next_wakeup,
            } => write!(
                f,
                "{relay}: historic work ({} pending, {} queued) idle for {waited:?} from {} s \
                 (next wakeup: {next_wakeup})",
                work.0,
                work.1,
                since.as_millis() as f64 / 1000.0
            ),
        }
    }
}

/// The oracles' memory between steps.
#[derive(Clone, Debug)]
pub struct HonestyOracle {
    /// The longest a willing relay may wait with work and nothing asked.
    pub stall_limit: Duration,
    confirmed: BTreeMap<RelayUrl, BTreeSet<TargetKey>>,
    pending_since: BTreeMap<RelayUrl, BTreeMap<TargetKey, Time>>,
    waiting_since: BTreeMap<RelayUrl, (Time, (usize, usize), bool)>,
    violations: Vec<HonestyViolation>,
    /// Confirmations checked.
    pub confirmations: u64,
    /// The longest idle wait with work seen per relay (excused or not).
    pub longest_wait: BTreeMap<RelayUrl, Duration>,
}

/// How many violations are kept.
const KEEP: usize = 50;

impl Default for HonestyOracle {
    fn default() -> Self {
        HonestyOracle {
            stall_limit: Duration::from_secs(5),
            confirmed: BTreeMap::new(),
            pending_since: BTreeMap::new(),
            waiting_since: BTreeMap::new(),
            violations: Vec::new(),
            confirmations: 0,
            longest_wait: BTreeMap::new(),
        }
    }
}

impl HonestyOracle {
    /// The violations seen (the first fifty).
    pub fn violations(&self) -> &[HonestyViolation] {
        &self.violations
    }

    /// Waits still running at `now` that are already too long (a relay the
    /// engine never came back to).
    pub fn open_stalls(&self, now: Time) -> Vec<HonestyViolation> {
        self.waiting_since
            .iter()
            .filter(|(_, (since, _, reported))| !reported && now.since(*since) > self.stall_limit)
            .map(|(relay, (since, work, _))| HonestyViolation::Stall {
                relay: relay.clone(),
                since: *since,
                waited: now.since(*since),
                work: *work,
                next_wakeup: "none before the end of the run".into(),
            })
            .collect()
    }

    fn violate(&mut self, v: HonestyViolation) {
        if self.violations.len() < KEEP {
            self.violations.push(v);
        }
    }

    /// After a step of `world` (an input handled and its commands executed)
    /// that concerned `touched` relays (the input's, the commands'): only
    /// their state can have changed (a relay's targets are confirmed on its
    /// own answers; its work moves only with its own inputs and commands).
    pub(super) fn after_step(&mut self, w: &World, touched: &BTreeSet<RelayUrl>) {
        let now = w.now;
        for url in touched {
            let Some(relay) = w.relays.get(url) else {
                continue;
            };
            let Some(st) = w.engine.relay_status(url) else {
                continue;
            };
            // (b) The wait that ended with this step, if any.
            if let Some((since, work, reported)) = self.waiting_since.get(url).copied() {
                let waited = now.since(since);
                let longest = self.longest_wait.entry(url.clone()).or_default();
                *longest = (*longest).max(waited);
                if !reported && waited > self.stall_limit {
                    let next_wakeup = w
                        .engine
                        .next_wakeup_reason()
                        .map(|(t, r, why)| format!("{why} of {r} at {} s", t.as_secs()))
                        .unwrap_or_else(|| "none".into());
                    self.violate(HonestyViolation::Stall {
                        relay: url.clone(),
                        since,
                        waited,
                        work,
                        next_wakeup,
                    });
                    if let Some(e) = self.waiting_since.get_mut(url) {
                        e.2 = true;
                    }
                }
            }
            let work = (st.pending, st.queued_batches);
            let cooling = st.cooldown_until.is_some_and(|c| c > now);
            let ep = &relay.episode;
            let excused = ep.silent > 0 || ep.other > 0 || (ep.rate_limits > 0 && cooling);
            let waiting = relay.is_connected()
                && (work.0 > 0 || work.1 > 0)
                && w.in_flight(url) == 0
                && !excused;
            if waiting {
                self.waiting_since
                    .entry(url.clone())
                    .or_insert((now, work, false));
            } else {
                self.waiting_since.remove(url);
            }

            // (a) Newly confirmed targets.
            let confirmed = w.engine.confirmed_targets(url).unwrap_or_default();
            let pending = w.engine.pending_targets(url).unwrap_or_default();
            let before = self.confirmed.entry(url.clone()).or_default();
            let newly: Vec<TargetKey> = confirmed.difference(before).cloned().collect();
            let since = self.pending_since.entry(url.clone()).or_default();
            let mut found = Vec::new();
            for target in newly {
                self.confirmations += 1;
                let began = since.get(&target).copied().unwrap_or(now);
                let lacking = w.lacking(url, &target, |e| {
                    relay.arrived.get(&e.id).is_none_or(|a| *a < began)
                });
                if let Some(missing) = lacking.first() {
                    found.push(HonestyViolation::FalseSuccess {
                        relay: url.clone(),
                        target: describe(&target),
                        missing: *missing,
                        at: now,
                    });
                }
            }
            since.retain(|t, _| pending.contains(t));
            for t in &pending {
                since.entry(t.clone()).or_insert(now);
            }
            self.confirmed.insert(url.clone(), confirmed);
            for v in found {
                self.violate(v);
            }
        }
    }
}

/// A target in words.
pub fn describe(target: &TargetKey) -> String {
    match target {
        TargetKey::Discovery => "discovery".into(),
        TargetKey::Repo(c) => format!("repo {}", c.identifier),
        TargetKey::Root(id) => format!("root {}", &id.to_hex()[..12]),
    }
}

/// Whether `event` falls under `target` as its layer's filters select it.
pub fn under_target(target: &TargetKey, event: &Event) -> bool {
    let tagged = |names: &[&str], value: &str| {
        event.tags.iter().any(|t| match t.as_slice() {
            [k, v, ..] => names.contains(&k.as_str()) && v == value,
            _ => false,
        })
    };
    match target {
        TargetKey::Discovery => event.kind.as_u16() == 30617,
        TargetKey::Repo(c) => {
            tagged(&["a", "A", "q"], &c.to_string())
                || (event.kind.as_u16() == 30618
                    && event.pubkey == c.author
                    && tagged(&["d"], &c.identifier))
        }
        TargetKey::Root(id) => tagged(&["e", "E", "q"], &id.to_hex()),
    }
}

impl World {
    /// Events `relay` holds under `target` (those `which` selects) that the
    /// service accepts and that we neither stored nor saw rejected.
    pub fn lacking(
        &self,
        relay: &RelayUrl,
        target: &TargetKey,
        which: impl Fn(&Event) -> bool,
    ) -> Vec<EventId> {
        let Some(r) = self.relays.get(relay) else {
            return Vec::new();
        };
        r.events
            .values()
            .filter(|e| {
                under_target(target, e)
                    && which(e)
                    && !self.store.contains_key(&e.id)
                    && !self.rejected.contains(&e.id)
                    && self.engine.check_acceptance(e).is_accept()
            })
            .map(|e| e.id)
            .collect()
    }

    /// The honesty violations seen during the run, plus the end check: on
    /// every relay, every confirmed target has every event it holds for it
    /// stored or rejected (call after [`World::settle`]).
    pub fn honesty_violations_at_end(&self) -> Vec<HonestyViolation> {
        let mut out: Vec<HonestyViolation> = self
            .honesty
            .as_ref()
            .map(|o| {
                let mut v = o.violations().to_vec();
                v.extend(o.open_stalls(self.now));
                v
            })
            .unwrap_or_default();
        for url in self.relays.keys() {
            for target in self.engine.confirmed_targets(url).unwrap_or_default() {
                if let Some(missing) = self.lacking(url, &target, |_| true).first() {
                    out.push(HonestyViolation::FalseSuccess {
                        relay: url.clone(),
                        target: describe(&target),
                        missing: *missing,
                        at: self.now,
                    });
                }
            }
        }
        out
    }
}
