//! The sandbox fails closed: a worker without a sandbox description it can read loads
//! nothing, and a layer the policy asks for that the host cannot give fails the plugin,
//! naming the key that relaxes it — instead of running the plugin with less.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use dynplug_core::sealed::SealedImage;
use dynplug_core::trust::TrustPolicy;
use dynplug_tests::{manager_with_probe, rust_plugin, test_config, PluginDir};

/// Starts `dynplug-worker --worker FILE` as the daemon would (channel on fd 3, the
/// sealed image on fd 5), with `spec` as its sandbox description (or none); returns its
/// exit code and what it said on the channel.
fn worker_with_spec(file: &std::path::Path, spec: Option<&str>) -> (Option<i32>, String) {
    let image = SealedImage::open(file, TrustPolicy::for_current_process(), 1 << 30).unwrap();
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let (channel, library) = (theirs.as_raw_fd(), image.fd().as_raw_fd());
    let mut cmd = dynplug_tests::tool("dynplug-worker");
    cmd.arg("--worker").arg(file).env_remove("DYNPLUG_SANDBOX");
    if let Some(spec) = spec {
        cmd.env("DYNPLUG_SANDBOX", spec);
    }
    // SAFETY: only dup2 between fork and exec, on descriptors this process owns, whose
    // numbers are above the targets (both were opened after 0-2 and the test harness's).
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(channel, 3) < 0 || libc::dup2(library, 5) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(theirs);
    let out = dynplug_tests::wait_with_deadline(child, "a worker without a sandbox");
    ours.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut said = Vec::new();
    let _ = std::io::Read::read_to_end(&mut ours, &mut said);
    (
        out.status.code(),
        String::from_utf8_lossy(&said).into_owned(),
    )
}

#[test]
fn a_worker_without_a_readable_sandbox_loads_nothing() {
    let plugins = PluginDir::new();
    let marks = tempfile::tempdir().unwrap();
    let marker = marks.path().join("ran");
    let file = plugins.add_c(
        "tests/fixtures/c/marked.c",
        "marked.so",
        &[&format!("MARKER=\"{}\"", marker.display())],
    );
    for spec in [None, Some("{not json"), Some("{\"policy\": 7}")] {
        let (code, said) = worker_with_spec(&file, spec);
        assert_eq!(code, Some(4), "{spec:?}: {said}");
        assert!(
            said.contains("refusing to load anything"),
            "{spec:?}: {said}"
        );
        assert!(!marker.exists(), "{spec:?}: the plugin's constructor ran");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_layer_the_host_cannot_give_fails_the_plugin_until_relaxed_by_name() {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root: only root switches to a worker user"
    );
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("echo"), "echo.so");
    plugins.add(&rust_plugin("hash"), "hash.so");
    let state = tempfile::tempdir().unwrap();
    let yaml = |relax: &str| {
        format!(
            "worker_user: no-such-user-here\nplugins:\n  echo:\n    isolation: process\n{relax}"
        )
    };
    let m = manager_with_probe(plugins.path(), state.path(), &yaml("")).await;
    let e = m.execute("echo", "x".into()).await.unwrap_err().to_string();
    assert!(
        e.contains("identity") && e.contains("plugins.echo.sandbox.identity: false"),
        "{e}"
    );
    assert!(e.contains("no-such-user-here"), "{e}");
    // The others keep serving.
    assert_eq!(m.execute("hash", "x".into()).await.unwrap().len(), 64);
    // Relaxed by name: it runs, and says so.
    m.reload(test_config(
        plugins.path(),
        &yaml("    sandbox:\n      identity: false\n"),
    ))
    .await
    .unwrap();
    assert_eq!(m.execute("echo", "y".into()).await.unwrap(), "y");
    let sandbox = m.info("echo").unwrap().sandbox();
    assert!(
        sandbox
            .iter()
            .any(|(layer, state)| layer == "identity" && state.starts_with("off")),
        "{sandbox:?}"
    );
    m.shutdown(Duration::from_secs(1)).await;
}

