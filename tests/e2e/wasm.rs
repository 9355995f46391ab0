//! The WebAssembly tier against hostile components made from WAT at test time: each
//! attack fails alone, named, at its documented limit, while other plugins answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynplug_core::config::Isolation;
use dynplug_core::error::{CallError, ManagerError};
use dynplug_core::events::Event;
use dynplug_core::jobs::{JobOwner, JobState};
use dynplug_core::signature::{keygen, sign, signature_path};
use dynplug_core::Manager;
use dynplug_tests::{run, set_mode, Daemon, PluginDir, PrivateBus};
use dynplug_wasm::guests::{self, Guest};

/// Installs a component as `NAME.wasm`.
fn add(dir: &PluginDir, name: &str, guest: &Guest<'_>) -> PathBuf {
    add_bytes(
        dir,
        &format!("{name}.wasm"),
        &guests::component(name, guest),
    )
}

fn add_bytes(dir: &PluginDir, file: &str, bytes: &[u8]) -> PathBuf {
    let tmp = dir.path().join(format!(".{file}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    set_mode(&tmp, 0o644);
    let path = dir.path().join(file);
    std::fs::rename(&tmp, &path).unwrap();
    path
}

async fn start(dir: &PluginDir, state: &Path, yaml: &str) -> Manager {
    Manager::start(
        dynplug_tests::test_config(dir.path(), yaml),
        state,
        dynplug_core::trust::TrustPolicy::for_current_process(),
    )
    .await
    .expect("manager starts")
    .0
}

/// A component importing `import` (a module field `(import ... (func $it (result i32)))`)
/// of the world `plugin` in `wit`, with the packages `deps`.
fn importing(deps: &[&str], wit: &str, import: &str, name: &str) -> Vec<u8> {
    let guest = Guest {
        fields: "",
        body: "(drop (call $it)) (call $ok (i32.const 0) (i32.const 0))",
    };
    let records = [
        ("meta", "1"),
        ("name", name),
        ("version", "1.0.0"),
        ("description", "imports too much"),
        ("abi", "2"),
    ];
    guests::component_from(
        deps,
        wit,
        "plugin",
        &guests::module_text_with(import, &guest),
        Some(&records),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_infinite_loop_times_out_at_its_timeout_while_another_plugin_answers() {
    let dir = PluginDir::new();
    add(&dir, "spin", &guests::LOOP);
    add(&dir, "echo", &guests::ECHO);
    let state = tempfile::tempdir().unwrap();
    let m = start(
        &dir,
        state.path(),
        "plugins:\n  spin:\n    timeout_ms: 300\n",
    )
    .await;
    let info = m.info("spin").unwrap();
    assert_eq!(info.isolation, Isolation::Wasm);
    assert_eq!(info.call_path, "wasm");

    let spinning = {
        let m = m.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            (m.execute("spin", String::new()).await, began.elapsed())
        })
    };
    // Served while the loop spins.
    for i in 0..20 {
        assert_eq!(
            m.execute("echo", format!("{i}")).await.unwrap(),
            format!("{i}")
        );
    }
    let (result, took) = spinning.await.unwrap();
    assert!(
        matches!(result, Err(ManagerError::Timeout { .. })),
        "{result:?}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1_500),
        "answered after {took:?}"
    );
    // The guest was stopped, not left running: the permit is free for the next call,
    // which times out on its own timeout again (not queued behind a runaway one).
    let began = Instant::now();
    let again = m.execute("spin", String::new()).await;
    assert!(
        matches!(again, Err(ManagerError::Timeout { .. })),
        "{again:?}"
    );
    assert!(began.elapsed() < Duration::from_millis(1_500));
    assert_eq!(m.info("spin").unwrap().stats.timeouts, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_guests_fail_named_and_a_trapping_one_is_quarantined() {
    let dir = PluginDir::new();
    add(&dir, "hog", &guests::ALLOC_2GIB);
    add(&dir, "deep", &guests::STACK_OVERFLOW);
    add(&dir, "crash", &guests::UNREACHABLE);
    add(&dir, "oob", &guests::OUT_OF_BOUNDS);
    add(&dir, "echo", &guests::ECHO);
    let state = tempfile::tempdir().unwrap();
    let yaml = "plugins:\n  hog:\n    memory_limit_mb: 32\n  crash:\n    crash_limit: 3\n";
    let m = start(&dir, state.path(), yaml).await;

    let err = m.execute("hog", String::new()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, ManagerError::Call(CallError::Trapped { .. })),
        "{err:?}"
    );
    assert!(text.contains("memory limit of 32 MiB"), "{text}");
    for (name, trap) in [
        ("deep", "stack overflow"),
        ("crash", "unreachable"),
        ("oob", "out-of-bounds memory access"),
    ] {
        let err = m.execute(name, "x".into()).await.unwrap_err();
        assert_eq!(
            err,
            ManagerError::Call(CallError::Trapped {
                plugin: name.into(),
                message: format!("trapped: {trap}"),
            })
        );
        assert_eq!(m.execute("echo", name.into()).await.unwrap(), name);
    }
    let info = m.info("hog").unwrap();
    let wasm = info.wasm.unwrap();
    assert_eq!(wasm.traps, 1);
    assert_eq!(wasm.memory_limit, 32 * 1024 * 1024);

    // Two more traps: three within a minute quarantine `crash`, on disk too.
    for _ in 0..2 {
        assert!(m.execute("crash", String::new()).await.is_err());
    }
    let err = m.execute("crash", String::new()).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::Unavailable { reason, .. } if reason.contains("quarantined")),
        "{err:?}"
    );
    assert!(m.info("crash").unwrap().wasm.unwrap().quarantined);
    let saved = std::fs::read_to_string(state.path().join("state.yaml")).unwrap_or_default();
    assert!(saved.contains("crash"), "the quarantine is saved: {saved}");
    assert_eq!(m.execute("echo", "still".into()).await.unwrap(), "still");
    drop(m);
    // A restart keeps the quarantine of this very file.
    let m = start(&dir, state.path(), yaml).await;
    assert!(m.execute("crash", String::new()).await.is_err());
    assert!(m.info("crash").unwrap().wasm.unwrap().quarantined);
    assert_eq!(m.info("crash").unwrap().wasm.unwrap().traps, 0);
}

const EVIL_WIT: &str = r#"
package evil:steal@1.0.0;
interface grab { take: func() -> u32; }
world plugin {
  import grab;
  export execute: func(input: string) -> result<string, string>;
}
"#;

const SOCKETS_DEP: &str = r#"
package wasi:sockets@0.2.0;
interface instance-network { instance-network: func() -> u32; }
"#;

const SOCKETS_WIT: &str = r#"
package test:net;
world plugin {
  import wasi:sockets/instance-network@0.2.0;
  export execute: func(input: string) -> result<string, string>;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn components_importing_what_the_host_lacks_are_refused_at_load_by_name() {
    let dir = PluginDir::new();
    add_bytes(
        &dir,
        "evil.wasm",
        &importing(
            &[],
            EVIL_WIT,
            r#"(import "evil:steal/grab@1.0.0" "take" (func $it (result i32)))"#,
            "evil",
        ),
    );
    add_bytes(
        &dir,
        "net.wasm",
        &importing(
            &[SOCKETS_DEP],
            SOCKETS_WIT,
            r#"(import "wasi:sockets/instance-network@0.2.0" "instance-network" (func $it (result i32)))"#,
            "net",
        ),
    );
    // No metadata section: refused too (a wasm plugin says who it is there).
    let bare = guests::component_from(
        &[],
        guests::WIT,
        "plugin",
        &guests::module_text(&guests::ECHO),
        None,
    )
    .unwrap();
    add_bytes(&dir, "bare.wasm", &bare);
    add(&dir, "echo", &guests::ECHO);
    let state = tempfile::tempdir().unwrap();
    let m = start(&dir, state.path(), "").await;
    assert_eq!(m.names(), ["echo"]);
    let error = |file: &str| m.info(file).unwrap().error().unwrap_or_default().to_owned();
    assert!(
        error("evil.wasm").contains("`evil:steal/grab@1.0.0`"),
        "{}",
        error("evil.wasm")
    );
    let net = error("net.wasm");
    assert!(
        net.contains("wasi:sockets/instance-network@0.2.0") && net.contains("no network"),
        "{net}"
    );
    assert!(
        error("bare.wasm").contains("no dynplug.meta"),
        "{}",
        error("bare.wasm")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn network_true_is_refused_for_wasm() {
    let dir = PluginDir::new();
    add(&dir, "echo", &guests::ECHO);
    let state = tempfile::tempdir().unwrap();
    let m = start(
        &dir,
        state.path(),
        "plugins:\n  echo:\n    sandbox:\n      network: true\n",
    )
    .await;
    let err = m.execute("echo", "x".into()).await.unwrap_err();
    assert!(
        err.to_string().contains("sandbox.network: true is refused"),
        "{err}"
    );
    assert!(!m.info("echo").unwrap().loaded());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_reports_progress_logs_an_event_and_is_cancelled() {
    let dir = PluginDir::new();
    add(&dir, "ctx", &guests::CONTEXT);
    let state = tempfile::tempdir().unwrap();
    let m = start(&dir, state.path(), "").await;
    let mut events = m.subscribe();
    let job = m.start_job("ctx", "wait".into(), JobOwner::Uid(0)).unwrap();
    // The guest emits `done` before it waits for cancellation.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the guest's event `done` within 10 s")
            .unwrap();
        if let Event::PluginEvent {
            plugin,
            event,
            payload,
        } = event
        {
            assert_eq!(
                (plugin.as_str(), event.as_str(), payload.as_str()),
                ("ctx", "done", "{}")
            );
            break;
        }
    }
    let view = job.view();
    assert_eq!(view.progress, 0.5);
    assert_eq!(view.status_text, "half");
    m.jobs().cancel(job.id(), JobOwner::Uid(0), false).unwrap();
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the job's end within 10 s")
            .unwrap();
        if matches!(event, Event::JobChanged { id, finished: true } if id == job.id()) {
            break;
        }
    }
    assert_eq!(job.view().state, JobState::Cancelled);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_wasm_is_refused_under_enforcing_signatures() {
    let dir = PluginDir::new();
    let keys = tempfile::tempdir().unwrap();
    let (secret, public) = keygen().unwrap();
    std::fs::write(keys.path().join("build.pub"), public).unwrap();
    set_mode(&keys.path().join("build.pub"), 0o644);
    for name in ["good", "bad"] {
        let path = add(&dir, name, &guests::ECHO);
        std::fs::write(signature_path(&path), sign(&path, &secret).unwrap()).unwrap();
        set_mode(&signature_path(&path), 0o644);
    }
    // `bad`: one byte appended after signing (a trailing custom section would do too).
    let bad = dir.path().join("bad.wasm");
    let mut bytes = std::fs::read(&bad).unwrap();
    guests::append_custom_section(&mut bytes, "x", b"");
    add_bytes(&dir, "bad.wasm", &bytes);
    let state = tempfile::tempdir().unwrap();
    let yaml = format!(
        "trust:\n  signatures: enforcing\n  keys_dir: {}\n",
        keys.path().display()
    );
    let m = start(&dir, state.path(), &yaml).await;
    assert_eq!(m.names(), ["good"]);
    assert_eq!(m.info("good").unwrap().signature, "verified (key build)");
    let refused = m
        .info("bad.wasm")
        .unwrap()
        .error()
        .unwrap_or_default()
        .to_owned();
    assert!(refused.contains("signature"), "{refused}");
    assert_eq!(m.execute("good", "ok".into()).await.unwrap(), "ok");
}

/// Waits until `name` is compiled (its artifact reported) or failed.
async fn compiled(m: &Manager, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = m.info(name).unwrap();
        if let Some(reason) = info.error() {
            panic!("{name} failed: {reason}");
        }
        let artifact = info.wasm.unwrap().artifact;
        if !artifact.is_empty() {
            return artifact;
        }
        assert!(
            Instant::now() < deadline,
            "{name} was not compiled within 30 s"
        );
        // Compiles run on the blocking pool with no event of their own: poll.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_precompiled_artifact_is_recompiled_never_loaded() {
    let dir = PluginDir::new();
    add(&dir, "echo", &guests::ECHO);
    let state = tempfile::tempdir().unwrap();
    let m = start(&dir, state.path(), "").await;
    assert_eq!(compiled(&m, "echo").await, "compiled and stored");
    drop(m);
    let artifacts = dynplug_wasm::artifacts(&state.path().join("wasm"));
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    let m = start(&dir, state.path(), "").await;
    assert_eq!(compiled(&m, "echo").await, "precompiled artifact");
    drop(m);
    // Flip bytes in the middle of the code.
    let mut bytes = std::fs::read(&artifacts[0]).unwrap();
    let at = bytes.len() / 2;
    for b in &mut bytes[at..at + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&artifacts[0], bytes).unwrap();
    let m = start(&dir, state.path(), "").await;
    let artifact = compiled(&m, "echo").await;
    assert!(
        artifact.starts_with("recompiled") && artifact.contains("digest"),
        "{artifact}"
    );
    assert_eq!(m.execute("echo", "fine".into()).await.unwrap(), "fine");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_concurrent_calls_with_a_trapping_plugin_each_get_their_own_answer() {
    let dir = PluginDir::new();
    add(&dir, "echo", &guests::ECHO);
    add(&dir, "crash", &guests::UNREACHABLE);
    let state = tempfile::tempdir().unwrap();
    let yaml = "plugins:\n  echo:\n    max_concurrency: 64\n  crash:\n    max_concurrency: 64\n    crash_limit: 1000\n";
    let m = Arc::new(start(&dir, state.path(), yaml).await);
    let calls: Vec<_> = (0..1000)
        .map(|i| {
            let m = Arc::clone(&m);
            tokio::spawn(async move {
                let plugin = if i % 4 == 0 { "crash" } else { "echo" };
                (i, plugin, m.execute(plugin, format!("call {i}")).await)
            })
        })
        .collect();
    let mut traps = 0;
    for call in calls {
        let (i, plugin, result) = tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .expect("every call answered within 60 s")
            .unwrap();
        match plugin {
            "echo" => assert_eq!(result.unwrap(), format!("call {i}")),
            _ => {
                assert!(
                    matches!(&result, Err(ManagerError::Call(CallError::Trapped { plugin, .. })) if plugin == "crash"),
                    "{result:?}"
                );
                traps += 1;
            }
        }
    }
    assert_eq!(traps, 250);
    assert_eq!(m.info("crash").unwrap().wasm.unwrap().traps, 250);
}

#[test]
fn the_daemon_serves_wasm_and_inspect_runs_no_guest_code() {
    let dir = PluginDir::new();
    add(&dir, "echo", &guests::ECHO);
    // A component whose start function never returns: if inspect instantiated it (or
    // ran anything of it), inspect would hang.
    let trap_at_start = Guest {
        fields: "(func $forever (loop $l (br $l))) (start $forever)",
        body: "(call $ok (i32.const 0) (i32.const 0))",
    };
    let spinner = add(&dir, "spinner", &trap_at_start);

    let mut cmd = dynplug_tests::tool("dynplugd");
    cmd.arg("--inspect").arg(&spinner);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = dynplug_tests::wait_with_deadline(child, "dynplugd --inspect spinner.wasm");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("name:        \"spinner\""), "{text}");
    assert!(text.contains("WIT dynplug:plugin@\"1.0.0\""), "{text}");
    assert!(
        text.contains("import:      \"dynplug:plugin/host@1.0.0\""),
        "{text}"
    );
    assert!(text.contains("export:      \"execute\""), "{text}");
    assert!(text.contains("nothing compiled or run"), "{text}");

    let bus = PrivateBus::start();
    let _daemon = Daemon::start(&bus, dir.path(), "");
    let mut ctl = dynplug_tests::tool("dynplugctl");
    ctl.arg("--address")
        .arg(bus.address())
        .args(["execute", "echo", "héllo wasm"]);
    let (code, out, err) = run(ctl);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim_end(), "héllo wasm");
    let mut ctl = dynplug_tests::tool("dynplugctl");
    ctl.arg("--address")
        .arg(bus.address())
        .args(["--json", "info", "echo"]);
    let (code, out, err) = run(ctl);
    assert_eq!(code, 0, "{out}{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["isolation"], "wasm", "{info}");
    assert_eq!(info["call_path"], "wasm", "{info}");
    assert_eq!(info["wasm_artifact"], "compiled and stored", "{info}");
}

/// The example components `cargo xtask wasm` built, or None (with SKIP printed) when
/// they were not built here.
fn built_examples() -> Option<PathBuf> {
    let dir = dynplug_tests::artifact_dir()
        .parent()
        .expect("the artifact dir is in the target dir")
        .join("wasm-plugins");
    let wanted = ["wasm-c-hash", "wasm-py-words", "wasm-js-json"];
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|n| !dir.join(format!("{n}.wasm")).exists())
        .collect();
    if missing.is_empty() {
        return Some(dir);
    }
    println!(
        "SKIP: {} not built in {} (run `cargo xtask wasm`; it needs clang-14, lld-14, componentize-py and npm)",
        missing.join(", "),
        dir.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn examples_from_c_python_and_javascript_run() {
    let Some(built) = built_examples() else {
        return;
    };
    let dir = PluginDir::new();
    for name in ["wasm-c-hash", "wasm-py-words", "wasm-js-json"] {
        dir.add(&built.join(format!("{name}.wasm")), &format!("{name}.wasm"));
    }
    let state = tempfile::tempdir().unwrap();
    let m = start(&dir, state.path(), "default_timeout_ms: 120000\n").await;
    // FNV-1a 64 of "hello".
    assert_eq!(
        m.execute("wasm-c-hash", "hello".into()).await.unwrap(),
        "a430d84680aabd0b"
    );
    let pretty = m
        .execute("wasm-js-json", r#"{"b": 1, "a": [true]}"#.into())
        .await
        .unwrap();
    assert_eq!(pretty, "{\n  \"a\": [\n    true\n  ],\n  \"b\": 1\n}");
    let err = m.execute("wasm-js-json", "nope".into()).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::Call(CallError::Failed { message, .. }) if message.starts_with("not JSON")),
        "{err:?}"
    );

    // Python: componentize-py 0.25 links CPython's socket support, so the component
    // imports wasi:sockets, which this host refuses at load (no network for wasm).
    let refused = m.info("wasm-py-words.wasm").unwrap();
    let reason = refused.error().unwrap_or_default();
    assert!(
        reason.contains("wasi:sockets/") && reason.contains("no network"),
        "{reason}"
    );
    for name in ["wasm-c-hash", "wasm-js-json"] {
        let info = m.info(name).unwrap();
        assert_eq!(info.isolation, Isolation::Wasm, "{name}");
        let wasm = info.wasm.unwrap();
        println!(
            "{name}: compiled in {} ms ({}), peak memory {} KiB",
            wasm.compile_us / 1000,
            wasm.artifact,
            wasm.peak_memory / 1024
        );
    }
}
