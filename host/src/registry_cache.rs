//! The registry cache: what probing each plugin file found, keyed by the file's
//! identity (device, inode, size, modification time), kept in the state directory as
//! `registry.cache` so that a start probes only new or changed files, as GStreamer's
//! registry does. A file whose identity changed is probed again; so is every file when
//! the cache is missing, unreadable, corrupt, of another format, or not owned by the
//! daemon's user and private to it: the cache is never trusted blindly and never fatal.
//! Only the probe's own outcome is kept (what the plugin declared, or why its probe
//! refused or crashed); trust and signature checks run at every scan.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use dynplug_isolation::protocol::Hello;
use dynplug_loader::library::FileIdentity;

/// The cache file's name in the state directory.
pub const FILE_NAME: &str = "registry.cache";

/// The format this host writes and reads.
const FORMAT: &str = "dynplug-registry-1";

/// The largest cache file read (about 1 KiB per plugin).
const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// What the probe of one file found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    /// A plugin, as it declared itself.
    Plugin {
        /// Its name.
        name: String,
        /// Its version.
        version: String,
        /// Its description.
        description: String,
        /// Its ABI version.
        abi_version: u32,
        /// Whether it runs a service.
        service: bool,
    },
    /// Refused by the probe, or crashed it: the reason.
    Refused {
        /// What the probe said.
        reason: String,
    },
}

impl Outcome {
    /// The outcome of a successful probe.
    pub fn of(hello: &Hello) -> Outcome {
        Outcome::Plugin {
            name: hello.name.clone(),
            version: hello.version.clone(),
            description: hello.description.clone(),
            abi_version: hello.abi_version,
            service: hello.service,
        }
    }

