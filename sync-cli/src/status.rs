//! `grasp-sync status`: what a data directory's saved state says about every
//! relay.
//!
//! The state file (`state.json`, the engine snapshot) holds what survives a
//! restart: per relay the confirmed targets, last connection, newest events
//! seen per layer, backoff and re-sync times. `run` also leaves its last
//! per-relay report (`report.json`: state, targets, outcome, counters);
//! when it is there its figures are shown beside the saved state.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use grasp_sync_core::snapshot::SavedRelay;
use grasp_sync_core::{Snapshot, Time};
use serde::Serialize;

use crate::error::CliError;
use crate::progress::{RelaySummary, Report};
use crate::settings::{DEFAULT_DATA_DIR, REPORT_FILE, STATE_FILE};
use crate::table;

/// How the status is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table per relay.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// Arguments of `grasp-sync status`.
#[derive(Clone, Debug, Args)]
pub struct StatusArgs {
    /// The data directory of `grasp-sync run` [default: ./grasp-sync-data].
    #[arg(long, value_name = "DIR", env = "GRASP_SYNC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text, value_name = "FORMAT")]
    pub format: Format,
}

/// The status document (`--format json`).
#[derive(Clone, Debug, Serialize)]
pub struct StatusDoc {
    /// The state file read.
    pub state_file: String,
    /// When the state was saved (Unix seconds).
    pub saved_at: u64,
    /// Repositories known.
    pub repos: usize,
    /// Tracked repositories.
    pub tracked_repos: usize,
    /// Root events known.
    pub roots: usize,
    /// Deleted repositories remembered.
    pub tombstones: usize,
    /// When the run's last report was written (Unix seconds), if there is one.
    pub report_written_at: Option<u64>,
    /// Per relay, sorted by URL.
    pub relays: Vec<RelayDoc>,
}

/// One relay in the status document.
#[derive(Clone, Debug, Serialize)]
pub struct RelayDoc {
    /// The relay.
    pub url: String,
    /// Targets whose historic sync is confirmed.
    pub confirmed: usize,
    /// Last time we knew we were connected (Unix seconds).
    pub last_connected: Option<u64>,
    /// Newest `created_at` received per layer.
    pub last_event_at: LastEvents,
    /// Connection failures in a row.
    pub failures: u32,
    /// Since when it has been failing (Unix seconds).
    pub failing_since: Option<u64>,
    /// Failed for more than a day (retried daily).
    pub dead: bool,
    /// Next connection attempt (Unix seconds).
    pub retry_at: Option<u64>,
    /// Next daily re-sync (Unix seconds).
    pub next_resync: Option<u64>,
    /// Rate-limit strikes in a row.
    pub cooldown_strikes: u32,
    /// Subscription cap learned from refusals.
    pub learned_max_subscriptions: Option<u32>,
    /// The NIP-11 `max_limit` it publishes.
    pub max_limit: Option<u32>,
    /// The run's last report about it.
    pub last_run: Option<RelaySummary>,
}

/// Newest event times per layer (Unix seconds).
#[derive(Clone, Debug, Serialize)]
pub struct LastEvents {
    /// Layer 1: announcements.
    pub discovery: Option<u64>,
    /// Layer 2: repository events.
    pub repo: Option<u64>,
    /// Layer 3: root-event threads.
    pub root: Option<u64>,
}

fn secs(t: Option<Time>) -> Option<u64> {
    t.map(Time::as_secs)
}

impl RelayDoc {
    fn of(r: &SavedRelay, report: Option<&Report>) -> RelayDoc {
        let url = r.url.to_string();
        RelayDoc {
            last_run: report.and_then(|rep| rep.relays.iter().find(|s| s.url == url).cloned()),
            url,
            confirmed: r.confirmed.len(),
            last_connected: secs(r.last_connected),
            last_event_at: LastEvents {
                discovery: r.last_event_at[0],
                repo: r.last_event_at[1],
                root: r.last_event_at[2],
            },
            failures: r.backoff.failures,
            failing_since: secs(r.backoff.failing_since),
            dead: r.backoff.dead,
            retry_at: secs(r.retry_at),
            next_resync: secs(r.next_resync),
            cooldown_strikes: r.cooldown_strikes,
            learned_max_subscriptions: r.learned_max_subs,
            max_limit: r.info.as_ref().and_then(|i| i.max_limit),
        }
    }
}

