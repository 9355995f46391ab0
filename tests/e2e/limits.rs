//! Bad input of every kind against the real daemon: numbers out of range, odd files in
//! plugins_dir, duplicate plugin names, a connection flood, calls outliving the stop
//! timeout. Each gets a clear error and the daemon keeps serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use dynplug_tests::{binary, run, rust_plugin, send_signal, Daemon, PluginDir, PrivateBus};

fn echo_dir() -> PluginDir {
    let d = PluginDir::new();
    d.add(&rust_plugin("echo"), "echo.so");
    d
}

#[test]
fn numbers_out_of_range_are_configuration_errors_at_start_and_on_reload() {
    let bus = PrivateBus::start();
    let plugins = echo_dir();
    for (config, key) in [
        (
            "plugins:\n  echo:\n    max_concurrency: 18446744073709551615\n",
            "plugins.echo.max_concurrency",
        ),
        (
            "plugins:\n  echo:\n    memory_limit_mb: 17592186044416\n",
            "plugins.echo.memory_limit_mb",
        ),
        ("default_max_concurrency: 0\n", "default_max_concurrency"),
        (
            "server:\n  enabled: true\n  port: 0\n  token_file: /nonexistent/token\n",
            "server.token_file",
        ),
        (
            "plugins:\n  echo:\n    enabled: true\n  echo:\n    enabled: false\n",
            "listed twice",
        ),
    ] {
        let (code, err) = bus.run_daemon_once(plugins.path(), config, &[]);
        assert_eq!(code, 78, "{config}: {err}");
        assert!(err.contains(key), "{config}: {err}");
    }

    // A state_dir that is a file (without --state-dir, which overrides the file).
    let state_file = tempfile::NamedTempFile::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!("state_dir: {}\n", state_file.path().display()),
    )
    .unwrap();
    let mut cmd = bus.command(binary("dynplugd"));
    cmd.args(["--address", bus.address(), "--config"])
        .arg(&config)
        .arg("--plugins-dir")
        .arg(plugins.path());
    let (code, _, err) = run(cmd);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("state_dir") && err.contains("is not a directory"),
        "{err}"
    );

    let mut daemon = Daemon::start(&bus, plugins.path(), "");
    for config in [
        "plugins:\n  echo:\n    workers: 18446744073709551615\n".to_owned(),
        "plugins:\n  echo:\n    max_concurrency: 18446744073709551615\n".to_owned(),
        "plugins:\n  echo:\n    timeout_ms: 1\n  echo:\n    timeout_ms: 2\n".to_owned(),
    ] {
        std::fs::write(daemon.config_path(), &config).unwrap();
        let reply = bus.manager_call("Reload", "", &[]);
        assert!(
            reply.contains("Error.Config") || reply.contains("config"),
            "{config}: {reply}"
        );
        assert_eq!(bus.manager_property("State"), "running", "{config}");
        assert!(
            !bus.manager_property("LastReloadError").is_empty(),
            "{config}"
        );
        assert_eq!(
            bus.manager_call("Execute", "ss", &["echo", "still"]).trim(),
            r#"s "still""#
        );
    }
    // SIGHUP takes the same path.
    daemon.reload();
    assert_eq!(bus.manager_property("State"), "running");
}

#[test]
fn odd_files_in_plugins_dir_are_refused_without_being_opened() {
    let bus = PrivateBus::start();
    let plugins = echo_dir();
    let fifo = plugins.path().join("x.so");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    std::fs::create_dir(plugins.path().join("dir.so")).unwrap();
    symlink(
        plugins.path().join("echo.so"),
        plugins.path().join("link.so"),
    )
    .unwrap();
    symlink("/nonexistent/gone.so", plugins.path().join("dangling.so")).unwrap();
    let mut daemon = Daemon::start(&bus, plugins.path(), "");
    let list = bus.manager_call("ListPlugins", "", &[]);
    let reason = |file: &str| {
        bus.manager_call("GetPlugin", "s", &[file])
            .split("\"Error\" s ")
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        reason("x.so").contains("not a regular file but a FIFO"),
        "{list}"
    );
    assert!(reason("dir.so").contains("a directory"), "{list}");
    assert!(reason("dangling.so").contains("No such file"), "{list}");
    // A symlink is never followed: a plugin file is opened with O_NOFOLLOW.
    assert!(reason("link.so").contains("a symbolic link"), "{list}");
    // Refused from `stat` (the reasons above): a reload does not open the FIFO either
    // (it would block there until the daemon's reload deadline).
    daemon.reload();
    // A reload names the files that no longer fail.
    std::fs::remove_file(&fifo).unwrap();
    let summary = bus.manager_call("Reload", "", &[]);
    assert!(summary.contains("no longer failing: x.so"), "{summary}");
}

