//! The real `dynplugctl` against the real `dynplugd` on a private bus.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use dynplug_tests::{run, rust_plugin, Daemon, PluginDir, PrivateBus};
use serde_json::Value;

struct Ctl<'a> {
    bus: &'a PrivateBus,
}

impl Ctl<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = dynplug_tests::tool("dynplugctl");
        cmd.arg("--address")
            .arg(self.bus.address())
            .args(args)
            .env_remove("NO_COLOR");
        cmd
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        run(self.command(args))
    }

    fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let (code, out, err) = self.run(&full);
        let value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("stdout of {args:?} is not JSON ({e}): {out:?} / {err}"));
        assert_eq!(out.lines().count(), 1, "one JSON document on stdout: {out}");
        (code, value)
    }

    fn stdin(&self, args: &[&str], input: &[u8]) -> (i32, String, String) {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn every_command_with_text_and_json() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::with_examples();
    let mut daemon = Daemon::start(
        &bus,
        plugins.path(),
        "plugins:\n  text:\n    settings:\n      mode: reverse\n",
    );
    let ctl = Ctl { bus: &bus };

    let (code, out, _) = ctl.run(&["list"]);
    assert_eq!(code, 0);
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("VERSION") && header.contains("STATE"),
        "{out}"
    );
    assert!(!out.contains('\x1b'), "no colour when piped");
    assert_eq!(out.lines().count(), 7, "{out}");
    let (code, list) = ctl.json(&["list"]);
    assert_eq!(code, 0);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["echo", "hash", "heartbeat", "json", "rot13", "text"]
    );
    for p in list.as_array().unwrap() {
        for key in [
            "name",
            "version",
            "description",
            "enabled",
            "loaded",
            "path",
        ] {
            assert!(p.get(key).is_some(), "{key} in {p}");
        }
    }

    let (code, info) = ctl.json(&["info", "text"]);
    assert_eq!(code, 0);
    assert_eq!(
        (
            info["name"].as_str(),
            info["state"].as_str(),
            info["abi_version"].as_u64()
        ),
        (Some("text"), Some("loaded"), Some(2))
    );
    let (code, out, _) = ctl.run(&["info", "heartbeat"]);
    assert_eq!(code, 0);
    assert!(out.contains("ServiceState: running"), "{out}");

    assert_eq!(
        ctl.run(&["execute", "text", "abc"]),
        (0, "cba".into(), String::new())
    );
    assert_eq!(
        ctl.stdin(&["execute", "text"], b"from stdin"),
        (0, "nidts morf".into(), String::new())
    );
    assert_eq!(
        ctl.stdin(&["execute", "echo", "-"], "ünïcode\n".as_bytes())
            .1,
        "ünïcode\n"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "file input").unwrap();
    assert_eq!(
        ctl.run(&["execute", "echo", "--file", file.path().to_str().unwrap()])
            .1,
        "file input"
    );
    let (code, exec) = ctl.json(&["execute", "hash", "abc"]);
    assert_eq!(code, 0);
    assert_eq!(exec["plugin"], "hash");
    assert_eq!(
        exec["output"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(exec["duration_ms"].as_f64().unwrap() >= 0.0);

    let (code, out, _) = ctl.run(&["disable", "echo", "hash"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "echo: disabled\nhash: disabled\n")
    );
    let (code, out, _) = ctl.run(&["disable", "echo"]);
    assert_eq!((code, out.as_str()), (0, "echo: already disabled\n"));
    let (code, res) = ctl.json(&["enable", "--all"]);
    assert_eq!(code, 0);
    let changed: Vec<&str> = res
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["changed"] == true)
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["echo", "hash"]);

    let (code, status) = ctl.json(&["status"]);
    assert_eq!(code, 0);
    assert_eq!(
        (
            status["state"].as_str(),
            status["plugins"].as_u64(),
            status["failed"].as_u64()
        ),
        (Some("running"), Some(6), Some(0))
    );
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    let (code, out, _) = ctl.run(&["status"]);
    assert!(
        code == 0 && out.contains("running") && out.contains("6 (6 enabled, 0 failed)"),
        "{out}"
    );

    let (code, out, _) = ctl.run(&["reload"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "configuration reloaded: no changes\n")
    );
    std::fs::write(daemon.config_path(), "plugins:\n  text:\n    mode: upper\n").unwrap();
    let (code, out, err) = ctl.run(&["reload"]);
    assert_eq!(code, 9, "{out}{err}");
    assert!(
        err.contains("plugins.text: unknown field `mode`")
            && err.contains("previous configuration stays"),
        "{err}"
    );
    let (code, e) = ctl.json(&["reload"]);
    assert_eq!((code, e["error"]["kind"].as_str()), (9, Some("config")));
    assert_eq!(
        ctl.run(&["execute", "text", "abc"]).1,
        "cba",
        "old configuration in force"
    );
    assert_eq!(daemon.stop_with(libc::SIGTERM), Some(0));
}

