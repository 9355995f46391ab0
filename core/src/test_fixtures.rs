//! Test helpers for the host's unit tests: C fixture plugins (tests/fixtures/c)
//! compiled with the system C compiler.

use std::path::{Path, PathBuf};

/// Compiles `tests/fixtures/c/SOURCE` with `defines` into `dir/file` (mode 0644).
pub(crate) fn compile(dir: &Path, source: &str, file: &str, defines: &[&str]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = dir.join(file);
    let status = std::process::Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg("-I")
        .arg(root.join("sdk/include"))
        .args(defines)
        .arg(root.join("tests/fixtures/c").join(source))
        .status()
        .expect("a C compiler (cc)");
    assert!(status.success(), "cc {source} {defines:?}");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    out
}
