//! Errors of the host side, one enum per layer.
//!
//! Messages are lowercase, name the thing that failed and say what to do where
//! possible. The daemon maps these kinds once to D-Bus error names, HTTP statuses
//! and exit codes.

use std::path::PathBuf;
use std::time::Duration;

/// Why a plugin library was refused by the loader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be inspected.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// A WebAssembly component was refused: not a component, an import the host does
    /// not provide, no metadata section, or it does not compile.
    #[error("refusing {path}: {reason}")]
    Wasm {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file failed a trust check (permissions, owner, setuid).
    #[error("refusing {path}: {reason}")]
    Untrusted {
        /// The file or directory that failed the check.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is larger than `trust.max_plugin_bytes` allows; it was not read.
    #[error("refusing {path}: {size} bytes, more than trust.max_plugin_bytes ({limit})")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// The file is not an ELF shared library, or the dynamic linker refused it.
    #[error("{path} is not a loadable shared library: {reason}")]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// What the check or the dynamic linker said.
        reason: String,
    },
    /// The library does not export `dynplug_plugin_entry`.
    #[error("{path} has no entry symbol `dynplug_plugin_entry`: not a DynPlug plugin")]
    MissingEntry {
        /// The file.
        path: PathBuf,
    },
    /// The entry point returned null, or the table does not start with the magic.
    #[error("{path} returned an invalid plugin table: {reason}")]
    BadTable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The plugin was built for another ABI version.
    #[error("{path} uses plugin ABI version {found}, but this host speaks versions 1 to {expected}: rebuild the plugin against this DynPlug's SDK")]
    AbiMismatch {
        /// The file.
        path: PathBuf,
        /// What the plugin declares.
        found: u32,
        /// The newest version the host speaks (it loads every one from 1).
        expected: u32,
    },
    /// The plugin's metadata is unusable (bad name, non-UTF-8 strings).
    #[error("{path}: invalid plugin metadata: {reason}")]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file's signature is missing or bad and `trust.signatures` is `enforcing`.
    #[error("refusing {path}: {reason} (trust.signatures is enforcing)")]
    Signature {
        /// The file.
        path: PathBuf,
        /// The verdict.
        reason: String,
    },
    /// The plugin's table says something else than its metadata section.
    #[error(
        "{path}: its .dynplug.meta section says {field} `{section}`, but its table says `{table}`"
    )]
    MetadataMismatch {
        /// The file.
        path: PathBuf,
        /// Which field disagrees.
        field: &'static str,
        /// What the section says.
        section: String,
        /// What the table says.
        table: String,
    },
    /// Another loaded library already uses this plugin name.
    #[error("{path}: name `{name}` is already provided by {other}")]
    DuplicateName {
        /// The file refused.
        path: PathBuf,
        /// The contested name.
        name: String,
        /// The file that keeps the name.
        other: PathBuf,
    },
    /// The file was refused, or crashed, in the probe process; the reason is what the
    /// probe reported (the same words as an in-process refusal) or how it died.
    #[error("{reason}")]
    Probe {
        /// The file.
        path: PathBuf,
        /// What happened.
        reason: String,
        /// Whether the file itself is to blame (refused, crashed while loading), so the
        /// same file would fail again and the registry cache remembers it; false when
        /// the probe could not run or was killed on its deadline (a busy machine).
        remember: bool,
    },
    /// The plugin's version does not satisfy the configured requirement.
    #[error("plugin `{name}` is version {found}, but the configuration requires {required}")]
    VersionMismatch {
        /// The plugin.
        name: String,
        /// What the plugin declares.
        found: String,
        /// The configured `version:` requirement.
        required: String,
    },
    /// The plugin's constructor or `configure` failed.
    #[error("plugin `{name}` failed to initialise: {reason}")]
    Init {
        /// The plugin.
        name: String,
        /// What it said.
        reason: String,
    },
}

