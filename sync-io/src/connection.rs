//! One relay connection: a reader task and a writer task around one
//! websocket.
//!
//! The writer sends what the driver queues (REQ, CLOSE, AUTH, NEG-*) and pings
//! after `ping_interval` of quiet. The reader parses every text frame into
//! a NIP-01 relay message and hands it to the driver. Each connection holds
//! a semaphore of `per_relay_inflight` permits: a message takes one and
//! keeps it until the driver has finished with it (verified and stored,
//! for an event). A relay that sends faster than we process runs out of
//! permits and its reader stops reading the socket, so TCP pushes back on
//! that relay alone; the shared channel to the driver never holds more
//! than the sum of the permits.
//!
//! The driver's queue to the writer is bounded too (`send_queue`). It only
//! carries our own small frames, so a full queue means the relay stopped
//! reading: the driver then drops the connection (overflow rule).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use grasp_sync_core::RelayUrl;
use nostr::event::{Event, EventId};
use nostr::message::{RelayMessage, SubscriptionId};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::Instrument;

use crate::config::NetConfig;
use crate::net::{self, AddressPolicy, ConnectError};

/// Identifies one connection attempt to a relay, so that late messages of
/// an earlier attempt are recognised and dropped.
pub type ConnId = u64;

/// What a connection reports to the driver (the attempt's id names the
/// relay: the driver keeps which attempt is whose).
#[derive(Debug)]
pub struct FromConn {
    /// The attempt.
    pub conn: ConnId,
    /// What happened.
    pub kind: ConnReport,
}

/// What happened on a connection.
#[derive(Debug)]
pub enum ConnReport {
    /// The websocket is open.
    Connected,
    /// The attempt failed before the websocket opened (`refused_address`:
    /// the address policy refused every address of the host).
    ConnectFailed {
        /// Why.
        reason: String,
        /// The address policy refused it.
        refused_address: bool,
    },
    /// A message from the relay with its frame's payload size in bytes,
    /// holding one of the connection's permits.
    Message(Incoming, usize, OwnedSemaphorePermit),
    /// The connection ended without us asking.
    Disconnected(String),
}

/// A relay message, parsed and owned.
#[derive(Debug)]
pub enum Incoming {
    /// `EVENT` (parsed; neither id nor signature checked yet).
    Event {
        /// The subscription it claims.
        subscription: SubscriptionId,
        /// The event.
        event: Box<Event>,
    },
    /// `EOSE`.
    Eose(SubscriptionId),
    /// `CLOSED`.
    Closed {
        /// The subscription.
        subscription: SubscriptionId,
        /// The message.
        message: String,
    },
    /// `NOTICE`.
    Notice(String),
    /// `AUTH` challenge.
    Auth(String),
    /// `NEG-MSG` (NIP-77).
    NegMsg {
        /// The reconciliation's subscription.
        subscription: SubscriptionId,
        /// The negentropy message (hex).
        message: String,
    },
    /// `NEG-ERR` (NIP-77).
    NegErr {
        /// The reconciliation's subscription.
        subscription: SubscriptionId,
        /// The reason.
        message: String,
    },
    /// `OK`.
    Ok {
        /// The event it answers.
        event_id: EventId,
        /// Accepted or not.
        accepted: bool,
        /// The message.
        message: String,
    },
    /// An `EVENT` frame whose event could not be parsed.
    InvalidEvent(String),
    /// A frame that is not a NIP-01 relay message (or one we never ask
    /// for, such as COUNT); counted and dropped.
    Malformed(String),
    /// A frame larger than the message cap was announced; the connection
    /// ends after this.
    Oversized,
}

