//! The host's side of the version 2 context, for any host: a [`Host`] answers a
//! plugin's log, progress, cancellation and event calls, and [`HostFrame`] is the C
//! context (`struct dynplug_context`) that routes them to it. The daemon's host and
//! [`TestHost`](crate::TestHost)'s recorder both use it.

use crate::abi::{self, HostContext};
use crate::context::Level;

/// What a plugin may ask of the host during a call; [`HostFrame`] exposes it through
/// the C context.
pub trait Host: Sync {
    /// A log line.
    fn log(&self, level: Level, message: &str);
    /// Progress of the call.
    fn progress(&self, fraction: f64, text: &str);
    /// Whether the caller gave up.
    fn cancelled(&self) -> bool;
    /// An event; false when it was dropped.
    fn emit(&self, event: &str, payload: &str) -> bool;
}

/// The C context for one call, followed by the host it speaks for.
#[repr(C)]
pub struct HostFrame<'a> {
    ctx: HostContext,
    host: &'a dyn Host,
}

impl<'a> HostFrame<'a> {
    /// The context for a call served by `host`.
    pub fn new(host: &'a dyn Host) -> Self {
        HostFrame {
            ctx: HostContext {
                struct_size: abi::CONTEXT_SIZE,
                reserved: 0,
                log: frame_log,
                progress: frame_progress,
                cancelled: frame_cancelled,
                emit: frame_emit,
            },
            host,
        }
    }

    /// The pointer handed to the plugin.
    pub fn as_ptr(&self) -> *const HostContext {
        &self.ctx
    }
}

/// The host behind a context made by [`HostFrame::new`].
///
/// # Safety
/// `ctx` must be the context of a live [`HostFrame`].
unsafe fn host_of<'a>(ctx: *const HostContext) -> &'a dyn Host {
    // SAFETY: `ctx` is the first field of a `#[repr(C)]` HostFrame, per the contract.
    unsafe { (*ctx.cast::<HostFrame<'a>>()).host }
}

/// Borrows `len` bytes at `ptr` as text, replacing what is not UTF-8.
///
/// # Safety
/// `ptr` must be valid for `len` bytes, or null.
unsafe fn text<'a>(ptr: *const u8, len: usize) -> std::borrow::Cow<'a, str> {
    if ptr.is_null() || len == 0 {
        return "".into();
    }
    // SAFETY: guaranteed by the caller.
    String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(ptr, len) })
}

// The functions below are called by plugin code with the context it was given. A
// plugin that passes another pointer breaks the ABI as surely as one that writes
// through a stray pointer: a plugin in the host's process is trusted not to. Text that
// is valid UTF-8 is borrowed, not copied, so the host's own limits decide what a long
// line or payload costs.

unsafe extern "C" fn frame_log(ctx: *const HostContext, level: u32, msg: *const u8, len: usize) {
    // SAFETY: the plugin passes back its context and a valid slice (see above).
    let (host, msg) = unsafe { (host_of(ctx), text(msg, len)) };
    host.log(Level::from_abi(level), &msg);
}

unsafe extern "C" fn frame_progress(ctx: *const HostContext, f: f64, t: *const u8, len: usize) {
    // SAFETY: as in `frame_log`.
    let (host, t) = unsafe { (host_of(ctx), text(t, len)) };
    host.progress(f, &t);
}

unsafe extern "C" fn frame_cancelled(ctx: *const HostContext) -> i32 {
    // SAFETY: as in `frame_log`.
    i32::from(unsafe { host_of(ctx) }.cancelled())
}

unsafe extern "C" fn frame_emit(
    ctx: *const HostContext,
    event: *const u8,
    event_len: usize,
    payload: *const u8,
    payload_len: usize,
) -> i32 {
    // SAFETY: as in `frame_log`.
    let (host, e, p) = unsafe {
        (
            host_of(ctx),
            text(event, event_len),
            text(payload, payload_len),
        )
    };
    i32::from(!host.emit(&e, &p))
}
