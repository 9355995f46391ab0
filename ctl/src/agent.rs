//! A polkit text agent for the length of a call that may need authentication, started
//! as systemctl starts one: `pkttyagent --notify-fd FD --fallback`, which registers for
//! the caller's login session (outside one, polkit finds no agent and the call fails
//! saying authentication is needed). Only when asking is allowed, standard input and
//! error are a terminal, and the caller is not root (root is always allowed).

use std::io::{IsTerminal, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// The running agent; stopped when dropped.
pub(crate) struct Agent {
    child: Child,
}

impl Agent {
    /// Starts the agent if it can ask anyone, and waits until it has registered with
    /// polkit (it closes the notify descriptor then). None when not on a terminal, as
    /// root, or when pkttyagent is not installed.
    pub(crate) fn start() -> Option<Agent> {
        if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
            return None;
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return None;
        }
        // The agent talks on the terminal: its stdout goes to our stderr (a terminal
        // here), so that our stdout stays clean for pipes and `--json`.
        let terminal = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
        let (mut registered, notify) = std::io::pipe().ok()?;
        let fd = notify.as_raw_fd();
        let mut command = Command::new("pkttyagent");
        command
            .arg("--notify-fd")
            .arg(fd.to_string())
            .arg("--fallback")
            .stdout(Stdio::from(terminal));
        // SAFETY: between fork and exec only fcntl runs, which is async-signal-safe; it
        // lets the agent inherit the write end of the pipe (created close-on-exec).
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().ok()?;
        drop(notify);
        // EOF once the agent has registered (or died): either way, go on.
        let mut byte = [0u8; 1];
        let _ = registered.read(&mut byte);
        Some(Agent { child })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
