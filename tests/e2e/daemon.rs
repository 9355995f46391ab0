//! The real `dynplugd` on a private dbus-daemon, driven by busctl, gdbus and a zbus
//! client built from the daemon's own interface definition.

use std::path::Path;
use std::time::Duration;

use dynplug_dbus::{ManagerProxy, PluginProxy};
use dynplug_tests::{run, rust_plugin, send_signal, workspace_root, Daemon, PluginDir, PrivateBus};
use futures_util::StreamExt;

const DEST: &str = "org.dynplug.Manager";
const PATH: &str = "/org/dynplug/Manager";
const IFACE: &str = "org.dynplug.Manager";

fn busctl(bus: &PrivateBus, args: &[&str]) -> (i32, String, String) {
    let mut cmd = bus.command("busctl");
    cmd.arg("--user").args(args);
    run(cmd)
}

fn gdbus_call(bus: &PrivateBus, method: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = bus.command("gdbus");
    cmd.args([
        "call",
        "--session",
        "--dest",
        DEST,
        "--object-path",
        PATH,
        "--method",
    ])
    .arg(format!("{IFACE}.{method}"))
    .args(args);
    run(cmd)
}

async fn connect(bus: &PrivateBus) -> zbus::Connection {
    zbus::connection::Builder::address(bus.address())
        .build()
        .await
        .expect("connect to the private bus")
}

/// A manager proxy that reads properties fresh on every access (no cache lagging
/// behind PropertiesChanged signals).
async fn manager_proxy(conn: &zbus::Connection) -> ManagerProxy<'static> {
    ManagerProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .expect("manager proxy")
}

fn fault_plugins() -> PluginDir {
    let d = PluginDir::with_examples();
    d.add(&rust_plugin("fault"), "fault.so");
    d
}

