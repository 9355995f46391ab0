//! The daemon's shared state, below its front ends: the manager, the lifecycle, reloads
//! and their outcome. It knows nothing of D-Bus or HTTP. The D-Bus objects follow its
//! [`StateEvent`]s; the REST server follows the server settings each reload hands it
//! (through [`ApiRequest`]s) and reports where it listens. A reload is one request with
//! one reply ([`Shared::reload`]), the same for SIGHUP, `Reload()` and anything else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use dynplug_core::config::{Config, ServerConfig};
use dynplug_core::error::{ConfigError, ManagerError};
use dynplug_core::{Change, Manager};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::logging::LogHandle;
use crate::notify;
use dynplug_core::locks::lock;

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

/// Where the daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Loading plugins, not yet serving.
    Starting,
    /// Serving.
    Running,
    /// Applying a new configuration.
    Reloading,
    /// Draining calls before exit.
    Stopping,
}

impl Lifecycle {
    /// The name shown in the `State` property and `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Starting => "starting",
            Lifecycle::Running => "running",
            Lifecycle::Reloading => "reloading",
            Lifecycle::Stopping => "stopping",
        }
    }
}

/// What changed, for the front ends to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateEvent {
    /// The lifecycle moved.
    Lifecycle(Lifecycle),
    /// A reload finished (the plugin set, the last reload error and the API address
    /// may have changed).
    Reloaded,
}

/// Why a reload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// The configuration (or the plugins directory) was refused; nothing changed.
    #[error("{0}")]
    Config(String),
    /// The plugins were reloaded but something else failed (e.g. the REST API kept its
    /// previous settings).
    #[error("{0}")]
    Partial(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

/// A request to the REST server: apply these settings, and say what happened
/// (`Ok(None)`: nothing changed; `Ok(Some(summary))`; `Err(why)`: old server kept).
#[derive(Debug)]
pub struct ApiRequest {
    /// The `server:` section to apply.
    pub config: ServerConfig,
    /// The answer.
    pub reply: oneshot::Sender<Result<Option<String>, String>>,
}

/// Shared daemon state.
pub struct Shared {
    /// The plugin manager.
    pub manager: Manager,
    config_path: PathBuf,
    config_required: bool,
    overrides: Overrides,
    lifecycle: Mutex<Lifecycle>,
    last_reload_error: Mutex<String>,
    reload_lock: tokio::sync::Mutex<()>,
    log: LogHandle,
    started_usec: u64,
    started: Instant,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    events: broadcast::Sender<StateEvent>,
    api: OnceLock<mpsc::Sender<ApiRequest>>,
    api_address: Mutex<Option<SocketAddr>>,
}

impl Shared {
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
        Shared {
            manager,
            config_path,
            config_required,
            overrides,
            lifecycle: Mutex::new(Lifecycle::Starting),
            last_reload_error: Mutex::new(String::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            log,
            started_usec,
            started: Instant::now(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            events: broadcast::channel(64).0,
            api: OnceLock::new(),
            api_address: Mutex::new(None),
        }
    }

    /// What changed, as it changes.
    pub fn subscribe(&self) -> broadcast::Receiver<StateEvent> {
        self.events.subscribe()
    }

    /// Connects the REST server: reloads hand it their `server:` settings.
    pub fn connect_api(&self, requests: mpsc::Sender<ApiRequest>) {
        let _ = self.api.set(requests);
    }

    /// Asks the REST server (if connected) to apply `config`.
    pub async fn apply_api(&self, config: &ServerConfig) -> Result<Option<String>, String> {
        let Some(api) = self.api.get() else {
            return Ok(None);
        };
        let (reply, answer) = oneshot::channel();
        let request = ApiRequest {
            config: config.clone(),
            reply,
        };
        api.send(request)
            .await
            .map_err(|_| "the REST server is gone".to_owned())?;
        answer
            .await
            .map_err(|_| "the REST server did not answer".to_owned())?
    }

    /// Where the REST API listens, if it does.
    pub fn api_address(&self) -> Option<SocketAddr> {
        *lock(&self.api_address)
    }

    /// Records where the REST API listens (set by the REST server).
    pub fn set_api_address(&self, address: Option<SocketAddr>) {
        *lock(&self.api_address) = address;
    }

    /// The lifecycle state.
    pub fn lifecycle(&self) -> Lifecycle {
        *lock(&self.lifecycle)
    }

    /// Moves the lifecycle and announces it.
    pub fn set_lifecycle(&self, state: Lifecycle) {
        *lock(&self.lifecycle) = state;
        let _ = self.events.send(StateEvent::Lifecycle(state));
    }

    /// Why the last reload failed (empty after a success).
    pub fn last_reload_error(&self) -> String {
        lock(&self.last_reload_error).clone()
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
        if s.unverified > 0 {
            line.push_str(&format!(", {} not verified", s.unverified));
        }
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
    /// RELOADING=1 … READY=1 around it; reloads run one at a time. A refused
    /// configuration changes nothing. Returns a summary of what changed.
    pub async fn reload(&self) -> Result<String, ReloadError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        notify::reloading();
        self.set_lifecycle(Lifecycle::Reloading);
        tracing::info!(path = %self.config_path.display(), "reloading configuration");
        let loaded = load_config(&self.config_path, self.config_required, &self.overrides)
            .and_then(|config| self.same_state_dir(config));
        let result = match loaded {
            Err(e) => {
                self.manager.reload_refused(&e);
                Err(ReloadError::Config(e.to_string()))
            }
            Ok(config) => {
                let level = config.log_level.clone();
                let server = config.server.clone();
                match self.manager.reload(config).await {
                    Ok(report) => {
                        self.log.set_level(&level);
                        match self.apply_api(&server).await {
                            Ok(None) => Ok(report.to_string()),
                            // The REST API's change is a change: never "no changes; ...".
                            Ok(Some(api)) if report.is_empty() => Ok(api),
                            Ok(Some(api)) => Ok(format!("{report}; {api}")),
                            Err(e) => Err(ReloadError::Partial(format!(
                                "plugins reloaded ({report}), but the REST API kept its previous settings: {e}"
                            ))),
                        }
                    }
                    Err(e @ (ManagerError::Config(_) | ManagerError::PluginsDir(_))) => {
                        Err(ReloadError::Config(e.to_string()))
                    }
                    Err(e) => Err(ReloadError::Failed(e.to_string())),
                }
            }
        };
        let counter = if result.is_ok() {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let error = result
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        if !error.is_empty() {
            tracing::error!(error = %error, "reload refused; the previous configuration stays in force");
        }
        *lock(&self.last_reload_error) = error;
        let _ = self.events.send(StateEvent::Reloaded);
        self.set_lifecycle(Lifecycle::Running);
        notify::ready(&self.status_line());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_names() {
        let names: Vec<&str> = [
            Lifecycle::Starting,
            Lifecycle::Running,
            Lifecycle::Reloading,
            Lifecycle::Stopping,
        ]
        .into_iter()
        .map(Lifecycle::as_str)
        .collect();
        assert_eq!(names, ["starting", "running", "reloading", "stopping"]);
    }
}
