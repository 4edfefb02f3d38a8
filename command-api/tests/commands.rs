//! `CommandService` against a log that fails on purpose (SQLite underneath): conflicts are
//! retried, infrastructure failures become `INTERNAL` without leaking details, and replays are
//! reported.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{Request, header};
use serde_json::{Value, json};
use shoal_command_api::commands::{CommandError, CommandService, SubmitJobInput};
use shoal_command_api::graphql;
use shoal_domain::{JobStatus, Limits, Split};
use shoal_infra::eventlog::{
    AppendBatch, AppendOutcome, EventLog, EventStream, LogError, LogPosition, LogResult,
    RecordedEvent, SqliteEventLog,
};
use shoal_infra::testing;
use tower::ServiceExt;

/// Delegates to a real log, but fails the next `conflicts` appends with `Conflict`, and every
/// append with `Invalid` while `broken`.
#[derive(Debug)]
struct Faulty {
    inner: Arc<dyn EventLog>,
    conflicts: AtomicUsize,
    broken: AtomicBool,
}

#[async_trait::async_trait]
impl EventLog for Faulty {
    async fn append(&self, batch: AppendBatch) -> LogResult<AppendOutcome> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(LogError::Invalid("secret detail of the database".into()));
        }
        let take = self
            .conflicts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if take.is_ok() {
            return Err(LogError::Conflict {
                stream_id: batch.streams[0].stream_id.clone(),
                expected: 0,
            });
        }
        self.inner.append(batch).await
    }
    async fn read_all(&self, after: LogPosition, limit: i64) -> LogResult<Vec<RecordedEvent>> {
        self.inner.read_all(after, limit).await
    }
    async fn read_stream(&self, stream_id: &str, after: i64) -> LogResult<Vec<RecordedEvent>> {
        self.inner.read_stream(stream_id, after).await
    }
    async fn read_streams(&self, stream_ids: &[String]) -> LogResult<Vec<RecordedEvent>> {
        self.inner.read_streams(stream_ids).await
    }
    async fn read_positions(&self, positions: &[i64]) -> LogResult<Vec<RecordedEvent>> {
        self.inner.read_positions(positions).await
    }
    async fn head(&self) -> LogResult<LogPosition> {
        self.inner.head().await
    }
    async fn forget_idempotency_keys(
        &self,
        used_before: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> LogResult<u64> {
        self.inner.forget_idempotency_keys(used_before, limit).await
    }
    async fn load_checkpoint(&self, name: &str) -> LogResult<LogPosition> {
        self.inner.load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, position: LogPosition) -> LogResult<()> {
        self.inner.save_checkpoint(name, position).await
    }
    fn subscribe(&self, after: LogPosition, batch_size: i64) -> EventStream {
        self.inner.subscribe(after, batch_size)
    }
}

async fn faulty() -> (Arc<Faulty>, CommandService) {
    let log = Arc::new(Faulty {
        inner: Arc::new(SqliteEventLog::new(testing::fresh_sqlite().await)),
        conflicts: AtomicUsize::new(0),
        broken: AtomicBool::new(false),
    });
    let service = CommandService::new(log.clone(), Limits::default());
    (log, service)
}

fn input(total_tasks: u32, key: Option<&str>) -> SubmitJobInput {
    SubmitJobInput {
        job_type: "t".into(),
        split: Split::Total { total_tasks },
        parameters: Value::Null,
        max_attempts: None,
        timeout_seconds: None,
        idempotency_key: key.map(str::to_owned),
        fallback_handler: None,
        priority: None,
    }
}

async fn post(service: CommandService, query: &str, variables: Value) -> Value {
    let app = graphql::router(graphql::schema(service));
    let body = json!({ "query": query, "variables": variables }).to_string();
    let request = Request::post("/graphql")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn replays_are_reported_and_return_the_first_job() {
    let (_, service) = faulty().await;
    let first = service.submit_job(input(2, Some("k"))).await.unwrap();
    assert!(!first.replayed);
    assert_eq!(first.job.status, JobStatus::Pending);
    assert_eq!(first.job.version, 1);
    let again = service.submit_job(input(7, Some("k"))).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.job, first.job);
}

#[tokio::test]
async fn conflicts_are_retried_then_reported_as_retryable() {
    let (log, service) = faulty().await;
    let job = service.submit_job(input(1, None)).await.unwrap().job.job_id;

    log.conflicts.store(2, Ordering::SeqCst);
    let cancelled = service.cancel_job(job, None).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);

    let other = service.submit_job(input(1, None)).await.unwrap().job.job_id;
    log.conflicts.store(usize::MAX, Ordering::SeqCst);
    let error = service.cancel_job(other, None).await.unwrap_err();
    assert!(matches!(error, CommandError::Conflict), "{error:?}");
    let response = post(
        service.clone(),
        "mutation($id: ID!) { cancelJob(id: $id) { id } }",
        json!({"id": other.to_string()}),
    )
    .await;
    assert_eq!(response["errors"][0]["extensions"]["code"], "CONFLICT");
    log.conflicts.store(0, Ordering::SeqCst);
    assert_eq!(
        service.job_snapshot(other).await.unwrap().status,
        JobStatus::Pending
    );
}

#[tokio::test]
async fn infrastructure_errors_are_internal_and_hide_details() {
    let (log, service) = faulty().await;
    log.broken.store(true, Ordering::SeqCst);
    let error = service.submit_job(input(1, None)).await.unwrap_err();
    assert!(matches!(error, CommandError::Infrastructure(_)));
    assert_eq!(error.to_string(), "internal error");

    let response = post(
        service,
        "mutation { submitJob(input: {jobType: \"t\", totalTasks: 1}) { id } }",
        json!({}),
    )
    .await;
    let error = &response["errors"][0];
    assert_eq!(error["extensions"]["code"], "INTERNAL");
    assert_eq!(error["message"], "internal error");
    assert!(!response.to_string().contains("secret"), "{response}");
}
