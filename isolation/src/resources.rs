//! CPU time and resident memory of processes, read from /proc (Linux).

/// Resource usage of one process (or a sum over several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// User + system CPU time, in microseconds.
    pub cpu_usec: u64,
    /// Resident set size, in bytes.
    pub rss_bytes: u64,
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, other: Usage) -> Usage {
        Usage {
            cpu_usec: self.cpu_usec.saturating_add(other.cpu_usec),
            rss_bytes: self.rss_bytes.saturating_add(other.rss_bytes),
        }
    }
}

fn sysconf(name: libc::c_int) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).unwrap_or(0)
}

/// Usage of process `pid` (`"self"` for this one); `None` if it is gone.
pub fn of(pid: &str) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let hz = sysconf(libc::_SC_CLK_TCK).max(1);
    Some(Usage {
        cpu_usec: ticks.saturating_mul(1_000_000) / hz,
        rss_bytes: pages.saturating_mul(sysconf(libc::_SC_PAGESIZE)),
    })
}

/// Usage of this process. Its CPU time comes from `CLOCK_PROCESS_CPUTIME_ID`, to the
/// microsecond (/proc counts in clock ticks, 10 ms here, far coarser than the figure's
/// unit).
pub fn own() -> Usage {
    let mut usage = of("self").unwrap_or_default();
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } == 0 {
        let secs = u64::try_from(now.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
        usage.cpu_usec = secs.saturating_mul(1_000_000) + nanos / 1_000;
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_usage_moves_under_load() {
        let before = own();
        assert!(before.rss_bytes > 0);
        // Far less than a clock tick of work still shows, to the microsecond.
        let mut x = 0u64;
        for _ in 0..200_000 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(own().cpu_usec > before.cpu_usec);
        assert_eq!(of("999999999"), None);
    }
}
