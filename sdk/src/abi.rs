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

/// The newest ABI version this crate speaks, and the one [`register_plugin!`] exports.
/// Version 2 is version 1 plus [`PluginTableV2::execute_ctx`], which receives a
/// [`HostContext`]. A host loads every version from [`ABI_VERSION_MIN`] to this one and
/// refuses others, naming both.
///
/// [`register_plugin!`]: crate::register_plugin
pub const ABI_VERSION: u32 = 2;

/// The oldest ABI version a host of this crate still loads.
pub const ABI_VERSION_MIN: u32 = 1;

/// Name of the exported entry point, NUL-terminated for `dlsym`.
pub const ENTRY_SYMBOL: &[u8] = b"dynplug_plugin_entry\0";

/// A call succeeded; the buffer holds the output (or is empty).
pub const STATUS_OK: i32 = 0;
/// The plugin reported an error; the buffer holds a UTF-8 message.
pub const STATUS_ERROR: i32 = 1;
/// The plugin panicked (or, in C, hit an internal fault); the buffer holds a message.
pub const STATUS_PANIC: i32 = 2;

/// The ELF section that carries a plugin's metadata, readable without loading the
/// library (see [`META_MAGIC`] for its layout).
pub const META_SECTION: &str = ".dynplug.meta";

/// How the metadata section begins. After it come records `key=value`, each ended by a
/// NUL byte, and an empty record at the end: `meta` (the layout's version, `1`), `name`,
/// `version`, `description`, `abi` (the plugin's ABI version), and optionally `service`
/// (`true`/`false`), `settings_schema` (a JSON Schema for the plugin's `settings`) and
/// `sandbox` (what an isolated worker of it needs, free text). Unknown keys are kept.
pub const META_MAGIC: &[u8] = b"DYNPLUG\0";

/// The bytes of `text` as an array, for a `#[link_section]` static built at compile time
/// by [`register_plugin!`](crate::register_plugin).
#[doc(hidden)]
pub const fn meta_bytes<const N: usize>(text: &str) -> [u8; N] {
    let bytes = text.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

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

/// The table a plugin exports: all of it in version 1, the head of [`PluginTableV2`] in
/// version 2. Layout is `#[repr(C)]`; versions only append fields.
#[repr(C)]
#[derive(Debug)]
pub struct PluginTable {
    /// Must equal [`MAGIC`].
    pub magic: u32,
    /// The ABI version the table follows, [`ABI_VERSION_MIN`]..=[`ABI_VERSION`].
    pub abi_version: u32,
    /// `sizeof` the table as the plugin was compiled: at least [`TABLE_SIZE_V1`] in
    /// version 1 and [`TABLE_SIZE`] in version 2.
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

/// Runs the plugin on `input` like [`ExecuteFn`], with the host's services for this
/// call in `ctx` (for this call only: once the function returned, `ctx` stays readable
/// but every call through it is a no-op answering "dropped").
pub type ExecuteCtxFn = unsafe extern "C" fn(
    instance: *mut c_void,
    ctx: *const HostContext,
    input: *const u8,
    len: usize,
    out: *mut Buf,
) -> i32;

/// The table of ABI version 2: version 1's, then the functions version 2 adds.
#[repr(C)]
#[derive(Debug)]
pub struct PluginTableV2 {
    /// The version 1 fields, with `abi_version` 2.
    pub base: PluginTable,
    /// Optional: when set, the host calls it instead of `execute`, with a context.
    pub execute_ctx: Option<ExecuteCtxFn>,
}

/// Log levels a plugin passes to [`HostContext::log`].
pub const LOG_ERROR: u32 = 1;
/// Warning.
pub const LOG_WARN: u32 = 2;
/// Information.
pub const LOG_INFO: u32 = 3;
/// Debugging detail.
pub const LOG_DEBUG: u32 = 4;
/// Tracing detail.
pub const LOG_TRACE: u32 = 5;

/// Writes a log line (UTF-8, `len` bytes) at a `LOG_*` level.
pub type LogFn =
    unsafe extern "C" fn(ctx: *const HostContext, level: u32, msg: *const u8, len: usize);
/// Reports progress: `fraction` in 0..=1 (or negative when unknown) and a status text.
pub type ProgressFn =
    unsafe extern "C" fn(ctx: *const HostContext, fraction: f64, text: *const u8, len: usize);
/// Returns 1 once the caller gave up on this call (cancelled, or past its timeout).
pub type CancelledFn = unsafe extern "C" fn(ctx: *const HostContext) -> i32;
/// Publishes an event (name and payload, both UTF-8) for subscribers to see.
pub type EmitFn = unsafe extern "C" fn(
    ctx: *const HostContext,
    event: *const u8,
    event_len: usize,
    payload: *const u8,
    payload_len: usize,
) -> i32;

/// The host's services for one call (ABI version 2), passed to
/// [`PluginTableV2::execute_ctx`]. Every function takes the context itself as its first
/// argument. The context serves the call, from the thread that made it or any other,
/// and its functions never block for long. After the call it stays readable but inert:
/// `log` and `progress` do nothing, `emit` returns 1 and `cancelled` returns 1 (the
/// host module of this crate keeps contexts that way).
#[repr(C)]
#[derive(Debug)]
pub struct HostContext {
    /// `sizeof` the context as the host laid it out; fields past it are absent.
    pub struct_size: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Log through the host's logging (the journal under systemd).
    pub log: LogFn,
    /// Report progress of this call.
    pub progress: ProgressFn,
    /// Whether the caller gave up.
    pub cancelled: CancelledFn,
    /// Publish an event. Returns 0 when published, 1 when dropped (a bad name, too
    /// large, over the plugin's event budget, or the call is over).
    pub emit: EmitFn,
}

/// Signature of the exported entry point.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginTable;

/// Size of a version 1 table.
pub const TABLE_SIZE_V1: u32 = std::mem::size_of::<PluginTable>() as u32;

/// Size of the table of the newest version, [`PluginTableV2`].
pub const TABLE_SIZE: u32 = std::mem::size_of::<PluginTableV2>() as u32;

/// Size of [`HostContext`] as this crate lays it out.
pub const CONTEXT_SIZE: u32 = std::mem::size_of::<HostContext>() as u32;
