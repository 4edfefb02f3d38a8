//! The built-in orchestrator against a real log and SQL queue, on SQLite always and on Postgres
//! when `SHOAL_TEST_DATABASE_URL` is set (required with `SHOAL_REQUIRE_POSTGRES=1`; see
//! `shoal_infra::testing`). The test plays command-api (appending `JobSubmitted`, cancels and
//! retries through the domain's `decide_*`) and the worker (receiving from the queue, appending
//! `TaskStarted` + `TaskCompleted`/`TaskFailed`, acknowledging).

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use shoal_command_api::orchestrator::{Orchestrator, OrchestratorConfig, OrchestratorMetrics};
use shoal_domain::{
    Event, JobCommand, JobId, JobState, Limits, Split, SubmitJob, TaskCommand, TaskId, TaskState,
    decide_job, decide_task, evolve_job, evolve_task,
};
use shoal_infra::db::Database;
use shoal_infra::eventlog::{
    AppendBatch, EventLog, ExpectedVersion, NewEvent, RecordedEvent, StreamAppend, raw_json,
};
use shoal_infra::orchestrator_store::{LeaderLock, OrchestratorStore, TrackedStatus};
use shoal_infra::queue::{SqlQueue, TaskMessage, TaskQueue};
use shoal_infra::testing;

// ---------------------------------------------------------------------------------------------
// Harness

struct Harness {
    db: Database,
    log: Arc<dyn EventLog>,
    queue: Arc<SqlQueue>,
}

impl Harness {
    async fn sqlite() -> Harness {
        Harness::on(Database::Sqlite(testing::fresh_sqlite().await))
    }

    async fn postgres() -> Option<Harness> {
        Some(Harness::on(Database::Postgres(
            testing::fresh_postgres().await?,
        )))
    }

    fn on(db: Database) -> Harness {
        Harness {
            log: db.event_log(),
            queue: Arc::new(SqlQueue::for_database(&db)),
            db,
        }
    }

    fn is_postgres(&self) -> bool {
        matches!(self.db, Database::Postgres(_))
    }

    fn orchestrator(&self, config: OrchestratorConfig) -> Orchestrator {
        Orchestrator::new(
            config,
            self.log.clone(),
            self.queue.clone() as Arc<dyn TaskQueue>,
            self.db.clone(),
        )
        .expect("valid configuration")
    }

    /// An orchestrator on a connection pool of its own, for a test that crashes it: closing
    /// that pool after aborting it rolls back whatever it had in flight, as a dead process's
    /// connections do (an aborted task on a shared pool would keep SQLite's write lock).
    async fn crashable_orchestrator(&self, config: OrchestratorConfig) -> (Database, Orchestrator) {
        let url = match &self.db {
            Database::Sqlite(pool) => {
                format!("sqlite:{}", pool.connect_options().get_filename().display())
            }
            Database::Postgres(pool) => {
                let options = pool.connect_options();
                format!(
                    "postgres://{}@{}:{}/{}",
                    options.get_username(),
                    options.get_host(),
                    options.get_port(),
                    options.get_database().expect("test databases are named")
                )
            }
        };
        let db = Database::connect(&url).await.expect("a second pool");
        let orchestrator = Orchestrator::new(
            config,
            db.event_log(),
            Arc::new(SqlQueue::for_database(&db)) as Arc<dyn TaskQueue>,
            db.clone(),
        )
        .expect("valid configuration");
        (db, orchestrator)
    }

    /// On Postgres, waits until everything committed is readable by `read_all` (other tests'
    /// transactions on the cluster hold readers back for a moment).
    async fn settle(&self) {
        if let Database::Postgres(pool) = &self.db {
            testing::wait_until_readable(pool).await;
        }
    }

    /// Runs the orchestrator step by step until it has nothing left to do, even after the
    /// log has settled.
    async fn drive(&self, orchestrator: &mut Orchestrator) {
        loop {
            self.settle().await;
            orchestrator
                .run_until_idle()
                .await
                .expect("orchestrator step");
            self.settle().await;
            let consumed = orchestrator.step().await.expect("orchestrator step");
            let chunks = orchestrator.expand_step().await.expect("expansion");
            if consumed == 0 && chunks == 0 {
                return;
            }
        }
    }

    async fn append(&self, streams: Vec<StreamAppend>) {
        self.log
            .append(AppendBatch {
                streams,
                ..AppendBatch::default()
            })
            .await
            .expect("append");
    }

