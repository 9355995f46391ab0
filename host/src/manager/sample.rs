//! `Manager::sample`: every plugin's counters, histogram, workers and running jobs in
//! one pass, cheap enough to take every second with thousands of plugins (no plugin
//! call, no file read beyond the workers' own /proc entries, one short lock per table).

use super::*;
use crate::stats::CallStats;
use dynplug_isolation::resources::Usage;

/// One plugin's figures in a [`Sample`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSample {
    /// The plugin's name; for a file that failed to load, its file name.
    pub name: String,
    /// `loaded`, `pending` or `failed` (a quarantined plugin is `failed`).
    pub state: &'static str,
    /// Whether it is enabled.
    pub enabled: bool,
    /// How it runs.
    pub isolation: Isolation,
    /// Its counters and histogram (without the last error's message).
    pub stats: CallStats,
    /// Live worker processes (isolated plugins).
    pub workers: u32,
    /// CPU time and resident memory of its live workers, summed.
    pub worker_usage: Usage,
    /// Its jobs running now.
    pub running_jobs: u32,
}

/// Every plugin's figures and the daemon's own, taken at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When it was taken, µs on the monotonic clock (for rates between two samples).
    pub monotonic_usec: u64,
    /// The daemon's own CPU time and memory.
    pub own: Usage,
    /// Calls (and jobs) running now.
    pub in_flight: u64,
    /// Jobs running now.
    pub running_jobs: u32,
    /// One entry per plugin, by name, then one per file that failed to load.
    pub plugins: Vec<PluginSample>,
}

/// Microseconds on the monotonic clock.
pub fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000
}

impl Manager {
    /// Every plugin's counters, histogram, workers and running jobs, and the daemon's
    /// own figures.
    pub fn sample(&self) -> Sample {
        let (slots, failures) = {
            let reg = read(&self.inner.registry);
            (
                reg.plugins.values().cloned().collect::<Vec<_>>(),
                reg.failures
                    .iter()
                    .map(|(p, _)| p.clone())
                    .collect::<Vec<_>>(),
            )
        };
        let jobs = self.inner.jobs.running_by_plugin();
        let mut plugins: Vec<PluginSample> = slots
            .iter()
            .map(|slot| {
                let pool = slot.pool.as_ref().map(|p| p.status());
                let state = match (&pool, slot.failure(), slot.loaded()) {
                    (_, Some(_), _) => "failed",
                    (Some(p), None, _) if p.quarantined.is_some() => "failed",
                    (Some(_), None, _) | (None, None, Some(_)) => "loaded",
                    (None, None, None) => "pending",
                };
                PluginSample {
                    name: slot.name().to_owned(),
                    state,
                    enabled: slot.enabled(),
                    isolation: if pool.is_some() {
                        Isolation::Process
                    } else {
                        Isolation::InProcess
                    },
                    stats: slot.stats.snapshot(false),
                    workers: pool
                        .as_ref()
                        .map_or(0, |p| u32::try_from(p.running).unwrap_or(u32::MAX)),
                    worker_usage: pool.map(|p| p.usage).unwrap_or_default(),
                    running_jobs: jobs.get(slot.name()).copied().unwrap_or(0),
                }
            })
            .collect();
        plugins.extend(failures.iter().map(|path| {
            PluginSample {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                state: "failed",
                enabled: false,
                isolation: Isolation::InProcess,
                stats: CallStats::default(),
                workers: 0,
                worker_usage: Usage::default(),
                running_jobs: 0,
            }
        }));
        Sample {
            monotonic_usec: monotonic_usec(),
            own: dynplug_isolation::resources::own(),
            in_flight: self.in_flight() as u64,
            running_jobs: jobs.values().sum(),
            plugins,
        }
    }
}
