//! Applying a configuration, at start and on reload: scan, diff against the running
//! registry, build slots (with worker pools for isolated plugins), update kept plugins,
//! and report what changed.

use super::*;

impl Manager {
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

    /// Applies `config`: every step that can fail (scan, signatures, settings schemas)
    /// comes before anything changes; then each scanned file is placed in the new
    /// registry, plugins that went away stop, the registry is swapped in, and the new
    /// and kept plugins are brought in line.
    pub(super) async fn apply(
        &self,
        config: Config,
        first: bool,
    ) -> Result<ReloadReport, ManagerError> {
        let _admin = self.inner.admin.lock().await;
        let old_config = self.config();
        let (scanned, signing) = self.scan_plugins(&config).await?;
        self.check_settings(&config, &scanned)?;
        let kit = SlotKit {
            sandbox: sandbox_spec(&config, SandboxPolicy::default()),
            loader: self.loader(&config, signing.clone()),
        };
        *lock(&self.inner.signing) = signing;
        self.keep_probe_cache(&scanned);
        self.drop_stale_overrides(&old_config, &config, first);
        let mut plan = Plan {
            old: read(&self.inner.registry).plugins.clone(),
            overrides: self.inner.runtime.read(|r| r.enabled.clone()),
            config: &config,
            old_config: &old_config,
            kit: &kit,
            plugins: BTreeMap::new(),
            failures: Vec::new(),
            owners: BTreeMap::new(),
            report: ReloadReport::default(),
        };
        for entry in scanned {
            match entry {
                Scanned::Kept(path, name) => self.place_kept(&mut plan, path, name).await,
                Scanned::Opened(lib) => self.place_opened(&mut plan, lib),
                Scanned::Failed(path, error) => plan.failures.push((path, error)),
            }
        }
        self.stop_gone(&mut plan).await;
        self.commit(&config, &plan.plugins, &plan.failures, &mut plan.report);
        self.bring_in_line(&mut plan).await;
        super::wasm::prepare(&plan.plugins);
        tracing::info!(summary = %plan.report, "configuration applied");
        Ok(plan.report)
    }

    /// A file unchanged since the last scan: its slot stays, or a fresh slot on the same
    /// library when its isolation, worker limits or version pin changed (calls in flight
    /// finish on the old one).
    async fn place_kept(&self, plan: &mut Plan<'_>, path: PathBuf, name: String) {
        let Some(slot) = plan.old.get(&name).cloned() else {
            return;
        };
        if !plan.claim(&name, &path) {
            return;
        }
        let wanted = self.pool_config(plan.config, &plan.kit.sandbox, &name, &slot.library);
        let current = slot.pool.as_ref().map(|p| p.config().clone());
        let same_pin =
            plan.old_config.version_requirement(&name) == plan.config.version_requirement(&name);
        if wanted == current && same_pin {
            plan.plugins.insert(name, slot);
            return;
        }
        let mut library = Arc::clone(&slot.library);
        if wanted.is_none() && !library.is_loaded() {
            match Self::load_from_image(&library).await {
                Ok(lib) => library = lib,
                Err(e) => {
                    plan.owners.remove(&name);
                    plan.failures.push((path, e));
                    return;
                }
            }
        }
        let enabled = plan.enabled_of(&name);
        let fresh = self.make_slot(library, plan.config, plan.kit, enabled);
        plan.report.replaced.push(name.clone());
        plan.plugins.insert(name, Arc::new(fresh));
    }

    /// A plugin leaving process isolation is loaded here, from the image its workers
    /// ran (not the path again), keeping its signature verdict.
    async fn load_from_image(library: &PluginLibrary) -> Result<Arc<PluginLibrary>, LoadError> {
        let path = library.path().to_owned();
        let image = library.image().cloned();
        let opened = tokio::task::spawn_blocking(move || match image {
            Some(image) => PluginLibrary::load(&path, &image),
            None => Err(LoadError::Io {
                reason:
                    "no sealed image of the file is kept; it is loaded again on the next change"
                        .into(),
                path,
            }),
        })
        .await
        .map_err(|e| LoadError::NotALibrary {
            path: library.path().to_owned(),
            reason: e.to_string(),
        })?;
        let mut lib = opened?;
        lib.set_signature(library.signature().clone(), library.signature_identity());
        Ok(Arc::new(lib))
    }

