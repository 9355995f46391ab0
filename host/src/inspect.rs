//! Everything known about a plugin file without running any of its code, as
//! `dynplugd --inspect FILE` (and `dynplugctl inspect FILE`) print it, like `modinfo`:
//! the trust checks the loader would apply, and the metadata section. Nothing is
//! loaded or executed; the file is only stat'ed and its ELF headers and metadata
//! section read.

use std::path::Path;

use serde::Serialize;

use dynplug_loader::metadata::{self, Metadata};
use dynplug_loader::sealed::SealedImage;
use dynplug_loader::settings_schema::SettingsSchema;
use dynplug_loader::signature::{self, Keyring};
use dynplug_loader::trust::{self, TrustPolicy};
use dynplug_loader::trust_config::TrustConfig;
use dynplug_sdk::printable::{escape, quoted};

/// What inspecting a file found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The file.
    pub path: String,
    /// Its size in bytes, if it could be stat'ed.
    pub size: Option<u64>,
    /// Whether the loader's trust checks pass (owner, mode, file type), and why not.
    pub trust: Verdict,
    /// `section` (metadata read from the file), `none` (no section: the daemon learns
    /// the plugin by loading it in a probe process) or `error`.
    pub metadata_source: &'static str,
    /// The metadata, when the file has a section.
    pub metadata: Option<Metadata>,
    /// Why the file's metadata could not be read, or its settings schema does not
    /// compile, if so.
    pub metadata_error: Option<String>,
    /// `trust.signatures` of the configuration the verdict was made under.
    pub signatures: &'static str,
    /// `trust.keys_dir` of that configuration.
    pub keys_dir: String,
    /// The configuration file the trust settings come from (`None`: the defaults).
    pub judged_by: Option<String>,
    /// The signature verdict against the keys in `trust.keys_dir` (checked whatever the
    /// mode, so an admin can see it before turning enforcement on).
    pub signature: String,
    /// Whether that verdict lets the file load under that mode.
    pub signature_ok: bool,
    /// For a WebAssembly component: its WIT version, imports and exports.
    pub wasm: Option<crate::wasm_tier::Inspected>,
}

/// Pass or fail, with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Whether it passes.
    pub ok: bool,
    /// What was found.
    pub reason: String,
}

impl Report {
    /// Whether the file looks like a plugin this host could load (trusted, readable
    /// metadata or none).
    pub fn usable(&self) -> bool {
        self.trust.ok && self.metadata_error.is_none() && self.signature_ok
    }
}

/// Inspects the file at `path` as a daemon with `policy` and `trust` would see it: the
/// file is opened once without following links and copied (at most
/// `trust.max_plugin_bytes`) into a sealed image, and the metadata and signature are
/// judged on that image, as the daemon judges what it loads. Nothing of it runs.
pub fn inspect(path: &Path, policy: TrustPolicy, trust_config: &TrustConfig) -> Report {
    let stat = std::fs::symlink_metadata(path).ok();
    let trust = match stat.as_ref().map(|m| trust::check_file(path, m, policy)) {
        Some(Ok(())) => Verdict {
            ok: true,
            reason: "a regular file with a trusted owner and mode".into(),
        },
        Some(Err(e)) => Verdict {
            ok: false,
            reason: e.to_string(),
        },
        None => Verdict {
            ok: false,
            reason: format!("cannot stat {}", path.display()),
        },
    };
    // Read whatever the owner and mode, so an admin sees the metadata of a file the
    // daemon would refuse; never a link, a FIFO, a device or more than the bound.
    let reading = TrustPolicy {
        required_owner: None,
        check_modes: false,
    };
    let image = stat
        .as_ref()
        .filter(|m| m.is_file())
        .ok_or_else(|| "not a regular file; not opened".to_owned())
        .and_then(|_| {
            SealedImage::open(path, reading, trust_config.max_plugin_bytes)
                .map_err(|e| e.to_string())
        });
    let mut wasm = None;
    let (metadata_source, metadata, metadata_error) = match &image {
        Err(e) => ("error", None, Some(e.clone())),
        Ok(image) if crate::wasm_tier::is_wasm(path) => {
            let (inspected, found) = crate::wasm_tier::inspect(image);
            wasm = inspected;
            found
        }
        Ok(image) => match image
            .reader()
            .map_err(|e| e.to_string())
            .and_then(|f| metadata::read_from(&f).map_err(|e| e.to_string()))
        {
            Ok(Some(m)) => {
                let schema_error = m
                    .settings_schema
                    .as_deref()
                    .and_then(|text| SettingsSchema::compile(text).err());
                ("section", Some(m), schema_error)
            }
            Ok(None) => ("none", None, None),
            Err(e) => ("error", None, Some(e)),
        },
    };
    let verdict = match &image {
        Ok(image) => match (Keyring::load(&trust_config.keys_dir, policy), image.bytes()) {
            (Ok(keyring), Ok(bytes)) => keyring.check(path, &bytes, policy),
            (Err(e), _) => signature::Verdict::Bad(format!("trust.keys_dir: {e}")),
            (_, Err(e)) => signature::Verdict::Bad(format!("cannot map the file's copy: {e}")),
        },
        Err(e) => signature::Verdict::Bad(format!("not read: {e}")),
    };
    Report {
        path: path.display().to_string(),
        size: stat.map(|m| m.len()),
        trust,
        metadata_source,
        metadata,
        metadata_error,
        signatures: trust_config.signatures.as_str(),
        keys_dir: trust_config.keys_dir.display().to_string(),
        judged_by: None,
        signature_ok: verdict.allows(trust_config.signatures),
        signature: verdict.to_string(),
        wasm,
    }
}

