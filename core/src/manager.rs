//! The manager: the one place that owns plugins and applies every operation on them.
//! D-Bus, REST and tests all go through it, so they see the same state at once.
//!
//! Plugin calls run on tokio's blocking pool, never on the async workers, each under
//! its plugin's timeout and concurrency limit: a hung plugin makes its own calls time
//! out and cannot hold up calls to other plugins.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, Notify};

use crate::config::{Config, Isolation};
use crate::error::{CallError, ConfigError, LoadError, ManagerError};
use crate::events::{Event, ServiceState};
use crate::library::{FileIdentity, PluginLibrary};
use crate::scan::{scan, Probe, Scanned};
use crate::services::Services;
use crate::slot::{CallStats, Limits, Slot};
use crate::state::{Quarantine, RuntimeState, StateStore};
use crate::trust::TrustPolicy;
pub use crate::views::{Change, PluginInfo, PluginStatus, ReloadReport, Summary};
use crate::worker::sandbox::{Identity, SandboxPolicy, Spec};
use crate::worker::{PoolConfig, PoolError, ResourceLimits, WorkerPool};

/// How long a service gets to stop on disable or shutdown.
const SERVICE_STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Registry {
    plugins: BTreeMap<String, Arc<Slot>>,
    failures: Vec<(PathBuf, LoadError)>,
}

/// Counts calls in flight so shutdown can wait for them.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
    /// Set when the stop timeout has passed: calls still running are answered
    /// `ShuttingDown` at once instead of vanishing with the process.
    abandon: tokio::sync::watch::Sender<bool>,
}

struct InFlightGuard<'a>(&'a InFlight);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

struct Inner {
    // std locks: held only to copy or swap small values, never across `.await`.
    registry: RwLock<Registry>,
    config: RwLock<Arc<Config>>,
    runtime: Mutex<RuntimeState>,
    store: StateStore,
    policy: TrustPolicy,
    events: broadcast::Sender<Event>,
    services: Services,
    in_flight: InFlight,
    shutting_down: AtomicBool,
    /// Serialises reloads and enable/disable so they never interleave.
    admin: tokio::sync::Mutex<()>,
    /// The program started as `PROGRAM --worker LIBRARY` for isolated plugins.
    worker_program: Option<PathBuf>,
}

