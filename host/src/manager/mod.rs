//! The manager: the one place that owns plugins and applies every operation on them.
//! D-Bus, REST and tests all go through it, so they see the same state at once.
//!
//! Plugin calls run on tokio's blocking pool, never on the async workers, each under
//! its plugin's timeout and concurrency limit: a hung plugin makes its own calls time
//! out and cannot hold up calls to other plugins.
//!
//! Here: the registry, queries, enable/disable and shutdown. `call` holds the call
//! path (`execute`), `apply` the application of a configuration (start and reload).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, Notify};

use crate::config::{Config, Isolation, SignatureMode};
use crate::error::{CallError, ConfigError, LoadError, ManagerError};
use crate::events::{Event, ServiceState};
use crate::fastpath::{Demoted, InlineSlots};
use crate::host::{CallHost, Cancel, PluginOutlet, CANCEL_GRACE};
use crate::jobs::{Job, JobOwner, Jobs};
use crate::registry_cache::RegistryCache;
use crate::scan::{scan, Known, Probe, Scanned, Signing};
use crate::services::Services;
use crate::slot::{CallStats, Limits, Loader, Slot};
use crate::state::{Quarantine, SharedState, StateStore};
pub use crate::views::{Change, PluginInfo, PluginStatus, ReloadReport, Summary};
use dynplug_isolation::sandbox::{Identity, SandboxPolicy, Spec};
use dynplug_isolation::{PoolConfig, PoolError, PoolFailure, ResourceLimits, WorkerPool};
use dynplug_loader::library::PluginLibrary;
use dynplug_loader::locks::{lock, read, write};
use dynplug_loader::signature::Keyring;
use dynplug_loader::trust::TrustPolicy;

mod apply;
mod call;
mod sample;

pub use sample::{monotonic_usec, PluginSample, Sample};
mod wasm;

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

