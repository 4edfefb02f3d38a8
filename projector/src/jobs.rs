//! The `jobs` projection (tables `jobs` and `tasks`), as a pure fold: the rows a batch touches,
//! as stored before it, plus the batch's events, give those rows after it. Every touched row
//! is written once per batch, whole.
//!
//! Folding row by row in log order, from the stored rows, is the same computation whatever
//! the batches are, so any split of the log gives the same tables.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;
use shoal_domain::{Event, JobId, JobProgress, JobStatus, ProgressDelta, TaskId, TaskStatus};
use shoal_infra::readmodel::{JobRow, JobsChanges, JobsKeys, TaskRow, to_micros};

use crate::lifecycle::StreamState;

/// The rows a batch must load: every job and task it touches, except those it creates
/// (whose first event in the batch is `JobSubmitted` / `TaskEnqueued`).
pub fn keys(events: &[Event]) -> JobsKeys {
    let mut keys = JobsKeys::default();
    let mut seen_jobs = HashSet::new();
    let mut seen_tasks = HashSet::new();
    for event in events {
        let job_id = event.job_id();
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

/// Folds a batch into the rows it touches. `jobs` and `tasks` are the stored rows of
/// [`keys`] that exist. Events of a job or task that has no row (and is not created in the
/// batch) change nothing but the counts of an existing job.
pub fn fold(jobs: Vec<JobRow>, tasks: Vec<TaskRow>, events: &[Event]) -> JobsChanges {
    let mut jobs: HashMap<JobId, JobRow> = jobs.into_iter().map(|j| (j.id, j)).collect();
    let mut tasks: HashMap<TaskId, TaskRow> = tasks.into_iter().map(|t| (t.id, t)).collect();
    let mut touched_jobs = BTreeSet::new();
    let mut touched_tasks = BTreeSet::new();

    for event in events {
        let at = to_micros(event.at());
        let job_id = event.job_id();
        if let Event::JobSubmitted(e) = event {
            jobs.insert(
                job_id,
                JobRow {
                    id: job_id,
                    job_type: e.job_type.clone(),
                    status: JobStatus::Pending,
                    stream_status: JobStatus::Pending,
                    progress: JobProgress {
                        total_tasks: e.total_tasks,
                        ..JobProgress::default()
                    },
                    created_upto: 0,
                    parameters: Value::Object(e.parameters.clone()),
                    max_attempts: e.max_attempts,
                    timeout_seconds: e.timeout_seconds,
                    created_at: at,
                    updated_at: at,
                    started_at: None,
                    completed_at: None,
                    error_message: None,
                    cancel_reason: None,
                },
            );
            touched_jobs.insert(job_id);
            continue;
        }

        if let Some(task_id) = event.task_id()
            && apply_task(&mut tasks, event, at)
        {
            touched_tasks.insert(task_id);
        }

        let Some(job) = jobs.get_mut(&job_id) else {
            continue;
        };
        touched_jobs.insert(job_id);
        job.updated_at = at;
        let mut stream = StreamState {
            status: job.stream_status,
            total_tasks: job.progress.total_tasks,
            created_upto: job.created_upto,
        };
        stream.apply(event);
        job.stream_status = stream.status;
        job.created_upto = stream.created_upto;
        match event {
            Event::JobCompleted(_) => {
                job.completed_at = Some(at);
                job.error_message = None;
            }
            Event::JobFailed(e) => {
                job.completed_at = Some(at);
                job.error_message = Some(format!(
                    "{} of {} tasks failed",
                    e.failed_tasks, job.progress.total_tasks
                ));
            }
            Event::JobCancelled(e) => {
                job.completed_at = Some(at);
                job.cancel_reason = e.reason.clone();
            }
            Event::JobRetryRequested(_) => {
                job.completed_at = None;
                job.error_message = None;
            }
            Event::TaskStarted(_) => {
                job.started_at.get_or_insert(at);
            }
            _ => {}
        }
        job.progress.add(ProgressDelta::of(event));
        job.status = job.progress.displayed_status(job.stream_status);
    }

    JobsChanges {
        jobs: touched_jobs
            .into_iter()
            .filter_map(|id| jobs.remove(&id))
            .collect(),
        tasks: touched_tasks
            .into_iter()
            .filter_map(|id| tasks.remove(&id))
            .collect(),
    }
}

/// Applies a task event to its row; false when there is no row to change.
fn apply_task(
    tasks: &mut HashMap<TaskId, TaskRow>,
    event: &Event,
    at: chrono::DateTime<chrono::Utc>,
) -> bool {
    if let Event::TaskEnqueued(e) = event {
        tasks.insert(
            e.task_id,
            TaskRow {
                id: e.task_id,
                job_id: e.job_id,
                task_index: e.index,
                job_type: e.job_type.clone(),
                status: TaskStatus::Enqueued,
                attempt: e.attempt,
                max_attempts: e.max_attempts,
                timeout_seconds: e.timeout_seconds,
                parameters: e.input.clone(),
                result: None,
                error_message: None,
                worker: None,
                created_at: at,
                updated_at: at,
                started_at: None,
                completed_at: None,
                next_attempt_at: None,
                duration_ms: None,
                dead_lettered: false,
            },
        );
        return true;
    }
    let Some(task) = event.task_id().and_then(|id| tasks.get_mut(&id)) else {
        return false;
    };
    task.updated_at = at;
    match event {
        Event::TaskStarted(e) => {
            task.status = TaskStatus::Running;
            task.attempt = e.attempt;
            task.worker = Some(e.worker.clone());
            task.started_at = Some(at);
            task.next_attempt_at = None;
        }
        Event::TaskCompleted(e) => {
            task.status = TaskStatus::Completed;
            task.attempt = e.attempt;
            task.result = e.result.clone().filter(|r| !r.is_null());
            task.duration_ms = Some(e.duration_ms);
            task.completed_at = Some(at);
            task.error_message = None;
        }
        Event::TaskFailed(e) => {
            task.error_message = Some(e.error.clone());
            if e.final_failure {
                task.status = TaskStatus::Failed;
                task.completed_at = Some(at);
            } else {
                task.status = TaskStatus::Retrying;
            }
        }
        Event::TaskRetryScheduled(e) => {
            task.status = TaskStatus::Retrying;
            task.attempt = e.attempt;
            task.next_attempt_at = Some(to_micros(e.not_before));
            if e.manual {
                task.completed_at = None;
                task.dead_lettered = false;
            }
        }
        Event::TaskDeadLettered(_) => task.dead_lettered = true,
        _ => {}
    }
    true
}
