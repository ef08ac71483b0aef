//! Watching a running sync: the per-relay progress view (indicatif bars on a
//! terminal, plain `tracing` lines otherwise), the per-relay summary kept in
//! the data directory for `grasp-sync status`, and the rule that decides
//! when a `--once` run is finished.
//!
//! A relay with targets is *synced* when every target's historic sync is
//! confirmed, *given up* when its remaining targets were given up by the
//! engine (refused, unresponsive, auth required) and *unreachable* when its
//! connection failed too many times in a row. A `--once` run ends when every
//! relay with targets is in one of those three states and nothing has
//! changed for a settling period (new repositories found by discovery add
//! targets a moment after their announcement is stored).

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use grasp_sync_core::{RelayState, RelayStatus, Status};
use grasp_sync_io::{CatalogLoad, RunnerHandle};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::table;

/// How progress is shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProgressMode {
    /// Bars when stderr is a terminal, log lines otherwise.
    #[default]
    Auto,
    /// A live bar per relay.
    Bars,
    /// Periodic log lines.
    Lines,
}

impl ProgressMode {
    /// Whether bars are drawn.
    pub fn bars(self) -> bool {
        match self {
            ProgressMode::Auto => io::stderr().is_terminal(),
            ProgressMode::Bars => true,
            ProgressMode::Lines => false,
        }
    }
}

/// Where a relay's historic sync stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Nothing to sync from it.
    Idle,
    /// Historic sync of every target confirmed.
    Synced,
    /// Still working.
    Syncing,
    /// The engine gave up its remaining targets until the daily pass.
    GivenUp,
    /// Its connection failed too often in a row.
    Unreachable,
}

impl Outcome {
    /// Whether a `--once` run may end with the relay in this state.
    pub fn is_final(self) -> bool {
        !matches!(self, Outcome::Syncing)
    }

    /// Whether this counts as not synced.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::GivenUp | Outcome::Unreachable)
    }

    /// Lower-case words for tables and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Idle => "idle",
            Outcome::Synced => "synced",
            Outcome::Syncing => "syncing",
            Outcome::GivenUp => "given up",
            Outcome::Unreachable => "unreachable",
        }
    }

    /// The outcome of `r`; `max_connect_failures` failures in a row while
    /// not connected make a relay unreachable.
    pub fn of(r: &RelayStatus, max_connect_failures: u32) -> Outcome {
        let given_up: usize = r.given_up.values().sum();
        if r.targets == 0 {
            Outcome::Idle
        } else if r.pending == 0 && r.confirmed >= r.targets {
            Outcome::Synced
        } else if r.pending == 0 && given_up > 0 {
            Outcome::GivenUp
        } else if r.failures >= max_connect_failures
            && matches!(
                r.state,
                RelayState::Disconnected | RelayState::Dead | RelayState::Connecting
            )
        {
            Outcome::Unreachable
        } else {
            Outcome::Syncing
        }
    }
}

/// What `run` reports about one relay (the `--once` table, `report.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelaySummary {
    /// The relay.
    pub url: String,
    /// Connection state.
    pub state: String,
    /// Historic sync outcome.
    pub outcome: Outcome,
    /// Targets (discovery, repos, root events).
    pub targets: usize,
    /// Targets whose historic sync is confirmed.
    pub confirmed: usize,
    /// Targets in historic work.
    pub pending: usize,
    /// Targets given up until the daily pass, by reason.
    pub given_up: BTreeMap<String, usize>,
    /// Connection failures in a row.
    pub failures: u32,
    /// Events received for our subscriptions.
    pub events_received: u64,
    /// Events newly stored.
    pub events_stored: u64,
    /// Refusals of sync work (`CLOSED`/`NOTICE`) by reason (NIP-77
    /// refusals are counted as fallbacks instead).
    pub refusals: BTreeMap<String, u64>,
    /// Filters that fell back from NIP-77 to paged REQ (the relay refused or
    /// does not speak it: not a failure).
    #[serde(default)]
    pub nip77_fallbacks: u64,
    /// The last EOSE received (Unix seconds): when history last came in.
    pub last_eose: Option<u64>,
}

