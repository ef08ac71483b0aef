//! Loading what the command line points at: NIP-34 events (JSON Lines or one
//! JSON array, every id and signature verified) and NIP-11 relay information
//! documents.
//!
//! Bad events never stop a run: each one is returned as an [`InvalidItem`]
//! with where it was and why, so the caller can report, count and skip it.
//! Only a file that cannot be read at all (or an array that is not JSON) is
//! an error.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::path::Path;

use grasp_sync_core::{RelayInfo, RelayUrl};
use nostr::event::Event;

use crate::error::CliError;

/// Where an item was found in the events input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// A line of a JSON Lines input (1-based).
    Line(usize),
    /// An element of a JSON array input (0-based).
    Element(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Element(n) => write!(f, "element {n}"),
        }
    }
}

/// Why an input item was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidKind {
    /// The line is not JSON (or not UTF-8).
    Json,
    /// JSON, but not a NIP-01 event, or its id or signature does not verify.
    Event,
}

impl InvalidKind {
    /// The kebab-case reason used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidKind::Json => "invalid-json",
            InvalidKind::Event => "invalid-event",
        }
    }
}

/// An input item that was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidItem {
    /// Where it was.
    pub location: Location,
    /// What kind of problem.
    pub kind: InvalidKind,
    /// The problem, for humans.
    pub message: String,
}

/// A verified event and where it was found.
#[derive(Clone, Debug)]
pub struct LoadedEvent {
    /// The event; its id and signature verify.
    pub event: Event,
    /// Where it was.
    pub location: Location,
}

/// Everything read from an events input.
#[derive(Clone, Debug, Default)]
pub struct Events {
    /// Items read (non-blank lines, or array elements).
    pub read: usize,
    /// Verified events, in input order.
    pub events: Vec<LoadedEvent>,
    /// Skipped items, in input order.
    pub invalid: Vec<InvalidItem>,
}

/// Reads a whole file, or stdin for `-`.
pub fn read_input(path: &Path, what: &'static str) -> Result<Vec<u8>, CliError> {
    let err = |source: io::Error| CliError::Read {
        what,
        path: path.display().to_string(),
        source,
    };
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        io::stdin().lock().read_to_end(&mut buf).map_err(err)?;
        Ok(buf)
    } else {
        std::fs::read(path).map_err(err)
    }
}

/// Reads and verifies the events of `path` (`-` for stdin).
pub fn load_events(path: &Path) -> Result<Events, CliError> {
    let bytes = read_input(path, "events file")?;
    parse_events(&bytes, &path.display().to_string())
}

/// Parses events from `bytes`: one JSON array when the first non-whitespace
/// byte is `[`, JSON Lines otherwise (blank lines skipped). `name` names the
/// input in errors.
pub fn parse_events(bytes: &[u8], name: &str) -> Result<Events, CliError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        parse_array(bytes, name)
    } else {
        Ok(parse_lines(bytes))
    }
}

fn parse_array(bytes: &[u8], name: &str) -> Result<Events, CliError> {
    let items: Vec<serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|source| CliError::EventArray {
            path: name.to_owned(),
            source,
        })?;
    let mut out = Events::default();
    for (i, item) in items.iter().enumerate() {
        out.read += 1;
        let location = Location::Element(i);
        match verify(&item.to_string()) {
            Ok(event) => out.events.push(LoadedEvent { event, location }),
            Err((kind, message)) => out.invalid.push(InvalidItem {
                location,
                kind,
                message,
            }),
        }
    }
    Ok(out)
}

fn parse_lines(bytes: &[u8]) -> Events {
    let mut out = Events::default();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let location = Location::Line(i + 1);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.read += 1;
        let result = match std::str::from_utf8(raw) {
            Ok(line) => verify(line),
            Err(e) => Err((InvalidKind::Json, format!("not UTF-8: {e}"))),
        };
        match result {
            Ok(event) => out.events.push(LoadedEvent { event, location }),
            Err((kind, message)) => out.invalid.push(InvalidItem {
                location,
                kind,
                message,
            }),
        }
    }
    out
}

