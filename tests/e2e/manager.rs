//! The core manager against real plugin libraries: Rust cdylibs built by cargo, C
//! plugins built by the system compiler, and broken files of every kind.

use std::path::Path;
use std::time::{Duration, Instant};

use dynplug_core::config::Config;
use dynplug_core::error::{CallError, LoadError, ManagerError};
use dynplug_core::trust::TrustPolicy;
use dynplug_core::{Change, Manager, PluginStatus};
use dynplug_tests::{rust_plugin, set_mode, PluginDir};

fn config(dir: &Path, yaml: &str) -> Config {
    dynplug_tests::test_config(dir, yaml)
}

async fn start(dir: &Path, state: &Path, yaml: &str) -> Manager {
    let (m, _) = Manager::start(config(dir, yaml), state, TrustPolicy::for_current_process())
        .await
        .expect("manager starts");
    m
}

fn failure_of(m: &Manager, file: &str) -> String {
    m.info(file)
        .unwrap_or_else(|_| panic!("{file} listed"))
        .error()
        .unwrap_or_else(|| panic!("{file} failed"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn examples_load_and_run() {
    let plugins = PluginDir::with_examples();
    let state = tempfile::tempdir().unwrap();
    let m = start(
        plugins.path(),
        state.path(),
        "plugins:\n  text:\n    settings:\n      mode: reverse\n",
    )
    .await;
    let names = m.names();
    assert_eq!(
        names,
        ["echo", "hash", "heartbeat", "json", "rot13", "text"]
    );
    assert!(
        m.list().iter().all(|p| p.loaded() && p.enabled),
        "{:#?}",
        m.list()
    );
    assert_eq!(m.execute("echo", "héllo".into()).await.unwrap(), "héllo");
    assert_eq!(m.execute("text", "abc".into()).await.unwrap(), "cba");
    assert_eq!(
        m.execute("rot13", "Hello, wörld".into()).await.unwrap(),
        "Uryyb, jöeyq"
    );
    assert_eq!(
        m.execute("hash", "abc".into()).await.unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(m.execute("json", "[1]".into()).await.unwrap(), "[\n  1\n]");
    let info = m.info("echo").unwrap();
    assert_eq!(info.stats.calls, 1);
    assert_eq!(info.abi_version, 2);
    assert_eq!(info.path, plugins.path().join("echo.so"));
    let big = "x".repeat(1 << 20);
    assert_eq!(m.execute("echo", big.clone()).await.unwrap(), big);
    assert!(matches!(
        m.execute("nope", String::new()).await,
        Err(ManagerError::NotFound(_))
    ));
    m.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_file_is_refused_with_its_reason_and_nothing_else_breaks() {
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("echo"), "echo.so");
    std::fs::write(plugins.path().join("text.so"), "not a library\n").unwrap();
    set_mode(&plugins.path().join("text.so"), 0o644);
    plugins.add(Path::new("/bin/true"), "program.so");
    plugins.add_c(
        "tests/fixtures/c/variant.c",
        "no-entry.so",
        &["FIX_NO_ENTRY"],
    );
    plugins.add_c(
        "tests/fixtures/c/variant.c",
        "magic.so",
        &["FIX_MAGIC=0x12345678u"],
    );
    plugins.add_c("tests/fixtures/c/variant.c", "abi.so", &["FIX_ABI=999u"]);
    plugins.add_c("tests/fixtures/c/variant.c", "size.so", &["FIX_SIZE=8u"]);
    plugins.add_c(
        "tests/fixtures/c/variant.c",
        "name.so",
        &[r#"FIX_NAME="Bad Name""#],
    );
    plugins.add_c(
        "tests/fixtures/c/variant.c",
        "traversal.so",
        &[r#"FIX_NAME="../../etc""#],
    );
    plugins.add_c(
        "tests/fixtures/c/variant.c",
        "zz-dup.so",
        &[r#"FIX_NAME="echo""#],
    );
    plugins.add_c("tests/fixtures/c/variant.c", "null.so", &["FIX_NULL_TABLE"]);
    plugins.add_c(
        "tests/fixtures/c/variant.c",
        "noexec.so",
        &["FIX_NO_EXECUTE"],
    );
    plugins.add_c(
        "tests/fixtures/c/variant.c",
        "ctor.so",
        &["FIX_NULL_CREATE", r#"FIX_NAME="ctor""#],
    );
    plugins.add_c(
        "tests/fixtures/c/variant.c",
        "utf8.so",
        &["FIX_BAD_UTF8", r#"FIX_NAME="badutf8""#],
    );
    let writable = plugins.add(&rust_plugin("hash"), "writable.so");
    set_mode(&writable, 0o666);
    let setuid = plugins.add(&rust_plugin("json"), "setuid.so");
    set_mode(&setuid, 0o4755);
    let state = tempfile::tempdir().unwrap();
    let m = start(plugins.path(), state.path(), "").await;

    let err = failure_of(&m, "text.so");
    assert!(
        err.contains("not a loadable shared library") && err.contains("no ELF header"),
        "{err}"
    );
    assert!(failure_of(&m, "program.so").contains("not a loadable shared library"));
    assert!(failure_of(&m, "no-entry.so").contains("no entry symbol `dynplug_plugin_entry`"));
    assert!(failure_of(&m, "magic.so").contains("wrong magic 0x12345678"));
    let err = failure_of(&m, "abi.so");
    assert!(
        err.contains("ABI version 999") && err.contains("speaks versions 1 to 2"),
        "{err}"
    );
    assert_eq!(m.info("abi.so").unwrap().abi_version, 999);
    assert!(failure_of(&m, "size.so").contains("table is 8 bytes"));
    assert!(failure_of(&m, "name.so").contains("plugin name `Bad Name`"));
    assert!(failure_of(&m, "traversal.so").contains("plugin name `../../etc`"));
    let err = failure_of(&m, "zz-dup.so");
    assert!(
        err.contains("name `echo` is already provided by") && err.contains("echo.so"),
        "{err}"
    );
    assert!(failure_of(&m, "null.so").contains("returned null"));
    assert!(failure_of(&m, "noexec.so").contains("required function"));
    assert!(failure_of(&m, "writable.so").contains("writable by group or others"));
    assert!(failure_of(&m, "setuid.so").contains("setuid"));
    let ctor = m.info("ctor").unwrap();
    assert!(
        matches!(&ctor.status, PluginStatus::Failed(r) if r.contains("constructor failed")),
        "{ctor:?}"
    );
    assert!(matches!(
        m.execute("ctor", String::new()).await,
        Err(ManagerError::Unavailable { .. })
    ));
    assert!(matches!(
        m.execute("badutf8", "x".into()).await,
        Err(ManagerError::Call(CallError::InvalidOutput { .. }))
    ));
    assert!(matches!(
        m.enable("abi.so").await,
        Err(ManagerError::Unavailable { .. })
    ));

    assert_eq!(m.names(), ["badutf8", "ctor", "echo"]);
    assert_eq!(
        m.execute("echo", "still here".into()).await.unwrap(),
        "still here"
    );
    assert_eq!(m.summary().failed, 14);
}

#[test]
fn library_errors_have_exact_kinds() {
    use dynplug_core::library::PluginLibrary;
    let plugins = PluginDir::new();
    let policy = TrustPolicy::for_current_process();
    let abi = plugins.add_c("tests/fixtures/c/variant.c", "abi.so", &["FIX_ABI=3u"]);
    match PluginLibrary::open(&abi, policy) {
        Err(LoadError::AbiMismatch {
            found: 3,
            expected: 2,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let none = plugins.add_c("tests/fixtures/c/variant.c", "none.so", &["FIX_NO_ENTRY"]);
    assert!(matches!(
        PluginLibrary::open(&none, policy),
        Err(LoadError::MissingEntry { .. })
    ));
    let lib = PluginLibrary::open(&rust_plugin("echo"), policy);
    // Files in the build tree may be group-writable under some umasks; the copy may not.
    let lib =
        lib.or_else(|_| PluginLibrary::open(&plugins.add(&rust_plugin("echo"), "echo.so"), policy));
    let lib = lib.expect("echo opens");
    assert_eq!((lib.name(), lib.abi_version()), ("echo", 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_are_contained() {
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("echo"), "echo.so");
    plugins.add(&rust_plugin("fault"), "fault.so");
    let state = tempfile::tempdir().unwrap();
    let m = start(
        plugins.path(),
        state.path(),
        "plugins:\n  fault:\n    timeout_ms: 1500\n    max_concurrency: 2\n",
    )
    .await;

    match m.execute("fault", "error".into()).await {
        Err(ManagerError::Call(CallError::Failed { message, .. })) => {
            assert_eq!(message, "requested failure")
        }
        other => panic!("{other:?}"),
    }
    match m.execute("fault", "panic".into()).await {
        Err(ManagerError::Call(CallError::Panicked { message, .. })) => {
            // One message with the panic's location, no backtrace on stderr.
            assert!(message.contains("requested panic"), "{message}");
            assert!(
                message.contains("panicked at ") && message.contains("src/lib.rs:"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        m.execute("fault", "fine".into()).await.unwrap(),
        "fine",
        "usable after a panic"
    );

    // A hung call times out, and other plugins answer meanwhile.
    let marks = tempfile::tempdir().unwrap();
    let returned = marks.path().join("returned");
    let hung = {
        let m = m.clone();
        let call = format!("sleep-mark 8000 {}", returned.display());
        tokio::spawn(async move { m.execute("fault", call).await })
    };
    for _ in 0..20 {
        assert_eq!(m.execute("echo", "x".into()).await.unwrap(), "x");
    }
    assert!(matches!(
        hung.await.unwrap(),
        Err(ManagerError::Timeout { .. })
    ));
    // Answered at its timeout, while the plugin still sleeps.
    assert!(!returned.exists(), "the caller waited for the hung plugin");
    // Two slots; the hung call still holds one. A second hung call fills the other, and a
    // third call times out waiting for a slot instead of starting yet another thread.
    let second = m.execute("fault", "sleep 8000".into()).await;
    assert!(matches!(second, Err(ManagerError::Timeout { .. })));
    let third = m.execute("fault", "quick".into()).await;
    assert!(
        matches!(third, Err(ManagerError::Timeout { .. })),
        "{third:?}"
    );
    let info = m.info("fault").unwrap();
    assert_eq!(
        (info.stats.calls, info.stats.errors, info.stats.timeouts),
        (6, 5, 3)
    );
    assert!(info
        .stats
        .last_error
        .unwrap()
        .contains("did not answer within 1500ms"));
    assert_eq!(m.execute("echo", "alive".into()).await.unwrap(), "alive");

    let too_big = "x".repeat(m.config().max_input_bytes + 1);
    assert!(matches!(
        m.execute("echo", too_big).await,
        Err(ManagerError::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn configure_failure_marks_plugin_failed() {
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("fault"), "fault.so");
    plugins.add(&rust_plugin("echo"), "echo.so");
    let state = tempfile::tempdir().unwrap();
    let m = start(
        plugins.path(),
        state.path(),
        "plugins:\n  fault:\n    settings:\n      fail_configure: true\n",
    )
    .await;
    let reason = m
        .info("fault")
        .unwrap()
        .error()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("configure"), "{reason}");
    assert!(matches!(
        m.execute("fault", "x".into()).await,
        Err(ManagerError::Unavailable { .. })
    ));
    assert_eq!(m.execute("echo", "x".into()).await.unwrap(), "x");
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_that_break_a_plugins_schema_are_a_configuration_error() {
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("text"), "text.so");
    let state = tempfile::tempdir().unwrap();
    let bad = "plugins:\n  text:\n    settings:\n      mode: shout\n";
    // At start: refused, naming the file, plugin, key and reason.
    let refused = Manager::start(
        config(plugins.path(), bad),
        state.path(),
        TrustPolicy::for_current_process(),
    )
    .await;
    match refused {
        Err(ManagerError::Config(e)) => {
            let m = e.to_string();
            assert!(
                m.starts_with("test.yaml: plugins.text.settings.mode: "),
                "{m}"
            );
            assert!(m.contains("shout") && m.contains("settings schema"), "{m}");
        }
        other => panic!(
            "expected a configuration error, got {:?}",
            other.map(|_| ())
        ),
    }
    // On reload: refused, and the configuration in force stays.
    let m = start(
        plugins.path(),
        state.path(),
        "plugins:\n  text:\n    settings:\n      mode: reverse\n",
    )
    .await;
    let unknown_key = "plugins:\n  text:\n    settings:\n      colour: red\n";
    for yaml in [bad, unknown_key] {
        match m.reload(config(plugins.path(), yaml)).await {
            Err(ManagerError::Config(e)) => {
                assert!(e.to_string().contains("plugins.text.settings"), "{e}")
            }
            other => panic!("expected a refused reload, got {other:?}"),
        }
        assert_eq!(m.execute("text", "abc".into()).await.unwrap(), "cba");
    }
    let info = m.info("text").unwrap();
    assert!(info.settings_schema.unwrap().contains("\"reverse\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn enable_disable_persist_across_restarts() {
    let plugins = PluginDir::with_examples();
    let state = tempfile::tempdir().unwrap();
    let m = start(plugins.path(), state.path(), "").await;
    assert_eq!(m.disable("echo").await.unwrap(), Change::Changed);
    assert_eq!(m.disable("echo").await.unwrap(), Change::Unchanged);
    assert!(matches!(
        m.execute("echo", "x".into()).await,
        Err(ManagerError::Disabled(_))
    ));
    let results = m
        .set_enabled_many(&["hash".into(), "missing".into()], false)
        .await;
    assert_eq!(results[0].1, Ok(Change::Changed));
    assert!(matches!(results[1].1, Err(ManagerError::NotFound(_))));
    m.shutdown(Duration::from_secs(1)).await;
    drop(m);

    let m = start(plugins.path(), state.path(), "").await;
    assert!(!m.info("echo").unwrap().enabled);
    assert!(!m.info("hash").unwrap().enabled);
    assert!(m.info("text").unwrap().enabled);
    assert_eq!(m.enable("echo").await.unwrap(), Change::Changed);
    assert_eq!(m.execute("echo", "back".into()).await.unwrap(), "back");
    let saved = std::fs::read_to_string(state.path().join("state.yaml")).unwrap();
    assert!(
        saved.contains("echo: true") && saved.contains("hash: false"),
        "{saved}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_applies_only_the_differences() {
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("echo"), "echo.so");
    plugins.add(&rust_plugin("text"), "text.so");
    let state = tempfile::tempdir().unwrap();
    let m = start(plugins.path(), state.path(), "").await;
    assert_eq!(m.execute("text", "a".into()).await.unwrap(), "A");

    plugins.add(&rust_plugin("hash"), "hash.so");
    std::fs::remove_file(plugins.path().join("echo.so")).unwrap();
    let report = m
        .reload(config(
            plugins.path(),
            "plugins:\n  text:\n    settings:\n      mode: reverse\n",
        ))
        .await
        .unwrap();
    assert_eq!(report.added, ["hash"]);
    assert_eq!(report.removed, ["echo"]);
    assert_eq!(report.reconfigured, ["text"]);
    assert_eq!(m.execute("text", "ab".into()).await.unwrap(), "ba");

    // Admin disables in the file: applied; an unchanged reload changes nothing.
    let report = m
        .reload(config(
            plugins.path(),
            "plugins:\n  text:\n    enabled: false\n    settings:\n      mode: reverse\n",
        ))
        .await
        .unwrap();
    assert_eq!(report.toggled, ["text"]);
    let report = m
        .reload(config(
            plugins.path(),
            "plugins:\n  text:\n    enabled: false\n    settings:\n      mode: reverse\n",
        ))
        .await
        .unwrap();
    assert_eq!(report.to_string(), "no changes");

    // A missing plugins directory is refused and changes nothing.
    let err = m
        .reload(config(&plugins.path().join("gone"), ""))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("plugins_dir"), "{err}");
    assert_eq!(m.names(), ["hash", "text"]);
    assert_eq!(m.config().plugins_dir, plugins.path());

    // Replacing a library file swaps in the new one for new calls.
    plugins.add(&rust_plugin("json"), "hash.so");
    let report = m.reload(config(plugins.path(), "")).await.unwrap();
    assert_eq!(report.removed, ["hash"]);
    assert_eq!(report.added, ["json"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn service_plugin_runs_restarts_and_stops() {
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("heartbeat"), "heartbeat.so");
    let state = tempfile::tempdir().unwrap();
    let m = start(
        plugins.path(),
        state.path(),
        "plugins:\n  heartbeat:\n    settings:\n      interval_ms: 5\n",
    )
    .await;
    let mut events = m.subscribe();
    let beats = |out: String| -> u64 {
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["beats"].as_u64().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = m.execute("heartbeat", String::new()).await.unwrap();
        if beats(out.clone()) >= 3 {
            assert!(out.contains(r#""running": true"#), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "no heartbeats: {out}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        m.info("heartbeat").unwrap().service_state.as_str(),
        "running"
    );
    m.disable("heartbeat").await.unwrap();
    assert_eq!(
        m.info("heartbeat").unwrap().service_state.as_str(),
        "stopped"
    );
    let mut saw_stopped = false;
    while let Ok(e) = events.try_recv() {
        if let dynplug_core::events::Event::ServiceStateChanged { state, .. } = e {
            saw_stopped |= state.as_str() == "stopped";
        }
    }
    assert!(saw_stopped);
    m.enable("heartbeat").await.unwrap();
    assert_eq!(
        m.info("heartbeat").unwrap().service_state.as_str(),
        "running"
    );
    assert_eq!(m.shutdown(Duration::from_secs(2)).await, 0);
    assert_eq!(
        m.info("heartbeat").unwrap().service_state.as_str(),
        "stopped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lazy_loading_creates_instances_on_first_call() {
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("echo"), "echo.so");
    let state = tempfile::tempdir().unwrap();
    let m = start(plugins.path(), state.path(), "lazy_load: true\n").await;
    assert_eq!(m.info("echo").unwrap().status, PluginStatus::Pending);
    assert_eq!(m.execute("echo", "x".into()).await.unwrap(), "x");
    assert_eq!(m.info("echo").unwrap().status, PluginStatus::Loaded);
}

/// A plugin author's crate outside the workspace builds without the host's runtime and
/// loads: written against the SDK crate, and written against core with
/// `default-features = false` as the README once said (such crates keep building).
#[tokio::test(flavor = "multi_thread")]
async fn outside_rust_plugin_crates_build_lean_and_load() {
    let root = dynplug_tests::workspace_root();
    for (dependency, krate_name) in [
        (
            format!(
                "dynplug-sdk = {{ path = \"{}\" }}",
                root.join("sdk").display()
            ),
            "dynplug_sdk",
        ),
        (
            format!(
                "dynplug-core = {{ path = \"{}\", default-features = false }}",
                root.join("core").display()
            ),
            "dynplug_core",
        ),
    ] {
        outside_plugin(&dependency, krate_name).await;
    }
}

async fn outside_plugin(dependency: &str, krate_name: &str) {
    let krate = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(krate.path().join("src")).unwrap();
    std::fs::write(
        krate.path().join("Cargo.toml"),
        format!(
            "[package]\nname = \"shout\"\nversion = \"1.2.3\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\n{dependency}\n\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        krate.path().join("src/lib.rs"),
        format!("use {krate_name}::{{register_plugin, Plugin, PluginResult}};\n")
            + r#"
pub struct Shout;
impl Shout { pub fn new() -> Self { Shout } }
impl Plugin for Shout {
    fn name(&self) -> &str { "shout" }
    fn version(&self) -> &str { env!("CARGO_PKG_VERSION") }
    fn description(&self) -> &str { "upper-cases" }
    fn execute(&self, input: &str) -> PluginResult<String> {
        if input.is_empty() { return Err("nothing to shout".into()); }
        Ok(input.to_uppercase())
    }
}
register_plugin!(Shout);
"#,
    )
    .unwrap();
    let target = dynplug_tests::artifact_dir()
        .parent()
        .unwrap()
        .join(format!("outside-plugin-{krate_name}"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(&cargo)
        .args(["build", "--offline", "--quiet"])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(krate.path())
        .status()
        .unwrap();
    assert!(status.success(), "the outside plugin crate builds");
    let lock = std::fs::read_to_string(krate.path().join("Cargo.lock")).unwrap();
    for heavy in ["tokio", "zbus", "libloading", "serde"] {
        assert!(
            !lock.contains(&format!("name = \"{heavy}\"")),
            "{heavy} pulled into a plugin:\n{lock}"
        );
    }
    let plugins = PluginDir::new();
    plugins.add(&target.join("debug/libshout.so"), "shout.so");
    let state = tempfile::tempdir().unwrap();
    let m = start(
        plugins.path(),
        state.path(),
        "plugins:\n  shout:\n    version: \"^1.2\"\n",
    )
    .await;
    assert_eq!(m.execute("shout", "hi".into()).await.unwrap(), "HI");
    assert!(matches!(
        m.execute("shout", String::new()).await,
        Err(ManagerError::Call(CallError::Failed { .. }))
    ));
    assert_eq!(m.info("shout").unwrap().version, "1.2.3");
}

/// The README's Rust plugin, as a new author would copy it, builds and passes clippy
/// with `-D warnings`.
#[test]
fn the_readmes_rust_plugin_passes_clippy() {
    let run = dynplug_tests::OutsideCrate::from_readme().cargo(
        "clippy",
        "readme-plugin",
        &["-D", "warnings"],
    );
    assert!(
        run.success,
        "the README's plugin fails clippy:\n{}",
        run.stderr
    );
}