impl RelaySummary {
    /// The summary of `r`.
    pub fn of(r: &RelayStatus, max_connect_failures: u32) -> RelaySummary {
        RelaySummary {
            url: r.url.to_string(),
            state: r.state.as_str().to_owned(),
            outcome: Outcome::of(r, max_connect_failures),
            targets: r.targets,
            confirmed: r.confirmed,
            pending: r.pending,
            given_up: r
                .given_up
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), *v))
                .collect(),
            failures: r.failures,
            events_received: r.stats.events_received,
            events_stored: r.stats.events_stored,
            refusals: r
                .stats
                .refusals
                .iter()
                .filter(|(k, _)| !k.is_nip77())
                .map(|(k, v)| (k.as_str().to_owned(), *v))
                .collect(),
            nip77_fallbacks: r.stats.reconcile_fallbacks,
            last_eose: r.stats.last_eose.map(|t| t.as_secs()),
        }
    }
}

impl RelaySummary {
    /// Why the outcome is what it is, in a few words: the reasons work was
    /// given up (with how many targets each), or the connection failures.
    pub fn why(&self) -> String {
        match self.outcome {
            Outcome::GivenUp | Outcome::Syncing if !self.given_up.is_empty() => self
                .given_up
                .iter()
                .map(|(reason, n)| format!("{reason} ×{n}"))
                .collect::<Vec<_>>()
                .join(", "),
            Outcome::Unreachable => format!("{} connection failures in a row", self.failures),
            _ => "-".to_owned(),
        }
    }

    /// ` (connection state)` when it says more than the outcome.
    fn state_note(&self) -> String {
        if self.outcome == Outcome::Syncing && self.state != "syncing" {
            format!(" ({})", self.state)
        } else {
            String::new()
        }
    }
}

/// The last report of a run, saved beside the state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// When it was written (Unix seconds).
    pub written_at: u64,
    /// Tracked repositories.
    pub repos: usize,
    /// Known root events.
    pub roots: usize,
    /// Per relay, sorted by URL.
    pub relays: Vec<RelaySummary>,
}

impl Report {
    /// The report of `status`.
    pub fn of(status: &Status, max_connect_failures: u32) -> Report {
        Report {
            written_at: unix_now(),
            repos: status.repos,
            roots: status.roots,
            relays: status
                .relays
                .iter()
                .map(|r| RelaySummary::of(r, max_connect_failures))
                .collect(),
        }
    }

    /// Relays that could not be synced.
    pub fn failed(&self) -> Vec<&RelaySummary> {
        self.relays
            .iter()
            .filter(|r| r.outcome.is_failure())
            .collect()
    }

    /// The per-relay table.
    pub fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .relays
            .iter()
            .map(|r| {
                let given_up: usize = r.given_up.values().sum();
                let refusals: u64 = r.refusals.values().sum();
                vec![
                    r.url.clone(),
                    r.outcome.as_str().to_owned(),
                    r.why(),
                    r.state.clone(),
                    r.confirmed.to_string(),
                    r.targets.to_string(),
                    given_up.to_string(),
                    r.failures.to_string(),
                    refusals.to_string(),
                    r.nip77_fallbacks.to_string(),
                    r.events_stored.to_string(),
                ]
            })
            .collect();
        table::render(
            &[
                "RELAY",
                "RESULT",
                "WHY",
                "STATE",
                "CONFIRMED",
                "TARGETS",
                "GIVEN UP",
                "FAILURES",
                "REFUSALS",
                "NIP-77 FALLBACKS",
                "STORED",
            ],
            &rows,
        )
    }

    /// Writes the report atomically to `path`.
    pub fn save(&self, path: &Path) {
        let json = serde_json::to_string_pretty(self).unwrap_or_default();
        if let Err(e) = grasp_sync_io::persist::save_atomic(path, json.as_bytes()) {
            tracing::warn!(error = %e, "could not save the run report");
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The shared bar set: log lines are printed through it so they do not
/// tear the bars.
pub fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::hidden()))
}

/// A `tracing` writer that prints each log record above the bars.
pub struct LogWriter(Vec<u8>);

impl LogWriter {
    /// A writer for one record.
    pub fn new() -> Self {
        LogWriter(Vec::new())
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        bars().suspend(|| {
            let _ = io::stderr().write_all(&buf);
        });
    }
}

/// How [`watch`] runs.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Bars or lines.
    pub bars: bool,
    /// With log lines: how often one is written.
    pub log_every: Duration,
    /// End when the historic sync is finished (`--once`): every relay with
    /// targets reached a final outcome and the runner is idle (nothing in
    /// flight, the store's catalog loaded).
    pub until_synced: bool,
    /// Connection failures in a row that make a relay unreachable.
    pub max_connect_failures: u32,
    /// With `until_synced`: the store's catalog must load within this, or
    /// the run ends as unable to read the service's store.
    pub catalog_deadline: Duration,
    /// Give up waiting after this long (the demo).
    pub timeout: Option<Duration>,
    /// Where the report is saved every few seconds and at the end.
    pub report_file: Option<std::path::PathBuf>,
}

