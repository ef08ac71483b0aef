//! The real runner against real relays over real websockets on 127.0.0.1:
//! rust-nostr's LocalRelay (in-process), the PyPI `nostr-relay` (a child
//! process) and a hostile relay written for these tests.

use std::collections::BTreeSet;
use std::time::Duration;

use grasp_sync_sim::signed::{Bulk, BulkKind, Dataset};
use grasp_sync_testkit::relays::hostile::HostileRelay;
use grasp_sync_testkit::relays::local::{LocalOptions, LocalRelayHarness};
use grasp_sync_testkit::relays::python::PythonRelay;
use grasp_sync_testkit::sync::{
    assert_full_historic_sync, first_sync_dataset, SyncUnderTest, TEST_SERVICE,
};

const SERVICE: &str = TEST_SERVICE;
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Historic sync of announcements, state, issues, patches, PRs, statuses
/// and comments through every tag variant; nothing of foreign repos.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn historic_sync_from_local_relay() {
    let relay = LocalRelayHarness::start().await;
    let ds = first_sync_dataset(&[relay.url()]);
    relay.publish(ds.events()).await;
    assert_full_historic_sync(&ds, SYNC_TIMEOUT).await;
}

/// The same against an independent implementation (Python, sqlite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn historic_sync_from_python_relay() {
    let relay = PythonRelay::start().await;
    let ds = first_sync_dataset(&[relay.url()]);
    relay.publish(ds.events()).await;
    assert_full_historic_sync(&ds, SYNC_TIMEOUT).await;
}

/// Events spread over two different relay implementations: only a sync
/// that reads both gets everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_split_over_two_implementations() {
    let local = LocalRelayHarness::start().await;
    let python = PythonRelay::start().await;
    let ds = first_sync_dataset(&[local.url(), python.url()]);
    let parts = ds.partition(2);
    local.publish(&parts[0]).await;
    python.publish(&parts[1]).await;
    let mut sync = SyncUnderTest::start(&ds, |_| {}).await;
    sync.wait_for(&ds.expected(), SYNC_TIMEOUT).await;
    sync.assert_none_of(&ds.unrelated()).await;
    sync.shutdown().await;
}

/// A new event published after the historic sync reaches the store
/// within 2 s through the live subscriptions, on both implementations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_arrive_within_two_seconds() {
    let local = LocalRelayHarness::start().await;
    let python = PythonRelay::start().await;
    let mut ds = first_sync_dataset(&[local.url(), python.url()]);
    local.publish(ds.events()).await;
    let mut sync = SyncUnderTest::start(&ds, |_| {}).await;
    sync.wait_for(&ds.expected(), SYNC_TIMEOUT).await;
    sync.wait_confirmed(SYNC_TIMEOUT).await;

    let issue = ds.live_issue(0);
    local.publish(std::slice::from_ref(&issue)).await;
    let took = sync
        .wait_for(&BTreeSet::from([issue.id]), Duration::from_secs(2))
        .await;
    eprintln!("live issue via LocalRelay arrived in {took:?}");

    let comment = ds.live_comment(1);
    python.publish(std::slice::from_ref(&comment)).await;
    let took = sync
        .wait_for(&BTreeSet::from([comment.id]), Duration::from_secs(2))
        .await;
    eprintln!("live comment via nostr-relay arrived in {took:?}");
    sync.shutdown().await;
}

/// 1,200 events behind a relay that silently caps every page at 500, 300
/// of them sharing one second so that a page boundary falls inside the
/// burst (the tie rule of paging). (A burst larger than the relay's cap in
/// one second cannot be paged with `limit`/`until` at all; NIP-77 is the
/// way to reconcile that.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_behind_a_page_cap() {
    let relay = LocalRelayHarness::start_with(LocalOptions {
        max_filter_limit: Some(500),
        ..LocalOptions::default()
    })
    .await;
    let mut ds = first_sync_dataset(&[relay.url()]);
    let bulk = ds.add_bulk(Bulk::new(0, 1_200).same_second(300));
    relay.publish(ds.events()).await;
    assert!(bulk.len() >= 1_200);
    let mut sync = SyncUnderTest::start(&ds, |_| {}).await;
    sync.wait_for(&ds.expected(), SYNC_TIMEOUT).await;
    sync.wait_confirmed(SYNC_TIMEOUT).await;
    sync.shutdown().await;
}

