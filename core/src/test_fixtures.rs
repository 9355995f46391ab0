//! Test helpers for the host's unit tests: C fixture plugins (tests/fixtures/c)
//! compiled with the system C compiler.

use std::path::{Path, PathBuf};

use crate::trust::TrustPolicy;

/// Trust checks on modes only: files owned by whoever runs the tests pass.
pub(crate) const ANYONE: TrustPolicy = TrustPolicy {
    required_owner: None,
    check_modes: true,
};

/// Compiles `tests/fixtures/c/SOURCE` with `defines` (`NAME[=VALUE]`) into `dir/file`
/// (mode 0644).
pub(crate) fn compile(dir: &Path, source: &str, file: &str, defines: &[&str]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/c");
    let out = dir.join(file);
    if let Err(e) = crate::testkit::compile_c(&fixtures.join(source), &out, defines) {
        panic!("cc {source} {defines:?}: {e}");
    }
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    out
}
