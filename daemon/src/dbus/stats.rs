//! `GetStats`: the manager's [`Sample`] in the types of `dynplug_dbus::stats`.

use dynplug_core::config::Isolation;
use dynplug_core::stats::LATENCY_BOUNDS_US;
use dynplug_core::Sample;
use dynplug_dbus::{DaemonStats, PluginStats};

/// The reply of `GetStats`: daemon-wide figures, bucket bounds, one entry per plugin.
type Reply = (DaemonStats, Vec<u64>, Vec<PluginStats>);

/// `sample` as `GetStats` answers it; `version` and `state` are the daemon's.
pub(crate) fn reply(sample: Sample, state: &str) -> Reply {
    let daemon = DaemonStats {
        monotonic_usec: Some(sample.monotonic_usec),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        state: Some(state.to_owned()),
        cpu_usage_usec: Some(sample.own.cpu_usec),
        memory_rss_bytes: Some(sample.own.rss_bytes),
        calls_in_flight: Some(sample.in_flight),
        running_jobs: Some(sample.running_jobs),
    };
    let plugins = sample
        .plugins
        .into_iter()
        .map(|p| PluginStats {
            name: p.name,
            state: p.state.to_owned(),
            isolation: match p.isolation {
                Isolation::InProcess => "in-process",
                Isolation::Process => "process",
                Isolation::Wasm => "wasm",
            }
            .to_owned(),
            enabled: p.enabled,
            calls: p.stats.calls,
            errors: p.stats.errors,
            timeouts: p.stats.timeouts,
            total_usec: p.stats.total_us,
            // Trailing empty buckets are left out: most plugins' histograms end early
            // (an idle one is empty), which keeps the reply small with 1,000 plugins.
            buckets: {
                let used = p
                    .stats
                    .latency_buckets
                    .iter()
                    .rposition(|n| *n != 0)
                    .map_or(0, |last| last + 1);
                p.stats.latency_buckets[..used].to_vec()
            },
            workers: p.workers,
            worker_cpu_usec: p.worker_usage.cpu_usec,
            worker_rss_bytes: p.worker_usage.rss_bytes,
            running_jobs: p.running_jobs,
        })
        .collect();
    (daemon, LATENCY_BOUNDS_US.to_vec(), plugins)
}
