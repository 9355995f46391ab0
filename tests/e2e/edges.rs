//! Rough edges a new user hit, each fixed and kept fixed: a closed terminal cancels the
//! job it was following, a cancelled job is no plugin error, inspect says whose trust
//! settings judged the file, a fresh state directory is made without complaint.

use std::time::{Duration, Instant};

use dynplug_tests::{rust_plugin, send_signal, Daemon, PluginDir, PrivateBus};

fn count_daemon(bus: &PrivateBus, plugins: &PluginDir) -> Daemon {
    plugins.add(&rust_plugin("count"), "count.so");
    Daemon::start(
        bus,
        plugins.path(),
        "plugins:\n  count:\n    timeout_ms: 600000\n",
    )
}

/// Waits (with a deadline) until `done()` holds, naming `what` if it never does.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_hang_up_or_sigterm_cancels_the_job_a_foreground_execute_follows() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    let d = count_daemon(&bus, &plugins);
    for signal in [libc::SIGHUP, libc::SIGTERM] {
        let ctl = bus
            .command(dynplug_tests::binary("dynplugctl"))
            .args(["--address", bus.address(), "execute", "count", "600"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the job started", || {
            bus.manager_property("CallsInFlight").trim().ends_with('1')
        });
        send_signal(ctl.id(), signal);
        let out = dynplug_tests::wait_with_deadline(ctl, "dynplugctl after a hang-up");
        assert!(!out.status.success(), "signal {signal}");
        wait_for("the job ended", || {
            bus.manager_property("CallsInFlight").trim().ends_with('0')
        });
    }
    // Cancelled, not failed: no error counted against the plugin.
    let info = bus.manager_call("GetPlugin", "s", &["count"]);
    assert!(info.contains("\"Errors\" t 0"), "{info}");
    assert!(
        d.log().contains("call cancelled by its caller"),
        "{}",
        d.log()
    );
    assert!(!d.log().contains("execute failed"), "{}", d.log());
}

#[test]
fn inspect_says_which_trust_settings_judged_the_file() {
    let plugins = PluginDir::new();
    let file = plugins.add(&rust_plugin("echo"), "echo.so");
    let config = plugins.path().join("trust.yaml");
    std::fs::write(
        &config,
        "trust:\n  signatures: permissive\n  keys_dir: /nonexistent-keys\n",
    )
    .unwrap();
    dynplug_tests::set_mode(&config, 0o644);
    let mut cmd = dynplug_tests::tool("dynplugctl");
    cmd.arg("inspect").arg(&file).arg("--config").arg(&config);
    let (_, out, err) = dynplug_tests::run(cmd);
    assert!(
        out.contains(&format!("judged by:   {}", config.display()))
            && out.contains("trust.signatures: permissive")
            && out.contains("trust.keys_dir: /nonexistent-keys"),
        "{out}{err}"
    );
}

#[test]
fn a_fresh_state_directory_is_made_without_a_warning() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::with_examples();
    let d = Daemon::start(&bus, plugins.path(), "");
    let mut daemon = d;
    daemon.reload();
    assert!(
        !daemon.log().contains("cannot save the registry cache"),
        "{}",
        daemon.log()
    );
}

/// `watch` shows each job change once, naming the job's plugin: no empty `job N:`
/// lines, one `finished` line, no repeated lines, no nulls in `--json`.
#[test]
fn watch_shows_each_job_change_once_with_its_plugin() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    let _d = count_daemon(&bus, &plugins);
    for json in [false, true] {
        let mut cmd = bus.command(dynplug_tests::binary("dynplugctl"));
        cmd.args(["--address", bus.address()]);
        if json {
            cmd.arg("--json");
        }
        let mut watch = cmd
            .arg("watch")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Subscribed once its first event arrives: toggle a plugin until it does.
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
        let _ = bus.manager_call("DisablePlugin", "s", &["count"]);
        let _ = bus.manager_call("EnablePlugin", "s", &["count"]);
        let first = lines.next().expect("a first event").unwrap();
        assert!(first.contains("count"), "{first}");
        let _ = bus.manager_call("StartJob", "ss", &["count", "3"]);
        let mut seen = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            let done = line.contains("finished") && (line.contains("true") || !json);
            seen.push(line);
            if done && seen.iter().any(|l| l.contains("finished")) {
                break;
            }
            assert!(seen.len() < 200, "no end: {seen:#?}");
        }
        let _ = watch.kill();
        let _ = watch.wait();
        let jobs: Vec<&String> = seen.iter().filter(|l| l.contains("job")).collect();
        assert!(!jobs.is_empty(), "{seen:#?}");
        for line in &jobs {
            assert!(line.contains("count"), "the plugin is named: {line}");
            assert!(!line.contains("null"), "{line}");
            assert!(!line.trim_end().ends_with(':'), "an empty line: {line}");
        }
        let finished = jobs
            .iter()
            .filter(|l| l.contains("finished") && !l.contains("\"finished\":false"))
            .count();
        assert_eq!(finished, 1, "{jobs:#?}");
        for pair in jobs.windows(2) {
            assert_ne!(pair[0], pair[1], "a repeated line");
        }
    }
}
