//! The optional REST API (axum), sharing the D-Bus side's manager: a change made through
//! one is seen by the other at once.
//!
//! - [`router`]: the routes, wrapped in tower layers: body size limit, request timeout,
//!   per-client rate limit (tower_governor), and the envelope for framework errors;
//! - [`ApiServer`]: binds, serves with graceful shutdown, and re-binds on reload when
//!   the `server:` section (or the token) changed.

mod auth;
mod deadline;
pub mod envelope;
pub mod jobs;
mod metrics;
pub mod openapi;
pub mod routes;
pub mod serve;
pub mod streams;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::Router;
use dynplug_core::config::{Scope, ServerConfig};
use dynplug_core::locks::lock;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::GovernorLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub use auth::{Token, Tokens};

use crate::state::{ApiRequest, Shared};

/// Everything the router needs besides the daemon state.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The bearer tokens and their scopes; `None`: no token configured, all open.
    pub tokens: Option<Arc<Tokens>>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Time a request may take in all.
    pub request_timeout: Duration,
    /// Rate limit per client address.
    pub rate_limit: Option<dynplug_core::config::RateLimit>,
    /// Connection cap and request-head deadline.
    pub connections: serve::ConnectionLimits,
    /// `GET /events` streams: at most this many at once, this many per client.
    pub event_streams: (usize, usize),
}

impl Settings {
    /// Reads the settings (and the token file) from the `server:` section.
    pub fn from_config(config: &ServerConfig) -> Result<Settings, String> {
        Ok(Settings {
            tokens: Tokens::load(config)?.map(Arc::new),
            max_body_bytes: config.max_body_bytes,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            rate_limit: config.rate_limit,
            connections: serve::ConnectionLimits {
                max_connections: config.max_connections,
                header_timeout: Duration::from_millis(config.header_timeout_ms),
            }
            .within_descriptor_budget(),
            event_streams: (
                config.max_event_streams,
                config.max_event_streams_per_client,
            ),
        })
    }
}

/// The application.
pub fn router(shared: Arc<Shared>, settings: &Settings) -> Router {
    // Routes by the scope they need. Without tokens there is nothing to check: no
    // middleware on the call path.
    let needs = |scope| auth::Needs {
        tokens: settings
            .tokens
            .clone()
            .unwrap_or_else(|| Arc::new(Tokens::none())),
        scope,
    };
    let guard = |routes: Router<Arc<Shared>>, scope| {
        if settings.tokens.as_ref().is_some_and(|t| t.guards_routes()) {
            routes.route_layer(axum::middleware::from_fn_with_state(
                needs(scope),
                auth::require_scope,
            ))
        } else {
            routes
        }
    };
    let running = guard(
        Router::new()
            .route("/plugins/{name}/execute", post(routes::execute))
            .route("/plugins/{name}/jobs", post(jobs::start))
            .route("/jobs/{id}", delete(jobs::cancel)),
        Scope::Execute,
    );
    let managing = guard(
        Router::new()
            .route("/plugins/{name}/enable", put(routes::enable))
            .route("/plugins/{name}/disable", put(routes::disable)),
        Scope::Manage,
    );
    // Jobs and events carry plugin outputs and payloads: not open when tokens are set.
    let reading = guard(
        Router::new()
            .route("/jobs", get(jobs::list))
            .route("/jobs/{id}", get(jobs::get))
            .route("/events", get(jobs::events)),
        Scope::Read,
    );
    let mut metrics = Router::new().route("/metrics", get(routes::metrics));
    if let Some(tokens) = settings.tokens.as_ref().filter(|t| t.guards_metrics()) {
        metrics = metrics.route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(tokens),
            auth::require_metrics_token,
        ));
    }
    let guarded = running.merge(managing).merge(reading).merge(metrics);
    let mut app = Router::new()
        .route("/plugins", get(routes::list))
        .route("/plugins/{name}", get(routes::info))
        .route("/health", get(routes::health))
        .route("/openapi.json", get(routes::openapi))
        .merge(guarded)
        .with_state(shared)
        .layer(axum::middleware::from_fn_with_state(
            settings.connections.header_timeout,
            deadline::whole_body_within,
        ))
        .layer(axum::Extension(streams::EventStreams::new(
            settings.event_streams.0,
            settings.event_streams.1,
            settings.connections.max_connections,
        )))
        .layer(RequestBodyLimitLayer::new(settings.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ));
    if let Some(limit) = settings.rate_limit {
        let period = Duration::from_secs_f64(1.0 / f64::from(limit.per_second));
        if let Some(config) = GovernorConfigBuilder::default()
            .period(period)
            .burst_size(limit.burst)
            .use_headers()
            .finish()
        {
            // Forget idle clients now and then, or the table grows with every address
            // seen. The task holds the limiter weakly, so it ends with the router it
            // belongs to (one per API rebind) instead of outliving it.
            let limiter = std::sync::Arc::downgrade(config.limiter());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(limiter) = limiter.upgrade() else {
                        break;
                    };
                    limiter.retain_recent();
                }
            });
            app = app.layer(GovernorLayer::new(config));
        }
    }
    app.layer(axum::middleware::map_response(envelope::envelope_errors))
}

