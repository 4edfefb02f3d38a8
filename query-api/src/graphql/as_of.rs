//! A job as it stood at a past instant (`job(id, asOf:)`), folded from the log with the
//! domain's folds ([`JobFold`]); no read table is involved.
//!
//! Cost: the job's stream and every task stream of the job (the tasks that existed at that
//! instant) are read up to the instant, [`STREAMS_PER_READ`] streams per round trip, and
//! folded in memory: time and memory grow with the number of the job's events recorded
//! before the instant (about three per task), not with the size of the log. See
//! `docs/dashboard.md` for measured figures.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use shoal_domain::{Event, JobFold, JobId, JobLifecycle, TaskId};
use shoal_infra::eventlog::{EventLog, LogError, LogPosition, RecordedEvent};
use shoal_infra::readmodel::{JobRow, TaskRow};

/// Task streams read per round trip.
pub(crate) const STREAMS_PER_READ: usize = 1000;

/// The tasks of a job as of an instant (`Job::tasks` answers from them).
#[derive(Debug)]
pub struct AsOf {
    /// The instant.
    pub at: DateTime<Utc>,
    /// Every task that existed then, by index.
    pub tasks: Vec<TaskRow>,
}

/// Decodes stored events, skipping (and logging) those this build cannot decode, as the
/// projector does.
pub(crate) fn decode(records: Vec<RecordedEvent>) -> Vec<(LogPosition, String, Event)> {
    records
        .into_iter()
        .filter_map(
            |r| match Event::decode(&r.event_type, r.schema_version, r.data.get()) {
                Ok(event) => Some((r.log_position, r.stream_id, event)),
                Err(error) => {
                    tracing::warn!(
                        stream = %r.stream_id,
                        position = r.log_position.position,
                        %error,
                        "skipping an event that cannot be decoded"
                    );
                    None
                }
            },
        )
        .collect()
}

/// The streams of tasks `0..count` of a job, [`STREAMS_PER_READ`] at a time.
pub(crate) fn task_stream_chunks(job: JobId, count: u32) -> impl Iterator<Item = Vec<String>> {
    let chunk = STREAMS_PER_READ as u32;
    (0..count.div_ceil(chunk)).map(move |c| {
        let from = c * chunk;
        let to = count.min(from.saturating_add(chunk));
        (from..to)
            .map(|i| TaskId::for_task(job, i).stream_id())
            .collect()
    })
}

/// The job and its tasks as they stood at `at` (events recorded at or before it), or `None`
/// when the job had not been submitted then (or does not exist).
pub async fn job_as_of(
    log: &dyn EventLog,
    job: JobId,
    at: DateTime<Utc>,
) -> Result<Option<(JobRow, Arc<AsOf>)>, LogError> {
    let job_events = decode(log.read_streams_until(&[job.stream_id()], at).await?);
    let mut lifecycle = JobLifecycle::default();
    for (_, _, event) in &job_events {
        lifecycle.apply(event);
    }
    let mut fold = JobFold::new(job);
    fold.add_job_events(job_events.into_iter().map(|(p, _, e)| (p, e)));
    for streams in task_stream_chunks(job, lifecycle.created_upto) {
        let events = decode(log.read_streams_until(&streams, at).await?);
        // Grouped by stream, each in version order: one task's stream after another.
        let mut events = events.into_iter().peekable();
        while let Some((position, stream, event)) = events.next() {
            let mut stream_events = vec![(position, event)];
            while let Some((p, _, e)) = events.next_if(|(_, s, _)| *s == stream) {
                stream_events.push((p, e));
            }
            fold.add_task_stream(stream_events);
        }
    }
    Ok(fold.finish().map(|(job, tasks)| {
        (
            JobRow::from(job),
            Arc::new(AsOf {
                at,
                tasks: tasks.into_iter().map(TaskRow::from).collect(),
            }),
        )
    }))
}

/// Every attempt of the job's tasks `0..tasks` (as recorded up to `until`, if given), with
/// its task's index, in index then attempt order. Reads every task stream of the job, like
/// [`job_as_of`].
pub async fn job_attempts(
    log: &dyn EventLog,
    job: JobId,
    tasks: u32,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<(u32, shoal_domain::Attempt)>, LogError> {
    let mut out = Vec::new();
    for streams in task_stream_chunks(job, tasks) {
        let records = match until {
            Some(at) => log.read_streams_until(&streams, at).await?,
            None => log.read_streams(&streams).await?,
        };
        let events = decode(records);
        let mut events = events.into_iter().peekable();
        while let Some((_, stream, event)) = events.next() {
            let index = match &event {
                Event::TaskEnqueued(e) => Some(e.index),
                _ => None,
            };
            let mut attempts = shoal_domain::Attempts::default();
            attempts.apply(&event);
            let mut index = index;
            while let Some((_, _, e)) = events.next_if(|(_, s, _)| *s == stream) {
                if let Event::TaskEnqueued(enqueued) = &e {
                    index = Some(enqueued.index);
                }
                attempts.apply(&e);
            }
            if let Some(index) = index {
                out.extend(attempts.0.into_iter().map(|a| (index, a)));
            }
        }
    }
    Ok(out)
}
