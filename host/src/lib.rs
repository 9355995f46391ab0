//! DynPlug's host: the registry of plugins and everything done with them, built on the
//! loader (`dynplug-loader`) and process isolation (`dynplug-isolation`).
//!
//! - [`manager`]: list, info, enable/disable, execute with timeouts and retries, reload
//!   with a diff, graceful shutdown; [`views`]: what it reports;
//! - [`config`]: the YAML configuration, defaults, validation, environment overrides;
//! - [`jobs`]: background calls with progress, cancellation and bounded retention;
//! - [`host`]: the host's services for a call (ABI version 2): logs, progress,
//!   cancellation, events under a budget;
//! - [`fastpath`]: when an in-process plugin's calls run inline (learned, watched);
//! - [`events`]: the lifecycle events the daemon publishes;
//! - [`inspect`]: the report of `dynplugd --inspect FILE` for a library or a
//!   WebAssembly component (runs no plugin code);
//! - [`wasm_tier`]: `*.wasm` component plugins on the `dynplug-wasm` runtime;
//! - [`state`]: runtime enable/disable persisted atomically apart from the config;
//! - [`registry_cache`]: what earlier probes learned of plugin files;
//! - [`stats`]: per-plugin call counters and latency histogram (atomics, no lock);
//! - [`error`]: the manager's and the configuration's errors (the loader's re-exported).
//!
//! No D-Bus and no HTTP here: the daemon wires this crate to the world.

pub mod config;
pub mod error;
pub mod events;
pub mod fastpath;
pub mod host;
pub mod inspect;
pub mod jobs;
pub mod manager;
pub mod registry_cache;
mod scan;
mod services;
mod slot;
pub mod state;
pub mod stats;
pub mod views;
pub mod wasm_tier;

pub use manager::{
    Change, Manager, PluginInfo, PluginSample, PluginStatus, ReloadReport, Sample, Summary,
};
pub use slot::{CallStats, LATENCY_BOUNDS_US};
