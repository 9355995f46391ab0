//! Core errors mapped once to the named D-Bus errors of `org.dynplug.Error.*` (defined in
//! the contract crate, `dynplug_dbus::DynplugError`).

use dynplug_core::error::{CallError, ManagerError, RegistryFailure};
use dynplug_dbus::DynplugError;

/// `?` for core results inside interface methods.
pub(crate) trait OrDbus<T> {
    /// The result with its error mapped by [`dbus_error`].
    fn or_dbus(self) -> Result<T, DynplugError>;
}

impl<T> OrDbus<T> for Result<T, ManagerError> {
    fn or_dbus(self) -> Result<T, DynplugError> {
        self.map_err(dbus_error)
    }
}

/// Maps a core error to its D-Bus error, once, for every method.
pub(crate) fn dbus_error(e: ManagerError) -> DynplugError {
    let message = e.to_string();
    match e {
        ManagerError::NotFound(_) => DynplugError::NotFound(message),
        ManagerError::Disabled(_) => DynplugError::Disabled(message),
        ManagerError::Unavailable { .. } => DynplugError::Unavailable(message),
        ManagerError::Timeout { .. } => DynplugError::Timeout(message),
        ManagerError::Call(
            CallError::Failed { .. }
            | CallError::Panicked { .. }
            | CallError::InvalidOutput { .. }
            | CallError::Crashed { .. }
            | CallError::Trapped { .. }
            | CallError::Protocol { .. }
            | CallError::OutputTooLarge { .. },
        ) => DynplugError::ExecutionFailed(message),
        ManagerError::InvalidArgument(_) => DynplugError::InvalidArgument(message),
        ManagerError::ShuttingDown => DynplugError::ShuttingDown(message),
        ManagerError::Cancelled(_) => DynplugError::Cancelled(message),
        ManagerError::JobNotFound(_) => DynplugError::NotFound(message),
        ManagerError::TooManyJobs(_) | ManagerError::TooManyJobsForCaller(_) => {
            DynplugError::TooManyJobs(message)
        }
        ManagerError::AccessDenied(_) => DynplugError::AccessDenied(message),
        ManagerError::Config(_) | ManagerError::PluginsDir(_) => DynplugError::Config(message),
        ManagerError::Registry { kind, .. } => match kind {
            RegistryFailure::NotFound => DynplugError::NotFound(message),
            RegistryFailure::SignatureRefused => DynplugError::SignatureRefused(message),
            RegistryFailure::Unreachable => DynplugError::RegistryUnreachable(message),
            RegistryFailure::Refused => DynplugError::RegistryRefused(message),
            RegistryFailure::Local => DynplugError::Failed(message),
        },
        _ => DynplugError::Failed(message),
    }
}

/// The largest answer sent over D-Bus: a system bus refuses (and disconnects the sender
/// of) messages over 32 MiB by default, so larger answers become a named error instead.
pub(crate) const MAX_REPLY_BYTES: usize = 32 * 1024 * 1024 - 64 * 1024;

/// `output` if it fits in a D-Bus reply, else `ExecutionFailed` naming the limit.
pub(crate) fn fit_for_bus(plugin: &str, output: String) -> Result<String, DynplugError> {
    if output.len() <= MAX_REPLY_BYTES {
        return Ok(output);
    }
    Err(DynplugError::ExecutionFailed(format!(
        "plugin `{plugin}` answered {} bytes, more than a D-Bus reply may carry ({MAX_REPLY_BYTES}); \
         lower its max_output_bytes or call it over the REST API",
        output.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_answers_are_a_named_error() {
        assert_eq!(fit_for_bus("x", "ok".into()).unwrap(), "ok");
        let big = "x".repeat(MAX_REPLY_BYTES + 1);
        match fit_for_bus("x", big) {
            Err(DynplugError::ExecutionFailed(m)) => assert!(m.contains("D-Bus reply"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
