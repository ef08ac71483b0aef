//! Relay URL normalisation and the identity of our own service.
//!
//! This module owns the one place where relay URLs are turned into keys
//! ([`RelayUrl`]), the name of the service we sync into ([`ServiceId`]) with
//! its exact own-relay test, and the mapping of GRASP-shaped clone URLs to
//! relays ([`grasp_clone_relay`]). Spec section 2 and "never again" item 14.
//!
//! Normalisation rules, applied by [`RelayUrl::parse`]:
//!
//! - surrounding whitespace is trimmed; an empty input is [`UrlError::Empty`];
//! - the scheme is case-insensitive and must be `ws` or `wss`; `http` is read
//!   as `ws` and `https` as `wss`; anything else is rejected;
//! - user-info (`user@`, `user:pw@`) is rejected;
//! - the host is lower-cased and must be a DNS name (ASCII letters, digits,
//!   `-`, `_`, dot-separated labels, none empty, at most 63 bytes each and 253
//!   in all), a dotted-quad IPv4 literal or a bracketed IPv6 literal (written
//!   back in its canonical compressed form). A name whose last label is
//!   numeric (`127.1`, `0x7f.0.0.1`) must be a valid dotted-quad IPv4 address,
//!   so that shorthand IPv4 forms cannot pass as names. Non-ASCII
//!   (internationalised) names must be given in their `xn--` form;
//! - the port must be `1..=65535`; the default port (80 for `ws`, 443 for
//!   `wss`) is dropped;
//! - the fragment (`#...`) is dropped;
//! - the path and query are kept verbatim, except that a path of just `/` is
//!   dropped (it is kept as `/` in front of a query, `ws://h/?q`), and an
//!   empty query (a bare `?`) is dropped. Path and query may only contain
//!   printable ASCII other than `\`; anything else is [`UrlError::BadPath`];
//! - the normalised URL is at most [`MAX_URL_LEN`] (255) bytes.
//!
//! Normalisation is idempotent: parsing the text of a [`RelayUrl`] gives the
//! same [`RelayUrl`] back.

use core::net::{Ipv4Addr, Ipv6Addr};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest normalised relay URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 255;

/// Longest piece of input quoted back in a [`UrlError`], in bytes.
const MAX_QUOTE: usize = 64;

/// Longest DNS name accepted as a host, in bytes.
const MAX_HOST_LEN: usize = 253;

/// Longest DNS label accepted, in bytes.
const MAX_LABEL_LEN: usize = 63;

/// Why a string is not an acceptable relay URL or service name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The input is empty or only whitespace.
    #[error("empty URL")]
    Empty,
    /// The normalised URL is longer than [`MAX_URL_LEN`] bytes.
    #[error("URL is {len} bytes long, at most {MAX_URL_LEN} are allowed")]
    TooLong {
        /// Length of the normalised URL, in bytes.
        len: usize,
    },
    /// There is no `scheme://` prefix.
    #[error("URL has no scheme (expected ws:// or wss://)")]
    MissingScheme,
    /// The scheme is not `ws`, `wss`, `http` or `https`.
    #[error("unsupported URL scheme {0:?}")]
    BadScheme(String),
    /// The URL carries user-info (`user@` or `user:password@`).
    #[error("URL carries user-info")]
    UserInfo,
    /// The host is missing or not a DNS name, IPv4 literal or bracketed IPv6 literal.
    #[error("bad host {0:?}")]
    BadHost(String),
    /// The port is empty, not a number, or outside `1..=65535`.
    #[error("bad port {0:?}")]
    BadPort(String),
    /// The path or query holds whitespace, control, non-ASCII or `\` characters.
    #[error("bad character in URL path or query {0:?}")]
    BadPath(String),
    /// A service name carried a path or query; a service is only `host[:port]`.
    #[error("a service is named by host[:port] only, not {0:?}")]
    ServiceWithPath(String),
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    s.get(..end).unwrap_or_default()
}

/// A quotable (bounded) copy of a piece of input, for error values.
fn quote(s: &str) -> String {
    truncate(s, MAX_QUOTE).to_owned()
}

/// A parsed host.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    /// A lower-case DNS name.
    Name(String),
    /// An IPv4 literal.
    V4(Ipv4Addr),
    /// An IPv6 literal.
    V6(Ipv6Addr),
}

impl Host {
    /// The host as written in a URL authority (IPv6 in brackets).
    fn write_authority(&self, out: &mut String) {
        match self {
            Host::Name(n) => out.push_str(n),
            Host::V4(ip) => out.push_str(&ip.to_string()),
            Host::V6(ip) => {
                out.push('[');
                out.push_str(&ip.to_string());
                out.push(']');
            }
        }
    }
}

/// A normalised `host[:port]`; `port` is whatever was written (not yet
/// compared with a scheme default).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Authority {
    host: Host,
    port: Option<u16>,
}

impl Authority {
    /// `host[:port]`, dropping `port` when it equals `default_port`.
    fn render(&self, default_port: Option<u16>) -> String {
        let mut out = String::new();
        self.host.write_authority(&mut out);
        if let Some(p) = self.port {
            if Some(p) != default_port {
                out.push(':');
                out.push_str(&p.to_string());
            }
        }
        out
    }
}

/// The default port of the `ws` (false) or `wss` (true) scheme.
const fn default_port(secure: bool) -> u16 {
    if secure {
        443
    } else {
        80
    }
}

