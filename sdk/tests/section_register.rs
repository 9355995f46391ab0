//! The older form, `register_plugin!(T, metadata { ... })` beside hand-written trait
//! methods, keeps compiling and writes the same section as `#[plugin(...)]`
//! (tests/section_attribute.rs).

mod common;

use dynplug_sdk::{abi, register_plugin, Plugin, PluginResult};

/// The plugin under test.
#[derive(Default)]
pub struct Same;

impl Same {
    /// The instance.
    pub fn new() -> Self {
        Same
    }
}

impl Plugin for Same {
    fn name(&self) -> &str {
        "same"
    }
    fn version(&self) -> &str {
        "2.0.1"
    }
    fn description(&self) -> &str {
        "declared once"
    }
    fn is_service(&self) -> bool {
        true
    }
    fn execute(&self, input: &str) -> PluginResult<String> {
        Ok(input.to_owned())
    }
}

register_plugin!(
    Same,
    metadata {
        name: "same",
        version: "2.0.1",
        description: "declared once",
        service: true,
        settings_schema: r#"{"type": "object"}"#,
        sandbox: "network",
    }
);

#[test]
fn register_plugin_with_metadata_writes_the_same_section() {
    assert_eq!(
        String::from_utf8_lossy(&common::own_section()),
        String::from_utf8_lossy(common::SECTION)
    );
    assert_eq!(
        common::table(dynplug_plugin_entry),
        (
            "same".to_owned(),
            "2.0.1".to_owned(),
            "declared once".to_owned(),
            abi::FLAG_SERVICE
        )
    );
}
