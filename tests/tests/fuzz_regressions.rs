//! Replays every committed fuzz seed (`fuzz/corpus/<target>/`) and every
//! kept crash (`fuzz/regressions/<target>/`) through the fuzz harnesses of
//! `grasp_sync_sim::fuzzing`, so what the fuzzers once found stays fixed
//! under a plain `cargo test`.

use std::path::{Path, PathBuf};

use grasp_sync_sim::fuzzing::{announcement, engine_inputs, relay_message};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Runs `harness` on every file of the target's corpus and regressions;
/// returns how many files ran.
fn replay(target: &str, harness: fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).expect("a corpus file reads");
            let result = std::panic::catch_unwind(|| harness(&data));
            assert!(result.is_ok(), "{target}: {} fails", file.display());
            n += 1;
        }
    }
    n
}

#[test]
fn engine_inputs_corpus_and_regressions() {
    assert!(replay("engine_inputs", engine_inputs::run) > 0);
}

#[test]
fn relay_message_corpus_and_regressions() {
    assert!(replay("relay_message", relay_message::run) > 0);
}

#[test]
fn announcement_corpus_and_regressions() {
    assert!(replay("announcement", announcement::run) > 0);
}

/// The cooperative scenario reaches subscriptions, so the oracle has REQs
/// to judge, and replays identically.
#[test]
fn engine_inputs_steady_world_subscribes() {
    let scenario = engine_inputs::Scenario {
        config: engine_inputs::ConfigChoice::default(),
        preset: None,
        steps: engine_inputs::steady_steps(4, 8),
    };
    let first = engine_inputs::play(&scenario);
    assert!(first.commands.iter().any(|c| c.contains("\"subscribe\"")));
    assert_eq!(first, engine_inputs::play(&scenario));
}

/// The NIP-77 steps reach a real reconciliation: the host's items answer
/// the engine's query, a responder's NEG-MSG names ids we lack, and the
/// engine fetches exactly those with an `ids` REQ.
#[test]
fn engine_inputs_reach_a_nip77_reconciliation() {
    use engine_inputs::{ItemChoice, NegPayload, RelayChoice, RequestChoice, Step, SubChoice};
    let mut steps = engine_inputs::steady_steps(1, 2);
    // Up to the connection and the batch delay; no EOSE, no long wait.
    steps.truncate(steps.len() - 2);
    steps.push(Step::LocalItems {
        relay: RelayChoice::Pool(0),
        request: RequestChoice::Recent(0),
        items: Some(vec![ItemChoice::MadeUp(3, 50)]),
    });
    steps.push(Step::NegMsg {
        relay: RelayChoice::Pool(0),
        sub: SubChoice::Recent(0),
        payload: NegPayload::Respond(vec![ItemChoice::MadeUp(3, 50), ItemChoice::MadeUp(7, 100)]),
    });
    let scenario = engine_inputs::Scenario {
        config: engine_inputs::ConfigChoice {
            nip77: true,
            ..Default::default()
        },
        preset: None,
        steps,
    };
    let outcome = engine_inputs::play(&scenario);
    let log = outcome.commands.join("\n");
    assert!(log.contains("\"query-local-items\""), "{log}");
    assert!(log.contains("\"neg-open\""), "{log}");
    let wanted = "07".repeat(32);
    let have = "03".repeat(32);
    let reqs: Vec<&String> = outcome
        .commands
        .iter()
        .filter(|c| c.contains("\"subscribe\""))
        .collect();
    assert!(
        reqs.iter().any(|c| c.contains(&wanted)),
        "the missing id is fetched: {log}"
    );
    assert!(
        !reqs.iter().any(|c| c.contains(&have)),
        "the id we hold is not fetched: {log}"
    );
    assert_eq!(outcome, engine_inputs::play(&scenario));
}

