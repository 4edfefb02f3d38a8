//! The Step Functions driver: each job's lifecycle is an execution of the state machine in
//! `infra/deploy/stepfunctions/job.asl.json`, `CreateTasks -> EnqueueTasks -> Monitor (loop
//! with Wait) -> CompleteJob | FailJob`, and this orchestrator does the states' work when the
//! state machine asks for it (callbacks on the control queue), with the same code as the
//! built-in driver:
//!
//! - the **consumer** (shared with the built-in driver) folds the log and relays retries, but
//!   leaves expansion, the first relay and the job's end to the state machine; it starts a
//!   job's execution when it reads `JobSubmitted` (named after the job, so never two), another
//!   when a FAILED job's tasks are retried (it resumes at Monitor), and stops them when it reads
//!   `JobCancelled`;
//! - the **control loop** receives the steps the executions ask for and does each one:
//!   `CreateTasks` (the expander's chunks until none is left), `EnqueueTasks` (sends the job's
//!   tasks that wait for their first attempt), `Monitor` (waits, on the progress the consumer
//!   saves, until every task has ended or `monitor_hold` has passed), `CompleteJob` /
//!   `FailJob` (the built-in monitor's ending, on a fully folded job stream) and
//!   `RecordFailure`. It answers `SendTaskSuccess` / `SendTaskFailure` and sends
//!   `SendTaskHeartbeat` every `heartbeat_interval` while it works.
//!
//! Every step can run twice (a step whose orchestrator died is retried by the state machine
//! after its heartbeat times out) because every step is idempotent: expansion and endings are
//! appends at expected versions, and a task message sent twice is harmless. Each step's
//! transitions are appended to the job's stream (`JobStepStarted`, `JobStepRetried`,
//! `JobStepSucceeded`, `JobStepFailed`) for its history: bookkeeping that no status depends on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use shoal_domain::events::{JobExecutionStarted, JobStep};
use shoal_domain::{Event, JobId, JobStatus, Outcome, TaskId};
use shoal_infra::eventlog::{AppendBatch, EventLog, ExpectedVersion, LogError, StreamAppend};
use shoal_infra::orchestrator_store::{TrackedJob, TrackedStatus};
use shoal_infra::stepfunctions::{ControlMessage, StepFunctions};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::consumer::{enqueued_message, finish};
use super::expander::{Chunk, expand_chunk};
use super::{OrchestratorError, Shared, load_job, new_event};

/// Conflicts on the job stream before a bookkeeping append gives up.
const MAX_CONFLICTS: usize = 5;

/// The Monitor state's `TimeoutSeconds` in `job.asl.json`: a Monitor step answers before it.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long CompleteJob / FailJob wait for the consumer to fold the job stream (their
/// `TimeoutSeconds` is 600).
const END_WAIT: Duration = Duration::from_secs(120);

/// Error names the state machine's `Retry` and `Catch` match.
const TRANSIENT: &str = "Shoal.Transient";
const REJECTED: &str = "Shoal.Rejected";
const NOT_FINISHED: &str = "Shoal.NotFinished";

/// How the Step Functions driver runs. `Default` gives production values.
#[derive(Debug, Clone)]
pub struct StepFunctionsConfig {
    /// The `HeartbeatSeconds` of every step, given to each execution in its input: a step
    /// whose orchestrator is silent for longer is retried. >= 1.
    pub heartbeat_seconds: u32,
    /// How often this orchestrator sends `SendTaskHeartbeat` during a step (well below
    /// `heartbeat_seconds`).
    pub heartbeat_interval: Duration,
    /// The `Wait` between two Monitor steps, given to each execution in its input.
    pub wait_seconds: u32,
    /// How long a Monitor step waits for the job to end before answering "still running"
    /// (each answer costs three state transitions: Monitor, its Choice, Wait).
    pub monitor_hold: Duration,
    /// How often a waiting step looks at the saved progress again (it is also woken up when
    /// the consumer saves).
    pub poll_interval: Duration,
    /// The long poll on the control queue.
    pub receive_wait: Duration,
    /// For moto_server only: after a success, send one more heartbeat this long after it.
    /// moto (5.2) drops a success that arrives before it starts waiting for the token (it then
    /// waits for a heartbeat and times the step out); the heartbeat makes it read the
    /// success. Step Functions itself needs none (`None`): it would answer `TaskTimedOut`.
    pub moto_confirm_after: Option<Duration>,
}

