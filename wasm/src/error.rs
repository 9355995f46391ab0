//! The errors of this crate: one enum for loading a plugin, one for a call.

use std::time::Duration;

/// Why a component could not be loaded. Nothing of the component ran.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The bytes are not a WebAssembly component.
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// Its `dynplug.meta` section is malformed.
    #[error("malformed dynplug.meta section: {0}")]
    Metadata(String),
    /// It imports something the host does not provide.
    #[error("imports `{import}`, which this host does not provide: {reason}")]
    Import {
        /// The import's name.
        import: String,
        /// Why it is refused.
        reason: String,
    },
    /// It was built for a major version of the interface this host does not speak.
    #[error("built for dynplug:plugin@{found}; this host speaks dynplug:plugin@{speaks}")]
    Version {
        /// The version it imports.
        found: String,
        /// The version this host speaks.
        speaks: &'static str,
    },
    /// It lacks an export, or one has the wrong type.
    #[error("export `{export}`: {reason}")]
    Export {
        /// The export's name.
        export: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// This process may not make memory executable, so no compiled code can run.
    #[error("this process may not make memory executable (systemd's MemoryDenyWriteExecute=yes?): WebAssembly plugins need it allowed, see docs/wasm.md")]
    NoExecutableMemory,
    /// The compiler refused it (invalid WebAssembly, an unsupported feature).
    #[error("cannot compile: {0}")]
    Compile(String),
    /// A directory granted to it (`sandbox.read`, `sandbox.write`) cannot be opened.
    #[error("cannot grant directory {path}: {reason}")]
    Preopen {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// It refused its settings.
    #[error("configure: {0}")]
    Configure(String),
}

/// Why a call did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The plugin answered with an error of its own.
    #[error("{0}")]
    Plugin(String),
    /// The call ran past its timeout and was stopped (epoch interruption).
    #[error("stopped at its timeout of {0:?}")]
    Timeout(Duration),
    /// The caller cancelled and the plugin did not return within the grace period.
    #[error("stopped after its caller cancelled")]
    Cancelled,
    /// The plugin trapped: the trap is named (`unreachable`, `stack overflow`, ...).
    #[error("trapped: {trap}{}", memory_note(*.memory_refused, *.memory_limit))]
    Trap {
        /// The trap, named.
        trap: String,
        /// A growth of its memory refused during the call (bytes asked for), if any.
        memory_refused: Option<usize>,
        /// The memory limit, in bytes.
        memory_limit: usize,
    },
    /// Its answer is larger than allowed.
    #[error("its answer is larger than {0} bytes")]
    OutputTooLarge(usize),
    /// A fresh instance could not be made for the call.
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
}

fn memory_note(refused: Option<usize>, limit: usize) -> String {
    match refused {
        Some(asked) => format!(
            " (after its memory limit of {} MiB refused a growth to {asked} bytes)",
            limit / (1024 * 1024)
        ),
        None => String::new(),
    }
}

impl CallError {
    /// Whether the plugin itself failed (a trap, or stopped at a limit), as opposed to
    /// answering with an error: such failures count toward quarantine.
    pub fn is_fault(&self) -> bool {
        matches!(self, CallError::Trap { .. })
    }
}
