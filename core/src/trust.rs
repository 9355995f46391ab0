//! File trust checks done before a library is opened.
//!
//! Like NetworkManager before it loads a module, the loader refuses a plugin file (or
//! its directory) that others could have changed: writable by group or others,
//! setuid/setgid, not a regular file (FIFOs, devices, sockets and directories are
//! refused from `stat`, without opening them), or owned by anyone but root and the
//! daemon's own user (root only, when the daemon runs as root). Loading such a file
//! would hand code execution in the daemon to whoever can write it.

use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::LoadError;

/// Who the files must belong to: `Some(uid)` enforces an owner, `None` does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustPolicy {
    /// The user besides root who may own plugin files and directories (root itself
    /// when the daemon runs as root).
    pub required_owner: Option<u32>,
    /// Refuse group/other-writable and setuid files (off only in the test kit, for
    /// libraries straight out of a build tree).
    pub check_modes: bool,
}

impl TrustPolicy {
    /// The policy for this process: files owned by root or by this process's user.
    pub fn for_current_process() -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        TrustPolicy {
            required_owner: Some(euid),
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
        if meta.uid() != owner && meta.uid() != 0 {
            return Err(refuse(format!(
                "owned by uid {}, must be owned by root or uid {owner} (the daemon's user)",
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
            reason: format!("not a regular file but {}", kind_of(meta)),
        });
    }
    check_meta(path, meta, policy)
}

/// Checks the file `path` names (following symlinks) from `stat` alone, without
/// opening it: a FIFO or device is refused before anything could block on it. Returns
/// the metadata it checked.
pub fn check_path(path: &Path, policy: TrustPolicy) -> Result<Metadata, LoadError> {
    let meta = std::fs::metadata(path).map_err(|e| LoadError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    check_file(path, &meta, policy)?;
    Ok(meta)
}

fn kind_of(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    match () {
        _ if t.is_dir() => "a directory",
        _ if t.is_fifo() => "a FIFO",
        _ if t.is_socket() => "a socket",
        _ if t.is_block_device() => "a block device",
        _ if t.is_char_device() => "a character device",
        _ => "something else",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use crate::test_fixtures::ANYONE;

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
    fn fifo_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("x.so");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = check_path(&fifo, ANYONE).unwrap_err().to_string();
        assert!(e.contains("a FIFO"), "{e}");
        let e = check_path(d.path(), ANYONE).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
    }

    #[test]
    fn root_and_own_user_may_own_files() {
        let d = tempfile::tempdir().unwrap();
        let p = file_with_mode(d.path(), 0o644);
        let uid = fs::metadata(&p).unwrap().uid();
        let own = TrustPolicy {
            check_modes: true,
            required_owner: Some(uid),
        };
        assert!(check_path(&p, own).is_ok());
        if uid == 0 {
            // Root's files are trusted by every daemon; a stranger's are not.
            let stranger = TrustPolicy {
                check_modes: true,
                required_owner: Some(4242),
            };
            assert!(check_path(&p, stranger).is_ok());
            std::os::unix::fs::chown(&p, Some(4243), None).unwrap();
            let e = check_path(&p, stranger).unwrap_err().to_string();
            assert!(e.contains("owned by uid 4243"), "{e}");
        }
    }

    #[test]
    fn owner_and_kind() {
        let d = tempfile::tempdir().unwrap();
        let p = file_with_mode(d.path(), 0o644);
        let uid = fs::metadata(&p).unwrap().uid();
        let root_only = TrustPolicy {
            check_modes: true,
            required_owner: Some(0),
        };
        assert_eq!(check_path(&p, root_only).is_ok(), uid == 0);
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
