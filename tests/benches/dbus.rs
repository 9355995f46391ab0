//! Execute over D-Bus: the real dynplugd (echo plugin) next to a minimal zbus echo
//! service, both as separate processes on one private bus, measured in one run.
//! Reports calls/s and p50/p99 latency for 1 and 16 concurrent clients.
//!
//! Run: `cargo bench -p dynplug-tests --bench dbus`. The bare service is this same
//! binary re-executed with `DYNPLUG_BENCH_BARE=ADDRESS`.

use std::time::{Duration, Instant};

use dynplug_tests::{rust_plugin, Daemon, PluginDir, PrivateBus};

const BARE_NAME: &str = "org.dynplug.BenchBare";
const RUN: Duration = Duration::from_secs(3);

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
                let out: String = proxy
                    .call("Execute", &("echo", "hello"))
                    .await
                    .expect("call");
                assert_eq!(out, "hello");
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
    let _daemon = Daemon::start(&bus, plugins.path(), "log_level: warn\n");
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
        println!("| service | clients | calls/s | p50 | p99 |\n|---|---|---|---|---|");
        for clients in [1, 16] {
            for (label, dest, path, iface) in [
                ("bare zbus echo", BARE_NAME, "/bench", BARE_NAME),
                (
                    "dynplugd echo",
                    "org.dynplug.Manager",
                    "/org/dynplug/Manager",
                    "org.dynplug.Manager",
                ),
            ] {
                let (rate, p50, p99) = measure(&conn, dest, path, iface, clients).await;
                println!("| {label} | {clients} | {rate:.0} | {p50:.0?} | {p99:.0?} |");
            }
        }
    });
    let _ = bare.kill();
    let _ = bare.wait();
}
