//! Shared memory for large payloads between the daemon and a worker.
//!
//! A payload above [`THRESHOLD`] would cross the socketpair in buffer-sized pieces, each
//! a pair of process wake-ups. Instead each worker gets one memfd, created, sized and
//! **sealed** by the daemon (no grow, no shrink, no more seals) and mapped by both
//! sides; a request or result then carries only its length. The seals matter: a
//! hostile worker that could shrink the file would make the daemon fault (SIGBUS) on
//! its next read. The region is used by one call at a time (a worker serves one call);
//! the daemon copies a result out once and never interprets the bytes in place, so a
//! worker scribbling on the region can only spoil its own answer.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

/// Payloads up to this size travel in the frame itself.
pub const THRESHOLD: usize = 64 * 1024;
pub use super::fds::SHARED_FD;

/// The length a shared request or result carries after its head (`u64 LE`).
pub(crate) fn shared_len_checked(rest: &[u8]) -> Option<usize> {
    let (len, tail) = rest.split_first_chunk::<8>()?;
    if !tail.is_empty() {
        return None;
    }
    usize::try_from(u64::from_le_bytes(*len)).ok()
}

/// One mapping of a payload region.
#[derive(Debug)]
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain memory owned by this value; it is used by one call at a
// time (the pool hands a worker to one caller), so moving it between threads is sound.
// It is not `Sync`: writing ([`Region::put`]) takes `&mut self`, and shared references
// are not handed between threads, so no two threads touch the mapping at once.
unsafe impl Send for Region {}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

impl Region {
    /// Creates a sealed region of `len` bytes (the daemon side).
    pub(crate) fn create(len: usize) -> std::io::Result<Region> {
        // SAFETY: memfd_create with a NUL-terminated name and flags.
        let raw = unsafe {
            libc::memfd_create(
                c"dynplug-payload".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if raw < 0 {
            return Err(last_error());
        }
        // SAFETY: `raw` is a descriptor we just created and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size =
            libc::off_t::try_from(len).map_err(|_| std::io::Error::other("region too large"))?;
        // SAFETY: ftruncate and fcntl on our own descriptor with integer arguments.
        unsafe {
            if libc::ftruncate(fd.as_raw_fd(), size) < 0 {
                return Err(last_error());
            }
            let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
            if libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) < 0 {
                return Err(last_error());
            }
        }
        Region::map(fd, len)
    }

    /// Maps the region inherited as [`SHARED_FD`] (the worker side), if there is one.
    pub(crate) fn inherited() -> Option<Region> {
        // SAFETY: an all-zero stat is a valid out-parameter; fstat on a descriptor.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat with a valid out-pointer.
        if unsafe { libc::fstat(SHARED_FD, &mut st) } < 0 {
            return None;
        }
        let len = usize::try_from(st.st_size).ok().filter(|l| *l > 0)?;
        // Only a sealed memfd is mapped: whatever else might sit on this descriptor
        // (F_GET_SEALS fails on ordinary files) is left alone.
        let wanted = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
        // SAFETY: fcntl query on a descriptor.
        let seals = unsafe { libc::fcntl(SHARED_FD, libc::F_GET_SEALS) };
        if seals < 0 || seals & wanted != wanted {
            return None;
        }
        // SAFETY: the daemon starts workers with the region on SHARED_FD and nothing
        // else in this process owns that descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(SHARED_FD) };
        Region::map(fd, len).ok()
    }

    fn map(fd: OwnedFd, len: usize) -> std::io::Result<Region> {
        // SAFETY: a fresh shared mapping of a file of at least `len` bytes whose size is
        // sealed (or, in a worker, was sealed by the daemon), so every page stays valid.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(last_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| std::io::Error::other("null map"))?;
        Ok(Region { ptr, len, fd })
    }

    /// The region's size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The region's descriptor (to hand to a worker).
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Copies `data` to the start of the region; false if it does not fit.
    pub(crate) fn put(&mut self, data: &[u8]) -> bool {
        if data.len() > self.len {
            return false;
        }
        // SAFETY: `data.len()` bytes fit in the mapping; the source is a separate
        // allocation, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr(), data.len()) };
        true
    }

    /// The first `len` bytes, borrowed in place (the worker side, for its input: the
    /// daemon writes the region only between calls, so it does not change while the
    /// worker reads it). `None` if `len` exceeds the region.
    pub(crate) fn borrow(&self, len: usize) -> Option<&[u8]> {
        if len > self.len {
            return None;
        }
        // SAFETY: `len` bytes of the mapping are readable for as long as `self` lives;
        // the only other writer, the daemon, does not write during a call.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), len) })
    }

    /// Copies the first `len` bytes out; `None` if `len` exceeds the region.
    pub(crate) fn take(&self, len: usize) -> Option<Vec<u8>> {
        if len > self.len {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        // SAFETY: `len` bytes of the mapping are readable; `out` is a separate buffer
        // with room for them, all initialised by the copy before `set_len`. The other
        // process may write meanwhile: the bytes are only copied, never interpreted in
        // place.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), out.as_mut_ptr(), len);
            out.set_len(len);
        }
        Some(out)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping this value created, once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_round_trip() {
        let mut r = Region::create(1 << 20).unwrap();
        assert!(r.put(b"hello"));
        assert_eq!(r.take(5).unwrap(), b"hello");
        assert!(!r.put(&vec![0u8; (1 << 20) + 1]));
        assert!(r.take((1 << 20) + 1).is_none());
        // Sealed: neither side can resize it.
        // SAFETY: ftruncate on our own descriptor.
        assert!(unsafe { libc::ftruncate(r.fd(), 10) } < 0);
    }
}
