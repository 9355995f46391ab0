//! `#[plugin]` with nothing declared, reached through `dynplug_core` (the re-export
//! plugin crates that depend on core use): name, version and description come from the
//! package (this one, `dynplug-sdk-macros`), and the host's own reader finds them in the
//! binary's section, agreeing with the trait.

use dynplug_core::{plugin, Plugin, PluginResult};

/// The plugin under test.
#[derive(Default)]
pub struct Defaults;

impl Defaults {
    /// The instance.
    pub fn new() -> Self {
        Defaults
    }
}

#[plugin]
impl Plugin for Defaults {
    fn execute(&self, input: &str) -> PluginResult<String> {
        Ok(input.to_owned())
    }
}

#[test]
fn name_version_and_description_come_from_the_package() {
    let m = dynplug_core::metadata::read(std::path::Path::new("/proc/self/exe"))
        .expect("the section parses")
        .expect("the binary has a section");
    assert_eq!(
        (m.name.as_str(), m.version.as_str(), m.description.as_str()),
        (
            "dynplug-sdk-macros",
            env!("CARGO_PKG_VERSION"),
            env!("CARGO_PKG_DESCRIPTION")
        )
    );
    assert!(!m.service && m.settings_schema.is_none());
    assert_eq!(m.abi_version, dynplug_core::abi::ABI_VERSION);
    let p = Defaults::new();
    assert_eq!(
        (p.name(), p.version(), p.description(), p.is_service()),
        (
            m.name.as_str(),
            m.version.as_str(),
            m.description.as_str(),
            false
        )
    );
}
