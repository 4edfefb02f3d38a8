//! `retryFailedTasks` on a big job reads only the tasks that failed, a page at a time, through
//! the log's index by job (SQLite; Postgres when `SHOAL_TEST_DATABASE_URL` is set).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use shoal_command_api::commands::{CommandService, SubmitJobInput};
use shoal_command_api::orchestrator::{Orchestrator, OrchestratorConfig};
use shoal_domain::{JobStatus, Limits, Split, TaskId, TaskStatus};
use shoal_infra::db::Database;
use shoal_infra::eventlog::{
    AppendBatch, AppendOutcome, EventLog, EventStream, LogPosition, LogResult, RecordedEvent,
};
use shoal_infra::queue::{SqlQueue, TaskQueue};
use shoal_infra::testing;
use uuid::Uuid;

/// Counts the task streams read, and the largest single read.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn EventLog>,
    streams_read: AtomicUsize,
    largest_read: AtomicUsize,
}

#[async_trait::async_trait]
impl EventLog for Counting {
    async fn append(&self, batch: AppendBatch) -> LogResult<AppendOutcome> {
        self.inner.append(batch).await
    }
    async fn read_all(&self, after: LogPosition, limit: i64) -> LogResult<Vec<RecordedEvent>> {
        self.inner.read_all(after, limit).await
    }
    async fn read_stream(&self, stream_id: &str, after: i64) -> LogResult<Vec<RecordedEvent>> {
        self.inner.read_stream(stream_id, after).await
    }
    async fn read_streams(&self, stream_ids: &[String]) -> LogResult<Vec<RecordedEvent>> {
        self.streams_read
            .fetch_add(stream_ids.len(), Ordering::SeqCst);
        self.largest_read
            .fetch_max(stream_ids.len(), Ordering::SeqCst);
        self.inner.read_streams(stream_ids).await
    }
    async fn read_positions(&self, positions: &[i64]) -> LogResult<Vec<RecordedEvent>> {
        self.inner.read_positions(positions).await
    }
    async fn read_job(
        &self,
        job_id: Uuid,
        after: LogPosition,
        limit: i64,
    ) -> LogResult<Vec<RecordedEvent>> {
        self.inner.read_job(job_id, after, limit).await
    }
    async fn job_failed_task_streams(
        &self,
        job_id: Uuid,
        after: Option<&str>,
        limit: i64,
    ) -> LogResult<Vec<String>> {
        self.inner
            .job_failed_task_streams(job_id, after, limit)
            .await
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

async fn retry_reads_only_failed_tasks_a_page_at_a_time(db: Database) {
    const TASKS: u32 = 3_000;
    const PAGE: usize = 50;
    let counting = Arc::new(Counting {
        inner: db.event_log(),
        streams_read: AtomicUsize::new(0),
        largest_read: AtomicUsize::new(0),
    });
    let service = CommandService::new(counting.clone(), Limits::default()).with_chunk_size(PAGE);
    let queue: Arc<dyn TaskQueue> = Arc::new(SqlQueue::for_database(&db));
    let mut orchestrator = Orchestrator::new(
        OrchestratorConfig::default(),
        db.event_log(),
        queue,
        db.clone(),
    )
    .unwrap();
    let job = service
        .submit_job(SubmitJobInput {
            job_type: "noop".into(),
            split: Split::Total { total_tasks: TASKS },
            parameters: Value::Null,
            max_attempts: Some(1),
            timeout_seconds: None,
            idempotency_key: None,
            fallback_handler: None,
            priority: None,
        })
        .await
        .unwrap()
        .job;
    orchestrator.run_until_idle().await.unwrap();
    // Every 20th task fails for good (150 of 3,000); the others complete.
    let failing: Vec<u32> = (0..TASKS).step_by(20).collect();
    for index in 0..TASKS {
        let task_id = TaskId::for_task(job.job_id, index);
        service.start_task(task_id).await.unwrap();
        if index % 20 == 0 {
            service
                .fail_task(task_id, Some("boom".into()))
                .await
                .unwrap();
        } else {
            service.complete_task(task_id, None, None).await.unwrap();
        }
    }
    for _ in 0..50 {
        orchestrator.run_until_idle().await.unwrap();
        if service.job_snapshot(job.job_id).await.unwrap().status == JobStatus::Failed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        service.job_snapshot(job.job_id).await.unwrap().status,
        JobStatus::Failed
    );

    counting.streams_read.store(0, Ordering::SeqCst);
    let outcome = service.retry_failed_tasks(job.job_id).await.unwrap();
    assert_eq!(outcome.retried_tasks, failing.len() as u32);
    // Only the failed tasks' streams were read (once to count, once to retry), never the
    // job's 3,000, and never more than a page at once.
    let read = counting.streams_read.load(Ordering::SeqCst);
    assert!(read <= 2 * failing.len(), "read {read} task streams");
    assert!(counting.largest_read.load(Ordering::SeqCst) <= PAGE);
    for index in failing {
        let task = service
            .task_snapshot(TaskId::for_task(job.job_id, index))
            .await
            .unwrap();
        assert_eq!(task.status, TaskStatus::Retrying, "task {index}");
    }
    // A second request finds nothing left to retry.
    assert!(service.retry_failed_tasks(job.job_id).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_retry_reads_only_failed_tasks_a_page_at_a_time() {
    retry_reads_only_failed_tasks_a_page_at_a_time(Database::Sqlite(testing::fresh_sqlite().await))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_retry_reads_only_failed_tasks_a_page_at_a_time() {
    let Some(pool) = testing::fresh_postgres().await else {
        return;
    };
    retry_reads_only_failed_tasks_a_page_at_a_time(Database::Postgres(pool)).await;
}
