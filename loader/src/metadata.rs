//! A plugin's metadata read from its `.dynplug.meta` ELF section, without loading the
//! library or running any of its code (`modinfo` for plugins). The section's layout is
//! described at [`dynplug_sdk::abi::META_MAGIC`]; the ELF file is parsed by the `object`
//! crate, reading only the headers and the one section from disk.

use std::collections::BTreeMap;
use std::path::Path;

use object::{Object, ObjectSection};

use crate::name::validate_plugin_name;
use dynplug_sdk::abi;

/// The largest metadata section read (a settings schema included).
pub const MAX_SECTION: u64 = 256 * 1024;

/// The largest value of most keys; `settings_schema` may use the whole section.
const MAX_VALUE: usize = 4096;

/// What a plugin file says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Metadata {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its one-line description.
    pub description: String,
    /// The plugin ABI version it was built for.
    pub abi_version: u32,
    /// Whether it runs a service.
    pub service: bool,
    /// A JSON Schema for its `settings`, if it declares one.
    pub settings_schema: Option<String>,
    /// What an isolated worker of it needs, if it says.
    pub sandbox: Option<String>,
    /// Keys this host does not know, kept as they were.
    pub other: BTreeMap<String, String>,
}

/// Why a file's metadata could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(String),
    /// The file is not an ELF object this host can read.
    #[error("not an ELF shared library: {0}")]
    NotElf(String),
    /// The section is there but malformed.
    #[error("malformed .dynplug.meta section: {0}")]
    Malformed(String),
}

/// Reads the metadata of the file at `path`: None when it has no metadata section
/// (plugins built before the section existed, or without it).
pub fn read(path: &Path) -> Result<Option<Metadata>, MetadataError> {
    let file = std::fs::File::open(path).map_err(|e| MetadataError::Io(e.to_string()))?;
    read_from(&file)
}

/// [`read`] through an open file (its offset is moved).
pub fn read_from(file: &std::fs::File) -> Result<Option<Metadata>, MetadataError> {
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).map_err(|e| MetadataError::NotElf(e.to_string()))?;
    if elf.format() != object::BinaryFormat::Elf {
        return Err(MetadataError::NotElf(format!("{:?} file", elf.format())));
    }
    let Some(section) = elf.section_by_name(abi::META_SECTION) else {
        return Ok(None);
    };
    if section.size() > MAX_SECTION {
        return Err(MetadataError::Malformed(format!(
            "{} bytes, more than the {MAX_SECTION} allowed",
            section.size()
        )));
    }
    let data = section
        .data()
        .map_err(|e| MetadataError::Malformed(e.to_string()))?;
    parse(data).map(Some)
}

/// Parses the section's bytes.
pub fn parse(data: &[u8]) -> Result<Metadata, MetadataError> {
    let bad = |m: String| MetadataError::Malformed(m);
    let body = data
        .strip_prefix(abi::META_MAGIC)
        .ok_or_else(|| bad("it does not begin with DYNPLUG\\0".into()))?;
    let mut fields = BTreeMap::new();
    let mut ended = false;
    let mut rest = body;
    while let Some(end) = rest.iter().position(|&b| b == 0) {
        let record = &rest[..end];
        rest = &rest[end + 1..];
        if record.is_empty() {
            ended = true;
            break;
        }
        let record =
            std::str::from_utf8(record).map_err(|_| bad("a record is not UTF-8".into()))?;
        let (key, value) = record
            .split_once('=')
            .ok_or_else(|| bad(format!("record `{}` has no `=`", clip(record))))?;
        if key != "settings_schema" && value.len() > MAX_VALUE {
            return Err(bad(format!("`{key}` is longer than {MAX_VALUE} bytes")));
        }
        if fields.insert(key.to_owned(), value.to_owned()).is_some() {
            // Two plugins' sections merged by the linker, or a forged one added.
            return Err(bad(format!(
                "`{key}` appears twice (more than one plugin in the file?)"
            )));
        }
    }
    if !ended {
        return Err(bad("it is not terminated by an empty record".into()));
    }
    if rest.iter().any(|&b| b != 0) {
        return Err(bad(
            "data follows the end (more than one plugin in the file?)".into(),
        ));
    }
    let mut take = |key: &str| {
        fields
            .remove(key)
            .ok_or_else(|| bad(format!("`{key}` is missing")))
    };
    let layout = take("meta")?;
    if layout != "1" {
        return Err(bad(format!(
            "layout version {layout}; this host reads version 1"
        )));
    }
    let name = take("name")?;
    validate_plugin_name(&name).map_err(|e| bad(format!("name: {e}")))?;
    let version = take("version")?;
    if version.is_empty() {
        return Err(bad("version is empty".into()));
    }
    let description = take("description")?;
    let abi_version = take("abi")?
        .parse::<u32>()
        .map_err(|_| bad("abi is not a number".into()))?;
    let service = match fields.remove("service").as_deref() {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => {
            return Err(bad(format!(
                "service is `{}`, not true or false",
                clip(other)
            )))
        }
    };
    Ok(Metadata {
        name,
        version,
        description,
        abi_version,
        service,
        // C plugins say "" for none.
        settings_schema: fields.remove("settings_schema").filter(|s| !s.is_empty()),
        sandbox: fields.remove("sandbox").filter(|s| !s.is_empty()),
        other: fields,
    })
}

