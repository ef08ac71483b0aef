//! Self-tests of the integration-test harness: the signed dataset's
//! invariants (signatures, determinism, what the engine would fetch and
//! accept), and each relay on 127.0.0.1 (LocalRelay, the PyPI nostr-relay,
//! the hostile relay) accepting a dataset and serving it back.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use grasp_sync_core::filters::{matches, FilterKind};
use grasp_sync_core::{Config, Engine, Input, Layer, ServiceId, TargetKey, Time};
use grasp_sync_sim::signed::{forge_signature, Bulk, BulkKind, Dataset, KIND_ISSUE};
use grasp_sync_testkit::relays::client::{self, FetchEnd, Incoming, RelayClient};
use grasp_sync_testkit::relays::hostile::{GARBAGE_FRAMES, RATE_LIMIT_MESSAGE};
use grasp_sync_testkit::relays::{
    wait_for, HostileRelay, LocalOptions, LocalRelayHarness, PythonRelay, TestRelay,
};
use nostr::event::{Event, EventId, Kind};
use nostr::filter::{Filter, SingleLetterTag};
use nostr::types::Timestamp;
use serde_json::Value;

const SERVICE: &str = "git.example.com";

fn fake_relays() -> Vec<String> {
    vec![
        "ws://127.0.0.1:7001".to_owned(),
        "ws://127.0.0.1:7002".to_owned(),
    ]
}

/// An engine that has seen every announcement and every acceptable root of `ds`.
fn engine_for(ds: &Dataset) -> Engine {
    let mut config = Config::new(ServiceId::parse(ds.service()).unwrap());
    config.allow_private = true;
    let mut engine = Engine::new(config);
    let now = Time::from_secs(ds.base_time() + 10 * 86_400);
    for a in ds.announcements() {
        engine.handle_input(now, Input::CatalogEvent(&a));
    }
    for e in ds.events() {
        let k = e.kind.as_u16();
        if matches!(k, 1617 | 1618 | 1621) && engine.check_acceptance(e).is_accept() {
            engine.handle_input(now, Input::CatalogEvent(e));
        }
    }
    while engine.poll_command().is_some() {}
    engine
}

/// The filter kinds (over some relay's targets) that match `event`.
fn matching_kinds(engine: &Engine, event: &Event) -> BTreeSet<FilterKind> {
    let mut out = BTreeSet::new();
    let urls: Vec<_> = engine.relay_urls().cloned().collect();
    for url in urls {
        let targets = engine.relay_targets(&url).unwrap_or_default();
        for layer in [Layer::Discovery, Layer::Repo, Layer::Root] {
            let set: BTreeSet<TargetKey> = targets
                .iter()
                .filter(|t| t.layer() == layer)
                .cloned()
                .collect();
            for kind in layer.filter_kinds() {
                let hit = if *kind == FilterKind::Announcements {
                    event.kind.as_u16() == 30617
                } else {
                    !set.is_empty() && matches(*kind, &set, event)
                };
                if hit {
                    out.insert(*kind);
                }
            }
        }
    }
    out
}

