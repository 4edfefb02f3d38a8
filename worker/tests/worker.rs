//! The worker against a real event log and SQL queue: SQLite always, Postgres when
//! `SHOAL_TEST_DATABASE_URL` is set (required with `SHOAL_REQUIRE_POSTGRES=1`; see
//! `shoal_infra::testing`). Each test gets a fresh database.
//!
//! The test plays the orchestrator: it appends a job's `JobSubmitted`, `TasksCreated` and
//! `TaskEnqueued` events as the domain decides them, sends the matching messages, and relays
//! `TaskRetryScheduled` events to new messages. Then it checks the log, which is the truth.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use shoal_domain::{
    Event, JobCommand, JobState, TaskId, TaskState, TaskStatus, decide_job, evolve_job, evolve_task,
};
use shoal_infra::eventlog::{
    AppendBatch, EventLog, ExpectedVersion, PostgresEventLog, SqliteEventLog, StreamAppend,
};
use shoal_infra::queue::{
    DeadLetter, Delivery, OutgoingMessage, QueueDepth, QueueResult, Receipt, SqlQueue, TaskMessage,
    TaskQueue,
};
use shoal_infra::testing;
use shoal_worker::{
    Handlers, TaskError, Worker, WorkerConfig, WorkerError, WorkerStats, handler_fn,
};
use support::{Job, JobSpec, decode, new_event, submit, task_events};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Harness

#[derive(Clone)]
struct Env {
    log: Arc<dyn EventLog>,
    queue: SqlQueue,
}

impl Env {
    async fn sqlite() -> Env {
        let pool = testing::fresh_sqlite().await;
        Env {
            log: Arc::new(SqliteEventLog::new(pool.clone())),
            queue: SqlQueue::sqlite(pool).with_poll_interval(Duration::from_millis(25)),
        }
    }

    async fn postgres() -> Option<Env> {
        let pool = testing::fresh_postgres().await?;
        Some(Env {
            log: Arc::new(PostgresEventLog::new(pool.clone())),
            queue: SqlQueue::postgres(pool).with_poll_interval(Duration::from_millis(25)),
        })
    }

    fn queue(&self) -> Arc<dyn TaskQueue> {
        Arc::new(self.queue.clone())
    }

    /// Submits a job, creates and enqueues its tasks, and sends their messages.
    async fn submit(&self, job: JobSpec) -> Job {
        submit(self.log.as_ref(), &self.queue, job).await
    }

    async fn append(&self, stream_id: String, expected: ExpectedVersion, events: &[Event]) {
        self.log
            .append(AppendBatch {
                streams: vec![StreamAppend {
                    stream_id,
                    expected,
                    events: events.iter().map(new_event).collect(),
                }],
                ..AppendBatch::default()
            })
            .await
            .unwrap();
    }

    /// Each task's events, in index order.
    async fn task_events(&self, job: &Job) -> Vec<Vec<Event>> {
        task_events(self.log.as_ref(), job.key()).await
    }

    async fn task_states(&self, job: &Job) -> Vec<TaskState> {
        self.task_events(job)
            .await
            .iter()
            .map(|events| events.iter().fold(TaskState::default(), evolve_task))
            .collect()
    }

