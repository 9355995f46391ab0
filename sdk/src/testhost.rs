//! [`TestHost`]: a stand-in for the daemon, so plugin authors test their plugin through
//! the real ABI — its table, its `extern "C"` functions, the host context of version 2 —
//! and see what it logged, reported and published.
//!
//! ```
//! use dynplug_sdk::{register_plugin, Context, Level, Plugin, PluginResult, TestHost};
//!
//! pub struct Steps;
//! impl Steps { pub fn new() -> Self { Steps } }
//! impl Plugin for Steps {
//!     fn name(&self) -> &str { "steps" }
//!     fn version(&self) -> &str { "1.0.0" }
//!     fn description(&self) -> &str { "three steps" }
//!     fn execute_with(&self, ctx: &Context<'_>, _input: &str) -> PluginResult<String> {
//!         for step in 1..=3 {
//!             if ctx.cancelled() {
//!                 return Err("cancelled".into());
//!             }
//!             ctx.progress(f64::from(step) / 3.0, &format!("step {step}"));
//!         }
//!         ctx.info("done");
//!         ctx.emit("finished", "{}");
//!         Ok("ok".into())
//!     }
//! }
//! register_plugin!(Steps);
//!
//! let host = TestHost::new(dynplug_plugin_entry).unwrap();
//! assert_eq!(host.execute("").unwrap(), "ok");
//! assert_eq!(host.progress().len(), 3);
//! assert_eq!(host.logs(), vec![(Level::Info, "done".to_string())]);
//! assert_eq!(host.events(), vec![("finished".to_string(), "{}".to_string())]);
//!
//! // Cancelled once the first step is reported: the plugin stops there.
//! host.clear();
//! host.cancel_at_progress(0.3);
//! assert_eq!(host.execute("").unwrap_err(), "cancelled");
//! assert_eq!(host.progress().len(), 1);
//! ```

use std::ffi::{c_void, CStr};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::abi::{self, Buf, EntryFn, PluginTable, PluginTableV2};
use crate::context::Level;
use crate::host::{with_context, Host};

/// What a plugin did through its host context, and whether its caller gave up: the
/// record a [`TestHost`] keeps (its methods are reachable on the host itself).
#[derive(Debug, Default)]
pub struct Recorder {
    logs: Mutex<Vec<(Level, String)>>,
    progress: Mutex<Vec<(f64, String)>>,
    events: Mutex<Vec<(String, String)>>,
    cancelled: AtomicBool,
    cancel_at: Mutex<Option<f64>>,
}

impl Recorder {
    /// Records a log line.
    pub fn log(&self, level: Level, message: &str) {
        lock(&self.logs).push((level, message.to_owned()));
    }

    /// Records a progress report (and cancels, if [`Recorder::cancel_at_progress`]
    /// says so).
    pub fn report_progress(&self, fraction: f64, text: &str) {
        lock(&self.progress).push((fraction, text.to_owned()));
        if lock(&self.cancel_at).is_some_and(|at| fraction >= at) {
            self.cancel();
        }
    }

    /// Records an event.
    pub fn emit(&self, event: &str, payload: &str) {
        lock(&self.events).push((event.to_owned(), payload.to_owned()));
    }

    /// Whether the plugin's `cancelled()` is true.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Makes the plugin's `cancelled()` true, for this and later calls.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Cancels once the plugin reports progress of at least `fraction`.
    pub fn cancel_at_progress(&self, fraction: f64) {
        *lock(&self.cancel_at) = Some(fraction);
    }

    /// The log lines so far, with their levels.
    pub fn logs(&self) -> Vec<(Level, String)> {
        lock(&self.logs).clone()
    }

    /// The progress reports so far: fraction and text.
    pub fn progress(&self) -> Vec<(f64, String)> {
        lock(&self.progress).clone()
    }

    /// The events so far: name and payload.
    pub fn events(&self) -> Vec<(String, String)> {
        lock(&self.events).clone()
    }

