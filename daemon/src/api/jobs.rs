//! Jobs and events over HTTP: `POST /plugins/{name}/jobs`, `GET /jobs`,
//! `GET /jobs/{id}`, `DELETE /jobs/{id}`, and `GET /events` (server-sent events).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Extension;
use dynplug_core::error::ManagerError;
use dynplug_core::events::Event;
use dynplug_core::jobs::{JobOwner, JobView};
use futures_util::Stream;
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast;
use utoipa::ToSchema;

use super::auth::RestCaller;
use super::envelope::{ok, status_of, ApiError, Envelope, ErrorEnvelope, RunRefusals};
use super::routes::{parse_input, BodyKind};
use super::streams::{EventStreams, Refusal, StreamClient};
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

impl JobInfo {
    /// What a caller without a token sees of a job: where it is, never what the plugin
    /// said (output, error text, status text).
    fn metadata_only(v: JobView) -> Self {
        JobInfo {
            output: None,
            error: None,
            status_text: String::new(),
            ..JobInfo::from(v)
        }
    }

    /// The job as `caller` may see it, if they may see it at all: a token sees the jobs
    /// started with it, whole; without tokens, the jobs started over this API, without
    /// what the plugin said. Jobs of D-Bus users are never shown here.
    fn for_caller(caller: &RestCaller, v: JobView) -> Option<Self> {
        if v.owner != caller.owner || !caller.sees_plugin(&v.plugin) {
            return None;
        }
        Some(if caller.has_token() {
            JobInfo::from(v)
        } else {
            JobInfo::metadata_only(v)
        })
    }
}

/// The caller the token layer found, or the anonymous one (no tokens configured).
pub(super) fn caller_of(caller: Option<Extension<RestCaller>>) -> RestCaller {
    caller.map_or_else(RestCaller::anonymous, |Extension(c)| c)
}

/// Job `id` as `caller` sees it; 404 for a job they may not see, as for one that does
/// not exist.
fn visible(control: &Shared, caller: &RestCaller, id: &str) -> Result<(u64, JobInfo), ApiError> {
    let id = job_id(id)?;
    let job = control.manager.jobs().get(id)?;
    // Exactly the answer for a job that does not exist: nothing tells the two apart.
    JobInfo::for_caller(caller, job.view())
        .map(|info| (id, info))
        .ok_or_else(|| ManagerError::JobNotFound(id).into())
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
        RunRefusals),
    security((), ("bearer" = [])))]
pub async fn start(
    State(control): State<Arc<Shared>>,
    caller: Option<Extension<RestCaller>>,
    Path(name): Path<String>,
    kind: BodyKind,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let caller = caller_of(caller);
    let input = parse_input(kind, body)?;
    let job = control.manager.start_job(&name, input, caller.owner)?;
    let location = format!("/jobs/{}", job.id());
    let info = JobInfo::for_caller(&caller, job.view())
        .unwrap_or_else(|| JobInfo::metadata_only(job.view()));
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        ok(info),
    ))
}

/// Every job still known, oldest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs",
    responses((status = 200, description = "the jobs", body = Envelope<Vec<JobInfo>>),
        (status = 401, description = "token required", body = ErrorEnvelope)),
    security((), ("bearer" = [])))]
pub async fn list(
    State(control): State<Arc<Shared>>,
    caller: Option<Extension<RestCaller>>,
) -> Envelope<Vec<JobInfo>> {
    let caller = caller_of(caller);
    ok(control
        .manager
        .jobs()
        .list()
        .iter()
        .filter_map(|j| JobInfo::for_caller(&caller, j.view()))
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
    caller: Option<Extension<RestCaller>>,
    Path(id): Path<String>,
) -> Result<Envelope<JobInfo>, ApiError> {
    let (_, info) = visible(&control, &caller_of(caller), &id)?;
    Ok(ok(info))
}

/// Cancels a job started over this API and forgets it (jobs started over D-Bus belong to
/// their user): from then on the job is 404; a running one keeps its place in the
/// job limits until it has ended. Answers with the job as it was.
#[utoipa::path(delete, path = "/jobs/{id}", tag = "jobs",
    params(("id" = u64, Path, description = "job number")),
    responses((status = 202, description = "cancelled (if it was running) and forgotten; the job as it was", body = Envelope<JobInfo>),
        (status = 401, description = "token required", body = ErrorEnvelope),
        (status = 403, description = "the job was started over D-Bus by a user", body = ErrorEnvelope),
        (status = 404, description = "no such job", body = ErrorEnvelope)),
    security((), ("bearer" = [])))]