#[test]
fn errors_have_messages_hints_and_exit_codes() {
    let bus = PrivateBus::start();
    let ctl = Ctl { bus: &bus };
    // No daemon yet.
    let (code, out, err) = ctl.run(&["list"]);
    assert_eq!((code, out.as_str()), (5, ""));
    assert!(
        err.contains("dynplugd is not running") && err.contains("hint: is dynplugd running"),
        "{err}"
    );
    let (code, e) = ctl.json(&["status"]);
    assert_eq!(
        (code, e["error"]["kind"].as_str()),
        (5, Some("unavailable"))
    );

    let plugins = PluginDir::with_examples();
    plugins.add(&rust_plugin("fault"), "fault.so");
    let _daemon = Daemon::start(
        &bus,
        plugins.path(),
        "plugins:\n  fault:\n    timeout_ms: 200\n",
    );
    let (code, _, err) = ctl.run(&["execute", "txet", "x"]);
    assert_eq!(code, 3);
    assert!(
        err.contains("no plugin named `txet`") && err.contains("did you mean: text"),
        "{err}"
    );
    let (code, e) = ctl.json(&["info", "nope"]);
    assert_eq!((code, e["error"]["kind"].as_str()), (3, Some("not_found")));
    let (code, _, err) = ctl.run(&["execute", "fault", "sleep 2000"]);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("did not answer within 200ms"), "{err}");
    let (code, _, err) = ctl.run(&["execute", "fault", "error"]);
    assert_eq!(code, 1);
    assert!(err.contains("requested failure"), "{err}");
    ctl.run(&["disable", "echo"]);
    let (code, _, err) = ctl.run(&["execute", "echo", "x"]);
    assert_eq!(code, 6);
    assert!(
        err.contains("is disabled") && err.contains("dynplugctl enable"),
        "{err}"
    );
    let (code, _, err) = ctl.stdin(&["execute", "echo"], b"\xff\xfe");
    assert_eq!(code, 8);
    assert!(err.contains("not valid UTF-8"), "{err}");
    let (code, _, _) = ctl.run(&["frobnicate"]);
    assert_eq!(code, 2);
    let (code, _, err) = ctl.run(&["disable", "ghost"]);
    assert_eq!(code, 3);
    assert!(err.contains("ghost"), "{err}");
}

#[test]
fn daemon_going_away_mid_call_is_reported_at_once() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("fault"), "fault.so");
    let mut daemon = Daemon::start(
        &bus,
        plugins.path(),
        "plugins:\n  fault:\n    timeout_ms: 60000\n",
    );
    let ctl = Ctl { bus: &bus };
    let child = ctl
        .command(&["execute", "fault", "sleep 30000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the call is in flight, then kill the daemon outright.
    let probe = Ctl { bus: &bus };
    loop {
        let (_, s) = probe.json(&["status"]);
        if s["calls_in_flight"].as_u64() == Some(1) {
            break;
        }
    }
    dynplug_tests::send_signal(daemon.pid(), libc::SIGKILL);
    let out = dynplug_tests::wait_with_deadline(child, "dynplugctl after its daemon died");
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("went away") || err.contains("not running"),
        "{err}"
    );
    daemon.wait_exit(Duration::from_secs(10));
}

#[test]
fn watch_sees_changes_made_by_another_client() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::with_examples();
    let _daemon = Daemon::start(&bus, plugins.path(), "");
    let ctl = Ctl { bus: &bus };
    let mut watch = ctl
        .command(&["--json", "watch"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
    // The watcher is subscribed once it answers; toggle until its first line arrives.
    let reader = std::thread::spawn(move || lines.next().map(|l| l.unwrap()));
    let mut seen = None;
    for _ in 0..100 {
        ctl.run(&["disable", "json"]);
        ctl.run(&["enable", "json"]);
        if reader.is_finished() {
            seen = reader.join().unwrap();
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let line = seen.expect("watch printed an event");
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["event"], "plugin_state_changed");
    assert_eq!(event["name"], "json");
}

#[test]
fn completions_and_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, _) = run({
            let mut c = dynplug_tests::tool("dynplugctl");
            c.args(["completions", shell]);
            c
        });
        assert_eq!(code, 0);
        assert!(
            out.contains("dynplugctl") && out.contains("execute"),
            "{shell}"
        );
    }
    let (code, out, _) = run({
        let mut c = dynplug_tests::tool("dynplugctl");
        c.arg("man");
        c
    });
    assert_eq!(code, 0);
    assert!(
        out.starts_with(".ie") || out.contains(".TH dynplugctl"),
        "{}",
        &out[..200.min(out.len())]
    );
}