#[test]
fn dataset_is_signed_deterministic_and_partitioned() {
    let start = Instant::now();
    let ds = Dataset::builder(SERVICE, &fake_relays()).build();
    let elapsed = start.elapsed();
    let again = Dataset::builder(SERVICE, &fake_relays()).build();
    assert_eq!(
        ds.events().iter().map(|e| e.as_json()).collect::<Vec<_>>(),
        again
            .events()
            .iter()
            .map(|e| e.as_json())
            .collect::<Vec<_>>(),
        "same inputs, same bytes"
    );
    let other = Dataset::builder(SERVICE, &fake_relays()).seed(2).build();
    assert!(ds.expected().is_disjoint(&other.expected()));

    for e in ds.events() {
        e.verify()
            .unwrap_or_else(|err| panic!("{} does not verify: {err}", e.as_json()));
    }
    assert!(forge_signature(&ds.events()[0]).verify().is_err());
    assert!(forge_signature(&ds.events()[0]).verify_id());

    let expected = ds.expected();
    let unrelated = ds.unrelated();
    assert!(expected.is_disjoint(&unrelated));
    let all: BTreeSet<EventId> = ds.events().iter().map(|e| e.id).collect();
    assert_eq!(all.len(), ds.events().len(), "no duplicate events");
    assert_eq!(
        expected.union(&unrelated).copied().collect::<BTreeSet<_>>(),
        all
    );
    assert!(expected.len() > 50, "{}", expected.len());
    assert!(unrelated.len() >= 7, "{}", unrelated.len());

    // Partition: every announcement everywhere, everything else exactly once.
    let parts = ds.partition(3);
    let announcements = ds.announcements().len();
    let total: usize = parts.iter().map(Vec::len).sum();
    assert_eq!(total, ds.events().len() + 2 * announcements);

    // Publish order: every root before anything that names it.
    let mut seen = BTreeSet::new();
    for e in ds.events() {
        for t in e.tags.iter() {
            if let [k, v, ..] = t.as_slice() {
                if matches!(k.as_str(), "e" | "E") {
                    if let Some(id) = ds.event(&EventId::from_hex(v).unwrap()) {
                        assert!(seen.contains(&id.id), "{} before its root", e.id);
                    }
                }
            }
        }
        seen.insert(e.id);
    }
    eprintln!(
        "dataset: {} events signed in {elapsed:?}",
        ds.events().len()
    );
}

#[test]
fn dataset_matches_what_the_engine_fetches_and_accepts() {
    let ds = Dataset::builder(SERVICE, &fake_relays()).build();
    let engine = engine_for(&ds);
    let urls: Vec<String> = engine.relay_urls().map(|u| u.to_string()).collect();
    assert_eq!(urls, fake_relays(), "announcements name exactly the relays");

    // Everything expected is fetched by some filter and accepted.
    let mut covered: BTreeSet<FilterKind> = BTreeSet::new();
    let mut only: BTreeSet<FilterKind> = BTreeSet::new();
    for e in ds.expected_events() {
        let verdict = engine.check_acceptance(&e);
        assert!(verdict.is_accept(), "{verdict}: {}", e.as_json());
        let kinds = matching_kinds(&engine, &e);
        assert!(!kinds.is_empty(), "no filter fetches {}", e.as_json());
        if kinds.len() == 1 {
            only.extend(kinds.iter().copied());
        }
        covered.extend(kinds);
    }
    let every: BTreeSet<FilterKind> = [Layer::Discovery, Layer::Repo, Layer::Root]
        .iter()
        .flat_map(|l| l.filter_kinds().iter().copied())
        .collect();
    assert_eq!(covered, every, "every filter kind fetches something");
    // Events reachable through one tag variant alone, for each variant.
    for k in [
        FilterKind::Announcements,
        FilterKind::RepoUpperA,
        FilterKind::RepoQ,
        FilterKind::RootE,
        FilterKind::RootUpperE,
        FilterKind::RootQ,
    ] {
        assert!(only.contains(&k), "no event is fetched by {k:?} alone");
    }

    // Nothing unrelated is accepted; the stranger's state is fetched
    // (`#d`) and must be refused by acceptance.
    let mut fetched_but_refused = 0;
    for e in ds.unrelated_events() {
        let verdict = engine.check_acceptance(&e);
        assert!(!verdict.is_accept(), "{verdict}: {}", e.as_json());
        let kinds = matching_kinds(&engine, &e);
        if kinds.contains(&FilterKind::RepoState) || kinds.contains(&FilterKind::Announcements) {
            fetched_but_refused += 1;
        }
        assert!(
            kinds.is_subset(&[FilterKind::Announcements, FilterKind::RepoState].into()),
            "unrelated event fetched by {kinds:?}: {}",
            e.as_json()
        );
    }
    assert!(fetched_but_refused >= 2);
}

