//! Plugin metadata read from the file's `.dynplug.meta` section: inspected without
//! running any code, checked against the table, and used to list isolated plugins
//! without loading them anywhere.

use std::path::Path;

use dynplug_core::error::LoadError;
use dynplug_core::library::PluginLibrary;
use dynplug_core::trust::TrustPolicy;
use dynplug_tests::{busctl_call, manager_with_probe, run, PluginDir, PrivateBus};

fn marker_define(marker: &Path) -> String {
    format!("MARKER=\"{}\"", marker.display())
}

#[test]
fn inspect_reads_a_plugin_without_running_any_of_its_code() {
    let plugins = PluginDir::new();
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("ran");
    let file = plugins.add_c(
        "tests/fixtures/c/marked.c",
        "marked.so",
        &[
            &marker_define(&marker),
            "SCHEMA=\"{\\\"type\\\": \\\"object\\\"}\"",
        ],
    );

    let mut cmd = dynplug_tests::tool("dynplugd");
    cmd.arg("--inspect").arg(&file);
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("name:        \"marked\""), "{out}");
    assert!(out.contains("no code was run"), "{out}");
    assert!(out.contains("\"type\": \"object\""), "{out}");
    assert!(
        !marker.exists(),
        "dynplugd --inspect ran the plugin's initialiser"
    );

    let mut cmd = dynplug_tests::tool("dynplugctl");
    cmd.args(["inspect", "--json"]).arg(&file);
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["metadata"]["name"], "marked", "{report}");
    assert_eq!(report["metadata_source"], "section");
    assert_eq!(report["trust"]["ok"], true);
    assert!(
        !marker.exists(),
        "dynplugctl inspect ran the plugin's initialiser"
    );

    // The fixture does leave its mark once loaded: the checks above can fail.
    PluginLibrary::open(&file, TrustPolicy::for_current_process()).unwrap();
    assert!(
        marker.exists(),
        "loading the plugin should have run its initialiser"
    );
}

#[test]
fn inspect_says_what_it_cannot_know() {
    let plugins = PluginDir::new();
    let old = plugins.add_c("tests/fixtures/c/marked.c", "old.so", &["NO_METADATA"]);
    let mut cmd = dynplug_tests::tool("dynplugd");
    cmd.arg("--inspect").arg(&old);
    let (code, out, _) = run(cmd);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("none in the file"), "{out}");

    let text = plugins.path().join("notes.so");
    std::fs::write(&text, "not a library").unwrap();
    let mut cmd = dynplug_tests::tool("dynplugctl");
    cmd.arg("inspect").arg(&text);
    let (code, out, _) = run(cmd);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not an ELF shared library"), "{out}");
}

/// Why the loader refuses `file` (it must).
fn refusal(file: &Path) -> LoadError {
    match PluginLibrary::open(file, TrustPolicy::for_current_process()) {
        Err(e) => e,
        Ok(lib) => panic!("{} was accepted as `{}`", file.display(), lib.name()),
    }
}

#[test]
fn a_table_that_disagrees_with_its_section_is_refused_naming_both() {
    let plugins = PluginDir::new();
    let file = plugins.add_c(
        "tests/fixtures/c/marked.c",
        "liar.so",
        &["TABLE_NAME=\"impostor\""],
    );
    match PluginLibrary::open(&file, TrustPolicy::for_current_process()) {
        Err(e @ LoadError::MetadataMismatch { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("says name `marked`") && m.contains("table says `impostor`"),
                "{m}"
            );
        }
        other => panic!("expected a metadata mismatch, got {other:?}"),
    }
}

