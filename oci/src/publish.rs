//! Writing artifacts: a plugin version (one file per platform, each signed) built in
//! memory as a [`Bundle`], then pushed to a registry or written as an OCI image-layout
//! archive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::artifact::{
    to_json, Descriptor, Index, Kind, Manifest, Platform, PluginConfig, CONFIG_MEDIA_TYPE,
    EMPTY_MEDIA_TYPE, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, SIGNATURE_ARTIFACT_TYPE,
    SIGNATURE_LAYER_MEDIA_TYPE,
};
use crate::client::Client;
use crate::digest::Digest;
use crate::error::OciError;
use crate::store::REF_NAME;

/// One plugin version ready to publish.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The plugin's config (the same for every platform).
    pub config: PluginConfig,
    blobs: BTreeMap<Digest, Vec<u8>>,
    /// Plugin manifests, then signature manifests: (bytes, tag they go under).
    manifests: Vec<(Vec<u8>, Option<String>)>,
    index: Vec<u8>,
}

/// A file to publish for a platform.
#[derive(Debug, Clone)]
pub struct PlatformFile {
    /// The platform it runs on.
    pub platform: Platform,
    /// The plugin file.
    pub path: PathBuf,
}

impl Bundle {
    /// Builds the artifact of `files` (native plugins, the same name and version each),
    /// signed with the secret key in hex `secret` (the `.key` format), or unsigned.
    pub fn build(files: &[PlatformFile], secret: Option<&str>) -> Result<Bundle, OciError> {
        let mut config: Option<PluginConfig> = None;
        let mut bundle = Bundle {
            config: PluginConfig {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                abi: 0,
                kind: Kind::Native,
                settings_schema: None,
            },
            blobs: BTreeMap::new(),
            manifests: Vec::new(),
            index: Vec::new(),
        };
        let mut entries = Vec::new();
        for f in files {
            let meta = dynplug_loader::metadata::read(&f.path)
                .map_err(|e| OciError::io(&f.path, e))?
                .ok_or_else(|| OciError::io(&f.path, "no .dynplug.meta section"))?;
            let this = PluginConfig {
                name: meta.name,
                version: meta.version,
                description: meta.description,
                abi: meta.abi_version,
                kind: Kind::Native,
                settings_schema: meta.settings_schema,
            };
            if config.as_ref().is_some_and(|c| *c != this) {
                return Err(OciError::Usage(format!(
                    "{} is {} {}, not the same plugin version as the other files",
                    f.path.display(),
                    this.name,
                    this.version
                )));
            }
            let data = std::fs::read(&f.path).map_err(|e| OciError::io(&f.path, e))?;
            let config_json = to_json(&this);
            let config_desc = bundle.add_blob(CONFIG_MEDIA_TYPE, config_json);
            let layer = bundle.add_blob(Kind::Native.layer_media_type(), data);
            let mut manifest = Manifest::plugin(config_desc, layer);
            manifest.annotations.insert(
                "org.opencontainers.image.version".into(),
                this.version.clone(),
            );
            let manifest_json = to_json(&manifest);
            let mut entry = Descriptor::of(MANIFEST_MEDIA_TYPE, &manifest_json);
            entry.platform = Some(f.platform.clone());
            if let Some(secret) = secret {
                let text = dynplug_loader::signature::sign(&f.path, secret)
                    .map_err(|e| OciError::Usage(format!("cannot sign: {e}")))?;
                bundle.add_signature(&entry, text);
            }
            bundle.manifests.insert(0, (manifest_json, None));
            entries.push(entry);
            config = Some(this);
        }
        bundle.config = config.ok_or_else(|| OciError::Usage("no file to publish".into()))?;
        bundle.index = to_json(&Index {
            schema_version: 2,
            media_type: Some(INDEX_MEDIA_TYPE.into()),
            manifests: entries,
            annotations: BTreeMap::new(),
        });
        Ok(bundle)
    }

