//! Keeps the per-plugin objects in step with the manager and turns manager events and
//! the shared state's events into D-Bus signals.

use std::collections::BTreeSet;
use std::sync::Arc;

use dynplug_core::events::{Event, ServiceState};
use dynplug_core::Manager;
use tokio::sync::broadcast;
use zbus::object_server::InterfaceRef;
use zbus::Connection;

use super::authority::Authority;
use super::job_iface::JobIface;
use super::manager_iface::ManagerIface;
use super::plugin_iface::PluginIface;
use crate::state::{Shared, StateEvent};
use dynplug_dbus::{job_path, plugin_path, MANAGER_PATH};

/// The plugin objects this connection serves.
pub struct Published {
    conn: Connection,
    authority: Arc<Authority>,
    served: tokio::sync::Mutex<BTreeSet<String>>,
}

impl Published {
    /// Publishes the current plugins on `conn`, their calls authorized by `authority`.
    pub async fn attach(
        conn: Connection,
        manager: &Manager,
        authority: Arc<Authority>,
    ) -> zbus::Result<Arc<Published>> {
        let published = Arc::new(Published {
            conn,
            authority,
            served: tokio::sync::Mutex::new(BTreeSet::new()),
        });
        published.sync(manager).await?;
        Ok(published)
    }

    /// Brings the plugin objects in step with the manager.
    pub async fn sync(&self, manager: &Manager) -> zbus::Result<()> {
        sync(
            &self.conn,
            manager,
            &self.authority,
            &mut *self.served.lock().await,
        )
        .await
    }

    /// Removes every object from the bus, waiting for calls being dispatched to finish
    /// (they hold the interface until their reply is sent).
    pub async fn detach(&self) {
        let mut served = self.served.lock().await;
        for name in std::mem::take(&mut *served) {
            let _ = self
                .conn
                .object_server()
                .remove::<PluginIface, _>(plugin_path(&name))
                .await;
        }
        let _ = self
            .conn
            .object_server()
            .remove::<ManagerIface, _>(MANAGER_PATH)
            .await;
    }
}

/// Follows the shared state: the `State` property as the lifecycle moves; after a
/// reload, the plugin objects and the `LastReloadError` and `ApiAddress` properties.
pub async fn follow_state(published: Arc<Published>, shared: Arc<Shared>) {
    let mut events = shared.subscribe();
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(_)) => StateEvent::Reloaded,
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let Ok(iface) = published
            .conn
            .object_server()
            .interface::<_, ManagerIface>(MANAGER_PATH)
            .await
        else {
            continue;
        };
        let emitter = iface.signal_emitter();
        let result = match event {
            StateEvent::Lifecycle(_) => iface.get().await.state_changed(emitter).await,
            StateEvent::Reloaded => {
                if let Err(e) = published.sync(&shared.manager).await {
                    tracing::warn!(error = %e, "cannot update plugin objects");
                }
                let manager = iface.get().await;
                match manager.last_reload_error_changed(emitter).await {
                    Ok(()) => manager.api_address_changed(emitter).await,
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot emit D-Bus property change");
        }
    }
}

/// Adds objects for new plugins and removes those of plugins that went away. The
/// ObjectManager at the manager path announces both (InterfacesAdded/Removed).
pub async fn sync(
    conn: &Connection,
    manager: &Manager,
    authority: &Arc<Authority>,
    served: &mut BTreeSet<String>,
) -> zbus::Result<()> {
    let now: BTreeSet<String> = manager.names().into_iter().collect();
    for gone in served.difference(&now) {
        conn.object_server()
            .remove::<PluginIface, _>(plugin_path(gone))
            .await?;
    }
    for new in now.difference(served) {
        let iface = PluginIface {
            manager: manager.clone(),
            name: new.clone(),
            authority: Arc::clone(authority),
        };
        conn.object_server().at(plugin_path(new), iface).await?;
    }
    *served = now;
    Ok(())
}

