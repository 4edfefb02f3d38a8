//! The limits as readers see them (`limits`, a job's `limits`) and why a task waits
//! (`Task.waitingReason`), read from the log: the stream `limits`, the job's `JobSubmitted`,
//! and the task's own stream (a task admitted for its current attempt has a `TaskReleased`
//! for it; a task of a job under admission without one is held by the orchestrator).

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, Utc};
use shoal_domain::admission::LimitTable;
use shoal_domain::ids::LIMITS_STREAM;
use shoal_domain::{Event, JobId, TaskId, TaskStatus};
use shoal_infra::eventlog::{EventLog, LogError, RecordedEvent};

/// Why a task waits.
#[derive(Debug, Enum, Clone, Copy, PartialEq, Eq)]
pub enum WaitingKind {
    /// A concurrency limit (of its job, its job type or its key) is full.
    Limited,
    /// A rate limit (of its job type or its key) has no token left for now.
    RateLimited,
    /// Its turn has not come: on a queue that cannot reorder (SQS), each job keeps only a few
    /// tasks in the queue, and jobs are served by priority, then in turn.
    FairShare,
    /// A retry waiting for its backoff to pass.
    Backoff,
}

/// Why a task waits, and the limits in the way.
#[derive(Debug, Clone, PartialEq, SimpleObject)]
pub struct WaitingReason {
    /// The kind of wait.
    pub kind: WaitingKind,
    /// For users: which limits, or until when.
    pub detail: String,
}

/// The limits in force (the stream `limits` folded).
pub async fn limit_table(log: &dyn EventLog) -> Result<LimitTable, LogError> {
    let mut table = LimitTable::default();
    for event in decode(&log.read_stream(LIMITS_STREAM, 0).await?) {
        table.apply(&event);
    }
    Ok(table)
}

/// A job's own limit and concurrency key, from its `JobSubmitted`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobLimits {
    pub job_type: String,
    pub max_concurrency: Option<u32>,
    pub concurrency_key: Option<String>,
}

/// Reads the job's `JobSubmitted` and `JobConcurrencySet` (the first events of its stream).
pub async fn job_limits(log: &dyn EventLog, job_id: JobId) -> Result<JobLimits, LogError> {
    let records = log.read_stream(&job_id.stream_id(), 0).await?;
    let mut job = JobLimits::default();
    for event in decode(&records[..records.len().min(2)]) {
        match event {
            Event::JobSubmitted(e) => job.job_type = e.job_type,
            Event::JobConcurrencySet(e) => {
                job.max_concurrency = e.max_concurrency;
                job.concurrency_key = e.concurrency_key;
            }
            _ => {}
        }
    }
    Ok(job)
}

/// Why the task waits: `None` unless it is ENQUEUED or RETRYING with no message for its
/// current attempt (or RETRYING before its due time).
pub async fn waiting_reason(
    log: &dyn EventLog,
    job_id: JobId,
    task_id: TaskId,
    status: TaskStatus,
    attempt: u32,
    next_attempt_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Option<WaitingReason>, LogError> {
    if !matches!(status, TaskStatus::Enqueued | TaskStatus::Retrying) {
        return Ok(None);
    }
    if let Some(due) = next_attempt_at.filter(|due| *due > now) {
        return Ok(Some(WaitingReason {
            kind: WaitingKind::Backoff,
            detail: format!("retry backoff until {}", due.to_rfc3339()),
        }));
    }
    let own = log.read_stream(&task_id.stream_id(), 0).await?;
    let own_released = released(&own);
    if own_released == Some(attempt) {
        return Ok(None);
    }
    // Under admission, a job's tasks are admitted from its first one on: a task that was
    // never admitted while its job's first task was sent right away is in the queue.
    let first = TaskId::for_task(job_id, 0);
    let is_first = task_id == first;
    let gated = own_released.is_some()
        || is_first
        || released(&log.read_stream(&first.stream_id(), 0).await?).is_some();
    if !gated {
        return Ok(None);
    }
    let job = job_limits(log, job_id).await?;
    let table = limit_table(log).await?;
    let mut concurrency = Vec::new();
    let mut rates = Vec::new();
    if let Some(max) = job.max_concurrency {
        concurrency.push(format!("the job's maxConcurrency {max}"));
    }
    let scopes = [
        (
            "job type",
            Some(job.job_type.clone()),
            table.job_type(&job.job_type),
        ),
        (
            "key",
            job.concurrency_key.clone(),
            job.concurrency_key.as_deref().and_then(|k| table.key(k)),
        ),
    ];
    for (what, name, values) in scopes {
        let (Some(name), Some(values)) = (name, values) else {
            continue;
        };
        if let Some(max) = values.max_concurrency {
            concurrency.push(format!("{what} {name:?}: {max} at once"));
        }
        if let Some(rate) = values.rate_per_second {
            rates.push(format!("{what} {name:?}: {rate} per second"));
        }
    }
    if !concurrency.is_empty() {
        concurrency.extend(rates);
        return Ok(Some(WaitingReason {
            kind: WaitingKind::Limited,
            detail: format!("limited by {}", concurrency.join("; ")),
        }));
    }
    if !rates.is_empty() {
        return Ok(Some(WaitingReason {
            kind: WaitingKind::RateLimited,
            detail: format!("rate-limited by {}", rates.join("; ")),
        }));
    }
    // No limit: held by fair share (unless it is the job's first task, never admitted: then
    // nothing says it is held).
    if is_first && own_released.is_none() {
        return Ok(None);
    }
    Ok(Some(WaitingReason {
        kind: WaitingKind::FairShare,
        detail: "waiting its turn: each job keeps a few tasks in the queue, and jobs are \
                 served by priority, then in turn"
            .to_owned(),
    }))
}

/// The attempt of the stream's latest `TaskReleased`, if any.
fn released(records: &[RecordedEvent]) -> Option<u32> {
    decode(records).iter().rev().find_map(|event| match event {
        Event::TaskReleased(e) => Some(e.attempt),
        _ => None,
    })
}

fn decode(records: &[RecordedEvent]) -> Vec<Event> {
    records
        .iter()
        .filter_map(|r| Event::decode(&r.event_type, r.schema_version, r.data.get()).ok())
        .collect()
}
