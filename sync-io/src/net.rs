//! Reaching a relay: resolve its host name, refuse addresses the operator
//! did not allow (loopback, private, link-local, multicast, …), then open
//! TCP, TLS (rustls with the webpki roots) and the websocket handshake
//! within one timeout. The resolved address is the one connected to, so a
//! name cannot pass the check and then point somewhere else.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use grasp_sync_core::{Config, RelayUrl};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::config::NetConfig;

/// A websocket to a relay.
pub type RelaySocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a relay could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// DNS failed or returned nothing.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's answer.
        reason: String,
    },
    /// Every address of the host is one the policy refuses.
    #[error(
        "{host} resolves only to refused addresses ({addr}); allow private addresses to use it"
    )]
    RefusedAddress {
        /// The host name.
        host: String,
        /// The first refused address.
        addr: IpAddr,
    },
    /// The whole handshake took too long.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// TCP connect failed.
    #[error("tcp: {0}")]
    Tcp(std::io::Error),
    /// TLS or websocket handshake failed.
    #[error("handshake: {0}")]
    Handshake(String),
}

/// Whether `ip` is an address a public relay must not resolve to:
/// unspecified, loopback, private, shared (CGNAT), link-local, multicast,
/// broadcast, documentation or unique-local (and IPv4 inside IPv6 likewise).
pub fn is_refused_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_refused_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link local fe80::/10
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0, 0])
        }
    }
}

fn is_refused_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    v4.is_unspecified()
        || v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_multicast()
        || v4.is_broadcast()
        || v4.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64/10
        || a >= 240 // reserved
}

/// Which addresses a connection may go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressPolicy {
    /// Public addresses only: a relay learned from an announcement must
    /// not reach into the operator's network.
    PublicOnly,
    /// Any address: relays the operator named (bootstrap relays, the
    /// service's own relay), or every relay when the engine's
    /// `allow_private` is on.
    AnyAddress,
}

impl AddressPolicy {
    /// The policy for `relay` under `engine`: the one private-address
    /// setting is the engine's; bootstrap relays are the operator's own
    /// choice and always allowed.
    pub fn for_relay(engine: &Config, relay: &RelayUrl) -> AddressPolicy {
        if engine.allow_private || engine.bootstrap.contains(relay) {
            AddressPolicy::AnyAddress
        } else {
            AddressPolicy::PublicOnly
        }
    }
}

/// Resolves the relay's host and keeps the addresses the policy allows, in
/// the resolver's order.
pub async fn resolve(
    url: &RelayUrl,
    policy: AddressPolicy,
) -> Result<Vec<SocketAddr>, ConnectError> {
    let host = url.host().trim_start_matches('[').trim_end_matches(']');
    let port = url.effective_port();
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ConnectError::Resolve {
                host: host.to_string(),
                reason: e.to_string(),
            })?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(ConnectError::Resolve {
            host: host.to_string(),
            reason: "no addresses".into(),
        });
    }
    if policy == AddressPolicy::AnyAddress {
        return Ok(addrs);
    }
    let allowed: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| !is_refused_address(a.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(ConnectError::RefusedAddress {
            host: host.to_string(),
            addr: addrs[0].ip(),
        });
    }
    Ok(allowed)
}

/// The TLS client configuration shared by every connection: rustls with the
/// ring provider and the webpki root certificates.
pub fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Opens a websocket to `url`: resolve, check the policy, TCP connect to the
/// first address that answers, TLS for `wss://`, websocket handshake, all
/// within `net.connect_timeout`.
pub async fn connect(
    url: &RelayUrl,
    net: &NetConfig,
    policy: AddressPolicy,
) -> Result<RelaySocket, ConnectError> {
    let timeout = net.connect_timeout;
    match tokio::time::timeout(timeout, connect_inner(url, net, policy)).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout(timeout)),
    }
}

async fn connect_inner(
    url: &RelayUrl,
    net: &NetConfig,
    policy: AddressPolicy,
) -> Result<RelaySocket, ConnectError> {
    let addrs = resolve(url, policy).await?;
    let mut last_error = None;
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let stream = match stream {
        Some(s) => s,
        None => {
            return Err(ConnectError::Tcp(last_error.unwrap_or_else(|| {
                std::io::Error::other("no address to connect to")
            })))
        }
    };
    // Small frames (REQ, CLOSE) must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let config = websocket_config(net.max_message_size);
    let connector = if url.is_secure() {
        Connector::Rustls(tls_config())
    } else {
        Connector::Plain
    };
    let (socket, _response) = tokio_tungstenite::client_async_tls_with_config(
        url.as_str(),
        stream,
        Some(config),
        Some(connector),
    )
    .await
    .map_err(|e| ConnectError::Handshake(e.to_string()))?;
    Ok(socket)
}

/// The websocket limits: messages and frames capped at `max_message_size`.
pub fn websocket_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "224.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_refused_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "100.128.0.1"] {
            assert!(!is_refused_address(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn loopback_refused_unless_allowed() {
        let url = RelayUrl::parse("ws://127.0.0.1:1").unwrap();
        let err = resolve(&url, AddressPolicy::PublicOnly).await.unwrap_err();
        assert!(matches!(err, ConnectError::RefusedAddress { .. }), "{err}");
        assert_eq!(
            resolve(&url, AddressPolicy::AnyAddress)
                .await
                .unwrap()
                .len(),
            1
        );
        let named = RelayUrl::parse("ws://localhost:1").unwrap();
        assert!(resolve(&named, AddressPolicy::PublicOnly).await.is_err());
    }

    /// Relays the operator named (bootstrap) are reached whatever their
    /// address; relays learned from announcements only with `allow_private`.
    #[test]
    fn the_policy_follows_the_engine_and_the_operator() {
        let service = grasp_sync_core::ServiceId::parse("git.example.com").unwrap();
        let boot = RelayUrl::parse("ws://127.0.0.1:7000").unwrap();
        let learned = RelayUrl::parse("ws://10.0.0.5:7000").unwrap();
        let mut engine = Config::new(service);
        engine.bootstrap.push(boot.clone());
        assert_eq!(
            AddressPolicy::for_relay(&engine, &boot),
            AddressPolicy::AnyAddress
        );
        assert_eq!(
            AddressPolicy::for_relay(&engine, &learned),
            AddressPolicy::PublicOnly
        );
        engine.allow_private = true;
        assert_eq!(
            AddressPolicy::for_relay(&engine, &learned),
            AddressPolicy::AnyAddress
        );
    }
}
