//! A small raw NIP-01 websocket client for the tests: publishing with every
//! `OK` awaited, fetching until `EOSE`, and raw frame access for driving the
//! hostile relay. It talks JSON over tokio-tungstenite only, so it works
//! against any relay whatever nostr version the relay uses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nostr::event::{Event, EventId};
use nostr::filter::Filter;
use nostr::types::Timestamp;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one step (a connect, an `OK`, the next message of a fetch) may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Events in flight (sent, `OK` not yet received) while publishing.
const PUBLISH_WINDOW: usize = 200;

/// Ids per `{"ids":[...]}` filter in [`RelayClient::fetch_ids`] (fits every
/// relay's page cap).
const IDS_PER_REQ: usize = 100;

/// What a relay answered to a [`RelayClient::publish`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// `OK true`.
    pub accepted: usize,
    /// `OK false "duplicate: ..."`.
    pub duplicates: usize,
}

/// One read from the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text frame.
    Text(String),
    /// The connection ended (close frame, error or EOF).
    Closed,
    /// Nothing within the timeout.
    Timeout,
}

/// What ended a [`RelayClient::fetch_raw`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchEnd {
    /// `EOSE`.
    Eose,
    /// `CLOSED` with this message.
    Closed(String),
    /// Nothing more within the timeout.
    Timeout,
    /// The connection ended.
    Disconnected,
}

/// One websocket connection to a relay.
pub struct RelayClient {
    url: String,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_sub: u64,
    /// Messages received while waiting for something else (`NOTICE`s, ...).
    pub notices: Vec<String>,
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClient")
            .field("url", &self.url)
            .finish()
    }
}

impl RelayClient {
    /// Connects (panics after [`STEP_TIMEOUT`] or on failure).
    pub async fn connect(url: &str) -> RelayClient {
        match Self::try_connect(url).await {
            Ok(c) => c,
            Err(e) => panic!("cannot connect to {url}: {e}"),
        }
    }

