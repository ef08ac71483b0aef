//! Machinery shared by the benches that run a relay and clients in
//! separate processes (`sync`, `negentropy`): the signed data set (10 repo
//! announcements and N kind-1621 issues, cached as JSONL under
//! `target/bench-data`), the LocalRelay child, child-process plumbing and
//! resource figures. Each bench binary includes it with `mod common;` and
//! uses a subset of it.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// First argument of a child process.
pub const CHILD: &str = "__child";
pub const SERVICE: &str = "git.example.com";
pub const ISSUE_KIND: u16 = 1621;
pub const ANNOUNCEMENT_KIND: u16 = 30617;
pub const REPOS: usize = 10;
pub const AUTHORS: usize = 100;
pub const CONTENT_LEN: usize = 200;
/// `created_at` of issue 0; issue i has `T_BASE - i`.
pub const T_BASE: u64 = 1_750_000_000;
pub const REPO_ID: &str = "repo";
/// How often a client checks whether its store is complete.
pub const POLL: Duration = Duration::from_millis(20);

// ----- small helpers --------------------------------------------------------

pub fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

pub fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `target/` of this build: `CARGO_TARGET_DIR`, or three levels above the
/// executable (`target/release/deps/sync-HASH`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

pub fn data_dir() -> PathBuf {
    let dir = target_dir().join("bench-data");
    std::fs::create_dir_all(&dir).expect("create target/bench-data");
    dir
}

/// Where the clients' stores are created: `BENCH_STORE_DIR` (e.g.
/// `/dev/shm`, to take the disk's fsync out of the picture), else
/// `target/bench-data`.
pub fn store_dir() -> PathBuf {
    match std::env::var_os("BENCH_STORE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => data_dir(),
    }
}

/// CPU seconds (user, system) and peak RSS of this process.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub user: f64,
    pub sys: f64,
    pub max_rss_kib: i64,
    /// Current anonymous and file-backed RSS (`/proc/self/status`).
    pub rss_anon_kib: Option<i64>,
    pub rss_file_kib: Option<i64>,
}

impl Usage {
    pub fn now() -> Usage {
        // SAFETY: getrusage only writes the struct it is given, which is a
        // plain C struct for which all-zero bytes are a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid, writable rusage.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        assert_eq!(rc, 0, "getrusage failed");
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Usage {
            user: secs(ru.ru_utime),
            sys: secs(ru.ru_stime),
            max_rss_kib: ru.ru_maxrss,
            rss_anon_kib: self_status_kib("RssAnon"),
            rss_file_kib: self_status_kib("RssFile"),
        }
    }
}

/// A `kB` field of `/proc/self/status` (`RssAnon`, `RssFile`, ...).
pub fn self_status_kib(field: &str) -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The usage figures of an operation, as the child reports them. The
/// anonymous and file-backed RSS at the end of the operation split the peak
/// roughly into heap and mapped store pages (LMDB maps its file).
pub fn usage_json(wall: Duration, before: Usage, after: Usage) -> Value {
    json!({
        "wall": wall.as_secs_f64(),
        "user": after.user - before.user,
        "sys": after.sys - before.sys,
        "max_rss_kib": after.max_rss_kib,
        "rss_anon_kib": after.rss_anon_kib,
        "rss_file_kib": after.rss_file_kib,
    })
}

/// utime + stime of another process, in seconds, from `/proc/PID/stat`.
pub fn proc_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) / ticks)
}

/// Peak RSS of another process in KiB (`VmHWM`).
pub fn proc_hwm_kib(pid: u32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub fn read_lines(path: &Path) -> Vec<String> {
    let file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    BufReader::new(file)
        .lines()
        .map(|l| l.expect("read line"))
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// The ids in a JSONL file, read as plain JSON (no signature check).
pub fn ids_of(path: &Path) -> HashSet<String> {
    read_lines(path)
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("event json");
            v["id"].as_str().expect("event id").to_owned()
        })
        .collect()
}

/// How the ids found compare with the ids expected.
pub fn completeness(expected: &HashSet<String>, found: &HashSet<String>) -> Value {
    json!({
        "expected": expected.len(),
        "found": found.len(),
        "missing": expected.difference(found).count(),
        "extra": found.difference(expected).count(),
    })
}

// ----- data -----------------------------------------------------------------

pub mod data {
    use super::*;
    use nostr::event::{EventBuilder, FinalizeEvent, Kind, Tag};
    use nostr::key::{Keys, SecretKey};
    use nostr::types::Timestamp;

    /// Deterministic key number `n` (0..REPOS are the repo owners).
    pub fn keys(n: usize) -> Keys {
        let mut x = 0x7379_6e63_2d62_656e ^ (n as u64).wrapping_mul(0x1000_0001);
        loop {
            let mut b = [0u8; 32];
            for chunk in b.chunks_mut(8) {
                chunk.copy_from_slice(&splitmix64(&mut x).to_be_bytes());
            }
            if let Ok(sk) = SecretKey::from_slice(&b) {
                return Keys::new(sk);
            }
        }
    }

    fn coordinate(owner: &Keys) -> String {
        format!(
            "{ANNOUNCEMENT_KIND}:{}:{REPO_ID}",
            owner.public_key().to_hex()
        )
    }

    fn content(i: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut x = i as u64 ^ 0x6973_7375_6573_2121;
        let mut s = String::with_capacity(CONTENT_LEN);
        while s.len() < CONTENT_LEN {
            let r = splitmix64(&mut x);
            for k in 0..8 {
                if s.len() == CONTENT_LEN {
                    break;
                }
                let byte = (r >> (k * 8)) as u8;
                s.push(ALPHABET[byte as usize % ALPHABET.len()] as char);
            }
        }
        s
    }

