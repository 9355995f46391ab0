//! A verified pull: resolve the reference, pick this platform's manifest, check the
//! config, the signature (fetched before the file, so an unsigned artifact under
//! enforcing costs no download), the file's digest as it streams, the signature over
//! the file's bytes, and the file's own metadata against the config and the request.
//! Only then is the file handed back, in the staging directory; [`Pulled::install_into`]
//! moves it into a plugin directory atomically.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use dynplug_loader::signature::{Keyring, SignatureMode, Verdict};
use dynplug_sdk::abi;

use crate::artifact::{
    self, Descriptor, Document, Kind, Manifest, Platform, PluginConfig, SIGNATURE_ARTIFACT_TYPE,
    SIGNATURE_LAYER_MEDIA_TYPE,
};
use crate::client::Fetched;
use crate::digest::Digest;
use crate::error::OciError;
use crate::reference::{best_tag, Selector};
use crate::store::Store;

/// What a pull requires.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The trusted keys.
    pub keys: Keyring,
    /// `enforcing`: a verified signature is required; `permissive`: checked, an
    /// unsigned or badly signed artifact is pulled and said to be so; `off`: not checked.
    pub signatures: SignatureMode,
    /// The platform whose file is pulled from an index.
    pub platform: Platform,
    /// The largest plugin file accepted.
    pub max_plugin_bytes: u64,
    /// The plugin name the artifact must have, if any.
    pub expect_name: Option<String>,
    /// The version requirement the plugin must meet (its `version:` in config.yaml).
    pub version_req: Option<semver::VersionReq>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            keys: Keyring::default(),
            signatures: SignatureMode::Enforcing,
            platform: Platform::current(),
            max_plugin_bytes: 256 * 1024 * 1024,
            expect_name: None,
            version_req: None,
        }
    }
}

/// A pulled and verified plugin, in the staging directory.
#[derive(Debug)]
pub struct Pulled {
    /// The tag it was found under, if it was asked for by tag or range.
    pub tag: Option<String>,
    /// The digest of what the reference resolved to (index or manifest): pin this.
    pub digest: Digest,
    /// The digest of this platform's manifest (the one signed).
    pub manifest_digest: Digest,
    /// The digest of the plugin file.
    pub file_digest: Digest,
    /// The config.
    pub config: PluginConfig,
    /// The verified file (in the staging directory; removed when this is dropped
    /// unless installed).
    pub file: PathBuf,
    /// The signature text, if one was found and verified.
    pub signature: Option<String>,
    /// What the signature check found.
    pub verdict: Verdict,
}

impl Drop for Pulled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Removes a partial file unless disarmed.
struct PartGuard(Option<PathBuf>);

impl Drop for PartGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The name staged files begin with (followed by the pulling process's id), so a later
/// pull can find and remove what a killed one left.
pub const STAGING_PREFIX: &str = ".dynplug-pull-";

/// Removes what interrupted pulls left in `staging`: files named [`STAGING_PREFIX`]
/// `PID-...` whose process is gone. Returns how many.
pub fn clean_staging(staging: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(staging) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(STAGING_PREFIX)
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                return false;
            };
            !Path::new(&format!("/proc/{pid}")).exists()
        })
        .filter(|e| {
            let path = e.path();
            let removed = if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.is_ok()
        })
        .count()
}

/// A staging file name of this process.
fn staged_name(what: &str) -> String {
    format!("{STAGING_PREFIX}{}-{what}", std::process::id())
}

