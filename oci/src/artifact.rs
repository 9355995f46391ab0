//! The artifact format: what a published plugin version looks like in a registry.
//!
//! - An OCI image manifest per plugin file: `config` is a JSON document of media type
//!   [`CONFIG_MEDIA_TYPE`] ([`PluginConfig`]: the plugin's metadata records), and one
//!   layer, the plugin file itself ([`NATIVE_LAYER_MEDIA_TYPE`] for a shared library,
//!   [`WASM_LAYER_MEDIA_TYPE`] for a WebAssembly component).
//! - For native plugins an OCI image index over those manifests, one per platform
//!   (`linux/amd64`, `linux/arm64`, ...); the version's tag names the index.
//! - Per manifest, its detached ed25519 signature: a manifest of artifact type
//!   [`SIGNATURE_ARTIFACT_TYPE`] whose `subject` is the signed manifest and whose one
//!   layer is the signature in the `.sig` file format (hex of 64 bytes) over the plugin
//!   file's bytes. Found through the OCI 1.1 referrers API, or, where the registry has
//!   none, under the tag `sha256-<manifest hex>.sig`.

use std::collections::BTreeMap;

use crate::digest::Digest;

/// The config media type of a plugin artifact.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.dynplug.plugin.config.v1+json";
/// The artifact type of a plugin manifest.
pub const PLUGIN_ARTIFACT_TYPE: &str = "application/vnd.dynplug.plugin.v1";
/// The layer media type of a native plugin (an ELF shared library).
pub const NATIVE_LAYER_MEDIA_TYPE: &str = "application/vnd.dynplug.plugin.layer.v1.native";
/// The layer media type of a WebAssembly plugin.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.dynplug.plugin.layer.v1.wasm";
/// The artifact type of a signature manifest.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.dynplug.plugin.signature.v1";
/// The layer media type of a signature (hex text, as in `.sig` files).
pub const SIGNATURE_LAYER_MEDIA_TYPE: &str = "application/vnd.dynplug.plugin.signature.v1+hex";
/// OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The OCI empty descriptor's media type (the config of a signature manifest).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// The largest manifest or index read (the distribution spec's 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// The largest config blob read.
pub const MAX_CONFIG_BYTES: u64 = 512 * 1024;
/// The largest signature layer read.
pub const MAX_SIGNATURE_BYTES: u64 = 4096;
/// The largest tag list read.
pub const MAX_TAGS_BYTES: u64 = 4 * 1024 * 1024;

/// Whether a plugin is a native library or a WebAssembly component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An ELF shared library, one per platform.
    Native,
    /// A WebAssembly component, one for every platform.
    Wasm,
}

impl Kind {
    /// The layer media type of this kind.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Kind::Native => NATIVE_LAYER_MEDIA_TYPE,
            Kind::Wasm => WASM_LAYER_MEDIA_TYPE,
        }
    }

    /// The file name a plugin of this kind is installed under.
    pub fn file_name(self, name: &str) -> String {
        match self {
            Kind::Native => format!("{name}.so"),
            Kind::Wasm => format!("{name}.wasm"),
        }
    }
}

/// The config blob: the plugin's metadata records, as its file declares them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The plugin's name.
    pub name: String,
    /// Its version (semver).
    pub version: String,
    /// Its one-line description.
    #[serde(default)]
    pub description: String,
    /// The plugin ABI version it was built for.
    pub abi: u32,
    /// Native or WebAssembly.
    pub kind: Kind,
    /// A JSON Schema of its settings, if it declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings_schema: Option<String>,
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type.
    pub media_type: String,
    /// The content's digest.
    pub digest: Digest,
    /// The content's size in bytes.
    pub size: u64,
    /// For index entries: the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// For referrers: the artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A descriptor of `data`.
    pub fn of(media_type: &str, data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: Digest::of(data),
            size: data.len() as u64,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// An index entry's platform.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
}

impl Platform {
    /// The platform this program runs on, in OCI's words.
    pub fn current() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: arch.to_owned(),
        }
    }

    /// Parses `os/arch`.
    pub fn parse(text: &str) -> Result<Platform, String> {
        match text.split_once('/') {
            Some((os, arch)) if !os.is_empty() && !arch.is_empty() && !arch.contains('/') => {
                Ok(Platform {
                    os: os.to_owned(),
                    architecture: arch.to_owned(),
                })
            }
            _ => Err(format!("{text:?} is not OS/ARCH (e.g. linux/amd64)")),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

/// An OCI image manifest (the fields this format uses).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`MANIFEST_MEDIA_TYPE`].
    #[serde(default)]
    pub media_type: Option<String>,
    /// The artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers.
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (signatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image index (the fields this format uses).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// [`INDEX_MEDIA_TYPE`].
    #[serde(default)]
    pub media_type: Option<String>,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A manifest or an index, told apart by `mediaType` (or, if absent, by shape).
#[derive(Debug, Clone)]
pub enum Document {
    /// An image manifest.
    Manifest(Box<Manifest>),
    /// An image index.
    Index(Index),
}

impl Document {
    /// Parses manifest JSON; `media_type` is the Content-Type the registry gave, if any.
    pub fn parse(data: &[u8], media_type: Option<&str>) -> Result<Document, String> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe =
            serde_json::from_slice(data).map_err(|e| format!("not manifest JSON: {e}"))?;
        let is_index = match probe.media_type.as_deref().or(media_type) {
            Some(INDEX_MEDIA_TYPE) => true,
            Some(MANIFEST_MEDIA_TYPE) => false,
            _ => probe.manifests.is_some(),
        };
        if is_index {
            serde_json::from_slice(data)
                .map(Document::Index)
                .map_err(|e| format!("not an OCI image index: {e}"))
        } else {
            serde_json::from_slice(data)
                .map(|m| Document::Manifest(Box::new(m)))
                .map_err(|e| format!("not an OCI image manifest: {e}"))
        }
    }
}

impl Manifest {
    /// A plugin manifest over its config and file.
    pub fn plugin(config: Descriptor, layer: Descriptor) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
            artifact_type: Some(PLUGIN_ARTIFACT_TYPE.to_owned()),
            config,
            layers: vec![layer],
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The one layer of a plugin manifest, checked against the config's kind.
    pub fn plugin_layer(&self, kind: Kind) -> Result<&Descriptor, String> {
        if self.config.media_type != CONFIG_MEDIA_TYPE {
            return Err(format!(
                "config media type {:?}, not {CONFIG_MEDIA_TYPE}: not a DynPlug plugin",
                self.config.media_type
            ));
        }
        match self.layers.as_slice() {
            [layer] if layer.media_type == kind.layer_media_type() => Ok(layer),
            [layer] => Err(format!(
                "layer media type {:?} does not fit a {kind:?} plugin",
                layer.media_type
            )),
            layers => Err(format!("{} layers, not one", layers.len())),
        }
    }
}

/// The JSON of a document, as pushed (and as hashed: the digest is of these bytes).
pub fn to_json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("artifact documents serialize")
}
