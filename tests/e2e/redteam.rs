//! Attacks on the surfaces added with `GetStats` and `dynplugctl top`, run against the
//! real daemon: each test states the attack and what must hold.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynplug_tests::{Daemon, PluginDir, PrivateBus};

/// Plugins loaded for the cost attack: the scale `GetStats` is promised to be cheap at.
const PLUGINS: usize = 1_000;
/// Clients calling `GetStats` back to back, each on its own connection.
const HAMMERS: usize = 4;
/// How long the attack runs.
const ATTACK: Duration = Duration::from_secs(3);
/// The longest another caller's `ListPlugins` may take while the attack runs.
const BOUND: Duration = Duration::from_secs(2);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Calls `GetStats` in a loop on its own connection until `stop`; returns the calls made.
fn hammer(address: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let conn = zbus::connection::Builder::address(address.as_str())
                .build()
                .await
                .unwrap();
            let manager = dynplug_dbus::ManagerProxy::new(&conn).await.unwrap();
            let mut calls = 0;
            while !stop.load(Ordering::Acquire) {
                let (_, _, plugins) = manager.get_stats().await.unwrap();
                assert!(plugins.len() >= PLUGINS, "GetStats saw {}", plugins.len());
                calls += 1;
            }
            calls
        })
    })
}

/// A client calling `GetStats` back to back on several connections, with 1,000 plugins
/// loaded, must not starve other callers: another client's `ListPlugins` keeps being
/// answered within [`BOUND`].
#[test]
fn get_stats_in_a_loop_does_not_starve_other_callers() {
    let scratch = tempfile::tempdir().unwrap();
    let template = scratch.path().join("p0000.so");
    dynplug_tests::compile_c(
        "tests/fixtures/c/marked.c",
        &template,
        &["PLUGIN_NAME=\"p0000\""],
    );
    let plugins = PluginDir::new();
    plugins.add_renamed_copies(&template, 0, PLUGINS);
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&bus, plugins.path(), "log_level: warn\n");
    let stop = Arc::new(AtomicBool::new(false));
    let hammers: Vec<_> = (0..HAMMERS)
        .map(|_| hammer(bus.address().to_owned(), Arc::clone(&stop)))
        .collect();
    let (answered, worst) = runtime().block_on(async {
        let manager = bus.manager_proxy().await;
        let until = Instant::now() + ATTACK;
        let (mut answered, mut worst) = (0u32, Duration::ZERO);
        while Instant::now() < until {
            let started = Instant::now();
            let rows = tokio::time::timeout(BOUND, manager.list_plugins())
                .await
                .unwrap_or_else(|_| {
                    panic!("ListPlugins not answered within {BOUND:?} during the attack")
                })
                .unwrap();
            assert!(rows.len() >= PLUGINS);
            worst = worst.max(started.elapsed());
            answered += 1;
        }
        (answered, worst)
    });
    stop.store(true, Ordering::Release);
    let stats_calls: u64 = hammers.into_iter().map(|h| h.join().unwrap()).sum();
    println!(
        "{stats_calls} GetStats calls over {ATTACK:?} ({HAMMERS} clients, {PLUGINS} plugins); \
         {answered} ListPlugins answered meanwhile, the slowest in {worst:?}"
    );
    assert!(stats_calls > 0, "the attack made no GetStats call");
    assert!(answered > 0, "no ListPlugins answered during the attack");
}

/// Two isolated copies of the hostile fixture: `hostile` attacks, `bystander` is watched.
const USAGE_CONFIG: &str = "worker_user: nobody\nplugins:\n  hostile:\n    isolation: process\n    workers: 1\n    timeout_ms: 5000\n    crash_limit: 1000\n  bystander:\n    isolation: process\n    workers: 1\n    timeout_ms: 5000\n";

/// Plugin `name`'s entry in a `GetStats` reply.
async fn stats_of(m: &dynplug_dbus::ManagerProxy<'_>, name: &str) -> dynplug_dbus::PluginStats {
    let (_, _, plugins) = m.get_stats().await.unwrap();
    plugins
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{name} missing from GetStats"))
}

/// An isolated plugin floods its channel with usage frames claiming the largest CPU
/// time and memory, for a call id it cannot know: its worker is killed and only its
/// call fails; the daemon keeps serving both plugins, and no plugin's figures (its own
/// included) take the forged numbers.
#[tokio::test(flavor = "multi_thread")]
async fn forged_usage_floods_kill_only_the_forging_worker() {
    let plugins = PluginDir::new();
    plugins.add_c("tests/fixtures/c/hostile.c", "hostile.so", &[]);
    plugins.add_c(
        "tests/fixtures/c/hostile.c",
        "bystander.so",
        &["PLUGIN_NAME=\"bystander\""],
    );
    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&bus, plugins.path(), USAGE_CONFIG);
    let m = bus.manager_proxy().await;
    assert_eq!(
        m.execute("bystander", "echo before").await.unwrap(),
        "before"
    );
    let before = stats_of(&m, "bystander").await;
    let forged = m.execute("hostile", "usage 100000").await;
    assert!(
        forged.is_err(),
        "a forged usage flood was accepted: {forged:?}"
    );
    // The daemon serves both: the attacker from a new worker, the bystander as before.
    assert_eq!(m.execute("hostile", "echo again").await.unwrap(), "again");
    assert_eq!(m.execute("bystander", "echo after").await.unwrap(), "after");
    let (_, _, all) = m.get_stats().await.unwrap();
    for p in &all {
        assert!(
            p.worker_cpu_usec < u64::MAX / 2 && p.worker_rss_bytes < u64::MAX / 2,
            "forged figures reached {}: {p:?}",
            p.name
        );
    }
    let after = stats_of(&m, "bystander").await;
    assert!(after.worker_cpu_usec >= before.worker_cpu_usec);
    assert!(after.worker_rss_bytes < 1 << 40, "{after:?}");
    let hostile = stats_of(&m, "hostile").await;
    assert!(
        hostile.errors >= 1,
        "the forged call was not counted failed: {hostile:?}"
    );
}