impl Incoming {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Incoming {
        match RelayMessage::from_json(text) {
            Ok(RelayMessage::Event {
                subscription_id,
                event,
            }) => Incoming::Event {
                subscription: subscription_id.into_owned(),
                event: Box::new(event.into_owned()),
            },
            Ok(RelayMessage::EndOfStoredEvents(s)) => Incoming::Eose(s.into_owned()),
            Ok(RelayMessage::Closed {
                subscription_id,
                message,
            }) => Incoming::Closed {
                subscription: subscription_id.into_owned(),
                message: message.into_owned(),
            },
            Ok(RelayMessage::Notice(m)) => Incoming::Notice(m.into_owned()),
            Ok(RelayMessage::Auth { challenge }) => Incoming::Auth(challenge.into_owned()),
            Ok(RelayMessage::Ok {
                event_id,
                status,
                message,
            }) => Incoming::Ok {
                event_id,
                accepted: status,
                message: message.into_owned(),
            },
            Ok(RelayMessage::NegMsg {
                subscription_id,
                message,
            }) => Incoming::NegMsg {
                subscription: subscription_id.into_owned(),
                message: message.into_owned(),
            },
            Ok(RelayMessage::NegErr {
                subscription_id,
                message,
            }) => Incoming::NegErr {
                subscription: subscription_id.into_owned(),
                message: message.into_owned(),
            },
            Ok(other) => Incoming::Malformed(format!("unexpected message {}", verb(&other))),
            Err(e) if is_event_frame(text) => Incoming::InvalidEvent(e.to_string()),
            Err(e) => Incoming::Malformed(e.to_string()),
        }
    }
}

/// Whether a frame that failed to parse claims to be an `EVENT`.
fn is_event_frame(text: &str) -> bool {
    let rest = text.trim_start().strip_prefix('[').unwrap_or("");
    rest.trim_start().starts_with("\"EVENT\"")
}