/// The report as text for a person.
pub fn render(report: &Report) -> String {
    let mut out = format!("file:        {}\n", escape(&report.path));
    if let Some(size) = report.size {
        out.push_str(&format!("size:        {size} bytes\n"));
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    match &report.metadata {
        Some(m) => {
            // The file's own words, quoted and escaped: none can pass for a verdict.
            out.push_str(&format!("name:        {}\n", quoted(&m.name)));
            out.push_str(&format!("version:     {}\n", quoted(&m.version)));
            out.push_str(&format!("description: {}\n", quoted(&m.description)));
            out.push_str(&format!("abi:         {}\n", m.abi_version));
            out.push_str(&format!("service:     {}\n", yes_no(m.service)));
            if let Some(sandbox) = &m.sandbox {
                out.push_str(&format!("sandbox:     {}\n", quoted(sandbox)));
            }
            for (key, value) in &m.other {
                out.push_str(&format!("other:       {}={}\n", quoted(key), quoted(value)));
            }
            out.push_str(if report.wasm.is_some() {
                "metadata:    from the dynplug.meta custom section (nothing compiled or run)\n"
            } else {
                "metadata:    from the .dynplug.meta section (no code was run)\n"
            });
            if let Some(e) = &report.metadata_error {
                out.push_str(&format!("refused:     {}\n", escape(e)));
            }
        }
        None if report.metadata_source == "none" => out.push_str(
            "metadata:    none in the file (built before the section existed, or without it); \
             the daemon learns its name by loading it in a probe process\n",
        ),
        None => out.push_str(&format!(
            "metadata:    unreadable: {}\n",
            escape(report.metadata_error.as_deref().unwrap_or("unknown"))
        )),
    }
    out.push_str(&format!(
        "trust:       {}: {}\n",
        if report.trust.ok { "ok" } else { "refused" },
        escape(&report.trust.reason)
    ));
    out.push_str(&format!(
        "signature:   {} (trust.signatures: {}{})\n",
        escape(&report.signature),
        report.signatures,
        if report.signature_ok {
            ""
        } else {
            "; it would be refused"
        }
    ));
    out.push_str(&format!(
        "judged by:   {} (trust.signatures: {}, trust.keys_dir: {})\n",
        escape(
            report
                .judged_by
                .as_deref()
                .unwrap_or("the default trust settings")
        ),
        report.signatures,
        escape(&report.keys_dir)
    ));
    if let Some(wasm) = &report.wasm {
        out.push_str(&crate::wasm_tier::render(wasm));
    }
    let schema = report
        .metadata
        .as_ref()
        .and_then(|m| m.settings_schema.as_deref());
    match schema {
        Some(schema) => {
            let pretty = serde_json::from_str::<serde_json::Value>(schema)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or_else(|| schema.to_owned());
            out.push_str("settings schema:\n");
            for line in pretty.lines() {
                out.push_str(&format!("  {}\n", escape(line)));
            }
        }
        None => out.push_str("settings schema: none\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lenient() -> TrustPolicy {
        TrustPolicy {
            required_owner: None,
            check_modes: false,
        }
    }

    #[test]
    fn files_without_a_section_or_not_elf_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("x.so");
        std::fs::write(&text, "hello").unwrap();
        let r = inspect(&text, lenient(), &TrustConfig::default());
        assert_eq!(r.metadata_source, "error");
        assert!(
            r.metadata_error.as_deref().unwrap().contains("not an ELF"),
            "{r:?}"
        );
        assert!(!r.usable());
        assert!(render(&r).contains("unreadable"));
    }

    #[test]
    fn special_files_are_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.so");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        // Would block forever if opened for reading.
        let r = inspect(&fifo, lenient(), &TrustConfig::default());
        assert!(!r.trust.ok, "{r:?}");
        assert!(r.trust.reason.contains("not a regular file"), "{r:?}");
        assert_eq!(r.metadata_source, "error");
    }
}