impl Default for StepFunctionsConfig {
    fn default() -> Self {
        StepFunctionsConfig {
            heartbeat_seconds: 60,
            heartbeat_interval: Duration::from_secs(15),
            wait_seconds: 10,
            monitor_hold: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            receive_wait: Duration::from_secs(20),
            moto_confirm_after: None,
        }
    }
}

impl StepFunctionsConfig {
    pub(super) fn validate(&self) -> Result<(), OrchestratorError> {
        if self.heartbeat_seconds == 0 {
            return Err(OrchestratorError::Config(
                "heartbeat_seconds must be at least 1".into(),
            ));
        }
        if self.heartbeat_interval.is_zero() || self.poll_interval.is_zero() {
            return Err(OrchestratorError::Config(
                "heartbeat_interval and poll_interval must be positive".into(),
            ));
        }
        if self.monitor_hold >= MONITOR_TIMEOUT {
            return Err(OrchestratorError::Config(format!(
                "monitor_hold must be below the Monitor state's TimeoutSeconds ({} s)",
                MONITOR_TIMEOUT.as_secs()
            )));
        }
        if self.heartbeat_interval >= Duration::from_secs(self.heartbeat_seconds.into()) {
            tracing::warn!(
                heartbeat_seconds = self.heartbeat_seconds,
                heartbeat_interval = ?self.heartbeat_interval,
                "the heartbeat interval is not below HeartbeatSeconds: long steps will time out"
            );
        }
        Ok(())
    }
}

/// The driver's half of [`Shared`]: Step Functions and how to use it.
#[derive(Debug)]
pub(super) struct Driver {
    pub(super) sfn: StepFunctions,
    pub(super) config: StepFunctionsConfig,
}

/// What the consumer asks of the driver after folding a batch.
#[derive(Debug, Default)]
pub(super) struct ExecutionChanges {
    /// Jobs submitted in the batch: start their execution.
    pub(super) submitted: Vec<JobId>,
    /// FAILED jobs whose tasks are retried, with the version of the `JobRetryRequested`: start
    /// an execution that resumes at Monitor.
    pub(super) resumed: Vec<(JobId, i64)>,
    /// Cancelled jobs: stop their executions.
    pub(super) cancelled: Vec<JobId>,
}

impl ExecutionChanges {
    pub(super) fn is_empty(&self) -> bool {
        self.submitted.is_empty() && self.resumed.is_empty() && self.cancelled.is_empty()
    }
}

/// Starts and stops executions as the batch requires. Idempotent: a batch processed again
/// (after a crash before its save) starts the same executions, which Step Functions
/// recognizes by name, and records each `JobExecutionStarted` once.
pub(super) async fn apply_changes(
    shared: &Shared,
    driver: &Driver,
    changes: ExecutionChanges,
) -> Result<(), OrchestratorError> {
    for job_id in changes.submitted {
        start_execution(shared, driver, job_id, None).await?;
    }
    for (job_id, version) in changes.resumed {
        start_execution(shared, driver, job_id, Some(version)).await?;
    }
    for job_id in changes.cancelled {
        let (events, _) = job_events(shared.log.as_ref(), job_id).await?;
        let mut arns: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                Event::JobExecutionStarted(e) => Some(e.execution_arn.clone()),
                _ => None,
            })
            .collect();
        if arns.is_empty() {
            arns.push(driver.sfn.execution_arn(&job_id.to_string()));
        }
        for arn in arns {
            driver
                .sfn
                .stop_execution(&arn, "the job was cancelled")
                .await?;
            tracing::info!(%job_id, execution_arn = %arn, "job cancelled; its execution is stopped");
        }
    }
    Ok(())
}

