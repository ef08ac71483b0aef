//! Sync benchmark (issue 3, item 9): how fast does the runner pull a large
//! repository history from one loopback relay into the embedded store, and
//! how does that compare with nostr-sdk and with the bare cost of checking
//! signatures on this machine? It prints figures and asserts nothing about
//! timing.
//!
//! The data: N (50,000 by default) signed kind-1621 issues over 10 repos
//! (10 owner keys, 100 author keys), each with one `a` tag naming its repo,
//! 200 bytes of content and its own `created_at`, plus the 10 repository
//! announcements. The issues are generated once and cached as JSONL in
//! `target/bench-data/sync-issues-N.jsonl`; the announcements list the
//! bench relay's URL and the service, so they are written per run.
//!
//! Every party runs in its own process (this binary re-executes itself with
//! `__child MODE ...`), so that each client's CPU time (getrusage user+sys
//! delta around the operation) and peak RSS (`ru_maxrss`, which includes
//! the process's start-up baseline) are its own:
//!
//! - `relay`: rust-nostr `LocalRelay` (nostr-relay-builder 0.44.1) on
//!   127.0.0.1 with an uncapped in-memory database, loaded directly (not
//!   over the wire) with the issues and announcements, rate limits raised;
//!   a fresh one for every client run. Its CPU during the client run is read
//!   from `/proc/PID/stat`. With `BENCH_RELAY=nostr-rs-relay` the relay is
//!   instead one nostr-rs-relay 0.8.12 (SQLite with a tag index; the
//!   testkit's harness, already installed: `GRASP_SYNC_NOSTR_RS_RELAY` or
//!   `target/test-relays/`), loaded once over the wire and read by every
//!   client run in turn; its peak RSS then includes the load.
//! - `grasp`: our [`Runner`] into a fresh [`LmdbStore`] that holds only the
//!   announcements; done when the store holds every issue (an O(1) count
//!   polled every 20 ms, confirmed by a count of kind 1621).
//! - `sdk`: nostr-sdk 0.44.1 `Client` over a nostr-lmdb 0.44 database (the
//!   same kind of store), one `fetch_events({"kinds":[1621],"limit":N})`;
//!   the client saves every event it receives into its database before
//!   handing it on.
//! - `sdk-mem` (extra row): the same into nostr-sdk's uncapped
//!   `MemoryDatabase`, as in the baseline notes; it shows how much of the
//!   `sdk` figure is the store (nostr-sdk awaits one LMDB write
//!   transaction, with its fsync, per event).
//! - `sdk-sync` (only with `--sdk-sync`): nostr-sdk's NIP-77 `sync` with
//!   `notification_channel_size` raised to 262,144, timed until the database
//!   holds every issue (see the baseline notes for why).
//! - `verify`: bare `Event::verify()` (id + Schnorr signature, nostr 0.45)
//!   over the same events, already parsed, on 1 thread and on every core.
//!
//! Afterwards each client's store is compared, id by id, with the data.
//!
//! Run with `cargo bench -p grasp-sync-tests --bench sync` (3 runs of each
//! client, alternating) or `cargo bench -p grasp-sync-tests --bench sync --
//! --quick` (5,000 events, 1 run). Environment: `BENCH_EVENTS` (event
//! count), `BENCH_RUNS` (runs per client), `BENCH_TIMEOUT` (seconds a client
//! may take, 300), `BENCH_STALL` (seconds without progress before a client
//! gives up, 20), `BENCH_MODES` (comma-separated subset of `grasp,sdk,
//! sdk-mem,sdk-sync` to run), `BENCH_STORE_DIR` (where the clients'
//! stores go; `target/bench-data` by default), `BENCH_PAGE_LIMIT` (the
//! runner's page limit and its ceiling, to measure page sizes). `--verbose`
//! prints each run in detail (the
//! runner's status and I/O counters, a progress trace).

mod common;

use common::*;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

// ----- children -------------------------------------------------------------