fn verb(m: &RelayMessage<'_>) -> &'static str {
    match m {
        RelayMessage::Count { .. } => "COUNT",
        _ => "message",
    }
}

/// What the driver asks a connection's writer to do.
#[derive(Debug)]
pub enum Outgoing {
    /// Send a text frame.
    Text(String),
    /// Send a close frame and end the connection (no report follows).
    Close,
}

/// The driver's handle on one connection.
#[derive(Debug)]
pub struct ConnHandle {
    /// The attempt.
    pub id: ConnId,
    /// Frames to send.
    pub outgoing: mpsc::Sender<Outgoing>,
    task: JoinHandle<()>,
}

impl ConnHandle {
    /// Ends the connection at once, without a close frame.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Asks for a clean close; aborts when the writer cannot take it.
    pub fn close(self) {
        if self.outgoing.try_send(Outgoing::Close).is_err() {
            self.task.abort();
        }
    }

    /// Asks for a clean close and waits up to `timeout` for it, then aborts.
    pub async fn close_and_wait(self, timeout: Duration) {
        let ConnHandle { outgoing, task, .. } = self;
        if outgoing.try_send(Outgoing::Close).is_err() {
            task.abort();
            return;
        }
        let abort = task.abort_handle();
        if tokio::time::timeout(timeout, task).await.is_err() {
            abort.abort();
        }
    }
}

/// Starts a connection attempt to `relay`. Reports go to `to_driver`.
pub fn spawn(
    relay: RelayUrl,
    id: ConnId,
    net: Arc<NetConfig>,
    policy: AddressPolicy,
    per_relay_inflight: usize,
    to_driver: mpsc::Sender<FromConn>,
) -> ConnHandle {
    let (tx, rx) = mpsc::channel(net.send_queue.max(1));
    let span = tracing::info_span!("relay", url = %relay.as_str(), conn = id);
    let task = tokio::spawn(
        run(relay, id, net, policy, per_relay_inflight, rx, to_driver).instrument(span),
    );
    ConnHandle {
        id,
        outgoing: tx,
        task,
    }
}

async fn run(
    relay: RelayUrl,
    id: ConnId,
    net: Arc<NetConfig>,
    policy: AddressPolicy,
    per_relay_inflight: usize,
    mut outgoing: mpsc::Receiver<Outgoing>,
    to_driver: mpsc::Sender<FromConn>,
) {
    let report = |kind| FromConn { conn: id, kind };
    let socket = match net::connect(&relay, &net, policy).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "connect failed");
            let refused_address = matches!(e, ConnectError::RefusedAddress { .. });
            let failed = ConnReport::ConnectFailed {
                reason: e.to_string(),
                refused_address,
            };
            let _ = to_driver.send(report(failed)).await;
            return;
        }
    };
    tracing::debug!("connected");
    if to_driver.send(report(ConnReport::Connected)).await.is_err() {
        return;
    }
    let (mut sink, mut stream) = socket.split();
    let permits = Arc::new(Semaphore::new(per_relay_inflight.max(1)));

    // Reader: one permit per message, so a relay we cannot keep up with is
    // no longer read (TCP backpressure on it alone).
    let reader_to_driver = to_driver.clone();
    let idle = net.idle_timeout;
    let reader = async move {
        loop {
            let permit = match permits.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return "closed".to_string(),
            };
            let frame = match tokio::time::timeout(idle, stream.next()).await {
                Err(_) => return format!("no frame for {idle:?}"),
                Ok(None) => return "closed by relay".to_string(),
                Ok(Some(Err(WsError::Capacity(CapacityError::MessageTooLong {
                    size,
                    max_size: max,
                })))) => {
                    let msg = FromConn {
                        conn: id,
                        kind: ConnReport::Message(Incoming::Oversized, 0, permit),
                    };
                    let _ = reader_to_driver.send(msg).await;
                    return format!("message of {size} bytes over the {max} byte cap");
                }
                Ok(Some(Err(e))) => return e.to_string(),
                Ok(Some(Ok(frame))) => frame,
            };
            let (incoming, bytes) = match frame {
                Message::Text(text) => (Incoming::parse(text.as_str()), text.len()),
                Message::Binary(b) => (Incoming::Malformed("binary frame".into()), b.len()),
                Message::Close(_) => return "closed by relay".to_string(),
                // Pongs are answered by tungstenite; any frame proves liveness.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            let msg = FromConn {
                conn: id,
                kind: ConnReport::Message(incoming, bytes, permit),
            };
            if reader_to_driver.send(msg).await.is_err() {
                return "runner stopped".to_string();
            }
        }
    };

    // Writer: our frames, and a ping after a quiet interval.
    let ping_every = net.ping_interval;
    let writer = async move {
        let mut next_ping = Instant::now() + ping_every;
        loop {
            tokio::select! {
                out = outgoing.recv() => match out {
                    Some(Outgoing::Text(text)) => {
                        if let Err(e) = sink.send(Message::text(text)).await {
                            return Some(e.to_string());
                        }
                        next_ping = Instant::now() + ping_every;
                    }
                    Some(Outgoing::Close) | None => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
                        return None;
                    }
                },
                _ = tokio::time::sleep_until(next_ping) => {
                    if let Err(e) = sink.send(Message::Ping(Vec::new().into())).await {
                        return Some(e.to_string());
                    }
                    next_ping = Instant::now() + ping_every;
                }
            }
        }
    };

    tokio::pin!(reader);
    tokio::pin!(writer);
    let reason = tokio::select! {
        reason = &mut reader => Some(reason),
        reason = &mut writer => reason,
    };
    // `None`: we asked to close, so the driver expects no report.
    if let Some(reason) = reason {
        tracing::debug!(%reason, "disconnected");
        let _ = to_driver
            .send(report(ConnReport::Disconnected(reason)))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_relay_messages() {
        assert!(
            matches!(Incoming::parse(r#"["EOSE","a"]"#), Incoming::Eose(s) if s.as_str() == "a")
        );
        assert!(matches!(
            Incoming::parse(r#"["CLOSED","a","rate-limited: slow"]"#),
            Incoming::Closed { message, .. } if message == "rate-limited: slow"
        ));
        assert!(matches!(Incoming::parse(r#"["NOTICE","hi"]"#), Incoming::Notice(m) if m == "hi"));
        assert!(matches!(Incoming::parse(r#"["AUTH","c"]"#), Incoming::Auth(c) if c == "c"));
        assert!(matches!(
            Incoming::parse("not json"),
            Incoming::Malformed(_)
        ));
        assert!(matches!(
            Incoming::parse(r#"["EVENT","a",{}]"#),
            Incoming::InvalidEvent(_)
        ));
        assert!(matches!(
            Incoming::parse(r#"[ "EVENT","a",{"id":1}]"#),
            Incoming::InvalidEvent(_)
        ));
        assert!(matches!(
            Incoming::parse(r#"["COUNT","a",{"count":1}]"#),
            Incoming::Malformed(_)
        ));
        assert!(matches!(
            Incoming::parse(r#"["NEG-MSG","n",  "6100"]"#),
            Incoming::NegMsg { subscription, message } if subscription.as_str() == "n" && message == "6100"
        ));
        assert!(matches!(
            Incoming::parse(r#"["NEG-ERR","n","blocked: too big"]"#),
            Incoming::NegErr { message, .. } if message == "blocked: too big"
        ));
        assert!(matches!(
            Incoming::parse(r#"["WHAT"]"#),
            Incoming::Malformed(_)
        ));
    }
}
