//! `org.dynplug.Manager` at `/org/dynplug/Manager`: the client side of the interface and
//! the typed values its methods return.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zbus::{DeserializeDict, SerializeDict, Type};

use crate::DynplugError;

/// One row of `ListPlugins`: a loaded plugin, or a file that failed to load (listed
/// under its file name, not enabled, not loaded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct PluginRow {
    /// Plugin name (or file name of a failed file).
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// One-line description.
    pub description: String,
    /// Whether it is enabled.
    pub enabled: bool,
    /// Whether its instance exists and is usable.
    pub loaded: bool,
    /// The library file.
    pub path: String,
}

/// One result of `EnablePlugins` / `DisablePlugins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct BulkResult {
    /// The plugin.
    pub name: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// `changed`, `unchanged`, or the error.
    pub message: String,
}

/// One row of `ListInstalled`: a plugin installed from a registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct InstalledRow {
    /// Plugin name.
    pub name: String,
    /// The version in place.
    pub version: String,
    /// The reference it was installed from.
    pub reference: String,
    /// The digest the reference resolved to.
    pub digest: String,
    /// When it was installed, µs since the epoch.
    pub installed_usec: u64,
    /// The version kept for rollback (empty if none).
    pub previous_version: String,
}

/// `GetPlugin`'s `a{sv}`, key by key. Every key is optional, so a client keeps working
/// against a daemon that adds keys or lacks newer ones.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "PascalCase")]
pub struct PluginDetails {
    /// Plugin name (file name for a failed file).
    pub name: Option<String>,
    /// Plugin version.
    pub version: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Library path.
    pub path: Option<String>,
    /// Enabled.
    pub enabled: Option<bool>,
    /// Instance usable.
    pub loaded: Option<bool>,
    /// `loaded`, `pending` or `failed`.
    pub state: Option<String>,
    /// Why it failed (empty if it did not).
    pub error: Option<String>,
    /// ABI version the plugin declares.
    pub abi_version: Option<u32>,
    /// Whether it is a service plugin.
    pub service: Option<bool>,
    /// Service state (empty for non-services).
    pub service_state: Option<String>,
    /// Call timeout in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Concurrent calls allowed.
    pub max_concurrency: Option<u32>,
    /// Calls made.
    pub calls: Option<u64>,
    /// Calls that failed.
    pub errors: Option<u64>,
    /// Calls that timed out.
    pub timeouts: Option<u64>,
    /// Total call time, µs.
    pub total_us: Option<u64>,
    /// Last call's duration, µs.
    pub last_us: Option<u64>,
    /// Message of the last failed call.
    pub last_error: Option<String>,
    /// `in-process`, `process` or `wasm`.
    pub isolation: Option<String>,
    /// How calls are made: `inline`, `threads`, `workers` or `wasm`.
    pub call_path: Option<String>,
    /// Live worker processes.
    pub workers: Option<u32>,
    /// Workers started after the first ones.
    pub worker_restarts: Option<u64>,
    /// Worker crashes.
    pub worker_crashes: Option<u64>,
    /// Quarantined after repeated crashes.
    pub quarantined: Option<bool>,
    /// CPU time of the live workers, µs.
    pub worker_cpu_usec: Option<u64>,
    /// Resident memory of the live workers, bytes.
    pub worker_rss_bytes: Option<u64>,
    /// The configured version requirement (empty if none).
    pub version_requirement: Option<String>,
    /// What it runs under, by layer (identity, process_tree, filesystem, syscalls,
    /// network).
    pub sandbox: Option<BTreeMap<String, String>>,
    /// The JSON Schema its settings must follow (empty if it declares none).
    pub settings_schema: Option<String>,
    /// What checking its signature found (`verified (key NAME)`, `unsigned (...)`,
    /// `bad signature: ...`, `not checked (...)`).
    pub signature: Option<String>,
    /// WebAssembly plugins: calls that trapped or were stopped at a limit.
    pub wasm_traps: Option<u64>,
    /// WebAssembly plugins: the most memory one instance had, bytes.
    pub wasm_peak_memory_bytes: Option<u64>,
    /// WebAssembly plugins: the memory limit of each instance, bytes.
    pub wasm_memory_limit_bytes: Option<u64>,
    /// WebAssembly plugins: how long compiling (or loading the precompiled artifact)
    /// took, µs.
    pub wasm_compile_us: Option<u64>,
    /// WebAssembly plugins: where the code came from (`compiled and stored`,
    /// `precompiled artifact`, `recompiled (WHY)`, `compiled`).
    pub wasm_artifact: Option<String>,
}

