//! `org.dynplug.Manager` at `/org/dynplug/Manager`: thin shims over [`Shared`] and the
//! core manager, serving the contract of `dynplug_dbus` (whose `ManagerProxy` clients use).

use std::sync::Arc;

use dynplug_core::jobs::JobOwner;
use dynplug_dbus::{job_path, BulkResult, DynplugError, PluginDetails, PluginRow};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::OwnedObjectPath;
use zbus::{interface, Connection};

use super::authority::{Action, Authority, Caller, Request};
use super::errors::OrDbus;
use super::plugin_iface::details;
use crate::state::{ReloadError, Shared};

/// One [`BulkResult`] per (name, ok, message).
fn bulk(results: Vec<(String, bool, String)>) -> Bulk {
    results
        .into_iter()
        .map(|(name, ok, message)| BulkResult { name, ok, message })
        .collect()
}

/// The manager object.
pub struct ManagerIface {
    pub(crate) shared: Arc<Shared>,
    pub(crate) authority: Arc<Authority>,
    pub(crate) installer: Arc<crate::install::Installer>,
}

impl ManagerIface {
    /// Serves job `id`'s object and returns its path: served before the reply, so the
    /// caller can read it at once.
    async fn published(&self, conn: &Connection, id: u64) -> Result<OwnedObjectPath, DynplugError> {
        super::job_iface::publish_job(conn, &self.shared.manager, &self.authority, id).await?;
        OwnedObjectPath::try_from(job_path(id)).map_err(|e| DynplugError::Failed(e.to_string()))
    }

    /// Refuses the call unless the caller may do `verb` (of `action`) on `plugin`.
    async fn authorize(
        &self,
        caller: &Caller<'_, '_>,
        action: Action,
        verb: &str,
        plugin: Option<&str>,
    ) -> Result<(), DynplugError> {
        let request = Request {
            action,
            verb,
            plugin,
        };
        self.authority.check(caller, request).await
    }

    /// Enables or disables `names`, each as the caller is allowed to.
    async fn set_many(&self, caller: &Caller<'_, '_>, names: Vec<String>, on: bool) -> Bulk {
        let verb = if on { "enable" } else { "disable" };
        // One verdict per name, in the order asked; the allowed ones change together.
        let mut verdicts = Vec::with_capacity(names.len());
        let mut allowed = Vec::new();
        for name in &names {
            let verdict = self
                .authorize(caller, Action::Manage, verb, Some(name))
                .await;
            if verdict.is_ok() {
                allowed.push(name.clone());
            }
            verdicts.push(verdict);
        }
        let mut done = self.shared.set_many(&allowed, on).await.into_iter();
        let mut results = Vec::with_capacity(names.len());
        for (name, verdict) in names.into_iter().zip(verdicts) {
            match verdict {
                Ok(()) => results.extend(done.next()),
                Err(DynplugError::AccessDenied(m)) => results.push((name, false, m)),
                Err(e) => results.push((name, false, e.to_string())),
            }
        }
        bulk(results)
    }
}

type Bulk = Vec<BulkResult>;

/// The server side of `org.dynplug.Manager`; clients use `dynplug_dbus::ManagerProxy`.
#[interface(name = "org.dynplug.Manager")]
impl ManagerIface {
    /// Lists every plugin as (name, version, description, enabled, loaded, path). Files
    /// that failed to load are listed under their file name, not enabled, not loaded.
    async fn list_plugins(&self) -> Vec<PluginRow> {
        self.shared
            .manager
            .list()
            .into_iter()
            .map(|p| PluginRow {
                loaded: p.loaded(),
                path: p.path.display().to_string(),
                name: p.name,
                version: p.version,
                description: p.description,
                enabled: p.enabled,
            })
            .collect()
    }

    /// Everything known about one plugin, as a dictionary: Name, Version, Description,
    /// Path, Enabled, Loaded, State, Error, AbiVersion, Service, ServiceState, TimeoutMs,
    /// MaxConcurrency, Calls, Errors, Timeouts, TotalUs, LastUs, LastError, Isolation
    /// (in-process or process), CallPath (inline, threads or workers), Workers,
    /// WorkerRestarts, WorkerCrashes, Quarantined, VersionRequirement (the configured
    /// `version:` pin, empty if none), WorkerCpuUsec, WorkerRssBytes (CPU time and
    /// memory of the live workers), SettingsSchema (the JSON Schema its settings must
    /// follow, empty if it declares none), Signature (what checking its signature found).
    async fn get_plugin(&self, name: &str) -> Result<PluginDetails, DynplugError> {
        Ok(details(&self.shared.manager.info(name).or_dbus()?))
    }