#[test]
fn an_isolated_plugin_with_metadata_is_listed_without_being_loaded() {
    let plugins = PluginDir::new();
    // Both abort as soon as they are loaded. The one with a section is never loaded at
    // start; the one without must be probed, and its probe dies.
    plugins.add_c("tests/fixtures/c/marked.c", "marked.so", &["ABORT_ON_LOAD"]);
    plugins.add_c(
        "tests/fixtures/c/marked.c",
        "blind.so",
        &["ABORT_ON_LOAD", "NO_METADATA"],
    );
    let bus = PrivateBus::start();
    let daemon = dynplug_tests::Daemon::start(
        &bus,
        plugins.path(),
        "plugins:\n  marked:\n    isolation: process\n",
    );
    let marked = bus.manager_call("GetPlugin", "s", &["marked"]);
    assert!(marked.contains("\"State\" s \"loaded\""), "{marked}");
    let blind = bus.manager_call("GetPlugin", "s", &["blind.so"]);
    assert!(blind.contains("\"State\" s \"failed\""), "{blind}");
    // Its first call loads it in a worker, which dies: the daemon says so and lives.
    let (code, _, err) = busctl_call(
        bus.command("busctl"),
        [
            "/org/dynplug/Manager",
            "org.dynplug.Manager",
            "Execute",
            "ss",
        ],
        &["marked", "x"],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("SIGABRT") && err.contains("while loading"),
        "{err}"
    );
    assert_eq!(bus.manager_property("State").trim(), "running");
    drop(daemon);
}

/// What `dynplugd --inspect FILE` prints (it must succeed).
fn inspect(file: &Path) -> String {
    let mut cmd = dynplug_tests::tool("dynplugd");
    cmd.arg("--inspect").arg(file);
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "{out}{err}");
    out
}

/// Asserts that `inspect` output shows this name, version and description, read from
/// the section.
fn assert_inspected(out: &str, name: &str, version: &str, description: &str) {
    for line in [
        format!("name:        \"{name}\""),
        format!("version:     \"{version}\""),
        format!("description: \"{description}\""),
        "metadata:    from the .dynplug.meta section (no code was run)".to_owned(),
    ] {
        assert!(out.contains(&line), "`{line}` not in:\n{out}");
    }
}

#[test]
fn every_example_rust_plugin_is_inspected_from_its_one_declaration() {
    for plugin in ["echo", "text", "json", "hash", "heartbeat", "count"] {
        let file = dynplug_tests::rust_plugin(plugin);
        let out = inspect(&file);
        // The loader refuses a table that disagrees with the section: it loads.
        let lib = PluginLibrary::open(&file, TrustPolicy::for_current_process())
            .unwrap_or_else(|e| panic!("{plugin} does not load: {e}"));
        assert_inspected(&out, plugin, env!("CARGO_PKG_VERSION"), lib.description());
        let m = lib.metadata().expect("a section");
        assert_eq!(m.abi_version, dynplug_core::abi::ABI_VERSION);
        assert_eq!(m.service, plugin == "heartbeat", "{plugin}");
        assert_eq!(
            m.settings_schema.is_some(),
            ["text", "json", "heartbeat"].contains(&plugin),
            "{plugin}"
        );
    }
}

/// The README's plugin, copied as written there and built outside the workspace, is
/// inspectable (its bare `register_plugin!(Shout)` of before left no section), is
/// listed from its section as an isolated plugin without being loaded, and answers.
#[test]
fn the_readmes_plugin_is_inspectable_and_served() {
    let krate = dynplug_tests::OutsideCrate::from_readme();
    let build = krate.cargo("build", "outside-plugins", &[]);
    assert!(
        build.success,
        "the README's plugin does not build:\n{}",
        build.stderr
    );
    let file = dynplug_tests::OutsideCrate::built_library("outside-plugins", "my_plugin");
    assert_inspected(&inspect(&file), "shout", "1.0.0", "Upper-cases its input");

    let plugins = PluginDir::new();
    plugins.add(&file, "shout.so");
    plugins.add(&dynplug_tests::rust_plugin("echo"), "echo.so");
    let bus = PrivateBus::start();
    let daemon = dynplug_tests::Daemon::start(
        &bus,
        plugins.path(),
        "plugins:\n  shout:\n    isolation: process\n",
    );
    let shout = bus.manager_call("GetPlugin", "s", &["shout"]);
    assert!(
        shout.contains("\"Version\" s \"1.0.0\"")
            && shout.contains("\"Description\" s \"Upper-cases its input\""),
        "{shout}"
    );
    assert_eq!(
        bus.manager_call("Execute", "ss", &["shout", "hi"]).trim(),
        "s \"HI\""
    );
    assert_eq!(
        bus.manager_call("Execute", "ss", &["echo", "hi"]).trim(),
        "s \"hi\""
    );
    drop(daemon);
}

