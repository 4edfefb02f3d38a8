//! Jobs and tasks as readers see them: the one fold of the job lifecycle (status, counts,
//! timestamps) and of the task view (status, attempt, worker, result, error, timestamps).
//!
//! The projector keeps the read tables with these folds, batch by batch, from the rows it
//! stored; the command side folds a task's own stream with [`TaskView`] to answer before the
//! projection has caught up. Each fold looks only at the view and the next event, so folding a
//! log in any split into batches gives the same views as [`Views::fold`] of the whole log.
//!
//! Times are the events' own ([`Event::at`]), at full precision; a store that keeps fewer
//! digits truncates them when it writes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::events::{Event, JobSubmitted, TaskEnqueued};
use crate::ids::{JobId, TaskId};
use crate::job::{JobLifecycle, JobStatus};
use crate::progress::{JobProgress, ProgressDelta};
use crate::task::{FIRST_ATTEMPT, TaskStatus};

/// A job as readers see it: its own stream and the counts of its tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    /// The job.
    pub job_id: JobId,
    /// Which handler runs its tasks.
    pub job_type: String,
    /// The status of the job's own stream (what the job aggregate says); readers show
    /// [`JobView::status`].
    pub stream_status: JobStatus,
    /// Task counts by status, and `total_tasks`.
    pub progress: JobProgress,
    /// Tasks `0..created_upto` exist.
    pub created_upto: u32,
    /// The job's parameters (a JSON object).
    pub parameters: Value,
    /// Attempts each task gets.
    pub max_attempts: u32,
    /// How long one attempt may run.
    pub timeout_seconds: u32,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// The time of the latest event of the job or of one of its tasks.
    pub updated_at: DateTime<Utc>,
    /// When its first task started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it completed, failed or was cancelled (cleared by a retry request).
    pub completed_at: Option<DateTime<Utc>>,
    /// Why it failed (cleared when it completes or is retried).
    pub error_message: Option<String>,
    /// Why it was cancelled, as the user said.
    pub cancel_reason: Option<String>,
    /// Its current priority (see [`crate::priority`]).
    pub priority: i32,
}

impl JobView {
    /// The job as its `JobSubmitted` makes it: PENDING, no task yet.
    pub fn submitted(e: &JobSubmitted) -> Self {
        JobView {
            job_id: e.job_id,
            job_type: e.job_type.clone(),
            stream_status: JobStatus::Pending,
            progress: JobProgress {
                total_tasks: e.total_tasks,
                ..JobProgress::default()
            },
            created_upto: 0,
            parameters: Value::Object(e.parameters.clone()),
            max_attempts: e.max_attempts,
            timeout_seconds: e.timeout_seconds,
            created_at: e.submitted_at,
            updated_at: e.submitted_at,
            started_at: None,
            completed_at: None,
            error_message: None,
            cancel_reason: None,
            priority: e.priority,
        }
    }

    /// What readers show: the stream's status, except that an ENQUEUED job whose tasks have
    /// started is RUNNING ([`JobStatus::displayed`]).
    pub fn status(&self) -> JobStatus {
        self.progress.displayed_status(self.stream_status)
    }

    /// How many tasks the job has in all.
    pub fn total_tasks(&self) -> u32 {
        self.progress.total_tasks
    }

    /// The job's stream status, folded as the aggregate folds it.
    pub fn lifecycle(&self) -> JobLifecycle {
        JobLifecycle {
            status: self.stream_status,
            total_tasks: self.progress.total_tasks,
            created_upto: self.created_upto,
        }
    }

