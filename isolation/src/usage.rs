//! Workers' CPU time and memory, as the workers report them.
//!
//! The daemon cannot read them from `/proc` in general: under the packaged unit
//! (`ProtectProc=invisible`) workers, which run as another user, have no entry it can
//! see; neither can the keeper or the namespace's init (they run as that user, and the
//! plugin's process is non-dumpable, so its entry stays hidden from them too); and the
//! process the daemon started is the keeper, whose own figures leave out the plugin's
//! process below it. So each worker reports its own figures
//! ([`Kind::Usage`](super::protocol::Kind::Usage), at most every [`REPORT_EVERY`], just
//! before a result), and the daemon reads `/proc` only for a worker that has not
//! reported yet.
//!
//! A report comes from the process that runs plugin code, so it is informational: a
//! hostile plugin can misstate its own figures, and nothing else. The daemon bases no
//! decision on them, sums saturate, a report for another call kills the worker like any
//! forged frame, and reports are kept per worker of the reporting plugin only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::resources::Usage;
use dynplug_loader::locks::lock;

/// Length of a usage frame's body: call id, CPU µs, RSS bytes (each `u64` LE).
pub(crate) const BODY: usize = 24;

/// A worker reports at most this often.
pub(crate) const REPORT_EVERY: Duration = Duration::from_millis(250);

/// The body of a usage frame for `call`.
pub(crate) fn encode(call: u64, usage: Usage) -> Vec<u8> {
    let mut body = Vec::with_capacity(BODY);
    body.extend_from_slice(&call.to_le_bytes());
    body.extend_from_slice(&usage.cpu_usec.to_le_bytes());
    body.extend_from_slice(&usage.rss_bytes.to_le_bytes());
    body
}

/// The call id and figures of a usage frame's body; `None` if it is malformed.
pub(crate) fn decode(body: &[u8]) -> Option<(u64, Usage)> {
    let body: &[u8; BODY] = body.try_into().ok()?;
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&body[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    Some((
        word(0),
        Usage {
            cpu_usec: word(1),
            rss_bytes: word(2),
        },
    ))
}

/// This process's figures (in a worker): CPU from `getrusage`, memory from
/// `/proc/self/statm` (a process always sees its own entry).
pub(crate) fn own() -> Usage {
    // SAFETY: an all-zero rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage we own.
    let cpu_usec = if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
        let usec = |t: libc::timeval| {
            u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
        };
        usec(ru.ru_utime) + usec(ru.ru_stime)
    } else {
        0
    };
    Usage {
        cpu_usec,
        rss_bytes: crate::resources::of("self").map_or(0, |u| u.rss_bytes),
    }
}

/// When a worker last reported (it reports at most every [`REPORT_EVERY`]).
#[derive(Debug, Default)]
pub(crate) struct Throttle(Option<Instant>);

impl Throttle {
    /// Whether a report is due now; if so, counts it as made.
    pub(crate) fn due(&mut self) -> bool {
        let now = Instant::now();
        if self
            .0
            .is_some_and(|last| now.duration_since(last) < REPORT_EVERY)
        {
            return false;
        }
        self.0 = Some(now);
        true
    }
}

/// The last report of each worker of one pool, by PID.
#[derive(Debug, Default)]
pub(crate) struct Reports(Mutex<HashMap<u32, Usage>>);

impl Reports {
    /// Keeps `usage` as worker `pid`'s latest report.
    pub(crate) fn set(&self, pid: u32, usage: Usage) {
        lock(&self.0).insert(pid, usage);
    }

    /// The latest report of worker `pid`.
    #[cfg(test)]
    pub(crate) fn get(&self, pid: u32) -> Option<Usage> {
        lock(&self.0).get(&pid).copied()
    }

    /// The figures of the live workers `pids`, summed: each its latest report, else (no
    /// report yet) what `/proc` says of it where the daemon can read it. Reports of
    /// workers no longer live are dropped.
    pub(crate) fn usage_of(&self, pids: &[u32]) -> Usage {
        let mut reports = lock(&self.0);
        reports.retain(|pid, _| pids.contains(pid));
        pids.iter()
            .filter_map(|pid| {
                reports
                    .get(pid)
                    .copied()
                    .or_else(|| crate::resources::of(&pid.to_string()))
            })
            .fold(Usage::default(), |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_malformed_ones_are_refused() {
        let u = Usage {
            cpu_usec: 7,
            rss_bytes: u64::MAX,
        };
        assert_eq!(decode(&encode(42, u)), Some((42, u)));
        assert_eq!(decode(&encode(42, u)[..BODY - 1]), None);
        assert_eq!(decode(&[0u8; BODY + 1]), None);
    }

    #[test]
    fn reports_count_where_proc_says_nothing_and_proc_fills_in_before_one() {
        let reports = Reports::default();
        let hidden = 999_999_999; // no such entry: /proc says nothing, as under the unit
        let me = std::process::id(); // visible, and not reported yet
        reports.set(
            hidden,
            Usage {
                cpu_usec: 5,
                rss_bytes: 6,
            },
        );
        reports.set(4_000_000_000, Usage::default());
        let both = reports.usage_of(&[hidden, me]);
        let own = crate::resources::of(&me.to_string()).unwrap();
        assert_eq!(both.rss_bytes, own.rss_bytes + 6);
        // A report of a worker that is gone is dropped.
        assert_eq!(reports.get(4_000_000_000), None);
        // Saturating: a forged report cannot wrap a sum around.
        let forged = Usage {
            cpu_usec: u64::MAX,
            rss_bytes: u64::MAX,
        };
        reports.set(hidden, forged);
        assert_eq!(reports.usage_of(&[hidden, me]), forged);
    }

    #[test]
    fn own_figures_are_real_and_reports_are_throttled() {
        let u = own();
        assert!(u.rss_bytes > 0);
        let mut x = 0u64;
        for _ in 0..2_000_000 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(own().cpu_usec >= u.cpu_usec);
        let mut t = Throttle::default();
        assert!(t.due());
        assert!(!t.due(), "a second report within REPORT_EVERY waits");
    }
}