/// Why a call into a plugin failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The plugin returned an error.
    #[error("plugin `{plugin}` failed: {message}")]
    Failed {
        /// The plugin.
        plugin: String,
        /// Its message.
        message: String,
    },
    /// The plugin panicked; the panic was caught at the ABI boundary.
    #[error("plugin `{plugin}` crashed: {message}")]
    Panicked {
        /// The plugin.
        plugin: String,
        /// The panic message.
        message: String,
    },
    /// The worker process running an isolated plugin died during the call.
    #[error("plugin `{plugin}` crashed: {message}")]
    Crashed {
        /// The plugin.
        plugin: String,
        /// How the worker ended (signal or exit status).
        message: String,
    },
    /// The answer was larger than the plugin's `max_output_bytes`; it was dropped
    /// without being buffered.
    #[error("plugin `{plugin}` answered more than max_output_bytes ({limit} bytes)")]
    OutputTooLarge {
        /// Plugin name.
        plugin: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The worker broke the protocol (a forged, malformed or unexpected frame); it was
    /// killed.
    #[error("plugin `{plugin}` worker broke the protocol and was killed: {reason}")]
    Protocol {
        /// Plugin name.
        plugin: String,
        /// What was wrong.
        reason: String,
    },
    /// A WebAssembly plugin trapped (the trap named) or was stopped; its instance is
    /// gone, the daemon and other calls are untouched.
    #[error("plugin `{plugin}` {message}")]
    Trapped {
        /// The plugin.
        plugin: String,
        /// The trap, named (`trapped: unreachable`, `trapped: stack overflow`, ...).
        message: String,
    },
    /// The plugin returned bytes that are not UTF-8.
    #[error("plugin `{plugin}` returned output that is not valid UTF-8")]
    InvalidOutput {
        /// The plugin.
        plugin: String,
    },
}

/// Errors of the manager, as callers (D-Bus, REST, CLI) see them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// No plugin of that name is known.
    #[error("no plugin named `{0}`")]
    NotFound(String),
    /// The plugin exists but is disabled.
    #[error("plugin `{0}` is disabled")]
    Disabled(String),
    /// The plugin failed to load or initialise and cannot be used.
    #[error("plugin `{name}` is not usable: {reason}")]
    Unavailable {
        /// The plugin.
        name: String,
        /// Why it failed.
        reason: String,
    },
    /// The call ran out of time (including waiting for a free slot).
    #[error("plugin `{name}` did not answer within {}ms", timeout.as_millis())]
    Timeout {
        /// The plugin.
        name: String,
        /// The limit that was hit.
        timeout: Duration,
    },
    /// The plugin's call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The request itself is invalid (name syntax, input too large, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The daemon is shutting down and takes no new calls.
    #[error("dynplugd is shutting down")]
    ShuttingDown,
    /// A configuration or state file problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The runtime state could not be saved.
    #[error("cannot save runtime state: {0}")]
    State(String),
    /// The plugins directory cannot be scanned (missing, not a directory, untrusted).
    #[error("plugins_dir: {0}")]
    PluginsDir(LoadError),
    /// A failure inside the daemon (a task that panicked), not the caller's doing.
    #[error("internal error: {0}")]
    Internal(String),
    /// The call was cancelled before it ended.
    #[error("the call of plugin `{0}` was cancelled")]
    Cancelled(String),
    /// No job has that id (it never existed, or ended and was forgotten).
    #[error("no job {0}")]
    JobNotFound(u64),
    /// As many jobs as allowed are running already.
    #[error("{0} jobs are running, as many as allowed (jobs.max_running)")]
    TooManyJobs(usize),
    /// The caller has as many jobs running as one caller may.
    #[error("you have {0} jobs running, as many as one caller may (jobs.max_running_per_user)")]
    TooManyJobsForCaller(usize),
    /// The caller may not do this (cancel another user's job).
    #[error("access denied: {0}")]
    AccessDenied(String),
}

/// A configuration problem, naming the file, the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{problem}", file.display(), field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct ConfigError {
    /// The file (or `<environment>` for DYNPLUG_* variables).
    pub file: PathBuf,
    /// The offending field as a dotted path, when known.
    pub field: Option<String>,
    /// What is wrong, with line and column when the parser knows them.
    pub problem: String,
}

impl ConfigError {
    /// A problem with a named field.
    pub fn field(
        file: impl Into<PathBuf>,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: file.into(),
            field: Some(field.into()),
            problem: problem.into(),
        }
    }

    /// A problem with the file as a whole.
    pub fn file(file: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        ConfigError {
            file: file.into(),
            field: None,
            problem: problem.into(),
        }
    }
}