    /// Waits (up to 30 s) until every task of the job satisfies `done`.
    async fn wait_for_tasks(&self, job: &Job, what: &str, done: impl Fn(&TaskState) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let states = self.task_states(job).await;
            if states.iter().all(&done) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for tasks to be {what}: {:?}",
                states
                    .iter()
                    .map(|s| (s.status, s.attempt))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn depth(&self) -> QueueDepth {
        self.queue.depth().await.unwrap()
    }

    /// Plays the orchestrator's relay for retries: every `TaskRetryScheduled` of the job
    /// becomes a message for its attempt, due at its `not_before`.
    fn relay_retries(&self, job: &Job) -> Background {
        let env = self.clone();
        let job = job.clone();
        Background(tokio::spawn(async move {
            let mut sent = HashSet::new();
            loop {
                let ids: Vec<String> = (0..job.tasks)
                    .map(|i| TaskId::for_task(job.id, i).stream_id())
                    .collect();
                let records = env.log.read_streams(&ids).await.unwrap();
                let mut messages = Vec::new();
                for record in &records {
                    let Event::TaskRetryScheduled(retry) = decode(record) else {
                        continue;
                    };
                    if !sent.insert((retry.task_id, retry.attempt)) {
                        continue;
                    }
                    let first = &job.messages[retry.index as usize];
                    messages.push(OutgoingMessage {
                        body: TaskMessage {
                            attempt: retry.attempt,
                            stream_version: record.stream_version,
                            not_before: Some(retry.not_before),
                            ..first.clone()
                        },
                        delay: (retry.not_before - Utc::now()).to_std().unwrap_or_default(),
                    });
                }
                env.queue.send(messages).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }))
    }
}

/// A spawned helper, stopped when dropped.
struct Background(JoinHandle<()>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// As `shoal` runs a worker on the SQL queue: a completed task's message is deleted in the
/// commit of its end (`acks_in_commit`, ADR 31).
fn config(worker_id: &str) -> WorkerConfig {
    WorkerConfig {
        worker_id: worker_id.into(),
        acks_in_commit: true,
        long_poll: Duration::from_millis(200),
        grace_period: Duration::from_secs(10),
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        cancel_check_ttl: Duration::from_millis(100),
        ..WorkerConfig::default()
    }
}

/// A worker running in the background.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<WorkerStats, WorkerError>>,
    metrics: Arc<shoal_worker::WorkerMetrics>,
}

impl Running {
    fn start(env: &Env, config: WorkerConfig, handlers: Handlers) -> Running {
        Running::start_on(env.queue(), env, config, handlers)
    }

    /// [`Running::start`] on `queue` (the env's, wrapped).
    fn start_on(
        queue: Arc<dyn TaskQueue>,
        env: &Env,
        config: WorkerConfig,
        handlers: Handlers,
    ) -> Running {
        let worker = Worker::new(config, handlers, env.log.clone(), queue);
        let metrics = worker.metrics();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        Running {
            stop: Some(stop),
            handle,
            metrics,
        }
    }

    /// Graceful shutdown; the worker's final counters.
    async fn stop(mut self) -> WorkerStats {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(60), &mut self.handle)
            .await
            .expect("the worker stops")
            .unwrap()
            .unwrap()
    }

    /// Drops the worker without any cleanup, as a crash would.
    async fn crash(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

fn count(events: &[Event], pred: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

fn started(e: &Event) -> bool {
    matches!(e, Event::TaskStarted(_))
}

fn completed(e: &Event) -> bool {
    matches!(e, Event::TaskCompleted(_))
}

fn handlers_with(name: &str, handler: impl shoal_worker::Handler + 'static) -> Handlers {
    let mut handlers = Handlers::builtin(&WorkerConfig::default());
    handlers.register(name, handler);
    handlers
}

/// Sends a second copy of every message of the job (as if the relay had sent it twice).
async fn send_copies(env: &Env, job: &Job) {
    for message in &job.messages {
        let body = serde_json::to_string(message).unwrap();
        env.queue
            .send_raw(
                message.job_id,
                message.task_id,
                1000 + message.attempt,
                &body,
            )
            .await
            .unwrap();
    }
}

/// A job of `tasks` no-op tasks, run to completion by one worker "w1" with the built-in
/// handlers; the job and the worker's final counters.
async fn drain_noop_job(env: &Env, tasks: u32) -> (Job, WorkerStats) {
    let job = env.submit(JobSpec::new("noop", tasks)).await;
    let worker = Running::start(
        env,
        config("w1"),
        Handlers::builtin(&WorkerConfig::default()),
    );
    env.wait_for_tasks(&job, "COMPLETED", |s| s.status == TaskStatus::Completed)
        .await;
    (job, worker.stop().await)
}

/// Runs a worker "second" (default visibility timeout, a `work` handler answering
/// `{"by": worker}`) until every task of the job is COMPLETED and the queue is empty; its
/// final counters.
async fn finish_with_a_second_worker(env: &Env, job: &Job) -> WorkerStats {
    let quick = handlers_with(
        "work",
        handler_fn(|task| async move { Ok(Some(json!({"by": task.worker_id}))) }),
    );
    let second = Running::start(env, config("second"), quick);
    env.wait_for_tasks(job, "COMPLETED", |s| s.status == TaskStatus::Completed)
        .await;
    eventually("the queue to drain", || async { empty(env.depth().await) }).await;
    second.stop().await
}

/// Handlers where `name` sleeps for `sleep` and returns nothing, and the count of its calls.
fn counted_sleeper(name: &str, sleep: Duration) -> (Handlers, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let handlers = handlers_with(
        name,
        handler_fn(move |_task| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(sleep).await;
                Ok(None)
            }
        }),
    );
    (handlers, calls)
}

/// Waits until `cond` holds (up to 30 s).
async fn eventually<F, Fut>(what: &str, cond: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn empty(depth: QueueDepth) -> bool {
    depth.visible == 0 && depth.in_flight == 0 && depth.delayed == 0
}

macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Env::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(env) = super::Env::postgres().await {
                        super::$name(env).await;
                    }
                }
            )*
        }
    };
}

for_each_backend!(
    many_noop_tasks_complete_once_each,
    always_failing_task_is_retried_then_failed_and_dead_lettered,
    task_failing_once_completes_on_its_second_attempt,
    duplicate_deliveries_complete_once,
    concurrent_duplicate_deliveries_start_once,
    task_of_a_crashed_worker_is_taken_over_and_completes_once,
    heartbeat_keeps_a_long_task_from_other_workers,
    shutdown_lets_running_tasks_finish_within_the_grace_period,
    shutdown_releases_unfinished_tasks_after_a_short_grace,
    timeout_is_a_retryable_failure,
    poison_message_is_dead_lettered_and_the_worker_goes_on,
    cancelled_jobs_tasks_are_not_run,
    early_message_waits_for_its_not_before,
    unknown_handler_fails_the_task_at_once,
    a_result_the_log_cannot_store_fails_only_its_own_task,
    a_message_with_an_impossible_stream_version_is_dead_lettered,
    a_job_type_no_worker_handles_runs_nothing_and_fails_after_its_attempts,
    a_fast_attempt_records_its_start_with_its_end,
    a_slow_attempt_shows_running_while_its_handler_runs,
    copies_on_two_workers_record_one_start_and_one_end,
    a_copy_whose_start_is_recorded_second_stops_its_handler,
    a_crash_before_the_start_is_recorded_loses_nothing,
    a_crash_leaves_no_message_of_a_completed_task_behind,
);

// ---------------------------------------------------------------------------------------------
// Tests

