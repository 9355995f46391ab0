//! The host's side of the version 2 context, for any host: a [`Host`] answers a
//! plugin's log, progress, cancellation and event calls, and [`with_context`] lends a
//! plugin the C context (`struct dynplug_context`) that routes them to it for the
//! length of one call. The daemon's host and [`TestHost`](crate::TestHost)'s recorder
//! both use it.
//!
//! # Contexts that outlive their call
//!
//! A plugin may keep the context pointer past its call (a background thread it
//! started, by mistake or not). So the context is never on the stack and never freed:
//! it is a slot of a slab that only grows, and the pointer stays readable for the life
//! of the process. While the call runs the slot is *live* and routes to the call's
//! host; when the call returns the slot is closed (after the host calls in progress
//! finish) and every later call through it does nothing and answers "dropped":
//! `log` and `progress` are ignored, `emit` returns 1, `cancelled` returns 1 (so a
//! loop polling it stops).
//!
//! A closed slot is lent again only after [`COOLDOWN`] other calls closed theirs, and a
//! slot used after its call is retired for good (up to [`MAX_RETIRED`] of them): a
//! context kept and used keeps reaching nothing, and is never attributed to a later
//! call. Only a context kept *silently* through [`COOLDOWN`] later calls, then used,
//! can reach a later call (that is the cost of bounded memory: every call would
//! otherwise need an address of its own forever).

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::abi::{self, HostContext};
use crate::context::Level;

/// What a plugin may ask of the host during a call; [`with_context`] exposes it
/// through the C context.
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

/// Closed slots that must wait before one of them is lent again.
pub const COOLDOWN: usize = 4096;
/// Most slots retired for good after a use past their call (then they only cool down).
pub const MAX_RETIRED: usize = 65536;

/// The state bit of a slot whose call runs; the bits below count host calls in progress.
const LIVE: usize = 1 << (usize::BITS - 1);

/// One context: the C context first (its address is the pointer the plugin gets), then
/// what routes it.
#[repr(C)]
struct Slot {
    ctx: HostContext,
    /// [`LIVE`] while the call runs, plus the number of host calls in progress.
    state: AtomicUsize,
    /// The call's host; set only while no host call can be in progress (see `open`).
    host: UnsafeCell<Option<NonNull<dyn Host>>>,
    /// Used after its call: never lent again.
    retired: AtomicBool,
}

// SAFETY: `host` is written only by the slot's owner while `state` is 0 (no host call
// can enter), and read only by host calls that entered while LIVE was set; the `Host`
// behind it is `Sync`.
unsafe impl Sync for Slot {}
// SAFETY: see `Sync`; slots are shared as `&'static` only.
unsafe impl Send for Slot {}

/// Closed slots in the order they were closed, and how many were retired.
struct Slab {
    free: Mutex<VecDeque<&'static Slot>>,
    retired: AtomicUsize,
}

static SLAB: Slab = Slab {
    free: Mutex::new(VecDeque::new()),
    retired: AtomicUsize::new(0),
};

impl Slab {
    /// A closed slot cooled down long enough, or a new one (never freed).
    fn take(&self) -> &'static Slot {
        {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            while free.len() > COOLDOWN {
                let slot = free.pop_front().expect("longer than the cooldown");
                if !slot.retired.load(Ordering::Acquire) {
                    return slot;
                }
            }
        }
        Box::leak(Box::new(Slot {
            ctx: HostContext {
                struct_size: abi::CONTEXT_SIZE,
                reserved: 0,
                log: frame_log,
                progress: frame_progress,
                cancelled: frame_cancelled,
                emit: frame_emit,
            },
            state: AtomicUsize::new(0),
            host: UnsafeCell::new(None),
            retired: AtomicBool::new(false),
        }))
    }

    fn give_back(&self, slot: &'static Slot) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(slot);
    }

    /// Marks `slot` used after its call, while retirements are left.
    fn retire(&self, slot: &Slot) {
        if slot.retired.load(Ordering::Relaxed) {
            return;
        }
        let under_cap = self
            .retired
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_RETIRED).then_some(n + 1)
            })
            .is_ok();
        if under_cap {
            slot.retired.store(true, Ordering::Release);
        }
    }
}

