//! A task's attempts as a debugging reader sees them: one entry per attempt, with when it was
//! queued, who ran it, when it started and ended, how it ended, why it failed, and the retry
//! (reason and backoff) that followed. Folded from the task's own stream, like [`TaskView`]
//! (which keeps only the latest attempt).
//!
//! [`TaskView`]: crate::TaskView

use chrono::{DateTime, Utc};

use crate::events::Event;
use crate::task::TaskStatus;

/// How an attempt stands or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttemptOutcome {
    /// Not started yet (queued, or waiting for its backoff).
    Queued,
    /// Started, not ended.
    Running,
    /// Succeeded.
    Completed,
    /// Failed, and another attempt was scheduled.
    Retried,
    /// Failed for good (the task is FAILED).
    Failed,
}

impl AttemptOutcome {
    /// Every outcome, in the order above.
    pub const ALL: [AttemptOutcome; 5] = [
        AttemptOutcome::Queued,
        AttemptOutcome::Running,
        AttemptOutcome::Completed,
        AttemptOutcome::Retried,
        AttemptOutcome::Failed,
    ];

    /// Whether the attempt has ended.
    pub fn ended(self) -> bool {
        matches!(
            self,
            AttemptOutcome::Completed | AttemptOutcome::Retried | AttemptOutcome::Failed
        )
    }
}

/// The retry that followed an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryDecision {
    /// When it was scheduled.
    pub at: DateTime<Utc>,
    /// Earliest start of the next attempt.
    pub not_before: DateTime<Utc>,
    /// The backoff chosen: `not_before - at`, in milliseconds (0 when none).
    pub backoff_ms: u64,
    /// Asked for by a user (a manual retry of a FAILED task), not automatic.
    pub manual: bool,
}

/// One attempt of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Its number (1 = first).
    pub attempt: u32,
    /// When it was queued: the task's enqueueing for the first, the retry's scheduling after.
    pub queued_at: DateTime<Utc>,
    /// Earliest start (the backoff's end) for an attempt that follows a retry.
    pub not_before: Option<DateTime<Utc>>,
    /// The worker that ran it.
    pub worker: Option<String>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended (completed or failed).
    pub ended_at: Option<DateTime<Utc>>,
    /// How long it ran: the handler's own measure when it completed, otherwise end - start.
    pub duration_ms: Option<u64>,
    /// How it stands or ended.
    pub outcome: AttemptOutcome,
    /// Why it failed.
    pub error: Option<String>,
    /// The retry that followed it (with the reason in `error`).
    pub retry: Option<RetryDecision>,
    /// Why its message went to the dead-letter queue, if it did.
    pub dead_letter_reason: Option<String>,
}

impl Attempt {
    fn queued(attempt: u32, at: DateTime<Utc>, not_before: Option<DateTime<Utc>>) -> Self {
        Attempt {
            attempt,
            queued_at: at,
            not_before,
            worker: None,
            started_at: None,
            ended_at: None,
            duration_ms: None,
            outcome: AttemptOutcome::Queued,
            error: None,
            retry: None,
            dead_letter_reason: None,
        }
    }

    /// When it ended, or `now` while it runs; `None` before it starts.
    pub fn end_or(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.started_at?;
        Some(self.ended_at.unwrap_or(now))
    }
}

fn millis_between(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    u64::try_from((to - from).num_milliseconds()).unwrap_or(0)
}

/// The attempts of one task, folded from its stream in version order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempts(pub Vec<Attempt>);

