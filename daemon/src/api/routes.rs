//! The route handlers: thin shims over the core manager.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use dynplug_core::{Change, PluginInfo, PluginStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::envelope::{ok, ApiError, Envelope, ErrorEnvelope, RunRefusals};
use crate::state::{Lifecycle, Shared};

/// One plugin, as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginView {
    /// Name (for a file that failed to load: its file name).
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: String,
    /// Library file.
    pub path: String,
    /// Enabled.
    pub enabled: bool,
    /// Instance created and usable.
    pub loaded: bool,
    /// `loaded`, `pending` (lazy) or `failed`.
    pub state: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// ABI version the plugin declared.
    pub abi_version: u32,
    /// Service state (`stopped`, `running`, `restarting`) for service plugins.
    pub service_state: Option<String>,
    /// Call timeout in milliseconds.
    pub timeout_ms: u64,
    /// Calls made.
    pub calls: u64,
    /// Calls failed.
    pub errors: u64,
    /// Calls timed out.
    pub timeouts: u64,
    /// Last failure message.
    pub last_error: Option<String>,
    /// `in-process` or `process`.
    pub isolation: String,
    /// How calls are made: `inline` (proven fast), `threads` or `workers`.
    pub call_path: String,
    /// Worker processes alive (isolated plugins).
    pub workers: Option<usize>,
    /// Worker crashes so far (isolated plugins).
    pub worker_crashes: Option<u64>,
    /// Whether the plugin is quarantined after repeated crashes.
    pub quarantined: bool,
    /// What the plugin runs under, by layer (identity, process_tree, filesystem,
    /// syscalls, network): `enforced: ...`, `off (...)`, `unavailable: <why>`.
    pub sandbox: std::collections::BTreeMap<String, String>,
    /// The JSON Schema its `settings` must follow, if it declares one (from its
    /// metadata section).
    #[schema(value_type = Option<Object>)]
    pub settings_schema: Option<serde_json::Value>,
    /// What checking its signature found (`verified (key NAME)`, `unsigned (...)`,
    /// `bad signature: ...`, `not checked (...)`); empty for a file that failed.
    pub signature: String,
    /// For a WebAssembly plugin: traps, memory, compile time, artifact.
    pub wasm: Option<WasmView>,
}

/// What the WebAssembly tier reports about a plugin.
#[derive(Debug, Serialize, ToSchema)]
pub struct WasmView {
    /// Calls that trapped or were stopped at a limit.
    pub traps: u64,
    /// The most memory one of its instances had, in bytes.
    pub peak_memory_bytes: u64,
    /// The memory limit of each instance, in bytes.
    pub memory_limit_bytes: u64,
    /// How long compiling (or loading the precompiled artifact) took, in µs.
    pub compile_us: u64,
    /// Where its code came from (`compiled and stored`, `precompiled artifact`,
    /// `recompiled (WHY)`, `compiled`; empty before it is loaded).
    pub artifact: String,
}

impl From<PluginInfo> for PluginView {
    fn from(p: PluginInfo) -> Self {
        let state = match &p.status {
            PluginStatus::Loaded => "loaded",
            PluginStatus::Pending => "pending",
            PluginStatus::Failed(_) => "failed",
        };
        let sandbox = p.sandbox().into_iter().collect();
        PluginView {
            loaded: p.loaded(),
            error: p.error().map(str::to_owned),
            state: state.to_owned(),
            service_state: p.service.then(|| p.service_state.as_str().to_owned()),
            timeout_ms: u64::try_from(p.timeout.as_millis()).unwrap_or(u64::MAX),
            name: p.name,
            version: p.version,
            description: p.description,
            path: p.path.display().to_string(),
            enabled: p.enabled,
            abi_version: p.abi_version,
            calls: p.stats.calls,
            errors: p.stats.errors,
            timeouts: p.stats.timeouts,
            last_error: p.stats.last_error,
            isolation: match p.isolation {
                dynplug_core::config::Isolation::InProcess => "in-process".into(),
                dynplug_core::config::Isolation::Process => "process".into(),
                dynplug_core::config::Isolation::Wasm => "wasm".into(),
            },
            call_path: p.call_path.to_owned(),
            workers: p.workers.as_ref().map(|w| w.running),
            worker_crashes: p.workers.as_ref().map(|w| w.crashes),
            quarantined: p.workers.as_ref().is_some_and(|w| w.quarantined.is_some())
                || p.wasm.as_ref().is_some_and(|w| w.quarantined),
            sandbox,
            settings_schema: p
                .settings_schema
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok()),
            signature: p.signature,
            wasm: p.wasm.map(|w| WasmView {
                traps: w.traps,
                peak_memory_bytes: w.peak_memory,
                memory_limit_bytes: w.memory_limit,
                compile_us: w.compile_us,
                artifact: w.artifact,
            }),
        }
    }
}