async fn many_noop_tasks_complete_once_each(env: Env) {
    let (job, stats) = drain_noop_job(&env, 200).await;

    for events in env.task_events(&job).await {
        assert_eq!(count(&events, started), 1, "{events:?}");
        assert_eq!(count(&events, completed), 1, "{events:?}");
        assert_eq!(events.len(), 3);
    }
    assert_eq!(stats.completed, 200);
    assert_eq!(stats.received, 200);
    assert_eq!(stats.skipped_duplicates, 0);
    assert_eq!(stats.in_flight, 0);
    // 200 appends: a no-op attempt's start is appended with its end (ADR 27). Grouped, they
    // take far fewer commits.
    assert_eq!(stats.committed_batches, 200);
    assert!(stats.commits < 150, "{stats:?}");
    eprintln!(
        "{} appends in {} commits",
        stats.committed_batches, stats.commits
    );
    assert!(empty(env.depth().await), "{:?}", env.depth().await);
}

async fn always_failing_task_is_retried_then_failed_and_dead_lettered(env: Env) {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let handlers = handlers_with(
        "flaky",
        handler_fn(move |_task| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Err(TaskError::retryable("upstream unavailable")) }
        }),
    );
    let job = env.submit(JobSpec::new("flaky", 1)).await;
    let _relay = env.relay_retries(&job);
    let worker = Running::start(&env, config("w1"), handlers);
    env.wait_for_tasks(&job, "FAILED and dead-lettered", |s| {
        s.status == TaskStatus::Failed && s.dead_lettered
    })
    .await;
    let stats = worker.stop().await;

    let events = &env.task_events(&job).await[0];
    let kinds: Vec<&str> = events.iter().map(Event::event_type).collect();
    assert_eq!(
        kinds,
        [
            "TaskEnqueued",
            "TaskStarted",
            "TaskFailed",
            "TaskRetryScheduled",
            "TaskStarted",
            "TaskFailed",
            "TaskRetryScheduled",
            "TaskStarted",
            "TaskFailed",
            "TaskDeadLettered",
        ]
    );
    let Event::TaskFailed(last) = &events[8] else {
        unreachable!()
    };
    assert!(last.final_failure);
    assert_eq!(last.attempt, 3);
    assert_eq!(last.error, "upstream unavailable");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        (stats.retried, stats.failed, stats.dead_lettered),
        (2, 1, 1)
    );

    let dead = env
        .queue
        .dead_letters(Some(job.id.as_uuid()), 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "upstream unavailable");
    assert_eq!(dead[0].task_id, Some(job.messages[0].task_id));
    assert!(empty(env.depth().await));
}

async fn task_failing_once_completes_on_its_second_attempt(env: Env) {
    let handlers = handlers_with(
        "second_time_lucky",
        handler_fn(|task| async move {
            if task.attempt == 1 {
                Err(TaskError::retryable("first attempt fails"))
            } else {
                Ok(Some(json!({"attempt": task.attempt})))
            }
        }),
    );
    let job = env.submit(JobSpec::new("second_time_lucky", 3)).await;
    let _relay = env.relay_retries(&job);
    let worker = Running::start(&env, config("w1"), handlers);
    env.wait_for_tasks(&job, "COMPLETED", |s| s.status == TaskStatus::Completed)
        .await;
    let stats = worker.stop().await;

    for events in env.task_events(&job).await {
        let kinds: Vec<&str> = events.iter().map(Event::event_type).collect();
        assert_eq!(
            kinds,
            [
                "TaskEnqueued",
                "TaskStarted",
                "TaskFailed",
                "TaskRetryScheduled",
                "TaskStarted",
                "TaskCompleted"
            ]
        );
        let Event::TaskCompleted(done) = &events[5] else {
            unreachable!()
        };
        assert_eq!(done.attempt, 2);
        assert_eq!(done.result, Some(json!({"attempt": 2})));
    }
    assert_eq!((stats.retried, stats.completed, stats.failed), (3, 3, 0));
    assert!(empty(env.depth().await));
}

async fn duplicate_deliveries_complete_once(env: Env) {
    let job = env.submit(JobSpec::new("noop", 20)).await;
    // A second copy of every message (another queue row: as if the relay had sent it twice
    // under another key), before any worker runs: copies meet in one receive batch, or one
    // arrives after the other completed.
    send_copies(&env, &job).await;
    let worker = Running::start(
        &env,
        config("w1"),
        Handlers::builtin(&WorkerConfig::default()),
    );
    env.wait_for_tasks(&job, "COMPLETED", |s| s.status == TaskStatus::Completed)
        .await;
    eventually("the queue to drain", || async { empty(env.depth().await) }).await;
    let stats = worker.stop().await;

    for events in env.task_events(&job).await {
        assert_eq!(count(&events, started), 1, "{events:?}");
        assert_eq!(count(&events, completed), 1, "{events:?}");
    }
    assert_eq!(stats.received, 40);
    assert_eq!(stats.completed, 20);
    assert_eq!(stats.skipped_duplicates, 20);
    assert!(empty(env.depth().await));
}

async fn concurrent_duplicate_deliveries_start_once(env: Env) {
    let (handlers, calls) = counted_sleeper("slow", Duration::from_millis(300));
    let job = env.submit(JobSpec::new("slow", 5)).await;
    send_copies(&env, &job).await;
    // All ten deliveries fit in one receive: both copies of a task are in flight together.
    let worker = Running::start(&env, config("w1"), handlers);
    env.wait_for_tasks(&job, "COMPLETED", |s| s.status == TaskStatus::Completed)
        .await;
    eventually("the queue to drain", || async { empty(env.depth().await) }).await;
    let stats = worker.stop().await;
    assert_eq!(calls.load(Ordering::SeqCst), 5, "each task ran once");
    assert_eq!((stats.completed, stats.skipped_duplicates), (5, 5));
    for events in env.task_events(&job).await {
        assert_eq!(count(&events, started), 1, "{events:?}");
        assert_eq!(count(&events, completed), 1, "{events:?}");
    }
}

