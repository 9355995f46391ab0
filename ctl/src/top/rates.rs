//! What `top` shows, computed from two `GetStats` samples: rates over the interval
//! between them and latency percentiles from the differences of their histograms.

use dynplug_dbus::{PluginStats, Stats};
use serde::Serialize;

/// One plugin's row: totals, and figures over the last interval (`None` until a
/// second sample exists, or when nothing happened that the figure could describe).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Row {
    /// Plugin name (file name of a file that failed to load).
    pub(crate) name: String,
    /// `loaded`, `pending` or `failed`.
    pub(crate) state: String,
    /// `in-process` or `process`.
    pub(crate) isolation: String,
    /// Whether it is enabled.
    pub(crate) enabled: bool,
    /// Calls made in all.
    pub(crate) calls: u64,
    /// Failed calls in all.
    pub(crate) errors: u64,
    /// Timed-out calls in all.
    pub(crate) timeouts: u64,
    /// Calls per second over the interval.
    pub(crate) calls_per_s: Option<f64>,
    /// Failed calls per second over the interval.
    pub(crate) errors_per_s: Option<f64>,
    /// Median call duration over the interval, ms.
    pub(crate) p50_ms: Option<f64>,
    /// 99th percentile call duration over the interval, ms.
    pub(crate) p99_ms: Option<f64>,
    /// CPU of its workers over the interval, percent of one CPU (isolated plugins).
    pub(crate) cpu_percent: Option<f64>,
    /// Resident memory of its workers, bytes (isolated plugins).
    pub(crate) rss_bytes: Option<u64>,
    /// Live workers.
    pub(crate) workers: u32,
    /// Its jobs running now.
    pub(crate) running_jobs: u32,
}

/// The daemon's own figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Daemon {
    /// The daemon's version.
    pub(crate) version: String,
    /// Its state.
    pub(crate) state: String,
    /// Its CPU over the interval, percent of one CPU.
    pub(crate) cpu_percent: Option<f64>,
    /// Its resident memory, bytes.
    pub(crate) rss_bytes: u64,
    /// Calls running now.
    pub(crate) calls_in_flight: u64,
    /// Jobs running now.
    pub(crate) running_jobs: u32,
    /// Seconds between the two samples (`None` for a first sample).
    pub(crate) interval_s: Option<f64>,
}

/// A whole screen (or JSON document) of figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Screen {
    /// The daemon.
    pub(crate) daemon: Daemon,
    /// One row per plugin, in the daemon's order.
    pub(crate) plugins: Vec<Row>,
}

/// The `q` quantile (0 < q ≤ 1) of the calls counted in `buckets` (per bucket, not
/// cumulative; one more bucket than `bounds_usec`), in µs, interpolated linearly inside
/// the bucket it falls in. A quantile in the last bucket (beyond every bound) is given
/// as the last bound: a floor. `None` when no call was counted.
pub(crate) fn quantile_usec(buckets: &[u64], bounds_usec: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
    let mut below = 0u64;
    for (i, &count) in buckets.iter().enumerate() {
        if count == 0 {
            continue;
        }
        if (below + count) as f64 >= rank {
            // A reply with more buckets than bounds allow (a daemon of another version,
            // or a broken one) floors at the last bound instead of indexing past it.
            let lower = match i {
                0 => 0.0,
                _ => bounds_usec
                    .get(i - 1)
                    .or(bounds_usec.last())
                    .map_or(0.0, |b| *b as f64),
            };
            let Some(&upper) = bounds_usec.get(i) else {
                return Some(lower);
            };
            let within = (rank - below as f64) / count as f64;
            return Some(lower + (upper as f64 - lower) * within);
        }
        below += count;
    }
    bounds_usec.last().map(|b| *b as f64)
}

/// `now - before`, per bucket (a bucket missing from a list is 0); a counter that went
/// back (the plugin was replaced and started again from 0) counts from 0.
fn bucket_delta(now: &[u64], before: &[u64]) -> Vec<u64> {
    let at = |list: &[u64], i: usize| list.get(i).copied().unwrap_or(0);
    let len = now.len().max(before.len());
    let reset = (0..len).any(|i| at(now, i) < at(before, i));
    (0..len)
        .map(|i| {
            if reset {
                at(now, i)
            } else {
                at(now, i) - at(before, i)
            }
        })
        .collect()
}