/// A slot lent for one call: opened on creation, closed (and given back) on drop, even
/// when the call unwinds.
struct Lent<'a> {
    slot: &'static Slot,
    _host: std::marker::PhantomData<&'a dyn Host>,
}

impl<'a> Lent<'a> {
    fn open(host: &'a dyn Host) -> Self {
        let slot = SLAB.take();
        let host: NonNull<dyn Host + 'a> = NonNull::from(host);
        // SAFETY: only the lifetime is erased; `Lent` clears the pointer (after every
        // host call that could read it has left) before `'a` ends, in `drop`.
        let host: NonNull<dyn Host + 'static> = unsafe { std::mem::transmute(host) };
        // SAFETY: the slot is closed (state 0: no host call can enter) and owned by us:
        // nobody reads `host` now.
        unsafe { *slot.host.get() = Some(host) };
        slot.state.store(LIVE, Ordering::Release);
        Lent {
            slot,
            _host: std::marker::PhantomData,
        }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let slot = self.slot;
        slot.state.fetch_and(!LIVE, Ordering::AcqRel);
        // Host calls never block for long (their contract): wait for those in progress.
        while slot.state.load(Ordering::Acquire) != 0 {
            std::thread::yield_now();
        }
        // SAFETY: LIVE is clear and no host call is in progress: nobody reads `host`.
        unsafe { *slot.host.get() = None };
        SLAB.give_back(slot);
    }
}

/// Runs `call` with a C context routed to `host` (`struct dynplug_context`), for a
/// version 2 plugin's `execute_ctx`. The context stays readable after `call` returns,
/// but is closed: every later call through it is a no-op answering "dropped" (see the
/// module documentation).
pub fn with_context<R>(host: &dyn Host, call: impl FnOnce(*const HostContext) -> R) -> R {
    let lent = Lent::open(host);
    call(&lent.slot.ctx)
}

/// A host call in progress through a live slot.
struct Entered {
    slot: &'static Slot,
}

impl Entered {
    /// Enters the slot behind `ctx` if its call is still running; a context past its
    /// call retires its slot and gets `None`.
    ///
    /// # Safety
    /// `ctx` must be a context lent by [`with_context`] (slots are never freed, so it
    /// may be one whose call returned).
    unsafe fn enter(ctx: *const HostContext) -> Option<Entered> {
        // SAFETY: `ctx` is the first field of a `#[repr(C)]`, never freed Slot.
        let slot: &'static Slot = unsafe { &*ctx.cast::<Slot>() };
        let mut state = slot.state.load(Ordering::Acquire);
        loop {
            if state & LIVE == 0 {
                SLAB.retire(slot);
                return None;
            }
            match slot.state.compare_exchange_weak(
                state,
                state + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Entered { slot }),
                Err(now) => state = now,
            }
        }
    }

    fn host(&self) -> &dyn Host {
        // SAFETY: we entered while LIVE was set, so the slot's owner waits for us to
        // leave before it clears `host` or lets its host go.
        let host = unsafe { *self.slot.host.get() }.expect("a live slot has a host");
        // SAFETY: as above: the host outlives this host call.
        unsafe { host.as_ref() }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.slot.state.fetch_sub(1, Ordering::Release);
    }
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
// line or payload costs. A context past its call is a no-op, checked before the text
// is looked at.

unsafe extern "C" fn frame_log(ctx: *const HostContext, level: u32, msg: *const u8, len: usize) {
    // SAFETY: the plugin passes back a context it was lent.
    let Some(entered) = (unsafe { Entered::enter(ctx) }) else {
        return;
    };
    // SAFETY: the plugin passes a valid slice (see above).
    let msg = unsafe { text(msg, len) };
    entered.host().log(Level::from_abi(level), &msg);
}

unsafe extern "C" fn frame_progress(ctx: *const HostContext, f: f64, t: *const u8, len: usize) {
    // SAFETY: as in `frame_log`.
    let Some(entered) = (unsafe { Entered::enter(ctx) }) else {
        return;
    };
    // SAFETY: as in `frame_log`.
    let t = unsafe { text(t, len) };
    entered.host().progress(f, &t);
}

