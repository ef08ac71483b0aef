//! Builders for NIP-34 events and a small scripted driver for the engine.
//! Events carry real ids but dummy signatures: the engine never verifies
//! signatures (its host does), so tests need not pay for signing.

use std::time::Duration;

use grasp_sync_core::{Command, Config, Engine, Input, RelayUrl, RepoCoord, ServiceId, Time};
use nostr::event::{Event, EventId, Kind, Signature, Tag, Tags};
use nostr::key::PublicKey;
use nostr::types::Timestamp;

/// The service every fixture syncs into.
pub const SERVICE: &str = "git.example.com";

/// A deterministic public key for author number `n` (not on the curve; the
/// engine never checks). Its bytes look random, as real keys do, so ordered
/// maps compare them the way they would in production.
pub fn pubkey(n: u32) -> PublicKey {
    let mut b = [0u8; 32];
    let mut x = u64::from(n) ^ 0x6772_6173_702d_6b65;
    for chunk in b.chunks_mut(8) {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_be_bytes());
    }
    PublicKey::from_byte_array(b)
}

/// An event with a real id and a dummy signature.
pub fn event(
    author: PublicKey,
    created_at: u64,
    kind: u16,
    tags: Vec<Vec<String>>,
    content: &str,
) -> Event {
    let tags = Tags::from_list(
        tags.into_iter()
            .map(|t| Tag::parse(t).expect("fixture tags are valid"))
            .collect(),
    );
    let created_at = Timestamp::from_secs(created_at);
    let kind = Kind::from(kind);
    let id = EventId::compute(&author, &created_at, &kind, &tags, content);
    Event::new(
        id,
        author,
        created_at,
        kind,
        tags,
        content,
        Signature::from_byte_array([1u8; 64]),
    )
}

