//! First end-to-end check: the runner syncs a dataset from a LocalRelay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use grasp_sync_core::{Config, ServiceId};
use grasp_sync_io::store::lmdb::LmdbStore;
use grasp_sync_io::{IoConfig, Runner};
use grasp_sync_tests::relays::local::LocalRelayHarness;
use grasp_sync_tests::signed::Dataset;
use nostr::filter::Filter;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_a_dataset_from_local_relay() {
    let relay = LocalRelayHarness::start().await;
    let ds = Dataset::builder("git.example.com", &[relay.url()])
        .repos(3)
        .foreign_repos(1)
        .build();
    relay.publish(ds.events()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LmdbStore::open(dir.path()).await.unwrap());
    for a in ds.announcements() {
        if ds.expected().contains(&a.id) {
            store.save_event(&a).await.unwrap();
        }
    }
    let mut engine = Config::new(ServiceId::parse("git.example.com").unwrap());
    engine.allow_private = true;
    let runner = Runner::start(IoConfig::new(engine), store.clone())
        .await
        .unwrap();
    let expected = ds.expected();
    let start = Instant::now();
    loop {
        let have: std::collections::BTreeSet<_> = store
            .query(Filter::new())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        let missing = expected.difference(&have).count();
        let unrelated = ds.unrelated().intersection(&have).count();
        assert_eq!(unrelated, 0, "unrelated events stored");
        if missing == 0 {
            break;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let status = runner.status().await.unwrap();
            panic!(
                "{missing} of {} missing; status {status:#?}",
                expected.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("synced {} events in {:?}", expected.len(), start.elapsed());
    runner.shutdown().await.unwrap();
}
