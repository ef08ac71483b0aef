//! Engine configuration: who we are, where to start, guard rails, budgets and
//! the timing constants of the behaviour contract.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::info::Budget;
use crate::types::Time;
use crate::url::{RelayUrl, ServiceId};

/// Everything an [`Engine`](crate::Engine) is built from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The service we sync into; never a sync target.
    pub service: ServiceId,
    /// Relays that are always connected, listed or not (layer 1 discovery only).
    pub bootstrap: Vec<RelayUrl>,
    /// Track every announcement, not only those that list the service.
    pub archive: bool,
    /// Keep relays whose host is a private, loopback or link-local IP literal.
    pub allow_private: bool,
    /// Derive relays from GRASP-shaped `clone` URLs too.
    pub use_clone_urls: bool,
    /// Guard rail: relays kept per announcement.
    pub max_relays_per_announcement: usize,
    /// Guard rail: relays known in total; further ones are ignored and counted.
    pub max_relays_total: usize,
    /// Whether the host can answer NIP-42 AUTH (a key is configured).
    pub auth_enabled: bool,
    /// Budgets for relays that publish no limits.
    pub default_budget: Budget,
    /// Timing constants.
    pub timing: Timing,
    /// Seed of every jitter stream.
    pub seed: u64,
    /// Reconcile historic work with NIP-77 where the relay supports it
    /// (probing relays that do not say); `false` pages every filter with REQ.
    #[serde(default = "default_nip77")]
    pub nip77: bool,
}

fn default_nip77() -> bool {
    true
}

impl Config {
    /// A configuration with the contract's defaults for `service`.
    pub fn new(service: ServiceId) -> Self {
        Config {
            service,
            bootstrap: Vec::new(),
            archive: false,
            allow_private: false,
            use_clone_urls: true,
            max_relays_per_announcement: 20,
            max_relays_total: 5000,
            auth_enabled: false,
            default_budget: Budget::default(),
            timing: Timing::default(),
            seed: 0x6772_6173_7073_796e, // "graspsyn"
            nip77: true,
        }
    }
}

fn default_batch_quiet() -> Duration {
    Duration::from_millis(50)
}

impl Timing {
    /// When a batch that opened at `started` and was joined at `now` goes
    /// out: after `batch_quiet` without new members, `batch_delay` at most.
    pub fn batch_until(&self, started: Time, now: Time) -> Time {
        now.plus(self.batch_quiet)
            .min(started.plus(self.batch_delay))
    }
}

/// The timing constants of spec sections 4 and 5.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// First reconnect delay after a failure.
    pub backoff_initial: Duration,
    /// Reconnect delay cap.
    pub backoff_max: Duration,
    /// Jitter applied to every backoff, as a fraction of it.
    pub backoff_jitter: f64,
    /// Failing this long makes a relay dead.
    pub dead_after: Duration,
    /// Dead relays are retried this often.
    pub dead_retry: Duration,
    /// A connection attempt with no answer for this long has failed.
    pub connect_timeout: Duration,
    /// A connection that lasted this long resets the backoff.
    pub stable_after: Duration,
    /// Down for less than this (from the drop) is a quick reconnect.
    pub quick_reconnect_window: Duration,
    /// Live subscriptions use `since` = now minus this (clock-skew allowance).
    pub live_since_margin: Duration,
    /// Catch-up `since` is the last connected time minus this.
    pub catch_up_margin: Duration,
    /// Daily re-sync: shortest interval.
    pub resync_min: Duration,
    /// Daily re-sync: longest interval.
    pub resync_max: Duration,
    /// Grace before an empty relay is closed and forgotten.
    pub empty_grace: Duration,
    /// A historic REQ with no event and no EOSE for this long has timed out.
    pub historic_timeout: Duration,
    /// Timeouts (or unexplained refusals) before a batch is given up until the daily pass.
    pub historic_max_attempts: u32,
    /// New work found while connected waits at most this long, so that
    /// targets found together share one REQ and one live update.
    pub batch_delay: Duration,
    /// ... and goes as soon as no new target joined it for this long: the
    /// batch only waits while targets keep arriving.
    #[serde(default = "default_batch_quiet")]
    pub batch_quiet: Duration,
    /// Targets that no live subscription can cover (the relay's budget is
    /// too small) are fetched with a catch-up REQ this often instead.
    pub uncovered_poll: Duration,
    /// First cool-down after `rate-limited:`.
    pub rate_limit_cooldown: Duration,
    /// Cool-down cap.
    pub rate_limit_cooldown_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            backoff_initial: Duration::from_secs(5),
            backoff_max: Duration::from_secs(3600),
            backoff_jitter: 0.2,
            dead_after: Duration::from_secs(24 * 3600),
            dead_retry: Duration::from_secs(24 * 3600),
            connect_timeout: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            quick_reconnect_window: Duration::from_secs(15 * 60),
            live_since_margin: Duration::from_secs(10 * 60),
            catch_up_margin: Duration::from_secs(5 * 60),
            resync_min: Duration::from_secs(23 * 3600),
            resync_max: Duration::from_secs(25 * 3600),
            empty_grace: Duration::from_secs(60),
            historic_timeout: Duration::from_secs(60),
            historic_max_attempts: 6,
            batch_delay: Duration::from_secs(1),
            batch_quiet: default_batch_quiet(),
            uncovered_poll: Duration::from_secs(5 * 60),
            rate_limit_cooldown: Duration::from_secs(65),
            rate_limit_cooldown_max: Duration::from_secs(30 * 60),
        }
    }
}