#[test]
fn watch_ends_with_exit_5_when_the_daemon_stops() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::with_examples();
    let mut daemon = Daemon::start(&bus, plugins.path(), "");
    let ctl = Ctl { bus: &bus };
    let mut watch = ctl
        .command(&["--json", "watch"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
    // The watcher is subscribed once it prints its first event.
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let first = lines.next().map(|l| l.unwrap());
        let _ = first_tx.send(first.clone());
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        (first, rest)
    });
    let mut first = None;
    for _ in 0..100 {
        ctl.run(&["disable", "json"]);
        ctl.run(&["enable", "json"]);
        if let Ok(line) = first_rx.recv_timeout(Duration::from_millis(100)) {
            first = line;
            break;
        }
    }
    assert!(first.is_some(), "watch printed an event");
    assert_eq!(daemon.stop_with(libc::SIGTERM), Some(0));
    let status = watch.wait().unwrap();
    assert_eq!(status.code(), Some(5), "watch exits 5 when the daemon goes");
    let (_, rest) = reader.join().unwrap();
    let last = rest.last().cloned().unwrap_or_default();
    assert!(
        last.contains("\"error\""),
        "the last line is the error: {rest:?}"
    );
}

#[test]
fn no_reachable_bus_is_exit_5_with_a_hint() {
    let empty = tempfile::tempdir().unwrap();
    for args in [
        vec!["--address", "unix:path=/nonexistent/bus", "list"],
        vec!["--session", "list"],
    ] {
        let mut cmd = dynplug_tests::tool("dynplugctl");
        cmd.args(&args)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env("XDG_RUNTIME_DIR", empty.path());
        let (code, _, err) = run(cmd);
        assert_eq!(code, 5, "{args:?}: {err}");
        assert!(err.contains("is dynplugd running"), "{args:?}: {err}");
    }
}

#[test]
fn list_shows_why_a_file_was_refused() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("echo"), "echo.so");
    let junk = plugins.path().join("junk.so");
    std::fs::write(&junk, "not a library").unwrap();
    dynplug_tests::set_mode(&junk, 0o644);
    let _daemon = Daemon::start(&bus, plugins.path(), "");
    let ctl = Ctl { bus: &bus };
    let (code, out, _) = ctl.run(&["list"]);
    assert_eq!(code, 0);
    let junk_line = out
        .lines()
        .find(|l| l.contains("junk.so"))
        .unwrap_or_default();
    assert!(
        junk_line.contains("failed") && junk_line.contains("no ELF header"),
        "{out}"
    );
    let (code, rows) = ctl.json(&["list"]);
    assert_eq!(code, 0);
    let rows = rows.as_array().unwrap();
    let junk = rows.iter().find(|r| r["name"] == "junk.so").unwrap();
    assert!(
        junk["error"].as_str().unwrap().contains("no ELF header"),
        "{junk}"
    );
    let echo = rows.iter().find(|r| r["name"] == "echo").unwrap();
    assert!(echo["error"].is_null());
}

#[test]
fn usage_errors_with_json_are_json_documents() {
    for args in [vec!["--json", "frobnicate"], vec!["--json", "execute"]] {
        let (code, out, _) = run({
            let mut cmd = dynplug_tests::tool("dynplugctl");
            cmd.args(&args);
            cmd
        });
        assert_eq!(code, 2, "{args:?}");
        let doc: Value = serde_json::from_str(&out).expect("one JSON document");
        assert_eq!(doc["error"]["kind"], "invalid_argument", "{out}");
        assert!(!doc["error"]["message"].as_str().unwrap().is_empty());
    }
    // Without --json, clap's own text on stderr, nothing on stdout.
    let (code, out, err) = run({
        let mut cmd = dynplug_tests::tool("dynplugctl");
        cmd.arg("frobnicate");
        cmd
    });
    assert_eq!((code, out.is_empty()), (2, true));
    assert!(err.contains("frobnicate"));
}
