//! Runtime state that survives restarts: which plugins an operator enabled or disabled
//! at run time. Kept apart from the admin's config file, which is never rewritten.
//!
//! The file is written atomically (temp file in the same directory, fsync, rename,
//! fsync of the directory) with mode 0600, so a crash leaves either the old or the new
//! state, never a torn file.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use dynplug_loader::locks::lock;

/// The largest state file read (a name and a flag per plugin fit many times).
const MAX_STATE_BYTES: u64 = 4 << 20;

/// File name of the state file inside the state directory.
pub const STATE_FILE: &str = "state.yaml";

/// The persisted runtime overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeState {
    /// Plugin name to the enabled flag set at run time.
    #[serde(default)]
    pub enabled: BTreeMap<String, bool>,
    /// Isolated plugins quarantined after crash loops, by name. A record holds only while
    /// the library file is the same one; enabling the plugin lifts it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub quarantined: BTreeMap<String, Quarantine>,
    /// The user id each isolated plugin's workers run as (a root daemon), by name:
    /// assigned once from [`WORKER_UIDS`] and kept, so a plugin keeps its uid across
    /// restarts and no two plugins share one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub worker_uids: BTreeMap<String, u32>,
}

/// The user ids isolated plugins' workers run as, one per plugin: 65,536 ids from
/// 0x70010000 (1879113728), in the range systemd documents as unused by the system,
/// its regular and dynamic users and its containers. Their group is `worker_user`'s.
pub const WORKER_UIDS: std::ops::Range<u32> = 0x7001_0000..0x7002_0000;

impl RuntimeState {
    /// The worker uid of plugin `name`: the one it has, else the lowest free one (None
    /// when every id of the range is taken).
    pub fn worker_uid(&mut self, name: &str) -> Option<u32> {
        if let Some(uid) = self.worker_uids.get(name) {
            return Some(*uid);
        }
        let taken: std::collections::BTreeSet<u32> = self.worker_uids.values().copied().collect();
        let uid = WORKER_UIDS.clone().find(|uid| !taken.contains(uid))?;
        self.worker_uids.insert(name.to_owned(), uid);
        Some(uid)
    }
}

/// A quarantined plugin and the file it was quarantined for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quarantine {
    /// The library file.
    pub path: PathBuf,
    /// Its size then.
    pub size: u64,
    /// Its modification time then, in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Why.
    pub reason: String,
}

/// The runtime state a manager shares between its tasks: changed and read under a lock
/// held for a copy, and written to disk outside it. A write (temp file, fsync, rename)
/// can take milliseconds on a busy disk; nobody reading or changing the state waits for
/// it. Writes happen one at a time, each of the newest state there is; an older state is
/// never written over a newer one.
#[derive(Debug)]
pub struct SharedState {
    /// The state, with a version counted up on every change.
    current: Mutex<(RuntimeState, u64)>,
    /// The version on disk; held while writing.
    written: Mutex<u64>,
    store: StateStore,
}

impl SharedState {
    /// `state`, as read from `store`.
    pub fn new(store: StateStore, state: RuntimeState) -> Self {
        SharedState {
            current: Mutex::new((state, 0)),
            written: Mutex::new(0),
            store,
        }
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&RuntimeState) -> R) -> R {
        f(&lock(&self.current).0)
    }

    /// Changes the state with `f` and, if anything changed, writes it to disk (outside
    /// the state's lock). Returns what `f` returned, and whether the write failed.
    pub fn update<R>(&self, f: impl FnOnce(&mut RuntimeState) -> R) -> (R, Result<(), String>) {
        let (result, snapshot) = {
            let mut current = lock(&self.current);
            let before = current.0.clone();
            let result = f(&mut current.0);
            if current.0 == before {
                return (result, Ok(()));
            }
            current.1 += 1;
            (result, current.clone())
        };
        (result, self.write(snapshot))
    }

    fn write(&self, (state, version): (RuntimeState, u64)) -> Result<(), String> {
        let mut written = lock(&self.written);
        if version <= *written {
            // A newer state is on disk already.
            return Ok(());
        }
        self.store.save(&state)?;
        *written = version;
        Ok(())
    }

    /// The store the state lives in.
    pub fn store(&self) -> &StateStore {
        &self.store
    }
}

