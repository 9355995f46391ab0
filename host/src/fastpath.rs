//! The fast call path: what decides that an in-process plugin's calls may run on the
//! calling thread instead of being handed to a thread of their own and back.
//!
//! The hand-off (a blocking-pool thread woken, then the caller woken) costs tens of
//! microseconds and two futex round trips per call, many times what a fast plugin needs.
//! So a plugin starts on threads and is watched: [`PROMOTE_AFTER`] calls in a row, each
//! shorter than [`FAST_CALL`], move it inline ([`Speed`]). Inline calls longer than
//! [`SLOW_CALL`] are strikes: [`STRIKES`] of them within [`STRIKE_WINDOW`] inline calls
//! (one slow call alone may just be the scheduler preempting a fast one), or one call
//! running longer than [`HUNG_CALL`] (seen when it returns, or, while it still runs, by
//! the next call that finds no inline place free), send the plugin back to threads for
//! good (until its library is loaded anew).
//!
//! At most [`InlineSlots`] calls run inline at once across all plugins, one fewer than
//! the runtime has workers: a plugin that hangs inline holds one worker, never all.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A call at most this long counts towards promotion.
pub const FAST_CALL: Duration = Duration::from_micros(50);
/// Fast calls in a row that move a plugin inline.
pub const PROMOTE_AFTER: u32 = 32;
/// An inline call longer than this is a strike against the plugin.
pub const SLOW_CALL: Duration = Duration::from_millis(1);
/// Strikes within [`STRIKE_WINDOW`] inline calls that send the plugin back to threads.
pub const STRIKES: u32 = 3;
/// The inline calls over which strikes count.
pub const STRIKE_WINDOW: u32 = 1000;
/// An inline call longer than this sends the plugin back to threads at once: it
/// blocks (or hangs), and no preemption lasts that long.
pub const HUNG_CALL: Duration = Duration::from_millis(100);

const LEARNING: u8 = 0;
const INLINE: u8 = 1;
const THREADED: u8 = 2;

/// Nanoseconds since the first use of this clock (fits in an atomic).
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What is known about one plugin's call durations, and its inline calls running.
#[derive(Debug, Default)]
pub struct Speed {
    mode: AtomicU8,
    streak: AtomicU32,
    /// Slow inline calls counted in the current window, and the calls in it.
    strikes: AtomicU32,
    window: AtomicU32,
    running: AtomicU32,
    /// When the oldest inline call still running began (`now_ns`), if any runs.
    since_ns: AtomicU64,
}

/// Why a plugin went back to threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demoted {
    /// How long the offending call ran (or has been running).
    pub took: Duration,
}

impl Speed {
    /// Whether calls may run inline now.
    pub fn inline(&self) -> bool {
        self.mode.load(Ordering::Relaxed) == INLINE
    }

    /// `inline` when calls run inline, else `threads`.
    pub fn path(&self) -> &'static str {
        if self.inline() {
            "inline"
        } else {
            "threads"
        }
    }

    /// Whether the plugin was sent back to threads.
    pub fn demoted(&self) -> bool {
        self.mode.load(Ordering::Relaxed) == THREADED
    }

    /// Records how long a threaded call ran in the plugin; promotes after enough fast
    /// ones in a row. Returns true when this call promoted it.
    pub fn observe(&self, ran: Duration) -> bool {
        if self.mode.load(Ordering::Relaxed) != LEARNING {
            return false;
        }
        if ran > FAST_CALL {
            self.streak.store(0, Ordering::Relaxed);
            return false;
        }
        if self.streak.fetch_add(1, Ordering::Relaxed) + 1 >= PROMOTE_AFTER {
            return self
                .mode
                .compare_exchange(LEARNING, INLINE, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
        }
        false
    }

    /// An inline call begins.
    pub fn begin(&self) {
        if self.running.fetch_add(1, Ordering::AcqRel) == 0 {
            self.since_ns.store(now_ns(), Ordering::Release);
        }
    }

    /// An inline call that began with [`Speed::begin`] ended after `took`; a hung one,
    /// or the last of [`STRIKES`] slow ones, demotes the plugin (returned, the first
    /// time).
    pub fn end(&self, took: Duration) -> Option<Demoted> {
        self.running.fetch_sub(1, Ordering::AcqRel);
        if self.window.fetch_add(1, Ordering::Relaxed) + 1 >= STRIKE_WINDOW {
            self.window.store(0, Ordering::Relaxed);
            self.strikes.store(0, Ordering::Relaxed);
        }
        let demote = took > HUNG_CALL
            || (took > SLOW_CALL && self.strikes.fetch_add(1, Ordering::Relaxed) + 1 >= STRIKES);
        (demote && self.demote()).then_some(Demoted { took })
    }

    /// Demotes the plugin if an inline call has been running longer than
    /// [`HUNG_CALL`] (returned, the first time).
    pub fn check_running(&self) -> Option<Demoted> {
        if self.running.load(Ordering::Acquire) == 0 {
            return None;
        }
        let since = self.since_ns.load(Ordering::Acquire);
        let took = Duration::from_nanos(now_ns().saturating_sub(since));
        (took > HUNG_CALL).then_some(())?;
        self.demote().then_some(Demoted { took })
    }

    /// Sends the plugin to threads for good; true if it was not there already.
    fn demote(&self) -> bool {
        self.mode.swap(THREADED, Ordering::AcqRel) != THREADED
    }
}

