//! The database store over both `nostr-database` versions: the same checks
//! through nostr-lmdb 0.45 and (feature `nostr-044`) the 0.44 memory
//! database.

use std::collections::HashSet;
use std::sync::Mutex;

use nostr::event::{EventBuilder, EventId, FinalizeEvent, Kind, Tag};
use nostr::key::{Keys, SecretKey};
use nostr::types::Timestamp;

use super::*;

fn keys(n: u8) -> Keys {
    let mut b = [0x31u8; 32];
    b[31] = n;
    Keys::new(SecretKey::from_slice(&b).unwrap())
}

fn signed(k: &Keys, kind: u16, at: u64, tags: Vec<Tag>, content: &str) -> Event {
    EventBuilder::new(Kind::from(kind), content)
        .tags(tags)
        .custom_created_at(Timestamp::from_secs(at))
        .finalize(k)
        .unwrap()
}

fn announcement(k: &Keys, d: &str, at: u64) -> Event {
    signed(
        k,
        30617,
        at,
        vec![
            Tag::identifier(d),
            Tag::parse(["relays", "wss://git.example.com"]).unwrap(),
        ],
        "",
    )
}

/// Ids the hook was called with.
type Seen = Arc<Mutex<Vec<EventId>>>;

async fn collect_feed(store: &impl EventStore) -> Vec<Event> {
    let (tx, mut rx) = mpsc::channel(4);
    let reader = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some(e) = rx.recv().await {
            v.push(e);
        }
        v
    });
    store.start_catalog_feed(tx).await.unwrap();
    reader.await.unwrap()
}

/// What every backend must do; `seen` is what its hook recorded.
async fn behaves_as_a_store<B: Backend>(mut store: NostrDatabaseStore<B>, seen: Seen) {
    let k = keys(1);
    let issue = signed(&k, 1621, 1_700_000_000, vec![], "issue");
    assert_eq!(
        store.save(issue.clone()).await.unwrap(),
        StoreOutcome::Stored
    );
    assert_eq!(
        store.save(issue.clone()).await.unwrap(),
        StoreOutcome::Duplicate
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![issue.id],
        "hook: new events only"
    );

    // Replaceable: the older version arriving later is nothing new
    // (nostr-lmdb says `Replaced`, the 0.44 memory database `Deleted`).
    let old = announcement(&k, "repo", 1_700_000_000);
    let new = announcement(&k, "repo", 1_700_000_100);
    assert_eq!(store.save(old.clone()).await.unwrap(), StoreOutcome::Stored);
    assert_eq!(store.save(new.clone()).await.unwrap(), StoreOutcome::Stored);
    assert_ne!(store.save(old.clone()).await.unwrap(), StoreOutcome::Stored);
    let versions = store.query(Filter::new().kind(Kind::from(30617u16))).await;
    assert_eq!(versions.unwrap(), vec![new.clone()]);

    // Deleted, then offered again: refused.
    let doomed = signed(&k, 1621, 1_700_000_001, vec![], "to delete");
    store.save(doomed.clone()).await.unwrap();
    let deletion = signed(&k, 5, 1_700_000_010, vec![Tag::event(doomed.id)], "");
    assert_eq!(
        store.save(deletion.clone()).await.unwrap(),
        StoreOutcome::Stored
    );
    assert_eq!(
        store.save(doomed.clone()).await.unwrap(),
        StoreOutcome::Rejected
    );

    // Queries and items come back as the sync's type, exactly.
    let got = store.query(Filter::new().id(issue.id)).await.unwrap();
    assert_eq!(got, vec![issue.clone()]);
    let mut items = store
        .negentropy_items(Filter::new().kind(Kind::from(1621u16)))
        .await
        .unwrap();
    items.sort();
    assert_eq!(items, vec![(issue.id, issue.created_at)]);

    // Catalog feed: every catalog event once, across pages and a crowded
    // second, nothing else.
    let mut expected: HashSet<EventId> = [issue.id, new.id, deletion.id].into();
    for i in 0..12u64 {
        let patch = signed(&k, 1617, 1_600_000_000, vec![], &format!("patch {i}"));
        let issue = signed(&k, 1621, 1_650_000_000 + i / 2, vec![], &format!("i {i}"));
        for e in [patch, issue] {
            expected.insert(e.id);
            assert_eq!(store.save(e).await.unwrap(), StoreOutcome::Stored);
        }
    }
    store
        .save(signed(&k, 1, 1_700_000_000, vec![], "note"))
        .await
        .unwrap();
    store.page = 5;
    let fed = collect_feed(&store).await;
    let ids: HashSet<EventId> = fed.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), fed.len(), "an event was fed twice");
    assert_eq!(ids, expected);
    assert!(fed.windows(2).all(|w| w[0].created_at >= w[1].created_at));

    // Closed: refuses, the hook is not called.
    let before = seen.lock().unwrap().len();
    store.close().await.unwrap();
    let late = signed(&k, 1621, 1_700_000_500, vec![], "late");
    assert!(matches!(store.save(late).await, Err(StoreError::Closed)));
    assert!(matches!(
        store.negentropy_items(Filter::new()).await,
        Err(StoreError::Closed)
    ));
    assert_eq!(seen.lock().unwrap().len(), before);
}

#[tokio::test]
async fn nostr_database_045_over_lmdb() {
    let dir = tempfile::tempdir().unwrap();
    let db = nostr_lmdb::NostrLmdb::builder(dir.path())
        .build()
        .await
        .unwrap();
    let seen: Seen = Arc::default();
    let hook = seen.clone();
    let store = DatabaseStore::new(db).on_stored(move |e: &Event| hook.lock().unwrap().push(e.id));
    behaves_as_a_store(store, seen).await;
}

#[cfg(feature = "nostr-044")]
#[tokio::test]
async fn nostr_database_044_memory() {
    use crate::compat::v044::{event_id_from_044, nostr as old};
    use nostr_database_044::{MemoryDatabase, MemoryDatabaseOptions};

    let db = MemoryDatabase::with_opts(MemoryDatabaseOptions {
        events: true,
        max_events: None,
    });
    let seen: Seen = Arc::default();
    let hook = seen.clone();
    let store = DatabaseStore044::new(db).on_stored(move |e: &old::Event| {
        assert!(e.verify().is_ok(), "the hook gets a valid 0.44 event");
        hook.lock().unwrap().push(event_id_from_044(&e.id));
    });
    behaves_as_a_store(store, seen).await;
}

#[test]
fn outcome_mapping() {
    use RejectedReason::*;
    assert_eq!(outcome_of(SaveEventStatus::Success), StoreOutcome::Stored);
    for r in [Duplicate, Replaced] {
        assert_eq!(
            outcome_of(SaveEventStatus::Rejected(r)),
            StoreOutcome::Duplicate
        );
    }
    for r in [Deleted, Ephemeral, Expired, InvalidDelete, Vanished, Other] {
        assert_eq!(
            outcome_of(SaveEventStatus::Rejected(r)),
            StoreOutcome::Rejected
        );
    }
}
