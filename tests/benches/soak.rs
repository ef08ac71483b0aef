//! The long-run soak: the simulated world (`grasp_sync_sim::sim`) with 500
//! relays and 20,000 repos under random faults for 24 virtual hours.
//!
//! Faults: harsh relay profiles (small subscription caps refused by CLOSED,
//! NOTICE, silence, eviction or a dropped connection; rate limits; page
//! caps; AUTH; no NIP-11), outages all day long, live publishes every hour
//! and an engine restart every six hours; the last four hours are healthy so
//! that the world can converge. Every input and command goes through the
//! fuzzers' budget oracle (`fuzzing::oracle`) as well as the simulation's
//! own invariant checks.
//!
//! Prints, per virtual hour: live heap (a counting global allocator), the
//! commands of the hour, events stored and violations so far; then
//! convergence (targets confirmed, relays converged, events stored vs
//! expected) and the heap growth after warm-up.
//!
//! ```text
//! cargo bench -p grasp-sync-tests --bench soak               # 500 relays, 20,000 repos, 24 h
//! cargo bench -p grasp-sync-tests --bench soak -- --quick    # 50 relays, 2,000 repos, 24 h
//! cargo bench -p grasp-sync-tests --bench soak -- --seed 7 --hours 48
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use grasp_sync_core::RepoCoord;
use grasp_sync_sim::fixtures;
use grasp_sync_sim::fuzzing::oracle::BudgetOracle;
use grasp_sync_sim::scenario::{generate, relay_url, Params, Rand};
use grasp_sync_sim::sim::{Fault, World};
use nostr::event::EventId;

/// The system allocator, counting live bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

struct Args {
    relays: usize,
    repos: usize,
    hours: u64,
    seed: u64,
}

