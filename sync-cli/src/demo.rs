//! `grasp-sync demo`: the whole sync on one machine, in seconds, with no
//! setup.
//!
//! Starts four relays in this process on 127.0.0.1 (the same harnesses the
//! integration tests use, from `grasp-sync-testkit`, seeded with datasets of
//! `grasp-sync-sim`): two rust-nostr
//! LocalRelays, a third one that silently caps every page far below the
//! data it holds, and a scripted relay that answers its first REQs with
//! `CLOSED rate-limited:`. It seeds them with generated, really signed
//! NIP-34 data (repositories with issues, patches, pull requests, statuses,
//! comments and state; plus a foreign repository whose events must never be
//! stored), spread so that only a sync that reads every relay gets
//! everything. Then it runs the real runner into the embedded database in a
//! temporary directory, shows progress, and checks the database against
//! what each relay holds.
//!
//! Built only with the `demo` cargo feature (on by default); a packager's
//! build (`--no-default-features`) links none of this test support.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use grasp_sync_core::{Config, ServiceId};
use grasp_sync_io::store::lmdb::LmdbStore;
use grasp_sync_io::{IoConfig, Runner};
use grasp_sync_sim::signed::{Bulk, Dataset};
use grasp_sync_testkit::relays::hostile::HostileRelay;
use grasp_sync_testkit::relays::local::{LocalOptions, LocalRelayHarness};
use nostr::event::{Event, EventId};
use nostr::filter::Filter;

use crate::error::{CliError, EXIT_INCOMPLETE};
use crate::progress::{self, ProgressMode, WatchEnd, WatchOptions};
use crate::settings;
use crate::table;

/// The service the demo syncs into.
const SERVICE: &str = "git.demo.example";
/// Events per page the capped relay returns, whatever `limit` asks for.
const PAGE_CAP: usize = 25;
/// REQs the rate-limited relay refuses before it answers.
const RATE_LIMITED_REQS: usize = 2;

/// The demo's engine timings: short, so that backoffs and cool-downs take
/// seconds and the whole demo finishes in a few. The demo's own values
/// (they started as the integration tests' `test_config`), so the tests can
/// change theirs without moving the numbers the README shows.
#[derive(Clone, Copy, Debug)]
struct DemoTimings {
    backoff_initial: Duration,
    backoff_max: Duration,
    batch_delay: Duration,
    rate_limit_cooldown: Duration,
    rate_limit_cooldown_max: Duration,
    historic_timeout: Duration,
    connect_timeout: Duration,
}

impl DemoTimings {
    const FAST: DemoTimings = DemoTimings {
        backoff_initial: Duration::from_millis(300),
        backoff_max: Duration::from_secs(2),
        batch_delay: Duration::from_millis(50),
        rate_limit_cooldown: Duration::from_secs(2),
        rate_limit_cooldown_max: Duration::from_secs(4),
        historic_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(3),
    };

    /// The runner's configuration for `service`: these timings, and private
    /// addresses allowed (the demo's relays are on 127.0.0.1).
    fn config(&self, service: &str) -> Result<IoConfig, CliError> {
        let service = ServiceId::parse(service)
            .map_err(|e| CliError::Setup(format!("the demo service {service:?}: {e}")))?;
        let mut engine = Config::new(service);
        engine.allow_private = true;
        let t = &mut engine.timing;
        t.backoff_initial = self.backoff_initial;
        t.backoff_max = self.backoff_max;
        t.batch_delay = self.batch_delay;
        t.rate_limit_cooldown = self.rate_limit_cooldown;
        t.rate_limit_cooldown_max = self.rate_limit_cooldown_max;
        t.historic_timeout = self.historic_timeout;
        let mut io = IoConfig::new(engine);
        io.net.connect_timeout = self.connect_timeout;
        Ok(io)
    }
}

/// Arguments of `grasp-sync demo`.
#[derive(Clone, Debug, Args)]
pub struct DemoArgs {
    /// Repositories to generate (each with issues, patches, a pull request,
    /// statuses, comments and state).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=50))]
    pub repos: u16,

    /// Extra issues and comments on the first repository, all on the relay
    /// that caps its pages (so it must be paged through).
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub bulk: usize,

    /// Keep the database and state here instead of in a temporary directory
    /// (inspect it afterwards with `grasp-sync status --data-dir DIR`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Give up after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,

