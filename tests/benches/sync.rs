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
//!   from `/proc/PID/stat`.
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
//! stores go; `target/bench-data` by default). `--verbose` prints each run in detail (the
//! runner's status and I/O counters, a progress trace).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// First argument of a child process.
const CHILD: &str = "__child";
const SERVICE: &str = "git.example.com";
const ISSUE_KIND: u16 = 1621;
const ANNOUNCEMENT_KIND: u16 = 30617;
const REPOS: usize = 10;
const AUTHORS: usize = 100;
const CONTENT_LEN: usize = 200;
/// `created_at` of issue 0; issue i has `T_BASE - i`.
const T_BASE: u64 = 1_750_000_000;
const REPO_ID: &str = "repo";
/// How often a client checks whether its store is complete.
const POLL: Duration = Duration::from_millis(20);

// ----- small helpers --------------------------------------------------------

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `target/` of this build: `CARGO_TARGET_DIR`, or three levels above the
/// executable (`target/release/deps/sync-HASH`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

fn data_dir() -> PathBuf {
    let dir = target_dir().join("bench-data");
    std::fs::create_dir_all(&dir).expect("create target/bench-data");
    dir
}

/// Where the clients' stores are created: `BENCH_STORE_DIR` (e.g.
/// `/dev/shm`, to take the disk's fsync out of the picture), else
/// `target/bench-data`.
fn store_dir() -> PathBuf {
    match std::env::var_os("BENCH_STORE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => data_dir(),
    }
}

/// CPU seconds (user, system) and peak RSS of this process.
#[derive(Clone, Copy, Debug)]
struct Usage {
    user: f64,
    sys: f64,
    max_rss_kib: i64,
    /// Current anonymous and file-backed RSS (`/proc/self/status`).
    rss_anon_kib: Option<i64>,
    rss_file_kib: Option<i64>,
}

impl Usage {
    fn now() -> Usage {
        // SAFETY: getrusage only writes the struct it is given, which is a
        // plain C struct for which all-zero bytes are a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid, writable rusage.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        assert_eq!(rc, 0, "getrusage failed");
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Usage {
            user: secs(ru.ru_utime),
            sys: secs(ru.ru_stime),
            max_rss_kib: ru.ru_maxrss,
            rss_anon_kib: self_status_kib("RssAnon"),
            rss_file_kib: self_status_kib("RssFile"),
        }
    }
}

/// A `kB` field of `/proc/self/status` (`RssAnon`, `RssFile`, ...).
fn self_status_kib(field: &str) -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The usage figures of an operation, as the child reports them. The
/// anonymous and file-backed RSS at the end of the operation split the peak
/// roughly into heap and mapped store pages (LMDB maps its file).
fn usage_json(wall: Duration, before: Usage, after: Usage) -> Value {
    json!({
        "wall": wall.as_secs_f64(),
        "user": after.user - before.user,
        "sys": after.sys - before.sys,
        "max_rss_kib": after.max_rss_kib,
        "rss_anon_kib": after.rss_anon_kib,
        "rss_file_kib": after.rss_file_kib,
    })
}

/// utime + stime of another process, in seconds, from `/proc/PID/stat`.
fn proc_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) / ticks)
}

/// Peak RSS of another process in KiB (`VmHWM`).
fn proc_hwm_kib(pid: u32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn read_lines(path: &Path) -> Vec<String> {
    let file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    BufReader::new(file)
        .lines()
        .map(|l| l.expect("read line"))
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// The ids in a JSONL file, read as plain JSON (no signature check).
fn ids_of(path: &Path) -> HashSet<String> {
    read_lines(path)
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("event json");
            v["id"].as_str().expect("event id").to_owned()
        })
        .collect()
}

/// How the ids found compare with the ids expected.
fn completeness(expected: &HashSet<String>, found: &HashSet<String>) -> Value {
    json!({
        "expected": expected.len(),
        "found": found.len(),
        "missing": expected.difference(found).count(),
        "extra": found.difference(expected).count(),
    })
}

// ----- data -----------------------------------------------------------------

mod data {
    use super::*;
    use nostr::event::{EventBuilder, FinalizeEvent, Kind, Tag};
    use nostr::key::{Keys, SecretKey};
    use nostr::types::Timestamp;

