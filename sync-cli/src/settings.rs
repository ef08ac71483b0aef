//! The settings of `grasp-sync run`, merged from four places in this order of
//! precedence: command-line flags, `GRASP_SYNC_*` environment variables (both
//! through clap), the TOML file of `--config` / `GRASP_SYNC_CONFIG`, and the
//! built-in defaults.
//!
//! clap records where each value came from ([`ArgMatches::value_source`]);
//! the file only fills what neither a flag nor the environment set. Unknown
//! keys in the file are an error that names the key, so a typo never
//! silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;
use grasp_sync_core::{RelayUrl, ServiceId, Timing};
use grasp_sync_io::IoConfig;
use nostr::key::Keys;
use serde::Deserialize;

use crate::args::RunArgs;
use crate::error::CliError;
use crate::progress::ProgressMode;

/// Where `run` keeps its database and state when no directory is given.
pub const DEFAULT_DATA_DIR: &str = "./grasp-sync-data";
/// The engine snapshot inside the data directory.
pub const STATE_FILE: &str = "state.json";
/// The last per-relay report of a run inside the data directory.
pub const REPORT_FILE: &str = "report.json";
/// The embedded event database inside the data directory.
pub const DB_DIR: &str = "db";
/// Connection failures in a row after which `--once` counts a relay as not
/// synced.
pub const DEFAULT_MAX_CONNECT_FAILURES: u32 = 5;

/// The TOML configuration file. Every key is optional; the names are the
/// long flags with `_` for `-`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    domain: Option<String>,
    archive: Option<bool>,
    allow_private_relays: Option<bool>,
    data_dir: Option<PathBuf>,
    local_relay: Option<String>,
    bootstrap: Option<Vec<String>>,
    metrics: Option<String>,
    auth_key_file: Option<PathBuf>,
    once: Option<bool>,
    max_connect_failures: Option<u32>,
    progress: Option<ProgressMode>,
    log: Option<String>,
    /// How often the state is saved (`"30s"`).
    snapshot_interval: Option<String>,
    /// Engine timing constants (spec sections 4 and 5); only for tuning.
    timing: Option<TimingFile>,
}

/// `[timing]`: overrides of [`Timing`], durations written like `"300ms"`,
/// `"5s"` or `"1h 30m"`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimingFile {
    backoff_initial: Option<String>,
    backoff_max: Option<String>,
    backoff_jitter: Option<f64>,
    dead_after: Option<String>,
    dead_retry: Option<String>,
    connect_timeout: Option<String>,
    stable_after: Option<String>,
    quick_reconnect_window: Option<String>,
    live_since_margin: Option<String>,
    catch_up_margin: Option<String>,
    resync_min: Option<String>,
    resync_max: Option<String>,
    empty_grace: Option<String>,
    historic_timeout: Option<String>,
    historic_max_attempts: Option<u32>,
    batch_delay: Option<String>,
    batch_quiet: Option<String>,
    uncovered_poll: Option<String>,
    rate_limit_cooldown: Option<String>,
    rate_limit_cooldown_max: Option<String>,
}

/// Everything `run` needs, resolved.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// The runner's configuration (engine included; state file set).
    pub io: IoConfig,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Feed this relay instead of the embedded database.
    pub local_relay: Option<RelayUrl>,
    /// Exit once the historic sync is done.
    pub once: bool,
    /// With `once`: connection failures in a row that count a relay as not
    /// synced.
    pub max_connect_failures: u32,
    /// How progress is shown.
    pub progress: ProgressMode,
    /// The file the AUTH key was read from.
    pub auth_key_file: Option<PathBuf>,
    /// The log filter from the file (flags and environment are read in
    /// `main`).
    pub log: Option<String>,
}

