//! Serves the dashboard (`web/dist`, built by Vite) beside the APIs on the same port.
//!
//! `GET /` stays the original REST API's health answer for API clients; a browser (which asks
//! for `text/html`) gets the dashboard instead. Other paths outside the APIs are files of the
//! build, and any unknown path that a browser asks for gets `index.html`, so the dashboard's
//! own routes (`/jobs/<id>`, `/analytics`) work as links. Without a build, browsers get a page
//! that says how to make one.

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;

/// Paths that belong to the APIs, never to the dashboard.
const API_PREFIXES: [&str; 6] = [
    "/graphql",
    "/api",
    "/health",
    "/openapi.json",
    "/docs",
    "/metrics",
];

/// Wraps `router` so that it serves the dashboard from `dir` as described above.
pub fn with_dashboard(router: axum::Router, dir: PathBuf) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(dir, dashboard))
}

async fn dashboard(State(dir): State<PathBuf>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let is_api = API_PREFIXES
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")));
    if request.method() != Method::GET || is_api {
        return next.run(request).await;
    }
    let wants_html = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if path != "/"
        && let Some(file) = file_in(&dir, &path).filter(|f| f.is_file())
    {
        return serve(file, request).await;
    }
    if !wants_html {
        return next.run(request).await;
    }
    let index = dir.join("index.html");
    if index.is_file() {
        serve(index, request).await
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Html(missing_build_page(&dir)),
        )
            .into_response()
    }
}

/// The file under `dir` that `path` names, refusing anything that would leave `dir`.
fn file_in(dir: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| dir.join(relative))
}

async fn serve(file: PathBuf, request: Request) -> Response {
    match ServeFile::new(file).oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

fn missing_build_page(dir: &Path) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Shoal</title></head>\
         <body style=\"font-family: sans-serif; max-width: 40em; margin: 3em auto\">\
         <h1>Shoal is running, but the dashboard is not built</h1>\
         <p>There is no <code>index.html</code> in <code>{dir}</code>. Build it with</p>\
         <pre>npm --prefix web ci &amp;&amp; npm --prefix web run build</pre>\
         <p>(or start Shoal with <code>scripts/dev.sh</code>, which does it), or point \
         <code>--web-dir</code> at a build. The APIs work without it: \
         <a href=\"/graphql\">GraphiQL</a>, <a href=\"/docs\">REST API docs</a>.</p></body></html>",
        dir = dir.display()
    )
}
