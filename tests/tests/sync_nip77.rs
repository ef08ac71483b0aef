//! NIP-77 against real relays on 127.0.0.1: rust-nostr's LocalRelay speaks
//! NIP-77 without listing 77 in NIP-11 (so support is found by a probe),
//! the PyPI `nostr-relay` and the hostile relay do not (so the engine falls
//! back to paged REQ). What crossed the wire is read from the runner's I/O
//! counters.

use std::collections::BTreeSet;
use std::time::Duration;

use grasp_sync_core::{Nip77Support, RelayUrl};
use grasp_sync_io::metrics::RelayIoCounters;
use grasp_sync_sim::signed::Dataset;
use grasp_sync_testkit::relays::hostile::HostileRelay;
use grasp_sync_testkit::relays::local::{LocalOptions, LocalRelayHarness};
use grasp_sync_testkit::relays::python::PythonRelay;
use grasp_sync_testkit::sync::SyncUnderTest;
use nostr::event::{Event, EventId};

const SERVICE: &str = "git.example.com";
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

fn dataset(relays: &[String]) -> Dataset {
    Dataset::builder(SERVICE, relays)
        .repos(3)
        .foreign_repos(2)
        .issues(4)
        .patches(2)
        .prs(2)
        .comments(3)
        .build()
}

async fn io_of(sync: &SyncUnderTest, relay: &str) -> RelayIoCounters {
    let url = RelayUrl::parse(relay).expect("relay url");
    let io = sync.runner().io_counters().await.expect("runner answers");
    io.per_relay.get(&url).cloned().unwrap_or_default()
}

/// Syncs until every expected event is stored and every target confirmed.
async fn sync_fully(sync: &SyncUnderTest, ds: &Dataset) {
    sync.wait_for(&ds.expected(), SYNC_TIMEOUT).await;
    sync.wait_confirmed(SYNC_TIMEOUT).await;
}

