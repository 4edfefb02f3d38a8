//! The one REST API of `shoal dev` / `shoal serve`, composed here like the GraphQL schema:
//! command-api's writes and query-api's reads on one router, the original's 405
//! (`{"detail":"Method Not Allowed"}`) on known paths and 404 (`{"detail":"Not Found"}`) on
//! unknown paths under `/api`, and the OpenAPI 3.1 document of both at `/openapi.json` with
//! Swagger UI at `/docs` (vendored in the binary: no CDN).

use std::sync::Arc;

use axum::Router;
use axum::routing::any;
use shoal_api::rest::{method_not_allowed, not_found};
use shoal_command_api::commands::CommandService;
use shoal_command_api::rest::WriteApiDoc;
use shoal_infra::readmodel::ReadModelStore;
use shoal_query_api::rest::{ReadApiDoc, RestConfig};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

/// The whole REST API: the writes on `service`, the reads from `store` (and, for what the
/// projector has not reached yet, from the streams `service` reads).
pub fn router(service: CommandService, store: ReadModelStore, config: RestConfig) -> Router {
    let reads = shoal_query_api::rest::router(store, Arc::new(service.clone()), config);
    Router::new()
        .merge(shoal_command_api::rest::router(service))
        .merge(reads)
        .route("/api/{*rest}", any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi()))
}

/// The OpenAPI 3.1 document of the whole REST API (reads and writes).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ReadApiDoc::openapi();
    doc.merge(WriteApiDoc::openapi());
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_covers_reads_and_writes() {
        let doc = serde_json::to_value(openapi()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let jobs = &doc["paths"]["/api/v1/jobs"];
        assert!(
            jobs["get"].is_object() && jobs["post"].is_object(),
            "{jobs}"
        );
        for path in [
            "/",
            "/health",
            "/api/v1/jobs/{job_id}/tasks",
            "/api/v1/tasks/{task_id}/complete",
            "/api/v1/analytics/recent-jobs",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
    }
}
