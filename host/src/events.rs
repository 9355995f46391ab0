//! Lifecycle events the manager publishes (the daemon turns them into D-Bus signals).

use std::fmt;

/// State of a service plugin's service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceState {
    /// Not running (plugin disabled, or not a service being run).
    Stopped,
    /// Running.
    Running,
    /// Ended unexpectedly; restarting after a backoff.
    Restarting {
        /// Which restart this is (1 for the first).
        attempt: u32,
        /// Why it ended.
        reason: String,
    },
}

impl ServiceState {
    /// A one-word name: `stopped`, `running`, `restarting`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ServiceState::Stopped => "stopped",
            ServiceState::Running => "running",
            ServiceState::Restarting { .. } => "restarting",
        }
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceState::Restarting { attempt, reason } => {
                write!(f, "restarting (attempt {attempt}): {reason}")
            }
            other => f.write_str(other.as_str()),
        }
    }
}

/// Something that happened to a plugin or to the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A plugin appeared (first load or a reload found it).
    PluginAdded {
        /// The plugin.
        name: String,
    },
    /// A plugin went away (its file was removed or replaced).
    PluginRemoved {
        /// The plugin.
        name: String,
    },
    /// A plugin was enabled or disabled, or its instance was created.
    PluginStateChanged {
        /// The plugin.
        name: String,
        /// Enabled now.
        enabled: bool,
        /// Instance created and usable.
        loaded: bool,
    },
    /// A plugin failed: load, configure, a crashed call, or its service ending.
    PluginFailed {
        /// The plugin (or the file name, for files that never loaded).
        name: String,
        /// What went wrong.
        error: String,
    },
    /// A service plugin's service changed state.
    ServiceStateChanged {
        /// The plugin.
        name: String,
        /// The new state.
        state: ServiceState,
    },
    /// A plugin published an event (ABI version 2 `emit`), within its budget.
    PluginEvent {
        /// The plugin.
        plugin: String,
        /// The event's name.
        event: String,
        /// Its payload (text, JSON by convention).
        payload: String,
    },
    /// A job was started.
    JobAdded {
        /// The job.
        id: u64,
    },
    /// A job's progress or state changed (progress at most every
    /// `jobs::JOB_PROGRESS_INTERVAL`).
    JobChanged {
        /// The job.
        id: u64,
        /// Whether it just ended.
        finished: bool,
    },
    /// A finished job was forgotten (its retention ran out).
    JobRemoved {
        /// The job.
        id: u64,
    },
    /// A reload finished.
    ConfigReloaded {
        /// Whether the new configuration is in force.
        success: bool,
        /// A summary of what changed, or why it was refused.
        message: String,
    },
}
