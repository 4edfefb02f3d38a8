//! A job's progress, counted from its task events alone.
//!
//! Every task is in exactly one bucket (queued, running, completed, failed, retrying), and each
//! task event moves it between buckets without knowing the task's previous state: events are
//! self-describing. So counts stay exact when folded incrementally, in any batching, and
//! batches can be summed as [`ProgressDelta`]s (one `UPDATE ... SET n = n + delta` per job).

use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

use crate::events::Event;
use crate::job::JobStatus;
use crate::task::FIRST_ATTEMPT;

/// Counts of one job's tasks by status.
///
/// Invariant (for a log written through `decide_*`): `queued + running + completed + failed +
/// retrying == created <= total_tasks`, and each count equals the number of the job's tasks in
/// that status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobProgress {
    /// Tasks the job will have (from `JobSubmitted`; 0 until it is seen).
    pub total_tasks: u32,
    /// Tasks that exist (one per `TaskEnqueued`).
    pub created: u32,
    /// PENDING or ENQUEUED: waiting for their first attempt.
    pub queued: u32,
    /// RUNNING.
    pub running: u32,
    /// COMPLETED.
    pub completed: u32,
    /// FAILED.
    pub failed: u32,
    /// RETRYING: waiting for a later attempt.
    pub retrying: u32,
}

/// How a job's tasks ended, once they all have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Every task COMPLETED: append `JobCompleted`.
    Completed,
    /// Every task is COMPLETED or FAILED, and some FAILED: append `JobFailed`.
    Failed,
}

impl JobProgress {
    /// Folds one event. `JobSubmitted` sets `total_tasks`; task events move counts; other job
    /// events change nothing. The caller routes events by [`Event::job_id`].
    pub fn apply(&mut self, event: &Event) {
        if let Event::JobSubmitted(e) = event {
            self.total_tasks = e.total_tasks;
        }
        self.add(ProgressDelta::of(event));
    }

    /// Adds a (summed) delta. Counts never go below zero.
    pub fn add(&mut self, delta: ProgressDelta) {
        fn shift(count: &mut u32, by: i64) {
            let moved = i64::from(*count).saturating_add(by).max(0);
            *count = u32::try_from(moved).unwrap_or(u32::MAX);
        }
        shift(&mut self.created, delta.created);
        shift(&mut self.queued, delta.queued);
        shift(&mut self.running, delta.running);
        shift(&mut self.completed, delta.completed);
        shift(&mut self.failed, delta.failed);
        shift(&mut self.retrying, delta.retrying);
    }

    /// Folds events into a fresh progress.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut progress = Self::default();
        for event in events {
            progress.apply(event);
        }
        progress
    }

    /// Whether every task has ended, and how. `None` while tasks remain to be created, queued,
    /// running or retrying (and before `JobSubmitted` is seen).
    pub fn is_finished(&self) -> Option<Outcome> {
        let total = self.total_tasks;
        if total == 0 || self.created < total {
            return None;
        }
        if self.completed >= total {
            Some(Outcome::Completed)
        } else if self.failed > 0 && self.completed.saturating_add(self.failed) >= total {
            Some(Outcome::Failed)
        } else {
            None
        }
    }

    /// Some task of the job has started (it is, or was, running).
    pub fn any_started(&self) -> bool {
        self.running > 0 || self.completed > 0 || self.failed > 0 || self.retrying > 0
    }

    /// The status a read model shows for a job whose own stream says `job_status`: an
    /// ENQUEUED job is RUNNING once any task has started (see [`JobStatus::displayed`]).
    pub fn displayed_status(&self, job_status: JobStatus) -> JobStatus {
        job_status.displayed(self.any_started())
    }
}

/// The change one or more task events make to a [`JobProgress`]. Deltas add up, so a projector
/// can sum a batch per job and write it once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProgressDelta {
    /// Change in `created`.
    pub created: i64,
    /// Change in `queued`.
    pub queued: i64,
    /// Change in `running`.
    pub running: i64,
    /// Change in `completed`.
    pub completed: i64,
    /// Change in `failed`.
    pub failed: i64,
    /// Change in `retrying`.
    pub retrying: i64,
}

