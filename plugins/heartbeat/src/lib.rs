//! `heartbeat`: a service plugin. While enabled it beats every `interval_ms`
//! (setting, default 1000) on a thread the host gives it; `execute` reports the
//! state as JSON: `{"running": true, "beats": 12, "interval_ms": 1000}`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use dynplug_sdk::{plugin, Plugin, PluginResult};

/// The heartbeat plugin.
#[derive(Debug)]
pub struct Heartbeat {
    beats: AtomicU64,
    interval_ms: AtomicU64,
    running: AtomicBool,
    stop_requested: Mutex<bool>,
    wake: Condvar,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}

impl Heartbeat {
    /// Creates the plugin (not running).
    pub fn new() -> Self {
        Heartbeat {
            beats: AtomicU64::new(0),
            interval_ms: AtomicU64::new(1000),
            running: AtomicBool::new(false),
            stop_requested: Mutex::new(false),
            wake: Condvar::new(),
        }
    }
}

#[plugin(
    name = "heartbeat",
    description = "Background service counting heartbeats; execute reports its state",
    service = true,
    settings_schema = r#"{"type": "object", "properties": {"interval_ms": {"type": "integer", "minimum": 1, "maximum": 3600000}}, "additionalProperties": false}"#
)]
impl Plugin for Heartbeat {
    fn configure(&self, settings_json: &str) -> PluginResult<()> {
        let settings: serde_json::Value = serde_json::from_str(settings_json)?;
        if let Some(v) = settings.get("interval_ms") {
            let ms = v
                .as_u64()
                .filter(|ms| (1..=3_600_000).contains(ms))
                .ok_or_else(|| format!("interval_ms must be 1..=3600000, not {v}"))?;
            self.interval_ms.store(ms, Ordering::Relaxed);
        }
        Ok(())
    }
    fn start(&self) -> PluginResult<()> {
        let mut stop = self.stop_requested.lock().map_err(|_| "lock poisoned")?;
        self.running.store(true, Ordering::Release);
        while !*stop {
            let interval = Duration::from_millis(self.interval_ms.load(Ordering::Relaxed));
            let (guard, timeout) = self
                .wake
                .wait_timeout(stop, interval)
                .map_err(|_| "lock poisoned")?;
            stop = guard;
            if timeout.timed_out() {
                self.beats.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Reset here, not on entry: a stop that arrives before start runs still counts.
        *stop = false;
        self.running.store(false, Ordering::Release);
        Ok(())
    }
    fn stop(&self) -> PluginResult<()> {
        *self.stop_requested.lock().map_err(|_| "lock poisoned")? = true;
        self.wake.notify_all();
        Ok(())
    }
    fn execute(&self, _input: &str) -> PluginResult<String> {
        Ok(format!(
            r#"{{"running": {}, "beats": {}, "interval_ms": {}}}"#,
            self.running.load(Ordering::Acquire),
            self.beats.load(Ordering::Relaxed),
            self.interval_ms.load(Ordering::Relaxed)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn beats_until_stopped() {
        let h = Arc::new(Heartbeat::new());
        h.configure(r#"{"interval_ms": 1}"#).unwrap();
        let runner = Arc::clone(&h);
        let t = std::thread::spawn(move || runner.start().map_err(|e| e.to_string()));
        while h.beats.load(Ordering::Relaxed) < 3 {
            std::thread::yield_now();
        }
        h.stop().unwrap();
        t.join().unwrap().unwrap();
        assert!(h.execute("").unwrap().contains(r#""running": false"#));
        assert!(h.configure(r#"{"interval_ms": 0}"#).is_err());
    }
}
