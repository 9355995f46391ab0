//! Precompiled artifacts kept on disk, so a component is compiled once, not at every
//! start (a Python component takes seconds to compile, milliseconds to load).
//!
//! An artifact is native code that `Component::deserialize` maps and runs without
//! checking it, so it is never trusted as found:
//! - the directory must be private (owned by this user, no access for group or
//!   others): otherwise the cache is not used at all;
//! - a file is read only if it is a regular file owned by this user and not writable
//!   by group or others (opened without following links);
//! - its name is its key: the SHA-256 of the component's bytes and the fingerprint of
//!   the engine (wasmtime's version and every setting that changes the code);
//! - its first 32 bytes are the SHA-256 of the rest, checked before deserializing (a
//!   truncated or corrupt file is recompiled, never loaded); wasmtime checks again
//!   that the artifact was made by this version with these settings.
//!
//! The digest catches corruption, not an attacker: who can write the private
//! directory is root, who could replace the daemon anyway.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::engine::{hex, Shared};

/// Where a loaded component's code came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Artifact {
    /// Compiled now; no cache (none configured, or not private).
    Compiled,
    /// Compiled now and stored for next time.
    Stored,
    /// Loaded from a stored artifact.
    Cached,
    /// A stored artifact was refused (the reason), and the component recompiled.
    Recompiled(String),
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Makes `dir` if needed (mode 0700) and says whether it may hold artifacts.
fn private_dir(dir: &Path) -> Result<(), String> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if meta.uid() != euid() || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not private (owner {}, mode {:o}): artifacts are not kept there",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

fn key(shared: &Shared, wasm: &[u8]) -> String {
    format!(
        "{}-{}.cwasm",
        hex(&Sha256::digest(wasm)[..16]),
        shared.fingerprint
    )
}

/// Reads the artifact at `path`, checking its owner, mode and digest: the code only.
fn read_checked(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.uid() != euid() || meta.mode() & 0o022 != 0 {
        return Err("not a private regular file of this user".into());
    }
    let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut data).map_err(|e| e.to_string())?;
    if data.len() < 32 {
        return Err("truncated".into());
    }
    let (digest, code) = data.split_at(32);
    if Sha256::digest(code).as_slice() != digest {
        return Err("its digest does not match its contents".into());
    }
    Ok(Some(code.to_vec()))
}

/// Writes `code` under `path` with its digest, through a new private temporary file
/// renamed into place (readers see the old file or the whole new one).
fn store(path: &Path, code: &[u8]) -> std::io::Result<()> {
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(&Sha256::digest(code))?;
    file.write_all(code)?;
    file.sync_all()?;
    std::fs::rename(&temp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

/// The compiled component for `wasm`, from the cache in `dir` when a good artifact is
/// there, compiled (and stored) otherwise.
pub(crate) fn compile(
    shared: &Shared,
    wasm: &[u8],
    dir: Option<&Path>,
) -> Result<(Component, Artifact), String> {
    let fresh = || Component::new(&shared.engine, wasm).map_err(|e| format!("{e:#}"));
    let Some(dir) = dir else {
        return Ok((fresh()?, Artifact::Compiled));
    };
    if private_dir(dir).is_err() {
        return Ok((fresh()?, Artifact::Compiled));
    }
    let path: PathBuf = dir.join(key(shared, wasm));
    let refused = match read_checked(&path) {
        Ok(Some(code)) => {
            // SAFETY: `code` is an artifact this user stored in a private directory
            // (owner and mode checked on the open file, no link followed), under a
            // key naming these exact component bytes and this engine, and its digest
            // matches: it is the bytes `Component::serialize` wrote for this
            // component. Wasmtime checks its header against this engine again.
            match unsafe { Component::deserialize(&shared.engine, &code) } {
                Ok(component) => return Ok((component, Artifact::Cached)),
                Err(e) => Some(format!("wasmtime refused it: {e}")),
            }
        }
        Ok(None) => None,
        Err(reason) => Some(reason),
    };
    let component = fresh()?;
    let stored = component
        .serialize()
        .map_err(|e| e.to_string())
        .and_then(|code| store(&path, &code).map_err(|e| e.to_string()));
    Ok((
        component,
        match (refused, stored) {
            (Some(reason), _) => Artifact::Recompiled(reason),
            (None, Ok(())) => Artifact::Stored,
            (None, Err(_)) => Artifact::Compiled,
        },
    ))
}

/// The artifact files in `dir` (for tests and `inspect`).
pub fn artifacts(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    found.sort();
    found
}
