//! Scanning the plugins directory: which files are new, which are unchanged, and
//! opening the new ones (through a probe process when the daemon has one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::SignatureMode;
use crate::error::LoadError;
use crate::registry_cache::{Outcome, RegistryCache};
use dynplug_isolation::protocol::Hello;
use dynplug_loader::library::{self, FileIdentity, PluginLibrary};
use dynplug_loader::locks::lock;
use dynplug_loader::sealed::SealedImage;
use dynplug_loader::signature::{self, Keyring, Verdict};
use dynplug_loader::trust::{self, TrustPolicy};

/// What the files must be to load: `trust.signatures`, the trusted keys, and
/// `trust.max_plugin_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signing {
    pub(crate) mode: SignatureMode,
    pub(crate) keyring: Keyring,
    pub(crate) max_bytes: u64,
}

impl Default for Signing {
    fn default() -> Self {
        Signing {
            mode: SignatureMode::default(),
            keyring: Keyring::default(),
            max_bytes: dynplug_loader::sealed::DEFAULT_MAX_PLUGIN_BYTES,
        }
    }
}

impl Signing {
    /// The identity of `path`'s signature file, when signatures are checked.
    pub(crate) fn signature_identity(&self, path: &Path) -> Option<FileIdentity> {
        if self.mode == SignatureMode::Off {
            return None;
        }
        std::fs::symlink_metadata(signature::signature_path(path))
            .ok()
            .map(|m| FileIdentity::of(&m))
    }

    /// Opens `path` once into a sealed image and judges the image's bytes: the image
    /// with the verdict, or the refusal (`enforcing`, trust, size).
    pub(crate) fn seal(&self, path: &Path, policy: TrustPolicy) -> Judged {
        let image = SealedImage::open(path, policy, self.max_bytes)?;
        if self.mode == SignatureMode::Off {
            return Ok((image, Verdict::NotChecked));
        }
        let bytes = image.bytes().map_err(|e| LoadError::Io {
            path: path.to_owned(),
            reason: format!("cannot map the sealed copy: {e}"),
        })?;
        let verdict = self.keyring.check(path, &bytes, policy);
        drop(bytes);
        if verdict.allows(self.mode) {
            Ok((image, verdict))
        } else {
            Err(LoadError::Signature {
                path: path.to_owned(),
                reason: verdict.to_string(),
            })
        }
    }
}

/// A file's sealed image with its verdict, or why it was refused.
type Judged = Result<(SealedImage, Verdict), LoadError>;

/// How many new files a scan seals, judges and probes at once.
/// (Two probe batches: a chunk's images are open at once, so this bounds the
/// descriptors a scan holds, whatever the number of files.)
const SCAN_CHUNK: usize = 2 * dynplug_isolation::fds::MAX_PROBE_BATCH;

/// What is known of a loaded file: its plugin's name, its identity and its signature
/// file's identity when it was loaded.
pub(crate) type Known = BTreeMap<PathBuf, (String, FileIdentity, Option<FileIdentity>)>;

/// One file found by a scan.
pub(crate) enum Scanned {
    /// Already loaded and unchanged: keep the plugin of that name.
    Kept(PathBuf, String),
    /// Newly opened.
    Opened(PluginLibrary),
    /// Refused.
    Failed(PathBuf, LoadError),
}

/// How new files are first looked at: in a probe process, so that code which crashes
/// while loading only kills the probe; plugins configured `isolation: process` are then
/// never loaded into the daemon at all.
pub(crate) struct Probe {
    pub(crate) program: PathBuf,
    pub(crate) spec: dynplug_isolation::sandbox::Spec,
    pub(crate) isolated: BTreeSet<String>,
    /// What earlier probes found, by file identity: a known file is not probed again.
    pub(crate) cache: Arc<Mutex<RegistryCache>>,
    /// `lazy_load`: in-process plugins with a metadata section are listed from it and
    /// loaded (probe first) on first use.
    pub(crate) lazy: bool,
    /// Answers of probes run ahead in batches ([`Probe::prefetch`]), taken by `open`.
    pub(crate) prefetched: Mutex<BTreeMap<PathBuf, Result<Hello, LoadError>>>,
}

impl Probe {
    fn open(&self, path: &Path, image: SealedImage) -> Result<PluginLibrary, LoadError> {
        // A plugin that says its name in its metadata section and runs isolated (or
        // waits for `lazy_load`) is known without running any of its code, here or in
        // a probe. Its workers get the image; a lazily loaded one is sealed and judged
        // again when it is first used.
        if let Some(metadata) = self.listing_metadata(&image) {
            let identity = image.identity();
            let keep = self
                .isolated
                .contains(&metadata.name)
                .then(|| Arc::new(image));
            return PluginLibrary::from_metadata(path, identity, keep, metadata);
        }
        self.probe_then_open(path, image)
    }

