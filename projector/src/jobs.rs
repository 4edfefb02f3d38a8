//! The `jobs` projection (tables `jobs`, `tasks`, `task_attempts`), as a pure fold: the rows a
//! batch touches, as stored before it, plus the batch's events, give those rows after it.
//! Every touched row is written once per batch, whole.
//!
//! The fold itself is the domain's ([`shoal_domain::Views`]): the stored rows become views, the
//! batch's events are applied to them in log order, and the touched views become rows again.
//! That is the same computation whatever the batches are, so any split of the log gives the
//! same tables, and they are the domain's views of the log.
//!
//! `task_attempts` is folded the same way, with the domain's [`Attempts`] (ADR 18): a task's
//! stored attempts, plus the batch's events of its stream, give its attempts after the batch;
//! only the rows that changed are written. The attempts of a task whose row says ENQUEUED
//! (and not dead-lettered) are not read but taken as the row implies them ([`implied_attempts`],
//! ADR 23). A task that has a row in `tasks` but none in `task_attempts` was enqueued before
//! that table existed: it is left without attempts (its job's timeline is folded from the log)
//! until a rebuild, or until it starts while ENQUEUED, which writes the attempts its row implies.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use shoal_domain::{Attempt, Attempts, Event, JobId, JobView, TaskId, TaskStatus, TaskView, Views};
use shoal_infra::readmodel::{
    AttemptRow, JobRow, JobsChanges, JobsKeys, TaskRow, apply_to_attempts, to_micros,
};

/// The rows a batch must load: every job and task it touches, except those it creates
/// (whose first event in the batch is `JobSubmitted` / `TaskEnqueued`).
pub fn keys(events: &[Event]) -> JobsKeys {
    let mut keys = JobsKeys::default();
    let mut seen_jobs = HashSet::new();
    let mut seen_tasks = HashSet::new();
    for event in events {
        let Some(job_id) = event.job_id() else {
            continue;
        };
        if seen_jobs.insert(job_id) && !matches!(event, Event::JobSubmitted(_)) {
            keys.jobs.push(job_id);
        }
        if let Some(task_id) = event.task_id()
            && seen_tasks.insert(task_id)
            && !matches!(event, Event::TaskEnqueued(_))
        {
            keys.tasks.push(task_id);
        }
    }
    keys
}

/// The attempt rows a stored task row implies ([`Attempts::of_enqueued`]): those of a task
/// ENQUEUED and not dead-lettered, which a batch therefore need not read (the read of a task's
/// attempts when it starts; a task running or ended has its attempts read, or kept by
/// `crate::running`). `None` when the row does not say them all. Times to the microsecond, as
/// stored.
pub fn implied_attempts(row: &TaskRow) -> Option<Vec<AttemptRow>> {
    let attempts = Attempts::of_enqueued(
        row.status,
        row.dead_lettered,
        row.attempt,
        to_micros(row.created_at),
    )?;
    Some(attempt_rows(row.job_id, row.id, row.task_index, attempts).collect())
}

/// A task's attempts as its rows of `task_attempts`, `seq` from 0.
fn attempt_rows(
    job_id: JobId,
    task_id: TaskId,
    task_index: u32,
    Attempts(attempts): Attempts,
) -> impl Iterator<Item = AttemptRow> {
    attempts
        .into_iter()
        .zip(0u32..)
        .map(move |(attempt, seq)| AttemptRow {
            job_id,
            task_id,
            task_index,
            seq,
            attempt,
        })
}

/// Folds a batch into the rows it touches. `jobs`, `tasks` and `attempts` are the stored rows
/// of [`keys`] that exist (attempts: those of the tasks, or what [`implied_attempts`] says of
/// them). Events of a job or task that has no
/// row (and is not created in the batch) change nothing but the counts of an existing job.
pub fn fold(
    jobs: Vec<JobRow>,
    tasks: Vec<TaskRow>,
    attempts: Vec<AttemptRow>,
    events: &[Event],
) -> JobsChanges {
    fold_keeping_running(jobs, tasks, attempts, events).0
}

