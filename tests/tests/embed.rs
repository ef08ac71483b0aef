//! The sync embedded in a relay: the `grasp_relay` example (a
//! nostr-relay-builder 0.44 relay whose write policy is the GRASP
//! acceptance rule and whose database is the sync's store), started
//! in-process against a LocalRelay remote.

use std::collections::BTreeSet;
use std::time::Duration;

use grasp_sync_core::RelayUrl;
use grasp_sync_io::{RunnerBuilder, RunnerHandle};
use grasp_sync_sim::signed::Dataset;
use grasp_sync_testkit::relays::client::{self, free_port, RelayClient};
use grasp_sync_testkit::relays::local::LocalRelayHarness;
use grasp_sync_testkit::sync::test_config;
use nostr::event::{Event, EventId, Kind};
use nostr::filter::Filter;
use nostr::types::Timestamp;

#[path = "../testkit/examples/grasp_relay.rs"]
#[allow(dead_code)] // its `main`
mod grasp_relay;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until the relay at `url` serves every id of `ids`; panics with
/// what is missing and the sync's status after [`TIMEOUT`].
async fn wait_served(url: &str, ids: &BTreeSet<EventId>, sync: &RunnerHandle) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let missing = client::missing(url, ids).await;
        if missing.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "{} of {} events not served by {url} after {TIMEOUT:?}; status: {:#?}",
                missing.len(),
                ids.len(),
                sync.status().await.map(|s| s.relays)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next `EVENT` for `sub` within `timeout`.
async fn next_event(client: &mut RelayClient, sub: &str, timeout: Duration) -> Option<Event> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let v = client.recv_json(left).await?;
        if let Some([verb, s, event, ..]) = v.as_array().map(Vec::as_slice) {
            if verb == "EVENT" && s == sub {
                return Some(serde_json::from_value::<Event>(event.clone()).expect("event"));
            }
        }
    }
}

/// History from the remote (a repository found on the bootstrap relay, and
/// one announced only on the service itself, through its write policy),
/// nothing unrelated, refusals by the write policy, and a live event on the
/// remote reaching a subscriber of the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_relay_syncs_history_live_and_its_own_announcements() {
    let remote = LocalRelayHarness::start().await;
    let port = free_port();
    let service = format!("127.0.0.1:{port}");
    let mut ds = Dataset::builder(&service, &[remote.url()])
        .repos(2)
        .foreign_repos(1)
        .issues(2)
        .patches(1)
        .prs(1)
        .comments(1)
        .build();
    // Repository 1 is announced on the service only; everything else, its
    // issues and comments included, is on the remote.
    let announced_here = ds.repos()[1].announcement.clone();
    let on_remote: Vec<Event> = ds
        .events()
        .iter()
        .filter(|e| e.id != announced_here.id)
        .cloned()
        .collect();
    remote.publish(&on_remote).await;

    let sync = RunnerBuilder::new(test_config(&service))
        .bootstrap(RelayUrl::parse(&remote.url()).expect("remote url"));
    let grasp = grasp_relay::start(port, sync).await.expect("grasp relay");
    assert_eq!(grasp.url, format!("ws://{service}"));

    // The write policy: a repository announced here is taken and synced; an
    // event about nothing hosted is refused.
    let report = client::publish(&grasp.url, std::slice::from_ref(&announced_here)).await;
    assert_eq!(report.accepted, 1);
    let stranger = ds.foreign_repos()[0].roots[0].clone();
    let refused = RelayClient::connect(&grasp.url)
        .await
        .try_publish(&[stranger])
        .await
        .expect_err("an unrelated event is refused");
    assert!(refused.contains("blocked:"), "{refused}");

    wait_served(&grasp.url, &ds.expected(), &grasp.sync).await;
    let unrelated = ds.unrelated();
    assert_eq!(
        client::missing(&grasp.url, &unrelated).await,
        unrelated,
        "unrelated events were stored"
    );
    let status = grasp.sync.status().await.expect("the sync runs");
    assert_eq!(status.repos, 2, "both repositories hosted");

    // Live: a subscriber of the service sees an issue published on the
    // remote after the history, through the sync and the store's hook.
    let mut subscriber = RelayClient::connect(&grasp.url).await;
    let since = Timestamp::from_secs(Timestamp::now().as_secs() - 60);
    subscriber
        .send_req(
            "live",
            &[Filter::new().kind(Kind::from(1621u16)).since(since)],
        )
        .await;
    let live = ds.live_issue(1);
    remote.publish(std::slice::from_ref(&live)).await;
    let seen = next_event(&mut subscriber, "live", Duration::from_secs(10)).await;
    assert_eq!(seen.map(|e| e.id), Some(live.id), "the subscriber saw it");
    wait_served(&grasp.url, &ds.expected(), &grasp.sync).await;

    grasp.shutdown().await.expect("clean shutdown");
}

/// The README's embedding section shows the example's glue as it is: the
/// lines marked `// sync` there are the example's, all 11 of them.
#[test]
fn readme_shows_the_examples_glue() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../testkit/examples/grasp_relay.rs");
    let block = readme
        .split("```rust,ignore\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the README shows the example");
    let glue = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.split_once(" // sync"))
            .filter(|(code, _)| !code.trim_start().starts_with("//"))
            .map(|(code, _)| code.trim().to_owned())
            .collect()
    };
    let (shown, written) = (glue(block), glue(example));
    assert_eq!(written.len(), 11, "the example's glue: {written:#?}");
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(shown), sorted(written), "README and example differ");
}
