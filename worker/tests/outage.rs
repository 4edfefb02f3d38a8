//! Event log outages while workers hold messages: on the SQL queue (SQLite; Postgres when
//! `SHOAL_TEST_DATABASE_URL` is set) and on SQS (moto, when `moto_server` is available).
//!
//! The log is wrapped in a switch that makes every call fail as a database would. While it is
//! off, the worker must hold what it has (its heartbeat keeps the messages hidden, well past
//! their visibility timeout), receive nothing new, and use none of a message's receives; once
//! it is back, every task completes with one start and one end, and no message was delivered
//! twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use serde_json::json;
use shoal_domain::{Event, JobId, TaskState, TaskStatus, evolve_task};
use shoal_infra::eventlog::{
    AppendBatch, AppendOutcome, EventLog, EventStream, LogError, LogPosition, LogResult,
    PostgresEventLog, RecordedEvent, SqliteEventLog,
};
use shoal_infra::queue::{SqlQueue, TaskQueue};
use shoal_infra::testing;
use shoal_worker::{
    Handlers, Worker, WorkerConfig, WorkerError, WorkerMetrics, WorkerStats, handler_fn,
};
use support::{JobSpec, submit, task_events};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A log that fails every call with a database error while `down`.
#[derive(Debug)]
struct Switched {
    inner: Arc<dyn EventLog>,
    down: AtomicBool,
}

impl Switched {
    /// `inner`, up.
    fn over(inner: Arc<dyn EventLog>) -> Arc<Switched> {
        Arc::new(Switched {
            inner,
            down: AtomicBool::new(false),
        })
    }

    fn check(&self) -> LogResult<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(LogError::Database(sqlx::Error::PoolTimedOut))
        } else {
            Ok(())
        }
    }
}

/// A worker running on `log` until the sender is used or dropped: its live counters, the
/// sender, and what it returns.
fn spawn_worker(
    config: WorkerConfig,
    handlers: Handlers,
    log: Arc<Switched>,
    queue: Arc<dyn TaskQueue>,
) -> (
    Arc<WorkerMetrics>,
    oneshot::Sender<()>,
    JoinHandle<Result<WorkerStats, WorkerError>>,
) {
    let worker = Worker::new(config, handlers, log, queue);
    let metrics = worker.metrics();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    (metrics, stop, running)
}

