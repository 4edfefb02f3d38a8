//! The job aggregate (stream `job-<id>`): submission, chunked expansion into tasks, and the
//! job's end (completed, failed, cancelled, retried).
//!
//! The job stream does not see task events. Whether every task is terminal is the caller's
//! knowledge (the orchestrator folds them into a [`crate::JobProgress`]); the job aggregate only
//! guards the order of the job's own life.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::events::{
    Event, JobCancelled, JobCompleted, JobFailed, JobPriorityChanged, JobRetryRequested,
    JobSubmitted, TaskEnqueued, TasksCreated,
};
use crate::ids::{JobId, TaskId};
use crate::limits::{DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_SECONDS, Limits};
use crate::rejection::Rejection;
use crate::split::Split;
use crate::task::FIRST_ATTEMPT;

/// A job's status, as the REST API shows it (`"PENDING"`, ...).
///
/// The job stream itself goes PENDING -> CREATING_TASKS -> ENQUEUED -> COMPLETED | FAILED,
/// CANCELLED from any non-terminal status, and RUNNING only after a retry request. Read models
/// show RUNNING as soon as a task has started: see [`crate::JobProgress::displayed_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Accepted; no task exists yet.
    #[default]
    Pending,
    /// Some, not all, tasks exist.
    CreatingTasks,
    /// Every task exists; none has started yet (in read models).
    Enqueued,
    /// Tasks are running.
    Running,
    /// Every task completed. Final.
    Completed,
    /// Every task ended and some failed. Final unless the failed tasks are retried.
    Failed,
    /// Cancelled by a user. Final.
    Cancelled,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 7] = [
        Self::Pending,
        Self::CreatingTasks,
        Self::Enqueued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The API name: `"PENDING"`, `"CREATING_TASKS"`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::CreatingTasks => "CREATING_TASKS",
            Self::Enqueued => "ENQUEUED",
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// The job has ended: COMPLETED, FAILED or CANCELLED.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The status read models show for a job whose own stream says `self`: an ENQUEUED job is
    /// RUNNING once any of its tasks has started. Every other status is shown as is.
    pub const fn displayed(self, tasks_started: bool) -> JobStatus {
        match self {
            Self::Enqueued if tasks_started => Self::Running,
            status => status,
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of [`JobStatus::ALL`] / [`crate::TaskStatus::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;
    /// Parses the API name (exact, upper case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// The part of a job's stream that its status depends on. Every reader of a job folds it
/// through [`JobLifecycle::apply`]: the aggregate ([`evolve_job`]), the read views
/// ([`crate::JobView`]) and the analytics projection. `Default` is "not submitted".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct JobLifecycle {
    /// The status of the job's own stream (see [`JobStatus::displayed`] for what readers show).
    pub status: JobStatus,
    /// How many tasks the job has in all (from `JobSubmitted`).
    pub total_tasks: u32,
    /// Tasks `0..created_upto` exist (from `TasksCreated`).
    pub created_upto: u32,
}

impl JobLifecycle {
    /// A job just submitted: PENDING, no task created.
    pub const fn submitted(total_tasks: u32) -> Self {
        JobLifecycle {
            status: JobStatus::Pending,
            total_tasks,
            created_upto: 0,
        }
    }

    /// Every task exists.
    pub const fn all_tasks_created(&self) -> bool {
        self.created_upto >= self.total_tasks
    }

    /// Applies one event of the job's stream; task events change nothing.
    ///
    /// PENDING -> CREATING_TASKS -> ENQUEUED as chunks of tasks are created; COMPLETED,
    /// FAILED, CANCELLED when the job ends; a retry request brings an ENQUEUED or FAILED job
    /// to RUNNING.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::JobSubmitted(e) => *self = Self::submitted(e.total_tasks),
            Event::TasksCreated(e) => {
                self.created_upto = self.created_upto.max(e.to_index);
                if matches!(self.status, JobStatus::Pending | JobStatus::CreatingTasks) {
                    self.status = if self.all_tasks_created() {
                        JobStatus::Enqueued
                    } else {
                        JobStatus::CreatingTasks
                    };
                }
            }
            Event::JobCompleted(_) => self.status = JobStatus::Completed,
            Event::JobFailed(_) => self.status = JobStatus::Failed,
            Event::JobCancelled(_) => self.status = JobStatus::Cancelled,
            Event::JobRetryRequested(_) => {
                if matches!(self.status, JobStatus::Enqueued | JobStatus::Failed) {
                    self.status = JobStatus::Running;
                }
            }
            Event::TaskEnqueued(_)
            | Event::TaskStarted(_)
            | Event::TaskCompleted(_)
            | Event::TaskFailed(_)
            | Event::TaskRetryScheduled(_)
            | Event::TaskDeadLettered(_)
            | Event::JobExecutionStarted(_)
            | Event::JobStepStarted(_)
            | Event::JobStepSucceeded(_)
            | Event::JobStepRetried(_)
            | Event::JobStepFailed(_)
            | Event::TaskRequeued(_)
            | Event::TokenCreated(_)
            | Event::TokenRevoked(_)
            | Event::JobPriorityChanged(_)
            | Event::TaskReleased(_)
            | Event::LimitSet(_)
            | Event::JobConcurrencySet(_) => {}
        }
    }
}

/// The job stream, folded. `Default` is "not submitted".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobState {
    /// The submission (split, parameters, budget); `None` until `JobSubmitted`.
    pub submitted: Option<JobSubmitted>,
    /// Meaningful once submitted.
    pub status: JobStatus,
    /// Tasks `0..created_upto` exist.
    pub created_upto: u32,
    /// The current priority (from `JobSubmitted`, then `JobPriorityChanged`).
    pub priority: i32,
    /// Its own concurrency limit and key, if it was submitted with them (`JobConcurrencySet`).
    pub concurrency: Option<crate::events::JobConcurrencySet>,
}

impl JobState {
    /// The job's id, once submitted.
    pub fn job_id(&self) -> Option<JobId> {
        self.submitted.as_ref().map(|s| s.job_id)
    }

    /// How many tasks the job has in all (0 before submission).
    pub fn total_tasks(&self) -> u32 {
        self.submitted.as_ref().map_or(0, |s| s.total_tasks)
    }

    /// Every task exists (false before submission).
    pub fn all_tasks_created(&self) -> bool {
        self.submitted.is_some() && self.lifecycle().all_tasks_created()
    }

    /// The job's lifecycle as its stream says.
    pub fn lifecycle(&self) -> JobLifecycle {
        JobLifecycle {
            status: self.status,
            total_tasks: self.total_tasks(),
            created_upto: self.created_upto,
        }
    }
}

/// Submit a new job. Validated against `limits` (see [`Limits::violations`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SubmitJob {
    /// A new id (see [`JobId::new`]).
    pub job_id: JobId,
    /// Which handler runs the tasks.
    pub job_type: String,
    /// How the job becomes tasks.
    pub split: Split,
    /// A JSON object, or null for none.
    pub parameters: Value,
    /// Attempts per task; default [`DEFAULT_MAX_ATTEMPTS`] (capped by the limit).
    pub max_attempts: Option<u32>,
    /// Timeout of one attempt; default [`DEFAULT_TIMEOUT_SECONDS`] (capped by the limit).
    pub timeout_seconds: Option<u32>,
    /// The limits in force (from configuration).
    pub limits: Limits,
    /// The handler for its tasks when no worker registered one under `job_type` and
    /// `parameters.work_type` names none: [`ORIGINAL_DEFAULT_HANDLER`] for jobs submitted
    /// through the original system's REST API (what its workers did), `None` otherwise (such
    /// a task fails: "no handler for job type ...").
    pub fallback_handler: Option<String>,
    /// The current time.
    pub now: DateTime<Utc>,
    /// Its priority (see [`crate::priority`]): [`crate::priority::DEFAULT_PRIORITY`] unless
    /// the submission gives one; checked against the priority range.
    pub priority: i64,
}

/// The handler the original system's workers ran for a task without `work_type`.
pub const ORIGINAL_DEFAULT_HANDLER: &str = "cpu_bound";

/// What can be asked of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobCommand {
    /// Accept a job: `JobSubmitted`.
    SubmitJob(SubmitJob),
    /// Create the next chunk of at most `max_chunk` tasks: `TasksCreated` followed by one
    /// `TaskEnqueued` per task (for the task streams). Append all of them in one transaction,
    /// the `TasksCreated` at the job stream's expected version: a concurrent expansion then
    /// conflicts instead of duplicating tasks.
    CreateTasks {
        /// Most tasks in this chunk (>= 1).
        max_chunk: u32,
        /// The current time.
        now: DateTime<Utc>,
    },
    /// Mark the job COMPLETED. The caller has seen every task COMPLETED.
    CompleteJob {
        /// The current time.
        now: DateTime<Utc>,
    },
    /// Mark the job FAILED. The caller has seen every task terminal, `failed_tasks` FAILED.
    FailJob {
        /// How many tasks FAILED.
        failed_tasks: u32,
        /// The current time.
        now: DateTime<Utc>,
    },
    /// Cancel the job.
    CancelJob {
        /// Why, for the record.
        reason: Option<String>,
        /// The current time.
        now: DateTime<Utc>,
    },
    /// Record that `failed_tasks` failed tasks are being retried (each by a `RetryTask` on its
    /// own stream, appended in the same transaction).
    RequestRetry {
        /// How many failed tasks are retried (>= 1).
        failed_tasks: u32,
        /// The current time.
        now: DateTime<Utc>,
    },
    /// Change the job's priority: `JobPriorityChanged`, or nothing when it already has this
    /// priority (a repeated command changes nothing). Refused once the job has ended.
    ChangePriority {
        /// The new priority (checked against the priority range).
        priority: i64,
        /// The current time.
        now: DateTime<Utc>,
    },
}

/// Decides a job command. Pure: see [`crate::Aggregate`].
pub fn decide_job(state: &JobState, command: JobCommand) -> Result<Vec<Event>, Rejection> {
    match command {
        JobCommand::SubmitJob(cmd) => submit(state, cmd),
        JobCommand::CreateTasks { max_chunk, now } => create_tasks(state, max_chunk, now),
        JobCommand::CompleteJob { now } => {
            let job = ending(state, "be completed")?;
            Ok(vec![
                JobCompleted {
                    job_id: job.job_id,
                    at: now,
                }
                .into(),
            ])
        }
        JobCommand::FailJob { failed_tasks, now } => {
            let job = ending(state, "be failed")?;
            Ok(vec![
                JobFailed {
                    job_id: job.job_id,
                    failed_tasks,
                    at: now,
                }
                .into(),
            ])
        }
        JobCommand::CancelJob { reason, now } => {
            let job = existing(state)?;
            match state.status {
                JobStatus::Cancelled => Err(Rejection::JobAlreadyCancelled { job_id: job.job_id }),
                status if status.is_terminal() => Err(transition(job, status, "be cancelled")),
                _ => Ok(vec![
                    JobCancelled {
                        job_id: job.job_id,
                        reason,
                        at: now,
                    }
                    .into(),
                ]),
            }
        }
        JobCommand::RequestRetry { failed_tasks, now } => {
            let job = existing(state)?;
            match state.status {
                JobStatus::CreatingTasks
                | JobStatus::Enqueued
                | JobStatus::Running
                | JobStatus::Failed => {}
                status => return Err(transition(job, status, "retry tasks")),
            }
            if failed_tasks == 0 {
                return Err(Rejection::NothingToRetry { job_id: job.job_id });
            }
            Ok(vec![
                JobRetryRequested {
                    job_id: job.job_id,
                    tasks: failed_tasks,
                    at: now,
                }
                .into(),
            ])
        }
        JobCommand::ChangePriority { priority, now } => {
            let job = existing(state)?;
            let priority = crate::priority::check(priority)?;
            if state.status.is_terminal() {
                return Err(transition(job, state.status, "change priority"));
            }
            if priority == state.priority {
                return Ok(Vec::new());
            }
            Ok(vec![
                JobPriorityChanged {
                    job_id: job.job_id,
                    priority,
                    previous: state.priority,
                    at: now,
                }
                .into(),
            ])
        }
    }
}

/// Applies one event to a job's state (its status through [`JobLifecycle::apply`]). Task events
/// and unknown situations leave it unchanged.
pub fn evolve_job(mut state: JobState, event: &Event) -> JobState {
    match event {
        Event::JobSubmitted(e) => {
            state.submitted = Some(e.clone());
            state.priority = e.priority;
        }
        Event::JobPriorityChanged(e) => state.priority = e.priority,
        Event::JobConcurrencySet(e) => state.concurrency = Some(e.clone()),
        _ => {}
    }
    let mut lifecycle = state.lifecycle();
    lifecycle.apply(event);
    state.status = lifecycle.status;
    state.created_upto = lifecycle.created_upto;
    state
}

fn existing(state: &JobState) -> Result<&JobSubmitted, Rejection> {
    state.submitted.as_ref().ok_or(Rejection::JobNotFound)
}

fn transition(job: &JobSubmitted, status: JobStatus, action: &'static str) -> Rejection {
    Rejection::JobTransition {
        job_id: job.job_id,
        status,
        action,
    }
}

/// The job may end (complete or fail): every task exists and it has not ended.
fn ending<'a>(state: &'a JobState, action: &'static str) -> Result<&'a JobSubmitted, Rejection> {
    let job = existing(state)?;
    match state.status {
        JobStatus::Enqueued | JobStatus::Running => Ok(job),
        status => Err(transition(job, status, action)),
    }
}

fn submit(state: &JobState, cmd: SubmitJob) -> Result<Vec<Event>, Rejection> {
    if let Some(job) = &state.submitted {
        return Err(Rejection::JobAlreadyExists { job_id: job.job_id });
    }
    if let Some(rejection) = cmd.limits.violations(&cmd).into_iter().next() {
        return Err(rejection);
    }
    let priority = crate::priority::check(cmd.priority)?;
    let parameters = match cmd.parameters {
        Value::Object(map) => map,
        // Null: checked by `violations`, anything else was rejected there.
        _ => Map::new(),
    };
    let max_attempts = cmd
        .max_attempts
        .unwrap_or(DEFAULT_MAX_ATTEMPTS.min(cmd.limits.max_attempts_limit));
    let timeout_seconds = cmd
        .timeout_seconds
        .unwrap_or(DEFAULT_TIMEOUT_SECONDS.min(cmd.limits.max_timeout_seconds));
    Ok(vec![
        JobSubmitted {
            job_id: cmd.job_id,
            job_type: cmd.job_type,
            total_tasks: cmd.split.task_count(),
            split: cmd.split,
            parameters,
            max_attempts,
            timeout_seconds,
            submitted_at: cmd.now,
            fallback_handler: cmd.fallback_handler,
            priority,
        }
        .into(),
    ])
}

fn create_tasks(
    state: &JobState,
    max_chunk: u32,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, Rejection> {
    let job = existing(state)?;
    if max_chunk == 0 {
        return Err(Rejection::ChunkSizeZero);
    }
    if state.status == JobStatus::Cancelled {
        return Err(transition(job, state.status, "create tasks"));
    }
    if state.all_tasks_created() {
        return Err(Rejection::AllTasksCreated {
            job_id: job.job_id,
            total_tasks: job.total_tasks,
        });
    }
    let from_index = state.created_upto;
    let to_index = from_index.saturating_add(max_chunk).min(job.total_tasks);
    let mut events = Vec::with_capacity(1 + (to_index - from_index) as usize);
    events.push(
        TasksCreated {
            job_id: job.job_id,
            from_index,
            to_index,
            at: now,
        }
        .into(),
    );
    events.extend((from_index..to_index).map(|index| {
        Event::from(TaskEnqueued {
            job_id: job.job_id,
            task_id: TaskId::for_task(job.job_id, index),
            index,
            job_type: job.job_type.clone(),
            input: job.split.task_input(index, &job.parameters),
            attempt: FIRST_ATTEMPT,
            max_attempts: job.max_attempts,
            timeout_seconds: job.timeout_seconds,
            at: now,
            fallback_handler: job.fallback_handler.clone(),
        })
    }));
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Aggregate, JobAggregate};
    use crate::testing::given;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    fn job_id() -> JobId {
        JobId::parse("0190a5c4-1f2e-7abc-8def-0123456789ab").unwrap()
    }

    fn submit_cmd(split: Split) -> SubmitJob {
        SubmitJob {
            job_id: job_id(),
            job_type: "cpu_bound".into(),
            split,
            parameters: json!({"work_duration_seconds": 1}),
            max_attempts: None,
            timeout_seconds: None,
            limits: Limits::default(),
            now: now(),
            fallback_handler: None,
            priority: 0,
        }
    }

    fn submitted(split: Split) -> Event {
        let mut parameters = Map::new();
        parameters.insert("work_duration_seconds".into(), json!(1));
        JobSubmitted {
            job_id: job_id(),
            job_type: "cpu_bound".into(),
            total_tasks: split.task_count(),
            split,
            parameters,
            max_attempts: 3,
            timeout_seconds: 300,
            submitted_at: now(),
            fallback_handler: None,
            priority: 0,
        }
        .into()
    }

    fn total(n: u32) -> Split {
        Split::Total { total_tasks: n }
    }

    fn created(from_index: u32, to_index: u32) -> Event {
        TasksCreated {
            job_id: job_id(),
            from_index,
            to_index,
            at: now(),
        }
        .into()
    }

    fn enqueued(index: u32, input: Value) -> Event {
        TaskEnqueued {
            job_id: job_id(),
            task_id: TaskId::for_task(job_id(), index),
            index,
            job_type: "cpu_bound".into(),
            input,
            attempt: 1,
            max_attempts: 3,
            timeout_seconds: 300,
            at: now(),
            fallback_handler: None,
        }
        .into()
    }

    fn params_input() -> Value {
        json!({"work_duration_seconds": 1})
    }

    fn completed() -> Event {
        JobCompleted {
            job_id: job_id(),
            at: now(),
        }
        .into()
    }

    fn failed(n: u32) -> Event {
        JobFailed {
            job_id: job_id(),
            failed_tasks: n,
            at: now(),
        }
        .into()
    }

    fn cancelled() -> Event {
        JobCancelled {
            job_id: job_id(),
            reason: Some("no longer needed".into()),
            at: now(),
        }
        .into()
    }

    fn retry_requested(n: u32) -> Event {
        JobRetryRequested {
            job_id: job_id(),
            tasks: n,
            at: now(),
        }
        .into()
    }

    fn create(max_chunk: u32) -> JobCommand {
        JobCommand::CreateTasks {
            max_chunk,
            now: now(),
        }
    }

    fn cancel() -> JobCommand {
        JobCommand::CancelJob {
            reason: Some("no longer needed".into()),
            now: now(),
        }
    }

    fn complete() -> JobCommand {
        JobCommand::CompleteJob { now: now() }
    }

    fn fail(n: u32) -> JobCommand {
        JobCommand::FailJob {
            failed_tasks: n,
            now: now(),
        }
    }

    fn retry(n: u32) -> JobCommand {
        JobCommand::RequestRetry {
            failed_tasks: n,
            now: now(),
        }
    }

    fn transition(status: JobStatus, action: &'static str) -> Rejection {
        Rejection::JobTransition {
            job_id: job_id(),
            status,
            action,
        }
    }

    /// A 2-task job whose tasks all exist.
    fn enqueued_job() -> Vec<Event> {
        vec![
            submitted(total(2)),
            created(0, 2),
            enqueued(0, params_input()),
            enqueued(1, params_input()),
        ]
    }

    // ----- SubmitJob -----

    #[test]
    fn submit_accepts_a_valid_job_with_defaults() {
        let state = given::<JobAggregate>([])
            .when(JobCommand::SubmitJob(submit_cmd(total(3))))
            .then([submitted(total(3))]);
        assert_eq!(state.status, JobStatus::Pending);
        assert_eq!(state.total_tasks(), 3);
        assert_eq!(state.job_id(), Some(job_id()));
        assert!(!state.all_tasks_created());
    }

    #[test]
    fn submit_keeps_explicit_budget_and_null_parameters_become_empty() {
        let mut cmd = submit_cmd(total(1));
        cmd.parameters = Value::Null;
        cmd.max_attempts = Some(5);
        cmd.timeout_seconds = Some(10);
        let Ok(events) = decide_job(&JobState::default(), JobCommand::SubmitJob(cmd)) else {
            panic!("rejected")
        };
        let [Event::JobSubmitted(e)] = &events[..] else {
            panic!("{events:?}")
        };
        assert!(e.parameters.is_empty());
        assert_eq!((e.max_attempts, e.timeout_seconds), (5, 10));
    }

    #[test]
    fn default_budget_respects_tighter_limits() {
        let mut cmd = submit_cmd(total(1));
        cmd.limits.max_attempts_limit = 2;
        cmd.limits.max_timeout_seconds = 60;
        let events = decide_job(&JobState::default(), JobCommand::SubmitJob(cmd)).unwrap();
        let [Event::JobSubmitted(e)] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!((e.max_attempts, e.timeout_seconds), (2, 60));
    }

    #[test]
    fn submit_item_split_counts_tasks() {
        let split = Split::Items {
            items: vec![json!(1); 250],
            batch_size: 100,
        };
        let state = given::<JobAggregate>([])
            .when(JobCommand::SubmitJob(submit_cmd(split.clone())))
            .then([submitted(split)]);
        assert_eq!(state.total_tasks(), 3);
    }

    #[test]
    fn submit_rejects_invalid_input() {
        given::<JobAggregate>([])
            .when(JobCommand::SubmitJob(submit_cmd(total(0))))
            .then_rejects(Rejection::TotalTasksOutOfRange {
                got: 0,
                max: 1_000_000,
            });
        let mut cmd = submit_cmd(total(1));
        cmd.parameters = json!("x");
        given::<JobAggregate>([])
            .when(JobCommand::SubmitJob(cmd))
            .then_rejects(Rejection::ParametersNotObject);
    }

    #[test]
    fn submit_to_an_existing_job_is_rejected() {
        given::<JobAggregate>([submitted(total(1))])
            .when(JobCommand::SubmitJob(submit_cmd(total(1))))
            .then_rejects(Rejection::JobAlreadyExists { job_id: job_id() });
    }

    // ----- CreateTasks -----

    #[test]
    fn create_tasks_in_chunks() {
        let state = given::<JobAggregate>([submitted(total(3))])
            .when(create(2))
            .then([
                created(0, 2),
                enqueued(0, params_input()),
                enqueued(1, params_input()),
            ]);
        assert_eq!(state.status, JobStatus::CreatingTasks);
        assert_eq!(state.created_upto, 2);

        let state = given::<JobAggregate>([
            submitted(total(3)),
            created(0, 2),
            enqueued(0, params_input()),
            enqueued(1, params_input()),
        ])
        .when(create(2))
        .then([created(2, 3), enqueued(2, params_input())]);
        assert_eq!(state.status, JobStatus::Enqueued);
        assert!(state.all_tasks_created());
    }

    #[test]
    fn create_tasks_slices_items() {
        let split = Split::Items {
            items: vec![json!("a"), json!("b"), json!("c")],
            batch_size: 2,
        };
        given::<JobAggregate>([submitted(split)])
            .when(create(10))
            .then([
                created(0, 2),
                enqueued(0, json!({"work_duration_seconds": 1, "items": ["a", "b"]})),
                enqueued(1, json!({"work_duration_seconds": 1, "items": ["c"]})),
            ]);
    }

    #[test]
    fn expanding_twice_gives_the_same_tasks() {
        let state = JobAggregate::fold(&[submitted(total(5))]);
        let first = decide_job(&state, create(5)).unwrap();
        let second = decide_job(&state, create(5)).unwrap();
        assert_eq!(first, second);
        let ids: Vec<_> = first.iter().filter_map(Event::task_id).collect();
        assert_eq!(ids.len(), 5);
        assert_eq!(ids[3], TaskId::for_task(job_id(), 3));
    }

    #[test]
    fn create_tasks_rejections() {
        given::<JobAggregate>([])
            .when(create(1))
            .then_rejects(Rejection::JobNotFound);
        given::<JobAggregate>([submitted(total(1))])
            .when(create(0))
            .then_rejects(Rejection::ChunkSizeZero);
        given::<JobAggregate>(enqueued_job())
            .when(create(1))
            .then_rejects(Rejection::AllTasksCreated {
                job_id: job_id(),
                total_tasks: 2,
            });
        given::<JobAggregate>([submitted(total(2)), cancelled()])
            .when(create(1))
            .then_rejects(transition(JobStatus::Cancelled, "create tasks"));
    }

    // ----- CompleteJob / FailJob -----

    #[test]
    fn complete_and_fail_an_enqueued_job() {
        let state = given::<JobAggregate>(enqueued_job())
            .when(complete())
            .then([completed()]);
        assert_eq!(state.status, JobStatus::Completed);
        let state = given::<JobAggregate>(enqueued_job())
            .when(fail(1))
            .then([failed(1)]);
        assert_eq!(state.status, JobStatus::Failed);
    }

    #[test]
    fn a_job_with_tasks_to_create_cannot_end() {
        given::<JobAggregate>([submitted(total(2))])
            .when(complete())
            .then_rejects(transition(JobStatus::Pending, "be completed"));
        given::<JobAggregate>([
            submitted(total(2)),
            created(0, 1),
            enqueued(0, params_input()),
        ])
        .when(fail(1))
        .then_rejects(transition(JobStatus::CreatingTasks, "be failed"));
    }

    #[test]
    fn an_ended_job_cannot_end_again() {
        let mut done = enqueued_job();
        done.push(completed());
        given::<JobAggregate>(done.clone())
            .when(complete())
            .then_rejects(transition(JobStatus::Completed, "be completed"));
        given::<JobAggregate>(done)
            .when(fail(1))
            .then_rejects(transition(JobStatus::Completed, "be failed"));
        let mut failed_job = enqueued_job();
        failed_job.push(failed(1));
        given::<JobAggregate>(failed_job)
            .when(complete())
            .then_rejects(transition(JobStatus::Failed, "be completed"));
        let mut cancelled_job = enqueued_job();
        cancelled_job.push(cancelled());
        given::<JobAggregate>(cancelled_job)
            .when(complete())
            .then_rejects(transition(JobStatus::Cancelled, "be completed"));
        given::<JobAggregate>([])
            .when(fail(1))
            .then_rejects(Rejection::JobNotFound);
    }

    // ----- CancelJob -----

    #[test]
    fn cancel_a_live_job() {
        for past in [
            vec![submitted(total(2))],
            vec![submitted(total(2)), created(0, 1)],
            enqueued_job(),
            [enqueued_job(), vec![retry_requested(1)]].concat(),
        ] {
            let state = given::<JobAggregate>(past)
                .when(cancel())
                .then([cancelled()]);
            assert_eq!(state.status, JobStatus::Cancelled);
        }
    }

    #[test]
    fn cancel_rejections() {
        given::<JobAggregate>([])
            .when(cancel())
            .then_rejects(Rejection::JobNotFound);
        given::<JobAggregate>([enqueued_job(), vec![completed()]].concat())
            .when(cancel())
            .then_rejects(transition(JobStatus::Completed, "be cancelled"));
        given::<JobAggregate>([enqueued_job(), vec![failed(2)]].concat())
            .when(cancel())
            .then_rejects(transition(JobStatus::Failed, "be cancelled"));
        given::<JobAggregate>([submitted(total(1)), cancelled()])
            .when(cancel())
            .then_rejects(Rejection::JobAlreadyCancelled { job_id: job_id() });
        let twice = Rejection::JobAlreadyCancelled { job_id: job_id() };
        assert_eq!(
            twice.to_string(),
            format!("job {} is already CANCELLED", job_id())
        );
        assert!(twice.is_duplicate());
    }

    // ----- RequestRetry -----

    #[test]
    fn retry_brings_a_failed_job_back_to_running() {
        let state = given::<JobAggregate>([enqueued_job(), vec![failed(2)]].concat())
            .when(retry(2))
            .then([retry_requested(2)]);
        assert_eq!(state.status, JobStatus::Running);
        // ... which can then end again.
        given::<JobAggregate>([enqueued_job(), vec![failed(2), retry_requested(2)]].concat())
            .when(complete())
            .then([completed()]);
    }

    #[test]
    fn retry_while_running_or_creating() {
        let state = given::<JobAggregate>(enqueued_job())
            .when(retry(1))
            .then([retry_requested(1)]);
        assert_eq!(state.status, JobStatus::Running);
        let state = given::<JobAggregate>([submitted(total(3)), created(0, 1)])
            .when(retry(1))
            .then([retry_requested(1)]);
        assert_eq!(state.status, JobStatus::CreatingTasks);
    }

    #[test]
    fn retry_rejections() {
        given::<JobAggregate>([])
            .when(retry(1))
            .then_rejects(Rejection::JobNotFound);
        given::<JobAggregate>([enqueued_job(), vec![failed(1)]].concat())
            .when(retry(0))
            .then_rejects(Rejection::NothingToRetry { job_id: job_id() });
        given::<JobAggregate>([submitted(total(1))])
            .when(retry(1))
            .then_rejects(transition(JobStatus::Pending, "retry tasks"));
        given::<JobAggregate>([enqueued_job(), vec![completed()]].concat())
            .when(retry(1))
            .then_rejects(transition(JobStatus::Completed, "retry tasks"));
        given::<JobAggregate>([enqueued_job(), vec![cancelled()]].concat())
            .when(retry(1))
            .then_rejects(transition(JobStatus::Cancelled, "retry tasks"));
    }

    // ----- ChangePriority -----

    fn change_priority(priority: i64) -> JobCommand {
        JobCommand::ChangePriority {
            priority,
            now: now(),
        }
    }

    fn priority_changed(priority: i32, previous: i32) -> Event {
        JobPriorityChanged {
            job_id: job_id(),
            priority,
            previous,
            at: now(),
        }
        .into()
    }

    #[test]
    fn submit_with_a_priority() {
        let mut cmd = submit_cmd(total(1));
        cmd.priority = 7;
        let events = decide_job(&JobState::default(), JobCommand::SubmitJob(cmd)).unwrap();
        let [Event::JobSubmitted(e)] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(e.priority, 7);
        assert_eq!(JobAggregate::fold(&events).priority, 7);
        let mut cmd = submit_cmd(total(1));
        cmd.priority = 1001;
        given::<JobAggregate>([])
            .when(JobCommand::SubmitJob(cmd))
            .then_rejects(Rejection::PriorityOutOfRange {
                got: 1001,
                min: -1000,
                max: 1000,
            });
    }

    #[test]
    fn change_the_priority_of_a_live_job() {
        let state = given::<JobAggregate>(enqueued_job())
            .when(change_priority(5))
            .then([priority_changed(5, 0)]);
        assert_eq!(state.priority, 5);
        assert_eq!(
            state.status,
            JobStatus::Enqueued,
            "the status does not change"
        );
        let state = given::<JobAggregate>([enqueued_job(), vec![priority_changed(5, 0)]].concat())
            .when(change_priority(-3))
            .then([priority_changed(-3, 5)]);
        assert_eq!(state.priority, -3);
    }

    #[test]
    fn changing_to_the_same_priority_changes_nothing() {
        given::<JobAggregate>([enqueued_job(), vec![priority_changed(5, 0)]].concat())
            .when(change_priority(5))
            .then(Vec::new());
        given::<JobAggregate>(enqueued_job())
            .when(change_priority(0))
            .then(Vec::new());
    }

    #[test]
    fn change_priority_rejections() {
        given::<JobAggregate>([])
            .when(change_priority(1))
            .then_rejects(Rejection::JobNotFound);
        given::<JobAggregate>(enqueued_job())
            .when(change_priority(-1001))
            .then_rejects(Rejection::PriorityOutOfRange {
                got: -1001,
                min: -1000,
                max: 1000,
            });
        for (end, status) in [
            (completed(), JobStatus::Completed),
            (failed(1), JobStatus::Failed),
            (cancelled(), JobStatus::Cancelled),
        ] {
            given::<JobAggregate>([enqueued_job(), vec![end]].concat())
                .when(change_priority(1))
                .then_rejects(transition(status, "change priority"));
        }
    }

    #[test]
    fn old_submissions_read_back_with_the_default_priority() {
        let Event::JobSubmitted(e) = submitted(total(1)) else {
            unreachable!()
        };
        let data = serde_json::to_value(&e).unwrap();
        assert!(data.get("priority").is_none(), "0 is left out: {data}");
        let read: JobSubmitted = serde_json::from_value(data).unwrap();
        assert_eq!(read.priority, 0);
    }

    // ----- statuses -----

    #[test]
    fn statuses_have_api_names() {
        for status in JobStatus::ALL {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, json!(status.as_str()));
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
        }
        assert_eq!(JobStatus::CreatingTasks.to_string(), "CREATING_TASKS");
        assert!("running".parse::<JobStatus>().is_err());
        assert!(JobStatus::Cancelled.is_terminal());
        assert!(!JobStatus::Running.is_terminal());
    }

    #[test]
    fn task_events_do_not_change_the_job() {
        let state = JobAggregate::fold(&enqueued_job());
        assert_eq!(state.status, JobStatus::Enqueued);
        assert_eq!(state.created_upto, 2);
    }
}