async fn start_execution(
    shared: &Shared,
    driver: &Driver,
    job_id: JobId,
    resumed_at: Option<i64>,
) -> Result<(), OrchestratorError> {
    let name = match resumed_at {
        None => job_id.to_string(),
        Some(version) => format!("{job_id}-retry-{version}"),
    };
    let input = json!({
        "job_id": job_id.to_string(),
        "resume": resumed_at.is_some(),
        "timing": {
            "heartbeat_seconds": driver.config.heartbeat_seconds,
            "wait_seconds": driver.config.wait_seconds,
        },
    });
    let execution_arn = driver.sfn.start_execution(&name, &input).await?;
    for _ in 0..MAX_CONFLICTS {
        let (events, version) = job_events(shared.log.as_ref(), job_id).await?;
        let recorded = events.iter().any(
            |e| matches!(e, Event::JobExecutionStarted(e) if e.execution_arn == execution_arn),
        );
        if recorded {
            return Ok(());
        }
        let event = Event::JobExecutionStarted(JobExecutionStarted {
            job_id,
            execution_arn: execution_arn.clone(),
            at: Utc::now(),
        });
        match append_at(shared.log.as_ref(), job_id, version, &event).await {
            Ok(()) => {
                tracing::info!(%job_id, %execution_arn, "execution started");
                return Ok(());
            }
            Err(LogError::Conflict { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(OrchestratorError::Log(LogError::Conflict {
        stream_id: job_id.stream_id(),
        expected: -1,
    }))
}

/// The control loop while leading: receives steps and does each in its own task. Never
/// returns; when it is dropped (leadership lost, shutdown) its steps stop unanswered, and the
/// state machine retries them once their heartbeat times out.
pub(super) async fn run(shared: Shared, driver: Arc<Driver>) {
    let mut steps = JoinSet::new();
    loop {
        while steps.try_join_next().is_some() {}
        match driver.sfn.receive(10, driver.config.receive_wait).await {
            Ok(messages) => {
                for message in messages {
                    steps.spawn(handle(shared.clone(), driver.clone(), message));
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot receive from the control queue; retrying");
                tokio::time::sleep(shared.config.error_backoff).await;
            }
        }
    }
}

/// Why a step did not succeed: the error name the state machine sees, and the cause.
#[derive(Debug)]
struct StepError {
    name: &'static str,
    cause: String,
}

impl StepError {
    fn transient(cause: impl std::fmt::Display) -> Self {
        StepError {
            name: TRANSIENT,
            cause: cause.to_string(),
        }
    }
    fn rejected(cause: impl std::fmt::Display) -> Self {
        StepError {
            name: REJECTED,
            cause: cause.to_string(),
        }
    }
    fn not_finished(cause: impl std::fmt::Display) -> Self {
        StepError {
            name: NOT_FINISHED,
            cause: cause.to_string(),
        }
    }
}

impl From<OrchestratorError> for StepError {
    fn from(error: OrchestratorError) -> Self {
        match error {
            OrchestratorError::Config(_) => StepError::rejected(error),
            _ => StepError::transient(error),
        }
    }
}

impl From<LogError> for StepError {
    fn from(error: LogError) -> Self {
        StepError::from(OrchestratorError::from(error))
    }
}

/// Aborts the heartbeat task when the step ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Does one step and answers it.
async fn handle(shared: Shared, driver: Arc<Driver>, message: ControlMessage) {
    let span = tracing::info_span!(
        "orchestrator.sfn_step",
        step = %message.step,
        job_id = %message.job_id,
        retry_count = message.retry_count,
    );
    async {
        let token = message.task_token.clone();
        let Ok(job_id) = JobId::parse(&message.job_id) else {
            answer(&driver, &token, Err(StepError::rejected("not a job id"))).await;
            return;
        };
        let step = |detail: Option<String>| JobStep {
            job_id,
            step: message.step.clone(),
            retry_count: message.retry_count,
            detail,
            at: Utc::now(),
        };
        let recording = message.step != "RecordFailure";
        if recording {
            let started = if message.retry_count > 0 {
                Event::JobStepRetried(step(None))
            } else {
                Event::JobStepStarted(step(None))
            };
            if let Err(error) = append_job_event(shared.log.as_ref(), job_id, &started).await {
                answer(&driver, &token, Err(StepError::transient(error))).await;
                return;
            }
        }
        let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat(
            driver.sfn.clone(),
            token.clone(),
            driver.config.heartbeat_interval,
        )));
        let result = match message.step.as_str() {
            "CreateTasks" => create_tasks(&shared, job_id).await,
            "EnqueueTasks" => enqueue_tasks(&shared, job_id).await,
            "Monitor" => monitor(&shared, &driver, job_id).await,
            "CompleteJob" => end_job(&shared, &driver, job_id, Outcome::Completed).await,
            "FailJob" => end_job(&shared, &driver, job_id, Outcome::Failed).await,
            "RecordFailure" => record_failure(&shared, job_id, &message).await,
            other => Err(StepError::rejected(format!("unknown step {other:?}"))),
        };
        let result = match result {
            Ok(output) if recording => {
                let succeeded = Event::JobStepSucceeded(step(Some(output.to_string())));
                match append_job_event(shared.log.as_ref(), job_id, &succeeded).await {
                    Ok(()) => Ok(output),
                    Err(error) => Err(StepError::transient(error)),
                }
            }
            Ok(output) => Ok(output),
            Err(error) => {
                let failed =
                    Event::JobStepFailed(step(Some(format!("{}: {}", error.name, error.cause))));
                if let Err(append) = append_job_event(shared.log.as_ref(), job_id, &failed).await {
                    tracing::warn!(error = %append, "cannot record the step's failure");
                }
                Err(error)
            }
        };
        answer(&driver, &token, result).await;
    }
    .instrument(span)
    .await;
}

/// Sends the step's answer. A token nobody waits for any more (the step timed out and was
/// retried, or the execution ended) is not an error.
async fn answer(driver: &Driver, token: &str, result: Result<Value, StepError>) {
    let sent = match &result {
        Ok(output) => {
            let sent = driver.sfn.succeed(token, output).await;
            if let (Ok(()), Some(after)) = (&sent, driver.config.moto_confirm_after) {
                tokio::time::sleep(after).await;
                if let Err(error) = driver.sfn.heartbeat(token).await {
                    tracing::debug!(%error, "confirming heartbeat not taken");
                }
            }
            sent
        }
        Err(error) => {
            tracing::warn!(error = error.name, cause = %error.cause, "step failed");
            driver.sfn.fail(token, error.name, &error.cause).await
        }
    };
    match sent {
        Ok(()) => tracing::debug!(ok = result.is_ok(), "step answered"),
        Err(error) if error.is_stale_token() => {
            tracing::info!(%error, "the step was no longer waited for")
        }
        // Step Functions will time the step out and retry it.
        Err(error) => tracing::warn!(%error, "cannot answer the step"),
    }
}

async fn heartbeat(sfn: StepFunctions, token: String, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match sfn.heartbeat(&token).await {
            Ok(()) => {}
            Err(error) if error.is_stale_token() => return,
            Err(error) => tracing::warn!(%error, "heartbeat failed"),
        }
    }
}

/// CREATE_TASKS: the expander's chunks, one after the other, until every task exists.
async fn create_tasks(shared: &Shared, job_id: JobId) -> Result<Value, StepError> {
    let mut cached = None;
    let mut chunks = 0u32;
    loop {
        match expand_chunk(shared, job_id, cached.take()).await? {
            Chunk::More(state, version) => {
                chunks += 1;
                cached = Some((*state, version));
            }
            Chunk::Last => {
                chunks += 1;
                break;
            }
            Chunk::Nothing => break,
            Chunk::Later => tokio::time::sleep(shared.config.error_backoff).await,
        }
    }
    let (state, _) = load_job(shared.log.as_ref(), job_id).await?;
    if state.submitted.is_none() {
        return Err(StepError::rejected("no such job"));
    }
    Ok(json!({
        "chunks": chunks,
        "tasks": state.created_upto,
        "status": state.status.as_str(),
    }))
}

/// ENQUEUE_TASKS: sends every task of the job that is still waiting for its first attempt
/// (its stream holds only `TaskEnqueued`), `chunk_size` tasks per read and send. Tasks that
/// have moved on (started, retried: the consumer relays retries) are left alone.
async fn enqueue_tasks(shared: &Shared, job_id: JobId) -> Result<Value, StepError> {
    let (state, _) = load_job(shared.log.as_ref(), job_id).await?;
    if state.submitted.is_none() {
        return Err(StepError::rejected("no such job"));
    }
    if state.status == JobStatus::Cancelled {
        return Ok(json!({ "sent": 0, "status": state.status.as_str() }));
    }
    if !state.all_tasks_created() {
        return Err(StepError::transient("the job's tasks are not all created"));
    }
    let chunk = shared.config.chunk_size.max(1);
    let mut sent = 0usize;
    let mut from = 0u32;
    while from < state.created_upto {
        let to = from.saturating_add(chunk).min(state.created_upto);
        let streams: Vec<String> = (from..to)
            .map(|index| TaskId::for_task(job_id, index).stream_id())
            .collect();
        let records = shared.log.read_streams(&streams).await?;
        let mut lengths: HashMap<&str, usize> = HashMap::new();
        for record in &records {
            *lengths.entry(record.stream_id.as_str()).or_default() += 1;
        }
        let mut messages = Vec::new();
        for record in &records {
            if lengths.get(record.stream_id.as_str()) != Some(&1) {
                continue;
            }
            match Event::decode(&record.event_type, record.schema_version, record.data.get()) {
                Ok(Event::TaskEnqueued(e)) => messages.push(enqueued_message(&e, record)),
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    stream_id = %record.stream_id,
                    %error,
                    "undecodable TaskEnqueued: the task cannot be sent"
                ),
            }
        }
        if !messages.is_empty() {
            sent += messages.len();
            shared
                .queue
                .send(messages)
                .await
                .map_err(StepError::transient)?;
        }
        from = to;
    }
    super::OrchestratorMetrics::add(&shared.metrics.inner.relayed, sent);
    Ok(json!({ "sent": sent }))
}

/// The job's row as the consumer last saved it.
async fn tracked(shared: &Shared, job_id: JobId) -> Result<Option<TrackedJob>, StepError> {
    Ok(shared
        .store
        .load_jobs(&[job_id.as_uuid()])
        .await
        .map_err(StepError::transient)?
        .into_iter()
        .next())
}

fn outcome_of(job: &TrackedJob) -> &'static str {
    match job.status {
        TrackedStatus::Completed => "Completed",
        TrackedStatus::Failed => "Failed",
        TrackedStatus::Cancelled => "Cancelled",
        TrackedStatus::Active => match job.progress.is_finished() {
            Some(Outcome::Completed) => "Completed",
            Some(Outcome::Failed) => "Failed",
            None => "Running",
        },
    }
}