/// [`fold`], and every attempt row, as the batch leaves them, of each written task that is
/// running after it (what the projector keeps for the next batch: `crate::running`).
pub fn fold_keeping_running(
    jobs: Vec<JobRow>,
    tasks: Vec<TaskRow>,
    attempts: Vec<AttemptRow>,
    events: &[Event],
) -> (JobsChanges, BTreeMap<TaskId, Vec<AttemptRow>>) {
    let mut views = Views {
        jobs: jobs.into_iter().map(|j| (j.id, job_view(j))).collect(),
        tasks: tasks.into_iter().map(|t| (t.id, task_view(t))).collect(),
    };
    let mut touched_jobs = BTreeSet::new();
    let mut touched_tasks = BTreeSet::new();
    for event in events {
        let touched = views.apply(event);
        touched_jobs.extend(touched.job);
        touched_tasks.extend(touched.task);
    }
    let tasks: Vec<TaskRow> = touched_tasks
        .into_iter()
        .filter_map(|id| views.tasks.remove(&id))
        .map(TaskRow::from)
        .collect();
    let running: BTreeSet<TaskId> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Running)
        .map(|t| t.id)
        .collect();
    let (attempts, attempts_reset, running_attempts) = fold_attempts(attempts, events, &running);
    let changes = JobsChanges {
        jobs: touched_jobs
            .into_iter()
            .filter_map(|id| views.jobs.remove(&id))
            .map(JobRow::from)
            .collect(),
        tasks,
        attempts,
        attempts_reset,
    };
    (changes, running_attempts)
}

/// A task's attempts as stored, and as the batch leaves them.
struct TaskAttempts {
    job_id: JobId,
    index: u32,
    stored: Vec<Attempt>,
    now: Attempts,
}

/// The attempt rows a batch writes (new or changed), the tasks whose stored rows go first, and
/// all the attempt rows of the tasks of `keep` as the batch leaves them.
fn fold_attempts(
    rows: Vec<AttemptRow>,
    events: &[Event],
    keep: &BTreeSet<TaskId>,
) -> (
    Vec<AttemptRow>,
    Vec<TaskId>,
    BTreeMap<TaskId, Vec<AttemptRow>>,
) {
    let mut tasks: BTreeMap<TaskId, TaskAttempts> = BTreeMap::new();
    let mut rows = rows;
    rows.sort_by_key(|r| (r.task_id, r.seq));
    for row in rows {
        let task = tasks.entry(row.task_id).or_insert_with(|| TaskAttempts {
            job_id: row.job_id,
            index: row.task_index,
            stored: Vec::new(),
            now: Attempts::default(),
        });
        task.stored.push(row.attempt);
    }
    for task in tasks.values_mut() {
        task.now = Attempts(task.stored.clone());
    }
    for event in events {
        let Some(task_id) = event.task_id() else {
            continue;
        };
        if let Event::TaskEnqueued(e) = event {
            tasks.entry(task_id).or_insert_with(|| TaskAttempts {
                job_id: e.job_id,
                index: e.index,
                stored: Vec::new(),
                now: Attempts::default(),
            });
        }
        if let Some(task) = tasks.get_mut(&task_id) {
            apply_to_attempts(&mut task.now, event);
        }
    }
    let mut written = Vec::new();
    let mut reset = Vec::new();
    let mut kept = BTreeMap::new();
    for (task_id, task) in tasks {
        let shrunk = task.now.0.len() < task.stored.len();
        if shrunk {
            reset.push(task_id);
        }
        let mut all = Vec::new();
        for row in attempt_rows(task.job_id, task_id, task.index, task.now) {
            if keep.contains(&task_id) {
                all.push(row.clone());
            }
            if shrunk || task.stored.get(row.seq as usize) != Some(&row.attempt) {
                written.push(row);
            }
        }
        if keep.contains(&task_id) {
            kept.insert(task_id, all);
        }
    }
    (written, reset, kept)
}

/// A stored job row as the domain's view (`status` is derived, so it is not read).
fn job_view(row: JobRow) -> JobView {
    JobView {
        job_id: row.id,
        job_type: row.job_type,
        stream_status: row.stream_status,
        progress: row.progress,
        created_upto: row.created_upto,
        parameters: row.parameters,
        max_attempts: row.max_attempts,
        timeout_seconds: row.timeout_seconds,
        created_at: row.created_at,
        updated_at: row.updated_at,
        started_at: row.started_at,
        completed_at: row.completed_at,
        error_message: row.error_message,
        cancel_reason: row.cancel_reason,
        priority: row.priority,
    }
}

/// A stored task row as the domain's view.
fn task_view(row: TaskRow) -> TaskView {
    TaskView {
        task_id: row.id,
        job_id: row.job_id,
        index: row.task_index,
        job_type: row.job_type,
        status: row.status,
        attempt: row.attempt,
        max_attempts: row.max_attempts,
        timeout_seconds: row.timeout_seconds,
        parameters: row.parameters,
        result: row.result,
        error_message: row.error_message,
        worker: row.worker,
        created_at: row.created_at,
        updated_at: row.updated_at,
        started_at: row.started_at,
        completed_at: row.completed_at,
        next_attempt_at: row.next_attempt_at,
        duration_ms: row.duration_ms,
        dead_lettered: row.dead_lettered,
    }
}