    /// Runs plugin `name` on `input` and returns its output.
    async fn execute(
        &self,
        name: &str,
        input: String,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, DynplugError> {
        self.authorize(
            &Caller::new(conn, &header),
            Action::Execute,
            "execute",
            Some(name),
        )
        .await?;
        let output = self.shared.manager.execute(name, input).await.or_dbus()?;
        super::errors::fit_for_bus(name, output)
    }

    /// Enables a plugin (persisted across restarts). Returns false if it already was.
    async fn enable_plugin(
        &self,
        name: &str,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<bool, DynplugError> {
        self.authorize(
            &Caller::new(conn, &header),
            Action::Manage,
            "enable",
            Some(name),
        )
        .await?;
        Ok(self.shared.manager.enable(name).await.or_dbus()? == dynplug_core::Change::Changed)
    }

    /// Disables a plugin (persisted across restarts). Returns false if it already was.
    async fn disable_plugin(
        &self,
        name: &str,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<bool, DynplugError> {
        self.authorize(
            &Caller::new(conn, &header),
            Action::Manage,
            "disable",
            Some(name),
        )
        .await?;
        Ok(self.shared.manager.disable(name).await.or_dbus()? == dynplug_core::Change::Changed)
    }

    /// Enables several plugins; one (name, ok, message) per name, in order. The message
    /// is "changed", "unchanged" or the error.
    async fn enable_plugins(
        &self,
        names: Vec<String>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Bulk {
        self.set_many(&Caller::new(conn, &header), names, true)
            .await
    }

    /// Disables several plugins; one (name, ok, message) per name, in order.
    async fn disable_plugins(
        &self,
        names: Vec<String>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Bulk {
        self.set_many(&Caller::new(conn, &header), names, false)
            .await
    }

    /// Re-reads the configuration file and applies what changed. Fails with
    /// org.dynplug.Error.Config, leaving the old configuration in force, if the new one
    /// is invalid. Returns a summary of the changes.
    async fn reload(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, DynplugError> {
        self.authorize(&Caller::new(conn, &header), Action::Manage, "reload", None)
            .await?;
        self.shared.reload().await.map_err(|e| match e {
            ReloadError::Config(m) | ReloadError::Partial(m) => DynplugError::Config(m),
            ReloadError::Failed(m) => DynplugError::Failed(m),
        })
    }

    /// Starts plugin `name` on `input` as a job and returns its object at once; the job
    /// is owned by the caller's user (who, or root, may cancel it).
    async fn start_job(
        &self,
        name: &str,
        input: String,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<OwnedObjectPath, DynplugError> {
        let caller = Caller::new(conn, &header);
        self.authorize(&caller, Action::Execute, "start-job", Some(name))
            .await?;
        let uid = caller.uid().await?;
        let job = self
            .shared
            .manager
            .start_job(name, input, JobOwner::Uid(uid))
            .or_dbus()?;
        self.published(conn, job.id()).await
    }

    /// Installs a plugin from an OCI registry (or an image-layout archive) as a job
    /// owned by the caller; returns the job's object at once. See docs/registry.md.
    async fn install(
        &self,
        reference: &str,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<OwnedObjectPath, DynplugError> {
        let caller = Caller::new(conn, &header);
        self.authorize(&caller, Action::Install, "install", None)
            .await?;
        let uid = caller.uid().await?;
        let job = self
            .installer
            .start(&self.shared, reference, JobOwner::Uid(uid))
            .or_dbus()?;
        self.published(conn, job.id()).await
    }

    /// Swaps plugin `name` (installed from a registry) with the version kept before it,
    /// and reloads; returns a summary.
    async fn rollback(
        &self,
        name: &str,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, DynplugError> {
        self.authorize(
            &Caller::new(conn, &header),
            Action::Install,
            "rollback",
            Some(name),
        )
        .await?;
        self.installer.rollback(&self.shared, name).await.or_dbus()
    }

    /// Takes plugin `name` (installed from a registry) out of plugins_dir, forgets it
    /// and reloads; returns a summary.
    async fn remove(
        &self,
        name: &str,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, DynplugError> {
        self.authorize(
            &Caller::new(conn, &header),
            Action::Install,
            "remove",
            Some(name),
        )
        .await?;
        self.installer.remove(&self.shared, name).await.or_dbus()
    }

    /// Every plugin installed from a registry: (name, version, reference, digest,
    /// installed_usec, previous_version; empty when none is kept).
    async fn list_installed(&self) -> Result<Vec<dynplug_dbus::InstalledRow>, DynplugError> {
        super::install::rows(&self.installer, &self.shared)
    }

    /// Every job still known (running, or ended and kept), oldest first.
    async fn list_jobs(&self) -> Vec<OwnedObjectPath> {
        self.shared
            .manager
            .jobs()
            .list()
            .iter()
            .filter_map(|j| OwnedObjectPath::try_from(job_path(j.id())).ok())
            .collect()
    }

    /// Every plugin's counters, latency histogram, workers' CPU and memory and running
    /// jobs, and the daemon's own figures, in one call (open to every caller, as the
    /// properties are).
    #[zbus(out_args("daemon", "bounds_usec", "plugins"))]
    async fn get_stats(
        &self,
    ) -> (
        dynplug_dbus::DaemonStats,
        Vec<u64>,
        Vec<dynplug_dbus::PluginStats>,
    ) {
        let state = self.shared.lifecycle().as_str();
        super::stats::reply(self.shared.manager.sample(), state)
    }

    /// The daemon's version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    /// starting, running, reloading or stopping.
    #[zbus(property)]
    fn state(&self) -> String {
        self.shared.lifecycle().as_str().to_owned()
    }

    /// Number of plugins loaded (failed files not counted).
    #[zbus(property)]
    fn plugin_count(&self) -> u32 {
        u32::try_from(self.shared.manager.summary().plugins).unwrap_or(u32::MAX)
    }

    /// Number of enabled plugins.
    #[zbus(property)]
    fn enabled_count(&self) -> u32 {
        u32::try_from(self.shared.manager.summary().enabled).unwrap_or(u32::MAX)
    }

    /// Number of failed plugins and files.
    #[zbus(property)]
    fn failed_count(&self) -> u32 {
        u32::try_from(self.shared.manager.summary().failed).unwrap_or(u32::MAX)
    }

    /// Why the last reload was refused; empty if it succeeded.
    #[zbus(property)]
    fn last_reload_error(&self) -> String {
        self.shared.last_reload_error()
    }

    /// The configuration file in use.
    #[zbus(property(emits_changed_signal = "const"))]
    fn config_path(&self) -> String {
        self.shared.config_path().display().to_string()
    }

    /// When the daemon started, in microseconds since the Unix epoch.
    #[zbus(property(emits_changed_signal = "const"))]
    fn start_time_usec(&self) -> u64 {
        self.shared.started_usec()
    }

    /// Where the REST API listens (e.g. 127.0.0.1:8080); empty when it is disabled.
    #[zbus(property)]
    fn api_address(&self) -> String {
        self.shared
            .api_address()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// CPU time the daemon has used (user + system), in microseconds.
    #[zbus(property(emits_changed_signal = "false"))]
    fn cpu_usage_usec(&self) -> u64 {
        dynplug_core::resources::own().cpu_usec
    }

    /// The daemon's resident memory, in bytes.
    #[zbus(property(emits_changed_signal = "false"))]
    fn memory_rss_bytes(&self) -> u64 {
        dynplug_core::resources::own().rss_bytes
    }

    /// Calls being served right now.
    #[zbus(property(emits_changed_signal = "false"))]
    fn calls_in_flight(&self) -> u32 {
        u32::try_from(self.shared.manager.in_flight()).unwrap_or(u32::MAX)
    }

    /// A plugin was enabled or disabled, or its instance was created.
    #[zbus(signal)]
    pub(crate) async fn plugin_state_changed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        enabled: bool,
        loaded: bool,
    ) -> zbus::Result<()>;

    /// A plugin failed: load, configure, a crashed or timed-out call, its service ending.
    #[zbus(signal)]
    pub(crate) async fn plugin_failed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        error: &str,
    ) -> zbus::Result<()>;

    /// A service plugin's service changed state (stopped, running, restarting).
    #[zbus(signal)]
    pub(crate) async fn service_state_changed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        state: &str,
        detail: &str,
    ) -> zbus::Result<()>;

    /// A plugin published an event (within its budget).
    #[zbus(signal)]
    pub(crate) async fn plugin_event(
        emitter: &SignalEmitter<'_>,
        plugin: &str,
        event: &str,
        payload: &str,
    ) -> zbus::Result<()>;

    /// A reload finished: success, and a summary of changes or the reason for refusal.
    #[zbus(signal)]
    pub(crate) async fn config_reloaded(
        emitter: &SignalEmitter<'_>,
        success: bool,
        message: &str,
    ) -> zbus::Result<()>;
}
