//! The command line of `dynplugd`.

use std::path::PathBuf;

use clap::{ArgGroup, Parser};

use crate::logging::LogTarget;

/// dynplugd: loads plugins from shared libraries and serves them over D-Bus.
#[derive(Debug, Clone, Parser)]
#[command(name = "dynplugd", version, about, long_about = None)]
#[command(group(ArgGroup::new("bus").args(["system", "session", "address"])))]
pub struct Args {
    /// Configuration file [default: $DYNPLUG_CONFIG, else $CONFIGURATION_DIRECTORY/config.yaml
    /// when set by systemd, else /etc/dynplug/config.yaml].
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Use the system bus (the default).
    #[arg(long)]
    pub system: bool,
    /// Use the session bus.
    #[arg(long, visible_alias = "user")]
    pub session: bool,
    /// Use the bus at this D-Bus address (e.g. unix:path=/run/dbus/system_bus_socket).
    #[arg(long, value_name = "ADDR")]
    pub address: Option<String>,
    /// Load plugins from this directory instead of the configured one.
    #[arg(long, value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// Serve the REST API on this port (on server.host, loopback by default), whatever
    /// `server.enabled` says; 0 picks a free port.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Keep runtime state here instead of the configured one.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where logs go.
    #[arg(long, value_enum, default_value_t = LogTarget::Auto)]
    pub log_target: LogTarget,
    /// Seconds in-flight calls get to finish on SIGTERM.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub stop_timeout: u64,
    /// The program isolated plugins run in, and new plugin files are probed by
    /// [default: dynplug-worker beside dynplugd, else /usr/libexec/dynplug/dynplug-worker].
    #[arg(long, value_name = "PATH")]
    pub worker_program: Option<PathBuf>,
    /// Print everything known about a plugin file without running any of its code
    /// (metadata section, trust checks, settings schema), then exit: 0 if the file
    /// could be a plugin for this host, 1 if not.
    #[arg(long, value_name = "FILE")]
    pub inspect: Option<PathBuf>,
    /// With --inspect: print JSON.
    #[arg(long, requires = "inspect")]
    pub json: bool,
    /// Print the man page (roff) and exit (used to build the package).
    #[arg(long, hide = true)]
    pub man_page: bool,
}

/// Where `dynplug-worker` is installed by the package.
pub const PACKAGED_WORKER: &str = "/usr/libexec/dynplug/dynplug-worker";

impl Args {
    /// The worker program: `--worker-program`, else `dynplug-worker` beside this
    /// executable, else the packaged one; `None` (isolated plugins fail, new files
    /// load without a probe) when none of them is a file.
    pub fn worker_program(&self) -> Option<PathBuf> {
        if let Some(path) = &self.worker_program {
            return Some(path.clone());
        }
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("dynplug-worker")));
        beside
            .into_iter()
            .chain(std::iter::once(PathBuf::from(PACKAGED_WORKER)))
            .find(|p| p.is_file())
    }
}

/// Which bus to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    /// The system bus.
    System,
    /// The session bus.
    Session,
    /// An explicit address.
    Address(String),
}

impl Args {
    /// The bus chosen by the flags.
    pub fn bus(&self) -> Bus {
        match (&self.address, self.session) {
            (Some(a), _) => Bus::Address(a.clone()),
            (None, true) => Bus::Session,
            (None, false) => Bus::System,
        }
    }

    /// The configuration file to read.
    pub fn config_path(&self, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
        self.config
            .clone()
            .or_else(|| env("DYNPLUG_CONFIG").map(PathBuf::from))
            .or_else(|| {
                env("CONFIGURATION_DIRECTORY")
                    .map(|d| PathBuf::from(d.split(':').next().unwrap_or(&d)).join("config.yaml"))
            })
            .unwrap_or_else(|| PathBuf::from(dynplug_core::config::DEFAULT_CONFIG_PATH))
    }
}
