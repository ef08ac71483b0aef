//! End-to-end tests of the `grasp-sync` binary: the committed sample in both
//! formats (snapshotted), bad inputs, and the options.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const NOW: &str = "1700000000";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_grasp-sync"))
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample")
        .join(name)
}

/// Runs `grasp-sync plan --domain git.example.com --now NOW` plus `args`.
fn plan(args: &[&str]) -> Output {
    bin()
        .args(["plan", "--domain", "git.example.com", "--now", NOW])
        .args(args)
        .output()
        .expect("run grasp-sync")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8 stderr")
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("one JSON document")
}

/// Writes `contents` to a fresh file under the target's temporary directory.
fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("grasp-sync-cli-{name}"));
    std::fs::write(&path, contents).expect("write temp file");
    path
}

fn sample_lines() -> Vec<String> {
    std::fs::read_to_string(sample("events.jsonl"))
        .expect("sample")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The sample's signed, valid events (every line but the two broken ones).
fn valid_lines() -> Vec<String> {
    let lines = sample_lines();
    lines[..lines.len() - 2].to_vec()
}

fn relays(doc: &Value) -> &Vec<Value> {
    doc["relays"].as_array().expect("relays array")
}

fn relay<'a>(doc: &'a Value, url: &str) -> &'a Value {
    relays(doc)
        .iter()
        .find(|r| r["url"] == url)
        .unwrap_or_else(|| panic!("relay {url} not planned"))
}

fn urls(doc: &Value) -> Vec<&str> {
    relays(doc)
        .iter()
        .map(|r| r["url"].as_str().unwrap())
        .collect()
}

fn subs_of<'a>(relay: &'a Value, mode: &str) -> Vec<&'a Value> {
    relay["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["mode"] == mode)
        .collect()
}

/// The coordinate of the sample's repo `d` by the author of the announcement
/// on the 1-based sample line `line`.
fn coord_of_line(line: usize, d: &str) -> String {
    let ev: Value = serde_json::from_str(&sample_lines()[line - 1]).unwrap();
    format!("30617:{}:{d}", ev["pubkey"].as_str().unwrap())
}

