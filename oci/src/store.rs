//! Where artifacts are read from: a registry, or an OCI image layout (an archive
//! unpacked by [`crate::layout`]). Both give the same four things, so a pull checks
//! them the same way.

use std::path::{Path, PathBuf};

use crate::artifact::{self, Descriptor, Document, Index, SIGNATURE_ARTIFACT_TYPE};
use crate::client::{Client, Fetched};
use crate::digest::{Digest, Hasher};
use crate::error::OciError;

/// A source of manifests and blobs.
pub trait Store: Sync {
    /// What to call it in messages.
    fn describe(&self) -> String;

    /// The manifest or index at a tag or digest (a digest is checked).
    fn manifest(
        &self,
        reference: &str,
    ) -> impl std::future::Future<Output = Result<Fetched, OciError>> + Send;

    /// The tags.
    fn tags(&self) -> impl std::future::Future<Output = Result<Vec<String>, OciError>> + Send;

    /// Streams a blob to `sink`, checking its size against `desc` and `limit` and its
    /// digest at the end.
    fn blob_into(
        &self,
        desc: &Descriptor,
        limit: u64,
        sink: &mut (dyn FnMut(&[u8]) -> Result<(), OciError> + Send),
    ) -> impl std::future::Future<Output = Result<(), OciError>> + Send;

    /// The signature manifests whose subject may be `digest`: from the referrers API,
    /// else under the fallback tag. Each is checked by the caller.
    fn signature_candidates(
        &self,
        digest: &Digest,
    ) -> impl std::future::Future<Output = Result<Vec<Fetched>, OciError>> + Send;
}

/// A repository in a registry.
pub struct RegistryStore {
    /// The client.
    pub client: Client,
    /// The repository.
    pub repository: String,
}

impl Store for RegistryStore {
    fn describe(&self) -> String {
        format!("{}/{}", self.client.registry(), self.repository)
    }

    async fn manifest(&self, reference: &str) -> Result<Fetched, OciError> {
        self.client.manifest(&self.repository, reference).await
    }

    async fn tags(&self) -> Result<Vec<String>, OciError> {
        self.client.tags(&self.repository).await
    }

    async fn blob_into(
        &self,
        desc: &Descriptor,
        limit: u64,
        sink: &mut (dyn FnMut(&[u8]) -> Result<(), OciError> + Send),
    ) -> Result<(), OciError> {
        self.client
            .blob_into(&self.repository, desc, limit, sink)
            .await
    }

    async fn signature_candidates(&self, digest: &Digest) -> Result<Vec<Fetched>, OciError> {
        let descs: Vec<Descriptor> = match self.client.referrers(&self.repository, digest).await? {
            Some(index) => signature_entries(index),
            None => Vec::new(),
        };
        let mut out = Vec::new();
        for d in descs {
            out.push(self.manifest(d.digest.as_str()).await?);
        }
        if out.is_empty() {
            match self.manifest(&digest.signature_tag()).await {
                Ok(f) => out.push(f),
                Err(OciError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

fn signature_entries(index: Index) -> Vec<Descriptor> {
    index
        .manifests
        .into_iter()
        .filter(|d| d.artifact_type.as_deref() == Some(SIGNATURE_ARTIFACT_TYPE))
        .take(8)
        .collect()
}

/// An unpacked OCI image layout: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
pub struct LayoutStore {
    /// The layout's directory.
    pub dir: PathBuf,
    /// What it was unpacked from (for messages).
    pub origin: String,
}

/// The annotation that names an index entry's tag in an image layout.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

impl LayoutStore {
    fn index(&self) -> Result<Index, OciError> {
        let path = self.dir.join("index.json");
        let data = read_bounded(&path, artifact::MAX_MANIFEST_BYTES)?;
        serde_json::from_slice(&data)
            .map_err(|e| OciError::protocol(&self.origin, format!("index.json: {e}")))
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, OciError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| OciError::io(path, e))?;
    let mut data = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|e| OciError::io(path, e))?;
    if data.len() as u64 > limit {
        return Err(OciError::TooLarge {
            what: path.display().to_string(),
            limit,
        });
    }
    Ok(data)
}

impl Store for LayoutStore {
    fn describe(&self) -> String {
        self.origin.clone()
    }

    async fn manifest(&self, reference: &str) -> Result<Fetched, OciError> {
        let digest = match Digest::parse(reference) {
            Ok(d) => d,
            Err(_) => self
                .index()?
                .manifests
                .into_iter()
                .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(reference))
                .map(|d| d.digest)
                .ok_or_else(|| OciError::NotFound {
                    what: format!("tag {reference} in {}", self.origin),
                })?,
        };
        let data = match read_bounded(&self.blob_path(&digest), artifact::MAX_MANIFEST_BYTES) {
            Err(OciError::Io { .. }) => {
                return Err(OciError::NotFound {
                    what: format!("manifest {digest} in {}", self.origin),
                })
            }
            other => other?,
        };
        let actual = Digest::of(&data);
        digest.expect(&actual, &format!("manifest in {}", self.origin))?;
        Ok(Fetched {
            data,
            digest: actual,
            media_type: None,
        })
    }

    async fn tags(&self) -> Result<Vec<String>, OciError> {
        Ok(self
            .index()?
            .manifests
            .into_iter()
            .filter_map(|d| d.annotations.get(REF_NAME).cloned())
            .collect())
    }

    async fn blob_into(
        &self,
        desc: &Descriptor,
        limit: u64,
        sink: &mut (dyn FnMut(&[u8]) -> Result<(), OciError> + Send),
    ) -> Result<(), OciError> {
        use std::io::Read;
        let what = format!("blob {} in {}", desc.digest, self.origin);
        if desc.size > limit {
            return Err(OciError::TooLarge { what, limit });
        }
        let path = self.blob_path(&desc.digest);
        let mut file =
            std::fs::File::open(&path).map_err(|_| OciError::NotFound { what: what.clone() })?;
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(|e| OciError::io(&path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if hasher.len() > desc.size {
                return Err(OciError::TooLarge {
                    what,
                    limit: desc.size,
                });
            }
            sink(&buf[..n])?;
        }
        if hasher.len() != desc.size {
            return Err(OciError::protocol(
                &self.origin,
                format!("{what}: wrong size"),
            ));
        }
        desc.digest.expect(&hasher.finish(), &what)
    }

    async fn signature_candidates(&self, digest: &Digest) -> Result<Vec<Fetched>, OciError> {
        let tag = digest.signature_tag();
        let mut out = Vec::new();
        for d in self.index()?.manifests {
            let by_tag = d.annotations.get(REF_NAME) == Some(&tag);
            let by_type = d.artifact_type.as_deref() == Some(SIGNATURE_ARTIFACT_TYPE);
            if by_tag || by_type {
                let fetched = self.manifest(d.digest.as_str()).await?;
                if let Ok(Document::Manifest(m)) = Document::parse(&fetched.data, None) {
                    if m.subject.as_ref().map(|s| &s.digest) == Some(digest) {
                        out.push(fetched);
                    }
                }
            }
        }
        Ok(out)
    }
}
