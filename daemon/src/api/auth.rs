//! Bearer-token authentication: tokens with scopes (`read`, `execute`, `manage`),
//! optionally limited to some plugins, and a token of its own for `/metrics`.
//!
//! Hand-written rather than tower-http's `ValidateRequestHeaderLayer::bearer`, because
//! the token must be compared in constant time (subtle) and a missing token (401) must
//! be told apart from a wrong one (403).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{RawPathParams, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use dynplug_core::config::{Scope, ServerConfig};
use dynplug_core::jobs::JobOwner;

use super::envelope::ApiError;

/// A bearer token. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Reads the token from `path`; a relative path is resolved in
    /// `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`/`SetCredential=`).
    pub fn load(path: &Path) -> Result<Token, String> {
        let full: PathBuf = if path.is_relative() {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                format!(
                    "server.token_file `{}` is relative but $CREDENTIALS_DIRECTORY is not set",
                    path.display()
                )
            })?;
            PathBuf::from(dir).join(path)
        } else {
            path.to_owned()
        };
        let bytes = read_token_file(&full)?;
        let text = String::from_utf8_lossy(&bytes);
        let token = text.trim();
        if token.is_empty() {
            return Err(format!("token file {} is empty", full.display()));
        }
        Ok(Token(Arc::from(token.as_bytes())))
    }

    fn matches(&self, presented: &[u8]) -> bool {
        self.0.len() == presented.len() && bool::from(self.0.ct_eq(presented))
    }
}

/// The credentials of an `Authorization: Bearer ...` value. The scheme is matched
/// without regard to case, as RFC 9110 (11.1) requires.
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    let credentials = rest.strip_prefix(b" ")?.trim_ascii_start();
    (scheme.eq_ignore_ascii_case(b"bearer") && !credentials.is_empty()).then_some(credentials)
}

/// What a presented token may do.
#[derive(Debug, Clone)]
pub(super) struct Grant {
    scope: Scope,
    /// The plugins it may run; `None` means all.
    plugins: Option<Arc<[String]>>,
    /// Who the token is, for the jobs it starts: a keyed digest of its value (the key
    /// is this process's own), never the value.
    id: u64,
}

/// A digest of a token's value that names it among the jobs without revealing it:
/// keyed by a random key made once per process.
fn token_id(token: &Token) -> u64 {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEY.get_or_init(Default::default).hash_one(&*token.0)
}

/// Who is calling the REST API, as the token layer found them: the owner of the jobs
/// they start and see, and the plugins their token is limited to. Without tokens
/// configured every caller is the one anonymous caller.
#[derive(Debug, Clone)]
pub struct RestCaller {
    /// The jobs they start are theirs under this owner.
    pub owner: JobOwner,
    /// The plugins their token may run (`None`: all).
    pub plugins: Option<Arc<[String]>>,
}

impl RestCaller {
    /// The caller of an API without tokens.
    pub fn anonymous() -> Self {
        RestCaller {
            owner: JobOwner::Rest(None),
            plugins: None,
        }
    }

    /// Whether they presented a token (and so may read what their jobs answered).
    pub fn has_token(&self) -> bool {
        self.owner != JobOwner::Rest(None)
    }

    /// Whether their token may see plugin `name`'s jobs and events.
    pub fn sees_plugin(&self, name: &str) -> bool {
        self.plugins
            .as_ref()
            .is_none_or(|p| p.iter().any(|n| n == name))
    }
}

impl Grant {
    fn allows_plugin(&self, name: &str) -> bool {
        self.plugins
            .as_ref()
            .is_none_or(|p| p.iter().any(|n| n == name))
    }
}

/// Every configured token with what it may do, and the metrics token.
#[derive(Debug, Clone)]
pub struct Tokens {
    entries: Vec<(Token, Grant)>,
    metrics: Option<Token>,
}

impl Tokens {
    /// Reads every token file of the `server:` section; `None` when no token is
    /// configured (the API is then open, as before tokens).
    pub fn load(config: &ServerConfig) -> Result<Option<Tokens>, String> {
        let mut entries = Vec::new();
        if let Some(path) = &config.token_file {
            let token = Token::load(path)?;
            let grant = Grant {
                scope: Scope::Manage,
                plugins: None,
                id: token_id(&token),
            };
            entries.push((token, grant));
        }
        for scoped in &config.tokens {
            let token = Token::load(&scoped.file)?;
            let grant = Grant {
                scope: scoped.scope,
                plugins: scoped.plugins.as_deref().map(Arc::from),
                id: token_id(&token),
            };
            entries.push((token, grant));
        }
        // One value, one grant: a value given twice would be one caller with two
        // scopes, of which only the first would ever count.
        for (i, (token, _)) in entries.iter().enumerate() {
            if entries[..i]
                .iter()
                .any(|(earlier, _)| earlier.matches(&token.0))
            {
                return Err(format!(
                    "token {} of server.token_file/server.tokens has the same value as an earlier one; \
                     give each token its own value",
                    i + 1
                ));
            }
        }
        let metrics = config
            .metrics_token_file
            .as_deref()
            .map(Token::load)
            .transpose()?;
        Ok((!entries.is_empty() || metrics.is_some()).then_some(Tokens { entries, metrics }))
    }

