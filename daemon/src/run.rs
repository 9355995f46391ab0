//! The daemon's life: start, serve, reload on SIGHUP, stop gracefully.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dynplug_core::error::{ConfigError, ManagerError};
use dynplug_core::trust::TrustPolicy;
use dynplug_core::Manager;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;
use zbus::fdo::{RequestNameFlags, RequestNameReply};

use crate::api::ApiServer;
use crate::cli::{Args, Bus};
use crate::dbus::authority::Authority;
use crate::dbus::objects::{self, Published};
use crate::dbus::{ManagerIface, BUS_NAME, MANAGER_PATH};
use crate::logging;
use crate::notify;
use crate::state::{load_config, Lifecycle, Overrides, Shared};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The manager could not start.
    #[error(transparent)]
    Manager(#[from] ManagerError),
    /// The bus could not be reached or the objects not served.
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    /// Another process owns the bus name.
    #[error("the bus name {0} is already owned (is another dynplugd running?)")]
    NameTaken(&'static str),
    /// The REST API could not start.
    #[error("REST API: {0}")]
    Api(String),
    /// A signal handler could not be installed.
    #[error("cannot install signal handler: {0}")]
    Signal(#[from] std::io::Error),
}

impl DaemonError {
    /// The process exit code: 78 (EX_CONFIG) for configuration errors, 69
    /// (EX_UNAVAILABLE) when the bus is unusable, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            DaemonError::Config(_)
            | DaemonError::Manager(ManagerError::Config(_) | ManagerError::PluginsDir(_)) => 78,
            DaemonError::Bus(_) | DaemonError::NameTaken(_) => 69,
            _ => 1,
        }
    }
}

async fn connect(bus: &Bus, manager_iface: ManagerIface) -> zbus::Result<zbus::Connection> {
    let builder = match bus {
        Bus::System => zbus::connection::Builder::system(),
        Bus::Session => zbus::connection::Builder::session(),
        Bus::Address(a) => zbus::connection::Builder::address(a.as_str()),
    };
    // Objects are served before the name is requested, so a call that activated the
    // daemon finds them the moment the name appears.
    builder
        .serve_at(MANAGER_PATH, manager_iface)
        .serve_at(MANAGER_PATH, zbus::fdo::ObjectManager)
        .build()
        .await
}

/// Runs the daemon until `shutdown` resolves (or SIGTERM/SIGINT arrives), then stops
/// gracefully. SIGHUP reloads the configuration.
pub async fn run(args: Args, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    Daemon::start(args).await?.serve(shutdown).await
}

/// A started daemon: everything it serves, and every task it runs, owned here until
/// [`Daemon::serve`] stops them in order.
pub struct Daemon {
    args: Args,
    manager: Manager,
    shared: Arc<Shared>,
    api: Arc<ApiServer>,
    conn: zbus::Connection,
    published: Arc<Published>,
    signals: Signals,
    /// The tasks that follow events (signals on the bus, the REST server's settings,
    /// the watchdog): ended and awaited at shutdown.
    followers: JoinSet<()>,
}

/// The signals the daemon acts on.
struct Signals {
    hangup: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Daemon {
    /// Reads the configuration, loads the plugins, starts the REST API (if enabled),
    /// serves the objects and takes the bus name, then says READY=1. Returns the
    /// running daemon; nothing it started outlives it.
    pub async fn start(args: Args) -> Result<Daemon, DaemonError> {
        let env = |k: &str| std::env::var(k).ok();
        // Absolute, so ConfigPath and log lines name the file whatever the directory.
        let config_path = args.config_path(&env);
        let config_path = std::path::absolute(&config_path).unwrap_or(config_path);
        let required = args.config.is_some() || env("DYNPLUG_CONFIG").is_some();
        let overrides = Overrides {
            plugins_dir: args.plugins_dir.clone(),
            state_dir: args.state_dir.clone(),
            port: args.port,
        };
        let config = load_config(&config_path, required, &overrides)?;
        let log = logging::init(&config.log_level, args.log_target);
        tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %config_path.display(), "dynplugd starting");
        let signals = Signals {
            hangup: signal(SignalKind::hangup())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        };
        let state_dir = config.state_dir(&env);
        let server = config.server.clone();
        check_token_files(&server, &config_path)?;
        let open_files = crate::limits::raise_open_files_limit();
        tracing::debug!(open_files, "descriptor limit");
        for (layer, support) in dynplug_core::worker::sandbox::host_support(&config.worker_user) {
            if let Err(why) = support {
                tracing::warn!(layer, reason = %why, "this host cannot give isolated plugins this sandbox layer");
            }
        }
        let (manager, report) = Manager::start_with(
            config,
            &state_dir,
            TrustPolicy::for_current_process(),
            worker_program(&args),
        )
        .await?;
        tracing::info!(summary = %report, "plugins loaded");
        let shared = Arc::new(Shared::new(
            manager.clone(),
            config_path,
            required,
            overrides,
            log,
        ));
        let mut followers = JoinSet::new();
        // The REST server follows the settings each reload hands it; it listens before
        // READY=1, as systemd's readiness promises.
        let api = Arc::new(ApiServer::default());
        let (api_requests, api_inbox) = tokio::sync::mpsc::channel(4);
        shared.connect_api(api_requests);
        followers.spawn(crate::api::follow(
            Arc::clone(&api),
            Arc::clone(&shared),
            api_inbox,
        ));
        shared.apply_api(&server).await.map_err(DaemonError::Api)?;
        let (conn, published) =
            serve_on_bus(&args.bus(), &shared, &manager, &mut followers).await?;
        shared.set_lifecycle(Lifecycle::Running);
        notify::ready(&shared.status_line());
        tracing::info!(name = BUS_NAME, status = %shared.status_line(), "ready");
        if let Some(interval) = notify::watchdog_interval() {
            // Pinged from a task on the same runtime: if the runtime wedges, pings
            // stop and systemd restarts the daemon.
            followers.spawn(async move {
                let mut tick = tokio::time::interval(interval / 2);
                loop {
                    tick.tick().await;
                    notify::watchdog();
                }
            });
        }
        Ok(Daemon {
            args,
            manager,
            shared,
            api,
            conn,
            published,
            signals,
            followers,
        })
    }