    /// Probes `image` (unless the cache remembers its file) and loads it here, or
    /// describes it when it runs isolated.
    fn probe_then_open(&self, path: &Path, image: SealedImage) -> Result<PluginLibrary, LoadError> {
        let identity = image.identity();
        let remembered = lock(&self.cache).lookup(path, identity).cloned();
        let hello = match remembered {
            Some(Outcome::Refused { reason }) => {
                return Err(LoadError::Probe {
                    path: path.to_owned(),
                    reason: format!(
                        "{reason} (remembered from an earlier probe of this very file; \
                         replace or touch it to probe it again)"
                    ),
                    remember: true,
                })
            }
            Some(outcome) => outcome.hello().ok_or_else(|| LoadError::Probe {
                path: path.to_owned(),
                reason: "the registry cache holds no plugin for this file".into(),
                remember: false,
            })?,
            None => {
                let ahead = lock(&self.prefetched).remove(path);
                let probed = ahead.unwrap_or_else(|| {
                    dynplug_isolation::probe(&self.program, path, &image, &self.spec)
                });
                let outcome = match &probed {
                    Ok(hello) => Some(Outcome::of(hello)),
                    // A refusal or a crash of the plugin's own is remembered; a probe
                    // that could not start, or was killed on its deadline (perhaps a
                    // busy machine), is tried again next time.
                    Err(LoadError::Probe {
                        reason,
                        remember: true,
                        ..
                    }) => Some(Outcome::Refused {
                        reason: reason.clone(),
                    }),
                    Err(_) => None,
                };
                if let Some(outcome) = outcome {
                    lock(&self.cache).record(path, identity, outcome);
                }
                probed?
            }
        };
        if self.isolated.contains(&hello.name) {
            return Ok(PluginLibrary::described(
                path,
                Arc::new(image),
                hello.described(),
            ));
        }
        let lib = PluginLibrary::load(path, &image)?;
        // A file without a metadata section says its name by running: one that names
        // itself otherwise here than in its probe (to dodge `isolation: process`) is
        // refused, and never instantiated.
        if lib.name() != hello.name || self.isolated.contains(lib.name()) {
            return Err(LoadError::BadMetadata {
                path: path.to_owned(),
                reason: format!(
                    "it called itself `{}` in its probe but `{}` when loaded; refused",
                    hello.name,
                    lib.name()
                ),
            });
        }
        Ok(lib)
    }

    /// The metadata of `image` when its plugin is to be listed from it without loading
    /// it (it runs isolated, or `lazy_load` is on); None otherwise. Images are only read
    /// for it when some plugin could be listed so.
    fn listing_metadata(&self, image: &SealedImage) -> Option<dynplug_loader::metadata::Metadata> {
        if !self.lazy && self.isolated.is_empty() {
            return None;
        }
        let file = image.reader().ok()?;
        dynplug_loader::metadata::read_from(&file)
            .ok()
            .flatten()
            .filter(|m| self.lazy || self.isolated.contains(&m.name))
    }

