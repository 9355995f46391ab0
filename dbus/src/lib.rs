//! The D-Bus contract of dynplugd, shared by the daemon and its clients:
//!
//! - [`names`]: the bus name, object paths and the escaping of plugin names;
//! - [`manager`]: `org.dynplug.Manager` as a [`ManagerProxy`], with typed replies
//!   ([`PluginRow`], [`PluginDetails`], [`BulkResult`]);
//! - [`plugin`]: `org.dynplug.Plugin` as a [`PluginProxy`];
//! - [`job`]: `org.dynplug.Job` as a [`JobProxy`];
//! - [`stats`]: the reply of `GetStats` ([`DaemonStats`], [`PluginStats`]);
//! - [`error`]: the named errors `org.dynplug.Error.*` ([`DynplugError`]).
//!
//! It depends on zbus and serde only: a client never links the plugin host. The daemon
//! serves the same definitions, and its tests call every method and read every
//! property through these proxies.

pub mod error;
pub mod job;
pub mod manager;
pub mod names;
pub mod plugin;
pub mod stats;

pub use error::DynplugError;
pub use job::JobProxy;
pub use manager::{BulkResult, InstalledRow, ManagerProxy, PluginDetails, PluginRow};
pub use names::{job_id, job_path, plugin_path, BUS_NAME, JOBS_PATH, MANAGER_PATH, PLUGINS_PATH};
pub use plugin::PluginProxy;
pub use stats::{DaemonStats, PluginStats, Stats};