pub async fn cancel(
    State(control): State<Arc<Shared>>,
    caller: Option<Extension<RestCaller>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let caller = caller_of(caller);
    let (id, _) = visible(&control, &caller, &id)?;
    let job = control.manager.jobs().forget(id, caller.owner, false)?;
    let info = JobInfo::for_caller(&caller, job.view())
        .unwrap_or_else(|| JobInfo::metadata_only(job.view()));
    Ok((StatusCode::ACCEPTED, ok(info)))
}

/// The server-sent event for a manager event, if it is one `caller` sees: jobs as the
/// job routes show them to that caller; plugin events and changes only of the plugins
/// their token may run.
fn sse_event(control: &Shared, caller: &RestCaller, event: Event) -> Option<SseEvent> {
    let plugin_of = |event: &Event| match event {
        Event::PluginEvent { plugin, .. } => Some(plugin.clone()),
        Event::PluginStateChanged { name, .. }
        | Event::PluginAdded { name }
        | Event::PluginRemoved { name }
        | Event::PluginFailed { name, .. }
        | Event::ServiceStateChanged { name, .. } => Some(name.clone()),
        _ => None,
    };
    if plugin_of(&event).is_some_and(|p| !caller.sees_plugin(&p)) {
        return None;
    }
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
            let info = JobInfo::for_caller(caller, job.view())?;
            ("job", serde_json::to_value(info).ok()?)
        }
        // The job is gone: whose it was is no longer known here, and its number says
        // nothing of what it did.
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
/// `plugin_removed`, `plugin_failed`, `service_state`, `config_reloaded`. It opens with
/// the comment `: subscribed`; it ends when the daemon stops, and after a last `lagged`
/// event (with the number of events missed) for a reader too slow to keep up. Streams
/// have a cap of their own (`server.max_event_streams`, at most half the connections)
/// and a share per token or address (`server.max_event_streams_per_client`).
#[utoipa::path(get, path = "/events", tag = "jobs",
    responses((status = 200, description = "an endless text/event-stream", content_type = "text/event-stream", body = String),
        (status = 401, description = "token required", body = ErrorEnvelope),
        (status = 403, description = "token invalid", body = ErrorEnvelope),
        (status = 429, description = "as many event streams open as allowed, in all or for this client (code too_many_streams)", body = ErrorEnvelope)),
    security((), ("bearer" = [])))]
pub async fn events(
    State(control): State<Arc<Shared>>,
    Extension(streams): Extension<Arc<EventStreams>>,
    caller: Option<Extension<RestCaller>>,
    peer: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, axum::response::Response> {
    let caller = caller_of(caller);
    let client = match (caller.owner, peer) {
        (JobOwner::Rest(Some(token)), _) => StreamClient::Token(token),
        (_, Some(Extension(ConnectInfo(addr)))) => StreamClient::Address(addr.ip()),
        _ => StreamClient::Unknown,
    };
    let place = streams.admit(client).map_err(|refusal| {
        let message = match refusal {
            Refusal::Full(n) => {
                format!("{n} event streams are open, as many as allowed (server.max_event_streams)")
            }
            Refusal::ClientFull(n) => format!(
                "you have {n} event streams open, as many as one client may \
                 (server.max_event_streams_per_client)"
            ),
        };
        // Closed once answered: a refused subscriber keeps no connection either.
        let mut refused = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_streams", message)
            .into_response();
        refused.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        refused
    })?;
    let events = control.manager.subscribe();
    let lifecycle = control.subscribe();
    // The place is held by the stream: it is freed when the stream ends or is dropped.
    let stream = futures_util::stream::unfold(
        (control, caller, events, lifecycle, Some(place)),
        |(control, caller, mut events, mut lifecycle, place)| async move {
            place.as_ref()?;
            loop {
                tokio::select! {
                    received = events.recv() => match received {
                        Ok(event) => {
                            if let Some(sse) = sse_event(&control, &caller, event) {
                                return Some((Ok(sse), (control, caller, events, lifecycle, place)));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            // Too slow to keep up: told so, then dropped (no backlog
                            // beyond the channel's own is kept for anyone).
                            let sse = SseEvent::default().event("lagged").data(n.to_string());
                            return Some((Ok(sse), (control, caller, events, lifecycle, None)));
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
    Ok(Sse::new(futures_util::StreamExt::chain(opened, stream)).keep_alive(KeepAlive::default()))
}