/// At most 64 characters of `s`, for messages.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(records: &[&str]) -> Vec<u8> {
        let mut out = abi::META_MAGIC.to_vec();
        for r in records {
            out.extend_from_slice(r.as_bytes());
            out.push(0);
        }
        out.push(0);
        out
    }

    const GOOD: [&str; 5] = [
        "meta=1",
        "name=echo",
        "version=1.0.0",
        "description=d",
        "abi=2",
    ];

    #[test]
    fn a_complete_section_parses() {
        let mut records = GOOD.to_vec();
        records.extend([
            "service=true",
            "settings_schema={\"type\":\"object\"}",
            "future=x",
        ]);
        let m = parse(&section(&records)).unwrap();
        assert_eq!(
            (m.name.as_str(), m.version.as_str(), m.abi_version),
            ("echo", "1.0.0", 2)
        );
        assert!(m.service);
        assert_eq!(m.settings_schema.as_deref(), Some("{\"type\":\"object\"}"));
        assert_eq!(m.other.get("future").map(String::as_str), Some("x"));
        // Padding the linker adds after the end is fine.
        let mut padded = section(&GOOD);
        padded.extend([0, 0, 0]);
        assert!(parse(&padded).is_ok());
    }

    #[test]
    fn malformed_sections_are_refused_with_the_reason() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"ELF".to_vec(), "does not begin"),
            (section(&GOOD[1..]), "`meta` is missing"),
            (
                section(&["meta=2", "name=x", "version=1", "description=", "abi=2"]),
                "layout version 2",
            ),
            (
                section(&[
                    "meta=1",
                    "name=Bad Name",
                    "version=1",
                    "description=",
                    "abi=2",
                ]),
                "name",
            ),
            (
                section(&["meta=1", "name=x", "version=", "description=", "abi=2"]),
                "version is empty",
            ),
            (
                section(&["meta=1", "name=x", "version=1", "description=", "abi=two"]),
                "abi is not a number",
            ),
            (
                section(&[GOOD.as_slice(), &["name=other"]].concat()),
                "appears twice",
            ),
            (
                section(&[GOOD.as_slice(), &["noequals"]].concat()),
                "has no `=`",
            ),
            (
                section(&[GOOD.as_slice(), &["service=maybe"]].concat()),
                "not true or false",
            ),
            (
                [section(&GOOD), section(&GOOD)].concat(),
                "data follows the end",
            ),
            (section(&GOOD)[..20].to_vec(), "not terminated"),
        ];
        for (bytes, needle) in cases {
            match parse(&bytes) {
                Err(MetadataError::Malformed(m)) => {
                    assert!(m.contains(needle), "{m} lacks {needle}")
                }
                other => panic!("expected Malformed({needle}), got {other:?}"),
            }
        }
        let long = format!("description={}", "x".repeat(MAX_VALUE + 1));
        let m = parse(&section(&["meta=1", "name=x", "version=1", &long, "abi=2"]));
        assert!(matches!(m, Err(MetadataError::Malformed(_))));
    }

    #[test]
    fn files_that_are_not_elf_are_named_so() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("x.so");
        std::fs::write(&text, "not a library").unwrap();
        assert!(matches!(read(&text), Err(MetadataError::NotElf(_))));
        assert!(matches!(
            read(&dir.path().join("none.so")),
            Err(MetadataError::Io(_))
        ));
    }
}