impl RunSettings {
    /// The settings in effect, as JSON (`run --print-config`); durations
    /// are written the way the file takes them.
    pub fn to_json(&self) -> String {
        let e = &self.io.engine;
        let t = &e.timing;
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let doc = serde_json::json!({
            "domain": e.service.to_string(),
            "archive": e.archive,
            "allow_private_relays": e.allow_private,
            "data_dir": self.data_dir.display().to_string(),
            "local_relay": self.local_relay.as_ref().map(ToString::to_string),
            "bootstrap": e.bootstrap.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "metrics": self.io.metrics_addr.map(|a| a.to_string()),
            "auth_key_file": self.auth_key_file.as_ref().map(|p| p.display().to_string()),
            "once": self.once,
            "max_connect_failures": self.max_connect_failures,
            "progress": format!("{:?}", self.progress).to_lowercase(),
            "log": self.log,
            "snapshot_interval": d(self.io.snapshot_interval),
            "state_file": self.io.state_file.as_ref().map(|p| p.display().to_string()),
            "timing": {
                "backoff_initial": d(t.backoff_initial),
                "backoff_max": d(t.backoff_max),
                "backoff_jitter": t.backoff_jitter,
                "dead_after": d(t.dead_after),
                "dead_retry": d(t.dead_retry),
                "connect_timeout": d(t.connect_timeout),
                "stable_after": d(t.stable_after),
                "quick_reconnect_window": d(t.quick_reconnect_window),
                "live_since_margin": d(t.live_since_margin),
                "catch_up_margin": d(t.catch_up_margin),
                "resync_min": d(t.resync_min),
                "resync_max": d(t.resync_max),
                "empty_grace": d(t.empty_grace),
                "historic_timeout": d(t.historic_timeout),
                "historic_max_attempts": t.historic_max_attempts,
                "batch_delay": d(t.batch_delay),
                "batch_quiet": d(t.batch_quiet),
                "uncovered_poll": d(t.uncovered_poll),
                "rate_limit_cooldown": d(t.rate_limit_cooldown),
                "rate_limit_cooldown_max": d(t.rate_limit_cooldown_max),
            },
        });
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    }
}

