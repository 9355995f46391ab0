//! Bearer-token authentication for mutating routes and execute.
//!
//! Hand-written rather than tower-http's `ValidateRequestHeaderLayer::bearer`, because
//! the token must be compared in constant time (subtle) and a missing token (401) must
//! be told apart from a wrong one (403).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

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
        let text = std::fs::read_to_string(&full)
            .map_err(|e| format!("cannot read token file {}: {e}", full.display()))?;
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

/// Requires `Authorization: Bearer <token>` when a token is configured.
pub(super) async fn require_token(
    State(token): State<Option<Token>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer_credentials(v.as_bytes()));
    match presented {
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route needs Authorization: Bearer <token>",
        )
        .into_response(),
        Some(p) if token.matches(p) => next.run(request).await,
        Some(_) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the bearer token is not valid",
        )
        .into_response(),
    }
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
