//! Confinement of worker and probe processes, in layers.
//!
//! A plugin with `isolation: process` is treated as hostile. Its worker is started by
//! the daemon as `dynplugd --worker LIBRARY` (see [`super::child`]) and, before any
//! plugin code is loaded, confines itself here:
//!
//! 1. **Identity.** A daemon running as root switches the worker to an unprivileged
//!    user (`worker_user`, by default `dynplug-worker`, created by the package). Every
//!    worker then enters a new user namespace, so it holds no capability that counts
//!    outside it.
//! 2. **Process tree.** The worker's children live in a new PID namespace. The process
//!    the daemon started (the *keeper*) forks the namespace's init, which forks the
//!    process that loads the plugin. When the init ends, the kernel kills everything in
//!    the namespace; the init dies with the keeper and the keeper with the daemon
//!    (`PR_SET_PDEATHSIG`), and plugin code can change neither of them. From inside
//!    the namespace the daemon has no PID, so it cannot be signalled.
//! 3. **File system.** Landlock: the plugin file, the system's shared libraries and
//!    what `sandbox.read` / `sandbox.write` grant, nothing else; signals and abstract
//!    UNIX sockets are scoped to the sandbox.
//! 4. **System calls.** A seccomp filter refuses ptrace, other processes' memory,
//!    mounts, namespaces, BPF, keyrings, modules, reboot, io_uring and, unless
//!    `sandbox.network` is set, every socket family but `AF_UNIX`.
//!
//! Each layer can be relaxed per plugin; what a worker actually runs under is reported
//! back in its hello ([`SandboxReport`]) and shown by `GetPlugin`, REST and
//! `dynplugctl info`.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The environment variable that carries a worker's [`Spec`] as JSON.
pub const SPEC_ENV: &str = "DYNPLUG_SANDBOX";

/// The user workers run as when the daemon runs as root and the configuration names none.
pub const DEFAULT_WORKER_USER: &str = "dynplug-worker";

/// The layers of one plugin's sandbox (`plugins: NAME: sandbox:` in config.yaml).
/// Every layer is on by default; network access is off by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxPolicy {
    /// Run under the worker user (as root) and in a user namespace.
    pub identity: bool,
    /// Run in a PID namespace that dies with the worker.
    pub pid_namespace: bool,
    /// Confine file access with Landlock.
    pub landlock: bool,
    /// Refuse dangerous system calls with seccomp.
    pub seccomp: bool,
    /// Allow network sockets (`AF_INET`, `AF_INET6`, ...).
    pub network: bool,
    /// Extra paths the plugin may read (files or directory trees).
    pub read: Vec<PathBuf>,
    /// Extra paths the plugin may read and write (files or directory trees).
    pub write: Vec<PathBuf>,
}

impl Default for SandboxPolicy {
    fn default() -> Self {
        SandboxPolicy {
            identity: true,
            pid_namespace: true,
            landlock: true,
            seccomp: true,
            network: false,
            read: Vec::new(),
            write: Vec::new(),
        }
    }
}

/// The user a worker switches to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// User name, for messages.
    pub user: String,
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id (the user's primary group).
    pub gid: u32,
}

impl Identity {
    /// Looks `user` up in the user database.
    pub fn lookup(user: &str) -> Result<Identity, String> {
        let name = CString::new(user).map_err(|_| format!("bad user name `{user}`"))?;
        let mut buf = vec![0u8; 16 * 1024];
        // SAFETY: an all-zero passwd is a valid out-parameter.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; buf outlives the use of `pwd`.
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 || result.is_null() {
            return Err(format!("user `{user}` does not exist"));
        }
        Ok(Identity {
            user: user.to_owned(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        })
    }
}

/// Everything a worker needs to confine itself, passed in [`SPEC_ENV`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The layers asked for.
    pub policy: SandboxPolicy,
    /// The user to switch to (only used when the worker starts as root).
    pub identity: Result<Identity, String>,
    /// The daemon's PID: the keeper checks it is still its parent.
    pub daemon_pid: u32,
}

/// What a worker actually runs under, layer by layer: `enforced: ...`, `off (...)` or
/// `unavailable: <why>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    /// User and user namespace.
    pub identity: String,
    /// PID namespace.
    pub process_tree: String,
    /// Landlock.
    pub filesystem: String,
    /// seccomp.
    pub syscalls: String,
    /// Network sockets.
    pub network: String,
}

