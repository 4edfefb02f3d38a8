//! The orchestrator's reconciler: nothing stays ENQUEUED or RUNNING for good. On the SQL
//! queue (SQLite; Postgres when `SHOAL_TEST_DATABASE_URL` is set) and on SQS (moto, when
//! `moto_server` is available). Jobs come in through the command API (GraphQL's and REST's
//! service), the orchestrator relays them, and the test plays the workers and the faults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use serde_json::Value;
use shoal_command_api::commands::{CommandService, SubmitJobInput};
use shoal_command_api::orchestrator::{Orchestrator, OrchestratorConfig};
use shoal_domain::{
    Event, JobId, JobStatus, Limits, Split, TaskId, TaskState, TaskStatus, evolve_task,
};
use shoal_infra::db::Database;
use shoal_infra::eventlog::EventLog;
use shoal_infra::queue::{Delivery, SqlQueue, TaskQueue};
use shoal_infra::testing;
use tower::ServiceExt;

struct Harness {
    db: Database,
    log: Arc<dyn EventLog>,
    queue: Arc<dyn TaskQueue>,
    service: CommandService,
    orchestrator: Orchestrator,
}

fn config() -> OrchestratorConfig {
    OrchestratorConfig {
        reconcile_min_age: Duration::ZERO,
        reconcile_grace: Duration::ZERO,
        ..OrchestratorConfig::default()
    }
}

impl Harness {
    fn on(db: Database, queue: Arc<dyn TaskQueue>) -> Harness {
        let log = db.event_log();
        Harness {
            service: CommandService::new(log.clone(), Limits::default()),
            orchestrator: Orchestrator::new(config(), log.clone(), queue.clone(), db.clone())
                .unwrap(),
            db,
            log,
            queue,
        }
    }

    async fn sqlite() -> Harness {
        let db = Database::Sqlite(testing::fresh_sqlite().await);
        let queue = Arc::new(SqlQueue::for_database(&db).with_max_receives(2));
        Harness::on(db, queue)
    }

    async fn postgres() -> Option<Harness> {
        let db = Database::Postgres(testing::fresh_postgres().await?);
        let queue = Arc::new(SqlQueue::for_database(&db).with_max_receives(2));
        Some(Harness::on(db, queue))
    }

    async fn sqs(test: &str) -> Option<Harness> {
        let queue = Arc::new(testing::fresh_sqs_queue(test, 2).await?);
        let db = Database::Sqlite(testing::fresh_sqlite().await);
        Some(Harness::on(db, queue))
    }

    /// Submits a job and lets the orchestrator create and relay its tasks.
    async fn submit(&mut self, tasks: u32, max_attempts: u32, timeout_seconds: u32) -> JobId {
        let submitted = self
            .service
            .submit_job(SubmitJobInput {
                job_type: "noop".into(),
                split: Split::Total { total_tasks: tasks },
                parameters: Value::Null,
                max_attempts: Some(max_attempts),
                timeout_seconds: Some(timeout_seconds),
                idempotency_key: None,
                fallback_handler: None,
                priority: None,
            })
            .await
            .unwrap();
        self.settle().await;
        submitted.job.job_id
    }

    /// Lets the orchestrator catch up with every event in the log (on Postgres, a commit
    /// becomes readable only once older transactions on the server have ended).
    async fn settle(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            self.orchestrator.run_until_idle().await.unwrap();
            let total: i64 = match &self.db {
                Database::Sqlite(pool) => sqlx::query_scalar("SELECT count(*) FROM events")
                    .fetch_one(pool)
                    .await
                    .unwrap(),
                Database::Postgres(pool) => sqlx::query_scalar("SELECT count(*) FROM events")
                    .fetch_one(pool)
                    .await
                    .unwrap(),
            };
            if self.orchestrator.metrics().events_processed() >= total as u64 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the orchestrator is stuck"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn events(&self, task_id: TaskId) -> Vec<Event> {
        self.log
            .read_stream(&task_id.stream_id(), 0)
            .await
            .unwrap()
            .iter()
            .map(|r| Event::decode(&r.event_type, r.schema_version, r.data.get()).unwrap())
            .collect()
    }

    async fn state(&self, task_id: TaskId) -> TaskState {
        self.events(task_id)
            .await
            .iter()
            .fold(TaskState::default(), evolve_task)
    }

    async fn receive(&self, max: usize) -> Vec<Delivery> {
        let mut got = Vec::new();
        for _ in 0..20 {
            got.extend(
                self.queue
                    .receive(
                        max - got.len(),
                        Duration::from_secs(30),
                        Duration::from_millis(500),
                    )
                    .await
                    .unwrap(),
            );
            if got.len() >= max {
                break;
            }
        }
        got
    }

    /// Plays a worker: receives every message, records its attempt's start and completion,
    /// and acknowledges it.
    async fn work(&mut self, messages: usize) {
        for delivery in self.receive(messages).await {
            let message = delivery.body.unwrap();
            let task_id = TaskId::from_uuid(message.task_id);
            self.service.start_task(task_id).await.unwrap();
            self.service
                .complete_task(task_id, None, None)
                .await
                .unwrap();
            self.queue.ack(&[delivery.receipt]).await.unwrap();
        }
        self.settle().await;
    }

