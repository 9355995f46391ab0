//! The daemon installs plugins from a registry: `dynplugctl install` against the real
//! `docker-registry` on loopback (started as in `oci.rs`; SKIP where it is not
//! installed, `.ci/run` installs it), the daemon enforcing signatures.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dynplug_tests::{tool, wait_with_deadline, Daemon, PluginDir, PrivateBus};

use crate::oci::{listing, push, Hostile, Plugins, Registry, PLUGIN};

/// Exit codes of dynplugctl (ctl/src/exit.rs).
const NOT_FOUND: i32 = 3;
const ACCESS_DENIED: i32 = 4;
const SIGNATURE_REFUSED: i32 = 12;
const REGISTRY_UNREACHABLE: i32 = 13;
const CANCELLED: i32 = 10;

/// A daemon on `bus` over `plugins`, enforcing signatures by the test keys.
fn enforcing_daemon(bus: &PrivateBus, plugins: &Path, p: &Plugins) -> Daemon {
    Daemon::start(
        bus,
        plugins,
        &format!(
            "trust:\n  signatures: enforcing\n  keys_dir: {}\n",
            p.keys.display()
        ),
    )
}

/// `dynplugctl --json ARGS` on `bus` (within the deadline); (exit code, stdout+stderr).
fn ctl(bus: &PrivateBus, args: &[&str]) -> (i32, String) {
    let child = tool("dynplugctl")
        .args(["--address", bus.address(), "--json", "--no-ask-password"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dynplugctl");
    let out = wait_with_deadline(child, &format!("dynplugctl {args:?}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn execute(bus: &PrivateBus, input: &str) -> String {
    bus.manager_call("Execute", "ss", &[PLUGIN, input])
}

/// Plain HTTP to the loopback test registry.
fn http(reference: String) -> String {
    format!("http://{reference}")
}

/// Publishes version 1.0.0 and 1.2.0 of the demo plugin, both signed.
fn publish_both(p: &Plugins, reg: &Registry) {
    for (file, tag) in [(&p.v1, "1.0.0"), (&p.v2, "1.2.0")] {
        push(
            file,
            Some(&p.key),
            &reg.reference(&format!("dynplug/ocidemo:{tag}")),
            &[],
        );
    }
}

#[test]
fn install_by_tag_and_by_digest_through_dynplugctl_then_the_plugin_answers() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let p = Plugins::build();
    push(
        &p.v1,
        Some(&p.key),
        &reg.reference("dynplug/ocidemo:1.0.0"),
        &[],
    );
    let d2 = push(
        &p.v2,
        Some(&p.key),
        &reg.reference("dynplug/ocidemo:1.2.0"),
        &[],
    );
    let plugins = PluginDir::new();
    let bus = PrivateBus::start();
    let daemon = enforcing_daemon(&bus, plugins.path(), &p);

    let (code, out) = ctl(
        &bus,
        &["install", &http(reg.reference("dynplug/ocidemo:1.0.0"))],
    );
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    assert!(
        out.contains(r#""version":"1.0.0""#) && out.contains("verified (key build)"),
        "{out}"
    );
    assert_eq!(listing(plugins.path()), ["ocidemo.so", "ocidemo.so.sig"]);
    assert!(
        execute(&bus, "hello").contains("v1:hello"),
        "{}",
        daemon.log()
    );

    // By digest: the other version replaces it, and the first is kept for rollback.
    let by_digest = http(reg.reference(&format!("dynplug/ocidemo@{d2}")));
    let (code, out) = ctl(&bus, &["install", &by_digest]);
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    assert!(out.contains(&d2), "{out}");
    assert!(
        execute(&bus, "hello").contains("v2:hello"),
        "{}",
        daemon.log()
    );
    assert_eq!(listing(plugins.path()), ["ocidemo.so", "ocidemo.so.sig"]);

    let (code, out) = ctl(&bus, &["installed"]);
    assert_eq!(code, 0, "{out}");
    let rows: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(rows[0]["name"], PLUGIN, "{out}");
    assert_eq!(rows[0]["version"], "1.2.0", "{out}");
    assert_eq!(rows[0]["digest"], d2.as_str(), "{out}");
    assert_eq!(rows[0]["reference"], by_digest.as_str(), "{out}");
    assert_eq!(rows[0]["previous_version"], "1.0.0", "{out}");
}

#[test]
fn an_unsigned_artifact_is_refused_under_enforcing_and_nothing_lands() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let p = Plugins::build();
    push(&p.v1, None, &reg.reference("dynplug/ocidemo:unsigned"), &[]);
    push(
        &p.v2,
        Some(&p.key),
        &reg.reference("dynplug/ocidemo:1.2.0"),
        &[],
    );
    let plugins = PluginDir::new();
    let bus = PrivateBus::start();
    let daemon = enforcing_daemon(&bus, plugins.path(), &p);

    let (code, out) = ctl(
        &bus,
        &["install", &http(reg.reference("dynplug/ocidemo:unsigned"))],
    );
    assert_eq!(code, SIGNATURE_REFUSED, "{out}\n{}", daemon.log());
    assert!(out.contains("signature_refused"), "{out}");
    assert!(
        listing(plugins.path()).is_empty(),
        "{:?}",
        listing(plugins.path())
    );

    // A registry that is not there: its own exit code, nothing lands either.
    let closed = format!(
        "http://127.0.0.1:{}/dynplug/ocidemo:1.0.0",
        crate::oci::free_port()
    );
    let (code, out) = ctl(&bus, &["install", &closed]);
    assert_eq!(code, REGISTRY_UNREACHABLE, "{out}");
    assert!(
        listing(plugins.path()).is_empty(),
        "{:?}",
        listing(plugins.path())
    );

    // The daemon goes on serving, and installs a signed one.
    let (code, out) = ctl(
        &bus,
        &["install", &http(reg.reference("dynplug/ocidemo:1.2.0"))],
    );
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    assert!(
        execute(&bus, "after").contains("v2:after"),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_user_other_than_root_may_not_install_remove_or_roll_back_without_polkit() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let p = Plugins::build();
    push(
        &p.v1,
        Some(&p.key),
        &reg.reference("dynplug/ocidemo:1.0.0"),
        &[],
    );
    let plugins = PluginDir::new();
    let bus = PrivateBus::start_open();
    let daemon = enforcing_daemon(&bus, plugins.path(), &p);
    let reference = http(reg.reference("dynplug/ocidemo:1.0.0"));
    let (code, text) = as_nobody(&bus, &["install", &reference]);
    assert_eq!(code, ACCESS_DENIED, "{text}\n{}", daemon.log());
    assert!(text.contains("org.dynplug.install"), "{text}");
    assert!(
        listing(plugins.path()).is_empty(),
        "{:?}",
        listing(plugins.path())
    );
    // Root, on the same bus, may.
    let (code, out) = ctl(&bus, &["install", &reference]);
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    assert!(execute(&bus, "x").contains("v1:x"), "{}", daemon.log());
    // Nobody may not remove or roll back what root installed either.
    for verb in ["remove", "rollback"] {
        let out = as_nobody(&bus, &[verb, PLUGIN]);
        assert_eq!(out.0, ACCESS_DENIED, "{verb}: {}", out.1);
    }
    assert_eq!(listing(plugins.path()), ["ocidemo.so", "ocidemo.so.sig"]);
    assert!(execute(&bus, "y").contains("v1:y"), "{}", daemon.log());
}

/// `dynplugctl --json ARGS` as `nobody` on `bus`; (exit code, stdout).
fn as_nobody(bus: &PrivateBus, args: &[&str]) -> (i32, String) {
    let child = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(dynplug_tests::binary("dynplugctl"))
        .args(["--address", bus.address(), "--json", "--no-ask-password"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dynplugctl as nobody");
    let out = wait_with_deadline(child, &format!("dynplugctl {args:?} as nobody"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn two_installs_of_one_plugin_at_once_both_end_and_one_wins_whole() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let p = Plugins::build();
    publish_both(&p, &reg);
    let plugins = PluginDir::new();
    let bus = PrivateBus::start();
    let daemon = enforcing_daemon(&bus, plugins.path(), &p);
    let (a, b) = (
        http(reg.reference("dynplug/ocidemo:1.0.0")),
        http(reg.reference("dynplug/ocidemo:1.2.0")),
    );
    let (first, second) = std::thread::scope(|s| {
        let one = s.spawn(|| ctl(&bus, &["install", &a]));
        let two = s.spawn(|| ctl(&bus, &["install", &b]));
        (one.join().unwrap(), two.join().unwrap())
    });
    assert_eq!(first.0, 0, "{}\n{}", first.1, daemon.log());
    assert_eq!(second.0, 0, "{}\n{}", second.1, daemon.log());
    // No staged or half-written file in plugins_dir: the plugin and its signature.
    assert_eq!(listing(plugins.path()), ["ocidemo.so", "ocidemo.so.sig"]);
    let installed = std::fs::read(plugins.path().join("ocidemo.so")).unwrap();
    let winner = if installed == std::fs::read(&p.v1).unwrap() {
        ("1.0.0", "v1:")
    } else {
        assert_eq!(
            installed,
            std::fs::read(&p.v2).unwrap(),
            "neither version, whole"
        );
        ("1.2.0", "v2:")
    };
    assert!(execute(&bus, "w").contains(winner.1), "{}", daemon.log());
    let (code, out) = ctl(&bus, &["installed"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(r#""version":"{}""#, winner.0)),
        "{out}"
    );
}

#[test]
fn rollback_swaps_back_the_kept_version_and_remove_takes_the_plugin_away() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let p = Plugins::build();
    publish_both(&p, &reg);
    let plugins = PluginDir::new();
    let bus = PrivateBus::start();
    let daemon = enforcing_daemon(&bus, plugins.path(), &p);
    // Nothing kept yet: nothing to roll back to, nothing installed to remove.
    let (code, out) = ctl(&bus, &["rollback", PLUGIN]);
    assert_eq!(code, NOT_FOUND, "{out}");
    for tag in ["1.0.0", "1.2.0"] {
        let reference = http(reg.reference(&format!("dynplug/ocidemo:{tag}")));
        let (code, out) = ctl(&bus, &["install", &reference]);
        assert_eq!(code, 0, "{out}\n{}", daemon.log());
    }
    assert!(execute(&bus, "a").contains("v2:a"), "{}", daemon.log());

    let (code, out) = ctl(&bus, &["rollback", PLUGIN]);
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    assert!(execute(&bus, "b").contains("v1:b"), "{}", daemon.log());
    assert_eq!(
        std::fs::read(plugins.path().join("ocidemo.so")).unwrap(),
        std::fs::read(&p.v1).unwrap()
    );
    assert_eq!(listing(plugins.path()), ["ocidemo.so", "ocidemo.so.sig"]);
    let (_, out) = ctl(&bus, &["installed"]);
    assert!(
        out.contains(r#""version":"1.0.0""#) && out.contains(r#""previous_version":"1.2.0""#),
        "{out}"
    );
    // And forth again: they swap.
    let (code, out) = ctl(&bus, &["rollback", PLUGIN]);
    assert_eq!(code, 0, "{out}");
    assert!(execute(&bus, "c").contains("v2:c"), "{}", daemon.log());

    let (code, out) = ctl(&bus, &["remove", PLUGIN]);
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    assert!(
        listing(plugins.path()).is_empty(),
        "{:?}",
        listing(plugins.path())
    );
    assert!(
        execute(&bus, "d").contains("no plugin named"),
        "{}",
        daemon.log()
    );
    let (code, out) = ctl(&bus, &["installed"]);
    assert_eq!((code, out.trim()), (0, "[]"));
    let (code, out) = ctl(&bus, &["remove", PLUGIN]);
    assert_eq!(code, NOT_FOUND, "{out}");
}

#[test]
fn an_install_from_a_stalling_registry_is_cancelled_and_nothing_lands() {
    let stall = Hostile::start("127.0.0.1", |_, conn, _| {
        // Holds the connection without a word until the client goes away.
        let mut buf = [0u8; 1];
        let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
        let _ = conn.read(&mut buf);
    });
    let p = Plugins::build();
    let plugins = PluginDir::new();
    let bus = PrivateBus::start();
    let daemon = enforcing_daemon(&bus, plugins.path(), &p);
    let reference = format!("http://{}/dynplug/ocidemo:1.0.0", stall.addr);
    let (code, out) = ctl(&bus, &["install", "--detach", &reference]);
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    let job: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    let id = job["id"].to_string();
    // The install is under way once the registry has its request.
    let deadline = Instant::now() + Duration::from_secs(20);
    while stall.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the stalling registry got no request from the install within 20 s\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let began = Instant::now();
    let (code, out) = ctl(&bus, &["cancel", &id]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = ctl(&bus, &["job", &id, "--wait"]);
    assert_eq!(code, CANCELLED, "{out}\n{}", daemon.log());
    // Ended by the cancel, not by the client's 30 s read deadline.
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    assert!(
        listing(plugins.path()).is_empty(),
        "{:?}",
        listing(plugins.path())
    );
    let (code, out) = ctl(&bus, &["installed"]);
    assert_eq!((code, out.trim()), (0, "[]"), "{}", daemon.log());
}
