//! NIP-77 bench (issue 5): what a re-sync costs on the wire when our store
//! already holds almost everything. N (50,000) kind-1621 issues over 10
//! repos sit on a loopback LocalRelay (nostr-relay-builder 0.44.1, which
//! speaks NIP-77 without listing it in NIP-11: the engine finds it with a
//! probe); our LMDB store holds the same minus 1% (500 differ), either the
//! newest 1% (what a re-sync after a pause lacks) or every 100th issue
//! (differences scattered evenly: negentropy's worst case, since every
//! small range then differs and is listed id by id). Full historic passes
//! with NIP-77 for both, and one with paged REQ (`Config::nip77 = false`;
//! it downloads everything whichever 1% we lack), each against a fresh
//! relay, in one run. It prints the payload bytes received (and how many of
//! them are EVENT frames) and sent (text frame payloads, from the runner's
//! I/O counters), the EVENT frames received, the wall time until every
//! target is confirmed, and the ratios. It asserts nothing about the
//! figures; it checks that every pass stored every issue.
//!
//! The data set, the relay child and the process plumbing are the `sync`
//! bench's (`benches/common`): each client runs in a child process of its
//! own.
//!
//! Run with `cargo bench -p grasp-sync-tests --bench negentropy`, or
//! `-- --quick` for 5,000 issues (50 differ). Environment: `BENCH_EVENTS`
//! (issue count), `BENCH_TIMEOUT` (seconds a pass may take, 600).

mod common;

use common::*;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Our store lacks one issue in this many.
const LACK_ONE_IN: usize = 100;

/// The passes, in the order they run: (name, method, which 1% we lack).
const PASSES: [(&str, &str, &str); 3] = [
    ("NIP-77, newest 1% missing", "nip77", "newest"),
    ("NIP-77, every 100th missing", "nip77", "scattered"),
    ("paged REQ", "paged", "scattered"),
];

fn child_main(args: &[String]) -> i32 {
    let arg = |i: usize| -> &str {
        args.get(i)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("child: missing argument {i} in {args:?}"))
    };
    match arg(0) {
        "relay" => {
            relay::run(
                arg(1).parse().expect("port"),
                Path::new(arg(2)),
                Path::new(arg(3)),
            );
        }
        "resync" => {
            let result = resync::run(
                arg(1) == "nip77",
                arg(2) == "newest",
                Path::new(arg(3)),
                Path::new(arg(4)),
                Duration::from_secs(arg(5).parse().expect("timeout")),
            );
            println!("RESULT {result}");
        }
        other => panic!("unknown child mode {other}"),
    }
    0
}

mod resync {
    use super::*;
    use futures_util::StreamExt;
    use grasp_sync_core::{Config, ServiceId};
    use grasp_sync_io::runner::Runner;
    use grasp_sync_io::store::lmdb::LmdbStore;
    use grasp_sync_io::{EventStore, IoConfig};
    use nostr::event::{Event, Kind};
    use nostr::filter::Filter;

    /// Our runner into an LMDB store holding the announcements and all
    /// issues but 1% (the newest, or every `LACK_ONE_IN`-th); done when
    /// every target is confirmed (the whole historic pass, not just the
    /// missing events).
    pub fn run(
        nip77: bool,
        lack_newest: bool,
        announcements: &Path,
        issues: &Path,
        timeout: Duration,
    ) -> Value {
        let dir = tempfile::Builder::new()
            .prefix("neg-lmdb-")
            .tempdir_in(store_dir())
            .expect("tempdir");
        let rt = runtime();
        rt.block_on(async {
            let store = LmdbStore::open(dir.path()).await.expect("open store");
            let mut all = 0usize;
            let mut ours = Vec::new();
            let lines = read_lines(issues).len();
            let newest = lines.div_ceil(LACK_ONE_IN);
            for path in [announcements, issues] {
                for (i, line) in read_lines(path).iter().enumerate() {
                    let event = Event::from_json(line).expect("event json");
                    let is_issue = event.kind == Kind::from(ISSUE_KIND);
                    if is_issue {
                        all += 1;
                    }
                    // Issue i has `created_at` T_BASE - i: the first are the newest.
                    let lacking = if lack_newest {
                        i < newest
                    } else {
                        i % LACK_ONE_IN == 0
                    };
                    if !(is_issue && lacking) {
                        ours.push(event);
                    }
                }
            }
            // Concurrent saves share LMDB write transactions (one by one,
            // each would wait for its own commit).
            let seeding = Instant::now();
            futures_util::stream::iter(ours.iter())
                .for_each_concurrent(1024, |e| {
                    let store = &store;
                    async move {
                        store.save_event(e).await.expect("seed store");
                    }
                })
                .await;
            eprintln!(
                "seeded our store with {} events in {:.1} s",
                ours.len(),
                seeding.elapsed().as_secs_f64()
            );
            let store = Arc::new(store);
            let mut engine = Config::new(ServiceId::parse(SERVICE).expect("service"));
            engine.allow_private = true;
            engine.nip77 = nip77;
            let io = IoConfig::new(engine);

            let started = Instant::now();
            let handle = Runner::start(io, Arc::clone(&store) as Arc<dyn EventStore>)
                .await
                .expect("runner start");
            let done = loop {
                tokio::time::sleep(POLL).await;
                if let Some(status) = handle.status().await {
                    let settled = !status.relays.is_empty()
                        && status
                            .relays
                            .iter()
                            .all(|r| r.pending == 0 && r.confirmed == r.targets && r.targets > 0);
                    if settled {
                        break true;
                    }
                }
                if started.elapsed() >= timeout {
                    break false;
                }
            };
            let wall = started.elapsed().as_secs_f64();
            let io = handle.io_counters().await.expect("io counters").totals();
            let status = handle.status().await.expect("status");
            let stored = store
                .count(Filter::new().kind(Kind::from(ISSUE_KIND)))
                .await
                .expect("count");
            let _ = tokio::time::timeout(Duration::from_secs(20), handle.shutdown()).await;
            json!({
                "complete": done,
                "wall": wall,
                "bytes_received": io.bytes_received,
                "event_bytes": io.event_bytes_received,
                "bytes_sent": io.bytes_sent,
                "event_frames": io.event_frames_received,
                "frames": io.frames_received,
                "stored": stored,
                "issues": all,
                "reconciliations": status.totals.reconciliations,
                "ids_needed": status.totals.reconcile_ids_needed,
                "fallbacks": status.totals.reconcile_fallbacks,
                "reqs_sent": status.relays.iter().map(|r| r.stats.reqs_sent).sum::<u64>(),
            })
        })
    }
}

