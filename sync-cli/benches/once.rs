//! `run --once` wall time against its floor (issue 15, item 4): how long the
//! released binary takes, from start to exit, to finish a first sync, and
//! how that compares with the least any client could do: fetch the same
//! events with one REQ per relay, verify them, and store them one by one
//! into a fresh LMDB store (the destination `run` uses). It prints a table
//! and asserts nothing about timing.
//!
//! Scenarios:
//! - (a) nothing to do: a second `run --once` over a data directory that is
//!   already synced with the relay (a quick reconnect, nothing new);
//! - (b) 2,000 issues on one LocalRelay;
//! - (c) 1,500 issues behind a silent page cap of 200 plus 300 replies on a
//!   LocalRelay, and 700 issues sharing one second on nostr-rs-relay 0.8.12
//!   (when its binary is installed, else that row is skipped with a note; see
//!   `grasp_sync_testkit::relays::nostr_rs`).
//!
//! `cargo bench -p grasp-sync --bench once` (`-- --quick`: one run each
//! instead of three; the figure is the median).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use grasp_sync_io::store::lmdb::LmdbStore;
use grasp_sync_sim::signed::{Bulk, BulkKind, Dataset};
use grasp_sync_testkit::relays::client::RelayClient;
use grasp_sync_testkit::relays::local::{LocalOptions, LocalRelayHarness};
use grasp_sync_testkit::relays::nostr_rs::{self, NostrRsRelayHarness};
use nostr::event::{Event, EventId};
use nostr::filter::Filter;

const SERVICE: &str = "git.example.com";

/// Engine timings of a quick `--once` run (as the CLI tests use).
const CONFIG: &str = r#"
allow_private_relays = true
progress = "lines"
log = "warn"
"#;

