//! Per-plugin call counters and latency histogram, kept with atomics so recording a
//! call takes no lock (only a failed call takes one, to keep its message).
//!
//! The histogram has fixed, log-scale buckets ([`LATENCY_BOUNDS_US`]: 1, 2.5 and 5 per
//! decade, 10 µs to 100 s, and one bucket for the rest), the same for every plugin, so
//! a client computes rates and percentiles from the differences of two samples.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use dynplug_loader::locks::lock;

/// Upper bounds of the latency histogram buckets, in microseconds: 1, 2.5 and 5 per
/// decade from 10 µs to 100 s. A call that took longer is counted in one more bucket.
pub const LATENCY_BOUNDS_US: [u64; 22] = [
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
];

/// Number of histogram buckets: one per bound and one for the rest.
pub const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// Call statistics of one plugin (a snapshot of its [`Counters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Calls made (successful or not).
    pub calls: u64,
    /// Calls that failed (errors, panics, timeouts).
    pub errors: u64,
    /// Calls that hit the timeout.
    pub timeouts: u64,
    /// Extra attempts made for transient failures (`retries`).
    pub retries: u64,
    /// Time spent in calls, in microseconds.
    pub total_us: u64,
    /// Duration of the last call, in microseconds.
    pub last_us: u64,
    /// Message of the last failure.
    pub last_error: Option<String>,
    /// Call durations counted per bucket: `latency_buckets[i]` counts calls that took at
    /// most [`LATENCY_BOUNDS_US`]`[i]` (and more than the bound before); the last entry
    /// counts the rest.
    pub latency_buckets: [u64; BUCKETS],
}

/// The bucket a call of `us` microseconds is counted in.
pub fn bucket_of(us: u64) -> usize {
    LATENCY_BOUNDS_US.partition_point(|bound| *bound < us)
}

/// The live counters of one plugin: what every call records, without a lock.
#[derive(Debug, Default)]
pub struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    retries: AtomicU64,
    total_us: AtomicU64,
    last_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    /// Taken only on a failed call.
    last_error: Mutex<Option<String>>,
}

impl Counters {
    /// Counts one call that took `elapsed`; `Err((message, timed_out))` for a failure.
    pub fn record(&self, elapsed: Duration, outcome: Result<(), (&str, bool)>) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        // Relaxed: each counter is exact on its own; a sample taken during a call may
        // see one field counted and another not yet (a call's worth, never more).
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.total_us.fetch_add(us, Ordering::Relaxed);
        self.last_us.store(us, Ordering::Relaxed);
        if let Err((message, timed_out)) = outcome {
            self.errors.fetch_add(1, Ordering::Relaxed);
            if timed_out {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            *lock(&self.last_error) = Some(message.to_owned());
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one extra attempt.
    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now; `with_error` also copies the last failure's message.
    pub fn snapshot(&self, with_error: bool) -> CallStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CallStats {
            calls: get(&self.calls),
            errors: get(&self.errors),
            timeouts: get(&self.timeouts),
            retries: get(&self.retries),
            total_us: get(&self.total_us),
            last_us: get(&self.last_us),
            last_error: if with_error {
                lock(&self.last_error).clone()
            } else {
                None
            },
            latency_buckets: std::array::from_fn(|i| get(&self.buckets[i])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_log_scale_and_increasing() {
        assert!(LATENCY_BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
        // Three buckets per decade: each bound is 2 or 2.5 times the one before.
        assert!(LATENCY_BOUNDS_US
            .windows(2)
            .all(|w| w[1] * 10 <= w[0] * 25 && w[1] >= w[0] * 2));
        assert_eq!(LATENCY_BOUNDS_US[0], 10);
        assert_eq!(LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1], 100_000_000);
    }

    #[test]
    fn calls_land_in_the_bucket_of_their_upper_bound() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(10), 0);
        assert_eq!(bucket_of(11), 1);
        assert_eq!(bucket_of(1_000), 6);
        assert_eq!(bucket_of(1_001), 7);
        assert_eq!(bucket_of(100_000_000), BUCKETS - 2);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn counters_record_successes_failures_and_timeouts() {
        let c = Counters::default();
        c.record(Duration::from_micros(40), Ok(()));
        c.record(Duration::from_millis(3), Err(("boom", false)));
        c.record(Duration::from_secs(200), Err(("late", true)));
        c.record_retry();
        let s = c.snapshot(true);
        assert_eq!((s.calls, s.errors, s.timeouts, s.retries), (3, 2, 1, 1));
        assert_eq!(s.total_us, 40 + 3_000 + 200_000_000);
        assert_eq!(s.last_us, 200_000_000);
        assert_eq!(s.last_error.as_deref(), Some("late"));
        assert_eq!(c.snapshot(false).last_error, None);
        let mut expected = [0u64; BUCKETS];
        expected[bucket_of(40)] += 1;
        expected[bucket_of(3_000)] += 1;
        expected[BUCKETS - 1] += 1;
        assert_eq!(s.latency_buckets, expected);
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let c = std::sync::Arc::new(Counters::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        c.record(Duration::from_micros(i % 1000 + t), Ok(()));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = c.snapshot(false);
        assert_eq!(s.calls, 40_000);
        assert_eq!(s.latency_buckets.iter().sum::<u64>(), 40_000);
    }
}
