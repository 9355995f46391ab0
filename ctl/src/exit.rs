//! Exit codes of `dynplugctl`: a stable contract for scripts. Code 2 (bad command
//! line) is set by clap itself.

/// Success.
pub(crate) const OK: i32 = 0;
/// Any failure not listed below (e.g. a plugin's own error).
pub(crate) const FAILURE: i32 = 1;
/// A bad command line (clap's own code, kept with `--json`).
pub(crate) const USAGE: i32 = 2;
/// No plugin of that name.
pub(crate) const NOT_FOUND: i32 = 3;
/// The caller is not allowed (D-Bus policy).
pub(crate) const ACCESS_DENIED: i32 = 4;
/// dynplugd is not running or went away.
pub(crate) const UNAVAILABLE: i32 = 5;
/// The plugin is disabled.
pub(crate) const DISABLED: i32 = 6;
/// The call timed out.
pub(crate) const TIMEOUT: i32 = 7;
/// The daemon rejected an argument (input too large, bad name).
pub(crate) const INVALID_ARGUMENT: i32 = 8;
/// The daemon rejected its new configuration on reload.
pub(crate) const CONFIG: i32 = 9;
/// The job was cancelled (Ctrl-C during `execute`, or `cancel` from elsewhere).
pub(crate) const CANCELLED: i32 = 10;
/// As many jobs as allowed are running (`jobs.max_running`).
pub(crate) const TOO_MANY_JOBS: i32 = 11;
/// An install was refused: the artifact is unsigned or badly signed.
pub(crate) const SIGNATURE_REFUSED: i32 = 12;
/// An install failed: the registry could not be reached or did not answer in time.
pub(crate) const REGISTRY_UNREACHABLE: i32 = 13;
/// An install failed: the registry answered what it should not (wrong digest, too
/// large, a redirect elsewhere, refused credentials).
pub(crate) const REGISTRY_REFUSED: i32 = 14;
