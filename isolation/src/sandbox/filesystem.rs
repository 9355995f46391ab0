//! The file-system layer: Landlock.

use std::path::{Path, PathBuf};

use super::SandboxPolicy;

/// Paths every worker may read: the dynamic linker's cache and the system's libraries.
const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/dev/urandom",
    "/dev/random",
    "/proc/self",
    "/sys/devices/system/cpu",
];
/// Device files every worker may read and write.
const SYSTEM_WRITE: &[&str] = &["/dev/null", "/dev/zero"];

pub(super) fn landlock_layer(policy: &SandboxPolicy, library: &Path) -> String {
    use landlock::{
        path_beneath_rules, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr,
        RulesetStatus, Scope, ABI,
    };
    let abi = ABI::V6;
    let build = || -> Result<landlock::RestrictionStatus, landlock::RulesetError> {
        let mut ruleset = Ruleset::default()
            .handle_access(AccessFs::from_all(abi))?
            .scope(Scope::from_all(abi))?;
        if !policy.network {
            ruleset = ruleset.handle_access(AccessNet::from_all(abi))?;
        }
        let read: Vec<PathBuf> = SYSTEM_READ
            .iter()
            .map(PathBuf::from)
            .chain(std::iter::once(library.to_owned()))
            .chain(policy.read.iter().cloned())
            .collect();
        let write: Vec<PathBuf> = SYSTEM_WRITE
            .iter()
            .map(PathBuf::from)
            .chain(policy.write.iter().cloned())
            .collect();
        ruleset
            .create()?
            .add_rules(path_beneath_rules(&read, AccessFs::from_read(abi)))?
            .add_rules(path_beneath_rules(&write, AccessFs::from_all(abi)))?
            .restrict_self()
    };
    match build() {
        Ok(status) => match status.ruleset {
            RulesetStatus::FullyEnforced => "enforced: Landlock".into(),
            RulesetStatus::PartiallyEnforced => {
                "enforced: Landlock (partially: the kernel lacks newer access rights)".into()
            }
            RulesetStatus::NotEnforced => {
                "unavailable: the kernel does not enforce Landlock".into()
            }
        },
        Err(e) => format!("unavailable: {e}"),
    }
}