    /// How progress is shown: `auto` draws bars on a terminal and writes log
    /// lines otherwise.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

/// One demo relay.
enum DemoRelay {
    Local(Box<LocalRelayHarness>),
    Hostile(HostileRelay),
}

impl DemoRelay {
    fn url(&self) -> String {
        match self {
            DemoRelay::Local(r) => r.url(),
            DemoRelay::Hostile(r) => r.url(),
        }
    }

    async fn load(&self, events: &[Event]) {
        match self {
            DemoRelay::Local(r) => {
                r.insert(events).await;
            }
            DemoRelay::Hostile(r) => r.push(events),
        }
    }
}

/// Runs `grasp-sync demo`.
pub fn run(args: &DemoArgs) -> Result<ExitCode, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Setup(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(demo(args))
}

async fn demo(args: &DemoArgs) -> Result<ExitCode, CliError> {
    if let Some(dir) = &args.data_dir {
        // Old data would name the relays of an earlier demo, long gone.
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(CliError::DemoDirNotEmpty(dir.clone()));
        }
    }
    let started = Instant::now();
    let relays = [
        (
            DemoRelay::Local(Box::new(LocalRelayHarness::start().await)),
            "LocalRelay (rust-nostr)".to_owned(),
        ),
        (
            DemoRelay::Local(Box::new(
                LocalRelayHarness::start_with(LocalOptions {
                    max_filter_limit: Some(PAGE_CAP),
                    ..LocalOptions::default()
                })
                .await,
            )),
            format!("LocalRelay, pages capped at {PAGE_CAP}"),
        ),
        (
            DemoRelay::Hostile(
                HostileRelay::builder()
                    .rate_limited_first(RATE_LIMITED_REQS)
                    .start()
                    .await,
            ),
            format!("scripted relay, first {RATE_LIMITED_REQS} REQs rate-limited"),
        ),
        (
            DemoRelay::Local(Box::new(LocalRelayHarness::start().await)),
            "LocalRelay (rust-nostr)".to_owned(),
        ),
    ];
    let urls: Vec<String> = relays.iter().map(|(r, _)| r.url()).collect();

    let mut ds = Dataset::builder(SERVICE, &urls)
        .repos(usize::from(args.repos))
        .foreign_repos(1)
        .issues(3)
        .patches(2)
        .prs(1)
        .comments(2)
        .build();
    let bulk = ds.add_bulk(Bulk::new(0, args.bulk).same_second(args.bulk.min(PAGE_CAP) / 2));
    let bulk_ids: BTreeSet<EventId> = bulk.iter().map(|e| e.id).collect();
    let mut parts = {
        let rest: Vec<Event> = ds
            .events()
            .iter()
            .filter(|e| !bulk_ids.contains(&e.id))
            .cloned()
            .collect();
        // Every announcement on every relay, everything else on exactly one.
        let mut parts = vec![Vec::new(); relays.len()];
        let mut next = 0;
        for e in rest {
            if e.kind.as_u16() == 30617 {
                for p in &mut parts {
                    p.push(e.clone());
                }
            } else {
                parts[next % relays.len()].push(e);
                next += 1;
            }
        }
        parts
    };
    parts[1].extend(bulk);
    for ((relay, _), part) in relays.iter().zip(&parts) {
        relay.load(part).await;
    }

    let (temp, dir) = match &args.data_dir {
        Some(dir) => (None, dir.clone()),
        None => {
            let temp = tempfile::Builder::new()
                .prefix("grasp-sync-demo-")
                .tempdir()
                .map_err(|e| {
                    CliError::Setup(format!("cannot create a temporary directory: {e}"))
                })?;
            let dir = temp.path().to_owned();
            (Some(temp), dir)
        }
    };
    std::fs::create_dir_all(&dir).map_err(|source| CliError::DataDir {
        path: dir.clone(),
        source,
    })?;
    let store = Arc::new(LmdbStore::open(&dir.join(settings::DB_DIR)).await?);
    // The service hosts these repositories: its store holds their
    // announcements, which is how the engine learns what to sync.
    let hosted: Vec<Event> = ds.repos().iter().map(|r| r.announcement.clone()).collect();
    for a in &hosted {
        store.save_event(a).await?;
    }
    let seeded: BTreeSet<EventId> = hosted.iter().map(|e| e.id).collect();

