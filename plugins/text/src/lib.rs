//! `text`: transforms text. The transformation comes from the plugin's settings
//! (`mode: upper | lower | reverse | trim`, default `upper`) and can be chosen per call
//! by prefixing the input with `MODE:` (e.g. `reverse:abc`).

use std::sync::RwLock;

use dynplug_sdk::{plugin, Plugin, PluginResult};

/// A text transformation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Upper case.
    Upper,
    /// Lower case.
    Lower,
    /// Characters in reverse order.
    Reverse,
    /// Leading and trailing white space removed.
    Trim,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "upper" => Mode::Upper,
            "lower" => Mode::Lower,
            "reverse" => Mode::Reverse,
            "trim" => Mode::Trim,
            _ => return None,
        })
    }

    /// Applies the transformation.
    pub fn apply(self, s: &str) -> String {
        match self {
            Mode::Upper => s.to_uppercase(),
            Mode::Lower => s.to_lowercase(),
            Mode::Reverse => s.chars().rev().collect(),
            Mode::Trim => s.trim().to_owned(),
        }
    }
}

/// The text plugin.
#[derive(Debug)]
pub struct Text {
    mode: RwLock<Mode>,
}

impl Default for Text {
    fn default() -> Self {
        Text::new()
    }
}

impl Text {
    /// Creates the plugin in `upper` mode.
    pub fn new() -> Self {
        Text {
            mode: RwLock::new(Mode::Upper),
        }
    }
}

#[plugin(
    name = "text",
    description = "Transforms text: upper, lower, reverse or trim (settings.mode, or a MODE: prefix)",
    settings_schema = r#"{"type": "object", "properties": {"mode": {"enum": ["upper", "lower", "reverse", "trim"]}}, "additionalProperties": false}"#
)]
impl Plugin for Text {
    fn configure(&self, settings_json: &str) -> PluginResult<()> {
        let settings: serde_json::Value = serde_json::from_str(settings_json)?;
        let mode = match settings.get("mode") {
            None => Mode::Upper,
            Some(serde_json::Value::String(m)) => Mode::parse(m)
                .ok_or_else(|| format!("unknown mode `{m}`; use upper, lower, reverse or trim"))?,
            Some(other) => return Err(format!("mode must be a string, not {other}").into()),
        };
        *self.mode.write().map_err(|_| "mode lock poisoned")? = mode;
        Ok(())
    }
    fn execute(&self, input: &str) -> PluginResult<String> {
        if let Some((prefix, rest)) = input.split_once(':') {
            if let Some(mode) = Mode::parse(prefix) {
                return Ok(mode.apply(rest));
            }
        }
        let mode = *self.mode.read().map_err(|_| "mode lock poisoned")?;
        Ok(mode.apply(input))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_settings() {
        let t = Text::new();
        assert_eq!(t.execute("abc").unwrap(), "ABC");
        assert_eq!(t.execute("reverse:héllo").unwrap(), "olléh");
        t.configure(r#"{"mode":"trim"}"#).unwrap();
        assert_eq!(t.execute("  x  ").unwrap(), "x");
        assert!(t.configure(r#"{"mode":"shout"}"#).is_err());
        assert!(t.configure(r#"{"mode":3}"#).is_err());
        assert_eq!(
            t.execute(" x ").unwrap(),
            "x",
            "a rejected setting keeps the old mode"
        );
    }
}
