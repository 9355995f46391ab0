//! The built `json` library through the real ABI.

use dynplug_core::testkit::TestHost;

#[test]
fn pretty_prints_and_picks() {
    let host = TestHost::load(TestHost::built("dynplug_json")).expect("loads");
    assert_eq!(host.execute("[1]").unwrap(), "[\n  1\n]");
    assert!(host
        .execute("{")
        .unwrap_err()
        .to_string()
        .contains("invalid JSON"));
    host.configure(r#"{"pick": "/a"}"#).unwrap();
    assert_eq!(host.execute(r#"{"a": 5}"#).unwrap(), "5");
}
