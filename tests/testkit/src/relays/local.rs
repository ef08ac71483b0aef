//! The rust-nostr `LocalRelay` (nostr-relay-builder 0.44.1, in process) as a
//! test peer on 127.0.0.1, with restarts on the same port over the same
//! in-memory database.
//!
//! This module owns the TCP listener and every connection task: it performs
//! the websocket upgrade itself and hands the upgraded stream to
//! `LocalRelay::take_connection`, so [`LocalRelayHarness::stop`] closes the
//! port and drops every connection at once (upstream's own `shutdown` can
//! miss a connection that is busy at that moment). Plain HTTP requests (a
//! NIP-11 GET) are answered by closing the connection, as upstream does.
//!
//! The relay uses nostr 0.44 types; events cross over as JSON.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use nostr::event::{Event, EventId};
use nostr::filter::Filter;
use nostr_relay_builder::prelude as nrb;
use nostr_relay_builder::prelude::JsonUtil as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::client::{self, PublishReport};

/// Knobs of the local relay. The defaults are upstream's, except the EVENT
/// rate limit, which is raised so tests can publish thousands of events.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Open subscriptions per connection; one more gets
    /// `CLOSED "rate-limited: too many REQs"` (upstream default 500).
    pub max_reqs: usize,
    /// EVENTs per minute per connection before `OK false "rate-limited:
    /// slow down"` (upstream default 60; here 10,000,000).
    pub notes_per_minute: u32,
    /// Events returned for a filter without `limit` (upstream default 500).
    pub default_filter_limit: usize,
    /// Cap on a filter's `limit` (upstream default: none).
    pub max_filter_limit: Option<usize>,
    /// NIP-42: reading needs AUTH (a REQ before it gets
    /// `CLOSED "auth-required: …"`).
    pub auth_to_read: bool,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            max_reqs: 500,
            notes_per_minute: 10_000_000,
            default_filter_limit: 500,
            max_filter_limit: None,
            auth_to_read: false,
        }
    }
}

/// A running (or stopped) `LocalRelay` bound to `127.0.0.1:port`. Stopped
/// on drop.
pub struct LocalRelayHarness {
    relay: nrb::LocalRelay,
    database: Arc<dyn nrb::NostrDatabase>,
    port: u16,
    server: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LocalRelayHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRelayHarness")
            .field("port", &self.port)
            .field("running", &self.is_running())
            .finish()
    }
}

impl LocalRelayHarness {
    /// Starts a relay with [`LocalOptions::default`] on a free port.
    pub async fn start() -> LocalRelayHarness {
        Self::start_with(LocalOptions::default()).await
    }

