//! Options shared by every subcommand that builds an engine: who we are and
//! the guard rails of the behaviour contract (spec section 2).

use clap::builder::BoolishValueParser;
use clap::Args;
use grasp_sync_core::{Config, ServiceId};

use crate::error::CliError;

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
