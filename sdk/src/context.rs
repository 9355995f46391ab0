//! [`Context`]: the host's services for one call (ABI version 2) in safe Rust.

use crate::abi::{self, HostContext};

/// Severity of a plugin's log line; the host files it at the same level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum Level {
    /// Something failed.
    Error = abi::LOG_ERROR,
    /// Something looks wrong.
    Warn = abi::LOG_WARN,
    /// Normal progress worth recording.
    Info = abi::LOG_INFO,
    /// Detail for debugging.
    Debug = abi::LOG_DEBUG,
    /// Finest detail.
    Trace = abi::LOG_TRACE,
}

impl Level {
    /// The level for an ABI value; unknown values read as [`Level::Info`].
    pub fn from_abi(level: u32) -> Level {
        match level {
            abi::LOG_ERROR => Level::Error,
            abi::LOG_WARN => Level::Warn,
            abi::LOG_DEBUG => Level::Debug,
            abi::LOG_TRACE => Level::Trace,
            _ => Level::Info,
        }
    }
}

/// What a plugin may ask of the host during a call: log, report progress, check
/// whether the caller gave up, publish events.
///
/// A call that comes without a host (a version 1 path, or [`Context::detached`])
/// gets a context whose functions do nothing and whose [`Context::cancelled`] is false.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    host: Option<&'a HostContext>,
}

impl Context<'static> {
    /// A context without a host: logs, progress and events go nowhere.
    pub fn detached() -> Self {
        Context { host: None }
    }
}

impl<'a> Context<'a> {
    /// Wraps the host's context for one call.
    ///
    /// # Safety
    /// `ctx` must be null or point to a valid [`HostContext`] for `'a`.
    pub unsafe fn from_raw(ctx: *const HostContext) -> Self {
        // SAFETY: guaranteed by the caller.
        let host = unsafe { ctx.as_ref() }
            .filter(|c| c.struct_size >= abi::CONTEXT_SIZE && c.reserved == 0);
        Context { host }
    }

    /// Logs `message` at `level` through the host (the journal, under systemd).
    pub fn log(&self, level: Level, message: &str) {
        if let Some(h) = self.host {
            // SAFETY: the host's function, called with its own context and a valid slice.
            unsafe { (h.log)(h, level as u32, message.as_ptr(), message.len()) }
        }
    }

    /// Logs at [`Level::Error`].
    pub fn error(&self, message: &str) {
        self.log(Level::Error, message);
    }

    /// Logs at [`Level::Warn`].
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    /// Logs at [`Level::Info`].
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    /// Logs at [`Level::Debug`].
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message);
    }

    /// Reports progress: `fraction` from 0 to 1 (a negative value means unknown) and a
    /// short status text. Cheap to call often; the host coalesces updates.
    pub fn progress(&self, fraction: f64, text: &str) {
        if let Some(h) = self.host {
            // SAFETY: as in `log`.
            unsafe { (h.progress)(h, fraction, text.as_ptr(), text.len()) }
        }
    }

    /// Whether the caller gave up on this call (cancelled it, or its timeout passed).
    /// A long call should check it between steps and return soon when it is true.
    pub fn cancelled(&self) -> bool {
        match self.host {
            // SAFETY: as in `log`.
            Some(h) => unsafe { (h.cancelled)(h) != 0 },
            None => false,
        }
    }

    /// Publishes `event` with `payload` for subscribers (a D-Bus signal and a
    /// server-sent event). Returns false when the host dropped it: the plugin is over
    /// its event budget, or the event is too large.
    pub fn emit(&self, event: &str, payload: &str) -> bool {
        match self.host {
            // SAFETY: as in `log`.
            Some(h) => unsafe {
                (h.emit)(
                    h,
                    event.as_ptr(),
                    event.len(),
                    payload.as_ptr(),
                    payload.len(),
                ) == 0
            },
            None => false,
        }
    }
}
