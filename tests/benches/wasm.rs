//! Cost of a WebAssembly plugin call beside an in-process one: the echo component
//! (made from WAT, `dynplug_wasm::guests::ECHO`: its own work is a copy) called through
//! the runtime alone (`WasmPlugin::call`: a fresh store and instance per call) and
//! through the manager, against the Rust echo through the manager.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dynplug_core::config::Config;
use dynplug_core::trust::TrustPolicy;
use dynplug_core::Manager;
use dynplug_tests::{rust_plugin, set_mode, PluginDir};
use dynplug_wasm::{guests, CallLimits, Options, WasmPlugin};

/// A host whose services do nothing (the echo calls none).
struct Quiet;

impl dynplug_core::host::Host for Quiet {
    fn log(&self, _: dynplug_core::Level, _: &str) {}
    fn progress(&self, _: f64, _: &str) {}
    fn cancelled(&self) -> bool {
        false
    }
    fn emit(&self, _: &str, _: &str) -> bool {
        false
    }
}

fn bench(c: &mut Criterion) {
    let component = guests::component("wecho", &guests::ECHO);
    let plugin = WasmPlugin::load(
        &component,
        Options {
            memory_limit: 64 << 20,
            ..Options::default()
        },
    )
    .expect("the echo component loads");
    let host: Arc<dyn dynplug_core::host::Host + Send + Sync> = Arc::new(Quiet);
    let limits = CallLimits::default();

    let dir = PluginDir::new();
    dir.add(&rust_plugin("echo"), "echo.so");
    let wasm_file = dir.path().join("wecho.wasm");
    std::fs::write(&wasm_file, &component).expect("write");
    set_mode(&wasm_file, 0o644);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let state = tempfile::tempdir().expect("tempdir");
    let mut config = Config::parse("", Path::new("bench")).expect("config");
    config.plugins_dir = dir.path().to_owned();
    config.max_input_bytes = 4 << 20;
    let (manager, _) = runtime
        .block_on(Manager::start(
            config,
            state.path(),
            TrustPolicy::for_current_process(),
        ))
        .expect("manager");
    runtime
        .block_on(manager.execute("wecho", "warm".into()))
        .expect("the wasm echo answers");

    let mut group = c.benchmark_group("wasm");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (label, input) in [("32B", "x".repeat(32)), ("1MiB", "x".repeat(1 << 20))] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_with_input(BenchmarkId::new("runtime", label), &input, |b, i| {
            b.iter(|| {
                plugin
                    .call(black_box(i), "{}", Arc::clone(&host), &limits)
                    .expect("ok")
            })
        });
        group.bench_with_input(BenchmarkId::new("manager-wasm", label), &input, |b, i| {
            b.to_async(&runtime).iter(|| async {
                manager
                    .execute("wecho", black_box(i.clone()))
                    .await
                    .expect("ok")
            })
        });
        group.bench_with_input(
            BenchmarkId::new("manager-in-process", label),
            &input,
            |b, i| {
                b.to_async(&runtime).iter(|| async {
                    manager
                        .execute("echo", black_box(i.clone()))
                        .await
                        .expect("ok")
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
