//! What this host can give, found at the daemon's start.

use super::{check, errno, Identity};

/// What this host can give, layer by layer, found without starting a worker: `Ok` or
/// the reason a layer is unavailable. The daemon logs the unavailable ones at start.
pub fn host_support(worker_user: &str) -> Vec<(&'static str, Result<(), String>)> {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let identity = if root {
        Identity::lookup(worker_user).map(|_| ())
    } else {
        Ok(())
    };
    // Try the namespaces in a throw-away child, as a worker would.
    let mut probe = std::process::Command::new("/bin/true");
    // SAFETY: unshare is async-signal-safe and the closure allocates nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut probe, || {
            check(libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWPID))
        });
    }
    let namespaces = match probe.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("the probe failed: {s}")),
        Err(e) => Err(format!("user and PID namespaces: {e}")),
    };
    // SAFETY: the version query takes no attribute and has no side effect.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    let landlock = if abi >= 1 {
        Ok(())
    } else {
        Err(format!("Landlock: {}", errno()))
    };
    // SAFETY: prctl query without side effects.
    let seccomp = if unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } >= 0 {
        Ok(())
    } else {
        Err(format!("seccomp: {}", errno()))
    };
    vec![
        ("identity", identity.and(namespaces.clone())),
        ("process_tree", namespaces),
        ("filesystem", landlock),
        ("syscalls", seccomp),
    ]
}