/// The plugin manager. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager").finish_non_exhaustive()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Manager {
    /// Creates a manager, loads the plugins of `config` and starts their services.
    /// Runtime state is kept in `state_dir`. Must run inside a tokio runtime.
    pub async fn start(
        config: Config,
        state_dir: &Path,
        policy: TrustPolicy,
    ) -> Result<(Manager, ReloadReport), ManagerError> {
        Manager::start_with(config, state_dir, policy, None).await
    }

    /// Like [`Manager::start`], with the worker program for plugins configured with
    /// `isolation: process` (the daemon passes its own executable; it serves
    /// `--worker LIBRARY`). Without one, such plugins are marked failed.
    pub async fn start_with(
        config: Config,
        state_dir: &Path,
        policy: TrustPolicy,
        worker_program: Option<PathBuf>,
    ) -> Result<(Manager, ReloadReport), ManagerError> {
        let store = StateStore::new(state_dir);
        store.remove_stale_temporaries();
        let runtime = store
            .load()
            .map_err(|e| ConfigError::file(store.path(), e))?;
        let (events, _) = broadcast::channel(1024);
        let manager = Manager {
            inner: Arc::new(Inner {
                registry: RwLock::new(Registry::default()),
                config: RwLock::new(Arc::new(Config::default())),
                runtime: Mutex::new(runtime),
                store,
                policy,
                services: Services::new(events.clone(), SERVICE_STOP_TIMEOUT),
                events,
                in_flight: InFlight::default(),
                shutting_down: AtomicBool::new(false),
                admin: tokio::sync::Mutex::new(()),
                worker_program,
            }),
        };
        let report = manager.apply(config, true).await?;
        Ok((manager, report))
    }

    /// Subscribes to lifecycle events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&read(&self.inner.config))
    }

    fn slot(&self, name: &str) -> Result<Arc<Slot>, ManagerError> {
        read(&self.inner.registry)
            .plugins
            .get(name)
            .cloned()
            .ok_or_else(|| ManagerError::NotFound(name.to_owned()))
    }

    fn info_of(&self, slot: &Slot) -> PluginInfo {
        let limits = slot.limits();
        let workers = slot.pool.as_ref().map(|p| p.status());
        let status = match (slot.loaded(), slot.failure(), &workers) {
            (_, Some(reason), _) => PluginStatus::Failed(reason),
            (_, None, Some(w)) => match &w.quarantined {
                Some(reason) => PluginStatus::Failed(reason.clone()),
                None => PluginStatus::Loaded,
            },
            (Some(_), None, None) => PluginStatus::Loaded,
            (None, None, None) => PluginStatus::Pending,
        };
        PluginInfo {
            name: slot.name().to_owned(),
            version: slot.library.version().to_owned(),
            description: slot.library.description().to_owned(),
            path: slot.library.path().to_owned(),
            enabled: slot.enabled(),
            status,
            abi_version: slot.library.abi_version(),
            service: slot.library.is_service(),
            service_state: self.inner.services.state(slot.name()),
            timeout: limits.timeout,
            max_concurrency: limits.max_concurrency,
            stats: slot.stats(),
            isolation: if slot.pool.is_some() {
                Isolation::Process
            } else {
                Isolation::InProcess
            },
            version_requirement: read(&self.inner.config).version_requirement(slot.name()),
            workers,
        }
    }

    fn failed_info(path: &Path, error: &LoadError) -> PluginInfo {
        PluginInfo {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            version: String::new(),
            description: String::new(),
            path: path.to_owned(),
            enabled: false,
            status: PluginStatus::Failed(error.to_string()),
            abi_version: match error {
                LoadError::AbiMismatch { found, .. } => *found,
                _ => 0,
            },
            service: false,
            service_state: ServiceState::Stopped,
            timeout: Duration::ZERO,
            max_concurrency: 0,
            stats: CallStats::default(),
            isolation: Isolation::InProcess,
            version_requirement: None,
            workers: None,
        }
    }

    /// Every plugin by name, then every file that failed to load (named by file name).
    pub fn list(&self) -> Vec<PluginInfo> {
        let (slots, failures) = {
            let reg = read(&self.inner.registry);
            (
                reg.plugins.values().cloned().collect::<Vec<_>>(),
                reg.failures.clone(),
            )
        };
        let mut all: Vec<PluginInfo> = slots.iter().map(|s| self.info_of(s)).collect();
        all.extend(failures.iter().map(|(p, e)| Self::failed_info(p, e)));
        all
    }

    /// One plugin by name, or a failed file by file name.
    pub fn info(&self, name: &str) -> Result<PluginInfo, ManagerError> {
        if let Ok(slot) = self.slot(name) {
            return Ok(self.info_of(&slot));
        }
        let reg = read(&self.inner.registry);
        reg.failures
            .iter()
            .find(|(p, _)| p.file_name().is_some_and(|f| f == name))
            .map(|(p, e)| Self::failed_info(p, e))
            .ok_or_else(|| ManagerError::NotFound(name.to_owned()))
    }

    /// The names of all plugins.
    pub fn names(&self) -> Vec<String> {
        read(&self.inner.registry).plugins.keys().cloned().collect()
    }

    /// Counts over all plugins.
    pub fn summary(&self) -> Summary {
        let reg = read(&self.inner.registry);
        let failed_instances = reg
            .plugins
            .values()
            .filter(|s| s.failure().is_some())
            .count();
        Summary {
            plugins: reg.plugins.len(),
            enabled: reg.plugins.values().filter(|s| s.enabled()).count(),
            failed: reg.failures.len() + failed_instances,
        }
    }

    /// Runs `name` on `input`.
    pub async fn execute(&self, name: &str, input: String) -> Result<String, ManagerError> {
        let inner = &self.inner;
        if inner.shutting_down.load(Ordering::Acquire) {
            return Err(ManagerError::ShuttingDown);
        }
        let max = read(&inner.config).max_input_bytes;
        if input.len() > max {
            return Err(ManagerError::InvalidArgument(format!(
                "input is {} bytes, more than the {max} allowed (max_input_bytes)",
                input.len()
            )));
        }
        let slot = self.slot(name)?;
        if !slot.enabled() {
            return Err(ManagerError::Disabled(name.to_owned()));
        }
        if let Some(reason) = slot.failure() {
            return Err(ManagerError::Unavailable {
                name: name.to_owned(),
                reason,
            });
        }
        inner.in_flight.count.fetch_add(1, Ordering::AcqRel);
        let _guard = InFlightGuard(&inner.in_flight);
        let limits = slot.limits();
        let timeout = limits.timeout;
        let began = Instant::now();
        let (retries, idempotent) = {
            let config = read(&inner.config);
            let p = config.plugin(name);
            (p.retries, p.idempotent)
        };
        let mut attempt = 0;
        let mut abandoned = inner.in_flight.abandon.subscribe();
        let calls = async {
            loop {
                let outcome = if let Some(pool) = &slot.pool {
                    Ok(self.execute_isolated(pool, &slot, &input, timeout).await)
                } else {
                    self.execute_in_process(
                        Arc::clone(&slot),
                        limits.clone(),
                        input.clone(),
                        timeout,
                    )
                    .await
                };
                let result = outcome.unwrap_or_else(|_| {
                    Err(ManagerError::Timeout {
                        name: name.to_owned(),
                        timeout,
                    })
                });
                // Only failures of the machinery are retried: a crashed or restarting worker,
                // and a timeout when the plugin says its calls may run twice. A plugin's own
                // error is an answer, not a fault.
                let transient = match &result {
                    Err(ManagerError::Call(CallError::Crashed { .. })) => true,
                    Err(ManagerError::Timeout { .. }) => idempotent,
                    _ => false,
                };
                if !transient || attempt >= retries || inner.shutting_down.load(Ordering::Acquire) {
                    break result;
                }
                attempt += 1;
                slot.record_retry();
                if let Err(e) = &result {
                    tracing::warn!(plugin = name, attempt, error = %e, "retrying call");
                }
                tokio::time::sleep(Duration::from_millis(50) * 2u32.saturating_pow(attempt.min(6)))
                    .await;
            }
        };
        let result = tokio::select! {
            result = calls => result,
            _ = abandoned.wait_for(|a| *a) => Err(ManagerError::ShuttingDown),
        };
        let elapsed = began.elapsed();
        match &result {
            Ok(_) => {
                slot.record(elapsed, Ok(()));
                tracing::debug!(
                    plugin = name,
                    duration_us = elapsed.as_micros() as u64,
                    "executed"
                );
            }
            Err(e) => {
                let message = e.to_string();
                slot.record(
                    elapsed,
                    Err((&message, matches!(e, ManagerError::Timeout { .. }))),
                );
                tracing::warn!(plugin = name, duration_us = elapsed.as_micros() as u64, error = %message, "execute failed");
                if matches!(
                    e,
                    ManagerError::Call(CallError::Panicked { .. } | CallError::Crashed { .. })
                        | ManagerError::Timeout { .. }
                ) {
                    let _ = inner.events.send(Event::PluginFailed {
                        name: name.to_owned(),
                        error: message,
                    });
                }
            }
        }
        result
    }

    /// An in-process call: on the blocking pool, under the concurrency limit.
    async fn execute_in_process(
        &self,
        call_slot: Arc<Slot>,
        limits: Limits,
        input: String,
        timeout: Duration,
    ) -> Result<Result<String, ManagerError>, tokio::time::error::Elapsed> {
        let name = call_slot.name().to_owned();
        let limits_max_output = limits.max_output;
        tokio::time::timeout(timeout, async move {
            let permit = limits
                .permits
                .acquire_owned()
                .await
                .map_err(|_| ManagerError::ShuttingDown)?;
            let call = tokio::task::spawn_blocking(move || {
                let _permit = permit; // released only when the plugin returns
                let instance = call_slot
                    .instance()
                    .map_err(|e| ManagerError::Unavailable {
                        name: call_slot.name().to_owned(),
                        reason: e.to_string(),
                    })?;
                instance
                    .execute_bounded(&input, limits_max_output)
                    .map_err(ManagerError::from)
            });
            call.await.map_err(|e| {
                ManagerError::Call(CallError::Panicked {
                    plugin: name.to_owned(),
                    message: e.to_string(),
                })
            })?
        })
        .await
    }

    /// A call in a worker process. A crash that tips the plugin into quarantine is
    /// recorded in the runtime state, keyed by the library file's identity.
    async fn execute_isolated(
        &self,
        pool: &WorkerPool,
        slot: &Slot,
        input: &str,
        timeout: Duration,
    ) -> Result<String, ManagerError> {
        let name = slot.name().to_owned();
        let (error, quarantined) = match pool.call(input, timeout).await {
            Ok(output) => return Ok(output),
            Err(pair) => pair,
        };
        if let Some(reason) = quarantined {
            tracing::error!(plugin = %name, error = %reason, "plugin quarantined");
            let identity = slot.library.identity();
            let record = Quarantine {
                path: slot.library.path().to_owned(),
                size: identity.size,
                mtime_ns: i64::try_from(identity.mtime_ns).unwrap_or(i64::MAX),
                reason: reason.clone(),
            };
            let mut runtime = lock(&self.inner.runtime);
            runtime.quarantined.insert(name.clone(), record);
            if let Err(e) = self.inner.store.save(&runtime) {
                tracing::warn!(error = %e, "cannot save the quarantine");
            }
            drop(runtime);
            let _ = self.inner.events.send(Event::PluginFailed {
                name: name.clone(),
                error: reason,
            });
        }
        Err(match error {
            PoolError::Call(e) => ManagerError::Call(e),
            PoolError::Crashed(message) => ManagerError::Call(CallError::Crashed {
                plugin: name,
                message,
            }),
            PoolError::Timeout => ManagerError::Timeout { name, timeout },
            PoolError::Quarantined(reason) | PoolError::Start(reason) => {
                ManagerError::Unavailable { name, reason }
            }
            PoolError::OutputTooLarge(limit) => ManagerError::Call(CallError::OutputTooLarge {
                plugin: name,
                limit,
            }),
            PoolError::Protocol(reason) => ManagerError::Call(CallError::Protocol {
                plugin: name,
                reason,
            }),
        })
    }

    /// Enables `name` and persists it; starts its service if it has one.
    pub async fn enable(&self, name: &str) -> Result<Change, ManagerError> {
        self.set_enabled(name, true).await
    }

    /// Disables `name` and persists it; stops its service if it has one.
    pub async fn disable(&self, name: &str) -> Result<Change, ManagerError> {
        self.set_enabled(name, false).await
    }

    /// Enables (or disables) several plugins; one result per name, in order.
    pub async fn set_enabled_many(
        &self,
        names: &[String],
        on: bool,
    ) -> Vec<(String, Result<Change, ManagerError>)> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            out.push((name.clone(), self.set_enabled(name, on).await));
        }
        out
    }

    async fn set_enabled(&self, name: &str, on: bool) -> Result<Change, ManagerError> {
        let _admin = self.inner.admin.lock().await;
        let slot = self.slot(name).map_err(|e| {
            if self.info(name).is_ok() {
                ManagerError::Unavailable {
                    name: name.to_owned(),
                    reason: "the file failed to load; see `info`".into(),
                }
            } else {
                e
            }
        })?;
        if on {
            if let Some(reason) = slot.failure() {
                return Err(ManagerError::Unavailable {
                    name: name.to_owned(),
                    reason,
                });
            }
        }
        {
            let mut runtime = lock(&self.inner.runtime);
            let before = runtime.enabled.insert(name.to_owned(), on);
            if before != Some(on) {
                if let Err(e) = self.inner.store.save(&runtime) {
                    match before {
                        Some(b) => runtime.enabled.insert(name.to_owned(), b),
                        None => runtime.enabled.remove(name),
                    };
                    return Err(ManagerError::State(e));
                }
            }
        }
        let released = on && self.release_quarantine(&slot);
        if !slot.set_enabled(on) && !released {
            return Ok(Change::Unchanged);
        }
        tracing::info!(
            plugin = name,
            enabled = on,
            "plugin {}",
            if on { "enabled" } else { "disabled" }
        );
        self.after_toggle(&slot).await;
        Ok(Change::Changed)
    }

    /// Lifts a quarantine (an admin enabling the plugin); returns whether there was one.
    fn release_quarantine(&self, slot: &Slot) -> bool {
        let Some(pool) = &slot.pool else { return false };
        let was = pool.status().quarantined.is_some();
        pool.release();
        let mut runtime = lock(&self.inner.runtime);
        if runtime.quarantined.remove(slot.name()).is_some() {
            if let Err(e) = self.inner.store.save(&runtime) {
                tracing::warn!(error = %e, "cannot save runtime state");
            }
        }
        if was {
            tracing::info!(plugin = slot.name(), "quarantine lifted");
        }
        was
    }

    /// Brings the instance and service in line with the slot's enabled flag and
    /// announces the new state.
    async fn after_toggle(&self, slot: &Arc<Slot>) {
        if let Some(pool) = &slot.pool {
            // Isolated: workers start on the first call; disabling retires idle ones.
            // Services are not run for isolated plugins.
            if !slot.enabled() {
                pool.stop_idle().await;
            }
        } else if slot.enabled() {
            self.ensure_instance(slot).await;
            if slot.library.is_service() && slot.loaded().is_some() {
                self.inner.services.start(Arc::clone(slot));
            }
        } else if slot.library.is_service() {
            self.inner.services.stop(slot.name()).await;
        }
        let _ = self.inner.events.send(Event::PluginStateChanged {
            name: slot.name().to_owned(),
            enabled: slot.enabled(),
            loaded: self.info_of(slot).loaded(),
        });
    }

    /// Creates the instance now unless loading is lazy (services are never lazy).
    async fn ensure_instance(&self, slot: &Arc<Slot>) {
        let lazy = read(&self.inner.config).lazy_load && !slot.library.is_service();
        if lazy || slot.loaded().is_some() {
            return;
        }
        let s = Arc::clone(slot);
        let created = tokio::task::spawn_blocking(move || s.instance()).await;
        if let Ok(Err(e)) = created {
            tracing::error!(plugin = slot.name(), error = %e, "plugin failed to initialise");
            let _ = self.inner.events.send(Event::PluginFailed {
                name: slot.name().to_owned(),
                error: e.to_string(),
            });
        }
    }

    /// Applies a new, already validated configuration: rescans the plugins directory
    /// and changes only what differs. On error nothing has changed.
    pub async fn reload(&self, config: Config) -> Result<ReloadReport, ManagerError> {
        let result = self.apply(config, false).await;
        let event = match &result {
            Ok(report) => Event::ConfigReloaded {
                success: true,
                message: report.to_string(),
            },
            Err(e) => Event::ConfigReloaded {
                success: false,
                message: e.to_string(),
            },
        };
        let _ = self.inner.events.send(event);
        result
    }

    /// Reports a configuration that could not even be parsed, as a failed reload.
    pub fn reload_refused(&self, error: &ConfigError) {
        let _ = self.inner.events.send(Event::ConfigReloaded {
            success: false,
            message: error.to_string(),
        });
    }

    async fn apply(&self, config: Config, first: bool) -> Result<ReloadReport, ManagerError> {
        let _admin = self.inner.admin.lock().await;
        let old_config = self.config();
        let policy = self.inner.policy;
        let dir = config.plugins_dir.clone();
        // Everything that can fail happens before anything changes.
        let known: BTreeMap<PathBuf, (String, FileIdentity)> = read(&self.inner.registry)
            .plugins
            .values()
            .map(|s| {
                (
                    s.library.path().to_owned(),
                    (s.name().to_owned(), s.library.identity()),
                )
            })
            .collect();
        let probe = self.inner.worker_program.clone().map(|program| Probe {
            program,
            spec: sandbox_spec(&config, SandboxPolicy::default()),
            isolated: config
                .plugins
                .iter()
                .filter(|(_, p)| p.isolation == Isolation::Process)
                .map(|(name, _)| name.clone())
                .collect(),
        });
        let scanned =
            tokio::task::spawn_blocking(move || scan(&dir, policy, &known, probe.as_ref()))
                .await
                .map_err(|e| ManagerError::Internal(format!("the plugin scan failed: {e}")))?
                .map_err(ManagerError::PluginsDir)?;

        let mut report = ReloadReport::default();
        let old: BTreeMap<String, Arc<Slot>> = read(&self.inner.registry).plugins.clone();
        let mut plugins: BTreeMap<String, Arc<Slot>> = BTreeMap::new();
        let mut failures: Vec<(PathBuf, LoadError)> = Vec::new();
        let mut owners: BTreeMap<String, PathBuf> = BTreeMap::new();
        // Overrides made at run time are dropped for plugins whose `enabled` the admin
        // changed in the file: the newest intention wins.
        {
            let mut runtime = lock(&self.inner.runtime);
            let before = runtime.clone();
            if !first {
                runtime
                    .enabled
                    .retain(|name, _| old_config.enabled(name) == config.enabled(name));
            }
            if *runtime != before {
                if let Err(e) = self.inner.store.save(&runtime) {
                    tracing::warn!(error = %e, "cannot save runtime state");
                }
            }
        }
        let overrides = lock(&self.inner.runtime).enabled.clone();
        let enabled_of = |name: &str| {
            overrides
                .get(name)
                .copied()
                .unwrap_or_else(|| config.enabled(name))
        };
        for entry in scanned {
            match entry {
                Scanned::Kept(path, name) => {
                    if let Some(other) = owners.get(&name) {
                        failures.push((
                            path.clone(),
                            LoadError::DuplicateName {
                                path,
                                name,
                                other: other.clone(),
                            },
                        ));
                        continue;
                    }
                    if let Some(slot) = old.get(&name) {
                        owners.insert(name.clone(), slot.library.path().to_owned());
                        let wanted = self.pool_config(&config, &name, slot.library.path());
                        let current = slot.pool.as_ref().map(|p| p.config().clone());
                        let same_pin = old_config.version_requirement(&name)
                            == config.version_requirement(&name);
                        if wanted == current && same_pin {
                            plugins.insert(name, Arc::clone(slot));
                        } else {
                            // Isolation mode or worker limits changed: a fresh slot on the
                            // same library; calls in flight finish on the old one.
                            let mut library = Arc::clone(&slot.library);
                            if wanted.is_none() && !library.is_loaded() {
                                // Leaving process isolation: load it here now (it passed
                                // its probe when it was first seen).
                                let path = library.path().to_owned();
                                let opened = tokio::task::spawn_blocking(move || {
                                    PluginLibrary::open(&path, policy)
                                })
                                .await;
                                match opened {
                                    Ok(Ok(lib)) => library = Arc::new(lib),
                                    Ok(Err(e)) => {
                                        failures.push((library.path().to_owned(), e));
                                        continue;
                                    }
                                    Err(e) => {
                                        failures.push((
                                            library.path().to_owned(),
                                            LoadError::NotALibrary {
                                                path: library.path().to_owned(),
                                                reason: e.to_string(),
                                            },
                                        ));
                                        continue;
                                    }
                                }
                            }
                            let fresh = self.make_slot(library, &config, enabled_of(&name));
                            report.replaced.push(name.clone());
                            plugins.insert(name, Arc::new(fresh));
                        }
                    }
                }
                Scanned::Failed(path, error) => failures.push((path, error)),
                Scanned::Opened(lib) => {
                    let name = lib.name().to_owned();
                    if let Some(other) = owners.get(&name) {
                        failures.push((
                            lib.path().to_owned(),
                            LoadError::DuplicateName {
                                path: lib.path().to_owned(),
                                name,
                                other: other.clone(),
                            },
                        ));
                        continue;
                    }
                    let slot = self.make_slot(Arc::new(lib), &config, enabled_of(&name));
                    owners.insert(name.clone(), slot.library.path().to_owned());
                    if old.contains_key(&name) {
                        report.replaced.push(name.clone());
                    } else {
                        report.added.push(name.clone());
                    }
                    plugins.insert(name, Arc::new(slot));
                }
            }
        }
        for (name, slot) in &old {
            let same = plugins.get(name).is_some_and(|s| Arc::ptr_eq(s, slot));
            if !same && slot.library.is_service() {
                self.inner.services.stop(name).await;
            }
            if !plugins.contains_key(name) {
                report.removed.push(name.clone());
            }
        }
        *write(&self.inner.config) = Arc::new(config.clone());
        {
            let mut reg = write(&self.inner.registry);
            reg.plugins = plugins.clone();
            // Files that failed before and no longer do (removed, or fixed).
            for (path, _) in &reg.failures {
                if !failures.iter().any(|(p, _)| p == path) {
                    report.cleared.push(
                        path.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    );
                }
            }
            reg.failures = failures.clone();
        }
        for (path, error) in &failures {
            tracing::warn!(path = %path.display(), error = %error, "plugin file skipped");
            report.failed.push(
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
        for name in &report.removed {
            let _ = self
                .inner
                .events
                .send(Event::PluginRemoved { name: name.clone() });
        }
        for name in report.added.iter().chain(&report.replaced) {
            let _ = self
                .inner
                .events
                .send(Event::PluginAdded { name: name.clone() });
        }

        let fresh: BTreeSet<String> = report
            .added
            .iter()
            .chain(&report.replaced)
            .cloned()
            .collect();
        for (name, slot) in &plugins {
            if fresh.contains(name) {
                if slot.enabled() {
                    self.after_toggle(slot).await;
                }
            } else {
                self.update_kept(name, slot, &config, enabled_of(name), &mut report)
                    .await;
            }
            if let Some(reason) = slot.failure() {
                if !report.failed.contains(name) {
                    report.failed.push(name.clone());
                }
                tracing::warn!(plugin = %name, error = %reason, "plugin unusable");
            }
        }
        tracing::info!(summary = %report, "configuration applied");
        Ok(report)
    }

    /// The worker pool settings of `name`, or `None` when it runs in process.
    fn pool_config(&self, config: &Config, name: &str, library: &Path) -> Option<PoolConfig> {
        if config.isolation(name) != Isolation::Process {
            return None;
        }
        let p = config.plugin(name);
        Some(PoolConfig {
            program: self.inner.worker_program.clone().unwrap_or_default(),
            library: library.to_owned(),
            name: name.to_owned(),
            workers: p.workers.unwrap_or(2),
            limits: ResourceLimits {
                address_space: p.memory_limit_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
                cpu_seconds: p.cpu_limit_s,
                open_files: p.max_open_files.unwrap_or(64),
            },
            crash_limit: p.crash_limit.unwrap_or(5),
            max_output: config.max_output_bytes(name),
            sandbox: sandbox_spec(config, p.sandbox),
        })
    }

    /// A registry slot for `library`, with a worker pool when the plugin is isolated
    /// (quarantined again if the state file says so for this very file).
    fn make_slot(&self, library: Arc<PluginLibrary>, config: &Config, enabled: bool) -> Slot {
        let name = library.name().to_owned();
        let limits = Limits::new(
            config.timeout(&name),
            config.max_concurrency(&name),
            config.max_output_bytes(&name),
        );
        let settings = config.settings_json(&name);
        let pool = self.pool_config(config, &name, library.path()).map(|pc| {
            let pool = WorkerPool::new(pc, settings.clone());
            let identity = library.identity();
            if let Some(q) = lock(&self.inner.runtime).quarantined.get(&name) {
                let same_file = q.path == library.path()
                    && q.size == identity.size
                    && i128::from(q.mtime_ns) == identity.mtime_ns;
                if same_file {
                    pool.quarantine(q.reason.clone());
                }
            }
            Arc::new(pool)
        });
        let requirement = config.version_requirement(&name);
        let mismatch = requirement.as_deref().and_then(|req| {
            let req = semver::VersionReq::parse(req).ok()?;
            let found = semver::Version::parse(library.version()).ok();
            (!found.is_some_and(|v| req.matches(&v))).then(|| LoadError::VersionMismatch {
                name: name.clone(),
                found: library.version().to_owned(),
                required: req.to_string(),
            })
        });
        let slot = Slot::new(library, enabled, settings, limits, pool);
        if let Some(e) = mismatch {
            slot.fail(e);
        }
        if slot.pool.is_some() && self.inner.worker_program.is_none() {
            slot.fail(LoadError::Init {
                name,
                reason: "process isolation needs the worker program (run under dynplugd)".into(),
            });
        }
        slot
    }

    /// Applies a new configuration to a plugin whose library did not change.
    async fn update_kept(
        &self,
        name: &str,
        slot: &Arc<Slot>,
        config: &Config,
        enabled: bool,
        report: &mut ReloadReport,
    ) {
        let (timeout, concurrency) = (config.timeout(name), config.max_concurrency(name));
        {
            let mut limits = write(&slot.limits);
            if limits.max_concurrency != concurrency {
                *limits = Limits::new(timeout, concurrency, config.max_output_bytes(name));
            } else {
                limits.timeout = timeout;
                limits.max_output = config.max_output_bytes(name);
            }
        }
        let settings = config.settings_json(name);
        let changed = {
            let mut current = lock(&slot.settings_json);
            let changed = *current != settings;
            *current = settings.clone();
            changed
        };
        if changed {
            if let Some(pool) = &slot.pool {
                pool.reconfigure(settings.clone()).await;
                report.reconfigured.push(name.to_owned());
            } else if let Some(instance) = slot.loaded() {
                let applied =
                    tokio::task::spawn_blocking(move || instance.configure(&settings)).await;
                match applied {
                    Ok(Ok(())) => report.reconfigured.push(name.to_owned()),
                    Ok(Err(e)) => {
                        tracing::error!(plugin = name, error = %e, "plugin rejected its new settings");
                        let _ = self.inner.events.send(Event::PluginFailed {
                            name: name.to_owned(),
                            error: format!("configure: {e}"),
                        });
                        report.failed.push(name.to_owned());
                    }
                    Err(e) => report.failed.push(format!("{name} ({e})")),
                }
            }
        }
        if slot.set_enabled(enabled) {
            report.toggled.push(name.to_owned());
            self.after_toggle(slot).await;
        }
    }

    /// Starts a graceful stop: refuses new calls, waits up to `grace` for calls in
    /// flight, answers those still running after it with `ShuttingDown`, then stops every
    /// service. Returns the number of calls answered that way.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        let inner = &self.inner;
        inner.shutting_down.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + grace;
        let mut abandoned = 0;
        loop {
            let idle = inner.in_flight.idle.notified();
            if inner.in_flight.count.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                // Past the grace period: answer what is left with ShuttingDown and
                // give those answers a moment to go out.
                abandoned = inner.in_flight.count.load(Ordering::Acquire);
                let _ = inner.in_flight.abandon.send(true);
                let settled = async {
                    loop {
                        let idle = inner.in_flight.idle.notified();
                        if inner.in_flight.count.load(Ordering::Acquire) == 0 {
                            break;
                        }
                        idle.await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), settled).await;
                break;
            }
        }
        inner.services.stop_all().await;
        let pools: Vec<Arc<WorkerPool>> = read(&inner.registry)
            .plugins
            .values()
            .filter_map(|s| s.pool.clone())
            .collect();
        for pool in pools {
            pool.stop_idle().await;
        }
        abandoned
    }

    /// The directory holding the runtime state.
    pub fn state_dir(&self) -> &Path {
        self.inner.store.dir()
    }

    /// Number of calls in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.count.load(Ordering::Acquire)
    }
}

/// The sandbox a worker of this daemon enters with `policy`: the worker user is looked
/// up now, so a user created later takes effect on the next reload.
fn sandbox_spec(config: &Config, policy: SandboxPolicy) -> Spec {
    // SAFETY: geteuid and getpid cannot fail.
    let (root, pid) = unsafe { (libc::geteuid() == 0, libc::getpid()) };
    Spec {
        policy,
        identity: if root {
            Identity::lookup(&config.worker_user)
        } else {
            Err("the daemon does not run as root".into())
        },
        daemon_pid: pid.unsigned_abs(),
    }
}