    /// No token at all.
    pub fn none() -> Tokens {
        Tokens {
            entries: Vec::new(),
            metrics: None,
        }
    }

    /// Whether any token guards the scoped routes.
    pub fn guards_routes(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Whether a token guards `/metrics`.
    pub fn guards_metrics(&self) -> bool {
        self.metrics.is_some()
    }

    /// What `presented` may do. Every token is compared, each in constant time.
    fn grant(&self, presented: &[u8]) -> Option<&Grant> {
        let mut found = None;
        for (token, grant) in &self.entries {
            if token.matches(presented) && found.is_none() {
                found = Some(grant);
            }
        }
        found
    }
}

/// What a route needs, for [`require_scope`].
#[derive(Clone)]
pub(super) struct Needs {
    pub(super) tokens: Arc<Tokens>,
    pub(super) scope: Scope,
}

fn unauthorized() -> Response {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this route needs Authorization: Bearer <token>",
    )
    .into_response()
}

fn forbidden(message: String) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response()
}

/// The bearer credentials of `request`, if any.
fn presented(request: &Request) -> Option<&[u8]> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer_credentials(v.as_bytes()))
}

/// Requires a token whose scope covers the route's, and, on routes naming a plugin (or
/// a job), one that may run that plugin. 401 without a token, 403 naming the scope or
/// the plugin otherwise.
pub(super) async fn require_scope(
    State(needs): State<Needs>,
    params: RawPathParams,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(presented) = presented(&request) else {
        return unauthorized();
    };
    let Some(grant) = needs.tokens.grant(presented).cloned() else {
        return forbidden("the bearer token is not valid".into());
    };
    if grant.scope < needs.scope {
        return forbidden(format!(
            "this needs a token with the `{}` scope; this one has `{}`",
            needs.scope.as_str(),
            grant.scope.as_str()
        ));
    }
    // A job (`/jobs/{id}`) is not looked at here: whose it is, and its plugin, are for
    // the job routes to judge, which answer 404 for a job the caller may not see
    // (a 403 here would tell a stranger which plugin job N ran).
    let plugin = params
        .iter()
        .find_map(|(key, value)| (key == "name").then(|| value.to_owned()));
    if let Some(name) = plugin.filter(|name| !grant.allows_plugin(name)) {
        return forbidden(format!("this token may not run plugin `{name}`"));
    }
    request.extensions_mut().insert(RestCaller {
        owner: JobOwner::Rest(Some(grant.id)),
        plugins: grant.plugins.clone(),
    });
    next.run(request).await
}

/// Requires the metrics token, or a `manage` token, for `/metrics`.
pub(super) async fn require_metrics_token(
    State(tokens): State<Arc<Tokens>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(presented) = presented(&request) else {
        return unauthorized();
    };
    let metrics = tokens
        .metrics
        .as_ref()
        .is_some_and(|t| t.matches(presented));
    let manage = tokens
        .grant(presented)
        .is_some_and(|g| g.scope == Scope::Manage);
    if metrics || manage {
        next.run(request).await
    } else {
        forbidden("this needs the metrics token (or one with the `manage` scope)".into())
    }
}

/// The largest token file read.
const MAX_TOKEN_BYTES: u64 = 4096;

/// Reads a token file as a trusted side file: a regular file of the daemon's user or
/// root, not writable by others, at most [`MAX_TOKEN_BYTES`]; never a FIFO or a device.
pub(crate) fn read_token_file(path: &Path) -> Result<Vec<u8>, String> {
    dynplug_core::trust::read_side_file(
        path,
        dynplug_core::trust::TrustPolicy::for_current_process(),
        MAX_TOKEN_BYTES,
    )
    .map_err(|e| format!("token file: {e}"))
}

#[cfg(test)]
mod tests {
    use super::bearer_credentials;

    #[test]
    fn the_scheme_is_case_insensitive() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER t0k", "bEaReR  t0k"] {
            assert_eq!(
                bearer_credentials(value.as_bytes()),
                Some(&b"t0k"[..]),
                "{value}"
            );
        }
        for value in ["Basic t0k", "Bearer", "Bearer ", "Bearert0k", ""] {
            assert_eq!(bearer_credentials(value.as_bytes()), None, "{value}");
        }
    }
}