async fn task_of_a_crashed_worker_is_taken_over_and_completes_once(env: Env) {
    let short = |id: &str| WorkerConfig {
        visibility_timeout: Duration::from_millis(600),
        ..config(id)
    };
    let stuck = handlers_with(
        "work",
        handler_fn(|_task| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(None)
        }),
    );
    let job = env.submit(JobSpec::new("work", 2)).await;
    let first = Running::start(&env, short("first"), stuck);
    env.wait_for_tasks(&job, "RUNNING", |s| s.status == TaskStatus::Running)
        .await;
    first.crash().await;

    // The taker has the default visibility timeout: only the crashed worker's must run out.
    let stats = finish_with_a_second_worker(&env, &job).await;

    for events in env.task_events(&job).await {
        assert_eq!(count(&events, started), 1, "{events:?}");
        assert_eq!(count(&events, completed), 1, "{events:?}");
        let Event::TaskStarted(start) = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(start.worker, "first");
        let Event::TaskCompleted(done) = &events[2] else {
            panic!("{events:?}")
        };
        assert_eq!(done.attempt, 1);
        assert_eq!(done.result, Some(json!({"by": "second"})));
    }
    assert_eq!(stats.taken_over, 2);
    assert_eq!(stats.completed, 2);
}

async fn heartbeat_keeps_a_long_task_from_other_workers(env: Env) {
    let visibility = |id: &str| WorkerConfig {
        visibility_timeout: Duration::from_millis(1200),
        ..config(id)
    };
    let slow = || {
        handlers_with(
            "slow",
            handler_fn(|_task| async {
                tokio::time::sleep(Duration::from_millis(4000)).await;
                Ok(None)
            }),
        )
    };
    let job = env.submit(JobSpec::new("slow", 1)).await;
    let first = Running::start(&env, visibility("first"), slow());
    env.wait_for_tasks(&job, "RUNNING", |s| s.status == TaskStatus::Running)
        .await;
    // Three visibility timeouts pass while the first worker runs the task (heartbeats every
    // third of one, so a slow machine still has room).
    let second = Running::start(&env, visibility("second"), slow());
    env.wait_for_tasks(&job, "COMPLETED", |s| s.status == TaskStatus::Completed)
        .await;
    let (a, b) = (first.stop().await, second.stop().await);
    assert_eq!(a.completed, 1);
    assert_eq!(b.received, 0, "{b:?}");
    let events = &env.task_events(&job).await[0];
    assert_eq!(count(events, started), 1);
    assert!(empty(env.depth().await));
}

async fn shutdown_lets_running_tasks_finish_within_the_grace_period(env: Env) {
    let mut spec = JobSpec::new("io_bound", 4);
    spec.parameters = json!({"work_duration_seconds": 0.7});
    let job = env.submit(spec).await;
    let worker = Running::start(
        &env,
        config("w1"),
        Handlers::builtin(&WorkerConfig::default()),
    );
    env.wait_for_tasks(&job, "RUNNING", |s| s.status == TaskStatus::Running)
        .await;
    assert_eq!(worker.metrics.snapshot().in_flight, 4);
    let stats = worker.stop().await;
    // `stop` returned after the tasks ended: they are recorded and acknowledged.
    assert_eq!(stats.completed, 4);
    assert!(
        env.task_states(&job)
            .await
            .iter()
            .all(|s| s.status == TaskStatus::Completed)
    );
    assert!(empty(env.depth().await));
}

async fn shutdown_releases_unfinished_tasks_after_a_short_grace(env: Env) {
    let mut spec = JobSpec::new("io_bound", 4);
    spec.parameters = json!({"work_duration_seconds": 60});
    let job = env.submit(spec).await;
    let short_grace = WorkerConfig {
        grace_period: Duration::from_millis(200),
        ..config("first")
    };
    let worker = Running::start(
        &env,
        short_grace,
        Handlers::builtin(&WorkerConfig::default()),
    );
    env.wait_for_tasks(&job, "RUNNING", |s| s.status == TaskStatus::Running)
        .await;
    let began = std::time::Instant::now();
    let stats = worker.stop().await;
    assert!(began.elapsed() < Duration::from_secs(5));
    assert_eq!(stats.released, 4);
    assert_eq!(stats.completed, 0);
    // Visible again at once, not after the visibility timeout.
    let depth = env.depth().await;
    assert_eq!((depth.visible, depth.in_flight), (4, 0), "{depth:?}");

    // The next worker picks them up: a redelivery of a started attempt is a take-over.
    let quick = handlers_with("io_bound", shoal_worker::builtin::Noop);
    let second = Running::start(&env, config("second"), quick);
    env.wait_for_tasks(&job, "COMPLETED", |s| s.status == TaskStatus::Completed)
        .await;
    let stats = second.stop().await;
    assert_eq!(stats.taken_over, 4);
    for events in env.task_events(&job).await {
        assert_eq!(count(&events, started), 1, "{events:?}");
        assert_eq!(count(&events, completed), 1, "{events:?}");
    }
    assert!(empty(env.depth().await));
}

