//! What the daemon installed from registries: `installed.json` in the state directory,
//! read with the side-file rules (a regular file with a trusted owner and mode, bounded)
//! and written atomically (a temporary file, synced, renamed, the directory synced).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use dynplug_core::trust::{read_side_file, SideFileError, TrustPolicy};
use serde::{Deserialize, Serialize};

/// The file's name in the state directory.
pub const FILE_NAME: &str = "installed.json";

/// The largest record file read.
const MAX_BYTES: u64 = 1024 * 1024;

/// Why the records could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file exists but is refused (owner, mode, size, not a regular file).
    #[error("{0}")]
    Refused(SideFileError),
    /// The file is not the JSON it should be.
    #[error("{path}: {why}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// It cannot be written.
    #[error("cannot write {path}: {why}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        why: std::io::Error,
    },
}

/// One installed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The reference it was installed from, as given.
    pub reference: String,
    /// The digest the reference resolved to (pin this).
    pub digest: String,
    /// The plugin file's digest.
    pub file_digest: String,
    /// The plugin's version.
    pub version: String,
    /// When it was installed, microseconds since the Unix epoch.
    pub installed_usec: u64,
}

/// One plugin installed from a registry: the version in place and the one before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The version in plugins_dir.
    pub current: Version,
    /// The version before it, kept for rollback (its file is in the state directory).
    pub previous: Option<Version>,
}

/// Every plugin installed from a registry, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    /// By plugin name.
    pub plugins: BTreeMap<String, Entry>,
}

impl Records {
    /// Reads `dir/installed.json`; a missing file is no records.
    pub fn load(dir: &Path) -> Result<Records, RecordError> {
        let path = dir.join(FILE_NAME);
        match read_side_file(&path, TrustPolicy::for_current_process(), MAX_BYTES) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RecordError::Malformed {
                path,
                why: e.to_string(),
            }),
            Err(SideFileError::Missing { .. }) => Ok(Records::default()),
            Err(e) => Err(RecordError::Refused(e)),
        }
    }

    /// Writes `dir/installed.json` atomically (mode 0644).
    pub fn save(&self, dir: &Path) -> Result<(), RecordError> {
        let path = dir.join(FILE_NAME);
        let tmp = dir.join(format!(".{FILE_NAME}.{}", std::process::id()));
        let write = |why| RecordError::Write {
            path: path.clone(),
            why,
        };
        let text = serde_json::to_vec_pretty(self).map_err(|e| write(e.into()))?;
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(write)?;
        f.write_all(&text)
            .and_then(|()| f.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| std::fs::File::open(dir)?.sync_all())
            .map_err(write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Records::load(dir.path()).unwrap(), Records::default());
        let v = Version {
            reference: "127.0.0.1:5000/echo:1".into(),
            digest: "sha256:aa".into(),
            file_digest: "sha256:bb".into(),
            version: "1.0.0".into(),
            installed_usec: 7,
        };
        let mut r = Records::default();
        r.plugins.insert(
            "echo".into(),
            Entry {
                current: v.clone(),
                previous: Some(v),
            },
        );
        r.save(dir.path()).unwrap();
        assert_eq!(Records::load(dir.path()).unwrap(), r);
    }

    #[test]
    fn malformed_records_are_an_error_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        assert!(matches!(
            Records::load(dir.path()),
            Err(RecordError::Malformed { .. })
        ));
    }
}