    /// Serves until `shutdown` resolves or SIGTERM/SIGINT arrives (SIGHUP reloads), then
    /// stops, in this order: STOPPING=1 and new calls refused; reloads under way
    /// finished; calls in flight given `--stop-timeout`; the REST server stopped; the
    /// event followers ended; the objects removed (calls being dispatched answered);
    /// the bus name released.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
        let mut reloads = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = self.signals.hangup.recv() => {
                    let shared = Arc::clone(&self.shared);
                    // A task of its own, so signals keep being received meanwhile;
                    // reloads are serialised inside `Shared::reload`.
                    reloads.spawn(async move { let _ = shared.reload().await; });
                }
                Some(_) = reloads.join_next(), if !reloads.is_empty() => {}
                _ = self.signals.terminate.recv() => break,
                _ = self.signals.interrupt.recv() => break,
                () = &mut shutdown => break,
            }
        }
        notify::stopping();
        self.shared.set_lifecycle(Lifecycle::Stopping);
        while reloads.join_next().await.is_some() {}
        tracing::info!(in_flight = self.manager.in_flight(), "stopping");
        let left = self
            .manager
            .shutdown(Duration::from_secs(self.args.stop_timeout))
            .await;
        if left > 0 {
            tracing::warn!(calls = left, "calls still running at exit were abandoned");
        }
        self.api.stop().await;
        self.followers.abort_all();
        while self.followers.join_next().await.is_some() {}
        // Removing the objects waits for method calls still being dispatched (they hold
        // the interface's read lock until their reply is sent): no answer is lost.
        let drained = tokio::time::timeout(Duration::from_secs(2), self.published.detach()).await;
        if drained.is_err() {
            tracing::warn!("some D-Bus calls were still running at exit");
        }
        let _ = self.conn.release_name(BUS_NAME).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// A token file that cannot be read is a configuration error (exit 78), found before
/// anything starts.
fn check_token_files(
    server: &dynplug_core::config::ServerConfig,
    config_path: &std::path::Path,
) -> Result<(), DaemonError> {
    if !server.enabled {
        return Ok(());
    }
    let scoped = server
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("server.tokens[{i}].file"), &t.file));
    let files = server
        .token_file
        .iter()
        .map(|p| ("server.token_file".to_owned(), p))
        .chain(scoped)
        .chain(
            server
                .metrics_token_file
                .iter()
                .map(|p| ("server.metrics_token_file".to_owned(), p)),
        );
    for (field, path) in files {
        crate::api::Token::load(path).map_err(|e| ConfigError::field(config_path, field, e))?;
    }
    Ok(())
}

/// The worker program, with a warning when there is none.
fn worker_program(args: &Args) -> Option<std::path::PathBuf> {
    let worker = args.worker_program();
    match &worker {
        Some(program) => tracing::debug!(program = %program.display(), "worker program"),
        None => tracing::warn!(
            "no dynplug-worker found (beside dynplugd or at {}): isolated plugins cannot \
             run and new files are loaded without a probe (--worker-program PATH)",
            crate::cli::PACKAGED_WORKER
        ),
    }
    worker
}

/// Connects to `bus`, serves the manager and plugin objects, starts the tasks that
/// follow events onto the bus (in `followers`), and takes the bus name.
async fn serve_on_bus(
    bus: &Bus,
    shared: &Arc<Shared>,
    manager: &Manager,
    followers: &mut JoinSet<()>,
) -> Result<(zbus::Connection, Arc<Published>), DaemonError> {
    let authority = Arc::new(Authority::default());
    let iface = ManagerIface {
        shared: Arc::clone(shared),
        authority: Arc::clone(&authority),
        installer: Arc::default(),
    };
    let conn = connect(bus, iface).await?;
    authority.settle(&conn, bus).await;
    let published = Published::attach(conn.clone(), manager, authority).await?;
    followers.spawn(objects::forward(
        conn.clone(),
        manager.clone(),
        manager.subscribe(),
    ));
    followers.spawn(objects::follow_state(
        Arc::clone(&published),
        Arc::clone(shared),
    ));
    let reply = conn
        .request_name_with_flags(BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
        .await
        .map_err(|e| match e {
            zbus::Error::NameTaken => DaemonError::NameTaken(BUS_NAME),
            other => DaemonError::Bus(other),
        })?;
    if !matches!(
        reply,
        RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner
    ) {
        return Err(DaemonError::NameTaken(BUS_NAME));
    }
    Ok((conn, published))
}