    /// A file opened by this scan: a new plugin, or a new version of one.
    fn place_opened(&self, plan: &mut Plan<'_>, lib: PluginLibrary) {
        let name = lib.name().to_owned();
        let path = lib.path().to_owned();
        if !plan.claim(&name, &path) {
            return;
        }
        let enabled = plan.enabled_of(&name);
        let slot = self.make_slot(Arc::new(lib), plan.config, plan.kit, enabled);
        if plan.old.contains_key(&name) {
            plan.report.replaced.push(name.clone());
        } else {
            plan.report.added.push(name.clone());
        }
        plan.plugins.insert(name, Arc::new(slot));
    }

    /// Stops the services of plugins that go or get a new slot, and reports the gone.
    async fn stop_gone(&self, plan: &mut Plan<'_>) {
        for (name, slot) in &plan.old {
            let same = plan.plugins.get(name).is_some_and(|s| Arc::ptr_eq(s, slot));
            if !same && slot.library.is_service() {
                self.inner.services.stop(name).await;
            }
            if !plan.plugins.contains_key(name) {
                plan.report.removed.push(name.clone());
            }
        }
    }

    /// After the swap: new and replaced plugins start (if enabled); kept ones take the
    /// new settings, limits and enabled flag; unusable ones are reported.
    async fn bring_in_line(&self, plan: &mut Plan<'_>) {
        let fresh: BTreeSet<String> = plan
            .report
            .added
            .iter()
            .chain(&plan.report.replaced)
            .cloned()
            .collect();
        for (name, slot) in &plan.plugins {
            if fresh.contains(name) {
                if slot.enabled() {
                    self.after_toggle(slot).await;
                }
            } else {
                let enabled = plan.enabled_of(name);
                self.update_kept(name, slot, plan.config, enabled, &mut plan.report)
                    .await;
            }
            if let Some(reason) = slot.failure() {
                if !plan.report.failed.contains(name) {
                    plan.report.failed.push(name.clone());
                }
                tracing::warn!(plugin = %name, error = %reason, "plugin unusable");
            }
        }
    }

    /// How new files are looked at under `config` (None without a worker program).
    fn probe(&self, config: &Config) -> Option<Probe> {
        self.inner.worker_program.clone().map(|program| Probe {
            program,
            spec: sandbox_spec(config, SandboxPolicy::default()),
            isolated: config
                .plugins
                .iter()
                .filter(|(_, p)| p.isolation == Isolation::Process)
                .map(|(name, _)| name.clone())
                .collect(),
            cache: Arc::clone(&self.inner.probe_cache),
            lazy: config.lazy_load,
            prefetched: Mutex::default(),
        })
    }

    /// How a lazily listed in-process plugin is loaded on first use: sealed and judged
    /// again under `signing`, refused if it is not the file that was listed, probed
    /// (unless remembered), then loaded here from the image.
    fn loader(&self, config: &Config, signing: Signing) -> Loader {
        let probe = self.probe(config);
        let policy = self.inner.policy;
        Loader(Arc::new(move |path: &Path, listed| match &probe {
            Some(probe) => probe.load(path, listed, &signing, policy),
            None => {
                let (image, verdict) = signing.seal(path, policy)?;
                if image.identity() != listed {
                    return Err(crate::scan::changed_since_listed(path));
                }
                let mut lib = PluginLibrary::load(path, &image)?;
                lib.set_signature(verdict, signing.signature_identity(path));
                Ok(lib)
            }
        }))
    }

    /// Saves what this scan's probes found, forgetting files that are gone.
    fn keep_probe_cache(&self, scanned: &[Scanned]) {
        let present: BTreeSet<PathBuf> = scanned.iter().map(|s| s.path().to_owned()).collect();
        let mut cache = lock(&self.inner.probe_cache);
        cache.retain(&present);
        if let Err(e) = cache.save() {
            tracing::warn!(error = %e, "cannot save the registry cache; the next start probes every file again");
        }
    }

    /// Refuses `config` when the settings it gives a plugin break the schema the plugin
    /// declares, naming plugin, key and reason; nothing is applied then.
    fn check_settings(&self, config: &Config, scanned: &[Scanned]) -> Result<(), ManagerError> {
        let registry = read(&self.inner.registry);
        for entry in scanned {
            let library: &PluginLibrary = match entry {
                Scanned::Opened(lib) => lib,
                Scanned::Kept(_, name) => match registry.plugins.get(name) {
                    Some(slot) => &slot.library,
                    None => continue,
                },
                Scanned::Failed(..) => continue,
            };
            let Some(schema) = library.settings_schema() else {
                continue;
            };
            let name = library.name();
            if let Err(v) = schema.check(&config.settings_json(name)) {
                return Err(ConfigError::field(
                    config.file(),
                    format!("plugins.{name}.settings{}", v.key),
                    format!("{} (refused by the plugin's settings schema)", v.reason),
                )
                .into());
            }
        }
        Ok(())
    }