    /// Applies an event of the job's stream or of one of its tasks' streams (the caller
    /// routes by [`Event::job_id`]). A `JobSubmitted` starts the view afresh.
    pub fn apply(&mut self, event: &Event) {
        let at = event.at();
        if let Event::JobSubmitted(e) = event {
            *self = Self::submitted(e);
            return;
        }
        self.updated_at = at;
        let mut lifecycle = self.lifecycle();
        lifecycle.apply(event);
        self.stream_status = lifecycle.status;
        self.created_upto = lifecycle.created_upto;
        match event {
            Event::JobCompleted(_) => {
                self.completed_at = Some(at);
                self.error_message = None;
            }
            Event::JobFailed(e) => {
                self.completed_at = Some(at);
                self.error_message = Some(format!(
                    "{} of {} tasks failed",
                    e.failed_tasks, self.progress.total_tasks
                ));
            }
            Event::JobCancelled(e) => {
                self.completed_at = Some(at);
                self.cancel_reason.clone_from(&e.reason);
            }
            Event::JobRetryRequested(_) => {
                self.completed_at = None;
                self.error_message = None;
            }
            Event::TaskStarted(_) => {
                self.started_at.get_or_insert(at);
            }
            Event::JobPriorityChanged(e) => self.priority = e.priority,
            Event::JobSubmitted(_)
            | Event::TasksCreated(_)
            | Event::TaskEnqueued(_)
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
            | Event::TaskReleased(_)
            | Event::LimitSet(_)
            | Event::JobConcurrencySet(_) => {}
        }
        self.progress.add(ProgressDelta::of(event));
    }
}

/// A task as readers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    /// The task.
    pub task_id: TaskId,
    /// Its job.
    pub job_id: JobId,
    /// Its position in the job, from 0.
    pub index: u32,
    /// The job's type: which handler runs it.
    pub job_type: String,
    /// Its status ([`TaskStatus::after`] its latest event that moves it).
    pub status: TaskStatus,
    /// The current attempt: running, or next to run (1 = first).
    pub attempt: u32,
    /// Attempts per budget (a manual retry grants a fresh budget).
    pub max_attempts: u32,
    /// How long one attempt may run.
    pub timeout_seconds: u32,
    /// The task's input (the job's parameters, plus its batch of items for an item split).
    pub parameters: Value,
    /// What the completing attempt returned (a JSON null is no result).
    pub result: Option<Value>,
    /// The latest failure's error (cleared when the task completes).
    pub error_message: Option<String>,
    /// The worker of the latest start.
    pub worker: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// The time of the task's latest event.
    pub updated_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it COMPLETED or FAILED for good (cleared by a retry).
    pub completed_at: Option<DateTime<Utc>>,
    /// Earliest start of the next attempt, while RETRYING.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// How long the completing attempt ran.
    pub duration_ms: Option<u64>,
    /// The latest final failure went to the dead-letter queue.
    pub dead_lettered: bool,
}

impl TaskView {
    /// The task as its `TaskEnqueued` makes it: ENQUEUED, first attempt.
    pub fn enqueued(e: &TaskEnqueued) -> Self {
        TaskView {
            task_id: e.task_id,
            job_id: e.job_id,
            index: e.index,
            job_type: e.job_type.clone(),
            status: TaskStatus::Enqueued,
            attempt: e.attempt,
            max_attempts: e.max_attempts,
            timeout_seconds: e.timeout_seconds,
            parameters: e.input.clone(),
            result: None,
            error_message: None,
            worker: None,
            created_at: e.at,
            updated_at: e.at,
            started_at: None,
            completed_at: None,
            next_attempt_at: None,
            duration_ms: None,
            dead_lettered: false,
        }
    }

    /// Applies one event to a task's view, which exists from its `TaskEnqueued` on (`None`
    /// before: other events leave it `None`).
    pub fn evolve(view: Option<Self>, event: &Event) -> Option<Self> {
        match (view, event) {
            (_, Event::TaskEnqueued(e)) => Some(Self::enqueued(e)),
            (Some(mut view), event) => {
                view.apply(event);
                Some(view)
            }
            (None, _) => None,
        }
    }

