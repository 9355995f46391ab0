//! Cost of an in-process plugin call: the echo plugin called directly as a Rust
//! function, through the C ABI (`Instance::execute`), and through the manager
//! (`Manager::execute`: lookup, limits, blocking pool, timeout, statistics), and
//! through the manager to a worker process (`isolation: process`).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dynplug_core::config::Config;
use dynplug_core::library::PluginLibrary;
use dynplug_core::trust::TrustPolicy;
use dynplug_core::{Manager, Plugin};
use dynplug_echo::Echo;
use dynplug_tests::{binary, rust_plugin, PluginDir};

fn inputs() -> [(&'static str, String); 3] {
    [
        ("small", "hello".to_owned()),
        ("1KiB", "x".repeat(1024)),
        ("1MiB", "x".repeat(1024 * 1024)),
    ]
}

fn bench(c: &mut Criterion) {
    let dir = PluginDir::new();
    let path = dir.add(&rust_plugin("echo"), "echo.so");
    let policy = TrustPolicy::for_current_process();
    let library = Arc::new(PluginLibrary::open(&path, policy).expect("echo loads"));
    let instance = library.instantiate().expect("instance");
    let direct = Echo::new();

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let state = tempfile::tempdir().expect("tempdir");
    let mut config = Config::parse("", Path::new("bench")).expect("config");
    config.plugins_dir = dir.path().to_owned();
    config.max_input_bytes = 4 << 20;
    let (manager, _) = runtime
        .block_on(Manager::start(config.clone(), state.path(), policy))
        .expect("manager");
    let isolated_state = tempfile::tempdir().expect("tempdir");
    let mut isolated_config = Config::parse(
        "plugins:\n  echo:\n    isolation: process\n    workers: 1\n",
        Path::new("bench"),
    )
    .expect("config");
    isolated_config.plugins_dir = config.plugins_dir.clone();
    isolated_config.max_input_bytes = config.max_input_bytes;
    let (isolated, _) = runtime
        .block_on(Manager::start_with(
            isolated_config,
            isolated_state.path(),
            policy,
            Some(binary("dynplug-worker")),
        ))
        .expect("isolated manager");

    let mut group = c.benchmark_group("execute");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (label, input) in inputs() {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_with_input(BenchmarkId::new("direct", label), &input, |b, i| {
            b.iter(|| direct.execute(black_box(i)).expect("ok"))
        });
        group.bench_with_input(BenchmarkId::new("abi", label), &input, |b, i| {
            b.iter(|| instance.execute(black_box(i)).expect("ok"))
        });
        group.bench_with_input(BenchmarkId::new("isolated", label), &input, |b, i| {
            b.to_async(&runtime).iter(|| async {
                isolated
                    .execute("echo", black_box(i.clone()))
                    .await
                    .expect("ok")
            })
        });
        group.bench_with_input(BenchmarkId::new("manager", label), &input, |b, i| {
            b.to_async(&runtime).iter(|| async {
                manager
                    .execute("echo", black_box(i.clone()))
                    .await
                    .expect("ok")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