impl SandboxReport {
    /// The layers as (name, state) pairs, in a stable order.
    pub fn layers(&self) -> [(&'static str, &str); 5] {
        [
            ("identity", &self.identity),
            ("process_tree", &self.process_tree),
            ("filesystem", &self.filesystem),
            ("syscalls", &self.syscalls),
            ("network", &self.network),
        ]
    }
}

const OFF: &str = "off (relaxed in the configuration)";

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn check(rc: libc::c_int) -> Result<(), std::io::Error> {
    if rc < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Marks this process non-dumpable: processes of the same user can then neither
/// ptrace it nor read its /proc files (environ, mem, fd).
pub fn make_undumpable() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// Drops supplementary groups, then switches group and user (as root only).
fn switch_user(id: &Identity) -> Result<(), std::io::Error> {
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
fn die_with_parent(parent: u32) {
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
fn unshare_namespaces() -> Result<(), std::io::Error> {
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
fn drop_capabilities() {
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
    unsafe { libc::close(super::serve::WORKER_FD) };
}

/// Splits off the namespace's init and the plugin's process. Returns only in the
/// plugin's process; the keeper and the init end the way the plugin's process ends.
fn fork_into_namespace() -> Result<(), std::io::Error> {
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

/// Confines the current process (a freshly started worker or probe) according to
/// `spec`, before it loads `library`. Returns in the process that will run plugin
/// code, with the report of what it runs under.
pub fn confine(spec: &Spec, library: &Path) -> SandboxReport {
    let policy = &spec.policy;
    let mut report = SandboxReport::default();
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let switched = if !policy.identity {
        report.identity = OFF.into();
        false
    } else if root {
        match &spec.identity {
            Ok(id) => match switch_user(id) {
                Ok(()) => {
                    die_with_parent(spec.daemon_pid);
                    report.identity = format!("enforced: user {} (uid {})", id.user, id.uid);
                    true
                }
                Err(e) => {
                    report.identity = format!("unavailable: cannot switch to {}: {e}", id.user);
                    false
                }
            },
            Err(why) => {
                report.identity = format!("unavailable: {why}");
                false
            }
        }
    } else {
        false
    };
    // A change of user made this process non-dumpable, which hands its /proc files to
    // root; it must own them for a moment to write its own uid and gid maps.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    let namespaces = if policy.identity || policy.pid_namespace {
        unshare_namespaces()
    } else {
        Err(std::io::Error::other("not asked for"))
    };
    make_undumpable();
    if policy.identity && !switched && !root {
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        report.identity = match &namespaces {
            Ok(()) => format!("enforced: user namespace (uid {uid}, no capabilities outside it)"),
            Err(e) => format!("unavailable: no user namespace ({e}); runs as uid {uid}"),
        };
    }
    report.process_tree = if !policy.pid_namespace {
        OFF.into()
    } else {
        match &namespaces {
            Ok(()) => match fork_into_namespace() {
                Ok(()) => "enforced: PID namespace, killed with its worker".into(),
                Err(e) => format!("unavailable: cannot fork into the namespace: {e}"),
            },
            Err(e) => format!("unavailable: cannot create a PID namespace: {e}"),
        }
    };
    if namespaces.is_ok() {
        drop_capabilities();
    }
    report.filesystem = if policy.landlock {
        landlock_layer(policy, library)
    } else {
        OFF.into()
    };
    let (syscalls, network) = if policy.seccomp {
        seccomp_layer(policy.network)
    } else {
        (
            OFF.into(),
            if policy.network {
                "allowed (sandbox.network: true)".into()
            } else {
                "unavailable: needs the seccomp layer".into()
            },
        )
    };
    report.syscalls = syscalls;
    report.network = network;
    report
}

/// Paths every worker may read: the dynamic linker's cache and the system's libraries.
const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/dev/urandom",
    "/dev/random",
    "/proc/self",
    "/sys/devices/system/cpu",
];
/// Device files every worker may read and write.
const SYSTEM_WRITE: &[&str] = &["/dev/null", "/dev/zero"];

fn landlock_layer(policy: &SandboxPolicy, library: &Path) -> String {
    use landlock::{
        path_beneath_rules, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr,
        RulesetStatus, Scope, ABI,
    };
    let abi = ABI::V6;
    let build = || -> Result<landlock::RestrictionStatus, landlock::RulesetError> {
        let mut ruleset = Ruleset::default()
            .handle_access(AccessFs::from_all(abi))?
            .scope(Scope::from_all(abi))?;
        if !policy.network {
            ruleset = ruleset.handle_access(AccessNet::from_all(abi))?;
        }
        let read: Vec<PathBuf> = SYSTEM_READ
            .iter()
            .map(PathBuf::from)
            .chain(std::iter::once(library.to_owned()))
            .chain(policy.read.iter().cloned())
            .collect();
        let write: Vec<PathBuf> = SYSTEM_WRITE
            .iter()
            .map(PathBuf::from)
            .chain(policy.write.iter().cloned())
            .collect();
        ruleset
            .create()?
            .add_rules(path_beneath_rules(&read, AccessFs::from_read(abi)))?
            .add_rules(path_beneath_rules(&write, AccessFs::from_all(abi)))?
            .restrict_self()
    };
    match build() {
        Ok(status) => match status.ruleset {
            RulesetStatus::FullyEnforced => "enforced: Landlock".into(),
            RulesetStatus::PartiallyEnforced => {
                "enforced: Landlock (partially: the kernel lacks newer access rights)".into()
            }
            RulesetStatus::NotEnforced => {
                "unavailable: the kernel does not enforce Landlock".into()
            }
        },
        Err(e) => format!("unavailable: {e}"),
    }
}

/// System calls no plugin needs and a hostile one would use to reach beyond its worker.
const DENIED_SYSCALLS: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_kcmp,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_fanotify_init,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_vhangup,
    libc::SYS_personality,
];

/// Namespace flags refused in `clone`.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWCGROUP,
];

fn seccomp_filters(network: bool) -> Result<Vec<seccompiler::BpfProgram>, seccompiler::Error> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    };
    use std::collections::BTreeMap;
    let arch = std::env::consts::ARCH.try_into()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED_SYSCALLS.iter().map(|&nr| (nr, Vec::new())).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            let flag = u64::from(flag.unsigned_abs());
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )?])
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    if !network {
        rules.insert(
            libc::SYS_socket,
            vec![SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Ne,
                libc::AF_UNIX as u64,
            )?])?],
        );
    }
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    let deny: seccompiler::BpfProgram =
        SeccompFilter::new(rules, SeccompAction::Allow, eperm, arch)?.try_into()?;
    // clone3 passes its flags in memory, where a filter cannot look: answer ENOSYS so
    // the C library falls back to clone, whose flags the filter above checks.
    let clone3: seccompiler::BpfProgram = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?
    .try_into()?;
    Ok(vec![deny, clone3])
}

