//! The WebAssembly tier as the manager sees it (the runtime itself is the
//! `dynplug-wasm` crate): a `*.wasm` file in plugins_dir is a component plugin.
//!
//! - At scan, its sealed image (the bytes whose signature was judged) is described
//!   from its `dynplug.meta` section and its imports are checked: nothing compiled,
//!   nothing run. A component without the section, importing what the host does not
//!   provide (network included), or declaring a service is refused then.
//! - On first use or right after a (re)load, whichever comes first, it is compiled
//!   (or its precompiled artifact taken from `STATE_DIR/wasm`) from the same image.
//! - Calls run on the blocking pool under the plugin's permits, each in a fresh
//!   instance, under `timeout_ms` (stopped at the timeout by epoch interruption) and
//!   `memory_limit_mb` (default [`DEFAULT_MEMORY_MB`]). Traps count toward quarantine
//!   like worker crashes: `crash_limit` (default 5) within a minute.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dynplug_wasm::{Artifact, CallLimits, Options, WasmPlugin};

use crate::config::{Config, Isolation};
use crate::error::LoadError;
use dynplug_loader::library::PluginLibrary;
use dynplug_loader::locks::lock;
use dynplug_loader::sealed::SealedImage;

/// Memory per instance when `memory_limit_mb` is not set.
pub const DEFAULT_MEMORY_MB: u64 = 256;

/// The window in which `crash_limit` traps quarantine a plugin.
const FAULT_WINDOW: Duration = Duration::from_secs(60);

/// Whether `path` names a WebAssembly plugin.
pub(crate) fn is_wasm(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
}