fn child_main(args: &[String]) -> i32 {
    let arg = |i: usize| -> &str {
        args.get(i)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("child: missing argument {i} in {args:?}"))
    };
    let num = |i: usize| -> u64 { arg(i).parse().expect("numeric argument") };
    let result = match arg(0) {
        "relay" => {
            relay::run(
                arg(1).parse().expect("port"),
                Path::new(arg(2)),
                Path::new(arg(3)),
            );
            return 0;
        }
        "verify" => verify::run(Path::new(arg(1)), num(2) as usize),
        "grasp" => grasp::run(
            arg(1),
            Path::new(arg(2)),
            Path::new(arg(3)),
            num(4) as usize,
            Duration::from_secs(num(5)),
            Duration::from_secs(num(6)),
        ),
        "sdk" | "sdk-sync" | "sdk-mem" => sdk::run(
            arg(0),
            arg(1),
            Path::new(arg(2)),
            num(3) as usize,
            Duration::from_secs(num(4)),
            Duration::from_secs(num(5)),
        ),
        other => panic!("unknown child mode {other}"),
    };
    println!("RESULT {result}");
    0
}

mod verify {
    use super::*;
    use nostr::event::Event;

    fn rate(events: &[Event], threads: usize) -> f64 {
        let started = Instant::now();
        let per = events.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            for chunk in events.chunks(per) {
                s.spawn(move || {
                    for e in chunk {
                        e.verify().expect("valid event");
                    }
                });
            }
        });
        events.len() as f64 / started.elapsed().as_secs_f64()
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// `Event::verify()` rate (events/s), median of `passes`, on 1 thread
    /// and on every core.
    pub fn run(issues: &Path, passes: usize) -> Value {
        let events: Vec<Event> = read_lines(issues)
            .iter()
            .map(|l| Event::from_json(l).expect("event json"))
            .collect();
        let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
        let one: Vec<f64> = (0..passes).map(|_| rate(&events, 1)).collect();
        let all: Vec<f64> = (0..passes).map(|_| rate(&events, cores)).collect();
        json!({
            "events": events.len(),
            "cores": cores,
            "one_thread": median(one.clone()),
            "one_thread_runs": one,
            "all_cores": median(all.clone()),
            "all_cores_runs": all,
        })
    }
}

mod grasp {
    use super::*;
    use grasp_sync_core::{Config, ServiceId};
    use grasp_sync_io::runner::Runner;
    use grasp_sync_io::store::lmdb::LmdbStore;
    use grasp_sync_io::{EventStore, IoConfig};
    use nostr::event::{Event, Kind};
    use nostr::filter::Filter;

