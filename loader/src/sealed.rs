//! A plugin file's bytes, judged once and loaded exactly as judged.
//!
//! [`SealedImage::open`] opens the file once (`O_NOFOLLOW`, no blocking on a FIFO),
//! checks that descriptor (a regular file, trusted owner and mode, at most
//! `max_plugin_bytes`), and copies its bytes into a sealed `memfd`: no write, no
//! shrinking, no growing, no further seals. Whatever happens to the path afterwards —
//! a `rename()` over it, an in-place write with the mtime restored — the image does not
//! change. The signature is checked over the image's bytes ([`SealedImage::bytes`]), the
//! metadata section read from them, and the library `dlopen`ed from the image's
//! descriptor (`/proc/self/fd/N`); workers and probes inherit the descriptor instead of
//! a path.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use std::os::unix::fs::MetadataExt;

use crate::error::LoadError;
use crate::trust::{self, TrustPolicy};

/// What identifies one version of a file on disk: replaced files get a new identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
}

impl FileIdentity {
    /// The identity of the file `meta` describes.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// The seals an image carries: its contents can never change again.
const SEALS: libc::c_int =
    libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// The default bound on a plugin file (`trust.max_plugin_bytes`).
pub const DEFAULT_MAX_PLUGIN_BYTES: u64 = 256 << 20;

/// An immutable copy of a plugin file in memory, with the identity the file had when it
/// was copied.
#[derive(Debug)]
pub struct SealedImage {
    fd: OwnedFd,
    len: u64,
    identity: FileIdentity,
}

impl SealedImage {
    /// Opens `path` once, checks the descriptor against `policy` and `max_bytes`, and
    /// copies it into a sealed image.
    pub fn open(path: &Path, policy: TrustPolicy, max_bytes: u64) -> Result<Self, LoadError> {
        let io = |e: std::io::Error| LoadError::Io {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        // O_NOFOLLOW: a symlink swapped in for the file is refused (ELOOP), never
        // followed; O_NONBLOCK: a FIFO swapped in after a stat cannot block the open.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => LoadError::Untrusted {
                    path: path.to_owned(),
                    reason: "a symbolic link (plugin files are opened without following links)"
                        .into(),
                },
                _ => io(e),
            })?;
        let meta = file.metadata().map_err(io)?;
        trust::check_file(path, &meta, policy)?;
        if meta.len() > max_bytes {
            return Err(LoadError::TooLarge {
                path: path.to_owned(),
                size: meta.len(),
                limit: max_bytes,
            });
        }
        let image = Self::copy_of(path, file, meta.len())?;
        Ok(SealedImage {
            identity: FileIdentity::of(&meta),
            ..image
        })
    }

    /// Copies `len` bytes of `file` into a new sealed memfd.
    fn copy_of(path: &Path, file: File, len: u64) -> Result<Self, LoadError> {
        let io = |what: &str, e: std::io::Error| LoadError::Io {
            path: path.to_owned(),
            reason: format!("{what}: {e}"),
        };
        let fd = memfd(path).map_err(|e| io("cannot create a sealed copy", e))?;
        let mut copy = File::from(fd);
        // Reads through the descriptor just checked; the kernel copies (copy_file_range)
        // where it can. One byte past the size tells a file that grew meanwhile.
        let copied = std::io::copy(&mut file.take(len + 1), &mut copy)
            .map_err(|e| io("cannot copy the file", e))?;
        if copied != len {
            return Err(LoadError::Io {
                path: path.to_owned(),
                reason: format!("it changed while it was read ({len} bytes, then {copied})"),
            });
        }
        let fd = OwnedFd::from(copy);
        // SAFETY: fcntl on a descriptor we own, with plain integer arguments.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
            return Err(io("cannot seal the copy", std::io::Error::last_os_error()));
        }
        Ok(SealedImage {
            fd,
            len,
            identity: FileIdentity {
                dev: 0,
                ino: 0,
                size: len,
                mtime_ns: 0,
            },
        })
    }

    /// Takes the image a worker or probe inherited on descriptor `fd`, refusing one that
    /// is not sealed against change.
    ///
    /// # Safety
    ///
    /// `fd` must be an open descriptor that nothing else in this process owns.
    pub unsafe fn inherited(fd: RawFd, path: &Path) -> Result<Self, LoadError> {
        // SAFETY: fcntl on a plain integer: an error if nothing is open there.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(LoadError::Io {
                path: path.to_owned(),
                reason: format!("no sealed plugin image was handed over on descriptor {fd}"),
            });
        }
        // SAFETY: the caller hands over sole ownership of `fd`, which is open.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let bad = |reason: String| LoadError::Io {
            path: path.to_owned(),
            reason,
        };
        // SAFETY: fcntl on a descriptor we own, with plain integer arguments.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & SEALS != SEALS {
            return Err(bad(format!(
                "descriptor {} is not a sealed plugin image",
                fd.as_raw_fd()
            )));
        }
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
        Ok(SealedImage {
            len: meta.len(),
            identity: FileIdentity::of(&meta),
            fd: OwnedFd::from(file),
        })
    }

    /// The identity the source file had when it was copied.
    pub fn identity(&self) -> FileIdentity {
        self.identity
    }

    /// The image's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the image is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The image's descriptor (to hand to a worker).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A file reading the image from its start (a new open file description, so
    /// readers do not share an offset).
    pub fn reader(&self) -> std::io::Result<File> {
        File::open(self.proc_path())
    }

    /// The image's bytes, mapped read-only.
    pub fn bytes(&self) -> std::io::Result<Bytes> {
        if self.len == 0 {
            return Ok(Bytes(None));
        }
        let file = File::from(self.fd.try_clone()?);
        // SAFETY: the memfd is sealed against writing, shrinking and growing (checked
        // when it was made or inherited), so the mapping's contents never change and
        // never lose their backing while it lives.
        unsafe { memmap2::Mmap::map(&file) }.map(|m| Bytes(Some(m)))
    }

    /// A path that opens the image.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// Two images are the same image when they are one open file: each live image holds its
