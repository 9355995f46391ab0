//! File trust checks done before a library is opened.
//!
//! Like NetworkManager before it loads a module, the loader refuses a plugin file (or
//! its directory) that others could have changed: writable by group or others,
//! setuid/setgid, not a regular file, or, when the daemon runs as root, not owned by
//! root. Loading such a file would hand code execution in the daemon to whoever can
//! write it.

use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::LoadError;

/// Who the files must belong to: `Some(uid)` enforces an owner, `None` does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustPolicy {
    /// Required owner of plugin files and directories.
    pub required_owner: Option<u32>,
    /// Refuse group/other-writable and setuid files (off only in the test kit, for
    /// libraries straight out of a build tree).
    pub check_modes: bool,
}

impl TrustPolicy {
    /// The policy for this process: root requires root-owned files; others don't.
    pub fn for_current_process() -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        TrustPolicy {
            required_owner: (euid == 0).then_some(0),
            check_modes: true,
        }
    }
}

fn check_meta(path: &Path, meta: &Metadata, policy: TrustPolicy) -> Result<(), LoadError> {
    let refuse = |reason: String| LoadError::Untrusted {
        path: path.to_owned(),
        reason,
    };
    let mode = meta.permissions().mode();
    if !policy.check_modes {
        return Ok(());
    }
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "mode {:04o} is writable by group or others (fix: chmod go-w)",
            mode & 0o7777
        )));
    }
    if mode & 0o6000 != 0 && meta.is_file() {
        return Err(refuse(format!(
            "mode {:04o} has setuid or setgid set",
            mode & 0o7777
        )));
    }
    if let Some(owner) = policy.required_owner {
        if meta.uid() != owner {
            return Err(refuse(format!(
                "owned by uid {}, must be owned by uid {owner}",
                meta.uid()
            )));
        }
    }
    Ok(())
}

/// Checks a configuration or state file: a regular file not writable by group or
/// others and, when running as root, owned by root. Such a file steers what the daemon
/// loads, so it gets the same scrutiny as a plugin.
pub fn check_private_file(path: &Path, meta: &Metadata, policy: TrustPolicy) -> Result<(), String> {
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    check_meta(path, meta, policy).map_err(|e| match e {
        LoadError::Untrusted { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// Checks the directory that holds the plugins.
pub fn check_dir(dir: &Path, policy: TrustPolicy) -> Result<(), LoadError> {
    let meta = std::fs::metadata(dir).map_err(|e| LoadError::Io {
        path: dir.to_owned(),
        reason: e.to_string(),
    })?;
    if !meta.is_dir() {
        return Err(LoadError::Untrusted {
            path: dir.to_owned(),
            reason: "not a directory".into(),
        });
    }
    check_meta(dir, &meta, policy)
}

/// Checks one plugin file, given the metadata of the opened file (so the file checked
/// is the file loaded, whatever happens to the path meanwhile).
pub fn check_file(path: &Path, meta: &Metadata, policy: TrustPolicy) -> Result<(), LoadError> {
    if !meta.is_file() {
        return Err(LoadError::Untrusted {
            path: path.to_owned(),
            reason: "not a regular file".into(),
        });
    }
    check_meta(path, meta, policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const ANYONE: TrustPolicy = TrustPolicy {
        check_modes: true,
        required_owner: None,
    };

    fn check_path(p: &Path, policy: TrustPolicy) -> Result<(), LoadError> {
        let meta = fs::metadata(p).map_err(|e| LoadError::Io {
            path: p.to_owned(),
            reason: e.to_string(),
        })?;
        check_file(p, &meta, policy)
    }

    fn file_with_mode(dir: &Path, mode: u32) -> std::path::PathBuf {
        let p = dir.join(format!("f{mode:o}.so"));
        fs::write(&p, b"x").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn modes() {
        let d = tempfile::tempdir().unwrap();
        assert!(check_path(&file_with_mode(d.path(), 0o644), ANYONE).is_ok());
        assert!(check_path(&file_with_mode(d.path(), 0o755), ANYONE).is_ok());
        for bad in [0o664, 0o646, 0o4755, 0o2755] {
            let e = check_path(&file_with_mode(d.path(), bad), ANYONE).unwrap_err();
            assert!(matches!(e, LoadError::Untrusted { .. }), "{bad:o}: {e}");
        }
    }

    #[test]
    fn owner_and_kind() {
        let d = tempfile::tempdir().unwrap();
        let p = file_with_mode(d.path(), 0o644);
        let uid = fs::metadata(&p).unwrap().uid();
        let other = TrustPolicy {
            check_modes: true,
            required_owner: Some(uid + 1),
        };
        assert!(matches!(
            check_path(&p, other),
            Err(LoadError::Untrusted { .. })
        ));
        assert!(matches!(
            check_path(d.path(), ANYONE),
            Err(LoadError::Untrusted { .. })
        ));
        assert!(matches!(
            check_path(&d.path().join("nope"), ANYONE),
            Err(LoadError::Io { .. })
        ));
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            check_dir(d.path(), ANYONE),
            Err(LoadError::Untrusted { .. })
        ));
    }
}
