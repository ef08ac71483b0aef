//! `grasp-sync`: GRASP-02 proactive relay-to-relay sync for NIP-34 git relays.
//!
//! The binary wraps the deterministic engine of `grasp-sync-core`. Each
//! subcommand lives in its own module; today there is one:
//!
//! - `plan` ([`plan`]): a dry run that reads NIP-34 events and prints the
//!   subscriptions the engine would open on every remote relay.
//!
//! `run`, `status` and `demo` are meant to join it as further variants of
//! [`Command`]. Exit codes: `0` success, `1` internal failure, `2` bad
//! arguments or unreadable input (see [`error`]).
#![forbid(unsafe_code)]

mod args;
mod error;
mod input;
mod plan;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// GRASP-02 proactive relay-to-relay sync for NIP-34 git relays.
///
/// A GRASP relay (the service) keeps itself up to date with every event about
/// the NIP-34 repositories it hosts by subscribing to the remote relays those
/// repositories list.
#[derive(Debug, Parser)]
#[command(name = "grasp-sync", version, propagate_version = true)]
struct Cli {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Plan(args) => plan::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("grasp-sync: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
