//! Where a worker or probe process finds what the daemon hands it: the descriptor
//! numbers both sides agree on (a leaf: nothing here depends on the rest).

use std::os::fd::RawFd;

/// The channel to the daemon.
pub const WORKER_FD: RawFd = 3;

/// The shared payload region (a sealed memfd), when there is one.
pub const SHARED_FD: RawFd = 4;

/// The (first) sealed plugin image; a probe of several files finds the next ones on the
/// descriptors after it.
pub const LIBRARY_FD: RawFd = 5;

/// The most files one probe process is handed at once.
pub const MAX_PROBE_BATCH: usize = 64;