/// Why [`watch`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// Every relay with targets reached a final outcome.
    Finished,
    /// SIGINT or SIGTERM.
    Signal,
    /// `timeout` passed.
    TimedOut,
    /// The service's store or relay could not be read (`--once`), and why.
    StoreUnreadable(String),
    /// The runner stopped on its own (a bug).
    RunnerStopped,
}

/// Watches `runner` until the end condition of `opts`; returns why it ended
/// and the last report.
pub async fn watch(runner: &RunnerHandle, opts: &WatchOptions) -> (WatchEnd, Option<Report>) {
    // A `--once` run checks often: it ends as soon as the work does.
    let started = Instant::now();
    let mut view = View::new(opts.bars);
    let mut last: Option<Report> = None;
    let mut last_log = Instant::now();
    let mut last_save = Instant::now();
    let signal = grasp_sync_io::runner::shutdown_signal();
    tokio::pin!(signal);
    let every = if opts.until_synced { 50 } else { 200 };
    let mut tick = tokio::time::interval(Duration::from_millis(every));
    let end = loop {
        tokio::select! {
            () = &mut signal => break WatchEnd::Signal,
            _ = tick.tick() => {}
        }
        let Some((status, activity)) = runner.status_and_activity().await else {
            break WatchEnd::RunnerStopped;
        };
        let report = Report::of(&status, opts.max_connect_failures);
        view.update(&report, &status);
        if !opts.bars && last_log.elapsed() >= opts.log_every {
            log_line(&report);
            last_log = Instant::now();
        }
        if let Some(path) = &opts.report_file {
            if last_save.elapsed() >= Duration::from_secs(5) {
                report.save(path);
                last_save = Instant::now();
            }
        }
        let finished = report.relays.iter().all(|r| r.outcome.is_final());
        last = Some(report);
        if opts.until_synced {
            if let CatalogLoad::Failed(reason) = &activity.catalog {
                break WatchEnd::StoreUnreadable(reason.clone());
            }
            if activity.catalog == CatalogLoad::Loading
                && started.elapsed() >= opts.catalog_deadline
            {
                break WatchEnd::StoreUnreadable(format!(
                    "nothing read from it in {}",
                    humantime::format_duration(opts.catalog_deadline)
                ));
            }
            if finished && activity.idle() {
                break WatchEnd::Finished;
            }
        }
        if opts.timeout.is_some_and(|t| started.elapsed() >= t) {
            break WatchEnd::TimedOut;
        }
    };
    view.finish();
    if let (Some(path), Some(report)) = (&opts.report_file, &last) {
        report.save(path);
    }
    // The closing line, unless the loop just wrote one.
    if !opts.bars && last_log.elapsed() >= Duration::from_millis(500) {
        if let Some(report) = &last {
            log_line(report);
        }
    }
    (end, last)
}

fn log_line(report: &Report) {
    let with_targets: Vec<&RelaySummary> = report.relays.iter().filter(|r| r.targets > 0).collect();
    let done = with_targets
        .iter()
        .filter(|r| r.outcome != Outcome::Syncing)
        .count();
    let targets: usize = with_targets.iter().map(|r| r.targets).sum();
    let confirmed: usize = with_targets.iter().map(|r| r.confirmed).sum();
    let stored: u64 = report.relays.iter().map(|r| r.events_stored).sum();
    tracing::info!(
        "historic sync: {done}/{} relays done, {confirmed}/{targets} targets confirmed, {stored} events stored, {} repos",
        with_targets.len(),
        report.repos
    );
    for r in with_targets.iter().filter(|r| r.outcome != Outcome::Synced) {
        tracing::info!(
            "  {}: {}{}, {}/{} targets confirmed, {} events stored",
            r.url,
            r.outcome.as_str(),
            r.state_note(),
            r.confirmed,
            r.targets,
            r.events_stored
        );
    }
}

/// The bars, one per relay with targets.
struct View {
    enabled: bool,
    bars: BTreeMap<String, ProgressBar>,
    total: Option<ProgressBar>,
}