    /// Folds a task's stream; `None` until its `TaskEnqueued`.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Option<Self> {
        events.into_iter().fold(None, Self::evolve)
    }

    /// Attempts after the first so far.
    pub fn retry_count(&self) -> u32 {
        self.attempt.saturating_sub(FIRST_ATTEMPT)
    }

    /// Applies an event of the task's stream (the caller routes by [`Event::task_id`]). A
    /// `TaskEnqueued` starts the view afresh; job events change nothing.
    pub fn apply(&mut self, event: &Event) {
        let at = event.at();
        match event {
            Event::TaskEnqueued(e) => {
                *self = Self::enqueued(e);
                return;
            }
            Event::JobSubmitted(_)
            | Event::TasksCreated(_)
            | Event::JobCompleted(_)
            | Event::JobFailed(_)
            | Event::JobCancelled(_)
            | Event::JobRetryRequested(_)
            | Event::JobPriorityChanged(_) => return,
            Event::TaskStarted(_)
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
            | Event::TaskReleased(_)
            | Event::LimitSet(_)
            | Event::JobConcurrencySet(_) => {}
        }
        self.updated_at = at;
        if let Some(status) = TaskStatus::after(event) {
            self.status = status;
        }
        match event {
            Event::TaskStarted(e) => {
                self.attempt = e.attempt;
                self.worker = Some(e.worker.clone());
                self.started_at = Some(at);
                self.next_attempt_at = None;
            }
            Event::TaskCompleted(e) => {
                self.attempt = e.attempt;
                self.result = e.result.clone().filter(|r| !r.is_null());
                self.duration_ms = Some(e.duration_ms);
                self.completed_at = Some(at);
                self.error_message = None;
            }
            Event::TaskFailed(e) => {
                self.error_message = Some(e.error.clone());
                if e.final_failure {
                    self.completed_at = Some(at);
                }
            }
            Event::TaskRetryScheduled(e) => {
                self.attempt = e.attempt;
                self.next_attempt_at = Some(e.not_before);
                self.completed_at = None;
                if e.manual {
                    self.dead_lettered = false;
                }
            }
            Event::TaskDeadLettered(_) => self.dead_lettered = true,
            _ => {}
        }
    }
}

/// Which views one event changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Touched {
    /// The job's view, if the job has one.
    pub job: Option<JobId>,
    /// The task's view, for a task event of a task that has one.
    pub task: Option<TaskId>,
}

/// Views of many jobs and tasks, kept by routing each event to its job's and its task's view.
///
/// A job's view exists from its `JobSubmitted`, a task's from its `TaskEnqueued`; events of a
/// job or task without a view change nothing but the other view (a projector fed from the
/// middle of a log does not invent rows).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Views {
    /// Jobs by id.
    pub jobs: HashMap<JobId, JobView>,
    /// Tasks by id.
    pub tasks: HashMap<TaskId, TaskView>,
}