/// Pulls the plugin `selector` names from `store` into `staging`, verified.
/// `progress` is told the bytes of the plugin file received so far.
pub async fn pull<S: Store>(
    store: &S,
    selector: &Selector,
    staging: &Path,
    opts: &PullOptions,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Pulled, OciError> {
    let origin = store.describe();
    let bad = |why: String| OciError::protocol(&origin, why);
    let (tag, top_ref) = match selector {
        Selector::Tag(t) => (Some(t.clone()), t.clone()),
        Selector::Digest(d) => (None, d.to_string()),
        Selector::Range(range) => {
            let tags = store.tags().await?;
            let Some(t) = best_tag(&tags, range) else {
                let mut list = tags.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
                if tags.len() > 20 {
                    list.push_str(", ...");
                }
                return Err(OciError::NoMatchingTag {
                    repository: origin.clone(),
                    range: range.to_string(),
                    tags: list,
                });
            };
            (Some(t.to_owned()), t.to_owned())
        }
    };
    let top = store.manifest(&top_ref).await?;
    let (manifest_digest, manifest) = match parse(&top, &origin)? {
        Document::Manifest(m) => (top.digest.clone(), *m),
        Document::Index(index) => {
            let entry = index
                .manifests
                .iter()
                .find(|d| d.platform.as_ref() == Some(&opts.platform))
                .ok_or_else(|| OciError::NotFound {
                    what: format!("a {} build of {origin}:{top_ref}", opts.platform),
                })?;
            let fetched = store.manifest(entry.digest.as_str()).await?;
            match parse(&fetched, &origin)? {
                Document::Manifest(m) => (fetched.digest, *m),
                Document::Index(_) => return Err(bad("an index inside an index".into())),
            }
        }
    };
    let config = read_config(store, &manifest, &origin).await?;
    check_config(&config, opts)?;
    let layer = manifest.plugin_layer(config.kind).map_err(bad)?.clone();
    if config.kind == Kind::Wasm {
        return Err(OciError::Metadata(format!(
            "{} is a WebAssembly plugin; this host runs native plugins only",
            config.name
        )));
    }

    let signature = match opts.signatures {
        SignatureMode::Off => None,
        _ => find_signature(store, &manifest_digest, &origin).await?,
    };
    if opts.signatures == SignatureMode::Enforcing && signature.is_none() {
        return Err(OciError::Signature(format!(
            "{origin}@{manifest_digest} is unsigned (no signature referrer, no {} tag) and \
             trust.signatures is enforcing",
            manifest_digest.signature_tag()
        )));
    }

    let file_path = staging.join(staged_name(&format!(
        "{}-{}",
        config.name,
        &layer.digest.hex()[..16]
    )));
    let mut guard = PartGuard(None);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&file_path)
        .map_err(|e| OciError::io(&file_path, e))?;
    guard.0 = Some(file_path.clone());
    let mut data = Vec::with_capacity(layer.size.min(opts.max_plugin_bytes) as usize);
    store
        .blob_into(&layer, opts.max_plugin_bytes, &mut |chunk| {
            file.write_all(chunk)
                .map_err(|e| OciError::io(&file_path, e))?;
            data.extend_from_slice(chunk);
            progress(data.len() as u64);
            Ok(())
        })
        .await?;
    file.sync_all().map_err(|e| OciError::io(&file_path, e))?;
    drop(file);

    let verdict = match (&signature, opts.signatures) {
        (_, SignatureMode::Off) => Verdict::NotChecked,
        (None, _) => Verdict::Unsigned,
        (Some(text), _) => {
            opts.keys
                .verify(text, &data, &format!("the signature of {manifest_digest}"))
        }
    };
    if !verdict.allows(opts.signatures) {
        return Err(OciError::Signature(format!(
            "{origin}@{manifest_digest}: {verdict}"
        )));
    }
    check_file_metadata(&file_path, &config)?;
    guard.0 = None;
    Ok(Pulled {
        tag,
        digest: top.digest,
        manifest_digest,
        file_digest: layer.digest,
        config,
        file: file_path,
        signature: signature.filter(|_| matches!(verdict, Verdict::Verified(_))),
        verdict,
    })
}

fn parse(fetched: &Fetched, origin: &str) -> Result<Document, OciError> {
    Document::parse(&fetched.data, fetched.media_type.as_deref())
        .map_err(|e| OciError::protocol(origin, e))
}

async fn read_config<S: Store>(
    store: &S,
    manifest: &Manifest,
    origin: &str,
) -> Result<PluginConfig, OciError> {
    if manifest.config.media_type != artifact::CONFIG_MEDIA_TYPE {
        return Err(OciError::protocol(
            origin,
            format!(
                "config media type {:?}: not a DynPlug plugin",
                manifest.config.media_type
            ),
        ));
    }
    let data = small_blob(store, &manifest.config, artifact::MAX_CONFIG_BYTES).await?;
    serde_json::from_slice(&data)
        .map_err(|e| OciError::protocol(origin, format!("plugin config: {e}")))
}

