//! `GET /health`: 200 with the database connected, 503 (and the original's body) when it does
//! not answer. The router is called in-process.

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use shoal_command_api::commands::CommandService;
use shoal_domain::Limits;
use shoal_infra::db::Database;
use shoal_infra::readmodel::ReadModelStore;
use shoal_infra::testing;
use shoal_query_api::rest::{self, RestConfig};
use tower::ServiceExt;

async fn health(database: &Database) -> (StatusCode, Value) {
    let router = rest::api(
        CommandService::new(database.event_log(), Limits::default()),
        ReadModelStore::new(database.clone()),
        RestConfig::default(),
    );
    let response = router
        .oneshot(Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn healthy_while_the_database_answers_and_503_when_it_is_gone() {
    let database = Database::Sqlite(testing::fresh_sqlite().await);
    assert_eq!(
        health(&database).await,
        (
            StatusCode::OK,
            json!({ "status": "healthy", "database": "connected" })
        )
    );

    // The pool closes (the database is gone): the service still answers, with 503.
    database.close().await;
    assert_eq!(
        health(&database).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "unhealthy", "database": "disconnected" })
        )
    );
}
