//! A relay written for the tests (tokio-tungstenite, server side) that can
//! serve an event set honestly and misbehave in scripted ways: forged
//! signatures, events outside the subscription's filters, events for
//! subscriptions never opened, malformed frames and unknown verbs, an
//! oversized frame, a flood of junk events, `CLOSED "rate-limited: ..."` for
//! the first REQs, silence. It records every REQ per connection so tests can
//! assert what the sync asked for.
//!
//! Per REQ, in this order: a rate-limit refusal (the first `n` REQs over all
//! connections; nothing else is sent for them); then, unless silent, the
//! garbage frames, the events for a never-opened subscription, the forged
//! events that match the REQ, the events that match none of its filters,
//! the oversized frame, the flood; then the honest answer (matching events
//! of the event set, newest first, `limit` and the page cap applied) and
//! `EOSE`. The subscription stays open: events added later with
//! [`HostileRelay::push`] that match it are sent live.
//!
//! It does not serve NIP-11 (a plain HTTP request is dropped) nor NIP-77.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nostr::event::{Event, EventId, Kind, Signature, Tags};
use nostr::filter::{Filter, MatchEventOptions};
use nostr::types::Timestamp;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::client::{self, PublishReport};
use grasp_sync_sim::signed::{forge_signature, signer};

/// The frames sent by [`HostileBuilder::garbage`]: not JSON, JSON of the
/// wrong shape, truncated messages and unknown verbs.
pub const GARBAGE_FRAMES: &[&str] = &[
    "this is not json",
    "{\"EVENT\": 1}",
    "[]",
    "[\"EVENT\"]",
    "[\"EVENT\", \"x\", {\"id\": \"zz\"}]",
    "[\"EVENT\", 5, null]",
    "[\"EOSE\"]",
    "[\"EOSE\", 42]",
    "[\"OK\", 5]",
    "[\"NOTICE\"]",
    "[\"CLOSED\", 7, 8]",
    "[\"FROBNICATE\", \"x\", {}]",
    "[\"AUTH\"]",
    "[\"NEG-MSG\", \"nope\", \"zz\"]",
    "[\"EVENT\", \"x\", {\"id\": \"0000",
];

/// The message of the rate-limit refusals.
pub const RATE_LIMIT_MESSAGE: &str = "rate-limited: slow down";

/// One REQ the relay received.
#[derive(Clone, Debug)]
pub struct ReqRecord {
    /// Connection number (0 for the first accepted websocket).
    pub connection: usize,
    /// The subscription id.
    pub subscription: String,
    /// Its filters as parsed (unparsable filters are left out).
    pub filters: Vec<Filter>,
    /// True when it was answered with `CLOSED "rate-limited: ..."`.
    pub refused: bool,
}

/// What the relay does; build with [`HostileRelay::builder`].
#[derive(Clone, Debug, Default)]
pub struct HostileBuilder {
    events: Vec<Event>,
    forged: Vec<Event>,
    outside: Vec<Event>,
    unknown_subscription: Vec<Event>,
    garbage: bool,
    oversized: Option<usize>,
    flood: Option<(usize, Option<Event>)>,
    rate_limited_first: usize,
    silent: bool,
    page_cap: Option<usize>,
}

impl HostileBuilder {
    /// The event set served honestly.
    pub fn events(mut self, events: impl IntoIterator<Item = Event>) -> Self {
        self.events.extend(events);
        self
    }

    /// Before the honest answer, send those of `events` that match the REQ
    /// with a forged signature (right id, signature that does not verify).
    pub fn forged_signatures(mut self, events: impl IntoIterator<Item = Event>) -> Self {
        self.forged
            .extend(events.into_iter().map(|e| forge_signature(&e)));
        self
    }

    /// Before the honest answer, send those of `events` that match none of
    /// the REQ's filters, on the REQ's subscription.
    pub fn outside_filter(mut self, events: impl IntoIterator<Item = Event>) -> Self {
        self.outside.extend(events);
        self
    }