/// The URL scheme for `secure`.
const fn scheme_str(secure: bool) -> &'static str {
    if secure {
        "wss"
    } else {
        "ws"
    }
}

/// Parses a port number: ASCII digits only, `1..=65535`.
fn parse_port(s: &str) -> Result<u16, UrlError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::BadPort(quote(s)));
    }
    match s.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(UrlError::BadPort(quote(s))),
    }
}

/// True when a DNS label looks like a number (decimal or `0x` hex), which
/// makes the whole host an IPv4 literal in URL parsers.
fn is_numeric_label(label: &str) -> bool {
    if let Some(hex) = label.strip_prefix("0x") {
        return hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit())
}

/// Parses an unbracketed host: a DNS name or a dotted-quad IPv4 literal.
fn parse_host_name(raw: &str) -> Result<Host, UrlError> {
    let bad = || UrlError::BadHost(quote(raw));
    if raw.is_empty() || raw.len() > MAX_HOST_LEN {
        return Err(bad());
    }
    let host = raw.to_ascii_lowercase();
    if !host
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(bad());
    }
    if host
        .split('.')
        .any(|label| label.is_empty() || label.len() > MAX_LABEL_LEN)
    {
        return Err(bad());
    }
    if host.rsplit('.').next().is_some_and(is_numeric_label) {
        return Ipv4Addr::from_str(&host).map(Host::V4).map_err(|_| bad());
    }
    Ok(Host::Name(host))
}

/// Parses `host[:port]` (no user-info, no path).
fn parse_authority(raw: &str) -> Result<Authority, UrlError> {
    if raw.contains('@') {
        return Err(UrlError::UserInfo);
    }
    if let Some(bracketed) = raw.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return Err(UrlError::BadHost(quote(raw)));
        };
        let ip = Ipv6Addr::from_str(inside).map_err(|_| UrlError::BadHost(quote(raw)))?;
        let port = if after.is_empty() {
            None
        } else if let Some(p) = after.strip_prefix(':') {
            Some(parse_port(p)?)
        } else {
            return Err(UrlError::BadHost(quote(raw)));
        };
        return Ok(Authority {
            host: Host::V6(ip),
            port,
        });
    }
    let (host, port) = match raw.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (raw, None),
    };
    let host = parse_host_name(host)?;
    let port = port.map(parse_port).transpose()?;
    Ok(Authority { host, port })
}

/// A URL taken apart, before assembly and the length check.
struct Parts<'a> {
    /// `wss` (or `https`) rather than `ws` (or `http`).
    secure: bool,
    /// True when the scheme was `http` or `https`.
    web_scheme: bool,
    /// Normalised host and port.
    authority: Authority,
    /// Path as given (empty or starting with `/`).
    path: &'a str,
    /// Query as given, without the `?`; `None` when absent or empty.
    query: Option<&'a str>,
}

/// True for characters allowed verbatim in a path or query.
fn is_path_char(c: char) -> bool {
    c.is_ascii_graphic() && c != '\\'
}

/// Takes a (trimmed, non-empty) URL apart, validating every piece.
fn parse_parts(input: &str) -> Result<Parts<'_>, UrlError> {
    let Some((scheme, rest)) = input.split_once("://") else {
        return Err(UrlError::MissingScheme);
    };
    let (secure, web_scheme) = match scheme.to_ascii_lowercase().as_str() {
        "ws" => (false, false),
        "wss" => (true, false),
        "http" => (false, true),
        "https" => (true, true),
        _ => return Err(UrlError::BadScheme(quote(scheme))),
    };
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at_checked(i).unwrap_or((rest, "")),
        None => (rest, ""),
    };
    // The fragment is dropped unread.
    let tail = tail
        .split_once('#')
        .map_or(tail, |(before, _fragment)| before);
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    // The authority is checked first: user-info is the more useful report.
    let authority = parse_authority(authority)?;
    if !path.chars().all(is_path_char) || !query.unwrap_or_default().chars().all(is_path_char) {
        return Err(UrlError::BadPath(quote(tail)));
    }
    Ok(Parts {
        secure,
        web_scheme,
        authority,
        path,
        query: query.filter(|q| !q.is_empty()),
    })
}

/// The authority of a normalised URL: between `://` and the path or query.
fn authority_of(normalised: &str) -> &str {
    let rest = normalised
        .split_once("://")
        .map_or(normalised, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap_or_default()
}

/// Host (IPv6 without brackets) and port of a normalised authority.
fn split_authority(authority: &str) -> (&str, Option<u16>) {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, after) = bracketed.split_once(']').unwrap_or((bracketed, ""));
        (inside, after.strip_prefix(':').and_then(|p| p.parse().ok()))
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, p.parse().ok()),
            None => (authority, None),
        }
    }
}

/// A normalised relay URL: the key used for relays everywhere in the engine.
///
/// Only built by [`RelayUrl::parse`] (also through `FromStr`, `TryFrom<String>`
/// and deserialisation), so its text always follows the module's
/// normalisation rules. Ordering is the byte order of that text. The text is
/// shared, so a clone (relay URLs are keys everywhere) costs no allocation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelayUrl(std::sync::Arc<str>);

