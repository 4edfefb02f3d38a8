//! A job as it stood at a past instant (`job(id, asOf:)`), and its attempts (the timeline),
//! folded from the log with the domain's folds ([`JobFold`], [`Attempts`]); no read table is
//! involved.
//!
//! Cost: the job's events (its stream's and its tasks') are read through the log's index by
//! job, [`JOB_EVENTS_PER_READ`] per round trip, and folded as they arrive: time grows with the
//! number of the job's events (about three per task), not with the size of the log, and memory
//! with the number of its tasks (one view per task, and a copy of each event without its
//! payload). See `docs/dashboard.md` for measured figures.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use shoal_domain::{Attempt, Attempts, Event, JobFold, JobId};
use shoal_infra::eventlog::{EventLog, LogError, LogPosition, RecordedEvent};
use shoal_infra::readmodel::{JobRow, TaskRow, apply_to_attempts};

use super::timeline::{JobTimeline, TimelineRequest};

/// A job's events read per round trip of the log's index by job.
pub(crate) const JOB_EVENTS_PER_READ: i64 = 5000;

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
    records.into_iter().filter_map(decode_one).collect()
}

fn decode_one(r: RecordedEvent) -> Option<(LogPosition, String, Event)> {
    match Event::decode(&r.event_type, r.schema_version, r.data.get()) {
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
    }
}

/// Puts each stream's events back in version order as they come in log order. On SQLite the two
/// orders are the same; on Postgres the log is ordered by transaction id, which a transaction
/// takes at its first write, so an append that waited inside its transaction can, in rare
/// cases, come before its stream's previous event. Such an event waits here for the ones
/// before it.
#[derive(Default)]
struct InVersionOrder {
    streams: HashMap<String, Pending>,
}

struct Pending {
    /// The version the stream's next event must have.
    next: i64,
    waiting: BTreeMap<i64, RecordedEvent>,
}

impl InVersionOrder {
    fn push(&mut self, record: RecordedEvent, emit: &mut impl FnMut(RecordedEvent)) {
        let stream = self
            .streams
            .entry(record.stream_id.clone())
            .or_insert_with(|| Pending {
                next: 1,
                waiting: BTreeMap::new(),
            });
        if record.stream_version > stream.next {
            stream.waiting.insert(record.stream_version, record);
            return;
        }
        stream.next = stream.next.max(record.stream_version + 1);
        emit(record);
        while let Some(record) = stream.waiting.remove(&stream.next) {
            stream.next += 1;
            emit(record);
        }
    }

    /// What still waits (its predecessors were not among the events read: recorded after the
    /// instant asked for), in version order.
    fn finish(self, emit: &mut impl FnMut(RecordedEvent)) {
        for (_, pending) in self.streams {
            pending.waiting.into_values().for_each(&mut *emit);
        }
    }
}

/// Reads every event of `job` (its stream's and its tasks') recorded at or before `until`
/// (every one without it) through the log's index by job, and hands each to `each` decoded,
/// every stream's events in version order.
async fn for_each_job_event(
    log: &dyn EventLog,
    job: JobId,
    until: Option<DateTime<Utc>>,
    mut each: impl FnMut(LogPosition, &str, Event),
) -> Result<(), LogError> {
    let mut emit = |record: RecordedEvent| {
        if let Some((position, stream, event)) = decode_one(record) {
            each(position, &stream, event);
        }
    };
    let mut order = InVersionOrder::default();
    let mut cursor = LogPosition::START;
    loop {
        let page = log
            .read_job(job.as_uuid(), cursor, JOB_EVENTS_PER_READ)
            .await?;
        let read = page.len();
        if let Some(last) = page.last() {
            cursor = last.log_position;
        }
        for record in page {
            if until.is_none_or(|until| record.recorded_at <= until) {
                order.push(record, &mut emit);
            }
        }
        if i64::try_from(read).unwrap_or(i64::MAX) < JOB_EVENTS_PER_READ {
            break;
        }
    }
    order.finish(&mut emit);
    Ok(())
}

