//! The counters the I/O shell keeps ([`IoCounters`]): per relay
//! ([`RelayIoCounters`], one field per [`IoCounter`]), the totals of relays
//! the engine forgot, and a few shell-wide gauges and counters.
//!
//! The per-relay counters are declared once, in the table below: each line
//! gives the field, its [`IoCounter`] name and its help text, so adding a
//! counter is one line, and [`RelayIoCounters::add`] and the exposition
//! ([`super::render`]) walk [`IoCounter::ALL`] instead of naming fields.

use std::collections::BTreeMap;

use grasp_sync_core::RelayUrl;

/// Declares [`RelayIoCounters`] (a named `u64` field per counter, which is
/// what the code that counts writes) and [`IoCounter`] (the same counters
/// as values, which is what code over all of them walks).
macro_rules! relay_io_counters {
    ($($variant:ident => $field:ident: $help:literal;)*) => {
        /// Counters the I/O shell keeps about one relay.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct RelayIoCounters {
            $(
                #[doc = $help]
                pub $field: u64,
            )*
        }

        /// One of a relay's I/O counters.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum IoCounter {
            $(
                #[doc = $help]
                $variant,
            )*
        }

        impl IoCounter {
            /// Every counter, in exposition order.
            pub const ALL: &[IoCounter] = &[$(IoCounter::$variant),*];

            /// The metric name after `grasp_sync_relay_` (and before `_total`).
            pub fn name(self) -> &'static str {
                match self {
                    $(IoCounter::$variant => stringify!($field),)*
                }
            }

            /// The metric's help text.
            pub fn help(self) -> &'static str {
                match self {
                    $(IoCounter::$variant => $help,)*
                }
            }
        }

        impl RelayIoCounters {
            /// One counter's value.
            pub fn get(&self, counter: IoCounter) -> u64 {
                match counter {
                    $(IoCounter::$variant => self.$field,)*
                }
            }

            /// One counter, to count into.
            pub fn get_mut(&mut self, counter: IoCounter) -> &mut u64 {
                match counter {
                    $(IoCounter::$variant => &mut self.$field,)*
                }
            }
        }
    };
}

relay_io_counters! {
    FramesReceived => frames_received: "Websocket frames read";
    EventFramesReceived => event_frames_received: "EVENT frames read";
    EventBytesReceived => event_bytes_received: "Payload bytes of the EVENT frames read";
    BytesReceived => bytes_received: "Payload bytes of the text frames read";
    BytesSent => bytes_sent: "Payload bytes of the text frames queued for sending";
    MessagesMalformed => messages_malformed: "Relay messages that could not be parsed";
    FramesOversized => frames_oversized: "Frames over the size limit";
    SeenCacheHits => seen_cache_hits: "Events dropped by the seen-id cache before signature verification";
    SendQueueOverflows => send_queue_overflows: "Connections dropped because their send queue was full";
    Nip11Failures => nip11_failures: "NIP-11 fetches that failed";
    AuthAttempts => auth_attempts: "NIP-42 AUTH events sent";
}

impl RelayIoCounters {
    /// Adds `other` to these counters (saturating).
    pub fn add(&mut self, other: &RelayIoCounters) {
        for &counter in IoCounter::ALL {
            let sum = self.get(counter).saturating_add(other.get(counter));
            *self.get_mut(counter) = sum;
        }
    }
}

/// Counters and gauges kept by the I/O shell (the engine keeps its own in
/// [`Status`](grasp_sync_core::Status)). The driver owns one and hands it to
/// [`render`](super::render).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Per relay.
    pub per_relay: BTreeMap<RelayUrl, RelayIoCounters>,
    /// Counters of relays removed with [`IoCounters::forget`], kept so that
    /// the totals never go down.
    pub retired: RelayIoCounters,
    /// Websockets open (gauge).
    pub connections_open: u64,
    /// Events waiting for signature verification (gauge).
    pub verify_queue: u64,
    /// Events handed to the store and not answered yet (gauge).
    pub store_inflight: u64,
    /// Store failures.
    pub store_errors: u64,
    /// Snapshots saved.
    pub snapshot_saves: u64,
    /// Snapshot saves that failed.
    pub snapshot_failures: u64,
}

impl IoCounters {
    /// The counters of `relay`, created on first use.
    pub fn relay(&mut self, relay: &RelayUrl) -> &mut RelayIoCounters {
        // Called per frame: clone the URL only the first time.
        if !self.per_relay.contains_key(relay) {
            self.per_relay
                .insert(relay.clone(), RelayIoCounters::default());
        }
        self.per_relay
            .get_mut(relay)
            .expect("the entry was inserted above")
    }

    /// Drops the per-relay series of a relay the engine forgot; its counts
    /// stay in the totals.
    pub fn forget(&mut self, relay: &RelayUrl) {
        if let Some(counters) = self.per_relay.remove(relay) {
            self.retired.add(&counters);
        }
    }

    /// The sum over every relay, forgotten ones included.
    pub fn totals(&self) -> RelayIoCounters {
        let mut total = self.retired.clone();
        for counters in self.per_relay.values() {
            total.add(counters);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_totals_survive_forget() {
        let mut io = IoCounters::default();
        let url = RelayUrl::parse("wss://relay.example.org").unwrap();
        io.relay(&url).auth_attempts = 2;
        io.relay(&url).auth_attempts += 1;
        assert_eq!(io.totals().auth_attempts, 3);
        io.forget(&url);
        assert!(io.per_relay.is_empty());
        assert_eq!(io.totals().auth_attempts, 3);
    }

    #[test]
    fn every_counter_adds_and_saturates() {
        let mut a = RelayIoCounters::default();
        let mut b = RelayIoCounters::default();
        for (i, &c) in IoCounter::ALL.iter().enumerate() {
            *a.get_mut(c) = i as u64;
            *b.get_mut(c) = 100;
        }
        b.bytes_sent = u64::MAX;
        a.add(&b);
        for (i, &c) in IoCounter::ALL.iter().enumerate() {
            let want = if c == IoCounter::BytesSent {
                u64::MAX
            } else {
                i as u64 + 100
            };
            assert_eq!(a.get(c), want, "{}", c.name());
        }
        assert_eq!(a.frames_received, 100, "fields and counters are the same");
    }
}