#[test]
fn one_rule_for_duplicate_names_at_start_reload_and_restart() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("echo"), "b.so");
    plugins.add(&rust_plugin("echo"), "c.so");
    let path_of = || {
        let info = bus.manager_call("GetPlugin", "s", &["echo"]);
        info.split("\"Path\" s \"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_owned()
    };
    let mut daemon = Daemon::start(&bus, plugins.path(), "");
    assert!(path_of().ends_with("/b.so"));
    let err = bus.manager_call("GetPlugin", "s", &["c.so"]);
    assert!(err.contains("name `echo` is already provided by"), "{err}");
    assert!(err.contains("/b.so"), "{err}");
    // A new file earlier in name order takes the name over on reload, as at start.
    plugins.add(&rust_plugin("echo"), "a.so");
    daemon.reload();
    assert!(path_of().ends_with("/a.so"), "{}", path_of());
    assert!(bus
        .manager_call("GetPlugin", "s", &["b.so"])
        .contains("already provided by"));
    drop(daemon);
    let _daemon = Daemon::start(&bus, plugins.path(), "");
    assert!(
        path_of().ends_with("/a.so"),
        "after a restart: {}",
        path_of()
    );
}

#[test]
fn a_connection_flood_does_not_starve_the_daemon() {
    let bus = PrivateBus::start();
    let plugins = echo_dir();
    plugins.add(&rust_plugin("fault"), "fault.so");
    let _daemon = Daemon::start(
        &bus,
        plugins.path(),
        "server:\n  enabled: true\n  port: 0\n  max_connections: 8\n  header_timeout_ms: 1000\nplugins:\n  fault:\n    isolation: process\n",
    );
    let address = bus.manager_property("ApiAddress");
    // Idle connections far beyond the cap: the daemon holds at most eight of them.
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    // A slow client sends half a request head.
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Reload, new workers and D-Bus calls are unaffected.
    let reply = bus.manager_call("Reload", "", &[]);
    assert!(reply.starts_with('s'), "{reply}");
    assert_eq!(
        bus.manager_call("Execute", "ss", &["fault", "isolated"])
            .trim(),
        r#"s "isolated""#
    );
    // Held connections are closed once their head is overdue, so the queue drains and a
    // real request is served.
    let mut first = &idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        first.read(&mut buf).unwrap_or(0),
        0,
        "idle connection closed"
    );
    drop(idle);
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains("200 OK"),
        "a request with an unfinished head is not served"
    );
    let body = bus.api_get("/health");
    assert!(body.contains("\"success\":true"), "{body}");
}

#[test]
fn a_call_still_running_at_the_stop_timeout_is_answered_shutting_down() {
    let bus = PrivateBus::start();
    let plugins = echo_dir();
    plugins.add(&rust_plugin("fault"), "fault.so");
    let mut daemon = Daemon::start_with(
        &bus,
        plugins.path(),
        "plugins:\n  fault:\n    timeout_ms: 60000\n",
        &["--stop-timeout", "1"],
    );
    let caller = std::thread::spawn({
        let address = bus.address().to_owned();
        move || {
            let mut cmd = std::process::Command::new("busctl");
            cmd.env("DBUS_SESSION_BUS_ADDRESS", &address).args([
                "--user",
                "--timeout=60",
                "call",
                "org.dynplug.Manager",
                "/org/dynplug/Manager",
                "org.dynplug.Manager",
                "Execute",
                "ss",
                "fault",
                "sleep 30000",
            ]);
            dynplug_tests::run(cmd)
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while bus.manager_property("CallsInFlight") != "1" {
        assert!(Instant::now() < deadline, "the call never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    send_signal(daemon.pid(), libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), Some(0));
    let (_, out, err) = caller.join().unwrap();
    assert!(
        (out.clone() + &err).contains("shutting down"),
        "out: {out} err: {err}"
    );
}
