//! The built `text` library, loaded, configured and called through the real ABI.

use dynplug_core::testkit::TestHost;

#[test]
fn settings_choose_the_transformation() {
    let host = TestHost::load(TestHost::built("dynplug_text")).expect("loads");
    assert_eq!(host.name(), "text");
    assert_eq!(host.execute("abc").unwrap(), "ABC");
    host.configure(r#"{"mode": "reverse"}"#).unwrap();
    assert_eq!(host.execute("abc").unwrap(), "cba");
    let err = host.configure(r#"{"mode": "shout"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown mode"), "{err}");
}
