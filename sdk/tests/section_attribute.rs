//! A plugin declared with `#[plugin(...)]`: its section is the one `register_plugin!`
//! writes for the same values (tests/section_register.rs checks the same bytes), and
//! its table and trait say what its section says.

mod common;

use dynplug_sdk::{abi, plugin, Plugin, PluginResult};

/// The plugin under test.
#[derive(Default)]
pub struct Same;

impl Same {
    /// The instance.
    pub fn new() -> Self {
        Same
    }
}

#[plugin(
    name = "same",
    version = "2.0.1",
    description = concat!("declared", " once"),
    service = true,
    settings_schema = r#"{"type": "object"}"#,
    sandbox = "network",
)]
impl Plugin for Same {
    fn execute(&self, input: &str) -> PluginResult<String> {
        Ok(input.to_owned())
    }
}

#[test]
fn the_attribute_writes_the_section_register_plugin_writes() {
    assert_eq!(
        String::from_utf8_lossy(&common::own_section()),
        String::from_utf8_lossy(common::SECTION)
    );
}

#[test]
fn the_table_and_the_trait_say_what_the_section_says() {
    assert_eq!(
        common::table(dynplug_plugin_entry),
        (
            "same".to_owned(),
            "2.0.1".to_owned(),
            "declared once".to_owned(),
            abi::FLAG_SERVICE
        )
    );
    let p = Same::new();
    assert_eq!(
        (p.name(), p.version(), p.description(), p.is_service()),
        ("same", "2.0.1", "declared once", true)
    );
    assert_eq!(p.execute("x").unwrap(), "x");
}
