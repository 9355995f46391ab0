//! A hostile isolated plugin (tests/fixtures/c/hostile.c) attacks the daemon that runs
//! it. Every attack must fail, be reported by name where it is a fault, and leave the
//! daemon serving other callers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dynplug_dbus::ManagerProxy;
use dynplug_tests::{rust_plugin, send_signal, set_mode, Daemon, PluginDir, PrivateBus};

/// The hostile plugin isolated under every sandbox layer, as `nobody`, next to the
/// in-process echo plugin.
const CONFIG: &str = "worker_user: nobody\nplugins:\n  hostile:\n    isolation: process\n    workers: 4\n    timeout_ms: 5000\n    crash_limit: 1000\n    max_output_bytes: 4194304\n";

fn plugins() -> PluginDir {
    let d = PluginDir::new();
    d.add(&rust_plugin("echo"), "echo.so");
    d.add_c("tests/fixtures/c/hostile.c", "hostile.so", &[]);
    d
}

/// A secret file beside the daemon's own files, as a token file would be.
fn secret(dir: &Path) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, "s3cret\n").unwrap();
    set_mode(&path, 0o600);
    path
}

fn state_dir(daemon: &Daemon) -> PathBuf {
    daemon.config_path().parent().unwrap().join("state")
}

/// Live processes whose name (comm) is `name`.
fn processes_named(name: &str) -> Vec<u32> {
    dynplug_tests::live_processes(|comm, _| comm == name)
}

fn wait_gone(name: &str) {
    dynplug_tests::wait_until_gone(name, || processes_named(name));
}

