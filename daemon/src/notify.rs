//! The systemd notify protocol (sd_notify). Every function is a no-op when the daemon
//! was not started by systemd (no `NOTIFY_SOCKET`).

use std::sync::Mutex;

use dynplug_core::locks::lock;

use sd_notify::NotifyState;

/// Whether STOPPING=1 went out. READY=1 and RELOADING=1 are sent under this lock and
/// only while it is false: a reload that ends after the stop began must not tell
/// systemd the service is ready again.
static STOPPED: Mutex<bool> = Mutex::new(false);

/// Sends `states` unless the daemon is stopping.
fn send_unless_stopping(states: &[NotifyState<'_>]) {
    let stopped = lock(&STOPPED);
    if !*stopped {
        send(states);
    }
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// READY=1 with a STATUS line.
pub fn ready(status: &str) {
    send_unless_stopping(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// STATUS= alone.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// RELOADING=1 with MONOTONIC_USEC, as systemd's Type=notify-reload expects.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send_unless_stopping(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading configuration"),
        ]),
        Err(_) => send_unless_stopping(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading configuration"),
        ]),
    }
}

/// STOPPING=1.
pub fn stopping() {
    let mut stopped = lock(&STOPPED);
    *stopped = true;
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// WATCHDOG=1.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The watchdog interval systemd asked for, if any (`WATCHDOG_USEC` for this PID).
pub fn watchdog_interval() -> Option<std::time::Duration> {
    sd_notify::watchdog_enabled()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_says_ready_once_stopping_went_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        let mut buf = [0u8; 512];
        let mut next = || {
            let n = socket.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        ready("up");
        assert!(next().contains("READY=1"));
        stopping();
        reloading();
        ready("reloaded");
        status("still stopping");
        // The status line is the next datagram: the reload's two never went out.
        let after = next();
        assert!(after.contains("STOPPING=1"), "{after}");
        let after = next();
        assert_eq!(after.trim(), "STATUS=still stopping");
        std::env::remove_var("NOTIFY_SOCKET");
    }
}