    async fn job_status(&self, job_id: JobId) -> JobStatus {
        self.service.job_snapshot(job_id).await.unwrap().status
    }
}

for_each_backend!(
    a_lost_message_is_requeued_with_an_event,
    a_message_dead_lettered_before_any_start_is_requeued,
    rest_running_on_a_queued_task_is_timed_out_and_retried,
    an_attempt_past_its_deadline_with_no_budget_left_fails_and_the_job_ends,
    a_live_message_and_a_running_attempt_within_its_deadline_are_left_alone,
);

async fn a_lost_message_is_requeued_with_an_event(mut h: Harness) {
    let job_id = h.submit(3, 3, 60).await;
    // The queue loses task 1's message.
    let lost = TaskId::for_task(job_id, 1);
    delete_message(&h, lost).await;

    let outcome = h.orchestrator.reconcile_step().await.unwrap();
    assert_eq!(
        (outcome.checked, outcome.requeued, outcome.timed_out),
        (3, 1, 0)
    );
    let events = h.events(lost).await;
    assert!(
        matches!(events.last(), Some(Event::TaskRequeued(e)) if e.attempt == 1),
        "{events:?}"
    );
    assert_eq!(h.state(lost).await.status, TaskStatus::Enqueued);
    assert_eq!(h.orchestrator.metrics().tasks_requeued(), 1);

    // The relay sends it again, and the job completes.
    h.settle().await;
    h.work(3).await;
    assert_eq!(h.job_status(job_id).await, JobStatus::Completed);
    // Nothing more to do.
    let outcome = h.orchestrator.reconcile_step().await.unwrap();
    assert_eq!((outcome.checked, outcome.requeued), (0, 0));
}

/// Deletes a task's message from the SQL queue, as an operator or a bug might.
async fn delete_message(h: &Harness, task_id: TaskId) {
    match &h.db {
        Database::Sqlite(pool) => {
            sqlx::query("DELETE FROM task_queue WHERE task_id = $1")
                .bind(task_id.as_uuid().to_string())
                .execute(pool)
                .await
                .unwrap();
        }
        Database::Postgres(pool) => {
            sqlx::query("DELETE FROM task_queue WHERE task_id = $1")
                .bind(task_id.as_uuid())
                .execute(pool)
                .await
                .unwrap();
        }
    }
}

