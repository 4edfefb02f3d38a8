//! The one REST API of `shoal dev` / `shoal serve`, composed here like the GraphQL schema:
//! command-api's writes and query-api's reads on one router, the original's 405
//! (`{"detail":"Method Not Allowed"}`) on known paths and 404 (`{"detail":"Not Found"}`) on
//! unknown paths under `/api`, and the OpenAPI 3.1 document of both at `/openapi.json` with
//! Swagger UI at `/docs` (vendored in the binary: no CDN).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use shoal_api::rest::{method_not_allowed, not_found};
use shoal_command_api::commands::{CommandService, MAX_ERROR_CHARS, MAX_IDEMPOTENCY_KEY_BYTES};
use shoal_command_api::rest::WriteApiDoc;
use shoal_domain::Limits;
use shoal_infra::readmodel::ReadModelStore;
use shoal_query_api::rest::{ReadApiDoc, RestConfig};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, Object, Schema, SchemaFormat};
use utoipa::{Number, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

/// The whole REST API: the writes on `service`, the reads from `store` (and, for what the
/// projector has not reached yet, from the streams `service` reads). A known path with a
/// trailing slash (`GET /api/v1/jobs/`) is redirected (307) to the path without it, as the
/// original (FastAPI) did.
pub fn router(service: CommandService, store: ReadModelStore, config: RestConfig) -> Router {
    let doc = openapi_for(service.limits(), &config);
    let paths: Arc<[String]> = doc.paths.paths.keys().cloned().collect();
    let reads = shoal_query_api::rest::router(store, Arc::new(service.clone()), config);
    Router::new()
        .merge(shoal_command_api::rest::router(service))
        .merge(reads)
        .route(
            "/api/{*rest}",
            any(without_trailing_slash).with_state(paths),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
}

/// An unknown path under `/api`: a known path with a trailing slash is redirected (307, method
/// and body kept, query kept) to the path without it; anything else is 404.
async fn without_trailing_slash(State(paths): State<Arc<[String]>>, uri: Uri) -> Response {
    if let Some(path) = uri.path().strip_suffix('/')
        && paths
            .iter()
            .any(|template| matches_template(template, path))
    {
        let location = match uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        };
        return (StatusCode::TEMPORARY_REDIRECT, [(LOCATION, location)]).into_response();
    }
    not_found().await
}

/// Whether `path` is an instance of the document's path `template` (`/api/v1/jobs/{job_id}`).
fn matches_template(template: &str, path: &str) -> bool {
    let mut template = template.split('/');
    let mut path = path.split('/');
    loop {
        match (template.next(), path.next()) {
            (None, None) => return true,
            (Some(t), Some(p)) => {
                let parameter = t.starts_with('{') && t.ends_with('}');
                if !(t == p || parameter && !p.is_empty()) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// The OpenAPI 3.1 document of the whole REST API (reads and writes), with the default limits.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi_for(&Limits::default(), &RestConfig::default())
}

/// The OpenAPI 3.1 document of the whole REST API as this server answers it: the bounds that
/// depend on its configuration (tasks per job, attempts, timeout, length of a job type, tasks
/// per response) are the server's own, so a client (or a fuzzer) generating from the document
/// stays within what the server accepts.
pub fn openapi_for(limits: &Limits, config: &RestConfig) -> utoipa::openapi::OpenApi {
    let mut doc = ReadApiDoc::openapi();
    doc.merge(WriteApiDoc::openapi());
    let to_usize = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
    if let Some(components) = doc.components.as_mut() {
        let schemas = &mut components.schemas;
        if let Some(submit) = schemas.get_mut("SubmitJobRequest").and_then(object) {
            let properties = &mut submit.properties;
            let mut bound = |name: &str, max: u32| {
                if let Some(field) = properties.get_mut(name).and_then(object) {
                    field.maximum = Some(Number::UInt(to_usize(max)));
                }
            };
            bound("num_tasks", limits.max_tasks_per_job);
            bound("max_attempts", limits.max_attempts_limit);
            bound("timeout_seconds", limits.max_timeout_seconds);
            if let Some(job_type) = properties.get_mut("job_type").and_then(object) {
                job_type.max_length = Some(limits.max_job_type_len);
            }
        }
        if let Some(fail) = schemas.get_mut("FailTaskRequest").and_then(object)
            && let Some(message) = fail.properties.get_mut("error_message").and_then(object)
        {
            message.max_length = Some(MAX_ERROR_CHARS);
        }
    }
    let parameters = doc.paths.paths.iter_mut().flat_map(|(path, item)| {
        [&mut item.get, &mut item.post]
            .into_iter()
            .flatten()
            .flat_map(|operation| operation.parameters.iter_mut().flatten())
            .map(move |parameter| (path.as_str(), parameter))
    });
    for (path, parameter) in parameters {
        let schema = parameter.schema.as_mut().and_then(object);
        match (path, parameter.name.as_str(), schema) {
            ("/api/v1/jobs/{job_id}/tasks", "page_size", Some(schema)) => {
                schema.maximum = Some(Number::UInt(to_usize(config.max_tasks_per_response.max(1))));
            }
            // What the command side accepts as a key (1 to 256 bytes; header values are
            // ASCII).
            ("/api/v1/jobs", "Idempotency-Key", Some(schema)) => {
                schema.min_length = Some(1);
                schema.max_length = Some(MAX_IDEMPOTENCY_KEY_BYTES);
            }
            // Integers are 64-bit: beyond is out of range (422).
            (_, _, Some(schema))
                if schema.format == Some(SchemaFormat::KnownFormat(KnownFormat::Int64))
                    && schema.maximum.is_none() =>
            {
                schema.maximum = Some(Number::Int(isize::MAX));
            }
            _ => {}
        }
    }
    doc
}

/// The object schema behind `schema`, if it is one (not a reference, not a composition).
fn object(schema: &mut RefOr<Schema>) -> Option<&mut Object> {
    match schema {
        RefOr::T(Schema::Object(object)) => Some(object),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn the_document_announces_the_servers_limits() {
        let limits = Limits {
            max_tasks_per_job: 20,
            ..Limits::default()
        };
        let config = RestConfig {
            max_tasks_per_response: 500,
        };
        let doc = serde_json::to_value(openapi_for(&limits, &config)).unwrap();
        let submit = &doc["components"]["schemas"]["SubmitJobRequest"]["properties"];
        assert_eq!(submit["num_tasks"]["maximum"], 20);
        assert_eq!(submit["num_tasks"]["minimum"], 1);
        assert_eq!(submit["max_attempts"]["maximum"], limits.max_attempts_limit);
        assert_eq!(
            submit["timeout_seconds"]["maximum"],
            limits.max_timeout_seconds
        );
        assert_eq!(submit["job_type"]["maxLength"], limits.max_job_type_len);
        let page_size = doc["paths"]["/api/v1/jobs/{job_id}/tasks"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "page_size")
            .unwrap();
        assert_eq!(page_size["schema"]["maximum"], 500);
        // A validation error's `loc` holds names and positions; its `input` is whatever was sent.
        let field_error = &doc["components"]["schemas"]["FieldError"]["properties"];
        assert_eq!(
            field_error["loc"]["items"]["type"],
            json!(["string", "integer"])
        );
        assert!(
            field_error["input"].get("type").is_none(),
            "{}",
            field_error["input"]
        );
    }

    #[test]
    fn paths_are_matched_against_the_documents_templates() {
        assert!(matches_template("/api/v1/jobs", "/api/v1/jobs"));
        assert!(matches_template(
            "/api/v1/jobs/{job_id}/tasks",
            "/api/v1/jobs/abc/tasks"
        ));
        assert!(!matches_template(
            "/api/v1/jobs/{job_id}/tasks",
            "/api/v1/jobs//tasks"
        ));
        assert!(!matches_template(
            "/api/v1/jobs/{job_id}",
            "/api/v1/jobs/a/b"
        ));
        assert!(!matches_template("/api/v1/jobs", "/api/v1/job"));
        assert!(!matches_template("/api/v1/jobs", "/api/v1/jobs/"));
    }
}