impl ProgressDelta {
    /// The change one event makes (zero for job events).
    ///
    /// - `TaskEnqueued`: +created, +queued.
    /// - `TaskStarted`: the first attempt starts from queued, a later one from retrying;
    ///   +running.
    /// - `TaskCompleted`: running -> completed.
    /// - `TaskFailed`: running -> failed if final, else running -> retrying (the task is
    ///   RETRYING from this event on; the `TaskRetryScheduled` that follows moves nothing).
    /// - `TaskRetryScheduled` manual: failed -> retrying.
    /// - `TaskDeadLettered`: nothing (the task stays FAILED).
    pub fn of(event: &Event) -> Self {
        let zero = Self::default();
        match event {
            Event::TaskEnqueued(_) => Self {
                created: 1,
                queued: 1,
                ..zero
            },
            Event::TaskStarted(e) if e.attempt == FIRST_ATTEMPT => Self {
                queued: -1,
                running: 1,
                ..zero
            },
            Event::TaskStarted(_) => Self {
                retrying: -1,
                running: 1,
                ..zero
            },
            Event::TaskCompleted(_) => Self {
                running: -1,
                completed: 1,
                ..zero
            },
            Event::TaskFailed(e) if e.final_failure => Self {
                running: -1,
                failed: 1,
                ..zero
            },
            Event::TaskFailed(_) => Self {
                running: -1,
                retrying: 1,
                ..zero
            },
            Event::TaskRetryScheduled(e) if e.manual => Self {
                failed: -1,
                retrying: 1,
                ..zero
            },
            Event::TaskRetryScheduled(_)
            | Event::TaskDeadLettered(_)
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
            | Event::JobConcurrencySet(_) => zero,
        }
    }

    /// No change at all.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

impl Add for ProgressDelta {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            created: self.created + other.created,
            queued: self.queued + other.queued,
            running: self.running + other.running,
            completed: self.completed + other.completed,
            failed: self.failed + other.failed,
            retrying: self.retrying + other.retrying,
        }
    }
}

impl AddAssign for ProgressDelta {
    fn add_assign(&mut self, other: Self) {
        *self = *self + other;
    }
}