    /// Forgets what was recorded and any cancellation.
    pub fn clear(&self) {
        lock(&self.logs).clear();
        lock(&self.progress).clear();
        lock(&self.events).clear();
        *lock(&self.cancel_at) = None;
        self.cancelled.store(false, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Host for Recorder {
    fn log(&self, level: Level, message: &str) {
        Recorder::log(self, level, message);
    }
    fn progress(&self, fraction: f64, text: &str) {
        self.report_progress(fraction, text);
    }
    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }
    fn emit(&self, event: &str, payload: &str) -> bool {
        Recorder::emit(self, event, payload);
        true
    }
}

/// A host for one plugin instance, made from the plugin's entry point
/// (`dynplug_plugin_entry`, which [`register_plugin!`](crate::register_plugin) defines
/// in the plugin's crate; a C plugin's can be found with `dlsym`).
#[derive(Debug)]
pub struct TestHost {
    table: &'static PluginTable,
    execute_ctx: Option<abi::ExecuteCtxFn>,
    instance: NonNull<c_void>,
    record: Arc<Recorder>,
}

impl std::ops::Deref for TestHost {
    type Target = Recorder;

    fn deref(&self) -> &Recorder {
        &self.record
    }
}

impl TestHost {
    /// Checks the plugin's table as the daemon does and creates an instance.
    pub fn new(entry: EntryFn) -> Result<TestHost, String> {
        // SAFETY: the entry point takes no arguments and returns static data or null.
        let ptr = unsafe { entry() };
        // SAFETY: what an entry point returns is what `from_table` takes.
        unsafe { TestHost::from_table(ptr) }
    }

    /// Like [`TestHost::new`], from the table an entry point returned.
    ///
    /// # Safety
    /// `ptr` must be null or point to a plugin table that lives for the rest of the
    /// process, as an entry point's does.
    pub unsafe fn from_table(ptr: *const PluginTable) -> Result<TestHost, String> {
        if ptr.is_null() {
            return Err("the entry point returned null".into());
        }
        // SAFETY: non-null; the leading fields exist in every version, checked before
        // anything else is read.
        let table: &'static PluginTable = unsafe { &*ptr };
        if table.magic != abi::MAGIC {
            return Err(format!("wrong magic {:#010x}", table.magic));
        }
        let size = match table.abi_version {
            1 => abi::TABLE_SIZE_V1,
            2 => abi::TABLE_SIZE,
            v => {
                return Err(format!(
                    "the plugin is built for ABI version {v}; this host speaks {}..={}",
                    abi::ABI_VERSION_MIN,
                    abi::ABI_VERSION
                ))
            }
        };
        if table.struct_size < size {
            return Err(format!(
                "table of {} bytes, less than {size}",
                table.struct_size
            ));
        }
        let execute_ctx = (table.abi_version >= 2)
            // SAFETY: a version 2 table of at least `TABLE_SIZE` bytes is a `PluginTableV2`.
            .then(|| unsafe { &*ptr.cast::<PluginTableV2>() }.execute_ctx)
            .flatten();
        let (Some(create), true) = (table.create, table.execute.is_some()) else {
            return Err("create or execute is null".into());
        };
        // SAFETY: `create` takes no arguments.
        let instance = NonNull::new(unsafe { create() })
            .ok_or_else(|| "the plugin's constructor failed".to_string())?;
        Ok(TestHost {
            table,
            execute_ctx,
            instance,
            record: Arc::default(),
        })
    }

    /// The plugin's name from its table.
    pub fn name(&self) -> String {
        // SAFETY: the ABI requires a NUL-terminated static string.
        unsafe { CStr::from_ptr(self.table.name) }
            .to_string_lossy()
            .into_owned()
    }

    /// The ABI version the plugin declared.
    pub fn abi_version(&self) -> u32 {
        self.table.abi_version
    }

    fn finish(&self, status: i32, out: Buf) -> Result<String, String> {
        let bytes = if out.ptr.is_null() {
            Vec::new()
        } else {
            // SAFETY: the plugin filled `out` with `len` readable bytes.
            unsafe { std::slice::from_raw_parts(out.ptr, out.len) }.to_vec()
        };
        if let Some(free) = self.table.free_buf {
            // SAFETY: the buffer came from this plugin and is released once.
            unsafe { free(out) };
        }
        let text = String::from_utf8(bytes).map_err(|_| "output is not UTF-8".to_string())?;
        match status {
            abi::STATUS_OK => Ok(text),
            _ => Err(text),
        }
    }

    /// Hands the plugin its settings (JSON object text), as the daemon does.
    pub fn configure(&self, settings_json: &str) -> Result<(), String> {
        let Some(f) = self.table.configure else {
            return Ok(());
        };
        let mut out = Buf::EMPTY;
        // SAFETY: a live instance; the slice is valid for the call.
        let status = unsafe {
            f(
                self.instance.as_ptr(),
                settings_json.as_ptr(),
                settings_json.len(),
                &mut out,
            )
        };
        self.finish(status, out).map(drop)
    }

    /// Runs one call through the ABI, with a context (version 2 plugins) that records
    /// into this host. Returns the output, or the error or panic message.
    pub fn execute(&self, input: &str) -> Result<String, String> {
        let mut out = Buf::EMPTY;
        let status = match self.execute_ctx {
            Some(f) => {
                // SAFETY: a live instance; the input outlives the call and the context
                // stays readable after it.
                with_context(&*self.record, |ctx| unsafe {
                    f(
                        self.instance.as_ptr(),
                        ctx,
                        input.as_ptr(),
                        input.len(),
                        &mut out,
                    )
                })
            }
            None => {
                let f = self.table.execute.expect("checked in new");
                // SAFETY: a live instance; the input outlives the call.
                unsafe {
                    f(
                        self.instance.as_ptr(),
                        input.as_ptr(),
                        input.len(),
                        &mut out,
                    )
                }
            }
        };
        self.finish(status, out)
    }

    /// The record shared with the plugin's calls, to cancel from another thread.
    pub fn recorder(&self) -> Arc<Recorder> {
        Arc::clone(&self.record)
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(destroy) = self.table.destroy {
            // SAFETY: the instance came from `create` and is destroyed once.
            unsafe { destroy(self.instance.as_ptr()) };
        }
    }
}