async fn a_message_dead_lettered_before_any_start_is_requeued(mut h: Harness) {
    let job_id = h.submit(1, 3, 60).await;
    let task_id = TaskId::for_task(job_id, 0);
    // Two receives without a start (workers that died at once), then the queue moves it to
    // the dead letters at the next receive (max receives: 2).
    for _ in 0..2 {
        let got = h.receive(1).await;
        h.queue
            .release(&got[0].receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    assert!(
        h.queue
            .receive(1, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(h.queue.depth().await.unwrap().dead_lettered, 1);

    let outcome = h.orchestrator.reconcile_step().await.unwrap();
    assert_eq!(outcome.requeued, 1, "{outcome:?}");
    h.settle().await;
    h.work(1).await;
    assert_eq!(h.state(task_id).await.status, TaskStatus::Completed);
    assert_eq!(h.job_status(job_id).await, JobStatus::Completed);
}

async fn rest_running_on_a_queued_task_is_timed_out_and_retried(mut h: Harness) {
    let job_id = h.submit(1, 3, 1).await;
    let task_id = TaskId::for_task(job_id, 0);
    // An old worker says it runs the task (REST, no body), then is never heard of again.
    let app = shoal_command_api::rest::router(h.service.clone());
    let response = app
        .oneshot(
            Request::post(format!("/api/v1/tasks/{}/running", task_id.as_uuid()))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(h.state(task_id).await.status, TaskStatus::Running);
    // A Shoal worker receives the queued message, finds the attempt running, and skips it.
    let got = h.receive(1).await;
    h.queue.ack(&[got[0].receipt.clone()]).await.unwrap();

    // Within the deadline, nothing happens.
    let outcome = h.orchestrator.reconcile_step().await.unwrap();
    assert_eq!(outcome.timed_out, 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let outcome = h.orchestrator.reconcile_step().await.unwrap();
    assert_eq!(outcome.timed_out, 1, "{outcome:?}");
    let events = h.events(task_id).await;
    let failed = events
        .iter()
        .find_map(|e| match e {
            Event::TaskFailed(f) => Some(f.clone()),
            _ => None,
        })
        .expect("a TaskFailed");
    assert!(!failed.final_failure);
    assert!(failed.error.starts_with("timed out"), "{}", failed.error);
    assert!(matches!(events.last(), Some(Event::TaskRetryScheduled(r)) if r.attempt == 2));
    assert_eq!(h.orchestrator.metrics().tasks_timed_out(), 1);

    // The retry is relayed (after its backoff) and runs.
    h.settle().await;
    h.work(1).await;
    let state = h.state(task_id).await;
    assert_eq!((state.status, state.attempt), (TaskStatus::Completed, 2));
    assert_eq!(h.job_status(job_id).await, JobStatus::Completed);
}

async fn an_attempt_past_its_deadline_with_no_budget_left_fails_and_the_job_ends(mut h: Harness) {
    let job_id = h.submit(2, 1, 1).await;
    // Both start; task 0's worker dies with its message, task 1 completes.
    let got = h.receive(2).await;
    for delivery in &got {
        let task_id = TaskId::from_uuid(delivery.body.as_ref().unwrap().task_id);
        h.service.start_task(task_id).await.unwrap();
    }
    let (dead, done): (Vec<_>, Vec<_>) = got
        .into_iter()
        .partition(|d| d.body.as_ref().unwrap().task_index == 0);
    let finished = TaskId::from_uuid(done[0].body.as_ref().unwrap().task_id);
    h.service.complete_task(finished, None, None).await.unwrap();
    h.queue.ack(&[done[0].receipt.clone()]).await.unwrap();
    delete_message(
        &h,
        TaskId::from_uuid(dead[0].body.as_ref().unwrap().task_id),
    )
    .await;
    h.settle().await;

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let outcome = h.orchestrator.reconcile_step().await.unwrap();
    assert_eq!(outcome.timed_out, 1, "{outcome:?}");
    let state = h.state(TaskId::for_task(job_id, 0)).await;
    assert_eq!(state.status, TaskStatus::Failed);
    h.settle().await;
    assert_eq!(h.job_status(job_id).await, JobStatus::Failed);
}

async fn a_live_message_and_a_running_attempt_within_its_deadline_are_left_alone(mut h: Harness) {
    let job_id = h.submit(2, 3, 60).await;
    let got = h.receive(1).await;
    let running = TaskId::from_uuid(got[0].body.as_ref().unwrap().task_id);
    h.service.start_task(running).await.unwrap();
    let outcome = h.orchestrator.reconcile_step().await.unwrap();
    assert_eq!(
        (outcome.checked, outcome.requeued, outcome.timed_out),
        (2, 0, 0)
    );
    for index in 0..2 {
        let events = h.events(TaskId::for_task(job_id, index)).await;
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::TaskRequeued(_) | Event::TaskFailed(_))),
            "{events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_reads_a_bounded_slice_per_pass() {
    let db = Database::Sqlite(testing::fresh_sqlite().await);
    let queue: Arc<dyn TaskQueue> = Arc::new(SqlQueue::for_database(&db));
    let mut h = Harness::on(db.clone(), queue.clone());
    h.orchestrator = Orchestrator::new(
        OrchestratorConfig {
            reconcile_batch: 40,
            ..config()
        },
        h.log.clone(),
        queue,
        db,
    )
    .unwrap();
    let a = h.submit(50, 3, 60).await;
    let b = h.submit(30, 3, 60).await;
    for index in [0, 45] {
        delete_message(&h, TaskId::for_task(a, index)).await;
    }
    delete_message(&h, TaskId::for_task(b, 29)).await;
    let mut total = (0, 0);
    let mut passes = 0;
    loop {
        let outcome = h.orchestrator.reconcile_step().await.unwrap();
        assert!(outcome.checked <= 40, "{outcome:?}");
        total.0 += outcome.checked;
        total.1 += outcome.requeued;
        passes += 1;
        if outcome.wrapped {
            break;
        }
    }
    assert_eq!(total, (80, 3));
    assert_eq!(passes, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_a_lost_message_is_requeued_once_the_queue_has_drained() {
    let Some(mut h) = Harness::sqs("reconcile").await else {
        return;
    };
    let job_id = h.submit(2, 3, 60).await;
    // Task 0's message is lost (received and deleted without a trace); task 1's still waits.
    let got = h.receive(2).await;
    let (lost, kept): (Vec<_>, Vec<_>) = got
        .into_iter()
        .partition(|d| d.body.as_ref().unwrap().task_index == 0);
    h.queue.ack(&[lost[0].receipt.clone()]).await.unwrap();
    h.queue
        .release(&kept[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    // SQS cannot look a message up: while one is visible, the lost one might be it.
    let outcome = h.orchestrator.reconcile_step().await.unwrap();
    assert_eq!(outcome.requeued, 0, "{outcome:?}");
    h.work(1).await;
    // Drained: the task still waiting has lost its message.
    let outcome = h.orchestrator.reconcile_step().await.unwrap();
    assert_eq!(outcome.requeued, 1, "{outcome:?}");
    let events = h.events(TaskId::for_task(job_id, 0)).await;
    assert!(
        matches!(events.last(), Some(Event::TaskRequeued(_))),
        "{events:?}"
    );
    h.settle().await;
    h.work(1).await;
    assert_eq!(h.job_status(job_id).await, JobStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_rest_running_on_a_queued_task_is_timed_out_and_retried() {
    let Some(h) = Harness::sqs("reconcile-running").await else {
        return;
    };
    rest_running_on_a_queued_task_is_timed_out_and_retried(h).await;
}
