//! Properties of the task state machine and progress counting over random command sequences,
//! through the public API only.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;
use shoal_domain::{
    Aggregate, Event, JobAggregate, JobCommand, JobProgress, JobState, Limits, Split, SubmitJob,
    TaskAggregate, TaskCommand, TaskState, TaskStatus, TaskView, Views,
};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
}

/// A random command for one task. Attempts are relative to the task's current attempt, so
/// that both right and wrong attempts occur often.
#[derive(Debug, Clone)]
enum Step {
    Start {
        attempt_offset: i8,
    },
    Complete {
        attempt_offset: i8,
    },
    Fail {
        attempt_offset: i8,
        retryable: bool,
        backoff_ms: u64,
    },
    Retry,
    DeadLetter,
}

fn step() -> impl Strategy<Value = Step> {
    let offset = prop_oneof![4 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)];
    prop_oneof![
        3 => offset.clone().prop_map(|attempt_offset| Step::Start { attempt_offset }),
        2 => offset.clone().prop_map(|attempt_offset| Step::Complete { attempt_offset }),
        3 => (offset, any::<bool>(), 0u64..10_000)
            .prop_map(|(attempt_offset, retryable, backoff_ms)| Step::Fail { attempt_offset, retryable, backoff_ms }),
        1 => Just(Step::Retry),
        1 => Just(Step::DeadLetter),
    ]
}

fn command(step: &Step, state: &TaskState, now: DateTime<Utc>) -> TaskCommand {
    let attempt = |offset: i8| state.attempt.saturating_add_signed(i32::from(offset));
    match *step {
        Step::Start { attempt_offset } => TaskCommand::StartTask {
            attempt: attempt(attempt_offset),
            worker: "w".into(),
            now,
        },
        Step::Complete { attempt_offset } => TaskCommand::CompleteTask {
            attempt: attempt(attempt_offset),
            result: Some(json!(1)),
            duration_ms: 5,
            now,
        },
        Step::Fail {
            attempt_offset,
            retryable,
            backoff_ms,
        } => TaskCommand::FailTask {
            attempt: attempt(attempt_offset),
            error: "e".into(),
            retryable,
            backoff_ms,
            now,
        },
        Step::Retry => TaskCommand::RetryTask { now },
        Step::DeadLetter => TaskCommand::DeadLetterTask {
            reason: "r".into(),
            now,
        },
    }
}

/// Submits and fully expands a job of `n` tasks; returns the log and the task states.
fn expanded_job(n: u32, max_attempts: u32, chunk: u32) -> (Vec<Event>, Vec<TaskState>) {
    let submit = SubmitJob {
        job_id: shoal_domain::JobId::new(),
        job_type: "t".into(),
        split: Split::Total { total_tasks: n },
        parameters: json!({"p": 1}),
        max_attempts: Some(max_attempts),
        timeout_seconds: None,
        limits: Limits::default(),
        now: t0(),
        fallback_handler: None,
        priority: 0,
    };
    let mut log = JobAggregate::decide(&JobState::default(), JobCommand::SubmitJob(submit))
        .expect("valid submission");
    let mut job = JobAggregate::fold(&log);
    while !job.all_tasks_created() {
        let events = JobAggregate::decide(
            &job,
            JobCommand::CreateTasks {
                max_chunk: chunk,
                now: t0(),
            },
        )
        .expect("expansion continues");
        job = events.iter().fold(job, JobAggregate::evolve);
        log.extend(events);
    }
    let tasks: Vec<TaskState> = log
        .iter()
        .filter(|e| matches!(e, Event::TaskEnqueued(_)))
        .map(|e| TaskAggregate::fold([e]))
        .collect();
    (log, tasks)
}