impl Attempts {
    /// Folds a task's stream (events of other streams are ignored).
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut attempts = Attempts::default();
        for event in events {
            attempts.apply(event);
        }
        attempts
    }

    /// A task's attempts as the few fields of its view ([`TaskView`]) give them, when they
    /// give all of them: a task ENQUEUED and not dead-lettered has had, since its latest
    /// `TaskEnqueued`, no event that changes its attempts (every other such event moves its
    /// status, or marks it dead-lettered), so it has the one attempt that `TaskEnqueued` queued
    /// (`attempt`, at `enqueued_at`, the view's `created_at`). `None` for any other task.
    /// The jobs projection uses it to skip reading the attempts of a task that starts.
    ///
    /// [`TaskView`]: crate::TaskView
    pub fn of_enqueued(
        status: TaskStatus,
        dead_lettered: bool,
        attempt: u32,
        enqueued_at: DateTime<Utc>,
    ) -> Option<Self> {
        (status == TaskStatus::Enqueued && !dead_lettered)
            .then(|| Attempts(vec![Attempt::queued(attempt, enqueued_at, None)]))
    }

    /// The entry of attempt `n`, created when the stream skipped its announcement.
    fn entry(&mut self, n: u32, at: DateTime<Utc>) -> &mut Attempt {
        let found = self.0.iter().rposition(|a| a.attempt == n);
        let index = match found {
            Some(index) => index,
            None => {
                self.0.push(Attempt::queued(n, at, None));
                self.0.len() - 1
            }
        };
        &mut self.0[index]
    }

    /// Applies one event of the task's stream. A `TaskEnqueued` starts afresh.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::TaskEnqueued(e) => {
                self.0 = vec![Attempt::queued(e.attempt, e.at, None)];
            }
            Event::TaskStarted(e) => {
                let a = self.entry(e.attempt, e.at);
                a.worker = Some(e.worker.clone());
                a.started_at = Some(e.at);
                a.outcome = AttemptOutcome::Running;
            }
            Event::TaskCompleted(e) => {
                let a = self.entry(e.attempt, e.at);
                a.ended_at = Some(e.at);
                a.duration_ms = Some(e.duration_ms);
                a.outcome = AttemptOutcome::Completed;
                a.error = None;
            }
            Event::TaskFailed(e) => {
                let a = self.entry(e.attempt, e.at);
                a.ended_at = Some(e.at);
                a.duration_ms = a.started_at.map(|s| millis_between(s, e.at));
                a.error = Some(e.error.clone());
                a.outcome = if e.final_failure {
                    AttemptOutcome::Failed
                } else {
                    AttemptOutcome::Retried
                };
            }
            Event::TaskRetryScheduled(e) => {
                let decision = RetryDecision {
                    at: e.at,
                    not_before: e.not_before,
                    backoff_ms: millis_between(e.at, e.not_before),
                    manual: e.manual,
                };
                if let Some(previous) = self.0.iter_mut().rev().find(|a| a.attempt < e.attempt) {
                    previous.retry = Some(decision);
                }
                self.0
                    .push(Attempt::queued(e.attempt, e.at, Some(e.not_before)));
            }
            Event::TaskDeadLettered(e) => {
                self.entry(e.attempt, e.at).dead_letter_reason = Some(e.reason.clone());
            }
            Event::JobSubmitted(_)
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{
        TaskCompleted, TaskDeadLettered, TaskEnqueued, TaskFailed, TaskRetryScheduled, TaskStarted,
    };
    use crate::ids::{JobId, TaskId};
    use chrono::{Duration, TimeZone};
    use serde_json::json;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap() + Duration::milliseconds(ms)
    }

    struct Task {
        job_id: JobId,
        task_id: TaskId,
    }

    impl Task {
        fn new() -> Self {
            let job_id = JobId::new();
            Task {
                job_id,
                task_id: TaskId::for_task(job_id, 0),
            }
        }
        fn enqueued(&self, at: i64) -> Event {
            Event::TaskEnqueued(TaskEnqueued {
                job_id: self.job_id,
                task_id: self.task_id,
                index: 0,
                job_type: "t".into(),
                input: json!({}),
                attempt: 1,
                max_attempts: 2,
                timeout_seconds: 60,
                fallback_handler: None,
                at: t(at),
            })
        }
        fn started(&self, attempt: u32, worker: &str, at: i64) -> Event {
            Event::TaskStarted(TaskStarted {
                job_id: self.job_id,
                task_id: self.task_id,
                index: 0,
                attempt,
                worker: worker.into(),
                at: t(at),
            })
        }
        fn failed(&self, attempt: u32, final_failure: bool, at: i64) -> Event {
            Event::TaskFailed(TaskFailed {
                job_id: self.job_id,
                task_id: self.task_id,
                index: 0,
                attempt,
                error: format!("boom {attempt}"),
                final_failure,
                at: t(at),
            })
        }
        fn retry(&self, attempt: u32, manual: bool, at: i64, not_before: i64) -> Event {
            Event::TaskRetryScheduled(TaskRetryScheduled {
                job_id: self.job_id,
                task_id: self.task_id,
                index: 0,
                attempt,
                not_before: t(not_before),
                manual,
                at: t(at),
            })
        }
    }

    #[test]
    fn a_retried_then_completed_task_has_two_attempts() {
        let task = Task::new();
        let log = vec![
            task.enqueued(0),
            task.started(1, "w1", 100),
            task.failed(1, false, 350),
            task.retry(2, false, 350, 2_350),
            task.started(2, "w2", 2_400),
            Event::TaskCompleted(TaskCompleted {
                job_id: task.job_id,
                task_id: task.task_id,
                index: 0,
                attempt: 2,
                result: None,
                duration_ms: 90,
                at: t(2_500),
            }),
        ];
        let Attempts(attempts) = Attempts::fold(&log);
        assert_eq!(attempts.len(), 2);
        let first = &attempts[0];
        assert_eq!(first.outcome, AttemptOutcome::Retried);
        assert_eq!(first.worker.as_deref(), Some("w1"));
        assert_eq!(
            (first.started_at, first.ended_at),
            (Some(t(100)), Some(t(350)))
        );
        assert_eq!(first.duration_ms, Some(250));
        assert_eq!(first.error.as_deref(), Some("boom 1"));
        let retry = first.retry.as_ref().unwrap();
        assert_eq!((retry.backoff_ms, retry.manual), (2_000, false));
        assert_eq!(retry.not_before, t(2_350));
        let second = &attempts[1];
        assert_eq!(second.outcome, AttemptOutcome::Completed);
        assert_eq!(
            (second.queued_at, second.not_before),
            (t(350), Some(t(2_350)))
        );
        assert_eq!(second.worker.as_deref(), Some("w2"));
        assert_eq!(second.duration_ms, Some(90));
        assert_eq!(second.retry, None);
    }

    #[test]
    fn a_dead_lettered_task_and_its_manual_retry() {
        let task = Task::new();
        let mut log = vec![
            task.enqueued(0),
            task.started(1, "w1", 10),
            task.failed(1, true, 20),
            Event::TaskDeadLettered(TaskDeadLettered {
                job_id: task.job_id,
                task_id: task.task_id,
                index: 0,
                attempt: 1,
                reason: "max receives".into(),
                at: t(30),
            }),
        ];
        let Attempts(attempts) = Attempts::fold(&log);
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome, AttemptOutcome::Failed);
        assert_eq!(
            attempts[0].dead_letter_reason.as_deref(),
            Some("max receives")
        );
        log.push(task.retry(2, true, 1_000, 1_000));
        let Attempts(attempts) = Attempts::fold(&log);
        assert_eq!(attempts.len(), 2);
        assert!(attempts[0].retry.as_ref().unwrap().manual);
        assert_eq!(attempts[1].outcome, AttemptOutcome::Queued);
        assert_eq!(attempts[1].end_or(t(5_000)), None);
    }

    /// Any order of a task's events, right or wrong attempts: whenever its view is ENQUEUED
    /// and not dead-lettered, `of_enqueued` gives the fold of its stream.
    #[test]
    fn an_enqueued_task_has_the_attempt_its_view_implies() {
        use crate::TaskView;
        use crate::events::{TaskReleased, TaskRequeued};
        use proptest::prelude::*;

        let event = (0u8..9, 1u32..4, 0i64..1_000).prop_map(|(kind, attempt, at)| {
            let task = Task {
                job_id: JobId::from_uuid(uuid::Uuid::nil()),
                task_id: TaskId::from_uuid(uuid::Uuid::max()),
            };
            match kind {
                0 => match task.enqueued(at) {
                    Event::TaskEnqueued(mut e) => {
                        e.attempt = attempt;
                        Event::TaskEnqueued(e)
                    }
                    _ => unreachable!(),
                },
                1 => task.started(attempt, "w", at),
                2 => Event::TaskCompleted(TaskCompleted {
                    job_id: task.job_id,
                    task_id: task.task_id,
                    index: 0,
                    attempt,
                    result: None,
                    duration_ms: 3,
                    at: t(at),
                }),
                3 => task.failed(attempt, false, at),
                4 => task.failed(attempt, true, at),
                5 => task.retry(attempt, at % 2 == 0, at, at + 100),
                6 => Event::TaskDeadLettered(TaskDeadLettered {
                    job_id: task.job_id,
                    task_id: task.task_id,
                    index: 0,
                    attempt,
                    reason: "r".into(),
                    at: t(at),
                }),
                7 => Event::TaskRequeued(TaskRequeued {
                    job_id: task.job_id,
                    task_id: task.task_id,
                    index: 0,
                    attempt,
                    not_before: None,
                    reason: "r".into(),
                    at: t(at),
                }),
                _ => Event::TaskReleased(TaskReleased {
                    job_id: task.job_id,
                    task_id: task.task_id,
                    index: 0,
                    attempt,
                    at: t(at),
                }),
            }
        });
        let implied = std::cell::Cell::new(0u32);
        proptest!(ProptestConfig::with_cases(2_000), |(
            stream in prop::collection::vec(event, 1..12)
        )| {
            for end in 1..=stream.len() {
                let prefix = &stream[..end];
                let Some(view) = TaskView::fold(prefix) else { continue };
                let from_view = Attempts::of_enqueued(
                    view.status, view.dead_lettered, view.attempt, view.created_at,
                );
                if let Some(from_view) = from_view {
                    implied.set(implied.get() + 1);
                    prop_assert_eq!(from_view, Attempts::fold(prefix));
                } else {
                    prop_assert!(
                        view.status != TaskStatus::Enqueued || view.dead_lettered
                    );
                }
            }
        });
        let implied = implied.get();
        assert!(implied > 100, "the property was checked {implied} times");
    }

    #[test]
    fn a_running_attempt_ends_now() {
        let task = Task::new();
        let Attempts(attempts) = Attempts::fold(&[task.enqueued(0), task.started(1, "w", 10)]);
        assert_eq!(attempts[0].outcome, AttemptOutcome::Running);
        assert!(!attempts[0].outcome.ended());
        assert_eq!(attempts[0].end_or(t(99)), Some(t(99)));
    }
}
