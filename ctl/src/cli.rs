//! The command line of `dynplugctl`.

use std::path::PathBuf;

use clap::{ArgGroup, Parser, Subcommand};

/// dynplugctl: control dynplugd over D-Bus.
///
/// Exit codes: 0 ok, 1 failure, 2 usage, 3 plugin not found, 4 access denied,
/// 5 daemon unavailable, 6 plugin disabled, 7 timeout, 8 invalid argument,
/// 9 configuration rejected, 10 cancelled, 11 too many jobs, 12 signature refused,
/// 13 registry unreachable, 14 registry answer refused.
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
    /// Never ask for a password: calls polkit would let you make after authenticating
    /// fail instead (without it, dynplugctl asks on a terminal, as systemctl does).
    #[arg(long, global = true)]
    pub(crate) no_ask_password: bool,
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
    /// Run a plugin as a job and wait for it; INPUT absent or `-` reads standard input.
    /// On a terminal a plugin that reports progress shows a progress bar (on stderr),
    /// and Ctrl-C cancels the job.
    Execute {
        /// Plugin name.
        name: String,
        /// The input text.
        #[arg(conflicts_with = "file")]
        input: Option<String>,
        /// Read the input from this file.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Start the job, print its object path and return at once.
        #[arg(long)]
        detach: bool,
    },
    /// Install a plugin from an OCI registry (HOST/REPO:TAG, HOST/REPO@sha256:...,
    /// HOST/REPO@RANGE; `http://` before a loopback registry for plain HTTP) or an
    /// image-layout archive on the daemon's host, as a job followed to its end.
    Install {
        /// The reference.
        reference: String,
        /// Start the job, print its object path and return at once.
        #[arg(long)]
        detach: bool,
    },
    /// List the plugins installed from registries.
    Installed,
    /// Put back the version of a plugin installed before the current one (they swap).
    Rollback {
        /// Plugin name.
        name: String,
    },
    /// Remove a plugin installed from a registry (its file, signature and kept version).
    Remove {
        /// Plugin name.
        name: String,
    },
    /// List jobs (running, and ended ones still kept).
    Jobs,
    /// Show one job.
    Job {
        /// The job: its number or object path.
        id: String,
        /// Follow it to the end (progress bar on a terminal), then print its output.
        #[arg(long)]
        wait: bool,
    },
    /// Cancel a job (yours, or any as root).
    Cancel {
        /// The job: its number or object path.
        id: String,
    },
    /// Show everything known about a plugin file without running any of its code
    /// (runs `dynplugd --inspect FILE`; needs no daemon).
    Inspect {
        /// The plugin file.
        file: PathBuf,
        /// Judge its signature by this configuration's `trust:` (default: the daemon's
        /// default configuration file).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Make the daemon re-read its configuration.
    Reload,
    /// Show the daemon's state.
    Status,
    /// Print plugin, job and configuration events as they happen, until interrupted.
    Watch,
    /// A live table of plugins: calls and errors per second, p50/p99 latency over the
    /// last interval, timeouts, workers' CPU and memory, running jobs. Keys: n c e t p l
    /// u m j sort (by name, calls/s, errors/s, timeouts, p50, p99, CPU, memory, jobs),
    /// r reverses, / filters by name, up/down select, + enables and - disables the
    /// selected plugin (polkit decides, as for `enable`), q quits.
    Top {
        /// Seconds between samples.
        #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = interval)]
        interval: f64,
        /// Print one sample (two an interval apart, so rates are real) and exit; with
        /// --json, as JSON.
        #[arg(long)]
        once: bool,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// An interval between 0.1 and 3600 seconds.
fn interval(text: &str) -> Result<f64, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if (0.1..=3600.0).contains(&secs) {
        Ok(secs)
    } else {
        Err("the interval must be between 0.1 and 3600 seconds".into())
    }
}