#[test]
fn sample_text() {
    let out = plan(&["--events", sample("events.jsonl").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("line 23: skipped (invalid-json)"), "{err}");
    assert!(err.contains("line 24: skipped (invalid-event)"), "{err}");
    assert!(err.contains("Invalid signature"), "{err}");
    insta::assert_snapshot!("sample_text", stdout(&out));
}

#[test]
fn sample_json() {
    let out = plan(&[
        "--events",
        sample("events.jsonl").to_str().unwrap(),
        "--format",
        "json",
    ]);
    let doc = json(&out);
    insta::assert_snapshot!("sample_json", stdout(&out));

    // The facts checked by hand, kept as assertions.
    assert_eq!(doc["service"], "git.example.com");
    assert_eq!(
        urls(&doc),
        [
            "wss://grasp.delta.example",
            "wss://relay.alpha.example",
            "wss://relay.beta.example",
            "wss://relay.gamma.example",
        ],
        "sorted; no own service, no github.com, no private 127.0.0.1, no epsilon (untracked repo)"
    );
    let counts: Vec<(u64, u64)> = relays(&doc)
        .iter()
        .map(|r| {
            (
                r["repos"].as_u64().unwrap(),
                r["root_events"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, [(1, 2), (2, 5), (3, 6), (1, 2)]);
    let text = serde_json::to_string(&doc["relays"]).unwrap();
    let lonely = coord_of_line(6, "lonely");
    let doomed = coord_of_line(7, "doomed");
    let patchwork = coord_of_line(4, "patchwork");
    assert!(
        !text.contains(&lonely),
        "the repo not listing the service is planned"
    );
    assert!(!text.contains(&doomed), "the deleted repo is planned");
    assert!(!text.contains("github.com") && !text.contains("epsilon"));
    let gamma = serde_json::to_string(relay(&doc, "wss://relay.gamma.example")).unwrap();
    assert!(
        !gamma.contains(&patchwork),
        "gamma was dropped by patchwork's newer announcement"
    );
    let alpha = serde_json::to_string(relay(&doc, "wss://relay.alpha.example")).unwrap();
    assert!(alpha.contains(&patchwork));
    for r in relays(&doc) {
        assert_eq!(subs_of(r, "live").len(), 1, "{}", r["url"]);
        assert_eq!(subs_of(r, "historic").len(), 1, "{}", r["url"]);
        for f in subs_of(r, "live")[0]["filters"].as_array().unwrap() {
            assert_eq!(f["limit"], 0);
            assert!(f["since"].as_u64().unwrap() <= 1_700_000_000);
        }
        for f in subs_of(r, "historic")[0]["filters"].as_array().unwrap() {
            assert_eq!(f["limit"], 500);
            assert!(f.get("since").is_none());
        }
    }
    let reasons: Vec<&str> = doc["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "private-address",
            "announcement-without-service",
            "unrelated",
            "invalid-json",
            "invalid-event"
        ]
    );
    assert!(doc["ignored"][3]["detail"]
        .as_str()
        .unwrap()
        .starts_with("line 23: "));
    assert!(doc["ignored"][4]["detail"]
        .as_str()
        .unwrap()
        .starts_with("line 24: "));
}

/// `plan` over the sample with the sample NIP-11 documents, as JSON.
fn plan_sample_with_relay_info() -> Output {
    plan(&[
        "--events",
        sample("events.jsonl").to_str().unwrap(),
        "--relay-info",
        sample("relay-info.json").to_str().unwrap(),
        "--format",
        "json",
    ])
}

#[test]
fn sample_with_relay_info() {
    let out = plan_sample_with_relay_info();
    let doc = json(&out);
    insta::assert_snapshot!("sample_relay_info_json", stdout(&out));
    // beta publishes max_subscriptions 3, max_filters 4, max_limit 200 (under
    // a key written as "WSS://Relay.Beta.Example/").
    let beta = relay(&doc, "wss://relay.beta.example");
    // At most 3 at once: the live groups keep 2 slots, history runs in the third.
    assert!(subs_of(beta, "live").len() <= 2);
    for s in subs_of(beta, "historic") {
        let filters = s["filters"].as_array().unwrap();
        assert!(filters.len() <= 4);
        assert!(filters.iter().all(|f| f["limit"] == 200));
    }
    // gamma allows one subscription: history first, then the live one.
    let gamma = relay(&doc, "wss://relay.gamma.example");
    let modes: Vec<&str> = gamma["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["historic", "live"]);
}

/// Spec section 6: "a relay's budget is never exceeded by the plan". Live
/// subscriptions are packed when targets are added, before the relay's NIP-11
/// document arrives, and re-packed when it narrows the limits.
#[test]
fn live_subscriptions_respect_published_max_filters() {
    let out = plan_sample_with_relay_info();
    let doc = json(&out);
    for s in subs_of(relay(&doc, "wss://relay.beta.example"), "live") {
        assert!(s["filters"].as_array().unwrap().len() <= 4, "{s}");
    }
}

#[test]
fn invalid_json_line_is_reported_and_skipped() {
    let lines = valid_lines();
    let contents = format!("{}\n\n{{\"kind\": 1617,\n{}\n", lines[0], lines[1]);
    let path = temp_file("invalid-json.jsonl", &contents);
    let out = plan(&["--events", path.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("line 3: skipped (invalid-json)"), "{err}");
    let doc = json(&out);
    let ignored = doc["ignored"].as_array().unwrap();
    let bad: Vec<&Value> = ignored
        .iter()
        .filter(|i| i["reason"] == "invalid-json")
        .collect();
    assert_eq!(bad.len(), 1);
    assert!(bad[0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("line 3: invalid JSON"));
    // The valid lines around it were used: alice's repo (alpha, beta) and
    // bob's (gamma, and delta from its GRASP clone URL).
    assert_eq!(
        urls(&doc),
        [
            "wss://grasp.delta.example",
            "wss://relay.alpha.example",
            "wss://relay.beta.example",
            "wss://relay.gamma.example",
        ]
    );
    let text = plan(&["--events", path.to_str().unwrap()]);
    assert!(
        stdout(&text).contains("Summary: 3 events read, 2 accepted"),
        "{}",
        stdout(&text)
    );
    assert!(stdout(&text).contains("1 skipped as invalid"));
}

#[test]
fn forged_signature_is_reported_and_skipped() {
    let lines = sample_lines();
    let forged = lines.last().unwrap();
    let valid = valid_lines().join("\n");
    let with = temp_file("forged.jsonl", &format!("{valid}\n{forged}\n"));
    let without = temp_file("not-forged.jsonl", &format!("{valid}\n"));
    let out = plan(&["--events", with.to_str().unwrap(), "--format", "json"]);
    let err = stderr(&out);
    let n = valid_lines().len() + 1;
    assert!(
        err.contains(&format!("line {n}: skipped (invalid-event)")),
        "{err}"
    );
    assert!(err.contains("Invalid signature"), "{err}");
    let with = json(&out);
    let without = json(&plan(&[
        "--events",
        without.to_str().unwrap(),
        "--format",
        "json",
    ]));
    assert_eq!(
        with["relays"], without["relays"],
        "the forged issue changed the plan"
    );
    let last = with["ignored"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["reason"], "invalid-event");
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = plan(&["--events", "/nonexistent/grasp-sync/events.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("cannot read events file /nonexistent/grasp-sync/events.jsonl"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn unknown_flag_is_rejected() {
    let out = plan(&[
        "--events",
        sample("events.jsonl").to_str().unwrap(),
        "--frobnicate",
    ]);
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--frobnicate"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_arguments_are_rejected() {
    let events = sample("events.jsonl");
    let events = events.to_str().unwrap();
    let bad_domain = bin()
        .args([
            "plan",
            "--domain",
            "git.example.com/path",
            "--events",
            events,
        ])
        .output()
        .unwrap();
    assert_eq!(bad_domain.status.code(), Some(2), "{}", stderr(&bad_domain));
    let no_events = bin()
        .args(["plan", "--domain", "git.example.com"])
        .output()
        .unwrap();
    assert_eq!(no_events.status.code(), Some(2));
    let bad_format = plan(&["--events", events, "--format", "yaml"]);
    assert_eq!(bad_format.status.code(), Some(2));
    let bad_now = plan(&["--events", events, "--now", "yesterday"]);
    assert_eq!(bad_now.status.code(), Some(2));
    let no_command = bin().output().unwrap();
    assert_eq!(no_command.status.code(), Some(2));
}

#[test]
fn bad_relay_info_file_is_a_clear_error() {
    let events = sample("events.jsonl");
    let path = temp_file("relay-info-bad.json", r#"{"ftp://relay.example": {}}"#);
    let out = plan(&[
        "--events",
        events.to_str().unwrap(),
        "--relay-info",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is not a relay URL"),
        "{}",
        stderr(&out)
    );
    let out = plan(&[
        "--events",
        events.to_str().unwrap(),
        "--relay-info",
        "/nonexistent/info.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read relay information file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn json_array_gives_the_same_plan_as_json_lines() {
    let lines = sample_lines();
    let forged = lines.last().unwrap();
    let mut elements = valid_lines();
    elements.push(forged.clone());
    let array = temp_file(
        "events.json",
        &format!("  \n[\n{}\n]\n", elements.join(",\n")),
    );
    let jsonl = temp_file(
        "events-for-array.jsonl",
        &format!("{}\n", elements.join("\n")),
    );
    let from_array = plan(&["--events", array.to_str().unwrap(), "--format", "json"]);
    let err = stderr(&from_array);
    let n = elements.len() - 1;
    assert!(
        err.contains(&format!("element {n}: skipped (invalid-event)")),
        "{err}"
    );
    let from_array = json(&from_array);
    let from_lines = json(&plan(&[
        "--events",
        jsonl.to_str().unwrap(),
        "--format",
        "json",
    ]));
    assert_eq!(from_array["relays"], from_lines["relays"]);
    assert_eq!(from_array["service"], from_lines["service"]);
    let reasons = |d: &Value| -> Vec<Value> {
        d["ignored"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["reason"].clone())
            .collect()
    };
    assert_eq!(reasons(&from_array), reasons(&from_lines));
    // The same plan as the committed sample (which adds one invalid-JSON line).
    let full = json(&plan(&[
        "--events",
        sample("events.jsonl").to_str().unwrap(),
        "--format",
        "json",
    ]));
    assert_eq!(from_array["relays"], full["relays"]);
}

#[test]
fn stdin_is_read_with_dash() {
    let mut child = bin()
        .args([
            "plan",
            "--domain",
            "git.example.com",
            "--now",
            NOW,
            "--events",
            "-",
            "--format",
            "json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let contents = std::fs::read(sample("events.jsonl")).unwrap();
    child.stdin.take().unwrap().write_all(&contents).unwrap();
    let out = child.wait_with_output().unwrap();
    let from_file = plan(&[
        "--events",
        sample("events.jsonl").to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(json(&out), json(&from_file));
}

#[test]
fn archive_mode_plans_every_announcement() {
    let doc = json(&plan(&[
        "--events",
        sample("events.jsonl").to_str().unwrap(),
        "--format",
        "json",
        "--archive",
    ]));
    let lonely = coord_of_line(6, "lonely");
    assert!(urls(&doc).contains(&"wss://relay.epsilon.example"));
    assert!(
        serde_json::to_string(relay(&doc, "wss://relay.epsilon.example"))
            .unwrap()
            .contains(&lonely)
    );
    // Erin's patch on her repo is accepted now too.
    assert!(!doc["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["reason"] == "unrelated"));
}

#[test]
fn private_relays_need_the_switch() {
    let events = sample("events.jsonl");
    let events = events.to_str().unwrap();
    let default = json(&plan(&["--events", events, "--format", "json"]));
    assert!(!urls(&default).contains(&"ws://127.0.0.1:7777"));
    let allowed = json(&plan(&[
        "--events",
        events,
        "--format",
        "json",
        "--allow-private-relays",
    ]));
    assert!(urls(&allowed).contains(&"ws://127.0.0.1:7777"));
    assert!(!allowed["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["reason"] == "private-address"));
}

#[test]
fn plan_is_deterministic() {
    let events = sample("events.jsonl");
    let args = ["--events", events.to_str().unwrap(), "--format", "json"];
    assert_eq!(plan(&args).stdout, plan(&args).stdout);
}

#[test]
fn help_explains_every_flag() {
    let out = bin().args(["plan", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = stdout(&out);
    for flag in [
        "--domain",
        "--events",
        "--format",
        "--archive",
        "--allow-private-relays",
        "--relay-info",
        "--now",
        "--help",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let top = bin().arg("--help").output().unwrap();
    assert!(top.status.success());
    assert!(stdout(&top).contains("plan"));
    let version = bin().arg("--version").output().unwrap();
    assert!(stdout(&version).starts_with("grasp-sync "));
}

#[test]
fn relay_of_a_deleted_repo_only_is_idle() {
    let lines = sample_lines();
    // frank's announcement, alice's issue on it, and frank's deletion.
    let contents = format!("{}\n{}\n{}\n", lines[6], lines[15], lines[21]);
    let path = temp_file("deleted-only.jsonl", &contents);
    let doc = json(&plan(&[
        "--events",
        path.to_str().unwrap(),
        "--format",
        "json",
    ]));
    assert!(relays(&doc).is_empty(), "{doc}");
    let out = plan(&["--events", path.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(text.contains("No relay to sync from."), "{text}");
    assert!(text.contains("Known relays with nothing to sync"), "{text}");
    assert!(text.contains("  wss://relay.alpha.example\n"), "{text}");
    assert!(
        text.contains("3 accepted (1 announcement, 1 root event, 1 deletion)"),
        "{text}"
    );
}