    /// Our runner into a fresh LMDB store that holds the announcements.
    pub fn run(
        _relay_url: &str,
        announcements: &Path,
        issues: &Path,
        n: usize,
        timeout: Duration,
        stall: Duration,
    ) -> Value {
        let dir = tempfile::Builder::new()
            .prefix("grasp-lmdb-")
            .tempdir_in(store_dir())
            .expect("tempdir");
        let rt = runtime();
        let out = rt.block_on(async {
            let store = LmdbStore::open(dir.path()).await.expect("open store");
            let anns: Vec<Event> = read_lines(announcements)
                .iter()
                .map(|l| Event::from_json(l).expect("announcement json"))
                .collect();
            for a in &anns {
                store.save_event(a).await.expect("save announcement");
            }
            let target = n + anns.len();
            let store = Arc::new(store);

            let mut engine = Config::new(ServiceId::parse(SERVICE).expect("service"));
            engine.allow_private = true;
            if let Some(limit) = std::env::var("BENCH_PAGE_LIMIT")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                engine.default_budget.page_limit = limit;
                engine.default_budget.max_page_limit =
                    engine.default_budget.max_page_limit.max(limit);
            }
            let io = IoConfig::new(engine);

            let before = Usage::now();
            let started = Instant::now();
            let handle = Runner::start(io, Arc::clone(&store) as Arc<dyn EventStore>)
                .await
                .expect("runner start");
            let mut first_event: Option<f64> = None;
            let mut progress: Vec<(f64, usize)> = Vec::new();
            let mut last_change = Instant::now();
            let mut last = 0usize;
            let complete = loop {
                tokio::time::sleep(POLL).await;
                // An empty filter is counted from the index length: O(1).
                let total = store.count(Filter::new()).await.expect("count");
                let t = started.elapsed().as_secs_f64();
                if total > anns.len() && first_event.is_none() {
                    first_event = Some(t);
                }
                if total != last {
                    last = total;
                    last_change = Instant::now();
                }
                if progress.last().is_none_or(|(pt, _)| t - pt >= 0.25) {
                    progress.push((t, total));
                }
                if total >= target
                    && store
                        .count(Filter::new().kind(Kind::from(ISSUE_KIND)))
                        .await
                        .expect("count")
                        >= n
                {
                    break true;
                }
                if started.elapsed() >= timeout || last_change.elapsed() >= stall {
                    break false;
                }
            };
            let wall = started.elapsed();
            let after = Usage::now();
            let status = handle.status().await;
            let io_counters = handle.io_counters().await;
            // Shutdown closes the store: read it first.
            let stored: HashSet<String> = store
                .query(Filter::new().kind(Kind::from(ISSUE_KIND)))
                .await
                .expect("query")
                .iter()
                .map(|e| e.id.to_hex())
                .collect();
            let shutdown = tokio::time::timeout(Duration::from_secs(20), handle.shutdown()).await;
            let status_json = status.as_ref().map(|s| {
                json!({
                    "repos": s.repos,
                    "roots": s.roots,
                    "totals": serde_json::to_value(&s.totals).unwrap_or(Value::Null),
                    "relays": s.relays.iter().map(|r| json!({
                        "url": r.url.to_string(),
                        "targets": r.targets,
                        "confirmed": r.confirmed,
                        "pending": r.pending,
                        "open_subscriptions": r.open_subscriptions,
                        "queued_batches": r.queued_batches,
                        "budget": serde_json::to_value(r.budget).unwrap_or(Value::Null),
                        "stats": serde_json::to_value(&r.stats).unwrap_or(Value::Null),
                    })).collect::<Vec<_>>(),
                })
            });
            json!({
                "usage": usage_json(wall, before, after),
                "complete": complete,
                "first_event_s": first_event,
                "progress": progress,
                "status": status_json,
                "io_counters": format!("{io_counters:?}"),
                "shutdown": match shutdown {
                    Ok(Ok(())) => "ok".to_owned(),
                    Ok(Err(e)) => format!("error: {e}"),
                    Err(_) => "timed out".to_owned(),
                },
                "stored_ids": stored.into_iter().collect::<Vec<_>>(),
            })
        });
        drop(rt);
        finish(out, issues)
    }

    /// Replaces the stored ids by how they compare with the data (read only
    /// now, after the peak RSS was taken).
    pub fn finish(mut out: Value, issues: &Path) -> Value {
        let found: HashSet<String> = out["stored_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        out["stored"] = completeness(&ids_of(issues), &found);
        if let Some(o) = out.as_object_mut() {
            o.remove("stored_ids");
        }
        out
    }
}

mod sdk {
    use super::*;
    use nostr_sdk::prelude::{
        Client, Filter, Kind, MemoryDatabase, MemoryDatabaseOptions, NostrDatabase, RelayOptions,
        SyncOptions,
    };

