//! `org.dynplug.Job`, one object per job under `/org/dynplug/Manager/jobs/` (see
//! [`crate::job_path`]), started by `org.dynplug.Manager.StartJob`.

use crate::DynplugError;

/// A job object, as clients call it. Properties change with PropertiesChanged as the
/// job moves (progress at most ten times a second); `Finished` is signalled once.
#[zbus::proxy(interface = "org.dynplug.Job", default_service = "org.dynplug.Manager")]
pub trait Job {
    /// Asks the job to stop: the plugin's `cancelled()` turns true; an isolated plugin
    /// that does not return within a grace period has its worker killed. Only the user
    /// who started the job, or root, may cancel it.
    fn cancel(&self) -> Result<(), DynplugError>;

    /// The plugin the job calls.
    #[zbus(property)]
    fn plugin(&self) -> zbus::Result<String>;
    /// running, succeeded, failed or cancelled.
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    /// 0..1, or -1 while the plugin has not said.
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<f64>;
    /// The plugin's last status text.
    #[zbus(property)]
    fn status_text(&self) -> zbus::Result<String>;
    /// The output, once the job succeeded.
    #[zbus(property)]
    fn output(&self) -> zbus::Result<String>;
    /// Why it failed or was cancelled (empty otherwise).
    #[zbus(property)]
    fn error(&self) -> zbus::Result<String>;
    /// The D-Bus error name a synchronous call would have failed with (empty otherwise),
    /// e.g. `org.dynplug.Error.Timeout`.
    #[zbus(property)]
    fn error_name(&self) -> zbus::Result<String>;
    /// When it started, µs since the epoch.
    #[zbus(property)]
    fn started_usec(&self) -> zbus::Result<u64>;
    /// When it ended, µs since the epoch (0 while running).
    #[zbus(property)]
    fn finished_usec(&self) -> zbus::Result<u64>;

    /// The job ended in `state` (succeeded, failed or cancelled).
    #[zbus(signal)]
    fn finished(&self, state: &str) -> zbus::Result<()>;
}