/// Reads and writes [`RuntimeState`] in a directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    /// A store for `dir/state.yaml`.
    pub fn new(dir: &Path) -> Self {
        StateStore {
            path: dir.join(STATE_FILE),
        }
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding the state file.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Removes temporary files that an interrupted [`StateStore::save`] (a SIGKILL
    /// between write and rename) left behind.
    pub fn remove_stale_temporaries(&self) {
        let prefix = format!(".{STATE_FILE}.");
        let Ok(entries) = std::fs::read_dir(self.dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Reads the state; a missing file is an empty state.
    pub fn load(&self) -> Result<RuntimeState, String> {
        let policy = dynplug_loader::trust::TrustPolicy::for_current_process();
        match dynplug_loader::trust::read_side_file(&self.path, policy, MAX_STATE_BYTES) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| format!("{}: not UTF-8 text", self.path.display()))?;
                if text.trim().is_empty() {
                    return Ok(RuntimeState::default());
                }
                serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", self.path.display()))
            }
            Err(e) if e.is_missing() => Ok(RuntimeState::default()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Writes the state atomically.
    pub fn save(&self, state: &RuntimeState) -> Result<(), String> {
        let text = serde_yaml::to_string(state).map_err(|e| e.to_string())?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", self.path.display());
        std::fs::create_dir_all(dir).map_err(|e| fail("cannot create directory for", e))?;
        let tmp = dir.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
        // A fresh file of our own: whatever sits at the name (a stale temporary, or a
        // link someone planted to make the daemon write elsewhere) is removed — unlink
        // never follows a link — and the new one created exclusively, not followed.
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| fail("cannot write", e))?;
        let written = file
            .write_all(b"# Runtime state of dynplugd (enable/disable). Managed by the daemon.\n")
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail("cannot write", e));
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| fail("cannot replace", e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail("cannot sync directory of", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_and_mode() {
        let d = tempfile::tempdir().unwrap();
        let store = StateStore::new(&d.path().join("sub"));
        assert_eq!(store.load().unwrap(), RuntimeState::default());
        let mut s = RuntimeState::default();
        s.enabled.insert("echo".into(), false);
        store.save(&s).unwrap();
        assert_eq!(store.load().unwrap(), s);
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(d.path().join("sub")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }

    #[test]
    fn interrupted_saves_leave_nothing_after_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let store = StateStore::new(d.path());
        std::fs::write(d.path().join(".state.yaml.4242.tmp"), "half").unwrap();
        std::fs::write(d.path().join("unrelated.tmp"), "keep").unwrap();
        store.remove_stale_temporaries();
        let left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec!["unrelated.tmp".to_owned()]);
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let store = StateStore::new(d.path());
        std::fs::write(store.path(), "enabled: [").unwrap();
        assert!(store.load().is_err());
    }

    #[test]
    fn each_plugin_gets_a_worker_uid_of_its_own_and_keeps_it() {
        let mut state = RuntimeState::default();
        let a = state.worker_uid("a").unwrap();
        let b = state.worker_uid("b").unwrap();
        assert_ne!(a, b);
        assert!(WORKER_UIDS.contains(&a) && WORKER_UIDS.contains(&b));
        assert_eq!(state.worker_uid("a"), Some(a));
        // Kept across a restart (the state file).
        let text = serde_yaml::to_string(&state).unwrap();
        let mut again: RuntimeState = serde_yaml::from_str(&text).unwrap();
        assert_eq!(
            (again.worker_uid("a"), again.worker_uid("b")),
            (Some(a), Some(b))
        );
        // A freed id is handed out again only when no other is free below it.
        again.worker_uids.remove("a");
        assert_eq!(again.worker_uid("c"), Some(a));
    }

    #[test]
    fn the_state_is_read_and_changed_while_a_write_is_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let shared = std::sync::Arc::new(SharedState::new(
            StateStore::new(dir.path()),
            RuntimeState::default(),
        ));
        // A write in progress: its lock held by another thread (as during an fsync).
        let writing = lock(&shared.written);
        let (tx, rx) = std::sync::mpsc::channel();
        let other = std::sync::Arc::clone(&shared);
        let reader = std::thread::spawn(move || {
            tx.send(other.read(|s| s.enabled.len())).unwrap();
            // A change waits only for its own write, behind the one under way.
            other
                .update(|s| s.enabled.insert("b".into(), false))
                .1
                .unwrap();
        });
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(10)),
            Ok(0),
            "a reader waited for a write"
        );
        drop(writing);
        reader.join().unwrap();
        assert_eq!(
            StateStore::new(dir.path()).load().unwrap().enabled.get("b"),
            Some(&false)
        );
        // Unchanged: nothing written, no error.
        assert!(shared.update(|_| ()).1.is_ok());
    }
}
