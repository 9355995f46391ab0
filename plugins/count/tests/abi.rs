//! The built `count` library, through the real ABI with a recording host: progress,
//! logs, the event, and cancellation half way.

use dynplug_core::testkit::TestHost;
use dynplug_core::Level;

fn host() -> TestHost {
    TestHost::load(TestHost::built("dynplug_count")).expect("loads as dynplugd loads it")
}

#[test]
fn counts_with_progress_logs_and_an_event() {
    let host = host();
    assert_eq!((host.name(), host.abi_version()), ("count", 2));
    assert_eq!(host.execute("20").unwrap(), "20");
    let progress = host.progress();
    assert_eq!(progress.len(), 21, "a start and one report per step");
    assert_eq!(progress.last().unwrap(), &(1.0, "20 of 20".to_string()));
    assert!(progress.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(
        host.logs(),
        vec![
            (Level::Info, "step 10 of 20".to_string()),
            (Level::Info, "step 20 of 20".to_string())
        ]
    );
    assert_eq!(
        host.events(),
        vec![("counted".to_string(), "{\"n\":20}".to_string())]
    );
    assert!(host
        .execute("0")
        .unwrap_err()
        .to_string()
        .contains("1 to 100000"));
}

#[test]
fn stops_half_way_when_cancelled() {
    let host = host();
    host.cancel_at_progress(0.5);
    let err = host.execute("10").unwrap_err().to_string();
    assert!(err.contains("cancelled at step 6 of 10"), "{err}");
    assert!(
        host.events().is_empty(),
        "no `counted` after a cancellation"
    );
    // From another thread, as a caller giving up would.
    host.clear();
    let recorder = host.recorder();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(250));
        recorder.cancel();
    });
    let began = std::time::Instant::now();
    assert!(host.execute("100").is_err());
    assert!(began.elapsed() < std::time::Duration::from_secs(2));
    canceller.join().unwrap();
}
