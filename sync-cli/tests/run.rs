//! End-to-end tests of `grasp-sync run`, `status` and `demo` through the
//! built binary, against in-process relays on 127.0.0.1 (the harnesses of
//! `grasp-sync-testkit`), and of how settings are merged from flags,
//! environment and the config file.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use grasp_sync_io::store::lmdb::LmdbStore;
use grasp_sync_sim::signed::Dataset;
use grasp_sync_testkit::relays::client::free_port;
use grasp_sync_testkit::relays::hostile::HostileRelay;
use grasp_sync_testkit::relays::local::{LocalOptions, LocalRelayHarness};
use nostr::event::EventId;
use nostr::filter::Filter;
use predicates::prelude::*;
use serde_json::Value;

const SERVICE: &str = "git.example.com";

/// Fast engine timings for a quick `--once` run.
const FAST: &str = r#"
allow_private_relays = true
progress = "lines"
max_connect_failures = 3

[timing]
backoff_initial = "100ms"
backoff_max = "300ms"
batch_delay = "50ms"
historic_timeout = "5s"
rate_limit_cooldown = "1s"
"#;

/// `grasp-sync` with a clean environment (no `GRASP_SYNC_*` from outside).
fn bin() -> Command {
    let mut cmd = Command::cargo_bin("grasp-sync").expect("binary built");
    for (k, _) in std::env::vars() {
        if k.starts_with("GRASP_SYNC_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path.to_str().expect("utf-8 path").to_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `cmd` off the async runtime, so the in-process relays keep serving.
async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run grasp-sync"))
        .await
        .expect("join")
}

async fn stored_ids(data_dir: &Path) -> BTreeSet<EventId> {
    let store = LmdbStore::open(&data_dir.join("db"))
        .await
        .expect("open db");
    store
        .query(Filter::new())
        .await
        .expect("query")
        .into_iter()
        .map(|e| e.id)
        .collect()
}

fn small_dataset(relays: &[String]) -> Dataset {
    Dataset::builder(SERVICE, relays)
        .repos(2)
        .issues(2)
        .patches(1)
        .prs(1)
        .comments(1)
        .build()
}

/// `run --once` from an empty data directory, learning the repos through
/// a bootstrap relay: exit 0, everything expected stored, nothing
/// unrelated; then `status` shows the saved state in both formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_then_status() {
    let relay = LocalRelayHarness::start().await;
    let ds = small_dataset(&[relay.url()]);
    relay.insert(ds.events()).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = write(tmp.path(), "fast.toml", FAST);
    let data = tmp.path().join("data");

    let mut cmd = bin();
    cmd.args(["run", "--domain", SERVICE, "--once", "--config", &config])
        .args(["--bootstrap", &relay.url()])
        .arg("--data-dir")
        .arg(&data);
    let out = output(cmd).await;
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Historic sync finished: 1 relays synced."),
        "{text}"
    );
    assert!(text.contains(&relay.url()), "{text}");
    assert!(data.join("state.json").exists());
    let stored = stored_ids(&data).await;
    let missing: Vec<_> = ds.expected().difference(&stored).copied().collect();
    assert!(
        missing.is_empty(),
        "{} expected events missing",
        missing.len()
    );
    assert!(
        ds.unrelated().is_disjoint(&stored),
        "unrelated events stored"
    );

    let mut cmd = bin();
    cmd.args(["status", "--data-dir"]).arg(&data);
    let out = output(cmd).await;
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("2 repositories (2 tracked)"), "{text}");
    assert!(
        text.contains(&relay.url()) && text.contains("synced"),
        "{text}"
    );

    let mut cmd = bin();
    cmd.args(["status", "--format", "json", "--data-dir"])
        .arg(&data);
    let out = output(cmd).await;
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let relays = doc["relays"].as_array().unwrap();
    assert_eq!(relays.len(), 1, "{doc}");
    let r = &relays[0];
    assert_eq!(r["url"], relay.url());
    assert!(r["last_connected"].as_u64().is_some());
    assert_eq!(r["last_run"]["outcome"], "synced");
    assert!(r["last_run"]["last_eose"].as_u64().is_some(), "{r}");
    assert_eq!(r["confirmed"], r["last_run"]["targets"]);
    assert!(r["confirmed"].as_u64().unwrap() > 2, "{r}");
    assert_eq!(r["failures"], 0);
}