    /// Starts a relay with `options` on a free port.
    pub async fn start_with(options: LocalOptions) -> LocalRelayHarness {
        let database: Arc<dyn nrb::NostrDatabase> =
            Arc::new(nrb::MemoryDatabase::with_opts(nrb::MemoryDatabaseOptions {
                events: true,
                max_events: None,
            }));
        let mut builder = nrb::RelayBuilder::default()
            .database(database.clone())
            .rate_limit(nrb::RateLimit {
                max_reqs: options.max_reqs,
                notes_per_minute: options.notes_per_minute,
            })
            .default_filter_limit(options.default_filter_limit);
        if let Some(max) = options.max_filter_limit {
            builder = builder.max_filter_limit(max);
        }
        if options.auth_to_read {
            builder = builder.nip42(nrb::RelayBuilderNip42 {
                mode: nrb::RelayBuilderNip42Mode::Read,
            });
        }
        let relay = nrb::LocalRelay::new(builder);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let mut h = LocalRelayHarness {
            relay,
            database,
            port,
            server: None,
        };
        h.serve(listener);
        h
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True between a start and a stop.
    pub fn is_running(&self) -> bool {
        self.server.as_ref().is_some_and(|s| !s.is_finished())
    }

    fn serve(&mut self, listener: TcpListener) {
        let relay = self.relay.clone();
        self.server = Some(tokio::spawn(async move {
            // Dropping this set (when the task is aborted) aborts every
            // connection task.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, addr)) = accepted else { continue };
                        let relay = relay.clone();
                        conns.spawn(async move {
                            if let Some(stream) = upgrade(stream).await {
                                let _ = relay.take_connection(stream, addr).await;
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        }));
    }

    /// Stops listening and drops every connection (without a close frame,
    /// like a crash). The database is kept.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
        // Let the aborted connection tasks be dropped.
        tokio::task::yield_now().await;
    }

    /// Starts listening again on the same port, over the same database.
    /// Panics when the port cannot be bound again within 10 s.
    pub async fn start_again(&mut self) {
        assert!(!self.is_running(), "the local relay is already running");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => {
                    self.serve(listener);
                    return;
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    panic!("cannot bind 127.0.0.1:{} again: {e}", self.port)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// [`LocalRelayHarness::stop`] then [`LocalRelayHarness::start_again`].
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Saves events straight into the database (works while stopped: "what
    /// the relay received while we were away"). No live subscriber is told.
    /// Panics when the database refuses one (replaced or deleted events are
    /// refused).
    pub async fn insert(&self, events: &[Event]) {
        for e in events {
            let ev = to_v044(e);
            let status = self
                .database
                .save_event(&ev)
                .await
                .unwrap_or_else(|err| panic!("database error saving {}: {err}", e.id));
            assert!(
                status.is_success(),
                "local relay database refused {}: {status:?}",
                e.id
            );
        }
    }

    /// How many events the database holds for `filter`, read directly (no
    /// page cap; works while stopped).
    pub async fn db_count(&self, filter: &Filter) -> usize {
        let f = nrb::Filter::from_json(filter.as_json()).expect("filter converts to nostr 0.44");
        self.database
            .count(f)
            .await
            .unwrap_or_else(|e| panic!("database count: {e}"))
    }

    /// Every id in the database (read directly; works while stopped).
    pub async fn db_ids(&self) -> BTreeSet<EventId> {
        let events = self
            .database
            .query(nrb::Filter::new())
            .await
            .unwrap_or_else(|e| panic!("database query: {e}"));
        events
            .into_iter()
            .map(|e| EventId::from_hex(&e.id.to_hex()).expect("event id"))
            .collect()
    }

    /// Publishes over a websocket, waiting for every `OK` (see
    /// [`client::RelayClient::publish`]).
    pub async fn publish(&self, events: &[Event]) -> PublishReport {
        client::publish(&self.url(), events).await
    }

    /// One REQ up to `EOSE` over a websocket (the relay's caps apply).
    pub async fn fetch(&self, filters: &[Filter]) -> Vec<Event> {
        client::fetch(&self.url(), filters).await
    }

    /// Events for `filter` with an explicit huge `limit`, over a websocket.
    pub async fn count(&self, filter: Filter) -> usize {
        client::count(&self.url(), filter).await
    }

    /// Which of `ids` the relay does not serve.
    pub async fn missing(&self, ids: &BTreeSet<EventId>) -> BTreeSet<EventId> {
        client::missing(&self.url(), ids).await
    }
}

impl Drop for LocalRelayHarness {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Converts an event to the relay's nostr 0.44 type through JSON.
fn to_v044(e: &Event) -> nrb::Event {
    nrb::Event::from_json(e.as_json()).expect("event converts to nostr 0.44")
}

/// Reads an HTTP upgrade request and answers `101`; `None` (and the
/// connection closed without a reply) for anything else.
async fn upgrade(mut stream: TcpStream) -> Option<TcpStream> {
    let mut buf = Vec::with_capacity(1024);
    let read_head = async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                return Some(());
            }
            if buf.len() > 16 * 1024 {
                return None;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_head)
        .await
        .ok()??;
    let head = String::from_utf8_lossy(&buf);
    let mut key = None;
    let mut is_upgrade = false;
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "sec-websocket-key" {
            key = Some(value.to_owned());
        } else if name == "upgrade" && value.eq_ignore_ascii_case("websocket") {
            is_upgrade = true;
        }
    }
    let key = key.filter(|_| is_upgrade)?;
    let reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(reply.as_bytes()).await.ok()?;
    Some(stream)
}
