//! Logging: to journald with structured fields when running under systemd, to stderr
//! otherwise; the level can be changed at run time (on reload).

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
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(colour)
            .with_target(false)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(stderr)
        .try_init();
    LogHandle(handle)
}