#[test]
fn busctl_and_gdbus_drive_the_daemon() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::with_examples();
    let _d = Daemon::start(
        &bus,
        plugins.path(),
        "plugins:\n  text:\n    settings:\n      mode: upper\n",
    );

    let (code, out, _) = busctl(
        &bus,
        &["call", DEST, PATH, IFACE, "Execute", "ss", "text", "hello"],
    );
    assert_eq!((code, out.trim()), (0, r#"s "HELLO""#));
    let (code, out, _) = busctl(
        &bus,
        &["--json=short", "call", DEST, PATH, IFACE, "ListPlugins"],
    );
    assert_eq!(code, 0);
    for name in ["echo", "hash", "heartbeat", "json", "rot13", "text"] {
        assert!(
            out.contains(&format!("\"{name}\"")),
            "{name} missing in {out}"
        );
    }
    let (code, out, _) = busctl(&bus, &["tree", DEST]);
    assert_eq!(code, 0);
    assert!(out.contains("/org/dynplug/Manager/plugins/rot13"), "{out}");
    let (_, out, _) = busctl(
        &bus,
        &[
            "get-property",
            DEST,
            PATH,
            IFACE,
            "PluginCount",
            "State",
            "Version",
        ],
    );
    assert_eq!(
        out,
        format!("u 6\ns \"running\"\ns \"{}\"\n", env!("CARGO_PKG_VERSION"))
    );
    let (_, out, _) = busctl(
        &bus,
        &[
            "get-property",
            DEST,
            "/org/dynplug/Manager/plugins/text",
            "org.dynplug.Plugin",
            "Calls",
            "Enabled",
        ],
    );
    assert_eq!(out, "t 1\nb true\n");
    let (code, out, _) = busctl(
        &bus,
        &[
            "call",
            DEST,
            "/org/dynplug/Manager/plugins/rot13",
            "org.dynplug.Plugin",
            "Execute",
            "s",
            "abc",
        ],
    );
    assert_eq!((code, out.trim()), (0, r#"s "nop""#));

    // Named errors, as a third-party client sees them.
    let (code, _, err) = gdbus_call(&bus, "Execute", &["nope", "x"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("org.dynplug.Error.NotFound") && err.contains("no plugin named `nope`"),
        "{err}"
    );
    let (code, out, _) = gdbus_call(&bus, "DisablePlugin", &["echo"]);
    assert_eq!((code, out.trim()), (0, "(true,)"));
    let (_, _, err) = gdbus_call(&bus, "Execute", &["echo", "x"]);
    assert!(err.contains("org.dynplug.Error.Disabled"), "{err}");
    let (_, out, _) = gdbus_call(&bus, "EnablePlugins", &["['echo', 'echo', 'ghost']"]);
    assert!(out.contains("('echo', true, 'changed'), ('echo', true, 'unchanged'), ('ghost', false, 'no plugin named `ghost`')"), "{out}");
    let (_, out, _) = gdbus_call(&bus, "GetPlugin", &["hash"]);
    assert!(
        out.contains("'Name': <'hash'>") && out.contains("'AbiVersion': <uint32 2>"),
        "{out}"
    );
}

/// Extracts the `<interface name="NAME">…</interface>` element from introspection XML.
fn interface_xml(xml: &str, name: &str) -> String {
    let start = xml
        .find(&format!("<interface name=\"{name}\">"))
        .unwrap_or_else(|| panic!("{name} not in {xml}"));
    let end =
        xml[start..].find("</interface>").expect("closing tag") + start + "</interface>".len();
    xml[start..end].to_owned()
}

#[test]
fn served_interfaces_match_the_checked_in_xml() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("echo"), "echo.so");
    let _d = Daemon::start(&bus, plugins.path(), "");
    let (_, manager_xml, _) = busctl(&bus, &["introspect", "--xml-interface", DEST, PATH]);
    let (_, plugin_xml, _) = busctl(
        &bus,
        &[
            "introspect",
            "--xml-interface",
            DEST,
            "/org/dynplug/Manager/plugins/echo",
        ],
    );
    let started = bus.manager_call("StartJob", "ss", &["echo", "x"]);
    let job = started
        .trim()
        .trim_start_matches("o ")
        .trim_matches('"')
        .to_owned();
    let (_, job_xml, _) = busctl(&bus, &["introspect", "--xml-interface", DEST, &job]);
    let served = format!(
        "<!-- The D-Bus interfaces of dynplugd. Checked by tests/e2e/daemon.rs against what the\n     daemon serves; regenerate with DYNPLUG_BLESS=1 cargo test. -->\n<node>\n{}\n{}\n{}\n</node>\n",
        interface_xml(&manager_xml, "org.dynplug.Manager"),
        interface_xml(&plugin_xml, "org.dynplug.Plugin"),
        interface_xml(&job_xml, "org.dynplug.Job")
    );
    let checked_in = workspace_root().join("daemon/org.dynplug.Manager.xml");
    if std::env::var_os("DYNPLUG_BLESS").is_some() {
        std::fs::write(&checked_in, &served).expect("write xml");
    }
    let expected =
        std::fs::read_to_string(&checked_in).expect("daemon/org.dynplug.Manager.xml exists");
    assert_eq!(
        served, expected,
        "the served interface drifted from daemon/org.dynplug.Manager.xml"
    );
}

/// The contract crate's proxies against the real server: every method and property of
/// `org.dynplug.Manager` and `org.dynplug.Plugin` answers with the types the contract
/// declares, and every named error decodes as `DynplugError`.
#[tokio::test(flavor = "multi_thread")]
async fn the_contract_proxies_match_the_server() {
    use dynplug_dbus::{plugin_path, DynplugError};
    let bus = PrivateBus::start();
    let plugins = PluginDir::with_examples();
    let _d = Daemon::start(&bus, plugins.path(), "");
    let conn = connect(&bus).await;
    let m = manager_proxy(&conn).await;

    let rows = m.list_plugins().await.unwrap();
    let hash = rows.iter().find(|r| r.name == "hash").expect("hash listed");
    assert!(hash.enabled && hash.loaded && hash.path.ends_with("hash.so"));
    let details = m.get_plugin("hash").await.unwrap();
    assert_eq!(details.name.as_deref(), Some("hash"));
    assert_eq!(details.state.as_deref(), Some("loaded"));
    assert_eq!(details.isolation.as_deref(), Some("in-process"));
    assert_eq!(details.abi_version, Some(2));
    assert!(details.sandbox.is_some_and(|s| s.len() == 5));
    assert_eq!(m.execute("echo", "contract").await.unwrap(), "contract");
    assert!(m.disable_plugin("echo").await.unwrap());
    assert!(!m.disable_plugin("echo").await.unwrap());
    assert!(matches!(
        m.execute("echo", "x").await,
        Err(DynplugError::Disabled(_))
    ));
    assert!(m.enable_plugin("echo").await.unwrap());
    let bulk = m.disable_plugins(&["json", "nope"]).await.unwrap();
    assert_eq!(
        (bulk[0].name.as_str(), bulk[0].ok, bulk[0].message.as_str()),
        ("json", true, "changed")
    );
    assert!(!bulk[1].ok && bulk[1].message.contains("no plugin named"));
    assert!(m.enable_plugins(&["json"]).await.unwrap()[0].ok);
    assert!(matches!(
        m.get_plugin("nope").await,
        Err(DynplugError::NotFound(_))
    ));
    assert!(m.reload().await.unwrap().contains("no changes"));

    assert_eq!(m.version().await.unwrap(), env!("CARGO_PKG_VERSION"));
    assert_eq!(m.state().await.unwrap(), "running");
    assert_eq!(m.plugin_count().await.unwrap(), 6);
    assert_eq!(m.enabled_count().await.unwrap(), 6);
    assert_eq!(m.failed_count().await.unwrap(), 0);
    assert_eq!(m.last_reload_error().await.unwrap(), "");
    assert!(m.config_path().await.unwrap().ends_with("config.yaml"));
    assert!(m.start_time_usec().await.unwrap() > 0);
    assert_eq!(m.api_address().await.unwrap(), "");
    assert!(m.cpu_usage_usec().await.is_ok());
    assert!(m.memory_rss_bytes().await.unwrap() > 0);
    assert_eq!(m.calls_in_flight().await.unwrap(), 0);

    let p = PluginProxy::builder(&conn)
        .path(plugin_path("hash"))
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap();
    assert_eq!(
        p.execute("abc").await.unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(p.name().await.unwrap(), "hash");
    assert!(!p.version().await.unwrap().is_empty());
    assert!(!p.description().await.unwrap().is_empty());
    assert!(p.path().await.unwrap().ends_with("hash.so"));
    assert!(p.enabled().await.unwrap() && p.loaded().await.unwrap());
    assert_eq!(p.error().await.unwrap(), "");
    assert_eq!(p.service_state().await.unwrap(), "");
    assert_eq!(p.calls().await.unwrap(), 1);
    assert_eq!(p.errors().await.unwrap(), 0);
    assert_eq!(p.timeouts().await.unwrap(), 0);
    assert_eq!(p.last_error().await.unwrap(), "");
    assert!(p.last_duration_usec().await.is_ok());

    // Jobs: StartJob, ListJobs and every property of org.dynplug.Job.
    let path = m.start_job("hash", "abc").await.unwrap();
    let j = dynplug_dbus::JobProxy::builder(&conn)
        .path(path.clone())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap();
    let mut finished = j.receive_finished().await.unwrap();
    if j.state().await.unwrap() == "running" {
        finished.next().await;
    }
    assert_eq!(j.state().await.unwrap(), "succeeded");
    assert_eq!(j.plugin().await.unwrap(), "hash");
    assert_eq!(
        (j.progress().await.unwrap(), j.status_text().await.unwrap()),
        (1.0, String::new())
    );
    assert!(j.output().await.unwrap().starts_with("ba7816bf"));
    assert_eq!(
        (j.error().await.unwrap(), j.error_name().await.unwrap()),
        (String::new(), String::new())
    );
    assert!(j.finished_usec().await.unwrap() >= j.started_usec().await.unwrap());
    assert!(
        j.cancel().await.is_ok(),
        "cancelling an ended job changes nothing"
    );
    assert_eq!(m.list_jobs().await.unwrap(), vec![path]);
    assert!(matches!(
        m.start_job("nope", "x").await,
        Err(DynplugError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn signals_and_property_changes_reach_clients() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::with_examples();
    let mut d = Daemon::start(&bus, plugins.path(), "");
    let conn = connect(&bus).await;
    let manager = manager_proxy(&conn).await;
    let plugin = PluginProxy::builder(&conn)
        .path("/org/dynplug/Manager/plugins/hash")
        .build()
        .await
        .unwrap();
    let mut state_changes = manager.receive_plugin_state_changed().await.unwrap();
    let mut reloads = manager.receive_config_reloaded().await.unwrap();
    let mut enabled_changes = plugin.receive_enabled_changed().await;
    assert!(plugin.enabled().await.unwrap());
    let _ = enabled_changes.next().await; // the initial value

    // Another client (busctl) disables the plugin; this client hears about it.
    let (code, _, _) = busctl(
        &bus,
        &["call", DEST, PATH, IFACE, "DisablePlugin", "s", "hash"],
    );
    assert_eq!(code, 0);
    let signal = tokio::time::timeout(Duration::from_secs(10), state_changes.next())
        .await
        .unwrap()
        .unwrap();
    let args = signal.args().unwrap();
    assert_eq!((args.name(), *args.enabled()), (&"hash", false));
    let change = tokio::time::timeout(Duration::from_secs(10), enabled_changes.next())
        .await
        .unwrap()
        .unwrap();
    assert!(!change.get().await.unwrap());

    d.reload();
    let signal = tokio::time::timeout(Duration::from_secs(10), reloads.next())
        .await
        .unwrap()
        .unwrap();
    assert!(*signal.args().unwrap().success());

    // Objects come and go with the files.
    std::fs::remove_file(plugins.path().join("rot13.so")).unwrap();
    let summary = manager.reload().await.unwrap();
    assert_eq!(summary, "removed: rot13");
    let (_, tree, _) = busctl(&bus, &["tree", DEST]);
    assert!(
        !tree.contains("rot13") && tree.contains("/plugins/json"),
        "{tree}"
    );
}

#[test]
fn notify_protocol_sequence() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::with_examples();
    let mut d = Daemon::start(&bus, plugins.path(), "");
    let ready = d.notify.received().last().unwrap().clone();
    assert!(
        ready.contains("READY=1") && ready.contains("STATUS=6 plugins, 6 enabled, 0 failed"),
        "{ready}"
    );
    send_signal(d.pid(), libc::SIGHUP);
    let reloading = d.notify.wait_for("RELOADING=1", Duration::from_secs(10));
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(usec.parse::<u64>().unwrap() > 0);
    d.notify.wait_for("READY=1", Duration::from_secs(10));
    assert_eq!(d.stop_with(libc::SIGTERM), Some(0));
    let all = d.notify.received().join("|");
    let order: Vec<usize> = ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
        .iter()
        .scan(0, |from, needle| {
            let at = all[*from..].find(needle).map(|i| i + *from)?;
            *from = at + 1;
            Some(at)
        })
        .collect();
    assert_eq!(
        order.len(),
        4,
        "sequence READY, RELOADING, READY, STOPPING not found in {all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_config_on_reload_keeps_the_old_one() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::with_examples();
    let mut d = Daemon::start(
        &bus,
        plugins.path(),
        "plugins:\n  text:\n    settings:\n      mode: reverse\n",
    );
    let conn = connect(&bus).await;
    let manager = manager_proxy(&conn).await;
    for bad in [
        "plugins: [\n",
        "plugins:\n  text:\n    enabeld: false\n",
        "log_level: loud\n",
        "\u{1}garbage: [\n",
    ] {
        std::fs::write(d.config_path(), bad).unwrap();
        d.reload();
        let error = manager.last_reload_error().await.unwrap();
        assert!(error.contains("config.yaml"), "{bad:?}: {error}");
        assert_eq!(
            manager.execute("text", "abc").await.unwrap(),
            "cba",
            "old settings stay"
        );
        assert_eq!(manager.state().await.unwrap(), "running");
        let err = manager.reload().await.unwrap_err();
        assert!(
            err.to_string().contains("org.dynplug.Error.Config")
                || format!("{err:?}").contains("Config"),
            "{err:?}"
        );
    }
    std::fs::write(
        d.config_path(),
        "plugins:\n  text:\n    settings:\n      mode: upper\n",
    )
    .unwrap();
    d.reload();
    assert_eq!(manager.last_reload_error().await.unwrap(), "");
    assert_eq!(manager.execute("text", "abc").await.unwrap(), "ABC");
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_storm_under_load_loses_no_call() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::with_examples();
    let mut d = Daemon::start(&bus, plugins.path(), "");
    let conn = connect(&bus).await;
    let mut workers = Vec::new();
    for w in 0..8 {
        let conn = conn.clone();
        workers.push(tokio::spawn(async move {
            let manager = manager_proxy(&conn).await;
            for i in 0..100 {
                let input = format!("{w}-{i}");
                assert_eq!(manager.execute("echo", &input).await.unwrap(), input);
            }
        }));
    }
    for _ in 0..10 {
        d.reload();
    }
    for w in workers {
        w.await
            .expect("every call answered correctly during reloads");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hung_plugin_blocks_nobody_and_sigterm_drains_calls() {
    let bus = PrivateBus::start();
    let plugins = fault_plugins();
    let mut d = Daemon::start(
        &bus,
        plugins.path(),
        "plugins:\n  fault:\n    timeout_ms: 1500\n",
    );
    let conn = connect(&bus).await;
    let manager = manager_proxy(&conn).await;

    let marks = tempfile::tempdir().unwrap();
    let returned = marks.path().join("returned");
    let hung = {
        let manager = manager.clone();
        let call = format!("sleep-mark 10000 {}", returned.display());
        tokio::spawn(async move { manager.execute("fault", &call).await })
    };
    for i in 0..20 {
        assert_eq!(
            manager.execute("echo", &i.to_string()).await.unwrap(),
            i.to_string()
        );
    }
    let err = hung.await.unwrap().unwrap_err();
    assert!(format!("{err:?}").contains("Timeout"), "{err:?}");
    // Answered at its timeout, while the plugin still sleeps.
    assert!(!returned.exists(), "the caller waited for the hung plugin");
    let err = manager.execute("fault", "panic").await.unwrap_err();
    assert!(
        format!("{err:?}").contains("ExecutionFailed")
            && err.to_string().contains("requested panic"),
        "{err:?}"
    );

    // Calls in flight at SIGTERM finish; the daemon exits 0.
    let mut in_flight = Vec::new();
    for _ in 0..4 {
        let manager = manager.clone();
        in_flight.push(tokio::spawn(async move {
            manager.execute("fault", "sleep 300").await
        }));
    }
    while manager.calls_in_flight().await.unwrap() < 4 {
        tokio::task::yield_now().await;
    }
    send_signal(d.pid(), libc::SIGTERM);
    for call in in_flight {
        assert_eq!(call.await.unwrap().unwrap(), "woke up");
    }
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(d.notify.received().iter().any(|m| m.contains("STOPPING=1")));
}

#[test]
fn startup_errors_are_clear() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    let (code, err) = bus.run_daemon_once(plugins.path(), "server:\n  prot: 1\n", &[]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("c.yaml: server: unknown field `prot`"),
        "{err}"
    );

    // A second daemon on the same bus refuses to start.
    let _first = Daemon::start(&bus, plugins.path(), "");
    let (code, err) = bus.run_daemon_once(plugins.path(), "", &[]);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("already owned"), "{err}");
}

#[test]
fn a_python_dbus_client_works() {
    let python = Path::new("/usr/bin/python3");
    let has_dbus = std::process::Command::new(python)
        .args(["-c", "import dbus"])
        .status()
        .is_ok_and(|s| s.success());
    // A missing prerequisite fails the test, never passes it silently.
    assert!(
        has_dbus,
        "this test needs python3-dbus for /usr/bin/python3 (apt-get install python3-dbus)"
    );
    let bus = PrivateBus::start();
    let plugins = PluginDir::with_examples();
    let _d = Daemon::start(&bus, plugins.path(), "");
    let script = r#"
import dbus, os
bus = dbus.bus.BusConnection(os.environ["DBUS_SESSION_BUS_ADDRESS"])
m = dbus.Interface(bus.get_object("org.dynplug.Manager", "/org/dynplug/Manager"), "org.dynplug.Manager")
print(m.Execute("text", "hello"))
print(sorted(str(p[0]) for p in m.ListPlugins()))
props = dbus.Interface(bus.get_object("org.dynplug.Manager", "/org/dynplug/Manager"), "org.freedesktop.DBus.Properties")
print(props.Get("org.dynplug.Manager", "State"))
try:
    m.Execute("nope", "x")
except dbus.exceptions.DBusException as e:
    print(e.get_dbus_name())
"#;
    let mut cmd = bus.command(python);
    cmd.args(["-c", script]);
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "HELLO\n['echo', 'hash', 'heartbeat', 'json', 'rot13', 'text']\nrunning\norg.dynplug.Error.NotFound\n"
    );
}

/// docs/dbus-api.md names every property the daemon serves and every key of
/// `GetPlugin`'s dictionary.
#[tokio::test(flavor = "multi_thread")]
async fn the_dbus_reference_lists_every_property_and_key() {
    let root = dynplug_tests::workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/dbus-api.md")).unwrap();
    let xml = std::fs::read_to_string(root.join("daemon/org.dynplug.Manager.xml")).unwrap();
    let properties: Vec<&str> = xml
        .split("<property name=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(properties.len() > 20, "{properties:?}");
    for p in &properties {
        assert!(
            doc.contains(&format!("`{p}`")),
            "docs/dbus-api.md lacks property {p}"
        );
    }
    let bus = PrivateBus::start();
    let plugins = PluginDir::with_examples();
    let _d = Daemon::start(&bus, plugins.path(), "");
    let conn = connect(&bus).await;
    let reply = conn
        .call_method(
            Some("org.dynplug.Manager"),
            "/org/dynplug/Manager",
            Some("org.dynplug.Manager"),
            "GetPlugin",
            &("hash",),
        )
        .await
        .unwrap();
    let keys: std::collections::HashMap<String, zbus::OwnedVariant> =
        reply.body().deserialize().unwrap();
    assert!(keys.len() >= 28, "{:?}", keys.keys());
    let row = doc
        .lines()
        .find(|l| l.starts_with("| `GetPlugin"))
        .expect("the GetPlugin row");
    for key in keys.keys() {
        assert!(
            row.contains(key.as_str()),
            "docs/dbus-api.md's GetPlugin row lacks {key}"
        );
    }
}