    /// nostr-sdk's client over a nostr-lmdb 0.44 database (`sdk`,
    /// `sdk-sync`) or an uncapped in-memory one (`sdk-mem`): one
    /// `fetch_events`, or for `sdk-sync` a NIP-77 sync.
    pub fn run(
        mode: &str,
        relay_url: &str,
        issues: &Path,
        n: usize,
        timeout: Duration,
        stall: Duration,
    ) -> Value {
        let dir = tempfile::Builder::new()
            .prefix("sdk-lmdb-")
            .tempdir_in(store_dir())
            .expect("tempdir");
        let rt = runtime();
        let out = rt.block_on(async {
            let sync = mode == "sdk-sync";
            let db: Arc<dyn NostrDatabase> = if mode == "sdk-mem" {
                Arc::new(MemoryDatabase::with_opts(MemoryDatabaseOptions {
                    events: true,
                    max_events: None,
                }))
            } else {
                Arc::new(nostr_lmdb_044::NostrLMDB::open(dir.path()).expect("open nostr-lmdb 0.44"))
            };
            let client = Client::builder().database(db).build();
            let filter = Filter::new().kind(Kind::from(ISSUE_KIND));

            let before = Usage::now();
            let started = Instant::now();
            if sync {
                let opts = RelayOptions::new().notification_channel_size(262_144);
                client
                    .pool()
                    .add_relay(relay_url, opts)
                    .await
                    .expect("add relay");
            } else {
                client.add_relay(relay_url).await.expect("add relay");
            }
            client.connect().await;
            client.wait_for_connection(Duration::from_secs(10)).await;
            let mut op_error = None;
            let mut returned = 0usize;
            if sync {
                match client.sync(filter.clone(), &SyncOptions::default()).await {
                    Ok(out) => returned = out.val.received.len(),
                    Err(e) => op_error = Some(e.to_string()),
                }
            } else {
                match client.fetch_events(filter.clone().limit(n), timeout).await {
                    Ok(events) => returned = events.len(),
                    Err(e) => op_error = Some(e.to_string()),
                }
            }
            let returned_at = started.elapsed().as_secs_f64();
            // Saves happen before events are handed on, but `sync` is known
            // to return early: wait until the database holds them all.
            let database = client.database();
            let mut last = 0usize;
            let mut last_change = Instant::now();
            let complete = loop {
                // Only issues are ever saved here: the empty filter counts
                // them cheaply; the kind filter confirms.
                let count = database.count(Filter::new()).await.expect("count");
                if count >= n && database.count(filter.clone()).await.expect("count") >= n {
                    break true;
                }
                if count != last {
                    last = count;
                    last_change = Instant::now();
                }
                if started.elapsed() >= timeout || last_change.elapsed() >= stall {
                    break false;
                }
                tokio::time::sleep(POLL).await;
            };
            let wall = started.elapsed();
            let after = Usage::now();
            let stored: Vec<String> = database
                .query(filter)
                .await
                .expect("query")
                .into_iter()
                .map(|e| e.id.to_hex())
                .collect();
            client.shutdown().await;
            json!({
                "usage": usage_json(wall, before, after),
                "complete": complete,
                "returned": returned,
                "returned_at_s": returned_at,
                "error": op_error,
                "stored_ids": stored,
            })
        });
        drop(rt);
        grasp::finish(out, issues)
    }
}

// ----- parent ---------------------------------------------------------------

