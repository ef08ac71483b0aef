//! The real runner against nostr-rs-relay 0.8.12 (a child process, see
//! `grasp_sync_testkit::relays::nostr_rs`) over real websockets on
//! 127.0.0.1: the first-sync tests of `sync_relays.rs` on a third
//! implementation, and the two quirks of this relay that have cost stalls
//! before: a REQ that reuses an open subscription id is ignored silently,
//! and a REQ whose filters all say `limit: 0` never gets `EOSE`.
//!
//! Timing bounds are generous (the machine is noisy); what is asserted is
//! the outcome, and that no historic REQ had to be waited out.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use grasp_sync_core::{GiveUpReason, Nip77Support, RefusalReason, RelayStatus, Timing};
use grasp_sync_io::IoConfig;
use grasp_sync_sim::signed::{Bulk, BulkKind, Dataset};
use grasp_sync_testkit::relays::client::{FetchEnd, RelayClient};
use grasp_sync_testkit::relays::nostr_rs::NostrRsRelayHarness;
use grasp_sync_testkit::sync::{
    assert_full_historic_sync, first_sync_dataset, SyncUnderTest, TEST_SERVICE,
};
use nostr::filter::Filter;
use nostr::types::Timestamp;

const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Issues in the burst that shares one second.
const BURST: usize = 700;

/// The status of the only relay (`None` before the engine has learnt it
/// from the announcements).
async fn only_relay(sync: &SyncUnderTest) -> Option<RelayStatus> {
    let mut relays = sync.status().await.relays;
    assert!(relays.len() <= 1, "one relay: {relays:#?}");
    relays.pop()
}

/// The status of the only relay, which the engine knows by now.
async fn relay_status(sync: &SyncUnderTest) -> RelayStatus {
    only_relay(sync).await.expect("the relay is known")
}

/// The engine's own historic timeout (60 s), not the tests' 5 s: a REQ the
/// relay ignores would then cost a minute, which the bounds below catch.
fn default_historic_timeout(config: &mut IoConfig) {
    config.engine.timing.historic_timeout = Timing::default().historic_timeout;
}

/// The quirks the tests below exist for still hold on this build: a REQ
/// whose filters all say `limit: 0` gets no `EOSE`, and a REQ reusing the
/// id of an open subscription (with the same filters) gets no answer at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_rs_relay_quirks_hold() {
    let relay = NostrRsRelayHarness::start().await;
    let ds = first_sync_dataset(&[relay.url()]);
    relay.publish(ds.events()).await;
    assert_eq!(relay.count(Filter::new()).await, ds.events().len());

    let mut client = RelayClient::connect(&relay.url()).await;
    let live = Filter::new().since(Timestamp::now()).limit(0);
    let (events, end) = client
        .fetch_raw(&[live.clone(), live], Duration::from_secs(2))
        .await;
    assert_eq!(
        (events.len(), end),
        (0, FetchEnd::Timeout),
        "a REQ of limit:0 filters got an answer"
    );

    let page = Filter::new().limit(10);
    client.send_req("page", std::slice::from_ref(&page)).await;
    let (first, _) = client.drain(Duration::from_secs(2)).await;
    assert!(
        first.iter().any(|m| m.starts_with(r#"["EOSE","page""#)),
        "first REQ answered: {first:?}"
    );
    client.send_req("page", &[page]).await;
    let (again, closed) = client.drain(Duration::from_secs(2)).await;
    assert!(
        again.is_empty() && !closed,
        "the same REQ on an open id is ignored silently: {again:?}"
    );
    client.close().await;
}

/// Historic sync of announcements, state, issues, patches, PRs, statuses,
/// comments and replies; nothing of foreign repos.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn historic_sync_from_nostr_rs_relay() {
    let relay = NostrRsRelayHarness::start().await;
    let ds = first_sync_dataset(&[relay.url()]);
    relay.publish(ds.events()).await;
    assert_full_historic_sync(&ds, SYNC_TIMEOUT).await;
}

/// 700 issues in one second behind pages of 200: the one-second page is
/// asked again with a doubled limit (400, then 800) on this relay, which
/// keeps every subscription open after `EOSE`. Everything is stored, the
/// targets are confirmed only once it is, and in seconds: no page waits
/// out the 60 s historic timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_in_one_second_beyond_a_page() {
    let relay = NostrRsRelayHarness::start().await;
    let mut ds = first_sync_dataset(&[relay.url()]);
    let burst = ds.add_bulk(
        Bulk::new(0, BURST)
            .kind(BulkKind::Issues)
            .same_second(BURST),
    );
    relay.publish(ds.events()).await;

    let started = Instant::now();
    let mut sync = SyncUnderTest::start(&ds, |c| {
        c.engine.default_budget.page_limit = 200;
        c.engine.default_budget.max_page_limit = 800;
        default_historic_timeout(c);
    })
    .await;
    sync.wait_for(&ds.expected(), SYNC_TIMEOUT).await;
    sync.wait_confirmed_truthfully(&ds, SYNC_TIMEOUT).await;
    let took = started.elapsed();
    let status = relay_status(&sync).await;
    eprintln!(
        "{} events ({BURST} in one second) synced and confirmed in {took:?}; {:?}",
        ds.expected().len(),
        status.stats
    );
    assert_eq!(
        status.stats.timeouts, 0,
        "a REQ was waited out: {status:#?}"
    );
    assert!(burst.iter().all(|e| ds.expected().contains(&e.id)));
    sync.assert_none_of(&ds.unrelated()).await;
    sync.shutdown().await;
}