struct Row {
    name: &'static str,
    events: usize,
    once: Duration,
    floor: Duration,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `grasp-sync run --once` and returns its wall time; panics unless it
/// exits 0.
fn run_once(data: &Path, bootstrap: &[String], config: &Path) -> Duration {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grasp-sync"));
    cmd.args(["run", "--domain", SERVICE, "--once", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data);
    for b in bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("GRASP_SYNC_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let started = Instant::now();
    let out = cmd.output().expect("run grasp-sync");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "run --once failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// The floor: one REQ per relay (each answering in full), every event
/// verified, then stored one by one into a fresh LMDB store.
async fn floor(relays: &[(String, usize)], dir: &Path) -> Duration {
    let started = Instant::now();
    let mut events: Vec<Event> = Vec::new();
    for (url, n) in relays {
        let mut client = RelayClient::connect(url).await;
        events.extend(client.fetch(&[Filter::new().limit(n + 100)]).await);
    }
    let store = LmdbStore::open(dir).await.expect("open store");
    for e in &events {
        e.verify().expect("a valid event");
        store.save_event(e).await.expect("save");
    }
    started.elapsed()
}

async fn stored_ids(data: &Path) -> BTreeSet<EventId> {
    let store = LmdbStore::open(&data.join("db")).await.expect("open db");
    store
        .query(Filter::new())
        .await
        .expect("query")
        .into_iter()
        .map(|e| e.id)
        .collect()
}

fn dataset(relays: &[String]) -> Dataset {
    Dataset::builder(SERVICE, relays)
        .repos(1)
        .foreign_repos(0)
        .issues(0)
        .patches(0)
        .prs(0)
        .comments(0)
        .build()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 1 } else { 3 };
    let tmp = tempfile::tempdir().expect("temp dir");
    let config = tmp.path().join("once.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let mut rows = Vec::new();

    // (b) 2,000 issues on one LocalRelay, and (a) the same again.
    {
        let relay = LocalRelayHarness::start().await;
        let mut ds = dataset(&[relay.url()]);
        let issues = ds.add_bulk(Bulk::new(0, 2000).kind(BulkKind::Issues).same_second(0));
        relay.insert(ds.events()).await;
        let n = ds.events().len();
        let (mut first, mut again, mut floors) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..runs {
            let data = tmp.path().join(format!("b{i}"));
            first.push(run_once(&data, &[relay.url()], &config));
            let stored = stored_ids(&data).await;
            assert!(issues.iter().all(|e| stored.contains(&e.id)), "all stored");
            again.push(run_once(&data, &[relay.url()], &config));
            floors.push(floor(&[(relay.url(), n)], &tmp.path().join(format!("bf{i}"))).await);
        }
        rows.push(Row {
            name: "(b) 2,000 issues, one LocalRelay",
            events: n,
            once: median(first),
            floor: median(floors),
        });
        rows.push(Row {
            name: "(a) nothing to do (synced data dir)",
            events: 0,
            once: median(again),
            floor: Duration::ZERO,
        });
    }

    // (c) 1,500 issues and 300 replies behind a page cap of 200.
    {
        let capped = LocalRelayHarness::start_with(LocalOptions {
            max_filter_limit: Some(200),
            ..LocalOptions::default()
        })
        .await;
        let mut ds = dataset(&[capped.url()]);
        ds.add_bulk(Bulk::new(0, 1500).kind(BulkKind::Issues).same_second(0));
        ds.add_bulk(
            Bulk::new(0, 300)
                .kind(BulkKind::RootComments)
                .same_second(0)
                .newest(ds.base_time() + 2 * 86_400),
        );
        capped.insert(ds.events()).await;
        // The floor reads the same events from a relay without the cap.
        let open = LocalRelayHarness::start().await;
        open.insert(ds.events()).await;
        let n = ds.events().len();
        let (mut once, mut floors) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let data = tmp.path().join(format!("c{i}"));
            once.push(run_once(&data, &[capped.url()], &config));
            let stored = stored_ids(&data).await;
            assert!(ds.expected().is_subset(&stored), "all stored");
            floors.push(floor(&[(open.url(), n)], &tmp.path().join(format!("cf{i}"))).await);
        }
        rows.push(Row {
            name: "(c) 1,800 behind a page cap of 200",
            events: n,
            once: median(once),
            floor: median(floors),
        });
    }

    // (c) 700 issues sharing one second on nostr-rs-relay: more than one
    // page (500) of a single second. Skipped when the relay is not
    // installed: building it takes minutes, and benches do not install.
    match nostr_rs::installed_binary() {
        None => println!(
            "note: (c) on nostr-rs-relay {} skipped: not installed (set {} or run .ci/run)",
            nostr_rs::VERSION,
            nostr_rs::ENV_BINARY
        ),
        Some(_) => {
            let relay = NostrRsRelayHarness::start().await;
            let mut ds = dataset(&[relay.url()]);
            let burst = ds.add_bulk(Bulk::new(0, 700).kind(BulkKind::Issues).same_second(700));
            relay.publish(ds.events()).await;
            let n = ds.events().len();
            let (mut once, mut floors) = (Vec::new(), Vec::new());
            for i in 0..runs {
                let data = tmp.path().join(format!("r{i}"));
                once.push(run_once(&data, &[relay.url()], &config));
                let stored = stored_ids(&data).await;
                assert!(burst.iter().all(|e| stored.contains(&e.id)), "all stored");
                // No page cap on this relay: the floor reads it directly.
                floors.push(floor(&[(relay.url(), n)], &tmp.path().join(format!("rf{i}"))).await);
            }
            rows.push(Row {
                name: "(c) 700 in one second, nostr-rs-relay",
                events: n,
                once: median(once),
                floor: median(floors),
            });
        }
    }

    println!();
    println!(
        "run --once wall time against the floor (fetch with one REQ per relay + verify + store), median of {runs}"
    );
    println!(
        "{:<40} {:>7} {:>10} {:>10} {:>7}",
        "scenario", "events", "once (s)", "floor (s)", "ratio"
    );
    for r in rows {
        let ratio = if r.floor.is_zero() {
            "-".to_owned()
        } else {
            format!("{:.2}", r.once.as_secs_f64() / r.floor.as_secs_f64())
        };
        println!(
            "{:<40} {:>7} {:>10.3} {:>10.3} {:>7}",
            r.name,
            r.events,
            r.once.as_secs_f64(),
            r.floor.as_secs_f64(),
            ratio
        );
    }
}