/// MONITOR: waits on the log (the progress the consumer saves, woken at each save) until the
/// job's tasks have all ended or it was cancelled, at most `monitor_hold`; answers the outcome
/// (`Running` when the hold passed first). The number of tasks does not matter.
async fn monitor(shared: &Shared, driver: &Driver, job_id: JobId) -> Result<Value, StepError> {
    let deadline = Instant::now() + driver.config.monitor_hold;
    loop {
        let saved = shared.saved.notified();
        tokio::pin!(saved);
        saved.as_mut().enable();
        let job = tracked(shared, job_id).await?;
        let outcome = job.as_ref().map_or("Running", outcome_of);
        let now = Instant::now();
        if outcome != "Running" || now >= deadline {
            let progress = job.map(|j| j.progress).unwrap_or_default();
            return Ok(json!({
                "outcome": outcome,
                "total": progress.total_tasks,
                "completed": progress.completed,
                "failed": progress.failed,
            }));
        }
        let pause = driver.config.poll_interval.min(deadline - now);
        tokio::select! {
            () = saved => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// COMPLETE / FAIL: the built-in monitor's ending, once the consumer has folded the whole job
/// stream (this step's own `JobStepStarted` included), so that a cancellation or a retry
/// request it has not seen yet is never contradicted. `Shoal.NotFinished` when the job turns
/// out not to have ended that way (the state machine goes back to Monitor).
async fn end_job(
    shared: &Shared,
    driver: &Driver,
    job_id: JobId,
    outcome: Outcome,
) -> Result<Value, StepError> {
    let deadline = Instant::now() + END_WAIT;
    loop {
        let saved = shared.saved.notified();
        tokio::pin!(saved);
        saved.as_mut().enable();
        let job = tracked(shared, job_id)
            .await?
            .ok_or_else(|| StepError::transient("the job is not followed yet"))?;
        let (_, version) = load_job(shared.log.as_ref(), job_id).await?;
        if job.job_version >= version {
            let wanted = match outcome {
                Outcome::Completed => "Completed",
                Outcome::Failed => "Failed",
            };
            let found = outcome_of(&job);
            if found != wanted {
                return Err(StepError::not_finished(format!("the job is {found}")));
            }
            let status = match job.status {
                TrackedStatus::Active => finish(shared, job_id, &job, outcome).await?,
                status => Some(status),
            };
            return match status {
                Some(TrackedStatus::Completed) if outcome == Outcome::Completed => {
                    Ok(json!({ "status": "COMPLETED" }))
                }
                Some(TrackedStatus::Failed) if outcome == Outcome::Failed => {
                    Ok(json!({ "status": "FAILED", "failed_tasks": job.progress.failed }))
                }
                other => Err(StepError::not_finished(format!("the job is {other:?}"))),
            };
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(StepError::transient("the job stream is not folded yet"));
        }
        let pause = driver.config.poll_interval.min(deadline - now);
        tokio::select! {
            () = saved => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// A step failed for good (its retries are spent, or it was rejected): records it in the
/// job's history as a `JobStepFailed` of the step that was running. The job's status is left
/// as the log says (a user may cancel it or retry its tasks).
async fn record_failure(
    shared: &Shared,
    job_id: JobId,
    message: &ControlMessage,
) -> Result<Value, StepError> {
    let (events, _) = job_events(shared.log.as_ref(), job_id).await?;
    let running = events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::JobStepStarted(s) | Event::JobStepRetried(s) => Some(s.clone()),
            _ => None,
        })
        .map_or_else(|| "unknown".to_owned(), |s| s.step);
    let error = message.error.clone().unwrap_or(Value::Null);
    let detail = match (error.get("Error"), error.get("Cause")) {
        (Some(Value::String(name)), Some(Value::String(cause))) => format!("{name}: {cause}"),
        (Some(Value::String(name)), _) => name.clone(),
        _ => error.to_string(),
    };
    let failed = Event::JobStepFailed(JobStep {
        job_id,
        step: running.clone(),
        retry_count: message.retry_count,
        detail: Some(detail),
        at: Utc::now(),
    });
    append_job_event(shared.log.as_ref(), job_id, &failed).await?;
    tracing::warn!(%job_id, step = %running, "a step of the job's execution failed for good");
    Ok(json!({ "failed_step": running }))
}

/// The job stream's decodable events and its version.
async fn job_events(log: &dyn EventLog, job_id: JobId) -> Result<(Vec<Event>, i64), LogError> {
    let recorded = log.read_stream(&job_id.stream_id(), 0).await?;
    let version = recorded.last().map_or(0, |e| e.stream_version);
    let events = recorded
        .iter()
        .filter_map(|e| Event::decode(&e.event_type, e.schema_version, e.data.get()).ok())
        .collect();
    Ok((events, version))
}

async fn append_at(
    log: &dyn EventLog,
    job_id: JobId,
    version: i64,
    event: &Event,
) -> Result<(), LogError> {
    log.append(AppendBatch {
        streams: vec![StreamAppend {
            stream_id: job_id.stream_id(),
            expected: ExpectedVersion::Exact(version),
            events: vec![new_event(event)],
        }],
        ..AppendBatch::default()
    })
    .await
    .map(|_| ())
}

/// Appends a bookkeeping event at the job stream's end, re-reading it on a conflict.
async fn append_job_event(
    log: &dyn EventLog,
    job_id: JobId,
    event: &Event,
) -> Result<(), LogError> {
    let mut last = None;
    for _ in 0..MAX_CONFLICTS {
        let version = log
            .read_stream(&job_id.stream_id(), 0)
            .await?
            .last()
            .map_or(0, |e| e.stream_version);
        match append_at(log, job_id, version, event).await {
            Ok(()) => return Ok(()),
            Err(error @ LogError::Conflict { .. }) => last = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last.unwrap_or_else(|| LogError::Invalid("no append attempted".into())))
}