/// Announces a job's changes: its properties, and `Finished` once it ended.
async fn job_changed(conn: &Connection, id: u64, finished: bool) -> zbus::Result<()> {
    let Ok(job) = conn
        .object_server()
        .interface::<_, JobIface>(job_path(id))
        .await
    else {
        return Ok(());
    };
    let iface = job.get().await;
    let emitter = job.signal_emitter();
    iface.progress_changed(emitter).await?;
    iface.status_text_changed(emitter).await?;
    if finished {
        iface.state_changed(emitter).await?;
        iface.output_invalidate(emitter).await?;
        iface.error_invalidate(emitter).await?;
        iface.error_name_changed(emitter).await?;
        iface.finished_usec_changed(emitter).await?;
        let state = iface.job.view().state;
        JobIface::finished(emitter, state.as_str()).await?;
    }
    Ok(())
}

async fn plugin_ref(conn: &Connection, name: &str) -> Option<InterfaceRef<PluginIface>> {
    conn.object_server()
        .interface::<_, PluginIface>(plugin_path(name))
        .await
        .ok()
}

/// Emits the signal (and property changes) for one event.
pub async fn publish(conn: &Connection, manager_core: &Manager, event: &Event) -> zbus::Result<()> {
    let manager = match conn
        .object_server()
        .interface::<_, ManagerIface>(MANAGER_PATH)
        .await
    {
        Ok(manager) => manager,
        // Detached: the daemon is stopping, and the events of its last moments (jobs
        // cancelled, services stopped) have no object left to be signalled from.
        Err(zbus::Error::InterfaceNotFound) => return Ok(()),
        Err(e) => return Err(e),
    };
    let emitter = manager.signal_emitter();
    match event {
        Event::PluginStateChanged {
            name,
            enabled,
            loaded,
        } => {
            ManagerIface::plugin_state_changed(emitter, name, *enabled, *loaded).await?;
            manager.get().await.enabled_count_changed(emitter).await?;
            if let Some(p) = plugin_ref(conn, name).await {
                let iface = p.get().await;
                iface.enabled_changed(p.signal_emitter()).await?;
                iface.loaded_changed(p.signal_emitter()).await?;
                iface.error_changed(p.signal_emitter()).await?;
            }
        }
        Event::PluginFailed { name, error } => {
            ManagerIface::plugin_failed(emitter, name, error).await?;
            if let Some(p) = plugin_ref(conn, name).await {
                let iface = p.get().await;
                iface.errors_changed(p.signal_emitter()).await?;
                iface.timeouts_changed(p.signal_emitter()).await?;
                iface.last_error_changed(p.signal_emitter()).await?;
            }
        }
        Event::ServiceStateChanged { name, state } => {
            let detail = match state {
                ServiceState::Restarting { reason, .. } => reason.as_str(),
                _ => "",
            };
            ManagerIface::service_state_changed(emitter, name, state.as_str(), detail).await?;
            if let Some(p) = plugin_ref(conn, name).await {
                p.get()
                    .await
                    .service_state_changed(p.signal_emitter())
                    .await?;
            }
        }
        Event::ConfigReloaded { success, message } => {
            ManagerIface::config_reloaded(emitter, *success, message).await?;
            let iface = manager.get().await;
            iface.plugin_count_changed(emitter).await?;
            iface.enabled_count_changed(emitter).await?;
            iface.failed_count_changed(emitter).await?;
        }
        Event::PluginAdded { .. } | Event::PluginRemoved { .. } => {
            let iface = manager.get().await;
            iface.plugin_count_changed(emitter).await?;
            iface.failed_count_changed(emitter).await?;
        }
        Event::PluginEvent {
            plugin,
            event,
            payload,
        } => ManagerIface::plugin_event(emitter, plugin, event, payload).await?,
        Event::JobAdded { id } => {
            let authority = Arc::clone(&manager.get().await.authority);
            super::job_iface::publish_job(conn, manager_core, &authority, *id).await?;
        }
        Event::JobChanged { id, finished } => job_changed(conn, *id, *finished).await?,
        Event::JobRemoved { id } => {
            conn.object_server()
                .remove::<JobIface, _>(job_path(*id))
                .await?;
        }
        _ => {}
    }
    Ok(())
}

/// How often the job objects are checked against the job table, whatever the events
/// said.
const JOB_SWEEP: std::time::Duration = std::time::Duration::from_secs(2);