/// The job and its tasks as they stood at `at` (events recorded at or before it), or `None`
/// when the job had not been submitted then (or does not exist).
pub async fn job_as_of(
    log: &dyn EventLog,
    job: JobId,
    at: DateTime<Utc>,
) -> Result<Option<(JobRow, Arc<AsOf>)>, LogError> {
    let mut fold = JobFold::new(job);
    for_each_job_event(log, job, Some(at), |position, _, event| {
        fold.add_event(position, event);
    })
    .await?;
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

/// Every attempt of the job's tasks (as recorded up to `until`, if given), with its task's
/// index, in index then attempt order, times to the microsecond (as `task_attempts` keeps
/// them). Reads the job's events like [`job_as_of`].
pub async fn job_attempts(
    log: &dyn EventLog,
    job: JobId,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<(u32, Attempt)>, LogError> {
    let mut tasks: HashMap<String, (Option<u32>, Attempts)> = HashMap::new();
    for_each_job_event(log, job, until, |_, stream, event| {
        if event.task_id().is_none() {
            return;
        }
        let task = tasks.entry(stream.to_owned()).or_default();
        if let Event::TaskEnqueued(enqueued) = &event {
            task.0 = Some(enqueued.index);
        }
        apply_to_attempts(&mut task.1, &event);
    })
    .await?;
    let mut by_index: Vec<(u32, Attempts)> = tasks
        .into_values()
        .filter_map(|(index, attempts)| Some((index?, attempts)))
        .collect();
    by_index.sort_by_key(|(index, _)| *index);
    Ok(by_index
        .into_iter()
        .flat_map(|(index, attempts)| attempts.0.into_iter().map(move |a| (index, a)))
        .collect())
}

/// A job's attempts as [`job_attempts`] folds them.
pub type JobAttempts = Arc<Vec<(u32, Attempt)>>;

/// Timelines asked for last: [`TimelineCache::ENTRIES`] of them.
type CacheKey = (JobId, DateTime<Utc>, Option<DateTime<Utc>>);

/// A timeline answered from the attempts table: by job, the job's latest update, and the
/// request.
type AnswerKey = (JobId, DateTime<Utc>, TimelineRequest);

/// The attempts of the last few timelines folded from the log, by job, the job's latest update
/// (its `updated_at`: the time of its latest event, as the read model has it) and instant
/// (`asOf`): a timeline asked again while nothing happened to the job (zooming in or out of a
/// finished job, the page's periodic re-read) is laid out from them without reading the log
/// again. And the last few timelines answered from the attempts table, by job, update and
/// request: the page's periodic re-read of a finished job asks the same again. Put it in the
/// schema's context data; without it every timeline is read afresh.
#[derive(Debug, Default)]
pub struct TimelineCache {
    entries: Mutex<VecDeque<(CacheKey, JobAttempts)>>,
    answers: Mutex<VecDeque<(AnswerKey, JobTimeline)>>,
}

impl TimelineCache {
    /// How many jobs' attempts are kept (each is about 150 bytes per attempt).
    pub const ENTRIES: usize = 4;
    /// How many answers from the attempts table are kept (each at most 20,000 buckets or
    /// 5,000 bars).
    pub const ANSWERS: usize = 8;

    /// A timeline answered before for the same job, update and request.
    pub(crate) fn answer(&self, key: &AnswerKey) -> Option<JobTimeline> {
        let answers = self
            .answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        answers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, t)| t.clone())
    }

    /// Keeps an answer (the oldest goes when there are [`TimelineCache::ANSWERS`]).
    pub(crate) fn keep_answer(&self, key: AnswerKey, timeline: JobTimeline) {
        let mut answers = self
            .answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        answers.retain(|(k, _)| k.0 != key.0 || k.1 == key.1);
        answers.push_front((key, timeline));
        answers.truncate(Self::ANSWERS);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(CacheKey, JobAttempts)>> {
        // Entries are replaced whole: a panic cannot leave one half-written.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, key: &CacheKey) -> Option<JobAttempts> {
        let entries = self.lock();
        entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: CacheKey, attempts: JobAttempts) {
        let mut entries = self.lock();
        entries.retain(|(k, _)| k.0 != key.0 || k.2 != key.2);
        entries.push_front((key, attempts));
        entries.truncate(Self::ENTRIES);
    }

    /// The job's attempts up to `until`, from the cache when the job's `updated_at` is the one
    /// they were read at, else from the log (and kept).
    pub async fn attempts(
        cache: Option<&TimelineCache>,
        log: &dyn EventLog,
        job: JobId,
        updated_at: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> Result<JobAttempts, LogError> {
        let key = (job, updated_at, until);
        if let Some(attempts) = cache.and_then(|c| c.get(&key)) {
            return Ok(attempts);
        }
        let attempts = Arc::new(job_attempts(log, job, until).await?);
        if let Some(cache) = cache {
            cache.put(key, attempts.clone());
        }
        Ok(attempts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn record(stream: &str, version: i64, position: i64) -> RecordedEvent {
        RecordedEvent {
            log_position: LogPosition {
                commit: position,
                position,
            },
            stream_id: stream.into(),
            stream_version: version,
            event_type: "X".into(),
            schema_version: 1,
            data: RawValue::from_string("{}".into()).unwrap(),
            metadata: RawValue::from_string("{}".into()).unwrap(),
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn the_cache_keeps_the_latest_few_and_one_per_job_and_instant() {
        let cache = TimelineCache::default();
        let (job, other) = (JobId::new(), JobId::new());
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(1);
        let attempts = |n: usize| -> JobAttempts { Arc::new(Vec::with_capacity(n)) };
        cache.put((job, t0, None), attempts(1));
        assert!(cache.get(&(job, t0, None)).is_some());
        // The job moved on: the old entry is replaced, not kept beside.
        cache.put((job, t1, None), attempts(2));
        assert!(cache.get(&(job, t0, None)).is_none());
        assert!(cache.get(&(job, t1, None)).is_some());
        // Another instant of the same job is another entry.
        cache.put((job, t0, Some(t0)), attempts(3));
        assert!(cache.get(&(job, t1, None)).is_some());
        for _ in 0..TimelineCache::ENTRIES {
            cache.put((other, t0, Some(Utc::now())), attempts(0));
        }
        assert!(cache.get(&(job, t1, None)).is_none());
        assert_eq!(cache.lock().len(), TimelineCache::ENTRIES);
    }

    #[test]
    fn answers_are_kept_per_request_until_the_job_moves_on() {
        let cache = TimelineCache::default();
        let job = JobId::new();
        let t0 = Utc::now();
        let request = |max_bars: usize| TimelineRequest {
            group_by: super::super::timeline::TimelineGroup::Task,
            from: t0,
            to: t0 + chrono::Duration::seconds(1),
            max_bars,
            lane_buckets: 100,
            time_buckets: 200,
            slowest: 10,
        };
        let answer = |r: TimelineRequest| super::super::timeline::layout(&[], r);
        cache.keep_answer((job, t0, request(10)), answer(request(10)));
        cache.keep_answer((job, t0, request(20)), answer(request(20)));
        assert!(cache.answer(&(job, t0, request(10))).is_some());
        assert!(cache.answer(&(job, t0, request(20))).is_some());
        assert!(cache.answer(&(job, t0, request(30))).is_none());
        // The job moved on: its older answers go.
        let t1 = t0 + chrono::Duration::seconds(1);
        cache.keep_answer((job, t1, request(10)), answer(request(10)));
        assert!(cache.answer(&(job, t0, request(20))).is_none());
        assert!(cache.answer(&(job, t1, request(10))).is_some());
    }

    #[test]
    fn streams_come_out_in_version_order() {
        let mut order = InVersionOrder::default();
        let mut out = Vec::new();
        let mut emit = |r: RecordedEvent| out.push((r.stream_id, r.stream_version));
        // task-b's version 2 is ahead of its version 1 in the log; task-c lacks version 1.
        for (stream, version) in [
            ("task-a", 1),
            ("task-b", 2),
            ("task-a", 2),
            ("task-b", 1),
            ("task-b", 3),
            ("task-c", 2),
        ] {
            order.push(record(stream, version, 0), &mut emit);
        }
        order.finish(&mut emit);
        let of = |s: &str| -> Vec<i64> {
            out.iter()
                .filter(|(stream, _)| stream == s)
                .map(|(_, v)| *v)
                .collect()
        };
        assert_eq!(of("task-a"), [1, 2]);
        assert_eq!(of("task-b"), [1, 2, 3]);
        assert_eq!(of("task-c"), [2]);
        assert_eq!(out.len(), 6);
    }
}