/// Runs the accepted commands of `steps` (task `which % n`, one second apart) on an expanded
/// job, then ends the job as the orchestrator would once every task has ended; returns the log
/// and the tasks' states.
fn drive(
    n: u32,
    max_attempts: u32,
    chunk: u32,
    steps: &[(usize, Step)],
) -> (Vec<Event>, Vec<TaskState>) {
    let (mut log, mut tasks) = expanded_job(n, max_attempts, chunk);
    let mut now = t0();
    for (which, step) in steps {
        now += Duration::seconds(1);
        let index = which % tasks.len();
        let task = &mut tasks[index];
        if let Ok(events) = TaskAggregate::decide(task, command(step, task, now)) {
            *task = events
                .iter()
                .fold(std::mem::take(task), TaskAggregate::evolve);
            log.extend(events);
        }
    }
    let job = JobAggregate::fold(log.iter().filter(|e| e.task_id().is_none()));
    let progress = JobProgress::fold(&log);
    let end = match progress.is_finished() {
        Some(shoal_domain::Outcome::Completed) => Some(JobCommand::CompleteJob { now }),
        Some(shoal_domain::Outcome::Failed) => Some(JobCommand::FailJob {
            failed_tasks: progress.failed,
            now,
        }),
        None => None,
    };
    if let Some(end) = end {
        log.extend(JobAggregate::decide(&job, end).expect("a finished job ends"));
    }
    (log, tasks)
}