    /// Probes, ahead and in batches (one process per batch, one batch per core), every
    /// image of `files` that `open` would probe: not listed from its metadata, not
    /// remembered by the cache. A thousand new files cost a few processes, not a
    /// thousand.
    pub(crate) fn prefetch(&self, dir: &Path, files: &[(&Path, &SealedImage)]) {
        let wanted: Vec<(&Path, &SealedImage)> = files
            .iter()
            .filter(|(path, image)| {
                let remembered = lock(&self.cache).lookup(path, image.identity()).is_some();
                !remembered && self.listing_metadata(image).is_none()
            })
            .copied()
            .collect();
        if wanted.len() < 2 {
            return;
        }
        let batches = std::thread::available_parallelism()
            .map_or(2, std::num::NonZero::get)
            .min(wanted.len());
        let chunk = wanted.len().div_ceil(batches);
        let answers: Vec<Result<Hello, LoadError>> = std::thread::scope(|s| {
            let handles: Vec<_> = wanted
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        dynplug_isolation::probe::probe_batch(&self.program, dir, part, &self.spec)
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut prefetched = lock(&self.prefetched);
        for ((path, _), answer) in wanted.into_iter().zip(answers) {
            prefetched.insert(path.to_owned(), answer);
        }
    }

    /// Loads a lazily listed plugin into this process on first use: the file sealed
    /// and judged again (`signing`), refused unless it is still the file that was
    /// listed (`listed`), then probed (unless remembered) and loaded from the image.
    /// Nothing of it runs before those checks.
    pub(crate) fn load(
        &self,
        path: &Path,
        listed: FileIdentity,
        signing: &Signing,
        policy: TrustPolicy,
    ) -> Result<PluginLibrary, LoadError> {
        let (image, verdict) = signing.seal(path, policy)?;
        if image.identity() != listed {
            return Err(changed_since_listed(path));
        }
        let sig_identity = signing.signature_identity(path);
        let mut lib = self.probe_then_open(path, image)?;
        lib.set_signature(verdict, sig_identity);
        Ok(lib)
    }
}

/// The refusal of a lazily listed file that changed before its first use.
pub(crate) fn changed_since_listed(path: &Path) -> LoadError {
    LoadError::Io {
        path: path.to_owned(),
        reason: "its file changed since it was listed; reload to pick it up".into(),
    }
}

impl Scanned {
    /// The file.
    pub(crate) fn path(&self) -> &Path {
        match self {
            Scanned::Kept(path, _) | Scanned::Failed(path, _) => path,
            Scanned::Opened(lib) => lib.path(),
        }
    }
}

/// Scans `dir`, reusing plugins whose file identity is unchanged. Results come in file
/// name order, so that of two files declaring one name the first always wins, at
/// start, reload and restart alike. Files that are not regular files (FIFOs, devices,
/// sockets, directories) or fail the trust checks are refused from `stat` alone,
/// before anything opens them.
pub(crate) fn scan(
    dir: &Path,
    policy: TrustPolicy,
    known: &Known,
    probe: Option<&Probe>,
    signing: &Signing,
) -> Result<Vec<Scanned>, LoadError> {
    trust::check_dir(dir, policy)?;
    let files = library::scan_dir(dir)?;
    let mut out = Vec::with_capacity(files.len());
    let mut to_open = Vec::new();
    for path in files {
        let identity = match trust::check_path(&path, policy) {
            Ok(meta) => Some(FileIdentity::of(&meta)),
            Err(e) => {
                out.push(Scanned::Failed(path, e));
                continue;
            }
        };
        let same = known.get(&path).is_some_and(|(_, id, sig)| {
            Some(*id) == identity && *sig == signing.signature_identity(&path)
        });
        match known.get(&path) {
            Some((name, _, _)) if same => out.push(Scanned::Kept(path, name.clone())),
            _ => to_open.push(path),
        }
    }
    // A few files at a time: each is opened once into a sealed image, judged (trust,
    // size, signature: a file refused is never probed, its code never runs), probed
    // ahead in batches, and loaded from that very image. Images of in-process plugins
    // are closed once loaded, so descriptors stay few whatever the number of files.
    for chunk in to_open.chunks(SCAN_CHUNK) {
        let judged: Vec<(&PathBuf, Judged)> =
            chunk.iter().map(|p| (p, signing.seal(p, policy))).collect();
        if let Some(probe) = probe {
            let allowed: Vec<(&Path, &SealedImage)> = judged
                .iter()
                .filter_map(|(p, r)| r.as_ref().ok().map(|(image, _)| (p.as_path(), image)))
                .collect();
            probe.prefetch(dir, &allowed);
        }
        let judged: BTreeMap<&PathBuf, Mutex<Option<_>>> = judged
            .into_iter()
            .map(|(p, r)| (p, Mutex::new(Some(r))))
            .collect();
        let open = |p: &Path| {
            let taken = judged
                .get(&p.to_path_buf())
                .and_then(|slot| lock(slot).take())
                .unwrap_or_else(|| signing.seal(p, policy));
            let (image, verdict) = taken?;
            let sig_identity = signing.signature_identity(p);
            let mut lib = match probe {
                // A component: described from its metadata section, never probed or
                // loaded as a library.
                _ if crate::wasm_tier::is_wasm(p) => crate::wasm_tier::open(p, image),
                Some(probe) => probe.open(p, image),
                None => PluginLibrary::load(p, &image),
            }?;
            lib.set_signature(verdict, sig_identity);
            Ok(lib)
        };
        for (path, result) in chunk.iter().zip(library::open_all(chunk, open)) {
            out.push(match result {
                Ok(lib) => Scanned::Opened(lib),
                Err(e) => Scanned::Failed(path.clone(), e),
            });
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}
