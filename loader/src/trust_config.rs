//! `trust:` in the configuration: whether plugin files must be signed, by which keys,
//! and the largest plugin file read. The loader and `inspect` judge files by it.

use std::path::PathBuf;

use serde::Deserialize;

use crate::signature::SignatureMode;

/// `trust:`: signed plugins.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Whether plugin files must carry a valid ed25519 signature (`FILE.sig`).
    pub signatures: SignatureMode,
    /// The trusted public keys (`*.pub`), root-owned like the plugins.
    pub keys_dir: PathBuf,
    /// The largest plugin file read, copied and loaded; a larger one is refused
    /// unread.
    pub max_plugin_bytes: u64,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            signatures: SignatureMode::Off,
            keys_dir: PathBuf::from("/etc/dynplug/keys"),
            max_plugin_bytes: crate::sealed::DEFAULT_MAX_PLUGIN_BYTES,
        }
    }
}
