//! OCI image-layout archives (`plugin.oci.tar`, as `oras` and `skopeo` write them) for
//! offline installs: unpacked with bounds into a private directory, then read through
//! [`LayoutStore`] with the same checks as a registry.

use std::path::{Path, PathBuf};

use crate::artifact::{self, SIGNATURE_ARTIFACT_TYPE};
use crate::digest::Digest;
use crate::error::OciError;
use crate::reference::Selector;
use crate::store::{LayoutStore, Store, REF_NAME};

/// An unpacked archive; its directory is removed when this is dropped.
pub struct Unpacked {
    /// The store over the unpacked layout.
    pub store: LayoutStore,
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.store.dir);
    }
}

/// Whether `text` names an archive rather than a registry reference: a path that
/// begins with `/`, `./` or `../`, optionally followed by `:TAG`.
pub fn is_archive(text: &str) -> bool {
    text.starts_with('/') || text.starts_with("./") || text.starts_with("../")
}

/// Splits `PATH[:TAG]` (a path that exists as given is taken whole).
pub fn split_archive(text: &str) -> (PathBuf, Option<String>) {
    if Path::new(text).exists() {
        return (PathBuf::from(text), None);
    }
    match text.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') => (PathBuf::from(path), Some(tag.to_owned())),
        _ => (PathBuf::from(text), None),
    }
}

/// Unpacks the archive at `path` into a new directory under `staging`: only
/// `oci-layout`, `index.json` and `blobs/sha256/<hex>` regular files, each at most
/// `max_entry` bytes; anything else in the archive is refused.
pub fn unpack(path: &Path, staging: &Path, max_entry: u64) -> Result<Unpacked, OciError> {
    let origin = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| OciError::io(path, e))?;
    let dir = staging.join(format!(
        "{}{}-layout",
        crate::pull::STAGING_PREFIX,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(|e| OciError::io(&dir, e))?;
    let unpacked = Unpacked {
        store: LayoutStore {
            dir: dir.clone(),
            origin: origin.clone(),
        },
    };
    let mut archive = tar::Archive::new(file);
    let entries = archive.entries().map_err(|e| OciError::io(path, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| OciError::io(path, e))?;
        let name = entry
            .path()
            .map_err(|e| OciError::io(path, e))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir()
            && matches!(
                name.as_str(),
                "" | "blobs" | "blobs/" | "blobs/sha256" | "blobs/sha256/"
            )
        {
            continue;
        }
        let allowed = name == "oci-layout"
            || name == "index.json"
            || name
                .strip_prefix("blobs/sha256/")
                .is_some_and(|hex| Digest::parse(&format!("sha256:{hex}")).is_ok());
        if !allowed || !kind.is_file() {
            return Err(OciError::protocol(
                &origin,
                format!("unexpected entry {name:?} in an OCI image layout"),
            ));
        }
        if entry.size() > max_entry {
            return Err(OciError::TooLarge {
                what: format!("{name} in {origin}"),
                limit: max_entry,
            });
        }
        let dest = dir.join(&name);
        let mut out = std::fs::File::create(&dest).map_err(|e| OciError::io(&dest, e))?;
        std::io::copy(&mut std::io::Read::take(&mut entry, max_entry), &mut out)
            .map_err(|e| OciError::io(&dest, e))?;
    }
    if !dir.join("oci-layout").is_file() || !dir.join("index.json").is_file() {
        return Err(OciError::protocol(
            &origin,
            "not an OCI image layout (no oci-layout or index.json)",
        ));
    }
    Ok(unpacked)
}

/// What to pull from a layout: the tag asked for, else its only plugin entry.
pub async fn default_selector(
    store: &LayoutStore,
    tag: Option<String>,
) -> Result<Selector, OciError> {
    if let Some(tag) = tag {
        return Ok(Selector::Tag(tag));
    }
    let index: artifact::Index = {
        let data =
            std::fs::read(store.dir.join("index.json")).map_err(|e| OciError::io(&store.dir, e))?;
        serde_json::from_slice(&data)
            .map_err(|e| OciError::protocol(&store.describe(), format!("index.json: {e}")))?
    };
    let mut plugins: Vec<Digest> = index
        .manifests
        .into_iter()
        .filter(|d| d.artifact_type.as_deref() != Some(SIGNATURE_ARTIFACT_TYPE))
        .filter(|d| {
            !d.annotations
                .get(REF_NAME)
                .is_some_and(|t| t.ends_with(".sig"))
        })
        .map(|d| d.digest)
        .collect();
    plugins.dedup();
    match plugins.as_slice() {
        [one] => Ok(Selector::Digest(one.clone())),
        [] => Err(OciError::NotFound {
            what: format!("a plugin in {}", store.describe()),
        }),
        _ => Err(OciError::Usage(format!(
            "{} holds several artifacts: name one as PATH:TAG",
            store.describe()
        ))),
    }
}
