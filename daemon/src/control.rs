//! The daemon's shared state: the manager plus what the daemon adds around it
//! (lifecycle state, reload, the bus connection). D-Bus handlers and signal handlers
//! all act through one [`Control`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dynplug_core::config::Config;
use dynplug_core::error::ConfigError;
use dynplug_core::{Change, Manager};
use zbus::object_server::InterfaceRef;
use zbus::Connection;

use crate::api::ApiServer;
use crate::dbus::{objects, plugin_path, DynplugError, ManagerIface, PluginIface, MANAGER_PATH};
use crate::logging::LogHandle;
use crate::notify;

/// Command-line values that override the configuration file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--plugins-dir`.
    pub plugins_dir: Option<PathBuf>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--port`: serve the REST API on this port.
    pub port: Option<u16>,
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// Reads the configuration file, applies `DYNPLUG_*` and command-line overrides.
/// A missing file is an error only when `required` (the path was given explicitly).
pub fn load_config(
    path: &Path,
    required: bool,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let mut config = if !required && !path.exists() {
        tracing::warn!(path = %path.display(), "no configuration file; using defaults");
        let mut c = Config::default();
        c.apply_env(&env)?;
        c
    } else {
        Config::load(path, &env)?
    };
    if let Some(dir) = &overrides.plugins_dir {
        config.plugins_dir = dir.clone();
    }
    if let Some(dir) = &overrides.state_dir {
        config.state_dir = Some(dir.clone());
    }
    if let Some(port) = overrides.port {
        config.server.enabled = true;
        config.server.port = port;
    }
    config.validate(path)?;
    let state_dir = config.state_dir(&env);
    if state_dir.exists() && !state_dir.is_dir() {
        return Err(ConfigError::field(
            path,
            "state_dir",
            format!("{} is not a directory", state_dir.display()),
        ));
    }
    Ok(config)
}

/// Shared daemon state.
pub struct Control {
    pub(crate) manager: Manager,
    config_path: PathBuf,
    config_required: bool,
    overrides: Overrides,
    state: Mutex<&'static str>,
    last_reload_error: Mutex<String>,
    reload_lock: tokio::sync::Mutex<()>,
    log: LogHandle,
    started_usec: u64,
    conn: OnceLock<Connection>,
    served: tokio::sync::Mutex<BTreeSet<String>>,
    started: Instant,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// The REST API server (idle unless `server.enabled`).
    pub api: ApiServer,
}

impl Control {
    /// Wraps a started manager.
    pub fn new(
        manager: Manager,
        config_path: PathBuf,
        config_required: bool,
        overrides: Overrides,
        log: LogHandle,
    ) -> Self {
        let started_usec = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Control {
            manager,
            config_path,
            config_required,
            overrides,
            state: Mutex::new("starting"),
            last_reload_error: Mutex::new(String::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            log,
            started_usec,
            conn: OnceLock::new(),
            served: tokio::sync::Mutex::new(BTreeSet::new()),
            started: Instant::now(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            api: ApiServer::default(),
        }
    }

    /// Attaches the bus connection and publishes the current plugins as objects.
    pub async fn attach(&self, conn: Connection) -> zbus::Result<()> {
        let conn = self.conn.get_or_init(|| conn);
        objects::sync(conn, &self.manager, &mut *self.served.lock().await).await
    }

    /// Removes every object from the bus, waiting for calls being dispatched to finish.
    pub async fn detach(&self) {
        let Some(conn) = self.conn.get() else { return };
        let mut served = self.served.lock().await;
        for name in std::mem::take(&mut *served) {
            let _ = conn
                .object_server()
                .remove::<PluginIface, _>(plugin_path(&name))
                .await;
        }
        let _ = conn
            .object_server()
            .remove::<ManagerIface, _>(MANAGER_PATH)
            .await;
    }

    /// The lifecycle state: starting, running, reloading, stopping.
    pub fn state(&self) -> &'static str {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the lifecycle state and announces the change.
    pub async fn set_state(&self, state: &'static str) {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
        if let Some(iface) = self.manager_object().await {
            let _ = iface
                .get()
                .await
                .state_changed(iface.signal_emitter())
                .await;
        }
    }

    /// The served manager object, once attached to the bus.
    async fn manager_object(&self) -> Option<InterfaceRef<ManagerIface>> {
        let conn = self.conn.get()?;
        conn.object_server()
            .interface::<_, ManagerIface>(MANAGER_PATH)
            .await
            .ok()
    }

    /// Why the last reload failed (empty after a success).
    pub fn last_reload_error(&self) -> String {
        self.last_reload_error
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Start time in microseconds since the epoch.
    pub fn started_usec(&self) -> u64 {
        self.started_usec
    }

    /// Time since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Reloads that succeeded and failed.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
        )
    }

    /// The one-line status for systemd and humans.
    pub fn status_line(&self) -> String {
        let s = self.manager.summary();
        let mut line = format!(
            "{} plugins, {} enabled, {} failed",
            s.plugins, s.enabled, s.failed
        );
        let err = self.last_reload_error();
        if !err.is_empty() {
            line.push_str("; last reload failed: ");
            line.push_str(&err);
        }
        line
    }

    /// Bulk enable/disable with one (name, ok, message) per name.
    pub async fn set_many(&self, names: &[String], on: bool) -> Vec<(String, bool, String)> {
        let results = self.manager.set_enabled_many(names, on).await;
        notify::status(&self.status_line());
        results
            .into_iter()
            .map(|(name, r)| match r {
                Ok(Change::Changed) => (name, true, "changed".to_owned()),
                Ok(Change::Unchanged) => (name, true, "unchanged".to_owned()),
                Err(e) => (name, false, e.to_string()),
            })
            .collect()
    }

    /// Refuses a configuration that moves the state directory: the runtime state was
    /// read from the running one, and moving it needs a restart.
    fn same_state_dir(&self, config: Config) -> Result<Config, ConfigError> {
        let wanted = config.state_dir(&env);
        let running = self.manager.state_dir();
        if wanted != running {
            return Err(ConfigError::field(
                &self.config_path,
                "state_dir",
                format!(
                    "moving the state directory from {} to {} needs a restart",
                    running.display(),
                    wanted.display()
                ),
            ));
        }
        Ok(config)
    }

    /// Re-reads and applies the configuration (SIGHUP and `Reload()`), telling systemd
    /// RELOADING=1 … READY=1 around it. A refused configuration changes nothing.
    pub async fn reload(self: &Arc<Self>) -> Result<String, DynplugError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        notify::reloading();
        self.set_state("reloading").await;
        tracing::info!(path = %self.config_path.display(), "reloading configuration");
        let loaded = load_config(&self.config_path, self.config_required, &self.overrides)
            .and_then(|config| self.same_state_dir(config));
        let result = match loaded {
            Err(e) => {
                self.manager.reload_refused(&e);
                Err(DynplugError::Config(e.to_string()))
            }
            Ok(config) => {
                let level = config.log_level.clone();
                let server = config.server.clone();
                match self.manager.reload(config).await {
                    Ok(report) => {
                        self.log.set_level(&level);
                        match self.api.apply(self, &server).await {
                            Ok(None) => Ok(report.to_string()),
                            Ok(Some(api)) => Ok(format!("{report}; {api}")),
                            Err(e) => Err(DynplugError::Config(format!(
                                "plugins reloaded ({report}), but the REST API kept its previous settings: {e}"
                            ))),
                        }
                    }
                    Err(e) => Err(crate::dbus::errors::dbus_error(e)),
                }
            }
        };
        let counter = if result.is_ok() {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let error = match &result {
            Ok(_) => String::new(),
            Err(DynplugError::Config(m) | DynplugError::Failed(m)) => m.clone(),
            Err(e) => e.to_string(),
        };
        if !error.is_empty() {
            tracing::error!(error = %error, "reload refused; the previous configuration stays in force");
        }
        *self
            .last_reload_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
        if let Some(conn) = self.conn.get() {
            if let Err(e) = objects::sync(conn, &self.manager, &mut *self.served.lock().await).await
            {
                tracing::warn!(error = %e, "cannot update plugin objects");
            }
        }
        if let Some(iface) = self.manager_object().await {
            let manager = iface.get().await;
            let _ = manager
                .last_reload_error_changed(iface.signal_emitter())
                .await;
            let _ = manager.api_address_changed(iface.signal_emitter()).await;
        }
        self.set_state("running").await;
        notify::ready(&self.status_line());
        result
    }
}