/// Body of `POST /plugins/{name}/execute` as JSON.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// The input text.
    pub input: String,
}

/// Result of an execute.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecuteResponse {
    /// The plugin.
    pub plugin: String,
    /// Its output.
    pub output: String,
    /// Time the call took, in whole milliseconds.
    pub duration_ms: u64,
    /// The same, in microseconds.
    pub duration_us: u64,
}

/// Result of enable/disable.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToggleResponse {
    /// The plugin.
    pub name: String,
    /// Enabled now.
    pub enabled: bool,
    /// Whether this request changed anything.
    pub changed: bool,
}

/// Liveness and readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when running with no failed plugin, `degraded` with failures, `stopping`.
    pub status: String,
    /// Daemon state: starting, running, reloading, stopping.
    pub state: String,
    /// Plugins loaded.
    pub plugins: usize,
    /// Plugins enabled.
    pub enabled: usize,
    /// Plugins or files that failed.
    pub failed: usize,
    /// Seconds since start.
    pub uptime_seconds: u64,
}

/// Lists every plugin (and every file that failed to load).
#[utoipa::path(get, path = "/plugins", tag = "plugins",
    responses((status = 200, description = "all plugins", body = Envelope<Vec<PluginView>>)))]
pub async fn list(State(control): State<Arc<Shared>>) -> Envelope<Vec<PluginView>> {
    ok(control
        .manager
        .list()
        .into_iter()
        .map(PluginView::from)
        .collect())
}

/// One plugin.
#[utoipa::path(get, path = "/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "plugin name")),
    responses(
        (status = 200, description = "the plugin", body = Envelope<PluginView>),
        (status = 404, description = "no such plugin", body = ErrorEnvelope)))]
pub async fn info(
    State(control): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Envelope<PluginView>, ApiError> {
    Ok(ok(control.manager.info(&name)?.into()))
}

/// What an execute request's body is, from its `Content-Type` (read in place: no copy
/// of the request's headers per call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json`: `{"input": ...}`.
    Json,
    /// `text/plain`: the input itself.
    Text,
    /// Anything else (refused with 415).
    Other,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for BodyKind {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let essence = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        Ok(if essence.eq_ignore_ascii_case("application/json") {
            BodyKind::Json
        } else if essence.eq_ignore_ascii_case("text/plain") {
            BodyKind::Text
        } else {
            BodyKind::Other
        })
    }
}

/// The input of an execute request: JSON `{"input": ...}` or the raw text/plain body.
pub fn parse_input(kind: BodyKind, body: Bytes) -> Result<String, ApiError> {
    match kind {
        BodyKind::Json => serde_json::from_slice::<ExecuteRequest>(&body)
            .map(|r| r.input)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("invalid JSON body: {e}"),
                )
            }),
        BodyKind::Text => String::from_utf8(body.to_vec()).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "text/plain body is not valid UTF-8",
            )
        }),
        BodyKind::Other => Err(ApiError::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)),
    }
}

/// Runs a plugin. Body: `{"input": "..."}` (application/json) or the raw input (text/plain).
#[utoipa::path(post, path = "/plugins/{name}/execute", tag = "plugins",
    params(("name" = String, Path, description = "plugin name")),
    request_body(content = ExecuteRequest, description = "or a text/plain body holding the input"),
    responses(
        (status = 200, description = "the output", body = Envelope<ExecuteResponse>),
        RunRefusals,
        (status = 422, description = "the plugin answered with an error (it refused the input)", body = ErrorEnvelope),
        (status = 500, description = "the plugin panicked or answered invalid UTF-8", body = ErrorEnvelope),
        (status = 502, description = "an isolated plugin's worker crashed or broke the protocol, or the answer was too large", body = ErrorEnvelope),
        (status = 504, description = "the plugin timed out", body = ErrorEnvelope)),
    security((), ("bearer" = [])))]
