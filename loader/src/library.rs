//! Opening a plugin library, checking its table, and calling into it safely.
//!
//! [`PluginLibrary::open`] runs the trust checks, `dlopen`s the file, finds the entry
//! point and checks magic, ABI version and table size before it reads anything else.
//! [`Instance`] wraps one plugin instance and turns every ABI call into a `Result`.
//!
//! Libraries are never closed: `dlclose` of a Rust library that used thread-local
//! storage is unsound on Linux, so a library stays mapped until the process ends.
//! Disabling or removing a plugin only stops the host from calling it.

use std::ffi::{c_void, CStr};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::error::{CallError, LoadError};
use crate::metadata::{self, Metadata};
use crate::name::validate_plugin_name;
use crate::sealed::SealedImage;
use crate::settings_schema::SettingsSchema;
use crate::signature::Verdict;
use crate::trust::TrustPolicy;
use dynplug_sdk::abi::{self, Buf, PluginTable};
use dynplug_sdk::host::{with_context, Host};

pub use crate::sealed::FileIdentity;

/// What a probe process found a library to declare (its table, checked there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its description.
    pub description: String,
    /// The ABI version of its table.
    pub abi_version: u32,
    /// Whether it runs a service.
    pub service: bool,
}

/// An opened, checked plugin library.
#[derive(Debug)]
pub struct PluginLibrary {
    path: PathBuf,
    identity: FileIdentity,
    /// The table, for libraries loaded into this process; `None` for plugins that run
    /// only in worker processes (described by a probe).
    table: Option<&'static PluginTable>,
    /// Version 2's `execute_ctx`, when the plugin has one.
    execute_ctx: Option<abi::ExecuteCtxFn>,
    abi_version: u32,
    service: bool,
    name: String,
    version: String,
    description: String,
    /// What the file's `.dynplug.meta` section says, if it has one.
    metadata: Option<Arc<Metadata>>,
    /// Its settings schema, compiled, if it declares one.
    schema: Option<Arc<SettingsSchema>>,
    /// What its signature check found, and the identity of the signature file then.
    signature: (Verdict, Option<FileIdentity>),
    /// For a plugin that runs only in workers: the sealed image its workers load.
    image: Option<Arc<SealedImage>>,
}

// SAFETY: the table is immutable static data of a library that is never unloaded; the
// ABI requires its functions to be callable from any thread.
unsafe impl Send for PluginLibrary {}
// SAFETY: see `Send`.
unsafe impl Sync for PluginLibrary {}

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";

fn read_c_str(path: &Path, field: &str, ptr: *const std::ffi::c_char) -> Result<String, LoadError> {
    let bad = |reason: String| LoadError::BadMetadata {
        path: path.to_owned(),
        reason,
    };
    if ptr.is_null() {
        return Err(bad(format!("{field} is null")));
    }
    // SAFETY: the ABI requires a NUL-terminated string that lives as long as the library.
    let s = unsafe { CStr::from_ptr(ptr) };
    if s.to_bytes().len() > 4096 {
        return Err(bad(format!("{field} is longer than 4096 bytes")));
    }
    s.to_str()
        .map(str::to_owned)
        .map_err(|_| bad(format!("{field} is not valid UTF-8")))
}

/// The settings schema `metadata` declares, compiled; a schema that does not compile
/// refuses the plugin.
fn compile_schema(
    path: &Path,
    metadata: &Metadata,
) -> Result<Option<Arc<SettingsSchema>>, LoadError> {
    metadata
        .settings_schema
        .as_deref()
        .map(|text| {
            SettingsSchema::compile(text)
                .map(Arc::new)
                .map_err(|reason| LoadError::BadMetadata {
                    path: path.to_owned(),
                    reason,
                })
        })
        .transpose()
}

/// A path to descriptor `fd` under /proc that no earlier load used. The dynamic linker
/// finds an already-loaded library by the name it was loaded under, so reusing
/// "/proc/self/fd/7" for another file would hand back the old library. Every load
/// spells the path differently: after "/proc/self/fd/" come the bits of a counter,
/// "../fd/" for a one and "./" for a zero, then the number. At most 64 steps of 6
/// bytes, well within PATH_MAX.
fn unique_fd_path(fd: std::os::fd::RawFd) -> PathBuf {
    static LOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let mut n = LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut path = String::from("/proc/self/fd/");
    while n > 0 {
        path.push_str(if n & 1 == 1 { "../fd/" } else { "./" });
        n >>= 1;
    }
    path.push_str(&fd.to_string());
    PathBuf::from(path)
}

