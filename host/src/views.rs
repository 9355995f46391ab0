//! What the manager reports: plugin snapshots, counts, reload reports.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Isolation;
use crate::events::ServiceState;
use crate::slot::CallStats;
use dynplug_isolation::PoolStatus;

/// Whether an operation changed anything (idempotent operations say which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The state changed.
    Changed,
    /// It already was in the requested state.
    Unchanged,
}

/// Where a plugin stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginStatus {
    /// Instance created and usable.
    Loaded,
    /// Library accepted; instance to be created on first use (lazy loading).
    Pending,
    /// Refused or broken; the reason says why.
    Failed(String),
}

/// A snapshot of one plugin (or of a file that failed to load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The plugin's name; for a file that never loaded, its file name.
    pub name: String,
    /// Version from the plugin's metadata (empty for failed files).
    pub version: String,
    /// Description from the plugin's metadata.
    pub description: String,
    /// The library file.
    pub path: PathBuf,
    /// Enabled (by config or at run time).
    pub enabled: bool,
    /// Load state.
    pub status: PluginStatus,
    /// ABI version the plugin declared (0 when unknown).
    pub abi_version: u32,
    /// Whether it is a service plugin.
    pub service: bool,
    /// Its service's state.
    pub service_state: ServiceState,
    /// Call timeout.
    pub timeout: Duration,
    /// Concurrent calls allowed.
    pub max_concurrency: usize,
    /// Call statistics.
    pub stats: CallStats,
    /// Where it runs.
    pub isolation: Isolation,
    /// How its calls are made: `inline` (proven fast, on the caller's thread),
    /// `threads` (handed to a thread each: learning, demoted or `fast_path: off`),
    /// `workers` (isolated) or `wasm` (a fresh WebAssembly instance per call).
    pub call_path: &'static str,
    /// The configured version requirement, if any.
    pub version_requirement: Option<String>,
    /// Its worker processes, for `isolation: process`.
    pub workers: Option<PoolStatus>,
    /// The JSON Schema its settings must follow, if it declares one.
    pub settings_schema: Option<String>,
    /// What checking its signature found ("verified (key build)", "unsigned (...)",
    /// "not checked (...)"; empty for a file that failed to load).
    pub signature: String,
    /// For a WebAssembly plugin: its traps, memory, compile time and artifact.
    pub wasm: Option<crate::wasm_tier::WasmStatus>,
}

impl PluginInfo {
    /// Whether the instance exists and is usable.
    pub fn loaded(&self) -> bool {
        self.status == PluginStatus::Loaded
    }

    /// The failure reason, if any.
    pub fn error(&self) -> Option<&str> {
        match &self.status {
            PluginStatus::Failed(reason) => Some(reason),
            _ => None,
        }
    }

    /// What the plugin runs under, layer by layer (identity, process_tree, filesystem,
    /// syscalls, network), as reported by its most recent worker.
    pub fn sandbox(&self) -> Vec<(String, String)> {
        let report = self.workers.as_ref().map(|w| w.sandbox.clone());
        let fixed = |state: &str| {
            dynplug_isolation::SandboxReport::default()
                .layers()
                .iter()
                .map(|(layer, _)| ((*layer).to_owned(), state.to_owned()))
                .collect()
        };
        match report {
            None if self.wasm.is_some() => crate::wasm_tier::SANDBOX_LAYERS
                .iter()
                .map(|(layer, state)| ((*layer).to_owned(), (*state).to_owned()))
                .collect(),
            None => fixed("none: runs inside the daemon (isolation: in-process)"),
            Some(None) => fixed("pending: no worker started yet"),
            Some(Some(report)) => report
                .layers()
                .iter()
                .map(|(layer, state)| ((*layer).to_owned(), (*state).to_owned()))
                .collect(),
        }
    }
}

/// Counts over all plugins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Plugins accepted by the loader.
    pub plugins: usize,
    /// Of those, enabled.
    pub enabled: usize,
    /// Plugins or files that failed.
    pub failed: usize,
    /// Plugins loaded although unsigned or badly signed (`trust.signatures: permissive`).
    pub unverified: usize,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Plugins that appeared.
    pub added: Vec<String>,
    /// Plugins that went away.
    pub removed: Vec<String>,
    /// Plugins whose library file was replaced (new calls use the new library).
    pub replaced: Vec<String>,
    /// Plugins whose settings were re-applied.
    pub reconfigured: Vec<String>,
    /// Plugins whose enabled state changed.
    pub toggled: Vec<String>,
    /// Files that failed to load or plugins that failed to configure.
    pub failed: Vec<String>,
    /// Files that failed before this reload and no longer do (gone or fixed).
    pub cleared: Vec<String>,
}

impl ReloadReport {
    /// Whether the reload changed no plugin.
    pub fn is_empty(&self) -> bool {
        *self == ReloadReport::default()
    }
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            ("added", &self.added),
            ("removed", &self.removed),
            ("replaced", &self.replaced),
            ("reconfigured", &self.reconfigured),
            ("toggled", &self.toggled),
            ("failed", &self.failed),
            ("no longer failing", &self.cleared),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}: {}", v.join(", ")))
        .collect();
        if parts.is_empty() {
            f.write_str("no changes")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}