    /// Before the honest answer, send `events` on a subscription id that
    /// was never opened (`never-opened-N`).
    pub fn unknown_subscription(mut self, events: impl IntoIterator<Item = Event>) -> Self {
        self.unknown_subscription.extend(events);
        self
    }

    /// Before the honest answer, send [`GARBAGE_FRAMES`] and one binary frame.
    pub fn garbage(mut self) -> Self {
        self.garbage = true;
        self
    }

    /// Before the honest answer, send one text frame of about `bytes` bytes
    /// (an `EVENT` on the REQ's subscription whose content is that long).
    pub fn oversized(mut self, bytes: usize) -> Self {
        self.oversized = Some(bytes);
        self
    }

    /// Before the honest answer, send `count` junk events (valid ids, bad
    /// signatures, kind 1 with no tags) as fast as possible.
    pub fn flood(mut self, count: usize) -> Self {
        self.flood = Some((count, None));
        self
    }

    /// As [`HostileBuilder::flood`], with copies of `template` (same kind,
    /// tags, author and time; content numbered) so they match its filters.
    pub fn flood_like(mut self, count: usize, template: Event) -> Self {
        self.flood = Some((count, Some(template)));
        self
    }

    /// Answer the first `n` REQs (over all connections) with
    /// `["CLOSED", id, "rate-limited: slow down"]`, then serve normally.
    pub fn rate_limited_first(mut self, n: usize) -> Self {
        self.rate_limited_first = n;
        self
    }

    /// Never answer a REQ (no event, no `EOSE`, no `CLOSED`); live pushes
    /// still go out.
    pub fn silent(mut self) -> Self {
        self.silent = true;
        self
    }

    /// Cap every filter's answer at `n` events, whatever its `limit` says
    /// (a filter without `limit` gets `n`), silently.
    pub fn page_cap(mut self, n: usize) -> Self {
        self.page_cap = Some(n);
        self
    }

    /// Binds a free port on 127.0.0.1 and starts serving.
    pub async fn start(self) -> HostileRelay {
        self.start_on_port(0).await
    }

    /// Binds `port` on 127.0.0.1 (0: a free one) and starts serving; for a
    /// relay whose URL had to be known before its script.
    pub async fn start_on_port(mut self, port: u16) -> HostileRelay {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let flood = self
            .flood
            .as_ref()
            .map(|(n, t)| flood_events(*n, t.as_ref()));
        let oversized = self.oversized.map(oversized_event);
        let (live, _) = broadcast::channel(4096);
        let (kick, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            events: Mutex::new(std::mem::take(&mut self.events)),
            script: self,
            flood: Arc::new(flood.unwrap_or_default()),
            oversized,
            live,
            kick,
            reqs_total: AtomicUsize::new(0),
            never_opened: AtomicUsize::new(0),
            stats: Mutex::new(Stats::default()),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        HostileRelay {
            port,
            shared,
            server: Some(server),
        }
    }
}

#[derive(Default)]
struct Stats {
    /// REQs per connection, in accept order.
    reqs_per_connection: Vec<usize>,
    reqs: Vec<ReqRecord>,
    open: BTreeMap<(usize, String), Vec<Filter>>,
    closes: Vec<(usize, String)>,
    received_frames: usize,
}

struct Shared {
    script: HostileBuilder,
    events: Mutex<Vec<Event>>,
    /// Flood messages as event JSON, built once.
    flood: Arc<Vec<String>>,
    oversized: Option<String>,
    live: broadcast::Sender<Event>,
    kick: watch::Sender<u64>,
    reqs_total: AtomicUsize,
    never_opened: AtomicUsize,
    stats: Mutex<Stats>,
}

/// The scripted relay; stopped on drop.
pub struct HostileRelay {
    port: u16,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HostileRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostileRelay")
            .field("port", &self.port)
            .finish()
    }
}

