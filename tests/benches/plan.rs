//! Planning benchmark for the sync engine (not a test: it prints figures and
//! asserts nothing about timing).
//!
//! For N = 1,000, 10,000 and 100,000 tracked announcements, each listing 3
//! relays drawn (seeded splitmix64) from a pool of 1,000 relay URLs, it
//! measures on one thread:
//!
//! - ingest: feeding all N announcements while no relay has answered yet;
//! - full plan: ingest plus telling every relay `Connected`, with every
//!   command drained (the first wave of live and historic REQs);
//! - EOSE drain: answering EOSE to every historic REQ (empty relays) until no
//!   historic work is pending;
//! - incremental: 1,000 more announcements, one at a time, on connected
//!   relays whose history is done. The engine holds new work for its batch
//!   delay, so each announcement is fed at its own time and the tick that
//!   sends its work is timed with it (the input alone is reported too); the
//!   EOSEs of its REQs are answered outside the timed section;
//! - REQs and filters per relay, from the commands of plan and drain;
//! - heap bytes per repo, from a counting global allocator: live heap bytes
//!   after the full plan (and after the drain) minus those before the engine
//!   was created, divided by N. Events are built before the first reading and
//!   kept until after the last, so they cancel out. Bytes are the sizes asked
//!   of the allocator, without malloc's own per-block overhead.
//!
//! Run with `cargo bench -p grasp-sync-tests --bench plan`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use grasp_sync_core::{Command, Engine, Input, RelayUrl, SubscriptionMode, Time};
use grasp_sync_sim::fixtures::{announcement, config, T0};
use nostr::event::Event;
use nostr::message::SubscriptionId;

// ----- counting allocator ----------------------------------------------------

/// Live heap bytes (requested sizes).
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

/// Counting is switched on only for the memory pass, so that the timing pass
/// pays for no atomic operation per allocation.
static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE_BYTES.fetch_add(delta, Ordering::Relaxed);
    }
}

struct Counting;

// SAFETY: every call is forwarded unchanged to `System`; the wrapper only
// keeps a counter of the bytes currently allocated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live_bytes() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

// ----- inputs ----------------------------------------------------------------

const POOL: usize = 1000;
const RELAYS_PER_ANNOUNCEMENT: usize = 3;
const INCREMENTAL: usize = 1000;
const SEED: u64 = 0x6772_6173_702d_3032;

/// splitmix64: small, seeded, repeatable.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn pool_url(i: usize) -> String {
    format!("wss://relay-{i:04}.example.net")
}

/// The pool index of a relay URL of the pool.
fn pool_index(relay: &RelayUrl) -> usize {
    let s = relay.as_str();
    s.get(12..16)
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("not a pool relay: {s}"))
}

/// The number in a subscription id such as `hist-12`.
fn sub_number(sub: &SubscriptionId) -> u32 {
    let s = sub.as_str();
    s.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected subscription id {s}"))
}

/// `count` announcements by authors `first..`, each listing 3 distinct relays
/// drawn from `choices` (pool indices).
fn announcements(
    rng: &mut SplitMix,
    first: u32,
    count: usize,
    choices: &[usize],
    used: &mut BTreeSet<usize>,
) -> Vec<Event> {
    let urls: Vec<String> = (0..POOL).map(pool_url).collect();
    (0..count)
        .map(|i| {
            let mut picked: Vec<usize> = Vec::with_capacity(RELAYS_PER_ANNOUNCEMENT);
            while picked.len() < RELAYS_PER_ANNOUNCEMENT {
                let r = choices[rng.below(choices.len())];
                if !picked.contains(&r) {
                    picked.push(r);
                }
            }
            used.extend(&picked);
            let relays: Vec<&str> = picked.iter().map(|r| urls[*r].as_str()).collect();
            let author = first + i as u32;
            announcement(
                author,
                &format!("repo-{author}"),
                T0 - 86_400,
                &relays,
                true,
            )
        })
        .collect()
}

