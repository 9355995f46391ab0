//! The registry cache: a start probes only new or changed files; a corrupt cache is
//! ignored and rebuilt.

use std::path::Path;

use dynplug_core::Manager;
use dynplug_tests::{manager_with_probe, PluginDir};

async fn start(plugins: &Path, state: &Path) -> Manager {
    manager_with_probe(plugins, state, "").await
}

fn failure(m: &Manager, file: &str) -> String {
    m.info(file).unwrap().error().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_probes_only_new_or_changed_files() {
    let plugins = PluginDir::new();
    plugins.add_c("tests/fixtures/c/marked.c", "good.so", &["NO_METADATA"]);
    let crashing = plugins.add_c(
        "tests/fixtures/c/marked.c",
        "crash.so",
        &["NO_METADATA", "ABORT_ON_LOAD", "PLUGIN_NAME=\"crash\""],
    );
    let state = tempfile::tempdir().unwrap();
    let cache = state.path().join("registry.cache");

    let m = start(plugins.path(), state.path()).await;
    assert_eq!(m.names(), ["marked"]);
    let first = failure(&m, "crash.so");
    assert!(
        first.contains("SIGABRT") && !first.contains("remembered"),
        "{first}"
    );
    m.shutdown(std::time::Duration::from_secs(1)).await;
    drop(m);
    let text = std::fs::read_to_string(&cache).unwrap();
    assert!(
        text.contains("good.so") && text.contains("crash.so"),
        "{text}"
    );

    // Warm: the crashing file is not probed again (its refusal is remembered), the
    // good one loads as before.
    let m = start(plugins.path(), state.path()).await;
    assert_eq!(m.names(), ["marked"]);
    assert!(
        failure(&m, "crash.so").contains("remembered"),
        "{}",
        failure(&m, "crash.so")
    );
    m.shutdown(std::time::Duration::from_secs(1)).await;
    drop(m);

    // A changed file (new modification time) is probed again.
    let now = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&crashing)
        .unwrap()
        .set_modified(now)
        .unwrap();
    let m = start(plugins.path(), state.path()).await;
    assert!(!failure(&m, "crash.so").contains("remembered"));
    m.shutdown(std::time::Duration::from_secs(1)).await;
    drop(m);

    // A corrupt cache is ignored (everything probed again) and rebuilt.
    std::fs::write(&cache, "{ garbage").unwrap();
    let m = start(plugins.path(), state.path()).await;
    assert_eq!(m.names(), ["marked"]);
    assert!(!failure(&m, "crash.so").contains("remembered"));
    m.shutdown(std::time::Duration::from_secs(1)).await;
    let text = std::fs::read_to_string(&cache).unwrap();
    assert!(
        text.starts_with("{\"format\":\"dynplug-registry-1\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn new_files_are_probed_in_batches_and_a_crash_costs_only_its_own_file() {
    let scratch = tempfile::tempdir().unwrap();
    let good = scratch.path().join("good.so");
    let crash = scratch.path().join("crash.so");
    dynplug_tests::compile_c(
        "tests/fixtures/c/marked.c",
        &good,
        &["NO_METADATA", "PLUGIN_NAME=\"p0000\""],
    );
    dynplug_tests::compile_c(
        "tests/fixtures/c/marked.c",
        &crash,
        &["NO_METADATA", "ABORT_ON_LOAD", "PLUGIN_NAME=\"p0000\""],
    );
    // p0001 and p0005 abort while loading; the batches they are in go on after them.
    let plugins = PluginDir::new();
    plugins.add_renamed_copies(&good, 0, 1);
    plugins.add_renamed_copies(&crash, 1, 1);
    plugins.add_renamed_copies(&good, 2, 3);
    plugins.add_renamed_copies(&crash, 5, 1);
    plugins.add_renamed_copies(&good, 6, 4);
    let state = tempfile::tempdir().unwrap();
    let m = start(plugins.path(), state.path()).await;
    assert_eq!(
        m.names(),
        ["p0000", "p0002", "p0003", "p0004", "p0006", "p0007", "p0008", "p0009"]
    );
    for crashed in ["p0001.so", "p0005.so"] {
        assert!(
            failure(&m, crashed).contains("SIGABRT"),
            "{}",
            failure(&m, crashed)
        );
    }
    assert_eq!(m.execute("p0009", "ok".into()).await.unwrap(), "ok");
}
