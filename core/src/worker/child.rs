//! Starting a worker or probe process: the channel on fd 3, its own process group,
//! death with the daemon, no new privileges, resource limits, no core dumps, a clean
//! environment carrying only the sandbox to enter (see [`super::sandbox`]).

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::pool::ResourceLimits;
use super::sandbox::{Spec, SPEC_ENV};
use super::serve::WORKER_FD;

/// A command `program MODE PATH...` (MODE is `--worker`, `--probe` or `--probe-batch`)
/// that, between fork and exec, puts `channel` on fd 3 and applies the containment.
pub(crate) fn command(
    program: &Path,
    mode: &str,
    paths: &[&Path],
    channel: RawFd,
    limits: ResourceLimits,
    sandbox: &Spec,
    shared: Option<RawFd>,
) -> Command {
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
            fail(libc::dup2(channel, WORKER_FD))?;
            if let Some(region) = shared {
                fail(libc::dup2(region, super::shared::SHARED_FD))?;
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
