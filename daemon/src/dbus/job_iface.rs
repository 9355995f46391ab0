//! `org.dynplug.Job` at `/org/dynplug/Manager/jobs/N`: one object per job, reading the
//! job's state from the core's job table (the contract is `dynplug_dbus::JobProxy`).

use std::sync::Arc;

use dynplug_core::jobs::{Job, JobOwner};
use dynplug_core::Manager;
use dynplug_dbus::{job_path, DynplugError};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection, DBusError};

use super::authority::{Action, Authority, Caller, Request};
use super::errors::{dbus_error, OrDbus};

/// One job object.
pub struct JobIface {
    pub(crate) manager: Manager,
    pub(crate) job: Arc<Job>,
    pub(crate) authority: Arc<Authority>,
}

impl JobIface {
    /// Whether the caller of the message with `header` may read what the job produced:
    /// the user who started it, or root. Without a message (a signal being built) no one.
    async fn readable_by(
        &self,
        conn: &Connection,
        header: Option<Header<'_>>,
    ) -> Result<(), DynplugError> {
        let denied = || {
            DynplugError::AccessDenied(
                "only the user who started the job, or root, may read its output".into(),
            )
        };
        let header = header.ok_or_else(denied)?;
        let uid = Caller::new(conn, &header)
            .uid()
            .await
            .map_err(|_| denied())?;
        if uid == 0 || self.job.view().owner == JobOwner::Uid(uid) {
            Ok(())
        } else {
            Err(denied())
        }
    }
}

/// The server side of `org.dynplug.Job`.
#[interface(name = "org.dynplug.Job")]
impl JobIface {
    /// Asks the job to stop. The user who started it may; anyone else needs
    /// `org.dynplug.jobs.cancel-any` (root always has it; without polkit, root alone).
    async fn cancel(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), DynplugError> {
        let caller = Caller::new(conn, &header);
        let uid = caller.uid().await?;
        let view = self.job.view();
        let own = view.owner == JobOwner::Uid(uid);
        if !own {
            let request = Request {
                action: Action::CancelAny,
                verb: "cancel",
                plugin: Some(&view.plugin),
            };
            self.authority.check(&caller, request).await?;
        }
        self.manager
            .jobs()
            .cancel(self.job.id(), JobOwner::Uid(uid), !own)
            .or_dbus()
            .map(drop)
    }

    /// The plugin the job calls.
    #[zbus(property(emits_changed_signal = "const"))]
    fn plugin(&self) -> String {
        self.job.view().plugin
    }

    /// running, succeeded, failed or cancelled.
    #[zbus(property)]
    fn state(&self) -> String {
        self.job.view().state.as_str().to_owned()
    }

    /// 0..1, or -1 while unknown.
    #[zbus(property)]
    fn progress(&self) -> f64 {
        self.job.view().progress
    }

    /// The plugin's last status text.
    #[zbus(property)]
    fn status_text(&self) -> String {
        self.job.view().status_text
    }

    /// The output, once the job succeeded. Readable by the user who started the job,
    /// or root; changes are signalled without the value.
    #[zbus(property(emits_changed_signal = "invalidates"))]
    async fn output(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Option<Header<'_>>,
    ) -> Result<String, DynplugError> {
        self.readable_by(conn, header).await?;
        Ok(self.job.view().output)
    }

    /// Why it failed or was cancelled (it may quote the plugin). Readable by the user
    /// who started the job, or root; changes are signalled without the value.
    #[zbus(property(emits_changed_signal = "invalidates"))]
    async fn error(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Option<Header<'_>>,
    ) -> Result<String, DynplugError> {
        self.readable_by(conn, header).await?;
        Ok(self
            .job
            .view()
            .error
            .map(|e| e.to_string())
            .unwrap_or_default())
    }

    /// The D-Bus error name of the failure (empty otherwise).
    #[zbus(property)]
    fn error_name(&self) -> String {
        self.job
            .view()
            .error
            .map(|e| dbus_error(e).name().to_string())
            .unwrap_or_default()
    }

    /// When it started, µs since the epoch.
    #[zbus(property(emits_changed_signal = "const"))]
    fn started_usec(&self) -> u64 {
        self.job.view().started_usec
    }

    /// When it ended, µs since the epoch (0 while running).
    #[zbus(property)]
    fn finished_usec(&self) -> u64 {
        self.job.view().finished_usec
    }

    /// The job ended in `state`.
    #[zbus(signal)]
    pub(crate) async fn finished(emitter: &SignalEmitter<'_>, state: &str) -> zbus::Result<()>;
}

/// Serves job `id` if the manager still knows it and it is not served yet.
pub async fn publish_job(
    conn: &Connection,
    manager: &Manager,
    authority: &Arc<Authority>,
    id: u64,
) -> zbus::Result<()> {
    if let Ok(job) = manager.jobs().get(id) {
        let iface = JobIface {
            manager: manager.clone(),
            job,
            authority: Arc::clone(authority),
        };
        conn.object_server().at(job_path(id), iface).await?;
    }
    Ok(())
}
