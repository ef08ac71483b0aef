//! What the metrics tests share: a real engine status, I/O counters with a
//! forgotten relay, and a parser that checks the exposition's shape.

use std::collections::{BTreeMap, HashSet};

use grasp_sync_core::{Config, Engine, Input, RelayInfo, RelayUrl, ServiceId, Status, Time};

use super::IoCounters;

pub(crate) const RELAY: &str = "wss://relay.example.org";
pub(crate) const OTHER: &str = "wss://other.example.net/path";

pub(crate) fn status() -> Status {
    let mut config = Config::new(ServiceId::parse("git.example.com").unwrap());
    config.bootstrap.push(RelayUrl::parse(RELAY).unwrap());
    config.bootstrap.push(RelayUrl::parse(OTHER).unwrap());
    let mut engine = Engine::new(config);
    let now = Time::from_secs(1_700_000_000);
    engine.handle_input(now, Input::Tick);
    while engine.poll_command().is_some() {}
    let relay = RelayUrl::parse(RELAY).unwrap();
    let info = RelayInfo {
        max_subscriptions: Some(5),
        max_limit: Some(200),
        ..RelayInfo::default()
    };
    engine.handle_input(
        now,
        Input::RelayInfo {
            relay: &relay,
            info,
        },
    );
    engine.handle_input(now, Input::Connected { relay: &relay });
    engine.handle_input(
        now,
        Input::Notice {
            relay: &relay,
            message: "hello",
        },
    );
    let other = RelayUrl::parse(OTHER).unwrap();
    engine.handle_input(
        now,
        Input::ConnectFailed {
            relay: &other,
            reason: "refused",
        },
    );
    while engine.poll_command().is_some() {}
    engine.status()
}

pub(crate) fn io() -> IoCounters {
    let mut io = IoCounters {
        connections_open: 1,
        verify_queue: 3,
        snapshot_saves: 2,
        ..IoCounters::default()
    };
    io.relay(&RelayUrl::parse(RELAY).unwrap()).frames_received = 12;
    io.relay(&RelayUrl::parse(OTHER).unwrap()).nip11_failures = 1;
    let gone = RelayUrl::parse("wss://gone.example.com").unwrap();
    io.relay(&gone).frames_received = 5;
    io.forget(&gone);
    io
}

/// A sample line: name, labels (raw text between the braces), value.
fn parse_sample(line: &str) -> (String, String, f64) {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i..]),
        None => {
            let (name, value) = line.split_once(' ').expect("name value");
            return (name.to_string(), String::new(), value.parse().unwrap());
        }
    };
    // Find the closing brace outside quoted values.
    let mut in_quotes = false;
    let mut escaped = false;
    let mut end = None;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => {
                end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let end = end.expect("closing brace");
    let labels = &rest[1..end];
    let value = rest[end + 1..]
        .strip_prefix(' ')
        .expect("space before value");
    (
        name.to_string(),
        labels.to_string(),
        value.parse().unwrap_or_else(|_| panic!("value in {line}")),
    )
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Checks the exposition's shape and returns `sample line → value`.
pub(crate) fn check_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut helps = HashSet::new();
    let mut samples = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    assert!(text.ends_with("# EOF\n"));
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(!help.is_empty(), "{line}");
            assert!(helps.insert(name.to_string()), "HELP twice: {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(valid_name(name), "{name}");
            assert!(name.starts_with("grasp_sync_"), "{name}");
            assert!(helps.contains(name), "TYPE without HELP: {name}");
            assert!(
                families
                    .insert(name.to_string(), kind.to_string())
                    .is_none(),
                "family twice: {name}"
            );
            current = Some((name.to_string(), kind.to_string()));
        } else if line == "# EOF" {
        } else {
            assert!(!line.starts_with('#'), "{line}");
            let (name, labels, value) = parse_sample(line);
            let (family, kind) = current.clone().expect("sample after TYPE");
            match kind.as_str() {
                "counter" => assert_eq!(name, format!("{family}_total"), "{line}"),
                "gauge" => assert_eq!(name, family, "{line}"),
                other => panic!("unexpected type {other}"),
            }
            assert!(value >= 0.0, "{line}");
            let key = format!("{name}{{{labels}}}");
            assert!(samples.insert(key, value).is_none(), "sample twice: {line}");
        }
    }
    // Per-relay and total families never share a name.
    let names: HashSet<_> = families.keys().collect();
    assert_eq!(names.len(), families.len());
    samples
}
