//! Jobs and events over HTTP: `POST /plugins/{name}/jobs`, `GET /jobs`,
//! `GET /jobs/{id}`, `DELETE /jobs/{id}`, and `GET /events` (server-sent events).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use dynplug_core::events::Event;
use dynplug_core::jobs::{JobOwner, JobView};
use futures_util::Stream;
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast;
use utoipa::ToSchema;

use super::envelope::{ok, status_of, ApiError, Envelope, ErrorEnvelope};
use super::routes::{parse_input, BodyKind};
use crate::state::{Lifecycle, Shared, StateEvent};

/// A job, as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobInfo {
    /// The job's number (also its D-Bus object `/org/dynplug/Manager/jobs/ID`).
    pub id: u64,
    /// The plugin it calls.
    pub plugin: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// 0..1, or -1 while the plugin has not said.
    pub progress: f64,
    /// The plugin's last status text.
    pub status_text: String,
    /// The output, once it succeeded.
    pub output: Option<String>,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Machine-readable failure, as in error envelopes (`timeout`, `cancelled`, ...).
    pub code: Option<String>,
    /// When it started, µs since the epoch.
    pub started_usec: u64,
    /// When it ended, µs since the epoch (absent while running).
    pub finished_usec: Option<u64>,
}

impl From<JobView> for JobInfo {
    fn from(v: JobView) -> Self {
        let failure = v.error.map(|e| {
            let code = status_of(&e).map_or("internal", |(_, code)| code);
            (e.to_string(), code)
        });
        let ended = v.finished_usec != 0;
        JobInfo {
            id: v.id,
            plugin: v.plugin,
            state: v.state.as_str().to_owned(),
            progress: v.progress,
            status_text: v.status_text,
            output: (ended && failure.is_none()).then_some(v.output),
            code: failure.as_ref().map(|(_, code)| (*code).to_owned()),
            error: failure.map(|(message, _)| message),
            started_usec: v.started_usec,
            finished_usec: ended.then_some(v.finished_usec),
        }
    }
}

fn job_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no job `{id}`")))
}

/// Starts a job: the same body as execute; answers 202 with the job and its
/// `Location` at once.
#[utoipa::path(post, path = "/plugins/{name}/jobs", tag = "jobs",
    params(("name" = String, Path, description = "plugin name")),
    request_body(content = super::routes::ExecuteRequest, description = "or a text/plain body holding the input"),
    responses(
        (status = 202, description = "started", body = Envelope<JobInfo>,
            headers(("Location" = String, description = "/jobs/{id}"))),
        (status = 400, description = "malformed body", body = ErrorEnvelope),
        (status = 401, description = "token required", body = ErrorEnvelope),
        (status = 403, description = "token invalid", body = ErrorEnvelope),
        (status = 404, description = "no such plugin", body = ErrorEnvelope),
        (status = 409, description = "plugin disabled", body = ErrorEnvelope),
        (status = 413, description = "body or input too large", body = ErrorEnvelope),
        (status = 503, description = "too many jobs running (code too_many_jobs), plugin unusable or daemon stopping", body = ErrorEnvelope)),
    security((), ("bearer" = [])))]
pub async fn start(
    State(control): State<Arc<Shared>>,
    Path(name): Path<String>,
    kind: BodyKind,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let input = parse_input(kind, body)?;
    let job = control.manager.start_job(&name, input, JobOwner::Rest)?;
    let location = format!("/jobs/{}", job.id());
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        ok(JobInfo::from(job.view())),
    ))
}

/// Every job still known, oldest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs",
    responses((status = 200, description = "the jobs", body = Envelope<Vec<JobInfo>>),
        (status = 401, description = "token required", body = ErrorEnvelope)),
    security((), ("bearer" = [])))]
pub async fn list(State(control): State<Arc<Shared>>) -> Envelope<Vec<JobInfo>> {
    ok(control
        .manager
        .jobs()
        .list()
        .iter()
        .map(|j| j.view().into())
        .collect())
}

/// One job.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs",
    params(("id" = u64, Path, description = "job number")),
    responses((status = 200, description = "the job", body = Envelope<JobInfo>),
        (status = 401, description = "token required", body = ErrorEnvelope),
        (status = 404, description = "no such job (or it ended and was forgotten)", body = ErrorEnvelope)),
    security((), ("bearer" = [])))]