/// 1,500 issues one second apart behind a relay that silently caps every
/// page at 200 while we ask for 500 (the once bench's scenario (c)).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_behind_a_page_cap_below_the_limit_asked() {
    let relay = LocalRelayHarness::start_with(LocalOptions {
        max_filter_limit: Some(200),
        ..LocalOptions::default()
    })
    .await;
    let mut ds = Dataset::builder(SERVICE, &[relay.url()])
        .repos(1)
        .foreign_repos(0)
        .issues(0)
        .patches(0)
        .prs(0)
        .comments(0)
        .build();
    ds.add_bulk(Bulk::new(0, 1_500).kind(BulkKind::Issues).same_second(0));
    relay.insert(ds.events()).await;
    let mut sync = SyncUnderTest::start(&ds, |_| {}).await;
    // Confirmed targets must come with their events: look at both together.
    sync.wait_confirmed_truthfully(&ds, SYNC_TIMEOUT).await;
    sync.shutdown().await;
}

/// A remote that goes down and comes back is caught up, including what it
/// received while we were away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_restart_is_caught_up() {
    let mut relay = LocalRelayHarness::start().await;
    let mut ds = first_sync_dataset(&[relay.url()]);
    relay.publish(ds.events()).await;
    let mut sync = SyncUnderTest::start(&ds, |_| {}).await;
    sync.wait_for(&ds.expected(), SYNC_TIMEOUT).await;
    sync.wait_confirmed(SYNC_TIMEOUT).await;

    relay.stop().await;
    // Written to its database while it was down: no live subscription
    // could have delivered these.
    let missed = vec![ds.live_issue(0), ds.live_comment(2)];
    relay.insert(&missed).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.start_again().await;
    let ids: BTreeSet<_> = missed.iter().map(|e| e.id).collect();
    sync.wait_for(&ids, SYNC_TIMEOUT).await;

    // And live again afterwards.
    let after = ds.live_issue(1);
    relay.publish(std::slice::from_ref(&after)).await;
    sync.wait_for(&BTreeSet::from([after.id]), Duration::from_secs(5))
        .await;
    sync.shutdown().await;
}

/// Our own restart: the saved state makes it a quick reconnect, and what
/// was published while we were down arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_restart_resumes_from_saved_state() {
    let relay = LocalRelayHarness::start().await;
    let mut ds = first_sync_dataset(&[relay.url()]);
    relay.publish(ds.events()).await;
    let mut sync = SyncUnderTest::start(&ds, |_| {}).await;
    sync.wait_for(&ds.expected(), SYNC_TIMEOUT).await;
    sync.wait_confirmed(SYNC_TIMEOUT).await;
    sync.shutdown().await;

    let missed = ds.live_issue(2);
    relay.publish(std::slice::from_ref(&missed)).await;
    sync.restart(|_| {}, SERVICE).await;
    let status = sync.status().await;
    assert!(
        status.relays.iter().all(|r| r.last_connected.is_some()),
        "state restored: {:#?}",
        status.relays
    );
    sync.wait_for(&BTreeSet::from([missed.id]), SYNC_TIMEOUT)
        .await;
    sync.shutdown().await;
}

/// A relay that answers the first REQs with `CLOSED rate-limited:` is
/// synced after its cool-down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_relay_synced_after_cool_down() {
    let mut relay = HostileRelay::builder().rate_limited_first(2).start().await;
    let ds = first_sync_dataset(&[relay.url()]);
    relay.push(ds.events());
    let mut sync = SyncUnderTest::start(&ds, |_| {}).await;
    sync.wait_for(&ds.expected(), SYNC_TIMEOUT).await;
    sync.wait_confirmed(SYNC_TIMEOUT).await;
    let status = sync.status().await;
    let refused: u64 = status.relays[0].stats.refusals.values().sum();
    assert!(
        refused >= 1,
        "refusals seen: {:?}",
        status.relays[0].stats.refusals
    );
    assert!(relay.reqs().iter().any(|r| r.refused));
    sync.assert_none_of(&ds.unrelated()).await;
    sync.shutdown().await;
    relay.stop().await;
}

