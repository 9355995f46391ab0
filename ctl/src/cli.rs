//! The command line of `dynplugctl`.

use std::path::PathBuf;

use clap::{ArgGroup, Parser, Subcommand};

/// dynplugctl: control dynplugd over D-Bus.
///
/// Exit codes: 0 ok, 1 failure, 2 usage, 3 plugin not found, 4 access denied,
/// 5 daemon unavailable, 6 plugin disabled, 7 timeout, 8 invalid argument,
/// 9 configuration rejected.
#[derive(Debug, Parser)]
#[command(name = "dynplugctl", version, about, long_about)]
#[command(group(ArgGroup::new("bus").args(["system", "session", "address"])))]
pub(crate) struct Cli {
    /// Talk to the daemon on the system bus (the default).
    #[arg(long, global = true)]
    pub(crate) system: bool,
    /// Talk to the daemon on the session bus.
    #[arg(long, visible_alias = "user", global = true)]
    pub(crate) session: bool,
    /// Talk to the daemon on the bus at this address.
    #[arg(long, value_name = "ADDR", global = true)]
    pub(crate) address: Option<String>,
    /// Print JSON (stdout carries only JSON, errors included).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Seconds to wait for an answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 120, global = true)]
    pub(crate) timeout: u64,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List plugins (and files that failed to load).
    List,
    /// Show everything about one plugin.
    Info {
        /// Plugin name (or a failed file's name).
        name: String,
    },
    /// Enable plugins (persisted across restarts).
    Enable {
        /// Plugin names.
        #[arg(required_unless_present = "all")]
        names: Vec<String>,
        /// Every plugin.
        #[arg(long, conflicts_with = "names")]
        all: bool,
    },
    /// Disable plugins (persisted across restarts).
    Disable {
        /// Plugin names.
        #[arg(required_unless_present = "all")]
        names: Vec<String>,
        /// Every plugin.
        #[arg(long, conflicts_with = "names")]
        all: bool,
    },
    /// Run a plugin; INPUT absent or `-` reads standard input.
    Execute {
        /// Plugin name.
        name: String,
        /// The input text.
        #[arg(conflicts_with = "file")]
        input: Option<String>,
        /// Read the input from this file.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Make the daemon re-read its configuration.
    Reload,
    /// Show the daemon's state.
    Status,
    /// Print plugin and configuration events as they happen, until interrupted.
    Watch,
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}
