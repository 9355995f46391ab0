//! `json`: validates JSON input and returns it pretty-printed. With the setting
//! `pick: /json/pointer` (RFC 6901), returns only that part of the document.

use std::sync::RwLock;

use dynplug_sdk::{plugin, Plugin, PluginResult};

/// The json plugin.
#[derive(Debug, Default)]
pub struct Json {
    pick: RwLock<Option<String>>,
}

impl Json {
    /// Creates the plugin (no pick: the whole document).
    pub fn new() -> Self {
        Json::default()
    }
}

#[plugin(
    name = "json",
    description = "Validates and pretty-prints JSON; settings.pick selects a field by JSON pointer",
    settings_schema = r#"{"type": "object", "properties": {"pick": {"type": "string", "pattern": "^(/.*)?$"}}, "additionalProperties": false}"#
)]
impl Plugin for Json {
    fn configure(&self, settings_json: &str) -> PluginResult<()> {
        let settings: serde_json::Value = serde_json::from_str(settings_json)?;
        let pick = match settings.get("pick") {
            None => None,
            Some(serde_json::Value::String(p)) if p.is_empty() || p.starts_with('/') => {
                Some(p.clone())
            }
            Some(other) => {
                return Err(
                    format!("pick must be a JSON pointer such as \"/a/0\", not {other}").into(),
                )
            }
        };
        *self.pick.write().map_err(|_| "lock poisoned")? = pick;
        Ok(())
    }
    fn execute(&self, input: &str) -> PluginResult<String> {
        let doc: serde_json::Value =
            serde_json::from_str(input).map_err(|e| format!("invalid JSON: {e}"))?;
        let pick = self.pick.read().map_err(|_| "lock poisoned")?.clone();
        let value = match &pick {
            Some(pointer) => doc
                .pointer(pointer)
                .ok_or_else(|| format!("no value at {pointer}"))?,
            None => &doc,
        };
        Ok(serde_json::to_string_pretty(value)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_and_pick() {
        let j = Json::new();
        assert_eq!(
            j.execute(r#"{"a":[1]}"#).unwrap(),
            "{\n  \"a\": [\n    1\n  ]\n}"
        );
        let e = j.execute("{").unwrap_err().to_string();
        assert!(e.starts_with("invalid JSON"), "{e}");
        j.configure(r#"{"pick":"/a/0"}"#).unwrap();
        assert_eq!(j.execute(r#"{"a":[7]}"#).unwrap(), "7");
        assert!(j.execute(r#"{"b":1}"#).is_err());
        assert!(j.configure(r#"{"pick":"a"}"#).is_err());
    }
}