fn count(tasks: &[TaskState], status: TaskStatus) -> u32 {
    tasks.iter().filter(|t| t.status == status).count() as u32
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Applying only accepted commands keeps the progress folded from the log equal to the
    /// tasks' actual statuses, after every step and in any batching.
    #[test]
    fn progress_counts_match_task_states(
        n in 1u32..6,
        max_attempts in 1u32..4,
        chunk in 1u32..4,
        steps in prop::collection::vec((0usize..6, step()), 0..120),
    ) {
        let (mut log, mut tasks) = expanded_job(n, max_attempts, chunk);
        prop_assert_eq!(tasks.len() as u32, n);
        let mut progress = JobProgress::fold(&log);
        let mut now = t0();
        for (which, step) in &steps {
            now += Duration::seconds(1);
            let index = which % tasks.len();
            let task = &mut tasks[index];
            let before = task.status;
            let result = TaskAggregate::decide(task, command(step, task, now));
            if before == TaskStatus::Completed {
                prop_assert!(result.is_err(), "a COMPLETED task accepted {:?}", step);
            }
            let Ok(events) = result else { continue };
            for event in &events {
                prop_assert_eq!(event.task_id(), task.task_id());
                *task = TaskAggregate::evolve(std::mem::take(task), event);
                progress.apply(event);
            }
            log.extend(events);

            prop_assert_eq!(progress.queued, count(&tasks, TaskStatus::Enqueued) + count(&tasks, TaskStatus::Pending));
            prop_assert_eq!(progress.running, count(&tasks, TaskStatus::Running));
            prop_assert_eq!(progress.completed, count(&tasks, TaskStatus::Completed));
            prop_assert_eq!(progress.failed, count(&tasks, TaskStatus::Failed));
            prop_assert_eq!(progress.retrying, count(&tasks, TaskStatus::Retrying));
            prop_assert_eq!(progress.created, n);
            for t in &tasks {
                prop_assert!(t.attempt <= t.last_allowed_attempt || t.status == TaskStatus::Failed || t.status == TaskStatus::Completed);
            }
        }
        // The whole log, folded at once, agrees with the incremental fold.
        prop_assert_eq!(JobProgress::fold(&log), progress);
        // And each task's stream, folded from the log, gives the same state.
        for task in &tasks {
            let id = task.task_id();
            let stream: Vec<&Event> = log.iter().filter(|e| e.task_id() == id).collect();
            prop_assert_eq!(&TaskAggregate::fold(stream), task);
        }
    }

    /// Once COMPLETED, a task rejects every command and stays COMPLETED.
    #[test]
    fn a_completed_task_stays_completed(
        steps in prop::collection::vec(step(), 0..60),
        attempt in 1u32..4,
    ) {
        let (_, mut tasks) = expanded_job(1, 3, 1);
        let mut task = tasks.remove(0);
        // Drive it to COMPLETED at `attempt`.
        for a in 1..attempt {
            for cmd in [
                TaskCommand::StartTask { attempt: a, worker: "w".into(), now: t0() },
                TaskCommand::FailTask { attempt: a, error: "e".into(), retryable: true, backoff_ms: 0, now: t0() },
            ] {
                let events = TaskAggregate::decide(&task, cmd).expect("accepted");
                task = events.iter().fold(task, TaskAggregate::evolve);
            }
        }
        for cmd in [
            TaskCommand::StartTask { attempt, worker: "w".into(), now: t0() },
            TaskCommand::CompleteTask { attempt, result: None, duration_ms: 1, now: t0() },
        ] {
            let events = TaskAggregate::decide(&task, cmd).expect("accepted");
            task = events.iter().fold(task, TaskAggregate::evolve);
        }
        prop_assert_eq!(task.status, TaskStatus::Completed);
        for step in &steps {
            let result = TaskAggregate::decide(&task, command(step, &task, t0()));
            prop_assert!(result.is_err());
            prop_assert_eq!(task.status, TaskStatus::Completed);
        }
    }

    /// Expansion in any chunk size creates every task exactly once, in order, with the same
    /// ids and inputs.
    #[test]
    fn expansion_is_chunk_independent(items in 1usize..200, batch in 1u32..20, chunk in 1u32..30) {
        let split = Split::Items { items: (0..items).map(|i| json!(i)).collect(), batch_size: batch };
        let job_id = shoal_domain::JobId::new();
        let submit = |split: Split| SubmitJob {
            job_id, job_type: "t".into(), split, parameters: json!({}), max_attempts: None,
            timeout_seconds: None, limits: Limits::default(), now: t0(),
            fallback_handler: None,
            priority: 0,
        };
        let expand = |chunk: u32| {
            let mut job = JobAggregate::fold(
                &JobAggregate::decide(&JobState::default(), JobCommand::SubmitJob(submit(split.clone()))).unwrap(),
            );
            let mut enqueued = Vec::new();
            while !job.all_tasks_created() {
                let events = JobAggregate::decide(&job, JobCommand::CreateTasks { max_chunk: chunk, now: t0() }).unwrap();
                job = events.iter().fold(job, JobAggregate::evolve);
                enqueued.extend(events.into_iter().filter(|e| matches!(e, Event::TaskEnqueued(_))));
            }
            enqueued
        };
        let in_chunks = expand(chunk);
        let at_once = expand(u32::MAX);
        prop_assert_eq!(&in_chunks, &at_once);
        let mut seen = Vec::new();
        for (i, event) in in_chunks.iter().enumerate() {
            let Event::TaskEnqueued(e) = event else { unreachable!() };
            prop_assert_eq!(e.index as usize, i);
            seen.extend(e.input["items"].as_array().cloned().unwrap_or_default());
        }
        prop_assert_eq!(seen, (0..items).map(|i| json!(i)).collect::<Vec<_>>());
    }

    /// The read views agree with the aggregates on everything both fold: a job's stream status
    /// and task counts, a task's status, attempt, worker, error and dead-lettering; and a
    /// task's view is the same whether folded alone or among the whole log.
    #[test]
    fn views_agree_with_the_aggregates(
        n in 1u32..6,
        max_attempts in 1u32..4,
        chunk in 1u32..4,
        steps in prop::collection::vec((0usize..6, step()), 0..120),
    ) {
        let (log, tasks) = drive(n, max_attempts, chunk, &steps);
        let views = Views::fold(&log);
        prop_assert_eq!(views.jobs.len(), 1);
        let job = views.jobs.values().next().unwrap();
        let aggregate = JobAggregate::fold(log.iter().filter(|e| e.task_id().is_none()));
        prop_assert_eq!(job.stream_status, aggregate.status);
        prop_assert_eq!(job.created_upto, aggregate.created_upto);
        prop_assert_eq!(job.progress, JobProgress::fold(&log));
        prop_assert_eq!(job.status(), job.progress.displayed_status(aggregate.status));
        prop_assert_eq!(job.updated_at, log.last().unwrap().at());
        prop_assert_eq!(views.tasks.len(), tasks.len());
        for task in &tasks {
            let id = task.task_id().unwrap();
            let view = &views.tasks[&id];
            prop_assert_eq!(view.status, task.status);
            prop_assert_eq!(view.attempt, task.attempt);
            prop_assert_eq!(&view.worker, &task.worker);
            prop_assert_eq!(view.dead_lettered, task.dead_lettered);
            prop_assert_eq!(view.next_attempt_at, task.not_before);
            if task.status == TaskStatus::Completed {
                prop_assert_eq!(&view.error_message, &None);
            } else {
                prop_assert_eq!(&view.error_message, &task.last_error);
            }
            prop_assert_eq!(view.completed_at.is_some(), task.status.is_terminal());
            let alone = TaskView::fold(log.iter().filter(|e| e.task_id() == Some(id)));
            prop_assert_eq!(alone.as_ref(), Some(view));
        }
    }
}