/// The manager interface, as clients call it.
#[zbus::proxy(
    interface = "org.dynplug.Manager",
    default_service = "org.dynplug.Manager",
    default_path = "/org/dynplug/Manager"
)]
pub trait Manager {
    /// Every plugin, and every file that failed to load.
    fn list_plugins(&self) -> zbus::Result<Vec<PluginRow>>;
    /// One plugin (or failed file) in detail.
    fn get_plugin(&self, name: &str) -> Result<PluginDetails, DynplugError>;
    /// Runs plugin `name` on `input`.
    fn execute(&self, name: &str, input: &str) -> Result<String, DynplugError>;
    /// Enables a plugin; false if it already was.
    fn enable_plugin(&self, name: &str) -> Result<bool, DynplugError>;
    /// Disables a plugin; false if it already was.
    fn disable_plugin(&self, name: &str) -> Result<bool, DynplugError>;
    /// Enables several plugins, one result per name.
    fn enable_plugins(&self, names: &[&str]) -> zbus::Result<Vec<BulkResult>>;
    /// Disables several plugins, one result per name.
    fn disable_plugins(&self, names: &[&str]) -> zbus::Result<Vec<BulkResult>>;
    /// Re-reads the configuration; a summary of what changed.
    fn reload(&self) -> Result<String, DynplugError>;
    /// Starts plugin `name` on `input` as a job; returns the job's object at once.
    fn start_job(&self, name: &str, input: &str) -> Result<zbus::OwnedObjectPath, DynplugError>;
    /// Installs a plugin from a registry reference as a job; returns the job's object.
    fn install(&self, reference: &str) -> Result<zbus::OwnedObjectPath, DynplugError>;
    /// Swaps a plugin installed from a registry with its previous version.
    fn rollback(&self, name: &str) -> Result<String, DynplugError>;
    /// Removes a plugin installed from a registry.
    fn remove(&self, name: &str) -> Result<String, DynplugError>;
    /// Every plugin installed from a registry.
    fn list_installed(&self) -> Result<Vec<InstalledRow>, DynplugError>;
    /// Every job still known (running, or ended and kept), oldest first.
    fn list_jobs(&self) -> zbus::Result<Vec<zbus::OwnedObjectPath>>;
    /// Every plugin's counters, latency histogram, workers' CPU and memory and running
    /// jobs, and the daemon's own figures, in one call (see [`crate::stats`]).
    fn get_stats(
        &self,
    ) -> zbus::Result<(
        crate::stats::DaemonStats,
        Vec<u64>,
        Vec<crate::stats::PluginStats>,
    )>;

    /// The daemon's version.
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    /// starting, running, reloading or stopping.
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    /// Plugins known, failed files included.
    #[zbus(property)]
    fn plugin_count(&self) -> zbus::Result<u32>;
    /// Plugins enabled.
    #[zbus(property)]
    fn enabled_count(&self) -> zbus::Result<u32>;
    /// Plugins or files that failed.
    #[zbus(property)]
    fn failed_count(&self) -> zbus::Result<u32>;
    /// Why the last reload was refused (empty after a good one).
    #[zbus(property)]
    fn last_reload_error(&self) -> zbus::Result<String>;
    /// The configuration file.
    #[zbus(property)]
    fn config_path(&self) -> zbus::Result<String>;
    /// Start time, µs since the epoch.
    #[zbus(property)]
    fn start_time_usec(&self) -> zbus::Result<u64>;
    /// Where the REST API listens (empty when off).
    #[zbus(property)]
    fn api_address(&self) -> zbus::Result<String>;
    /// CPU time of the daemon, µs.
    #[zbus(property)]
    fn cpu_usage_usec(&self) -> zbus::Result<u64>;
    /// Resident memory of the daemon, bytes.
    #[zbus(property)]
    fn memory_rss_bytes(&self) -> zbus::Result<u64>;
    /// Calls running now.
    #[zbus(property)]
    fn calls_in_flight(&self) -> zbus::Result<u32>;

    /// A plugin was enabled, disabled or loaded.
    #[zbus(signal)]
    fn plugin_state_changed(&self, name: &str, enabled: bool, loaded: bool) -> zbus::Result<()>;
    /// A plugin failed.
    #[zbus(signal)]
    fn plugin_failed(&self, name: &str, error: &str) -> zbus::Result<()>;
    /// A service plugin's service changed state.
    #[zbus(signal)]
    fn service_state_changed(&self, name: &str, state: &str, detail: &str) -> zbus::Result<()>;
    /// A reload finished.
    #[zbus(signal)]
    fn config_reloaded(&self, success: bool, message: &str) -> zbus::Result<()>;
    /// A plugin published an event (within its budget).
    #[zbus(signal)]
    fn plugin_event(&self, plugin: &str, event: &str, payload: &str) -> zbus::Result<()>;
}
