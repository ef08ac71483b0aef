//! `grasp-sync run`: the daemon beside the service's relay.
//!
//! Opens the store (the embedded database in the data directory, or the
//! service's own relay with `--local-relay`), starts the
//! [`Runner`] with the state file in the data
//! directory, shows progress, and runs until SIGINT/SIGTERM, or with
//! `--once` until the historic sync of every relay is finished.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::ArgMatches;
use grasp_sync_io::store::lmdb::LmdbStore;
use grasp_sync_io::store::relay_sink::RelaySink;
use grasp_sync_io::{EventStore, Runner};

pub use crate::args::RunArgs;
use crate::error::{CliError, EXIT_INCOMPLETE};
use crate::progress::{self, WatchEnd, WatchOptions};
use crate::settings::{self, RunSettings};

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
    let opts = WatchOptions {
        bars: settings.progress.bars(),
        log_every: Duration::from_secs(10),
        until_synced: settings.once,
        max_connect_failures: settings.max_connect_failures,
        // As long as a relay may take to answer a connection attempt.
        catalog_deadline: settings.io.engine.timing.connect_timeout,
        timeout: None,
        report_file: Some(dir.join(settings::REPORT_FILE)),
    };
    let (end, report) = progress::watch(&runner, &opts).await;
    match &end {
        WatchEnd::Signal => tracing::info!("signal received; shutting down"),
        WatchEnd::RunnerStopped => tracing::error!("the runner stopped on its own"),
        WatchEnd::Finished | WatchEnd::TimedOut | WatchEnd::StoreUnreadable(_) => {}
    }
    runner.shutdown().await?;
    if end == WatchEnd::RunnerStopped {
        return Err(CliError::Setup("the runner stopped unexpectedly".into()));
    }
    if let WatchEnd::StoreUnreadable(reason) = &end {
        let what = match &settings.local_relay {
            Some(url) => format!("the service's relay {url}"),
            None => "the service's store".to_owned(),
        };
        println!(
            "Historic sync incomplete: {what} could not be read ({reason}), so it is not known which repositories to sync."
        );
        return Ok(ExitCode::from(EXIT_INCOMPLETE));
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
                .map(|r| format!("{}: {} ({})", r.url, r.outcome.as_str(), r.why()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(ExitCode::from(EXIT_INCOMPLETE))
    }
}