pub async fn get(
    State(control): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Envelope<JobInfo>, ApiError> {
    let job = control.manager.jobs().get(job_id(&id)?)?;
    Ok(ok(job.view().into()))
}

/// Cancels a job started over this API (jobs started over D-Bus belong to their user).
/// Answers with the job, still running until the plugin returns.
#[utoipa::path(delete, path = "/jobs/{id}", tag = "jobs",
    params(("id" = u64, Path, description = "job number")),
    responses((status = 202, description = "cancellation requested", body = Envelope<JobInfo>),
        (status = 401, description = "token required", body = ErrorEnvelope),
        (status = 403, description = "the job was started over D-Bus by a user", body = ErrorEnvelope),
        (status = 404, description = "no such job", body = ErrorEnvelope)),
    security((), ("bearer" = [])))]
pub async fn cancel(
    State(control): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let job = control
        .manager
        .jobs()
        .cancel(job_id(&id)?, JobOwner::Rest, false)?;
    Ok((StatusCode::ACCEPTED, ok(JobInfo::from(job.view()))))
}

/// The server-sent event for a manager event, if it is one clients see.
fn sse_event(control: &Shared, event: Event) -> Option<SseEvent> {
    let (name, data) = match event {
        Event::PluginEvent {
            plugin,
            event,
            payload,
        } => (
            "plugin_event",
            json!({"plugin": plugin, "event": event, "payload": payload}),
        ),
        Event::JobAdded { id } | Event::JobChanged { id, .. } => {
            let job = control.manager.jobs().get(id).ok()?;
            ("job", serde_json::to_value(JobInfo::from(job.view())).ok()?)
        }
        Event::JobRemoved { id } => ("job_removed", json!({ "id": id })),
        Event::PluginStateChanged {
            name,
            enabled,
            loaded,
        } => (
            "plugin_state",
            json!({"name": name, "enabled": enabled, "loaded": loaded}),
        ),
        Event::PluginAdded { name } => ("plugin_added", json!({ "name": name })),
        Event::PluginRemoved { name } => ("plugin_removed", json!({ "name": name })),
        Event::PluginFailed { name, error } => {
            ("plugin_failed", json!({"name": name, "error": error}))
        }
        Event::ServiceStateChanged { name, state } => (
            "service_state",
            json!({"name": name, "state": state.as_str(), "detail": state.to_string()}),
        ),
        Event::ConfigReloaded { success, message } => (
            "config_reloaded",
            json!({"success": success, "message": message}),
        ),
        _ => return None,
    };
    Some(SseEvent::default().event(name).data(data.to_string()))
}

/// Streams plugin events, job changes and plugin state changes as server-sent events:
/// `plugin_event`, `job`, `job_removed`, `plugin_state`, `plugin_added`,
/// `plugin_removed`, `plugin_failed`, `service_state`, `config_reloaded`, and `lagged`
/// (with the number of events a slow reader missed). It opens with the comment
/// `: subscribed`; it ends when the daemon stops.
#[utoipa::path(get, path = "/events", tag = "jobs",
    responses((status = 200, description = "an endless text/event-stream", content_type = "text/event-stream", body = String),
        (status = 401, description = "token required", body = ErrorEnvelope)),
    security((), ("bearer" = [])))]
pub async fn events(
    State(control): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let events = control.manager.subscribe();
    let lifecycle = control.subscribe();
    let stream = futures_util::stream::unfold(
        (control, events, lifecycle),
        |(control, mut events, mut lifecycle)| async move {
            loop {
                tokio::select! {
                    received = events.recv() => match received {
                        Ok(event) => {
                            if let Some(sse) = sse_event(&control, event) {
                                return Some((Ok(sse), (control, events, lifecycle)));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            let sse = SseEvent::default().event("lagged").data(n.to_string());
                            return Some((Ok(sse), (control, events, lifecycle)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    state = lifecycle.recv() => match state {
                        Ok(StateEvent::Lifecycle(Lifecycle::Stopping))
                        | Err(broadcast::error::RecvError::Closed) => return None,
                        _ => {}
                    },
                }
            }
        },
    );
    // A comment first, so the response head goes out at once: a client knows it is
    // subscribed as soon as it has the headers.
    let opened = futures_util::stream::once(std::future::ready(Ok(
        SseEvent::default().comment("subscribed")
    )));
    Sse::new(futures_util::StreamExt::chain(opened, stream)).keep_alive(KeepAlive::default())
}