async fn timeout_is_a_retryable_failure(env: Env) {
    let mut spec = JobSpec::new("io_bound", 1);
    spec.parameters = json!({"work_duration_seconds": 30});
    spec.timeout_seconds = 1;
    spec.max_attempts = 2;
    let job = env.submit(spec).await;
    let _relay = env.relay_retries(&job);
    let worker = Running::start(
        &env,
        config("w1"),
        Handlers::builtin(&WorkerConfig::default()),
    );
    env.wait_for_tasks(&job, "FAILED", |s| {
        s.status == TaskStatus::Failed && s.dead_lettered
    })
    .await;
    let stats = worker.stop().await;
    let failures: Vec<_> = env.task_events(&job).await[0]
        .iter()
        .filter_map(|e| match e {
            Event::TaskFailed(f) => Some((f.attempt, f.final_failure, f.error.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        failures,
        [
            (1, false, "timed out after 1 s".to_owned()),
            (2, true, "timed out after 1 s".to_owned())
        ]
    );
    assert_eq!(stats.timed_out, 2);
}

async fn poison_message_is_dead_lettered_and_the_worker_goes_on(env: Env) {
    let job_id = uuid::Uuid::now_v7();
    env.queue
        .send_raw(job_id, uuid::Uuid::now_v7(), 1, "{not json")
        .await
        .unwrap();
    let job = env.submit(JobSpec::new("noop", 1)).await;
    let worker = Running::start(
        &env,
        config("w1"),
        Handlers::builtin(&WorkerConfig::default()),
    );
    env.wait_for_tasks(&job, "COMPLETED", |s| s.status == TaskStatus::Completed)
        .await;
    eventually("the poison message to be dead-lettered", || async {
        env.depth().await.dead_lettered == 1
    })
    .await;
    let stats = worker.stop().await;
    assert_eq!(
        (stats.poison, stats.dead_lettered, stats.completed),
        (1, 1, 1)
    );
    let dead = env.queue.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].raw, "{not json");
    assert!(
        dead[0].reason.starts_with("unparseable task message"),
        "{}",
        dead[0].reason
    );
    assert!(empty(env.depth().await));
}

async fn cancelled_jobs_tasks_are_not_run(env: Env) {
    let job = env.submit(JobSpec::new("noop", 5)).await;
    let records = env.log.read_stream(&job.id.stream_id(), 0).await.unwrap();
    let state = records
        .iter()
        .map(decode)
        .fold(JobState::default(), |s, e| evolve_job(s, &e));
    let cancel = decide_job(
        &state,
        JobCommand::CancelJob {
            reason: Some("changed my mind".into()),
            now: Utc::now(),
        },
    )
    .unwrap();
    env.append(
        job.id.stream_id(),
        ExpectedVersion::Exact(records.len() as i64),
        &cancel,
    )
    .await;
    let other = env.submit(JobSpec::new("noop", 1)).await;

    let worker = Running::start(
        &env,
        config("w1"),
        Handlers::builtin(&WorkerConfig::default()),
    );
    env.wait_for_tasks(&other, "COMPLETED", |s| s.status == TaskStatus::Completed)
        .await;
    eventually("the queue to drain", || async { empty(env.depth().await) }).await;
    let stats = worker.stop().await;
    assert_eq!(stats.skipped_cancelled, 5);
    assert_eq!(stats.completed, 1);
    for events in env.task_events(&job).await {
        assert_eq!(events.len(), 1, "only TaskEnqueued: {events:?}");
    }
}

async fn early_message_waits_for_its_not_before(env: Env) {
    let job = env.submit(JobSpec::new("noop", 1)).await;
    // The same task's message again, as a retry relay with a skewed clock might send it:
    // due in 800 ms but visible now. Take the original out of the queue first.
    env.queue.purge_job(job.id.as_uuid()).await.unwrap();
    let not_before = Utc::now() + chrono::Duration::milliseconds(800);
    env.queue
        .send(vec![OutgoingMessage {
            body: TaskMessage {
                not_before: Some(not_before),
                ..job.messages[0].clone()
            },
            delay: Duration::ZERO,
        }])
        .await
        .unwrap();
    let worker = Running::start(
        &env,
        config("w1"),
        Handlers::builtin(&WorkerConfig::default()),
    );
    env.wait_for_tasks(&job, "COMPLETED", |s| s.status == TaskStatus::Completed)
        .await;
    let stats = worker.stop().await;
    let events = &env.task_events(&job).await[0];
    let Event::TaskStarted(start) = &events[1] else {
        panic!("{events:?}")
    };
    assert!(
        start.at >= not_before,
        "started {} before {not_before}",
        start.at
    );
    assert!(stats.released >= 1);
}

async fn unknown_handler_fails_the_task_at_once(env: Env) {
    let mut spec = JobSpec::new("reports", 1);
    spec.parameters = json!({"work_type": "quantum"});
    let job = env.submit(spec).await;
    let worker = Running::start(
        &env,
        config("w1"),
        Handlers::builtin(&WorkerConfig::default()),
    );
    env.wait_for_tasks(&job, "FAILED", |s| {
        s.status == TaskStatus::Failed && s.dead_lettered
    })
    .await;
    let stats = worker.stop().await;
    let state = &env.task_states(&job).await[0];
    assert_eq!(state.attempt, 1, "not retried");
    assert!(
        state
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("no handler for"),
        "{state:?}"
    );
    assert_eq!(stats.failed, 1);
}

#[tokio::test]
async fn invalid_configuration_is_refused() {
    let env = Env::sqlite().await;
    let worker = Worker::new(
        WorkerConfig {
            concurrency: 0,
            ..WorkerConfig::default()
        },
        Handlers::new(),
        env.log.clone(),
        env.queue(),
    );
    assert!(matches!(
        worker.run(std::future::pending::<()>()).await,
        Err(WorkerError::Config(_))
    ));
}

/// A NUL character in one handler's result (Postgres stores `\u0000` neither in `jsonb` nor in
/// `text`) used to fail the whole group commit, releasing every other task in it. Now that
/// result fails its own task, clearly, and so does a result over `max_result_bytes`; a NUL in
/// an error message is replaced. Every other task completes.
async fn a_result_the_log_cannot_store_fails_only_its_own_task(env: Env) {
    let mut spec = JobSpec::new("mixed", 40);
    spec.max_attempts = 1;
    let job = env.submit(spec).await;
    let handlers = handlers_with(
        "mixed",
        handler_fn(|task| async move {
            match task.index {
                3 => Ok(Some(json!({"text": "a\u{0}b"}))),
                5 => Ok(Some(json!({"big": "x".repeat(2000)}))),
                7 => Err(TaskError::fatal("bad\u{0}news")),
                i => Ok(Some(json!({"ok": i}))),
            }
        }),
    );
    let worker = Running::start(
        &env,
        WorkerConfig {
            max_result_bytes: 1024,
            ..config("w1")
        },
        handlers,
    );
    env.wait_for_tasks(&job, "every task to end", |s| {
        s.status == TaskStatus::Completed || (s.status == TaskStatus::Failed && s.dead_lettered)
    })
    .await;
    let stats = worker.stop().await;
    let states = env.task_states(&job).await;
    for (index, state) in states.iter().enumerate() {
        let error = state.last_error.as_deref().unwrap_or_default();
        match index {
            3 => assert!(error.contains("holds a NUL character"), "{error}"),
            5 => assert!(
                error.contains("is 2010 bytes, more than the limit of 1024"),
                "{error}"
            ),
            7 => assert_eq!(error, "bad\u{FFFD}news"),
            _ => {
                assert_eq!(
                    state.status,
                    TaskStatus::Completed,
                    "task {index}: {state:?}"
                );
                continue;
            }
        }
        assert_eq!(state.status, TaskStatus::Failed, "task {index}");
        assert_eq!(state.attempt, 1, "task {index}: not retried");
    }
    assert_eq!((stats.completed, stats.failed), (37, 3));
    assert!(empty(env.depth().await) || env.depth().await.dead_lettered == 3);
}

/// A crafted message whose `stream_version` is near `i64::MAX` (the worker adds to it) is
/// dead-lettered with a clear reason, and the worker goes on.
async fn a_message_with_an_impossible_stream_version_is_dead_lettered(env: Env) {
    let job = env.submit(JobSpec::new("noop", 1)).await;
    let crafted = env.submit(JobSpec::new("noop", 1)).await;
    env.queue.purge_job(crafted.id.as_uuid()).await.unwrap();
    env.queue
        .send(vec![OutgoingMessage {
            body: TaskMessage {
                stream_version: i64::MAX,
                ..crafted.messages[0].clone()
            },
            delay: Duration::ZERO,
        }])
        .await
        .unwrap();
    let worker = Running::start(
        &env,
        config("w1"),
        Handlers::builtin(&WorkerConfig::default()),
    );
    env.wait_for_tasks(&job, "COMPLETED", |s| s.status == TaskStatus::Completed)
        .await;
    eventually("the crafted message to be dead-lettered", || async {
        env.depth().await.dead_lettered == 1
    })
    .await;
    let stats = worker.stop().await;
    assert_eq!((stats.poison, stats.completed), (1, 1));
    let dead = env.queue.dead_letters(None, 10).await.unwrap();
    assert!(
        dead[0]
            .reason
            .contains("stream_version 9223372036854775807 is out of range"),
        "{}",
        dead[0].reason
    );
    // Nothing was appended for the crafted task.
    assert_eq!(env.task_events(&crafted).await[0].len(), 1);
}

/// A job type no worker handles, without `work_type`, used to run `cpu_bound` silently and be
/// reported COMPLETED. Now it runs nothing: each attempt fails ("no handler for job type"),
/// retryably (another worker may have the handler), and the task is FAILED after its attempts.
/// Jobs of the original system's REST API keep its default (`fallback_handler: cpu_bound`).
async fn a_job_type_no_worker_handles_runs_nothing_and_fails_after_its_attempts(env: Env) {
    let mut unknown = JobSpec::new("reports", 1);
    unknown.max_attempts = 2;
    let unknown = env.submit(unknown).await;
    let mut rest = JobSpec::new("reports", 1);
    rest.parameters = json!({"work_duration_seconds": 0.01});
    rest.fallback_handler = Some("cpu_bound");
    let rest = env.submit(rest).await;
    let _relay = env.relay_retries(&unknown);
    let worker = Running::start(
        &env,
        config("w1"),
        Handlers::builtin(&WorkerConfig::default()),
    );
    env.wait_for_tasks(&rest, "COMPLETED", |s| s.status == TaskStatus::Completed)
        .await;
    env.wait_for_tasks(&unknown, "FAILED", |s| {
        s.status == TaskStatus::Failed && s.dead_lettered
    })
    .await;
    worker.stop().await;
    let state = &env.task_states(&unknown).await[0];
    assert_eq!(state.attempt, 2, "every attempt was tried: {state:?}");
    let error = state.last_error.as_deref().unwrap();
    assert!(
        error.starts_with("no handler for job type \"reports\" on this worker"),
        "{error}"
    );
    let events = &env.task_events(&unknown).await[0];
    assert_eq!(count(events, completed), 0, "{events:?}");
}

// ---------------------------------------------------------------------------------------------
// A first attempt runs before its start is recorded (ADR 27)

/// A worker that holds one message at a time, so that two copies of a message go to two
/// workers; `start_grace` as given.
fn single(worker_id: &str, start_grace: Duration) -> WorkerConfig {
    WorkerConfig {
        concurrency: 1,
        prefetch: 0,
        receive_batch: 1,
        start_grace,
        ..config(worker_id)
    }
}

/// The worker named by a task's `TaskStarted`, and the `by` of its `TaskCompleted`'s result.
fn starter_and_finisher(events: &[Event]) -> (String, String) {
    let starter = events.iter().find_map(|e| match e {
        Event::TaskStarted(s) => Some(s.worker.clone()),
        _ => None,
    });
    let finisher = events.iter().find_map(|e| match e {
        Event::TaskCompleted(c) => c.result.as_ref().map(|r| r["by"].to_string()),
        _ => None,
    });
    (
        starter.unwrap(),
        finisher.unwrap().trim_matches('"').to_owned(),
    )
}

/// The single task of `job`, run by two workers from two copies of its message: one start and
/// one end, both by one worker, which counted it completed; the other counted a duplicate.
async fn assert_one_copy_recorded(env: &Env, job: &Job, one: &WorkerStats, two: &WorkerStats) {
    let events = &env.task_events(job).await[0];
    assert_eq!(count(events, started), 1, "{events:?}");
    assert_eq!(count(events, completed), 1, "{events:?}");
    let (starter, finisher) = starter_and_finisher(events);
    assert_eq!(starter, finisher, "the start and the end are one worker's");
    assert_eq!(one.completed + two.completed, 1, "{one:?} {two:?}");
    assert_eq!(
        one.skipped_duplicates + two.skipped_duplicates,
        1,
        "{one:?} {two:?}"
    );
}

async fn a_fast_attempt_records_its_start_with_its_end(env: Env) {
    let (job, stats) = drain_noop_job(&env, 50).await;
    assert_eq!(
        stats.committed_batches, 50,
        "one append per task: {stats:?}"
    );
    let ids: Vec<String> = (0..50)
        .map(|i| TaskId::for_task(job.id, i).stream_id())
        .collect();
    let records = env.log.read_streams(&ids).await.unwrap();
    for id in &ids {
        let task: Vec<_> = records.iter().filter(|r| &r.stream_id == id).collect();
        let kinds: Vec<&str> = task.iter().map(|r| r.event_type.as_str()).collect();
        assert_eq!(kinds, ["TaskEnqueued", "TaskStarted", "TaskCompleted"]);
        // Side by side in the log (one append), though fifty tasks ran at once.
        let (start, end) = (task[1].log_position, task[2].log_position);
        assert_eq!(start.position + 1, end.position, "{start:?} {end:?}");
    }
}

async fn a_slow_attempt_shows_running_while_its_handler_runs(env: Env) {
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    let handlers = handlers_with(
        "slow",
        handler_fn(move |task| {
            let gate = gate.clone();
            async move {
                while !gate.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(Some(json!({"by": task.worker_id})))
            }
        }),
    );
    let job = env.submit(JobSpec::new("slow", 3)).await;
    let worker = Running::start(&env, config("w1"), handlers);
    // The handlers are still running: the log says so.
    env.wait_for_tasks(&job, "RUNNING", |s| s.status == TaskStatus::Running)
        .await;
    open.store(true, Ordering::SeqCst);
    env.wait_for_tasks(&job, "COMPLETED", |s| s.status == TaskStatus::Completed)
        .await;
    let stats = worker.stop().await;
    assert_eq!(
        stats.committed_batches, 6,
        "a start, then an end: {stats:?}"
    );
    for events in env.task_events(&job).await {
        assert_eq!(count(&events, started), 1, "{events:?}");
        assert_eq!(count(&events, completed), 1, "{events:?}");
    }
}

/// Two copies of a message run at once on two workers, both quicker than their start grace:
/// each runs its handler (at least once allows it), one records the start and the end, the
/// other finds the task COMPLETED in the log and acknowledges its copy.
async fn copies_on_two_workers_record_one_start_and_one_end(env: Env) {
    let calls = Arc::new(AtomicU32::new(0));
    let both = Arc::new(tokio::sync::Barrier::new(2));
    let (counted, meet) = (calls.clone(), both.clone());
    let handlers = handlers_with(
        "pair",
        handler_fn(move |task| {
            counted.fetch_add(1, Ordering::SeqCst);
            let meet = meet.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), meet.wait())
                    .await
                    .map_err(|_| TaskError::fatal("the other copy never ran"))?;
                Ok(Some(json!({"by": task.worker_id})))
            }
        }),
    );
    let job = env.submit(JobSpec::new("pair", 1)).await;
    send_copies(&env, &job).await;
    let long = Duration::from_secs(30);
    let one = Running::start(&env, single("one", long), handlers.clone());
    let two = Running::start(&env, single("two", long), handlers);
    env.wait_for_tasks(&job, "COMPLETED", |s| s.status == TaskStatus::Completed)
        .await;
    eventually("the queue to drain", || async { empty(env.depth().await) }).await;
    let (one, two) = (one.stop().await, two.stop().await);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_one_copy_recorded(&env, &job, &one, &two).await;
}