/// One client run's figures.
#[derive(Clone, Debug)]
struct Run {
    wall: f64,
    cpu: f64,
    user: f64,
    sys: f64,
    rss_mib: f64,
    relay_cpu: f64,
    relay_rss_mib: f64,
    stored: u64,
    missing: u64,
    complete: bool,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

struct Options {
    n: usize,
    runs: usize,
    timeout: u64,
    stall: u64,
    sdk_sync: bool,
    verbose: bool,
}

fn options(args: &[String]) -> Options {
    let quick = args.iter().any(|a| a == "--quick");
    let n = env_num("BENCH_EVENTS").map_or(if quick { 5_000 } else { 50_000 }, |v| v as usize);
    Options {
        n: n.max(1),
        runs: env_num("BENCH_RUNS").map_or(if quick { 1 } else { 3 }, |v| v.max(1) as usize),
        timeout: env_num("BENCH_TIMEOUT").unwrap_or(300),
        stall: env_num("BENCH_STALL").unwrap_or(20),
        sdk_sync: args.iter().any(|a| a == "--sdk-sync"),
        verbose: args.iter().any(|a| a == "--verbose"),
    }
}

/// The relay every client syncs from.
enum BenchRelay {
    /// A fresh LocalRelay child per client run, on this port.
    Local { port: u16 },
    /// One nostr-rs-relay, loaded once, shared by every client run.
    NostrRs(Box<SharedRelay>),
}

/// A relay process shared by every client run, with the runtime its
/// harness talks through.
struct SharedRelay {
    relay: grasp_sync_testkit::relays::nostr_rs::NostrRsRelayHarness,
    rt: tokio::runtime::Runtime,
}

impl BenchRelay {
    /// From `BENCH_RELAY`: started (nostr-rs-relay) or only given a port.
    fn start() -> BenchRelay {
        match std::env::var("BENCH_RELAY").as_deref() {
            Err(_) | Ok("") | Ok("local") => BenchRelay::Local { port: free_port() },
            Ok("nostr-rs-relay") => {
                assert!(
                    grasp_sync_testkit::relays::nostr_rs::installed_binary().is_some(),
                    "BENCH_RELAY=nostr-rs-relay: no nostr-rs-relay installed; set {} or run the \
                     nostr-rs-relay tests once (they install it into target/test-relays/)",
                    grasp_sync_testkit::relays::nostr_rs::ENV_BINARY
                );
                let rt = runtime();
                let relay =
                    rt.block_on(grasp_sync_testkit::relays::nostr_rs::NostrRsRelayHarness::start());
                BenchRelay::NostrRs(Box::new(SharedRelay { relay, rt }))
            }
            Ok(other) => panic!("BENCH_RELAY={other}: expected local or nostr-rs-relay"),
        }
    }

    fn url(&self) -> String {
        match self {
            BenchRelay::Local { port } => format!("ws://127.0.0.1:{port}"),
            BenchRelay::NostrRs(shared) => shared.relay.url(),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            BenchRelay::Local { .. } => "nostr-relay-builder 0.44.1 LocalRelay, fresh per run",
            BenchRelay::NostrRs(_) => "nostr-rs-relay 0.8.12, loaded once, shared by all runs",
        }
    }

    /// Loads a shared relay with the announcements and the issues, over
    /// the wire (a LocalRelay child loads its own at every start).
    fn load(&self, issues: &Path, anns: &Path) {
        let BenchRelay::NostrRs(shared) = self else {
            return;
        };
        let events: Vec<nostr::event::Event> = read_lines(anns)
            .iter()
            .chain(read_lines(issues).iter())
            .map(|l| nostr::event::Event::from_json(l).expect("event json"))
            .collect();
        let started = Instant::now();
        let report = shared.rt.block_on(shared.relay.publish(&events));
        assert_eq!(
            report.accepted,
            events.len(),
            "nostr-rs-relay took every event ({report:?})"
        );
        println!(
            "loaded {} events into nostr-rs-relay in {:.1} s",
            events.len(),
            started.elapsed().as_secs_f64()
        );
    }
}

fn client_run(
    opts: &Options,
    mode: &str,
    issues: &Path,
    anns: &Path,
    bench_relay: &BenchRelay,
) -> (Run, Value) {
    // A LocalRelay child lives for this run only; nostr-rs-relay for all.
    let (local, url, pid) = match bench_relay {
        BenchRelay::Local { port } => {
            let local = RelayProc::start(*port, issues, anns);
            let (url, pid) = (local.url.clone(), local.pid());
            (Some(local), url, pid)
        }
        BenchRelay::NostrRs(shared) => (
            None,
            shared.relay.url(),
            shared.relay.pid().expect("nostr-rs-relay runs"),
        ),
    };
    let relay_cpu0 = proc_cpu(pid).unwrap_or(f64::NAN);
    let n = opts.n.to_string();
    let (timeout, stall) = (opts.timeout.to_string(), opts.stall.to_string());
    let args: Vec<String> = match mode {
        "grasp" => vec![
            "grasp".into(),
            url.clone(),
            anns.display().to_string(),
            issues.display().to_string(),
            n,
            timeout,
            stall,
        ],
        _ => vec![
            mode.into(),
            url.clone(),
            issues.display().to_string(),
            n,
            timeout,
            stall,
        ],
    };
    let v = run_child(&args);
    let relay_cpu = proc_cpu(pid).unwrap_or(f64::NAN) - relay_cpu0;
    let relay_rss = proc_hwm_kib(pid).unwrap_or(0) as f64 / 1024.0;
    drop(local);
    let u = &v["usage"];
    let f = |x: &Value| x.as_f64().unwrap_or(f64::NAN);
    let run = Run {
        wall: f(&u["wall"]),
        user: f(&u["user"]),
        sys: f(&u["sys"]),
        cpu: f(&u["user"]) + f(&u["sys"]),
        rss_mib: f(&u["max_rss_kib"]) / 1024.0,
        relay_cpu,
        relay_rss_mib: relay_rss,
        stored: v["stored"]["found"].as_u64().unwrap_or(0),
        missing: v["stored"]["missing"].as_u64().unwrap_or(u64::MAX),
        complete: v["complete"].as_bool().unwrap_or(false),
    };
    (run, v)
}

/// "yes" or "no", or "–" when a client was not run.
fn met(figure: f64, ok: bool) -> &'static str {
    match (figure.is_finite(), ok) {
        (false, _) => "–",
        (true, true) => "yes",
        (true, false) => "no",
    }
}