/// The same burst when the largest `limit` we may ask (400) cannot show the
/// whole second: its repo's issues are not provably complete, so the target
/// is given up as incomplete, never reported synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_beyond_the_largest_page_is_never_reported_synced() {
    let relay = NostrRsRelayHarness::start().await;
    let mut ds = first_sync_dataset(&[relay.url()]);
    let burst = ds.add_bulk(
        Bulk::new(0, BURST)
            .kind(BulkKind::Issues)
            .same_second(BURST),
    );
    relay.publish(ds.events()).await;

    let mut sync = SyncUnderTest::start(&ds, |c| {
        c.engine.default_budget.page_limit = 200;
        c.engine.default_budget.max_page_limit = 400;
        default_historic_timeout(c);
    })
    .await;
    let start = Instant::now();
    let status = loop {
        let Some(status) = only_relay(&sync).await else {
            assert!(
                start.elapsed() < SYNC_TIMEOUT,
                "no relay after {SYNC_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let stored = sync.stored_ids().await;
        let burst_stored = burst.iter().filter(|e| stored.contains(&e.id)).count();
        assert!(
            status.confirmed < status.targets || burst_stored == BURST,
            "all targets reported synced with {burst_stored} of the {BURST} burst stored: \
             {status:#?}"
        );
        if status.pending == 0 && !status.given_up.is_empty() {
            break status;
        }
        assert!(
            start.elapsed() < SYNC_TIMEOUT,
            "historic work not settled after {SYNC_TIMEOUT:?}: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "settled after {:?}: given up {:?}, {} of {} confirmed",
        start.elapsed(),
        status.given_up,
        status.confirmed,
        status.targets
    );
    assert!(
        status.given_up.contains_key(&GiveUpReason::Incomplete),
        "given up as incomplete: {status:#?}"
    );
    let stored = sync.stored_ids().await;
    let burst_stored = burst.iter().filter(|e| stored.contains(&e.id)).count();
    assert!(
        burst_stored < BURST && status.confirmed < status.targets,
        "{burst_stored} of the burst stored, {} of {} targets confirmed",
        status.confirmed,
        status.targets
    );
    assert_eq!(
        status.stats.timeouts, 0,
        "a REQ was waited out: {status:#?}"
    );
    sync.shutdown().await;
}

/// New events published after the first sync arrive through the live
/// subscriptions, whose REQs (all filters `limit: 0`) this relay never
/// answers with `EOSE`: waiting longer than the historic timeout first
/// shows that silence is neither timed out nor blamed, and the connection
/// is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_arrive_on_unanswered_live_reqs() {
    let relay = NostrRsRelayHarness::start().await;
    let mut ds = first_sync_dataset(&[relay.url()]);
    relay.publish(ds.events()).await;
    let mut sync = SyncUnderTest::start(&ds, |_| {}).await;
    sync.wait_for(&ds.expected(), SYNC_TIMEOUT).await;
    sync.wait_confirmed(SYNC_TIMEOUT).await;

    let historic_timeout = grasp_sync_testkit::sync::test_config(TEST_SERVICE)
        .engine
        .timing
        .historic_timeout;
    tokio::time::sleep(historic_timeout + Duration::from_secs(1)).await;
    let quiet = relay_status(&sync).await;
    assert!(quiet.open_subscriptions > 0, "live REQs open: {quiet:#?}");

    let issue = ds.live_issue(0);
    relay.publish(std::slice::from_ref(&issue)).await;
    let took = sync
        .wait_for(&BTreeSet::from([issue.id]), Duration::from_secs(10))
        .await;
    eprintln!("live issue via nostr-rs-relay arrived in {took:?}");
    let comment = ds.live_comment(1);
    relay.publish(std::slice::from_ref(&comment)).await;
    let took = sync
        .wait_for(&BTreeSet::from([comment.id]), Duration::from_secs(10))
        .await;
    eprintln!("live comment via nostr-rs-relay arrived in {took:?}");

    let status = relay_status(&sync).await;
    assert_eq!(status.stats.timeouts, 0, "a REQ timed out: {status:#?}");
    // The one refusal expected: NEG-OPEN answered by NOTICE "could not
    // parse command" (this relay has no NIP-77). Nothing blamed on a REQ.
    assert_eq!(status.nip77, Nip77Support::Unsupported);
    assert!(
        status
            .stats
            .refusals
            .keys()
            .all(|r| *r == RefusalReason::Notice),
        "REQs refused: {status:#?}\nrelay log:\n{}",
        relay.log()
    );
    assert_eq!(status.live_uncovered, 0, "live coverage: {status:#?}");
    assert_eq!(status.stats.connects, 1, "reconnected: {status:#?}");
    sync.shutdown().await;
}

/// 1,500 issues one second apart, in pages of 200: eight pages of the
/// repo's `#a` filter, while other filters of the same REQs (`#A`, `#d`)
/// bring back the repo's older events, some of which also match `#a`.
/// Everything arrives and is confirmed only once stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pages_of_issues_one_second_apart() {
    let relay = NostrRsRelayHarness::start().await;
    let mut ds = Dataset::builder(TEST_SERVICE, &[relay.url()])
        .repos(1)
        .foreign_repos(0)
        .issues(0)
        .patches(0)
        .prs(0)
        .comments(0)
        .build();
    ds.add_bulk(Bulk::new(0, 1500).kind(BulkKind::Issues).same_second(0));
    relay.publish(ds.events()).await;
    let mut sync = SyncUnderTest::start(&ds, |c| {
        c.engine.default_budget.page_limit = 200;
        default_historic_timeout(c);
    })
    .await;
    sync.wait_for(&ds.expected(), SYNC_TIMEOUT).await;
    sync.wait_confirmed_truthfully(&ds, SYNC_TIMEOUT).await;
    let status = relay_status(&sync).await;
    assert_eq!(
        status.stats.timeouts, 0,
        "a REQ was waited out: {status:#?}"
    );
    sync.shutdown().await;
}
