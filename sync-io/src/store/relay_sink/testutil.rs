//! What the relay sink's tests share: a rust-nostr LocalRelay on
//! 127.0.0.1 (with a page cap when asked), a scripted relay for the paths a
//! real one rarely takes, signed events and small waiting helpers.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use grasp_sync_core::RelayUrl;
use nostr::event::{Event, EventBuilder, EventId, FinalizeEvent, Kind, Tag};
use nostr::key::{Keys, SecretKey};
use nostr::message::{ClientMessage, RelayMessage};
use nostr::types::Timestamp;
use nostr_relay_builder::prelude as nrb;
use nostr_relay_builder::prelude::{JsonUtil as _, NostrDatabase as _};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::RelaySinkOptions;
use crate::config::NetConfig;

pub(super) const WAIT: Duration = Duration::from_secs(30);

pub(super) fn net() -> NetConfig {
    NetConfig {
        connect_timeout: Duration::from_secs(2),
        ..NetConfig::default()
    }
}

pub(super) fn fast() -> RelaySinkOptions {
    RelaySinkOptions {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        ..RelaySinkOptions::default()
    }
}

pub(super) fn keys(n: u8) -> Keys {
    let mut b = [0x22u8; 32];
    b[31] = n;
    Keys::new(SecretKey::from_slice(&b).unwrap())
}

/// A signed event; announcements get a unique `d` tag, deletions a `k`
/// tag only (so nothing is replaced or deleted by accident).
pub(super) fn signed(k: &Keys, kind: u16, at: u64, content: &str) -> Event {
    let tag = match kind {
        30617 => Tag::identifier(format!("repo-{content}")),
        5 => Tag::parse(["k", "1621"]).unwrap(),
        _ => Tag::parse(["a", &format!("30617:{}:repo", k.public_key())]).unwrap(),
    };
    EventBuilder::new(Kind::from(kind), content)
        .tags([tag])
        .custom_created_at(Timestamp::from_secs(at))
        .finalize(k)
        .unwrap()
}

pub(super) fn url(port: u16) -> RelayUrl {
    RelayUrl::parse(&format!("ws://127.0.0.1:{port}")).unwrap()
}

pub(super) async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

pub(super) type RelayDb = Arc<nrb::MemoryDatabase>;

pub(super) fn relay_db() -> RelayDb {
    Arc::new(nrb::MemoryDatabase::with_opts(nrb::MemoryDatabaseOptions {
        events: true,
        max_events: None,
    }))
}

pub(super) async fn start_relay(
    port: u16,
    db: &RelayDb,
    max_filter_limit: Option<usize>,
) -> nrb::LocalRelay {
    let mut builder = nrb::RelayBuilder::default()
        .addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .port(port)
        .database(db.clone())
        .rate_limit(nrb::RateLimit {
            max_reqs: 500,
            notes_per_minute: 1_000_000,
        });
    if let Some(max) = max_filter_limit {
        builder = builder.max_filter_limit(max);
    }
    let relay = nrb::LocalRelay::new(builder);
    relay.run().await.unwrap();
    relay
}

/// Stores an event straight into the relay's database (another path).
pub(super) async fn put_direct(db: &RelayDb, ev: &Event) {
    let ev = nrb::Event::from_json(ev.as_json()).unwrap();
    db.save_event(&ev).await.unwrap();
}

pub(super) async fn relay_count(db: &RelayDb) -> usize {
    db.count(nrb::Filter::new()).await.unwrap()
}

/// Drains a feed into a shared list.
pub(super) fn collector(mut rx: mpsc::Receiver<Event>) -> Arc<Mutex<Vec<Event>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            g.lock().unwrap().push(e);
        }
    });
    got
}

pub(super) async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) fn ids(events: &[Event]) -> HashSet<EventId> {
    events.iter().map(|e| e.id).collect()
}

/// A scripted relay's answer to one EVENT (for the paths a real relay
/// rarely takes).

#[derive(Clone, Copy, Debug)]
pub(super) enum Reply {
    Ok(bool, &'static str),
    Silent,
    Garbage,
    Hangup,
}

pub(super) struct Fake {
    pub(super) port: u16,
    /// (connection number, event id) for every EVENT received.
    pub(super) seen: Arc<Mutex<Vec<(usize, EventId)>>>,
}

impl Fake {
    pub(super) fn times(&self, id: &EventId) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, i)| i == id)
            .count()
    }
}

/// `script(connection, nth time this id is seen, id)` decides the reply.
pub(super) async fn fake_relay<F>(script: F) -> Fake
where
    F: Fn(usize, usize, EventId) -> Reply + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<(usize, EventId)>>> = Arc::default();
    let script = Arc::new(script);
    let s = seen.clone();
    tokio::spawn(async move {
        let mut conn = 0;
        while let Ok((stream, _)) = listener.accept().await {
            let (seen, script) = (s.clone(), script.clone());
            let n = conn;
            conn += 1;
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(text) = msg else { continue };
                    let Ok(ClientMessage::Event(ev)) = ClientMessage::from_json(text.as_str())
                    else {
                        continue;
                    };
                    let nth = {
                        let mut seen = seen.lock().unwrap();
                        seen.push((n, ev.id));
                        seen.iter().filter(|(_, i)| *i == ev.id).count()
                    };
                    let ok = |status: bool, m: &str| {
                        Message::text(RelayMessage::ok(ev.id, status, m.to_string()).as_json())
                    };
                    match script(n, nth, ev.id) {
                        Reply::Ok(status, m) => {
                            let _ = ws.send(ok(status, m)).await;
                        }
                        Reply::Silent => {}
                        Reply::Garbage => {
                            let _ = ws.send(Message::text("not json")).await;
                            let _ = ws.send(Message::binary(vec![1u8, 2, 3])).await;
                            let _ = ws.send(Message::text("[\"OK\"]")).await;
                            let _ = ws.send(Message::text("[\"OK\",\"zz\",true,\"\"]")).await;
                            let _ = ws.send(ok(true, "")).await;
                        }
                        Reply::Hangup => return,
                    }
                }
            });
        }
    });
    Fake { port, seen }
}