fn parent_main(args: &[String]) {
    let opts = options(args);
    let n = opts.n;
    let issues = data::issues(n);
    let bench_relay = BenchRelay::start();
    let scratch = tempfile::Builder::new()
        .prefix("sync-bench-")
        .tempdir_in(data_dir())
        .expect("tempdir");
    let anns = scratch.path().join("announcements.jsonl");
    data::announcements(&bench_relay.url(), &anns);

    println!(
        "sync bench: {n} kind-{ISSUE_KIND} issues over {REPOS} repos from one loopback relay \
         ({}), {} run(s) per client",
        bench_relay.describe(),
        opts.runs
    );
    bench_relay.load(&issues, &anns);
    let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
    println!("machine: {cores} core(s) available");

    let passes = if opts.runs > 1 { 3 } else { 1 };
    let verify = run_child(&[
        "verify".into(),
        issues.display().to_string(),
        passes.to_string(),
    ]);
    let verify_one = verify["one_thread"].as_f64().unwrap_or(f64::NAN);
    let verify_all = verify["all_cores"].as_f64().unwrap_or(f64::NAN);

    let mut modes = vec!["grasp", "sdk", "sdk-mem"];
    if opts.sdk_sync {
        modes.push("sdk-sync");
    }
    if let Ok(only) = std::env::var("BENCH_MODES") {
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        modes.retain(|m| only.contains(m));
        if only.contains(&"sdk-sync") && !modes.contains(&"sdk-sync") {
            modes.push("sdk-sync");
        }
    }
    let mut runs: Vec<(&str, Run)> = Vec::new();
    for i in 0..opts.runs {
        // Alternate the order so neither client always runs first.
        let mut order = modes.clone();
        if i % 2 == 1 {
            order.reverse();
        }
        for mode in order {
            let (run, detail) = client_run(&opts, mode, &issues, &anns, &bench_relay);
            eprintln!(
                "run {}/{} {mode}: {:.2} s, {:.0} ev/s, cpu {:.2} s, rss {:.0} MiB, relay cpu {:.2} s, stored {}/{n}{}",
                i + 1,
                opts.runs,
                run.wall,
                n as f64 / run.wall,
                run.cpu,
                run.rss_mib,
                run.relay_cpu,
                run.stored,
                if run.complete && run.missing == 0 { "" } else { " INCOMPLETE" },
            );
            if opts.verbose || !(run.complete && run.missing == 0) {
                eprintln!("  detail: {detail}");
            }
            runs.push((mode, run));
        }
    }

    // ----- table -----
    println!();
    println!(
        "| client | wall s (min–max) | events/s | client CPU s (user+sys) | CPU µs/event | relay CPU s | client peak RSS MiB | relay peak RSS MiB | complete |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut rates = std::collections::BTreeMap::new();
    for mode in &modes {
        let rs: Vec<&Run> = runs
            .iter()
            .filter(|(m, _)| m == mode)
            .map(|(_, r)| r)
            .collect();
        let walls: Vec<f64> = rs.iter().map(|r| r.wall).collect();
        let (lo, hi) = min_max(&walls);
        let wall = median(&walls);
        let cpu = median(&rs.iter().map(|r| r.cpu).collect::<Vec<_>>());
        let user = median(&rs.iter().map(|r| r.user).collect::<Vec<_>>());
        let sys = median(&rs.iter().map(|r| r.sys).collect::<Vec<_>>());
        let rss = median(&rs.iter().map(|r| r.rss_mib).collect::<Vec<_>>());
        let relay_cpu = median(&rs.iter().map(|r| r.relay_cpu).collect::<Vec<_>>());
        let relay_rss = median(&rs.iter().map(|r| r.relay_rss_mib).collect::<Vec<_>>());
        let ok = rs.iter().filter(|r| r.complete && r.missing == 0).count();
        let rate = n as f64 / wall;
        rates.insert(*mode, rate);
        let name = match *mode {
            "grasp" => "grasp-sync Runner → LmdbStore",
            "sdk" => "nostr-sdk 0.44.1 fetch_events → nostr-lmdb 0.44",
            "sdk-mem" => "(extra) nostr-sdk 0.44.1 fetch_events → MemoryDatabase",
            _ => "(extra) nostr-sdk 0.44.1 sync (NIP-77) → nostr-lmdb 0.44",
        };
        println!(
            "| {name} | {wall:.2} ({lo:.2}–{hi:.2}) | {rate:.0} | {cpu:.2} ({user:.2}+{sys:.2}) | {:.1} | {relay_cpu:.2} | {rss:.0} | {relay_rss:.0} | {ok} of {} |",
            cpu * 1e6 / n as f64,
            rs.len()
        );
    }
    println!();
    println!("| bare `Event::verify()` (nostr 0.45, parsed events) | events/s |");
    println!("|---|---|");
    println!("| 1 thread | {verify_one:.0} |");
    println!(
        "| {} threads (all cores) | {verify_all:.0} |",
        verify["cores"]
    );
    println!();
    let grasp = rates.get("grasp").copied().unwrap_or(f64::NAN);
    let sdk = rates.get("sdk").copied().unwrap_or(f64::NAN);
    println!("| goal | figure | met? |");
    println!("|---|---|---|");
    println!(
        "| grasp ≥ 1.5 × nostr-sdk fetch_events | {:.2} × | {} |",
        grasp / sdk,
        met(grasp / sdk, grasp / sdk >= 1.5)
    );
    println!(
        "| grasp within 2 × of the all-core verify bound | {:.2} of the bound ({:.1} × slower) | {} |",
        grasp / verify_all,
        verify_all / grasp,
        met(grasp / verify_all, grasp * 2.0 >= verify_all)
    );
    if let Some(s) = rates.get("sdk-mem") {
        println!(
            "| (extra) grasp vs nostr-sdk fetch_events into memory | {:.2} × | – |",
            grasp / s
        );
    }
    if let Some(s) = rates.get("sdk-sync") {
        println!(
            "| (extra) grasp vs nostr-sdk sync | {:.2} × | – |",
            grasp / s
        );
    }
    println!();
    println!(
        "events/s = {n} / median wall; wall runs from starting the client (runner start or add_relay) to the store holding every issue; CPU and peak RSS are the client process's own (getrusage), relay CPU is /proc/PID/stat over the client run."
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD) {
        std::process::exit(child_main(&args[2..]));
    }
    parent_main(&args[1..]);
}
