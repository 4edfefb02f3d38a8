//! Who may call the APIs from a web page served by another origin.
//!
//! An explicit allow-list (`--cors-allow-origin`, none by default, no wildcard): pages from
//! those origins may read and write both APIs, with their preflights answered (CORS). Pages from
//! any other origin may not: the browser keeps the answers from them (no CORS headers), and a
//! write or WebSocket a browser sends from such a page without asking first (a `text/plain`
//! POST, a form, a `new WebSocket(...)`) is refused here with 403 before it reaches a handler,
//! so it changes nothing. Requests without an `Origin` header (programs: curl, workers,
//! scripts) and pages of Shoal's own origin (its dashboard) are not affected.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN, UPGRADE};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// An origin that cannot be allowed, with what to write instead.
#[derive(Debug, PartialEq, Eq)]
pub enum OriginError {
    /// `*`: allowing every web page to drive Shoal is not offered.
    Wildcard,
    /// Not `http(s)://host[:port]`.
    Malformed(String),
}

impl std::fmt::Display for OriginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Wildcard => write!(
                f,
                "--cors-allow-origin: no wildcard; list each origin (e.g. http://localhost:3000)"
            ),
            Self::Malformed(value) => write!(
                f,
                "--cors-allow-origin: {value:?} is not an origin: write scheme://host[:port] \
                 with no path (e.g. http://localhost:3000)"
            ),
        }
    }
}

impl std::error::Error for OriginError {}

/// The origins allowed to call the APIs from a browser, as browsers write them in `Origin`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    /// Parses the flag's values: each `http(s)://host[:port]` (a trailing `/`, upper case and a
    /// default port are accepted and written as a browser does); empty values are skipped.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, OriginError> {
        let mut origins = Vec::new();
        for value in values {
            let value = value.as_ref().trim();
            if value.is_empty() {
                continue;
            }
            let origin = normalize(value)?;
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(Self(origins))
    }

    /// No origin is allowed (the default).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The origins, as browsers write them.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    fn allows(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o == origin)
    }

    /// The CORS layer answering preflights and adding `Access-Control-Allow-Origin` for the
    /// allowed origins; `None` when none is.
    pub fn cors_layer(&self) -> Option<CorsLayer> {
        if self.is_empty() {
            return None;
        }
        let values = self
            .0
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect::<Vec<_>>();
        Some(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(values))
                .allow_methods([Method::GET, Method::HEAD, Method::POST])
                // The page's own headers (Content-Type, Idempotency-Key, Authorization, a
                // GraphQL client's): the origin is trusted, so what it asks for is allowed.
                .allow_headers(AllowHeaders::mirror_request())
                .max_age(PREFLIGHT_MAX_AGE),
        )
    }
}

/// `scheme://host[:port]`, lower case, without the scheme's default port.
fn normalize(value: &str) -> Result<String, OriginError> {
    if value == "*" {
        return Err(OriginError::Wildcard);
    }
    let malformed = || OriginError::Malformed(value.to_owned());
    let uri: Uri = value.parse().map_err(|_| malformed())?;
    let scheme = uri.scheme_str().map(str::to_ascii_lowercase);
    let default_port = match scheme.as_deref() {
        Some("http") => 80,
        Some("https") => 443,
        _ => return Err(malformed()),
    };
    let authority = uri.authority().ok_or_else(malformed)?;
    let path_is_empty = matches!(uri.path(), "" | "/") && uri.query().is_none();
    if !path_is_empty || authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(malformed());
    }
    let host = authority.host().to_ascii_lowercase();
    let scheme = scheme.unwrap_or_default();
    Ok(match authority.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// Whether `origin` is the server's own (the page came from Shoal itself, e.g. its dashboard):
/// its host and port are the request's `Host`.
fn same_origin(origin: &str, host: Option<&HeaderValue>) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    authority.eq_ignore_ascii_case(host)
}

/// Middleware: a state-changing request (any method but GET, HEAD and OPTIONS) or a WebSocket
/// upgrade that a browser marked with an `Origin` that is neither Shoal's own nor allowed gets
/// 403 `{"detail": ...}` and never reaches its handler.
pub async fn refuse_foreign_writes(
    State(allowed): State<Arc<AllowedOrigins>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let writes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) || headers.contains_key(UPGRADE);
    if writes && let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        if !same_origin(origin, headers.get(HOST)) && !allowed.allows(origin) {
            tracing::warn!(origin, method = %request.method(), path = request.uri().path(), "cross-origin request refused");
            return (
                StatusCode::FORBIDDEN,
                axum::Json(serde_json::json!({
                    "detail": format!(
                        "Cross-origin request refused: origin {origin} is not allowed \
                         (see --cors-allow-origin)"
                    )
                })),
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// `router` with the allow-list applied: the CORS layer (when any origin is allowed) and
/// [`refuse_foreign_writes`].
pub fn apply(router: axum::Router, allowed: AllowedOrigins) -> axum::Router {
    let cors = allowed.cors_layer();
    let router = router.layer(axum::middleware::from_fn_with_state(
        Arc::new(allowed),
        refuse_foreign_writes,
    ));
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_written_as_browsers_send_them() {
        let parsed = AllowedOrigins::parse(&[
            "http://localhost:3000",
            "HTTP://LocalHost:3000/",
            " https://ops.example.com:443 ",
            "http://127.0.0.1:80",
            "",
            "https://[::1]:8443",
        ])
        .unwrap();
        assert_eq!(
            parsed.as_slice(),
            [
                "http://localhost:3000",
                "https://ops.example.com",
                "http://127.0.0.1",
                "https://[::1]:8443",
            ]
        );
        assert!(AllowedOrigins::parse::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn anything_but_an_origin_is_refused_with_a_hint() {
        assert_eq!(AllowedOrigins::parse(&["*"]), Err(OriginError::Wildcard));
        for bad in [
            "localhost:3000",
            "http://localhost:3000/app",
            "http://localhost:3000?x=1",
            "ftp://localhost",
            "http://user@localhost",
            "null",
            "http://",
        ] {
            let error = AllowedOrigins::parse(&[bad]).unwrap_err();
            assert_eq!(error, OriginError::Malformed(bad.to_owned()), "{bad}");
            assert!(error.to_string().contains("scheme://host[:port]"));
        }
    }

    #[test]
    fn the_servers_own_origin_is_its_host() {
        let host = HeaderValue::from_static("127.0.0.1:8080");
        assert!(same_origin("http://127.0.0.1:8080", Some(&host)));
        assert!(same_origin("https://127.0.0.1:8080", Some(&host)));
        assert!(!same_origin("http://127.0.0.1:3000", Some(&host)));
        assert!(!same_origin("null", Some(&host)));
        assert!(!same_origin("http://127.0.0.1:8080", None));
    }
}
