//! The rules every host of a plugin call applies, in process or in a worker: the
//! largest log line, status text and event kept, which event names are acceptable,
//! the budgets for events and log lines, and how long a cancelled call has to return.

/// Longest log line kept, in bytes; the rest is cut (at a character boundary).
pub const MAX_LOG_BYTES: usize = 8 * 1024;
/// Longest progress text kept, in bytes.
pub const MAX_STATUS_BYTES: usize = 1024;
/// Longest event name accepted, in bytes.
pub const MAX_EVENT_NAME: usize = 64;
/// Largest event payload accepted, in bytes.
pub const MAX_EVENT_PAYLOAD: usize = 64 * 1024;
/// Events a plugin may publish per second, on average.
pub const EVENTS_PER_SECOND: f64 = 20.0;
/// Events a plugin may publish at once after a quiet spell.
pub const EVENT_BURST: f64 = 50.0;
/// Log lines a plugin may write per second, on average (journald's own rate limit
/// counts per service: a chatty plugin must not get the daemon's lines suppressed).
pub const LOGS_PER_SECOND: f64 = 100.0;
/// Log lines a plugin may write at once after a quiet spell.
pub const LOG_BURST: f64 = 500.0;
/// How long a cancelled call has to return before it is abandoned (in process) or its
/// worker killed (isolated).
pub const CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Cuts `text` to at most `max` bytes at a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whether `name` is an acceptable event name: 1 to 64 of `[A-Za-z0-9_.:-]`.
pub fn valid_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Whether an event of this name and payload may be published at all (before any
/// budget): a valid name and a payload of at most [`MAX_EVENT_PAYLOAD`] bytes. A worker
/// applies the same rule before it asks the daemon.
pub fn event_acceptable(name: &str, payload: &str) -> bool {
    valid_event_name(name) && payload.len() <= MAX_EVENT_PAYLOAD
}
