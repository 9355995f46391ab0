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
    /// An artifact from a registry is unsigned (while signatures are required) or
    /// badly signed.
    SignatureRefused(String),
    /// A registry could not be reached or stopped answering in time.
    RegistryUnreachable(String),
    /// A registry answered, but not what it should (wrong digest, too large, a
    /// redirect elsewhere, refused credentials, not the format).
    RegistryRefused(String),
    /// Anything else (e.g. runtime state could not be saved).
    Failed(String),
}

impl DynplugError {
    /// The error named `name` (`org.dynplug.Error.*`) with `message`: what a method
    /// would have returned, rebuilt from a job's `ErrorName` and `Error` properties.
    /// Unknown names become [`DynplugError::Failed`].
    pub fn from_name(name: &str, message: String) -> DynplugError {
        match name.strip_prefix("org.dynplug.Error.").unwrap_or_default() {
            "NotFound" => DynplugError::NotFound(message),
            "Disabled" => DynplugError::Disabled(message),
            "Unavailable" => DynplugError::Unavailable(message),
            "ExecutionFailed" => DynplugError::ExecutionFailed(message),
            "Timeout" => DynplugError::Timeout(message),
            "AccessDenied" => DynplugError::AccessDenied(message),
            "InvalidArgument" => DynplugError::InvalidArgument(message),
            "Config" => DynplugError::Config(message),
            "ShuttingDown" => DynplugError::ShuttingDown(message),
            "Cancelled" => DynplugError::Cancelled(message),
            "TooManyJobs" => DynplugError::TooManyJobs(message),
            "SignatureRefused" => DynplugError::SignatureRefused(message),
            "RegistryUnreachable" => DynplugError::RegistryUnreachable(message),
            "RegistryRefused" => DynplugError::RegistryRefused(message),
            _ => DynplugError::Failed(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError;

    #[test]
    fn names_round_trip() {
        for e in [
            DynplugError::Timeout("t".into()),
            DynplugError::Cancelled("c".into()),
            DynplugError::TooManyJobs("m".into()),
            DynplugError::NotFound("n".into()),
        ] {
            let back = DynplugError::from_name(e.name().as_str(), "x".into());
            assert_eq!(back.name(), e.name());
        }
        assert!(matches!(
            DynplugError::from_name("org.example.Other", "x".into()),
            DynplugError::Failed(_)
        ));
    }
}
