//! Start-up and registry costs with 1,000 small C plugins (tests/fixtures/c/marked.c,
//! copied and renamed): the real dynplugd on a private bus, READY=1 timed from spawn on
//! its notify socket. For each kind of directory (with and without the metadata
//! section) and each isolation mode (in process, in process with `lazy_load`, isolated) it
//! reports: READY cold (no registry cache) and warm
//! (second start, cache present), resident memory and open descriptors after READY, a
//! reload with nothing changed and with one file changed (SIGHUP to READY=1), and
//! `ListPlugins`, `GetManagedObjects` and `GetStats` (median of 5 calls).
//!
//! Run: `cargo bench -p dynplug-tests --bench startup` (`DYNPLUG_BENCH_PLUGINS=N` for
//! another count). There is no bare peer for a start-up; the figures stand alone.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use dynplug_tests::{compile_c, dynplugd_command, NotifySocket, PluginDir, PrivateBus};

struct Running {
    child: Child,
    notify: NotifySocket,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts dynplugd and returns it with the time to READY=1.
fn start(bus: &PrivateBus, plugins: &Path, state: &Path, config: &Path) -> (Running, Duration) {
    let mut notify = NotifySocket::new();
    let began = Instant::now();
    let child = dynplugd_command(bus, config, plugins, state)
        .env("NOTIFY_SOCKET", notify.path())
        .env_remove("DYNPLUG_CONFIG")
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dynplugd");
    notify.wait_for("READY=1", Duration::from_secs(300));
    let ready = began.elapsed();
    (Running { child, notify }, ready)
}

/// SIGHUP to the next READY=1.
fn reload(daemon: &mut Running) -> Duration {
    daemon.notify.drain();
    let began = Instant::now();
    dynplug_tests::send_signal(daemon.child.id(), libc::SIGHUP);
    daemon.notify.wait_for("READY=1", Duration::from_secs(300));
    began.elapsed()
}

fn rss_mib(pid: u32) -> f64 {
    dynplug_core::resources::of(&pid.to_string())
        .map(|u| u.rss_bytes as f64 / (1024.0 * 1024.0))
        .unwrap_or(0.0)
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Median time of 5 calls of `method` (no arguments) on `path`.
fn call_median(bus: &PrivateBus, path: &str, interface: &str, method: &str) -> Duration {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(bus.address())
            .build()
            .await
            .expect("connect");
        let mut times = Vec::new();
        for _ in 0..5 {
            let began = Instant::now();
            conn.call_method(
                Some("org.dynplug.Manager"),
                path,
                Some(interface),
                method,
                &(),
            )
            .await
            .expect("call");
            times.push(began.elapsed());
        }
        times.sort();
        times[2]
    })
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let count: usize = std::env::var("DYNPLUG_BENCH_PLUGINS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let scratch = tempfile::tempdir().expect("tempdir");
    // Built before anything is timed.
    let _ = dynplug_tests::binary("dynplugd");
    println!("{count} plugins; times from spawn (or SIGHUP) to READY=1\n");
    println!(
        "{:<34} {:>10} {:>10} {:>8} {:>6} {:>12} {:>12} {:>11} {:>12} {:>9}",
        "directory",
        "cold",
        "warm",
        "RSS MiB",
        "fds",
        "reload none",
        "reload one",
        "ListPlugins",
        "GetManaged",
        "GetStats"
    );
    for (label, defines) in [
        ("with .dynplug.meta", vec!["PLUGIN_NAME=\"p0000\""]),
        (
            "without (probe)",
            vec!["PLUGIN_NAME=\"p0000\"", "NO_METADATA"],
        ),
    ] {
        let template = scratch.path().join(format!("{}.so", label.len()));
        compile_c("tests/fixtures/c/marked.c", &template, &defines);
        let plugins = PluginDir::new();
        plugins.add_renamed_copies(&template, 0, count);
        for isolation in ["in-process", "in-process, lazy_load", "process"] {
            let state = tempfile::tempdir().expect("state");
            let config = state.path().join("config.yaml");
            let mut yaml = String::from("log_level: warn\n");
            if isolation.ends_with("lazy_load") {
                yaml.push_str("lazy_load: true\n");
            }
            if isolation == "process" {
                yaml.push_str("plugins:\n");
                for i in 0..count {
                    yaml.push_str(&format!("  p{i:04}:\n    isolation: process\n"));
                }
            }
            std::fs::write(&config, yaml).expect("config");
            dynplug_tests::set_mode(&config, 0o644);
            let bus = PrivateBus::start();
            let (cold_daemon, cold) = start(&bus, plugins.path(), state.path(), &config);
            drop(cold_daemon);
            let (mut daemon, warm) = start(&bus, plugins.path(), state.path(), &config);
            let pid = daemon.child.id();
            let rss = rss_mib(pid);
            let fds = descriptors(pid);
            let none = reload(&mut daemon);
            let touched = plugins.path().join("p0001.so");
            std::fs::File::options()
                .write(true)
                .open(&touched)
                .and_then(|f| {
                    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(60))
                })
                .expect("touch");
            let one = reload(&mut daemon);
            let list = call_median(
                &bus,
                "/org/dynplug/Manager",
                "org.dynplug.Manager",
                "ListPlugins",
            );
            let managed = call_median(
                &bus,
                "/org/dynplug/Manager",
                "org.freedesktop.DBus.ObjectManager",
                "GetManagedObjects",
            );
            let stats = call_median(
                &bus,
                "/org/dynplug/Manager",
                "org.dynplug.Manager",
                "GetStats",
            );
            println!(
                "{:<34} {:>10} {:>10} {:>8.1} {:>6} {:>12} {:>12} {:>11} {:>12} {:>9}",
                format!("{label}, {isolation}"),
                ms(cold),
                ms(warm),
                rss,
                fds,
                ms(none),
                ms(one),
                ms(list),
                ms(managed),
                ms(stats)
            );
            drop(daemon);
        }
    }
}
