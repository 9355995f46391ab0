//! `hash`: the SHA-256 digest of the input's UTF-8 bytes, as lowercase hex.

use dynplug_sdk::{register_plugin, Plugin, PluginResult};
use sha2::{Digest, Sha256};

/// The hash plugin.
#[derive(Debug, Default)]
pub struct Hash;

impl Hash {
    /// Creates the plugin.
    pub fn new() -> Self {
        Hash
    }
}

impl Plugin for Hash {
    fn name(&self) -> &str {
        "hash"
    }
    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }
    fn description(&self) -> &str {
        "SHA-256 of the input, as lowercase hex"
    }
    fn execute(&self, input: &str) -> PluginResult<String> {
        let digest = Sha256::digest(input.as_bytes());
        Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

register_plugin!(
    Hash,
    metadata {
        name: "hash",
        version: env!("CARGO_PKG_VERSION"),
        description: "SHA-256 of the input, as lowercase hex",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            Hash::new().execute("abc").unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
