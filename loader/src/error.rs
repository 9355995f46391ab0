//! Errors of loading and calling a plugin library.
//!
//! Messages are lowercase, name the thing that failed and say what to do where
//! possible. The daemon maps these kinds once to D-Bus error names, HTTP statuses
//! and exit codes.

use std::path::PathBuf;

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