/// Whether a flag or an environment variable set `id` (the file must not
/// override it).
fn from_user(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Reads and parses a configuration file.
pub fn load_file(path: &Path) -> Result<FileConfig, CliError> {
    let err = |reason: String| CliError::ConfigFile {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    toml::from_str(&text).map_err(|e| err(e.message().to_owned() + &location(&text, e.span())))
}

/// " (line N)" for an error span, so the message points at the key.
fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

/// Merges flags and environment (`args`, with their sources in `matches`)
/// over the configuration file and the defaults.
pub fn resolve(args: &RunArgs, matches: &ArgMatches) -> Result<RunSettings, CliError> {
    let (file, file_path) = match &args.config {
        Some(path) => (load_file(path)?, path.clone()),
        None => (FileConfig::default(), PathBuf::new()),
    };
    let bad = |key: &str, reason: String| CliError::ConfigFile {
        path: file_path.clone(),
        reason: format!("{key}: {reason}"),
    };

    let mut engine_args = args.engine.clone();
    if engine_args.domain.is_none() {
        if let Some(d) = &file.domain {
            engine_args.domain =
                Some(ServiceId::parse(d).map_err(|e| bad("domain", e.to_string()))?);
        }
    }
    if !from_user(matches, "archive") {
        engine_args.archive = file.archive.unwrap_or(false);
    }
    if !from_user(matches, "allow_private_relays") {
        engine_args.allow_private_relays = file.allow_private_relays.unwrap_or(false);
    }
    let mut engine = engine_args.config()?;

    engine.bootstrap = if from_user(matches, "bootstrap") {
        args.bootstrap.clone()
    } else {
        file.bootstrap
            .iter()
            .flatten()
            .map(|u| RelayUrl::parse(u).map_err(|e| bad("bootstrap", format!("{u}: {e}"))))
            .collect::<Result<_, _>>()?
    };
    if let Some(t) = &file.timing {
        apply_timing(t, &mut engine.timing).map_err(|(k, r)| bad(&format!("timing.{k}"), r))?;
    }

    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let local_relay = match (&args.local_relay, &file.local_relay) {
        (Some(u), _) => Some(u.clone()),
        (None, Some(u)) => Some(RelayUrl::parse(u).map_err(|e| bad("local_relay", e.to_string()))?),
        (None, None) => None,
    };
    let metrics = match (&args.metrics, &file.metrics) {
        (Some(a), _) => Some(*a),
        (None, Some(a)) => Some(
            a.parse::<SocketAddr>()
                .map_err(|e| bad("metrics", format!("{a}: {e}")))?,
        ),
        (None, None) => None,
    };
    let once = if from_user(matches, "once") {
        args.once
    } else {
        file.once.unwrap_or(false)
    };
    let progress = if from_user(matches, "progress") {
        args.progress
    } else {
        file.progress.unwrap_or(args.progress)
    };

    let auth_key_file = args.auth_key_file.clone().or(file.auth_key_file);
    let mut io = IoConfig::new(engine);
    io.metrics_addr = metrics;
    if let Some(path) = &auth_key_file {
        io.auth_keys = Some(load_auth_key(path)?);
    }
    io.state_file = Some(data_dir.join(STATE_FILE));
    if let Some(s) = &file.snapshot_interval {
        io.snapshot_interval = parse_duration(s).map_err(|r| bad("snapshot_interval", r))?;
    }
    Ok(RunSettings {
        io,
        data_dir,
        local_relay,
        once,
        max_connect_failures: args
            .max_connect_failures
            .or(file.max_connect_failures)
            .unwrap_or(DEFAULT_MAX_CONNECT_FAILURES),
        progress,
        auth_key_file,
        log: file.log,
    })
}

/// Reads a secret key (hex or `nsec1…`) from `path`.
fn load_auth_key(path: &Path) -> Result<Keys, CliError> {
    let err = |reason: String| CliError::AuthKey {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    Keys::parse(text.trim()).map_err(|e| err(format!("not a secret key (hex or nsec): {e}")))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration ({e})"))
}

/// Applies `[timing]`; on error returns the key and why.
fn apply_timing(file: &TimingFile, t: &mut Timing) -> Result<(), (&'static str, String)> {
    macro_rules! durations {
        ($($field:ident),* $(,)?) => {$(
            if let Some(s) = &file.$field {
                t.$field = parse_duration(s).map_err(|r| (stringify!($field), r))?;
            }
        )*};
    }
    durations!(
        backoff_initial,
        backoff_max,
        dead_after,
        dead_retry,
        connect_timeout,
        stable_after,
        quick_reconnect_window,
        live_since_margin,
        catch_up_margin,
        resync_min,
        resync_max,
        empty_grace,
        historic_timeout,
        batch_delay,
        batch_quiet,
        uncovered_poll,
        rate_limit_cooldown,
        rate_limit_cooldown_max,
    );
    if let Some(j) = file.backoff_jitter {
        if !(0.0..=1.0).contains(&j) {
            return Err(("backoff_jitter", format!("{j} is not between 0 and 1")));
        }
        t.backoff_jitter = j;
    }
    if let Some(n) = file.historic_max_attempts {
        t.historic_max_attempts = n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let e = toml::from_str::<FileConfig>("domian = \"x\"").unwrap_err();
        assert!(e.message().contains("domian"), "{e}");
        let e = toml::from_str::<FileConfig>("[timing]\nbackof_initial = \"1s\"").unwrap_err();
        assert!(e.message().contains("backof_initial"), "{e}");
    }

    #[test]
    fn timing_durations_parse() {
        let file: FileConfig =
            toml::from_str("[timing]\nbackoff_initial = \"300ms\"\nhistoric_max_attempts = 2")
                .unwrap();
        let mut t = Timing::default();
        apply_timing(file.timing.as_ref().unwrap(), &mut t).unwrap();
        assert_eq!(t.backoff_initial, Duration::from_millis(300));
        assert_eq!(t.historic_max_attempts, 2);
        let file: FileConfig = toml::from_str("[timing]\nbatch_delay = \"soon\"").unwrap();
        let err = apply_timing(file.timing.as_ref().unwrap(), &mut t).unwrap_err();
        assert_eq!(err.0, "batch_delay");
    }
}
