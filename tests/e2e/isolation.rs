//! Plugins isolated in worker processes: crashes of every kind are contained, the
//! worker comes back, crash loops quarantine the plugin (persistently), and no worker
//! outlives the daemon.

use std::path::Path;
use std::time::{Duration, Instant};

use dynplug_core::error::{CallError, ManagerError};
use dynplug_core::Manager;
use dynplug_tests::{rust_plugin, send_signal, test_config, Daemon, PluginDir, PrivateBus};

const ISOLATED: &str = "plugins:\n  fault:\n    isolation: process\n    workers: 2\n    timeout_ms: 1500\n    memory_limit_mb: 256\n    crash_limit: 100\n";

fn plugins() -> PluginDir {
    let d = PluginDir::with_examples();
    d.add(&rust_plugin("fault"), "fault.so");
    d
}

/// PIDs of worker processes serving a library under `dir`: each worker is three
/// processes (the keeper the daemon started, the init of its PID namespace and the
/// process running the plugin).
fn workers_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    dynplug_tests::live_processes(|_, cmdline| {
        cmdline.contains("--worker") && cmdline.contains(&needle)
    })
}

fn wait_no_workers(dir: &Path) {
    dynplug_tests::wait_until_gone("workers", || workers_under(dir));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_crash_is_contained_and_the_worker_comes_back() {
    let bus = PrivateBus::start();
    let plugins = plugins();
    let mut daemon = Daemon::start(&bus, plugins.path(), ISOLATED);
    let m = bus.manager_proxy().await;
    assert_eq!(m.execute("fault", "warm").await.unwrap(), "warm");
    assert_eq!(
        workers_under(plugins.path()).len(),
        3,
        "one worker (keeper, init, plugin) started on demand"
    );

    let cases = [
        ("segv", "ExecutionFailed", "SIGSEGV"),
        ("abort", "ExecutionFailed", "SIGABRT"),
        ("exit", "ExecutionFailed", "exited with status 7"),
        ("alloc", "ExecutionFailed", "SIGABRT"),
        ("close", "ExecutionFailed", "crashed"),
        ("loop", "Timeout", "did not answer within 1500ms"),
    ];
    for (input, kind, text) in cases {
        let err = m.execute("fault", input).await.unwrap_err();
        let debug = format!("{err:?}");
        assert!(
            debug.contains(kind) && err.to_string().contains(text),
            "{input}: {err:?}"
        );
        // The daemon and the other plugins are fine, and the plugin comes back.
        assert_eq!(m.execute("echo", input).await.unwrap(), input);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match m.execute("fault", "again").await {
                Ok(out) => {
                    assert_eq!(out, "again");
                    break;
                }
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "{input}: worker did not come back: {e}"
                ),
            }
        }
    }
    assert_eq!(
        m.execute("fault", "garbage").await.unwrap(),
        "still answering"
    );
    let info = m.get_plugin("fault").await.unwrap();
    let crashes = info.worker_crashes.unwrap();
    assert_eq!(crashes, 5, "segv, abort, exit, alloc, close");
    assert_eq!(info.isolation.unwrap(), "process");

    assert_eq!(daemon.stop_with(libc::SIGTERM), Some(0));
    wait_no_workers(plugins.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn healthy_plugins_lose_no_call_while_an_isolated_one_crashes() {
    let bus = PrivateBus::start();
    let plugins = plugins();
    let _daemon = Daemon::start(&bus, plugins.path(), ISOLATED);
    let m = bus.manager_proxy().await;
    let mut healthy = Vec::new();
    for w in 0..4 {
        let m = m.clone();
        healthy.push(tokio::spawn(async move {
            for i in 0..50 {
                let input = format!("{w}-{i}");
                assert_eq!(m.execute("echo", &input).await.unwrap(), input);
                assert_eq!(m.execute("text", "x").await.unwrap(), "X");
            }
        }));
    }
    let mut faults = Vec::new();
    for mode in [
        "segv", "abort", "exit", "segv", "fine", "abort", "fine", "segv",
    ] {
        let m = m.clone();
        faults.push(tokio::spawn(async move {
            (mode, m.execute("fault", mode).await)
        }));
    }
    for h in healthy {
        h.await.expect("no healthy call failed");
    }
    for f in faults {
        let (mode, result) = f.await.unwrap();
        match mode {
            "fine" => assert!(
                result.is_ok() || result.unwrap_err().to_string().contains("restarting"),
                "{mode}"
            ),
            _ => assert!(result.is_err(), "{mode} must fail"),
        }
    }
}

#[test]
fn workers_die_with_a_killed_daemon() {
    let bus = PrivateBus::start();
    let plugins = plugins();
    let mut daemon = Daemon::start(&bus, plugins.path(), ISOLATED);
    assert_eq!(
        bus.manager_call("Execute", "ss", &["fault", "x"]).trim(),
        r#"s "x""#
    );
    assert_eq!(workers_under(plugins.path()).len(), 3);
    send_signal(daemon.pid(), libc::SIGKILL);
    daemon.wait_exit(Duration::from_secs(10));
    wait_no_workers(plugins.path());
}

async fn manager(dir: &Path, state: &Path, yaml: &str) -> Manager {
    dynplug_tests::manager_with_probe(dir, state, yaml).await
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_loops_quarantine_until_the_file_changes_or_an_admin_enables() {
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("fault"), "fault.so");
    let state = tempfile::tempdir().unwrap();
    let yaml = "plugins:\n  fault:\n    isolation: process\n    workers: 1\n    crash_limit: 3\n    timeout_ms: 10000\n";
    let m = manager(plugins.path(), state.path(), yaml).await;
    for _ in 0..3 {
        let e = m.execute("fault", "segv".into()).await.unwrap_err();
        assert!(
            matches!(e, ManagerError::Call(CallError::Crashed { .. })),
            "{e:?}"
        );
    }
    let e = m.execute("fault", "fine".into()).await.unwrap_err();
    assert!(
        matches!(&e, ManagerError::Unavailable { reason, .. } if reason.contains("quarantined after 3 crashes")),
        "{e:?}"
    );
    assert!(m
        .info("fault")
        .unwrap()
        .error()
        .unwrap()
        .contains("quarantined"));
    m.shutdown(Duration::from_secs(1)).await;
    drop(m);

    // Still quarantined after a restart: same file.
    let m = manager(plugins.path(), state.path(), yaml).await;
    assert!(matches!(
        m.execute("fault", "fine".into()).await,
        Err(ManagerError::Unavailable { .. })
    ));
    // An admin enabling it lifts the quarantine.
    assert_eq!(
        m.enable("fault").await.unwrap(),
        dynplug_core::Change::Changed
    );
    assert_eq!(m.execute("fault", "fine".into()).await.unwrap(), "fine");
    for _ in 0..3 {
        let _ = m.execute("fault", "segv".into()).await;
    }
    m.shutdown(Duration::from_secs(1)).await;
    drop(m);

    // A new file (an upgrade) is not quarantined.
    std::thread::sleep(Duration::from_millis(10));
    plugins.add(&rust_plugin("fault"), "fault.so");
    let m = manager(plugins.path(), state.path(), yaml).await;
    assert_eq!(m.execute("fault", "fine".into()).await.unwrap(), "fine");
    m.shutdown(Duration::from_secs(1)).await;
    wait_no_workers(plugins.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn replacing_an_isolated_plugin_keeps_calls_in_flight() {
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("fault"), "fault.so");
    let state = tempfile::tempdir().unwrap();
    let yaml = "plugins:\n  fault:\n    isolation: process\n";
    let m = manager(plugins.path(), state.path(), yaml).await;
    let inflight = {
        let m = m.clone();
        tokio::spawn(async move { m.execute("fault", "sleep 700".into()).await })
    };
    while m.in_flight() == 0 {
        tokio::task::yield_now().await;
    }
    plugins.add(&rust_plugin("fault"), "fault.so");
    let report = m.reload(test_config(plugins.path(), yaml)).await.unwrap();
    assert_eq!(report.replaced, ["fault"]);
    assert_eq!(m.execute("fault", "new".into()).await.unwrap(), "new");
    assert_eq!(inflight.await.unwrap().unwrap(), "woke up");
    m.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn a_library_that_crashes_while_loading_only_kills_its_probe() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("echo"), "echo.so");
    plugins.add_c(
        "tests/fixtures/c/variant.c",
        "crasher.so",
        &["FIX_CRASH_ENTRY"],
    );
    let mut daemon = Daemon::start(&bus, plugins.path(), "");
    let out = bus.manager_call("GetPlugin", "s", &["crasher.so"]);
    assert!(
        out.contains("SIGSEGV") && out.contains("while loading the plugin"),
        "{out}"
    );
    assert_eq!(
        bus.manager_call("Execute", "ss", &["echo", "alive"]).trim(),
        r#"s "alive""#
    );
    // Reloads keep the verdict without crashing either.
    daemon.reload();
    assert_eq!(bus.manager_property("FailedCount"), "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_isolation_on_and_off_by_reload() {
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("echo"), "echo.so");
    let state = tempfile::tempdir().unwrap();
    let isolated = "plugins:\n  echo:\n    isolation: process\n";
    let m = manager(plugins.path(), state.path(), isolated).await;
    assert_eq!(m.execute("echo", "a".into()).await.unwrap(), "a");
    assert!(m.info("echo").unwrap().workers.is_some());
    let report = m.reload(test_config(plugins.path(), "")).await.unwrap();
    assert_eq!(report.replaced, ["echo"]);
    assert_eq!(m.execute("echo", "b".into()).await.unwrap(), "b");
    assert!(
        m.info("echo").unwrap().workers.is_none(),
        "runs in process now"
    );
    m.reload(test_config(plugins.path(), isolated))
        .await
        .unwrap();
    assert_eq!(m.execute("echo", "c".into()).await.unwrap(), "c");
    assert!(m.info("echo").unwrap().workers.is_some());
    m.shutdown(Duration::from_secs(1)).await;
}

/// Payloads above 64 KiB cross to and from workers through the sealed shared region,
/// byte for byte, in both directions and at the limits.
#[tokio::test(flavor = "multi_thread")]
async fn large_payloads_cross_the_shared_region_intact() {
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("echo"), "echo.so");
    let state = tempfile::tempdir().unwrap();
    let m = manager(
        plugins.path(),
        state.path(),
        "max_input_bytes: 8388608\nplugins:\n  echo:\n    isolation: process\n    workers: 1\n    max_output_bytes: 6291456\n",
    )
    .await;
    for size in [65_536, 65_537, 1 << 20, 6 << 20] {
        let input: String = (0..size)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let out = m.execute("echo", input.clone()).await.unwrap();
        assert!(out == input, "{size} bytes came back changed");
    }
    // Over the plugin's output limit: refused, and the worker serves on.
    let big = "x".repeat((6 << 20) + 1);
    assert!(matches!(
        m.execute("echo", big).await,
        Err(ManagerError::Call(CallError::OutputTooLarge { .. }))
    ));
    assert_eq!(m.execute("echo", "small".into()).await.unwrap(), "small");
}