    /// Submits a job, as command-api does.
    async fn submit(&self, split: Split) -> JobId {
        let job_id = JobId::new();
        let events = decide_job(
            &JobState::default(),
            JobCommand::SubmitJob(SubmitJob {
                job_id,
                job_type: "cpu_bound".into(),
                split,
                parameters: json!({ "work_duration_seconds": 0 }),
                max_attempts: None,
                timeout_seconds: None,
                limits: Limits::default(),
                now: Utc::now(),
                fallback_handler: None,
                priority: 0,
            }),
        )
        .expect("valid job");
        self.append(vec![stream(
            job_id.stream_id(),
            ExpectedVersion::NoStream,
            &events,
        )])
        .await;
        job_id
    }

    async fn job(&self, job_id: JobId) -> (JobState, i64) {
        let recorded = self.log.read_stream(&job_id.stream_id(), 0).await.unwrap();
        let version = recorded.last().map_or(0, |e| e.stream_version);
        let state = decode(&recorded)
            .iter()
            .fold(JobState::default(), evolve_job);
        (state, version)
    }

    async fn cancel(&self, job_id: JobId) {
        let (state, version) = self.job(job_id).await;
        let events = decide_job(
            &state,
            JobCommand::CancelJob {
                reason: Some("test".into()),
                now: Utc::now(),
            },
        )
        .unwrap();
        self.append(vec![stream(
            job_id.stream_id(),
            ExpectedVersion::Exact(version),
            &events,
        )])
        .await;
    }

    /// A user retries the failed task `index` of the job: `TaskRetryScheduled` (manual) and
    /// `JobRetryRequested`, in one append, as command-api does.
    async fn retry_task(&self, job_id: JobId, index: u32) {
        let task_id = TaskId::for_task(job_id, index);
        let (task, task_version) = self.tasks(&[task_id]).await.remove(&task_id).unwrap();
        let task_events = decide_task(&task, TaskCommand::RetryTask { now: Utc::now() }).unwrap();
        let (job, job_version) = self.job(job_id).await;
        let job_events = decide_job(
            &job,
            JobCommand::RequestRetry {
                failed_tasks: 1,
                now: Utc::now(),
            },
        )
        .unwrap();
        self.append(vec![
            stream(
                job_id.stream_id(),
                ExpectedVersion::Exact(job_version),
                &job_events,
            ),
            stream(
                task_id.stream_id(),
                ExpectedVersion::Exact(task_version),
                &task_events,
            ),
        ])
        .await;
    }

    /// The folded states and versions of some tasks, in one read.
    async fn tasks(&self, ids: &[TaskId]) -> HashMap<TaskId, (TaskState, i64)> {
        let streams: Vec<String> = ids.iter().map(TaskId::stream_id).collect();
        let mut states: HashMap<TaskId, (TaskState, i64)> = HashMap::new();
        for record in self.log.read_streams(&streams).await.unwrap() {
            let event = decode(std::slice::from_ref(&record)).remove(0);
            let id = event.task_id().unwrap();
            let (state, version) = states.remove(&id).unwrap_or_default();
            states.insert(
                id,
                (
                    evolve_task(state, &event),
                    version.max(record.stream_version),
                ),
            );
        }
        states
    }