    /// The issues file for `n` events: generated (on every core) and cached
    /// on first use.
    pub fn issues(n: usize) -> PathBuf {
        let path = data_dir().join(format!("sync-issues-{n}.jsonl"));
        if path.exists() && read_lines(&path).len() == n {
            return path;
        }
        eprintln!("generating {n} signed issues into {}", path.display());
        let started = Instant::now();
        let keys: Vec<Keys> = (0..AUTHORS).map(keys).collect();
        let coords: Vec<String> = keys[..REPOS].iter().map(coordinate).collect();
        let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
        let per = n.div_ceil(threads).max(1);
        let chunks: Vec<Vec<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .step_by(per)
                .map(|start| {
                    let (keys, coords) = (&keys, &coords);
                    s.spawn(move || {
                        (start..(start + per).min(n))
                            .map(|i| {
                                let tag =
                                    Tag::parse(["a", coords[i % REPOS].as_str()]).expect("a tag");
                                EventBuilder::new(Kind::from(ISSUE_KIND), content(i))
                                    .tag(tag)
                                    .custom_created_at(Timestamp::from_secs(T_BASE - i as u64))
                                    .finalize(&keys[i % AUTHORS])
                                    .expect("sign")
                                    .as_json()
                            })
                            .collect::<Vec<String>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("generator thread"))
                .collect()
        });
        let tmp = path.with_extension("jsonl.tmp");
        let mut out = BufWriter::new(std::fs::File::create(&tmp).expect("create data file"));
        for line in chunks.iter().flatten() {
            writeln!(out, "{line}").expect("write data");
        }
        out.into_inner()
            .expect("flush data")
            .sync_all()
            .expect("sync data");
        std::fs::rename(&tmp, &path).expect("rename data file");
        eprintln!(
            "generated {n} issues in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        path
    }

    /// The 10 announcements, listing `relay_url` and the service, written
    /// to `path`.
    pub fn announcements(relay_url: &str, path: &Path) {
        let mut out = BufWriter::new(std::fs::File::create(path).expect("create announcements"));
        for k in 0..REPOS {
            let tags = [
                Tag::parse(["d", REPO_ID]).expect("d"),
                Tag::parse(["name", REPO_ID]).expect("name"),
                Tag::parse(["relays", relay_url, &format!("wss://{SERVICE}")]).expect("relays"),
            ];
            let event = EventBuilder::new(Kind::from(ANNOUNCEMENT_KIND), "")
                .tags(tags)
                .custom_created_at(Timestamp::from_secs(T_BASE + 100))
                .finalize(&keys(k))
                .expect("sign");
            writeln!(out, "{}", event.as_json()).expect("write announcement");
        }
        out.flush().expect("flush announcements");
    }
}

pub mod relay {
    use super::*;
    use nostr_relay_builder::prelude::{
        Event, JsonUtil, LocalRelay, MemoryDatabase, MemoryDatabaseOptions, NostrDatabase,
        RateLimit, RelayBuilder,
    };

    /// Loads the events, serves them on 127.0.0.1:`port`, prints `READY url`
    /// and runs until its stdin closes (or it is killed).
    pub fn run(port: u16, issues: &Path, announcements: &Path) {
        runtime().block_on(async move {
            let db = MemoryDatabase::with_opts(MemoryDatabaseOptions {
                events: true,
                max_events: None,
            });
            let mut loaded = 0usize;
            for path in [issues, announcements] {
                for line in read_lines(path) {
                    let event = Event::from_json(&line).expect("relay: event json");
                    db.save_event(&event).await.expect("relay: save");
                    loaded += 1;
                }
            }
            let relay = LocalRelay::new(
                RelayBuilder::default()
                    .addr(std::net::IpAddr::from([127, 0, 0, 1]))
                    .port(port)
                    .database(db)
                    .rate_limit(RateLimit {
                        max_reqs: 10_000,
                        notes_per_minute: 100_000_000,
                    }),
            );
            relay.run().await.expect("relay: run");
            println!("READY {} {loaded}", relay.url().await);
            std::io::stdout().flush().expect("flush");
            // Until the parent closes our stdin.
            tokio::task::spawn_blocking(|| {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            })
            .await
            .expect("stdin watcher");
            relay.shutdown();
        });
    }
}

/// A relay child; killed (by its own pid) and reaped when dropped.
pub struct RelayProc {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub url: String,
}

impl RelayProc {
    pub fn start(port: u16, issues: &Path, anns: &Path) -> RelayProc {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .args([CHILD, "relay", &port.to_string()])
            .arg(issues)
            .arg(anns)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn relay");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("relay stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("READY ") {
                    let _ = tx.send(line);
                    break;
                }
            }
        });
        let mut relay = RelayProc {
            child,
            stdin,
            url: String::new(),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("relay did not become ready");
        relay.url = line.split_whitespace().nth(1).expect("url").to_owned();
        relay
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a client child and parses its `RESULT` line.
pub fn run_child(args: &[String]) -> Value {
    let exe = std::env::current_exe().expect("current exe");
    let output = Command::new(exe)
        .arg(CHILD)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "child {args:?} gave no result (exit {:?}); stdout: {stdout}",
                output.status
            )
        });
    serde_json::from_str(line).expect("child result json")
}

/// A free loopback port (the relays of one bench all use it, one after the
/// other, so the announcements can name it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}