    /// Connects, returning the error instead of panicking. No message size
    /// limit is applied (tests want to see oversized frames).
    pub async fn try_connect(url: &str) -> Result<RelayClient, String> {
        let config = WebSocketConfig::default()
            .max_message_size(None)
            .max_frame_size(None);
        let fut = tokio_tungstenite::connect_async_with_config(url, Some(config), false);
        match tokio::time::timeout(STEP_TIMEOUT, fut).await {
            Ok(Ok((ws, _))) => Ok(RelayClient {
                url: url.to_owned(),
                ws,
                next_sub: 0,
                notices: Vec::new(),
            }),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    }

    /// The relay URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one text frame.
    pub async fn send_raw(&mut self, text: &str) {
        if let Err(e) = self.ws.send(Message::text(text)).await {
            panic!("{}: send failed: {e}", self.url);
        }
    }

    /// The next text frame, the connection's end, or a timeout. Pings are
    /// answered by the library; binary frames are skipped.
    pub async fn recv(&mut self, timeout: Duration) -> Incoming {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return Incoming::Text(t.as_str().to_owned()),
                Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => {
                    return Incoming::Closed
                }
                Ok(Some(Ok(_))) => continue,
                Err(_) => return Incoming::Timeout,
            }
        }
    }

    /// The next text frame, `None` on the connection's end or after `timeout`.
    pub async fn recv_raw(&mut self, timeout: Duration) -> Option<String> {
        match self.recv(timeout).await {
            Incoming::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The next text frame parsed as JSON; frames that are not JSON are
    /// returned as `Value::String` of their text.
    pub async fn recv_json(&mut self, timeout: Duration) -> Option<Value> {
        let text = self.recv_raw(timeout).await?;
        Some(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Reads frames for `window` and returns them (stops early when the
    /// connection ends; the flag says whether it did).
    pub async fn drain(&mut self, window: Duration) -> (Vec<String>, bool) {
        let deadline = tokio::time::Instant::now() + window;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Incoming::Text(t) => out.push(t),
                Incoming::Closed => return (out, true),
                Incoming::Timeout => return (out, false),
            }
        }
    }

    /// A fresh subscription id for this connection.
    pub fn new_sub_id(&mut self) -> String {
        self.next_sub += 1;
        format!("t{}", self.next_sub)
    }

    /// Sends `["REQ", sub, filters...]`.
    pub async fn send_req(&mut self, sub: &str, filters: &[Filter]) {
        let mut msg = vec![Value::from("REQ"), Value::from(sub)];
        for f in filters {
            msg.push(serde_json::from_str(&f.as_json()).expect("filter JSON"));
        }
        self.send_raw(&Value::Array(msg).to_string()).await;
    }

    /// Sends `["CLOSE", sub]`.
    pub async fn send_close(&mut self, sub: &str) {
        self.send_raw(&serde_json::json!(["CLOSE", sub]).to_string())
            .await;
    }

    /// Publishes `events` (pipelined), waits for every `OK`, and panics on an
    /// `OK false` other than `duplicate:` or on a missing answer.
    pub async fn publish(&mut self, events: &[Event]) -> PublishReport {
        match self.try_publish(events).await {
            Ok(r) => r,
            Err(e) => panic!("{}: publish failed: {e}", self.url),
        }
    }

    /// [`RelayClient::publish`] returning the first refusal instead of panicking.
    pub async fn try_publish(&mut self, events: &[Event]) -> Result<PublishReport, String> {
        let mut report = PublishReport::default();
        let mut pending: BTreeSet<EventId> = BTreeSet::new();
        let mut next = 0;
        while next < events.len() || !pending.is_empty() {
            while next < events.len() && pending.len() < PUBLISH_WINDOW {
                let ev = &events[next];
                next += 1;
                if !pending.insert(ev.id) {
                    // The same event twice in one batch: count it as a duplicate.
                    report.duplicates += 1;
                    continue;
                }
                let msg = format!(r#"["EVENT",{}]"#, ev.as_json());
                self.ws
                    .feed(Message::text(msg))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
            }
            self.ws.flush().await.map_err(|e| format!("send: {e}"))?;
            let Some(v) = self.recv_json(STEP_TIMEOUT).await else {
                return Err(format!(
                    "no OK for {} event(s) within {STEP_TIMEOUT:?} (connection closed or silent)",
                    pending.len()
                ));
            };
            match v.as_array().map(Vec::as_slice) {
                Some([verb, id, ok, rest @ ..]) if verb == "OK" => {
                    let msg = rest.first().and_then(Value::as_str).unwrap_or("");
                    let id = id.as_str().unwrap_or("");
                    let parsed = EventId::from_hex(id).ok().filter(|i| pending.contains(i));
                    let Some(id) = parsed else {
                        return Err(format!("OK for an unknown id {id:?}: {ok} {msg:?}"));
                    };
                    pending.remove(&id);
                    // LocalRelay says `true, "duplicate: ..."`, others `false`.
                    if msg.starts_with("duplicate:") {
                        report.duplicates += 1;
                    } else if ok.as_bool() == Some(true) {
                        report.accepted += 1;
                    } else {
                        return Err(format!("OK false for {id}: {msg:?}"));
                    }
                }
                _ => self.notices.push(v.to_string()),
            }
        }
        Ok(report)
    }

    /// Sends a REQ and collects its events until `EOSE`, `CLOSED`, the
    /// connection's end or `timeout` without a message. Events are parsed
    /// but not verified; events of other subscriptions are ignored.
    pub async fn fetch_raw(
        &mut self,
        filters: &[Filter],
        timeout: Duration,
    ) -> (Vec<Event>, FetchEnd) {
        let sub = self.new_sub_id();
        self.send_req(&sub, filters).await;
        let mut events = Vec::new();
        let end = loop {
            let text = match self.recv(timeout).await {
                Incoming::Text(t) => t,
                Incoming::Closed => break FetchEnd::Disconnected,
                Incoming::Timeout => break FetchEnd::Timeout,
            };
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            match v.as_array().map(Vec::as_slice) {
                Some([verb, s, ev, ..]) if verb == "EVENT" && s == sub.as_str() => {
                    if let Ok(e) = Event::from_json(ev.to_string()) {
                        events.push(e);
                    }
                }
                Some([verb, s, ..]) if verb == "EOSE" && s == sub.as_str() => break FetchEnd::Eose,
                Some([verb, s, rest @ ..]) if verb == "CLOSED" && s == sub.as_str() => {
                    let msg = rest.first().and_then(Value::as_str).unwrap_or("");
                    break FetchEnd::Closed(msg.to_owned());
                }
                _ => self.notices.push(v.to_string()),
            }
        };
        if end != FetchEnd::Disconnected {
            // Best effort: stop a live subscription.
            let _ = self
                .ws
                .send(Message::text(
                    serde_json::json!(["CLOSE", sub.as_str()]).to_string(),
                ))
                .await;
        }
        (events, end)
    }

    /// Sends a REQ and returns its events up to `EOSE`; panics on `CLOSED`
    /// or silence.
    pub async fn fetch(&mut self, filters: &[Filter]) -> Vec<Event> {
        let (events, end) = self.fetch_raw(filters, STEP_TIMEOUT).await;
        match end {
            FetchEnd::Eose => events,
            other => panic!(
                "{}: fetch of {} ended with {other:?} after {} events",
                self.url,
                filters
                    .iter()
                    .map(|f| f.as_json())
                    .collect::<Vec<_>>()
                    .join(","),
                events.len()
            ),
        }
    }

    /// The events with these ids that the relay holds, asked in chunks of
    /// 100 (so no page cap can cut the answer short).
    pub async fn fetch_ids(&mut self, ids: &BTreeSet<EventId>) -> BTreeMap<EventId, Event> {
        let ids: Vec<EventId> = ids.iter().copied().collect();
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(IDS_PER_REQ) {
            let filter = Filter::new().ids(chunk.iter().copied()).limit(chunk.len());
            for e in self.fetch(&[filter]).await {
                if chunk.contains(&e.id) {
                    out.insert(e.id, e);
                }
            }
        }
        out
    }

    /// Which of `ids` the relay does not hold.
    pub async fn missing(&mut self, ids: &BTreeSet<EventId>) -> BTreeSet<EventId> {
        let have = self.fetch_ids(ids).await;
        ids.iter()
            .filter(|i| !have.contains_key(i))
            .copied()
            .collect()
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Opens a connection to `url`, publishes, and closes it.
pub async fn publish(url: &str, events: &[Event]) -> PublishReport {
    let mut c = RelayClient::connect(url).await;
    let r = c.publish(events).await;
    c.close().await;
    r
}

/// Opens a connection to `url`, fetches one REQ up to `EOSE`, and closes it.
pub async fn fetch(url: &str, filters: &[Filter]) -> Vec<Event> {
    let mut c = RelayClient::connect(url).await;
    let r = c.fetch(filters).await;
    c.close().await;
    r
}

/// How many events `url` returns for `filter` with an explicit `limit` of
/// 1,000,000 (so a relay's default page size does not apply; a relay's own
/// hard cap still does). An empty filter is sent as `{"since":0}`: the
/// PyPI relay answers `{}` with nothing.
pub async fn count(url: &str, filter: Filter) -> usize {
    let filter = if filter.is_empty() {
        filter.since(Timestamp::from_secs(0))
    } else {
        filter
    };
    fetch(url, &[filter.limit(1_000_000)]).await.len()
}

/// Which of `ids` `url` does not hold.
pub async fn missing(url: &str, ids: &BTreeSet<EventId>) -> BTreeSet<EventId> {
    let mut c = RelayClient::connect(url).await;
    let r = c.missing(ids).await;
    c.close().await;
    r
}

/// Waits until `url` accepts a websocket connection (or panics after `timeout`).
pub async fn wait_until_accepting(url: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(c) = RelayClient::try_connect(url).await {
            c.close().await;
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{url} does not accept websocket connections after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP port on 127.0.0.1 that is free now, for a child process to bind
/// later. Drawn from 20000..32000, below Linux's ephemeral range (so no
/// `bind(0)` listener or outgoing connection takes it meanwhile), starting
/// at a pid-derived offset and never repeating within the process. Another
/// process may still take it: callers check they reached their own server.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    const BASE: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (BASE + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {BASE}..{}", BASE + SPAN);
}

/// The relay information document (NIP-11) of the relay on
/// `127.0.0.1:port`, fetched with a raw HTTP/1.1 GET and
/// `Accept: application/nostr+json`: `Some(body)` for a 200 answer, `None`
/// for anything else (no answer, an empty reply, another status).
pub async fn nip11(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let get = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/nostr+json\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status_ok = head.lines().next()?.split_whitespace().nth(1)? == "200";
        status_ok.then(|| body.to_owned())
    };
    tokio::time::timeout(STEP_TIMEOUT, get).await.ok()?
}