    /// Scans plugins_dir for `config`, reusing unchanged files and probing new ones.
    /// Returns the signing rules it applied, to be kept once the configuration is.
    async fn scan_plugins(&self, config: &Config) -> Result<(Vec<Scanned>, Signing), ManagerError> {
        let policy = self.inner.policy;
        let dir = config.plugins_dir.clone();
        let signing = Signing {
            max_bytes: config.trust.max_plugin_bytes,
            mode: config.trust.signatures,
            keyring: if config.trust.signatures == SignatureMode::Off {
                Keyring::default()
            } else {
                Keyring::load(&config.trust.keys_dir, policy)
                    .map_err(|e| ConfigError::field(config.file(), "trust.keys_dir", e))?
            },
        };
        // Other rules (mode, keys): every file is judged again.
        let rejudge = *lock(&self.inner.signing) != signing;
        let known: Known = read(&self.inner.registry)
            .plugins
            .values()
            .filter(|_| !rejudge)
            // A plugin loaded here that is to run isolated now is read again: its
            // workers need a sealed image of the file, and only a fresh judgement of the
            // file makes one.
            .filter(|s| {
                config.isolation(s.name()) != Isolation::Process || s.library.image().is_some()
            })
            .map(|s| {
                (
                    s.library.path().to_owned(),
                    (
                        s.name().to_owned(),
                        s.library.identity(),
                        s.library.signature_identity(),
                    ),
                )
            })
            .collect();
        let probe = self.probe(config);
        let rules = signing.clone();
        let scanned =
            tokio::task::spawn_blocking(move || scan(&dir, policy, &known, probe.as_ref(), &rules))
                .await
                .map_err(|e| ManagerError::Internal(format!("the plugin scan failed: {e}")))?
                .map_err(ManagerError::PluginsDir)?;
        Ok((scanned, signing))
    }

    /// Drops the run-time overrides of plugins whose `enabled` the admin changed in the
    /// file: the newest intention wins.
    fn drop_stale_overrides(&self, old_config: &Config, config: &Config, first: bool) {
        let (_, saved) = self.inner.runtime.update(|runtime| {
            if !first {
                runtime
                    .enabled
                    .retain(|name, _| old_config.enabled(name) == config.enabled(name));
            }
        });
        if let Err(e) = saved {
            tracing::warn!(error = %e, "cannot save runtime state");
        }
    }

