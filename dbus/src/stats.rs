//! The typed reply of `org.dynplug.Manager.GetStats`:
//!
//! ```text
//! GetStats() -> (a{sv} daemon, at bounds_usec, a(sssbttttautttu) plugins)
//! ```
//!
//! `daemon` holds the daemon-wide figures ([`DaemonStats`]), `bounds_usec` the upper
//! bounds of the latency histogram buckets (the same for every plugin; each plugin has
//! one bucket more, for calls longer than the last bound), `plugins` one
//! [`PluginStats`] per plugin. Counters only grow while a plugin stays loaded (a reload
//! that replaces its file starts them again from 0): a client takes two samples and
//! divides their differences by the difference of `MonotonicUsec`.

use serde::{Deserialize, Serialize};
use zbus::{DeserializeDict, SerializeDict, Type};

/// The daemon-wide part of `GetStats`, key by key (every key optional, as in
/// [`crate::PluginDetails`]).
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "PascalCase")]
pub struct DaemonStats {
    /// When the sample was taken, µs on the daemon's monotonic clock.
    pub monotonic_usec: Option<u64>,
    /// The daemon's version.
    pub version: Option<String>,
    /// starting, running, reloading or stopping.
    pub state: Option<String>,
    /// CPU time of the daemon, µs.
    pub cpu_usage_usec: Option<u64>,
    /// Resident memory of the daemon, bytes.
    pub memory_rss_bytes: Option<u64>,
    /// Calls (and jobs) running now.
    pub calls_in_flight: Option<u64>,
    /// Jobs running now.
    pub running_jobs: Option<u32>,
}

/// One plugin in `GetStats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct PluginStats {
    /// Plugin name (file name of a file that failed to load).
    pub name: String,
    /// `loaded`, `pending` or `failed`.
    pub state: String,
    /// `in-process` or `process`.
    pub isolation: String,
    /// Whether it is enabled.
    pub enabled: bool,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed (errors, panics, timeouts; not cancellations).
    pub errors: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Time spent in calls, µs.
    pub total_usec: u64,
    /// Calls per latency bucket (not cumulative): entry `i` counts calls that took at
    /// most `bounds_usec[i]` and more than the bound before; entry `bounds_usec.len()`
    /// counts the rest. Trailing empty buckets are left out (an idle plugin's list is
    /// empty): a missing entry is 0.
    pub buckets: Vec<u64>,
    /// Live worker processes (isolated plugins; 0 in process).
    pub workers: u32,
    /// CPU time of its live workers, µs.
    pub worker_cpu_usec: u64,
    /// Resident memory of its live workers, bytes.
    pub worker_rss_bytes: u64,
    /// Its jobs running now.
    pub running_jobs: u32,
}

/// The whole reply of `GetStats`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Daemon-wide figures.
    pub daemon: DaemonStats,
    /// Upper bounds of the histogram buckets, µs.
    pub bounds_usec: Vec<u64>,
    /// One entry per plugin.
    pub plugins: Vec<PluginStats>,
}

impl From<(DaemonStats, Vec<u64>, Vec<PluginStats>)> for Stats {
    fn from((daemon, bounds_usec, plugins): (DaemonStats, Vec<u64>, Vec<PluginStats>)) -> Self {
        Stats {
            daemon,
            bounds_usec,
            plugins,
        }
    }
}
