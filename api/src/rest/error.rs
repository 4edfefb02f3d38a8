//! REST errors: the bodies the original answered with, and [`ApiError`], the one error type
//! a REST handler returns instead of its success.

use std::error::Error;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::error::Chain;

/// One entry of a 422 validation error, in FastAPI's (pydantic's) shape.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// What is wrong, machine-readable: `missing`, `int_parsing`, `greater_than_equal`,
    /// `json_invalid`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Where: `["body", "num_tasks"]`, `["query", "page"]`, `["body", 12]` (a JSON syntax error
    /// at that character).
    #[schema(value_type = Vec<Object>)]
    pub loc: Vec<Value>,
    /// What is wrong, for people.
    pub msg: String,
    /// The offending input (the whole body for a missing field).
    #[schema(value_type = Object)]
    pub input: Value,
    /// The bound that was broken (`{"ge": 1}`, ...), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub ctx: Option<Box<Value>>,
}

impl FieldError {
    /// An entry at `loc`.
    pub fn new(kind: &str, loc: Vec<Value>, msg: impl Into<String>, input: Value) -> Self {
        FieldError {
            kind: kind.to_owned(),
            loc,
            msg: msg.into(),
            input,
            ctx: None,
        }
    }

    /// With a `ctx` object.
    pub fn with_ctx(mut self, ctx: Value) -> Self {
        self.ctx = Some(Box::new(ctx));
        self
    }
}

/// `["body", field]`.
pub fn body_loc(field: &str) -> Vec<Value> {
    vec![json!("body"), json!(field)]
}

/// `["query", name]`.
pub fn query_loc(name: &str) -> Vec<Value> {
    vec![json!("query"), json!(name)]
}

/// An error body: `{"detail": "<message>"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Detail {
    /// What went wrong.
    pub detail: String,
}

/// A validation error body: `{"detail": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationDetail {
    /// Every problem found.
    pub detail: Vec<FieldError>,
}

/// Everything a REST handler answers instead of its success. Each becomes the original's body;
/// an internal cause is logged when the response is made, once, and never sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404 `{"detail": message}`.
    #[error("{0}")]
    NotFound(String),
    /// 409 `{"detail": message}`: the command does not apply in the current state.
    #[error("{0}")]
    Conflict(String),
    /// 422 `{"detail": [...]}`.
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    /// 503 with the body given (a health check that failed).
    #[error("unavailable")]
    Unavailable(Value),
    /// 500 `{"detail": "Internal server error"}`: something below the API failed. The cause
    /// (`source()`, with its own causes) is logged, not sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn Error + Send + Sync>),
}

impl ApiError {
    /// A single validation problem.
    pub fn invalid(error: FieldError) -> Self {
        ApiError::Validation(vec![error])
    }

    /// A failure below the API, caused by `cause`.
    pub fn internal(cause: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        ApiError::Internal(cause.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::NotFound(detail) => {
                (StatusCode::NOT_FOUND, axum::Json(Detail { detail })).into_response()
            }
            ApiError::Conflict(detail) => {
                (StatusCode::CONFLICT, axum::Json(Detail { detail })).into_response()
            }
            ApiError::Validation(detail) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(ValidationDetail { detail }),
            )
                .into_response(),
            ApiError::Unavailable(body) => {
                (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %Chain(cause.as_ref()), "REST request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(Detail {
                        detail: "Internal server error".to_owned(),
                    }),
                )
                    .into_response()
            }
        }
    }
}

/// The answer to a known path with a method it does not take: 405
/// `{"detail":"Method Not Allowed"}` (install with `Router::method_not_allowed_fallback`).
pub async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(Detail {
            detail: "Method Not Allowed".to_owned(),
        }),
    )
        .into_response()
}

/// The answer to an unknown path under `/api`: 404 `{"detail":"Not Found"}`.
pub async fn not_found() -> Response {
    ApiError::NotFound("Not Found".to_owned()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_internal_error_keeps_its_cause_and_answers_without_it() {
        let cause = std::io::Error::other("connection refused by 10.0.0.7");
        let error = ApiError::internal(cause);
        assert_eq!(
            error.source().map(ToString::to_string).as_deref(),
            Some("connection refused by 10.0.0.7")
        );
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert_eq!(&body[..], br#"{"detail":"Internal server error"}"#);
    }
}
