//! `org.dynplug.Plugin`: one object per plugin under `/org/dynplug/Manager/plugins/`.

use std::sync::Arc;

use dynplug_core::{Manager, PluginInfo};
use dynplug_dbus::{DynplugError, PluginDetails};
use zbus::message::Header;
use zbus::{interface, Connection};

use super::authority::{Action, Authority, Caller, Request};
use super::errors::OrDbus;

/// The object of one plugin.
pub struct PluginIface {
    pub(crate) manager: Manager,
    pub(crate) name: String,
    pub(crate) authority: Arc<Authority>,
}

impl PluginIface {
    fn info(&self) -> zbus::fdo::Result<PluginInfo> {
        self.manager
            .info(&self.name)
            .map_err(|e| zbus::fdo::Error::UnknownObject(e.to_string()))
    }
}

/// A plugin's details as `GetPlugin` returns them.
pub(crate) fn details(p: &PluginInfo) -> PluginDetails {
    let state = match &p.status {
        dynplug_core::PluginStatus::Loaded => "loaded",
        dynplug_core::PluginStatus::Pending => "pending",
        dynplug_core::PluginStatus::Failed(_) => "failed",
    };
    let workers = p.workers.clone().unwrap_or_default();
    let isolation = match p.isolation {
        dynplug_core::config::Isolation::InProcess => "in-process",
        dynplug_core::config::Isolation::Process => "process",
        dynplug_core::config::Isolation::Wasm => "wasm",
    };
    PluginDetails {
        name: Some(p.name.clone()),
        version: Some(p.version.clone()),
        description: Some(p.description.clone()),
        path: Some(p.path.display().to_string()),
        enabled: Some(p.enabled),
        loaded: Some(p.loaded()),
        state: Some(state.to_owned()),
        error: Some(p.error().unwrap_or_default().to_owned()),
        abi_version: Some(p.abi_version),
        service: Some(p.service),
        service_state: Some(if p.service {
            p.service_state.to_string()
        } else {
            String::new()
        }),
        timeout_ms: Some(u64::try_from(p.timeout.as_millis()).unwrap_or(u64::MAX)),
        max_concurrency: Some(u32::try_from(p.max_concurrency).unwrap_or(u32::MAX)),
        calls: Some(p.stats.calls),
        errors: Some(p.stats.errors),
        timeouts: Some(p.stats.timeouts),
        total_us: Some(p.stats.total_us),
        last_us: Some(p.stats.last_us),
        last_error: Some(p.stats.last_error.clone().unwrap_or_default()),
        isolation: Some(isolation.to_owned()),
        call_path: Some(p.call_path.to_owned()),
        workers: Some(u32::try_from(workers.running).unwrap_or(u32::MAX)),
        worker_restarts: Some(workers.restarts),
        worker_crashes: Some(workers.crashes),
        quarantined: Some(
            workers.quarantined.is_some() || p.wasm.as_ref().is_some_and(|w| w.quarantined),
        ),
        worker_cpu_usec: Some(workers.usage.cpu_usec),
        worker_rss_bytes: Some(workers.usage.rss_bytes),
        version_requirement: Some(p.version_requirement.clone().unwrap_or_default()),
        sandbox: Some(p.sandbox().into_iter().collect()),
        settings_schema: Some(p.settings_schema.clone().unwrap_or_default()),
        signature: Some(p.signature.clone()),
        wasm_traps: p.wasm.as_ref().map(|w| w.traps),
        wasm_peak_memory_bytes: p.wasm.as_ref().map(|w| w.peak_memory),
        wasm_memory_limit_bytes: p.wasm.as_ref().map(|w| w.memory_limit),
        wasm_compile_us: p.wasm.as_ref().map(|w| w.compile_us),
        wasm_artifact: p.wasm.as_ref().map(|w| w.artifact.clone()),
    }
}

/// The server side of `org.dynplug.Plugin`; clients use `dynplug_dbus::PluginProxy`.
#[interface(name = "org.dynplug.Plugin")]
impl PluginIface {
    /// Runs this plugin on `input`.
    async fn execute(
        &self,
        input: String,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, DynplugError> {
        let request = Request {
            action: Action::Execute,
            verb: "execute",
            plugin: Some(&self.name),
        };
        self.authority
            .check(&Caller::new(conn, &header), request)
            .await?;
        let output = self.manager.execute(&self.name, input).await.or_dbus()?;
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
