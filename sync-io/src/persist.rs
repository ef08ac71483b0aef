//! Atomic snapshot files for the engine state (spec section 8).
//!
//! The runner saves [`Snapshot`]s periodically and at shutdown with
//! [`save_snapshot`] (or [`save_atomic`] for raw bytes): the bytes go to a
//! temporary file in the same directory, which is fsynced and renamed over
//! the target, and then the directory itself is fsynced. A crash at any
//! point leaves either the old file or the new one, never a torn mix.
//!
//! At start-up, [`load_snapshot`] reads it back: a missing file is
//! `Ok(None)` (first start); a file that cannot be used is a typed error
//! naming the file. When [`PersistError::is_corrupt`] says the contents are
//! bad (not UTF-8, not a snapshot, another format version), the runner calls
//! [`quarantine`] to move the file aside, logs the new name and starts
//! fresh; other errors (permissions, I/O) are left for the operator.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use grasp_sync_core::snapshot::SNAPSHOT_VERSION;
use grasp_sync_core::{Snapshot, SnapshotError};

/// Why a snapshot file could not be written, read or moved aside. Every
/// variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`"write"`, `"rename"`, …).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("{} is not a snapshot (not UTF-8 text): {source}", path.display())]
    NotText {
        /// The snapshot file.
        path: PathBuf,
        /// Where decoding failed.
        #[source]
        source: std::str::Utf8Error,
    },
    /// The file is not a snapshot this build can read (bad JSON, missing
    /// fields, or another format version).
    #[error("{} is not a usable snapshot: {source}", path.display())]
    Corrupt {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: SnapshotError,
    },
}

impl PersistError {
    /// Whether the file's contents are unusable (as opposed to the file
    /// system failing): such a file should be [`quarantine`]d and the
    /// engine started fresh.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            PersistError::NotText { .. } | PersistError::Corrupt { .. }
        )
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            PersistError::Io { path, .. }
            | PersistError::NotText { path, .. }
            | PersistError::Corrupt { path, .. } => path,
        }
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PersistError + 'a {
    move |source| PersistError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The directory `path` lives in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a rename or creation in `dir` durable. A no-op where directories