impl RelayUrl {
    /// Parses and normalises a relay URL (see the module documentation).
    pub fn parse(input: &str) -> Result<RelayUrl, UrlError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(UrlError::Empty);
        }
        let parts = parse_parts(input)?;
        let mut out = String::with_capacity(input.len());
        out.push_str(scheme_str(parts.secure));
        out.push_str("://");
        out.push_str(&parts.authority.render(Some(default_port(parts.secure))));
        match (parts.path, parts.query) {
            ("" | "/", None) => {}
            ("", Some(_)) => out.push('/'),
            (path, _) => out.push_str(path),
        }
        if let Some(q) = parts.query {
            out.push('?');
            out.push_str(q);
        }
        if out.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong { len: out.len() });
        }
        Ok(RelayUrl(out.into()))
    }

    /// The normalised URL text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for `wss` (TLS) URLs.
    pub fn is_secure(&self) -> bool {
        self.0.starts_with("wss://")
    }

    /// The lower-case host; an IPv6 literal without its brackets.
    pub fn host(&self) -> &str {
        split_authority(authority_of(&self.0)).0
    }

    /// The explicit port, or `None` when it was the scheme's default (and so
    /// dropped) or not given.
    pub fn port(&self) -> Option<u16> {
        split_authority(authority_of(&self.0)).1
    }

    /// The port a connection goes to: the explicit port, else 80 for `ws`
    /// and 443 for `wss`.
    pub fn effective_port(&self) -> u16 {
        self.port()
            .unwrap_or_else(|| default_port(self.is_secure()))
    }

    /// `host` or `host:port` (IPv6 in brackets), the default port dropped.
    pub fn host_port(&self) -> String {
        authority_of(&self.0).to_owned()
    }

    /// The path and query (with its `?`), empty for a bare `ws(s)://host`.
    pub fn path_and_query(&self) -> &str {
        let rest = self.0.split_once("://").map_or("", |(_, rest)| rest);
        rest.get(authority_of(&self.0).len()..).unwrap_or_default()
    }

    /// True when the host is `localhost` (or a `*.localhost` name) or an IP
    /// literal that must not be dialled without the operator's consent.
    ///
    /// IPv4: `0.0.0.0/8` (including unspecified), loopback `127/8`, private
    /// `10/8`, `172.16/12`, `192.168/16`, CGNAT `100.64/10`, link-local
    /// `169.254/16`, multicast `224/4`, reserved `240/4` (including
    /// broadcast). IPv6: unspecified, loopback, unique-local `fc00::/7`,
    /// link-local `fe80::/10`, site-local `fec0::/10`, multicast `ff00::/8`,
    /// and IPv4-mapped (`::ffff:0:0/96`), IPv4-compatible (`::/96`) or NAT64
    /// (`64:ff9b::/96`) addresses whose IPv4 part is any of the above.
    ///
    /// Other DNS names return false: their resolved addresses are checked by
    /// the I/O shell.
    pub fn is_private_ip_literal(&self) -> bool {
        let host = self.host();
        if host == "localhost" || host.ends_with(".localhost") {
            return true;
        }
        if let Ok(v4) = Ipv4Addr::from_str(host) {
            return is_private_v4(v4);
        }
        if let Ok(v6) = Ipv6Addr::from_str(host) {
            return is_private_v6(v6);
        }
        false
    }
}

/// The IPv4 ranges refused by [`RelayUrl::is_private_ip_literal`].
fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a >= 240
        || (a == 100 && (b & 0xc0) == 64)
}

/// The IPv6 ranges refused by [`RelayUrl::is_private_ip_literal`].
fn is_private_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    let first = seg[0];
    if ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
    {
        return true;
    }
    let [.., o12, o13, o14, o15] = ip.octets();
    let embedded = Ipv4Addr::new(o12, o13, o14, o15);
    let mapped = seg[..5].iter().all(|s| *s == 0) && seg[5] == 0xffff;
    let compatible = seg[..6].iter().all(|s| *s == 0);
    let nat64 = seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6].iter().all(|s| *s == 0);
    (mapped || compatible || nat64) && is_private_v4(embedded)
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RelayUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RelayUrl::parse(s)
    }
}

impl TryFrom<String> for RelayUrl {
    type Error = UrlError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        RelayUrl::parse(&s)
    }
}

impl From<RelayUrl> for String {
    fn from(url: RelayUrl) -> String {
        url.0.to_string()
    }
}