/// `--local-relay`: the events go into the service's own relay (which
/// holds the hosted announcements), not into a database; the state file
/// is still kept in the data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_feeds_the_local_relay() {
    let remote = LocalRelayHarness::start().await;
    let ours = LocalRelayHarness::start().await;
    let ds = small_dataset(&[remote.url()]);
    remote.insert(ds.events()).await;
    let hosted: Vec<_> = ds.repos().iter().map(|r| r.announcement.clone()).collect();
    ours.insert(&hosted).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = write(tmp.path(), "fast.toml", FAST);
    let data = tmp.path().join("data");

    let mut cmd = bin();
    cmd.args(["run", "--domain", SERVICE, "--once", "--config", &config])
        .args(["--local-relay", &ours.url()])
        .arg("--data-dir")
        .arg(&data);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(ours.missing(&ds.expected()).await.is_empty());
    for id in ds.unrelated() {
        assert_eq!(ours.missing(&BTreeSet::from([id])).await.len(), 1);
    }
    assert!(data.join("state.json").exists());
    assert!(!data.join("db").exists(), "a database was opened");
}

/// A relay that cannot be reached: `run --once` ends with 3 and a table
/// naming it, after the reachable relay was synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_with_unreachable_relay_fails_with_summary() {
    let relay = LocalRelayHarness::start().await;
    let dead = format!("ws://127.0.0.1:{}", free_port());
    let ds = small_dataset(&[relay.url(), dead.clone()]);
    relay.insert(ds.events()).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = write(tmp.path(), "fast.toml", FAST);

    let mut cmd = bin();
    cmd.args(["run", "--once", "--config", &config])
        .env("GRASP_SYNC_DOMAIN", SERVICE)
        .env("GRASP_SYNC_BOOTSTRAP", relay.url())
        .env("GRASP_SYNC_DATA_DIR", tmp.path().join("data"));
    let out = output(cmd).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("Historic sync incomplete: 1 relays could not be synced"),
        "{text}"
    );
    let dead_row = text
        .lines()
        .find(|l| l.starts_with(&dead))
        .unwrap_or_else(|| panic!("no row for {dead}: {text}"));
    assert!(dead_row.contains("unreachable"), "{dead_row}");
    let ok_row = text.lines().find(|l| l.starts_with(&relay.url())).unwrap();
    assert!(ok_row.contains("synced"), "{ok_row}");
}

/// A relay that never answers a REQ: the engine gives its targets up after
/// its retries, and `run --once` ends with 3 and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_with_silent_relay_reports_given_up() {
    let relay = LocalRelayHarness::start().await;
    let silent = HostileRelay::builder().silent().start().await;
    let ds = small_dataset(&[relay.url(), silent.url()]);
    relay.insert(ds.events()).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = write(
        tmp.path(),
        "fast.toml",
        &FAST.replace(
            "historic_timeout = \"5s\"",
            "historic_timeout = \"400ms\"\nhistoric_max_attempts = 2",
        ),
    );

    let mut cmd = bin();
    cmd.args(["run", "--domain", SERVICE, "--once", "--config", &config])
        .args(["--bootstrap", &relay.url()])
        .arg("--data-dir")
        .arg(tmp.path().join("data"));
    let out = output(cmd).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with(&silent.url()))
        .unwrap_or_else(|| panic!("no row for the silent relay: {text}"));
    assert!(row.contains("given up"), "{row}");
    assert!(
        text.contains(&format!("{}: given up", silent.url())),
        "{text}"
    );
}

/// Found on `main`: `--local-relay ws://127.0.0.1:PORT` and bootstrap relays
/// on loopback were refused as private addresses unless
/// `--allow-private-relays` was on, and `run --once` then exited 0 with "0
/// relays synced", never having read the service's repositories. Relays the
/// operator names are used whatever their address; the private-address
/// policy is for relays learned from announcements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_the_operator_names_are_used_on_loopback() {
    let boot = LocalRelayHarness::start().await;
    let ours = LocalRelayHarness::start().await;
    let ds = small_dataset(&[boot.url()]);
    boot.insert(ds.events()).await;
    let hosted: Vec<_> = ds.repos().iter().map(|r| r.announcement.clone()).collect();
    ours.insert(&hosted).await;
    let tmp = tempfile::tempdir().unwrap();
    // Private relays not allowed: only the operator's own are on loopback.
    let strict = FAST.replace("allow_private_relays = true\n", "");
    let config = write(tmp.path(), "fast.toml", &strict);
    let data = tmp.path().join("data");

    let mut cmd = bin();
    cmd.args(["run", "--domain", SERVICE, "--once", "--config", &config])
        .args(["--local-relay", &ours.url()])
        .args(["--bootstrap", &boot.url()])
        .arg("--data-dir")
        .arg(&data);
    let out = output(cmd).await;
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = text
        .lines()
        .find(|l| l.starts_with(&boot.url()))
        .unwrap_or_else(|| panic!("no row for the bootstrap relay: {text}"));
    assert!(row.contains("synced"), "{row}");
    let mut cmd = bin();
    cmd.args(["status", "--data-dir"]).arg(&data);
    let status = stdout(&output(cmd).await);
    assert!(
        status.contains("2 repositories (2 tracked)"),
        "the service's repositories were read: {status}"
    );
}