impl PluginLibrary {
    /// Checks, opens and validates the library at `path` (a sealed image of it, under
    /// the default size bound).
    pub fn open(path: &Path, policy: TrustPolicy) -> Result<PluginLibrary, LoadError> {
        let image = SealedImage::open(path, policy, crate::sealed::DEFAULT_MAX_PLUGIN_BYTES)?;
        Self::load(path, &image)
    }

    /// Loads the library from `image` — the bytes that were judged, whatever `path`
    /// (used in messages) holds now — and validates its table.
    pub fn load(path: &Path, image: &SealedImage) -> Result<PluginLibrary, LoadError> {
        let io = |e: std::io::Error| LoadError::Io {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let mut file = image.reader().map_err(io)?;
        let mut head = [0u8; 4];
        let n = file.read(&mut head).map_err(io)?;
        if n < 4 || head != ELF_MAGIC {
            return Err(LoadError::NotALibrary {
                path: path.to_owned(),
                reason: "no ELF header".into(),
            });
        }
        // The metadata section, read from the image, before any code runs.
        let metadata = metadata::read_from(&file)
            .map_err(|e| LoadError::BadMetadata {
                path: path.to_owned(),
                reason: e.to_string(),
            })?
            .map(Arc::new);
        // Load the image through its descriptor: the bytes judged are the bytes run.
        // Under a name never used before, because the dynamic linker returns the
        // already-loaded library for a name it has seen.
        let fd_path = unique_fd_path(image.fd().as_raw_fd());
        // SAFETY: loading a library runs its initialisers. That is the point of a plugin
        // host; the trust and signature checks on the image limit it to files only
        // trusted users can write.
        let lib = unsafe {
            libloading::os::unix::Library::open(
                Some(&fd_path),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
            )
        }
        .map_err(|e| LoadError::NotALibrary {
            path: path.to_owned(),
            reason: e
                .to_string()
                .replace(&*fd_path.to_string_lossy(), &path.to_string_lossy()),
        })?;
        // The mapping outlives the descriptors, and its name is never used again: the
        // caller closes the image, so descriptors do not grow with the plugins.
        drop(file);
        // SAFETY: the symbol's type is fixed by the ABI (see `abi::EntryFn`).
        let entry = unsafe { lib.get::<abi::EntryFn>(abi::ENTRY_SYMBOL) };
        let entry = match entry {
            Ok(entry) => *entry,
            Err(_) => {
                std::mem::forget(lib);
                return Err(LoadError::MissingEntry {
                    path: path.to_owned(),
                });
            }
        };
        // Never dlclose (see module docs): the table below borrows the mapping forever.
        std::mem::forget(lib);
        // SAFETY: the entry point takes no arguments and returns a pointer to static data.
        let table_ptr = unsafe { entry() };
        let mut lib = Self::from_table(path, image.identity(), table_ptr)?;
        if let Some(metadata) = metadata {
            lib.agrees_with(&metadata)?;
            lib.schema = compile_schema(path, &metadata)?;
            lib.metadata = Some(metadata);
        }
        Ok(lib)
    }

    /// Refuses a table that says otherwise than the file's metadata section.
    fn agrees_with(&self, m: &Metadata) -> Result<(), LoadError> {
        let fields: [(&'static str, String, String); 5] = [
            ("name", m.name.clone(), self.name.clone()),
            ("version", m.version.clone(), self.version.clone()),
            (
                "description",
                m.description.clone(),
                self.description.clone(),
            ),
            (
                "abi",
                m.abi_version.to_string(),
                self.abi_version.to_string(),
            ),
            ("service", m.service.to_string(), self.service.to_string()),
        ];
        match fields
            .into_iter()
            .find(|(_, section, table)| section != table)
        {
            None => Ok(()),
            Some((field, section, table)) => Err(LoadError::MetadataMismatch {
                path: self.path.clone(),
                field,
                section,
                table,
            }),
        }
    }

    fn from_table(
        path: &Path,
        identity: FileIdentity,
        ptr: *const PluginTable,
    ) -> Result<PluginLibrary, LoadError> {
        let bad = |reason: &str| LoadError::BadTable {
            path: path.to_owned(),
            reason: reason.into(),
        };
        if ptr.is_null() {
            return Err(bad(
                "the entry point returned null (did the plugin's constructor panic?)",
            ));
        }
        // SAFETY: non-null; the three leading u32 fields exist in every ABI version, so
        // reading them is valid whatever the rest of the table looks like.
        let (magic, abi_version, struct_size) = unsafe {
            let p = ptr.cast::<u32>();
            (p.read(), p.add(1).read(), p.add(2).read())
        };
        if magic != abi::MAGIC {
            return Err(bad(&format!(
                "wrong magic {magic:#010x} (expected {:#010x})",
                abi::MAGIC
            )));
        }
        let needed = match abi_version {
            1 => abi::TABLE_SIZE_V1,
            2 => abi::TABLE_SIZE,
            _ => {
                return Err(LoadError::AbiMismatch {
                    path: path.to_owned(),
                    found: abi_version,
                    expected: abi::ABI_VERSION,
                })
            }
        };
        if struct_size < needed {
            return Err(bad(&format!(
                "table is {struct_size} bytes, smaller than the {needed} of ABI version {abi_version}",
            )));
        }
        // SAFETY: magic, version and size say this is a complete table in static memory
        // (a version 2 table begins with the version 1 fields).
        let table: &'static PluginTable = unsafe { &*ptr };
        let execute_ctx = if abi_version >= 2 {
            // SAFETY: a version 2 table of at least `TABLE_SIZE` bytes is a PluginTableV2.
            unsafe { &*ptr.cast::<abi::PluginTableV2>() }.execute_ctx
        } else {
            None
        };
        if table.create.is_none()
            || table.destroy.is_none()
            || table.execute.is_none()
            || table.free_buf.is_none()
        {
            return Err(bad(
                "a required function (create, destroy, execute, free_buf) is null",
            ));
        }
        let name = read_c_str(path, "name", table.name)?;
        validate_plugin_name(&name).map_err(|reason| LoadError::BadMetadata {
            path: path.to_owned(),
            reason,
        })?;
        let version = read_c_str(path, "version", table.version)?;
        if version.is_empty() {
            return Err(LoadError::BadMetadata {
                path: path.to_owned(),
                reason: "version is empty".into(),
            });
        }
        let description = read_c_str(path, "description", table.description)?;
        Ok(PluginLibrary {
            path: path.to_owned(),
            identity,
            table: Some(table),
            execute_ctx,
            abi_version: table.abi_version,
            service: table.flags & abi::FLAG_SERVICE != 0 && table.start.is_some(),
            name,
            version,
            description,
            metadata: None,
            schema: None,
            signature: (Verdict::NotChecked, None),
            image: None,
        })
    }

    /// Describes a library that was checked in a probe process and will only ever run
    /// in worker processes: it is not loaded into this process.
    pub fn described(path: &Path, image: Arc<SealedImage>, hello: Described) -> PluginLibrary {
        PluginLibrary {
            path: path.to_owned(),
            identity: image.identity(),
            image: Some(image),
            table: None,
            execute_ctx: None,
            abi_version: hello.abi_version,
            service: hello.service,
            name: hello.name,
            version: hello.version,
            description: hello.description,
            metadata: None,
            schema: None,
            signature: (Verdict::NotChecked, None),
        }
    }

    /// Describes a library from its metadata section alone, without loading it: for
    /// plugins that run only in worker processes, whose workers check the table
    /// against the section when they load it.
    pub fn from_metadata(
        path: &Path,
        identity: FileIdentity,
        image: Option<Arc<SealedImage>>,
        metadata: Metadata,
    ) -> Result<PluginLibrary, LoadError> {
        Ok(PluginLibrary {
            schema: compile_schema(path, &metadata)?,
            path: path.to_owned(),
            identity,
            image,
            table: None,
            execute_ctx: None,
            abi_version: metadata.abi_version,
            service: metadata.service,
            name: metadata.name.clone(),
            version: metadata.version.clone(),
            description: metadata.description.clone(),
            metadata: Some(Arc::new(metadata)),
            signature: (Verdict::NotChecked, None),
        })
    }

    /// The sealed image its workers load (plugins that run only in workers).
    pub fn image(&self) -> Option<&Arc<SealedImage>> {
        self.image.as_ref()
    }

    /// What the file's metadata section says, if it has one.
    pub fn metadata(&self) -> Option<&Metadata> {
        self.metadata.as_deref()
    }

    /// What checking its signature found (not checked when `trust.signatures` is off).
    pub fn signature(&self) -> &Verdict {
        &self.signature.0
    }

    /// The identity of its signature file when it was checked.
    pub fn signature_identity(&self) -> Option<FileIdentity> {
        self.signature.1
    }

    /// Records what checking its signature found.
    pub fn set_signature(&mut self, verdict: Verdict, file: Option<FileIdentity>) {
        self.signature = (verdict, file);
    }

    /// The plugin's settings schema, if it declares one.
    pub fn settings_schema(&self) -> Option<&SettingsSchema> {
        self.schema.as_deref()
    }

    /// Whether the library is loaded into this process (false for plugins that only
    /// run in worker processes).
    pub fn is_loaded(&self) -> bool {
        self.table.is_some()
    }

    /// The table of a library loaded into this process. Instances only exist for those.
    fn loaded_table(&self) -> &'static PluginTable {
        self.table
            .expect("instances exist only for libraries loaded in this process")
    }

    /// The plugin's name from its metadata.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The plugin's description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identity of that file at load time.
    pub fn identity(&self) -> FileIdentity {
        self.identity
    }

    /// The ABI version the plugin declared.
    pub fn abi_version(&self) -> u32 {
        self.abi_version
    }

    /// Whether the plugin runs a service.
    pub fn is_service(&self) -> bool {
        self.service
    }

    /// Constructs a plugin instance.
    pub fn instantiate(self: &Arc<Self>) -> Result<Instance, LoadError> {
        let table = self.table.ok_or_else(|| LoadError::Init {
            name: self.name.clone(),
            reason: "the plugin runs only in worker processes and is not loaded here".into(),
        })?;
        let create = table.create.expect("checked at open");
        // SAFETY: `create` takes no arguments; the ABI forbids unwinding out of it.
        let ptr = unsafe { create() };
        let ptr = NonNull::new(ptr).ok_or_else(|| LoadError::Init {
            name: self.name.clone(),
            reason: "the plugin's constructor failed".into(),
        })?;
        Ok(Instance {
            library: Arc::clone(self),
            ptr,
        })
    }
}

/// One live plugin instance. Calls may come from any thread at once, as the ABI allows.
#[derive(Debug)]
pub struct Instance {
    library: Arc<PluginLibrary>,
    ptr: NonNull<c_void>,
}

// SAFETY: the ABI requires plugin instances to be usable from any thread concurrently
// (Rust plugins are `Send + Sync` by the trait bound).
unsafe impl Send for Instance {}
// SAFETY: see `Send`.
unsafe impl Sync for Instance {}

impl Instance {
    /// The library this instance comes from.
    pub fn library(&self) -> &Arc<PluginLibrary> {
        &self.library
    }

