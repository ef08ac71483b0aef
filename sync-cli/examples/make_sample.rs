//! Writes the committed sample dataset `sync-cli/sample/events.jsonl`.
//!
//! Every event is really signed, with fixed secret keys, fixed `created_at`
//! values and a fixed auxiliary random value, so running this again writes
//! the same bytes:
//!
//! ```text
//! cargo run -p grasp-sync --example make_sample
//! ```
//!
//! The dataset, for the service `git.example.com`:
//!
//! - alice/ngit-tools: lists the service, alpha and beta; a github.com clone
//!   URL (never a relay) and a GRASP clone URL on the service itself;
//! - bob/relay-kit: lists the service and gamma, plus a GRASP clone URL on
//!   `grasp.delta.example` (a relay derived from a clone URL);
//! - carol/patchwork: an older version listing alpha, beta and gamma, and a
//!   newer one that drops gamma;
//! - dave/weird-case: lists the service only as `WSS://GIT.EXAMPLE.COM/`, beta
//!   and a private `ws://127.0.0.1:7777` (refused unless private relays are
//!   allowed);
//! - erin/lonely: does not list the service (never planned, its patch is not
//!   accepted);
//! - frank/doomed: lists the service and alpha, then deleted by frank (kind 5);
//! - ten root events (patches, a pull request, issues), one of which tags the
//!   untracked repo first and a tracked one second, and one for erin's repo;
//! - a comment, two statuses and a state event (not roots);
//! - two broken lines: invalid JSON, and an issue with a forged signature.

use std::fs;
use std::path::PathBuf;

use nostr::event::{Event, EventBuilder, FinalizeUnsignedEvent, Kind, Tag};
use nostr::key::{Keys, PublicKey};
use nostr::nips::nip19::ToBech32;
use nostr::types::Timestamp;
use secp256k1::Secp256k1;

/// The service the sample is written for.
const SERVICE: &str = "wss://git.example.com";
const ALPHA: &str = "wss://relay.alpha.example";
const BETA: &str = "wss://relay.beta.example";
const GAMMA: &str = "wss://relay.gamma.example";
const EPSILON: &str = "wss://relay.epsilon.example";

struct Signer {
    secp: Secp256k1<secp256k1::All>,
}

impl Signer {
    /// Fixed keys: a small number written as 64 hex digits.
    fn keys(n: u64) -> Keys {
        Keys::parse(&format!("{n:064x}")).expect("fixed secret key")
    }

    fn sign(
        &self,
        keys: &Keys,
        kind: u16,
        created_at: u64,
        content: &str,
        tags: &[&[&str]],
    ) -> Event {
        let tags: Vec<Tag> = tags
            .iter()
            .map(|t| Tag::parse(t.iter().copied()).expect("well-formed tag"))
            .collect();
        let unsigned = EventBuilder::new(Kind::Custom(kind), content)
            .tags(tags)
            .custom_created_at(Timestamp::from_secs(created_at))
            .finalize_unsigned(keys.public_key());
        let id = unsigned.compute_id();
        let sig = keys.sign_schnorr_with_aux_rand(&self.secp, id.as_bytes(), &[0u8; 32]);
        let event = unsigned.add_signature(sig).expect("signature verifies");
        event.verify().expect("event verifies");
        event
    }
}

fn coord(author: &PublicKey, d: &str) -> String {
    format!("30617:{}:{d}", author.to_hex())
}

fn npub(pk: &PublicKey) -> String {
    pk.to_bech32().expect("npub")
}

