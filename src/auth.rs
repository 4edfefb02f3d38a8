//! Bearer tokens on the HTTP APIs (see docs/auth.md).
//!
//! With `--auth tokens`, every request but the public ones (health, metrics, the OpenAPI
//! document and its page, the dashboard's files, GraphiQL's page, CORS preflights) carries
//! `Authorization: Bearer <token>`: none, an unknown one or a revoked one is 401, one without
//! the scope the endpoint needs is 403 (GraphQL checks each operation's root fields, see
//! `shoal_api::graphql::ScopeCheck`). A GraphQL WebSocket presents its token in
//! `connection_init` (`{"authorization": "Bearer ..."}`), or in the upgrade's header. The
//! token's [`Principal`] goes into the request, and its name is the actor of the commands.
//!
//! With `--auth none`, nothing is checked here: `shoal dev` and `shoal serve` allow it on a
//! loopback `--listen` only, unless `--insecure-no-auth` is given.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, UPGRADE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clap::{Args, ValueEnum};
use shoal_api::auth::{PresentedToken, Principal, Scope};
use shoal_infra::tokens::{TokenStore, TokenStoreError};

/// Whether the APIs require tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Every API request needs a bearer token with the right scope (`shoal token create`).
    Tokens,
    /// No token is asked for: on a loopback `--listen` only (or with `--insecure-no-auth`).
    None,
}

/// How the APIs check who calls them.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// `tokens`: every API request needs a bearer token (`shoal token create`); `none`: no
    /// token is asked for, allowed on a loopback `--listen` only (unless
    /// `--insecure-no-auth`). See docs/auth.md.
    #[arg(long, env = "SHOAL_AUTH", value_enum, default_value = "none")]
    pub auth: AuthMode,
    /// Serve without tokens on a non-loopback `--listen` anyway: anyone who reaches the port
    /// can submit, cancel and read everything. For a network you trust entirely.
    #[arg(long, env = "SHOAL_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

impl AuthArgs {
    /// Refuses to serve `listen` without tokens when it is not a loopback address, unless
    /// `--insecure-no-auth`.
    pub fn check(&self, listen: SocketAddr) -> anyhow::Result<()> {
        if self.auth == AuthMode::None && !listen.ip().is_loopback() && !self.insecure_no_auth {
            anyhow::bail!(
                "--listen {listen} is reachable from other machines, and --auth is none: start \
                 with --auth tokens (create tokens with `shoal token create`), or listen on \
                 127.0.0.1, or pass --insecure-no-auth to serve everyone without tokens \
                 (see docs/auth.md)"
            );
        }
        Ok(())
    }

