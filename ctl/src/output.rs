//! Human output (aligned tables, colour only on a terminal and never with NO_COLOR)
//! and JSON output (stdout carries only JSON, errors included).

use std::io::{IsTerminal, Write};

use crate::client::CtlError;

/// How results are printed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    /// JSON instead of text.
    pub(crate) json: bool,
    colour: bool,
}

/// A colour for a table cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Colour {
    /// Plain.
    None,
    /// Good.
    Green,
    /// Bad.
    Red,
    /// Neutral but notable.
    Yellow,
}

impl Output {
    /// Decides colour from the terminal and `NO_COLOR`.
    pub(crate) fn new(json: bool) -> Self {
        let colour = !json
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Output { json, colour }
    }

    /// Wraps `text` in ANSI colour codes when colour is on. The text itself is
    /// escaped first ([`esc`]): a cell or value shows what a plugin or file said, and
    /// none of it can move the cursor, colour the terminal or start a line of its own.
    pub(crate) fn paint(&self, text: &str, colour: Colour) -> String {
        let text = esc(text);
        let code = match colour {
            Colour::None => return text.into_owned(),
            Colour::Green => "32",
            Colour::Red => "31",
            Colour::Yellow => "33",
        };
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.into_owned()
        }
    }

    /// Prints an aligned table with a header; cells carry their colour.
    pub(crate) fn table(&self, header: &[&str], rows: &[Vec<(String, Colour)>]) {
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in rows {
            for (w, (cell, _)) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let last = header.len() - 1;
        for (i, h) in header.iter().enumerate() {
            if i == last {
                out.push_str(h);
            } else {
                out.push_str(&format!("{h:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
        for row in rows {
            for (i, (cell, colour)) in row.iter().enumerate() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(&self.paint(cell, *colour));
                if i != last {
                    out.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push('\n');
        }
        print_stdout(&out);
    }

    /// Prints a JSON value on one line.
    pub(crate) fn json_value(&self, value: &serde_json::Value) {
        print_stdout(&format!("{value}\n"));
    }

    /// Reports an error: a JSON object on stdout with --json, else text on stderr.
    pub(crate) fn error(&self, e: &CtlError) {
        if self.json {
            let value = serde_json::json!({
                "error": { "kind": e.kind.as_str(), "message": e.message, "hint": e.hint }
            });
            self.json_value(&value);
        } else {
            // Messages carry what plugins and files said (errors, file names): one
            // escaped line each, so none can print a line of its own.
            let mut text = format!("dynplugctl: {}\n", esc(&e.message));
            if let Some(hint) = &e.hint {
                text.push_str(&format!("hint: {}\n", esc(hint)));
            }
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
}

/// Writes to stdout, ignoring a closed pipe (`dynplugctl list | head -1`).
pub(crate) fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Plugin- or file-supplied text as it may be printed: control and format characters
/// written as visible escapes (`\n`, `\x1b`, `\u{202e}`...), one line whatever it holds.
pub(crate) fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    dynplug_sdk::printable::escape(text)
}
