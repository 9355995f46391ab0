//! The built `heartbeat` library: its service started and stopped as dynplugd does.

use dynplug_core::testkit::TestHost;

#[test]
fn service_runs_until_stopped() {
    let host = TestHost::load(TestHost::built("dynplug_heartbeat")).expect("loads");
    assert!(host.is_service());
    host.configure(r#"{"interval_ms": 1}"#).unwrap();
    let run = host.run_service();
    let beats = |h: &TestHost| -> u64 {
        let out = h.execute("").unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["beats"].as_u64().unwrap()
    };
    while beats(&host) < 3 {
        assert!(!run.has_ended(), "the service ended on its own");
        std::thread::yield_now();
    }
    run.stop().expect("stops cleanly");
    assert!(host.execute("").unwrap().contains(r#""running": false"#));
}
