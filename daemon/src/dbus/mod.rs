//! The D-Bus face of the daemon: `org.dynplug.Manager` and one `org.dynplug.Plugin`
//! object per plugin, errors named `org.dynplug.Error.*`. Interface methods are shims
//! over the core manager.

pub mod errors;
pub mod manager_iface;
pub mod objects;
pub mod paths;
pub mod plugin_iface;

pub use errors::DynplugError;
pub use manager_iface::{ManagerIface, ManagerIfaceProxy};
pub use paths::{plugin_path, BUS_NAME, MANAGER_PATH, PLUGINS_PATH};
pub use plugin_iface::{PluginIface, PluginIfaceProxy};