fn tag(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// A repository announcement listing `relays` (and the service, when `lists_service`).
pub fn announcement(
    author: u32,
    d: &str,
    created_at: u64,
    relays: &[&str],
    lists_service: bool,
) -> Event {
    let mut r = vec!["relays".to_owned()];
    r.extend(relays.iter().map(|s| s.to_string()));
    if lists_service {
        r.push(format!("wss://{SERVICE}"));
    }
    event(
        pubkey(author),
        created_at,
        30617,
        vec![tag(&["d", d]), tag(&["name", d]), r],
        "",
    )
}

/// The coordinate of `announcement(author, d, ..)`.
pub fn coord(author: u32, d: &str) -> RepoCoord {
    RepoCoord::new(pubkey(author), d)
}

/// A root event (1617 patch, 1618 PR, 1621 issue) tagging `repo`.
pub fn root(kind: u16, author: u32, created_at: u64, repo: &RepoCoord, content: &str) -> Event {
    event(
        pubkey(author),
        created_at,
        kind,
        vec![
            tag(&["a", &repo.to_string()]),
            tag(&["p", &repo.author.to_hex()]),
        ],
        content,
    )
}

/// A NIP-22 comment (kind 1111) on a root event of `repo`.
pub fn comment(
    author: u32,
    created_at: u64,
    repo: &RepoCoord,
    root_id: &EventId,
    content: &str,
) -> Event {
    event(
        pubkey(author),
        created_at,
        1111,
        vec![
            tag(&["E", &root_id.to_hex()]),
            tag(&["A", &repo.to_string()]),
            tag(&["K", "1621"]),
        ],
        content,
    )
}

/// A status event (1630..1633) on a root event.
pub fn status(kind: u16, author: u32, created_at: u64, root_id: &EventId) -> Event {
    event(
        pubkey(author),
        created_at,
        kind,
        vec![tag(&["e", &root_id.to_hex(), "", "root"])],
        "",
    )
}

/// A repo state event (30618).
pub fn state(author: u32, d: &str, created_at: u64) -> Event {
    event(
        pubkey(author),
        created_at,
        30618,
        vec![
            tag(&["d", d]),
            tag(&[
                "refs/heads/main",
                "0123456789abcdef0123456789abcdef01234567",
            ]),
        ],
        "",
    )
}

/// A deletion request (kind 5) for coordinates and ids.
pub fn deletion(author: u32, created_at: u64, coords: &[&RepoCoord], ids: &[&EventId]) -> Event {
    let mut tags = Vec::new();
    for c in coords {
        tags.push(tag(&["a", &c.to_string()]));
    }
    for id in ids {
        tags.push(tag(&["e", &id.to_hex()]));
    }
    event(pubkey(author), created_at, 5, tags, "")
}

/// A relay URL from a string (panics on a bad fixture).
pub fn url(s: &str) -> RelayUrl {
    RelayUrl::parse(s).expect("fixture URL is valid")
}

/// The default test configuration: the fixture service, private addresses allowed.
pub fn config() -> Config {
    let mut c = Config::new(ServiceId::parse(SERVICE).expect("valid service"));
    c.allow_private = true;
    c
}

/// A start time for scenarios: 2025-01-01T00:00:00Z.
pub const T0: u64 = 1_735_689_600;

/// Drives an engine by hand and records every command.
pub struct Driver {
    /// The engine.
    pub engine: Engine,
    /// Current time.
    pub now: Time,
    /// Every command, in order.
    pub log: Vec<Command>,
}

impl Driver {
    /// A driver at `T0`.
    pub fn new(config: Config) -> Self {
        Driver {
            engine: Engine::new(config),
            now: Time::from_secs(T0),
            log: Vec::new(),
        }
    }

    /// Feeds one input at the current time; returns the commands it caused.
    pub fn input(&mut self, input: Input<'_>) -> Vec<Command> {
        self.engine.handle_input(self.now, input);
        self.drain()
    }

    /// Moves time forward by `d` and ticks.
    pub fn advance(&mut self, d: Duration) -> Vec<Command> {
        self.now = self.now.plus(d);
        self.input(Input::Tick)
    }

    /// Ticks at every wakeup up to `now + d`; returns all commands.
    pub fn run_for(&mut self, d: Duration) -> Vec<Command> {
        let end = self.now.plus(d);
        let mut out = Vec::new();
        while let Some(w) = self.engine.next_wakeup() {
            if w > end {
                break;
            }
            self.now = w.max(self.now);
            out.extend(self.input(Input::Tick));
        }
        self.now = end;
        out.extend(self.input(Input::Tick));
        out
    }

    /// Drains pending commands into the log and returns them.
    pub fn drain(&mut self) -> Vec<Command> {
        let mut out = Vec::new();
        while let Some(c) = self.engine.poll_command() {
            out.push(c);
        }
        self.log.extend(out.iter().cloned());
        out
    }

    /// Answers every `Connect` among `commands` with `Connected`.
    pub fn connect_all(&mut self, commands: &[Command]) -> Vec<Command> {
        let mut out = Vec::new();
        for c in commands {
            if let Command::Connect { relay } = c {
                out.extend(self.input(Input::Connected { relay }));
            }
        }
        out
    }

    /// Answers every historic `Subscribe` among `commands` with EOSE (an empty
    /// relay), repeatedly, until no new historic REQ appears. Returns every
    /// command seen along the way (including the input ones).
    pub fn eose_all(&mut self, commands: Vec<Command>) -> Vec<Command> {
        let mut all = Vec::new();
        let mut todo = commands;
        while !todo.is_empty() {
            let mut next = Vec::new();
            for c in &todo {
                if let Command::Subscribe {
                    relay,
                    subscription,
                    mode: grasp_sync_core::SubscriptionMode::Historic,
                    ..
                } = c
                {
                    next.extend(self.input(Input::Eose {
                        relay,
                        subscription,
                    }));
                }
            }
            all.extend(todo);
            todo = next;
        }
        all
    }
}
