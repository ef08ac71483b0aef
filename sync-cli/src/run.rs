//! `grasp-sync run`: the daemon beside the service's relay.
//!
//! Opens the store (the embedded database in the data directory, or the
//! service's own relay with `--local-relay`), starts the
//! [`Runner`] with the state file in the data
//! directory, shows progress, and runs until SIGINT/SIGTERM, or with
//! `--once` until the historic sync of every relay is finished.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgMatches, Args};
use grasp_sync_core::RelayUrl;
use grasp_sync_io::store::lmdb::LmdbStore;
use grasp_sync_io::store::relay_sink::RelaySink;
use grasp_sync_io::{EventStore, Runner};

use crate::args::EngineArgs;
use crate::error::{CliError, EXIT_INCOMPLETE};
use crate::progress::{self, ProgressMode, WatchEnd, WatchOptions};
use crate::settings::{self, RunSettings};

/// Arguments of `grasp-sync run`. Every option can also be set with a
/// `GRASP_SYNC_*` environment variable or in the `--config` file (flags
/// win over the environment, the environment over the file).
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub engine: EngineArgs,

    /// Directory for the embedded event database and the saved state
    /// (created if missing) [default: ./grasp-sync-data].
    #[arg(long, value_name = "DIR", env = "GRASP_SYNC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Feed the service's own relay at this URL (events are published to it
    /// with EVENT) instead of the embedded database; the state file stays
    /// in the data directory.
    #[arg(long, value_name = "URL", env = "GRASP_SYNC_LOCAL_RELAY")]
    pub local_relay: Option<RelayUrl>,

    /// A relay always connected for discovery of announcements that list
    /// the service; repeat it (or separate URLs with commas in
    /// GRASP_SYNC_BOOTSTRAP) for several.
    #[arg(
        long = "bootstrap",
        value_name = "URL",
        env = "GRASP_SYNC_BOOTSTRAP",
        value_delimiter = ','
    )]
    pub bootstrap: Vec<RelayUrl>,

    /// File holding the secret key (hex or nsec) used to answer NIP-42
    /// AUTH challenges; without one, relays that require AUTH are given up.
    #[arg(long, value_name = "FILE", env = "GRASP_SYNC_AUTH_KEY_FILE")]
    pub auth_key_file: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDR/metrics (for example
    /// 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR", env = "GRASP_SYNC_METRICS")]
    pub metrics: Option<SocketAddr>,

    /// Exit once every relay with targets has finished its historic sync:
    /// 0 when all were synced, 3 with a per-relay table when some could not
    /// be (given up by the engine, or unreachable).
    #[arg(long, env = "GRASP_SYNC_ONCE", value_parser = BoolishValueParser::new())]
    pub once: bool,

    /// With --once: connection failures in a row after which a relay
    /// counts as unreachable [default: 5].
    #[arg(long, value_name = "N", env = "GRASP_SYNC_MAX_CONNECT_FAILURES")]
    pub max_connect_failures: Option<u32>,

    /// How progress is shown: `auto` draws bars on a terminal and writes log
    /// lines otherwise.
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        env = "GRASP_SYNC_PROGRESS",
        default_value_t = ProgressMode::Auto
    )]
    pub progress: ProgressMode,

    /// TOML configuration file; its keys are the long option names with `_`
    /// for `-`, plus `log`, `snapshot_interval` and a `[timing]` table (see
    /// the README). Unknown keys are an error.
    #[arg(long, value_name = "FILE", env = "GRASP_SYNC_CONFIG")]
    pub config: Option<PathBuf>,

    /// Print the settings in effect (after flags, environment, file and
    /// defaults are merged) as JSON and exit without syncing.
    #[arg(long)]
    pub print_config: bool,
}

/// Resolves the settings (flags, environment, file, defaults).
pub fn settings(args: &RunArgs, matches: &ArgMatches) -> Result<RunSettings, CliError> {
    settings::resolve(args, matches)
}

/// Runs the sync with `settings` (or prints them, with `--print-config`).
pub fn run(args: &RunArgs, settings: RunSettings) -> Result<ExitCode, CliError> {
    if args.print_config {
        println!("{}", settings.to_json());
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::Setup(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(run_async(settings))
}

async fn run_async(settings: RunSettings) -> Result<ExitCode, CliError> {
    let dir = &settings.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| CliError::DataDir {
        path: dir.clone(),
        source,
    })?;
    let store: Arc<dyn EventStore> = match &settings.local_relay {
        Some(url) => {
            tracing::info!(relay = %url, "feeding the local relay");
            Arc::new(RelaySink::start(url.clone(), settings.io.net.clone()))
        }
        None => {
            let db = dir.join(settings::DB_DIR);
            tracing::info!(path = %db.display(), "opening the event database");
            Arc::new(LmdbStore::open(&db).await?)
        }
    };
    tracing::info!(
        service = %settings.io.engine.service,
        bootstrap = settings.io.engine.bootstrap.len(),
        data_dir = %dir.display(),
        "starting the sync"
    );
    let runner = Runner::start(settings.io.clone(), store).await?;
    if let Some(addr) = runner.metrics_addr() {
        tracing::info!("metrics at http://{addr}/metrics");
    }
    let batch_delay = settings.io.engine.timing.batch_delay;
    let opts = WatchOptions {
        bars: settings.progress.bars(),
        log_every: Duration::from_secs(10),
        until_synced: settings.once,
        max_connect_failures: settings.max_connect_failures,
        settle: Duration::from_secs(2) + batch_delay * 2,
        timeout: None,
        report_file: Some(dir.join(settings::REPORT_FILE)),
    };
    let (end, report) = progress::watch(&runner, &opts).await;
    match end {
        WatchEnd::Signal => tracing::info!("signal received; shutting down"),
        WatchEnd::RunnerStopped => tracing::error!("the runner stopped on its own"),
        WatchEnd::Finished | WatchEnd::TimedOut => {}
    }
    runner.shutdown().await?;
    if end == WatchEnd::RunnerStopped {
        return Err(CliError::Setup("the runner stopped unexpectedly".into()));
    }
    if end != WatchEnd::Finished {
        return Ok(ExitCode::SUCCESS);
    }
    let Some(report) = report else {
        return Ok(ExitCode::SUCCESS);
    };
    print!("{}", report.table());
    let failed = report.failed();
    if failed.is_empty() {
        let n = report.relays.iter().filter(|r| r.targets > 0).count();
        println!("Historic sync finished: {n} relays synced.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "Historic sync incomplete: {} relays could not be synced ({}).",
            failed.len(),
            failed
                .iter()
                .map(|r| format!("{}: {}", r.url, r.outcome.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(ExitCode::from(EXIT_INCOMPLETE))
    }
}
