//! The C ABI between the host and a plugin library.
//!
//! This module mirrors `sdk/include/dynplug.h` field for field; the header is the
//! normative description for plugin authors in other languages. A plugin library
//! exports one function, [`ENTRY_SYMBOL`], that returns a pointer to a static
//! [`PluginTable`]. The host checks [`PluginTable::magic`], [`PluginTable::abi_version`]
//! and [`PluginTable::struct_size`] before it reads or calls anything else.
//!
//! Ownership: every [`Buf`] a plugin fills is allocated by the plugin and handed back
//! to the plugin's own `free_buf`; the host never frees plugin memory and the plugin
//! never frees host memory (input is borrowed for the duration of a call).

use std::ffi::{c_char, c_void};

/// First field of every table: the bytes `DYPL` read as a little-endian `u32`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"DYPL");

/// The ABI version this crate speaks. Bumped on any incompatible change to
/// [`PluginTable`]; the host refuses tables of another version.
pub const ABI_VERSION: u32 = 1;

/// Name of the exported entry point, NUL-terminated for `dlsym`.
pub const ENTRY_SYMBOL: &[u8] = b"dynplug_plugin_entry\0";

/// A call succeeded; the buffer holds the output (or is empty).
pub const STATUS_OK: i32 = 0;
/// The plugin reported an error; the buffer holds a UTF-8 message.
pub const STATUS_ERROR: i32 = 1;
/// The plugin panicked (or, in C, hit an internal fault); the buffer holds a message.
pub const STATUS_PANIC: i32 = 2;

/// Flag: the plugin runs a long-lived service through `start`/`stop`.
pub const FLAG_SERVICE: u32 = 1;

/// A byte buffer allocated by the plugin and released with the plugin's `free_buf`.
#[repr(C)]
#[derive(Debug)]
pub struct Buf {
    /// Start of the bytes, or null when empty.
    pub ptr: *mut u8,
    /// Number of bytes.
    pub len: usize,
}

impl Buf {
    /// An empty buffer (null pointer, zero length), as the host passes it in.
    pub const EMPTY: Buf = Buf {
        ptr: std::ptr::null_mut(),
        len: 0,
    };
}

/// Creates a plugin instance; null means the constructor failed.
pub type CreateFn = unsafe extern "C" fn() -> *mut c_void;
/// Destroys an instance made by [`CreateFn`].
pub type DestroyFn = unsafe extern "C" fn(instance: *mut c_void);
/// Runs the plugin on `input` (UTF-8, `len` bytes); fills `out` and returns a status.
pub type ExecuteFn =
    unsafe extern "C" fn(instance: *mut c_void, input: *const u8, len: usize, out: *mut Buf) -> i32;
/// Hands the plugin its settings as a JSON object (UTF-8, `len` bytes).
pub type ConfigureFn = unsafe extern "C" fn(
    instance: *mut c_void,
    settings_json: *const u8,
    len: usize,
    out: *mut Buf,
) -> i32;
/// Runs (`start`) or asks to end (`stop`) the plugin's service.
pub type ServiceFn = unsafe extern "C" fn(instance: *mut c_void, out: *mut Buf) -> i32;
/// Releases a buffer the plugin filled.
pub type FreeBufFn = unsafe extern "C" fn(buf: Buf);

/// The table a plugin exports. Layout is `#[repr(C)]` and append-only within one
/// [`ABI_VERSION`].
#[repr(C)]
#[derive(Debug)]
pub struct PluginTable {
    /// Must equal [`MAGIC`].
    pub magic: u32,
    /// Must equal the host's [`ABI_VERSION`].
    pub abi_version: u32,
    /// `sizeof` the table as the plugin was compiled; at least the host's size.
    pub struct_size: u32,
    /// Bit set of `FLAG_*` values.
    pub flags: u32,
    /// Plugin name, NUL-terminated UTF-8, valid for the life of the library.
    pub name: *const c_char,
    /// Semantic version, NUL-terminated UTF-8.
    pub version: *const c_char,
    /// One-line description, NUL-terminated UTF-8.
    pub description: *const c_char,
    /// Required.
    pub create: Option<CreateFn>,
    /// Required.
    pub destroy: Option<DestroyFn>,
    /// Required.
    pub execute: Option<ExecuteFn>,
    /// Required.
    pub free_buf: Option<FreeBufFn>,
    /// Optional: null means the plugin takes no settings.
    pub configure: Option<ConfigureFn>,
    /// Optional: runs the service until `stop` is called (service plugins only).
    pub start: Option<ServiceFn>,
    /// Optional: asks a running `start` to return.
    pub stop: Option<ServiceFn>,
}

/// Signature of the exported entry point.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginTable;

/// Size of [`PluginTable`] as this crate lays it out.
pub const TABLE_SIZE: u32 = std::mem::size_of::<PluginTable>() as u32;
