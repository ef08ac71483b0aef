//! Settings of the I/O shell: network limits, channel sizes, where state is
//! kept, and the engine configuration it runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use grasp_sync_core::Config;
use nostr::key::Keys;

/// Everything a [`Runner`](crate::Runner) is built from, besides its store.
#[derive(Clone, Debug)]
pub struct IoConfig {
    /// The engine's configuration.
    pub engine: Config,
    /// Network limits and address policy.
    pub net: NetConfig,
    /// Where the engine snapshot is saved (`None`: not persisted).
    pub state_file: Option<PathBuf>,
    /// How often the snapshot is saved.
    pub snapshot_interval: Duration,
    /// Key for NIP-42 AUTH (`None`: AUTH is not answered).
    pub auth_keys: Option<Keys>,
    /// Prometheus endpoint address (`None`: no endpoint).
    pub metrics_addr: Option<SocketAddr>,
    /// Ids remembered as already verified (drops repeats cheaply; about
    /// 80 bytes each).
    pub seen_ids_capacity: usize,
    /// Signature-verification threads (0: one per available core).
    pub verify_threads: usize,
    /// Messages a connection may have in the pipeline before it stops
    /// reading its socket (per-relay backpressure).
    pub per_relay_inflight: usize,
}

impl IoConfig {
    /// The defaults for `engine`.
    pub fn new(engine: Config) -> Self {
        IoConfig {
            net: NetConfig::default(),
            engine,
            state_file: None,
            snapshot_interval: Duration::from_secs(30),
            auth_keys: None,
            metrics_addr: None,
            seen_ids_capacity: 1 << 18,
            verify_threads: 0,
            per_relay_inflight: 4096,
        }
    }
}

/// Network limits. (Which addresses a relay may resolve to is the
/// engine's `allow_private`, see [`crate::net::AddressPolicy`].)
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// TCP + TLS + websocket handshake must finish within this. Keep it
    /// below the engine's `timing.connect_timeout`, which is only the
    /// engine's backstop for a host that never reports.
    pub connect_timeout: Duration,
    /// A ping is sent after this much silence.
    pub ping_interval: Duration,
    /// No frame at all for this long (pings included) drops the connection.
    pub idle_timeout: Duration,
    /// Largest websocket message accepted.
    pub max_message_size: usize,
    /// NIP-11 request timeout.
    pub nip11_timeout: Duration,
    /// Largest NIP-11 document read.
    pub nip11_max_bytes: usize,
    /// Outgoing frames queued per connection; a full queue means the
    /// connection is stuck and it is dropped.
    pub send_queue: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            max_message_size: 1 << 20,
            nip11_timeout: Duration::from_secs(10),
            nip11_max_bytes: 64 * 1024,
            send_queue: 1024,
        }
    }
}