/// The calls that may run inline at once, across all plugins.
#[derive(Debug)]
pub struct InlineSlots {
    max: usize,
    used: AtomicUsize,
}

/// One call's place in [`InlineSlots`], given back on drop.
#[derive(Debug)]
pub struct InlineSlot<'a>(&'a InlineSlots);

impl Drop for InlineSlot<'_> {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InlineSlots {
    /// Room for one fewer inline call than the runtime has `workers` (at least one).
    pub fn for_workers(workers: usize) -> InlineSlots {
        InlineSlots {
            max: workers.saturating_sub(1).max(1),
            used: AtomicUsize::new(0),
        }
    }

    /// A place for one inline call, if one is free.
    pub fn try_enter(&self) -> Option<InlineSlot<'_>> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used >= self.max {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(InlineSlot(self)),
                Err(now) => used = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_calls_promote_and_slow_ones_demote_for_good() {
        let speed = Speed::default();
        for _ in 0..PROMOTE_AFTER - 1 {
            assert!(!speed.observe(Duration::from_micros(5)));
        }
        // A slow call resets the streak.
        assert!(!speed.observe(Duration::from_millis(1)));
        assert!(!speed.inline());
        let promoted: Vec<bool> = (0..PROMOTE_AFTER)
            .map(|_| speed.observe(Duration::from_micros(5)))
            .collect();
        assert_eq!(promoted.iter().filter(|p| **p).count(), 1);
        assert!(speed.inline());
        speed.begin();
        assert_eq!(speed.end(Duration::from_micros(3)), None);
        // Slow calls are strikes: the third demotes.
        let took = Duration::from_millis(5);
        for _ in 0..STRIKES - 1 {
            speed.begin();
            assert_eq!(speed.end(took), None);
        }
        assert!(speed.inline());
        speed.begin();
        assert_eq!(speed.end(took), Some(Demoted { took }));
        assert!(speed.demoted() && !speed.inline());
        // Never again: demoted plugins are not promoted.
        for _ in 0..PROMOTE_AFTER * 2 {
            assert!(!speed.observe(Duration::from_micros(1)));
        }
        assert!(!speed.inline());
    }

    #[test]
    fn strikes_expire_but_one_hung_call_demotes_at_once() {
        let promoted = || {
            let speed = Speed::default();
            for _ in 0..PROMOTE_AFTER {
                speed.observe(Duration::ZERO);
            }
            speed
        };
        let speed = promoted();
        let slow = SLOW_CALL * 2;
        for _ in 0..STRIKES - 1 {
            speed.begin();
            speed.end(slow);
        }
        for _ in 0..STRIKE_WINDOW {
            speed.begin();
            speed.end(Duration::ZERO);
        }
        speed.begin();
        assert_eq!(speed.end(slow), None, "the old strikes expired");
        assert!(speed.inline());
        let speed = promoted();
        speed.begin();
        assert!(speed.end(HUNG_CALL * 2).is_some());
        assert!(speed.demoted());
    }

    #[test]
    fn a_call_still_running_too_long_demotes() {
        let speed = Speed::default();
        for _ in 0..PROMOTE_AFTER {
            speed.observe(Duration::ZERO);
        }
        speed.begin();
        assert_eq!(speed.check_running(), None);
        std::thread::sleep(HUNG_CALL + Duration::from_millis(20));
        assert!(speed.check_running().is_some());
        assert_eq!(speed.check_running(), None, "reported once");
        assert!(speed.demoted());
    }

    #[test]
    fn inline_slots_leave_a_worker_free() {
        let slots = InlineSlots::for_workers(2);
        let one = slots.try_enter();
        assert!(one.is_some());
        assert!(slots.try_enter().is_none());
        drop(one);
        assert!(slots.try_enter().is_some());
        assert_eq!(InlineSlots::for_workers(1).max, 1);
        assert_eq!(InlineSlots::for_workers(8).max, 7);
    }
}