fn seccomp_layer(network: bool) -> (String, String) {
    let applied = seccomp_filters(network).and_then(|filters| {
        filters
            .iter()
            .try_for_each(|f| seccompiler::apply_filter(f))
    });
    match applied {
        Ok(()) => (
            "enforced: seccomp (no ptrace, mounts, namespaces, BPF, keyrings, modules, io_uring)"
                .into(),
            if network {
                "allowed (sandbox.network: true)".into()
            } else {
                "blocked: only AF_UNIX sockets".into()
            },
        ),
        Err(e) => (
            format!("unavailable: {e}"),
            if network {
                "allowed (sandbox.network: true)".into()
            } else {
                format!("unavailable: {e}")
            },
        ),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_defaults_and_yaml() {
        let p = SandboxPolicy::default();
        assert!(p.identity && p.pid_namespace && p.landlock && p.seccomp && !p.network);
        let p: SandboxPolicy =
            serde_yaml::from_str("network: true\nread: [/srv/data]\nseccomp: false\n").unwrap();
        assert!(p.network && !p.seccomp && p.landlock);
        assert_eq!(p.read, vec![PathBuf::from("/srv/data")]);
        assert!(serde_yaml::from_str::<SandboxPolicy>("netwrok: true").is_err());
    }

    #[test]
    fn filters_compile() {
        assert_eq!(seccomp_filters(false).unwrap().len(), 2);
        assert_eq!(seccomp_filters(true).unwrap().len(), 2);
    }

    #[test]
    fn identity_lookup() {
        assert_eq!(Identity::lookup("root").unwrap().uid, 0);
        assert!(Identity::lookup("no-such-user-dynplug").is_err());
    }
}