fn args() -> Args {
    let mut a = Args {
        relays: 500,
        repos: 20_000,
        hours: 24,
        seed: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |what: &str| -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match arg.as_str() {
            "--quick" => {
                a.relays = 50;
                a.repos = 2_000;
            }
            "--relays" => a.relays = number("--relays") as usize,
            "--repos" => a.repos = number("--repos") as usize,
            "--hours" => a.hours = number("--hours").max(6),
            "--seed" => a.seed = number("--seed"),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

/// Healthy hours at the end, for convergence.
const HEAL_HOURS: u64 = 4;
/// Hours before memory is expected to be flat.
const WARM_UP_HOURS: u64 = 6;

/// Faults over the whole day: outages, live publishes and restarts.
fn schedule_faults(world: &mut World, a: &Args, rng: &mut Rand) {
    let start = world.now;
    let hour = Duration::from_secs(3600);
    // Repos per relay, read from the announcements each relay holds.
    let mut repos_on: Vec<Vec<RepoCoord>> = Vec::with_capacity(a.relays);
    for i in 0..a.relays {
        let coords = world.relays.get(&relay_url(i)).map_or_else(Vec::new, |r| {
            r.events
                .values()
                .filter(|e| e.kind.as_u16() == 30617)
                .filter_map(|e| {
                    let d = grasp_sync_core::announcement::identifier(e)?;
                    Some(RepoCoord::new(e.pubkey, d))
                })
                .collect()
        });
        repos_on.push(coords);
    }
    let chaos_hours = a.hours - HEAL_HOURS;
    for h in 0..chaos_hours {
        let base = start.plus(hour * h as u32);
        // About 5 % of the relays go down each hour, for 1 minute to 2 hours.
        for _ in 0..(a.relays / 20).max(1) {
            let at = base.plus(Duration::from_secs(rng.below(3600)));
            let mut duration = Duration::from_secs(60 + rng.below(2 * 3600));
            let heal = start.plus(hour * chaos_hours as u32);
            if at.plus(duration) > heal {
                duration = heal.since(at);
            }
            world.schedule(
                at,
                Fault::Down {
                    relay: relay_url(rng.below(a.relays as u64) as usize),
                    duration,
                },
            );
        }
        // Live traffic: a new issue on one of a repo's relays.
        for k in 0..(a.repos / 100).max(1) {
            let i = rng.below(a.relays as u64) as usize;
            let Some(coord) = (!repos_on[i].is_empty())
                .then(|| repos_on[i][rng.below(repos_on[i].len() as u64) as usize].clone())
            else {
                continue;
            };
            let at = base.plus(Duration::from_secs(rng.below(3600)));
            let e = fixtures::root(
                1621,
                10_000 + k as u32,
                at.as_secs(),
                &coord,
                &format!("live {h}/{k}"),
            );
            world.schedule(
                at,
                Fault::Publish {
                    relay: relay_url(i),
                    event: Box::new(e),
                },
            );
        }
        if h % 6 == 5 {
            world.schedule(base.plus(hour / 2), Fault::Restart);
        }
    }
}

fn main() {
    let a = args();
    let build = Instant::now();
    let params = Params {
        relays: a.relays,
        repos: a.repos,
        roots_per_repo: 3,
        replies_per_root: 2,
        outages: 0,
        restart: false,
        harsh: true,
        live_events: 0,
        churn: true,
        bootstrap: true,
        auth: true,
        // Every relay behaviour towards NEG-OPEN, mixed (answering, refusing,
        // silent, dropping, unknown verb).
        nip77: None,
        // Half the relays behave as the real relays of the peer zoo.
        zoo: true,
    };
    let mut world = generate(a.seed, &params);
    world.keep_log = false;
    let config = world.engine.config().clone();
    world.oracle = Some(BudgetOracle::new(
        config.default_budget,
        config.service.clone(),
    ));
    let mut rng = Rand::new(a.seed ^ 0x50a6);
    schedule_faults(&mut world, &a, &mut rng);
    let held: usize = world.relays.values().map(|r| r.events.len()).sum();
    println!(
        "soak: seed {}, {} relays, {} repos, {} events held by relays, {} virtual hours (world built in {:.1}s)",
        a.seed,
        a.relays,
        a.repos,
        held,
        a.hours,
        build.elapsed().as_secs_f64()
    );
    println!(
        "{:>5} {:>9} {:>11} {:>10} {:>10} {:>9} {:>10} {:>8}",
        "hour", "heap MiB", "engine MiB", "commands", "stored", "restarts", "violations", "wall s"
    );
    let started = Instant::now();
    let start = world.now;
    world.start();
    let mut heap = Vec::new();
    let mut last_commands = 0;
    for h in 1..=a.hours {
        world.run_until(start.plus(Duration::from_secs(3600 * h)));
        let live = LIVE.load(Ordering::Relaxed);
        let engine = engine_bytes(&world);
        heap.push((live, engine));
        let violations =
            world.violations.len() + world.oracle.as_ref().map_or(0, |o| o.violations().len());
        println!(
            "{:>5} {:>9.1} {:>11.1} {:>10} {:>10} {:>9} {:>10} {:>8.1}",
            h,
            mib(live),
            mib(engine),
            world.stats.commands - last_commands,
            world.stats.stored,
            world.stats.restarts,
            violations,
            started.elapsed().as_secs_f64()
        );
        last_commands = world.stats.commands;
    }
    world.settle();
    report(&world, &heap, started.elapsed());
    // Relays still busy at the end (a daily re-sync pass under way): do
    // they finish?
    let busy: Vec<_> = world
        .relays
        .keys()
        .filter(|u| !world.converged(u))
        .cloned()
        .collect();
    if !busy.is_empty() {
        world.run_until(world.now.plus(Duration::from_secs(2 * 3600)));
        world.settle();
        let done = busy.iter().filter(|u| world.converged(u)).count();
        let violations =
            world.violations.len() + world.oracle.as_ref().map_or(0, |o| o.violations().len());
        println!(
            "two virtual hours later: {done}/{} of the busy relays converged; {violations} violations",
            busy.len()
        );
    }
}

/// The engine's own heap: what a deep copy of it allocates (the world's
/// relays, store and queues excluded).
fn engine_bytes(world: &World) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    let copy = world.engine.clone();
    let bytes = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    drop(copy);
    bytes
}

/// Heap figures after warm-up: (at the end of warm-up, lowest, highest, last).
fn after_warm_up(series: &[usize]) -> (usize, usize, usize, usize) {
    let warm = (WARM_UP_HOURS as usize).min(series.len()).saturating_sub(1);
    let after = &series[warm..];
    (
        series[warm],
        after.iter().copied().min().unwrap_or(0),
        after.iter().copied().max().unwrap_or(0),
        after.last().copied().unwrap_or(0),
    )
}

fn print_memory(what: &str, series: &[usize]) {
    let (warm, lo, hi, last) = after_warm_up(series);
    println!(
        "{what}: {:.1} MiB at hour {}, {:.1}-{:.1} MiB after, {:.1} MiB at the end ({:+.1} % after warm-up)",
        mib(warm),
        (WARM_UP_HOURS as usize).min(series.len()),
        mib(lo),
        mib(hi),
        mib(last),
        (hi as f64 - warm as f64) / warm.max(1) as f64 * 100.0
    );
}

fn report(world: &World, heap: &[(usize, usize)], wall: Duration) {
    let status = world.engine.status();
    let urls: Vec<_> = world.relays.keys().cloned().collect();
    let converged = urls.iter().filter(|u| world.converged(u)).count();
    let missing: BTreeSet<EventId> = urls.iter().flat_map(|u| world.missing_from(u)).collect();
    let stored = world.store.len();
    println!();
    println!(
        "convergence: {}/{} targets confirmed, {}/{} relays converged, {} repos tracked",
        status.totals.confirmed,
        status.totals.targets,
        converged,
        urls.len(),
        status.repos
    );
    for url in urls.iter().filter(|u| !world.converged(u)).take(10) {
        if let Some(r) = world.engine.relay_status(url) {
            println!(
                "  not converged: {url}: {}{:?}, {} targets, {} confirmed, {} pending, {} queued, given up {:?}, {} failures, next re-sync {:?}",
                if r.confirmed >= r.targets {
                    "daily re-sync under way, "
                } else {
                    ""
                },
                r.state,
                r.targets,
                r.confirmed,
                r.pending,
                r.queued_batches,
                r.given_up,
                r.failures,
                r.next_resync.map(|t| t.as_secs())
            );
        }
    }
    println!(
        "events: {} stored, {} expected ({} missing)",
        stored,
        stored + missing.len(),
        missing.len()
    );
    let total: Vec<usize> = heap.iter().map(|(t, _)| *t).collect();
    let engine: Vec<usize> = heap.iter().map(|(_, e)| *e).collect();
    print_memory("memory (whole process)", &total);
    print_memory("memory (engine)", &engine);
    println!(
        "peak heap {:.1} MiB; the world's relays and store grow with the live events they take in",
        mib(PEAK.load(Ordering::Relaxed))
    );
    let oracle = world.oracle.as_ref();
    println!(
        "budget: {} REQs checked, peak {} subscriptions on one relay, {} oracle violations, {} simulation violations",
        oracle.map_or(0, |o| o.reqs_checked),
        oracle.map_or(0, |o| o.peak_open),
        oracle.map_or(0, |o| o.violations().len()),
        world.violations.len()
    );
    for v in oracle.into_iter().flat_map(|o| o.violations()).take(10) {
        println!("  oracle: {v}");
    }
    for v in world.violations.iter().take(10) {
        println!("  simulation: {v:?}");
    }
    println!(
        "totals: {} inputs, {} commands ({:.0} per virtual hour), {} restarts, wall {:.1}s",
        world.stats.inputs,
        world.stats.commands,
        world.stats.commands as f64 / heap.len().max(1) as f64,
        world.stats.restarts,
        wall.as_secs_f64()
    );
}
