//! The named D-Bus errors of `org.dynplug.Error.*`: what the daemon returns and what a
//! client matches on.

/// Errors returned by `org.dynplug.Manager` and `org.dynplug.Plugin` methods.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.dynplug.Error")]
pub enum DynplugError {
    /// A transport-level zbus error.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// No plugin of that name.
    NotFound(String),
    /// The plugin is disabled.
    Disabled(String),
    /// The plugin failed to load or initialise.
    Unavailable(String),
    /// The plugin returned an error, panicked or produced invalid output.
    ExecutionFailed(String),
    /// The call ran out of time.
    Timeout(String),
    /// The caller may not do this.
    AccessDenied(String),
    /// The request is malformed (bad name, input too large, ...).
    InvalidArgument(String),
    /// The configuration was rejected.
    Config(String),
    /// The daemon is stopping.
    ShuttingDown(String),
    /// The call or job was cancelled.
    Cancelled(String),
    /// As many jobs as allowed are running (`jobs.max_running`).
    TooManyJobs(String),
    /// Anything else (e.g. runtime state could not be saved).
    Failed(String),
}
