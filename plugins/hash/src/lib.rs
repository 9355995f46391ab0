//! `hash`: the SHA-256 digest of the input's UTF-8 bytes, as lowercase hex.

use dynplug_sdk::{plugin, Plugin, PluginResult};
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

#[plugin(name = "hash", description = "SHA-256 of the input, as lowercase hex")]
impl Plugin for Hash {
    fn execute(&self, input: &str) -> PluginResult<String> {
        let digest = Sha256::digest(input.as_bytes());
        Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

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
