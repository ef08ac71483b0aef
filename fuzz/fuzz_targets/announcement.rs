//! Bytes as an event JSON through announcement parsing, URL normalisation and
//! the engine's announcement input: nothing may panic.
#![no_main]

use grasp_sync_core::announcement::{parse_announcement, AnnouncementRules};
use grasp_sync_core::{Config, Engine, Input, RelayUrl, ServiceId, Time};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        if let Ok(url) = RelayUrl::parse(line) {
            let again = RelayUrl::parse(url.as_str()).expect("normalised URLs parse");
            assert_eq!(again, url, "normalisation is idempotent");
        }
    }
    let Ok(event) = nostr::event::Event::from_json(text) else {
        return;
    };
    let service = ServiceId::parse("git.example.com").expect("valid");
    let rules = AnnouncementRules {
        service: &service,
        use_clone_urls: true,
        max_relays: 20,
        allow_private: false,
    };
    let _ = parse_announcement(&event, &rules);
    let mut engine = Engine::new(Config::new(service));
    engine.handle_input(Time::from_secs(1_700_000_000), Input::AnnouncementSeen(&event));
    while engine.poll_command().is_some() {}
});