    /// Deterministic key number `n` (0..REPOS are the repo owners).
    pub fn keys(n: usize) -> Keys {
        let mut x = 0x7379_6e63_2d62_656e ^ (n as u64).wrapping_mul(0x1000_0001);
        loop {
            let mut b = [0u8; 32];
            for chunk in b.chunks_mut(8) {
                chunk.copy_from_slice(&splitmix64(&mut x).to_be_bytes());
            }
            if let Ok(sk) = SecretKey::from_slice(&b) {
                return Keys::new(sk);
            }
        }
    }

    fn coordinate(owner: &Keys) -> String {
        format!(
            "{ANNOUNCEMENT_KIND}:{}:{REPO_ID}",
            owner.public_key().to_hex()
        )
    }

    fn content(i: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut x = i as u64 ^ 0x6973_7375_6573_2121;
        let mut s = String::with_capacity(CONTENT_LEN);
        while s.len() < CONTENT_LEN {
            let r = splitmix64(&mut x);
            for k in 0..8 {
                if s.len() == CONTENT_LEN {
                    break;
                }
                let byte = (r >> (k * 8)) as u8;
                s.push(ALPHABET[byte as usize % ALPHABET.len()] as char);
            }
        }
        s
    }

    /// The issues file for `n` events: generated (on every core) and cached
    /// on first use.
    pub fn issues(n: usize) -> PathBuf {
        let path = data_dir().join(format!("sync-issues-{n}.jsonl"));
        if path.exists() && read_lines(&path).len() == n {
            return path;
        }
        eprintln!("generating {n} signed issues into {}", path.display());
        let started = Instant::now();
        let keys: Vec<Keys> = (0..AUTHORS).map(keys).collect();
        let coords: Vec<String> = keys[..REPOS].iter().map(coordinate).collect();
        let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
        let per = n.div_ceil(threads).max(1);
        let chunks: Vec<Vec<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .step_by(per)
                .map(|start| {
                    let (keys, coords) = (&keys, &coords);
                    s.spawn(move || {
                        (start..(start + per).min(n))
                            .map(|i| {
                                let tag =
                                    Tag::parse(["a", coords[i % REPOS].as_str()]).expect("a tag");
                                EventBuilder::new(Kind::from(ISSUE_KIND), content(i))
                                    .tag(tag)
                                    .custom_created_at(Timestamp::from_secs(T_BASE - i as u64))
                                    .finalize(&keys[i % AUTHORS])
                                    .expect("sign")
                                    .as_json()
                            })
                            .collect::<Vec<String>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("generator thread"))
                .collect()
        });
        let tmp = path.with_extension("jsonl.tmp");
        let mut out = BufWriter::new(std::fs::File::create(&tmp).expect("create data file"));
        for line in chunks.iter().flatten() {
            writeln!(out, "{line}").expect("write data");
        }
        out.into_inner()
            .expect("flush data")
            .sync_all()
            .expect("sync data");
        std::fs::rename(&tmp, &path).expect("rename data file");
        eprintln!(
            "generated {n} issues in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        path
    }

    /// The 10 announcements, listing `relay_url` and the service, written
    /// to `path`.
    pub fn announcements(relay_url: &str, path: &Path) {
        let mut out = BufWriter::new(std::fs::File::create(path).expect("create announcements"));
        for k in 0..REPOS {
            let tags = [
                Tag::parse(["d", REPO_ID]).expect("d"),
                Tag::parse(["name", REPO_ID]).expect("name"),
                Tag::parse(["relays", relay_url, &format!("wss://{SERVICE}")]).expect("relays"),
            ];
            let event = EventBuilder::new(Kind::from(ANNOUNCEMENT_KIND), "")
                .tags(tags)
                .custom_created_at(Timestamp::from_secs(T_BASE + 100))
                .finalize(&keys(k))
                .expect("sign");
            writeln!(out, "{}", event.as_json()).expect("write announcement");
        }
        out.flush().expect("flush announcements");
    }
}

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

mod relay {
    use super::*;
    use nostr_relay_builder::prelude::{
        Event, JsonUtil, LocalRelay, MemoryDatabase, MemoryDatabaseOptions, NostrDatabase,
        RateLimit, RelayBuilder,
    };

    /// Loads the events, serves them on 127.0.0.1:`port`, prints `READY url`
    /// and runs until its stdin closes (or it is killed).
    pub fn run(port: u16, issues: &Path, announcements: &Path) {
        runtime().block_on(async move {
            let db = MemoryDatabase::with_opts(MemoryDatabaseOptions {
                events: true,
                max_events: None,
            });
            let mut loaded = 0usize;
            for path in [issues, announcements] {
                for line in read_lines(path) {
                    let event = Event::from_json(&line).expect("relay: event json");
                    db.save_event(&event).await.expect("relay: save");
                    loaded += 1;
                }
            }
            let relay = LocalRelay::new(
                RelayBuilder::default()
                    .addr(std::net::IpAddr::from([127, 0, 0, 1]))
                    .port(port)
                    .database(db)
                    .rate_limit(RateLimit {
                        max_reqs: 10_000,
                        notes_per_minute: 100_000_000,
                    }),
            );
            relay.run().await.expect("relay: run");
            println!("READY {} {loaded}", relay.url().await);
            std::io::stdout().flush().expect("flush");
            // Until the parent closes our stdin.
            tokio::task::spawn_blocking(|| {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            })
            .await
            .expect("stdin watcher");
            relay.shutdown();
        });
    }
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

/// A relay child; killed (by its own pid) and reaped when dropped.
struct RelayProc {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
}

impl RelayProc {
    fn start(port: u16, issues: &Path, anns: &Path) -> RelayProc {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .args([CHILD, "relay", &port.to_string()])
            .arg(issues)
            .arg(anns)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn relay");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("relay stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("READY ") {
                    let _ = tx.send(line);
                    break;
                }
            }
        });
        let mut relay = RelayProc {
            child,
            stdin,
            url: String::new(),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("relay did not become ready");
        relay.url = line.split_whitespace().nth(1).expect("url").to_owned();
        relay
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a client child and parses its `RESULT` line.
fn run_child(args: &[String]) -> Value {
    let exe = std::env::current_exe().expect("current exe");
    let output = Command::new(exe)
        .arg(CHILD)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "child {args:?} gave no result (exit {:?}); stdout: {stdout}",
                output.status
            )
        });
    serde_json::from_str(line).expect("child result json")
}