    /// Plays a worker: receives up to `max` messages, runs each (failing for good the tasks
    /// `fail` picks), appends `TaskStarted` + the outcome for all of them in one group commit,
    /// and acknowledges. Returns the messages handled.
    async fn work(&self, max: usize, fail: impl Fn(&TaskMessage) -> bool) -> Vec<TaskMessage> {
        let deliveries = self
            .queue
            .receive(max, Duration::from_secs(300), Duration::from_millis(20))
            .await
            .unwrap();
        let messages: Vec<TaskMessage> = deliveries
            .iter()
            .map(|d| d.body.clone().expect("well-formed message"))
            .collect();
        let ids: Vec<TaskId> = messages
            .iter()
            .map(|m| TaskId::from_uuid(m.task_id))
            .collect();
        let states = self.tasks(&ids).await;
        let now = Utc::now();
        let mut batches = Vec::new();
        for message in &messages {
            let id = TaskId::from_uuid(message.task_id);
            let (state, version) = states[&id].clone();
            assert_eq!(
                version, message.stream_version,
                "message names the stream version"
            );
            let Ok(started) = decide_task(
                &state,
                TaskCommand::StartTask {
                    attempt: message.attempt,
                    worker: "test".into(),
                    now,
                },
            ) else {
                continue; // A duplicate delivery.
            };
            let running = started.iter().fold(state, evolve_task);
            let outcome = if fail(message) {
                TaskCommand::FailTask {
                    attempt: message.attempt,
                    error: "boom".into(),
                    retryable: false,
                    backoff_ms: 0,
                    now,
                }
            } else {
                TaskCommand::CompleteTask {
                    attempt: message.attempt,
                    result: Some(json!({"ok": true})),
                    duration_ms: 1,
                    now,
                }
            };
            let ended = decide_task(&running, outcome).unwrap();
            let events: Vec<Event> = started.into_iter().chain(ended).collect();
            batches.push(AppendBatch {
                streams: vec![stream(
                    id.stream_id(),
                    ExpectedVersion::Exact(version),
                    &events,
                )],
                ..AppendBatch::default()
            });
        }
        for result in self.log.append_many(batches).await {
            result.expect("worker append");
        }
        let receipts: Vec<_> = deliveries.into_iter().map(|d| d.receipt).collect();
        self.queue.ack(&receipts).await.unwrap();
        messages
    }