    fn add_blob(&mut self, media_type: &str, data: Vec<u8>) -> Descriptor {
        let desc = Descriptor::of(media_type, &data);
        self.blobs.insert(desc.digest.clone(), data);
        desc
    }

    fn add_signature(&mut self, subject: &Descriptor, text: String) {
        let empty = self.add_blob(EMPTY_MEDIA_TYPE, b"{}".to_vec());
        let layer = self.add_blob(SIGNATURE_LAYER_MEDIA_TYPE, text.into_bytes());
        let mut subject = subject.clone();
        subject.platform = None;
        let sig = Manifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.into()),
            artifact_type: Some(SIGNATURE_ARTIFACT_TYPE.into()),
            config: empty,
            layers: vec![layer],
            subject: Some(subject.clone()),
            annotations: BTreeMap::new(),
        };
        self.manifests
            .push((to_json(&sig), Some(subject.digest.signature_tag())));
    }

    /// The digest of the version's index (what a pinned reference names).
    pub fn digest(&self) -> Digest {
        Digest::of(&self.index)
    }

    /// Pushes every blob and manifest to `repo`, then the index under each of `tags`.
    pub async fn push(
        &self,
        client: &Client,
        repo: &str,
        tags: &[String],
    ) -> Result<Digest, OciError> {
        for data in self.blobs.values() {
            client.push_blob(repo, data).await?;
        }
        for (data, tag) in &self.manifests {
            let digest = Digest::of(data);
            let reference = tag.clone().unwrap_or_else(|| digest.to_string());
            client
                .push_manifest(repo, &reference, MANIFEST_MEDIA_TYPE, data)
                .await?;
        }
        let digest = self.digest();
        client
            .push_manifest(repo, digest.as_str(), INDEX_MEDIA_TYPE, &self.index)
            .await?;
        for tag in tags {
            client
                .push_manifest(repo, tag, INDEX_MEDIA_TYPE, &self.index)
                .await?;
        }
        Ok(digest)
    }

    /// Writes the artifact as an OCI image-layout tar archive at `out`, the index
    /// named by each of `tags` (`org.opencontainers.image.ref.name`).
    pub fn write_layout(&self, out: &Path, tags: &[String]) -> Result<Digest, OciError> {
        let file = std::fs::File::create(out).map_err(|e| OciError::io(out, e))?;
        let mut tar = tar::Builder::new(file);
        let mut add = |name: &str, data: &[u8]| -> Result<(), OciError> {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, name, data)
                .map_err(|e| OciError::io(out, e))
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut all: Vec<&[u8]> = self.blobs.values().map(Vec::as_slice).collect();
        all.extend(self.manifests.iter().map(|(d, _)| d.as_slice()));
        all.push(&self.index);
        for data in all {
            add(&format!("blobs/sha256/{}", Digest::of(data).hex()), data)?;
        }
        let mut entries = Vec::new();
        for tag in tags {
            let mut d = Descriptor::of(INDEX_MEDIA_TYPE, &self.index);
            d.annotations.insert(REF_NAME.into(), tag.clone());
            entries.push(d);
        }
        for (data, tag) in &self.manifests {
            if let Some(tag) = tag {
                let mut d = Descriptor::of(MANIFEST_MEDIA_TYPE, data);
                d.artifact_type = Some(SIGNATURE_ARTIFACT_TYPE.into());
                d.annotations.insert(REF_NAME.into(), tag.clone());
                entries.push(d);
            }
        }
        let index = to_json(&Index {
            schema_version: 2,
            media_type: Some(INDEX_MEDIA_TYPE.into()),
            manifests: entries,
            annotations: BTreeMap::new(),
        });
        add("index.json", &index)?;
        tar.into_inner()
            .and_then(|f| f.sync_all())
            .map_err(|e| OciError::io(out, e))?;
        Ok(self.digest())
    }
}
