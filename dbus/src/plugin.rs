//! `org.dynplug.Plugin`, one object per plugin under `/org/dynplug/Manager/plugins/`
//! (see [`crate::plugin_path`]).

use crate::DynplugError;

/// A plugin object, as clients call it.
#[zbus::proxy(
    interface = "org.dynplug.Plugin",
    default_service = "org.dynplug.Manager"
)]
pub trait Plugin {
    /// Runs this plugin on `input`.
    fn execute(&self, input: &str) -> Result<String, DynplugError>;

    /// The plugin's name.
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    /// Its version.
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    /// Its description.
    #[zbus(property)]
    fn description(&self) -> zbus::Result<String>;
    /// Its library file.
    #[zbus(property)]
    fn path(&self) -> zbus::Result<String>;
    /// Whether it is enabled.
    #[zbus(property)]
    fn enabled(&self) -> zbus::Result<bool>;
    /// Whether its instance is usable.
    #[zbus(property)]
    fn loaded(&self) -> zbus::Result<bool>;
    /// Why it failed (empty if it did not).
    #[zbus(property)]
    fn error(&self) -> zbus::Result<String>;
    /// Its service's state (empty for non-services).
    #[zbus(property)]
    fn service_state(&self) -> zbus::Result<String>;
    /// Calls made.
    #[zbus(property)]
    fn calls(&self) -> zbus::Result<u64>;
    /// Calls that failed.
    #[zbus(property)]
    fn errors(&self) -> zbus::Result<u64>;
    /// Calls that timed out.
    #[zbus(property)]
    fn timeouts(&self) -> zbus::Result<u64>;
    /// Message of the last failed call.
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;
    /// Duration of the last call, µs.
    #[zbus(property)]
    fn last_duration_usec(&self) -> zbus::Result<u64>;
}
