//! Scanning the plugins directory: which files are new, which are unchanged, and
//! opening the new ones (through a probe process when the daemon has one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::SignatureMode;
use crate::error::LoadError;
use crate::library::{self, FileIdentity, PluginLibrary};
use crate::locks::lock;
use crate::registry_cache::{Outcome, RegistryCache};
use crate::signature::{self, Keyring, Verdict};
use crate::trust::{self, TrustPolicy};
use crate::worker::protocol::Hello;

/// What the files' signatures must be: `trust.signatures` and the trusted keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Signing {
    pub(crate) mode: SignatureMode,
    pub(crate) keyring: Keyring,
}

impl Signing {
    /// The identity of `path`'s signature file, when signatures are checked.
    fn signature_identity(&self, path: &Path) -> Option<FileIdentity> {
        if self.mode == SignatureMode::Off {
            return None;
        }
        std::fs::metadata(signature::signature_path(path))
            .ok()
            .map(|m| FileIdentity::of(&m))
    }

    /// The verdict on `path`, or the refusal `enforcing` makes of it.
    fn check(&self, path: &Path) -> Result<Verdict, LoadError> {
        if self.mode == SignatureMode::Off {
            return Ok(Verdict::NotChecked);
        }
        let verdict = self.keyring.check(path);
        if verdict.allows(self.mode) {
            Ok(verdict)
        } else {
            Err(LoadError::Signature {
                path: path.to_owned(),
                reason: verdict.to_string(),
            })
        }
    }
}

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
    pub(crate) spec: crate::worker::sandbox::Spec,
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
    fn open(&self, path: &Path, policy: TrustPolicy) -> Result<PluginLibrary, LoadError> {
        // A plugin that says its name in its metadata section and runs isolated (or
        // waits for `lazy_load`) is known without running any of its code, here or in
        // a probe.
        if let Some(metadata) = self.listing_metadata(path) {
            let meta = std::fs::metadata(path).map_err(|e| LoadError::Io {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            return PluginLibrary::from_metadata(path, FileIdentity::of(&meta), metadata);
        }
        self.probe_then_open(path, policy)
    }

    /// Probes `path` (unless the cache remembers it) and loads it here, or describes it
    /// when it runs isolated.
    fn probe_then_open(
        &self,
        path: &Path,
        policy: TrustPolicy,
    ) -> Result<PluginLibrary, LoadError> {
        let identity = std::fs::metadata(path)
            .map(|m| FileIdentity::of(&m))
            .map_err(|e| LoadError::Io {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        let remembered = lock(&self.cache).lookup(path, identity).cloned();
        let hello = match remembered {
            Some(Outcome::Refused { reason }) => {
                return Err(LoadError::Probe {
                    path: path.to_owned(),
                    reason: format!(
                        "{reason} (remembered from an earlier probe of this very file; \
                         replace or touch it to probe it again)"
                    ),
                })
            }
            Some(outcome) => outcome.hello().ok_or_else(|| LoadError::Probe {
                path: path.to_owned(),
                reason: "the registry cache holds no plugin for this file".into(),
            })?,
            None => {
                let ahead = lock(&self.prefetched).remove(path);
                let probed =
                    ahead.unwrap_or_else(|| crate::worker::probe(&self.program, path, &self.spec));
                let outcome = match &probed {
                    Ok(hello) => Some(Outcome::of(hello)),
                    // A refusal or a crash of the plugin's own is remembered; a probe
                    // that could not start, or was killed on its deadline (perhaps a
                    // busy machine), is tried again next time.
                    Err(LoadError::Probe { reason, .. })
                        if !reason.contains("SIGKILL") && !reason.starts_with("cannot start") =>
                    {
                        Some(Outcome::Refused {
                            reason: reason.clone(),
                        })
                    }
                    Err(_) => None,
                };
                if let Some(outcome) = outcome {
                    lock(&self.cache).record(path, identity, outcome);
                }
                probed?
            }
        };
        if self.isolated.contains(&hello.name) {
            return Ok(PluginLibrary::described(path, identity, hello));
        }
        PluginLibrary::open(path, policy)
    }

    /// The metadata of `path` when the plugin is to be listed from it without loading it
    /// (it runs isolated, or `lazy_load` is on); None otherwise. Files are only read for
    /// it when some plugin could be listed so.
    fn listing_metadata(&self, path: &Path) -> Option<crate::metadata::Metadata> {
        if !self.lazy && self.isolated.is_empty() {
            return None;
        }
        crate::metadata::read(path)
            .ok()
            .flatten()
            .filter(|m| self.lazy || self.isolated.contains(&m.name))
    }

    /// Probes, ahead and in batches (one process per batch, one batch per core), every
    /// file of `paths` that `open` would probe: not listed from its metadata, not
    /// remembered by the cache. A thousand new files cost a few processes, not a
    /// thousand.
    pub(crate) fn prefetch(&self, dir: &Path, paths: &[PathBuf]) {
        let wanted: Vec<PathBuf> = paths
            .iter()
            .filter(|path| {
                let remembered = std::fs::metadata(path).ok().is_some_and(|m| {
                    lock(&self.cache)
                        .lookup(path, FileIdentity::of(&m))
                        .is_some()
                });
                !remembered && self.listing_metadata(path).is_none()
            })
            .cloned()
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
                        crate::worker::probe::probe_batch(&self.program, dir, part, &self.spec)
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut prefetched = lock(&self.prefetched);
        for (path, answer) in wanted.into_iter().zip(answers) {
            prefetched.insert(path, answer);
        }
    }

    /// Loads `path` into this process after its probe passed (or was remembered to
    /// pass): what a lazily listed plugin goes through on first use. (Its name is not
    /// among the isolated ones: those have workers, not a loader.)
    pub(crate) fn load(
        &self,
        path: &Path,
        policy: TrustPolicy,
    ) -> Result<PluginLibrary, LoadError> {
        self.probe_then_open(path, policy)
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
    // Signatures first: a file refused by them is never probed (its code never runs).
    let verdicts: BTreeMap<&PathBuf, Result<Verdict, LoadError>> =
        to_open.iter().map(|p| (p, signing.check(p))).collect();
    if let Some(probe) = probe {
        let allowed: Vec<PathBuf> = to_open
            .iter()
            .filter(|p| verdicts.get(p).is_some_and(Result::is_ok))
            .cloned()
            .collect();
        probe.prefetch(dir, &allowed);
    }
    let open = |p: &Path| {
        let verdict = match verdicts.get(&p.to_path_buf()) {
            Some(v) => v.clone(),
            None => signing.check(p),
        }?;
        let sig_identity = signing.signature_identity(p);
        let mut lib = match probe {
            Some(probe) => probe.open(p, policy),
            None => PluginLibrary::open(p, policy),
        }?;
        lib.set_signature(verdict, sig_identity);
        Ok(lib)
    };
    for (path, result) in to_open.iter().zip(library::open_all(&to_open, open)) {
        out.push(match result {
            Ok(lib) => Scanned::Opened(lib),
            Err(e) => Scanned::Failed(path.clone(), e),
        });
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}
