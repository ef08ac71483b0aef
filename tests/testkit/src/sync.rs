//! Runs the real runner ([`grasp_sync_io::Runner`]) into a fresh embedded
//! store for the integration tests, with the engine's timings shortened so
//! that backoffs and cool-downs take seconds, and waits for what a test
//! expects to arrive.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grasp_sync_core::{Config, ServiceId, Status};
use grasp_sync_io::store::lmdb::LmdbStore;
use grasp_sync_io::{IoConfig, Runner, RunnerHandle};
use nostr::event::{Event, EventId};
use nostr::filter::Filter;

use grasp_sync_sim::signed::Dataset;

/// The service domain the integration tests sync into.
pub const TEST_SERVICE: &str = "git.example.com";

/// The dataset of the first-sync integration tests, announced on `relays`
/// for [`TEST_SERVICE`]: 3 hosted repos (each with 3 issues, 2 patches,
/// 2 pull requests, statuses, comments and replies) and 2 foreign repos
/// whose events must not be stored.
pub fn first_sync_dataset(relays: &[String]) -> Dataset {
    Dataset::builder(TEST_SERVICE, relays)
        .repos(3)
        .foreign_repos(2)
        .issues(3)
        .patches(2)
        .prs(2)
        .comments(2)
        .build()
}

/// Syncs `ds` from relays that already hold it: everything expected
/// arrives and every target is confirmed within `timeout`, and nothing
/// unrelated is stored.
pub async fn assert_full_historic_sync(ds: &Dataset, timeout: Duration) {
    let mut sync = SyncUnderTest::start(ds, |_| {}).await;
    sync.wait_for(&ds.expected(), timeout).await;
    sync.wait_confirmed(timeout).await;
    sync.assert_none_of(&ds.unrelated()).await;
    sync.shutdown().await;
}

/// The configuration the tests run with: private addresses allowed (the
/// relays are on 127.0.0.1) and fast timings.
pub fn test_config(service: &str) -> IoConfig {
    let mut engine = Config::new(ServiceId::parse(service).expect("service domain"));
    engine.allow_private = true;
    let t = &mut engine.timing;
    t.backoff_initial = Duration::from_millis(300);
    t.backoff_max = Duration::from_secs(2);
    t.batch_delay = Duration::from_millis(50);
    t.rate_limit_cooldown = Duration::from_secs(2);
    t.rate_limit_cooldown_max = Duration::from_secs(4);
    t.historic_timeout = Duration::from_secs(5);
    let mut io = IoConfig::new(engine);
    io.net.connect_timeout = Duration::from_secs(3);
    io
}

/// A runner syncing into its own temporary store.
pub struct SyncUnderTest {
    /// The running sync (`None` after [`SyncUnderTest::shutdown`]).
    pub runner: Option<RunnerHandle>,
    /// Its store.
    pub store: Arc<LmdbStore>,
    dir: tempfile::TempDir,
}

impl SyncUnderTest {
    /// Starts a runner whose store already holds the hosted announcements
    /// of `ds` (the repos the service hosts), after `tweak` edits the
    /// configuration.
    pub async fn start(ds: &Dataset, tweak: impl FnOnce(&mut IoConfig)) -> SyncUnderTest {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            LmdbStore::open(&dir.path().join("db"))
                .await
                .expect("store"),
        );
        for repo in ds.repos() {
            store.save_event(&repo.announcement).await.expect("seed");
        }
        let mut config = test_config(ds.service());
        config.state_file = Some(dir.path().join("state.json"));
        tweak(&mut config);
        let runner = Runner::start(config, store.clone()).await.expect("runner");
        SyncUnderTest {
            runner: Some(runner),
            store,
            dir,
        }
    }

    /// Starts again on the same store and state file (a restart).
    pub async fn restart(&mut self, tweak: impl FnOnce(&mut IoConfig), service: &str) {
        self.shutdown().await;
        // Shutdown closed the store; open the same database again.
        self.store = Arc::new(
            LmdbStore::open(&self.dir.path().join("db"))
                .await
                .expect("reopen store"),
        );
        let mut config = test_config(service);
        config.state_file = Some(self.dir.path().join("state.json"));
        tweak(&mut config);
        self.runner = Some(
            Runner::start(config, self.store.clone())
                .await
                .expect("runner"),
        );
    }

    /// The runner.
    pub fn runner(&self) -> &RunnerHandle {
        self.runner.as_ref().expect("runner running")
    }

    /// The engine's status.
    pub async fn status(&self) -> Status {
        self.runner().status().await.expect("runner answers")
    }

    /// Every id in the store.
    pub async fn stored_ids(&self) -> BTreeSet<EventId> {
        self.stored().await.into_iter().map(|e| e.id).collect()
    }

    /// Every event in the store.
    pub async fn stored(&self) -> Vec<Event> {
        self.store.query(Filter::new()).await.expect("query")
    }

    /// Waits until every id of `ids` is stored; panics after `timeout`
    /// with what is missing and the runner's status. Returns how long it
    /// took.
    pub async fn wait_for(&self, ids: &BTreeSet<EventId>, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let have = self.stored_ids().await;
            let missing: Vec<&EventId> = ids.difference(&have).collect();
            if missing.is_empty() {
                return start.elapsed();
            }
            if start.elapsed() > timeout {
                let status = self.status().await;
                panic!(
                    "{} of {} events missing after {timeout:?} (first: {}); status: {:#?}",
                    missing.len(),
                    ids.len(),
                    missing[0],
                    status.relays
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the engine knows a relay and every relay has confirmed
    /// all its targets.
    pub async fn wait_confirmed(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            let status = self.status().await;
            // No relay known yet is not "every target confirmed".
            if !status.relays.is_empty()
                && status
                    .relays
                    .iter()
                    .all(|r| r.pending == 0 && r.confirmed == r.targets)
            {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "not confirmed after {timeout:?}: {:#?}",
                status.relays
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// [`SyncUnderTest::wait_confirmed`] that also checks, when every
    /// target is reported confirmed, that every event `ds` expects is
    /// stored: a target is never reported synced before its events are in.
    pub async fn wait_confirmed_truthfully(&self, ds: &Dataset, timeout: Duration) {
        let start = Instant::now();
        loop {
            let status = self.status().await;
            // No relay known yet is not "every target confirmed".
            let confirmed = !status.relays.is_empty()
                && status
                    .relays
                    .iter()
                    .all(|r| r.targets > 0 && r.pending == 0 && r.confirmed == r.targets);
            if confirmed {
                let missing = ds.expected().difference(&self.stored_ids().await).count();
                assert_eq!(
                    missing,
                    0,
                    "every target reported synced with {missing} of {} expected events not \
                     stored: {:#?}",
                    ds.expected().len(),
                    status.relays
                );
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "not confirmed after {timeout:?}: {:#?}",
                status.relays
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Asserts that none of `ids` is stored.
    pub async fn assert_none_of(&self, ids: &BTreeSet<EventId>) {
        let have = self.stored_ids().await;
        let wrong: Vec<&EventId> = ids.intersection(&have).collect();
        assert!(
            wrong.is_empty(),
            "{} unrelated events stored: {wrong:?}",
            wrong.len()
        );
    }

    /// Shuts the runner down cleanly (state saved).
    pub async fn shutdown(&mut self) {
        if let Some(runner) = self.runner.take() {
            runner.shutdown().await.expect("clean shutdown");
        }
    }
}
