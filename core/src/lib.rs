//! DynPlug core: the plugin SDK and, with the default `host` feature, everything a
//! plugin host needs.
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
//! For the host (feature `host`):
//! - `config`: the YAML configuration, defaults, validation, environment overrides;
//! - `trust` and `library`: file trust checks, `dlopen`, table checks, safe calls;
//! - `manager`: the registry of plugins and every operation on them (list, info,
//!   enable/disable, execute with timeouts and retries, reload with a diff, graceful
//!   shutdown); `views`: what it reports; `scan` (private): the directory scan;
//! - `services`: supervision of service plugins (start, stop, restart with backoff);
//! - `state`: runtime enable/disable persisted atomically apart from the config;
//! - `events`: the lifecycle events the daemon publishes;
//! - `host`: the host's services for a call (ABI version 2): logs, progress,
//!   cancellation, events under a budget;
//! - `fastpath`: when an in-process plugin's calls run inline (learned, watched);
//! - `jobs`: background calls with progress, cancellation and bounded retention;
//! - `worker`: process isolation (worker processes, their sandbox, protocol, pool);
//! - `fatal`: fatal signals raised by plugin code end the process instead of vanishing;
//! - `testkit`: load a built plugin through the real ABI in a plugin's own tests;
//! - `resources`: CPU time and memory of the daemon and its workers;
//! - `error`: one error enum per layer.
//!
//! No D-Bus and no HTTP here: the daemon wires this crate to the world.

/// `#[plugin(...)]`: see `dynplug_sdk::plugin`; this one reaches the SDK through
/// `dynplug_core`, for plugin crates that depend on core.
pub use dynplug_sdk::plugin_via_core as plugin;
pub use dynplug_sdk::{
    abi, export, register_plugin, Context, Level, Plugin, PluginResult, Recorder,
};

#[cfg(feature = "host")]
pub mod cancel;
#[cfg(feature = "host")]
pub mod config;
#[cfg(feature = "host")]
pub mod error;
#[cfg(feature = "host")]
pub mod events;
#[cfg(feature = "host")]
pub mod fastpath;
#[cfg(feature = "host")]
pub mod fatal;
#[cfg(feature = "host")]
pub mod host;
#[cfg(feature = "host")]
pub mod inspect;
#[cfg(feature = "host")]
pub mod jobs;
#[cfg(feature = "host")]
pub mod library;
#[cfg(feature = "host")]
mod locks;
#[cfg(feature = "host")]
pub mod manager;
#[cfg(feature = "host")]
pub mod metadata;
#[cfg(feature = "host")]
pub mod name;
#[cfg(feature = "host")]
pub mod registry_cache;
#[cfg(feature = "host")]
pub mod resources;
#[cfg(feature = "host")]
mod scan;
#[cfg(feature = "host")]
pub mod sealed;
#[cfg(feature = "host")]
mod services;
#[cfg(feature = "host")]
pub mod settings_schema;
#[cfg(feature = "host")]
pub mod signature;
#[cfg(feature = "host")]
mod slot;
#[cfg(feature = "host")]
pub mod state;
#[cfg(all(test, feature = "host"))]
mod test_fixtures;
#[cfg(feature = "host")]
pub mod testkit;
#[cfg(feature = "host")]
pub mod trust;
#[cfg(feature = "host")]
pub mod views;
#[cfg(feature = "host")]
pub mod wasm_tier;
#[cfg(feature = "host")]
pub mod worker;

#[cfg(feature = "host")]
pub use manager::{Change, Manager, PluginInfo, PluginStatus, ReloadReport, Summary};
#[cfg(feature = "host")]
pub use slot::{CallStats, LATENCY_BOUNDS_US};
