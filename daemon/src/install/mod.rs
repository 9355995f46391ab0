//! Installing plugins from OCI registries: `Install(reference)` runs as a job that
//! pulls with `dynplug-oci`'s verified pull into `STATE_DIR/staging`, then (one install
//! at a time) keeps the version in place for rollback, renames the new file into
//! plugins_dir (never a partial file there), records it in `installed.json` and applies
//! it as a reload does (calls in flight finish on the old file).

pub mod record;
mod undo;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dynplug_core::error::{ManagerError, RegistryFailure};
use dynplug_core::jobs::{Job, JobOwner};
use dynplug_core::signature::{Keyring, SignatureMode};
use dynplug_core::trust::TrustPolicy;
use dynplug_oci::client::Client;
use dynplug_oci::http::HttpOptions;
use dynplug_oci::pull::{self, PullOptions, Pulled};
use dynplug_oci::reference::Reference;
use dynplug_oci::store::RegistryStore;
use dynplug_oci::{layout, ErrorKind, OciError};

use crate::state::Shared;
use record::{Entry, Records, Version};

/// The prefix that asks for plain HTTP (allowed to loopback registries only).
const PLAIN_HTTP: &str = "http://";

/// The subdirectory of the state directory pulls stage into.
const STAGING: &str = "staging";

/// The subdirectory of the state directory previous versions are kept in.
pub(crate) const PREVIOUS: &str = "previous";

/// Starts and runs installs; one commits (rename, record, reload) at a time.
#[derive(Debug, Default)]
pub struct Installer {
    pub(crate) commit: tokio::sync::Mutex<()>,
}

fn failure(kind: RegistryFailure, message: impl Into<String>) -> ManagerError {
    ManagerError::Registry {
        kind,
        message: message.into(),
    }
}

pub(crate) fn local(message: impl Into<String>) -> ManagerError {
    failure(RegistryFailure::Local, message)
}

/// Maps a registry error once, keeping its kind.
fn from_oci(e: OciError) -> ManagerError {
    let kind = match e.kind() {
        ErrorKind::NotFound => RegistryFailure::NotFound,
        ErrorKind::SignatureRefused => RegistryFailure::SignatureRefused,
        ErrorKind::Unreachable => RegistryFailure::Unreachable,
        ErrorKind::Refused => RegistryFailure::Refused,
        ErrorKind::Local => RegistryFailure::Local,
    };
    failure(kind, e.to_string())
}

