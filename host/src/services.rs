//! The service orchestrator: runs the services of enabled service plugins, restarts
//! a service that ends on its own with an exponential backoff, and stops services on
//! disable and on shutdown within a bounded time.
//!
//! A service's `start` blocks for the life of the service, so each one gets a thread
//! of its own rather than a slot in the blocking pool, which is kept for short calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::CallError;
use crate::events::{Event, ServiceState};
use crate::slot::Slot;
use dynplug_loader::locks::lock;

/// First restart delay; doubled after each crash up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest restart delay.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A service that ran this long before ending starts its backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    state: Arc<Mutex<ServiceState>>,
}

/// Supervises the services of service plugins.
pub(crate) struct Services {
    running: Mutex<HashMap<String, Running>>,
    events: broadcast::Sender<Event>,
    stop_timeout: Duration,
}

impl Services {
    pub(crate) fn new(events: broadcast::Sender<Event>, stop_timeout: Duration) -> Self {
        Services {
            running: Mutex::new(HashMap::new()),
            events,
            stop_timeout,
        }
    }

    /// The state of `name`'s service.
    pub(crate) fn state(&self, name: &str) -> ServiceState {
        lock(&self.running)
            .get(name)
            .map_or(ServiceState::Stopped, |s| lock(&s.state).clone())
    }

    /// Starts supervising `slot`'s service unless it already runs.
    pub(crate) fn start(&self, slot: Arc<Slot>) {
        let mut running = lock(&self.running);
        let name = slot.name().to_owned();
        if running.get(&name).is_some_and(|r| !r.task.is_finished()) {
            return;
        }
        let (stop, stop_rx) = watch::channel(false);
        // Running from the moment the supervisor exists, so readers never see a gap.
        let state = Arc::new(Mutex::new(ServiceState::Running));
        let task = tokio::spawn(supervise(
            slot,
            self.events.clone(),
            Arc::clone(&state),
            stop_rx,
            self.stop_timeout,
        ));
        running.insert(name, Running { stop, task, state });
    }

    /// Stops `name`'s service and waits for its supervisor (bounded by the stop timeout).
    pub(crate) async fn stop(&self, name: &str) {
        let entry = lock(&self.running).remove(name);
        if let Some(r) = entry {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
    }

    /// Stops every service concurrently.
    pub(crate) async fn stop_all(&self) {
        let all: Vec<Running> = lock(&self.running).drain().map(|(_, v)| v).collect();
        for r in &all {
            let _ = r.stop.send(true);
        }
        for r in all {
            let _ = r.task.await;
        }
    }
}

fn set_state(
    slot: &Slot,
    events: &broadcast::Sender<Event>,
    cell: &Mutex<ServiceState>,
    state: ServiceState,
) {
    *lock(cell) = state.clone();
    let _ = events.send(Event::ServiceStateChanged {
        name: slot.name().to_owned(),
        state,
    });
}

/// Runs `start` on its own thread; the receiver fires when it returns.
fn spawn_service(slot: &Arc<Slot>) -> oneshot::Receiver<Result<(), String>> {
    let (tx, rx) = oneshot::channel();
    let slot = Arc::clone(slot);
    let spawned = std::thread::Builder::new()
        .name(format!("svc-{}", slot.name()))
        .spawn(move || {
            let result = slot
                .instance()
                .map_err(|e| e.to_string())
                .and_then(|i| i.start().map_err(|e: CallError| e.to_string()));
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(format!("cannot spawn a thread: {e}")));
        return rx;
    }
    rx
}

async fn supervise(
    slot: Arc<Slot>,
    events: broadcast::Sender<Event>,
    state: Arc<Mutex<ServiceState>>,
    mut stop: watch::Receiver<bool>,
    stop_timeout: Duration,
) {
    let name = slot.name().to_owned();
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0u32;
    loop {
        set_state(&slot, &events, &state, ServiceState::Running);
        let began = Instant::now();
        let mut ended = spawn_service(&slot);
        tokio::select! {
            result = &mut ended => {
                let reason = match result {
                    Ok(Ok(())) => "the service returned before it was stopped".to_owned(),
                    Ok(Err(e)) => e,
                    Err(_) => "the service thread vanished".to_owned(),
                };
                tracing::warn!(plugin = %name, error = %reason, "service ended unexpectedly");
                let _ = events.send(Event::PluginFailed { name: name.clone(), error: reason.clone() });
                if began.elapsed() >= HEALTHY_RUN {
                    backoff = FIRST_BACKOFF;
                }
                attempt += 1;
                set_state(&slot, &events, &state, ServiceState::Restarting { attempt, reason });
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            _ = stop.changed() => {
                if let Some(instance) = slot.loaded() {
                    let stopped = tokio::task::spawn_blocking(move || instance.stop());
                    if let Ok(Ok(Err(e))) = tokio::time::timeout(stop_timeout, stopped).await {
                        tracing::warn!(plugin = %name, error = %e, "service stop hook failed");
                    }
                }
                if tokio::time::timeout(stop_timeout, ended).await.is_err() {
                    tracing::warn!(plugin = %name, timeout_ms = stop_timeout.as_millis() as u64,
                        "service did not stop in time; abandoning its thread");
                }
                break;
            }
        }
    }
    set_state(&slot, &events, &state, ServiceState::Stopped);
}
