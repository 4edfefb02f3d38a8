//! The task aggregate (stream `task-<id>`): attempts, retries and the dead-letter queue.
//!
//! ```text
//! ENQUEUED --start(1)------------------------> RUNNING
//! RUNNING  --complete------------------------> COMPLETED  final: every command is rejected
//! RUNNING  --fail (retryable, budget left)---> RETRYING --start(next attempt)--> RUNNING
//! RUNNING  --fail (otherwise)----------------> FAILED
//! FAILED   --retry (manual, fresh budget)----> RETRYING
//! FAILED   --dead-letter---------------------> FAILED (dead-lettered)
//! ```
//!
//! Every command that acts on a running attempt names it; a command for another attempt is
//! rejected. This is what makes duplicate and late queue deliveries harmless.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::{
    Event, TaskCompleted, TaskDeadLettered, TaskEnqueued, TaskFailed, TaskRequeued,
    TaskRetryScheduled, TaskStarted,
};
use crate::ids::{JobId, TaskId};
use crate::job::UnknownStatus;
use crate::rejection::Rejection;

/// The number of a task's first attempt.
pub const FIRST_ATTEMPT: u32 = 1;

/// A task's status, as the REST API shows it (`"ENQUEUED"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Known but not yet enqueued. Shoal creates tasks ENQUEUED; kept for the API.
    #[default]
    Pending,
    /// Waiting for a worker (first attempt).
    Enqueued,
    /// A worker runs the current attempt.
    Running,
    /// Succeeded. Final.
    Completed,
    /// Failed with no attempt left. Final unless retried by a user.
    Failed,
    /// Waiting for its next attempt.
    Retrying,
}

impl TaskStatus {
    /// Every status.
    pub const ALL: [TaskStatus; 6] = [
        Self::Pending,
        Self::Enqueued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Retrying,
    ];

    /// The API name: `"PENDING"`, `"ENQUEUED"`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Enqueued => "ENQUEUED",
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Retrying => "RETRYING",
        }
    }

    /// The task has ended: COMPLETED or FAILED (a FAILED task may still be retried by a user).
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }

    /// The status a task has after `event` of its stream, whatever it had before (task events
    /// are self-describing); `None` when the event does not move it (a dead-lettering, a job
    /// event). Every fold of a task's status goes through this.
    pub const fn after(event: &Event) -> Option<TaskStatus> {
        match event {
            Event::TaskEnqueued(_) => Some(Self::Enqueued),
            Event::TaskStarted(_) => Some(Self::Running),
            Event::TaskCompleted(_) => Some(Self::Completed),
            Event::TaskFailed(e) if e.final_failure => Some(Self::Failed),
            Event::TaskFailed(_) | Event::TaskRetryScheduled(_) => Some(Self::Retrying),
            Event::TaskDeadLettered(_)
            | Event::JobSubmitted(_)
            | Event::TasksCreated(_)
            | Event::JobCompleted(_)
            | Event::JobFailed(_)
            | Event::JobCancelled(_)
            | Event::JobRetryRequested(_)
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
            | Event::JobConcurrencySet(_) => None,
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = UnknownStatus;
    /// Parses the API name (exact, upper case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// The task stream, folded. `Default` is "does not exist".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskState {
    /// The task's definition (ids, type, input, budget); `None` until `TaskEnqueued`.
    pub enqueued: Option<TaskEnqueued>,
    /// Meaningful once enqueued.
    pub status: TaskStatus,
    /// The current attempt: running, or next to run.
    pub attempt: u32,
    /// The last attempt the current budget allows; automatic retries stop there.
    pub last_allowed_attempt: u32,
    /// Earliest start of the current attempt, while RETRYING.
    pub not_before: Option<DateTime<Utc>>,
    /// The worker of the latest start.
    pub worker: Option<String>,
    /// The latest failure's error.
    pub last_error: Option<String>,
    /// The latest final failure was dead-lettered.
    pub dead_lettered: bool,
}

impl TaskState {
    /// The task's id, once enqueued.
    pub fn task_id(&self) -> Option<TaskId> {
        self.enqueued.as_ref().map(|e| e.task_id)
    }

    /// The task's job, once enqueued.
    pub fn job_id(&self) -> Option<JobId> {
        self.enqueued.as_ref().map(|e| e.job_id)
    }

    /// How many times a failed attempt was followed by another one.
    pub fn retry_count(&self) -> u32 {
        self.attempt.saturating_sub(FIRST_ATTEMPT)
    }
}

/// What can be asked of a task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskCommand {
    /// A worker starts `attempt` (ENQUEUED or RETRYING -> RUNNING). `attempt` must be the
    /// current one: a second start of the same attempt is a duplicate delivery.
    StartTask {
        /// The attempt the queue message is for.
        attempt: u32,
        /// Who runs it.
        worker: String,
        /// The current time.
        now: DateTime<Utc>,
    },
    /// The running `attempt` succeeded (RUNNING -> COMPLETED).
    CompleteTask {
        /// The attempt that ran.
        attempt: u32,
        /// What the handler returned.
        result: Option<Value>,
        /// How long it ran.
        duration_ms: u64,
        /// The current time.
        now: DateTime<Utc>,
    },
    /// The running `attempt` failed. If `retryable` and the budget allows another attempt,
    /// the task is RETRYING with the next attempt due at `now + backoff_ms` (see
    /// [`crate::retry_backoff`]); otherwise it is FAILED.
    FailTask {
        /// The attempt that ran.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// Whether another attempt may help (false: fail now, whatever the budget).
        retryable: bool,
        /// Delay before the next attempt, in milliseconds.
        backoff_ms: u64,
        /// The current time.
        now: DateTime<Utc>,
    },
    /// A user retries a FAILED task: RETRYING, next attempt due now, with a fresh budget of
    /// `max_attempts` attempts.
    RetryTask {
        /// The current time.
        now: DateTime<Utc>,
    },
    /// The current attempt, ENQUEUED or RETRYING, has no live queue message: send a new one
    /// (the orchestrator's reconciler). `attempt` must be the current one.
    RequeueTask {
        /// The attempt whose message is missing.
        attempt: u32,
        /// Why (what the reconciler found).
        reason: String,
        /// The current time.
        now: DateTime<Utc>,
    },
    /// Record that the FAILED task's message went to the dead-letter queue.
    DeadLetterTask {
        /// Why.
        reason: String,
        /// The current time.
        now: DateTime<Utc>,
    },
}