async fn attack(m: &ManagerProxy<'_>, what: &str) -> String {
    let out = m
        .execute("hostile", what)
        .await
        .unwrap_or_else(|e| format!("error {e}"));
    // The daemon keeps serving others after every attempt.
    assert_eq!(m.execute("echo", what).await.unwrap(), what);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_attack_on_the_daemon_fails_and_it_keeps_serving() {
    let bus = PrivateBus::start();
    let plugins = plugins();
    let daemon = Daemon::start(&bus, plugins.path(), CONFIG);
    let m = bus.manager_proxy().await;
    let pid = daemon.pid();
    let config = daemon.config_path();
    let state = state_dir(&daemon);
    std::fs::create_dir_all(&state).unwrap();
    let token = secret(&state);
    let config_before = std::fs::read(&config).unwrap();

    // The sandbox is reported, layer by layer, and this host gives every layer.
    assert_eq!(attack(&m, "echo warm").await, "warm");
    let info = m.get_plugin("hostile").await.unwrap();
    let sandbox = info.sandbox.expect("Sandbox is reported");
    for layer in [
        "identity",
        "process_tree",
        "filesystem",
        "syscalls",
        "network",
    ] {
        let state = &sandbox[layer];
        assert!(
            state.starts_with("enforced") || state.starts_with("blocked"),
            "{layer}: {state}"
        );
    }
    assert!(sandbox["identity"].contains("nobody"), "{sandbox:?}");

    let attacks = [
        // Signals: the daemon has no PID inside the worker's namespace, and Landlock
        // scopes signals to the sandbox.
        (format!("kill {pid}"), "denied"),
        ("kill 0".to_owned(), "denied"),
        (format!("ptrace {pid}"), "denied"),
        // Its files and the daemon's /proc.
        (format!("read /proc/{pid}/environ"), "denied"),
        (format!("read {}", token.display()), "denied"),
        (format!("read {}", config.display()), "denied"),
        (format!("write {}", config.display()), "denied"),
        (format!("list {}", state.display()), "denied"),
        ("read /etc/shadow".to_owned(), "denied"),
        ("list /proc".to_owned(), "denied"),
        // System calls.
        ("socket".to_owned(), "denied EPERM"),
        ("unshare".to_owned(), "denied EPERM"),
    ];
    for (what, expected) in &attacks {
        let out = attack(&m, what).await;
        assert!(out.starts_with(expected), "{what}: {out}");
    }
    // What the plugin may do, it can: read its own file and the system's libraries.
    let own = plugins.path().join("hostile.so");
    assert!(attack(&m, &format!("read {}", own.display()))
        .await
        .starts_with("ok"));
    assert!(attack(&m, "read /usr/lib/os-release")
        .await
        .starts_with("ok"));

    assert!(
        std::fs::read(&config).unwrap() == config_before,
        "config changed"
    );
    assert!(processes_named("dynplugd").contains(&pid), "daemon gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_frames_never_reach_another_caller() {
    let bus = PrivateBus::start();
    let plugins = plugins();
    let _daemon = Daemon::start(&bus, plugins.path(), CONFIG);
    let m = bus.manager_proxy().await;
    let calls = (0..1000).map(|i| {
        let m = m.clone();
        async move {
            let input = match i % 10 {
                0 => format!("forge FORGED{i}"),
                5 => format!("forge-late FORGED{i}"),
                _ => format!("echo caller{i}"),
            };
            (i, input.clone(), m.execute("hostile", &input).await)
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let (mut answered, mut failed) = (0, 0);
    for (i, input, result) in results {
        match result {
            Ok(out) => {
                answered += 1;
                // An answer is the one this call asked for, never a forged one or
                // another caller's.
                let own = input.split_once(' ').unwrap().1;
                assert_eq!(out, own, "call {i} ({input}) got {out}");
            }
            Err(e) => {
                failed += 1;
                let text = e.to_string();
                assert!(
                    text.contains("broke the protocol") || text.contains("crashed"),
                    "call {i}: {text}"
                );
            }
        }
    }
    assert!(answered >= 700, "{answered} answered, {failed} failed");
    assert!(
        failed >= 100,
        "every immediate forgery fails its call: {failed}"
    );
    assert_eq!(m.execute("echo", "fine").await.unwrap(), "fine");
}

#[tokio::test(flavor = "multi_thread")]
async fn fatal_signals_are_crashes_with_the_signal_named() {
    let bus = PrivateBus::start();
    let plugins = plugins();
    let mut daemon = Daemon::start(&bus, plugins.path(), CONFIG);
    let m = bus.manager_proxy().await;
    for (sig, name) in [
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGABRT, "SIGABRT"),
    ] {
        let err = m
            .execute("hostile", &format!("raise {sig}"))
            .await
            .unwrap_err();
        assert!(
            format!("{err:?}").contains("ExecutionFailed") && err.to_string().contains(name),
            "{name}: {err}"
        );
        assert_eq!(m.execute("echo", name).await.unwrap(), name);
    }
    assert_eq!(daemon.stop_with(libc::SIGTERM), Some(0));

    // In process nothing can catch it: the daemon dies by the signal (and systemd
    // restarts it); it never answers as if the call succeeded.
    let config = "plugins:\n  hostile:\n    isolation: in-process\n";
    let mut daemon = Daemon::start(&bus, plugins.path(), config);
    let m = bus.manager_proxy().await;
    let out = m
        .execute("hostile", &format!("raise {}", libc::SIGSEGV))
        .await;
    assert!(out.is_err(), "raise(SIGSEGV) answered {out:?}");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(10)),
        None,
        "killed by a signal"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_process_a_plugin_starts_outlives_its_worker_or_the_daemon() {
    let bus = PrivateBus::start();
    let plugins = plugins();
    let mut daemon = Daemon::start(&bus, plugins.path(), CONFIG);
    let m = bus.manager_proxy().await;
    // The worker dies (its call times out and it is killed): its orphan goes with it.
    assert!(attack(&m, "orphan").await.starts_with("ok"));
    assert!(!processes_named("dynplug-orphan").is_empty());
    let err = m
        .execute("hostile", &format!("raise {}", libc::SIGKILL))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("SIGKILL"), "{err}");
    wait_gone("dynplug-orphan");

    // The daemon is killed outright: workers and orphans go with it.
    for _ in 0..4 {
        assert!(attack(&m, "orphan").await.starts_with("ok"));
    }
    send_signal(daemon.pid(), libc::SIGKILL);
    daemon.wait_exit(Duration::from_secs(10));
    wait_gone("dynplug-orphan");
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_bounded_and_so_is_the_daemons_memory() {
    let bus = PrivateBus::start();
    let plugins = plugins();
    // A timeout no loaded machine reaches: what is measured is bytes, not time.
    let config = CONFIG.replace("timeout_ms: 5000", "timeout_ms: 60000");
    let daemon = Daemon::start(&bus, plugins.path(), &config);
    let m = bus.manager_proxy().await;
    let rss = || dynplug_core::resources::of(&daemon.pid().to_string()).map_or(0, |u| u.rss_bytes);
    assert_eq!(attack(&m, "echo warm").await, "warm");
    let before = rss();
    // Eight concurrent answers at the limit, and eight far over it.
    let limit = 4 * 1024 * 1024;
    let calls = (0..16).map(|i| {
        let m = m.clone();
        let size = if i % 2 == 0 { limit } else { 130_000_000 };
        async move { (size, m.execute("hostile", &format!("big {size}")).await) }
    });
    for (size, result) in futures_util::future::join_all(calls).await {
        if size == limit {
            assert_eq!(result.unwrap().len(), limit);
        } else {
            let e = result.unwrap_err().to_string();
            // Refused from its header, or — on a machine too loaded to produce 130 MB
            // within the plugin's timeout — its timeout: never an answer, never the
            // memory.
            assert!(
                e.contains("max_output_bytes (4194304 bytes)") || e.contains("Timeout"),
                "{e}"
            );
        }
    }
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 200 * 1024 * 1024,
        "the daemon grew by {} MiB",
        grown >> 20
    );
    assert_eq!(m.execute("echo", "fine").await.unwrap(), "fine");
}

/// Runs `cmd` as `nobody` (setpriv), with the bus address of `bus`.
fn as_nobody(bus_address: &str, program: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(program)
        .env("DBUS_SESSION_BUS_ADDRESS", bus_address);
    cmd
}

#[test]
fn an_ordinary_users_daemon_confines_workers_in_a_user_namespace() {
    // A missing prerequisite fails the test, never passes it silently.
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root, to run the daemon as another user"
    );
    use std::os::unix::fs::PermissionsExt;
    // A bus, a daemon and a client, all as `nobody`.
    let out = as_nobody("", Path::new("dbus-daemon"))
        .args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let address = lines.next().expect("bus address").to_owned();
    let bus_pid: i32 = lines.next().expect("bus pid").trim().parse().unwrap();
    let plugins = plugins();
    // A plugin file owned by another ordinary user is refused.
    let stranger = plugins.path().join("stranger.so");
    std::fs::copy(plugins.path().join("echo.so"), &stranger).unwrap();
    std::os::unix::fs::chown(&stranger, Some(4321), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), None).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "plugins:\n  hostile:\n    isolation: process\n    timeout_ms: 5000\n",
    )
    .unwrap();
    let mut daemon = as_nobody(&address, &dynplug_tests::binary("dynplugd"))
        .args(["--address", &address, "--log-target", "stderr", "--config"])
        .arg(&config)
        .arg("--plugins-dir")
        .arg(plugins.path())
        .arg("--state-dir")
        .arg(&state)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let waited = as_nobody(&address, Path::new("gdbus"))
        .args([
            "wait",
            "--session",
            "--timeout",
            "30",
            "org.dynplug.Manager",
        ])
        .status()
        .unwrap();
    assert!(waited.success(), "the daemon did not take its name");
    let call = |method: &str, args: &[&str]| {
        let mut cmd = as_nobody(&address, Path::new("busctl"));
        cmd.args([
            "--user",
            "call",
            "org.dynplug.Manager",
            "/org/dynplug/Manager",
            "org.dynplug.Manager",
            method,
        ])
        .args(args);
        let (_, out, err) = dynplug_tests::run(cmd);
        out + &err
    };
    let refused = call("GetPlugin", &["s", "stranger.so"]);
    assert!(
        refused.contains("owned by uid 4321, must be owned by root or uid 65534"),
        "{refused}"
    );
    assert!(call("Execute", &["ss", "hostile", "echo hi"]).contains("\"hi\""));
    let info = call("GetPlugin", &["s", "hostile"]);
    assert!(
        info.contains("enforced: user namespace (uid 65534"),
        "{info}"
    );
    for layer in [
        "\"process_tree\" \"enforced",
        "\"filesystem\" \"enforced",
        "\"syscalls\" \"enforced",
    ] {
        assert!(info.contains(layer), "{layer}: {info}");
    }
    // The same attacks fail without a change of user.
    let pid = daemon.id().to_string();
    for attack in [
        format!("kill {pid}"),
        format!("ptrace {pid}"),
        format!("read /proc/{pid}/environ"),
        format!("write {}", config.display()),
        format!("list {}", state.display()),
    ] {
        let out = call("Execute", &["ss", "hostile", &attack]);
        assert!(out.contains("denied"), "{attack}: {out}");
    }
    assert!(daemon.try_wait().unwrap().is_none(), "the daemon died");
    send_signal(daemon.id(), libc::SIGTERM);
    assert!(daemon.wait().unwrap().success());
    // SAFETY: killing the bus this test started.
    unsafe { libc::kill(bus_pid, libc::SIGTERM) };
}
