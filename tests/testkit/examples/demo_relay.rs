//! A relay to try `grasp-sync run` against by hand: one in-process rust-nostr
//! LocalRelay on 127.0.0.1 (the integration tests' harness) seeded with a
//! generated, signed NIP-34 dataset for the service `git.example.com`. It
//! prints the `run` command to use and serves until Ctrl-C.
//!
//! ```sh
//! cargo run -p grasp-sync-testkit --example demo_relay
//! ```

use grasp_sync_sim::signed::Dataset;
use grasp_sync_testkit::relays::local::LocalRelayHarness;

#[tokio::main]
async fn main() {
    let relay = LocalRelayHarness::start().await;
    let ds = Dataset::builder("git.example.com", &[relay.url()])
        .repos(3)
        .issues(3)
        .patches(2)
        .prs(1)
        .comments(2)
        .build();
    relay.insert(ds.events()).await;
    println!(
        "{} serving {} events ({} expected for git.example.com); try:",
        relay.url(),
        ds.events().len(),
        ds.expected().len()
    );
    println!(
        "  grasp-sync run --domain git.example.com --allow-private-relays --bootstrap {} --data-dir /tmp/grasp-sync-try --once",
        relay.url()
    );
    println!("Ctrl-C stops it.");
    let _ = tokio::signal::ctrl_c().await;
}
