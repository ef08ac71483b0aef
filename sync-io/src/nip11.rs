//! The relay information document (NIP-11, spec section 6) over HTTP.
//!
//! This module owns the one HTTP request the shell makes to a remote relay:
//! `GET` on the `http(s)://` form of the relay URL (`ws` → `http`, `wss` →
//! `https`, same host, port, path and query) with
//! `Accept: application/nostr+json`. The reply is read into a
//! [`RelayInfo`] with [`RelayInfo::from_nip11_json`].
//!
//! The request follows the same address policy as the websocket
//! ([`net::resolve`]): the host name is resolved once, refused addresses
//! are dropped, and the request can only go to the addresses that passed
//! (the HTTP client's resolver is replaced by one that knows this single
//! name and nothing else, and proxies from the environment are ignored), so
//! the name cannot be re-resolved to somewhere else in between. Redirects
//! are followed by hand, at most [`MAX_REDIRECTS`] of them, and each new
//! location goes through the policy again.
//!
//! Limits: the whole exchange (every redirect hop and the body) must finish
//! within [`NetConfig::nip11_timeout`]; the body is read as a stream and
//! the request fails as soon as it grows beyond
//! [`NetConfig::nip11_max_bytes`]. A status other than 2xx is an error; any
//! content type is accepted (many relays answer `application/json`).
//!
//! A relay without a NIP-11 document is normal. The runner reports an empty
//! [`RelayInfo::default()`] to the engine on any [`Nip11Error`] (so the
//! engine plans within its conservative defaults and stops asking), logs
//! the error and counts it in
//! [`RelayIoCounters::nip11_failures`](crate::metrics::RelayIoCounters::nip11_failures).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use grasp_sync_core::info::InfoError;
use grasp_sync_core::{RelayInfo, RelayUrl};
use reqwest::header::{HeaderValue, ACCEPT, LOCATION, USER_AGENT};
use reqwest::Url;

use crate::config::NetConfig;
use crate::net::{self, AddressPolicy, ConnectError};

/// Redirects followed before the request is given up.
pub const MAX_REDIRECTS: usize = 3;

/// The media type NIP-11 asks for.
pub const NOSTR_JSON: &str = "application/nostr+json";

