//! Limits of the HTTP APIs that are not the domain's: how large a request body may be, how
//! long a request may take, and how many operations one batched GraphQL request may hold. Each
//! refusal says which limit and which flag raises it; nothing is appended by a refused request.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::ws::WsLimits;

/// Default of `--max-request-bytes`: 10 MiB, enough for a submission with the largest `items`
/// the domain accepts (8 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// Default of `--graphql-max-batch`.
pub const DEFAULT_MAX_BATCH: usize = 10;
/// Default of `--request-timeout-seconds`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP limits (see the module docs) and the WebSocket ones.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_request_bytes: usize,
    pub max_batch: usize,
    pub request_timeout: Duration,
    pub ws: WsLimits,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_batch: DEFAULT_MAX_BATCH,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            ws: WsLimits::default(),
        }
    }
}

/// A GraphQL-shaped refusal (`{"errors": [{"message", "extensions": {"code"}}]}`), which
/// GraphQL clients show as they show any error.
pub fn graphql_refusal(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({ "errors": [{ "message": message, "extensions": { "code": code } }] })),
    )
        .into_response()
}

/// Refuses a body over `max` bytes with 413 before anything reads it (a declared length), or
/// while reading it (a chunked body); the handler gets the body buffered.
pub async fn limit_graphql_body(
    State(max): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let too_large = || {
        graphql_refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the request body is larger than {max} bytes (--max-request-bytes)"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, max).await else {
        return too_large();
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Answers 503 when the handler has not answered within `timeout` (its work is dropped; a
/// command's append either committed before or not at all).
pub async fn time_limit(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "detail": format!(
                    "the request took longer than {} s (--request-timeout-seconds); try again",
                    timeout.as_secs_f64()
                )
            })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_request_over_the_time_limit_is_answered_503_and_says_which_flag() {
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route("/fast", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                Duration::from_millis(100),
                time_limit,
            ));
        let request = |path: &str| Request::builder().uri(path).body(Body::empty()).unwrap();
        let slow = app.clone().oneshot(request("/slow")).await.unwrap();
        assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(slow.into_body(), 1024).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body["detail"],
            "the request took longer than 0.1 s (--request-timeout-seconds); try again"
        );
        let fast = app.oneshot(request("/fast")).await.unwrap();
        assert_eq!(fast.status(), StatusCode::OK);
    }
}
