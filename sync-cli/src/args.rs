//! Command-line options: those shared by every subcommand that builds an
//! engine (who we are and the guard rails of the behaviour contract, spec
//! section 2), and those of `run`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::Args;
use grasp_sync_core::{Config, RelayUrl, ServiceId};

use crate::error::CliError;
use crate::progress::ProgressMode;

/// How the engine is configured.
#[derive(Clone, Debug, Args)]
pub struct EngineArgs {
    /// The service we sync into, as a domain with an optional port
    /// (`git.example.com`, `127.0.0.1:7777`); its relay URLs
    /// `wss://DOMAIN` and `ws://DOMAIN` are never sync targets. Required
    /// (for `run` it may come from the config file instead).
    #[arg(long, value_name = "DOMAIN", env = "GRASP_SYNC_DOMAIN")]
    pub domain: Option<ServiceId>,

    /// Track every repository announcement, not only those that list the
    /// service in their `relays` tag (archive mode).
    #[arg(long, env = "GRASP_SYNC_ARCHIVE", value_parser = BoolishValueParser::new())]
    pub archive: bool,

    /// Keep relays whose host is a loopback, private or link-local address
    /// (needed for tests on 127.0.0.1); they are refused by default.
    #[arg(long, env = "GRASP_SYNC_ALLOW_PRIVATE_RELAYS", value_parser = BoolishValueParser::new())]
    pub allow_private_relays: bool,
}

impl EngineArgs {
    /// The engine configuration: the contract's defaults plus these options.
    pub fn config(&self) -> Result<Config, CliError> {
        let domain = self.domain.clone().ok_or(CliError::MissingDomain)?;
        let mut config = Config::new(domain);
        config.archive = self.archive;
        config.allow_private = self.allow_private_relays;
        Ok(config)
    }
}

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
