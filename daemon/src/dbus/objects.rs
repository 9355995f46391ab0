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

/// Forwards events until the channel closes. A slow consumer that lagged is told so in
/// the log; it never blocks the manager.
pub async fn forward(conn: Connection, manager: Manager, mut events: broadcast::Receiver<Event>) {
    loop {
        match events.recv().await {
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
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}