#[test]
fn bulk_and_live_events() {
    let mut ds = Dataset::builder(SERVICE, &fake_relays()).build();
    let before = ds.expected().len();
    let start = Instant::now();
    let bulk = ds.add_bulk(Bulk::new(0, 1200).same_second(700));
    let elapsed = start.elapsed();
    assert_eq!(bulk.len(), 1200);
    let newest = bulk[0].created_at;
    assert_eq!(bulk.iter().filter(|e| e.created_at == newest).count(), 700);
    assert_eq!(ds.expected().len(), before + 1200);
    let issues = bulk
        .iter()
        .filter(|e| e.kind.as_u16() == KIND_ISSUE)
        .count();
    assert_eq!(issues, 600);
    let only_comments = ds.add_bulk(Bulk::new(1, 10).kind(BulkKind::RootComments));
    assert!(only_comments.iter().all(|e| e.kind.as_u16() == 1111));

    let engine = engine_for(&ds);
    for e in bulk.iter().chain(&only_comments) {
        e.verify().unwrap();
        assert!(engine.check_acceptance(e).is_accept());
        assert!(!matching_kinds(&engine, e).is_empty());
    }
    let live = ds.live_comment(0);
    let now = Timestamp::now().as_secs();
    assert!(live.created_at.as_secs().abs_diff(now) < 5);
    assert!(ds.expected().contains(&live.id));
    let live_issue = ds.live_issue(1);
    assert!(ds.roots().iter().any(|r| r.id == live_issue.id));
    eprintln!("1200 bulk events signed in {elapsed:?}");
}