/// cannot be opened for syncing (Windows).
fn sync_dir(dir: &Path) -> Result<(), PersistError> {
    #[cfg(unix)]
    {
        let d = File::open(dir).map_err(io_err("open directory", dir))?;
        d.sync_all().map_err(io_err("fsync directory", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `contents` to `path` atomically: a temporary file in the same
/// directory (`.<name>.tmp-<pid>-<n>`) is written and fsynced, renamed over
/// `path`, and the directory is fsynced. On failure the temporary file is
/// removed and `path` keeps its old contents.
pub fn save_atomic(path: &Path, contents: &[u8]) -> Result<(), PersistError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = parent_dir(path);
    let name = path.file_name().ok_or_else(|| PersistError::Io {
        action: "write",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
    })?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        file.write_all(contents).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(io_err("rename temporary file over", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

/// Saves `snapshot` as JSON to `path` with [`save_atomic`].
pub fn save_snapshot(path: &Path, snapshot: &Snapshot) -> Result<(), PersistError> {
    save_atomic(path, snapshot.to_json().as_bytes())
}

/// Reads the snapshot at `path`. A missing file is `Ok(None)`; a file that
/// cannot be read is [`PersistError::Io`]; a file whose contents are not a
/// snapshot of [`SNAPSHOT_VERSION`] is [`PersistError::NotText`] or
/// [`PersistError::Corrupt`] (see [`PersistError::is_corrupt`]).
pub fn load_snapshot(path: &Path) -> Result<Option<Snapshot>, PersistError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let text = std::str::from_utf8(&bytes).map_err(|source| PersistError::NotText {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |source| PersistError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    let snapshot = Snapshot::from_json(text).map_err(corrupt)?;
    if snapshot.version != SNAPSHOT_VERSION {
        return Err(corrupt(SnapshotError::Version {
            found: snapshot.version,
            expected: SNAPSHOT_VERSION,
        }));
    }
    Ok(Some(snapshot))
}

/// Moves an unusable snapshot aside to `<name>.corrupt-<unix secs>` in the
/// same directory (with `-<n>` appended if that name is taken) and returns
/// the new path, so the runner can log it and start fresh.
pub fn quarantine(path: &Path) -> Result<PathBuf, PersistError> {
    let dir = parent_dir(path);
    let name = path.file_name().ok_or_else(|| PersistError::Io {
        action: "quarantine",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
    })?;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut base = name.to_os_string();
    base.push(format!(".corrupt-{secs}"));
    let mut target = dir.join(&base);
    let mut n = 1u32;
    while fs::symlink_metadata(&target).is_ok() {
        let mut alt = base.clone();
        alt.push(format!("-{n}"));
        target = dir.join(alt);
        n += 1;
    }
    fs::rename(path, &target).map_err(io_err("quarantine", path))?;
    sync_dir(dir)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use grasp_sync_core::{Config, Engine, Input, RelayUrl, ServiceId, Time};

    fn sample_snapshot() -> Snapshot {
        let mut config = Config::new(ServiceId::parse("git.example.com").unwrap());
        config
            .bootstrap
            .push(RelayUrl::parse("wss://relay.example.org").unwrap());
        let mut engine = Engine::new(config);
        engine.handle_input(Time::from_secs(1_700_000_000), Input::Tick);
        while engine.poll_command().is_some() {}
        engine.snapshot()
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let snap = sample_snapshot();
        assert!(!snap.relays.is_empty());
        save_snapshot(&path, &snap).unwrap();
        assert_eq!(load_snapshot(&path).unwrap(), Some(snap.clone()));
        // Overwriting keeps one file and no temporary files.
        save_snapshot(&path, &snap).unwrap();
        assert_eq!(dir_names(dir.path()), vec!["state.json".to_string()]);
        assert_eq!(load_snapshot(&path).unwrap(), Some(snap));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        save_atomic(&path, b"one").unwrap();
        save_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(dir_names(dir.path()), vec!["s.json".to_string()]);
    }

    #[test]
    fn failed_write_leaves_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails.
        let path = dir.path().join("blocked");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"x").unwrap();
        let err = save_atomic(&path, b"data").unwrap_err();
        assert!(matches!(err, PersistError::Io { .. }), "{err}");
        assert_eq!(err.path(), path.as_path());
        assert_eq!(dir_names(dir.path()), vec!["blocked".to_string()]);
    }

    #[test]
    fn missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            load_snapshot(&dir.path().join("absent.json")).unwrap(),
            None
        );
    }

    #[test]
    fn corrupt_file_is_typed_and_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, b"{\"version\": 1, \"saved_at\"").unwrap();
        let err = load_snapshot(&path).unwrap_err();
        assert!(err.is_corrupt());
        assert!(matches!(err, PersistError::Corrupt { .. }));
        assert!(err.to_string().contains("state.json"), "{err}");

        let moved = quarantine(&path).unwrap();
        assert!(!path.exists());
        assert!(moved.exists());
        let name = moved.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("state.json.corrupt-"), "{name}");
        assert_eq!(moved.parent(), path.parent());
        // Starting fresh: no snapshot any more.
        assert_eq!(load_snapshot(&path).unwrap(), None);

        // A second corrupt file in the same second gets a distinct name.
        fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        let err = load_snapshot(&path).unwrap_err();
        assert!(matches!(err, PersistError::NotText { .. }), "{err}");
        let moved2 = quarantine(&path).unwrap();
        assert_ne!(moved, moved2);
        assert!(moved.exists() && moved2.exists());
    }

    #[test]
    fn other_version_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut snap = sample_snapshot();
        snap.version = SNAPSHOT_VERSION + 1;
        save_snapshot(&path, &snap).unwrap();
        let err = load_snapshot(&path).unwrap_err();
        assert!(err.is_corrupt());
        assert!(matches!(
            err,
            PersistError::Corrupt {
                source: SnapshotError::Version { .. },
                ..
            }
        ));
    }

    #[test]
    fn unreadable_is_io_not_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        // Reading a directory fails with an I/O error, not NotFound.
        let err = load_snapshot(dir.path()).unwrap_err();
        assert!(!err.is_corrupt());
        assert!(matches!(err, PersistError::Io { .. }), "{err}");
    }
}
