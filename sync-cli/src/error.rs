//! Errors of the `grasp-sync` command line tool and the exit codes they map to.
//!
//! Exit codes: `0` success, `1` an internal failure (the engine did not settle,
//! output could not be written), `2` bad arguments or unreadable input (clap
//! uses `2` for argument errors too).

use std::io;

/// Exit code for bad arguments and unreadable input files.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for internal failures.
pub const EXIT_FAILURE: u8 = 1;

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
            CliError::Read { .. } | CliError::EventArray { .. } | CliError::RelayInfo { .. } => {
                EXIT_USAGE
            }
            CliError::Unsettled(_) | CliError::Output(_) => EXIT_FAILURE,
        }
    }
}
