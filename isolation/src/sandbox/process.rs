//! The process layers: switching user, the user and PID namespaces, and the split into
//! keeper, namespace init and the plugin's own process.

use super::{check, errno, make_undumpable, Identity};

/// Drops supplementary groups, then switches group and user (as root only).
pub(super) fn switch_user(id: &Identity) -> Result<(), std::io::Error> {
    // SAFETY: plain system calls with integer arguments.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(id.gid, id.gid, id.gid))?;
        check(libc::setresuid(id.uid, id.uid, id.uid))?;
    }
    Ok(())
}

/// Arms `PR_SET_PDEATHSIG` (cleared by a change of user) and checks the parent is still
/// `parent`: if it died before, this process ends now.
pub(super) fn die_with_parent(parent: u32) {
    // SAFETY: prctl and getppid with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        if u32::try_from(libc::getppid()).ok() != Some(parent) {
            libc::_exit(1);
        }
    }
}

fn write_file(path: &str, text: &str) -> Result<(), std::io::Error> {
    std::fs::write(path, text)
}

/// Enters a new user and PID namespace, mapping the current ids onto themselves.
pub(super) fn unshare_namespaces() -> Result<(), std::io::Error> {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // SAFETY: unshare with flags only; this process is single-threaded.
    check(unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWPID) })?;
    write_file("/proc/self/setgroups", "deny")?;
    write_file("/proc/self/uid_map", &format!("{uid} {uid} 1\n"))?;
    write_file("/proc/self/gid_map", &format!("{gid} {gid} 1\n"))?;
    Ok(())
}

/// Clears every capability of this process (it holds a full set inside its own user
/// namespace, which the plugin has no use for).
pub(super) fn drop_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset with a valid header and two data records, as version 3 requires.
    unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
}

/// Waits for `pid`, retrying on EINTR; returns its wait status.
fn wait_for(pid: libc::pid_t) -> Option<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid with a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Some(status);
        }
        if r < 0 && errno().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

/// Ends this process the way `status` says another one ended: with the same exit code
/// or killed by the same signal.
fn end_like(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: restoring the default action and raising a signal on ourselves.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        1
    };
    // SAFETY: ending the process.
    unsafe { libc::_exit(code) }
}

/// Closes the worker channel in a process that must not hold it (the keeper and the
/// init): the daemon sees the channel close as soon as the plugin's process ends.
fn close_channel() {
    // SAFETY: closing a descriptor this process does not use.
    unsafe { libc::close(crate::fds::WORKER_FD) };
}

/// Splits off the namespace's init and the plugin's process. Returns only in the
/// plugin's process; the keeper and the init end the way the plugin's process ends.
pub(super) fn fork_into_namespace() -> Result<(), std::io::Error> {
    let mut alive = [0; 2];
    let mut report = [0; 2];
    // SAFETY: pipe2 with valid arrays.
    unsafe {
        check(libc::pipe2(alive.as_mut_ptr(), libc::O_CLOEXEC))?;
        check(libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC))?;
    }
    // SAFETY: this process is single-threaded (a fresh exec), so the child may run Rust.
    let init = unsafe { libc::fork() };
    if init < 0 {
        return Err(errno());
    }
    if init > 0 {
        // The keeper: outside the namespace, runs no plugin code.
        close_channel();
        // SAFETY: closing our copies of the ends the init uses.
        unsafe {
            libc::close(alive[0]);
            libc::close(report[1]);
        }
        let status = wait_for(init);
        let mut raw = [0u8; 4];
        // SAFETY: reading into a 4-byte buffer.
        let n = unsafe { libc::read(report[0], raw.as_mut_ptr().cast(), 4) };
        match (status, n) {
            (_, 4) => end_like(i32::from_ne_bytes(raw)),
            (Some(s), _) => end_like(s),
            (None, _) => end_like(libc::SIGKILL),
        }
    }
    // The init (PID 1 of the new namespace).
    // SAFETY: getppid cannot fail.
    let keeper = unsafe { libc::getppid() };
    // SAFETY: prctl with integer arguments; closing our copies of the keeper's ends.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::close(alive[1]);
        libc::close(report[0]);
    }
    // In a new PID namespace the parent is outside it and reads as 0; a keeper that
    // died before the death signal was armed shows as a closed `alive` pipe.
    let mut poll = libc::pollfd {
        fd: alive[0],
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd, without waiting.
    if keeper != 0 || unsafe { libc::poll(&mut poll, 1, 0) } != 0 {
        // SAFETY: ending the process.
        unsafe { libc::_exit(1) };
    }
    make_undumpable();
    drop_capabilities();
    // SAFETY: still single-threaded.
    let plugin = unsafe { libc::fork() };
    if plugin < 0 {
        // SAFETY: ending the process.
        unsafe { libc::_exit(1) };
    }
    if plugin == 0 {
        // SAFETY: closing the init's pipe ends, which the plugin must not hold.
        unsafe {
            libc::close(alive[0]);
            libc::close(report[1]);
        }
        return Ok(());
    }
    close_channel();
    // Reap every process of the namespace until the plugin's own process ends.
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == plugin {
            let raw = status.to_ne_bytes();
            // SAFETY: writing 4 bytes from a valid buffer; then ending, which makes
            // the kernel kill whatever else lives in the namespace.
            unsafe {
                libc::write(report[1], raw.as_ptr().cast(), 4);
                libc::_exit(0);
            }
        }
        if r < 0 && errno().raw_os_error() != Some(libc::EINTR) {
            // SAFETY: ending the process.
            unsafe { libc::_exit(1) };
        }
    }
}
