//! Plugin ABI version 2 and jobs against the real daemon: version 1 and 2 plugins side
//! by side, jobs followed through PropertiesChanged by a Python client and cancelled
//! half way, 50 clients at once, bounds and ownership, isolated jobs, events on D-Bus
//! and as server-sent events, and dynplugctl.

use std::time::Duration;

use dynplug_dbus::{job_id, DynplugError, JobProxy};
use dynplug_tests::*;
use futures_util::StreamExt;

fn plugins() -> PluginDir {
    let d = PluginDir::new();
    d.add(&rust_plugin("count"), "count.so");
    d.add(&rust_plugin("echo"), "echo.so");
    d.add_c("plugins/c-lines/lines.c", "lines.so", &[]);
    d
}

async fn job(bus: &PrivateBus, path: &str) -> JobProxy<'static> {
    let conn = zbus::connection::Builder::address(bus.address())
        .build()
        .await
        .unwrap();
    JobProxy::builder(&conn)
        .path(path.to_owned())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

/// Waits for the job at `path` to end (subscribed before the state is read, so the end
/// cannot slip between the two) and returns its state.
async fn finished(bus: &PrivateBus, path: &str) -> String {
    let job = job(bus, path).await;
    let mut ended = job.receive_finished().await.unwrap();
    let wait = async {
        loop {
            let state = job.state().await.unwrap();
            if state != "running" {
                return state;
            }
            ended.next().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .expect("the job ends")
}

#[tokio::test(flavor = "multi_thread")]
async fn version_1_and_2_plugins_load_side_by_side_and_a_newer_one_is_refused() {
    let bus = PrivateBus::start();
    let dir = plugins();
    // A version 1 binary: today's table size and version, as built from the old header.
    dir.add_c(
        "tests/fixtures/c/variant.c",
        "old.so",
        &[
            "FIX_ABI=1",
            "FIX_SIZE=offsetof(struct dynplug_plugin, execute_ctx)",
            "FIX_NAME=\"old\"",
        ],
    );
    dir.add_c(
        "tests/fixtures/c/variant.c",
        "future.so",
        &["FIX_ABI=3", "FIX_NAME=\"future\""],
    );
    let _d = Daemon::start(&bus, dir.path(), "");
    let m = bus.manager_proxy().await;
    for (name, abi) in [("old", 1u32), ("count", 2), ("lines", 2), ("echo", 2)] {
        let details = m.get_plugin(name).await.unwrap();
        assert_eq!(details.abi_version, Some(abi), "{name}");
    }
    assert_eq!(
        m.execute("old", "v1 still runs").await.unwrap(),
        "v1 still runs"
    );
    assert_eq!(
        m.execute("lines", "a b\nc\n").await.unwrap(),
        r#"{"lines":2,"words":3,"bytes":6}"#
    );
    let future = m.get_plugin("future.so").await.unwrap();
    let error = future.error.unwrap_or_default();
    assert!(
        error.contains("ABI version 3") && error.contains("versions 1 to 2"),
        "{error}"
    );
}

/// A Python client (python3-dbus, GLib main loop): starts `count 20`, follows the job
/// through PropertiesChanged, cancels it once half done and waits for `Finished`.
const PYTHON_CLIENT: &str = r#"
import json, sys
import dbus, dbus.mainloop.glib
from gi.repository import GLib
dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
bus = dbus.bus.BusConnection(sys.argv[1])
manager = dbus.Interface(bus.get_object("org.dynplug.Manager", "/org/dynplug/Manager"), "org.dynplug.Manager")
seen = {"progress": [], "finished": None, "cancelled": False}
loop = GLib.MainLoop()
path = None
def changed(interface, props, invalidated, path=None):
    if "Progress" in props:
        seen["progress"].append(float(props["Progress"]))
        if props["Progress"] >= 0.5 and not seen["cancelled"]:
            seen["cancelled"] = True
            dbus.Interface(bus.get_object("org.dynplug.Manager", path), "org.dynplug.Job").Cancel()
def done(state, path=None):
    seen["finished"] = str(state)
    loop.quit()
bus.add_signal_receiver(changed, "PropertiesChanged", "org.freedesktop.DBus.Properties", None, None, path_keyword="path")
bus.add_signal_receiver(done, "Finished", "org.dynplug.Job", None, None, path_keyword="path")
path = manager.StartJob("count", "20")
GLib.timeout_add_seconds(30, loop.quit)
loop.run()
props = dbus.Interface(bus.get_object("org.dynplug.Manager", path), "org.freedesktop.DBus.Properties")
seen["state"] = str(props.Get("org.dynplug.Job", "State"))
seen["error_name"] = str(props.Get("org.dynplug.Job", "ErrorName"))
seen["path"] = str(path)
print(json.dumps(seen))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_python_client_follows_a_job_and_cancels_it_half_way() {
    let bus = PrivateBus::start();
    let dir = plugins();
    let d = Daemon::start(&bus, dir.path(), "");
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", PYTHON_CLIENT, bus.address()])
        .output()
        .expect("/usr/bin/python3 runs (python3-dbus, python3-gi)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(seen["finished"], "cancelled", "{seen}");
    assert_eq!(seen["state"], "cancelled");
    assert_eq!(seen["error_name"], "org.dynplug.Error.Cancelled");
    let progress: Vec<f64> = seen["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    assert!(progress.len() >= 2, "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert!(
        *progress.last().unwrap() < 1.0,
        "stopped half way: {progress:?}"
    );
    // The plugin saw `cancelled()` (its own log line, filed under its name).
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("cancelled at step") && l.contains("plugin=\"count\"")),
        "{log}"
    );
    // The job object stays, ended, until its retention runs out.
    let id = job_id(seen["path"].as_str().unwrap()).unwrap();
    let listed = bus.manager_call("ListJobs", "", &[]);
    assert!(
        listed.contains(&format!("/org/dynplug/Manager/jobs/{id}")),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_clients_start_jobs_at_once() {
    let bus = PrivateBus::start();
    let dir = plugins();
    let _d = Daemon::start(&bus, dir.path(), "");
    let starts = (0..50).map(|_| {
        let address = bus.address().to_owned();
        tokio::spawn(async move {
            let conn = zbus::connection::Builder::address(address.as_str())
                .build()
                .await
                .unwrap();
            let m = dynplug_dbus::ManagerProxy::new(&conn).await.unwrap();
            m.start_job("count", "3").await.unwrap().to_string()
        })
    });
    let mut paths = Vec::new();
    for start in starts {
        paths.push(start.await.unwrap());
    }
    let mut unique = paths.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 50);
    for path in &paths {
        assert_eq!(finished(&bus, path).await, "succeeded");
        assert_eq!(job(&bus, path).await.output().await.unwrap(), "3");
    }
    let m = bus.manager_proxy().await;
    assert_eq!(m.list_jobs().await.unwrap().len(), 50);
    // Every job is in the ObjectManager's view.
    let managed = bus.manager_call("GetManagedObjects", "", &[]);
    let listed = busctl_tree(&bus);
    assert_eq!(
        listed.matches("/org/dynplug/Manager/jobs/").count(),
        50,
        "{listed}{managed}"
    );
}

fn busctl_tree(bus: &PrivateBus) -> String {
    let mut cmd = bus.command("busctl");
    cmd.args(["--user", "tree", "--list", "org.dynplug.Manager"]);
    run(cmd).1
}

/// Runs `program` as `nobody` on `bus`.
fn as_nobody(bus: &PrivateBus, program: &str) -> std::process::Command {
    let mut cmd = bus.command("setpriv");
    cmd.args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        program,
    ]);
    cmd
}

/// Calls `method` of the job at `path` with busctl (`cmd`, possibly wrapped).
fn busctl_job(cmd: std::process::Command, path: &str, method: &str) -> (i32, String, String) {
    busctl_call(cmd, [path, "org.dynplug.Job", method, ""], &[])
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_are_bounded_owned_and_forgotten() {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test needs root, to act as nobody");
    let bus = PrivateBus::start_open();
    let dir = plugins();
    let config = "jobs:\n  max_running: 2\n  max_finished: 1\n  keep_finished_ms: 600000\n";
    let _d = Daemon::start(&bus, dir.path(), config);
    let m = bus.manager_proxy().await;
    let first = m.start_job("count", "600").await.unwrap().to_string();
    let second = m.start_job("count", "600").await.unwrap().to_string();
    // Over the bound: a named error, and nothing started.
    match m.start_job("count", "1").await {
        Err(DynplugError::TooManyJobs(message)) => {
            assert!(message.contains("jobs.max_running"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let out = bus.manager_call("StartJob", "ss", &["count", "1"]);
    assert!(
        out.contains("org.dynplug.Error.TooManyJobs") || out.contains("jobs are running"),
        "{out}"
    );
    // Another user may not cancel root's job.
    let (code, _, err) = busctl_job(as_nobody(&bus, "busctl"), &first, "Cancel");
    assert_ne!(code, 0);
    assert!(
        err.contains("org.dynplug.jobs.cancel-any")
            && err.contains("only the user who started the job"),
        "{err}"
    );
    assert_eq!(job(&bus, &first).await.state().await.unwrap(), "running");
    // Nor read what it produced (its state and progress are open to all).
    let read_as_nobody = |path: &str, property: &str| {
        let mut cmd = as_nobody(&bus, "busctl");
        cmd.args([
            "--user",
            "get-property",
            "org.dynplug.Manager",
            path,
            "org.dynplug.Job",
            property,
        ]);
        run(cmd)
    };
    let (code, _, err) = read_as_nobody(&first, "Output");
    assert_ne!(code, 0);
    assert!(err.contains("only the user who started the job"), "{err}");
    assert_ne!(read_as_nobody(&first, "Error").0, 0);
    let (code, out, _) = read_as_nobody(&first, "State");
    assert_eq!((code, out.trim()), (0, "s \"running\""));
    // Root may cancel anything; both end cancelled (one ended job is kept: the second
    // one's end makes the first be forgotten).
    job(&bus, &first).await.cancel().await.unwrap();
    assert_eq!(finished(&bus, &first).await, "cancelled");
    job(&bus, &second).await.cancel().await.unwrap();
    assert_eq!(finished(&bus, &second).await, "cancelled");
    // nobody's own job: nobody may cancel it.
    let (code, out, err) = busctl_call(
        as_nobody(&bus, "busctl"),
        [
            "/org/dynplug/Manager",
            "org.dynplug.Manager",
            "StartJob",
            "ss",
        ],
        &["count", "600"],
    );
    assert_eq!(code, 0, "{err}");
    let theirs = out
        .trim()
        .trim_start_matches("o ")
        .trim_matches('"')
        .to_owned();
    let (code, _, err) = busctl_job(as_nobody(&bus, "busctl"), &theirs, "Cancel");
    assert_eq!(code, 0, "{err}");
    assert_eq!(finished(&bus, &theirs).await, "cancelled");
    let (code, out, err) = read_as_nobody(&theirs, "Error");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("was cancelled"), "its owner reads it: {out}");
    // Only one ended job is kept: the two older ones were forgotten.
    let jobs = m.list_jobs().await.unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].as_str(), theirs);
    let (code, _, err) = busctl_job(bus.command("busctl"), &first, "Cancel");
    assert_ne!(code, 0);
    assert!(
        err.contains("Unknown object") || err.contains("UnknownObject"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn isolated_jobs_get_everything_and_a_worker_ignoring_cancel_is_killed() {
    let bus = PrivateBus::start();
    let dir = plugins();
    dir.add_c("tests/fixtures/c/hostile.c", "hostile.so", &[]);
    let config = "plugins:\n  count:\n    isolation: process\n  hostile:\n    isolation: process\n    timeout_ms: 60000\n";
    let d = Daemon::start(&bus, dir.path(), config);
    let m = bus.manager_proxy().await;
    let mut events = m.receive_plugin_event().await.unwrap();
    // Progress, logs and the event cross the worker protocol.
    let path = m.start_job("count", "12").await.unwrap().to_string();
    let j = job(&bus, &path).await;
    assert_eq!(finished(&bus, &path).await, "succeeded");
    assert_eq!(
        (j.progress().await.unwrap(), j.output().await.unwrap()),
        (1.0, "12".to_string())
    );
    assert_eq!(j.status_text().await.unwrap(), "12 of 12");
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap();
    let args = event.args().unwrap();
    assert_eq!(
        (*args.plugin(), *args.event(), *args.payload()),
        ("count", "counted", "{\"n\":12}")
    );
    assert!(d.log().contains("step 10 of 12"), "{}", d.log());
    // A worker whose plugin ignores the cancellation is killed after the grace period.
    let path = m
        .start_job("hostile", "ignore-cancel")
        .await
        .unwrap()
        .to_string();
    let workers = || {
        live_processes(|_, cmdline| cmdline.contains("--worker") && cmdline.contains("hostile.so"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while workers().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no hostile worker started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    job(&bus, &path).await.cancel().await.unwrap();
    // `finished` waits with a deadline of its own.
    assert_eq!(finished(&bus, &path).await, "cancelled");
    wait_until_gone("the hostile worker", workers);
    assert_eq!(
        m.execute("hostile", "echo still here").await.unwrap(),
        "still here"
    );
    assert_eq!(m.execute("echo", "others too").await.unwrap(), "others too");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_bounded_and_streamed_over_sse() {
    let bus = PrivateBus::start();
    let dir = plugins();
    dir.add_c("tests/fixtures/c/hostile.c", "hostile.so", &[]);
    let d = Daemon::start(&bus, dir.path(), "server:\n  enabled: true\n  port: 0\n");
    let m = bus.manager_proxy().await;
    let mut events = m.receive_plugin_event().await.unwrap();
    // A chatty plugin: 1,000 events and log lines at once; the host takes its burst.
    let accepted: usize = m
        .execute("hostile", "flood 1000")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&accepted), "{accepted} events accepted");
    let mut received = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), events.next()).await {
        received += 1;
    }
    assert_eq!(received, accepted);
    let flooded = d.log().matches("flooding the journal").count();
    assert!((1..=600).contains(&flooded), "{flooded} log lines kept");
    // Server-sent events during a job, read with curl.
    let address = bus.manager_property("ApiAddress");
    let mut curl = std::process::Command::new("curl")
        .args([
            "-sNi",
            "--max-time",
            "20",
            &format!("http://{address}/events"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = curl.stdout.take().unwrap();
    let (open_tx, open_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        let (mut ended, mut counted) = (false, false);
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            // The response head: the handler has subscribed by the time it is sent.
            if line.starts_with("HTTP/1.1 200") {
                let _ = open_tx.send(());
            }
            // A `job` event shows the job as it is when sent, so the end can show up
            // before the plugin's last event: read until both are in.
            ended |= line.contains("\"state\":\"succeeded\"");
            counted |= line.contains("\"event\":\"counted\"");
            lines.push(line);
            if ended && counted {
                break;
            }
        }
        lines.join("\n")
    });
    open_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the event stream opens");
    let started = run_curl_post(&format!("http://{address}/plugins/count/jobs"), "3");
    assert!(started.contains("\"state\":\"running\""), "{started}");
    let seen = reader.join().unwrap();
    let _ = curl.kill();
    let _ = curl.wait();
    assert!(seen.contains("event: job"), "{seen}");
    assert!(
        seen.contains("\"status_text\":\"3 of 3\"") || seen.contains("\"progress\":1.0"),
        "{seen}"
    );
    assert!(
        seen.contains("event: plugin_event") && seen.contains("counted"),
        "{seen}"
    );
}

fn run_curl_post(url: &str, body: &str) -> String {
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-s",
        "-X",
        "POST",
        "-H",
        "content-type: text/plain",
        "--data",
        body,
        url,
    ]);
    run(cmd).1
}

/// New job objects as the ObjectManager announces them (subscribed when this returns).
async fn jobs_added(bus: &PrivateBus) -> impl futures_util::Stream<Item = String> {
    let conn = zbus::connection::Builder::address(bus.address())
        .build()
        .await
        .unwrap();
    let om = zbus::fdo::ObjectManagerProxy::builder(&conn)
        .destination("org.dynplug.Manager")
        .path("/org/dynplug/Manager")
        .build()
        .await
        .unwrap();
    om.receive_interfaces_added()
        .await
        .unwrap()
        .filter_map(|s| async move {
            let args = s.args().ok()?;
            let path = args.object_path().to_string();
            path.starts_with("/org/dynplug/Manager/jobs/")
                .then_some(path)
        })
        .boxed()
}

fn ctl(bus: &PrivateBus) -> std::process::Command {
    let mut cmd = bus.command(binary("dynplugctl"));
    cmd.args(["--address", bus.address()]);
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn dynplugctl_runs_follows_lists_and_cancels_jobs() {
    let bus = PrivateBus::start();
    let dir = plugins();
    let _d = Daemon::start(&bus, dir.path(), "");
    // execute waits for the job; in a pipe there is no progress bar.
    let (code, out, err) = run({
        let mut c = ctl(&bus);
        c.args(["execute", "count", "3"]);
        c
    });
    assert_eq!((code, out.as_str()), (0, "3"), "{err}");
    assert!(!err.contains('\r') && !err.contains('#'), "{err:?}");
    let (code, out, _) = run({
        let mut c = ctl(&bus);
        c.args(["--json", "execute", "count", "2"]);
        c
    });
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((code, v["output"].as_str()), (0, Some("2")));
    // --detach returns the job at once; `job --wait` follows it to its end.
    let (code, out, _) = run({
        let mut c = ctl(&bus);
        c.args(["execute", "--detach", "count", "3"]);
        c
    });
    let path = out.trim().to_owned();
    assert_eq!(code, 0);
    assert!(path.starts_with("/org/dynplug/Manager/jobs/"), "{path}");
    let id = job_id(&path).unwrap().to_string();
    let (code, out, err) = run({
        let mut c = ctl(&bus);
        c.args(["job", &id, "--wait"]);
        c
    });
    assert_eq!((code, out.as_str()), (0, "3"), "{err}");
    let (_, out, _) = run({
        let mut c = ctl(&bus);
        c.args(["--json", "jobs"]);
        c
    });
    let jobs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 3, "{out}");
    // `cancel` from another client ends a waiting `execute` with exit code 10.
    let mut added = jobs_added(&bus).await;
    let mut waiting = ctl(&bus)
        .args(["execute", "count", "600"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let running = added.next().await.unwrap();
    let (code, out, _) = run({
        let mut c = ctl(&bus);
        c.args(["cancel", &running]);
        c
    });
    assert_eq!(code, 0, "{out}");
    let status = waiting.wait().unwrap();
    assert_eq!(status.code(), Some(10));
    // Ctrl-C cancels the job `execute` waits for.
    let mut interrupted = ctl(&bus)
        .args(["execute", "count", "600"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let path = added.next().await.unwrap();
    // The job shows progress before the interrupt: ctl is waiting on it by then.
    let j = job(&bus, &path).await;
    let mut progress = j.receive_progress_changed().await;
    progress.next().await;
    send_signal(interrupted.id(), libc::SIGINT);
    let status = interrupted.wait().unwrap();
    assert_eq!(status.code(), Some(10));
    assert_eq!(finished(&bus, &path).await, "cancelled");
    // An unknown job: exit 3, named.
    let (code, _, err) = run({
        let mut c = ctl(&bus);
        c.args(["job", "999"]);
        c
    });
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no job 999"), "{err}");
}

#[test]
fn a_terminal_gets_a_progress_bar() {
    let bus = PrivateBus::start();
    let dir = plugins();
    let _d = Daemon::start(&bus, dir.path(), "");
    let ctl = binary("dynplugctl");
    // `script` gives the client a pseudo-terminal, as an interactive shell would.
    let line = format!(
        "{} --address '{}' execute count 5",
        ctl.display(),
        bus.address()
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]);
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("] ") && out.contains('#') && out.contains("% "),
        "{out:?}"
    );
    assert!(out.trim_end().ends_with('5'), "{out:?}");
}