    /// Reads the answer in `buf` in place — `use_output` gets an OK answer's bytes,
    /// errors become `CallError`s — then frees it with the plugin. An answer of more
    /// than `limit` bytes is freed unread.
    fn finish_with<R>(
        &self,
        status: i32,
        buf: Buf,
        limit: usize,
        use_output: impl FnOnce(&[u8]) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        let plugin = || self.library.name.clone();
        let bytes: &[u8] = if buf.ptr.is_null() {
            &[]
        } else {
            // SAFETY: the plugin filled `buf` with `len` readable bytes, valid until it
            // is freed below.
            unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }
        };
        let result = if bytes.len() > limit {
            Err(CallError::OutputTooLarge {
                plugin: plugin(),
                limit,
            })
        } else {
            match status {
                abi::STATUS_OK => use_output(bytes),
                abi::STATUS_PANIC => Err(CallError::Panicked {
                    plugin: plugin(),
                    message: String::from_utf8_lossy(bytes).into_owned(),
                }),
                other => {
                    let mut message = String::from_utf8_lossy(bytes).into_owned();
                    if message.is_empty() {
                        message = format!("error status {other} without a message");
                    }
                    Err(CallError::Failed {
                        plugin: plugin(),
                        message,
                    })
                }
            }
        };
        if !buf.ptr.is_null() {
            let free = self
                .library
                .loaded_table()
                .free_buf
                .expect("checked at open");
            // SAFETY: the buffer came from this plugin and is released exactly once;
            // `bytes` is not used after this.
            unsafe { free(buf) };
        }
        result
    }

