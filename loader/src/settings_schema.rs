//! A plugin's settings schema: the JSON Schema it declares in its metadata section
//! (`settings_schema`), compiled once when the file is read, and the check of its
//! configured `settings` against it, done at start and on every reload before anything
//! is applied.

use std::fmt;

/// A compiled settings schema.
pub struct SettingsSchema {
    text: String,
    validator: jsonschema::Validator,
}

impl fmt::Debug for SettingsSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettingsSchema")
            .field("text", &self.text)
            .finish_non_exhaustive()
    }
}

impl SettingsSchema {
    /// Compiles `text`, a JSON Schema (any draft the validator knows; 2020-12 unless
    /// `$schema` says otherwise). The schema may not fetch anything: only local
    /// references resolve.
    pub fn compile(text: &str) -> Result<SettingsSchema, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("settings_schema is not JSON: {e}"))?;
        let validator = jsonschema::validator_for(&value)
            .map_err(|e| format!("settings_schema is not a valid JSON Schema: {e}"))?;
        Ok(SettingsSchema {
            text: text.to_owned(),
            validator,
        })
    }

    /// The schema as the plugin declared it.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Checks `settings` (JSON text, as the configuration resolves them). The error
    /// names the first offending key as a dotted path below `settings` and the reason.
    pub fn check(&self, settings_json: &str) -> Result<(), Violation> {
        let value: serde_json::Value =
            serde_json::from_str(settings_json).map_err(|e| Violation {
                key: String::new(),
                reason: format!("not JSON: {e}"),
            })?;
        self.validator.validate(&value).map_err(|e| Violation {
            key: dotted(e.instance_path().as_str()),
            reason: e.to_string(),
        })
    }
}

/// Why settings break their schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key, as a dotted path below `settings` (empty for the settings as a whole).
    pub key: String,
    /// What is wrong, in the validator's words.
    pub reason: String,
}

/// "/mode/0" → ".mode.0" (a JSON Pointer as a dotted suffix, unescaped).
fn dotted(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(|segment| format!(".{}", segment.replace("~1", "/").replace("~0", "~")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODES: &str = r#"{
        "type": "object",
        "properties": {
            "mode": {"enum": ["upper", "lower", "reverse"]},
            "limits": {"type": "object", "properties": {"max": {"type": "integer", "minimum": 1}}}
        },
        "additionalProperties": false
    }"#;

    #[test]
    fn settings_are_checked_naming_the_key_and_reason() {
        let schema = SettingsSchema::compile(MODES).unwrap();
        assert!(schema.check(r#"{"mode": "upper"}"#).is_ok());
        assert!(schema.check("{}").is_ok());
        let v = schema.check(r#"{"mode": "sideways"}"#).unwrap_err();
        assert_eq!(v.key, ".mode");
        assert!(v.reason.contains("sideways"), "{v:?}");
        let v = schema.check(r#"{"limits": {"max": 0}}"#).unwrap_err();
        assert_eq!(v.key, ".limits.max");
        assert!(
            v.reason.contains("minimum") || v.reason.contains('1'),
            "{v:?}"
        );
        let v = schema.check(r#"{"colour": "red"}"#).unwrap_err();
        assert!(v.reason.contains("colour"), "{v:?}");
    }

    #[test]
    fn a_schema_that_is_not_one_is_refused() {
        assert!(SettingsSchema::compile("{not json")
            .unwrap_err()
            .contains("not JSON"));
        let e = SettingsSchema::compile(r#"{"type": "no-such-type"}"#).unwrap_err();
        assert!(e.contains("not a valid JSON Schema"), "{e}");
    }

    #[test]
    fn a_schema_cannot_fetch_anything() {
        for reference in ["http://127.0.0.1:9/x.json", "file:///etc/passwd"] {
            let schema = format!(r#"{{"$ref": "{reference}"}}"#);
            assert!(
                SettingsSchema::compile(&schema).is_err(),
                "{reference} resolved"
            );
        }
    }

    #[test]
    fn pointers_become_dotted_keys() {
        assert_eq!(dotted(""), "");
        assert_eq!(dotted("/a/0/b~1c"), ".a.0.b/c");
    }
}