/// The service's relay cannot be read: `run --once` cannot know what to
/// sync, and says so with 3 (it exited 0, "0 relays synced").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_fails_when_the_services_relay_cannot_be_read() {
    let dead = format!("ws://127.0.0.1:{}", free_port());
    let tmp = tempfile::tempdir().unwrap();
    let config = write(
        tmp.path(),
        "fast.toml",
        &format!("{FAST}connect_timeout = \"2s\"\n"),
    );
    let mut cmd = bin();
    cmd.args(["run", "--domain", SERVICE, "--once", "--config", &config])
        .args(["--local-relay", &dead])
        .arg("--data-dir")
        .arg(tmp.path().join("data"));
    let out = output(cmd).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains(&format!("the service's relay {dead} could not be read")),
        "{text}"
    );
}

/// The exit table names why a relay was not synced: a relay that wants AUTH
/// (and no key is configured) was shown only as "given up".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exit_table_names_why_a_relay_was_given_up() {
    let relay = LocalRelayHarness::start().await;
    let locked = LocalRelayHarness::start_with(LocalOptions {
        auth_to_read: true,
        ..LocalOptions::default()
    })
    .await;
    let ds = small_dataset(&[relay.url(), locked.url()]);
    // The repos are learned from the open relay; their history is behind AUTH.
    let announcements: Vec<_> = ds.repos().iter().map(|r| r.announcement.clone()).collect();
    relay.insert(&announcements).await;
    locked.insert(ds.events()).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = write(tmp.path(), "fast.toml", FAST);
    let mut cmd = bin();
    cmd.args(["run", "--domain", SERVICE, "--once", "--config", &config])
        .args(["--bootstrap", &relay.url()])
        .arg("--data-dir")
        .arg(tmp.path().join("data"));
    let out = output(cmd).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with(&locked.url()))
        .unwrap_or_else(|| panic!("no row for the AUTH relay: {text}"));
    assert!(
        row.contains("given up") && row.contains("auth-required"),
        "{row}"
    );
    assert!(
        text.contains(&format!("{}: given up (auth-required", locked.url())),
        "{text}"
    );
}

/// The demo syncs everything and exits 0.
#[cfg(feature = "demo")]
#[test]
fn demo_syncs_everything() {
    bin()
        .args(["demo", "--progress", "lines", "--bulk", "120"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("Everything synced in"))
        .stdout(predicate::str::contains("stored: 0."));
}

#[cfg(feature = "demo")]
#[test]
fn demo_wants_an_empty_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "leftover", "x");
    bin()
        .args(["demo", "--data-dir"])
        .arg(tmp.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not empty"));
}