/// Decides a task command. Pure: see [`crate::Aggregate`].
///
/// A COMPLETED task rejects every command; `CompleteTask` on it gives
/// [`Rejection::AlreadyCompleted`], which callers treat as a no-op.
pub fn decide_task(state: &TaskState, command: TaskCommand) -> Result<Vec<Event>, Rejection> {
    let task = state.enqueued.as_ref().ok_or(Rejection::TaskNotFound)?;
    let (job_id, task_id, index) = (task.job_id, task.task_id, task.index);
    let transition = |action: &'static str| Rejection::TaskTransition {
        task_id,
        status: state.status,
        action,
    };
    let same_attempt = |attempt: u32| {
        if attempt == state.attempt {
            Ok(())
        } else {
            Err(Rejection::WrongAttempt {
                task_id,
                attempt,
                current: state.attempt,
            })
        }
    };

    match command {
        TaskCommand::StartTask {
            attempt,
            worker,
            now,
        } => {
            match state.status {
                TaskStatus::Enqueued | TaskStatus::Retrying => same_attempt(attempt)?,
                TaskStatus::Running if attempt == state.attempt => {
                    return Err(Rejection::AttemptAlreadyStarted { task_id, attempt });
                }
                TaskStatus::Running => same_attempt(attempt)?,
                _ => return Err(transition("be started")),
            }
            Ok(vec![
                TaskStarted {
                    job_id,
                    task_id,
                    index,
                    attempt,
                    worker,
                    at: now,
                }
                .into(),
            ])
        }

        TaskCommand::CompleteTask {
            attempt,
            result,
            duration_ms,
            now,
        } => {
            match state.status {
                TaskStatus::Completed => return Err(Rejection::AlreadyCompleted { task_id }),
                TaskStatus::Running => same_attempt(attempt)?,
                _ => return Err(transition("be completed")),
            }
            Ok(vec![
                TaskCompleted {
                    job_id,
                    task_id,
                    index,
                    attempt,
                    result,
                    duration_ms,
                    at: now,
                }
                .into(),
            ])
        }

        TaskCommand::FailTask {
            attempt,
            error,
            retryable,
            backoff_ms,
            now,
        } => {
            if state.status != TaskStatus::Running {
                return Err(transition("be marked failed"));
            }
            same_attempt(attempt)?;
            let retry = retryable && attempt < state.last_allowed_attempt;
            let failed = TaskFailed {
                job_id,
                task_id,
                index,
                attempt,
                error,
                final_failure: !retry,
                at: now,
            };
            if !retry {
                return Ok(vec![failed.into()]);
            }
            let not_before = i64::try_from(backoff_ms)
                .ok()
                .and_then(Duration::try_milliseconds)
                .and_then(|backoff| now.checked_add_signed(backoff))
                .ok_or(Rejection::BackoffOutOfRange { backoff_ms })?;
            Ok(vec![
                failed.into(),
                TaskRetryScheduled {
                    job_id,
                    task_id,
                    index,
                    // Cannot overflow: attempt < last_allowed_attempt.
                    attempt: attempt + 1,
                    not_before,
                    manual: false,
                    at: now,
                }
                .into(),
            ])
        }

        TaskCommand::RetryTask { now } => {
            if state.status != TaskStatus::Failed {
                return Err(transition("be retried"));
            }
            let attempt = state
                .attempt
                .checked_add(1)
                .ok_or(Rejection::AttemptsExhausted { task_id })?;
            Ok(vec![
                TaskRetryScheduled {
                    job_id,
                    task_id,
                    index,
                    attempt,
                    not_before: now,
                    manual: true,
                    at: now,
                }
                .into(),
            ])
        }

        TaskCommand::RequeueTask {
            attempt,
            reason,
            now,
        } => {
            if !matches!(state.status, TaskStatus::Enqueued | TaskStatus::Retrying) {
                return Err(transition("be requeued"));
            }
            same_attempt(attempt)?;
            Ok(vec![
                TaskRequeued {
                    job_id,
                    task_id,
                    index,
                    attempt,
                    not_before: state.not_before,
                    reason,
                    at: now,
                }
                .into(),
            ])
        }

        TaskCommand::DeadLetterTask { reason, now } => {
            if state.status != TaskStatus::Failed {
                return Err(transition("be dead-lettered"));
            }
            if state.dead_lettered {
                return Err(Rejection::AlreadyDeadLettered { task_id });
            }
            Ok(vec![
                TaskDeadLettered {
                    job_id,
                    task_id,
                    index,
                    attempt: state.attempt,
                    reason,
                    at: now,
                }
                .into(),
            ])
        }
    }
}

