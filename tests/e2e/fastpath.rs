//! The fast call path against the real daemon: a plugin proven fast runs inline, and
//! when it then blocks, it holds one runtime worker for that call only: the bus and the
//! other plugins keep answering, its next calls go to threads and time out as usual,
//! and it loses the fast path for good.

use std::time::{Duration, Instant};

use dynplug_dbus::DynplugError;
use dynplug_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_blocking_inline_stalls_nobody_and_loses_the_fast_path() {
    let bus = PrivateBus::start();
    let plugins = PluginDir::new();
    plugins.add(&rust_plugin("fault"), "fault.so");
    plugins.add(&rust_plugin("echo"), "echo.so");
    let d = Daemon::start(
        &bus,
        plugins.path(),
        "plugins:\n  fault:\n    timeout_ms: 500\n",
    );
    let m = bus.manager_proxy().await;
    assert_eq!(
        m.get_plugin("fault").await.unwrap().call_path.as_deref(),
        Some("threads"),
        "every plugin starts on threads"
    );
    // 32 fast calls in a row promote it; on a busy machine a preempted call restarts
    // the count, so allow for more.
    let mut calls = 0;
    while m.get_plugin("fault").await.unwrap().call_path.as_deref() != Some("inline") {
        for _ in 0..32 {
            let text = format!("fast {calls}");
            assert_eq!(m.execute("fault", &text).await.unwrap(), text);
            calls += 1;
        }
        assert!(calls < 3200, "not promoted after {calls} fast calls");
    }
    // Now it blocks, inline, for 3 s (on a connection of its own).
    let marks = tempfile::tempdir().unwrap();
    let returned = marks.path().join("returned");
    let blocked = {
        let other = bus.manager_proxy().await;
        let call = format!("sleep-mark 3000 {}", returned.display());
        tokio::spawn(async move { other.execute("fault", &call).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while bus.manager_property("CallsInFlight") != "1" {
        assert!(Instant::now() < deadline, "the call never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The bus and the other plugins keep answering meanwhile.
    for _ in 0..20 {
        assert_eq!(m.execute("echo", "still").await.unwrap(), "still");
    }
    assert_eq!(m.state().await.unwrap(), "running");
    // Its own next call goes to a thread and times out as configured.
    match m.execute("fault", "sleep 2000").await {
        Err(DynplugError::Timeout(message)) => assert!(message.contains("500ms"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(
        !returned.exists(),
        "not answered while the inline call still blocked"
    );
    // The blocked call is answered when the plugin returns: past its timeout.
    match blocked.await.unwrap() {
        Err(DynplugError::Timeout(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        m.get_plugin("fault").await.unwrap().call_path.as_deref(),
        Some("threads"),
        "demoted for good"
    );
    assert!(d.log().contains("ran long"), "{}", d.log());
    for i in 0..40 {
        let text = format!("again {i}");
        assert_eq!(m.execute("fault", &text).await.unwrap(), text);
    }
    assert_eq!(
        m.get_plugin("fault").await.unwrap().call_path.as_deref(),
        Some("threads"),
        "never promoted again"
    );
}