/// A free loopback port (the relays of one bench all use it, one after the
/// other, so the announcements can name it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

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

fn client_run(opts: &Options, mode: &str, issues: &Path, anns: &Path, port: u16) -> (Run, Value) {
    let relay = RelayProc::start(port, issues, anns);
    let relay_cpu0 = proc_cpu(relay.pid()).unwrap_or(f64::NAN);
    let n = opts.n.to_string();
    let (timeout, stall) = (opts.timeout.to_string(), opts.stall.to_string());
    let args: Vec<String> = match mode {
        "grasp" => vec![
            "grasp".into(),
            relay.url.clone(),
            anns.display().to_string(),
            issues.display().to_string(),
            n,
            timeout,
            stall,
        ],
        _ => vec![
            mode.into(),
            relay.url.clone(),
            issues.display().to_string(),
            n,
            timeout,
            stall,
        ],
    };
    let v = run_child(&args);
    let relay_cpu = proc_cpu(relay.pid()).unwrap_or(f64::NAN) - relay_cpu0;
    let relay_rss = proc_hwm_kib(relay.pid()).unwrap_or(0) as f64 / 1024.0;
    drop(relay);
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
    let port = free_port();
    let scratch = tempfile::Builder::new()
        .prefix("sync-bench-")
        .tempdir_in(data_dir())
        .expect("tempdir");
    let anns = scratch.path().join("announcements.jsonl");
    data::announcements(&format!("ws://127.0.0.1:{port}"), &anns);

    println!(
        "sync bench: {n} kind-{ISSUE_KIND} issues over {REPOS} repos from one loopback relay \
         (nostr-relay-builder 0.44.1 LocalRelay, fresh per run), {} run(s) per client",
        opts.runs
    );
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
            let (run, detail) = client_run(&opts, mode, &issues, &anns, port);
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