/// A plugin whose name defaults to a package name that is not a plugin name does not
/// compile, and the compiler says why and what to write; naming it fixes that.
#[test]
fn a_package_name_that_is_no_plugin_name_is_a_compile_error() {
    let plugin = |attribute: &str| {
        format!(
            "use dynplug_sdk::{{plugin, Plugin, PluginResult}};\n\
             #[derive(Default)]\n\
             pub struct Mine;\n\
             impl Mine {{ pub fn new() -> Self {{ Mine }} }}\n\
             #[plugin({attribute})]\n\
             impl Plugin for Mine {{\n    \
                 fn execute(&self, input: &str) -> PluginResult<String> {{ Ok(input.into()) }}\n\
             }}\n"
        )
    };
    let sdk = dynplug_tests::workspace_root().join("sdk");
    let krate = dynplug_tests::OutsideCrate::new(
        &format!(
            "[package]\nname = \"My_Plugin\"\nversion = \"0.3.0\"\nedition = \"2021\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\ndynplug-sdk = {{ path = \"{}\" }}\n",
            sdk.display()
        ),
        &plugin("description = \"mine\""),
    );
    let build = krate.cargo("build", "outside-plugins", &[]);
    assert!(!build.success, "a plugin named `My_Plugin` compiled");
    assert!(
        build
            .stderr
            .contains("the plugin's name defaults to the package name")
            && build
                .stderr
                .contains("`My_Plugin` must start with a lowercase")
            && build.stderr.contains("write `name = \"...\"`"),
        "{}",
        build.stderr
    );
    krate.write_lib(&plugin("name = \"mine\", description = \"mine\""));
    let build = krate.cargo("build", "outside-plugins", &[]);
    assert!(build.success, "{}", build.stderr);
    let file = dynplug_tests::OutsideCrate::built_library("outside-plugins", "My_Plugin");
    assert_inspected(&inspect(&file), "mine", "0.3.0", "mine");
}

/// Kills the daemon when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn descriptors_do_not_grow_with_the_number_of_plugins() {
    let scratch = tempfile::tempdir().unwrap();
    let template = scratch.path().join("p0000.so");
    dynplug_tests::compile_c(
        "tests/fixtures/c/marked.c",
        &template,
        &["PLUGIN_NAME=\"p0000\""],
    );
    let plugins = PluginDir::new();
    plugins.add_renamed_copies(&template, 0, 300);
    let bus = PrivateBus::start();
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("config.yaml");
    std::fs::write(&config, "log_level: warn\n").unwrap();
    dynplug_tests::set_mode(&config, 0o644);
    let mut notify = dynplug_tests::NotifySocket::new();
    let mut cmd = dynplug_tests::dynplugd_command(&bus, &config, plugins.path(), state.path());
    cmd.env("NOTIFY_SOCKET", notify.path())
        .env_remove("DYNPLUG_CONFIG")
        .stderr(std::process::Stdio::null());
    // A hard limit of 256 descriptors: fewer than the plugins to load.
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = KillOnDrop(cmd.spawn().unwrap());
    let pid = child.0.id();
    notify.wait_for("READY=1", dynplug_tests::READY_TIMEOUT);
    assert_eq!(bus.manager_property("PluginCount").trim(), "300");
    let held = open_descriptors(pid);
    assert!(held <= 64, "{held} descriptors open with 300 plugins");
    // Fifteen more arrive; a reload loads them all, with room to spare.
    plugins.add_renamed_copies(&template, 300, 15);
    notify.drain();
    dynplug_tests::send_signal(pid, libc::SIGHUP);
    notify.wait_for("READY=1", dynplug_tests::READY_TIMEOUT);
    assert_eq!(bus.manager_property("PluginCount").trim(), "315");
    assert_eq!(
        bus.manager_call("Execute", "ss", &["p0314", "hi"]).trim(),
        "s \"hi\""
    );
    let held = open_descriptors(pid);
    assert!(held <= 64, "{held} descriptors open with 315 plugins");
    drop(child);
}

