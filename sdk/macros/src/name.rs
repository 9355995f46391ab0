//! The plugin name rule, `[a-z0-9][a-z0-9_-]{0,63}`, checked while the plugin compiles.
//!
//! A proc-macro crate cannot depend on the host, so the rule is written here again; a
//! test runs both this check and the host's (`dynplug_core::name`) over the same names
//! and fails if they ever disagree.

/// Longest plugin name, in bytes (the rule's alphabet is ASCII).
const MAX_NAME_LEN: usize = 64;

/// Checks `name` against the plugin name rule; the error says what is wrong.
pub(crate) fn check(name: &str) -> Result<(), String> {
    let Some(first) = name.chars().next() else {
        return Err("a plugin name cannot be empty".into());
    };
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "`{}` is {} bytes long; a plugin name has at most {MAX_NAME_LEN}",
            name.escape_default(),
            name.len()
        ));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(format!(
            "`{}` must start with a lowercase letter or digit",
            name.escape_default()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "`{}` contains `{}`; a plugin name is made of a-z, 0-9, `_` and `-`",
            name.escape_default(),
            bad.escape_default()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: [&str; 7] = ["echo", "a", "0x", "json-pick", "my_plugin", "9-_", "x2"];

    fn bad() -> Vec<String> {
        [
            "", "Echo", "-x", "_x", "a.b", "../x", "a b", "é", "aé", "a\0", "a\n", "a/b", "ECHO",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "a".repeat(65),
            // Cargo package names may hold upper case and be long; neither passes.
            "My-Plugin".into(),
            format!("p{}", "x".repeat(64)),
        ])
        .collect()
    }

    #[test]
    fn good_names_pass() {
        for n in GOOD.iter().map(|s| s.to_string()).chain(["a".repeat(64)]) {
            assert_eq!(check(&n), Ok(()), "{n:?}");
        }
    }

    #[test]
    fn bad_names_fail_saying_why() {
        for n in bad() {
            assert!(check(&n).is_err(), "{n:?} passed");
        }
        assert!(check("").unwrap_err().contains("empty"));
        assert!(check(&"a".repeat(65))
            .unwrap_err()
            .contains("65 bytes long"));
        assert!(check("Echo").unwrap_err().contains("must start with"));
        let e = check("a.b").unwrap_err();
        assert!(e.contains("contains `.`"), "{e}");
        // Control characters are escaped in the message, not printed.
        let e = check("a\nb").unwrap_err();
        assert!(e.contains("`a\\nb`") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn the_check_agrees_with_the_host_rule() {
        for n in GOOD
            .iter()
            .map(|s| s.to_string())
            .chain(bad())
            .chain(["a".repeat(64), "a".repeat(63) + "é"])
        {
            assert_eq!(
                check(&n).is_ok(),
                dynplug_core::name::validate_plugin_name(&n).is_ok(),
                "the macro and the host disagree on {n:?}"
            );
        }
    }
}
