use grasp_sync_core::{Command, Input};
use grasp_sync_tests::fixtures::*;

fn show(cs: &[Command]) -> String {
    cs.iter()
        .map(|c| serde_json::to_string(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn one_repo_smoke() {
    let mut d = Driver::new(config());
    let ann = announcement(1, "repo", T0 - 100, &["wss://relay.one.example"], true);
    let cs = d.input(Input::AnnouncementSeen(&ann));
    println!("{}", show(&cs));
    let cs = d.connect_all(&cs);
    println!("--\n{}", show(&cs));
    let cs = d.eose_all(cs);
    println!("--\n{}", show(&cs));
    println!(
        "{}",
        serde_json::to_string_pretty(&d.engine.status()).unwrap()
    );
}
