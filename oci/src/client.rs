//! The distribution API calls this format needs: manifests, tags, blobs (read with a
//! bound and their digest checked), referrers, and pushes.

use bytes::Bytes;
use hyper::Method;

use crate::artifact::{self, Descriptor, Index, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::digest::{Digest, Hasher};
use crate::error::OciError;
use crate::http::{Http, HttpOptions};

/// The manifest media types asked for.
const ACCEPT_MANIFESTS: &str =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";

/// A client of one registry.
#[derive(Debug, Clone)]
pub struct Client {
    http: Http,
}

/// A manifest or index as fetched: its bytes (at most [`artifact::MAX_MANIFEST_BYTES`]),
/// their digest, and the Content-Type the registry gave.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The document's bytes.
    pub data: Vec<u8>,
    /// Their digest.
    pub digest: Digest,
    /// The media type the registry announced.
    pub media_type: Option<String>,
}

impl Client {
    /// A client of the registry at `registry` (`host[:port]`).
    pub fn new(registry: &str, opts: HttpOptions) -> Result<Client, OciError> {
        Ok(Client {
            http: Http::new(registry, opts)?,
        })
    }

    /// The registry's `host:port`.
    pub fn registry(&self) -> &str {
        &self.http.authority
    }

    /// Fetches the manifest or index `reference` (a tag or a digest) of `repo`. When
    /// `reference` is a digest, the content must have it.
    pub async fn manifest(&self, repo: &str, reference: &str) -> Result<Fetched, OciError> {
        let what = format!("manifest {repo}:{reference}");
        let resp = self
            .http
            .send(
                Method::GET,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("Accept", ACCEPT_MANIFESTS)],
                Bytes::new(),
            )
            .await?
            .check(&what)?;
        let media_type = resp.header("content-type").map(str::to_owned);
        let data = resp.bytes(artifact::MAX_MANIFEST_BYTES, &what).await?;
        let digest = Digest::of(&data);
        if let Ok(expected) = Digest::parse(reference) {
            expected.expect(&digest, &what)?;
        }
        Ok(Fetched {
            data,
            digest,
            media_type,
        })
    }

    /// The repository's tags (one page: registries give all of them unless asked for
    /// fewer; at most [`artifact::MAX_TAGS_BYTES`] of JSON).
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, OciError> {
        #[derive(serde::Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let what = format!("tag list of {repo}");
        let data = self
            .http
            .send(
                Method::GET,
                &format!("/v2/{repo}/tags/list"),
                &[],
                Bytes::new(),
            )
            .await?
            .check(&what)?
            .bytes(artifact::MAX_TAGS_BYTES, &what)
            .await?;
        let tags: Tags = serde_json::from_slice(&data)
            .map_err(|e| OciError::protocol(self.registry(), format!("{what}: {e}")))?;
        Ok(tags.tags.unwrap_or_default())
    }

    /// Reads a small blob whole (at most `limit` bytes) and checks its size and digest.
    pub async fn blob(
        &self,
        repo: &str,
        desc: &Descriptor,
        limit: u64,
    ) -> Result<Vec<u8>, OciError> {
        let mut data = Vec::new();
        self.blob_into(repo, desc, limit, &mut |chunk| {
            data.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(data)
    }

    /// Streams a blob to `sink`, hashing as it arrives: refused as soon as it grows
    /// past its descriptor's size or `limit`, and at its end unless its digest is the
    /// descriptor's.
    pub(crate) async fn blob_into(
        &self,
        repo: &str,
        desc: &Descriptor,
        limit: u64,
        sink: &mut (dyn FnMut(&[u8]) -> Result<(), OciError> + Send),
    ) -> Result<(), OciError> {
        let what = format!("blob {}", desc.digest);
        if desc.size > limit {
            return Err(OciError::TooLarge { what, limit });
        }
        let mut hasher = Hasher::new();
        self.http
            .send(
                Method::GET,
                &format!("/v2/{repo}/blobs/{}", desc.digest),
                &[],
                Bytes::new(),
            )
            .await?
            .check(&what)?
            .stream(desc.size, &what, |chunk| {
                hasher.update(chunk);
                sink(chunk)
            })
            .await?;
        if hasher.len() != desc.size {
            return Err(OciError::protocol(
                self.registry(),
                format!(
                    "{what}: {} bytes, not the {} announced",
                    hasher.len(),
                    desc.size
                ),
            ));
        }
        desc.digest.expect(&hasher.finish(), &what)
    }

    /// The referrers of `digest` through the OCI 1.1 referrers API, or None where the
    /// registry has no such API (404).
    pub async fn referrers(&self, repo: &str, digest: &Digest) -> Result<Option<Index>, OciError> {
        let what = format!("referrers of {digest}");
        let resp = self
            .http
            .send(
                Method::GET,
                &format!("/v2/{repo}/referrers/{digest}"),
                &[("Accept", INDEX_MEDIA_TYPE)],
                Bytes::new(),
            )
            .await?;
        if resp.status.as_u16() == 404 {
            return Ok(None);
        }
        let data = resp
            .check(&what)?
            .bytes(artifact::MAX_MANIFEST_BYTES, &what)
            .await?;
        serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| OciError::protocol(self.registry(), format!("{what}: {e}")))
    }

    /// Uploads a blob (monolithic: one POST, one PUT), unless the registry has it.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Result<Descriptor, OciError> {
        let digest = Digest::of(data);
        let desc = Descriptor::of("application/octet-stream", data);
        let head = self
            .http
            .send(
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{digest}"),
                &[],
                Bytes::new(),
            )
            .await?;
        if head.status.is_success() {
            return Ok(desc);
        }
        let what = format!("upload to {repo}");
        let start = self
            .http
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Bytes::new(),
            )
            .await?
            .check(&what)?;
        let location = start
            .header("location")
            .ok_or_else(|| OciError::protocol(self.registry(), "an upload without Location"))?;
        let path = match location.strip_prefix("http://") {
            Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]).to_owned(),
            None => location.to_owned(),
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        self.http
            .send(
                Method::PUT,
                &format!("{path}{sep}digest={digest}"),
                &[("Content-Type", "application/octet-stream")],
                Bytes::copy_from_slice(data),
            )
            .await?
            .check(&what)?;
        Ok(desc)
    }

    /// Uploads a manifest or index under `reference` (a tag, or its digest); returns
    /// its digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        data: &[u8],
    ) -> Result<Digest, OciError> {
        debug_assert!(media_type == MANIFEST_MEDIA_TYPE || media_type == INDEX_MEDIA_TYPE);
        self.http
            .send(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("Content-Type", media_type)],
                Bytes::copy_from_slice(data),
            )
            .await?
            .check(&format!("manifest {repo}:{reference}"))?;
        Ok(Digest::of(data))
    }
}
