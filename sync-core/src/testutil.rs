//! Event builders for the unit tests of this crate (ids are real, signatures
//! are dummies: the engine never verifies signatures).

use nostr::event::{Event, EventId, Kind, Signature, Tag, Tags};
use nostr::key::PublicKey;
use nostr::types::Timestamp;

use crate::types::RepoCoord;
use crate::url::RelayUrl;

pub const SERVICE: &str = "git.example.com";

pub fn pk(n: u8) -> PublicKey {
    let mut b = [0u8; 32];
    b[0] = 2;
    b[31] = n;
    PublicKey::from_byte_array(b)
}

pub fn ev(author: u8, created_at: u64, kind: u16, tags: &[&[&str]]) -> Event {
    let tags = Tags::from_list(
        tags.iter()
            .map(|t| Tag::parse(t.iter().copied()).expect("valid tag"))
            .collect(),
    );
    let (pk, at, kind) = (
        pk(author),
        Timestamp::from_secs(created_at),
        Kind::from(kind),
    );
    let id = EventId::compute(&pk, &at, &kind, &tags, "");
    Event::new(
        id,
        pk,
        at,
        kind,
        tags,
        "",
        Signature::from_byte_array([1; 64]),
    )
}

pub fn announcement(author: u8, d: &str, created_at: u64, relays: &[&str]) -> Event {
    let service = format!("wss://{SERVICE}");
    let mut r: Vec<&str> = vec!["relays"];
    r.extend_from_slice(relays);
    r.push(&service);
    ev(author, created_at, 30617, &[&["d", d], &r])
}

pub fn coord(author: u8, d: &str) -> RepoCoord {
    RepoCoord::new(pk(author), d)
}

pub fn issue(author: u8, created_at: u64, repo: &RepoCoord) -> Event {
    ev(author, created_at, 1621, &[&["a", &repo.to_string()]])
}

pub fn url(s: &str) -> RelayUrl {
    RelayUrl::parse(s).expect("valid url")
}