/// A hostile relay (forged signatures, events outside the filter, events
/// for subscriptions never opened, malformed JSON, an oversized frame and
/// a flood) gets nothing into the store and does not disturb the sync from
/// an honest relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_relay_gets_nothing_in() {
    let honest = LocalRelayHarness::start().await;
    // The hostile relay's URL must be in the announcements, so build the
    // dataset around a placeholder first and the relay around the data.
    let probe = HostileRelay::honest(Vec::new()).await;
    let hostile_url = probe.url();
    drop(probe);
    let mut ds = first_sync_dataset(&[honest.url(), hostile_url.clone()]);
    let forged: Vec<_> = ds
        .expected_events()
        .iter()
        .map(grasp_sync_sim::signed::forge_signature)
        .collect();
    let outside = ds.unrelated_events();
    let extra = ds.add_bulk(Bulk::new(1, 50));
    honest.publish(ds.events()).await;
    let mut hostile = HostileRelay::builder()
        .forged_signatures(forged.clone())
        .outside_filter(outside)
        .unknown_subscription(extra.clone())
        .garbage()
        .oversized(2 << 20)
        .flood_like(20_000, forged[0].clone())
        .start_on_port(url_port(&hostile_url))
        .await;

    let mut sync = SyncUnderTest::start(&ds, |_| {}).await;
    sync.wait_for(&ds.expected(), SYNC_TIMEOUT).await;
    // Give the hostile relay time to do its worst, then look.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sync.assert_none_of(&ds.unrelated()).await;
    let stored = sync.stored().await;
    let forged_ids: BTreeSet<_> = forged.iter().map(|e| e.id).collect();
    for event in &stored {
        assert!(
            event.verify().is_ok(),
            "stored an invalid event {}",
            event.id
        );
        if forged_ids.contains(&event.id) {
            // Same id as a genuine event: it must be the genuine one.
            assert_eq!(Some(event), ds.event(&event.id));
        }
    }
    let status = sync.status().await;
    let h = status
        .relays
        .iter()
        .find(|r| r.url.as_str().trim_end_matches('/') == hostile_url.trim_end_matches('/'))
        .expect("hostile relay known");
    assert!(
        h.stats.events_invalid + h.stats.events_unrequested + h.stats.events_unmatched > 0,
        "hostile traffic counted: {:?}",
        h.stats
    );
    let io = sync.runner().io_counters().await.unwrap();
    eprintln!(
        "hostile relay: {:?}; io: {:?}",
        h.stats,
        io.per_relay.get(&h.url)
    );
    sync.shutdown().await;
    hostile.stop().await;
}

fn url_port(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("port in url")
}

/// The local-relay sink: the runner publishes into the service's own relay
/// and learns the hosted repos from that relay's catalog subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_feeds_the_services_own_relay() {
    use grasp_sync_core::RelayUrl;
    use grasp_sync_io::store::relay_sink::RelaySink;
    use std::sync::Arc;

    let ours = LocalRelayHarness::start().await;
    let remote = PythonRelay::start().await;
    let mut ds = first_sync_dataset(&[remote.url()]);
    remote.publish(ds.events()).await;
    // The service's relay holds what it hosts: the announcements.
    let hosted: Vec<_> = ds.repos().iter().map(|r| r.announcement.clone()).collect();
    ours.publish(&hosted).await;

    let config = grasp_sync_testkit::sync::test_config(SERVICE);
    let sink = RelaySink::start(RelayUrl::parse(&ours.url()).unwrap(), config.net.clone());
    let runner = grasp_sync_io::Runner::start(config, Arc::new(sink))
        .await
        .unwrap();
    let expected = ds.expected();
    let deadline = std::time::Instant::now() + SYNC_TIMEOUT;
    loop {
        let missing = ours.missing(&expected).await;
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} missing in the local relay",
            missing.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in ds.unrelated() {
        assert!(
            ours.missing(&BTreeSet::from([id])).await.len() == 1,
            "unrelated {id} published"
        );
    }
    // Live through the sink too.
    let issue = ds.live_issue(0);
    remote.publish(std::slice::from_ref(&issue)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !ours.missing(&BTreeSet::from([issue.id])).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "live event not in the local relay"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    runner.shutdown().await.unwrap();
}