/// Builds the status document of `dir`.
pub fn load(dir: &Path) -> Result<StatusDoc, CliError> {
    let state = dir.join(STATE_FILE);
    if !state.exists() {
        return Err(CliError::NoState {
            dir: dir.display().to_string(),
            file: state.display().to_string(),
        });
    }
    let snapshot: Snapshot =
        grasp_sync_io::persist::load_snapshot(&state)?.ok_or_else(|| CliError::NoState {
            dir: dir.display().to_string(),
            file: state.display().to_string(),
        })?;
    let report_path = dir.join(REPORT_FILE);
    let report: Option<Report> = match std::fs::read_to_string(&report_path) {
        Ok(text) => Some(
            serde_json::from_str(&text).map_err(|e| CliError::BadStateFile {
                path: report_path.clone(),
                reason: format!("not a run report: {e}"),
            })?,
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(CliError::Read {
                what: "run report",
                path: report_path.display().to_string(),
                source: e,
            })
        }
    };
    Ok(StatusDoc {
        state_file: state.display().to_string(),
        saved_at: snapshot.saved_at.as_secs(),
        repos: snapshot.repos.len(),
        tracked_repos: snapshot.repos.iter().filter(|r| r.entry.tracked).count(),
        roots: snapshot.roots.len(),
        tombstones: snapshot.tombstones.len(),
        report_written_at: report.as_ref().map(|r| r.written_at),
        relays: snapshot
            .relays
            .iter()
            .map(|r| RelayDoc::of(r, report.as_ref()))
            .collect(),
    })
}

/// A time as `2026-11-24T03:15:00Z`, or `-`.
fn when(t: Option<u64>) -> String {
    match t {
        Some(s) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string()
        }
        None => "-".to_owned(),
    }
}

/// The text rendering.
pub fn text(doc: &StatusDoc) -> String {
    let mut out = format!(
        "State saved {} ({}): {} repositories ({} tracked), {} root events, {} deleted repositories.\n",
        when(Some(doc.saved_at)),
        doc.state_file,
        doc.repos,
        doc.tracked_repos,
        doc.roots,
        doc.tombstones
    );
    match doc.report_written_at {
        Some(t) => out.push_str(&format!("Last run report: {}.\n", when(Some(t)))),
        None => out.push_str("No run report (counters unknown).\n"),
    }
    out.push('\n');
    if doc.relays.is_empty() {
        out.push_str("No relays known.\n");
        return out;
    }
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = doc
        .relays
        .iter()
        .map(|r| {
            let run = r.last_run.as_ref();
            let last_event = [
                r.last_event_at.discovery,
                r.last_event_at.repo,
                r.last_event_at.root,
            ]
            .into_iter()
            .flatten()
            .max();
            vec![
                r.url.clone(),
                run.map_or_else(dash, |s| s.outcome.as_str().to_owned()),
                run.map_or_else(dash, RelaySummary::why),
                run.map_or_else(dash, |s| s.state.clone()),
                r.confirmed.to_string(),
                run.map_or_else(dash, |s| s.targets.to_string()),
                when(r.last_connected),
                when(run.and_then(|s| s.last_eose)),
                when(last_event),
                if r.dead {
                    format!("{} (dead)", r.failures)
                } else {
                    r.failures.to_string()
                },
                when(r.next_resync),
                run.map_or_else(dash, |s| s.events_stored.to_string()),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &[
            "RELAY",
            "RESULT",
            "WHY",
            "STATE",
            "CONFIRMED",
            "TARGETS",
            "LAST CONNECTED",
            "LAST EOSE",
            "NEWEST EVENT",
            "FAILURES",
            "NEXT RESYNC",
            "STORED",
        ],
        &rows,
    ));
    out
}

/// Runs `grasp-sync status`.
pub fn run(args: &StatusArgs) -> Result<ExitCode, CliError> {
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let doc = load(&dir)?;
    let text = match args.format {
        Format::Text => text(&doc),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
            s.push('\n');
            s
        }
    };
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(CliError::Output(e)),
    }
}