    let mut config = DemoTimings::FAST.config(SERVICE)?;
    config.state_file = Some(dir.join(settings::STATE_FILE));
    let t = &config.engine.timing;
    println!(
        "grasp-sync demo: {} relays on 127.0.0.1, {} repositories ({} hosted by {SERVICE}, 1 foreign), {} signed events.",
        relays.len(),
        ds.repos().len() + ds.foreign_repos().len(),
        ds.repos().len(),
        ds.events().len()
    );
    println!(
        "Fast engine timings so it finishes in seconds: reconnect backoff {} ms, rate-limit cool-down {} s, batch delay {} ms (the defaults are 5 s, 65 s and 1 s).",
        t.backoff_initial.as_millis(),
        t.rate_limit_cooldown.as_secs(),
        t.batch_delay.as_millis()
    );
    for ((relay, what), part) in relays.iter().zip(&parts) {
        println!(
            "  {:<24} {:<40} {:>5} events",
            relay.url(),
            what,
            part.len()
        );
    }
    println!(
        "Syncing into {}{} ...",
        dir.display(),
        if temp.is_some() {
            " (removed at exit)"
        } else {
            ""
        }
    );

    let runner = Runner::start(config.clone(), store.clone()).await?;
    let opts = WatchOptions {
        bars: args.progress.bars(),
        log_every: Duration::from_secs(1),
        until_synced: true,
        max_connect_failures: settings::DEFAULT_MAX_CONNECT_FAILURES,
        catalog_deadline: Duration::from_secs(args.timeout),
        timeout: Some(Duration::from_secs(args.timeout)),
        report_file: Some(dir.join(settings::REPORT_FILE)),
    };
    let (end, report) = progress::watch(&runner, &opts).await;
    let stored: BTreeSet<EventId> = store
        .query(Filter::new())
        .await?
        .into_iter()
        .map(|e| e.id)
        .collect();
    runner.shutdown().await?;
    let elapsed = started.elapsed();

    println!();
    if let Some(report) = &report {
        print!("{}", report.table());
        println!();
    }
    let expected = ds.expected();
    let mut rows = Vec::new();
    let mut all_missing = 0;
    for ((relay, what), part) in relays.iter().zip(&parts) {
        let want: BTreeSet<EventId> = part
            .iter()
            .map(|e| e.id)
            .filter(|id| expected.contains(id) && !seeded.contains(id))
            .collect();
        let synced = want.intersection(&stored).count();
        let missing = want.len() - synced;
        all_missing += missing;
        rows.push(vec![
            relay.url(),
            what.clone(),
            want.len().to_string(),
            synced.to_string(),
            missing.to_string(),
        ]);
    }
    let want: BTreeSet<EventId> = expected.difference(&seeded).copied().collect();
    let synced = want.intersection(&stored).count();
    rows.push(vec![
        "all relays".to_owned(),
        "(distinct events)".to_owned(),
        want.len().to_string(),
        synced.to_string(),
        (want.len() - synced).to_string(),
    ]);
    print!(
        "{}",
        table::render(&["RELAY", "", "EXPECTED", "SYNCED", "MISSING"], &rows)
    );
    if synced < want.len() {
        // Which kinds are missing tells where a sync went wrong (a layer,
        // a filter variant).
        let mut by_kind: BTreeMap<u16, usize> = BTreeMap::new();
        for e in ds.events() {
            if want.contains(&e.id) && !stored.contains(&e.id) {
                *by_kind.entry(e.kind.as_u16()).or_default() += 1;
            }
        }
        let kinds: Vec<String> = by_kind
            .iter()
            .map(|(kind, n)| format!("kind {kind}: {n}"))
            .collect();
        println!("Missing by kind: {}.", kinds.join(", "));
    }
    let unrelated = ds.unrelated();
    let wrongly_stored = unrelated.intersection(&stored).count();
    println!(
        "Unrelated events (foreign repository, impostors) offered: {}, stored: {wrongly_stored}.",
        unrelated.len()
    );
    println!(
        "The service's own {} announcements were in its store from the start and are not counted.",
        seeded.len()
    );
    let ok = all_missing == 0 && synced == want.len() && wrongly_stored == 0;
    if end == WatchEnd::TimedOut {
        println!("Timed out after {} s.", args.timeout);
    }
    if ok {
        println!(
            "Everything synced in {:.1} s: {} events from {} relays, nothing unrelated stored.",
            elapsed.as_secs_f64(),
            synced,
            relays.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("The sync is incomplete.");
        Ok(ExitCode::from(EXIT_INCOMPLETE))
    }
}