/// own descriptor.
impl PartialEq for SealedImage {
    fn eq(&self, other: &Self) -> bool {
        self.fd.as_raw_fd() == other.fd.as_raw_fd()
    }
}

impl Eq for SealedImage {}

/// An image's bytes, mapped read-only.
#[derive(Debug)]
pub struct Bytes(Option<memmap2::Mmap>);

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

/// A new memfd that may be sealed and mapped executable.
fn memfd(path: &Path) -> std::io::Result<OwnedFd> {
    let label = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = std::ffi::CString::new(format!("dynplug:{label}").replace('\0', "?"))
        .unwrap_or_else(|_| c"dynplug".to_owned());
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC says so explicitly where `vm.memfd_noexec` would otherwise forbid it;
    // kernels before 6.3 do not know the flag (EINVAL) and allow it anyway.
    for flags in [base | libc::MFD_EXEC, base] {
        // SAFETY: memfd_create with a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: memfd_create returned a new descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::EINVAL))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::ANYONE;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }

    #[test]
    fn the_image_keeps_the_bytes_it_was_made_from() {
        let d = tempfile::tempdir().unwrap();
        let p = file(d.path(), "a.so", b"first bytes");
        let image = SealedImage::open(&p, ANYONE, 1 << 20).unwrap();
        // Overwritten in place, then replaced by rename: the image does not change.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all(b"other")
            .unwrap();
        let q = file(d.path(), "b.so", b"renamed over");
        std::fs::rename(&q, &p).unwrap();
        assert_eq!(&*image.bytes().unwrap(), b"first bytes");
        let mut text = String::new();
        image.reader().unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "first bytes");
        // Nobody can write to it, even through a fresh open of its descriptor.
        assert!(std::fs::OpenOptions::new()
            .write(true)
            .open(image.proc_path())
            .and_then(|mut f| f.write_all(b"x"))
            .is_err());
    }

    #[test]
    fn links_fifos_and_large_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = file(d.path(), "a.so", b"0123456789");
        let link = d.path().join("link.so");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let e = SealedImage::open(&link, ANYONE, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = SealedImage::open(&p, ANYONE, 4).unwrap_err();
        assert!(
            matches!(
                e,
                LoadError::TooLarge {
                    size: 10,
                    limit: 4,
                    ..
                }
            ),
            "{e}"
        );
        let fifo = d.path().join("fifo.so");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = SealedImage::open(&fifo, ANYONE, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
    }

    #[test]
    fn an_unsealed_descriptor_is_not_an_image() {
        let d = tempfile::tempdir().unwrap();
        let p = file(d.path(), "a.so", b"bytes");
        let fd = File::open(&p).unwrap();
        let raw = OwnedFd::from(fd);
        // SAFETY: the descriptor is handed over and not used again here.
        let e = unsafe { SealedImage::inherited(std::os::fd::IntoRawFd::into_raw_fd(raw), &p) }
            .unwrap_err();
        assert!(e.to_string().contains("not a sealed"), "{e}");
        let image = SealedImage::open(&p, ANYONE, 1 << 20).unwrap();
        let dup = image.fd().try_clone_to_owned().unwrap();
        // SAFETY: as above.
        let again = unsafe { SealedImage::inherited(std::os::fd::IntoRawFd::into_raw_fd(dup), &p) }
            .unwrap();
        assert_eq!(&*again.bytes().unwrap(), b"bytes");
    }
}
