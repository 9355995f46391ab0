//! What a component says about itself, read from its bytes alone: no compilation, no
//! instantiation, no guest code (listing, inspect, the checks before a load).

use wasmparser::{Encoding, Parser, Payload};

use crate::error::LoadError;

/// The name of the custom section that holds a plugin's metadata: the same records as
/// the ELF `.dynplug.meta` section of a native plugin (`DYNPLUG\0key=value\0...\0`).
pub const META_SECTION: &str = "dynplug.meta";

/// The largest metadata section read.
pub const MAX_META: usize = 256 * 1024;

/// The WIT package whose `host` interface a plugin imports.
pub const PACKAGE: &str = "dynplug:plugin";

/// The version of the WIT package this host speaks.
pub const WIT_VERSION: &str = "1.0.0";

/// What a component file declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// The bytes of its `dynplug.meta` section, if it has one.
    pub metadata: Option<Vec<u8>>,
    /// The names of what it imports (interfaces such as `wasi:cli/stdout@0.2.0`).
    pub imports: Vec<String>,
    /// The names of what it exports.
    pub exports: Vec<String>,
    /// The version of `dynplug:plugin` whose host interface it imports, if it does.
    pub wit_version: Option<String>,
}

/// Reads `bytes` as a WebAssembly component and returns what it declares. A core
/// module (not a component), a malformed file, or two metadata sections are refused.
pub fn describe(bytes: &[u8]) -> Result<Description, LoadError> {
    let bad = |reason: String| LoadError::NotAComponent(reason);
    let mut depth = 0usize;
    let mut description = Description {
        metadata: None,
        imports: Vec::new(),
        exports: Vec::new(),
        wit_version: None,
    };
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| bad(e.to_string()))?;
        match payload {
            Payload::Version { encoding, .. } if depth == 0 && encoding != Encoding::Component => {
                return Err(bad(
                    "a core WebAssembly module, not a component (make one with `wasm-tools component new`)"
                        .into(),
                ));
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|e| bad(e.to_string()))?;
                    description.imports.push(import.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(|e| bad(e.to_string()))?;
                    description.exports.push(export.name.name.to_owned());
                }
            }
            Payload::CustomSection(section) if section.name() == META_SECTION => {
                if description.metadata.is_some() {
                    return Err(LoadError::Metadata(
                        "more than one dynplug.meta section (more than one plugin in the file?)"
                            .into(),
                    ));
                }
                if section.data().len() > MAX_META {
                    return Err(LoadError::Metadata(format!(
                        "{} bytes, more than the {MAX_META} allowed",
                        section.data().len()
                    )));
                }
                description.metadata = Some(section.data().to_vec());
            }
            _ => {}
        }
    }
    description.wit_version = description
        .imports
        .iter()
        .find_map(|name| host_version(name))
        .map(str::to_owned);
    Ok(description)
}

/// The version in an import name of the host interface (`dynplug:plugin/host@1.0.0`).
pub(crate) fn host_version(import: &str) -> Option<&str> {
    import.strip_prefix(PACKAGE)?.strip_prefix("/host@")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_module_is_not_a_component() {
        let module = wat::parse_str("(module)").unwrap();
        let err = describe(&module).unwrap_err();
        assert!(err.to_string().contains("not a component"), "{err}");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            describe(b"\x7fELF not wasm"),
            Err(LoadError::NotAComponent(_))
        ));
    }

    #[test]
    fn host_version_is_read_from_the_import_name() {
        assert_eq!(host_version("dynplug:plugin/host@1.2.0"), Some("1.2.0"));
        assert_eq!(host_version("wasi:cli/stdout@0.2.0"), None);
    }
}