fn parent_main(args: &[String]) {
    let quick = args.iter().any(|a| a == "--quick");
    let n = env_num("BENCH_EVENTS").map_or(if quick { 5_000 } else { 50_000 }, |v| v as usize);
    let timeout = env_num("BENCH_TIMEOUT").unwrap_or(600);
    let issues = data::issues(n);
    let port = free_port();
    let scratch = tempfile::Builder::new()
        .prefix("neg-bench-")
        .tempdir_in(data_dir())
        .expect("tempdir");
    let anns = scratch.path().join("announcements.jsonl");
    data::announcements(&format!("ws://127.0.0.1:{port}"), &anns);
    println!(
        "negentropy bench: {n} kind-{ISSUE_KIND} issues over {REPOS} repos on a loopback LocalRelay \
         (nostr-relay-builder 0.44.1, fresh per pass); our store lacks 1% ({} differ)",
        n.div_ceil(LACK_ONE_IN)
    );

    let mut results: Vec<(&str, Value)> = Vec::new();
    for (name, method, lacking) in PASSES {
        let relay = RelayProc::start(port, &issues, &anns);
        let v = run_child(&[
            "resync".into(),
            method.into(),
            lacking.into(),
            anns.display().to_string(),
            issues.display().to_string(),
            timeout.to_string(),
        ]);
        drop(relay);
        eprintln!("{name}: {v}");
        results.push((name, v));
    }

    let get = |pass: &str, key: &str| -> f64 {
        results
            .iter()
            .find(|(m, _)| *m == pass)
            .and_then(|(_, v)| v[key].as_f64())
            .unwrap_or(f64::NAN)
    };
    println!();
    println!("| re-sync | wall s | bytes received (of which EVENT) | bytes sent | bytes total | EVENT frames | REQs | reconciliations | ids needed | fallbacks | issues stored | complete |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, v) in &results {
        println!(
            "| {name} | {:.2} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} of {} | {} |",
            v["wall"].as_f64().unwrap_or(f64::NAN),
            v["bytes_received"],
            v["event_bytes"],
            v["bytes_sent"],
            v["bytes_received"].as_u64().unwrap_or(0) + v["bytes_sent"].as_u64().unwrap_or(0),
            v["event_frames"],
            v["reqs_sent"],
            v["reconciliations"],
            v["ids_needed"],
            v["fallbacks"],
            v["stored"],
            v["issues"],
            v["complete"],
        );
    }
    let paged = PASSES[2].0;
    let total = |pass: &str| get(pass, "bytes_received") + get(pass, "bytes_sent");
    println!();
    println!("| goal: ≥ 50 × fewer bytes received than paged REQ | bytes received | both ways | wall time | met? |");
    println!("|---|---|---|---|---|");
    for (name, _, _) in &PASSES[..2] {
        let received = get(paged, "bytes_received") / get(name, "bytes_received");
        println!(
            "| {name} | {received:.1} × fewer | {:.1} × fewer | {:.2} × faster | {} |",
            total(paged) / total(name),
            get(paged, "wall") / get(name, "wall"),
            if received >= 50.0 { "yes" } else { "no" }
        );
    }
    println!();
    println!(
        "bytes are websocket text-frame payloads (the JSON), as the runner counts them per relay; \
         wall runs from starting the runner to every target confirmed. Both passes send the \
         same layer filters (NEG-OPEN or REQ); only what comes back differs."
    );
    let ok = results.iter().all(|(_, v)| {
        v["complete"].as_bool() == Some(true) && v["stored"].as_u64() == Some(n as u64)
    });
    assert!(ok, "a pass did not store every issue: {results:?}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD) {
        std::process::exit(child_main(&args[2..]));
    }
    parent_main(&args[1..]);
}
