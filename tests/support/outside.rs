//! Plugin crates outside the workspace, built the way a plugin author builds them: the
//! README's Rust plugin as written there, or a crate a test writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{artifact_dir, workspace_root};

/// How long one `cargo` run on an outside crate may take (it may compile the SDK and
/// its proc-macro dependencies from scratch on a loaded machine).
pub const CARGO_TIMEOUT: Duration = Duration::from_secs(900);

/// A plugin crate in a temporary directory, its own workspace.
#[derive(Debug)]
pub struct OutsideCrate {
    dir: tempfile::TempDir,
}

/// What one `cargo` run on an outside crate did.
#[derive(Debug)]
pub struct CargoRun {
    /// Whether cargo exited 0.
    pub success: bool,
    /// What cargo printed on stderr (compiler messages).
    pub stderr: String,
}

impl OutsideCrate {
    /// A crate with `manifest` as its Cargo.toml (a `[workspace]` table is added, so it
    /// is not taken for part of an enclosing workspace) and `lib_rs` as src/lib.rs.
    pub fn new(manifest: &str, lib_rs: &str) -> OutsideCrate {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::create_dir(dir.path().join("src")).expect("src/");
        std::fs::write(
            dir.path().join("Cargo.toml"),
            format!("{manifest}\n[workspace]\n"),
        )
        .expect("write Cargo.toml");
        let krate = OutsideCrate { dir };
        krate.write_lib(lib_rs);
        krate
    }

    /// The README's Rust plugin ("Writing a plugin in Rust"): its Cargo.toml and
    /// src/lib.rs blocks as a new author copies them, the SDK path pointed at this
    /// workspace.
    pub fn from_readme() -> OutsideCrate {
        let root = workspace_root();
        let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
        let block = |marker: &str| {
            let start = readme.find(marker).expect(marker);
            let end = start + readme[start..].find("```").expect("end of block");
            readme[start..end].to_owned()
        };
        let manifest = block("# Cargo.toml").replace(
            "path = \"../dynplug/sdk\"",
            &format!("path = \"{}\"", root.join("sdk").display()),
        );
        OutsideCrate::new(&manifest, &block("// src/lib.rs"))
    }

    /// Replaces the crate's src/lib.rs.
    pub fn write_lib(&self, lib_rs: &str) {
        std::fs::write(self.path().join("src/lib.rs"), lib_rs).expect("write src/lib.rs");
    }

    /// The crate's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `cargo SUBCOMMAND --offline --quiet --target-dir <target> [-- TRAILING]`
    /// in the crate, `target` named under this profile's target directory so that the
    /// outside crates of a run share their dependencies' builds. Fails the test if cargo
    /// does not finish within [`CARGO_TIMEOUT`].
    pub fn cargo(&self, subcommand: &str, target: &str, trailing: &[&str]) -> CargoRun {
        let stderr_file = self.path().join("cargo.stderr");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args([subcommand, "--offline", "--quiet", "--target-dir"])
            .arg(Self::target_dir(target))
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_file).expect("cargo.stderr"));
        if !trailing.is_empty() {
            cmd.arg("--").args(trailing);
        }
        let mut child = cmd.spawn().expect("run cargo");
        let pid = child.id();
        let (done, exited) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(child.wait());
        });
        let status = match exited.recv_timeout(CARGO_TIMEOUT) {
            Ok(status) => status.expect("wait for cargo"),
            Err(_) => {
                // The waiting thread has not reaped it, so the pid is still cargo's.
                crate::send_signal(pid, libc::SIGKILL);
                panic!(
                    "cargo {subcommand} in {} did not finish within {CARGO_TIMEOUT:?}",
                    self.path().display()
                );
            }
        };
        CargoRun {
            success: status.success(),
            stderr: std::fs::read_to_string(&stderr_file).unwrap_or_default(),
        }
    }

    /// The library `cargo build` made for package `lib_name` into `target`.
    pub fn built_library(target: &str, lib_name: &str) -> PathBuf {
        let p = Self::target_dir(target)
            .join("debug")
            .join(format!("lib{lib_name}.so"));
        assert!(p.exists(), "{} was not built", p.display());
        p
    }

    fn target_dir(target: &str) -> PathBuf {
        artifact_dir().parent().expect("target dir").join(target)
    }
}