/// Per second, `now - before` over `secs` (from 0 if the counter went back).
fn rate(now: u64, before: u64, secs: f64) -> f64 {
    let delta = if now >= before { now - before } else { now };
    delta as f64 / secs
}

fn row(now: &PluginStats, before: Option<&PluginStats>, bounds: &[u64], secs: Option<f64>) -> Row {
    let process = now.isolation == "process";
    let mut row = Row {
        name: now.name.clone(),
        state: now.state.clone(),
        isolation: now.isolation.clone(),
        enabled: now.enabled,
        calls: now.calls,
        errors: now.errors,
        timeouts: now.timeouts,
        rss_bytes: process.then_some(now.worker_rss_bytes),
        workers: now.workers,
        running_jobs: now.running_jobs,
        ..Row::default()
    };
    if let (Some(before), Some(secs)) = (before, secs) {
        row.calls_per_s = Some(rate(now.calls, before.calls, secs));
        row.errors_per_s = Some(rate(now.errors, before.errors, secs));
        let delta = bucket_delta(&now.buckets, &before.buckets);
        let ms = |q| quantile_usec(&delta, bounds, q).map(|us| us / 1000.0);
        row.p50_ms = ms(0.5);
        row.p99_ms = ms(0.99);
        row.cpu_percent = process.then(|| {
            let cpu = now.worker_cpu_usec.saturating_sub(before.worker_cpu_usec);
            cpu as f64 / (secs * 1e6) * 100.0
        });
    }
    row
}