/// Parses one event and checks its id and signature.
fn verify(json: &str) -> Result<Event, (InvalidKind, String)> {
    let event = match Event::from_json(json) {
        Ok(event) => event,
        Err(e) => {
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(json) {
                Err(json_err) => (InvalidKind::Json, format!("invalid JSON: {json_err}")),
                Ok(_) => (InvalidKind::Event, format!("not a nostr event: {e}")),
            });
        }
    };
    match event.verify() {
        Ok(()) => Ok(event),
        Err(e) => Err((
            InvalidKind::Event,
            format!("event {} does not verify: {e}", event.id.to_hex()),
        )),
    }
}

/// NIP-11 documents by normalised relay URL, and warnings about the file.
#[derive(Clone, Debug, Default)]
pub struct RelayInfos {
    /// The documents.
    pub docs: BTreeMap<RelayUrl, RelayInfo>,
    /// Non-fatal problems (duplicate keys after normalisation).
    pub warnings: Vec<String>,
}

/// Reads a JSON object mapping relay URL → NIP-11 document. Keys are
/// normalised with [`RelayUrl::parse`]; a key that is not a relay URL or a
/// value that is not an object is an error.
pub fn load_relay_info(path: &Path) -> Result<RelayInfos, CliError> {
    let bytes = read_input(path, "relay information file")?;
    parse_relay_info(&bytes, &path.display().to_string())
}

/// Parses the contents of a `--relay-info` file; `name` names it in errors.
pub fn parse_relay_info(bytes: &[u8], name: &str) -> Result<RelayInfos, CliError> {
    let err = |reason: String| CliError::RelayInfo {
        path: name.to_owned(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| err(format!("not JSON: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(err(
            "expected a JSON object mapping relay URLs to NIP-11 documents".to_owned(),
        ));
    };
    let mut out = RelayInfos::default();
    for (key, doc) in map {
        let url = RelayUrl::parse(&key)
            .map_err(|e| err(format!("key {key:?} is not a relay URL: {e}")))?;
        let info = RelayInfo::from_nip11_json(&doc.to_string())
            .map_err(|e| err(format!("document for {key:?}: {e}")))?;
        if out.docs.insert(url.clone(), info).is_some() {
            out.warnings.push(format!(
                "{name}: several keys normalise to {url}; using the one spelled {key:?}"
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_are_not_items() {
        let ev = parse_events(b"\n  \n\r\n", "t").unwrap();
        assert_eq!(ev.read, 0);
        assert!(ev.invalid.is_empty());
    }

    #[test]
    fn bad_lines_are_located() {
        let ev = parse_events(b"\n{oops\n42\n", "t").unwrap();
        assert_eq!(ev.read, 2);
        assert_eq!(ev.invalid[0].location, Location::Line(2));
        assert_eq!(ev.invalid[0].kind, InvalidKind::Json);
        assert_eq!(ev.invalid[1].location, Location::Line(3));
        assert_eq!(ev.invalid[1].kind, InvalidKind::Event);
    }

    #[test]
    fn arrays_use_element_indexes() {
        let ev = parse_events(b"  [1, {\"a\":2}]", "t").unwrap();
        assert_eq!(ev.read, 2);
        assert_eq!(ev.invalid[1].location, Location::Element(1));
        assert!(parse_events(b"[1,", "t").is_err());
    }

    #[test]
    fn relay_info_keys_are_normalised() {
        let infos = parse_relay_info(
            br#"{"WSS://Relay.Example/":{"limitation":{"max_limit":200}},"wss://relay.example":{}}"#,
            "t",
        )
        .unwrap();
        assert_eq!(infos.docs.len(), 1);
        assert_eq!(infos.warnings.len(), 1);
        assert!(parse_relay_info(b"[]", "t").is_err());
        assert!(parse_relay_info(br#"{"ftp://x":{}}"#, "t").is_err());
        assert!(parse_relay_info(br#"{"wss://x":1}"#, "t").is_err());
    }
}