pub async fn execute(
    State(control): State<Arc<Shared>>,
    Path(name): Path<String>,
    kind: BodyKind,
    body: Bytes,
) -> Result<Envelope<ExecuteResponse>, ApiError> {
    let input = parse_input(kind, body)?;
    let began = Instant::now();
    let output = control.manager.execute(&name, input).await?;
    let elapsed = began.elapsed();
    Ok(ok(ExecuteResponse {
        plugin: name,
        output,
        duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
    }))
}

async fn toggle(
    control: &Shared,
    name: String,
    on: bool,
) -> Result<Envelope<ToggleResponse>, ApiError> {
    let change = if on {
        control.manager.enable(&name).await?
    } else {
        control.manager.disable(&name).await?
    };
    Ok(ok(ToggleResponse {
        name,
        enabled: on,
        changed: change == Change::Changed,
    }))
}

/// Enables a plugin (persisted).
#[utoipa::path(put, path = "/plugins/{name}/enable", tag = "plugins",
    params(("name" = String, Path, description = "plugin name")),
    responses(
        (status = 200, description = "enabled", body = Envelope<ToggleResponse>),
        (status = 401, description = "token required", body = ErrorEnvelope),
        (status = 403, description = "token invalid", body = ErrorEnvelope),
        (status = 404, description = "no such plugin", body = ErrorEnvelope),
        (status = 503, description = "plugin unusable", body = ErrorEnvelope)),
    security((), ("bearer" = [])))]
pub async fn enable(
    State(control): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Envelope<ToggleResponse>, ApiError> {
    toggle(&control, name, true).await
}

/// Disables a plugin (persisted).
#[utoipa::path(put, path = "/plugins/{name}/disable", tag = "plugins",
    params(("name" = String, Path, description = "plugin name")),
    responses(
        (status = 200, description = "disabled", body = Envelope<ToggleResponse>),
        (status = 401, description = "token required", body = ErrorEnvelope),
        (status = 403, description = "token invalid", body = ErrorEnvelope),
        (status = 404, description = "no such plugin", body = ErrorEnvelope)),
    security((), ("bearer" = [])))]
pub async fn disable(
    State(control): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Envelope<ToggleResponse>, ApiError> {
    toggle(&control, name, false).await
}

/// Liveness plus a readiness view. 200 while serving, 503 while stopping.
#[utoipa::path(get, path = "/health", tag = "daemon",
    responses(
        (status = 200, description = "serving", body = Envelope<Health>),
        (status = 503, description = "stopping", body = Envelope<Health>)))]
pub async fn health(State(control): State<Arc<Shared>>) -> impl IntoResponse {
    let s = control.manager.summary();
    let lifecycle = control.lifecycle();
    let state = lifecycle.as_str();
    let stopping = lifecycle == Lifecycle::Stopping;
    let status = match (stopping, s.failed) {
        (true, _) => "stopping",
        (false, 0) => "ok",
        _ => "degraded",
    };
    let code = if stopping {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = ok(Health {
        status: status.to_owned(),
        state: state.to_owned(),
        plugins: s.plugins,
        enabled: s.enabled,
        failed: s.failed,
        uptime_seconds: control.uptime().as_secs(),
    });
    (code, body)
}

/// Prometheus metrics (text format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "daemon",
    responses((status = 200, description = "metrics", content_type = "text/plain; version=0.0.4", body = String)))]
pub async fn metrics(State(control): State<Arc<Shared>>) -> Result<impl IntoResponse, ApiError> {
    let text = super::metrics::render(&control).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "cannot encode metrics",
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "daemon",
    responses((status = 200, description = "the OpenAPI 3 document", content_type = "application/json", body = Object)))]
pub async fn openapi() -> impl IntoResponse {
    axum::Json(super::openapi::document())
}