// --- LocalRelay --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_relay_accepts_and_serves_a_dataset() {
    let relay = LocalRelayHarness::start().await;
    let mut ds = Dataset::builder(SERVICE, &[relay.url()]).build();
    let bulk = ds.add_bulk(Bulk::new(0, 600).same_second(300));
    let report = relay.publish(ds.events()).await;
    assert_eq!(report.accepted, ds.events().len());
    assert_eq!(report.duplicates, 0);
    let again = relay.publish(&ds.events()[..5]).await;
    assert_eq!(again.duplicates, 5, "re-publishing gives duplicate:");

    assert_eq!(relay.count(Filter::new()).await, ds.events().len());
    assert_eq!(relay.db_count(&Filter::new()).await, ds.events().len());
    let all: BTreeSet<EventId> = ds.events().iter().map(|e| e.id).collect();
    assert!(relay.missing(&all).await.is_empty());
    assert_eq!(relay.db_ids().await, all);

    // Without `limit`: at most 500 (upstream's page cap).
    let page = relay.fetch(&[Filter::new()]).await;
    assert_eq!(page.len(), 500);
    // With `limit`: exactly that, newest first.
    let page = relay.fetch(&[Filter::new().limit(10)]).await;
    assert_eq!(page.len(), 10);
    assert!(page.iter().all(|e| e.created_at == bulk[0].created_at));
    let issues = relay
        .fetch(&[Filter::new()
            .kind(Kind::from(KIND_ISSUE))
            .custom_tag(SingleLetterTag::LOWERCASE_A, ds.repos()[1].coord.as_str())
            .limit(1000)])
        .await;
    assert_eq!(issues.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_relay_restarts_on_the_same_port_with_its_data() {
    let mut relay = LocalRelayHarness::start_with(LocalOptions {
        max_reqs: 3,
        ..LocalOptions::default()
    })
    .await;
    let url = relay.url();
    let mut ds = Dataset::builder(SERVICE, &[relay.url()]).build();
    relay.publish(ds.events()).await;

    let mut client = RelayClient::connect(&url).await;
    relay.stop().await;
    assert!(!relay.is_running());
    assert_eq!(
        client.recv(Duration::from_secs(5)).await,
        Incoming::Closed,
        "stop drops open connections"
    );
    assert!(RelayClient::try_connect(&url).await.is_err());

    // Received while down.
    let late = ds.live_comment(0);
    relay.insert(std::slice::from_ref(&late)).await;

    relay.start_again().await;
    assert_eq!(relay.url(), url);
    wait_for("the relay to accept again", Duration::from_secs(5), || {
        let url = url.clone();
        async move { RelayClient::try_connect(&url).await.is_ok() }
    })
    .await;
    assert_eq!(relay.count(Filter::new()).await, ds.events().len());
    assert!(relay.missing(&ds.expected()).await.is_empty());

    relay.restart().await;
    assert_eq!(relay.count(Filter::new()).await, ds.events().len());

    // max_reqs: the 4th open subscription is refused with CLOSED.
    let mut c = RelayClient::connect(&url).await;
    for i in 0..3 {
        c.send_req(&format!("s{i}"), &[Filter::new().limit(1)])
            .await;
    }
    let (_, end) = c
        .fetch_raw(&[Filter::new().limit(1)], Duration::from_secs(5))
        .await;
    match end {
        FetchEnd::Closed(msg) => assert!(msg.starts_with("rate-limited:"), "{msg}"),
        other => panic!("expected CLOSED, got {other:?}"),
    }

    // HTTP (NIP-11) gets no document.
    assert_eq!(client::nip11(relay.port()).await, None);
}

// --- PyPI nostr-relay --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_relay_accepts_and_serves_a_dataset() {
    let mut relay = PythonRelay::start().await;
    let ds = Dataset::builder(SERVICE, &[relay.url()]).build();
    let doc = client::nip11(relay.port()).await.expect("NIP-11 document");
    assert!(doc.contains("\"supported_nips\""), "{doc}");
    let report = relay.publish(ds.events()).await;
    assert_eq!(report.accepted, ds.events().len(), "{}", relay.log());
    let again = relay.publish(&ds.events()[..3]).await;
    assert_eq!(again.duplicates, 3);

    assert_eq!(relay.count(Filter::new()).await, ds.events().len());
    let all: BTreeSet<EventId> = ds.events().iter().map(|e| e.id).collect();
    assert!(relay.missing(&all).await.is_empty());
    let page = relay
        .fetch(&[Filter::new().since(Timestamp::from_secs(0)).limit(7)])
        .await;
    assert_eq!(page.len(), 7);

    // Quirks the sync must live with (see the harness report):
    // a filter with no condition matches nothing,
    assert!(relay.fetch(&[Filter::new().limit(7)]).await.is_empty());
    // `until` is exclusive, so `since = until = t` finds nothing,
    let t = ds.events()[1].created_at;
    let same_second = Filter::new().since(t).until(t);
    assert!(relay.fetch(&[same_second]).await.is_empty());
    // `limit: 0` is ignored,
    let kinds = Filter::new().kind(Kind::from(KIND_ISSUE));
    let issues = relay.fetch(std::slice::from_ref(&kinds)).await.len();
    assert!(issues > 0);
    assert_eq!(relay.fetch(&[kinds.clone().limit(0)]).await.len(), issues);
    // and one `limit` (the last filter's) bounds the whole REQ.
    let two = relay
        .fetch(&[
            kinds.limit(1),
            Filter::new().kind(Kind::from(1111u16)).limit(1000),
        ])
        .await;
    assert!(
        two.iter().filter(|e| e.kind.as_u16() == KIND_ISSUE).count() > 1,
        "per-filter limit applied after all"
    );

    // A forged signature is refused (its OK carries an empty id).
    let mut c = RelayClient::connect(&relay.url()).await;
    let forged = forge_signature(
        &Dataset::builder(SERVICE, &[relay.url()])
            .seed(9)
            .build()
            .events()[0],
    );
    let err = c.try_publish(&[forged]).await.unwrap_err();
    assert!(err.contains("unknown id \"\""), "{err}");

    relay.restart().await;
    assert_eq!(relay.count(Filter::new()).await, ds.events().len());
}