// ----- command sink ----------------------------------------------------------

/// Per-relay counts of what the engine sent.
#[derive(Clone, Copy, Default)]
struct PerRelay {
    historic_reqs: u32,
    historic_filters: u32,
    historic_filters_max: u32,
    live_reqs: u32,
    live_filters_max: u32,
    /// Distinct live subscription numbers seen (up to 32).
    live_ids: [u32; 32],
    live_id_count: usize,
    live_id_overflow: bool,
}

/// Consumes commands without allocating (all storage is reserved up front,
/// before the first heap reading).
struct Sink {
    per_relay: Vec<PerRelay>,
    /// Relays told to connect.
    connects: Vec<u16>,
    /// Historic REQs waiting for their EOSE: (relay, subscription number).
    historic: Vec<(u16, u32)>,
    /// Commands seen.
    commands: u64,
}

impl Sink {
    fn new(historic_capacity: usize) -> Self {
        Sink {
            per_relay: vec![PerRelay::default(); POOL],
            connects: Vec::with_capacity(POOL),
            historic: Vec::with_capacity(historic_capacity),
            commands: 0,
        }
    }

    fn reserved_bytes(&self) -> usize {
        self.per_relay.capacity() * std::mem::size_of::<PerRelay>()
            + self.connects.capacity() * 2
            + self.historic.capacity() * std::mem::size_of::<(u16, u32)>()
    }

    /// Zeroes the counters (the live ids seen are kept).
    fn reset_stats(&mut self) {
        for p in &mut self.per_relay {
            *p = PerRelay {
                live_ids: p.live_ids,
                live_id_count: p.live_id_count,
                live_id_overflow: p.live_id_overflow,
                ..PerRelay::default()
            };
        }
    }

    /// Drains the engine; returns the number of commands.
    fn drain(&mut self, engine: &mut Engine) -> usize {
        let mut n = 0;
        while let Some(c) = engine.poll_command() {
            n += 1;
            self.take(&c);
        }
        self.commands += n as u64;
        n
    }

    fn take(&mut self, c: &Command) {
        match c {
            Command::Connect { relay } => self.connects.push(pool_index(relay) as u16),
            Command::Subscribe {
                relay,
                subscription,
                filters,
                mode,
            } => {
                let r = pool_index(relay);
                let p = &mut self.per_relay[r];
                let nf = filters.len() as u32;
                match mode {
                    SubscriptionMode::Historic => {
                        p.historic_reqs += 1;
                        p.historic_filters += nf;
                        p.historic_filters_max = p.historic_filters_max.max(nf);
                        self.historic.push((r as u16, sub_number(subscription)));
                    }
                    SubscriptionMode::Live => {
                        p.live_reqs += 1;
                        p.live_filters_max = p.live_filters_max.max(nf);
                        let id = sub_number(subscription);
                        if !p.live_ids[..p.live_id_count].contains(&id) {
                            if p.live_id_count < p.live_ids.len() {
                                p.live_ids[p.live_id_count] = id;
                                p.live_id_count += 1;
                            } else {
                                p.live_id_overflow = true;
                            }
                        }
                    }
                }
            }
            Command::FetchRelayInfo { .. }
            | Command::Disconnect { .. }
            | Command::Unsubscribe { .. }
            | Command::Authenticate { .. }
            | Command::QueryLocalItems { .. }
            | Command::NegOpen { .. }
            | Command::NegMsg { .. }
            | Command::NegClose { .. } => {}
        }
    }
}

// ----- one run ---------------------------------------------------------------

