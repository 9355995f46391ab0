//! Latency distribution of a plugin call in process and in a worker process
//! (`isolation: process`): p50, p99 and calls/s for one caller and for 8 concurrent
//! callers (the isolated plugin has 2 workers), small and 1 MiB inputs.
//!
//! Run: `cargo bench -p dynplug-tests --bench isolation`.

use std::path::Path;
use std::time::{Duration, Instant};

use dynplug_core::config::Config;
use dynplug_core::trust::TrustPolicy;
use dynplug_core::Manager;
use dynplug_tests::{binary, rust_plugin, PluginDir};

const RUN: Duration = Duration::from_secs(3);

async fn measure(m: &Manager, input: &str, callers: usize) -> (f64, Duration, Duration) {
    let deadline = Instant::now() + RUN;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let m = m.clone();
            let input = input.to_owned();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let out = m.execute("echo", input.clone()).await.expect("call");
                    assert_eq!(out.len(), input.len());
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("caller"));
    }
    all.sort();
    let p = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    (all.len() as f64 / RUN.as_secs_f64(), p(0.5), p(0.99))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("echo"), "echo.so");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut rows = Vec::new();
        for (label, yaml) in [
            ("in-process", "max_input_bytes: 4194304\n"),
            ("isolated", "max_input_bytes: 4194304\nplugins:\n  echo:\n    isolation: process\n    workers: 2\n"),
        ] {
            let mut config = Config::parse(yaml, Path::new("bench")).expect("config");
            config.plugins_dir = plugins.path().to_owned();
            let state = tempfile::tempdir().expect("tempdir");
            let (m, _) = Manager::start_with(config, state.path(), TrustPolicy::for_current_process(), Some(binary("dynplug-worker")))
                .await
                .expect("manager");
            for (size, input) in [("small", "hello".to_owned()), ("1MiB", "x".repeat(1 << 20))] {
                for callers in [1, 8] {
                    let (rate, p50, p99) = measure(&m, &input, callers).await;
                    rows.push(format!("| {label} | {size} | {callers} | {rate:.0} | {p50:.1?} | {p99:.1?} |"));
                }
            }
            m.shutdown(Duration::from_secs(1)).await;
        }
        println!("| plugin | input | callers | calls/s | p50 | p99 |\n|---|---|---|---|---|---|");
        for r in rows {
            println!("{r}");
        }
    });
}