#[async_trait::async_trait]
impl EventLog for Switched {
    async fn append(&self, batch: AppendBatch) -> LogResult<AppendOutcome> {
        self.check()?;
        self.inner.append(batch).await
    }
    async fn append_many(&self, batches: Vec<AppendBatch>) -> Vec<LogResult<AppendOutcome>> {
        if self.check().is_err() {
            return batches
                .iter()
                .map(|_| Err(LogError::Database(sqlx::Error::PoolTimedOut)))
                .collect();
        }
        self.inner.append_many(batches).await
    }
    async fn read_all(&self, after: LogPosition, limit: i64) -> LogResult<Vec<RecordedEvent>> {
        self.check()?;
        self.inner.read_all(after, limit).await
    }
    async fn read_stream(&self, stream_id: &str, after: i64) -> LogResult<Vec<RecordedEvent>> {
        self.check()?;
        self.inner.read_stream(stream_id, after).await
    }
    async fn read_streams(&self, stream_ids: &[String]) -> LogResult<Vec<RecordedEvent>> {
        self.check()?;
        self.inner.read_streams(stream_ids).await
    }
    async fn read_positions(&self, positions: &[i64]) -> LogResult<Vec<RecordedEvent>> {
        self.check()?;
        self.inner.read_positions(positions).await
    }
    async fn head(&self) -> LogResult<LogPosition> {
        self.check()?;
        self.inner.head().await
    }
    async fn forget_idempotency_keys(
        &self,
        used_before: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> LogResult<u64> {
        self.check()?;
        self.inner.forget_idempotency_keys(used_before, limit).await
    }
    async fn load_checkpoint(&self, name: &str) -> LogResult<LogPosition> {
        self.check()?;
        self.inner.load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, position: LogPosition) -> LogResult<()> {
        self.check()?;
        self.inner.save_checkpoint(name, position).await
    }
    fn subscribe(&self, after: LogPosition, batch_size: i64) -> EventStream {
        self.inner.subscribe(after, batch_size)
    }
}

async fn wait_for(log: &dyn EventLog, job: (JobId, u32), status: TaskStatus, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let states: Vec<TaskState> = task_events(log, job)
            .await
            .iter()
            .map(|events| events.iter().fold(TaskState::default(), evolve_task))
            .collect();
        if states.iter().all(|s| s.status == status) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tasks not {status} in time: {:?}",
            states.iter().map(|s| s.status).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The scenario, on any queue: `visibility` is the queue's visibility timeout (the outage
/// lasts several of them).
async fn outage_uses_no_receives(
    log: Arc<dyn EventLog>,
    queue: Arc<dyn TaskQueue>,
    visibility: Duration,
) {
    let switched = Switched::over(log.clone());
    // Handlers run until the test lets them finish.
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    let mut handlers = Handlers::builtin(&WorkerConfig::default());
    handlers.register(
        "slow",
        handler_fn(move |_task| {
            let gate = gate.clone();
            async move {
                while !gate.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(Some(json!({"ok": true})))
            }
        }),
    );
    let config = WorkerConfig {
        worker_id: "w-outage".into(),
        concurrency: 8,
        visibility_timeout: visibility,
        long_poll: Duration::from_millis(200),
        grace_period: Duration::from_secs(10),
        ..WorkerConfig::default()
    };
    let (metrics, stop, running) = spawn_worker(config, handlers, switched.clone(), queue.clone());

    // Four tasks start, then the log goes down while their handlers run.
    let first = submit(log.as_ref(), queue.as_ref(), JobSpec::new("slow", 4))
        .await
        .key();
    wait_for(
        log.as_ref(),
        first,
        TaskStatus::Running,
        Duration::from_secs(30),
    )
    .await;
    switched.down.store(true, Ordering::SeqCst);
    open.store(true, Ordering::SeqCst);
    // Their ends cannot be recorded: the worker notices, and holds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.held_on_errors.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never met the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A long poll already waiting when the log failed ends (its wait is 1 s at most here);
    // then more work arrives during the outage, and the worker leaves it in the queue.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(metrics.received.load(Ordering::Relaxed), 4);
    let second = submit(log.as_ref(), queue.as_ref(), JobSpec::new("slow", 4))
        .await
        .key();
    tokio::time::sleep(visibility * 4).await;
    assert_eq!(
        metrics.received.load(Ordering::Relaxed),
        4,
        "nothing is received while the log fails"
    );
    let depth = queue.depth().await.unwrap();
    assert_eq!(
        (depth.in_flight, depth.visible),
        (4, 4),
        "the held messages stay hidden, the others wait: {depth:?}"
    );

    // Back: everything completes, each message delivered once.
    switched.down.store(false, Ordering::SeqCst);
    wait_for(
        log.as_ref(),
        first,
        TaskStatus::Completed,
        Duration::from_secs(60),
    )
    .await;
    wait_for(
        log.as_ref(),
        second,
        TaskStatus::Completed,
        Duration::from_secs(60),
    )
    .await;
    let _ = stop.send(());
    let stats = running.await.unwrap().unwrap();
    for job in [first, second] {
        for events in task_events(log.as_ref(), job).await {
            let starts = events
                .iter()
                .filter(|e| matches!(e, Event::TaskStarted(_)))
                .count();
            let ends = events
                .iter()
                .filter(|e| matches!(e, Event::TaskCompleted(_)))
                .count();
            assert_eq!((starts, ends), (1, 1), "{events:?}");
        }
    }
    assert_eq!(stats.received, 8, "no message came back: {stats:?}");
    assert_eq!(stats.released, 0, "{stats:?}");
    assert_eq!(stats.taken_over, 0, "{stats:?}");
    assert_eq!(stats.completed, 8, "{stats:?}");
    assert!(stats.held_on_errors > 0, "{stats:?}");
}

/// The log is down before quick first attempts run: their handlers run once, before their
/// starts are recorded (ADR 27), and each start and end is recorded once the log is back;
/// the handlers do not run again and the messages stay hidden meanwhile.
async fn quick_attempts_run_once_through_an_outage(
    log: Arc<dyn EventLog>,
    queue: Arc<dyn TaskQueue>,
    visibility: Duration,
) {
    let switched = Switched::over(log.clone());
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let mut handlers = Handlers::builtin(&WorkerConfig::default());
    handlers.register(
        "quick",
        handler_fn(move |_task| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok(Some(json!({"ok": true}))) }
        }),
    );
    let job = submit(log.as_ref(), queue.as_ref(), JobSpec::new("quick", 4))
        .await
        .key();
    switched.down.store(true, Ordering::SeqCst);
    let config = WorkerConfig {
        worker_id: "w-outage".into(),
        visibility_timeout: visibility,
        long_poll: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    let (metrics, stop, running) = spawn_worker(config, handlers, switched.clone(), queue.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while calls.load(Ordering::SeqCst) < 4 || metrics.held_on_errors.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the handlers never ran, or the worker never met the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(visibility * 4).await;
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.in_flight, depth.visible), (4, 0), "{depth:?}");
    for events in task_events(log.as_ref(), job).await {
        assert_eq!(
            events.len(),
            1,
            "nothing recorded while the log is down: {events:?}"
        );
    }