fn now_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A directory of the state directory, made (mode 0700) if missing.
fn state_subdir(shared: &Shared, name: &str) -> Result<PathBuf, ManagerError> {
    let dir = shared.manager.state_dir().join(name);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| local(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

/// The pull options the configuration asks for: `trust.signatures: off` installs
/// unsigned artifacts; any other mode requires a signature by a key of `trust.keys_dir`.
fn pull_options(shared: &Shared) -> Result<PullOptions, ManagerError> {
    let config = shared.manager.config();
    let trust = &config.trust;
    let (signatures, keys) = match trust.signatures {
        SignatureMode::Off => (SignatureMode::Off, Keyring::default()),
        _ => (
            SignatureMode::Enforcing,
            Keyring::load(&trust.keys_dir, TrustPolicy::for_current_process())
                .map_err(|e| local(format!("trust.keys_dir: {e}")))?,
        ),
    };
    Ok(PullOptions {
        keys,
        signatures,
        max_plugin_bytes: trust.max_plugin_bytes,
        ..PullOptions::default()
    })
}

/// Pulls `reference` into `staging`, verified.
async fn fetch(
    reference: &str,
    staging: &Path,
    opts: &PullOptions,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Pulled, OciError> {
    pull::clean_staging(staging);
    if layout::is_archive(reference) {
        let (path, tag) = layout::split_archive(reference);
        let unpacked = layout::unpack(&path, staging, opts.max_plugin_bytes)?;
        let selector = layout::default_selector(&unpacked.store, tag).await?;
        return pull::pull(&unpacked.store, &selector, staging, opts, progress).await;
    }
    let (text, insecure_http) = match reference.strip_prefix(PLAIN_HTTP) {
        Some(rest) => (rest, true),
        None => (reference, false),
    };
    let r = Reference::parse(text)?;
    let http = HttpOptions {
        insecure_http,
        ..HttpOptions::default()
    };
    let store = RegistryStore {
        client: Client::new(&r.registry, http)?,
        repository: r.repository.clone(),
    };
    pull::pull(&store, &r.selector, staging, opts, progress).await
}

/// The plugin's `version:` requirement in config.yaml, checked against what was pulled.
fn check_version(shared: &Shared, pulled: &Pulled) -> Result<(), ManagerError> {
    let config = shared.manager.config();
    let Some(req) = config.version_requirement(&pulled.config.name) else {
        return Ok(());
    };
    let wanted = semver::VersionReq::parse(&req)
        .map_err(|e| local(format!("plugins.{}.version: {e}", pulled.config.name)))?;
    let have = semver::Version::parse(&pulled.config.version)
        .map_err(|e| local(format!("version {:?}: {e}", pulled.config.version)))?;
    if !wanted.matches(&have) {
        return Err(failure(
            RegistryFailure::Refused,
            format!(
                "{} {} does not meet the configured version requirement {req}",
                pulled.config.name, pulled.config.version
            ),
        ));
    }
    Ok(())
}

impl Installer {
    /// Starts installing `reference` as a job of `owner`; the job runs on its own.
    pub fn start(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        reference: &str,
        owner: JobOwner,
    ) -> Result<Arc<Job>, ManagerError> {
        if reference.is_empty() {
            return Err(ManagerError::InvalidArgument("an empty reference".into()));
        }
        let job = shared
            .manager
            .jobs()
            .start(&format!("install {reference}"), owner)?;
        let (this, shared, reference, running) = (
            Arc::clone(self),
            Arc::clone(shared),
            reference.to_owned(),
            Arc::clone(&job),
        );
        tokio::spawn(async move {
            let cancel = Arc::clone(running.cancel_flag());
            let result = tokio::select! {
                r = this.install(&shared, &reference, &running) => r,
                () = cancel.cancelled() => Err(ManagerError::Cancelled(format!("install {reference}"))),
            };
            if let Err(e) = &result {
                tracing::warn!(reference = %reference, error = %e, "install failed");
            }
            shared.manager.jobs().finish(&running, result);
        });
        Ok(job)
    }

    /// Pulls, verifies and puts in place; the job's output is a JSON summary.
    async fn install(
        &self,
        shared: &Shared,
        reference: &str,
        job: &Job,
    ) -> Result<String, ManagerError> {
        let staging = state_subdir(shared, STAGING)?;
        let opts = pull_options(shared)?;
        job.set_progress(-1.0, "resolving");
        let progress = |bytes: u64| job.set_progress(-1.0, &format!("downloading: {bytes} bytes"));
        let pulled = fetch(reference, &staging, &opts, &progress)
            .await
            .map_err(from_oci)?;
        check_version(shared, &pulled)?;
        job.set_progress(-1.0, "installing");
        let _one = self.commit.lock().await;
        let previous_dir = state_subdir(shared, PREVIOUS)?;
        let plugins_dir = shared.manager.config().plugins_dir.clone();
        let name = pulled.config.name.clone();
        let file_name = pulled.config.kind.file_name(&name);
        let state_dir = shared.manager.state_dir().to_owned();
        let mut records = Records::load(&state_dir).map_err(|e| local(e.to_string()))?;
        // The version in place (installed or copied there by hand) is kept for rollback.
        let in_place = plugins_dir.join(&file_name);
        let kept = in_place.exists();
        let kept_file = previous_dir.join(&file_name);
        undo::place(&previous_dir, &in_place, &kept_file)?;
        undo::place(
            &previous_dir,
            &dynplug_core::signature::signature_path(&in_place),
            &dynplug_core::signature::signature_path(&kept_file),
        )?;
        let version = Version {
            reference: reference.to_owned(),
            digest: pulled.digest.to_string(),
            file_digest: pulled.file_digest.to_string(),
            version: pulled.config.version.clone(),
            installed_usec: now_usec(),
        };
        let previous = match records.plugins.get(&name) {
            Some(old) if kept => Some(old.current.clone()),
            _ if kept => Some(Version {
                reference: String::new(),
                digest: String::new(),
                file_digest: String::new(),
                version: "(not installed from a registry)".into(),
                installed_usec: 0,
            }),
            _ => None,
        };
        let (tag, verdict) = (pulled.tag.clone(), pulled.verdict.to_string());
        let path = pulled.install_into(&plugins_dir).map_err(from_oci)?;
        records.plugins.insert(
            name.clone(),
            Entry {
                current: version.clone(),
                previous,
            },
        );
        records.save(&state_dir).map_err(|e| local(e.to_string()))?;
        let applied = shared
            .reload()
            .await
            .map_err(|e| local(format!("installed, but applying it failed: {e}")))?;
        tracing::info!(plugin = %name, version = %version.version, digest = %version.digest, "installed from a registry");
        Ok(serde_json::json!({
            "name": name, "version": version.version, "digest": version.digest,
            "file_digest": version.file_digest, "tag": tag,
            "path": path.display().to_string(), "signature": verdict, "applied": applied,
        })
        .to_string())
    }

    /// Every plugin installed from a registry.
    pub fn list(&self, shared: &Shared) -> Result<Records, ManagerError> {
        Records::load(shared.manager.state_dir()).map_err(|e| local(e.to_string()))
    }
}
