//! The built `hash` library through the real ABI.

use dynplug_core::testkit::TestHost;

#[test]
fn sha256_through_the_abi() {
    let host = TestHost::load(TestHost::built("dynplug_hash")).expect("loads");
    assert_eq!(
        host.execute("").unwrap(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}
