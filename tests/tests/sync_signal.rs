//! SIGTERM makes the runner close its subscriptions and sockets, save its
//! state and return cleanly. Alone in its own test binary, because the
//! signal goes to the whole process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use grasp_sync_core::{Config, ServiceId, Snapshot};
use grasp_sync_io::store::lmdb::LmdbStore;
use grasp_sync_io::{IoConfig, Runner};
use grasp_sync_sim::signed::Dataset;
use grasp_sync_testkit::relays::hostile::HostileRelay;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_subscriptions_and_saves_state() {
    let mut relay = HostileRelay::honest(Vec::new()).await;
    let ds = Dataset::builder("git.example.com", &[relay.url()])
        .repos(2)
        .build();
    relay.push(ds.events());
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LmdbStore::open(&dir.path().join("db")).await.unwrap());
    for a in ds.announcements() {
        store.save_event(&a).await.unwrap();
    }
    let state = dir.path().join("state.json");
    let mut engine = Config::new(ServiceId::parse("git.example.com").unwrap());
    engine.allow_private = true;
    let mut config = IoConfig::new(engine);
    config.state_file = Some(state.clone());
    let runner = Runner::start(config, store.clone()).await.unwrap();

    // Wait for the live subscriptions to be open.
    let start = Instant::now();
    loop {
        let status = runner.status().await.unwrap();
        let done = status
            .relays
            .iter()
            .all(|r| r.pending == 0 && r.confirmed == r.targets);
        if done && !relay.open_subscriptions().is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "sync did not finish: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!state.exists());

    let open_before = relay.open_subscriptions();
    let run = tokio::spawn(runner.run_until_signal());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("shutdown finished")
        .unwrap()
        .unwrap();

    // Every subscription open before the signal was CLOSEd (not just
    // dropped with the socket).
    let closes = relay.closes();
    for (conn, sub, _) in &open_before {
        assert!(
            closes.contains(&(*conn, sub.clone())),
            "{sub} on connection {conn} not closed: {closes:?}"
        );
    }
    assert!(relay.open_subscriptions().is_empty());
    let saved = Snapshot::from_json(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert!(!saved.relays.is_empty());
    relay.stop().await;
}