impl Views {
    /// Folds a log (in log order) from no views.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut views = Self::default();
        for event in events {
            views.apply(event);
        }
        views
    }

    /// Applies one event to the views it belongs to, creating them on `JobSubmitted` /
    /// `TaskEnqueued`.
    pub fn apply(&mut self, event: &Event) -> Touched {
        let mut touched = Touched::default();
        if let Some(task_id) = event.task_id() {
            if let Event::TaskEnqueued(e) = event {
                self.tasks.insert(task_id, TaskView::enqueued(e));
                touched.task = Some(task_id);
            } else if let Some(task) = self.tasks.get_mut(&task_id) {
                task.apply(event);
                touched.task = Some(task_id);
            }
        }
        let Some(job_id) = event.job_id() else {
            return touched;
        };
        if let Event::JobSubmitted(e) = event {
            self.jobs.insert(job_id, JobView::submitted(e));
            touched.job = Some(job_id);
        } else if let Some(job) = self.jobs.get_mut(&job_id) {
            job.apply(event);
            touched.job = Some(job_id);
        }
        touched
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Aggregate, JobAggregate, TaskAggregate};
    use crate::job::{JobCommand, JobState, SubmitJob};
    use crate::limits::Limits;
    use crate::split::Split;
    use crate::task::{TaskCommand, TaskState};
    use chrono::{Duration, TimeZone};
    use serde_json::json;

    fn t(seconds: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap() + Duration::seconds(seconds)
    }

    /// A submitted and expanded job of `n` tasks (at t(0) and t(1)).
    fn job(n: u32) -> (Vec<Event>, JobState, Vec<TaskState>) {
        let submit = JobCommand::SubmitJob(SubmitJob {
            job_id: JobId::new(),
            job_type: "cpu_bound".into(),
            split: Split::Total { total_tasks: n },
            parameters: json!({"x": 1}),
            max_attempts: Some(2),
            timeout_seconds: None,
            limits: Limits::default(),
            now: t(0),
            fallback_handler: None,
            priority: 0,
        });
        let mut log = JobAggregate::decide(&JobState::default(), submit).unwrap();
        let state = JobAggregate::fold(&log);
        let expansion = JobAggregate::decide(
            &state,
            JobCommand::CreateTasks {
                max_chunk: n,
                now: t(1),
            },
        )
        .unwrap();
        log.extend(expansion);
        let state = JobAggregate::fold(&log);
        let tasks = log
            .iter()
            .filter(|e| matches!(e, Event::TaskEnqueued(_)))
            .map(|e| TaskAggregate::fold([e]))
            .collect();
        (log, state, tasks)
    }

    fn run(task: &mut TaskState, command: TaskCommand, log: &mut Vec<Event>) {
        let events = TaskAggregate::decide(task, command).unwrap();
        *task = events
            .iter()
            .fold(std::mem::take(task), TaskAggregate::evolve);
        log.extend(events);
    }

    fn start(attempt: u32, at: i64) -> TaskCommand {
        TaskCommand::StartTask {
            attempt,
            worker: format!("w{attempt}"),
            now: t(at),
        }
    }

    fn fail(attempt: u32, at: i64) -> TaskCommand {
        TaskCommand::FailTask {
            attempt,
            error: format!("boom {attempt}"),
            retryable: true,
            backoff_ms: 5_000,
            now: t(at),
        }
    }

    #[test]
    fn the_job_view_follows_its_priority() {
        let (mut log, state, _) = job(2);
        assert_eq!(Views::fold(&log).jobs.values().next().unwrap().priority, 0);
        let change = JobAggregate::decide(
            &state,
            JobCommand::ChangePriority {
                priority: 12,
                now: t(5),
            },
        )
        .unwrap();
        log.extend(change);
        let views = Views::fold(&log);
        let job = views.jobs.values().next().unwrap();
        assert_eq!(job.priority, 12);
        assert_eq!(job.updated_at, t(5));
        assert_eq!(
            job.status(),
            JobStatus::Enqueued,
            "the status does not change"
        );
        assert!(views.tasks.values().all(|task| task.updated_at == t(1)));
    }

    #[test]
    fn a_new_job_is_pending_then_enqueued() {
        let (log, _, _) = job(2);
        let views = Views::fold(&log[..1]);
        let job = views.jobs.values().next().unwrap();
        assert_eq!(job.status(), JobStatus::Pending);
        assert_eq!((job.created_at, job.updated_at), (t(0), t(0)));
        assert_eq!(job.parameters, json!({"x": 1}));

        let views = Views::fold(&log);
        let job = views.jobs.values().next().unwrap();
        assert_eq!(job.status(), JobStatus::Enqueued);
        assert_eq!((job.created_upto, job.progress.queued), (2, 2));
        assert_eq!(job.updated_at, t(1));
        assert_eq!(views.tasks.len(), 2);
        let task = views.tasks.values().next().unwrap();
        assert_eq!(task.status, TaskStatus::Enqueued);
        assert_eq!((task.attempt, task.max_attempts), (1, 2));
        assert_eq!(task.parameters, json!({"x": 1}));
    }

    #[test]
    fn a_task_retried_then_completed_shows_its_last_attempt() {
        let (mut log, _, mut tasks) = job(1);
        run(&mut tasks[0], start(1, 10), &mut log);
        run(&mut tasks[0], fail(1, 12), &mut log);
        let view = TaskView::fold(&log).unwrap();
        assert_eq!(view.status, TaskStatus::Retrying);
        assert_eq!(view.attempt, 2);
        assert_eq!(view.error_message.as_deref(), Some("boom 1"));
        assert_eq!(view.next_attempt_at, Some(t(17)));
        assert_eq!(view.completed_at, None);

        run(&mut tasks[0], start(2, 20), &mut log);
        run(
            &mut tasks[0],
            TaskCommand::CompleteTask {
                attempt: 2,
                result: Some(json!({"ok": true})),
                duration_ms: 1_500,
                now: t(22),
            },
            &mut log,
        );
        let views = Views::fold(&log);
        let view = views.tasks.values().next().unwrap();
        assert_eq!(view.status, TaskStatus::Completed);
        assert_eq!((view.attempt, view.retry_count()), (2, 1));
        assert_eq!(view.worker.as_deref(), Some("w2"));
        assert_eq!(view.result, Some(json!({"ok": true})));
        assert_eq!(view.error_message, None);
        assert_eq!(view.next_attempt_at, None);
        assert_eq!(
            (view.started_at, view.completed_at, view.updated_at),
            (Some(t(20)), Some(t(22)), t(22))
        );
        assert_eq!(view.duration_ms, Some(1_500));

        let job = views.jobs.values().next().unwrap();
        assert_eq!(job.status(), JobStatus::Running);
        assert_eq!(job.stream_status, JobStatus::Enqueued);
        assert_eq!(job.started_at, Some(t(10)));
        assert_eq!(job.progress.completed, 1);
        assert_eq!(job.updated_at, t(22));
    }

    #[test]
    fn a_failed_job_and_its_retry() {
        let (mut log, mut state, mut tasks) = job(1);
        run(&mut tasks[0], start(1, 10), &mut log);
        run(&mut tasks[0], fail(1, 11), &mut log);
        run(&mut tasks[0], start(2, 20), &mut log);
        run(&mut tasks[0], fail(2, 21), &mut log);
        run(
            &mut tasks[0],
            TaskCommand::DeadLetterTask {
                reason: "max receives".into(),
                now: t(22),
            },
            &mut log,
        );
        let failed = JobAggregate::decide(
            &state,
            JobCommand::FailJob {
                failed_tasks: 1,
                now: t(23),
            },
        )
        .unwrap();
        state = failed.iter().fold(state, JobAggregate::evolve);
        log.extend(failed);

        let views = Views::fold(&log);
        let job = views.jobs.values().next().unwrap();
        assert_eq!(job.status(), JobStatus::Failed);
        assert_eq!(job.error_message.as_deref(), Some("1 of 1 tasks failed"));
        assert_eq!(job.completed_at, Some(t(23)));
        let task = views.tasks.values().next().unwrap();
        assert_eq!(task.status, TaskStatus::Failed);
        assert!(task.dead_lettered);
        assert_eq!(task.completed_at, Some(t(21)));

        let retry = JobAggregate::decide(
            &state,
            JobCommand::RequestRetry {
                failed_tasks: 1,
                now: t(30),
            },
        )
        .unwrap();
        log.extend(retry);
        run(
            &mut tasks[0],
            TaskCommand::RetryTask { now: t(30) },
            &mut log,
        );
        let views = Views::fold(&log);
        let job = views.jobs.values().next().unwrap();
        assert_eq!(job.status(), JobStatus::Running);
        assert_eq!(
            (job.completed_at, job.error_message.as_deref()),
            (None, None)
        );
        assert_eq!((job.progress.failed, job.progress.retrying), (0, 1));
        let task = views.tasks.values().next().unwrap();
        assert_eq!(task.status, TaskStatus::Retrying);
        assert_eq!(task.attempt, 3);
        assert!(!task.dead_lettered);
        assert_eq!(task.completed_at, None);
    }

    #[test]
    fn a_cancelled_job_keeps_its_reason() {
        let (mut log, state, _) = job(1);
        log.extend(
            JobAggregate::decide(
                &state,
                JobCommand::CancelJob {
                    reason: Some("not needed".into()),
                    now: t(5),
                },
            )
            .unwrap(),
        );
        let views = Views::fold(&log);
        let job = views.jobs.values().next().unwrap();
        assert_eq!(job.status(), JobStatus::Cancelled);
        assert_eq!(job.cancel_reason.as_deref(), Some("not needed"));
        assert_eq!(job.completed_at, Some(t(5)));
    }

    #[test]
    fn events_without_a_view_only_touch_the_other_view() {
        let (mut log, _, mut tasks) = job(1);
        run(&mut tasks[0], start(1, 10), &mut log);
        // From the middle of the log: the job exists, the task does not.
        let mut views = Views::fold(&log[..1]);
        assert_eq!(
            views.apply(&log[3]),
            Touched {
                job: log[0].job_id(),
                task: None
            }
        );
        assert!(views.tasks.is_empty());
        assert_eq!(views.jobs.values().next().unwrap().progress.running, 1);
        // Neither exists.
        let mut views = Views::default();
        assert_eq!(views.apply(&log[3]), Touched::default());
        assert_eq!(views, Views::default());
        assert_eq!(TaskView::fold(&log[3..]), None);
    }

    #[test]
    fn a_null_result_is_no_result() {
        let (mut log, _, mut tasks) = job(1);
        run(&mut tasks[0], start(1, 10), &mut log);
        run(
            &mut tasks[0],
            TaskCommand::CompleteTask {
                attempt: 1,
                result: Some(Value::Null),
                duration_ms: 3,
                now: t(11),
            },
            &mut log,
        );
        assert_eq!(TaskView::fold(&log).unwrap().result, None);
    }
}