/// Well-formed frames reach every pipeline outcome the harness counts.
#[test]
fn relay_message_reaches_every_outcome() {
    let sub = relay_message::open_subscriptions()[0].to_string();
    let mut p = relay_message::Pipeline::new();
    let frames = [
        format!(r#"["EOSE","{sub}"]"#),
        r#"["NOTICE","hello"]"#.to_owned(),
        r#"["EVENT","x",{"bad":1}]"#.to_owned(),
        r#"["NOPE"]"#.to_owned(),
    ];
    for f in &frames {
        p.frame(f);
    }
    p.flush();
    assert_eq!(p.counts.control, 2);
    assert_eq!(p.counts.invalid, 1);
    assert_eq!(p.counts.malformed, 1);
}

/// The harness runs the runner's own intake: only the `OK` of our AUTH event
/// answers the AUTH, any other `OK` is dropped (and counted as such).
#[test]
fn relay_message_takes_only_the_ok_of_our_auth() {
    let ours = hex(&relay_message::AUTH_EVENT_ID);
    let other = "01".repeat(32);
    let mut p = relay_message::Pipeline::new();
    for f in [
        r#"["AUTH","challenge-1"]"#.to_owned(),
        format!(r#"["OK","{other}",true,""]"#),
        format!(r#"["OK","{ours}",true,""]"#),
        format!(r#"["OK","{ours}",true,""]"#),
    ] {
        p.frame(&f);
    }
    p.flush();
    assert_eq!(p.counts.control, 2, "the challenge and our OK");
    assert_eq!(p.counts.stray_ok, 2, "someone else's OK, and ours again");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the hand-made seeds of `fuzz/corpus/relay_message/`: signed events
/// for an open subscription (wanted, a duplicate, a forged signature, a
/// wrong id), for another subscription and for none, and control frames.
/// Run with `cargo test -p grasp-sync-tests --test fuzz_regressions -- --ignored`
/// after changing the harness's engine.
#[test]
#[ignore = "writes seed files"]
fn write_relay_message_seeds() {
    use grasp_sync_sim::fixtures::coord;
    use grasp_sync_sim::signed::{forge_signature, signer};
    use nostr::message::{RelayMessage, SubscriptionId};

    let subs = relay_message::open_subscriptions();
    let repo = coord(relay_message::REPO_AUTHOR, relay_message::REPO_D);
    let keys = signer().keys(6, 1);
    let issue = signer().sign(
        &keys,
        grasp_sync_sim::fixtures::T0 - 60,
        1621,
        vec![vec!["a".into(), repo.to_string()]],
        "an issue",
    );
    let stranger = signer().sign(&keys, 1_700_000_000, 1, vec![], "a note");
    let frame = |sub: &SubscriptionId, e: &nostr::event::Event| {
        RelayMessage::event(sub.clone(), e.clone()).as_json()
    };
    let mut wrong_id = serde_json::to_value(&issue).unwrap();
    wrong_id["content"] = "tampered".into();
    let wrong_id = format!(r#"["EVENT","{}",{wrong_id}]"#, subs[0]);
    let dir = fuzz_dir().join("corpus/relay_message");
    std::fs::create_dir_all(&dir).unwrap();
    let mut seeds: Vec<(String, Vec<String>)> = Vec::new();
    for (i, sub) in subs.iter().enumerate() {
        seeds.push((
            format!("event-wanted-{i}"),
            vec![
                frame(sub, &issue),
                frame(sub, &issue),
                format!(r#"["EOSE","{sub}"]"#),
            ],
        ));
    }
    seeds.push((
        "event-forged".into(),
        vec![frame(&subs[0], &forge_signature(&issue))],
    ));
    seeds.push(("event-wrong-id".into(), vec![wrong_id]));
    seeds.push(("event-unmatched".into(), vec![frame(&subs[0], &stranger)]));
    seeds.push((
        "event-unrequested".into(),
        vec![frame(&SubscriptionId::new("nobody"), &issue)],
    ));
    let auth_ok = hex(&relay_message::AUTH_EVENT_ID);
    seeds.push((
        "auth-answers".into(),
        vec![
            r#"["AUTH","challenge-1"]"#.to_owned(),
            format!(r#"["OK","{}",true,""]"#, "01".repeat(32)),
            format!(r#"["OK","{auth_ok}",true,""]"#),
            format!(r#"["OK","{auth_ok}",false,"auth-required: again"]"#),
        ],
    ));
    seeds.push((
        "closed-prefixes".into(),
        [
            "rate-limited: slow",
            "auth-required: x",
            "restricted: no",
            "error: y",
            "odd",
        ]
        .iter()
        .zip(subs.iter().cycle())
        .map(|(m, s)| format!(r#"["CLOSED","{s}","{m}"]"#))
        .collect(),
    ));
    for (name, frames) in seeds {
        std::fs::write(dir.join(name), frames.join("\n") + "\n").unwrap();
    }
}

/// A relay with more work than its budget holds gets exactly its budget:
/// the harness reaches the edge the oracle guards.
#[test]
fn engine_inputs_reaches_the_budget_edge() {
    let scenario = engine_inputs::Scenario {
        config: engine_inputs::ConfigChoice {
            max_values_per_filter: Some(1),
            ..engine_inputs::ConfigChoice::default()
        },
        preset: Some((0, 40)),
        steps: Vec::new(),
    };
    assert_eq!(engine_inputs::play(&scenario).peak_open, 10);
}