    /// Works until the queue has nothing visible; returns every message handled.
    async fn work_all(&self, fail: impl Fn(&TaskMessage) -> bool) -> Vec<TaskMessage> {
        let mut all = Vec::new();
        loop {
            let batch = self.work(500, &fail).await;
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }

    /// Every event of the log, decoded, with its record.
    async fn all_events(&self) -> Vec<(RecordedEvent, Event)> {
        self.settle().await;
        let mut out = Vec::new();
        let mut after = shoal_infra::eventlog::LogPosition::START;
        loop {
            let batch = self.log.read_all(after, 5000).await.unwrap();
            let Some(last) = batch.last() else {
                return out;
            };
            after = last.log_position;
            let events = decode(&batch);
            out.extend(batch.into_iter().zip(events));
        }
    }

    /// How many events of a type the log has, and in how many distinct streams.
    async fn count(&self, event_type: &str) -> (i64, i64) {
        let events = self.all_events().await;
        let matching: Vec<_> = events
            .iter()
            .filter(|(r, _)| r.event_type == event_type)
            .collect();
        let streams: HashSet<&str> = matching.iter().map(|(r, _)| r.stream_id.as_str()).collect();
        (matching.len() as i64, streams.len() as i64)
    }

    async fn visible(&self) -> u64 {
        let depth = self.queue.depth().await.unwrap();
        depth.visible + depth.delayed
    }
}

fn stream(stream_id: String, expected: ExpectedVersion, events: &[Event]) -> StreamAppend {
    StreamAppend {
        stream_id,
        expected,
        events: events
            .iter()
            .map(|e| {
                let encoded = e.encode();
                NewEvent {
                    event_type: encoded.event_type.into(),
                    schema_version: encoded.schema_version,
                    data: encoded.data,
                    metadata: json!({ "actor": "test" }),
                }
            })
            .collect(),
    }
}

fn decode(records: &[RecordedEvent]) -> Vec<Event> {
    records
        .iter()
        .map(|r| Event::decode(&r.event_type, r.schema_version, r.data.get()).expect("decodable"))
        .collect()
}

fn config(chunk_size: u32, batch_size: i64) -> OrchestratorConfig {
    OrchestratorConfig {
        chunk_size,
        batch_size,
        standby_retry: Duration::from_millis(50),
        leader_check_interval: Duration::from_millis(50),
        error_backoff: Duration::from_millis(50),
        ..OrchestratorConfig::default()
    }
}

fn total(total_tasks: u32) -> Split {
    Split::Total { total_tasks }
}

/// The job-ending events of a job in the log.
async fn endings(h: &Harness, job_id: JobId) -> (usize, usize) {
    let events = h.all_events().await;
    let completed = events
        .iter()
        .filter(|(_, e)| matches!(e, Event::JobCompleted(c) if c.job_id == job_id))
        .count();
    let failed = events
        .iter()
        .filter(|(_, e)| matches!(e, Event::JobFailed(f) if f.job_id == job_id))
        .count();
    (completed, failed)
}

/// Checks that the job's tasks exist exactly once each: `total` distinct `TaskEnqueued`, each
/// its stream's first event, indexes 0..total, and `TasksCreated` chunks that tile 0..total.
async fn assert_expanded_once(h: &Harness, job_id: JobId, total: u32) {
    let events = h.all_events().await;
    let mut indexes = BTreeMap::new();
    let mut chunks = Vec::new();
    for (record, event) in &events {
        match event {
            Event::TaskEnqueued(e) if e.job_id == job_id => {
                assert_eq!(record.stream_version, 1);
                assert_eq!(e.task_id, TaskId::for_task(job_id, e.index));
                *indexes.entry(e.index).or_insert(0) += 1;
            }
            Event::TasksCreated(e) if e.job_id == job_id => chunks.push((e.from_index, e.to_index)),
            _ => {}
        }
    }
    assert_eq!(indexes.len(), total as usize, "every task exists");
    assert!(
        indexes.values().all(|&n| n == 1),
        "no task was created twice"
    );
    assert_eq!(indexes.keys().next_back(), Some(&(total - 1)));
    chunks.sort_unstable();
    let mut next = 0;
    for (from, to) in chunks {
        assert_eq!(from, next, "chunks tile the job without overlap");
        next = to;
    }
    assert_eq!(next, total);
}

async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

for_each_backend!(
    thousand_tasks_are_enqueued_once_and_complete_the_job_once,
    failed_job_then_manual_retry_completes_it,
    cancel_mid_way_stops_expansion_and_purges_the_queue,
    crash_mid_expansion_resumes_without_duplicates,
    concurrent_expanders_create_each_task_once,
    restart_mid_monitoring_keeps_exact_counts,
    undecodable_events_are_skipped,
    one_leader_at_a_time_and_a_standby_takes_over,
);

// ---------------------------------------------------------------------------------------------
// Tests

async fn thousand_tasks_are_enqueued_once_and_complete_the_job_once(h: Harness) {
    let job_id = h.submit(total(1000)).await;
    let small = h.submit(total(3)).await;
    let mut orchestrator = h.orchestrator(config(300, 500));
    let metrics = orchestrator.metrics();
    h.drive(&mut orchestrator).await;

    assert_expanded_once(&h, job_id, 1000).await;
    assert_eq!(h.count("TaskEnqueued").await, (1003, 1003));
    assert_eq!(h.count("TasksCreated").await.0, 4 + 1);
    assert_eq!(h.visible().await, 1003);
    assert_eq!(metrics.queue_depth().await.unwrap().visible, 1003);

    let handled = h.work_all(|_| false).await;
    assert_eq!(handled.len(), 1003, "one message per task");
    let distinct: HashSet<_> = handled.iter().map(|m| (m.task_id, m.attempt)).collect();
    assert_eq!(distinct.len(), 1003);
    let first = handled
        .iter()
        .find(|m| m.job_id == job_id.as_uuid())
        .unwrap();
    assert_eq!(
        (first.attempt, first.stream_version, first.job_type.as_str()),
        (1, 1, "cpu_bound")
    );
    assert_eq!(first.parameters, json!({ "work_duration_seconds": 0 }));

    h.drive(&mut orchestrator).await;
    assert_eq!(endings(&h, job_id).await, (1, 0));
    assert_eq!(endings(&h, small).await, (1, 0));
    assert_eq!(metrics.jobs_completed(), 2);
    // Driving again changes nothing.
    h.drive(&mut orchestrator).await;
    assert_eq!(endings(&h, job_id).await, (1, 0));
    assert_eq!(h.visible().await, 0);
    // Ended jobs are not active any more.
    let store = OrchestratorStore::new(h.db.clone());
    assert!(store.load_active().await.unwrap().is_empty());
    let rows = store.load_jobs(&[job_id.as_uuid()]).await.unwrap();
    assert_eq!(rows[0].status, TrackedStatus::Completed);
    assert_eq!(
        (rows[0].progress.completed, rows[0].created_upto),
        (1000, 1000)
    );
}

async fn failed_job_then_manual_retry_completes_it(h: Harness) {
    let items: Vec<Value> = (0..10).map(|i| json!(i)).collect();
    let job_id = h
        .submit(Split::Items {
            items,
            batch_size: 2,
        })
        .await;
    let mut orchestrator = h.orchestrator(config(2, 7));
    h.drive(&mut orchestrator).await;
    let handled = h.work_all(|m| m.task_index == 3).await;
    assert_eq!(handled.len(), 5);
    let original = handled.iter().find(|m| m.task_index == 3).unwrap().clone();
    h.drive(&mut orchestrator).await;
    assert_eq!(endings(&h, job_id).await, (0, 1));
    let failed = h
        .all_events()
        .await
        .into_iter()
        .find_map(|(_, e)| match e {
            Event::JobFailed(f) => Some(f),
            _ => None,
        })
        .unwrap();
    assert_eq!(failed.failed_tasks, 1);

    h.retry_task(job_id, 3).await;
    h.drive(&mut orchestrator).await;
    let retried = h.work_all(|_| false).await;
    assert_eq!(retried.len(), 1, "one message for the retry");
    let retry = &retried[0];
    assert_eq!((retry.task_index, retry.attempt), (3, 2));
    assert_eq!(retry.parameters, original.parameters, "the original input");
    assert_eq!(
        retry.parameters,
        json!({ "work_duration_seconds": 0, "items": [6, 7] })
    );
    assert_eq!(
        retry.stream_version, 4,
        "after Enqueued, Started, Failed, RetryScheduled"
    );
    assert!(retry.not_before.is_some());

    h.drive(&mut orchestrator).await;
    assert_eq!(endings(&h, job_id).await, (1, 1));
    let (state, _) = h.job(job_id).await;
    assert_eq!(state.status, shoal_domain::JobStatus::Completed);
}

async fn cancel_mid_way_stops_expansion_and_purges_the_queue(h: Harness) {
    let job_id = h.submit(total(5000)).await;
    let mut orchestrator = h.orchestrator(config(500, 2000));
    h.settle().await;
    assert_eq!(orchestrator.step().await.unwrap(), 1);
    assert_eq!(orchestrator.expand_step().await.unwrap(), 1);
    assert_eq!(orchestrator.expand_step().await.unwrap(), 1);
    h.settle().await;
    while orchestrator.step().await.unwrap() > 0 {}
    assert_eq!(h.visible().await, 1000);
    // A worker takes a few.
    assert_eq!(h.work(10, |_| false).await.len(), 10);

    h.cancel(job_id).await;
    h.drive(&mut orchestrator).await;
    assert_eq!(h.count("TaskEnqueued").await.0, 1000, "expansion stopped");
    assert_eq!(h.visible().await, 0, "queued messages purged");
    assert!(h.work_all(|_| false).await.is_empty());
    assert_eq!(endings(&h, job_id).await, (0, 0));
    let (state, _) = h.job(job_id).await;
    assert_eq!(state.status, shoal_domain::JobStatus::Cancelled);
    let rows = OrchestratorStore::new(h.db.clone())
        .load_jobs(&[job_id.as_uuid()])
        .await
        .unwrap();
    assert_eq!(rows[0].status, TrackedStatus::Cancelled);
    assert_eq!(rows[0].progress.completed, 10);
}

async fn crash_mid_expansion_resumes_without_duplicates(h: Harness) {
    let total_tasks = 6000;
    let job_id = h.submit(total(total_tasks)).await;

    // Step mode: a few chunks, then the orchestrator is dropped.
    let mut first = h.orchestrator(config(400, 1000));
    h.settle().await;
    first.step().await.unwrap();
    for _ in 0..3 {
        first.expand_step().await.unwrap();
    }
    drop(first);
    assert_eq!(h.count("TaskEnqueued").await.0, 1200);

    // Running for real, aborted at an arbitrary point of its work.
    let (crashing_pool, second) = h.crashable_orchestrator(config(400, 1000)).await;
    // Its own counter, not a read of the whole log: expansion is fast enough to finish while
    // such a read runs.
    let progress = second.metrics();
    let running = tokio::spawn(second.run(std::future::pending()));
    eventually("more chunks", Duration::from_secs(60), async || {
        1200 + progress.tasks_created() >= 2400
    })
    .await;
    running.abort();
    let _ = running.await;
    crashing_pool.close().await;
    let created = h.count("TaskEnqueued").await.0;
    assert!(
        created < i64::from(total_tasks),
        "aborted mid-expansion ({created})"
    );

    let mut third = h.orchestrator(config(400, 1000));
    h.drive(&mut third).await;
    assert_expanded_once(&h, job_id, total_tasks).await;
    assert_eq!(h.count("TaskEnqueued").await, (6000, 6000));

    let handled = h.work_all(|_| false).await;
    let distinct: HashSet<_> = handled.iter().map(|m| m.task_id).collect();
    assert_eq!(
        distinct.len(),
        total_tasks as usize,
        "every task was relayed"
    );
    h.drive(&mut third).await;
    assert_eq!(endings(&h, job_id).await, (1, 0));
}

async fn concurrent_expanders_create_each_task_once(h: Harness) {
    let total_tasks = 4000;
    let job_id = h.submit(total(total_tasks)).await;
    let mut a = h.orchestrator(config(300, 800));
    let mut b = h.orchestrator(config(300, 800));
    h.settle().await;
    assert_eq!(a.step().await.unwrap(), 1);
    // b loads a's checkpoint and the job from the store.
    assert_eq!(b.step().await.unwrap(), 0);
    let other = h.submit(total(700)).await;
    h.settle().await;
    assert_eq!(a.step().await.unwrap(), 1);
    // b saves from where it loaded, but a has moved the checkpoint: fenced, and it reloads.
    let fenced = b.step().await.unwrap_err();
    assert!(fenced.is_fenced(), "{fenced}");
    let (ra, rb) = tokio::join!(a.run_until_idle(), b.run_until_idle());
    ra.unwrap();
    rb.unwrap();
    h.drive(&mut a).await;
    h.drive(&mut b).await;
    assert_expanded_once(&h, job_id, total_tasks).await;
    assert_expanded_once(&h, other, 700).await;
    assert_eq!(h.count("TaskEnqueued").await, (4700, 4700));
    assert_eq!(h.visible().await, 4700);

    h.work_all(|_| false).await;
    h.settle().await;
    let (ra, rb) = tokio::join!(a.run_until_idle(), b.run_until_idle());
    ra.unwrap();
    rb.unwrap();
    h.drive(&mut a).await;
    h.drive(&mut b).await;
    assert_eq!(
        endings(&h, job_id).await,
        (1, 0),
        "exactly one JobCompleted"
    );
    assert_eq!(endings(&h, other).await, (1, 0));
}

async fn restart_mid_monitoring_keeps_exact_counts(h: Harness) {
    let job_id = h.submit(total(200)).await;
    let mut first = h.orchestrator(config(64, 50));
    h.drive(&mut first).await;
    let half = h.work(100, |_| false).await;
    assert_eq!(half.len(), 100);
    h.drive(&mut first).await;
    drop(first);

    let store = OrchestratorStore::new(h.db.clone());
    let active = store.load_active().await.unwrap();
    assert_eq!(active.len(), 1);
    let progress = active[0].progress;
    assert_eq!(
        (
            progress.total_tasks,
            progress.created,
            progress.completed,
            progress.queued
        ),
        (200, 200, 100, 100)
    );

    let mut second = h.orchestrator(config(64, 50));
    let rest = h.work_all(|_| false).await;
    assert_eq!(rest.len(), 100);
    h.drive(&mut second).await;
    assert_eq!(endings(&h, job_id).await, (1, 0));
    let rows = store.load_jobs(&[job_id.as_uuid()]).await.unwrap();
    assert_eq!(rows[0].progress.completed, 200);
    assert_eq!(rows[0].progress.queued, 0);
}

async fn undecodable_events_are_skipped(h: Harness) {
    let job_id = h.submit(total(2)).await;
    // A future event type and a malformed payload, in a task stream and in the job stream.
    let (_, version) = h.job(job_id).await;
    h.log
        .append(AppendBatch {
            streams: vec![
                StreamAppend {
                    stream_id: job_id.stream_id(),
                    expected: ExpectedVersion::Exact(version),
                    events: vec![NewEvent {
                        event_type: "JobFromTheFuture".into(),
                        schema_version: 1,
                        data: raw_json(&json!({})),
                        metadata: json!({}),
                    }],
                },
                StreamAppend {
                    stream_id: "task-not-a-uuid".into(),
                    expected: ExpectedVersion::NoStream,
                    events: vec![NewEvent {
                        event_type: "TaskEnqueued".into(),
                        schema_version: 1,
                        data: raw_json(&json!({"garbage": true})),
                        metadata: json!({}),
                    }],
                },
            ],
            ..AppendBatch::default()
        })
        .await
        .unwrap();
    let mut orchestrator = h.orchestrator(config(10, 100));
    let metrics: OrchestratorMetrics = orchestrator.metrics();
    h.drive(&mut orchestrator).await;
    assert_eq!(metrics.events_undecodable(), 2);
    assert_eq!(h.work_all(|_| false).await.len(), 2);
    h.drive(&mut orchestrator).await;
    assert_eq!(metrics.jobs_completed(), 1);
}

async fn one_leader_at_a_time_and_a_standby_takes_over(h: Harness) {
    // The lock itself.
    let mut first = LeaderLock::new(&h.db);
    let mut second = LeaderLock::new(&h.db);
    assert!(first.try_acquire().await.unwrap());
    assert!(!second.try_acquire().await.unwrap());
    assert!(first.check().await.unwrap());
    drop(first);
    eventually(
        "the lock is free again",
        Duration::from_secs(10),
        async || second.try_acquire().await.unwrap(),
    )
    .await;
    second.release().await;

    // Two orchestrators: one leads, and drives jobs.
    let a = h.orchestrator(config(100, 500));
    let b = h.orchestrator(config(100, 500));
    let (ma, mb) = (a.metrics(), b.metrics());
    let (stop_a, stopped_a) = tokio::sync::oneshot::channel::<()>();
    let (stop_b, stopped_b) = tokio::sync::oneshot::channel::<()>();
    let run_a = tokio::spawn(a.run(async move {
        let _ = stopped_a.await;
    }));
    let run_b = tokio::spawn(b.run(async move {
        let _ = stopped_b.await;
    }));
    eventually("a leader", Duration::from_secs(10), async || {
        ma.is_leader() || mb.is_leader()
    })
    .await;
    for _ in 0..10 {
        assert!(!(ma.is_leader() && mb.is_leader()), "two leaders");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (leader, standby, stop, run_leader, run_standby, stop_other) = if ma.is_leader() {
        (ma, mb, stop_a, run_a, run_b, stop_b)
    } else {
        (mb, ma, stop_b, run_b, run_a, stop_a)
    };
    assert!(!standby.is_leader());
    assert_eq!(
        (leader.leadership_terms(), standby.leadership_terms()),
        (1, 0)
    );

    let job = h.submit(total(250)).await;
    eventually(
        "the job's tasks are queued",
        Duration::from_secs(30),
        async || h.visible().await == 250,
    )
    .await;
    // Counted once the chunk's append has returned, which may be after the relay queued it.
    eventually(
        "the leader counts the tasks",
        Duration::from_secs(5),
        async || leader.tasks_created() == 250,
    )
    .await;

    // The leader stops: the standby takes over and finishes the job.
    stop.send(()).unwrap();
    run_leader.await.unwrap().unwrap();
    assert!(!leader.is_leader());
    eventually("the standby leads", Duration::from_secs(10), async || {
        standby.is_leader()
    })
    .await;
    h.work_all(|_| false).await;
    eventually("the job completes", Duration::from_secs(30), async || {
        endings(&h, job).await == (1, 0)
    })
    .await;
    // Counted once `JobCompleted`'s append has returned, which may be after the test read it.
    eventually(
        "the standby counts the job",
        Duration::from_secs(5),
        async || standby.jobs_completed() == 1,
    )
    .await;

    if h.is_postgres() {
        // The leader's lock connection dies: it steps down, and someone leads again.
        let Database::Postgres(pool) = &h.db else {
            unreachable!()
        };
        let killed = shoal_infra::orchestrator_store::terminate_lock_holders(pool)
            .await
            .unwrap();
        assert_eq!(killed, 1);
        eventually(
            "it steps down and leads again",
            Duration::from_secs(10),
            async || standby.leadership_terms() == 2 && standby.is_leader(),
        )
        .await;
        let job = h.submit(total(5)).await;
        eventually(
            "the new job is queued",
            Duration::from_secs(30),
            async || h.visible().await == 5,
        )
        .await;
        h.work_all(|_| false).await;
        eventually(
            "the new job completes",
            Duration::from_secs(30),
            async || endings(&h, job).await == (1, 0),
        )
        .await;
    }

    stop_other.send(()).unwrap();
    run_standby.await.unwrap().unwrap();
    assert!(!standby.is_leader());
}