impl HostileRelay {
    /// A builder with no events and no misbehaviour.
    pub fn builder() -> HostileBuilder {
        HostileBuilder::default()
    }

    /// A relay that serves `events` correctly and nothing else.
    pub async fn honest(events: impl IntoIterator<Item = Event>) -> HostileRelay {
        Self::builder().events(events).start().await
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Adds events to the honest set and sends them to every open
    /// subscription they match (live).
    pub fn push(&self, events: &[Event]) {
        self.shared
            .events
            .lock()
            .unwrap()
            .extend(events.iter().cloned());
        for e in events {
            let _ = self.shared.live.send(e.clone());
        }
    }

    /// Websocket connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.stats.lock().unwrap().reqs_per_connection.len()
    }

    /// REQs received per connection, in accept order.
    pub fn req_counts(&self) -> Vec<usize> {
        self.shared
            .stats
            .lock()
            .unwrap()
            .reqs_per_connection
            .clone()
    }

    /// REQs received over all connections.
    pub fn total_reqs(&self) -> usize {
        self.shared.reqs_total.load(Ordering::SeqCst)
    }

    /// Every REQ received, in order.
    pub fn reqs(&self) -> Vec<ReqRecord> {
        self.shared.stats.lock().unwrap().reqs.clone()
    }

    /// Subscriptions open now: (connection, id, filters).
    pub fn open_subscriptions(&self) -> Vec<(usize, String, Vec<Filter>)> {
        self.shared
            .stats
            .lock()
            .unwrap()
            .open
            .iter()
            .map(|((c, s), f)| (*c, s.clone(), f.clone()))
            .collect()
    }

    /// Every `CLOSE` received: (connection, subscription id), in order.
    pub fn closes(&self) -> Vec<(usize, String)> {
        self.shared.stats.lock().unwrap().closes.clone()
    }

    /// Text frames received from clients so far.
    pub fn received_frames(&self) -> usize {
        self.shared.stats.lock().unwrap().received_frames
    }

    /// Drops every open connection (no close frame); keeps listening.
    pub fn disconnect_all(&self) {
        self.shared.kick.send_modify(|g| *g += 1);
    }

    /// Stops listening and drops every connection.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
        tokio::task::yield_now().await;
    }

    /// Publishes over a websocket (the relay stores valid events and answers
    /// `OK`).
    pub async fn publish(&self, events: &[Event]) -> PublishReport {
        client::publish(&self.url(), events).await
    }

    /// One REQ up to `EOSE` over a websocket (misbehaviours apply to it too).
    pub async fn fetch(&self, filters: &[Filter]) -> Vec<Event> {
        client::fetch(&self.url(), filters).await
    }

    /// The honest event set's size.
    pub fn event_count(&self) -> usize {
        self.shared.events.lock().unwrap().len()
    }
}

impl Drop for HostileRelay {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                conns.spawn(connection(stream, shared));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Removes a connection's open subscriptions from the stats when it ends
/// (also when its task is aborted).
struct OpenGuard {
    shared: Arc<Shared>,
    conn: usize,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.stats.lock() {
            s.open.retain(|(c, _), _| *c != self.conn);
        }
    }
}

type Ws = WebSocketStream<TcpStream>;

