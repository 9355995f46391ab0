//! Plugin name rules: `[a-z0-9][a-z0-9_-]{0,63}`.
//!
//! Names travel into D-Bus object paths, URLs, file names and log fields, so they are
//! kept to a small, safe alphabet.

/// Longest plugin name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks `name` against the plugin name rules; the error says what is wrong.
pub fn validate_plugin_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err("plugin name is empty".into());
    };
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "plugin name is longer than {MAX_NAME_LEN} characters"
        ));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(format!(
            "plugin name `{}` must start with a lowercase letter or digit",
            name.escape_default()
        ));
    }
    if let Some(bad) =
        chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "plugin name `{}` contains `{}`; allowed are a-z, 0-9, `_` and `-`",
            name.escape_default(),
            bad.escape_default()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_names() {
        for n in ["echo", "a", "0x", "json-pick", "my_plugin", &"a".repeat(64)] {
            assert!(validate_plugin_name(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for n in [
            "",
            "Echo",
            "-x",
            "_x",
            "a.b",
            "../x",
            "a b",
            "é",
            "a\0",
            &"a".repeat(65),
        ] {
            assert!(validate_plugin_name(n).is_err(), "{n:?}");
        }
    }
}
