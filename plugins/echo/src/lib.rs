//! `echo`: returns its input unchanged. The smallest useful plugin, and the one the
//! benchmarks use to measure the cost of the call path itself.

use dynplug_sdk::{plugin, Plugin, PluginResult};

/// The echo plugin.
#[derive(Debug, Default)]
pub struct Echo;

impl Echo {
    /// Creates the plugin.
    pub fn new() -> Self {
        Echo
    }
}

#[plugin(name = "echo", description = "Returns its input unchanged")]
impl Plugin for Echo {
    fn execute(&self, input: &str) -> PluginResult<String> {
        Ok(input.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes() {
        assert_eq!(Echo::new().execute("héllo\n").unwrap(), "héllo\n");
    }
}