impl<'a> InFlightGuard<'a> {
    /// Counts one more call in flight until the guard is dropped.
    fn enter(in_flight: &'a InFlight) -> Self {
        in_flight.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(in_flight)
    }
}

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
    /// Run-time enable/disable and quarantines, written to disk outside its lock.
    runtime: SharedState,
    policy: TrustPolicy,
    events: broadcast::Sender<Event>,
    services: Services,
    jobs: Jobs,
    /// The calls that may run inline at once (see `crate::fastpath`).
    inline_slots: InlineSlots,
    /// `max_input_bytes` of the configuration in force (read on every call).
    max_input: AtomicUsize,
    in_flight: InFlight,
    shutting_down: AtomicBool,
    /// Serialises reloads and enable/disable so they never interleave.
    admin: tokio::sync::Mutex<()>,
    /// The program started as `PROGRAM --worker LIBRARY` for isolated plugins.
    worker_program: Option<PathBuf>,
    /// The signature rules the plugins in the registry were judged by.
    signing: Mutex<Signing>,
    /// What probing each file found, kept across starts (see `crate::registry_cache`).
    probe_cache: Arc<Mutex<RegistryCache>>,
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
        // The state directory steers what loads (enable flags, quarantines) and is
        // written by root: others must not be able to write in it.
        if state_dir.exists() {
            dynplug_loader::trust::check_dir(state_dir, policy)
                .map_err(|e| ConfigError::file(state_dir, e.to_string()))?;
        }
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
                runtime: SharedState::new(store, runtime),
                policy,
                services: Services::new(events.clone(), SERVICE_STOP_TIMEOUT),
                jobs: Jobs::new(config.jobs.limits(), events.clone()),
                max_input: AtomicUsize::new(config.max_input_bytes),
                inline_slots: InlineSlots::for_workers(
                    tokio::runtime::Handle::current().metrics().num_workers(),
                ),
                events,
                in_flight: InFlight::default(),
                shutting_down: AtomicBool::new(false),
                admin: tokio::sync::Mutex::new(()),
                worker_program,
                signing: Mutex::new(Signing::default()),
                probe_cache: Arc::new(Mutex::new(RegistryCache::load(state_dir))),
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
        let wasm = slot.wasm.get();
        let status = match (slot.loaded(), slot.failure(), &workers) {
            (_, None, _) if wasm.is_some() => wasm::plugin_status(wasm),
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
            isolation: if wasm.is_some() {
                Isolation::Wasm
            } else if slot.pool.is_some() {
                Isolation::Process
            } else {
                Isolation::InProcess
            },
            version_requirement: read(&self.inner.config).version_requirement(slot.name()),
            call_path: if wasm.is_some() {
                "wasm"
            } else if slot.pool.is_some() {
                "workers"
            } else {
                slot.speed.path()
            },
            workers,
            settings_schema: slot.library.settings_schema().map(|s| s.text().to_owned()),
            signature: slot.library.signature().to_string(),
            wasm: wasm.map(|w| w.status()),
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
            call_path: "",
            version_requirement: None,
            workers: None,
            settings_schema: None,
            signature: String::new(),
            wasm: None,
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
            unverified: reg
                .plugins
                .values()
                .filter(|s| s.library.signature().is_unverified())
                .count(),
        }
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
        let (before, saved) = self
            .inner
            .runtime
            .update(|runtime| runtime.enabled.insert(name.to_owned(), on));
        if let Err(e) = saved {
            // Not kept, so not in force: put back what was (unless changed since).
            let (_, _) = self.inner.runtime.update(|runtime| {
                if runtime.enabled.get(name) == Some(&on) {
                    match before {
                        Some(b) => runtime.enabled.insert(name.to_owned(), b),
                        None => runtime.enabled.remove(name),
                    };
                }
            });
            return Err(ManagerError::State(e));
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
        let (_, saved) = self.inner.runtime.update(|runtime| {
            runtime.quarantined.remove(slot.name());
        });
        if let Err(e) = saved {
            tracing::warn!(error = %e, "cannot save runtime state");
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
        // A WebAssembly plugin has no native instance: it is compiled by
        // `wasm_tier::prepare` and instantiated afresh on each call.
        if lazy || slot.loaded().is_some() || slot.wasm.get().is_some() {
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

    /// Starts a graceful stop: refuses new calls, waits up to `grace` for calls in
    /// flight, answers those still running after it with `ShuttingDown`, then stops every
    /// service. Returns the number of calls answered that way.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        let inner = &self.inner;
        inner.shutting_down.store(true, Ordering::Release);
        // Jobs are background work nobody waits on: they are told to stop at once.
        inner.jobs.cancel_all();
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
        self.inner.runtime.store().dir()
    }

    /// Number of calls in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.count.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    //! The manager with real C plugins in a temporary directory: queries, execute,
    //! enable/disable persisted, reload by difference, duplicate names, shutdown.

    use super::*;
    use dynplug_loader::testkit::compile_fixture as compile;

    const ANY: TrustPolicy = TrustPolicy {
        required_owner: None,
        check_modes: true,
    };

    fn config(dir: &Path, yaml: &str) -> Config {
        let mut c = Config::parse(yaml, Path::new("test.yaml")).unwrap();
        c.plugins_dir = dir.to_owned();
        c.validate(Path::new("test.yaml")).unwrap();
        c
    }

    #[tokio::test]
    async fn executes_toggles_and_persists() {
        let plugins = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        compile(plugins.path(), "hostile.c", "h.so", &[]);
        let (m, report) = Manager::start(config(plugins.path(), ""), state.path(), ANY)
            .await
            .unwrap();
        assert_eq!(report.added, vec!["hostile".to_owned()]);
        assert_eq!(m.execute("hostile", "echo hi".into()).await.unwrap(), "hi");
        assert!(matches!(
            m.execute("nope", String::new()).await,
            Err(ManagerError::NotFound(_))
        ));
        assert_eq!(m.disable("hostile").await.unwrap(), Change::Changed);
        assert_eq!(m.disable("hostile").await.unwrap(), Change::Unchanged);
        assert!(matches!(
            m.execute("hostile", "echo x".into()).await,
            Err(ManagerError::Disabled(_))
        ));
        assert_eq!(m.info("hostile").unwrap().stats.calls, 1);
        assert_eq!(m.shutdown(Duration::from_secs(1)).await, 0);
        // The runtime state survives: a new manager on the same state starts it disabled.
        let (m, _) = Manager::start(config(plugins.path(), ""), state.path(), ANY)
            .await
            .unwrap();
        assert!(!m.info("hostile").unwrap().enabled);
        assert!(matches!(
            m.execute("hostile", "echo x".into()).await,
            Err(ManagerError::Disabled(_))
        ));
    }

    #[tokio::test]
    async fn reload_applies_only_what_changed() {
        let plugins = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        compile(plugins.path(), "hostile.c", "h.so", &[]);
        let (m, _) = Manager::start(config(plugins.path(), ""), state.path(), ANY)
            .await
            .unwrap();
        let report = m.reload(config(plugins.path(), "")).await.unwrap();
        assert_eq!(report.to_string(), "no changes");
        // A second file declaring the same name loses, first in file-name order.
        compile(plugins.path(), "hostile.c", "z.so", &[]);
        compile(plugins.path(), "variant.c", "v.so", &[]);
        let report = m.reload(config(plugins.path(), "")).await.unwrap();
        assert_eq!(report.added, vec!["variant".to_owned()]);
        assert_eq!(report.failed, vec!["z.so".to_owned()]);
        assert!(m
            .info("z.so")
            .unwrap()
            .error()
            .unwrap()
            .contains("already provided by"));
        std::fs::remove_file(plugins.path().join("z.so")).unwrap();
        std::fs::remove_file(plugins.path().join("v.so")).unwrap();
        let report = m.reload(config(plugins.path(), "")).await.unwrap();
        assert_eq!(
            (report.removed.clone(), report.cleared.clone()),
            (vec!["variant".to_owned()], vec!["z.so".to_owned()])
        );
        // A missing plugins directory refuses the reload and keeps what runs.
        let gone = plugins.path().join("nope");
        assert!(matches!(
            m.reload(config(&gone, "")).await,
            Err(ManagerError::PluginsDir(_))
        ));
        assert_eq!(
            m.execute("hostile", "echo still".into()).await.unwrap(),
            "still"
        );
    }

    #[tokio::test]
    async fn jobs_run_in_the_background_with_the_call_limits() {
        use crate::jobs::{JobOwner, JobState};
        let plugins = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        compile(plugins.path(), "hostile.c", "h.so", &[]);
        let yaml = "plugins:\n  hostile:\n    timeout_ms: 100\njobs:\n  max_running: 1\n";
        let (m, _) = Manager::start(config(plugins.path(), yaml), state.path(), ANY)
            .await
            .unwrap();
        let mut events = m.subscribe();
        let ended = |events: &mut broadcast::Receiver<Event>, id: u64| {
            let mut events = events.resubscribe();
            async move {
                while !matches!(events.recv().await, Ok(Event::JobChanged { id: i, finished: true }) if i == id)
                {
                }
            }
        };
        // A job past its timeout fails with Timeout: the timeout is not a cancellation.
        let job = m
            .start_job("hostile", "sleep 400".into(), JobOwner::Rest(None))
            .unwrap();
        let done = ended(&mut events, job.id());
        assert!(matches!(
            m.start_job("hostile", "echo x".into(), JobOwner::Rest(None)),
            Err(ManagerError::TooManyJobs(1))
        ));
        done.await;
        let view = job.view();
        assert_eq!(view.state, JobState::Failed);
        assert!(
            matches!(view.error, Some(ManagerError::Timeout { .. })),
            "{view:?}"
        );
        // The usual refusals come at once, before a job exists.
        assert!(matches!(
            m.start_job("nope", String::new(), JobOwner::Rest(None)),
            Err(ManagerError::NotFound(_))
        ));
        // A version 2 call in process: events within the plugin's budget reach
        // subscribers, the rest are dropped.
        let accepted: usize = m
            .execute("hostile", "flood 200".into())
            .await
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(accepted, crate::host::EVENT_BURST as usize);
        let mut published = 0;
        while let Ok(event) = events.try_recv() {
            published += usize::from(matches!(event, Event::PluginEvent { .. }));
        }
        assert_eq!(published, accepted);
        // Shutdown cancels running jobs.
        let job = m
            .start_job("hostile", "sleep 50".into(), JobOwner::Rest(None))
            .unwrap();
        m.shutdown(Duration::from_secs(5)).await;
        assert_eq!(job.view().state, JobState::Cancelled);
    }
}
