//! What recording a call's statistics costs on the call path: the lock-free counters
//! (`dynplug_core::stats::Counters`) against the mutex-guarded struct they replaced,
//! on one thread and with four threads recording into the same plugin at once.
//!
//! `cargo bench -p dynplug-tests --bench stats`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use dynplug_core::stats::{bucket_of, CallStats, Counters};

/// The previous recording: one mutex around the whole struct.
fn record_locked(stats: &Mutex<CallStats>, elapsed: Duration) {
    let Ok(mut s) = stats.lock() else { return };
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    s.calls += 1;
    s.total_us = s.total_us.saturating_add(us);
    s.last_us = us;
    s.latency_buckets[bucket_of(us)] += 1;
}

/// Time per record with `threads` threads recording `per_thread` calls each.
fn contended(
    threads: usize,
    per_thread: u64,
    record: Arc<dyn Fn(Duration) + Send + Sync>,
) -> Duration {
    let began = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let record = Arc::clone(&record);
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    record(Duration::from_micros(i % 2000));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    began.elapsed() / (threads as u32 * per_thread as u32)
}

fn bench(c: &mut Criterion) {
    let counters = Counters::default();
    let locked = Mutex::new(CallStats::default());
    let mut group = c.benchmark_group("record a call");
    group.bench_function("atomics, one thread", |b| {
        b.iter(|| counters.record(std::hint::black_box(Duration::from_micros(120)), Ok(())))
    });
    group.bench_function("mutex (before), one thread", |b| {
        b.iter(|| record_locked(&locked, std::hint::black_box(Duration::from_micros(120))))
    });
    group.finish();
    let counters = Arc::new(Counters::default());
    let atomics = {
        let c = Arc::clone(&counters);
        contended(4, 1_000_000, Arc::new(move |d| c.record(d, Ok(()))))
    };
    let locked = Arc::new(Mutex::new(CallStats::default()));
    let mutex = {
        let l = Arc::clone(&locked);
        contended(4, 1_000_000, Arc::new(move |d| record_locked(&l, d)))
    };
    println!("four threads recording into one plugin: atomics {atomics:?} per call, mutex (before) {mutex:?} per call");
    assert_eq!(counters.snapshot(false).calls, 4_000_000);
}

criterion_group!(benches, bench);
criterion_main!(benches);
