//! A loaded component plugin: checked, compiled (or taken from the artifact cache),
//! linked once into an `InstancePre`; each call gets a new store and a fresh instance,
//! so no call sees another's memory, under its memory limit, timeout and cancellation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynplug_sdk::host::Host;
use dynplug_sdk::Level;
use wasmtime::component::{Instance, InstancePre, ResourceTable};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::cache::{self, Artifact};
use crate::describe::{describe, host_version, Description, WIT_VERSION};
use crate::engine::{shared, Running};
use crate::error::{CallError, LoadError};
use crate::state::{CallState, MemoryLimit, Stop};

/// The most a guest may write to stdout or stderr in one call (the rest is dropped);
/// what it writes becomes log lines under its name.
pub const MAX_STDIO: usize = 64 * 1024;

/// Interface families a plugin may import besides `dynplug:plugin/host`: no network.
const ALLOWED_WASI: [&str; 5] = [
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
];

/// How a plugin is loaded.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Its settings as JSON, handed to `configure` (when it exports it) on every
    /// instance before its call.
    pub settings_json: String,
    /// Directories it may read (`sandbox.read`), at the same path inside.
    pub read_dirs: Vec<PathBuf>,
    /// Directories it may read and write (`sandbox.write`), at the same path inside.
    pub write_dirs: Vec<PathBuf>,
    /// The most memory one instance may have, in bytes (`memory_limit_mb`).
    pub memory_limit: usize,
    /// The private directory of precompiled artifacts; none: compile every load.
    pub cache_dir: Option<PathBuf>,
    /// The limits of the trial call of `configure` at load.
    pub configure_limits: CallLimits,
}

/// The limits of one call.
#[derive(Debug, Clone)]
pub struct CallLimits {
    /// When the call is stopped.
    pub timeout: Duration,
    /// How long a cancelled call may go on before it is stopped.
    pub cancel_grace: Duration,
    /// The largest answer accepted, in bytes.
    pub max_output: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            timeout: Duration::from_secs(5),
            cancel_grace: Duration::from_secs(2),
            max_output: 16 * 1024 * 1024,
        }
    }
}

/// What a successful call returns beside the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The plugin's answer.
    pub output: String,
    /// The most memory its instance had during the call, in bytes.
    pub peak_memory: usize,
}

/// A component plugin, ready to be called from any thread.
pub struct WasmPlugin {
    pre: InstancePre<CallState>,
    description: Description,
    configurable: bool,
    options: Options,
    artifact: Artifact,
    compile_time: Duration,
}

impl std::fmt::Debug for WasmPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmPlugin")
            .field("description", &self.description)
            .field("artifact", &self.artifact)
            .finish_non_exhaustive()
    }
}

/// Refuses imports this host does not provide, naming the first, before compiling.
pub fn check_imports(imports: &[String]) -> Result<(), LoadError> {
    for import in imports {
        if let Some(version) = host_version(import) {
            if version.split('.').next() != WIT_VERSION.split('.').next() {
                return Err(LoadError::Version {
                    found: version.to_owned(),
                    speaks: WIT_VERSION,
                });
            }
            continue;
        }
        if import.starts_with("wasi:sockets/") || import.starts_with("wasi:http/") {
            return Err(LoadError::Import {
                import: import.clone(),
                reason: "wasm plugins get no network".into(),
            });
        }
        if !ALLOWED_WASI.iter().any(|p| import.starts_with(p)) {
            return Err(LoadError::Import {
                import: import.clone(),
                reason: "only dynplug:plugin/host and the WASI cli, clocks, filesystem, io and random interfaces are provided".into(),
            });
        }
    }
    Ok(())
}

