//! What a web page in the user's browser may not do, whatever the auth mode (see docs/auth.md,
//! "Browser rules"). A page on any site can send requests to `127.0.0.1`; these rules keep it
//! from changing anything or reading through DNS rebinding:
//!
//! - `Host` must name this server: the listen address, a loopback name or address when it
//!   listens on loopback, any IP address when it listens on all interfaces (an IP literal
//!   cannot be rebound), or a name of `--allowed-host`. Otherwise 421 (DNS rebinding).
//! - A state-changing request (any method but GET, HEAD, OPTIONS) or a WebSocket upgrade that
//!   the browser marks `Sec-Fetch-Site: cross-site` is refused (403) unless its `Origin` is a
//!   `--cors-allow-origin`. (`Origin` itself is checked by `crate::cors`.)
//! - `POST /graphql` must say it is GraphQL: `application/json`,
//!   `application/graphql-response+json` or `application/graphql` (415 otherwise), so that a
//!   form or a `text/plain` fetch, which a browser sends cross-site without asking, never runs
//!   a mutation.
//!
//! Requests without `Sec-Fetch-Site` or `Origin` (programs: curl, workers, the old system's
//! worker posting `/running` with no body) are not affected by the second rule, and only
//! `/graphql` has the third.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{CONTENT_TYPE, HOST, ORIGIN, UPGRADE};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::cors::AllowedOrigins;

/// Which `Host` values name this server.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    listen: SocketAddr,
    /// `--allowed-host` names (lower case, without port); `*` turns the check off.
    names: Vec<String>,
}

impl AllowedHosts {
    /// The hosts of a server listening on `listen`, plus `extra` names (`--allowed-host`).
    pub fn new(listen: SocketAddr, extra: &[String]) -> Self {
        AllowedHosts {
            listen,
            names: extra
                .iter()
                .map(|name| name.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|name| !name.is_empty())
                .collect(),
        }
    }

    /// Whether `host` (a `Host` header's value, maybe with a port) names this server.
    pub fn allows(&self, host: &str) -> bool {
        if self.names.iter().any(|n| n == "*") {
            return true;
        }
        let name = host_name(host).to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        if self.names.iter().any(|n| n == name) {
            return true;
        }
        let ip = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        let listen = self.listen.ip();
        if listen.is_unspecified() {
            // Every interface: any address is one of ours or routed to us; names must be
            // listed.
            return ip.is_some() || is_loopback_name(name);
        }
        if listen.is_loopback() {
            return ip.is_some_and(|ip| ip.is_loopback()) || is_loopback_name(name);
        }
        ip == Some(listen)
    }
}

/// `localhost` and its subdomains (which resolve to loopback: RFC 6761).
fn is_loopback_name(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

/// The host of a `Host` value, without its port (`[::1]:8080` -> `[::1]`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
}

/// What the guard checks against.
#[derive(Debug, Clone)]
pub struct Guard {
    pub hosts: AllowedHosts,
    pub origins: AllowedOrigins,
}

/// Middleware: see the module docs.
pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if let Some(host) = headers.get(HOST) {
        let host = host.to_str().unwrap_or("");
        if !guard.hosts.allows(host) {
            return refuse(
                &request,
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "Host {host:?} is not a name of this server (see --allowed-host in \
                     docs/auth.md)"
                ),
            );
        }
    }
    let writes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) || headers.contains_key(UPGRADE);
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    if writes && cross_site {
        let allowed = headers
            .get(ORIGIN)
            .and_then(|o| o.to_str().ok())
            .is_some_and(|o| guard.origins.as_slice().iter().any(|a| a == o));
        if !allowed {
            return refuse(
                &request,
                StatusCode::FORBIDDEN,
                "Cross-site request refused: a page of another site may not change anything \
                 here (see --cors-allow-origin)"
                    .to_owned(),
            );
        }
    }
    if *request.method() == Method::POST && request.uri().path() == "/graphql" {
        let media_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        let graphql = matches!(
            media_type.as_deref(),
            Some("application/json" | "application/graphql-response+json" | "application/graphql")
        );
        if !graphql {
            return refuse(
                &request,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "POST /graphql takes Content-Type: application/json (or \
                 application/graphql-response+json, application/graphql)"
                    .to_owned(),
            );
        }
    }
    next.run(request).await
}

fn refuse(request: &Request, status: StatusCode, detail: String) -> Response {
    tracing::warn!(method = %request.method(), path = request.uri().path(), %status, %detail, "request refused");
    (status, axum::Json(serde_json::json!({ "detail": detail }))).into_response()
}

/// `router` behind the guard.
pub fn apply(router: axum::Router, guard: Guard) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(
        Arc::new(guard),
        self::guard,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_listens_answer_loopback_names_only() {
        let hosts = AllowedHosts::new("127.0.0.1:8080".parse().unwrap(), &[]);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "localhost",
            "[::1]:8080",
            "app.localhost:8080",
            "127.0.0.2",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "10.0.0.1:8080",
            "localhost.evil.example",
        ] {
            assert!(!hosts.allows(bad), "{bad}");
        }
        let listed = AllowedHosts::new(
            "127.0.0.1:8080".parse().unwrap(),
            &["Shoal.Example.com".to_owned()],
        );
        assert!(listed.allows("shoal.example.com:8080"));
    }

    #[test]
    fn other_listens_answer_their_address_or_listed_names() {
        let all = AllowedHosts::new("0.0.0.0:8080".parse().unwrap(), &["shoal-api".into()]);
        assert!(all.allows("10.1.2.3:8080"));
        assert!(all.allows("shoal-api:8080"));
        assert!(!all.allows("attacker.example:8080"));
        let one = AllowedHosts::new("10.0.0.5:8080".parse().unwrap(), &[]);
        assert!(one.allows("10.0.0.5:8080"));
        assert!(!one.allows("10.0.0.6:8080"));
        let any = AllowedHosts::new("10.0.0.5:8080".parse().unwrap(), &["*".into()]);
        assert!(any.allows("whatever.example"));
    }
}