/// The last attempt of a budget of `max_attempts` attempts starting at `attempt`.
fn last_allowed(attempt: u32, max_attempts: u32) -> u32 {
    attempt.saturating_add(max_attempts.saturating_sub(1))
}

/// Applies one event to a task's state (its status through [`TaskStatus::after`]). It trusts
/// the log; job events leave it unchanged.
pub fn evolve_task(mut state: TaskState, event: &Event) -> TaskState {
    if let Event::TaskEnqueued(e) = event {
        state = TaskState {
            attempt: e.attempt,
            last_allowed_attempt: last_allowed(e.attempt, e.max_attempts),
            enqueued: Some(e.clone()),
            ..TaskState::default()
        };
    }
    if let Some(status) = TaskStatus::after(event) {
        state.status = status;
    }
    match event {
        Event::TaskStarted(e) => {
            state.attempt = e.attempt;
            state.worker = Some(e.worker.clone());
            state.not_before = None;
        }
        Event::TaskFailed(e) => state.last_error = Some(e.error.clone()),
        Event::TaskRetryScheduled(e) => {
            state.attempt = e.attempt;
            state.not_before = Some(e.not_before);
            if e.manual {
                let max_attempts = state.enqueued.as_ref().map_or(1, |t| t.max_attempts);
                state.last_allowed_attempt = last_allowed(e.attempt, max_attempts);
                state.dead_lettered = false;
            }
        }
        Event::TaskDeadLettered(_) => state.dead_lettered = true,
        Event::TaskEnqueued(_)
        | Event::TaskCompleted(_)
        | Event::JobSubmitted(_)
        | Event::TasksCreated(_)
        | Event::JobCompleted(_)
        | Event::JobFailed(_)
        | Event::JobCancelled(_)
        | Event::JobRetryRequested(_)
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
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Aggregate, TaskAggregate};
    use crate::testing::given;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    fn job_id() -> JobId {
        JobId::parse("0190a5c4-1f2e-7abc-8def-0123456789ab").unwrap()
    }

    fn task_id() -> TaskId {
        TaskId::for_task(job_id(), 4)
    }

    // ----- events -----

    fn enqueued() -> Event {
        TaskEnqueued {
            job_id: job_id(),
            task_id: task_id(),
            index: 4,
            job_type: "cpu_bound".into(),
            input: json!({}),
            attempt: 1,
            max_attempts: 3,
            timeout_seconds: 300,
            at: now(),
            fallback_handler: None,
        }
        .into()
    }

    fn started(attempt: u32) -> Event {
        TaskStarted {
            job_id: job_id(),
            task_id: task_id(),
            index: 4,
            attempt,
            worker: "w1".into(),
            at: now(),
        }
        .into()
    }

    fn completed(attempt: u32) -> Event {
        TaskCompleted {
            job_id: job_id(),
            task_id: task_id(),
            index: 4,
            attempt,
            result: Some(json!({"ok": true})),
            duration_ms: 25,
            at: now(),
        }
        .into()
    }

    fn failed(attempt: u32, final_failure: bool) -> Event {
        TaskFailed {
            job_id: job_id(),
            task_id: task_id(),
            index: 4,
            attempt,
            error: "boom".into(),
            final_failure,
            at: now(),
        }
        .into()
    }

    fn retry_scheduled(attempt: u32, not_before: DateTime<Utc>, manual: bool) -> Event {
        TaskRetryScheduled {
            job_id: job_id(),
            task_id: task_id(),
            index: 4,
            attempt,
            not_before,
            manual,
            at: now(),
        }
        .into()
    }

    fn dead_lettered(attempt: u32) -> Event {
        TaskDeadLettered {
            job_id: job_id(),
            task_id: task_id(),
            index: 4,
            attempt,
            reason: "max attempts".into(),
            at: now(),
        }
        .into()
    }

    // ----- commands -----

    fn start(attempt: u32) -> TaskCommand {
        TaskCommand::StartTask {
            attempt,
            worker: "w1".into(),
            now: now(),
        }
    }

    fn complete(attempt: u32) -> TaskCommand {
        TaskCommand::CompleteTask {
            attempt,
            result: Some(json!({"ok": true})),
            duration_ms: 25,
            now: now(),
        }
    }

    fn fail(attempt: u32, retryable: bool) -> TaskCommand {
        TaskCommand::FailTask {
            attempt,
            error: "boom".into(),
            retryable,
            backoff_ms: 2_000,
            now: now(),
        }
    }

    fn retry() -> TaskCommand {
        TaskCommand::RetryTask { now: now() }
    }

    fn dead_letter() -> TaskCommand {
        TaskCommand::DeadLetterTask {
            reason: "max attempts".into(),
            now: now(),
        }
    }

    fn requeue(attempt: u32) -> TaskCommand {
        TaskCommand::RequeueTask {
            attempt,
            reason: "no live message".into(),
            now: now(),
        }
    }

    fn requeued(attempt: u32, not_before: Option<DateTime<Utc>>) -> Event {
        TaskRequeued {
            job_id: job_id(),
            task_id: task_id(),
            index: 4,
            attempt,
            not_before,
            reason: "no live message".into(),
            at: now(),
        }
        .into()
    }

    fn all_commands(attempt: u32) -> Vec<TaskCommand> {
        vec![
            requeue(attempt),
            start(attempt),
            complete(attempt),
            fail(attempt, true),
            fail(attempt, false),
            retry(),
            dead_letter(),
        ]
    }

    fn in_2s() -> DateTime<Utc> {
        now() + Duration::seconds(2)
    }

    fn transition(status: TaskStatus, action: &'static str) -> Rejection {
        Rejection::TaskTransition {
            task_id: task_id(),
            status,
            action,
        }
    }

    /// A task whose three attempts all failed.
    fn exhausted() -> Vec<Event> {
        vec![
            enqueued(),
            started(1),
            failed(1, false),
            retry_scheduled(2, in_2s(), false),
            started(2),
            failed(2, false),
            retry_scheduled(3, in_2s(), false),
            started(3),
            failed(3, true),
        ]
    }

    // ----- TaskEnqueued -----

    #[test]
    fn an_enqueued_task_has_its_first_attempt_and_budget() {
        let state = TaskAggregate::fold(&[enqueued()]);
        assert_eq!(state.status, TaskStatus::Enqueued);
        assert_eq!(state.attempt, 1);
        assert_eq!(state.last_allowed_attempt, 3);
        assert_eq!(state.task_id(), Some(task_id()));
        assert_eq!(state.job_id(), Some(job_id()));
        assert_eq!(state.retry_count(), 0);
    }

    #[test]
    fn every_command_on_a_missing_task_is_not_found() {
        for command in all_commands(1) {
            given::<TaskAggregate>([])
                .when(command)
                .then_rejects(Rejection::TaskNotFound);
        }
    }

    // ----- StartTask -----

    #[test]
    fn start_an_enqueued_task() {
        let state = given::<TaskAggregate>([enqueued()])
            .when(start(1))
            .then([started(1)]);
        assert_eq!(state.status, TaskStatus::Running);
        assert_eq!(state.worker.as_deref(), Some("w1"));
    }

    #[test]
    fn start_a_retrying_task_at_its_new_attempt() {
        let state = given::<TaskAggregate>([
            enqueued(),
            started(1),
            failed(1, false),
            retry_scheduled(2, in_2s(), false),
        ])
        .when(start(2))
        .then([started(2)]);
        assert_eq!(state.status, TaskStatus::Running);
        assert_eq!(state.attempt, 2);
        assert_eq!(state.not_before, None);
        assert_eq!(state.retry_count(), 1);
    }

    #[test]
    fn a_duplicate_start_is_rejected() {
        let r = Rejection::AttemptAlreadyStarted {
            task_id: task_id(),
            attempt: 1,
        };
        assert_eq!(
            r.to_string(),
            format!("attempt 1 of task {} already started", task_id())
        );
        given::<TaskAggregate>([enqueued(), started(1)])
            .when(start(1))
            .then_rejects(r);
    }

    #[test]
    fn a_start_for_another_attempt_is_rejected() {
        given::<TaskAggregate>([enqueued()])
            .when(start(2))
            .then_rejects(Rejection::WrongAttempt {
                task_id: task_id(),
                attempt: 2,
                current: 1,
            });
        // The late redelivery of attempt 1 after attempt 2 was scheduled.
        given::<TaskAggregate>([
            enqueued(),
            started(1),
            failed(1, false),
            retry_scheduled(2, in_2s(), false),
        ])
        .when(start(1))
        .then_rejects(Rejection::WrongAttempt {
            task_id: task_id(),
            attempt: 1,
            current: 2,
        });
        given::<TaskAggregate>([
            enqueued(),
            started(1),
            failed(1, false),
            retry_scheduled(2, in_2s(), false),
            started(2),
        ])
        .when(start(1))
        .then_rejects(Rejection::WrongAttempt {
            task_id: task_id(),
            attempt: 1,
            current: 2,
        });
    }

    #[test]
    fn start_of_an_ended_task_is_rejected() {
        given::<TaskAggregate>([enqueued(), started(1), completed(1)])
            .when(start(1))
            .then_rejects(transition(TaskStatus::Completed, "be started"));
        given::<TaskAggregate>(exhausted())
            .when(start(3))
            .then_rejects(transition(TaskStatus::Failed, "be started"));
    }

    // ----- CompleteTask -----

    #[test]
    fn complete_a_running_task() {
        let state = given::<TaskAggregate>([enqueued(), started(1)])
            .when(complete(1))
            .then([completed(1)]);
        assert_eq!(state.status, TaskStatus::Completed);
    }

    #[test]
    fn completing_a_completed_task_is_a_distinct_rejection() {
        let r = Rejection::AlreadyCompleted { task_id: task_id() };
        assert!(r.is_duplicate());
        given::<TaskAggregate>([enqueued(), started(1), completed(1)])
            .when(complete(1))
            .then_rejects(r.clone());
        given::<TaskAggregate>([enqueued(), started(1), completed(1)])
            .when(complete(7))
            .then_rejects(r);
    }

    #[test]
    fn complete_rejections() {
        given::<TaskAggregate>([enqueued()])
            .when(complete(1))
            .then_rejects(transition(TaskStatus::Enqueued, "be completed"));
        given::<TaskAggregate>([enqueued(), started(1)])
            .when(complete(2))
            .then_rejects(Rejection::WrongAttempt {
                task_id: task_id(),
                attempt: 2,
                current: 1,
            });
        given::<TaskAggregate>([
            enqueued(),
            started(1),
            failed(1, false),
            retry_scheduled(2, in_2s(), false),
        ])
        .when(complete(1))
        .then_rejects(transition(TaskStatus::Retrying, "be completed"));
        given::<TaskAggregate>(exhausted())
            .when(complete(3))
            .then_rejects(transition(TaskStatus::Failed, "be completed"));
    }

    // ----- FailTask -----

    #[test]
    fn a_retryable_failure_with_budget_left_schedules_a_retry() {
        let state = given::<TaskAggregate>([enqueued(), started(1)])
            .when(fail(1, true))
            .then([failed(1, false), retry_scheduled(2, in_2s(), false)]);
        assert_eq!(state.status, TaskStatus::Retrying);
        assert_eq!(state.attempt, 2);
        assert_eq!(state.not_before, Some(in_2s()));
        assert_eq!(state.last_error.as_deref(), Some("boom"));
        assert_eq!(state.last_allowed_attempt, 3);
    }

    #[test]
    fn the_last_attempt_fails_for_good() {
        let mut past = exhausted();
        past.pop();
        let state = given::<TaskAggregate>(past)
            .when(fail(3, true))
            .then([failed(3, true)]);
        assert_eq!(state.status, TaskStatus::Failed);
    }

    #[test]
    fn a_non_retryable_failure_fails_at_once() {
        let state = given::<TaskAggregate>([enqueued(), started(1)])
            .when(fail(1, false))
            .then([failed(1, true)]);
        assert_eq!(state.status, TaskStatus::Failed);
    }

    #[test]
    fn a_single_attempt_budget_never_retries() {
        let Event::TaskEnqueued(mut e) = enqueued() else {
            unreachable!()
        };
        e.max_attempts = 1;
        given::<TaskAggregate>([e.into(), started(1)])
            .when(fail(1, true))
            .then([failed(1, true)]);
    }

    #[test]
    fn fail_rejections() {
        given::<TaskAggregate>([enqueued()])
            .when(fail(1, true))
            .then_rejects(transition(TaskStatus::Enqueued, "be marked failed"));
        given::<TaskAggregate>([enqueued(), started(1)])
            .when(fail(2, true))
            .then_rejects(Rejection::WrongAttempt {
                task_id: task_id(),
                attempt: 2,
                current: 1,
            });
        given::<TaskAggregate>([enqueued(), started(1), completed(1)])
            .when(fail(1, true))
            .then_rejects(transition(TaskStatus::Completed, "be marked failed"));
        given::<TaskAggregate>([enqueued(), started(1)])
            .when(TaskCommand::FailTask {
                attempt: 1,
                error: "x".into(),
                retryable: true,
                backoff_ms: u64::MAX,
                now: now(),
            })
            .then_rejects(Rejection::BackoffOutOfRange {
                backoff_ms: u64::MAX,
            });
    }

    // ----- RetryTask -----

    #[test]
    fn a_manual_retry_gives_a_fresh_budget() {
        let state = given::<TaskAggregate>(exhausted())
            .when(retry())
            .then([retry_scheduled(4, now(), true)]);
        assert_eq!(state.status, TaskStatus::Retrying);
        assert_eq!(state.attempt, 4);
        assert_eq!(state.last_allowed_attempt, 6);

        // The new budget allows automatic retries again.
        let mut past = exhausted();
        past.extend([retry_scheduled(4, now(), true), started(4)]);
        given::<TaskAggregate>(past)
            .when(fail(4, true))
            .then([failed(4, false), retry_scheduled(5, in_2s(), false)]);
    }

    #[test]
    fn only_a_failed_task_can_be_retried() {
        given::<TaskAggregate>([enqueued()])
            .when(retry())
            .then_rejects(transition(TaskStatus::Enqueued, "be retried"));
        given::<TaskAggregate>([enqueued(), started(1)])
            .when(retry())
            .then_rejects(transition(TaskStatus::Running, "be retried"));
        given::<TaskAggregate>([enqueued(), started(1), failed(1, false)])
            .when(retry())
            .then_rejects(transition(TaskStatus::Retrying, "be retried"));
        let r = transition(TaskStatus::Completed, "be retried");
        assert_eq!(
            r.to_string(),
            format!("task {} is COMPLETED and cannot be retried", task_id())
        );
        given::<TaskAggregate>([enqueued(), started(1), completed(1)])
            .when(retry())
            .then_rejects(r);
    }

    // ----- DeadLetterTask -----

    #[test]
    fn dead_letter_a_failed_task() {
        let state = given::<TaskAggregate>(exhausted())
            .when(dead_letter())
            .then([dead_lettered(3)]);
        assert_eq!(state.status, TaskStatus::Failed);
        assert!(state.dead_lettered);

        let mut past = exhausted();
        past.push(dead_lettered(3));
        given::<TaskAggregate>(past.clone())
            .when(dead_letter())
            .then_rejects(Rejection::AlreadyDeadLettered { task_id: task_id() });
        // A manual retry clears it: the next final failure may be dead-lettered again.
        let state = given::<TaskAggregate>(past)
            .when(retry())
            .then([retry_scheduled(4, now(), true)]);
        assert!(!state.dead_lettered);
    }

    #[test]
    fn only_a_failed_task_can_be_dead_lettered() {
        given::<TaskAggregate>([enqueued(), started(1)])
            .when(dead_letter())
            .then_rejects(transition(TaskStatus::Running, "be dead-lettered"));
        given::<TaskAggregate>([enqueued(), started(1), completed(1)])
            .when(dead_letter())
            .then_rejects(transition(TaskStatus::Completed, "be dead-lettered"));
    }

    // ----- RequeueTask -----

    #[test]
    fn requeue_a_waiting_attempt_changes_no_status() {
        let state = given::<TaskAggregate>([enqueued()])
            .when(requeue(1))
            .then([requeued(1, None)]);
        assert_eq!(state.status, TaskStatus::Enqueued);
        // The requeued attempt starts as usual.
        given::<TaskAggregate>([enqueued(), requeued(1, None)])
            .when(start(1))
            .then([started(1)]);
        // A retry's requeue keeps its backoff.
        let retrying = vec![
            enqueued(),
            started(1),
            failed(1, false),
            retry_scheduled(2, in_2s(), false),
        ];
        let state = given::<TaskAggregate>(retrying)
            .when(requeue(2))
            .then([requeued(2, Some(in_2s()))]);
        assert_eq!(state.status, TaskStatus::Retrying);
        assert_eq!(state.not_before, Some(in_2s()));
    }

    #[test]
    fn only_a_waiting_attempt_can_be_requeued() {
        given::<TaskAggregate>([enqueued(), started(1)])
            .when(requeue(1))
            .then_rejects(transition(TaskStatus::Running, "be requeued"));
        given::<TaskAggregate>([enqueued()])
            .when(requeue(2))
            .then_rejects(Rejection::WrongAttempt {
                task_id: task_id(),
                attempt: 2,
                current: 1,
            });
    }

    // ----- guard rail -----

    #[test]
    fn a_completed_task_rejects_every_command() {
        let state = TaskAggregate::fold(&[enqueued(), started(1), completed(1)]);
        for attempt in [0, 1, 2] {
            for command in all_commands(attempt) {
                assert!(decide_task(&state, command).is_err());
            }
        }
    }

    #[test]
    fn statuses_have_api_names() {
        for status in TaskStatus::ALL {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                json!(status.as_str())
            );
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
        }
        assert!("DONE".parse::<TaskStatus>().is_err());
        assert!(TaskStatus::Failed.is_terminal());
        assert!(!TaskStatus::Retrying.is_terminal());
    }
}