/// Heap bytes of the filters of every open subscription, as the commands
/// carried them (the engine keeps no copy: it rebuilds them from its targets
/// on request): live ones by the ids the sink saw, historic ones still
/// waiting for EOSE. A yardstick for the state figures, not part of them.
fn open_filter_bytes(engine: &Engine, sink: &Sink, pool: &[RelayUrl]) -> isize {
    let mut ids: Vec<(usize, String)> = Vec::new();
    for (r, p) in sink.per_relay.iter().enumerate() {
        for id in &p.live_ids[..p.live_id_count] {
            ids.push((r, format!("live-{id}")));
        }
    }
    for (r, s) in &sink.historic {
        ids.push((*r as usize, format!("hist-{s}")));
    }
    let mut total = 0;
    for (r, id) in ids {
        let sub = SubscriptionId::new(id);
        if let Some(filters) = engine.subscription_filters(&pool[r], &sub) {
            let before = live_bytes();
            let copy = filters.to_vec();
            total += live_bytes() - before;
            drop(copy);
        }
    }
    total
}

struct Figures {
    n: usize,
    relays: usize,
    ingest: Duration,
    connect: Duration,
    plan: Duration,
    drain: Duration,
    eose_inputs: usize,
    incr_mean_us: f64,
    incr_input_mean_us: f64,
    incr_p99_us: f64,
    incr_max_us: f64,
    incr_cmds_mean: f64,
    incr_cmds_max: usize,
    incr_historic_max: usize,
    incr_live_max: usize,
    bytes_plan: isize,
    bytes_live: isize,
    filter_bytes_plan: isize,
    filter_bytes_live: isize,
    filter_bytes_incr: isize,
    bytes_incr: isize,
    hist_reqs: (f64, u32),
    filters_per_hist_req: (f64, u32),
    live_subs: (f64, usize),
    live_filters_max: u32,
    commands_plan: u64,
    commands_drain: u64,
    pending_after_drain: usize,
}

fn mean_max<T: Copy + Into<f64> + Ord + Default>(xs: impl Iterator<Item = T>) -> (f64, T) {
    let mut n = 0usize;
    let mut sum = 0.0;
    let mut max = T::default();
    for x in xs {
        n += 1;
        sum += x.into();
        max = max.max(x);
    }
    (if n == 0 { 0.0 } else { sum / n as f64 }, max)
}

