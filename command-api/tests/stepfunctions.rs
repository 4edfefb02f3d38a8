//! The Step Functions driver against a real execution: moto_server on loopback runs the state
//! machine of `infra/deploy/stepfunctions/job.asl.json` (its ASL interpreter on), the
//! orchestrator answers its callbacks from the control queue, and the test plays command-api
//! and the workers on a SQLite log and SQL queue, as `tests/orchestrator.rs` does.
//!
//! Skipped without `moto_server` unless `SHOAL_REQUIRE_MOTO=1`. moto is slow: jobs are small
//! and the state machine's timings short.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use shoal_command_api::orchestrator::{Orchestrator, OrchestratorConfig, StepFunctionsConfig};
use shoal_domain::{
    Event, JobCommand, JobId, JobState, Limits, Split, SubmitJob, TaskCommand, TaskId, TaskState,
    decide_job, decide_task, evolve_job, evolve_task,
};
use shoal_infra::db::Database;
use shoal_infra::eventlog::{
    AppendBatch, EventLog, ExpectedVersion, LogPosition, NewEvent, RecordedEvent, StreamAppend,
};
use shoal_infra::queue::{SqlQueue, TaskMessage, TaskQueue};
use shoal_infra::stepfunctions::StepFunctions;
use shoal_infra::testing;
use tokio::task::JoinHandle;

/// How long a whole job may take on moto.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

struct Harness {
    db: Database,
    log: Arc<dyn EventLog>,
    queue: Arc<SqlQueue>,
}

impl Harness {
    async fn new() -> Arc<Harness> {
        let db = Database::Sqlite(testing::fresh_sqlite().await);
        Arc::new(Harness {
            log: db.event_log(),
            queue: Arc::new(SqlQueue::for_database(&db)),
            db,
        })
    }

    /// An orchestrator with the Step Functions driver, on a pool of its own (so that aborting
    /// it and closing the pool is what a dead process does to the database).
    async fn orchestrator(
        &self,
        sfn: &StepFunctions,
        config: StepFunctionsConfig,
    ) -> (Database, Orchestrator) {
        let Database::Sqlite(pool) = &self.db else {
            unreachable!("SQLite harness")
        };
        let url = format!("sqlite:{}", pool.connect_options().get_filename().display());
        let db = Database::connect(&url).await.expect("a second pool");
        let orchestrator = Orchestrator::new(
            orchestrator_config(),
            db.event_log(),
            Arc::new(SqlQueue::for_database(&db)) as Arc<dyn TaskQueue>,
            db.clone(),
        )
        .expect("valid configuration")
        .with_step_functions(sfn.clone(), config)
        .expect("valid driver configuration");
        (db, orchestrator)
    }

    async fn submit(&self, total_tasks: u32, max_attempts: u32) -> JobId {
        let job_id = JobId::new();
        let events = decide_job(
            &JobState::default(),
            JobCommand::SubmitJob(SubmitJob {
                job_id,
                job_type: "cpu_bound".into(),
                split: Split::Total { total_tasks },
                parameters: json!({ "work_duration_seconds": 0 }),
                max_attempts: Some(max_attempts),
                timeout_seconds: None,
                limits: Limits::default(),
                now: Utc::now(),
                fallback_handler: None,
                priority: 0,
            }),
        )
        .expect("valid job");
        self.append(job_id.stream_id(), ExpectedVersion::NoStream, &events)
            .await;
        job_id
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
        .expect("cancellable");
        self.append(job_id.stream_id(), ExpectedVersion::Exact(version), &events)
            .await;
    }

    async fn append(&self, stream_id: String, expected: ExpectedVersion, events: &[Event]) {
        self.log
            .append(AppendBatch {
                streams: vec![stream(stream_id, expected, events)],
                ..AppendBatch::default()
            })
            .await
            .expect("append");
    }

    async fn job(&self, job_id: JobId) -> (JobState, i64) {
        let records = self.log.read_stream(&job_id.stream_id(), 0).await.unwrap();
        let version = records.last().map_or(0, |r| r.stream_version);
        let state = decode(&records)
            .iter()
            .fold(JobState::default(), evolve_job);
        (state, version)
    }

