//! One registered plugin: its library, its (possibly lazy) instance, its limits and
//! its call statistics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::{Config, FastPath};
use crate::error::LoadError;
use crate::fastpath::Speed;
use crate::host::PluginOutlet;
use dynplug_isolation::WorkerPool;
use dynplug_loader::library::{Instance, PluginLibrary};
use dynplug_loader::locks::lock;

use crate::stats::Counters;
pub use crate::stats::{CallStats, LATENCY_BOUNDS_US};

/// Limits applied to calls of one plugin.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) timeout: Duration,
    pub(crate) max_concurrency: usize,
    /// Largest answer accepted, in bytes.
    pub(crate) max_output: usize,
    /// Permits for concurrent calls. A call keeps its permit until the plugin returns,
    /// even after the caller timed out, so a hung plugin runs out of permits instead
    /// of tying up ever more threads.
    pub(crate) permits: Arc<Semaphore>,
    /// Extra attempts for transient failures.
    pub(crate) retries: u32,
    /// Whether timeouts are retried too.
    pub(crate) idempotent: bool,
    /// Whether calls may run inline once they prove fast.
    pub(crate) fast_path: bool,
}

impl Limits {
    /// The limits of `name` in `config`.
    pub(crate) fn of(config: &Config, name: &str) -> Self {
        let max_concurrency = config.max_concurrency(name);
        let (retries, idempotent) = config.retry_policy(name);
        Limits {
            timeout: config.timeout(name),
            max_concurrency,
            max_output: config.max_output_bytes(name),
            permits: Arc::new(Semaphore::new(max_concurrency)),
            retries,
            idempotent,
            fast_path: config.fast_path(name) == FastPath::Auto,
        }
    }

    /// `self` updated to `new`, keeping the permits (and calls holding them) when the
    /// concurrency did not change.
    pub(crate) fn update(&mut self, new: Limits) {
        let permits = if self.max_concurrency == new.max_concurrency {
            Arc::clone(&self.permits)
        } else {
            new.permits.clone()
        };
        *self = Limits { permits, ..new };
    }
}

/// A plugin in the registry.
///
/// Locks here are `std` locks: they guard a few words, are held for no longer than a
/// copy, and never across an `.await` (the plugin call itself runs unlocked).
/// The function behind a [`Loader`].
pub(crate) type LoadFn = dyn Fn(&std::path::Path, dynplug_loader::library::FileIdentity) -> Result<PluginLibrary, LoadError>
    + Send
    + Sync;

/// Loads a plugin file into this process (probing it first where the daemon can).
#[derive(Clone)]
pub(crate) struct Loader(pub(crate) Arc<LoadFn>);

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Loader(..)")
    }
}

#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) library: Arc<PluginLibrary>,
    /// For a library listed from its metadata and not loaded yet (`lazy_load`): how to
    /// load it on first use.
    loader: Option<Loader>,
    /// The plugin's name, shared with each call's host.
    pub(crate) label: Arc<str>,
    /// Where its events and log lines go, under its budgets.
    pub(crate) outlet: Arc<PluginOutlet>,
    /// How fast its calls are: whether they run inline.
    pub(crate) speed: Speed,
    instance: OnceLock<Result<Arc<Instance>, LoadError>>,
    /// Worker processes, for `isolation: process`; the instance is then never created here.
    pub(crate) pool: Option<Arc<WorkerPool>>,
    /// The WebAssembly side of a `.wasm` plugin (set once, when the slot is made); no
    /// native instance is then ever created.
    pub(crate) wasm: OnceLock<Arc<crate::wasm_tier::WasmSlot>>,
    enabled: AtomicBool,
    pub(crate) settings_json: Mutex<String>,
    pub(crate) limits: RwLock<Limits>,
    pub(crate) stats: Counters,
}

impl Slot {
    pub(crate) fn new(
        library: Arc<PluginLibrary>,
        enabled: bool,
        settings_json: String,
        limits: Limits,
        pool: Option<Arc<WorkerPool>>,
        outlet: Arc<PluginOutlet>,
        loader: Option<Loader>,
    ) -> Self {
        Slot {
            loader,
            label: library.name().into(),
            outlet,
            speed: Speed::default(),
            library,
            instance: OnceLock::new(),
            pool,
            wasm: OnceLock::new(),
            enabled: AtomicBool::new(enabled),
            settings_json: Mutex::new(settings_json),
            limits: RwLock::new(limits),
            stats: Counters::default(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        self.library.name()
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Sets the flag; returns whether it changed.
    pub(crate) fn set_enabled(&self, on: bool) -> bool {
        self.enabled.swap(on, Ordering::AcqRel) != on
    }

    /// The instance if it was created successfully, without creating it.
    pub(crate) fn loaded(&self) -> Option<Arc<Instance>> {
        self.instance.get().and_then(|r| r.as_ref().ok()).cloned()
    }

    /// Marks the slot unusable for `error` (no instance will be created).
    pub(crate) fn fail(&self, error: LoadError) {
        let _ = self.instance.set(Err(error));
    }

    /// The reason the instance could not be created, if it was tried and failed.
    pub(crate) fn failure(&self) -> Option<String> {
        self.instance
            .get()
            .and_then(|r| r.as_ref().err())
            .map(ToString::to_string)
    }

    /// Creates and configures the instance on first use. Blocking: call it off the
    /// async workers.
    pub(crate) fn instance(&self) -> Result<Arc<Instance>, LoadError> {
        self.instance
            .get_or_init(|| {
                let instance = match &self.loader {
                    Some(load) if !self.library.is_loaded() => {
                        // Listed from its metadata (`lazy_load`): loaded now, and only
                        // if the file is still the one that was listed (checked on the
                        // sealed image before any of its code runs).
                        let loaded =
                            Arc::new((load.0)(self.library.path(), self.library.identity())?);
                        if loaded.name() != self.name() {
                            return Err(LoadError::Init {
                                name: self.name().to_owned(),
                                reason:
                                    "its file changed since it was listed; reload to pick it up"
                                        .into(),
                            });
                        }
                        loaded.instantiate()?
                    }
                    _ => self.library.instantiate()?,
                };
                let settings = lock(&self.settings_json).clone();
                instance.configure(&settings).map_err(|e| LoadError::Init {
                    name: self.name().to_owned(),
                    reason: format!("configure: {e}"),
                })?;
                Ok(Arc::new(instance))
            })
            .clone()
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
            .read()
            .map(|l| l.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub(crate) fn stats(&self) -> CallStats {
        self.stats.snapshot(true)
    }

    pub(crate) fn record_retry(&self) {
        self.stats.record_retry();
    }

    pub(crate) fn record(&self, elapsed: Duration, outcome: Result<(), (&str, bool)>) {
        self.stats.record(elapsed, outcome);
    }
}
