//! `GET /health`: 200 with the database connected, 503 (and the original's body) when it does
//! not answer. The router is called in-process.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use shoal_api::snapshot::{JobSnapshot, SnapshotError, StreamSnapshots, TaskSnapshot};
use shoal_domain::{JobId, TaskId};
use shoal_infra::db::Database;
use shoal_infra::readmodel::ReadModelStore;
use shoal_infra::testing;
use shoal_query_api::rest::{self, RestConfig};
use tower::ServiceExt;

/// No event streams: `/health` never reads them.
#[derive(Debug)]
struct NoStreams;

#[async_trait]
impl StreamSnapshots for NoStreams {
    async fn job_snapshot(&self, _: JobId) -> Result<Option<JobSnapshot>, SnapshotError> {
        Ok(None)
    }

    async fn task_snapshot(&self, _: TaskId) -> Result<Option<TaskSnapshot>, SnapshotError> {
        Ok(None)
    }
}

async fn health(database: &Database) -> (StatusCode, Value) {
    let router = rest::router(
        ReadModelStore::new(database.clone()),
        Arc::new(NoStreams),
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
