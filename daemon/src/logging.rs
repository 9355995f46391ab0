//! Logging: to journald with structured fields when running under systemd, to stderr
//! otherwise; the level can be changed at run time (on reload).
//!
//! On stderr every record is one line: control characters in any field (a plugin's
//! log message above all) are escaped, so no field can start a line of its own that
//! reads like one of the daemon's, or move a terminal's cursor. The journal keeps each
//! record whole, as one entry, with its text as it was.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Where log records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogTarget {
    /// journald when started by systemd (JOURNAL_STREAM or INVOCATION_ID set), else stderr.
    Auto,
    /// The systemd journal, with structured fields.
    Journal,
    /// Human-readable lines on stderr.
    Stderr,
}

/// Changes the log level of the installed subscriber.
#[derive(Debug, Clone)]
pub struct LogHandle(reload::Handle<EnvFilter, Registry>);

fn filter(level: &str) -> EnvFilter {
    // Keep the bus library quiet unless asked for by a full directive.
    let directive = if level.contains('=') {
        level.to_owned()
    } else {
        format!("{level},zbus=warn")
    };
    EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"))
}

impl LogHandle {
    /// Applies a new level (`info`, `debug`, or a directive such as `dynplug_core=trace`).
    pub fn set_level(&self, level: &str) {
        if let Err(e) = self.0.reload(filter(level)) {
            tracing::warn!(error = %e, "cannot change the log level");
        }
    }
}

/// Whether `c` is escaped on stderr: control characters (C0, DEL, C1), the Unicode
/// line and paragraph separators, and the bidirectional overrides and isolates that
/// reorder what a terminal shows.
fn escaped(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with each character [`escaped`] written as Rust writes it (`\n`, `\t`,
/// `\u{1b}`): printable, on one line.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The fields of a stderr line, formatted as usual, then escaped.
#[derive(Debug, Default)]
struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut plain = String::new();
        DefaultFields::new().format_fields(Writer::new(&mut plain), fields)?;
        writer.write_str(&escape_controls(&plain))
    }
}

/// The layer that writes records to `writer` as lines, coloured when `ansi`.
fn line_layer<S, W>(writer: W, ansi: bool) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false)
        .fmt_fields(EscapedFields)
}

/// Installs the global subscriber.
pub fn init(level: &str, target: LogTarget) -> LogHandle {
    let (filter, handle) = reload::Layer::new(filter(level));
    let journal = match target {
        LogTarget::Journal => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => {
            std::env::var_os("JOURNAL_STREAM").is_some()
                || std::env::var_os("INVOCATION_ID").is_some()
        }
    };
    let journald = if journal {
        tracing_journald::layer()
            .map(|l| {
                l.with_field_prefix(Some("DYNPLUG".into()))
                    .with_syslog_identifier("dynplugd".into())
            })
            .ok()
    } else {
        None
    };
    let stderr = journald.is_none().then(|| {
        // Colour only on a terminal, and never with NO_COLOR set: escapes in a log
        // file or a pipe are noise.
        let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        line_layer(std::io::stderr, colour)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(stderr)
        .try_init();
    LogHandle(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what the layer writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn control_characters_in_any_field_stay_on_one_escaped_line() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber =
            tracing_subscriber::registry().with(line_layer(move || sink.clone(), false));
        tracing::subscriber::with_default(subscriber, || {
            let forged = "done\n2026-01-01T00:00:00Z  INFO dynplugd: signature verified";
            tracing::info!(target: "plugin", plugin = "a\rb", "{forged}");
            tracing::warn!(error = %"bad\u{1b}[2J\u{202e}", "x\ty");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].ends_with(
                "done\\n2026-01-01T00:00:00Z  INFO dynplugd: signature verified plugin=\"a\\rb\""
            ),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with("x\\ty error=bad\\u{1b}[2J\\u{202e}"),
            "{}",
            lines[1]
        );
        assert!(!text.contains('\u{1b}') && !text.contains('\r'));
        assert_eq!(escape_controls("plain ünïcode"), "plain ünïcode");
    }
}