    /// Makes the new configuration, plugins and failures current, reports the failures
    /// (and the files that no longer fail) and announces added and removed plugins.
    fn commit(
        &self,
        config: &Config,
        plugins: &BTreeMap<String, Arc<Slot>>,
        failures: &[(PathBuf, LoadError)],
        report: &mut ReloadReport,
    ) {
        let file_name = |path: &Path| {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        self.inner.jobs.set_limits(config.jobs.limits());
        self.inner
            .max_input
            .store(config.max_input_bytes, Ordering::Release);
        *write(&self.inner.config) = Arc::new(config.clone());
        {
            let mut reg = write(&self.inner.registry);
            reg.plugins = plugins.clone();
            // Files that failed before and no longer do (removed, or fixed).
            for (path, _) in &reg.failures {
                if !failures.iter().any(|(p, _)| p == path) {
                    report.cleared.push(file_name(path));
                }
            }
            reg.failures = failures.to_vec();
        }
        for (path, error) in failures {
            tracing::warn!(path = %path.display(), error = %error, "plugin file skipped");
            report.failed.push(file_name(path));
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
    }

    /// The worker pool settings of `name`, or `None` when it runs in process.
    /// `base` is the sandbox of this configuration (looked up once per apply: the
    /// worker user's identity costs a user-database lookup).
    fn pool_config(
        &self,
        config: &Config,
        base: &Spec,
        name: &str,
        library: &PluginLibrary,
    ) -> Option<PoolConfig> {
        if config.isolation(name) != Isolation::Process || crate::wasm_tier::is_wasm(library.path())
        {
            return None;
        }
        let p = config.plugin(name);
        Some(PoolConfig {
            program: self.inner.worker_program.clone().unwrap_or_default(),
            library: library.path().to_owned(),
            image: library.image().cloned(),
            name: name.to_owned(),
            workers: p.workers.unwrap_or(2),
            limits: ResourceLimits {
                address_space: p.memory_limit_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
                cpu_seconds: p.cpu_limit_s,
                open_files: p.max_open_files.unwrap_or(64),
            },
            crash_limit: p.crash_limit.unwrap_or(5),
            max_output: config.max_output_bytes(name),
            shared_bytes: config.max_input_bytes.max(config.max_output_bytes(name)),
            sandbox: Spec {
                policy: p.sandbox,
                identity: self.worker_identity(base, name),
                ..base.clone()
            },
        })
    }

    /// The identity plugin `name`'s workers switch to (a root daemon): `worker_user`'s
    /// group, and a user id of the plugin's own, so that one plugin's workers can never
    /// signal, trace or read another's, whatever layers either relaxes.
    fn worker_identity(&self, base: &Spec, name: &str) -> Result<Identity, String> {
        let user = base.identity.clone()?;
        let (uid, saved) = self.inner.runtime.update(|r| r.worker_uid(name));
        if let Err(e) = saved {
            tracing::warn!(error = %e, "cannot save the worker uids; they are kept for this run");
        }
        let uid = uid.ok_or_else(|| {
            "every worker uid of the range is taken (65,536 isolated plugins)".to_owned()
        })?;
        Ok(Identity {
            user: format!("{}/{name}", user.user),
            uid,
            gid: user.gid,
        })
    }

    /// A registry slot for `library`, with a worker pool when the plugin is isolated
    /// (quarantined again if the state file says so for this very file).
    fn make_slot(
        &self,
        library: Arc<PluginLibrary>,
        config: &Config,
        kit: &SlotKit,
        enabled: bool,
    ) -> Slot {
        let name = library.name().to_owned();
        let limits = Limits::of(config, &name);
        let settings = config.settings_json(&name);
        let pool = self
            .pool_config(config, &kit.sandbox, &name, &library)
            .map(|pc| {
                let pool = WorkerPool::new(pc, settings.clone());
                let identity = library.identity();
                let record = self
                    .inner
                    .runtime
                    .read(|r| r.quarantined.get(&name).cloned());
                if let Some(q) = record {
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
        let outlet = PluginOutlet::new(self.inner.events.clone());
        let loader = (!library.is_loaded() && pool.is_none()).then(|| kit.loader.clone());
        let wasm = crate::wasm_tier::WasmSlot::of(config, &name, &library, self.state_dir());
        let slot = Slot::new(library, enabled, settings, limits, pool, outlet, loader);
        if let Some(wasm) = wasm {
            // Quarantined again if the state file says so for this very file.
            let identity = slot.library.identity();
            let record = self
                .inner
                .runtime
                .read(|r| r.quarantined.get(&name).cloned());
            if let Some(q) = record.filter(|q| {
                q.path == slot.library.path()
                    && q.size == identity.size
                    && i128::from(q.mtime_ns) == identity.mtime_ns
            }) {
                wasm.quarantine(q.reason);
            }
            let _ = slot.wasm.set(Arc::new(wasm));
        }
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
        write(&slot.limits).update(Limits::of(config, name));
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
}

/// The sandbox a worker of this daemon enters with `policy`: the worker user is looked
/// up now, so a user created later takes effect on the next reload.
/// What every slot made by one apply shares, built once (the worker user's identity
/// costs a user-database lookup).
/// What one apply builds: the new registry, the files refused, who owns each name, and
/// the report, from the registry and configuration it replaces.
struct Plan<'a> {
    old: BTreeMap<String, Arc<Slot>>,
    overrides: BTreeMap<String, bool>,
    config: &'a Config,
    old_config: &'a Config,
    kit: &'a SlotKit,
    plugins: BTreeMap<String, Arc<Slot>>,
    failures: Vec<(PathBuf, LoadError)>,
    owners: BTreeMap<String, PathBuf>,
    report: ReloadReport,
}

impl Plan<'_> {
    /// Whether plugin `name` is to be enabled: a run-time override, else the file's word.
    fn enabled_of(&self, name: &str) -> bool {
        self.overrides
            .get(name)
            .copied()
            .unwrap_or_else(|| self.config.enabled(name))
    }

    /// Gives `name` to the file at `path`, unless an earlier file (in file-name order)
    /// has it: then the file is refused as a duplicate.
    fn claim(&mut self, name: &str, path: &Path) -> bool {
        if let Some(other) = self.owners.get(name) {
            self.failures.push((
                path.to_owned(),
                LoadError::DuplicateName {
                    path: path.to_owned(),
                    name: name.to_owned(),
                    other: other.clone(),
                },
            ));
            return false;
        }
        self.owners.insert(name.to_owned(), path.to_owned());
        true
    }
}

struct SlotKit {
    /// The sandbox of this configuration, before each plugin's own `sandbox:`.
    sandbox: Spec,
    /// How lazily listed plugins are loaded on first use.
    loader: Loader,
}

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
