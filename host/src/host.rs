//! The host's services for one plugin call (ABI version 2): log lines filed under the
//! plugin's name, progress for the job that made the call, cancellation, and events
//! published under a per-plugin budget.
//!
//! [`CallHost`] is the same whether the plugin runs in this process (through the SDK's
//! [`with_context`], the C context handed to `execute_ctx`) or in a worker process (whose
//! frames the pool hands to it): one set of limits for both.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::broadcast;

use crate::events::Event;
use crate::jobs::Job;
use dynplug_loader::locks::lock;
pub use dynplug_sdk::host::{with_context, Host};
pub use dynplug_sdk::Level;

pub use dynplug_loader::call_rules::{
    cut, event_acceptable, valid_event_name, CANCEL_GRACE, EVENTS_PER_SECOND, EVENT_BURST,
    LOGS_PER_SECOND, LOG_BURST, MAX_EVENT_NAME, MAX_EVENT_PAYLOAD, MAX_LOG_BYTES, MAX_STATUS_BYTES,
};

pub use dynplug_isolation::cancel::Cancel;

/// A token bucket.
#[derive(Debug)]
pub struct Budget {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Budget {
    /// A full bucket of `burst` tokens refilled at `rate` per second.
    pub fn new(rate: f64, burst: f64) -> Budget {
        Budget {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&self) -> bool {
        let mut s = lock(&self.state);
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Where one plugin's events and log lines go, under its budgets.
#[derive(Debug)]
pub struct PluginOutlet {
    sender: broadcast::Sender<Event>,
    events: Budget,
    logs: Budget,
}

impl PluginOutlet {
    /// An outlet to the manager's event channel with fresh budgets.
    pub fn new(sender: broadcast::Sender<Event>) -> Arc<PluginOutlet> {
        Arc::new(PluginOutlet {
            sender,
            events: Budget::new(EVENTS_PER_SECOND, EVENT_BURST),
            logs: Budget::new(LOGS_PER_SECOND, LOG_BURST),
        })
    }
}

/// The host's side of one call.
#[derive(Debug)]
pub struct CallHost {
    plugin: Arc<str>,
    cancel: Arc<Cancel>,
    outlet: Option<Arc<PluginOutlet>>,
    job: Option<Arc<Job>>,
}

impl CallHost {
    /// The services for a call of `plugin`: cancelled through `cancel`, events to
    /// `outlet` (none: dropped), progress to `job` (none: dropped).
    pub fn new(
        plugin: Arc<str>,
        cancel: Arc<Cancel>,
        outlet: Option<Arc<PluginOutlet>>,
        job: Option<Arc<Job>>,
    ) -> CallHost {
        CallHost {
            plugin,
            cancel,
            outlet,
            job,
        }
    }

    /// The plugin making the call.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The call's cancellation flag.
    pub fn cancel_flag(&self) -> &Arc<Cancel> {
        &self.cancel
    }
}

impl dynplug_isolation::CallServices for CallHost {
    fn cancel_flag(&self) -> &Arc<Cancel> {
        &self.cancel
    }
}

impl Host for CallHost {
    /// Files a log line under the plugin's name (`DYNPLUG_PLUGIN` in the journal),
    /// within the plugin's log budget.
    fn log(&self, level: Level, message: &str) {
        if self.outlet.as_ref().is_some_and(|o| !o.logs.take()) {
            return;
        }
        let plugin = &*self.plugin;
        let message = cut(message, MAX_LOG_BYTES);
        match level {
            Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
        }
    }

    /// Records progress on the job making the call, if any.
    fn progress(&self, fraction: f64, text: &str) {
        if let Some(job) = &self.job {
            job.set_progress(fraction, cut(text, MAX_STATUS_BYTES));
        }
    }

    /// Whether the caller gave up.
    fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Publishes an event; false when it was dropped (bad name, too large, over budget,
    /// or no one to publish to).
    fn emit(&self, event: &str, payload: &str) -> bool {
        let Some(outlet) = &self.outlet else {
            return false;
        };
        if !event_acceptable(event, payload) {
            tracing::debug!(
                plugin = &*self.plugin,
                event,
                "event refused: bad name or too large"
            );
            return false;
        }
        if !outlet.events.take() {
            tracing::debug!(plugin = &*self.plugin, event, "event dropped: over budget");
            return false;
        }
        let _ = outlet.sender.send(Event::PluginEvent {
            plugin: self.plugin.to_string(),
            event: event.to_owned(),
            payload: payload.to_owned(),
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_a_burst_then_the_rate() {
        let budget = Budget::new(EVENTS_PER_SECOND, EVENT_BURST);
        let burst = (0..200).filter(|_| budget.take()).count();
        assert_eq!(burst, EVENT_BURST as usize);
    }

    #[test]
    fn events_are_checked_and_published() {
        let (sender, mut rx) = broadcast::channel(8);
        let outlet = PluginOutlet::new(sender);
        let host = CallHost::new("p".into(), Cancel::new(), Some(outlet), None);
        assert!(!host.emit("bad name", "{}"));
        assert!(!host.emit("ok", &"x".repeat(MAX_EVENT_PAYLOAD + 1)));
        assert!(host.emit("done", "{\"n\":1}"));
        assert_eq!(
            rx.try_recv().unwrap(),
            Event::PluginEvent {
                plugin: "p".into(),
                event: "done".into(),
                payload: "{\"n\":1}".into()
            }
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(cut("héllo", 2), "h");
    }

    #[tokio::test]
    async fn cancel_wakes_waiters_once() {
        let cancel = Cancel::new();
        let waiter = tokio::spawn({
            let c = Arc::clone(&cancel);
            async move { c.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(cancel.cancel());
        assert!(!cancel.cancel());
        waiter.await.unwrap();
        assert!(cancel.is_cancelled());
    }
}