impl WasmPlugin {
    /// Checks, compiles and links the component in `bytes` (the sealed bytes whose
    /// signature was checked); runs `configure` once to check its settings.
    pub fn load(bytes: &[u8], options: Options) -> Result<WasmPlugin, LoadError> {
        let description = describe(bytes)?;
        check_imports(&description.imports)?;
        if !description.exports.iter().any(|e| e == "execute") {
            return Err(LoadError::Export {
                export: "execute",
                reason: "missing (the component must target world dynplug:plugin/plugin)".into(),
            });
        }
        if !crate::engine::executable_memory_allowed() {
            return Err(LoadError::NoExecutableMemory);
        }
        let shared = shared();
        let began = Instant::now();
        let (component, artifact) = cache::compile(shared, bytes, options.cache_dir.as_deref())
            .map_err(LoadError::Compile)?;
        let compile_time = began.elapsed();
        let pre = shared
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Import {
                import: format!("{e}"),
                reason: format!("{e:#}"),
            })?;
        let plugin = WasmPlugin {
            configurable: description.exports.iter().any(|e| e == "configure"),
            pre,
            description,
            options,
            artifact,
            compile_time,
        };
        // One instance now: its exports have the types of the world, and it takes
        // its settings.
        let limits = plugin.options.configure_limits.clone();
        let _running = Running::enter();
        let (mut store, _) = plugin.store(None, &limits)?;
        let instance = plugin
            .instantiate(&mut store, &plugin.options.settings_json)
            .map_err(|e| LoadError::Configure(e.to_string()))?;
        instance
            .get_typed_func::<(&str,), (Result<String, String>,)>(&mut store, "execute")
            .map_err(|e| LoadError::Export {
                export: "execute",
                reason: format!("{e:#}"),
            })?;
        Ok(plugin)
    }

    /// What the component declares.
    pub fn description(&self) -> &Description {
        &self.description
    }

    /// Where its code came from at load.
    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }

    /// How long compiling (or loading its artifact) took.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// A store for one call, and the captured stdout and stderr.
    fn store(
        &self,
        host: Option<Arc<dyn Host + Send + Sync>>,
        limits: &CallLimits,
    ) -> Result<(Store<CallState>, [MemoryOutputPipe; 2]), LoadError> {
        let stdout = MemoryOutputPipe::new(MAX_STDIO);
        let stderr = MemoryOutputPipe::new(MAX_STDIO);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        for (dirs, perms) in [
            (&self.options.read_dirs, FsPerms::ReadOnly),
            (&self.options.write_dirs, FsPerms::ReadWrite),
        ] {
            for dir in dirs {
                let guest = dir.to_string_lossy().into_owned();
                wasi.preopened_dir(dir, &guest, perms)
                    .map_err(|e| LoadError::Preopen {
                        path: guest.clone(),
                        reason: format!("{e:#}"),
                    })?;
            }
        }
        let state = CallState {
            host,
            wasi: wasi.build(),
            table: ResourceTable::new(),
            memory: MemoryLimit {
                limit: self.options.memory_limit,
                used: 0,
                peak: 0,
                refused: None,
            },
            deadline: Instant::now() + limits.timeout,
            timeout: limits.timeout,
            cancel_grace: limits.cancel_grace,
            cancelled_at: None,
            stopped: None,
        };
        let mut store = Store::new(&shared().engine, state);
        store.limiter(|state| &mut state.memory);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            if ctx.data_mut().tick() {
                Ok(UpdateDeadline::Continue(1))
            } else {
                Err(Trap::Interrupt.into())
            }
        });
        Ok((store, [stdout, stderr]))
    }

    /// A fresh instance in `store`, configured with `settings` (JSON).
    fn instantiate(
        &self,
        store: &mut Store<CallState>,
        settings: &str,
    ) -> Result<Instance, CallError> {
        let instance = self
            .pre
            .instantiate(&mut *store)
            .map_err(|e| fault(store, e))?;
        if self.configurable {
            let configure = instance
                .get_typed_func::<(&str,), (Result<(), String>,)>(&mut *store, "configure")
                .map_err(|e| CallError::Instantiate(format!("export configure: {e:#}")))?;
            let (result,) = configure
                .call(&mut *store, (settings,))
                .map_err(|e| fault(store, e))?;
            result.map_err(|e| CallError::Plugin(format!("configure: {e}")))?;
        }
        Ok(instance)
    }

    /// Calls the plugin on `input` in a fresh instance configured with `settings`
    /// (JSON; when it exports `configure`), with `host`'s services, under `limits`.
    /// Blocking: run it on a thread that may block.
    pub fn call(
        &self,
        input: &str,
        settings: &str,
        host: Arc<dyn Host + Send + Sync>,
        limits: &CallLimits,
    ) -> Result<Answer, CallError> {
        let _running = Running::enter();
        let (mut store, stdio) = self
            .store(Some(Arc::clone(&host)), limits)
            .map_err(|e| CallError::Instantiate(e.to_string()))?;
        let result = self.instantiate(&mut store, settings).and_then(|instance| {
            let execute = instance
                .get_typed_func::<(&str,), (Result<String, String>,)>(&mut store, "execute")
                .map_err(|e| CallError::Instantiate(format!("export execute: {e:#}")))?;
            let (answer,) = execute
                .call(&mut store, (input,))
                .map_err(|e| fault(&store, e))?;
            answer.map_err(CallError::Plugin)
        });
        forward_stdio(&*host, &stdio);
        let output = result?;
        if output.len() > limits.max_output {
            return Err(CallError::OutputTooLarge(limits.max_output));
        }
        Ok(Answer {
            output,
            peak_memory: store.data().memory.peak,
        })
    }
}

/// The guest's stdout (info) and stderr (warn) as log lines.
fn forward_stdio(host: &dyn Host, [stdout, stderr]: &[MemoryOutputPipe; 2]) {
    for (pipe, level) in [(stdout, Level::Info), (stderr, Level::Warn)] {
        let text = pipe.contents();
        for line in String::from_utf8_lossy(&text).lines() {
            if !line.is_empty() {
                host.log(level, line);
            }
        }
    }
}

/// The error of a call that did not return normally: stopped by the host, or trapped
/// (the trap named).
fn fault(store: &Store<CallState>, error: wasmtime::Error) -> CallError {
    let state = store.data();
    match state.stopped {
        Some(Stop::Timeout) => return CallError::Timeout(state.timeout),
        Some(Stop::Cancelled) => return CallError::Cancelled,
        None => {}
    }
    let trap = if let Some(trap) = error.downcast_ref::<Trap>() {
        trap_name(*trap)
    } else if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        format!("exit({})", exit.0)
    } else {
        format!("{error:#}")
    };
    CallError::Trap {
        trap,
        memory_refused: state.memory.refused,
        memory_limit: state.memory.limit,
    }
}

/// A trap's short name.
fn trap_name(trap: Trap) -> String {
    match trap {
        Trap::StackOverflow => "stack overflow".into(),
        Trap::MemoryOutOfBounds => "out-of-bounds memory access".into(),
        Trap::UnreachableCodeReached => "unreachable".into(),
        Trap::IntegerDivisionByZero => "integer division by zero".into(),
        Trap::IntegerOverflow => "integer overflow".into(),
        Trap::TableOutOfBounds => "out-of-bounds table access".into(),
        Trap::IndirectCallToNull => "call of a null function".into(),
        Trap::BadSignature => "indirect call type mismatch".into(),
        Trap::Interrupt => "interrupt".into(),
        other => other.to_string(),
    }
}
