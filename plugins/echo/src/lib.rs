//! `echo`: returns its input unchanged. The smallest useful plugin, and the one the
//! benchmarks use to measure the cost of the call path itself.

use dynplug_sdk::{register_plugin, Plugin, PluginResult};

/// The echo plugin.
#[derive(Debug, Default)]
pub struct Echo;

impl Echo {
    /// Creates the plugin.
    pub fn new() -> Self {
        Echo
    }
}

impl Plugin for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }
    fn description(&self) -> &str {
        "Returns its input unchanged"
    }
    fn execute(&self, input: &str) -> PluginResult<String> {
        Ok(input.to_owned())
    }
}

register_plugin!(
    Echo,
    metadata {
        name: "echo",
        version: env!("CARGO_PKG_VERSION"),
        description: "Returns its input unchanged",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes() {
        assert_eq!(Echo::new().execute("héllo\n").unwrap(), "héllo\n");
    }
}