fn print_config(cmd: &mut Command) -> Value {
    let out = cmd.args(["run", "--print-config"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON settings")
}

/// Flags beat the environment, the environment beats the file, the file
/// beats the defaults; key by key.
#[test]
fn config_precedence() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "grasp-sync.toml",
        r#"
domain = "file.example.com"
data_dir = "/from/file"
bootstrap = ["wss://file.relay.example"]
archive = true
max_connect_failures = 9
snapshot_interval = "10s"

[timing]
backoff_initial = "250ms"
"#,
    );

    // File only (given through GRASP_SYNC_CONFIG), over the defaults.
    let doc = print_config(bin().env("GRASP_SYNC_CONFIG", &file));
    assert_eq!(doc["domain"], "file.example.com");
    assert_eq!(doc["data_dir"], "/from/file");
    assert_eq!(doc["bootstrap"][0], "wss://file.relay.example");
    assert_eq!(doc["archive"], true);
    assert_eq!(doc["once"], false, "default");
    assert_eq!(doc["max_connect_failures"], 9);
    assert_eq!(doc["snapshot_interval"], "10s");
    assert_eq!(doc["timing"]["backoff_initial"], "250ms");
    assert_eq!(doc["timing"]["backoff_max"], "1h", "default");
    assert_eq!(doc["state_file"], "/from/file/state.json");

    // The environment over the file.
    let mut cmd = bin();
    cmd.env("GRASP_SYNC_CONFIG", &file)
        .env("GRASP_SYNC_DOMAIN", "env.example.com")
        .env("GRASP_SYNC_BOOTSTRAP", "wss://a.example,wss://b.example")
        .env("GRASP_SYNC_ARCHIVE", "false")
        .env("GRASP_SYNC_ONCE", "1");
    let doc = print_config(&mut cmd);
    assert_eq!(doc["domain"], "env.example.com");
    assert_eq!(
        doc["bootstrap"],
        serde_json::json!(["wss://a.example", "wss://b.example"])
    );
    assert_eq!(doc["archive"], false, "env false beats file true");
    assert_eq!(doc["once"], true);
    assert_eq!(doc["data_dir"], "/from/file", "file where env is silent");

    // Flags over the environment.
    let out = bin()
        .env("GRASP_SYNC_CONFIG", &file)
        .env("GRASP_SYNC_DOMAIN", "env.example.com")
        .env("GRASP_SYNC_BOOTSTRAP", "wss://a.example")
        .env("GRASP_SYNC_DATA_DIR", "/from/env")
        .args([
            "run",
            "--print-config",
            "--domain",
            "flag.example.com",
            "--bootstrap",
            "wss://c.example",
            "--data-dir",
            "/from/flag",
            "--max-connect-failures",
            "2",
        ])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["domain"], "flag.example.com");
    assert_eq!(doc["bootstrap"], serde_json::json!(["wss://c.example"]));
    assert_eq!(doc["data_dir"], "/from/flag");
    assert_eq!(doc["max_connect_failures"], 2);

    // Defaults alone.
    let doc = print_config(bin().env("GRASP_SYNC_DOMAIN", "d.example.com"));
    assert_eq!(doc["data_dir"], "./grasp-sync-data");
    assert_eq!(doc["bootstrap"], serde_json::json!([]));
    assert_eq!(doc["max_connect_failures"], 5);
    assert_eq!(doc["timing"]["backoff_initial"], "5s");
}

#[test]
fn unknown_config_key_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "bad.toml",
        "domain = \"a.example\"\nbootstrapp = []\n",
    );
    bin()
        .args(["run", "--print-config", "--config", &file])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown field `bootstrapp`"))
        .stderr(predicate::str::contains("(line 2)"));
    let file = write(
        tmp.path(),
        "bad-timing.toml",
        "[timing]\nbatch_delay = \"soon\"\n",
    );
    bin()
        .args([
            "run",
            "--print-config",
            "--domain",
            "a.example",
            "--config",
            &file,
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("timing.batch_delay"));
}

#[test]
fn run_needs_a_domain() {
    bin()
        .args(["run", "--print-config"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no service domain"));
}

#[test]
fn bad_log_filter_is_rejected() {
    bin()
        .args(["run", "--domain", "a.example", "--log", "grasp_sync=loud"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("log filter"));
}

#[test]
fn status_without_state_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    bin()
        .args(["status", "--data-dir"])
        .arg(tmp.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no saved state in"))
        .stderr(predicate::str::contains("state.json does not exist"));
}

#[test]
fn corrupt_state_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "state.json", "{not json");
    bin()
        .args(["status", "--data-dir"])
        .arg(tmp.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("state.json"));
}

#[test]
fn every_subcommand_has_help() {
    for (sub, flags) in [
        (
            "run",
            &[
                "--domain",
                "--data-dir",
                "--local-relay",
                "--bootstrap",
                "--metrics",
                "--archive",
                "--allow-private-relays",
                "--once",
                "--config",
                "--log",
                "GRASP_SYNC_DOMAIN",
            ][..],
        ),
        ("status", &["--data-dir", "--format"][..]),
        ("demo", &["--data-dir", "--timeout", "--progress"][..]),
    ] {
        let out = bin().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success());
        let help = stdout(&out);
        for flag in flags {
            assert!(help.contains(flag), "{sub}: {flag} missing from\n{help}");
        }
    }
    bin()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("demo"))
        .stdout(predicate::str::contains("status"));
}

#[test]
fn unknown_flag_on_run_is_rejected() {
    bin()
        .args(["run", "--domain", "a.example", "--frobnicate"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--frobnicate"));
}

#[test]
fn auth_key_file_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let good = write(
        tmp.path(),
        "auth.key",
        "0000000000000000000000000000000000000000000000000000000000000001\n",
    );
    let doc = print_config(
        bin()
            .env("GRASP_SYNC_DOMAIN", "a.example")
            .env("GRASP_SYNC_AUTH_KEY_FILE", &good),
    );
    assert_eq!(doc["auth_key_file"], good.as_str());
    let bad = write(tmp.path(), "bad.key", "not a key\n");
    bin()
        .args([
            "run",
            "--print-config",
            "--domain",
            "a.example",
            "--auth-key-file",
            &bad,
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a secret key"));
}
