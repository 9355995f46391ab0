//! Execute over D-Bus: the real dynplugd (echo plugin) next to a minimal zbus echo
//! service, both as separate processes on one private bus, measured in one run.
//! Reports calls/s, p50/p99 latency and the service's CPU time per call (from
//! /proc/PID/stat) for 1 and 16 concurrent clients, in three interleaved rounds (to
//! show the noise), then each figure of dynplugd as a ratio to the bare service's.
//!
//! Run: `cargo bench -p dynplug-tests --bench dbus`. The bare service is this same
//! binary re-executed with `DYNPLUG_BENCH_BARE=ADDRESS`.

use std::time::{Duration, Instant};

use dynplug_tests::{rust_plugin, Daemon, PluginDir, PrivateBus};

const BARE_NAME: &str = "org.dynplug.BenchBare";
const RUN: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;
/// The input: 32 bytes.
const INPUT: &str = "0123456789abcdef0123456789abcdef";

/// One measured row.
struct Row {
    rate: f64,
    p50: Duration,
    p99: Duration,
    cpu_us_per_call: f64,
}

/// The CPU time `pid` has used, in microseconds.
fn cpu_us(pid: u32) -> u64 {
    dynplug_core::resources::of(&pid.to_string())
        .expect("the service's /proc entry")
        .cpu_usec
}

struct Bare;

#[zbus::interface(name = "org.dynplug.BenchBare")]
impl Bare {
    async fn execute(&self, _name: &str, input: String) -> String {
        input
    }
}

fn serve_bare(address: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let _conn = zbus::connection::Builder::address(address)
            .name(BARE_NAME)
            .serve_at("/bench", Bare)
            .build()
            .await
            .expect("bare service");
        std::future::pending::<()>().await;
    });
}

async fn measure(
    conn: &zbus::Connection,
    dest: &str,
    path: &str,
    iface: &str,
    clients: usize,
) -> (f64, Duration, Duration) {
    let deadline = Instant::now() + RUN;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let proxy = zbus::Proxy::new(conn, dest.to_owned(), path.to_owned(), iface.to_owned())
            .await
            .expect("proxy");
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let out: String = proxy.call("Execute", &("echo", INPUT)).await.expect("call");
                assert_eq!(out, INPUT);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    all.sort();
    let rate = all.len() as f64 / RUN.as_secs_f64();
    let p = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    (rate, p(0.50), p(0.99))
}

fn main() {
    if let Ok(address) = std::env::var("DYNPLUG_BENCH_BARE") {
        serve_bare(&address);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and test discovery
    }
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("echo"), "echo.so");
    // DYNPLUG_BENCH_FAST_PATH=off measures the threaded path (every call handed to a
    // blocking thread), for comparison.
    let fast_path = std::env::var("DYNPLUG_BENCH_FAST_PATH").unwrap_or_else(|_| "auto".into());
    let config = format!("log_level: warn\nplugins:\n  echo:\n    fast_path: {fast_path}\n");
    let daemon = Daemon::start(&bus, plugins.path(), &config);
    println!("dynplugd with fast_path: {fast_path}\n");
    let mut bare = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env("DYNPLUG_BENCH_BARE", bus.address())
        .spawn()
        .expect("bare service");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(bus.address())
            .build()
            .await
            .expect("client connection");
        let dbus = zbus::fdo::DBusProxy::new(&conn).await.expect("dbus proxy");
        let name = zbus::names::BusName::try_from(BARE_NAME).expect("name");
        while !dbus.name_has_owner(name.clone()).await.unwrap_or(false) {
            tokio::task::yield_now().await;
        }
        let services = [
            ("bare zbus echo", BARE_NAME, "/bench", BARE_NAME, bare.id()),
            (
                "dynplugd echo",
                "org.dynplug.Manager",
                "/org/dynplug/Manager",
                "org.dynplug.Manager",
                daemon.pid(),
            ),
        ];
        // Warm up both (dynplugd learns that echo is fast and calls it inline).
        for (_, dest, path, iface, _) in services {
            let proxy = zbus::Proxy::new(&conn, dest, path, iface).await.expect("proxy");
            for _ in 0..200 {
                let _: String = proxy.call("Execute", &("echo", INPUT)).await.expect("call");
            }
        }
        println!(
            "| round | service | clients | calls/s | p50 | p99 | service CPU/call |\n|---|---|---|---|---|---|---|"
        );
        let mut ratios = Vec::new();
        for round in 1..=ROUNDS {
            for clients in [1, 16] {
                let mut rows = Vec::new();
                for (label, dest, path, iface, pid) in services {
                    let cpu_before = cpu_us(pid);
                    let (rate, p50, p99) = measure(&conn, dest, path, iface, clients).await;
                    let calls = rate * RUN.as_secs_f64();
                    let cpu_us_per_call = (cpu_us(pid) - cpu_before) as f64 / calls;
                    println!(
                        "| {round} | {label} | {clients} | {rate:.0} | {p50:.0?} | {p99:.0?} | {cpu_us_per_call:.1} µs |"
                    );
                    rows.push(Row {
                        rate,
                        p50,
                        p99,
                        cpu_us_per_call,
                    });
                }
                ratios.push((round, clients, rows));
            }
        }
        println!(
            "\ndynplugd / bare:\n\n| round | clients | calls/s | p50 | p99 | CPU/call |\n|---|---|---|---|---|---|"
        );
        for (round, clients, rows) in ratios {
            let (bare, ours) = (&rows[0], &rows[1]);
            println!(
                "| {round} | {clients} | {:.2}× | {:.2}× | {:.2}× | {:.2}× |",
                ours.rate / bare.rate,
                ours.p50.as_secs_f64() / bare.p50.as_secs_f64(),
                ours.p99.as_secs_f64() / bare.p99.as_secs_f64(),
                ours.cpu_us_per_call / bare.cpu_us_per_call,
            );
        }
    });
    let _ = bare.kill();
    let _ = bare.wait();
}
