//! Starting a worker or probe process: the channel on fd 3, its own process group,
//! death with the daemon, no new privileges, resource limits, no core dumps, a clean
//! environment carrying only the sandbox to enter (see [`super::sandbox`]).

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::fds::{LIBRARY_FD, SHARED_FD, WORKER_FD};
use super::sandbox::{Spec, SPEC_ENV};

/// Resource limits applied to each worker process (setrlimit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimits {
    /// RLIMIT_AS in bytes.
    pub address_space: Option<u64>,
    /// RLIMIT_CPU in seconds.
    pub cpu_seconds: Option<u64>,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
}

/// The most descriptors a worker or probe is handed.
const MAX_HANDED: usize = super::fds::MAX_PROBE_BATCH + 8;

/// A command `program MODE PATH...` (MODE is `--worker` or `--probe-batch`) that,
/// between fork and exec, puts `channel` on fd 3, the shared region (if any) on its
/// descriptor, each of `images` on the descriptors from [`LIBRARY_FD`] on, and applies
/// the containment.
#[allow(clippy::too_many_arguments)]
pub(crate) fn command(
    program: &Path,
    mode: &str,
    paths: &[&Path],
    channel: RawFd,
    limits: ResourceLimits,
    sandbox: &Spec,
    shared: Option<RawFd>,
    images: &[RawFd],
) -> Command {
    // (source, target) pairs, laid out before the fork: the closure allocates nothing.
    let mut handed = [(-1, -1); MAX_HANDED];
    let mut count = 0;
    let targets = std::iter::once((channel, WORKER_FD))
        .chain(shared.map(|fd| (fd, SHARED_FD)))
        .chain(images.iter().copied().zip(LIBRARY_FD..));
    for pair in targets.take(MAX_HANDED) {
        handed[count] = pair;
        count += 1;
    }
    let highest = handed[..count].iter().map(|&(_, t)| t).max().unwrap_or(0);
    let mut cmd = Command::new(program);
    cmd.arg(mode)
        .args(paths)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env(SPEC_ENV, serde_json::to_string(sandbox).unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls on plain integers; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let fail = |r: libc::c_int| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            // Every source first moves above every target (close-on-exec copies), so
            // that placing one descriptor never overwrites another still to be placed.
            let mut moved = [-1; MAX_HANDED];
            for i in 0..count {
                let fd = libc::fcntl(handed[i].0, libc::F_DUPFD_CLOEXEC, highest + 1);
                fail(fd)?;
                moved[i] = fd;
            }
            for i in 0..count {
                fail(libc::dup2(moved[i], handed[i].1))?;
            }
            fail(libc::setpgid(0, 0))?;
            fail(libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ))?;
            if libc::getppid() != parent {
                // The daemon died before PDEATHSIG was armed.
                libc::_exit(1);
            }
            fail(libc::prctl(
                libc::PR_SET_NO_NEW_PRIVS,
                1 as libc::c_ulong,
                0,
                0,
                0,
            ))?;
            let set = |res, value: u64| {
                let lim = libc::rlimit {
                    rlim_cur: value as libc::rlim_t,
                    rlim_max: value as libc::rlim_t,
                };
                fail(libc::setrlimit(res, &lim))
            };
            set(libc::RLIMIT_NOFILE, limits.open_files)?;
            set(libc::RLIMIT_CORE, 0)?;
            if let Some(bytes) = limits.address_space {
                set(libc::RLIMIT_AS, bytes)?;
            }
            if let Some(secs) = limits.cpu_seconds {
                set(libc::RLIMIT_CPU, secs)?;
            }
            Ok(())
        });
    }
    cmd
}
