//! File trust checks done before a library is opened.
//!
//! Like NetworkManager before it loads a module, the loader refuses a plugin file (or
//! its directory) that others could have changed: writable by group or others,
//! setuid/setgid, not a regular file (FIFOs, devices, sockets and directories are
//! refused from `stat`, without opening them), or owned by anyone but root and the
//! daemon's own user (root only, when the daemon runs as root). Loading such a file
//! would hand code execution in the daemon to whoever can write it.

use std::fs::Metadata;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

/// Why a file beside a plugin, or of the daemon's own (signature, key, cache, state,
/// configuration, token, credential), could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SideFileError {
    /// It does not exist.
    #[error("{path} does not exist")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// It is not a regular file, is too large, or fails the trust rules.
    #[error("refusing {path}: {reason}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Reading it failed.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
}

impl SideFileError {
    /// Whether the file is simply absent.
    pub fn is_missing(&self) -> bool {
        matches!(self, SideFileError::Missing { .. })
    }
}

/// Reads a small file the daemon trusts for what it says (a signature, a key, its cache,
/// state, configuration, a token): at most `max_bytes`, from one descriptor opened
/// without blocking, checked to be a regular file with a trusted owner and mode
/// (`policy`). A symbolic link is followed only into directories the trust rules allow:
/// each directory above the file it reaches is owned by root or the daemon's user and
/// not writable by group or others (unless sticky, as /tmp). A FIFO, device, directory
/// or larger file is an error naming the file, never a hang or an unbounded read.
pub fn read_side_file(
    path: &Path,
    policy: TrustPolicy,
    max_bytes: u64,
) -> Result<Vec<u8>, SideFileError> {
    read_side_file_with_meta(path, policy, max_bytes).map(|(bytes, _)| bytes)
}

/// [`read_side_file`], with the metadata of the descriptor it read.
pub fn read_side_file_with_meta(
    path: &Path,
    policy: TrustPolicy,
    max_bytes: u64,
) -> Result<(Vec<u8>, Metadata), SideFileError> {
    let refuse = |reason: String| SideFileError::Refused {
        path: path.to_owned(),
        reason,
    };
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => SideFileError::Missing {
            path: path.to_owned(),
        },
        _ => SideFileError::Io {
            path: path.to_owned(),
            reason: e.to_string(),
        },
    };
    let lexical = std::path::absolute(path).map_err(io)?;
    let real = std::fs::canonicalize(path).map_err(io)?;
    if real != lexical && policy.check_modes {
        check_ancestors(&real, policy).map_err(|reason| {
            refuse(format!(
                "it leads to {} through a symbolic link, and {reason}",
                real.display()
            ))
        })?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&real)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(refuse(format!("not a regular file but {}", kind_of(&meta))));
    }
    check_meta(path, &meta, policy).map_err(|e| match e {
        LoadError::Untrusted { reason, .. } => refuse(reason),
        other => refuse(other.to_string()),
    })?;
    if meta.len() > max_bytes {
        return Err(refuse(format!(
            "{} bytes, more than the {max_bytes} allowed",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    std::io::Read::read_to_end(&mut std::io::Read::take(&file, max_bytes + 1), &mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(refuse(format!("more than the {max_bytes} bytes allowed")));
    }
    Ok((bytes, meta))
}

/// Checks every directory above `real` (a path without links): owned by root or the
/// daemon's user, and not writable by group or others unless sticky.
fn check_ancestors(real: &Path, policy: TrustPolicy) -> Result<(), String> {
    for dir in real.ancestors().skip(1) {
        let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mode = meta.permissions().mode();
        let owner_ok = meta.uid() == 0 || policy.required_owner.is_none_or(|o| o == meta.uid());
        if !owner_ok {
            return Err(format!("{} is owned by uid {}", dir.display(), meta.uid()));
        }
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(format!(
                "{} is writable by group or others (mode {:04o})",
                dir.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
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

    #[test]
    fn side_files_are_bounded_typed_and_reached_only_through_trusted_links() {
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let p = file_with_mode(d.path(), 0o644);
        assert_eq!(read_side_file(&p, ANYONE, 16).unwrap(), b"x");
        let e = read_side_file(&d.path().join("absent"), ANYONE, 16).unwrap_err();
        assert!(e.is_missing(), "{e}");
        // A FIFO is refused without blocking; a directory and a device too.
        let fifo = d.path().join("x.sig");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = read_side_file(&fifo, ANYONE, 16).unwrap_err().to_string();
        assert!(e.contains("a FIFO"), "{e}");
        let e = read_side_file(d.path(), ANYONE, 16)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a directory"), "{e}");
        // A link to /dev/zero: refused as a device, not read.
        let zero = d.path().join("zero.sig");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read_side_file(&zero, ANYONE, 16).unwrap_err().to_string();
        assert!(e.contains("character device"), "{e}");
        // Larger than allowed.
        fs::write(&p, vec![b'a'; 100]).unwrap();
        let e = read_side_file(&p, ANYONE, 16).unwrap_err().to_string();
        assert!(e.contains("100 bytes"), "{e}");
        // A link into a directory anyone can write: refused.
        let open_dir = d.path().join("open");
        fs::create_dir(&open_dir).unwrap();
        fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).unwrap();
        let target = file_with_mode(&open_dir, 0o644);
        let link = d.path().join("ext.pub");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = read_side_file(&link, ANYONE, 16).unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
        // The same link into a trusted directory is followed.
        fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(read_side_file(&link, ANYONE, 16).unwrap(), b"x");
    }
}
