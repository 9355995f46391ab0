//! Errors of the host, one enum per layer: the manager's as callers see them, and the
//! configuration's. The loader's errors are re-exported here.
//!
//! Messages are lowercase, name the thing that failed and say what to do where
//! possible. The daemon maps these kinds once to D-Bus error names, HTTP statuses
//! and exit codes.

use std::path::PathBuf;
use std::time::Duration;

pub use dynplug_loader::error::{CallError, LoadError};

/// Errors of the manager, as callers (D-Bus, REST, CLI) see them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// No plugin of that name is known.
    #[error("no plugin named `{0}`")]
    NotFound(String),
    /// The plugin exists but is disabled.
    #[error("plugin `{0}` is disabled")]
    Disabled(String),
    /// The plugin failed to load or initialise and cannot be used.
    #[error("plugin `{name}` is not usable: {reason}")]
    Unavailable {
        /// The plugin.
        name: String,
        /// Why it failed.
        reason: String,
    },
    /// The call ran out of time (including waiting for a free slot).
    #[error("plugin `{name}` did not answer within {}ms", timeout.as_millis())]
    Timeout {
        /// The plugin.
        name: String,
        /// The limit that was hit.
        timeout: Duration,
    },
    /// The plugin's call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The request itself is invalid (name syntax, input too large, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The daemon is shutting down and takes no new calls.
    #[error("dynplugd is shutting down")]
    ShuttingDown,
    /// A configuration or state file problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The runtime state could not be saved.
    #[error("cannot save runtime state: {0}")]
    State(String),
    /// The plugins directory cannot be scanned (missing, not a directory, untrusted).
    #[error("plugins_dir: {0}")]
    PluginsDir(LoadError),
    /// A failure inside the daemon (a task that panicked), not the caller's doing.
    #[error("internal error: {0}")]
    Internal(String),
    /// The call was cancelled before it ended.
    #[error("the call of plugin `{0}` was cancelled")]
    Cancelled(String),
    /// No job has that id (it never existed, or ended and was forgotten).
    #[error("no job {0}")]
    JobNotFound(u64),
    /// As many jobs as allowed are running already.
    #[error("{0} jobs are running, as many as allowed (jobs.max_running)")]
    TooManyJobs(usize),
    /// The caller has as many jobs running as one caller may.
    #[error("you have {0} jobs running, as many as one caller may (jobs.max_running_per_user)")]
    TooManyJobsForCaller(usize),
    /// The caller may not do this (cancel another user's job).
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// Installing a plugin from a registry failed.
    #[error("{message}")]
    Registry {
        /// What kind of failure, for callers that act on it.
        kind: RegistryFailure,
        /// What happened (never credentials).
        message: String,
    },
}

/// Why an install from a registry failed, coarsely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryFailure {
    /// The reference, tag, version, digest or platform build does not exist.
    NotFound,
    /// Unsigned while signatures are required, or badly signed.
    SignatureRefused,
    /// The registry could not be reached or stopped answering in time.
    Unreachable,
    /// The registry answered, but not what it should.
    Refused,
    /// A local problem (a bad reference, a file that cannot be written).
    Local,
}

/// A configuration problem, naming the file, the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{problem}", file.display(), field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct ConfigError {
    /// The file (or `<environment>` for DYNPLUG_* variables).
    pub file: PathBuf,
    /// The offending field as a dotted path, when known.
    pub field: Option<String>,
    /// What is wrong, with line and column when the parser knows them.
    pub problem: String,
}

impl ConfigError {
    /// A problem with a named field.
    pub fn field(
        file: impl Into<PathBuf>,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: file.into(),
            field: Some(field.into()),
            problem: problem.into(),
        }
    }

    /// A problem with the file as a whole.
    pub fn file(file: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        ConfigError {
            file: file.into(),
            field: None,
            problem: problem.into(),
        }
    }
}