fn run(n: usize) -> Figures {
    // Inputs first: they are not part of any timing or heap reading.
    let mut rng = SplitMix(SEED ^ n as u64);
    let all: Vec<usize> = (0..POOL).collect();
    let mut used = BTreeSet::new();
    let anns = announcements(&mut rng, 1, n, &all, &mut used);
    let used: Vec<usize> = used.into_iter().collect();
    let mut unused = BTreeSet::new();
    let extra = announcements(&mut rng, 1 + n as u32, INCREMENTAL, &used, &mut unused);
    let pool: Vec<RelayUrl> = (0..POOL)
        .map(|i| RelayUrl::parse(&pool_url(i)).expect("pool URL"))
        .collect();
    let subs: Vec<SubscriptionId> = (0..10_000u32)
        .map(|i| SubscriptionId::new(format!("hist-{i}")))
        .collect();
    let mut incr_times: Vec<Duration> = Vec::with_capacity(INCREMENTAL);
    let mut incr_cmds: Vec<usize> = Vec::with_capacity(INCREMENTAL);
    let mut incr_input_times: Vec<Duration> = Vec::with_capacity(INCREMENTAL);
    let mut sink = Sink::new(64 * POOL + n);
    let reserved = sink.reserved_bytes();
    let now = Time::from_secs(T0);

    let heap0 = live_bytes();

    // --- full plan: ingest, then every relay connects.
    let start = Instant::now();
    // The planner's paged REQs are what this bench measures (NIP-77 would
    // replace the first wave with one probe per relay).
    let mut plan_config = config();
    plan_config.nip77 = false;
    let mut engine = Engine::new(plan_config);
    for a in &anns {
        engine.handle_input(now, Input::CatalogEvent(a));
        sink.drain(&mut engine);
    }
    let ingest = start.elapsed();
    let t_connect = Instant::now();
    for i in 0..sink.connects.len() {
        let relay = &pool[sink.connects[i] as usize];
        engine.handle_input(now, Input::Connected { relay });
        sink.drain(&mut engine);
    }
    let connect = t_connect.elapsed();
    let plan = start.elapsed();
    let commands_plan = sink.commands;
    assert_eq!(
        sink.reserved_bytes(),
        reserved,
        "the sink grew during the plan"
    );
    let heap_plan = live_bytes();
    let filters_plan = open_filter_bytes(&engine, &sink, &pool);

    // --- EOSE drain: empty relays, until nothing historic is pending.
    let t_drain = Instant::now();
    let mut eose_inputs = 0;
    let mut next = 0;
    while next < sink.historic.len() {
        let (r, s) = sink.historic[next];
        next += 1;
        eose_inputs += 1;
        engine.handle_input(
            now,
            Input::Eose {
                relay: &pool[r as usize],
                subscription: &subs[s as usize],
            },
        );
        sink.drain(&mut engine);
    }
    let drain = t_drain.elapsed();
    let commands_drain = sink.commands - commands_plan;
    sink.historic.clear();
    assert_eq!(
        sink.reserved_bytes(),
        reserved,
        "the sink grew during the drain"
    );
    let heap_live = live_bytes();
    let filters_live = open_filter_bytes(&engine, &sink, &pool);

    let stats: Vec<PerRelay> = used.iter().map(|r| sink.per_relay[*r]).collect();
    let status = engine.status();
    let pending_after_drain = status.totals.pending;
    let relays = status.totals.relays;
    drop(status);
    sink.reset_stats();

    // --- incremental announcements on live relays. The engine holds new work
    // for `batch_delay` so that work found together shares one REQ: each
    // announcement is fed at its own time, and the tick at the end of the
    // delay (which sends its work) is timed with it.
    let batch_delay = engine.config().timing.batch_delay;
    let mut incr_historic_max = 0;
    let mut incr_live_max = 0;
    let mut clock = now.plus(Duration::from_secs(10));
    for a in &extra {
        let before = sink.historic.len();
        let live_before: u32 = sink.per_relay.iter().map(|p| p.live_reqs).sum();
        let t = Instant::now();
        engine.handle_input(clock, Input::CatalogEvent(a));
        let mut cmds = sink.drain(&mut engine);
        let input_only = t.elapsed();
        let due = clock.plus(batch_delay);
        while let Some(w) = engine.next_wakeup().filter(|w| *w <= due) {
            clock = w.max(clock);
            engine.handle_input(clock, Input::Tick);
            cmds += sink.drain(&mut engine);
        }
        incr_times.push(t.elapsed());
        incr_input_times.push(input_only);
        incr_cmds.push(cmds);
        let live_after: u32 = sink.per_relay.iter().map(|p| p.live_reqs).sum();
        incr_live_max = incr_live_max.max((live_after - live_before) as usize);
        incr_historic_max = incr_historic_max.max(sink.historic.len() - before);
        // Answer the new historic REQs outside the timed section.
        clock = due;
        while before < sink.historic.len() {
            let (r, s) = sink.historic.remove(before);
            engine.handle_input(
                clock,
                Input::Eose {
                    relay: &pool[r as usize],
                    subscription: &subs[s as usize],
                },
            );
            sink.drain(&mut engine);
        }
        clock = clock.plus(Duration::from_secs(1));
    }
    let heap_incr = live_bytes();
    assert!(
        sink.per_relay.iter().all(|p| !p.live_id_overflow),
        "over 32 live subscription ids on a relay"
    );
    let filters_incr = open_filter_bytes(&engine, &sink, &pool);
    let incr_pending = engine.status().totals.pending;
    assert_eq!(incr_pending, 0, "incremental work left pending");
    let repos_total = (n + INCREMENTAL) as isize;

    let mut sorted = incr_times.clone();
    sorted.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p99 = sorted[(sorted.len() * 99).div_ceil(100) - 1];
    let incr_mean_us = sorted.iter().map(|d| us(*d)).sum::<f64>() / sorted.len() as f64;
    let incr_input_mean_us =
        incr_input_times.iter().map(|d| us(*d)).sum::<f64>() / incr_input_times.len() as f64;
    let (incr_cmds_mean, incr_cmds_max) = mean_max(incr_cmds.iter().map(|c| *c as u32));

    let fig = Figures {
        n,
        relays,
        ingest,
        connect,
        plan,
        drain,
        eose_inputs,
        incr_mean_us,
        incr_input_mean_us,
        incr_p99_us: us(p99),
        incr_max_us: us(*sorted.last().expect("samples")),
        incr_cmds_mean,
        incr_cmds_max: incr_cmds_max as usize,
        incr_historic_max,
        incr_live_max,
        bytes_plan: (heap_plan - heap0) / n as isize,
        bytes_live: (heap_live - heap0) / n as isize,
        filter_bytes_plan: filters_plan / n as isize,
        filter_bytes_live: filters_live / n as isize,
        filter_bytes_incr: filters_incr / repos_total,
        bytes_incr: (heap_incr - heap0) / repos_total,
        hist_reqs: mean_max(stats.iter().map(|p| p.historic_reqs)),
        filters_per_hist_req: {
            let reqs: u32 = stats.iter().map(|p| p.historic_reqs).sum();
            let filters: u32 = stats.iter().map(|p| p.historic_filters).sum();
            let max = stats
                .iter()
                .map(|p| p.historic_filters_max)
                .max()
                .unwrap_or(0);
            (f64::from(filters) / f64::from(reqs.max(1)), max)
        },
        live_subs: {
            assert!(
                stats.iter().all(|p| !p.live_id_overflow),
                "over 32 live subscription ids on a relay"
            );
            let (mean, max) = mean_max(stats.iter().map(|p| p.live_id_count as u32));
            (mean, max as usize)
        },
        live_filters_max: stats.iter().map(|p| p.live_filters_max).max().unwrap_or(0),
        commands_plan,
        commands_drain,
        pending_after_drain,
    };
    drop(engine);
    drop((anns, extra, pool, subs, sink));
    fig
}