/// Item 16, one uid per plugin: two isolated plugins with every layer but identity
/// relaxed, so nothing else stands between them: their workers run as different users,
/// and one cannot kill the other's.
#[tokio::test(flavor = "multi_thread")]
async fn workers_of_different_plugins_run_as_different_users() {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root: only root switches to worker users"
    );
    let plugins = PluginDir::new();
    plugins.add_c(
        "tests/fixtures/c/hostile.c",
        "ha.so",
        &["PLUGIN_NAME=\"ha\""],
    );
    plugins.add_c(
        "tests/fixtures/c/hostile.c",
        "hb.so",
        &["PLUGIN_NAME=\"hb\""],
    );
    let relaxed = "    isolation: process\n    workers: 1\n    sandbox: {pid_namespace: false, landlock: false, seccomp: false}\n";
    let state = tempfile::tempdir().unwrap();
    let yaml = format!("plugins:\n  ha:\n{relaxed}  hb:\n{relaxed}");
    let m = manager_with_probe(plugins.path(), state.path(), &yaml).await;
    assert_eq!(m.execute("ha", "echo a".into()).await.unwrap(), "a");
    assert_eq!(m.execute("hb", "echo b".into()).await.unwrap(), "b");
    let worker_of = |file: &str| {
        let pids = dynplug_tests::live_processes(|_, cmdline| {
            cmdline.contains("--worker") && cmdline.contains(file)
        });
        // The keeper and the worker it forked: the plugin runs in the youngest.
        *pids.iter().max().expect("a live worker")
    };
    let uid_of = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok())
            .unwrap()
    };
    let (a, b) = (worker_of("ha.so"), worker_of("hb.so"));
    let (ua, ub) = (uid_of(a), uid_of(b));
    assert_ne!(ua, ub, "both plugins' workers run as uid {ua}");
    assert!(dynplug_core::state::WORKER_UIDS.contains(&ua), "{ua}");
    let answer = m.execute("ha", format!("kill {b}")).await.unwrap();
    assert!(
        answer.starts_with("denied"),
        "ha killed hb's worker: {answer}"
    );
    assert_eq!(m.execute("hb", "echo still".into()).await.unwrap(), "still");
    m.shutdown(Duration::from_secs(1)).await;
}

/// A plugin without a metadata section that names itself one way in its probe and
/// another when loaded (to be loaded into the daemon although its name is configured
/// `isolation: process`) is refused and never instantiated or served.
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_changes_its_name_after_the_probe_is_refused() {
    let plugins = PluginDir::new();
    plugins.add_c("tests/fixtures/c/twoface.c", "twoface.so", &[]);
    let state = tempfile::tempdir().unwrap();
    let yaml = "plugins:\n  iso:\n    isolation: process\n";
    let m = manager_with_probe(plugins.path(), state.path(), yaml).await;
    assert!(m.names().is_empty(), "{:?}", m.names());
    let e = m
        .info("twoface.so")
        .unwrap()
        .error()
        .unwrap_or_default()
        .to_owned();
    assert!(
        e.contains("called itself `decoy` in its probe but `iso`"),
        "{e}"
    );
    m.shutdown(Duration::from_secs(1)).await;
}

/// A state directory others can write is refused at start: the daemon (root) would
/// write its state there.
#[tokio::test(flavor = "multi_thread")]
async fn a_state_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let plugins = PluginDir::new();
    let state = tempfile::tempdir().unwrap();
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let started = dynplug_core::Manager::start(
        test_config(plugins.path(), ""),
        state.path(),
        TrustPolicy::for_current_process(),
    )
    .await;
    let Err(e) = started else {
        panic!("a state directory anyone can write was accepted");
    };
    let e = e.to_string();
    assert!(e.contains("writable by group or others"), "{e}");
}
