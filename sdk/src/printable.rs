//! Text from a plugin or a file, made safe to print on a terminal or in a log line.
//!
//! Whatever a plugin or a file supplies (names, descriptions, schemas, log messages,
//! event payloads) may hold newlines, escape sequences or bidirectional overrides that
//! would forge a line of their own, move the cursor, or reorder what a person reads.
//! [`escape`] writes every such character as a visible escape, as `systemctl` does:
//! `\n`, `\t`, `\r`, `\\`, `\xHH` for other control bytes and `\u{HHHH}` for C1 controls
//! and Unicode format characters (bidi overrides, zero-width joiners...). Text without
//! any comes back borrowed.

use std::borrow::Cow;

/// Whether `c` must be escaped to print as text.
fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

/// `text` with every control or format character written as a visible escape (see the
/// module docs); one line whatever it holds.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` escaped and in double quotes (a `"` inside escaped too): for plugin-supplied
/// values printed beside the host's own verdicts, so they can never pass for one.
pub fn quoted(text: &str) -> String {
    format!("\"{}\"", escape(text).replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(escape("echo 1.0 — ünïcode"), Cow::Borrowed(_)));
    }

    #[test]
    fn controls_and_format_characters_are_visible() {
        assert_eq!(
            escape("a\nsignature:   verified"),
            "a\\nsignature:   verified"
        );
        assert_eq!(escape("\x1b[2J\x07"), "\\x1b[2J\\x07");
        assert_eq!(escape("tab\there\r"), "tab\\there\\r");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape("\u{202e}txt.exe"), "\\u{202e}txt.exe");
        assert_eq!(escape("\u{85}next"), "\\u{0085}next");
        assert_eq!(escape("a\u{61c}b\u{ad}c"), "a\\u{061c}b\\u{00ad}c");
        assert_eq!(escape("tag\u{e0041}"), "tag\\u{e0041}");
        assert_eq!(quoted("say \"hi\"\n"), "\"say \\\"hi\\\"\\n\"");
    }
}
