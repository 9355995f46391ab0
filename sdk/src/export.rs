//! The plugin side of the ABI: the `extern "C"` shims that [`register_plugin!`]
//! instantiates for a [`Plugin`] type. Not meant to be called directly.
//!
//! [`register_plugin!`]: crate::register_plugin

use std::any::Any;
use std::ffi::{c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use crate::abi::{self, Buf, HostContext, PluginTable, PluginTableV2};
use crate::context::Context;
use crate::plugin::{Plugin, PluginResult};

/// A built table plus the strings it points into; lives in a `static`.
#[derive(Debug)]
pub struct Exported {
    table: PluginTableV2,
    _strings: [CString; 3],
}

// SAFETY: the raw pointers in the table point into `_strings`, owned by the same value
// and never mutated after construction; the function pointers are plain code.
unsafe impl Send for Exported {}
// SAFETY: see `Send`: the value is immutable after construction.
unsafe impl Sync for Exported {}

fn c_string(s: &str) -> CString {
    // A name with an interior NUL is cut there; the host then validates what is left.
    let end = s.find('\0').unwrap_or(s.len());
    CString::new(&s[..end]).unwrap_or_default()
}

/// Builds (once) and returns the table for `T`; null if `T::new` panicked.
pub fn entry<T: Plugin>(
    cell: &'static OnceLock<Option<Exported>>,
    new: fn() -> T,
    create: abi::CreateFn,
) -> *const PluginTable {
    let exported = cell.get_or_init(|| {
        catch_unwind(|| {
            let proto = new();
            let strings = [
                c_string(proto.name()),
                c_string(proto.version()),
                c_string(proto.description()),
            ];
            let flags = if proto.is_service() {
                abi::FLAG_SERVICE
            } else {
                0
            };
            let table = PluginTableV2 {
                base: PluginTable {
                    magic: abi::MAGIC,
                    abi_version: abi::ABI_VERSION,
                    struct_size: abi::TABLE_SIZE,
                    flags,
                    name: strings[0].as_ptr(),
                    version: strings[1].as_ptr(),
                    description: strings[2].as_ptr(),
                    create: Some(create),
                    destroy: Some(destroy::<T>),
                    execute: Some(execute::<T>),
                    free_buf: Some(free_buf),
                    configure: Some(configure::<T>),
                    start: Some(start::<T>),
                    stop: Some(stop::<T>),
                },
                execute_ctx: Some(execute_ctx::<T>),
            };
            Exported {
                table,
                _strings: strings,
            }
        })
        .ok()
    });
    match exported {
        // The version 2 table begins with the version 1 table (`#[repr(C)]`).
        Some(e) => &e.table.base as *const PluginTable,
        None => std::ptr::null(),
    }
}

/// Constructs an instance on the heap; null if the constructor panicked.
pub fn create<T: Plugin>(new: fn() -> T) -> *mut c_void {
    match catch_unwind(new) {
        Ok(plugin) => Box::into_raw(Box::new(plugin)).cast(),
        Err(_) => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn destroy<T: Plugin>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: the host passes back a pointer made by `create::<T>`, exactly once.
    let plugin = unsafe { Box::from_raw(instance.cast::<T>()) };
    // A panicking Drop must not unwind into the host.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(plugin)));
}

/// Moves `bytes` into a plugin-owned buffer.
fn to_buf(bytes: Vec<u8>) -> Buf {
    if bytes.is_empty() {
        return Buf::EMPTY;
    }
    let boxed = bytes.into_boxed_slice();
    let len = boxed.len();
    Buf {
        ptr: Box::into_raw(boxed).cast::<u8>(),
        len,
    }
}

unsafe extern "C" fn free_buf(buf: Buf) {
    if buf.ptr.is_null() {
        return;
    }
    // SAFETY: `buf` was made by `to_buf` in this library: a leaked `Box<[u8]>` of `len`.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(buf.ptr, buf.len)) });
}

std::thread_local! {
    /// Whether this thread is inside a guarded call (its panics are caught and reported).
    static IN_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Where the panic being caught happened.
    static PANIC_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Installs (once per plugin library: each has its own standard library) a panic hook
/// that stays quiet for panics caught at the ABI boundary and only notes their
/// location: the host reports such a panic as one error with message and location,
/// not as a backtrace on stderr. Panics elsewhere go to the hook that was there.
fn quiet_caught_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_CALL.with(std::cell::Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()));
                PANIC_AT.with(|p| *p.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload");
    match PANIC_AT.with(|p| p.borrow_mut().take()) {
        Some(at) => format!("plugin panicked at {at}: {text}"),
        None => format!("plugin panicked: {text}"),
    }
}

/// Runs `call` with panics caught, writes its output or error to `out`, returns a status.
///
/// # Safety
/// `instance` must come from `create::<T>`; `out` must be valid for writes.
unsafe fn guarded<T: Plugin>(
    instance: *mut c_void,
    out: *mut Buf,
    call: impl FnOnce(&T) -> PluginResult<String>,
) -> i32 {
    if instance.is_null() || out.is_null() {
        return abi::STATUS_ERROR;
    }
    // SAFETY: per the contract above, `instance` points to a live `T`.
    let plugin = unsafe { &*instance.cast::<T>() };
    quiet_caught_panics();
    let outer = IN_CALL.with(|c| c.replace(true));
    let caught = catch_unwind(AssertUnwindSafe(|| call(plugin)));
    IN_CALL.with(|c| c.set(outer));
    let (status, bytes) = match caught {
        Ok(Ok(output)) => (abi::STATUS_OK, output.into_bytes()),
        Ok(Err(err)) => (abi::STATUS_ERROR, err.to_string().into_bytes()),
        Err(payload) => (abi::STATUS_PANIC, panic_message(&*payload).into_bytes()),
    };
    // SAFETY: `out` is valid for writes per the contract.
    unsafe { out.write(to_buf(bytes)) };
    status
}

/// Borrows `len` bytes at `ptr` as UTF-8.
///
/// # Safety
/// `ptr` must be valid for `len` bytes (or `len` must be 0).
unsafe fn input_str<'a>(ptr: *const u8, len: usize) -> PluginResult<&'a str> {
    let bytes = if len == 0 || ptr.is_null() {
        &[][..]
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    };
    Ok(std::str::from_utf8(bytes).map_err(|e| format!("input is not valid UTF-8: {e}"))?)
}

unsafe extern "C" fn execute<T: Plugin>(
    instance: *mut c_void,
    input: *const u8,
    len: usize,
    out: *mut Buf,
) -> i32 {
    // SAFETY: forwarded from the ABI contract of `execute`.
    unsafe {
        guarded::<T>(instance, out, |p| {
            let input = input_str(input, len)?;
            p.execute_with(&Context::detached(), input)
        })
    }
}

unsafe extern "C" fn execute_ctx<T: Plugin>(
    instance: *mut c_void,
    ctx: *const HostContext,
    input: *const u8,
    len: usize,
    out: *mut Buf,
) -> i32 {
    // SAFETY: the host passes a context valid for the duration of the call (or null).
    let ctx = unsafe { Context::from_raw(ctx) };
    // SAFETY: forwarded from the ABI contract of `execute_ctx`.
    unsafe {
        guarded::<T>(instance, out, |p| {
            let input = input_str(input, len)?;
            p.execute_with(&ctx, input)
        })
    }
}

unsafe extern "C" fn configure<T: Plugin>(
    instance: *mut c_void,
    settings: *const u8,
    len: usize,
    out: *mut Buf,
) -> i32 {
    // SAFETY: forwarded from the ABI contract of `configure`.
    unsafe {
        guarded::<T>(instance, out, |p| {
            let settings = input_str(settings, len)?;
            p.configure(settings).map(|()| String::new())
        })
    }
}

unsafe extern "C" fn start<T: Plugin>(instance: *mut c_void, out: *mut Buf) -> i32 {
    // SAFETY: forwarded from the ABI contract of `start`.
    unsafe { guarded::<T>(instance, out, |p| p.start().map(|()| String::new())) }
}

unsafe extern "C" fn stop<T: Plugin>(instance: *mut c_void, out: *mut Buf) -> i32 {
    // SAFETY: forwarded from the ABI contract of `stop`.
    unsafe { guarded::<T>(instance, out, |p| p.stop().map(|()| String::new())) }
}
