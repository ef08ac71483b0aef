//! Errors of the `grasp-sync` command line tool and the exit codes they map to.
//!
//! Exit codes: `0` success, `1` an internal failure (the engine did not settle,
//! the store or the runner failed, output could not be written), `2` bad
//! arguments, configuration or unreadable input (clap uses `2` for argument
//! errors too), `3` a sync that did not complete (`run --once` with a relay
//! that could not be synced, `demo` with missing events).

use std::io;
use std::path::PathBuf;

use grasp_sync_io::persist::PersistError;
use grasp_sync_io::{RunnerError, StoreError};

/// Exit code for bad arguments and unreadable input files.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for internal failures.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a sync that finished without everything synced.
pub const EXIT_INCOMPLETE: u8 = 3;

/// Everything that stops a subcommand.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An input file (or stdin) could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// What the file was for ("events file", "relay information file").
        what: &'static str,
        /// The path as given (`-` for stdin).
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// An events file starting with `[` is not a JSON array.
    #[error("events file {path} starts with '[' but is not a JSON array: {source}")]
    EventArray {
        /// The path as given.
        path: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The relay information file is not what `--relay-info` expects.
    #[error("relay information file {path}: {reason}")]
    RelayInfo {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No service domain was given anywhere.
    #[error("no service domain: give --domain DOMAIN (or GRASP_SYNC_DOMAIN, or `domain` in the config file)")]
    MissingDomain,
    /// The configuration file is not valid.
    #[error("config file {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The AUTH key file is unreadable or holds no secret key.
    #[error("auth key file {path}: {reason}")]
    AuthKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The `--log` filter does not parse.
    #[error("log filter {filter:?}: {reason}")]
    LogFilter {
        /// The filter as given.
        filter: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `demo --data-dir` names a directory that already holds something.
    #[cfg(feature = "demo")]
    #[error("--data-dir {}: not empty; the demo needs a new or empty directory", .0.display())]
    DemoDirNotEmpty(PathBuf),
    /// There is no saved state to show.
    #[error("no saved state in {dir}: {file} does not exist (has `grasp-sync run --data-dir {dir}` run yet?)")]
    NoState {
        /// The data directory.
        dir: String,
        /// The state file looked for.
        file: String,
    },
    /// The saved state could not be read.
    #[error("{0}")]
    State(#[from] PersistError),
    /// A saved file is not what this version writes.
    #[error("{path}: {reason}")]
    BadStateFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The event store could not be opened or used.
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    /// The runner failed to start or stop.
    #[error("{0}")]
    Runner(#[from] RunnerError),
    /// The async runtime could not start, or the demo's setup failed.
    #[error("{0}")]
    Setup(String),
    /// The engine kept emitting commands (a bug in the engine or the driver).
    #[error("the engine did not settle after {0} commands; giving up (this is a bug)")]
    Unsettled(usize),
    /// Standard output could not be written.
    #[error("cannot write output: {0}")]
    Output(#[source] io::Error),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Read { .. }
            | CliError::EventArray { .. }
            | CliError::RelayInfo { .. }
            | CliError::MissingDomain
            | CliError::ConfigFile { .. }
            | CliError::LogFilter { .. }
            | CliError::AuthKey { .. }
            | CliError::NoState { .. }
            | CliError::State(_)
            | CliError::BadStateFile { .. } => EXIT_USAGE,
            #[cfg(feature = "demo")]
            CliError::DemoDirNotEmpty(_) => EXIT_USAGE,
            CliError::DataDir { .. }
            | CliError::Store(_)
            | CliError::Runner(_)
            | CliError::Setup(_)
            | CliError::Unsettled(_)
            | CliError::Output(_) => EXIT_FAILURE,
        }
    }
}