    /// How the startup banner describes the mode.
    pub fn describe(&self) -> &'static str {
        match self.auth {
            AuthMode::Tokens => "bearer tokens required (--auth tokens)",
            AuthMode::None => "no tokens required (--auth none)",
        }
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header (or `connection_init` token): 401.
    #[error("this endpoint needs a bearer token (Authorization: Bearer <token>; see docs/auth.md)")]
    Missing,
    /// Not a token, or not one this server issued: 401.
    #[error("the bearer token is not valid")]
    Invalid,
    /// Revoked with `shoal token revoke`: 401.
    #[error("the bearer token {0:?} has been revoked")]
    Revoked(String),
    /// The token lacks the scope: 403.
    #[error("the token {name:?} may not do this: it needs the `{scope}` scope")]
    Forbidden { name: String, scope: Scope },
    /// The tokens could not be read: 503, try again.
    #[error("tokens cannot be checked right now; try again")]
    Unavailable(#[source] TokenStoreError),
}

impl AuthError {
    fn status(&self) -> StatusCode {
        match self {
            AuthError::Missing | AuthError::Invalid | AuthError::Revoked(_) => {
                StatusCode::UNAUTHORIZED
            }
            AuthError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let AuthError::Unavailable(cause) = &self {
            tracing::error!(error = %shoal_api::error::Chain(cause), "checking a token failed");
        }
        let mut response = (
            status,
            axum::Json(serde_json::json!({ "detail": self.to_string() })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Checks presented tokens against the stored ones. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Authenticator {
    store: TokenStore,
}

impl Authenticator {
    pub fn new(store: TokenStore) -> Self {
        Authenticator { store }
    }

    /// The principal of an `Authorization` value (`Bearer <token>`). Every token is looked up
    /// (no cache), so a revocation holds from the next request on.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let authorization = authorization.ok_or(AuthError::Missing)?;
        let presented =
            PresentedToken::from_authorization(authorization).ok_or(AuthError::Invalid)?;
        let stored = self
            .store
            .find(presented.token_id)
            .await
            .map_err(AuthError::Unavailable)?
            .ok_or(AuthError::Invalid)?;
        if !presented.matches(&stored.secret_sha256) {
            return Err(AuthError::Invalid);
        }
        if stored.revoked_at.is_some() {
            return Err(AuthError::Revoked(stored.name));
        }
        let scopes = stored
            .scopes
            .iter()
            .filter_map(|s| s.parse::<Scope>().ok())
            .collect();
        Ok(Principal {
            name: stored.name,
            scopes,
        })
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Nothing: health, metrics, documents, the dashboard's files, preflights.
    Public,
    /// A valid token; what it may do is checked further in (GraphQL operations, WebSockets
    /// at `connection_init`).
    Token,
    /// A valid token with this scope.
    Scope(Scope),
}

fn need(method: &Method, path: &str) -> Need {
    let reads = matches!(*method, Method::GET | Method::HEAD);
    if *method == Method::OPTIONS {
        return Need::Public;
    }
    if path == "/graphql" {
        // A WebSocket presents its token in `connection_init`; GraphiQL's page is public.
        return if reads { Need::Public } else { Need::Token };
    }
    if let Some(rest) = path.strip_prefix("/api/") {
        if reads {
            return Need::Scope(Scope::Read);
        }
        if rest.trim_end_matches('/') == "v1/jobs" {
            return Need::Scope(Scope::Submit);
        }
        if rest.starts_with("v1/tasks/") {
            return Need::Scope(Scope::Worker);
        }
        return Need::Token;
    }
    if reads {
        // `/`, `/health*`, `/metrics`, `/openapi.json`, `/docs`, the dashboard.
        Need::Public
    } else {
        Need::Token
    }
}

/// Middleware: the token check of `--auth tokens` (see the module docs).
pub async fn require_tokens(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let upgrade = request.headers().contains_key(UPGRADE);
    let need = need(request.method(), request.uri().path());
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match need {
        Need::Public => {
            // A WebSocket's upgrade may carry its token (programs); browsers send it in
            // `connection_init`.
            if upgrade
                && authorization.is_some()
                && let Ok(principal) = auth.authenticate(authorization.as_deref()).await
            {
                request.extensions_mut().insert(principal);
            }
        }
        Need::Token | Need::Scope(_) => {
            let principal = match auth.authenticate(authorization.as_deref()).await {
                Ok(principal) => principal,
                Err(error) => return refused(&request, error),
            };
            if let Need::Scope(scope) = need
                && !principal.allows(scope)
            {
                let error = AuthError::Forbidden {
                    name: principal.name,
                    scope,
                };
                return refused(&request, error);
            }
            request.extensions_mut().insert(principal);
        }
    }
    next.run(request).await
}

fn refused(request: &Request, error: AuthError) -> Response {
    tracing::info!(method = %request.method(), path = request.uri().path(), %error, "request refused");
    error.into_response()
}

/// `router` with tokens required ([`require_tokens`]).
pub fn apply(router: axum::Router, auth: Arc<Authenticator>) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(auth, require_tokens))
}

/// The token a GraphQL WebSocket's `connection_init` payload carries: `authorization` (or
/// `Authorization`), `Bearer <token>`; a bare `token` is accepted too.
pub fn connection_init_authorization(payload: &serde_json::Value) -> Option<String> {
    let field = |name: &str| payload.get(name).and_then(serde_json::Value::as_str);
    field("authorization")
        .or_else(|| field("Authorization"))
        .map(str::to_owned)
        .or_else(|| field("token").map(|t| format!("Bearer {t}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_needs_its_scope() {
        let cases = [
            (Method::GET, "/health", Need::Public),
            (Method::GET, "/metrics", Need::Public),
            (Method::GET, "/", Need::Public),
            (Method::GET, "/jobs/123", Need::Public),
            (Method::GET, "/graphql", Need::Public),
            (Method::OPTIONS, "/graphql", Need::Public),
            (Method::POST, "/graphql", Need::Token),
            (Method::GET, "/api/v1/jobs", Need::Scope(Scope::Read)),
            (Method::POST, "/api/v1/jobs", Need::Scope(Scope::Submit)),
            (Method::POST, "/api/v1/jobs/", Need::Scope(Scope::Submit)),
            (
                Method::POST,
                "/api/v1/tasks/abc/running",
                Need::Scope(Scope::Worker),
            ),
            (Method::DELETE, "/api/v1/jobs/x", Need::Token),
            (Method::POST, "/elsewhere", Need::Token),
        ];
        for (method, path, expected) in cases {
            assert_eq!(need(&method, path), expected, "{method} {path}");
        }
    }

    #[test]
    fn only_loopback_may_run_without_tokens() {
        let none = AuthArgs {
            auth: AuthMode::None,
            insecure_no_auth: false,
        };
        assert!(none.check("127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(none.check("[::1]:8080".parse().unwrap()).is_ok());
        let error = none.check("0.0.0.0:8080".parse().unwrap()).unwrap_err();
        assert!(error.to_string().contains("--insecure-no-auth"), "{error}");
        let insecure = AuthArgs {
            insecure_no_auth: true,
            ..none.clone()
        };
        assert!(insecure.check("0.0.0.0:8080".parse().unwrap()).is_ok());
        let tokens = AuthArgs {
            auth: AuthMode::Tokens,
            ..none
        };
        assert!(tokens.check("10.0.0.5:8080".parse().unwrap()).is_ok());
    }

    #[test]
    fn connection_init_carries_the_token() {
        let payload = serde_json::json!({ "authorization": "Bearer abc" });
        assert_eq!(
            connection_init_authorization(&payload).as_deref(),
            Some("Bearer abc")
        );
        let bare = serde_json::json!({ "token": "abc" });
        assert_eq!(
            connection_init_authorization(&bare).as_deref(),
            Some("Bearer abc")
        );
        assert_eq!(connection_init_authorization(&serde_json::json!({})), None);
    }
}