    /// `bytes` as text, or [`CallError::InvalidOutput`].
    fn text<'b>(&self, bytes: &'b [u8]) -> Result<&'b str, CallError> {
        std::str::from_utf8(bytes).map_err(|_| CallError::InvalidOutput {
            plugin: self.library.name.clone(),
        })
    }

    /// Turns a status and buffer into a result, copying the answer out.
    fn finish(&self, status: i32, buf: Buf, limit: usize) -> Result<String, CallError> {
        self.finish_with(status, buf, limit, |b| self.text(b).map(str::to_owned))
    }

    /// Calls `execute` with `input`, without host services.
    pub fn execute(&self, input: &str) -> Result<String, CallError> {
        self.execute_bounded(input, usize::MAX, None)
    }

    /// Calls the plugin with `input`: `execute_ctx` with `host`'s services when the
    /// plugin has it (ABI version 2) and a host is given, else `execute`. An answer of
    /// more than `max_output` bytes is freed without being copied and becomes
    /// [`CallError::OutputTooLarge`].
    pub fn execute_bounded(
        &self,
        input: &str,
        max_output: usize,
        host: Option<&dyn Host>,
    ) -> Result<String, CallError> {
        self.execute_borrowed(input, max_output, host, |b| self.text(b).map(str::to_owned))
    }

    /// Like [`Instance::execute_bounded`], handing the answer's bytes — not checked
    /// for UTF-8 — to `use_output` in the plugin's own buffer (before it is freed)
    /// instead of copying them out: for a worker, which passes them on to the daemon,
    /// which checks them.
    pub fn execute_borrowed<R>(
        &self,
        input: &str,
        max_output: usize,
        host: Option<&dyn Host>,
        use_output: impl FnOnce(&[u8]) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        let mut out = Buf::EMPTY;
        let status = match (self.library.execute_ctx, host) {
            (Some(f), Some(host)) => {
                // SAFETY: the instance is live; the input outlives the call and the
                // context stays readable after it (inert once the call returned).
                with_context(host, |ctx| unsafe {
                    f(
                        self.ptr.as_ptr(),
                        ctx,
                        input.as_ptr(),
                        input.len(),
                        &mut out,
                    )
                })
            }
            _ => {
                let f = self
                    .library
                    .loaded_table()
                    .execute
                    .expect("checked at open");
                // SAFETY: the instance is live; input is valid for its length during the call.
                unsafe { f(self.ptr.as_ptr(), input.as_ptr(), input.len(), &mut out) }
            }
        };
        self.finish_with(status, out, max_output, use_output)
    }

    /// Calls `configure` with settings as JSON text; a plugin without the hook accepts all.
    pub fn configure(&self, settings_json: &str) -> Result<(), CallError> {
        let Some(f) = self.library.loaded_table().configure else {
            return Ok(());
        };
        let mut out = Buf::EMPTY;
        // SAFETY: as in `execute`.
        let status = unsafe {
            f(
                self.ptr.as_ptr(),
                settings_json.as_ptr(),
                settings_json.len(),
                &mut out,
            )
        };
        self.finish(status, out, usize::MAX).map(drop)
    }

    fn service_call(&self, f: Option<abi::ServiceFn>) -> Result<(), CallError> {
        let Some(f) = f else {
            return Ok(());
        };
        let mut out = Buf::EMPTY;
        // SAFETY: the instance is live.
        let status = unsafe { f(self.ptr.as_ptr(), &mut out) };
        self.finish(status, out, usize::MAX).map(drop)
    }

    /// Runs the service; blocks until it ends.
    pub fn start(&self) -> Result<(), CallError> {
        self.service_call(self.library.loaded_table().start)
    }

    /// Asks the running service to end.
    pub fn stop(&self) -> Result<(), CallError> {
        self.service_call(self.library.loaded_table().stop)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let destroy = self
            .library
            .loaded_table()
            .destroy
            .expect("checked at open");
        // SAFETY: the pointer came from `create` and is destroyed once; no call can be
        // running, since every caller holds an `Arc` to this instance.
        unsafe { destroy(self.ptr.as_ptr()) };
    }
}