// ----- report ----------------------------------------------------------------

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    // `cargo bench` passes `--bench`; a test run (`cargo test --benches`)
    // does not, and then a small size is enough to check the bench works.
    // `PLAN_BENCH_SIZES=100000` (comma-separated) picks sizes, for profiling.
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = match std::env::var("PLAN_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("PLAN_BENCH_SIZES: comma-separated numbers")
            })
            .collect(),
        Err(_) if bench => vec![1_000, 10_000, 100_000],
        Err(_) => vec![1_000],
    };
    println!("grasp-sync planning benchmark: {POOL} relays in the pool, {RELAYS_PER_ANNOUNCEMENT} relays per announcement, seed {SEED:#x}");
    println!("(single thread; each size runs twice: timings from a pass without allocation counting, heap figures from a counted pass; default budget: 10 subs, 10 filters/REQ, 100 values/filter)");
    let mut all = Vec::new();
    for &n in &sizes {
        // Counting is on for the whole memory pass (a count started midway
        // would see frees of memory it never saw allocated).
        COUNTING.store(true, Ordering::Relaxed);
        let counted = run(n);
        COUNTING.store(false, Ordering::Relaxed);
        LIVE_BYTES.store(0, Ordering::Relaxed);
        let mut f = run(n);
        f.bytes_plan = counted.bytes_plan;
        f.bytes_live = counted.bytes_live;
        f.bytes_incr = counted.bytes_incr;
        f.filter_bytes_plan = counted.filter_bytes_plan;
        f.filter_bytes_live = counted.filter_bytes_live;
        f.filter_bytes_incr = counted.filter_bytes_incr;
        println!(
            "  N = {n:>7} done: full plan {}, EOSE drain {}",
            ms(f.plan),
            ms(f.drain)
        );
        all.push(f);
    }

    println!();
    println!("Time                       goal          {}", header(&all));
    row("ingest (relays silent)", "", &all, |f| ms(f.ingest));
    row("connect all + first wave", "", &all, |f| ms(f.connect));
    row("full plan (sum)", "<1 s @100k", &all, |f| ms(f.plan));
    row("EOSE drain to idle", "", &all, |f| ms(f.drain));
    row("  EOSE inputs", "", &all, |f| f.eose_inputs.to_string());
    row("incremental: input only", "", &all, |f| {
        format!("{:.1} µs", f.incr_input_mean_us)
    });
    row("incremental ann. mean", "<50 µs", &all, |f| {
        format!("{:.1} µs", f.incr_mean_us)
    });
    row("incremental ann. p99", "<50 µs", &all, |f| {
        format!("{:.1} µs", f.incr_p99_us)
    });
    row("incremental ann. max", "", &all, |f| {
        format!("{:.1} µs", f.incr_max_us)
    });

    println!();
    println!("Commands                   expected      {}", header(&all));
    row("relays known", "", &all, |f| f.relays.to_string());
    row("commands: full plan", "", &all, |f| {
        f.commands_plan.to_string()
    });
    row("commands: EOSE drain", "", &all, |f| {
        f.commands_drain.to_string()
    });
    row("pending after drain", "0", &all, |f| {
        f.pending_after_drain.to_string()
    });
    row("historic REQs/relay mean", "", &all, |f| {
        format!("{:.2}", f.hist_reqs.0)
    });
    row("historic REQs/relay max", "", &all, |f| {
        f.hist_reqs.1.to_string()
    });
    row("filters/historic REQ mean", "<=10", &all, |f| {
        format!("{:.2}", f.filters_per_hist_req.0)
    });
    row("filters/historic REQ max", "<=10", &all, |f| {
        f.filters_per_hist_req.1.to_string()
    });
    row("live subs/relay mean", "", &all, |f| {
        format!("{:.2}", f.live_subs.0)
    });
    row("live subs/relay max", "<=9", &all, |f| {
        f.live_subs.1.to_string()
    });
    row("filters/live REQ max", "<=10", &all, |f| {
        f.live_filters_max.to_string()
    });
    row("cmds/incr. ann. mean", "~9 (3 relays)", &all, |f| {
        format!("{:.2}", f.incr_cmds_mean)
    });
    row("cmds/incr. ann. max", "", &all, |f| {
        f.incr_cmds_max.to_string()
    });
    row("historic REQs/incr. max", "<=3", &all, |f| {
        f.incr_historic_max.to_string()
    });
    row("live REQs/incr. max", "<=3", &all, |f| {
        f.incr_live_max.to_string()
    });

    println!();
    println!("Heap per repo              goal          {}", header(&all));
    row("after full plan", "<2 KB", &all, |f| {
        format!("{} B", f.bytes_plan)
    });
    row("  open REQs' filters (not held)", "", &all, |f| {
        format!("{} B", f.filter_bytes_plan)
    });
    row("after EOSE drain (idle)", "<2 KB", &all, |f| {
        format!("{} B", f.bytes_live)
    });
    row("  open REQs' filters (not held)", "", &all, |f| {
        format!("{} B", f.filter_bytes_live)
    });
    row("after +1000 incremental", "<2 KB", &all, |f| {
        format!("{} B", f.bytes_incr)
    });
    row("  open REQs' filters (not held)", "", &all, |f| {
        format!("{} B", f.filter_bytes_incr)
    });
}

fn header(all: &[Figures]) -> String {
    all.iter()
        .map(|f| format!("{:>14}", format!("N={}", f.n)))
        .collect::<Vec<_>>()
        .join("")
}

fn row(name: &str, goal: &str, all: &[Figures], cell: impl Fn(&Figures) -> String) {
    let cells: String = all.iter().map(|f| format!("{:>14}", cell(f))).collect();
    println!("{name:<26} {goal:<13} {cells}");
}
