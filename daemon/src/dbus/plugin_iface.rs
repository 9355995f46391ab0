//! `org.dynplug.Plugin`: one object per plugin under `/org/dynplug/Manager/plugins/`.

use std::collections::HashMap;

use dynplug_core::{Manager, PluginInfo};
use zbus::interface;
use zbus::{OwnedVariant, Variant};

use super::errors::DynplugError;

/// The object of one plugin.
pub struct PluginIface {
    pub(crate) manager: Manager,
    pub(crate) name: String,
}

impl PluginIface {
    fn info(&self) -> zbus::fdo::Result<PluginInfo> {
        self.manager
            .info(&self.name)
            .map_err(|e| zbus::fdo::Error::UnknownObject(e.to_string()))
    }
}

fn owned<'a>(v: impl Into<Variant<'a>>) -> OwnedVariant {
    OwnedVariant::try_from(v.into()).expect("plain values have no file descriptors")
}

/// A plugin's details as a D-Bus dictionary (see `GetPlugin`).
pub(crate) fn info_dict(p: &PluginInfo) -> HashMap<String, OwnedVariant> {
    let state = match &p.status {
        dynplug_core::PluginStatus::Loaded => "loaded",
        dynplug_core::PluginStatus::Pending => "pending",
        dynplug_core::PluginStatus::Failed(_) => "failed",
    };
    let workers = p.workers.clone().unwrap_or_default();
    let isolation = match p.isolation {
        dynplug_core::config::Isolation::InProcess => "in-process",
        dynplug_core::config::Isolation::Process => "process",
    };
    let sandbox: HashMap<String, String> = p.sandbox().into_iter().collect();
    let entries: [(&str, OwnedVariant); 28] = [
        ("Name", owned(p.name.as_str())),
        ("Version", owned(p.version.as_str())),
        ("Description", owned(p.description.as_str())),
        ("Path", owned(p.path.display().to_string())),
        ("Enabled", owned(p.enabled)),
        ("Loaded", owned(p.loaded())),
        ("State", owned(state)),
        ("Error", owned(p.error().unwrap_or_default())),
        ("AbiVersion", owned(p.abi_version)),
        ("Service", owned(p.service)),
        (
            "ServiceState",
            owned(if p.service {
                p.service_state.to_string()
            } else {
                String::new()
            }),
        ),
        (
            "TimeoutMs",
            owned(u64::try_from(p.timeout.as_millis()).unwrap_or(u64::MAX)),
        ),
        (
            "MaxConcurrency",
            owned(u32::try_from(p.max_concurrency).unwrap_or(u32::MAX)),
        ),
        ("Calls", owned(p.stats.calls)),
        ("Errors", owned(p.stats.errors)),
        ("Timeouts", owned(p.stats.timeouts)),
        ("TotalUs", owned(p.stats.total_us)),
        ("LastUs", owned(p.stats.last_us)),
        (
            "LastError",
            owned(p.stats.last_error.clone().unwrap_or_default()),
        ),
        ("Isolation", owned(isolation)),
        (
            "Workers",
            owned(u32::try_from(workers.running).unwrap_or(u32::MAX)),
        ),
        ("WorkerRestarts", owned(workers.restarts)),
        ("WorkerCrashes", owned(workers.crashes)),
        ("Quarantined", owned(workers.quarantined.is_some())),
        ("WorkerCpuUsec", owned(workers.usage.cpu_usec)),
        ("WorkerRssBytes", owned(workers.usage.rss_bytes)),
        (
            "VersionRequirement",
            owned(p.version_requirement.clone().unwrap_or_default()),
        ),
        ("Sandbox", owned(sandbox)),
    ];
    entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

#[interface(
    name = "org.dynplug.Plugin",
    proxy(default_service = "org.dynplug.Manager", visibility = "pub")
)]
impl PluginIface {
    /// Runs this plugin on `input`.
    async fn execute(&self, input: String) -> Result<String, DynplugError> {
        let output = self.manager.execute(&self.name, input).await?;
        super::errors::fit_for_bus(&self.name, output)
    }

    /// The plugin's name.
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// Its version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.version)
    }

    /// Its description.
    #[zbus(property(emits_changed_signal = "const"))]
    fn description(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.description)
    }

    /// The library file.
    #[zbus(property(emits_changed_signal = "const"))]
    fn path(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.path.display().to_string())
    }

    /// Whether it is enabled.
    #[zbus(property)]
    fn enabled(&self) -> zbus::fdo::Result<bool> {
        Ok(self.info()?.enabled)
    }

    /// Whether its instance exists and is usable.
    #[zbus(property)]
    fn loaded(&self) -> zbus::fdo::Result<bool> {
        Ok(self.info()?.loaded())
    }

    /// Why it is unusable; empty when it is fine.
    #[zbus(property)]
    fn error(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.error().unwrap_or_default().to_owned())
    }

    /// Its service's state: stopped, running or restarting (empty for non-services).
    #[zbus(property)]
    fn service_state(&self) -> zbus::fdo::Result<String> {
        let info = self.info()?;
        Ok(if info.service {
            info.service_state.as_str().to_owned()
        } else {
            String::new()
        })
    }

    /// Calls made since the daemon started. Not signalled on every call: read it.
    #[zbus(property(emits_changed_signal = "false"))]
    fn calls(&self) -> zbus::fdo::Result<u64> {
        Ok(self.info()?.stats.calls)
    }

    /// Calls that failed.
    #[zbus(property)]
    fn errors(&self) -> zbus::fdo::Result<u64> {
        Ok(self.info()?.stats.errors)
    }

    /// Calls that timed out.
    #[zbus(property)]
    fn timeouts(&self) -> zbus::fdo::Result<u64> {
        Ok(self.info()?.stats.timeouts)
    }

    /// Message of the last failed call.
    #[zbus(property)]
    fn last_error(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.stats.last_error.unwrap_or_default())
    }

    /// Duration of the last call, in microseconds.
    #[zbus(property(emits_changed_signal = "false"))]
    fn last_duration_usec(&self) -> zbus::fdo::Result<u64> {
        Ok(self.info()?.stats.last_us)
    }
}