/// The job objects on the bus, kept equal to the manager's job table by sweeps: a job
/// the table forgot loses its object, a job it knows gets one, even when the events
/// that would have said so were lost to a lagging forwarder.
#[derive(Debug, Default)]
pub(crate) struct JobObjects {
    /// Jobs known at the last sweep.
    watching: BTreeSet<u64>,
    /// Every job numbered below this was looked at by a sweep.
    swept_below: u64,
}

impl JobObjects {
    /// What a sweep changes, given the jobs `known` now and the next job number: the
    /// jobs whose objects go, and those whose objects come. Numbers are never reused,
    /// so a job gone is gone for good, and each sweep looks only at jobs new since the
    /// last one and those it was watching.
    pub(crate) fn plan(&mut self, known: &BTreeSet<u64>, next: u64) -> (Vec<u64>, Vec<u64>) {
        let candidates: BTreeSet<u64> = self
            .watching
            .iter()
            .copied()
            .chain(self.swept_below.max(1)..next)
            .collect();
        let gone = candidates
            .iter()
            .filter(|id| !known.contains(id))
            .copied()
            .collect();
        let new = known
            .iter()
            .filter(|id| !self.watching.contains(id))
            .copied()
            .collect();
        self.watching = known.clone();
        self.swept_below = next;
        (gone, new)
    }

    /// Removes the objects of forgotten jobs and serves those of known ones.
    async fn sweep(&mut self, conn: &Connection, manager: &Manager, authority: &Arc<Authority>) {
        let next = manager.jobs().next_id();
        let known: BTreeSet<u64> = manager.jobs().list().iter().map(|j| j.id()).collect();
        let (gone, new) = self.plan(&known, next);
        for id in gone {
            let _ = conn
                .object_server()
                .remove::<JobIface, _>(job_path(id))
                .await;
        }
        for id in new {
            if let Err(e) = super::job_iface::publish_job(conn, manager, authority, id).await {
                tracing::debug!(job = id, error = %e, "cannot serve a job object");
            }
        }
    }
}

/// Forwards events until the channel closes, and sweeps the job objects every
/// [`JOB_SWEEP`] and whenever the forwarder lagged (the events it missed may have
/// been a job's removal). A slow consumer never blocks the manager.
pub async fn forward(conn: Connection, manager: Manager, mut events: broadcast::Receiver<Event>) {
    let mut jobs = JobObjects::default();
    let mut sweep = tokio::time::interval(JOB_SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(event) => {
                    if let Err(e) = publish(&conn, &manager, &event).await {
                        tracing::warn!(error = %e, "cannot emit D-Bus signal");
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "event forwarding lagged; some signals were not sent"
                    );
                    if let Some(authority) = authority_of(&conn).await {
                        jobs.sweep(&conn, &manager, &authority).await;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = sweep.tick() => {
                if let Some(authority) = authority_of(&conn).await {
                    jobs.sweep(&conn, &manager, &authority).await;
                }
            }
        }
    }
}

/// The authority the manager object was served with (None once it is detached).
async fn authority_of(conn: &Connection) -> Option<Arc<Authority>> {
    let manager = conn
        .object_server()
        .interface::<_, ManagerIface>(MANAGER_PATH)
        .await
        .ok()?;
    let authority = Arc::clone(&manager.get().await.authority);
    Some(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_remove_what_the_table_forgot_and_serve_what_it_knows() {
        let mut objects = JobObjects::default();
        let set = |ids: &[u64]| ids.iter().copied().collect::<BTreeSet<u64>>();
        // Jobs 1..=5 started; 2 and 4 forgotten already (their removals were missed).
        let (gone, new) = objects.plan(&set(&[1, 3, 5]), 6);
        assert_eq!((gone, new), (vec![2, 4], vec![1, 3, 5]));
        // Later: 1 and 5 forgotten, 6..=8 started and 7 forgotten.
        let (gone, new) = objects.plan(&set(&[3, 6, 8]), 9);
        assert_eq!((gone, new), (vec![1, 5, 7], vec![6, 8]));
        // Nothing new: nothing to do.
        let (gone, new) = objects.plan(&set(&[3, 6, 8]), 9);
        assert!(gone.is_empty() && new.is_empty());
    }
}
