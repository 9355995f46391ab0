//! DynPlug core: the plugin SDK and, with the default `host` feature, the façade over
//! the host's crates, so plugin crates and the daemon name one crate.
//!
//! # Map
//!
//! For plugin authors (always available, re-exported from the SDK crate `dynplug-sdk`,
//! which has no dependencies):
//! - [`Plugin`], [`plugin`](macro@plugin) and [`register_plugin!`]: the safe Rust API
//!   (`#[plugin(...)]` declares a plugin's name, version and description once);
//! - [`abi`]: the C ABI (mirrored by `sdk/include/dynplug.h`);
//! - [`export`]: the `extern "C"` shims the macro instantiates.
//!
//! For the host (feature `host`), three crates whose dependencies run one way
//! (loader ← isolation ← host):
//! - `dynplug-loader`: `trust`, `sealed`, `signature`, `metadata`, `settings_schema`,
//!   `library`, `name`, `fatal`, `testkit`, `call_rules` — a file judged once
//!   and what was judged is what runs; no async runtime;
//! - `dynplug-isolation`, here as `worker`: worker processes, their sandbox, protocol,
//!   pool, probes and shared regions; `cancel`, `resources`;
//! - `dynplug-host`: `manager`, `config`, `jobs`, `host`, `fastpath`, `events`, `state`,
//!   `registry_cache`, `stats`, `views`, `inspect`, `wasm_tier` (with `dynplug-wasm`);
//! - `error`: the errors of all three, one enum per layer.
//!
//! No D-Bus and no HTTP here: the daemon wires this crate to the world.

/// `#[plugin(...)]`: see `dynplug_sdk::plugin`; this one reaches the SDK through
/// `dynplug_core`, for plugin crates that depend on core.
pub use dynplug_sdk::plugin_via_core as plugin;
pub use dynplug_sdk::{
    abi, export, register_plugin, Context, Level, Plugin, PluginResult, Recorder,
};

#[cfg(feature = "host")]
pub use dynplug_host::{
    config, error, events, fastpath, host, inspect, jobs, manager, registry_cache, state, stats,
    views, wasm_tier, CallStats, Change, Manager, PluginInfo, PluginSample, PluginStatus,
    ReloadReport, Sample, Summary, LATENCY_BOUNDS_US,
};
#[cfg(feature = "host")]
pub use dynplug_isolation::{cancel, resources};
#[cfg(feature = "host")]
pub use dynplug_loader::{
    call_rules, fatal, library, locks, metadata, name, sealed, settings_schema, signature, testkit,
    trust, trust_config,
};

/// Process isolation: the `dynplug-isolation` crate.
#[cfg(feature = "host")]
pub mod worker {
    pub use dynplug_isolation::*;
}