/// Two copies of a slow task on two workers: each starts its handler, the first start
/// recorded wins, and the other worker stops its handler when its start conflicts.
async fn a_copy_whose_start_is_recorded_second_stops_its_handler(env: Env) {
    let (calls, finished) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let both = Arc::new(tokio::sync::Barrier::new(2));
    let (counted, done, meet) = (calls.clone(), finished.clone(), both.clone());
    let handlers = handlers_with(
        "pair",
        handler_fn(move |task| {
            counted.fetch_add(1, Ordering::SeqCst);
            let (meet, done) = (meet.clone(), done.clone());
            async move {
                tokio::time::timeout(Duration::from_secs(10), meet.wait())
                    .await
                    .map_err(|_| TaskError::fatal("the other copy never ran"))?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                done.fetch_add(1, Ordering::SeqCst);
                Ok(Some(json!({"by": task.worker_id})))
            }
        }),
    );
    let job = env.submit(JobSpec::new("pair", 1)).await;
    send_copies(&env, &job).await;
    let grace = WorkerConfig::default().start_grace;
    let one = Running::start(&env, single("one", grace), handlers.clone());
    let two = Running::start(&env, single("two", grace), handlers);
    env.wait_for_tasks(&job, "COMPLETED", |s| s.status == TaskStatus::Completed)
        .await;
    eventually("the queue to drain", || async { empty(env.depth().await) }).await;
    // Long enough for a handler that was not stopped to finish.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (one, two) = (one.stop().await, two.stop().await);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(finished.load(Ordering::SeqCst), 1, "the loser was stopped");
    assert_one_copy_recorded(&env, &job, &one, &two).await;
}

