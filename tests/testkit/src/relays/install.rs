//! Finding or installing the relays that run as child processes (the PyPI
//! `nostr-relay`, nostr-rs-relay): an executable named by an environment
//! variable, else one under `<workspace>/target/test-relays/`, installed
//! there on first use under a cross-process lock with an `.installed`
//! marker written only after the install succeeded.
//!
//! An installation that fails panics with the reason and how to install by
//! hand: the tests are never skipped silently. `.ci/run` installs into the
//! same places with the same markers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// File written into an install directory once its install succeeded.
pub const INSTALLED_MARKER: &str = ".installed";

/// The workspace root (this crate lives in `<workspace>/tests/testkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the testkit crate lives inside the workspace")
        .to_path_buf()
}

/// Where the relays are installed when their environment variable is not
/// set: `<workspace>/target/test-relays`.
pub fn test_relays_dir() -> PathBuf {
    workspace_root().join("target/test-relays")
}

/// How to find, and if need be install, one relay executable.
pub(crate) struct InstallSpec {
    /// What the panics call it ("the PyPI nostr-relay 1.14").
    pub what: &'static str,
    /// Environment variable naming an existing executable.
    pub env_var: &'static str,
    /// The install directory (removed and recreated by a fresh install).
    pub dir: PathBuf,
    /// The executable, relative to `dir`.
    pub binary: &'static str,
    /// Written into the marker file.
    pub version: &'static str,
    /// A lock older than this is taken as abandoned (the install crashed):
    /// longer than the slowest install, so a running one is never broken.
    pub lock_stale_after: Duration,
    /// Installs into `dir` (which does not exist yet; its parent does).
    pub install: fn(&Path) -> Result<(), String>,
    /// How to install by hand, for the panic message.
    pub by_hand: String,
}

/// The executable of `spec`: from its environment variable (it must name
/// an existing file), else its install directory, installing it there
/// first when the executable or the marker is missing. Blocking; panics
/// with the reason when it cannot be found or installed.
pub(crate) fn find_or_install(spec: &InstallSpec) -> PathBuf {
    let InstallSpec {
        what,
        env_var,
        ref dir,
        ..
    } = *spec;
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{env_var}={} does not name an existing file (unset it to install {what} under \
             {})",
            p.display(),
            dir.display()
        );
        return p;
    }
    let bin = dir.join(spec.binary);
    let installed = || dir.join(INSTALLED_MARKER).is_file() && bin.is_file();
    if installed() {
        return bin;
    }
    let lock_name = format!(
        "{}.lock",
        dir.file_name()
            .expect("an install directory has a name")
            .to_string_lossy()
    );
    let _lock = DirLock::acquire(&dir.with_file_name(lock_name), spec.lock_stale_after);
    if installed() {
        return bin;
    }
    tracing::warn!("installing {what} into {} (once)", dir.display());
    let result = fresh_dir(dir)
        .and_then(|()| (spec.install)(dir))
        .and_then(|()| {
            if bin.is_file() {
                fs::write(dir.join(INSTALLED_MARKER), spec.version).map_err(|e| e.to_string())
            } else {
                Err(format!(
                    "the install succeeded but {} is missing",
                    bin.display()
                ))
            }
        });
    if let Err(e) = result {
        panic!(
            "{what} is needed by these tests and could not be installed into {}: {e}\n{}",
            dir.display(),
            spec.by_hand
        );
    }
    bin
}

/// Removes what a failed install left and creates the parent directory.
fn fresh_dir(dir: &Path) -> Result<(), String> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("cannot remove a partial install: {e}"))?;
    }
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("cannot create {parent:?}: {e}"))?;
    }
    Ok(())
}

/// Runs `cmd` to completion with its output captured; an error carries the
/// command, its exit status and its output.
pub(crate) fn run(cmd: &mut Command) -> Result<(), String> {
    let what = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A cross-process lock: a directory that exists while held.
struct DirLock(PathBuf);

impl DirLock {
    /// Waits for the lock; one older than `stale_after` is removed. Gives up
    /// (panics) after waiting `stale_after` plus five minutes.
    fn acquire(path: &Path, stale_after: Duration) -> DirLock {
        if let Some(parent) = path.parent() {
            let _ = fs::create_dir_all(parent);
        }
        let give_up = stale_after + Duration::from_secs(5 * 60);
        let start = std::time::Instant::now();
        loop {
            match fs::create_dir(path) {
                Ok(()) => return DirLock(path.to_path_buf()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_some_and(|age| age > stale_after);
                    if stale {
                        let _ = fs::remove_dir(path);
                        continue;
                    }
                    assert!(
                        start.elapsed() < give_up,
                        "waited {give_up:?} for the install lock {}",
                        path.display()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("cannot create the install lock {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}