/// The screen for sample `now`, with rates since `before` (if there is one).
pub(crate) fn screen(now: &Stats, before: Option<&Stats>) -> Screen {
    let mono = |s: &Stats| s.daemon.monotonic_usec.unwrap_or(0);
    let secs = before
        .map(|b| mono(now).saturating_sub(mono(b)) as f64 / 1e6)
        .filter(|s| *s > 0.0);
    let cpu = |s: &Stats| s.daemon.cpu_usage_usec.unwrap_or(0);
    let daemon = Daemon {
        version: now.daemon.version.clone().unwrap_or_default(),
        state: now.daemon.state.clone().unwrap_or_default(),
        cpu_percent: before
            .zip(secs)
            .map(|(b, secs)| cpu(now).saturating_sub(cpu(b)) as f64 / (secs * 1e6) * 100.0),
        rss_bytes: now.daemon.memory_rss_bytes.unwrap_or(0),
        calls_in_flight: now.daemon.calls_in_flight.unwrap_or(0),
        running_jobs: now.daemon.running_jobs.unwrap_or(0),
        interval_s: secs,
    };
    let plugins = now
        .plugins
        .iter()
        .map(|p| {
            let old = before.and_then(|b| b.plugins.iter().find(|o| o.name == p.name));
            row(p, old, &now.bounds_usec, secs)
        })
        .collect();
    Screen { daemon, plugins }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynplug_dbus::DaemonStats;

    const BOUNDS: [u64; 4] = [10, 100, 1_000, 10_000];

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        // 100 calls between 100 and 1000 µs: the median is halfway.
        let b = [0, 0, 100, 0, 0];
        assert_eq!(quantile_usec(&b, &BOUNDS, 0.5), Some(550.0));
        assert_eq!(quantile_usec(&b, &BOUNDS, 1.0), Some(1_000.0));
        // 99 fast calls and 1 slow one: p50 is fast, p99 still fast, p100 slow.
        let b = [99, 0, 0, 1, 0];
        assert!(quantile_usec(&b, &BOUNDS, 0.5).unwrap() <= 10.0);
        assert!(quantile_usec(&b, &BOUNDS, 0.99).unwrap() <= 10.0);
        assert_eq!(quantile_usec(&b, &BOUNDS, 1.0), Some(10_000.0));
        // Past every bound: the last bound, a floor.
        assert_eq!(
            quantile_usec(&[0, 0, 0, 0, 3], &BOUNDS, 0.5),
            Some(10_000.0)
        );
        assert_eq!(quantile_usec(&[0; 5], &BOUNDS, 0.5), None);
    }

    #[test]
    fn a_reply_with_more_buckets_than_bounds_does_not_panic() {
        // Calls counted two buckets past the last one the bounds describe.
        let b = [0, 0, 0, 0, 0, 0, 5];
        assert_eq!(quantile_usec(&b, &BOUNDS, 0.5), Some(10_000.0));
        assert_eq!(quantile_usec(&[0, 3], &[], 0.5), Some(0.0));
        let before = stats(0, 0, vec![plugin("a", 0, 0, [0; 5], 0)]);
        let mut now = stats(1_000_000, 0, vec![plugin("a", 5, 0, [0; 5], 0)]);
        now.plugins[0].buckets = b.to_vec();
        let r = &screen(&now, Some(&before)).plugins[0];
        assert_eq!(r.p50_ms, Some(10.0));
    }

    fn stats(mono: u64, cpu: u64, plugins: Vec<PluginStats>) -> Stats {
        Stats {
            daemon: DaemonStats {
                monotonic_usec: Some(mono),
                cpu_usage_usec: Some(cpu),
                ..DaemonStats::default()
            },
            bounds_usec: BOUNDS.to_vec(),
            plugins,
        }
    }

    fn plugin(name: &str, calls: u64, errors: u64, buckets: [u64; 5], cpu: u64) -> PluginStats {
        PluginStats {
            name: name.into(),
            isolation: "process".into(),
            calls,
            errors,
            buckets: buckets.to_vec(),
            worker_cpu_usec: cpu,
            ..PluginStats::default()
        }
    }

    #[test]
    fn rates_and_percentiles_come_from_the_interval_only() {
        // Before: 1000 slow calls. Over the next 2 s: 200 fast calls, 10 failed.
        let before = stats(
            1_000_000,
            0,
            vec![plugin("a", 1000, 0, [0, 0, 0, 1000, 0], 0)],
        );
        let now = stats(
            3_000_000,
            500_000,
            vec![plugin("a", 1200, 10, [200, 0, 0, 1000, 0], 1_000_000)],
        );
        let s = screen(&now, Some(&before));
        let r = &s.plugins[0];
        assert_eq!(r.calls_per_s, Some(100.0));
        assert_eq!(r.errors_per_s, Some(5.0));
        assert!(r.p99_ms.unwrap() <= 0.010, "{r:?}");
        assert_eq!(r.cpu_percent, Some(50.0));
        assert_eq!(s.daemon.cpu_percent, Some(25.0));
        assert_eq!(s.daemon.interval_s, Some(2.0));
        // A first sample has totals but no rates.
        let first = screen(&now, None);
        assert_eq!(first.plugins[0].calls, 1200);
        assert_eq!(first.plugins[0].calls_per_s, None);
        assert_eq!(first.plugins[0].p50_ms, None);
    }

    #[test]
    fn missing_trailing_buckets_are_zero() {
        let before = stats(0, 0, vec![plugin("a", 0, 0, [0; 5], 0)]);
        let mut idle = before.clone();
        idle.plugins[0].buckets.clear();
        let mut now = stats(1_000_000, 0, vec![plugin("a", 4, 0, [0, 4, 0, 0, 0], 0)]);
        now.plugins[0].buckets.truncate(2);
        let r = &screen(&now, Some(&idle)).plugins[0];
        assert_eq!(r.calls_per_s, Some(4.0));
        assert!(
            r.p50_ms.is_some_and(|ms| (0.010..=0.100).contains(&ms)),
            "{r:?}"
        );
        assert_eq!(screen(&idle, Some(&before)).plugins[0].p50_ms, None);
    }

    #[test]
    fn a_restarted_counter_counts_from_zero() {
        let before = stats(0, 0, vec![plugin("a", 500, 0, [500, 0, 0, 0, 0], 0)]);
        let now = stats(1_000_000, 0, vec![plugin("a", 7, 0, [0, 7, 0, 0, 0], 0)]);
        let r = &screen(&now, Some(&before)).plugins[0];
        assert_eq!(r.calls_per_s, Some(7.0));
        let p50 = r.p50_ms.unwrap();
        assert!((0.010..=0.100).contains(&p50), "{p50}");
    }
}