fn main() {
    let s = Signer {
        secp: Secp256k1::new(),
    };
    let alice = Signer::keys(0xa11ce);
    let bob = Signer::keys(0xb0b);
    let carol = Signer::keys(0xca201);
    let dave = Signer::keys(0xda7e);
    let erin = Signer::keys(0xe2112);
    let frank = Signer::keys(0xf2a2c);
    let (a, b, c, d, e, f) = (
        alice.public_key(),
        bob.public_key(),
        carol.public_key(),
        dave.public_key(),
        erin.public_key(),
        frank.public_key(),
    );
    let ngit = coord(&a, "ngit-tools");
    let relay_kit = coord(&b, "relay-kit");
    let patchwork = coord(&c, "patchwork");
    let weird = coord(&d, "weird-case");
    let lonely = coord(&e, "lonely");
    let doomed = coord(&f, "doomed");

    let mut events: Vec<Event> = Vec::new();

    // ----- announcements (30617) -------------------------------------------
    let github = "https://github.com/alice/ngit-tools.git";
    let own_clone = format!("https://git.example.com/{}/ngit-tools.git", npub(&a));
    events.push(s.sign(
        &alice,
        30617,
        1_699_900_100,
        "",
        &[
            &["d", "ngit-tools"],
            &["name", "ngit-tools"],
            &["description", "Tools for git over nostr"],
            &["web", "https://github.com/alice/ngit-tools"],
            &["clone", github, &own_clone],
            &["relays", SERVICE, ALPHA, BETA],
            &["maintainers", &b.to_hex()],
        ],
    ));
    let delta_clone = format!("https://grasp.delta.example/{}/relay-kit.git", npub(&b));
    events.push(s.sign(
        &bob,
        30617,
        1_699_900_200,
        "",
        &[
            &["d", "relay-kit"],
            &["name", "relay-kit"],
            &["description", "A small relay toolkit"],
            &["clone", &delta_clone],
            &["relays", SERVICE, GAMMA],
        ],
    ));
    events.push(s.sign(
        &carol,
        30617,
        1_699_900_300,
        "",
        &[
            &["d", "patchwork"],
            &["name", "patchwork"],
            &["description", "Patch review, first version"],
            &["relays", SERVICE, ALPHA, BETA, GAMMA],
        ],
    ));
    events.push(s.sign(
        &carol,
        30617,
        1_699_950_000,
        "",
        &[
            &["d", "patchwork"],
            &["name", "patchwork"],
            &["description", "Patch review, gamma dropped"],
            &["relays", SERVICE, ALPHA, BETA],
        ],
    ));
    events.push(s.sign(
        &dave,
        30617,
        1_699_900_400,
        "",
        &[
            &["d", "weird-case"],
            &["name", "weird-case"],
            &[
                "relays",
                "WSS://GIT.EXAMPLE.COM/",
                BETA,
                "ws://127.0.0.1:7777",
            ],
        ],
    ));
    events.push(s.sign(
        &erin,
        30617,
        1_699_900_500,
        "",
        &[
            &["d", "lonely"],
            &["name", "lonely"],
            &["description", "Does not list git.example.com"],
            &["relays", ALPHA, EPSILON],
        ],
    ));
    events.push(s.sign(
        &frank,
        30617,
        1_699_900_600,
        "",
        &[
            &["d", "doomed"],
            &["name", "doomed"],
            &["relays", SERVICE, ALPHA],
        ],
    ));

    // ----- root events (1617 patch, 1618 pull request, 1621 issue) ---------
    let patch = |n: u32, subject: &str| {
        format!("From 000000000000000000000000000000000000000{n} Mon Sep 17 00:00:00 2001\nSubject: [PATCH] {subject}\n\n---\n")
    };
    let r_bob_patch = s.sign(
        &bob,
        1617,
        1_699_960_000,
        &patch(1, "Fix the clone URL parser"),
        &[&["a", &ngit], &["p", &a.to_hex()], &["t", "root"]],
    );
    let r_carol_patch = s.sign(
        &carol,
        1617,
        1_699_960_100,
        &patch(2, "Share the diff helper"),
        &[&["a", &lonely], &["a", &ngit], &["t", "root"]],
    );
    let r_frank_issue = s.sign(
        &frank,
        1621,
        1_699_960_200,
        "Clone fails behind a proxy.",
        &[
            &["a", &ngit],
            &["p", &a.to_hex()],
            &["subject", "Clone fails behind a proxy"],
        ],
    );
    let r_alice_pr = s.sign(
        &alice,
        1618,
        1_699_960_300,
        "Adds NIP-77 support.",
        &[
            &["a", &relay_kit],
            &["p", &b.to_hex()],
            &["subject", "Add NIP-77 support"],
            &["c", "1111111111111111111111111111111111111111"],
            &["clone", "https://github.com/alice/relay-kit.git"],
        ],
    );
    let r_dave_issue = s.sign(
        &dave,
        1621,
        1_699_960_400,
        "Docs are out of date.",
        &[
            &["a", &relay_kit],
            &["p", &b.to_hex()],
            &["subject", "Docs are out of date"],
        ],
    );
    let r_carol_patch2 = s.sign(
        &carol,
        1617,
        1_699_960_500,
        &patch(3, "Speed up review"),
        &[&["a", &patchwork], &["t", "root"]],
    );
    let r_alice_issue = s.sign(
        &alice,
        1621,
        1_699_960_600,
        "Review comments get lost.",
        &[
            &["a", &patchwork],
            &["p", &c.to_hex()],
            &["subject", "Review comments get lost"],
        ],
    );
    let r_bob_issue = s.sign(
        &bob,
        1621,
        1_699_960_700,
        "Upper-case relay URLs.",
        &[
            &["a", &weird],
            &["p", &d.to_hex()],
            &["subject", "Upper-case relay URLs"],
        ],
    );
    let r_alice_doomed = s.sign(
        &alice,
        1621,
        1_699_960_800,
        "Is this repo still alive?",
        &[
            &["a", &doomed],
            &["p", &f.to_hex()],
            &["subject", "Is this repo still alive?"],
        ],
    );
    let r_erin_patch = s.sign(
        &erin,
        1617,
        1_699_960_900,
        &patch(4, "Lonely change"),
        &[&["a", &lonely], &["t", "root"]],
    );
    events.extend([
        r_bob_patch.clone(),
        r_carol_patch,
        r_frank_issue.clone(),
        r_alice_pr.clone(),
        r_dave_issue,
        r_carol_patch2,
        r_alice_issue,
        r_bob_issue,
        r_alice_doomed,
        r_erin_patch,
    ]);

    // ----- not roots: a comment, statuses, a state event --------------------
    let issue_id = r_frank_issue.id.to_hex();
    events.push(s.sign(
        &alice,
        1111,
        1_699_970_000,
        "Does it work with HTTPS_PROXY set?",
        &[
            &["E", &issue_id],
            &["K", "1621"],
            &["P", &f.to_hex()],
            &["e", &issue_id],
            &["k", "1621"],
            &["p", &f.to_hex()],
        ],
    ));
    events.push(s.sign(
        &alice,
        1631,
        1_699_970_100,
        "Applied, thanks.",
        &[
            &["e", &r_bob_patch.id.to_hex(), "", "root"],
            &["a", &ngit],
            &["p", &b.to_hex()],
        ],
    ));
    events.push(s.sign(
        &bob,
        1630,
        1_699_970_200,
        "Open for review.",
        &[
            &["e", &r_alice_pr.id.to_hex(), "", "root"],
            &["a", &relay_kit],
            &["p", &a.to_hex()],
        ],
    ));
    events.push(s.sign(
        &alice,
        30618,
        1_699_970_300,
        "",
        &[
            &["d", "ngit-tools"],
            &[
                "refs/heads/main",
                "2222222222222222222222222222222222222222",
            ],
            &["HEAD", "ref: refs/heads/main"],
        ],
    ));

    // ----- a deletion of frank's repo by frank -------------------------------
    events.push(s.sign(
        &frank,
        5,
        1_699_980_000,
        "Repository moved elsewhere.",
        &[&["a", &doomed], &["k", "30617"]],
    ));

    let mut out = String::new();
    for ev in &events {
        out.push_str(&ev.as_json());
        out.push('\n');
    }

    // ----- two broken lines ------------------------------------------------
    out.push_str("{\"id\":\"broken\",\"kind\":1621,\"content\":\"truncated\n");
    let forged = s.sign(
        &erin,
        1621,
        1_699_990_000,
        "This issue carries a forged signature.",
        &[&["a", &relay_kit], &["subject", "Forged"]],
    );
    let mut json = forged.as_json();
    let sig = forged.sig.to_string();
    let flipped = match sig.as_bytes().last() {
        Some(b'0') => '1',
        _ => '0',
    };
    let forged_sig = format!("{}{flipped}", &sig[..sig.len() - 1]);
    json = json.replace(&sig, &forged_sig);
    out.push_str(&json);
    out.push('\n');

    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample/events.jsonl");
    fs::write(&path, out).expect("write sample");
    eprintln!(
        "wrote {} ({} signed events + 2 broken lines)",
        path.display(),
        events.len()
    );
}