impl View {
    fn new(enabled: bool) -> View {
        if enabled {
            bars().set_draw_target(ProgressDrawTarget::stderr());
        }
        View {
            enabled,
            bars: BTreeMap::new(),
            total: None,
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{prefix:<22!} [{bar:14.cyan/blue}] {pos:>4}/{len:<4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    }

    fn update(&mut self, report: &Report, status: &Status) {
        if !self.enabled {
            return;
        }
        let total = self.total.get_or_insert_with(|| {
            let bar = bars().add(ProgressBar::new_spinner());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        total.set_message(format!(
            "historic sync: {} repos, {} root events; {} events stored, {} received",
            report.repos, report.roots, status.totals.events_stored, status.totals.events_received
        ));
        for r in report.relays.iter().filter(|r| r.targets > 0) {
            let bar = self.bars.entry(r.url.clone()).or_insert_with(|| {
                let bar = bars().add(ProgressBar::new(r.targets as u64));
                bar.set_style(Self::style());
                bar.set_prefix(r.url.clone());
                bar
            });
            bar.set_length(r.targets as u64);
            bar.set_position(r.confirmed as u64);
            let given_up: usize = r.given_up.values().sum();
            let mut msg = format!("{} {} stored", r.outcome.as_str(), r.events_stored);
            msg.push_str(&r.state_note());
            if given_up > 0 {
                msg.push_str(&format!(", {given_up} given up"));
            }
            let refusals: u64 = r.refusals.values().sum();
            if refusals > 0 {
                msg.push_str(&format!(", {refusals} refused"));
            }
            bar.set_message(msg);
        }
        let gone: Vec<String> = self
            .bars
            .keys()
            .filter(|u| !report.relays.iter().any(|r| &r.url == *u && r.targets > 0))
            .cloned()
            .collect();
        for url in gone {
            if let Some(bar) = self.bars.remove(&url) {
                bar.finish_and_clear();
            }
        }
    }

    fn finish(&mut self) {
        for bar in self.bars.values() {
            bar.abandon();
        }
        if let Some(total) = self.total.take() {
            total.abandon();
        }
        if self.enabled {
            bars().set_draw_target(ProgressDrawTarget::hidden());
            // The bars leave the cursor at the end of the last one.
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use grasp_sync_core::relay::RelayStats;
    use grasp_sync_core::{Budget, GiveUpReason, RelayState, RelayStatus, RelayUrl};

    use super::Outcome;

    fn relay(state: RelayState, targets: usize, confirmed: usize, pending: usize) -> RelayStatus {
        RelayStatus {
            url: RelayUrl::parse("wss://relay.example").unwrap(),
            state,
            bootstrap: false,
            targets,
            repos: 0,
            roots: 0,
            confirmed,
            pending,
            given_up: BTreeMap::new(),
            open_subscriptions: 0,
            queued_batches: 0,
            live_uncovered: 0,
            budget: Budget::default(),
            learned_max_subscriptions: None,
            failures: 0,
            retry_at: None,
            cooldown_until: None,
            last_connected: None,
            next_resync: None,
            last_event_at: BTreeMap::new(),
            nip77: Default::default(),
            stats: RelayStats::default(),
        }
    }

    #[test]
    fn outcomes() {
        use RelayState::*;
        assert_eq!(Outcome::of(&relay(Live, 0, 0, 0), 5), Outcome::Idle);
        assert_eq!(Outcome::of(&relay(Live, 4, 4, 0), 5), Outcome::Synced);
        assert_eq!(Outcome::of(&relay(Syncing, 4, 2, 2), 5), Outcome::Syncing);
        // Targets added but not yet scheduled (batch delay): still working.
        assert_eq!(Outcome::of(&relay(Live, 4, 2, 0), 5), Outcome::Syncing);

        let mut gave_up = relay(Live, 4, 2, 0);
        gave_up.given_up.insert(GiveUpReason::Unresponsive, 2);
        assert_eq!(Outcome::of(&gave_up, 5), Outcome::GivenUp);
        gave_up.pending = 1;
        assert_eq!(Outcome::of(&gave_up, 5), Outcome::Syncing, "work left");

        let mut failing = relay(Disconnected, 4, 0, 4);
        failing.failures = 4;
        assert_eq!(Outcome::of(&failing, 5), Outcome::Syncing);
        failing.failures = 5;
        assert_eq!(Outcome::of(&failing, 5), Outcome::Unreachable);
        failing.state = Connecting;
        assert_eq!(Outcome::of(&failing, 5), Outcome::Unreachable);
        failing.state = Syncing;
        assert_eq!(
            Outcome::of(&failing, 5),
            Outcome::Syncing,
            "connected again"
        );
        assert!(Outcome::GivenUp.is_failure() && Outcome::Unreachable.is_failure());
        assert!(!Outcome::Syncing.is_final());
    }
}
