//! Confinement of worker and probe processes, in layers.
//!
//! A plugin with `isolation: process` is treated as hostile. Its worker is started by
//! the daemon as `dynplug-worker --worker LIBRARY` (see `worker::child`) and, before any
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
//! The layers live in `process` (identity and namespaces), `filesystem` (Landlock)
//! and `syscalls` (seccomp); [`host_support`] says what this host can give.
//!
//! Each layer can be relaxed per plugin; what a worker actually runs under is reported
//! back in its hello ([`SandboxReport`]) and shown by `GetPlugin`, REST and
//! `dynplugctl info`.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod filesystem;
mod host;
mod process;
mod syscalls;

pub use host::host_support;

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

/// Checks what a worker reports it runs under against what `policy` asks for: every
/// layer asked for must be enforced, and network sockets blocked unless allowed. A
/// worker that reports nothing passes only if nothing was asked. The error names the
/// layer, what the worker said, and the configuration key that relaxes it.
pub fn check_report(policy: &SandboxPolicy, report: Option<&SandboxReport>) -> Result<(), String> {
    let asked = [
        (policy.identity, "identity", "identity"),
        (policy.pid_namespace, "process_tree", "pid_namespace"),
        (policy.landlock, "filesystem", "landlock"),
        (policy.seccomp, "syscalls", "seccomp"),
    ];
    let Some(report) = report else {
        return match asked.iter().find(|(on, _, _)| *on) {
            None => Ok(()),
            Some(_) => Err("the worker reported no sandbox at all".into()),
        };
    };
    for (on, layer, key) in asked {
        let state = report
            .layers()
            .into_iter()
            .find(|(name, _)| *name == layer)
            .map_or("", |(_, state)| state);
        if on && !state.starts_with("enforced") {
            return Err(format!(
                "the sandbox layer `{layer}` is not enforced ({}); this host cannot give it \
                 to the plugin's workers: set plugins.NAME.sandbox.{key}: false to run it without",
                if state.is_empty() {
                    "not reported"
                } else {
                    state
                }
            ));
        }
    }
    if policy.seccomp && !policy.network && !report.network.starts_with("blocked") {
        return Err(format!(
            "network sockets are not blocked ({}); set plugins.NAME.sandbox.seccomp: false \
             to run the plugin without",
            report.network
        ));
    }
    Ok(())
}

pub(crate) const OFF: &str = "off (relaxed in the configuration)";

pub(crate) fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

pub(crate) fn check(rc: libc::c_int) -> Result<(), std::io::Error> {
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
            Ok(id) => match process::switch_user(id) {
                Ok(()) => {
                    process::die_with_parent(spec.daemon_pid);
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
        process::unshare_namespaces()
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
            Ok(()) => match process::fork_into_namespace() {
                Ok(()) => "enforced: PID namespace, killed with its worker".into(),
                Err(e) => format!("unavailable: cannot fork into the namespace: {e}"),
            },
            Err(e) => format!("unavailable: cannot create a PID namespace: {e}"),
        }
    };
    if namespaces.is_ok() {
        process::drop_capabilities();
    }
    report.filesystem = if policy.landlock {
        filesystem::landlock_layer(policy, library)
    } else {
        OFF.into()
    };
    let (syscalls, network) = if policy.seccomp {
        syscalls::seccomp_layer(policy.network)
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
    fn reports_missing_a_layer_asked_for_are_refused_naming_the_key() {
        let all = SandboxPolicy::default();
        let full = SandboxReport {
            identity: "enforced: user dynplug-worker (uid 999)".into(),
            process_tree: "enforced: PID namespace".into(),
            filesystem: "enforced: Landlock".into(),
            syscalls: "enforced: seccomp".into(),
            network: "blocked: only AF_UNIX sockets".into(),
        };
        assert!(check_report(&all, Some(&full)).is_ok());
        let e = check_report(&all, None).unwrap_err();
        assert!(e.contains("no sandbox"), "{e}");
        let no_user = SandboxReport {
            identity: "unavailable: user `dynplug-worker` does not exist".into(),
            ..full.clone()
        };
        let e = check_report(&all, Some(&no_user)).unwrap_err();
        assert!(
            e.contains("identity")
                && e.contains("sandbox.identity: false")
                && e.contains("does not exist"),
            "{e}"
        );
        // Relaxed by name: accepted.
        let relaxed = SandboxPolicy {
            identity: false,
            ..SandboxPolicy::default()
        };
        assert!(check_report(&relaxed, Some(&no_user)).is_ok());
        let no_landlock = SandboxReport {
            filesystem: "unavailable: the kernel does not enforce Landlock".into(),
            ..full.clone()
        };
        assert!(check_report(&all, Some(&no_landlock))
            .unwrap_err()
            .contains("sandbox.landlock: false"));
        let open_net = SandboxReport {
            network: "allowed".into(),
            ..full
        };
        assert!(check_report(&all, Some(&open_net)).is_err());
        let nothing = SandboxPolicy {
            identity: false,
            pid_namespace: false,
            landlock: false,
            seccomp: false,
            ..SandboxPolicy::default()
        };
        assert!(check_report(&nothing, None).is_ok());
    }

    #[test]
    fn filters_compile() {
        assert_eq!(syscalls::seccomp_filters(false).unwrap().len(), 2);
        assert_eq!(syscalls::seccomp_filters(true).unwrap().len(), 2);
    }

    #[test]
    fn identity_lookup() {
        assert_eq!(Identity::lookup("root").unwrap().uid, 0);
        assert!(Identity::lookup("no-such-user-dynplug").is_err());
    }
}
