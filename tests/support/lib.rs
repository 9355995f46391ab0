//! Shared helpers for the end-to-end tests: build the workspace's real artifacts once,
//! compile C plugins with the system compiler, and lay out plugin directories.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The directory cargo puts this profile's artifacts in (e.g. `target/debug`).
pub fn artifact_dir() -> PathBuf {
    // The test binary lives in <artifact_dir>/deps/.
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary is in <target>/<profile>/deps")
        .to_owned()
}

/// Builds every plugin library and binary of the workspace (once per test process),
/// with the same cargo, profile and target directory as the tests themselves.
pub fn build_workspace() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile = artifact_dir()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "debug".into());
        let profile = if profile == "debug" { "dev".to_owned() } else { profile };
        let target_dir = artifact_dir().parent().expect("target dir").to_owned();
        let status = Command::new(cargo)
            .args(["build", "--workspace", "--lib", "--bins", "--profile", &profile])
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --workspace failed");
    });
}

/// Path of a built Rust plugin library, e.g. `rust_plugin("echo")`.
pub fn rust_plugin(lib_name: &str) -> PathBuf {
    build_workspace();
    let p = artifact_dir().join(format!("libdynplug_{lib_name}.so"));
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// Path of a built binary of the workspace (`dynplugd`, `dynplugctl`).
pub fn binary(name: &str) -> PathBuf {
    build_workspace();
    let p = artifact_dir().join(name);
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// Compiles the C file `source` (relative to the workspace root) into `out` with the
/// system C compiler against `core/include`, with extra `-D` definitions.
pub fn compile_c(source: &str, out: &Path, defines: &[&str]) {
    let root = workspace_root();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(cc);
    cmd.args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(out)
        .arg("-I")
        .arg(root.join("core/include"))
        .arg(root.join(source));
    for d in defines {
        cmd.arg(format!("-D{d}"));
    }
    let output = cmd.output().expect("run the C compiler");
    assert!(
        output.status.success(),
        "cc {source} {defines:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A temporary plugins directory with safe permissions.
#[derive(Debug)]
pub struct PluginDir {
    dir: tempfile::TempDir,
}

impl Default for PluginDir {
    fn default() -> Self {
        PluginDir::new()
    }
}

impl PluginDir {
    /// An empty directory (mode 0755).
    pub fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("dynplug-plugins").tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        PluginDir { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies `src` in as `file_name` with mode 0644 and returns the new path.
    pub fn add(&self, src: &Path, file_name: &str) -> PathBuf {
        let dst = self.path().join(file_name);
        // Copy to a temporary name and rename, as an admin's `install` would: replacing a
        // mapped library in place would corrupt it.
        let tmp = self.path().join(format!(".{file_name}.tmp"));
        std::fs::copy(src, &tmp).expect("copy plugin");
        set_mode(&tmp, 0o644);
        std::fs::rename(&tmp, &dst).expect("rename plugin");
        dst
    }

    /// Adds the example Rust plugins and the C plugin (rot13).
    pub fn with_examples() -> Self {
        let d = PluginDir::new();
        for name in ["echo", "text", "json", "hash", "heartbeat"] {
            d.add(&rust_plugin(name), &format!("{name}.so"));
        }
        d.add_c("plugins/c-rot13/rot13.c", "rot13.so", &[]);
        d
    }

    /// Compiles a C plugin straight into the directory.
    pub fn add_c(&self, source: &str, file_name: &str, defines: &[&str]) -> PathBuf {
        let tmp = self.path().join(format!(".{file_name}.tmp"));
        compile_c(source, &tmp, defines);
        set_mode(&tmp, 0o644);
        let dst = self.path().join(file_name);
        std::fs::rename(&tmp, &dst).expect("rename plugin");
        dst
    }
}

/// Sets a file's permission bits.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