async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let Ok(Ok(mut ws)) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::accept_async_with_config(stream, Some(config)),
    )
    .await
    else {
        return;
    };
    let conn = {
        let mut s = shared.stats.lock().unwrap();
        s.reqs_per_connection.push(0);
        s.reqs_per_connection.len() - 1
    };
    let _guard = OpenGuard {
        shared: shared.clone(),
        conn,
    };
    let mut live = shared.live.subscribe();
    let mut kick = shared.kick.subscribe();
    let mut subs: HashMap<String, Vec<Filter>> = HashMap::new();
    loop {
        tokio::select! {
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => continue,
                };
                shared.stats.lock().unwrap().received_frames += 1;
                if handle(&mut ws, &shared, conn, &mut subs, &text).await.is_err() {
                    return;
                }
            }
            ev = live.recv() => {
                let Ok(ev) = ev else { continue };
                for (sub, filters) in &subs {
                    if filters.iter().any(|f| f.match_event(&ev, MatchEventOptions::new())) {
                        let msg = event_msg(sub, &ev.as_json());
                        if ws.send(Message::text(msg)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            _ = kick.changed() => return,
        }
    }
}

fn event_msg(sub: &str, event_json: &str) -> String {
    format!(r#"["EVENT",{},{event_json}]"#, Value::from(sub))
}

async fn send(ws: &mut Ws, text: String) -> Result<(), ()> {
    ws.send(Message::text(text)).await.map_err(|_| ())
}

async fn handle(
    ws: &mut Ws,
    shared: &Arc<Shared>,
    conn: usize,
    subs: &mut HashMap<String, Vec<Filter>>,
    text: &str,
) -> Result<(), ()> {
    let Ok(Value::Array(msg)) = serde_json::from_str::<Value>(text) else {
        return send(ws, r#"["NOTICE","could not parse message"]"#.to_owned()).await;
    };
    match (msg.first().and_then(Value::as_str), msg.get(1)) {
        (Some("REQ"), Some(Value::String(sub))) => {
            let filters: Vec<Filter> = msg[2..]
                .iter()
                .filter_map(|f| Filter::from_json(f.to_string()).ok())
                .collect();
            on_req(ws, shared, conn, subs, sub.clone(), filters).await
        }
        (Some("CLOSE"), Some(Value::String(sub))) => {
            subs.remove(sub);
            let mut stats = shared.stats.lock().unwrap();
            stats.open.remove(&(conn, sub.clone()));
            stats.closes.push((conn, sub.clone()));
            Ok(())
        }
        (Some("EVENT"), Some(ev)) => {
            let parsed = Event::from_json(ev.to_string());
            let (id, ok, reason) = match parsed {
                Ok(e) if e.verify().is_ok() => {
                    let id = e.id;
                    let mut events = shared.events.lock().unwrap();
                    let dup = events.iter().any(|x| x.id == id);
                    if !dup {
                        events.push(e.clone());
                        let _ = shared.live.send(e);
                    }
                    (
                        id.to_hex(),
                        !dup,
                        if dup { "duplicate: have it" } else { "" },
                    )
                }
                Ok(e) => (e.id.to_hex(), false, "invalid: bad signature"),
                Err(_) => (String::new(), false, "invalid: bad event"),
            };
            send(ws, serde_json::json!(["OK", id, ok, reason]).to_string()).await
        }
        _ => {
            send(
                ws,
                serde_json::json!(["NOTICE", "unknown or malformed message"]).to_string(),
            )
            .await
        }
    }
}

async fn on_req(
    ws: &mut Ws,
    shared: &Arc<Shared>,
    conn: usize,
    subs: &mut HashMap<String, Vec<Filter>>,
    sub: String,
    filters: Vec<Filter>,
) -> Result<(), ()> {
    let script = &shared.script;
    let n = shared.reqs_total.fetch_add(1, Ordering::SeqCst);
    let refused = n < script.rate_limited_first;
    {
        let mut s = shared.stats.lock().unwrap();
        s.reqs_per_connection[conn] += 1;
        s.reqs.push(ReqRecord {
            connection: conn,
            subscription: sub.clone(),
            filters: filters.clone(),
            refused,
        });
        if !refused {
            s.open.insert((conn, sub.clone()), filters.clone());
        }
    }
    if refused {
        subs.remove(&sub);
        return send(
            ws,
            serde_json::json!(["CLOSED", sub, RATE_LIMIT_MESSAGE]).to_string(),
        )
        .await;
    }
    subs.insert(sub.clone(), filters.clone());
    if script.silent {
        return Ok(());
    }
    let matches = |e: &Event| {
        filters
            .iter()
            .any(|f| f.match_event(e, MatchEventOptions::new()))
    };
    if script.garbage {
        for g in GARBAGE_FRAMES {
            send(ws, (*g).to_owned()).await?;
        }
        ws.send(Message::binary(vec![0u8, 1, 2, 3]))
            .await
            .map_err(|_| ())?;
    }
    if !script.unknown_subscription.is_empty() {
        let n = shared.never_opened.fetch_add(1, Ordering::SeqCst);
        let ghost = format!("never-opened-{n}");
        for e in &script.unknown_subscription {
            send(ws, event_msg(&ghost, &e.as_json())).await?;
        }
    }
    for e in script.forged.iter().filter(|e| matches(e)) {
        send(ws, event_msg(&sub, &e.as_json())).await?;
    }
    for e in script.outside.iter().filter(|e| !matches(e)) {
        send(ws, event_msg(&sub, &e.as_json())).await?;
    }
    if let Some(big) = &shared.oversized {
        send(ws, event_msg(&sub, big)).await?;
    }
    if !shared.flood.is_empty() {
        for json in shared.flood.iter() {
            ws.feed(Message::text(event_msg(&sub, json)))
                .await
                .map_err(|_| ())?;
        }
        ws.flush().await.map_err(|_| ())?;
    }
    let answer = {
        let events = shared.events.lock().unwrap();
        honest_answer(&events, &filters, script.page_cap)
    };
    for e in &answer {
        ws.feed(Message::text(event_msg(&sub, &e.as_json())))
            .await
            .map_err(|_| ())?;
    }
    ws.flush().await.map_err(|_| ())?;
    send(ws, serde_json::json!(["EOSE", sub]).to_string()).await
}

/// NIP-01: per filter, the matching events newest first (ties: lowest id),
/// at most `limit` (and the page cap) of them; the union without duplicates.
fn honest_answer(events: &[Event], filters: &[Filter], page_cap: Option<usize>) -> Vec<Event> {
    let mut seen: BTreeSet<EventId> = BTreeSet::new();
    let mut out = Vec::new();
    for f in filters {
        let mut hits: Vec<&Event> = events
            .iter()
            .filter(|e| f.match_event(e, MatchEventOptions::new()))
            .collect();
        hits.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        let mut limit = f.limit.unwrap_or(usize::MAX);
        if let Some(cap) = page_cap {
            limit = limit.min(cap);
        }
        for e in hits.into_iter().take(limit) {
            if seen.insert(e.id) {
                out.push(e.clone());
            }
        }
    }
    out
}

/// Junk events: valid ids, signatures that do not verify.
fn flood_events(count: usize, template: Option<&Event>) -> Vec<String> {
    let author = signer().keys(0xf100d, 0).public_key();
    let (pubkey, created_at, kind, tags) = match template {
        Some(t) => (t.pubkey, t.created_at, t.kind, t.tags.clone()),
        None => (
            author,
            Timestamp::from_secs(1_700_000_000),
            Kind::from(1u16),
            Tags::new(),
        ),
    };
    let sig = Signature::from_byte_array([7u8; 64]);
    (0..count)
        .map(|i| {
            let content = format!("junk {i}");
            let id = nostr::event::EventId::compute(&pubkey, &created_at, &kind, &tags, &content);
            Event::new(id, pubkey, created_at, kind, tags.clone(), content, sig).as_json()
        })
        .collect()
}

/// An event whose content is `bytes` long (valid id, bad signature).
fn oversized_event(bytes: usize) -> String {
    let pubkey = signer().keys(0xb16, 0).public_key();
    let created_at = Timestamp::from_secs(1_700_000_000);
    let kind = Kind::from(1u16);
    let tags = Tags::new();
    let content = "x".repeat(bytes);
    let id = nostr::event::EventId::compute(&pubkey, &created_at, &kind, &tags, &content);
    Event::new(
        id,
        pubkey,
        created_at,
        kind,
        tags,
        content,
        Signature::from_byte_array([9u8; 64]),
    )
    .as_json()
}