#[test]
fn a_declared_schema_is_shown_by_dynplugctl_and_rest() {
    let plugins = PluginDir::new();
    plugins.add(&dynplug_tests::rust_plugin("text"), "text.so");
    let bus = PrivateBus::start();
    let _daemon = dynplug_tests::Daemon::start(
        &bus,
        plugins.path(),
        "server:\n  enabled: true\n  port: 0\nplugins:\n  text:\n    settings:\n      mode: lower\n",
    );
    let mut cmd = dynplug_tests::tool("dynplugctl");
    cmd.args(["--address", bus.address(), "--json", "info", "text"]);
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "{out}{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(info["settings_schema"].as_str().unwrap()).unwrap();
    assert_eq!(schema["properties"]["mode"]["enum"][2], "reverse", "{info}");
    let view: serde_json::Value = serde_json::from_str(&bus.api_get("/plugins/text")).unwrap();
    assert_eq!(
        view["data"]["settings_schema"]["additionalProperties"], false,
        "{view}"
    );
}

#[test]
fn a_schema_that_is_not_one_refuses_the_plugin() {
    let plugins = PluginDir::new();
    let file = plugins.add_c(
        "tests/fixtures/c/marked.c",
        "marked.so",
        &["SCHEMA=\"{\\\"type\\\": \\\"no-such-type\\\"}\""],
    );
    let e = refusal(&file);
    assert!(matches!(e, LoadError::BadMetadata { .. }), "{e:?}");
    assert!(e.to_string().contains("not a valid JSON Schema"), "{e}");
}

/// A plugins directory with `marked`, which creates `loaded` in the returned directory
/// when its initialiser runs.
fn leaving_a_mark() -> (PluginDir, tempfile::TempDir) {
    let plugins = PluginDir::new();
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("loaded");
    plugins.add_c(
        "tests/fixtures/c/marked.c",
        "marked.so",
        &[&marker_define(&marker)],
    );
    (plugins, scratch)
}

#[tokio::test(flavor = "multi_thread")]
async fn lazy_loading_lists_from_metadata_and_loads_on_first_call() {
    let (plugins, scratch) = leaving_a_mark();
    let marker = scratch.path().join("loaded");
    plugins.add_c(
        "tests/fixtures/c/marked.c",
        "crash.so",
        &["ABORT_ON_LOAD", "PLUGIN_NAME=\"crash\""],
    );
    let state = tempfile::tempdir().unwrap();
    let m = manager_with_probe(plugins.path(), state.path(), "lazy_load: true\n").await;
    // Both listed from their sections; neither loaded anywhere, so nothing ran.
    assert_eq!(m.names(), ["crash", "marked"]);
    let info = m.info("marked").unwrap();
    assert_eq!(info.status, dynplug_core::PluginStatus::Pending);
    assert!(
        !marker.exists(),
        "a lazily listed plugin's initialiser ran at start"
    );
    // The first call loads it (after its probe) and answers.
    assert_eq!(m.execute("marked", "x".into()).await.unwrap(), "x");
    assert!(marker.exists());
    assert!(m.info("marked").unwrap().loaded());
    // One whose initialiser crashes fails its first call in the probe; the daemon lives.
    let e = m
        .execute("crash", "x".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("SIGABRT"), "{e}");
    assert_eq!(m.execute("marked", "y".into()).await.unwrap(), "y");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_lazy_loading_plugins_are_loaded_at_start() {
    let (plugins, scratch) = leaving_a_mark();
    let marker = scratch.path().join("loaded");
    let state = tempfile::tempdir().unwrap();
    let m = manager_with_probe(plugins.path(), state.path(), "").await;
    assert!(m.info("marked").unwrap().loaded());
    assert!(marker.exists());
}