/// A worker crashes while a first attempt runs and before its start is recorded: the log
/// shows nothing of it, the message comes back, and the next worker starts and completes it.
async fn a_crash_before_the_start_is_recorded_loses_nothing(env: Env) {
    let (stuck, calls) = counted_sleeper("work", Duration::from_secs(3600));
    let job = env.submit(JobSpec::new("work", 2)).await;
    let first = Running::start(
        &env,
        WorkerConfig {
            visibility_timeout: Duration::from_millis(600),
            start_grace: Duration::from_secs(3600),
            ..config("first")
        },
        stuck,
    );
    eventually("both handlers to run", || async {
        calls.load(Ordering::SeqCst) == 2
    })
    .await;
    for state in env.task_states(&job).await {
        assert_eq!(state.status, TaskStatus::Enqueued, "{state:?}");
    }
    first.crash().await;

    let stats = finish_with_a_second_worker(&env, &job).await;
    for events in env.task_events(&job).await {
        assert_eq!(count(&events, started), 1, "{events:?}");
        assert_eq!(count(&events, completed), 1, "{events:?}");
        let (starter, finisher) = starter_and_finisher(&events);
        assert_eq!((starter.as_str(), finisher.as_str()), ("second", "second"));
    }
    assert_eq!((stats.completed, stats.taken_over), (2, 0), "{stats:?}");
}

