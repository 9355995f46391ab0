//! `Rollback(name)` and `Remove(name)` of plugins the daemon installed from registries:
//! the version kept in `STATE_DIR/previous/` swaps places with the one in plugins_dir
//! (each put in place by a rename, never a partial file), or the plugin's file and
//! signature leave plugins_dir; the record follows and the daemon reloads.

use std::path::{Path, PathBuf};

use dynplug_core::error::{ManagerError, RegistryFailure};
use dynplug_core::signature::signature_path;
use dynplug_oci::artifact::Kind;
use dynplug_oci::pull::{self, STAGING_PREFIX};

use super::record::Records;
use super::{local, Installer, PREVIOUS};
use crate::state::Shared;

fn not_found(message: String) -> ManagerError {
    ManagerError::Registry {
        kind: RegistryFailure::NotFound,
        message,
    }
}

/// Puts a copy of `from` at `dest` (in `dir`) by a rename from a synced dot-file, or
/// removes `dest` when `from` does not exist.
pub(super) fn place(dir: &Path, from: &Path, dest: &Path) -> Result<(), ManagerError> {
    if !from.exists() {
        return match std::fs::remove_file(dest) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(local(format!("cannot remove {}: {e}", dest.display())))
            }
            _ => Ok(()),
        };
    }
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!("{STAGING_PREFIX}{}-{name}", std::process::id()));
    let io = |e: std::io::Error| local(format!("cannot put {} in place: {e}", dest.display()));
    let _ = std::fs::remove_file(&tmp);
    std::fs::copy(from, &tmp).map_err(io)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, dest))
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(io)
}

/// The paths of a plugin's file and signature in `dir`.
fn files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let file = dir.join(Kind::Native.file_name(name));
    let sig = signature_path(&file);
    (file, sig)
}

impl Installer {
    /// Swaps the installed version of `name` with the one kept before it.
    pub async fn rollback(&self, shared: &Shared, name: &str) -> Result<String, ManagerError> {
        let _one = self.commit.lock().await;
        let state_dir = shared.manager.state_dir().to_owned();
        let mut records = Records::load(&state_dir).map_err(|e| local(e.to_string()))?;
        let entry = records
            .plugins
            .get_mut(name)
            .ok_or_else(|| not_found(format!("`{name}` was not installed from a registry")))?;
        let Some(previous) = entry.previous.take() else {
            return Err(not_found(format!(
                "no previous version of `{name}` is kept"
            )));
        };
        let plugins_dir = shared.manager.config().plugins_dir.clone();
        let kept_dir = state_dir.join(PREVIOUS);
        pull::clean_staging(&plugins_dir);
        let (kept, kept_sig) = files(&kept_dir, name);
        if !kept.exists() {
            return Err(not_found(format!("the previous file of `{name}` is gone")));
        }
        let (live, live_sig) = files(&plugins_dir, name);
        // The live version goes to a side name first, so neither copy is ever lost.
        let (swap, swap_sig) = files(&kept_dir, &format!("{name}.swap"));
        place(&kept_dir, &live, &swap)?;
        place(&kept_dir, &live_sig, &swap_sig)?;
        place(&plugins_dir, &kept_sig, &live_sig)?;
        place(&plugins_dir, &kept, &live)?;
        for (from, to) in [(&swap, &kept), (&swap_sig, &kept_sig)] {
            place(&kept_dir, from, to)?;
            let _ = std::fs::remove_file(from);
        }
        let current = std::mem::replace(&mut entry.current, previous);
        entry.previous = Some(current);
        let summary = format!(
            "{name} rolled back to {} (from {})",
            entry.current.version,
            entry.previous.as_ref().map_or("", |p| p.version.as_str())
        );
        records.save(&state_dir).map_err(|e| local(e.to_string()))?;
        shared
            .reload()
            .await
            .map_err(|e| local(format!("rolled back, but applying it failed: {e}")))?;
        tracing::info!(plugin = %name, "rolled back");
        Ok(summary)
    }

    /// Takes `name` (installed from a registry) out of plugins_dir and forgets it.
    pub async fn remove(&self, shared: &Shared, name: &str) -> Result<String, ManagerError> {
        let _one = self.commit.lock().await;
        let state_dir = shared.manager.state_dir().to_owned();
        let mut records = Records::load(&state_dir).map_err(|e| local(e.to_string()))?;
        let Some(entry) = records.plugins.remove(name) else {
            return Err(not_found(format!(
                "`{name}` was not installed from a registry"
            )));
        };
        let plugins_dir = shared.manager.config().plugins_dir.clone();
        let (live, live_sig) = files(&plugins_dir, name);
        let (kept, kept_sig) = files(&state_dir.join(PREVIOUS), name);
        // The file first: a signature without its file is never loaded.
        for path in [&live, &live_sig, &kept, &kept_sig] {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(local(format!("cannot remove {}: {e}", path.display())))
                }
                _ => {}
            }
        }
        records.save(&state_dir).map_err(|e| local(e.to_string()))?;
        shared
            .reload()
            .await
            .map_err(|e| local(format!("removed, but applying it failed: {e}")))?;
        tracing::info!(plugin = %name, "removed");
        Ok(format!("{name} {} removed", entry.current.version))
    }
}
