//! Signed plugins: `trust.signatures` off, permissive and enforcing, with signed,
//! unsigned and tampered files, through the manager and the real daemon.

use std::path::Path;

use dynplug_core::config::Config;
use dynplug_core::signature::{keygen, sign, signature_path};
use dynplug_core::trust::TrustPolicy;
use dynplug_core::Manager;
use dynplug_tests::{run, rust_plugin, set_mode, PluginDir};

/// A plugins directory with `echo` signed, `hash` unsigned and `text` signed and then
/// changed; and a keys directory trusting the signing key as `build`.
struct Signed {
    plugins: PluginDir,
    keys: tempfile::TempDir,
    secret: String,
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    set_mode(path, 0o644);
}

fn signed() -> Signed {
    let plugins = PluginDir::new();
    let keys = tempfile::tempdir().unwrap();
    let (secret, public) = keygen().unwrap();
    write(&keys.path().join("build.pub"), &public);
    for name in ["echo", "hash", "text"] {
        plugins.add(&rust_plugin(name), &format!("{name}.so"));
    }
    let echo = plugins.path().join("echo.so");
    write(&signature_path(&echo), &sign(&echo, &secret).unwrap());
    // text: signed, then one byte appended (through a new file, as an attacker would).
    let text = plugins.path().join("text.so");
    write(&signature_path(&text), &sign(&text, &secret).unwrap());
    let mut bytes = std::fs::read(&text).unwrap();
    bytes.push(0);
    let tmp = plugins.path().join(".text.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    set_mode(&tmp, 0o644);
    std::fs::rename(&tmp, &text).unwrap();
    Signed {
        plugins,
        keys,
        secret,
    }
}

fn config(s: &Signed, mode: &str) -> Config {
    let yaml = format!(
        "trust:\n  signatures: {mode}\n  keys_dir: {}\n",
        s.keys.path().display()
    );
    dynplug_tests::test_config(s.plugins.path(), &yaml)
}

fn signature_of(m: &Manager, name: &str) -> String {
    m.info(name).unwrap().signature
}

fn failure_of(m: &Manager, file: &str) -> String {
    m.info(file).unwrap().error().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_mode_with_signed_unsigned_and_tampered_files() {
    let s = signed();
    let state = tempfile::tempdir().unwrap();
    let (m, _) = Manager::start(
        config(&s, "enforcing"),
        state.path(),
        TrustPolicy::for_current_process(),
    )
    .await
    .unwrap();
    // enforcing: only the signed, unchanged file loads.
    assert_eq!(m.names(), ["echo"]);
    assert_eq!(signature_of(&m, "echo"), "verified (key build)");
    assert!(
        failure_of(&m, "hash.so").contains("unsigned"),
        "{}",
        failure_of(&m, "hash.so")
    );
    let tampered = failure_of(&m, "text.so");
    assert!(
        tampered.contains("does not verify") && tampered.contains("enforcing"),
        "{tampered}"
    );
    assert_eq!(m.summary().unverified, 0);

    // permissive: all load; the two are marked, and counted.
    m.reload(config(&s, "permissive")).await.unwrap();
    assert_eq!(m.names(), ["echo", "hash", "text"]);
    assert!(signature_of(&m, "hash").starts_with("unsigned"));
    assert!(signature_of(&m, "text").starts_with("bad signature"));
    assert_eq!(m.summary().unverified, 2);
    assert_eq!(m.execute("hash", "abc".into()).await.unwrap().len(), 64);

    // off: nothing checked.
    m.reload(config(&s, "off")).await.unwrap();
    assert_eq!(m.summary().unverified, 0);
    assert!(signature_of(&m, "echo").starts_with("not checked"));

    // Back to enforcing: loaded files are judged again, and the two go.
    m.reload(config(&s, "enforcing")).await.unwrap();
    assert_eq!(m.names(), ["echo"]);

    // text signed again as it is now: the next reload sees the new signature file.
    let text = s.plugins.path().join("text.so");
    write(&signature_path(&text), &sign(&text, &s.secret).unwrap());
    m.reload(config(&s, "enforcing")).await.unwrap();
    assert_eq!(m.names(), ["echo", "text"]);
    assert_eq!(signature_of(&m, "text"), "verified (key build)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_directory_others_can_write_is_a_configuration_error() {
    let s = signed();
    set_mode(s.keys.path(), 0o777);
    let state = tempfile::tempdir().unwrap();
    let refused = Manager::start(
        config(&s, "enforcing"),
        state.path(),
        TrustPolicy::for_current_process(),
    )
    .await;
    match refused {
        Err(e) => assert!(e.to_string().contains("trust.keys_dir"), "{e}"),
        Ok(_) => panic!("a world-writable key directory was accepted"),
    }
}

#[test]
fn inspect_and_the_daemon_status_tell_the_verdict() {
    let s = signed();
    let state = tempfile::tempdir().unwrap();
    let config_path = state.path().join("config.yaml");
    write(
        &config_path,
        &format!(
            "trust:\n  signatures: enforcing\n  keys_dir: {}\n",
            s.keys.path().display()
        ),
    );
    for (file, needle, code) in [
        ("echo.so", "verified (key build)", 0),
        ("hash.so", "it would be refused", 1),
        ("text.so", "does not verify", 1),
    ] {
        let mut cmd = dynplug_tests::tool("dynplugd");
        cmd.arg("--config")
            .arg(&config_path)
            .arg("--inspect")
            .arg(s.plugins.path().join(file));
        let (got, out, err) = run(cmd);
        assert!(out.contains(needle), "{file}: {out}{err}");
        assert_eq!(got, code, "{file}: {out}");
    }
    // A permissive daemon says in its status how many plugins it could not verify.
    let bus = dynplug_tests::PrivateBus::start();
    let daemon = dynplug_tests::Daemon::start(
        &bus,
        s.plugins.path(),
        &format!(
            "trust:\n  signatures: permissive\n  keys_dir: {}\n",
            s.keys.path().display()
        ),
    );
    let status = daemon
        .notify
        .received()
        .iter()
        .rev()
        .find(|m| m.contains("STATUS="))
        .cloned()
        .unwrap_or_default();
    assert!(
        status.contains("3 plugins") && status.contains("2 not verified"),
        "{status}"
    );
    let details = bus.manager_call("GetPlugin", "s", &["hash"]);
    assert!(details.contains("unsigned"), "{details}");
}