async fn small_blob<S: Store>(
    store: &S,
    desc: &Descriptor,
    limit: u64,
) -> Result<Vec<u8>, OciError> {
    let mut data = Vec::new();
    store
        .blob_into(desc, limit, &mut |chunk| {
            data.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
    Ok(data)
}

fn check_config(config: &PluginConfig, opts: &PullOptions) -> Result<(), OciError> {
    dynplug_loader::name::validate_plugin_name(&config.name)
        .map_err(|e| OciError::Metadata(format!("the artifact's plugin name: {e}")))?;
    if let Some(want) = &opts.expect_name {
        if *want != config.name {
            return Err(OciError::Metadata(format!(
                "the artifact is the plugin {:?}, not {want:?}",
                config.name
            )));
        }
    }
    let version = semver::Version::parse(&config.version).map_err(|e| {
        OciError::Metadata(format!("version {:?} is not semver: {e}", config.version))
    })?;
    if let Some(req) = &opts.version_req {
        if !req.matches(&version) {
            return Err(OciError::Metadata(format!(
                "{} {version} does not meet the required version {req}",
                config.name
            )));
        }
    }
    let (min, max) = (abi::ABI_VERSION_MIN, abi::ABI_VERSION);
    if !(min..=max).contains(&config.abi) {
        return Err(OciError::Metadata(format!(
            "{} is built for plugin ABI {}, this host loads ABI {min} to {max}",
            config.name, config.abi
        )));
    }
    Ok(())
}

/// The signature text of the manifest `digest`: the first candidate that is a
/// signature manifest with that subject and a small hex layer.
async fn find_signature<S: Store>(
    store: &S,
    digest: &Digest,
    origin: &str,
) -> Result<Option<String>, OciError> {
    for fetched in store.signature_candidates(digest).await? {
        let Ok(Document::Manifest(m)) = parse(&fetched, origin) else {
            continue;
        };
        let is_signature = m.artifact_type.as_deref() == Some(SIGNATURE_ARTIFACT_TYPE)
            && m.subject.as_ref().map(|s| &s.digest) == Some(digest);
        let Some(layer) = m
            .layers
            .iter()
            .find(|l| l.media_type == SIGNATURE_LAYER_MEDIA_TYPE)
            .filter(|_| is_signature)
        else {
            continue;
        };
        let data = small_blob(store, layer, artifact::MAX_SIGNATURE_BYTES).await?;
        return Ok(Some(String::from_utf8_lossy(&data).into_owned()));
    }
    Ok(None)
}

/// The downloaded file's own metadata must be the config's: the signature covers the
/// file, not the config, so a config that lies about the file is caught here.
fn check_file_metadata(path: &Path, config: &PluginConfig) -> Result<(), OciError> {
    let meta = dynplug_loader::metadata::read(path)
        .map_err(|e| OciError::Metadata(format!("the plugin file: {e}")))?
        .ok_or_else(|| OciError::Metadata("the plugin file has no .dynplug.meta section".into()))?;
    if meta.name != config.name || meta.version != config.version || meta.abi_version != config.abi
    {
        return Err(OciError::Metadata(format!(
            "the file says {} {} (ABI {}), the artifact's config says {} {} (ABI {})",
            meta.name, meta.version, meta.abi_version, config.name, config.version, config.abi
        )));
    }
    Ok(())
}

impl Pulled {
    /// Moves the file into `dir` as `NAME.so` (with its signature as `NAME.so.sig`, or
    /// any old signature removed), each by a rename from a temporary file in `dir`, so
    /// `dir` never holds a half-written plugin. Returns the installed path.
    pub fn install_into(mut self, dir: &Path) -> Result<PathBuf, OciError> {
        let dest = dir.join(self.config.kind.file_name(&self.config.name));
        let sig = dynplug_loader::signature::signature_path(&dest);
        match &self.signature {
            Some(text) => write_atomically(dir, &sig, format!("{}\n", text.trim()).as_bytes())?,
            None => match std::fs::remove_file(&sig) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(OciError::io(&sig, e))
                }
                _ => {}
            },
        }
        let tmp = dir.join(staged_name(&self.config.name));
        if std::fs::rename(&self.file, &dest).is_err() {
            // Another file system: copy beside the destination, then rename.
            let _ = std::fs::remove_file(&tmp);
            std::fs::copy(&self.file, &tmp).map_err(|e| OciError::io(&tmp, e))?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| OciError::io(&tmp, e))?;
            std::fs::rename(&tmp, &dest).map_err(|e| OciError::io(&dest, e))?;
        }
        sync_dir(dir)?;
        // Nothing left to remove on drop.
        self.file = PathBuf::new();
        Ok(dest)
    }
}

fn write_atomically(dir: &Path, dest: &Path, data: &[u8]) -> Result<(), OciError> {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(staged_name(&name.unwrap_or_default()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(|e| OciError::io(&tmp, e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| OciError::io(&tmp, e))?;
    std::fs::rename(&tmp, dest).map_err(|e| OciError::io(dest, e))
}

fn sync_dir(dir: &Path) -> Result<(), OciError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| OciError::io(dir, e))
}
