//! A test kit for plugin authors: load a *built* plugin library through the real ABI
//! and check and call it the way dynplugd does (the same table checks, the same
//! panic-catching shims, the same ownership of buffers). Plugin crates reach it as
//! `dynplug_core::testkit`, with `[dev-dependencies] dynplug-core = { path = "...",
//! features = ["host"] }`.
//!
//! ```no_run
//! // tests/abi.rs of a plugin crate
//! use dynplug_loader::testkit::TestHost;
//!
//! let host = TestHost::load(TestHost::built("my_plugin")).expect("loads like in dynplugd");
//! assert_eq!(host.name(), "shout");
//! host.configure(r#"{"loud": true}"#).unwrap();
//! assert_eq!(host.execute("hi").unwrap(), "HI");
//! // What a version 2 plugin did through its context (dynplug_sdk::Recorder):
//! assert!(host.logs().is_empty() && host.progress().is_empty() && host.events().is_empty());
//! host.cancel_at_progress(0.5); // its `cancelled()` turns true once it reports 50 %
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dynplug_sdk::Recorder;

use crate::error::{CallError, LoadError};
use crate::library::{Instance, PluginLibrary};
use crate::trust::TrustPolicy;

/// A plugin loaded as dynplugd would load it, for tests. Its calls get a host context
/// (ABI version 2) that records into a [`Recorder`], whose methods (`logs`,
/// `progress`, `events`, `cancel`, ...) are reachable on the host itself.
#[derive(Debug)]
pub struct TestHost {
    instance: Arc<Instance>,
    recorder: Arc<Recorder>,
}

impl std::ops::Deref for TestHost {
    type Target = Recorder;

    fn deref(&self) -> &Recorder {
        &self.recorder
    }
}

impl TestHost {
    /// Loads the library at `path`: ELF and entry-point checks, magic, ABI version, table
    /// size, metadata (name rules), then creates an instance. File-permission checks are
    /// relaxed, since build trees are often group-writable.
    pub fn load(path: impl AsRef<Path>) -> Result<TestHost, LoadError> {
        let policy = TrustPolicy {
            required_owner: None,
            check_modes: false,
        };
        let library = Arc::new(PluginLibrary::open(path.as_ref(), policy)?);
        let instance = Arc::new(library.instantiate()?);
        Ok(TestHost {
            instance,
            recorder: Arc::default(),
        })
    }

    /// Where cargo put the library `lib<lib_name>.so` of the crate under test (the
    /// `[lib] name`, e.g. `dynplug_echo`): beside the running test binary in
    /// `<target>/<profile>/deps` (where `cargo test` builds it), else in
    /// `<target>/<profile>` (where `cargo build` puts it).
    pub fn built(lib_name: &str) -> PathBuf {
        let exe = std::env::current_exe().expect("the test binary's path");
        let deps = exe
            .parent()
            .expect("test binaries live in <target>/<profile>/deps");
        let file = format!("lib{lib_name}.so");
        let beside = deps.join(&file);
        if beside.exists() {
            return beside;
        }
        deps.parent()
            .map_or(beside.clone(), |profile| profile.join(&file))
    }

    fn library(&self) -> &PluginLibrary {
        self.instance.library()
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.library().name()
    }

    /// The plugin's version.
    pub fn version(&self) -> &str {
        self.library().version()
    }

    /// The plugin's description.
    pub fn description(&self) -> &str {
        self.library().description()
    }

    /// The ABI version the plugin declared.
    pub fn abi_version(&self) -> u32 {
        self.library().abi_version()
    }

    /// Whether the plugin declares a service.
    pub fn is_service(&self) -> bool {
        self.library().is_service()
    }

    /// Hands the plugin its settings (JSON object text), as a reload does.
    pub fn configure(&self, settings_json: &str) -> Result<(), CallError> {
        self.instance.configure(settings_json)
    }

    /// Runs one call, with a host context that records what the plugin does.
    pub fn execute(&self, input: &str) -> Result<String, CallError> {
        self.instance
            .execute_bounded(input, usize::MAX, Some(&*self.recorder))
    }

    /// The recorder, shared with the calls: to cancel one from another thread.
    pub fn recorder(&self) -> Arc<Recorder> {
        Arc::clone(&self.recorder)
    }

    /// Starts the plugin's service on a thread of its own, as the daemon does.
    pub fn run_service(&self) -> ServiceRun {
        let instance = Arc::clone(&self.instance);
        let thread = std::thread::spawn(move || instance.start());
        ServiceRun {
            instance: Arc::clone(&self.instance),
            thread,
        }
    }
}

/// A service started by [`TestHost::run_service`].
#[derive(Debug)]
pub struct ServiceRun {
    instance: Arc<Instance>,
    thread: std::thread::JoinHandle<Result<(), CallError>>,
}

impl ServiceRun {
    /// Whether `start` has returned already (a service should run until stopped).
    pub fn has_ended(&self) -> bool {
        self.thread.is_finished()
    }

    /// Calls `stop` and waits for `start` to return; returns what `start` returned.
    pub fn stop(self) -> Result<(), CallError> {
        self.instance.stop()?;
        self.thread.join().unwrap_or_else(|_| {
            Err(CallError::Panicked {
                plugin: self.instance.library().name().to_owned(),
                message: "the service thread panicked".into(),
            })
        })
    }
}

/// Compiles the workspace's C fixture `tests/fixtures/c/SOURCE` with `defines` into
/// `dir/file` (mode 0644), panicking with the compiler's message when it fails: for the
/// unit tests of the crates in this workspace.
#[doc(hidden)]
pub fn compile_fixture(dir: &Path, source: &str, file: &str, defines: &[&str]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/c");
    let out = dir.join(file);
    if let Err(e) = compile_c(&fixtures.join(source), &out, defines) {
        panic!("cc {source} {defines:?}: {e}");
    }
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    out
}

/// Compiles the C plugin `source` against the SDK's header (`dynplug.h`) into the
/// shared library `out` with the system C compiler (`$CC`, else `cc`), warnings as
/// errors; `defines` are `NAME` or `NAME=VALUE` for `-D`. Returns the compiler's
/// message when it fails.
pub fn compile_c(source: &Path, out: &Path, defines: &[&str]) -> Result<(), String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = std::process::Command::new(&cc);
    cmd.args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(out)
        .arg("-I")
        .arg(dynplug_sdk::INCLUDE_DIR)
        .arg(source)
        .args(defines.iter().map(|d| format!("-D{d}")));
    let output = cmd.output().map_err(|e| format!("cannot run {cc}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