/// The env's queue, except that acknowledgements never return (a network that lost them).
#[derive(Debug)]
struct AcksNeverReturn(SqlQueue);

#[async_trait::async_trait]
impl TaskQueue for AcksNeverReturn {
    async fn send(&self, messages: Vec<OutgoingMessage>) -> QueueResult<()> {
        self.0.send(messages).await
    }
    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> QueueResult<Vec<Delivery>> {
        self.0.receive(max, visibility, wait).await
    }
    async fn extend(&self, receipts: &[Receipt], visibility: Duration) -> QueueResult<()> {
        self.0.extend(receipts, visibility).await
    }
    async fn release(&self, receipt: &Receipt, delay: Duration) -> QueueResult<()> {
        self.0.release(receipt, delay).await
    }
    async fn ack(&self, _receipts: &[Receipt]) -> QueueResult<()> {
        std::future::pending().await
    }
    async fn dead_letter(&self, receipt: &Receipt, reason: &str) -> QueueResult<()> {
        self.0.dead_letter(receipt, reason).await
    }
    async fn purge_job(&self, job_id: uuid::Uuid) -> QueueResult<u64> {
        self.0.purge_job(job_id).await
    }
    async fn depth(&self) -> QueueResult<QueueDepth> {
        self.0.depth().await
    }
    async fn dead_letters(
        &self,
        job_id: Option<uuid::Uuid>,
        limit: i64,
    ) -> QueueResult<Vec<DeadLetter>> {
        self.0.dead_letters(job_id, limit).await
    }
    async fn remove_dead_letters(&self, ids: &[String]) -> QueueResult<()> {
        self.0.remove_dead_letters(ids).await
    }
}

/// With `acks_in_commit` (what `shoal` runs on the SQL queue) a completed task's message leaves
/// the queue in the commit of its `TaskCompleted`: a worker that crashes before any
/// acknowledgement of its own reached the queue leaves nothing of its completed tasks to be
/// delivered again. Without it (the first worker here), every one of them is still held.
async fn a_crash_leaves_no_message_of_a_completed_task_behind(env: Env) {
    let queue: Arc<dyn TaskQueue> = Arc::new(AcksNeverReturn(env.queue.clone()));
    let noop = || Handlers::builtin(&WorkerConfig::default());
    let mut held = 0;
    for acks_in_commit in [false, true] {
        let job = env.submit(JobSpec::new("noop", 5)).await;
        let worker = Running::start_on(
            queue.clone(),
            &env,
            WorkerConfig {
                acks_in_commit,
                visibility_timeout: Duration::from_secs(3600),
                ..config(if acks_in_commit { "second" } else { "first" })
            },
            noop(),
        );
        env.wait_for_tasks(&job, "COMPLETED", |s| s.status == TaskStatus::Completed)
            .await;
        worker.crash().await;
        if !acks_in_commit {
            held = 5;
        }
        let depth = env.depth().await;
        assert_eq!(
            (depth.visible, depth.in_flight),
            (0, held),
            "acks_in_commit: {acks_in_commit}"
        );
    }
}