impl std::iter::Sum for ProgressDelta {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), Add::add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Aggregate, JobAggregate, TaskAggregate};
    use crate::ids::JobId;
    use crate::job::{JobCommand, SubmitJob};
    use crate::limits::Limits;
    use crate::split::Split;
    use crate::task::{TaskCommand, TaskState};
    use chrono::{DateTime, TimeZone, Utc};
    use serde_json::Value;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    /// A job of `n` tasks, submitted and expanded: its events and its tasks' states.
    fn job(n: u32) -> (Vec<Event>, Vec<TaskState>) {
        let submit = JobCommand::SubmitJob(SubmitJob {
            job_id: JobId::new(),
            job_type: "t".into(),
            split: Split::Total { total_tasks: n },
            parameters: Value::Null,
            max_attempts: Some(2),
            timeout_seconds: None,
            limits: Limits::default(),
            now: now(),
            fallback_handler: None,
            priority: 0,
        });
        let mut events = JobAggregate::decide(&JobState::default(), submit).unwrap();
        let state = JobAggregate::fold(&events);
        let expansion = JobAggregate::decide(
            &state,
            JobCommand::CreateTasks {
                max_chunk: n,
                now: now(),
            },
        )
        .unwrap();
        let tasks = expansion
            .iter()
            .filter(|e| matches!(e, Event::TaskEnqueued(_)))
            .map(|e| TaskAggregate::fold([e]))
            .collect();
        events.extend(expansion);
        (events, tasks)
    }

    use crate::job::JobState;

    fn run(task: &mut TaskState, command: TaskCommand, log: &mut Vec<Event>) {
        let events = TaskAggregate::decide(task, command).unwrap();
        for event in &events {
            *task = TaskAggregate::evolve(std::mem::take(task), event);
        }
        log.extend(events);
    }

    fn start(attempt: u32) -> TaskCommand {
        TaskCommand::StartTask {
            attempt,
            worker: "w".into(),
            now: now(),
        }
    }

    fn fail(attempt: u32) -> TaskCommand {
        TaskCommand::FailTask {
            attempt,
            error: "e".into(),
            retryable: true,
            backoff_ms: 10,
            now: now(),
        }
    }

    #[test]
    fn counts_follow_a_job_to_completion() {
        let (mut log, mut tasks) = job(2);
        let progress = JobProgress::fold(&log);
        assert_eq!(
            progress,
            JobProgress {
                total_tasks: 2,
                created: 2,
                queued: 2,
                ..JobProgress::default()
            }
        );
        assert_eq!(
            progress.displayed_status(JobStatus::Enqueued),
            JobStatus::Enqueued
        );

        run(&mut tasks[0], start(1), &mut log);
        let progress = JobProgress::fold(&log);
        assert_eq!((progress.queued, progress.running), (1, 1));
        assert_eq!(
            progress.displayed_status(JobStatus::Enqueued),
            JobStatus::Running
        );
        assert_eq!(
            progress.displayed_status(JobStatus::Cancelled),
            JobStatus::Cancelled
        );

        run(&mut tasks[0], fail(1), &mut log);
        assert_eq!(JobProgress::fold(&log).retrying, 1);
        run(&mut tasks[0], start(2), &mut log);
        run(
            &mut tasks[0],
            TaskCommand::CompleteTask {
                attempt: 2,
                result: None,
                duration_ms: 1,
                now: now(),
            },
            &mut log,
        );
        run(&mut tasks[1], start(1), &mut log);
        assert_eq!(JobProgress::fold(&log).is_finished(), None);
        run(
            &mut tasks[1],
            TaskCommand::CompleteTask {
                attempt: 1,
                result: None,
                duration_ms: 1,
                now: now(),
            },
            &mut log,
        );
        let progress = JobProgress::fold(&log);
        assert_eq!(progress.completed, 2);
        assert_eq!(progress.is_finished(), Some(Outcome::Completed));
    }

    #[test]
    fn a_job_with_a_failed_task_fails_and_a_retry_reopens_it() {
        let (mut log, mut tasks) = job(2);
        run(&mut tasks[0], start(1), &mut log);
        run(
            &mut tasks[0],
            TaskCommand::CompleteTask {
                attempt: 1,
                result: None,
                duration_ms: 1,
                now: now(),
            },
            &mut log,
        );
        run(&mut tasks[1], start(1), &mut log);
        run(&mut tasks[1], fail(1), &mut log);
        run(&mut tasks[1], start(2), &mut log);
        assert_eq!(JobProgress::fold(&log).is_finished(), None);
        run(&mut tasks[1], fail(2), &mut log);
        let progress = JobProgress::fold(&log);
        assert_eq!((progress.completed, progress.failed), (1, 1));
        assert_eq!(progress.is_finished(), Some(Outcome::Failed));

        run(
            &mut tasks[1],
            TaskCommand::DeadLetterTask {
                reason: "r".into(),
                now: now(),
            },
            &mut log,
        );
        assert_eq!(JobProgress::fold(&log).failed, 1);
        run(
            &mut tasks[1],
            TaskCommand::RetryTask { now: now() },
            &mut log,
        );
        let progress = JobProgress::fold(&log);
        assert_eq!((progress.failed, progress.retrying), (0, 1));
        assert_eq!(progress.is_finished(), None);
    }

    #[test]
    fn unfinished_until_every_task_exists() {
        let progress = JobProgress {
            total_tasks: 3,
            created: 2,
            completed: 2,
            ..JobProgress::default()
        };
        assert_eq!(progress.is_finished(), None);
        assert_eq!(JobProgress::default().is_finished(), None);
    }

    #[test]
    fn summed_deltas_equal_the_fold() {
        let (mut log, mut tasks) = job(3);
        for task in &mut tasks {
            run(task, start(1), &mut log);
        }
        run(&mut tasks[1], fail(1), &mut log);
        let mut batched = JobProgress::default();
        for chunk in log.chunks(4) {
            for event in chunk {
                if let Event::JobSubmitted(e) = event {
                    batched.total_tasks = e.total_tasks;
                }
            }
            batched.add(chunk.iter().map(ProgressDelta::of).sum());
        }
        assert_eq!(batched, JobProgress::fold(&log));
        assert!(ProgressDelta::of(&log[0]).is_zero());
    }
}
