//! The JSON envelope `{"success", "data", "error"}` used by every response (the
//! original design's `ApiResponse`: `error` is a string or null; failures add a stable
//! machine-readable `code` beside it), and the one mapping from core errors to HTTP
//! statuses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dynplug_core::error::{CallError, ManagerError};
use serde::Serialize;
use utoipa::ToSchema;

/// Every response body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Whether the request succeeded.
    pub success: bool,
    /// The result (null on failure).
    pub data: Option<T>,
    /// Null: a successful response has no error (failures are [`ErrorEnvelope`]).
    pub error: Option<String>,
}

/// The body of every failed response: `data` is always null, `error` says what went
/// wrong and `code` names it for programs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Always false.
    pub success: bool,
    /// Always null.
    pub data: Option<()>,
    /// What went wrong, for people.
    pub error: String,
    /// What went wrong, for programs: a stable code such as `not_found`, `disabled`,
    /// `timeout`.
    pub code: String,
}

impl<T: Serialize> IntoResponse for Envelope<T> {
    fn into_response(self) -> Response {
        Json(self).into_response()
    }
}

/// A successful response.
pub fn ok<T: Serialize>(data: T) -> Envelope<T> {
    Envelope {
        success: true,
        data: Some(data),
        error: None,
    }
}

/// An API error: status, code and message. Internal details never reach the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The generic error for a status produced outside the handlers (framework,
    /// middleware).
    pub fn for_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::BAD_REQUEST => ("bad_request", "the request is malformed"),
            StatusCode::UNAUTHORIZED => ("unauthorized", "a bearer token is required"),
            StatusCode::FORBIDDEN => ("forbidden", "the token is not valid"),
            StatusCode::NOT_FOUND => ("not_found", "no such route"),
            StatusCode::METHOD_NOT_ALLOWED => {
                ("method_not_allowed", "method not allowed on this route")
            }
            StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                "send application/json ({\"input\": \"...\"}) or text/plain",
            ),
            StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests; retry later"),
            StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => (
                "unavailable",
                "the request took too long or the service is unavailable",
            ),
            s if s.is_client_error() => ("bad_request", "the request was refused"),
            _ => ("internal", "internal error"),
        };
        ApiError::new(status, code, message)
    }
}

/// The status and code of a core error, or `None` for an internal failure whose
/// details stay in the log.
pub fn status_of(e: &ManagerError) -> Option<(StatusCode, &'static str)> {
    Some(match e {
        ManagerError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        ManagerError::Disabled(_) => (StatusCode::CONFLICT, "disabled"),
        ManagerError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        ManagerError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        ManagerError::Call(CallError::Crashed { .. } | CallError::Protocol { .. }) => {
            (StatusCode::BAD_GATEWAY, "worker_crashed")
        }
        ManagerError::Call(CallError::OutputTooLarge { .. }) => {
            (StatusCode::BAD_GATEWAY, "output_too_large")
        }
        // The plugin answered with an error: it refused this input.
        ManagerError::Call(CallError::Failed { .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "execution_failed")
        }
        // A fault in the plugin itself.
        ManagerError::Call(
            CallError::Panicked { .. }
            | CallError::InvalidOutput { .. }
            | CallError::Trapped { .. },
        ) => (StatusCode::INTERNAL_SERVER_ERROR, "execution_failed"),
        ManagerError::InvalidArgument(_) => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_argument"),
        ManagerError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        ManagerError::Cancelled(_) => (StatusCode::CONFLICT, "cancelled"),
        ManagerError::JobNotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        ManagerError::TooManyJobs(_) => (StatusCode::SERVICE_UNAVAILABLE, "too_many_jobs"),
        ManagerError::TooManyJobsForCaller(_) => {
            (StatusCode::TOO_MANY_REQUESTS, "too_many_jobs_for_caller")
        }
        ManagerError::AccessDenied(_) => (StatusCode::FORBIDDEN, "access_denied"),
        _ => return None,
    })
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        let message = e.to_string();
        let Some((status, code)) = status_of(&e) else {
            tracing::error!(error = %message, "request failed");
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            );
        };
        ApiError::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorEnvelope {
            success: false,
            data: None,
            error: self.message,
            code: self.code.to_owned(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Gives every error response that is not already JSON (from axum itself or from a
/// tower layer: 404 route, 405, 413, 429, timeouts) the envelope, keeping its status and
/// headers (e.g. `Retry-After`).
pub async fn envelope_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.is_success() || is_json || status.is_redirection() {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let mut fresh = ApiError::for_status(status).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    for (name, value) in parts.headers.iter() {
        fresh.headers_mut().insert(name.clone(), value.clone());
    }
    fresh
}

/// The refusals every route that runs a plugin on a request body can answer, before the
/// plugin runs: one list for execute and jobs, so the document cannot miss one of them.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum RunRefusals {
    /// The body is not what the route takes.
    #[response(status = 400, description = "malformed body")]
    Malformed(ErrorEnvelope),
    /// No token.
    #[response(status = 401, description = "token required")]
    Unauthorized(ErrorEnvelope),
    /// A token that may not do this.
    #[response(
        status = 403,
        description = "token invalid, or not allowed this scope or plugin"
    )]
    Forbidden(ErrorEnvelope),
    /// No such plugin.
    #[response(status = 404, description = "no such plugin")]
    NotFound(ErrorEnvelope),
    /// The plugin is disabled.
    #[response(status = 409, description = "plugin disabled")]
    Disabled(ErrorEnvelope),
    /// Body or input too large.
    #[response(status = 413, description = "body or input too large")]
    TooLarge(ErrorEnvelope),
    /// Neither JSON nor text.
    #[response(
        status = 415,
        description = "unsupported content type (neither JSON nor text/plain)"
    )]
    UnsupportedMediaType(ErrorEnvelope),
    /// Rate limited, or (jobs) the caller's share taken.
    #[response(
        status = 429,
        description = "rate limited (code rate_limited), or the caller has as many jobs running as one may (code too_many_jobs_for_caller)"
    )]
    TooMany(ErrorEnvelope),
    /// Unusable plugin, stopping daemon, or (jobs) the table full.
    #[response(
        status = 503,
        description = "plugin unusable, daemon stopping, request timed out, or too many jobs running (code too_many_jobs)"
    )]
    Unavailable(ErrorEnvelope),
}
