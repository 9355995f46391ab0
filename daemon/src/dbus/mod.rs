//! The D-Bus face of the daemon: `org.dynplug.Manager` and one `org.dynplug.Plugin`
//! object per plugin, errors named `org.dynplug.Error.*`. Interface methods are shims
//! over the core manager. Names, paths, errors and the typed values the methods return
//! come from the contract crate `dynplug-dbus`, which clients use too.

pub mod authority;
pub mod errors;
mod install;
pub mod job_iface;
pub mod manager_iface;
pub mod objects;
pub mod plugin_iface;
mod stats;

pub use dynplug_dbus::{plugin_path, DynplugError, BUS_NAME, MANAGER_PATH, PLUGINS_PATH};
pub use manager_iface::ManagerIface;
pub use plugin_iface::PluginIface;