fn refused(path: &Path, reason: impl std::fmt::Display) -> LoadError {
    LoadError::Wasm {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Describes the component in `image` from its metadata section and checks its
/// imports; no guest code is compiled or run. The image is kept for the compile.
pub(crate) fn open(path: &Path, image: SealedImage) -> Result<PluginLibrary, LoadError> {
    let bytes = image.bytes().map_err(|e| LoadError::Io {
        path: path.to_owned(),
        reason: format!("cannot map the sealed copy: {e}"),
    })?;
    let description = dynplug_wasm::describe(&bytes).map_err(|e| refused(path, e))?;
    drop(bytes);
    dynplug_wasm::check_imports(&description.imports).map_err(|e| refused(path, e))?;
    let section = description.metadata.ok_or_else(|| {
        refused(
            path,
            "no dynplug.meta custom section: a wasm plugin declares its name, version and description there",
        )
    })?;
    let metadata =
        dynplug_loader::metadata::parse(&section).map_err(|e| LoadError::BadMetadata {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if metadata.service {
        return Err(refused(path, "wasm plugins cannot run services"));
    }
    let identity = image.identity();
    PluginLibrary::from_metadata(path, identity, Some(Arc::new(image)), metadata)
}

/// What the wasm tier reports about one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WasmStatus {
    /// Calls that trapped or were stopped at a limit.
    pub traps: u64,
    /// The most memory one of its instances had, in bytes.
    pub peak_memory: u64,
    /// How long compiling (or loading the precompiled artifact) took, in microseconds.
    pub compile_us: u64,
    /// Where its code came from (`compiled`, `stored`, `cached`, `recompiled: WHY`);
    /// empty until it is loaded.
    pub artifact: String,
    /// The memory limit of each instance, in bytes.
    pub memory_limit: u64,
    /// Whether it is quarantined after repeated traps.
    pub quarantined: bool,
}

/// The wasm side of a registry slot.
#[derive(Debug)]
pub(crate) struct WasmSlot {
    plugin: OnceLock<Result<Arc<WasmPlugin>, LoadError>>,
    options: Options,
    crash_limit: u32,
    faults: Mutex<VecDeque<Instant>>,
    quarantined: Mutex<Option<String>>,
    status: Mutex<WasmStatus>,
    /// Why it cannot run at all under this configuration (checked at slot creation).
    refusal: Option<LoadError>,
}

impl WasmSlot {
    /// The wasm side of plugin `name` from `library` under `config`, its artifacts in
    /// `state_dir`; None for a native plugin.
    pub(crate) fn of(
        config: &Config,
        name: &str,
        library: &PluginLibrary,
        state_dir: &Path,
    ) -> Option<WasmSlot> {
        let wasm_file = is_wasm(library.path());
        let wanted = config.isolation(name) == Isolation::Wasm;
        if !wasm_file && !wanted {
            return None;
        }
        let p = config.plugin(name);
        let memory_mb = p.memory_limit_mb.unwrap_or(DEFAULT_MEMORY_MB);
        let refusal = if !wasm_file {
            Some(refused(
                library.path(),
                "isolation: wasm needs a WebAssembly component (a .wasm file)",
            ))
        } else if p.sandbox.network {
            Some(refused(
                library.path(),
                "sandbox.network: true is refused for wasm plugins (no network is provided)",
            ))
        } else {
            None
        };
        let memory_limit =
            usize::try_from(memory_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        Some(WasmSlot {
            plugin: OnceLock::new(),
            options: Options {
                settings_json: config.settings_json(name),
                read_dirs: p.sandbox.read.clone(),
                write_dirs: p.sandbox.write.clone(),
                memory_limit,
                cache_dir: Some(state_dir.join("wasm")),
                configure_limits: CallLimits {
                    timeout: config.timeout(name),
                    ..CallLimits::default()
                },
            },
            crash_limit: p.crash_limit.unwrap_or(5),
            faults: Mutex::default(),
            quarantined: Mutex::new(None),
            status: Mutex::new(WasmStatus {
                memory_limit: memory_limit as u64,
                ..WasmStatus::default()
            }),
            refusal,
        })
    }

    /// The loaded plugin: compiled (or taken from its artifact) from the sealed image
    /// on first use. Blocking.
    pub(crate) fn plugin(&self, library: &PluginLibrary) -> Result<Arc<WasmPlugin>, LoadError> {
        self.plugin
            .get_or_init(|| {
                if let Some(refusal) = &self.refusal {
                    return Err(refusal.clone());
                }
                let path = library.path();
                let image = library
                    .image()
                    .ok_or_else(|| refused(path, "no sealed image of the file is kept"))?;
                let bytes = image.bytes().map_err(|e| LoadError::Io {
                    path: path.to_owned(),
                    reason: format!("cannot map the sealed copy: {e}"),
                })?;
                let plugin =
                    WasmPlugin::load(&bytes, self.options.clone()).map_err(|e| refused(path, e))?;
                let mut status = lock(&self.status);
                status.compile_us = u64::try_from(plugin.compile_time().as_micros()).unwrap_or(u64::MAX);
                status.artifact = match plugin.artifact() {
                    Artifact::Compiled => "compiled".into(),
                    Artifact::Stored => "compiled and stored".into(),
                    Artifact::Cached => "precompiled artifact".into(),
                    Artifact::Recompiled(why) => format!("recompiled ({why})"),
                };
                if let Artifact::Recompiled(why) = plugin.artifact() {
                    tracing::warn!(plugin = library.name(), reason = %why, "a stored artifact was refused; recompiled");
                }
                Ok(Arc::new(plugin))
            })
            .clone()
    }

    /// Whether it was loaded (Some(Ok)), failed to (Some(Err)), or not tried yet.
    pub(crate) fn state(&self) -> Option<Result<(), String>> {
        if let Some(refusal) = &self.refusal {
            return Some(Err(refusal.to_string()));
        }
        self.plugin
            .get()
            .map(|r| r.as_ref().map(|_| ()).map_err(ToString::to_string))
    }

    /// Why it is quarantined, if it is.
    pub(crate) fn quarantined(&self) -> Option<String> {
        lock(&self.quarantined).clone()
    }

    /// Quarantines it for `reason`.
    pub(crate) fn quarantine(&self, reason: String) {
        *lock(&self.quarantined) = Some(reason);
    }

    /// Counts a trap; returns the quarantine reason when this one tips it over.
    pub(crate) fn record_fault(&self, error: &str) -> Option<String> {
        lock(&self.status).traps += 1;
        let now = Instant::now();
        let mut faults = lock(&self.faults);
        faults.push_back(now);
        while faults
            .front()
            .is_some_and(|t| now.duration_since(*t) > FAULT_WINDOW)
        {
            faults.pop_front();
        }
        if faults.len() < self.crash_limit as usize {
            return None;
        }
        let reason = format!(
            "quarantined: {} traps within a minute (crash_limit {}), the last: {error}",
            faults.len(),
            self.crash_limit
        );
        let mut quarantined = lock(&self.quarantined);
        if quarantined.is_some() {
            return None;
        }
        *quarantined = Some(reason.clone());
        Some(reason)
    }

    /// Records the memory an instance had.
    pub(crate) fn record_memory(&self, bytes: usize) {
        let mut status = lock(&self.status);
        status.peak_memory = status.peak_memory.max(bytes as u64);
    }

    /// What it reports.
    pub(crate) fn status(&self) -> WasmStatus {
        WasmStatus {
            quarantined: self.quarantined().is_some(),
            ..lock(&self.status).clone()
        }
    }
}

/// What `--inspect` shows of a component beside its metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Inspected {
    /// The version of `dynplug:plugin` it imports the host interface of, if it does.
    pub wit_version: Option<String>,
    /// The version this host speaks.
    pub host_speaks: &'static str,
    /// What it imports.
    pub imports: Vec<String>,
    /// What it exports.
    pub exports: Vec<String>,
    /// Why the daemon would refuse its imports, if it would.
    pub refused: Option<String>,
}

/// Where the metadata came from (`section`, `none`, `error`), the metadata, and why it
/// is refused, as `inspect::Report` has them.
pub(crate) type MetadataFound = (
    &'static str,
    Option<dynplug_loader::metadata::Metadata>,
    Option<String>,
);

/// Reads a component's declarations from its sealed image: nothing compiled or run.
/// Returns them with (metadata source, metadata, error) as `inspect` reports them.
pub(crate) fn inspect(image: &SealedImage) -> (Option<Inspected>, MetadataFound) {
    let described = image
        .bytes()
        .map_err(|e| e.to_string())
        .and_then(|bytes| dynplug_wasm::describe(&bytes).map_err(|e| e.to_string()));
    let description = match described {
        Ok(d) => d,
        Err(e) => return (None, ("error", None, Some(e))),
    };
    let refused = dynplug_wasm::check_imports(&description.imports)
        .err()
        .map(|e| e.to_string());
    let inspected = Inspected {
        wit_version: description.wit_version.clone(),
        host_speaks: dynplug_wasm::WIT_VERSION,
        imports: description.imports.clone(),
        exports: description.exports.clone(),
        refused: refused.clone(),
    };
    let found = match description
        .metadata
        .as_deref()
        .map(dynplug_loader::metadata::parse)
    {
        None => (
            "none",
            None,
            Some(
                "no dynplug.meta custom section: the daemon refuses a component without one".into(),
            ),
        ),
        Some(Err(e)) => ("error", None, Some(e.to_string())),
        Some(Ok(m)) => {
            let schema_error = m.settings_schema.as_deref().and_then(|text| {
                dynplug_loader::settings_schema::SettingsSchema::compile(text).err()
            });
            ("section", Some(m), refused.or(schema_error))
        }
    };
    (Some(inspected), found)
}

/// The component lines of an inspect report.
pub(crate) fn render(inspected: &Inspected) -> String {
    use dynplug_sdk::printable::quoted;
    let mut out = format!(
        "wasm:        a WebAssembly component (WIT dynplug:plugin@{}; this host speaks {})\n",
        inspected
            .wit_version
            .as_deref()
            .map_or_else(|| "none: it imports no host functions".to_owned(), quoted),
        inspected.host_speaks
    );
    for import in &inspected.imports {
        out.push_str(&format!("import:      {}\n", quoted(import)));
    }
    for export in &inspected.exports {
        out.push_str(&format!("export:      {}\n", quoted(export)));
    }
    if let Some(reason) = &inspected.refused {
        out.push_str(&format!(
            "refused:     {}\n",
            dynplug_sdk::printable::escape(reason)
        ));
    }
    out
}

/// What confines a wasm plugin, by the layers the other tiers report.
pub(crate) const SANDBOX_LAYERS: [(&str, &str); 5] = [
    (
        "identity",
        "wasm: the daemon's, unreachable from guest code",
    ),
    ("process_tree", "wasm: no processes, no signals"),
    (
        "filesystem",
        "wasm: only the sandbox.read / sandbox.write directories, preopened",
    ),
    (
        "syscalls",
        "wasm: none; only the host interface and WASI cli, clocks, filesystem, io, random",
    ),
    (
        "network",
        "wasm: none (wasi:sockets and wasi:http imports are refused)",
    ),
];
