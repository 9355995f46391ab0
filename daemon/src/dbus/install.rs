//! The D-Bus rows of what was installed from registries.

use dynplug_dbus::{DynplugError, InstalledRow};

use super::errors::OrDbus;
use crate::install::Installer;
use crate::state::Shared;

/// One [`InstalledRow`] per plugin installed from a registry.
pub(crate) fn rows(
    installer: &Installer,
    shared: &Shared,
) -> Result<Vec<InstalledRow>, DynplugError> {
    let records = installer.list(shared).or_dbus()?;
    Ok(records
        .plugins
        .into_iter()
        .map(|(name, entry)| InstalledRow {
            name,
            version: entry.current.version,
            reference: entry.current.reference,
            digest: entry.current.digest,
            installed_usec: entry.current.installed_usec,
            previous_version: entry.previous.map(|p| p.version).unwrap_or_default(),
        })
        .collect())
}