    switched.down.store(false, Ordering::SeqCst);
    wait_for(
        log.as_ref(),
        job,
        TaskStatus::Completed,
        Duration::from_secs(60),
    )
    .await;
    let _ = stop.send(());
    let stats = running.await.unwrap().unwrap();
    for events in task_events(log.as_ref(), job).await {
        let kinds: Vec<&str> = events.iter().map(Event::event_type).collect();
        assert_eq!(kinds, ["TaskEnqueued", "TaskStarted", "TaskCompleted"]);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4, "each handler ran once");
    assert_eq!(stats.received, 4, "no message came back: {stats:?}");
    assert_eq!((stats.completed, stats.released), (4, 0), "{stats:?}");
    assert!(queue.depth().await.unwrap().in_flight == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_quick_attempts_run_once_through_an_outage() {
    let pool = testing::fresh_sqlite().await;
    let log: Arc<dyn EventLog> = Arc::new(SqliteEventLog::new(pool.clone()));
    let queue = SqlQueue::sqlite(pool)
        .with_poll_interval(Duration::from_millis(25))
        .with_max_receives(1);
    quick_attempts_run_once_through_an_outage(log, Arc::new(queue), Duration::from_millis(600))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_quick_attempts_run_once_through_an_outage() {
    let Some(pool) = testing::fresh_postgres().await else {
        return;
    };
    let log: Arc<dyn EventLog> = Arc::new(PostgresEventLog::new(pool.clone()));
    let queue = SqlQueue::postgres(pool)
        .with_poll_interval(Duration::from_millis(25))
        .with_max_receives(1);
    quick_attempts_run_once_through_an_outage(log, Arc::new(queue), Duration::from_millis(600))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_log_outage_uses_no_receives_and_tasks_complete_after_it() {
    let pool = testing::fresh_sqlite().await;
    let log: Arc<dyn EventLog> = Arc::new(SqliteEventLog::new(pool.clone()));
    let queue = SqlQueue::sqlite(pool)
        .with_poll_interval(Duration::from_millis(25))
        .with_max_receives(1);
    outage_uses_no_receives(log, Arc::new(queue), Duration::from_millis(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_log_outage_uses_no_receives_and_tasks_complete_after_it() {
    let Some(pool) = testing::fresh_postgres().await else {
        return;
    };
    let log: Arc<dyn EventLog> = Arc::new(PostgresEventLog::new(pool.clone()));
    let queue = SqlQueue::postgres(pool)
        .with_poll_interval(Duration::from_millis(25))
        .with_max_receives(1);
    outage_uses_no_receives(log, Arc::new(queue), Duration::from_millis(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_log_outage_uses_no_receives_and_tasks_complete_after_it() {
    // One receive only: a second would dead-letter the message.
    let Some(queue) = testing::fresh_sqs_queue("outage", 1).await else {
        return;
    };
    let log: Arc<dyn EventLog> = Arc::new(SqliteEventLog::new(testing::fresh_sqlite().await));
    outage_uses_no_receives(log, Arc::new(queue), Duration::from_secs(1)).await;
}