    /// What the probe would have answered, for a plugin.
    pub fn hello(&self) -> Option<Hello> {
        match self {
            Outcome::Plugin {
                name,
                version,
                description,
                abi_version,
                service,
            } => Some(Hello {
                name: name.clone(),
                version: version.clone(),
                description: description.clone(),
                abi_version: *abi_version,
                service: *service,
                sandbox: None,
                shared: false,
            }),
            Outcome::Refused { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    path: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    #[serde(flatten)]
    outcome: Outcome,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    format: String,
    entries: Vec<Entry>,
}

/// The cache in memory.
#[derive(Debug, Default)]
pub struct RegistryCache {
    file: Option<PathBuf>,
    entries: BTreeMap<PathBuf, (FileIdentity, Outcome)>,
    dirty: bool,
}

impl RegistryCache {
    /// Reads the cache of `state_dir`; empty (and to be rebuilt) when absent or not
    /// usable, with the reason logged.
    pub fn load(state_dir: &Path) -> RegistryCache {
        let file = state_dir.join(FILE_NAME);
        let entries = match read(&file) {
            Ok(entries) => entries,
            Err(Some(why)) => {
                tracing::warn!(path = %file.display(), reason = %why, "ignoring the registry cache; every plugin file is probed again");
                BTreeMap::new()
            }
            Err(None) => BTreeMap::new(),
        };
        RegistryCache {
            file: Some(file),
            entries,
            dirty: false,
        }
    }

    /// What probing `path` found when it had `identity`, if that is known.
    pub fn lookup(&self, path: &Path, identity: FileIdentity) -> Option<&Outcome> {
        self.entries
            .get(path)
            .filter(|(id, _)| *id == identity)
            .map(|(_, outcome)| outcome)
    }

    /// Remembers what probing `path` with `identity` found.
    pub fn record(&mut self, path: &Path, identity: FileIdentity, outcome: Outcome) {
        let entry = (identity, outcome);
        if self.entries.get(path) != Some(&entry) {
            self.entries.insert(path.to_owned(), entry);
            self.dirty = true;
        }
    }

    /// Forgets every file not in `present`.
    pub fn retain(&mut self, present: &std::collections::BTreeSet<PathBuf>) {
        let before = self.entries.len();
        self.entries.retain(|path, _| present.contains(path));
        self.dirty |= self.entries.len() != before;
    }

    /// Number of files known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no file is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the cache if it changed: a private temporary file, fsync, rename.
    pub fn save(&mut self) -> std::io::Result<()> {
        let Some(file) = self.file.clone().filter(|_| self.dirty) else {
            return Ok(());
        };
        let cache = CacheFile {
            format: FORMAT.into(),
            entries: self
                .entries
                .iter()
                .map(|(path, (id, outcome))| Entry {
                    path: path.clone(),
                    dev: id.dev,
                    ino: id.ino,
                    size: id.size,
                    mtime_ns: id.mtime_ns,
                    outcome: outcome.clone(),
                })
                .collect(),
        };
        let text = serde_json::to_vec(&cache).map_err(std::io::Error::other)?;
        // The state directory is made on first need (private), as systemd's
        // StateDirectory= would have made it: a fresh `--state-dir` is no error.
        if let Some(dir) = file.parent().filter(|d| !d.exists()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let tmp = file.with_extension("cache.tmp");
        let _ = std::fs::remove_file(&tmp);
        {
            use std::io::Write;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            out.write_all(&text)?;
            out.sync_all()?;
        }
        std::fs::rename(&tmp, &file)?;
        self.dirty = false;
        Ok(())
    }
}

/// The entries of `file`; `Err(None)` when there is no file, `Err(Some(why))` when it
/// cannot be used.
fn read(file: &Path) -> Result<BTreeMap<PathBuf, (FileIdentity, Outcome)>, Option<String>> {
    let policy = dynplug_loader::trust::TrustPolicy::for_current_process();
    let (bytes, meta) =
        match dynplug_loader::trust::read_side_file_with_meta(file, policy, MAX_BYTES) {
            Ok(read) => read,
            Err(e) if e.is_missing() => return Err(None),
            Err(e) => return Err(Some(e.to_string())),
        };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid || meta.mode() & 0o077 != 0 {
        return Err(Some(format!(
            "owned by uid {} with mode {:o}; it must be the daemon's own and private",
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    let cache: CacheFile =
        serde_json::from_slice(&bytes).map_err(|e| Some(format!("corrupt: {e}")))?;
    if cache.format != FORMAT {
        return Err(Some(format!(
            "format `{}`, this host reads `{FORMAT}`",
            cache.format
        )));
    }
    Ok(cache
        .entries
        .into_iter()
        .map(|e| {
            let id = FileIdentity {
                dev: e.dev,
                ino: e.ino,
                size: e.size,
                mtime_ns: e.mtime_ns,
            };
            (e.path, (id, e.outcome))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> FileIdentity {
        FileIdentity {
            dev: 1,
            ino: n,
            size: 10,
            mtime_ns: 5,
        }
    }

    fn plugin(name: &str) -> Outcome {
        Outcome::Plugin {
            name: name.into(),
            version: "1".into(),
            description: String::new(),
            abi_version: 2,
            service: false,
        }
    }

    #[test]
    fn outcomes_survive_a_round_trip_and_only_for_the_same_identity() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = RegistryCache::load(dir.path());
        assert!(cache.is_empty());
        cache.record(Path::new("/p/a.so"), id(1), plugin("a"));
        cache.record(
            Path::new("/p/b.so"),
            id(2),
            Outcome::Refused {
                reason: "crashed".into(),
            },
        );
        cache.save().unwrap();
        let again = RegistryCache::load(dir.path());
        assert_eq!(again.len(), 2);
        assert_eq!(
            again.lookup(Path::new("/p/a.so"), id(1)),
            Some(&plugin("a"))
        );
        assert_eq!(
            again.lookup(Path::new("/p/a.so"), id(3)),
            None,
            "changed file"
        );
        assert!(matches!(
            again.lookup(Path::new("/p/b.so"), id(2)),
            Some(Outcome::Refused { .. })
        ));
        let mut again = again;
        again.retain(&[PathBuf::from("/p/a.so")].into());
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn a_corrupt_foreign_or_shared_cache_is_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE_NAME);
        for (text, mode) in [
            ("{not json", 0o600),
            (r#"{"format": "other-9", "entries": []}"#, 0o600),
            (r#"{"format": "dynplug-registry-1", "entries": []}"#, 0o644),
        ] {
            std::fs::write(&file, text).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(matches!(read(&file), Err(Some(_))), "{text} {mode:o}");
            assert!(RegistryCache::load(dir.path()).is_empty());
        }
        // And it is rebuilt over the bad one.
        let mut cache = RegistryCache::load(dir.path());
        cache.record(Path::new("/p/a.so"), id(1), plugin("a"));
        cache.save().unwrap();
        assert_eq!(RegistryCache::load(dir.path()).len(), 1);
    }
}