unsafe extern "C" fn frame_cancelled(ctx: *const HostContext) -> i32 {
    // SAFETY: as in `frame_log`.
    match unsafe { Entered::enter(ctx) } {
        Some(entered) => i32::from(entered.host().cancelled()),
        // The call is over: whatever still polls should stop.
        None => 1,
    }
}

unsafe extern "C" fn frame_emit(
    ctx: *const HostContext,
    event: *const u8,
    event_len: usize,
    payload: *const u8,
    payload_len: usize,
) -> i32 {
    // SAFETY: as in `frame_log`.
    let Some(entered) = (unsafe { Entered::enter(ctx) }) else {
        return 1;
    };
    // SAFETY: as in `frame_log`.
    let (e, p) = unsafe { (text(event, event_len), text(payload, payload_len)) };
    i32::from(!entered.host().emit(&e, &p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Counts what reaches it.
    #[derive(Default)]
    struct Counter {
        logs: AtomicU32,
        progress: AtomicU32,
        emits: AtomicU32,
    }

    impl Host for Counter {
        fn log(&self, _: Level, _: &str) {
            self.logs.fetch_add(1, Ordering::Relaxed);
        }
        fn progress(&self, _: f64, _: &str) {
            self.progress.fetch_add(1, Ordering::Relaxed);
        }
        fn cancelled(&self) -> bool {
            false
        }
        fn emit(&self, _: &str, _: &str) -> bool {
            self.emits.fetch_add(1, Ordering::Relaxed);
            true
        }
    }

    /// Calls every function of `ctx` once; returns what cancelled and emit answered.
    fn use_context(ctx: *const HostContext) -> (i32, i32) {
        // SAFETY: a context lent by `with_context` (live or closed) and valid slices.
        unsafe {
            let c = &*ctx;
            (c.log)(ctx, abi::LOG_INFO, b"line".as_ptr(), 4);
            (c.progress)(ctx, 0.5, b"half".as_ptr(), 4);
            let emitted = (c.emit)(ctx, b"ev".as_ptr(), 2, b"{}".as_ptr(), 2);
            ((c.cancelled)(ctx), emitted)
        }
    }

    #[test]
    fn a_context_past_its_call_reaches_nothing_and_answers_dropped() {
        let first = Counter::default();
        let kept = with_context(&first, |ctx| {
            assert_eq!(use_context(ctx), (0, 0), "live: served");
            ctx as usize
        });
        let kept = kept as *const HostContext;
        assert_eq!(use_context(kept), (1, 1), "closed: cancelled and dropped");
        assert_eq!(first.logs.load(Ordering::Relaxed), 1);
        // A later call never gets the kept context, and the kept one stays inert.
        let second = Counter::default();
        with_context(&second, |ctx| {
            assert_ne!(ctx, kept);
            assert_eq!(use_context(kept), (1, 1));
            assert_eq!(use_context(ctx), (0, 0));
        });
        assert_eq!(second.progress.load(Ordering::Relaxed), 1);
        assert_eq!(first.progress.load(Ordering::Relaxed), 1);
        assert_eq!(first.emits.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_thread_using_the_context_while_the_call_ends_is_waited_for() {
        let host = Counter::default();
        let (ctx, worker) = with_context(&host, |ctx| {
            let addr = ctx as usize;
            let worker = std::thread::spawn(move || {
                let ctx = addr as *const HostContext;
                let mut served = 0u32;
                // Until the call is over, then some more.
                while use_context(ctx).1 == 0 {
                    served += 1;
                }
                for _ in 0..1000 {
                    assert_eq!(use_context(ctx), (1, 1));
                }
                served
            });
            // The call lasts a while, so the thread overlaps its end.
            std::thread::sleep(std::time::Duration::from_millis(20));
            (addr, worker)
        });
        let served = worker.join().unwrap();
        assert_eq!(host.emits.load(Ordering::Relaxed), served);
        // Closed slots are not lent again before the cooldown: a fresh call never gets it.
        let other = Counter::default();
        for _ in 0..100 {
            with_context(&other, |c| assert_ne!(c as usize, ctx));
        }
    }
}