/// The `*.so` files directly inside `dir`, sorted by name.
pub fn scan_dir(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|e| LoadError::Io {
        path: dir.to_owned(),
        reason: e.to_string(),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "so" || x == "wasm"))
        .collect();
    files.sort();
    Ok(files)
}

/// Opens every file in `paths` with `open`, on a few threads at once; results come
/// back in order.
pub fn open_all(
    paths: &[PathBuf],
    open: impl Fn(&Path) -> Result<PluginLibrary, LoadError> + Sync,
) -> Vec<Result<PluginLibrary, LoadError>> {
    let open_one = |p: &PathBuf| {
        // A library initialiser that panics must not take the daemon down.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open(p))).unwrap_or_else(|_| {
            Err(LoadError::NotALibrary {
                path: p.clone(),
                reason: "panicked while loading".into(),
            })
        })
    };
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(paths.len().max(1));
    let chunk = paths.len().div_ceil(workers).max(1);
    let open_one = &open_one;
    std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(open_one).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    //! The loader against real libraries: C fixtures compiled here with the system C
    //! compiler (tests/fixtures/c), one refusal each.

    use super::*;
    use std::os::unix::fs::MetadataExt;

    use crate::test_fixtures::ANYONE;

    use crate::test_fixtures::compile as fixture;

    #[test]
    fn every_load_gets_a_path_of_its_own_that_resolves_to_the_descriptor() {
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let fd = file.as_raw_fd();
        let want = std::fs::metadata("/proc/self/exe").unwrap().ino();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            let path = unique_fd_path(fd);
            assert!(path.as_os_str().len() < 512, "{}", path.display());
            assert_eq!(
                std::fs::metadata(&path).unwrap().ino(),
                want,
                "{}",
                path.display()
            );
            // As the dynamic linker compares them: byte strings (Path equality skips "."s).
            assert!(
                seen.insert(path.as_os_str().to_owned()),
                "{} used twice",
                path.display()
            );
        }
    }

    #[test]
    fn a_good_library_loads_and_answers_within_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture(dir.path(), "hostile.c", "h.so", &[]);
        let lib = Arc::new(PluginLibrary::open(&path, ANYONE).unwrap());
        assert_eq!((lib.name(), lib.abi_version()), ("hostile", 2));
        assert!(lib.is_loaded() && !lib.is_service());
        let instance = lib.instantiate().unwrap();
        assert_eq!(instance.execute("echo hi").unwrap(), "hi");
        assert_eq!(
            instance.execute_bounded("big 100", 10, None),
            Err(CallError::OutputTooLarge {
                plugin: "hostile".into(),
                limit: 10
            })
        );
        assert_eq!(
            instance.execute_bounded("big 10", 10, None).unwrap().len(),
            10
        );
    }

    #[test]
    fn every_broken_file_is_refused_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let not_elf = d.join("text.so");
        std::fs::write(&not_elf, "not a library").unwrap();
        assert!(matches!(
            PluginLibrary::open(&not_elf, ANYONE),
            Err(LoadError::NotALibrary { .. })
        ));
        let cases: [(&str, &[&str]); 4] = [
            ("noentry.so", &["FIX_NO_ENTRY"]),
            ("abi.so", &["FIX_ABI=999"]),
            ("magic.so", &["FIX_MAGIC=0x12345678"]),
            ("name.so", &["FIX_NAME=\"Bad Name\""]),
        ];
        let errors: Vec<LoadError> = cases
            .iter()
            .map(|(file, defines)| {
                let path = fixture(d, "variant.c", file, defines);
                PluginLibrary::open(&path, ANYONE).unwrap_err()
            })
            .collect();
        assert!(
            matches!(errors[0], LoadError::MissingEntry { .. }),
            "{errors:?}"
        );
        assert!(
            matches!(
                errors[1],
                LoadError::AbiMismatch {
                    found: 999,
                    expected: 2,
                    ..
                }
            ),
            "{errors:?}"
        );
        assert!(
            matches!(errors[2], LoadError::BadTable { .. }),
            "{errors:?}"
        );
        assert!(
            matches!(errors[3], LoadError::BadMetadata { .. }),
            "{errors:?}"
        );
        // A FIFO is refused without blocking (opened non-blocking, checked by fstat).
        let fifo = d.join("fifo.so");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(matches!(
            PluginLibrary::open(&fifo, ANYONE),
            Err(LoadError::Untrusted { .. })
        ));
    }
}