// --- hostile relay -----------------------------------------------------------

async fn next_json(c: &mut RelayClient) -> Value {
    c.recv_json(Duration::from_secs(10))
        .await
        .expect("a message from the relay")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_relay_serves_honestly() {
    let ds = Dataset::builder(SERVICE, &["ws://127.0.0.1:1"]).build();
    let relay = HostileRelay::honest(ds.events().to_vec()).await;
    let all = relay.fetch(&[Filter::new()]).await;
    assert_eq!(all.len(), ds.events().len());
    let page = relay.fetch(&[Filter::new().limit(5)]).await;
    assert_eq!(page.len(), 5);
    let newest = ds.events().iter().map(|e| e.created_at).max().unwrap();
    assert_eq!(page[0].created_at, newest);
    assert!(relay.fetch(&[Filter::new().limit(0)]).await.is_empty());

    // Live: an event pushed later reaches the open subscription.
    let mut c = RelayClient::connect(&relay.url()).await;
    c.send_req("live", &[Filter::new().kind(Kind::from(1111u16)).limit(0)])
        .await;
    assert_eq!(next_json(&mut c).await, serde_json::json!(["EOSE", "live"]));
    let mut ds2 = ds.clone();
    let fresh = ds2.live_comment(0);
    relay.push(std::slice::from_ref(&fresh));
    let msg = next_json(&mut c).await;
    assert_eq!(msg[0], "EVENT");
    assert_eq!(msg[2]["id"], fresh.id.to_hex());
    assert_eq!(relay.open_subscriptions().len(), 1);
    assert_eq!(relay.req_counts().iter().sum::<usize>(), relay.total_reqs());

    // Publishing to it works too.
    let extra = ds2.live_issue(1);
    assert_eq!(relay.publish(&[extra]).await.accepted, 1);

    // Page cap.
    let capped = HostileRelay::builder()
        .events(ds.events().to_vec())
        .page_cap(3)
        .start()
        .await;
    assert_eq!(capped.fetch(&[Filter::new().limit(100)]).await.len(), 3);
    let peers: [&dyn TestRelay; 2] = [&relay, &capped];
    assert_ne!(peers[0].url(), peers[1].url());

    // Dropping everyone.
    relay.disconnect_all();
    assert_eq!(c.recv(Duration::from_secs(5)).await, Incoming::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_relay_rate_limits_the_first_reqs() {
    let ds = Dataset::builder(SERVICE, &["ws://127.0.0.1:1"]).build();
    let relay = HostileRelay::builder()
        .events(ds.events().to_vec())
        .rate_limited_first(2)
        .start()
        .await;
    let mut c = RelayClient::connect(&relay.url()).await;
    for _ in 0..2 {
        let (events, end) = c.fetch_raw(&[Filter::new()], Duration::from_secs(5)).await;
        assert!(events.is_empty());
        assert_eq!(end, FetchEnd::Closed(RATE_LIMIT_MESSAGE.to_owned()));
    }
    let events = c.fetch(&[Filter::new()]).await;
    assert_eq!(events.len(), ds.events().len());
    let mut c2 = RelayClient::connect(&relay.url()).await;
    c2.fetch(&[Filter::new().limit(1)]).await;
    assert_eq!(relay.req_counts(), vec![3, 1]);
    assert_eq!(relay.total_reqs(), 4);
    let reqs = relay.reqs();
    assert!(reqs[0].refused && reqs[1].refused && !reqs[2].refused);
    assert_eq!(reqs[3].connection, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_relay_forges_strays_and_garbage() {
    let ds = Dataset::builder(SERVICE, &["ws://127.0.0.1:1"]).build();
    let other = Dataset::builder(SERVICE, &["ws://127.0.0.1:1"])
        .seed(5)
        .build();
    let good: Vec<Event> = ds.events().to_vec();
    let forged_src: Vec<Event> = other.events()[..4].to_vec();
    let notes: Vec<Event> = other
        .events()
        .iter()
        .filter(|e| e.kind.as_u16() == 1)
        .cloned()
        .collect();
    let relay = HostileRelay::builder()
        .events(good.clone())
        .forged_signatures(forged_src.clone())
        .outside_filter(notes.clone())
        .unknown_subscription(other.events()[..2].to_vec())
        .garbage()
        .start()
        .await;

    let mut c = RelayClient::connect(&relay.url()).await;
    // Everything except notes (kind 1): the notes are then "outside".
    let filter = Filter::new().kinds(
        ds.events()
            .iter()
            .map(|e| e.kind)
            .filter(|k| k.as_u16() != 1)
            .collect::<BTreeSet<_>>(),
    );
    c.send_req("s", std::slice::from_ref(&filter)).await;
    let mut frames = Vec::new();
    loop {
        let text = c
            .recv_raw(Duration::from_secs(10))
            .await
            .expect("EOSE comes");
        let done = text == r#"["EOSE","s"]"#;
        frames.push(text);
        if done {
            break;
        }
    }
    for g in GARBAGE_FRAMES {
        assert!(frames.iter().any(|f| f == g), "garbage frame {g} sent");
    }
    let events: Vec<(String, Event)> = frames
        .iter()
        .filter_map(|f| {
            let v: Value = serde_json::from_str(f).ok()?;
            if v[0] != "EVENT" {
                return None;
            }
            Some((
                v[1].as_str()?.to_owned(),
                Event::from_json(v[2].to_string()).ok()?,
            ))
        })
        .collect();
    let ghosts = events
        .iter()
        .filter(|(s, _)| s.starts_with("never-opened-"))
        .count();
    assert_eq!(ghosts, 2);
    let on_sub: Vec<&Event> = events
        .iter()
        .filter(|(s, _)| s == "s")
        .map(|(_, e)| e)
        .collect();
    let bad_sigs = on_sub.iter().filter(|e| e.verify().is_err()).count();
    assert_eq!(
        bad_sigs,
        forged_src.iter().filter(|e| e.kind.as_u16() != 1).count()
    );
    let strays = on_sub
        .iter()
        .filter(|e| !filter.match_event(e, nostr::filter::MatchEventOptions::new()))
        .count();
    assert_eq!(strays, notes.len());
    let honest = on_sub
        .iter()
        .filter(|e| e.verify().is_ok() && ds.event(&e.id).is_some())
        .count();
    assert_eq!(honest, good.iter().filter(|e| e.kind.as_u16() != 1).count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_relay_sends_an_oversized_frame_and_floods() {
    let ds = Dataset::builder(SERVICE, &["ws://127.0.0.1:1"]).build();
    let relay = HostileRelay::builder()
        .events(ds.events().to_vec())
        .oversized(2 << 20)
        .flood(100_000)
        .start()
        .await;
    let mut c = RelayClient::connect(&relay.url()).await;
    c.send_req("s", &[Filter::new()]).await;
    let start = Instant::now();
    let mut largest = 0;
    let mut frames = 0usize;
    loop {
        let text = c
            .recv_raw(Duration::from_secs(30))
            .await
            .expect("EOSE comes");
        largest = largest.max(text.len());
        frames += 1;
        if text == r#"["EOSE","s"]"# {
            break;
        }
    }
    assert!(largest > 2 << 20, "{largest}");
    assert_eq!(frames, 1 + 100_000 + ds.events().len() + 1);
    eprintln!("flood of 100k received in {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_relay_can_stay_silent() {
    let relay = HostileRelay::builder().silent().start().await;
    let mut c = RelayClient::connect(&relay.url()).await;
    let (events, end) = c
        .fetch_raw(&[Filter::new()], Duration::from_millis(500))
        .await;
    assert!(events.is_empty());
    assert_eq!(end, FetchEnd::Timeout);
    assert_eq!(relay.total_reqs(), 1);
}
