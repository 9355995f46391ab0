//! Version pins, secrets in settings, file security of the configuration, retries of
//! transient failures, and resource figures, against the real daemon.

use std::os::unix::fs::PermissionsExt;

use dynplug_tests::{run, rust_plugin, Daemon, PluginDir, PrivateBus};

#[test]
fn a_pinned_version_that_does_not_match_is_refused_with_both_versions() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::with_examples();
    let _d = Daemon::start(
        &bus,
        plugins.path(),
        "plugins:\n  echo:\n    version: \">=2, <3\"\n  hash:\n    version: \"^0.1\"\n",
    );
    let out = bus.manager_call("GetPlugin", "s", &["echo"]);
    assert!(
        out.contains("is version 0.1.0, but the configuration requires >=2, <3"),
        "{out}"
    );
    assert!(out.contains(r#""VersionRequirement" s ">=2, <3""#), "{out}");
    assert!(out.contains(r#""AbiVersion" u 2"#), "{out}");
    let out = bus.manager_call("Execute", "ss", &["hash", "x"]);
    assert!(out.starts_with("s \""), "a satisfied pin loads: {out}");
}

#[test]
fn secrets_reach_the_plugin_but_never_logs_dbus_or_http() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::with_examples();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pick");
    // The json plugin's `pick` pointer comes from a secret file; the answer proves it
    // was resolved.
    std::fs::write(&secret, "/hunter2\n").unwrap();
    let config = format!(
        "log_level: trace\nserver:\n  enabled: true\n  port: 0\nplugins:\n  json:\n    settings:\n      pick:\n        secret_file: {}\n",
        secret.display()
    );
    let d = Daemon::start(&bus, plugins.path(), &config);
    let out = bus.manager_call("Execute", "ss", &["json", r#"{"hunter2": 42}"#]);
    assert_eq!(out.trim(), r#"s "42""#);
    let dbus = bus.manager_call("GetPlugin", "s", &["json"]);
    let http = bus.api_get("/plugins/json") + &bus.api_get("/plugins");
    for (what, text) in [("D-Bus", &dbus), ("HTTP", &http), ("log", &d.log())] {
        assert!(
            !text.contains("hunter2"),
            "the secret leaked into the {what}: {text}"
        );
    }
    assert!(http.contains("\"json\""), "{http}");
    // A missing secret is a clear configuration error.
    let (code, err) = bus.run_daemon_once(
        plugins.path(),
        "plugins:\n  text:\n    settings:\n      mode:\n        secret_file: /nonexistent/secret\n",
        &[],
    );
    assert_eq!(code, 78);
    assert!(
        err.contains("plugins.text.settings.mode") && err.contains("/nonexistent/secret"),
        "{err}"
    );
}

#[test]
fn a_group_writable_config_is_refused() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "log_level: info\n").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut cmd = bus.command(dynplug_tests::binary("dynplugd"));
    cmd.arg("--address")
        .arg(bus.address())
        .arg("--config")
        .arg(&config)
        .arg("--plugins-dir")
        .arg(plugins.path());
    let (code, _, err) = run(cmd);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("writable by group or others"), "{err}");
}

#[test]
fn transient_failures_are_retried_and_counted() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("fault"), "fault.so");
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("crashed-once");
    // The plugin leaves its marker where its sandbox lets it write, and its own user
    // (a uid of the plugin's own) may.
    dynplug_tests::set_mode(marker_dir.path(), 0o1777);
    let d = Daemon::start(
        &bus,
        plugins.path(),
        &format!(
            "server:\n  enabled: true\n  port: 0\nplugins:\n  fault:\n    isolation: process\n    retries: 2\n    workers: 1\n    sandbox:\n      write: [{}]\n",
            marker_dir.path().display()
        ),
    );
    let out = bus.manager_call(
        "Execute",
        "ss",
        &["fault", &format!("segv-once {}", marker.display())],
    );
    assert_eq!(out.trim(), r#"s "recovered""#, "the crash was retried");
    // Plain plugin errors are not retried.
    let _ = bus.manager_call("Execute", "ss", &["fault", "error"]);
    let metrics = bus.api_get("/metrics");
    assert!(
        metrics.contains("dynplug_plugin_retries_total{plugin=\"fault\"} 1\n"),
        "{metrics}"
    );
    assert!(d.log().contains("retrying call"), "retries are logged");
}

#[test]
fn resource_figures_move_under_load() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::with_examples();
    plugins.add(&rust_plugin("fault"), "fault.so");
    let _d = Daemon::start(
        &bus,
        plugins.path(),
        "server:\n  enabled: true\n  port: 0\nplugins:\n  fault:\n    isolation: process\n",
    );
    let cpu = |bus: &PrivateBus| bus.manager_property("CpuUsageUsec").parse::<u64>().unwrap();
    let before = cpu(&bus);
    assert!(
        bus.manager_property("MemoryRssBytes")
            .parse::<u64>()
            .unwrap()
            > 1 << 20
    );
    let big = "x".repeat(100_000);
    for _ in 0..40 {
        bus.manager_call("Execute", "ss", &["hash", &big]);
    }
    assert!(cpu(&bus) > before, "daemon CPU time grows under load");
    bus.manager_call("Execute", "ss", &["fault", "hi"]);
    let info = bus.manager_call("GetPlugin", "s", &["fault"]);
    let rss: u64 = info
        .split("\"WorkerRssBytes\" t ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(rss > 0, "a live worker has resident memory: {info}");
    let metrics = bus.api_get("/metrics");
    assert!(
        metrics.contains("dynplug_process_cpu_seconds_total "),
        "{metrics}"
    );
    assert!(
        metrics.contains("dynplug_worker_resident_memory_bytes{plugin=\"fault\"} "),
        "{metrics}"
    );
}