    /// Plays a worker for one batch: runs the received tasks, failing (without retry) those
    /// whose index `fail` picks, or retryably on their first attempt those `flaky` picks.
    async fn work(&self, fail: fn(u32, u32) -> Option<bool>) -> usize {
        let deliveries = self
            .queue
            .receive(50, Duration::from_secs(300), Duration::from_millis(20))
            .await
            .unwrap();
        let messages: Vec<TaskMessage> = deliveries
            .iter()
            .map(|d| d.body.clone().expect("well-formed message"))
            .collect();
        let now = Utc::now();
        let mut batches = Vec::new();
        for message in &messages {
            let id = TaskId::from_uuid(message.task_id);
            let records = self.log.read_stream(&id.stream_id(), 0).await.unwrap();
            let version = records.last().map_or(0, |r| r.stream_version);
            let state = decode(&records)
                .iter()
                .fold(TaskState::default(), evolve_task);
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
            let outcome = match fail(message.task_index, message.attempt) {
                Some(retryable) => TaskCommand::FailTask {
                    attempt: message.attempt,
                    error: "boom".into(),
                    retryable,
                    backoff_ms: 0,
                    now,
                },
                None => TaskCommand::CompleteTask {
                    attempt: message.attempt,
                    result: Some(json!({"ok": true})),
                    duration_ms: 1,
                    now,
                },
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
        messages.len()
    }

    /// Workers in the background until aborted.
    fn workers(self: &Arc<Self>, fail: fn(u32, u32) -> Option<bool>) -> JoinHandle<()> {
        let h = self.clone();
        tokio::spawn(async move {
            loop {
                if h.work(fail).await == 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
    }

    async fn all_events(&self) -> Vec<(RecordedEvent, Event)> {
        let mut out = Vec::new();
        let mut after = LogPosition::START;
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

    async fn job_events(&self, job_id: JobId) -> Vec<Event> {
        decode(&self.log.read_stream(&job_id.stream_id(), 0).await.unwrap())
    }

    async fn wait_for_status(&self, job_id: JobId, wanted: shoal_domain::JobStatus) {
        eventually(&format!("job {wanted:?}"), JOB_TIMEOUT, async || {
            self.job(job_id).await.0.status == wanted
        })
        .await;
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

fn orchestrator_config() -> OrchestratorConfig {
    OrchestratorConfig {
        chunk_size: 4,
        standby_retry: Duration::from_millis(50),
        leader_check_interval: Duration::from_millis(50),
        error_backoff: Duration::from_millis(100),
        ..OrchestratorConfig::default()
    }
}

/// Short timings, so a job takes seconds on moto.
fn sfn_config() -> StepFunctionsConfig {
    StepFunctionsConfig {
        heartbeat_seconds: 4,
        heartbeat_interval: Duration::from_secs(1),
        wait_seconds: 1,
        monitor_hold: Duration::from_secs(2),
        poll_interval: Duration::from_millis(100),
        receive_wait: Duration::from_secs(1),
        moto_confirm_after: Some(Duration::from_millis(300)),
    }
}

async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn execution_arn(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::JobExecutionStarted(e) => Some(e.execution_arn.clone()),
            _ => None,
        })
        .collect()
}

async fn wait_for_execution(sfn: &StepFunctions, arn: &str, wanted: &str) {
    eventually(&format!("execution {wanted}"), JOB_TIMEOUT, async || {
        sfn.execution_status(arn).await.expect("DescribeExecution") == wanted
    })
    .await;
}

/// The states the execution entered, in order.
async fn entered_states(sfn: &StepFunctions, arn: &str) -> Vec<String> {
    sfn.execution_history(arn)
        .await
        .expect("GetExecutionHistory")
        .into_iter()
        .filter(|e| e.event_type.ends_with("StateEntered"))
        .filter_map(|e| e.state)
        .collect()
}

/// (step, transition) of the job's `JobStep*` events, in order.
fn step_transitions(events: &[Event]) -> Vec<(String, &'static str)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::JobStepStarted(s) => Some((s.step.clone(), "started")),
            Event::JobStepRetried(s) => Some((s.step.clone(), "retried")),
            Event::JobStepSucceeded(s) => Some((s.step.clone(), "succeeded")),
            Event::JobStepFailed(s) => Some((s.step.clone(), "failed")),
            _ => None,
        })
        .collect()
}

/// Per task index, how many `TaskCompleted` and final `TaskFailed` it has.
async fn task_outcomes(h: &Harness, job_id: JobId) -> BTreeMap<u32, (usize, usize)> {
    let mut outcomes = BTreeMap::new();
    for (_, event) in h.all_events().await {
        match event {
            Event::TaskCompleted(e) if e.job_id == job_id => {
                outcomes.entry(e.index).or_insert((0, 0)).0 += 1;
            }
            Event::TaskFailed(e) if e.job_id == job_id && e.final_failure => {
                outcomes.entry(e.index).or_insert((0, 0)).1 += 1;
            }
            _ => {}
        }
    }
    outcomes
}

/// A moto_server of the test's own with the job state machine, or `None` (the test is skipped
/// with a note) without moto.
async fn step_functions(test: &str) -> Option<(StepFunctions, testing::Moto)> {
    testing::fresh_step_functions(test).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_to_completed_through_a_real_execution() {
    let Some((sfn, _moto)) = step_functions("sfn-completed").await else {
        return;
    };
    let h = Harness::new().await;
    let (pool, orchestrator) = h.orchestrator(&sfn, sfn_config()).await;
    let running = tokio::spawn(orchestrator.run(std::future::pending()));
    let job_id = h.submit(6, 3).await;

    // No workers yet: the Monitor step answers "Running" after its hold, and the execution
    // Waits and asks again.
    eventually("a second Monitor step", JOB_TIMEOUT, async || {
        let steps = step_transitions(&h.job_events(job_id).await);
        steps
            .iter()
            .filter(|(s, t)| s == "Monitor" && *t == "started")
            .count()
            >= 2
    })
    .await;
    let workers = h.workers(|_, _| None);
    h.wait_for_status(job_id, shoal_domain::JobStatus::Completed)
        .await;

    let events = h.job_events(job_id).await;
    let arns = execution_arn(&events);
    assert_eq!(arns.len(), 1, "one execution, recorded once");
    assert!(
        arns[0].ends_with(&format!(":execution:{}:{job_id}", sfn_name(&sfn))),
        "named after the job: {}",
        arns[0]
    );
    wait_for_execution(&sfn, &arns[0], "SUCCEEDED").await;
    // The step's success is recorded before the answer that ends the execution.
    let events = h.job_events(job_id).await;
    let states = entered_states(&sfn, &arns[0]).await;
    for state in [
        "Start",
        "CreateTasks",
        "EnqueueTasks",
        "Monitor",
        "Finished?",
        "Wait",
        "CompleteJob",
        "Completed",
    ] {
        assert!(
            states.iter().any(|s| s == state),
            "{state} is in the history {states:?}"
        );
    }
    let steps = step_transitions(&events);
    for step in ["CreateTasks", "EnqueueTasks", "Monitor", "CompleteJob"] {
        assert!(steps.contains(&(step.to_owned(), "started")), "{steps:?}");
        assert!(steps.contains(&(step.to_owned(), "succeeded")), "{steps:?}");
    }
    let ends = events
        .iter()
        .filter(|e| matches!(e, Event::JobCompleted(_) | Event::JobFailed(_)))
        .count();
    assert_eq!(ends, 1, "one ending");
    let outcomes = task_outcomes(&h, job_id).await;
    assert_eq!(outcomes.len(), 6);
    assert!(outcomes.values().all(|&o| o == (1, 0)), "{outcomes:?}");

    // Starting the same job's execution again is the same execution.
    let again = sfn
        .start_execution(
            &job_id.to_string(),
            &json!({"job_id": job_id.to_string(), "resume": false,
                    "timing": {"heartbeat_seconds": 4, "wait_seconds": 1}}),
        )
        .await
        .expect("idempotent start");
    assert_eq!(again, arns[0]);

    workers.abort();
    running.abort();
    let _ = running.await;
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_tasks_all_fail_ends_in_the_fail_state() {
    let Some((sfn, _moto)) = step_functions("sfn-failed").await else {
        return;
    };
    let h = Harness::new().await;
    let (pool, orchestrator) = h.orchestrator(&sfn, sfn_config()).await;
    let running = tokio::spawn(orchestrator.run(std::future::pending()));
    let workers = h.workers(|_, _| Some(false));
    let job_id = h.submit(3, 1).await;
    h.wait_for_status(job_id, shoal_domain::JobStatus::Failed)
        .await;

    let events = h.job_events(job_id).await;
    let arns = execution_arn(&events);
    assert_eq!(arns.len(), 1);
    wait_for_execution(&sfn, &arns[0], "FAILED").await;
    // The step's success is recorded before the answer that ends the execution.
    let events = h.job_events(job_id).await;
    let states = entered_states(&sfn, &arns[0]).await;
    assert!(states.iter().any(|s| s == "FailJob"), "{states:?}");
    assert!(
        !states.iter().any(|s| s == "CompleteJob"),
        "never completed: {states:?}"
    );
    let steps = step_transitions(&events);
    assert!(
        steps.contains(&("FailJob".to_owned(), "succeeded")),
        "{steps:?}"
    );
    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::JobFailed(f) => Some(f.failed_tasks),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [3], "one JobFailed, for the 3 tasks");
    let outcomes = task_outcomes(&h, job_id).await;
    assert!(outcomes.values().all(|&o| o == (0, 1)), "{outcomes:?}");

    workers.abort();
    running.abort();
    let _ = running.await;
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_killed_mid_step_is_replaced_after_the_heartbeat_times_out() {
    let Some((sfn, _moto)) = step_functions("sfn-killed").await else {
        return;
    };
    let h = Harness::new().await;
    // The first orchestrator would send its first heartbeat after 30 s: it dies before, so
    // the step's heartbeat (4 s) times out. (moto reuses a retried step's token, and records
    // a success as a failure if the failed attempt had sent a heartbeat.)
    let first_config = StepFunctionsConfig {
        heartbeat_interval: Duration::from_secs(30),
        monitor_hold: Duration::from_secs(60),
        ..sfn_config()
    };
    let (first_pool, first) = h.orchestrator(&sfn, first_config).await;
    let first_running = tokio::spawn(first.run(std::future::pending()));
    let job_id = h.submit(5, 3).await;
    // No workers: the job cannot end, so the Monitor step is held by the first orchestrator.
    eventually("the Monitor step", JOB_TIMEOUT, async || {
        step_transitions(&h.job_events(job_id).await).contains(&("Monitor".to_owned(), "started"))
    })
    .await;
    first_running.abort();
    let _ = first_running.await;
    first_pool.close().await;

    let (second_pool, second) = h.orchestrator(&sfn, sfn_config()).await;
    let second_running = tokio::spawn(second.run(std::future::pending()));
    eventually("the Monitor step retried", JOB_TIMEOUT, async || {
        step_transitions(&h.job_events(job_id).await).contains(&("Monitor".to_owned(), "retried"))
    })
    .await;
    let workers = h.workers(|_, _| None);
    h.wait_for_status(job_id, shoal_domain::JobStatus::Completed)
        .await;

    let events = h.job_events(job_id).await;
    let arns = execution_arn(&events);
    assert_eq!(arns.len(), 1);
    wait_for_execution(&sfn, &arns[0], "SUCCEEDED").await;
    let monitors = entered_states(&sfn, &arns[0])
        .await
        .iter()
        .filter(|s| *s == "Monitor")
        .count();
    assert!(monitors >= 1);
    let outcomes = task_outcomes(&h, job_id).await;
    assert_eq!(outcomes.len(), 5, "every task");
    assert!(
        outcomes.values().all(|&o| o == (1, 0)),
        "exactly once: {outcomes:?}"
    );
    let enqueued = h
        .all_events()
        .await
        .iter()
        .filter(|(_, e)| matches!(e, Event::TaskEnqueued(t) if t.job_id == job_id))
        .count();
    assert_eq!(enqueued, 5, "each task created once");

    workers.abort();
    second_running.abort();
    let _ = second_running.await;
    second_pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_job_stops_its_execution() {
    let Some((sfn, _moto)) = step_functions("sfn-cancel").await else {
        return;
    };
    let h = Harness::new().await;
    let (pool, orchestrator) = h.orchestrator(&sfn, sfn_config()).await;
    let running = tokio::spawn(orchestrator.run(std::future::pending()));
    let job_id = h.submit(4, 3).await;
    eventually("the Monitor step", JOB_TIMEOUT, async || {
        step_transitions(&h.job_events(job_id).await).contains(&("Monitor".to_owned(), "started"))
    })
    .await;
    h.cancel(job_id).await;
    let arns = execution_arn(&h.job_events(job_id).await);
    assert_eq!(arns.len(), 1);
    wait_for_execution(&sfn, &arns[0], "ABORTED").await;
    assert_eq!(
        h.job(job_id).await.0.status,
        shoal_domain::JobStatus::Cancelled
    );
    running.abort();
    let _ = running.await;
    pool.close().await;
}

/// What a job did, as both drivers must do it: the job stream's events and each task
/// stream's events (type, attempt, final or not), bookkeeping of the Step Functions driver,
/// ids and times aside.
async fn effects(h: &Harness, job_id: JobId) -> (Vec<String>, BTreeMap<u32, Vec<String>>) {
    let mut job = Vec::new();
    let mut tasks: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (record, event) in h.all_events().await {
        if event.job_id() != Some(job_id) || event.is_driver_bookkeeping() {
            continue;
        }
        let described = match &event {
            Event::TasksCreated(e) => format!("TasksCreated {}..{}", e.from_index, e.to_index),
            Event::JobFailed(e) => format!("JobFailed {}", e.failed_tasks),
            Event::TaskStarted(e) => format!("TaskStarted {}", e.attempt),
            Event::TaskCompleted(e) => format!("TaskCompleted {}", e.attempt),
            Event::TaskFailed(e) => format!("TaskFailed {} final={}", e.attempt, e.final_failure),
            Event::TaskRetryScheduled(e) => format!("TaskRetryScheduled {}", e.attempt),
            _ => record.event_type.clone(),
        };
        match event.task() {
            Some((_, index)) => tasks.entry(index).or_default().push(described),
            None => job.push(described),
        }
    }
    (job, tasks)
}

/// Index 1 fails once and then succeeds; index 2 fails every attempt.
fn mixed(index: u32, attempt: u32) -> Option<bool> {
    match (index, attempt) {
        (1, 1) => Some(true),
        (2, _) => Some(true),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_drivers_have_the_same_effects() {
    let Some((sfn, _moto)) = step_functions("sfn-same").await else {
        return;
    };

    // The built-in driver.
    let builtin = Harness::new().await;
    let mut orchestrator = Orchestrator::new(
        orchestrator_config(),
        builtin.log.clone(),
        builtin.queue.clone() as Arc<dyn TaskQueue>,
        builtin.db.clone(),
    )
    .expect("valid configuration");
    let builtin_job = builtin.submit(6, 2).await;
    let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
    while builtin.job(builtin_job).await.0.status != shoal_domain::JobStatus::Failed {
        assert!(tokio::time::Instant::now() < deadline, "built-in driver");
        orchestrator.run_until_idle().await.expect("orchestrator");
        builtin.work(mixed).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The Step Functions driver.
    let h = Harness::new().await;
    let (pool, orchestrator) = h.orchestrator(&sfn, sfn_config()).await;
    let running = tokio::spawn(orchestrator.run(std::future::pending()));
    let workers = h.workers(mixed);
    let job_id = h.submit(6, 2).await;
    h.wait_for_status(job_id, shoal_domain::JobStatus::Failed)
        .await;
    let arns = execution_arn(&h.job_events(job_id).await);
    wait_for_execution(&sfn, &arns[0], "FAILED").await;

    let (builtin_job_events, builtin_tasks) = effects(&builtin, builtin_job).await;
    let (sfn_job_events, sfn_tasks) = effects(&h, job_id).await;
    assert_eq!(sfn_job_events, builtin_job_events, "the job's own events");
    assert_eq!(sfn_tasks, builtin_tasks, "each task's events");
    assert_eq!(
        sfn_tasks[&2].last().map(String::as_str),
        Some("TaskFailed 2 final=true")
    );

    workers.abort();
    running.abort();
    let _ = running.await;
    pool.close().await;
}

/// The state machine's name, from its ARN.
fn sfn_name(sfn: &StepFunctions) -> String {
    sfn.state_machine_arn()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned()
}