struct Running {
    address: SocketAddr,
    config: ServerConfig,
    token: Vec<Option<Vec<u8>>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The API server's lifecycle.
#[derive(Default)]
pub struct ApiServer {
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("address", &self.address())
            .finish()
    }
}

fn token_bytes(config: &ServerConfig) -> Vec<Option<Vec<u8>>> {
    let scoped = config.tokens.iter().map(|t| &t.file);
    config
        .token_file
        .iter()
        .chain(scoped)
        .chain(config.metrics_token_file.iter())
        .map(|p| auth::read_token_file(p).ok())
        .collect()
}

impl ApiServer {
    /// The address served, if any.
    pub fn address(&self) -> Option<SocketAddr> {
        self.running
            .lock()
            .ok()
            .and_then(|r| r.as_ref().map(|r| r.address))
    }

    /// Brings the server in line with `config`: starts, stops, or re-binds it when the
    /// section or the token changed. On error the previous server keeps running.
    /// Returns a description of what changed, if anything.
    pub async fn apply(
        &self,
        shared: &Arc<Shared>,
        config: &ServerConfig,
    ) -> Result<Option<String>, String> {
        let unchanged = self
            .running
            .lock()
            .map_err(|_| "server state poisoned".to_owned())?
            .as_ref()
            .map_or(!config.enabled, |r| {
                r.config == *config && r.token == token_bytes(config)
            });
        if unchanged {
            return Ok(None);
        }
        if !config.enabled {
            self.stop().await;
            return Ok(Some("REST API stopped".into()));
        }
        let settings = Settings::from_config(config)?;
        let wanted: SocketAddr = format!("{}:{}", config.host, config.port)
            .parse()
            .map_err(|e| format!("server address: {e}"))?;
        let previous = self.address();
        // Re-binding the same port: the old listener must go first.
        if previous.is_some_and(|a| a.port() == wanted.port() && wanted.port() != 0) {
            self.stop().await;
        }
        let listener = tokio::net::TcpListener::bind(wanted)
            .await
            .map_err(|e| format!("cannot listen on {wanted}: {e}"))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        self.stop().await;
        let app = router(Arc::clone(shared), &settings);
        let (stop, stop_rx) = watch::channel(false);
        let limits = settings.connections;
        let task = tokio::spawn(serve::serve(listener, app, limits, stop_rx));
        tracing::info!(address = %address, auth = settings.tokens.is_some(), "REST API listening");
        {
            *lock(&self.running) = Some(Running {
                address,
                config: config.clone(),
                token: token_bytes(config),
                stop,
                task,
            });
        }
        Ok(Some(format!("REST API on {address}")))
    }

    /// Stops the server gracefully (requests in flight finish, within 5 s).
    pub async fn stop(&self) {
        let running = lock(&self.running).take();
        if let Some(r) = running {
            let _ = r.stop.send(true);
            let mut task = r.task;
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

/// The REST side of reloads: applies the `server:` settings of each request (re-binding
/// when they changed), records where the API listens, and answers.
pub async fn follow(
    server: Arc<ApiServer>,
    shared: Arc<Shared>,
    mut requests: tokio::sync::mpsc::Receiver<ApiRequest>,
) {
    while let Some(ApiRequest { config, reply }) = requests.recv().await {
        let result = server.apply(&shared, &config).await;
        shared.set_api_address(server.address());
        let _ = reply.send(result);
    }
}
