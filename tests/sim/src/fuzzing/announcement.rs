//! The `announcement` harness: bytes as an event JSON (or, when they are not
//! one, as lines that become an announcement's `relays` and `clone` values)
//! through URL normalisation, announcement parsing and the engine's
//! announcement input.
//!
//! Checks: normalising is idempotent (`parse(parse(u)) == parse(u)`) for
//! relay URLs, service ids and GRASP clone URLs; a parsed announcement keeps
//! only normalised, distinct, sorted relays, at most the cap, never our
//! service and no private address unless allowed; every dropped value is
//! reported; the engine only creates relays the announcement kept.

use grasp_sync_core::announcement::{parse_announcement, AnnouncementRules};
use grasp_sync_core::url::grasp_clone_relay;
use grasp_sync_core::{Config, Engine, Input, RelayUrl, ServiceId, Time};
use nostr::event::Event;

use crate::fixtures::{self, pubkey, SERVICE, T0};

/// How many relays an announcement may keep here (small, to hit the cap).
const MAX_RELAYS: usize = 5;

/// Checks URL normalisation of one text.
pub fn check_url(text: &str) {
    if let Ok(url) = RelayUrl::parse(text) {
        let again = RelayUrl::parse(url.as_str()).expect("a normalised URL parses");
        assert_eq!(again, url, "relay URL normalisation is idempotent");
        assert_eq!(again.as_str(), url.as_str());
    }
    if let Ok(service) = ServiceId::parse(text) {
        let again = ServiceId::parse(service.as_str()).expect("a normalised service parses");
        assert_eq!(again, service, "service normalisation is idempotent");
        for url in service.relay_urls() {
            assert!(service.matches(&url), "a service matches its own URLs");
        }
    }
    if let Some(url) = grasp_clone_relay(text) {
        let again = RelayUrl::parse(url.as_str()).expect("a clone URL's relay parses");
        assert_eq!(again, url, "a clone URL maps to a normalised relay");
    }
}

/// The event under test: the bytes as event JSON, or else an announcement
/// listing every line as a relay and as a clone URL.
fn event_of(text: &str) -> Event {
    if let Ok(event) = Event::from_json(text) {
        return event;
    }
    let mut relays = vec!["relays".to_owned()];
    let mut clones = vec!["clone".to_owned()];
    for line in text.lines() {
        relays.push(line.to_owned());
        clones.push(line.to_owned());
    }
    let d = text.lines().next().unwrap_or("repo").to_owned();
    fixtures::event(
        pubkey(1),
        T0,
        30617,
        vec![vec!["d".to_owned(), d], relays, clones],
        "",
    )
}

/// Runs a fuzz input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        check_url(line);
    }
    let event = event_of(text);
    let service = ServiceId::parse(SERVICE).expect("the service parses");
    for allow_private in [false, true] {
        let rules = AnnouncementRules {
            service: &service,
            use_clone_urls: true,
            max_relays: MAX_RELAYS,
            allow_private,
        };
        let Ok(ann) = parse_announcement(&event, &rules) else {
            continue;
        };
        assert!(ann.relays.len() <= MAX_RELAYS, "at most the cap");
        assert!(
            ann.relays.windows(2).all(|w| w[0] < w[1]),
            "relays sorted and distinct"
        );
        assert!(
            ann.ignored.windows(2).all(|w| w[0] < w[1]),
            "ignored sorted and distinct"
        );
        for url in &ann.relays {
            assert_eq!(
                RelayUrl::parse(url.as_str()).ok().as_ref(),
                Some(url),
                "kept relays are normalised"
            );
            assert!(!service.matches(url), "never our own service");
            assert!(
                allow_private || !url.is_private_ip_literal(),
                "no private address unless allowed: {url}"
            );
        }
        assert_eq!(ann.coord.author, event.pubkey);
        // Every relays-tag value is kept, our service, or reported.
        for tag in event.tags.iter() {
            let s = tag.as_slice();
            if s.first().map(String::as_str) != Some("relays") {
                continue;
            }
            for raw in &s[1..] {
                let accounted = match RelayUrl::parse(raw) {
                    Ok(url) => {
                        service.matches(&url)
                            || ann.relays.contains(&url)
                            || ann
                                .ignored
                                .iter()
                                .any(|i| raw.starts_with(&i.url) || i.url == *raw)
                    }
                    Err(_) => ann.ignored.iter().any(|i| raw.starts_with(&i.url)),
                };
                assert!(accounted, "relay value {raw:?} neither kept nor reported");
            }
        }
        let mut config = Config::new(service.clone());
        config.allow_private = allow_private;
        config.max_relays_per_announcement = MAX_RELAYS;
        let mut engine = Engine::new(config);
        engine.handle_input(Time::from_secs(T0), Input::CatalogEvent(&event));
        while engine.poll_command().is_some() {}
        for url in engine.relay_urls() {
            assert!(
                ann.relays.contains(url),
                "the engine created {url}, which the announcement did not keep"
            );
        }
        let _ = engine.status();
    }
}
