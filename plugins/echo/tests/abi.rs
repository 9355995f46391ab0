//! The built `echo` library, loaded and called through the real ABI.

use dynplug_core::testkit::TestHost;

#[test]
fn loads_and_echoes_through_the_abi() {
    let host = TestHost::load(TestHost::built("dynplug_echo")).expect("loads as dynplugd loads it");
    assert_eq!(
        (host.name(), host.abi_version(), host.is_service()),
        ("echo", 2, false)
    );
    assert_eq!(host.version(), env!("CARGO_PKG_VERSION"));
    assert_eq!(host.execute("héllo").unwrap(), "héllo");
    assert_eq!(host.execute("").unwrap(), "");
}
