//! `cargo xtask cockpit-deb`: the `cockpit-dynplug` Debian package, DynPlug's Cockpit
//! page (packaging/cockpit/) installed to /usr/share/cockpit/dynplug/.
//!
//! The page is static files and needs no build, so the package is architecture `all`
//! and made with `dpkg-deb` from a staging tree in target/cockpit-deb/.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The page's files, as shipped (packaging/cockpit/NAME to /usr/share/cockpit/dynplug/NAME).
pub(crate) const PAGE_FILES: [&str; 4] =
    ["manifest.json", "index.html", "dynplug.js", "dynplug.css"];

/// Where Cockpit looks for the page.
const INSTALL_DIR: &str = "usr/share/cockpit/dynplug";

/// The package's DEBIAN/control for `version`, with `installed_kib` of files.
pub(crate) fn control(version: &str, installed_kib: u64) -> String {
    format!(
        "Package: cockpit-dynplug\n\
         Version: {version}\n\
         Architecture: all\n\
         Maintainer: DynPlug developers <dynplug@example.invalid>\n\
         Installed-Size: {installed_kib}\n\
         Depends: cockpit-bridge (>= 266)\n\
         Recommends: dynplugd, cockpit-ws\n\
         Section: admin\n\
         Priority: optional\n\
         Description: Cockpit page for dynplugd\n \
         Shows dynplugd's plugins in the Cockpit web console and lets the logged-in\n \
         user enable and disable them, run them as jobs with their progress, reload the\n \
         configuration and follow the daemon's events. It talks to dynplugd over the\n \
         system bus as that user, so polkit decides as for dynplugctl.\n"
    )
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// Stages the page under `target/cockpit-deb/root` and builds
/// `target/debian/cockpit-dynplug_VERSION_all.deb`; returns the package's path.
pub(crate) fn build_deb(root: &Path, target: &Path, version: &str) -> Result<PathBuf, String> {
    let stage = target.join("cockpit-deb/root");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(|e| format!("remove {}: {e}", stage.display()))?;
    }
    let page = stage.join(INSTALL_DIR);
    let doc = stage.join("usr/share/doc/cockpit-dynplug");
    for dir in [&page, &doc, &stage.join("DEBIAN")] {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    let mut bytes = 0u64;
    for file in PAGE_FILES {
        let src = root.join("packaging/cockpit").join(file);
        let text = std::fs::read(&src).map_err(|e| format!("read {}: {e}", src.display()))?;
        bytes += text.len() as u64;
        write(&page.join(file), &text, 0o644)?;
    }
    let copyright = "DynPlug's Cockpit page.\nLicense: MIT OR Apache-2.0\n";
    write(&doc.join("copyright"), copyright.as_bytes(), 0o644)?;
    let kib = (bytes + copyright.len() as u64).div_ceil(1024);
    write(
        &stage.join("DEBIAN/control"),
        control(version, kib).as_bytes(),
        0o644,
    )?;
    // Every directory 0755, whatever the umask made it.
    let mut dirs = vec![stage.clone()];
    while let Some(dir) = dirs.pop() {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
        for entry in std::fs::read_dir(&dir)
            .map_err(|e| e.to_string())?
            .flatten()
        {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
    }
    let out_dir = target.join("debian");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
    let deb = out_dir.join(format!("cockpit-dynplug_{version}_all.deb"));
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb)
        .status()
        .map_err(|e| format!("dpkg-deb: {e}"))?;
    if !status.success() {
        return Err(format!("dpkg-deb --build failed ({status})"));
    }
    Ok(deb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_names_the_package_and_its_needs() {
        let text = control("1.2.3", 40);
        assert!(
            text.starts_with("Package: cockpit-dynplug\nVersion: 1.2.3\n"),
            "{text}"
        );
        assert!(text.contains("\nArchitecture: all\n"), "{text}");
        assert!(
            text.contains("\nDepends: cockpit-bridge (>= 266)\n"),
            "{text}"
        );
        assert!(text.contains("\nInstalled-Size: 40\n"), "{text}");
        // Continuation lines of the description start with one space; none is empty.
        assert!(
            text.lines()
                .skip_while(|l| !l.starts_with("Description:"))
                .skip(1)
                .all(|l| l.starts_with(' ') && l.trim().len() > 1),
            "{text}"
        );
    }

    #[test]
    fn every_page_file_exists() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/cockpit");
        for file in PAGE_FILES {
            assert!(dir.join(file).is_file(), "{file} is missing");
        }
    }
}