/// Why a relay information document could not be read. The runner treats
/// every variant the same way: it reports [`RelayInfo::default()`].
#[derive(Debug, thiserror::Error)]
pub enum Nip11Error {
    /// The relay URL (or a redirect location) is not a usable http(s) URL.
    #[error("invalid NIP-11 URL {url}: {reason}")]
    Url {
        /// The URL text.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host could not be resolved, or resolves only to refused addresses.
    #[error("address: {0}")]
    Address(#[from] ConnectError),
    /// Connecting, TLS, or the HTTP exchange failed.
    #[error("http: {0}")]
    Http(#[source] reqwest::Error),
    /// The relay answered with a status other than 2xx (or a redirect
    /// without a location).
    #[error("HTTP status {0}")]
    Status(u16),
    /// More than [`MAX_REDIRECTS`] redirects.
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    /// The body is larger than `nip11_max_bytes`.
    #[error("document larger than {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The whole exchange took longer than `nip11_timeout`.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The body is empty (some relays answer any GET with an empty 200).
    #[error("empty document")]
    Empty,
    /// The body is not UTF-8.
    #[error("document is not UTF-8")]
    NotUtf8,
    /// The body is not a JSON object.
    #[error(transparent)]
    Parse(#[from] InfoError),
}

/// Fetches and parses the relay's NIP-11 document (see the module
/// documentation for the policy and limits). On error the caller reports
/// [`RelayInfo::default()`] to the engine: a relay without NIP-11 is fine.
pub async fn fetch(
    url: &RelayUrl,
    net: &NetConfig,
    policy: AddressPolicy,
) -> Result<RelayInfo, Nip11Error> {
    let timeout = net.nip11_timeout;
    match tokio::time::timeout(timeout, fetch_inner(url, net, policy)).await {
        Ok(result) => result,
        Err(_) => Err(Nip11Error::Timeout(timeout)),
    }
}

/// The `http(s)://` URL of a relay's information document: `ws` → `http`,
/// `wss` → `https`, same host, port, path and query.
pub fn http_url(url: &RelayUrl) -> Result<Url, Nip11Error> {
    let scheme = if url.is_secure() { "https" } else { "http" };
    let text = format!("{scheme}://{}{}", url.host_port(), url.path_and_query());
    Url::parse(&text).map_err(|e| Nip11Error::Url {
        url: text,
        reason: e.to_string(),
    })
}

async fn fetch_inner(
    relay: &RelayUrl,
    net: &NetConfig,
    policy: AddressPolicy,
) -> Result<RelayInfo, Nip11Error> {
    let mut target = relay.clone();
    let mut url = http_url(relay)?;
    let mut redirects = 0;
    let mut response = loop {
        let addrs = net::resolve(&target, policy).await?;
        let client = client_for(&url, addrs)?;
        let response = client
            .get(url.clone())
            .header(ACCEPT, HeaderValue::from_static(NOSTR_JSON))
            .send()
            .await
            .map_err(Nip11Error::Http)?;
        let status = response.status();
        if status.is_redirection() {
            let Some(location) = response.headers().get(LOCATION) else {
                return Err(Nip11Error::Status(status.as_u16()));
            };
            if redirects == MAX_REDIRECTS {
                return Err(Nip11Error::TooManyRedirects);
            }
            redirects += 1;
            let next = redirect_target(&url, location)?;
            tracing::debug!(relay = %relay, from = %url, to = %next, "NIP-11 redirect");
            target = relay_url_of(&next)?;
            url = next;
            continue;
        }
        if !status.is_success() {
            return Err(Nip11Error::Status(status.as_u16()));
        }
        break response;
    };
    let limit = net.nip11_max_bytes;
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(Nip11Error::TooLarge { limit });
    }
    let mut body: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Nip11Error::Http)? {
        if body.len() + chunk.len() > limit {
            return Err(Nip11Error::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).map_err(|_| Nip11Error::NotUtf8)?;
    if text.trim().is_empty() {
        return Err(Nip11Error::Empty);
    }
    Ok(RelayInfo::from_nip11_json(&text)?)
}

/// Resolves a redirect `Location` against the URL that answered with it.
fn redirect_target(base: &Url, location: &HeaderValue) -> Result<Url, Nip11Error> {
    let bad = |reason: &str| Nip11Error::Url {
        url: String::from_utf8_lossy(location.as_bytes()).into_owned(),
        reason: reason.to_string(),
    };
    let text = location
        .to_str()
        .map_err(|_| bad("location is not ASCII"))?;
    let mut next = base.join(text).map_err(|e| bad(&e.to_string()))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(bad("not an http(s) URL"));
    }
    next.set_fragment(None);
    Ok(next)
}

/// The relay URL with the same host and port as an http(s) URL, so that
/// [`net::resolve`] can check it.
fn relay_url_of(url: &Url) -> Result<RelayUrl, Nip11Error> {
    RelayUrl::parse(url.as_str()).map_err(|e| Nip11Error::Url {
        url: url.to_string(),
        reason: e.to_string(),
    })
}

/// A client that can reach `url`'s host only at `addrs` (the addresses that
/// passed the policy): no proxy, no redirects, HTTP/1.1, the shared rustls
/// configuration. Its time limit is the caller's (one for the whole fetch).
fn client_for(url: &Url, addrs: Vec<SocketAddr>) -> Result<reqwest::Client, Nip11Error> {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    reqwest::Client::builder()
        .use_preconfigured_tls(net::tls_config().as_ref().clone())
        .dns_resolver(Arc::new(PinnedResolver {
            host: host.to_ascii_lowercase(),
            addrs,
        }))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        .pool_max_idle_per_host(0)
        .default_headers(
            [(
                USER_AGENT,
                HeaderValue::from_static(concat!("grasp-sync/", env!("CARGO_PKG_VERSION"))),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .map_err(Nip11Error::Http)
}

/// A resolver that knows one name (already resolved and checked) and
/// refuses every other.
struct PinnedResolver {
    host: String,
    addrs: Vec<SocketAddr>,
}

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let result: Result<reqwest::dns::Addrs, Box<dyn std::error::Error + Send + Sync>> =
            if name.as_str().eq_ignore_ascii_case(&self.host) {
                Ok(Box::new(self.addrs.clone().into_iter()))
            } else {
                Err(format!("{} is not the pinned host {}", name.as_str(), self.host).into())
            };
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-shot-per-connection HTTP server on 127.0.0.1: reads the request
    /// head, hands it to `reply` and writes what it returns (raw bytes).
    /// `None` means never answer (the connection is held open).
    async fn server<F>(reply: F) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>)
    where
        F: Fn(&str) -> Option<Vec<u8>> + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (heads_tx, heads_rx) = tokio::sync::mpsc::unbounded_channel();
        let reply = Arc::new(reply);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let reply = reply.clone();
                let heads_tx = heads_tx.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let _ = heads_tx.send(head.clone());
                    match reply(&head) {
                        Some(bytes) => {
                            let _ = stream.write_all(&bytes).await;
                            let _ = stream.shutdown().await;
                        }
                        None => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                    }
                });
            }
        });
        (addr, heads_rx)
    }

    fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn net() -> NetConfig {
        NetConfig {
            nip11_timeout: Duration::from_secs(5),
            ..NetConfig::default()
        }
    }

    fn relay(addr: SocketAddr, path: &str) -> RelayUrl {
        RelayUrl::parse(&format!("ws://{addr}{path}")).unwrap()
    }

    const DOC: &str = r#"{"name":"test","supported_nips":[1,11,77],
        "limitation":{"max_subscriptions":7,"max_limit":300,"max_message_length":65536,"auth_required":false}}"#;

    #[test]
    fn http_form_of_relay_urls() {
        let url = RelayUrl::parse("wss://relay.example.com").unwrap();
        assert_eq!(
            http_url(&url).unwrap().as_str(),
            "https://relay.example.com/"
        );
        let url = RelayUrl::parse("ws://relay.example.com:8080/nostr?x=1").unwrap();
        assert_eq!(
            http_url(&url).unwrap().as_str(),
            "http://relay.example.com:8080/nostr?x=1"
        );
        let url = RelayUrl::parse("wss://[2001:db8::1]:444/r").unwrap();
        assert_eq!(
            http_url(&url).unwrap().as_str(),
            "https://[2001:db8::1]:444/r"
        );
    }

    #[test]
    fn client_builds_with_the_shared_tls_config() {
        let url = Url::parse("https://relay.example.com/").unwrap();
        let addrs = vec!["1.1.1.1:443".parse().unwrap()];
        client_for(&url, addrs).expect("rustls config accepted");
    }

    #[tokio::test]
    async fn reads_a_valid_document() {
        let (addr, mut heads) = server(|_| Some(response("200 OK", "application/json", DOC))).await;
        let info = fetch(&relay(addr, "/sub?a=b"), &net(), AddressPolicy::AnyAddress)
            .await
            .unwrap();
        assert_eq!(info.max_subscriptions, Some(7));
        assert_eq!(info.max_limit, Some(300));
        assert_eq!(info.max_message_length, Some(65536));
        assert!(info.supports(77));
        let head = heads.recv().await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /sub?a=b http/1.1\r\n"), "{head}");
        assert!(
            head.contains("accept: application/nostr+json\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");
    }

    #[tokio::test]
    async fn empty_200_is_an_error() {
        let (addr, _) = server(|_| Some(response("200 OK", "text/html", ""))).await;
        let err = fetch(&relay(addr, ""), &net(), AddressPolicy::AnyAddress)
            .await
            .unwrap_err();
        assert!(matches!(err, Nip11Error::Empty), "{err}");
        // Without a Content-Length, ended by closing the connection.
        let (addr, _) =
            server(|_| Some(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec())).await;
        let err = fetch(&relay(addr, ""), &net(), AddressPolicy::AnyAddress)
            .await
            .unwrap_err();
        assert!(matches!(err, Nip11Error::Empty), "{err}");
    }

    #[tokio::test]
    async fn not_json_is_an_error() {
        let (addr, _) = server(|_| Some(response("200 OK", "text/html", "<html></html>"))).await;
        let err = fetch(&relay(addr, ""), &net(), AddressPolicy::AnyAddress)
            .await
            .unwrap_err();
        assert!(matches!(err, Nip11Error::Parse(_)), "{err}");
    }

    #[tokio::test]
    async fn not_found_is_an_error() {
        let (addr, _) = server(|_| Some(response("404 Not Found", "text/plain", "no"))).await;
        let err = fetch(&relay(addr, ""), &net(), AddressPolicy::AnyAddress)
            .await
            .unwrap_err();
        assert!(matches!(err, Nip11Error::Status(404)), "{err}");
    }

    #[tokio::test]
    async fn oversized_body_is_an_error() {
        let big = format!("{{\"name\":\"{}\"}}", "x".repeat(10_000));
        let mut small = net();
        small.nip11_max_bytes = 1000;
        // Announced by Content-Length.
        let doc = big.clone();
        let (addr, _) = server(move |_| Some(response("200 OK", "application/json", &doc))).await;
        let err = fetch(&relay(addr, ""), &small, AddressPolicy::AnyAddress)
            .await
            .unwrap_err();
        assert!(matches!(err, Nip11Error::TooLarge { limit: 1000 }), "{err}");
        // Streamed without a length (ended by closing the connection).
        let (addr, _) = server(move |_| {
            Some(format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{big}").into_bytes())
        })
        .await;
        let err = fetch(&relay(addr, ""), &small, AddressPolicy::AnyAddress)
            .await
            .unwrap_err();
        assert!(matches!(err, Nip11Error::TooLarge { limit: 1000 }), "{err}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let (addr, _) = server(|_| None).await;
        let mut quick = net();
        quick.nip11_timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let err = fetch(&relay(addr, ""), &quick, AddressPolicy::AnyAddress)
            .await
            .unwrap_err();
        assert!(matches!(err, Nip11Error::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn loopback_refused_without_permission() {
        let (addr, mut heads) = server(|_| Some(response("200 OK", "application/json", DOC))).await;
        let strict = net();
        let err = fetch(&relay(addr, ""), &strict, AddressPolicy::PublicOnly)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Nip11Error::Address(ConnectError::RefusedAddress { .. })
            ),
            "{err}"
        );
        let named = RelayUrl::parse(&format!("ws://localhost:{}", addr.port())).unwrap();
        let err = fetch(&named, &strict, AddressPolicy::PublicOnly)
            .await
            .unwrap_err();
        assert!(matches!(err, Nip11Error::Address(_)), "{err}");
        assert!(heads.try_recv().is_err(), "no request may reach the server");
    }

    #[tokio::test]
    async fn follows_a_few_redirects() {
        let (addr, _) = server(|head| {
            if head.starts_with("GET /doc ") {
                Some(response("200 OK", "application/nostr+json", DOC))
            } else {
                Some(
                    b"HTTP/1.1 301 Moved\r\nLocation: /doc#frag\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_vec(),
                )
            }
        })
        .await;
        let info = fetch(&relay(addr, ""), &net(), AddressPolicy::AnyAddress)
            .await
            .unwrap();
        assert_eq!(info.max_subscriptions, Some(7));
    }

    #[tokio::test]
    async fn redirect_loops_and_other_schemes_fail() {
        let (addr, _) = server(|_| {
            Some(
                b"HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            )
        })
        .await;
        let err = fetch(&relay(addr, ""), &net(), AddressPolicy::AnyAddress)
            .await
            .unwrap_err();
        assert!(matches!(err, Nip11Error::TooManyRedirects), "{err}");
        let (addr, _) = server(|_| {
            Some(
                b"HTTP/1.1 302 Found\r\nLocation: ftp://example.com/x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            )
        })
        .await;
        let err = fetch(&relay(addr, ""), &net(), AddressPolicy::AnyAddress)
            .await
            .unwrap_err();
        assert!(matches!(err, Nip11Error::Url { .. }), "{err}");
    }

    #[tokio::test]
    async fn pinned_resolver_knows_one_name() {
        // The client can only reach the addresses that passed the policy:
        // any other name (a proxy, a redirect the client would follow on its
        // own) fails to resolve.
        use reqwest::dns::Resolve;
        let pinned = PinnedResolver {
            host: "relay.example.com".into(),
            addrs: vec!["1.1.1.1:443".parse().unwrap()],
        };
        let ok = pinned
            .resolve("relay.example.com".parse().unwrap())
            .await
            .unwrap()
            .collect::<Vec<_>>();
        assert_eq!(ok, vec!["1.1.1.1:443".parse::<SocketAddr>().unwrap()]);
        assert!(pinned
            .resolve("other.example.com".parse().unwrap())
            .await
            .is_err());
    }
}