impl AsRef<str> for RelayUrl {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The service we sync into, named by its domain (`git.example.com` or
/// `127.0.0.1:7777`).
///
/// Held as a normalised `host[:port]`: lower-case host, IPv6 in brackets. A
/// port given with a bare domain is kept as written (there is no scheme to
/// tell a default); a port given in a full URL is dropped when it is that
/// scheme's default, so `wss://h:443` names the service `h`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceId(String);

impl ServiceId {
    /// Parses a service name: `host`, `host:port`, or a full
    /// `ws(s)://host[:port]` (or `http(s)://`) URL without path or query (a
    /// lone trailing `/` is fine). Surrounding whitespace is trimmed.
    pub fn parse(domain: &str) -> Result<ServiceId, UrlError> {
        let domain = domain.trim();
        if domain.is_empty() {
            return Err(UrlError::Empty);
        }
        let host_port = if domain.contains("://") {
            let url = RelayUrl::parse(domain)?;
            if !url.path_and_query().is_empty() {
                return Err(UrlError::ServiceWithPath(quote(domain)));
            }
            url.host_port()
        } else {
            if domain.contains(['/', '?', '#']) {
                return Err(UrlError::ServiceWithPath(quote(domain)));
            }
            parse_authority(domain)?.render(None)
        };
        // Both relay URLs ("wss://" + host_port at most) must fit the limit.
        let len = host_port.len().saturating_add("wss://".len());
        if len > MAX_URL_LEN {
            return Err(UrlError::TooLong { len });
        }
        Ok(ServiceId(host_port))
    }

    /// The normalised `host[:port]`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lower-case host; an IPv6 literal without its brackets.
    pub fn host(&self) -> &str {
        split_authority(&self.0).0
    }

    /// The port, when one was named.
    pub fn port(&self) -> Option<u16> {
        split_authority(&self.0).1
    }

    /// True when `url` is one of [`ServiceId::relay_urls`], ignoring its
    /// path and query. This is exact `host[:port]` equality after
    /// normalisation (a default port counts as its number), never a substring
    /// test: `wss://git.example.com.evil.org` does not match
    /// `git.example.com`.
    pub fn matches(&self, url: &RelayUrl) -> bool {
        if url.host() != self.host() {
            return false;
        }
        match self.port() {
            None => url.port().is_none(),
            Some(p) => url.effective_port() == p,
        }
    }

    /// The service's relay URLs: `wss://DOMAIN` and `ws://DOMAIN` (each with
    /// its default port dropped).
    pub fn relay_urls(&self) -> [RelayUrl; 2] {
        [self.relay_url(true), self.relay_url(false)]
    }

    /// `ws(s)://DOMAIN`, normalised.
    fn relay_url(&self, secure: bool) -> RelayUrl {
        let mut out = String::from(scheme_str(secure));
        out.push_str("://");
        let (_, port) = split_authority(&self.0);
        if port == Some(default_port(secure)) {
            // Drop the port: keep the bracketed or plain host part only.
            let host_part = self.0.rsplit_once(':').map_or(self.0.as_str(), |(h, _)| h);
            out.push_str(host_part);
        } else {
            out.push_str(&self.0);
        }
        RelayUrl(out.into())
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ServiceId {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceId::parse(s)
    }
}

impl TryFrom<String> for ServiceId {
    type Error = UrlError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        ServiceId::parse(&s)
    }
}

impl From<ServiceId> for String {
    fn from(id: ServiceId) -> String {
        id.0
    }
}

/// Characters of the bech32 data alphabet.
const BECH32_CHARSET: &str = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

/// Length of a bech32 `npub` (a 32-byte key).
const NPUB_LEN: usize = 63;

/// True for a plausible `npub1...`: right length and bech32 alphabet (the
/// checksum is not verified).
fn is_plausible_npub(s: &str) -> bool {
    s.len() == NPUB_LEN
        && s.strip_prefix("npub1")
            .is_some_and(|data| data.chars().all(|c| BECH32_CHARSET.contains(c)))
}

/// Maps a GRASP-shaped clone URL `http(s)://HOST[:PORT]/<npub1...>/<name>.git`
/// to its relay `ws(s)://HOST[:PORT]` (`http`→`ws`, `https`→`wss`).
///
/// Only `http` and `https` URLs qualify; the path must be exactly two
/// segments, a plausible `npub1...` (63 characters of the bech32 alphabet)
/// and `<name>.git` with a non-empty name; no query or fragment. Host and
/// port follow [`RelayUrl`]'s rules. Everything else, such as
/// `https://github.com/owner/repo.git`, `ssh://`, `git://` or
/// `git@host:repo.git`, gives `None`.
pub fn grasp_clone_relay(clone_url: &str) -> Option<RelayUrl> {
    let trimmed = clone_url.trim();
    // Any `?` (even an empty query) or `#` disqualifies the URL.
    if trimmed.contains(['?', '#']) {
        return None;
    }
    let parts = parse_parts(trimmed).ok()?;
    if !parts.web_scheme {
        return None;
    }
    let (npub, repo) = parts.path.strip_prefix('/')?.split_once('/')?;
    let name = repo.strip_suffix(".git")?;
    if name.is_empty() || name.contains('/') || !is_plausible_npub(npub) {
        return None;
    }
    let mut out = String::from(scheme_str(parts.secure));
    out.push_str("://");
    out.push_str(&parts.authority.render(Some(default_port(parts.secure))));
    RelayUrl::parse(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NPUB: &str = "npub1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq";

    fn norm(s: &str) -> String {
        match RelayUrl::parse(s) {
            Ok(u) => u.as_str().to_owned(),
            Err(e) => format!("ERR {e:?}"),
        }
    }

    #[test]
    fn npub_fixture_is_plausible() {
        assert_eq!(NPUB.len(), 63);
        assert!(is_plausible_npub(NPUB));
    }

    #[test]
    fn normalises_scheme_host_port_and_path() {
        assert_eq!(norm("wss://Relay.Example.COM"), "wss://relay.example.com");
        assert_eq!(norm("WSS://H/"), "wss://h");
        assert_eq!(norm("wss://h:443/"), "wss://h");
        assert_eq!(norm("ws://h:80"), "ws://h");
        assert_eq!(norm("ws://h:443"), "ws://h:443");
        assert_eq!(norm("wss://h:80"), "wss://h:80");
        assert_eq!(norm("http://h"), "ws://h");
        assert_eq!(norm("HTTPS://h:443/x"), "wss://h/x");
        assert_eq!(norm("  wss://h  \n"), "wss://h");
        assert_eq!(norm("ws://h:0080"), "ws://h");
    }

    #[test]
    fn path_query_and_fragment() {
        assert_eq!(norm("ws://h/#frag"), "ws://h");
        assert_eq!(norm("ws://h#frag"), "ws://h");
        assert_eq!(norm("ws://h/a/#x"), "ws://h/a/");
        assert_eq!(norm("ws://h/Path/X"), "ws://h/Path/X");
        assert_eq!(norm("ws://h//"), "ws://h//");
        assert_eq!(norm("ws://h?x=1"), "ws://h/?x=1");
        assert_eq!(norm("ws://h/?x=1"), "ws://h/?x=1");
        assert_eq!(norm("ws://h/?"), "ws://h");
        assert_eq!(norm("ws://h/p?q#f"), "ws://h/p?q");
        assert_eq!(norm("ws://h/@x"), "ws://h/@x");
        assert!(matches!(
            RelayUrl::parse("ws://h/a b"),
            Err(UrlError::BadPath(_))
        ));
        assert!(matches!(
            RelayUrl::parse("ws://h/é"),
            Err(UrlError::BadPath(_))
        ));
        assert!(matches!(
            RelayUrl::parse("ws://h/a\\b"),
            Err(UrlError::BadPath(_))
        ));
        // Anything in a dropped fragment is fine.
        assert_eq!(norm("ws://h/#é x"), "ws://h");
    }

    #[test]
    fn ip_literals() {
        let u = RelayUrl::parse("ws://[::1]:7000").unwrap();
        assert_eq!(u.as_str(), "ws://[::1]:7000");
        assert_eq!(u.host(), "::1");
        assert_eq!(u.port(), Some(7000));
        assert_eq!(u.host_port(), "[::1]:7000");
        assert_eq!(norm("ws://[0:0::0:1]/"), "ws://[::1]");
        assert_eq!(norm("ws://[2001:DB8::1]:443"), "ws://[2001:db8::1]:443");
        let u = RelayUrl::parse("ws://127.0.0.1:7777").unwrap();
        assert_eq!(u.host(), "127.0.0.1");
        assert_eq!(u.port(), Some(7777));
        assert_eq!(u.host_port(), "127.0.0.1:7777");
        assert!(matches!(
            RelayUrl::parse("ws://[::1"),
            Err(UrlError::BadHost(_))
        ));
        assert!(matches!(
            RelayUrl::parse("ws://[::1]x"),
            Err(UrlError::BadHost(_))
        ));
        assert!(matches!(
            RelayUrl::parse("ws://[fe80::1%25eth0]"),
            Err(UrlError::BadHost(_))
        ));
        assert!(matches!(
            RelayUrl::parse("ws://::1"),
            Err(UrlError::BadHost(_))
        ));
        // Shorthand and hex IPv4 forms cannot pass as names.
        for bad in [
            "ws://127.1",
            "ws://0x7f.0.0.1",
            "ws://1.2.3.4.5",
            "ws://01.2.3.4",
            "ws://256.1.1.1",
            "ws://a.0x10",
        ] {
            assert!(
                matches!(RelayUrl::parse(bad), Err(UrlError::BadHost(_))),
                "{bad}"
            );
        }
        // A numeric label that is not the last one is fine.
        assert_eq!(norm("wss://1.2.3.example"), "wss://1.2.3.example");
    }

    #[test]
    fn rejects() {
        assert_eq!(RelayUrl::parse(""), Err(UrlError::Empty));
        assert_eq!(RelayUrl::parse("  \t"), Err(UrlError::Empty));
        assert_eq!(
            RelayUrl::parse("ftp://h"),
            Err(UrlError::BadScheme("ftp".into()))
        );
        assert_eq!(
            RelayUrl::parse("relay.example.com"),
            Err(UrlError::MissingScheme)
        );
        assert_eq!(RelayUrl::parse("ws:/h"), Err(UrlError::MissingScheme));
        assert_eq!(RelayUrl::parse("ws://user:pw@h"), Err(UrlError::UserInfo));
        assert_eq!(RelayUrl::parse("ws://user@h/x"), Err(UrlError::UserInfo));
        assert!(matches!(
            RelayUrl::parse("wss://"),
            Err(UrlError::BadHost(_))
        ));
        assert!(matches!(
            RelayUrl::parse("wss:///x"),
            Err(UrlError::BadHost(_))
        ));
        assert!(matches!(
            RelayUrl::parse("wss://:443"),
            Err(UrlError::BadHost(_))
        ));
        assert!(matches!(
            RelayUrl::parse("wss://a..b"),
            Err(UrlError::BadHost(_))
        ));
        assert!(matches!(
            RelayUrl::parse("wss://a.b."),
            Err(UrlError::BadHost(_))
        ));
        assert!(matches!(
            RelayUrl::parse("wss://exämple.com"),
            Err(UrlError::BadHost(_))
        ));
        assert!(matches!(
            RelayUrl::parse("wss://a b"),
            Err(UrlError::BadHost(_))
        ));
        assert!(matches!(
            RelayUrl::parse("wss://h:0"),
            Err(UrlError::BadPort(_))
        ));
        assert!(matches!(
            RelayUrl::parse("wss://h:65536"),
            Err(UrlError::BadPort(_))
        ));
        assert!(matches!(
            RelayUrl::parse("wss://h:"),
            Err(UrlError::BadPort(_))
        ));
        assert!(matches!(
            RelayUrl::parse("wss://h:1:2"),
            Err(UrlError::BadPort(_))
        ));
        assert!(matches!(
            RelayUrl::parse("wss://h:+1"),
            Err(UrlError::BadPort(_))
        ));
        assert!(RelayUrl::parse("wss://h:65535").is_ok());
        let label = "a".repeat(64);
        assert!(matches!(
            RelayUrl::parse(&format!("wss://{label}.com")),
            Err(UrlError::BadHost(_))
        ));
    }

    #[test]
    fn length_limit() {
        let url300 = format!("wss://h/{}", "p".repeat(292));
        assert_eq!(url300.len(), 300);
        assert_eq!(
            RelayUrl::parse(&url300),
            Err(UrlError::TooLong { len: 300 })
        );
        let url255 = format!("wss://h/{}", "p".repeat(247));
        assert_eq!(url255.len(), 255);
        assert!(RelayUrl::parse(&url255).is_ok());
        // The limit applies to the normalised text.
        let with_port = format!("wss://h:443/{}", "p".repeat(247));
        assert!(RelayUrl::parse(&with_port).is_ok());
    }

    #[test]
    fn error_quotes_are_bounded() {
        let long = format!("{}://h", "x".repeat(1000));
        match RelayUrl::parse(&long) {
            Err(UrlError::BadScheme(s)) => assert_eq!(s.len(), MAX_QUOTE),
            other => panic!("{other:?}"),
        }
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("aé", 3), "aé");
        assert_eq!(truncate("", 3), "");
    }

    #[test]
    fn accessors() {
        let u = RelayUrl::parse("wss://Relay.Example:8443/sub?x=1").unwrap();
        assert!(u.is_secure());
        assert_eq!(u.host(), "relay.example");
        assert_eq!(u.port(), Some(8443));
        assert_eq!(u.effective_port(), 8443);
        assert_eq!(u.host_port(), "relay.example:8443");
        assert_eq!(u.path_and_query(), "/sub?x=1");
        let u = RelayUrl::parse("ws://h?q").unwrap();
        assert!(!u.is_secure());
        assert_eq!(u.port(), None);
        assert_eq!(u.effective_port(), 80);
        assert_eq!(u.host_port(), "h");
        assert_eq!(u.path_and_query(), "/?q");
        assert_eq!(u.to_string(), "ws://h/?q");
        assert_eq!("wss://h".parse::<RelayUrl>().unwrap().effective_port(), 443);
    }

    #[test]
    fn private_literals() {
        for p in [
            "ws://localhost",
            "ws://LOCALHOST:7000",
            "ws://a.localhost",
            "ws://127.0.0.1:7777",
            "ws://127.9.9.9",
            "ws://10.1.2.3",
            "ws://172.16.0.1",
            "ws://172.31.255.255",
            "ws://192.168.1.1",
            "ws://169.254.1.1",
            "ws://224.0.0.1",
            "ws://239.1.1.1",
            "ws://0.0.0.0",
            "ws://0.1.2.3",
            "ws://100.64.0.1",
            "ws://100.127.255.255",
            "ws://255.255.255.255",
            "ws://240.0.0.1",
            "ws://[::1]",
            "ws://[::]",
            "ws://[fc00::1]",
            "ws://[fd12:3456::1]",
            "ws://[fe80::1]",
            "ws://[febf::1]",
            "ws://[fec0::1]",
            "ws://[ff02::1]",
            "ws://[::ffff:127.0.0.1]",
            "ws://[::ffff:10.0.0.1]",
            "ws://[::ffff:192.168.0.1]",
            "ws://[::127.0.0.1]",
            "ws://[64:ff9b::10.0.0.1]",
        ] {
            assert!(RelayUrl::parse(p).unwrap().is_private_ip_literal(), "{p}");
        }
        for p in [
            "wss://relay.example.com",
            "wss://localhost.example.com",
            "wss://mylocalhost",
            "wss://127.0.0.1.nip.io",
            "ws://8.8.8.8",
            "ws://172.32.0.1",
            "ws://172.15.255.255",
            "ws://100.128.0.1",
            "ws://100.63.255.255",
            "ws://192.169.0.1",
            "ws://223.255.255.255",
            "ws://[2001:db8::1]",
            "ws://[2606:4700::1111]",
            "ws://[::ffff:8.8.8.8]",
            "ws://[64:ff9b::8.8.8.8]",
        ] {
            assert!(!RelayUrl::parse(p).unwrap().is_private_ip_literal(), "{p}");
        }
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let u = RelayUrl::parse("WSS://H:443/").unwrap();
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(json, "\"wss://h\"");
        let back: RelayUrl = serde_json::from_str("\"WSS://H/\"").unwrap();
        assert_eq!(back, u);
        assert!(serde_json::from_str::<RelayUrl>("\"ftp://h\"").is_err());
        let s = ServiceId::parse("Git.Example.com").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"git.example.com\"");
        let back: ServiceId = serde_json::from_str("\"GIT.example.com\"").unwrap();
        assert_eq!(back, s);
        assert_eq!(String::from(u.clone()), "wss://h");
        assert_eq!(
            RelayUrl::try_from(String::from("ws://h:80/"))
                .unwrap()
                .as_str(),
            "ws://h"
        );
    }

    #[test]
    fn service_parse_forms() {
        let ok = |s: &str| ServiceId::parse(s).unwrap().as_str().to_owned();
        assert_eq!(ok("git.example.com"), "git.example.com");
        assert_eq!(ok("Git.Example.COM"), "git.example.com");
        assert_eq!(ok(" 127.0.0.1:7777 "), "127.0.0.1:7777");
        assert_eq!(ok("wss://git.example.com/"), "git.example.com");
        assert_eq!(ok("wss://git.example.com:443"), "git.example.com");
        assert_eq!(ok("ws://git.example.com:443"), "git.example.com:443");
        assert_eq!(ok("https://git.example.com"), "git.example.com");
        assert_eq!(ok("ws://127.0.0.1:7777"), "127.0.0.1:7777");
        assert_eq!(ok("[::1]:7000"), "[::1]:7000");
        assert_eq!(ok("ws://[::1]:7000"), "[::1]:7000");
        assert_eq!(ok("h:443"), "h:443");
        assert_eq!(ServiceId::parse(""), Err(UrlError::Empty));
        assert_eq!(ServiceId::parse("u@h"), Err(UrlError::UserInfo));
        assert!(matches!(
            ServiceId::parse("h/x"),
            Err(UrlError::ServiceWithPath(_))
        ));
        assert!(matches!(
            ServiceId::parse("wss://h/x"),
            Err(UrlError::ServiceWithPath(_))
        ));
        assert!(matches!(
            ServiceId::parse("wss://h?x"),
            Err(UrlError::ServiceWithPath(_))
        ));
        assert!(matches!(ServiceId::parse("h:0"), Err(UrlError::BadPort(_))));
        assert!(matches!(
            ServiceId::parse("ftp://h"),
            Err(UrlError::BadScheme(_))
        ));
        assert!(matches!(ServiceId::parse("::1"), Err(UrlError::BadHost(_))));
        let s = ServiceId::parse("[::1]:7000").unwrap();
        assert_eq!(s.host(), "::1");
        assert_eq!(s.port(), Some(7000));
        assert_eq!(s.to_string(), "[::1]:7000");
        assert_eq!("h".parse::<ServiceId>().unwrap().port(), None);
    }

    #[test]
    fn service_relay_urls() {
        let urls = |s: &str| {
            ServiceId::parse(s)
                .unwrap()
                .relay_urls()
                .map(|u| u.as_str().to_owned())
        };
        assert_eq!(
            urls("git.example.com"),
            ["wss://git.example.com", "ws://git.example.com"]
        );
        assert_eq!(
            urls("127.0.0.1:7777"),
            ["wss://127.0.0.1:7777", "ws://127.0.0.1:7777"]
        );
        assert_eq!(urls("h:443"), ["wss://h", "ws://h:443"]);
        assert_eq!(urls("h:80"), ["wss://h:80", "ws://h"]);
        assert_eq!(urls("[::1]:443"), ["wss://[::1]", "ws://[::1]:443"]);
        assert_eq!(urls("[::1]"), ["wss://[::1]", "ws://[::1]"]);
        // They are exactly what RelayUrl::parse gives for the same text.
        for s in ["h", "h:443", "h:80", "[::1]:80", "1.2.3.4:5"] {
            for u in ServiceId::parse(s).unwrap().relay_urls() {
                assert_eq!(RelayUrl::parse(u.as_str()).unwrap(), u);
            }
        }
    }

    #[test]
    fn service_matches_exactly() {
        let svc = ServiceId::parse("git.example.com").unwrap();
        let m = |u: &str| svc.matches(&RelayUrl::parse(u).unwrap());
        assert!(m("wss://git.example.com"));
        assert!(m("WSS://GIT.EXAMPLE.COM/"));
        assert!(m("ws://git.example.com"));
        assert!(m("wss://git.example.com:443/some/path"));
        assert!(m("https://git.example.com"));
        assert!(!m("wss://git.example.com.evil.org"));
        assert!(!m("wss://evil-git.example.com"));
        assert!(!m("wss://sub.git.example.com"));
        assert!(!m("wss://example.com"));
        assert!(!m("wss://git.example.com:8443"));
        assert!(!m("ws://git.example.com:443"));

        let local = ServiceId::parse("127.0.0.1:7777").unwrap();
        assert!(local.matches(&RelayUrl::parse("ws://127.0.0.1:7777").unwrap()));
        assert!(local.matches(&RelayUrl::parse("wss://127.0.0.1:7777/").unwrap()));
        assert!(!local.matches(&RelayUrl::parse("ws://127.0.0.1:7778").unwrap()));
        assert!(!local.matches(&RelayUrl::parse("ws://127.0.0.1").unwrap()));

        let p443 = ServiceId::parse("h:443").unwrap();
        assert!(p443.matches(&RelayUrl::parse("wss://h").unwrap()));
        assert!(p443.matches(&RelayUrl::parse("ws://h:443").unwrap()));
        assert!(!p443.matches(&RelayUrl::parse("ws://h").unwrap()));
    }

    #[test]
    fn clone_urls() {
        let relay = |s: &str| grasp_clone_relay(s).map(|u| u.as_str().to_owned());
        assert_eq!(
            relay(&format!("https://git.example.com/{NPUB}/repo.git")).as_deref(),
            Some("wss://git.example.com")
        );
        assert_eq!(
            relay(&format!("http://127.0.0.1:7777/{NPUB}/my-repo.git")).as_deref(),
            Some("ws://127.0.0.1:7777")
        );
        assert_eq!(
            relay(&format!("HTTPS://Git.Example.com:443/{NPUB}/r.git")).as_deref(),
            Some("wss://git.example.com")
        );
        // A long repo name does not matter: only the relay has to fit.
        let long = format!("https://h/{NPUB}/{}.git", "n".repeat(400));
        assert_eq!(relay(&long).as_deref(), Some("wss://h"));
        for bad in [
            "https://github.com/owner/repo.git".to_owned(),
            format!("ssh://git.example.com/{NPUB}/repo.git"),
            format!("git://git.example.com/{NPUB}/repo.git"),
            format!("wss://git.example.com/{NPUB}/repo.git"),
            "git@github.com:owner/repo.git".to_owned(),
            format!("git@git.example.com:{NPUB}/repo.git"),
            format!("https://git.example.com/{NPUB}/.git"),
            format!("https://git.example.com/{NPUB}/repo"),
            format!("https://git.example.com/{NPUB}/repo.git/"),
            format!("https://git.example.com/x/{NPUB}/repo.git"),
            format!("https://git.example.com/{NPUB}/a/repo.git"),
            format!("https://git.example.com/{NPUB}"),
            format!("https://git.example.com/{NPUB}/repo.git?x=1"),
            format!("https://git.example.com/{NPUB}/repo.git#f"),
            format!("https://u@git.example.com/{NPUB}/repo.git"),
            format!("https://git.example.com/{}/repo.git", NPUB.to_uppercase()),
            "https://git.example.com/npub1abc/repo.git".to_owned(),
            format!("https://git.example.com/{}b/repo.git", NPUB),
            format!("https://git.example.com//{NPUB}/repo.git"),
            String::new(),
        ] {
            assert_eq!(relay(&bad), None, "{bad}");
        }
    }

    /// Strings shaped roughly like URLs, to reach deep into the parser.
    fn url_like() -> impl Strategy<Value = String> {
        let scheme = prop_oneof![
            Just("ws"),
            Just("wss"),
            Just("WSS"),
            Just("http"),
            Just("https"),
            Just("ftp"),
            Just("")
        ];
        let host = prop_oneof![
            "[a-zA-Z0-9._-]{0,20}",
            "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
            "\\[[0-9a-fA-F:.]{0,20}\\]",
            Just("localhost".to_owned()),
        ];
        let port = prop_oneof![
            Just(String::new()),
            "[0-9]{0,6}".prop_map(|p| format!(":{p}")),
            Just(":80".to_owned()),
            Just(":443".to_owned()),
        ];
        let tail = "[/?#a-zA-Z0-9 @:%\\\\é.]{0,30}";
        let user = prop_oneof![Just(""), Just("u@"), Just("u:p@")];
        (scheme, user, host, port, tail).prop_map(|(s, u, h, p, t)| format!("{s}://{u}{h}{p}{t}"))
    }

    fn check_normal_form(input: &str) {
        if let Ok(u) = RelayUrl::parse(input) {
            let again = RelayUrl::parse(u.as_str());
            assert_eq!(again.as_ref(), Ok(&u), "not idempotent for {input:?}");
            assert!(u.as_str().len() <= MAX_URL_LEN);
            assert!(u.as_str().starts_with("ws://") || u.as_str().starts_with("wss://"));
            assert!(!u.as_str().contains('#'));
            assert!(!u.as_str().ends_with('/') || u.path_and_query().len() > 1);
            assert_eq!(u.host(), u.host().to_ascii_lowercase());
            assert_ne!(u.port(), Some(if u.is_secure() { 443 } else { 80 }));
            // host_port, path and scheme reassemble the URL.
            let scheme = if u.is_secure() { "wss" } else { "ws" };
            assert_eq!(
                format!("{scheme}://{}{}", u.host_port(), u.path_and_query()),
                u.as_str()
            );
            let _ = u.is_private_ip_literal();
            // A service named by this URL's host matches it.
            if u.path_and_query().is_empty() {
                let svc = ServiceId::parse(u.as_str()).unwrap();
                assert!(svc.matches(&u));
                assert!(svc.relay_urls().contains(&u));
            }
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC*") {
            let _ = RelayUrl::parse(&s);
            let _ = ServiceId::parse(&s);
            let _ = grasp_clone_relay(&s);
            check_normal_form(&s);
        }

        #[test]
        fn parse_never_panics_on_any_chars(s in any::<String>()) {
            check_normal_form(&s);
            let _ = ServiceId::parse(&s);
            let _ = grasp_clone_relay(&s);
        }

        #[test]
        fn normalisation_is_idempotent(s in url_like()) {
            check_normal_form(&s);
            let _ = ServiceId::parse(&s);
            if let Some(r) = grasp_clone_relay(&s) {
                prop_assert!(r.path_and_query().is_empty());
            }
        }

        #[test]
        fn service_parse_is_idempotent(s in url_like()) {
            if let Ok(svc) = ServiceId::parse(&s) {
                prop_assert_eq!(ServiceId::parse(svc.as_str()), Ok(svc.clone()));
                for u in svc.relay_urls() {
                    prop_assert!(svc.matches(&u));
                    prop_assert_eq!(RelayUrl::parse(u.as_str()), Ok(u.clone()));
                }
            }
        }

        #[test]
        fn matching_ignores_path(host in "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}", path in "(/[a-z]{0,5}){0,3}") {
            let svc = ServiceId::parse(&host).unwrap();
            let u = RelayUrl::parse(&format!("wss://{host}{path}")).unwrap();
            prop_assert!(svc.matches(&u));
            let other = RelayUrl::parse(&format!("wss://{host}x{path}")).unwrap();
            prop_assert!(!svc.matches(&other));
            let sub = RelayUrl::parse(&format!("wss://a.{host}{path}")).unwrap();
            prop_assert!(!svc.matches(&sub));
        }
    }
}
