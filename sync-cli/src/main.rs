//! `grasp-sync`: GRASP-02 proactive relay-to-relay sync for NIP-34 git relays.
//!
//! The binary wraps the deterministic engine of `grasp-sync-core` and the
//! websocket shell of `grasp-sync-io`. Each subcommand lives in its own
//! module:
//!
//! - `plan` ([`plan`]): a dry run that reads NIP-34 events and prints the
//!   subscriptions the engine would open on every remote relay;
//! - `run` ([`run`]): the daemon beside the service's relay (settings from
//!   flags, environment and a TOML file: [`settings`]; progress and the
//!   `--once` rule: [`progress`]);
//! - `status` ([`status`]): the saved per-relay state of a data directory;
//! - `demo` (module `demo`, built with the default `demo` feature): the
//!   whole sync against in-process relays.
//!
//! Exit codes: `0` success, `1` internal failure, `2` bad arguments,
//! configuration or input, `3` a sync that did not complete (see [`error`]).
#![forbid(unsafe_code)]

mod args;
#[cfg(feature = "demo")]
mod demo;
mod error;
mod input;
mod plan;
mod progress;
mod run;
mod settings;
mod status;
mod table;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::error::CliError;

/// GRASP-02 proactive relay-to-relay sync for NIP-34 git relays.
///
/// A GRASP relay (the service) keeps itself up to date with every event about
/// the NIP-34 repositories it hosts by subscribing to the remote relays those
/// repositories list.
// Only builds with the demo can point at it.
#[cfg_attr(feature = "demo", doc = "Start with `grasp-sync demo`.")]
#[derive(Debug, Parser)]
#[command(name = "grasp-sync", version, propagate_version = true)]
struct Cli {
    /// Log filter in `RUST_LOG` syntax (`info`, `debug`,
    /// `grasp_sync_io=debug,info`, ...); defaults to RUST_LOG, then `info`
    /// for `run` and `demo`, `warn` for `plan` and `status`.
    #[arg(long, global = true, value_name = "FILTER", env = "GRASP_SYNC_LOG")]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dry run: read NIP-34 events and print the subscriptions the engine
    /// would open on every remote relay.
    ///
    /// Events are fed as the service's store would hold them (announcements,
    /// then root events, then deletions; only those the service would accept),
    /// and every relay is played as answering at once with an empty history.
    /// Nothing is connected to: no network is used.
    Plan(plan::PlanArgs),
    /// Run the sync beside the service's relay (until SIGINT/SIGTERM, or
    /// with --once until the historic sync is done).
    ///
    /// The hosted repositories are learned from the service's store (the
    /// announcements in it) and from the bootstrap relays; their events are
    /// fetched from every relay they list, checked (id, signature, GRASP
    /// acceptance) and stored. State is saved in the data directory so a
    /// restart resumes where it stopped.
    Run(run::RunArgs),
    /// Show the saved per-relay state of a data directory.
    Status(status::StatusArgs),
    /// See it work: start relays in this process on 127.0.0.1, seed them
    /// with generated NIP-34 data, sync, and check the result.
    ///
    /// Exits 0 only if every expected event was synced and nothing
    /// unrelated was stored. Needs no network and no setup.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match dispatch(&cli, &matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("grasp-sync: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn dispatch(cli: &Cli, matches: &clap::ArgMatches) -> Result<ExitCode, CliError> {
    match &cli.command {
        Command::Plan(args) => {
            init_logging(cli.log.as_deref(), "warn")?;
            plan::run(args)
        }
        Command::Status(args) => {
            init_logging(cli.log.as_deref(), "warn")?;
            status::run(args)
        }
        Command::Run(args) => {
            let sub = matches
                .subcommand_matches("run")
                .ok_or_else(|| CliError::Setup("no run arguments".into()))?;
            let settings = run::settings(args, sub)?;
            // The environment (RUST_LOG too) beats the file.
            let from_file = match std::env::var_os("RUST_LOG") {
                Some(_) => None,
                None => settings.log.as_deref(),
            };
            init_logging(cli.log.as_deref().or(from_file), "info,nostr_lmdb=warn")?;
            run::run(args, settings)
        }
        #[cfg(feature = "demo")]
        Command::Demo(args) => {
            init_logging(cli.log.as_deref(), "warn,grasp_sync=info")?;
            demo::run(args)
        }
    }
}

/// Logs to stderr (above the progress bars) with `filter`, else RUST_LOG,
/// else `default`.
fn init_logging(filter: Option<&str>, default: &str) -> Result<(), CliError> {
    let filter = match filter {
        Some(f) => EnvFilter::try_new(f).map_err(|e| CliError::LogFilter {
            filter: f.to_owned(),
            reason: e.to_string(),
        })?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter::new)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}