/// Waits until the relay is live again with a finished pass behind it:
/// after a restart the confirmed targets come back from the snapshot, so
/// "all confirmed" alone does not say the new pass ran.
async fn wait_pass_done(sync: &SyncUnderTest) -> grasp_sync_core::RelayStatus {
    let deadline = tokio::time::Instant::now() + SYNC_TIMEOUT;
    loop {
        let st = sync.status().await.relays[0].clone();
        if st.state == grasp_sync_core::RelayState::Live
            && st.stats.reconciliations > 0
            && st.pending == 0
            && st.queued_batches == 0
        {
            return st;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pass did not finish: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A restart from the saved state that runs a full historic pass (as after
/// a long stop, or at the daily pass): no quick-reconnect window.
async fn restart_for_a_full_pass(sync: &mut SyncUnderTest) {
    sync.restart(
        |c| {
            c.engine.nip77 = true;
            c.engine.timing.quick_reconnect_window = Duration::ZERO;
        },
        SERVICE,
    )
    .await;
}

/// First sync by probe and NIP-77; a second full pass over the unchanged
/// relay receives no EVENT at all (not even the foreign announcements the
/// store rejected the first time: they are remembered as NIP-77 items); after 10 new events are published while
/// we are away, the next full pass receives exactly those 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_relay_resync_costs_only_what_changed() {
    // `RUST_LOG=grasp_sync_io=debug` shows the frames' story.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let relay = LocalRelayHarness::start().await;
    let mut ds = dataset(&[relay.url()]);
    relay.publish(ds.events()).await;

    let mut sync = SyncUnderTest::start(&ds, |c| c.engine.nip77 = true).await;
    sync_fully(&sync, &ds).await;
    let status = sync.status().await;
    let st = &status.relays[0];
    assert_eq!(st.nip77, Nip77Support::Supported, "{st:#?}");
    assert!(st.stats.reconciliations > 0);
    assert_eq!(st.stats.reconcile_fallbacks, 0, "{st:#?}");
    assert!(st.stats.refusals.is_empty(), "{st:#?}");
    let first = io_of(&sync, &relay.url()).await;
    assert!(first.event_frames_received > 0);
    eprintln!(
        "first sync: {} EVENT frames, {} bytes in, {} bytes out",
        first.event_frames_received, first.bytes_received, first.bytes_sent
    );

    // Second full pass, nothing changed: no EVENT crosses the wire.
    restart_for_a_full_pass(&mut sync).await;
    sync_fully(&sync, &ds).await;
    let st = wait_pass_done(&sync).await;
    let second = io_of(&sync, &relay.url()).await;
    assert!(st.stats.reconciliations > 0, "{st:#?}");
    assert_eq!(st.stats.reconcile_ids_needed, 0, "{st:#?}");
    assert_eq!(
        second.event_frames_received, 0,
        "an unchanged relay sent events: {second:?}"
    );
    eprintln!(
        "unchanged re-sync: {} bytes in, {} bytes out",
        second.bytes_received, second.bytes_sent
    );

    // Ten new events while we are away (older than the live window, so
    // only a historic pass can find them).
    sync.shutdown().await;
    let base = ds.base_time();
    let new: Vec<Event> = (0..10u64)
        .map(|i| ds.new_issue((i % 3) as usize, base + 3_600 + i))
        .collect();
    relay.publish(&new).await;
    let new_ids: BTreeSet<EventId> = new.iter().map(|e| e.id).collect();
    restart_for_a_full_pass(&mut sync).await;
    sync.wait_for(&new_ids, SYNC_TIMEOUT).await;
    sync.wait_confirmed(SYNC_TIMEOUT).await;
    let st = wait_pass_done(&sync).await;
    let third = io_of(&sync, &relay.url()).await;
    assert_eq!(st.stats.reconcile_ids_needed, 10, "{st:#?}");
    assert_eq!(
        third.event_frames_received, 10,
        "exactly the 10 new events: {third:?}"
    );
    sync.shutdown().await;
}

/// The PyPI relay does not speak NIP-77: the probe fails, the relay is
/// synced with paged REQ, and it is remembered as unsupported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_nip77_still_syncs() {
    let relay = PythonRelay::start().await;
    let ds = dataset(&[relay.url()]);
    relay.publish(ds.events()).await;
    let mut sync = SyncUnderTest::start(&ds, |c| c.engine.nip77 = true).await;
    sync_fully(&sync, &ds).await;
    sync.assert_none_of(&ds.unrelated()).await;
    let st = sync.status().await.relays[0].clone();
    assert_eq!(st.nip77, Nip77Support::Unsupported, "{st:#?}");
    assert!(st.stats.reconcile_fallbacks > 0);
    sync.shutdown().await;
}

/// The hostile relay answers NEG-OPEN with "unknown or malformed message":
/// the engine falls back and syncs what it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_answering_neg_open_with_a_notice_still_syncs() {
    let probe = HostileRelay::honest(Vec::new()).await;
    let url = probe.url();
    drop(probe);
    let ds = dataset(std::slice::from_ref(&url));
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let _relay = HostileRelay::builder()
        .events(ds.events().to_vec())
        .start_on_port(port)
        .await;
    let mut sync = SyncUnderTest::start(&ds, |c| c.engine.nip77 = true).await;
    sync_fully(&sync, &ds).await;
    let st = sync.status().await.relays[0].clone();
    assert_eq!(st.nip77, Nip77Support::Unsupported, "{st:#?}");
    sync.shutdown().await;
}

/// A first sync from two NIP-77 relays that share every target, from an
/// empty store, one of them capping every filter at 5 events (the
/// `{"ids":…}` fetches too): everything arrives. Found by `grasp-sync demo`,
/// where ids a capped relay withheld were counted as received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_from_two_relays_one_capping_pages() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let a = LocalRelayHarness::start().await;
    let b = LocalRelayHarness::start_with(LocalOptions {
        max_filter_limit: Some(5),
        ..LocalOptions::default()
    })
    .await;
    let ds = dataset(&[a.url(), b.url()]);
    let parts = ds.partition(2);
    a.publish(&parts[0]).await;
    b.publish(&parts[1]).await;
    let mut sync = SyncUnderTest::start(&ds, |c| c.engine.nip77 = true).await;
    sync_fully(&sync, &ds).await;
    sync.assert_none_of(&ds.unrelated()).await;
    sync.shutdown().await;
}
