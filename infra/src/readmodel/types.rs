//! The rows of the read tables and the shapes of their queries, shared by both backends.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use serde_json::Value;
use shoal_domain::{
    Attempt, AttemptOutcome, Attempts, Event, JobId, JobProgress, JobStatus, JobView, TaskId,
    TaskStatus, TaskView,
};
use uuid::Uuid;

/// The projections this module stores, each with its own tables and checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProjectionName {
    /// Tables `jobs`, `tasks` and `task_attempts`.
    Jobs,
    /// Tables `analytics_*`.
    Analytics,
}

impl ProjectionName {
    /// Every projection.
    pub const ALL: [ProjectionName; 2] = [Self::Jobs, Self::Analytics];

    /// The name users type (`shoal projector rebuild jobs`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Jobs => "jobs",
            Self::Analytics => "analytics",
        }
    }

    /// The checkpoint (in the log's `checkpoints` table) of the live tables or of a rebuild.
    pub const fn checkpoint_name(self, target: Target) -> &'static str {
        match (self, target) {
            (Self::Jobs, Target::Live) => "projection.jobs",
            (Self::Jobs, Target::Rebuild) => "projection.jobs.rebuild",
            (Self::Analytics, Target::Live) => "projection.analytics",
            (Self::Analytics, Target::Rebuild) => "projection.analytics.rebuild",
        }
    }
}

impl fmt::Display for ProjectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`ProjectionName::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown projection {0:?} (expected \"jobs\" or \"analytics\")")]
pub struct UnknownProjection(pub String);

impl FromStr for ProjectionName {
    type Err = UnknownProjection;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s.trim())
            .ok_or_else(|| UnknownProjection(s.to_owned()))
    }
}

/// Which copy of a projection's tables a write goes to: the live tables that queries read, or
/// the shadow tables (`*_rebuild`) a rebuild fills before they are swapped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Live,
    Rebuild,
}

impl Target {
    pub(crate) const fn index(self) -> usize {
        match self {
            Self::Live => 0,
            Self::Rebuild => 1,
        }
    }
}

/// Timestamps in the read tables have microsecond precision (Postgres' precision); every
/// time written is truncated to it first, so both backends store the same values.
pub fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// One row of `jobs`: a job as the APIs show it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: JobId,
    pub job_type: String,
    /// What the APIs show: `stream_status`, except that an ENQUEUED job whose tasks have
    /// started shows RUNNING (see [`JobProgress::displayed_status`]).
    pub status: JobStatus,
    /// The status of the job's own stream (what the job aggregate says).
    pub stream_status: JobStatus,
    /// Task counts by status, and `total_tasks`.
    pub progress: JobProgress,
    /// Tasks `0..created_upto` exist (from `TasksCreated`).
    pub created_upto: u32,
    /// The job's parameters (a JSON object).
    pub parameters: Value,
    pub max_attempts: u32,
    pub timeout_seconds: u32,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// The time of the latest event of the job or of one of its tasks.
    pub updated_at: DateTime<Utc>,
    /// When its first task started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it completed, failed or was cancelled (cleared by a retry request).
    pub completed_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error_message: Option<String>,
    /// Why it was cancelled, as the user said.
    pub cancel_reason: Option<String>,
    /// Its current priority (higher runs first).
    pub priority: i32,
}

impl JobRow {
    /// `total_tasks` (REST `total_tasks`).
    pub fn total_tasks(&self) -> u32 {
        self.progress.total_tasks
    }
}

/// The row that stores a job's view: the displayed status beside the stream's, times to the
/// microsecond as the tables keep them.
impl From<JobView> for JobRow {
    fn from(view: JobView) -> JobRow {
        JobRow {
            status: view.status(),
            id: view.job_id,
            job_type: view.job_type,
            stream_status: view.stream_status,
            progress: view.progress,
            created_upto: view.created_upto,
            parameters: view.parameters,
            max_attempts: view.max_attempts,
            timeout_seconds: view.timeout_seconds,
            created_at: to_micros(view.created_at),
            updated_at: to_micros(view.updated_at),
            started_at: view.started_at.map(to_micros),
            completed_at: view.completed_at.map(to_micros),
            error_message: view.error_message,
            cancel_reason: view.cancel_reason,
            priority: view.priority,
        }
    }
}

/// One row of `tasks`: a task as the APIs show it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub id: TaskId,
    pub job_id: JobId,
    pub task_index: u32,
    pub job_type: String,
    pub status: TaskStatus,
    /// The current attempt: running, or next to run (1 = first).
    pub attempt: u32,
    /// Attempts per budget (a manual retry grants a fresh budget).
    pub max_attempts: u32,
    pub timeout_seconds: u32,
    /// The task's input.
    pub parameters: Value,
    /// What the handler returned, once COMPLETED.
    pub result: Option<Value>,
    /// The latest failure's error (cleared on completion).
    pub error_message: Option<String>,
    /// The worker of the latest start.
    pub worker: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The time of the task's latest event.
    pub updated_at: DateTime<Utc>,
    /// When the latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it completed or failed for good (cleared by a retry).
    pub completed_at: Option<DateTime<Utc>>,
    /// Earliest start of the next attempt, while RETRYING.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// How long the completing attempt ran.
    pub duration_ms: Option<u64>,
    /// The latest final failure went to the dead-letter queue.
    pub dead_lettered: bool,
}

/// The row that stores a task's view, times to the microsecond as the tables keep them.
impl From<TaskView> for TaskRow {
    fn from(view: TaskView) -> TaskRow {
        TaskRow {
            id: view.task_id,
            job_id: view.job_id,
            task_index: view.index,
            job_type: view.job_type,
            status: view.status,
            attempt: view.attempt,
            max_attempts: view.max_attempts,
            timeout_seconds: view.timeout_seconds,
            parameters: view.parameters,
            result: view.result,
            error_message: view.error_message,
            worker: view.worker,
            created_at: to_micros(view.created_at),
            updated_at: to_micros(view.updated_at),
            started_at: view.started_at.map(to_micros),
            completed_at: view.completed_at.map(to_micros),
            next_attempt_at: view.next_attempt_at.map(to_micros),
            duration_ms: view.duration_ms,
            dead_lettered: view.dead_lettered,
        }
    }
}

impl TaskRow {
    /// REST `retry_count`: attempts after the first.
    pub fn retry_count(&self) -> u32 {
        self.attempt.saturating_sub(1)
    }

    /// REST `max_retries`: attempts after the first that the budget allows.
    pub fn max_retries(&self) -> u32 {
        self.max_attempts.saturating_sub(1)
    }

    /// REST `processing_time_seconds`.
    pub fn processing_time_seconds(&self) -> Option<f64> {
        self.duration_ms.map(|ms| ms as f64 / 1000.0)
    }
}

/// One row of `task_attempts`: one attempt of a task, as the timeline lays it out (ADR 18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub job_id: JobId,
    pub task_id: TaskId,
    pub task_index: u32,
    /// Its place in the task's list of attempts (0 = first), as [`Attempts`] lists them.
    pub seq: u32,
    /// The attempt, its times to the microsecond (see [`apply_to_attempts`]).
    pub attempt: Attempt,
}

/// The stored name of an attempt's outcome.
pub fn outcome_str(outcome: AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Queued => "queued",
        AttemptOutcome::Running => "running",
        AttemptOutcome::Completed => "completed",
        AttemptOutcome::Retried => "retried",
        AttemptOutcome::Failed => "failed",
    }
}

/// The outcome of a stored name; `None` for a name this build does not write.
pub fn parse_outcome(text: &str) -> Option<AttemptOutcome> {
    AttemptOutcome::ALL
        .into_iter()
        .find(|o| outcome_str(*o) == text)
}

/// Applies one event of a task's stream to its attempts ([`Attempts::apply`]), then keeps
/// their times to the microsecond, as the tables store them. Every fold of attempts that is
/// compared with the table goes through here, event by event, so that a duration computed from
/// a stored start (a `TaskFailed` in a later batch than its `TaskStarted`) is the same whatever
/// the batches were.
pub fn apply_to_attempts(attempts: &mut Attempts, event: &Event) {
    attempts.apply(event);
    for a in &mut attempts.0 {
        a.queued_at = to_micros(a.queued_at);
        a.not_before = a.not_before.map(to_micros);
        a.started_at = a.started_at.map(to_micros);
        a.ended_at = a.ended_at.map(to_micros);
        if let Some(retry) = &mut a.retry {
            retry.at = to_micros(retry.at);
            retry.not_before = to_micros(retry.not_before);
        }
    }
}

/// What the jobs projection must read before folding a batch: the rows of these jobs and
/// tasks (absent ones are new), and the attempts of these tasks; and the task rows the caller
/// already holds as they are stored (it wrote them in its previous batch, see
/// `shoal_projector`'s running rows), which are not read again but handed to the fold with
/// the loaded ones, and written with a plain update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobsKeys {
    pub jobs: Vec<JobId>,
    pub tasks: Vec<TaskId>,
    /// Stored rows of tasks not in `tasks`.
    pub known_tasks: Vec<TaskRow>,
    /// Every stored attempt row of the tasks of `known_tasks`.
    pub known_attempts: Vec<AttemptRow>,
}

/// What a batch of the jobs projection writes: whole rows, each touched row once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobsChanges {
    pub jobs: Vec<JobRow>,
    pub tasks: Vec<TaskRow>,
    /// Attempt rows that are new or changed.
    pub attempts: Vec<AttemptRow>,
    /// Tasks whose stored attempts are deleted before `attempts` are written (their list of
    /// attempts was started afresh and is shorter than the stored one; `attempts` then holds
    /// all of it). Rare.
    pub attempts_reset: Vec<TaskId>,
}

/// The analytics projection's private memory of a job: enough to know its displayed status
/// (table `analytics_job_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalyticsJobState {
    pub job_id: JobId,
    pub stream_status: JobStatus,
    pub total_tasks: u32,
    pub created_upto: u32,
    /// A task of the job has started.
    pub started: bool,
}

/// Changes of one day's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DailyDelta {
    pub day: NaiveDate,
    pub jobs_submitted: i64,
    pub tasks_completed: i64,
    pub tasks_failed: i64,
}

/// Changes of one minute's counters (`minute` is truncated to the minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThroughputDelta {
    pub minute: DateTime<Utc>,
    pub tasks_completed: i64,
    pub tasks_failed: i64,
}

/// The processing times of a batch's completed tasks, summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessingDelta {
    pub count: i64,
    pub sum_ms: i64,
    pub min_ms: i64,
    pub max_ms: i64,
}

/// What a batch of the analytics projection writes: whole `analytics_job_state` rows, and
/// deltas for every counter (added to the stored values; zero deltas are left out).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnalyticsChanges {
    pub job_states: Vec<AnalyticsJobState>,
    pub jobs_by_type: Vec<(String, i64)>,
    pub jobs_by_status: Vec<(JobStatus, i64)>,
    pub tasks_by_status: Vec<(TaskStatus, i64)>,
    pub daily: Vec<DailyDelta>,
    pub processing: Option<ProcessingDelta>,
    /// `(bucket, count)`, see [`histogram`].
    pub buckets: Vec<(u32, i64)>,
    pub throughput: Vec<ThroughputDelta>,
}

impl AnalyticsChanges {
    /// Whether a counter changed (state rows alone are not news for readers).
    pub fn counters_changed(&self) -> bool {
        !(self.jobs_by_type.is_empty()
            && self.jobs_by_status.is_empty()
            && self.tasks_by_status.is_empty()
            && self.daily.is_empty()
            && self.processing.is_none()
            && self.buckets.is_empty()
            && self.throughput.is_empty())
    }
}

/// The fixed-bucket histogram of processing times that percentiles are estimated from.
///
/// Bucket 0 holds `[0, 1 ms)`; buckets `1..=LAST_REGULAR` are log-spaced, 20 per decade
/// (bucket `i` holds `[10^((i-1)/20), 10^(i/20))` ms, each about 12% wide), up to ~66 minutes;
/// bucket `OVERFLOW` holds everything longer. A percentile is the geometric middle of its
/// bucket, clamped to the observed min and max: within ~6% of the exact value below an hour.
pub mod histogram {
    /// Buckets per decade.
    pub const PER_DECADE: u32 = 20;
    /// The last log-spaced bucket (its upper bound, 10^6.6 ms, is just over an hour).
    pub const LAST_REGULAR: u32 = 132;
    /// Everything from `10^(LAST_REGULAR/20)` ms on.
    pub const OVERFLOW: u32 = LAST_REGULAR + 1;

    /// The bucket of a duration.
    pub fn bucket(ms: u64) -> u32 {
        if ms == 0 {
            return 0;
        }
        let i = (f64::from(PER_DECADE) * (ms as f64).log10()).floor() as i64 + 1;
        u32::try_from(i.clamp(1, i64::from(OVERFLOW))).unwrap_or(OVERFLOW)
    }

    /// `[low, high)` of a bucket in ms (`high` is infinite for [`OVERFLOW`]).
    pub fn bounds(bucket: u32) -> (f64, f64) {
        match bucket {
            0 => (0.0, 1.0),
            b if b >= OVERFLOW => (10f64.powf(f64::from(LAST_REGULAR) / 20.0), f64::INFINITY),
            b => (
                10f64.powf(f64::from(b - 1) / 20.0),
                10f64.powf(f64::from(b) / 20.0),
            ),
        }
    }

    /// The `p`-quantile (0 < p <= 1) of a histogram given as `(bucket, count)` in ascending
    /// bucket order, in ms, clamped to `[min_ms, max_ms]`. `None` when it is empty.
    pub fn quantile(buckets: &[(u32, i64)], p: f64, min_ms: f64, max_ms: f64) -> Option<f64> {
        let total: i64 = buckets.iter().map(|(_, n)| *n).sum();
        if total <= 0 {
            return None;
        }
        let rank = ((p * total as f64).ceil() as i64).clamp(1, total);
        let mut seen = 0;
        for &(bucket, n) in buckets {
            seen += n;
            if seen >= rank {
                let (low, high) = bounds(bucket);
                let middle = if bucket == 0 {
                    0.5
                } else if high.is_infinite() {
                    max_ms
                } else {
                    (low * high).sqrt()
                };
                return Some(middle.clamp(min_ms, max_ms.max(min_ms)));
            }
        }
        Some(max_ms)
    }
}

// ---------------------------------------------------------------------------------------------
// Queries

/// How a list of jobs is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobSort {
    /// By `created_at` descending, then id descending.
    #[default]
    Newest,
    /// By `created_at` ascending, then id ascending.
    Oldest,
    /// By priority descending, then newest first (`created_at` descending, id descending).
    Priority,
}

/// Which jobs a list shows. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Any of these statuses (as displayed).
    pub statuses: Vec<JobStatus>,
    /// Exactly this job type.
    pub job_type: Option<String>,
    /// Created at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Created strictly before.
    pub created_to: Option<DateTime<Utc>>,
    /// A case-insensitive substring of the id or the job type (trimmed; empty = no filter).
    pub search: Option<String>,
}

/// Whether the read tables can compare against `at`: years 1 to 9999 (UTC). Both backends
/// store and compare every such time; a filter or cursor outside it is a client's mistake, to
/// be answered as such rather than reach the database (Postgres refuses most of chrono's
/// range, `-200000-01-01` for one).
pub fn supported_time(at: DateTime<Utc>) -> bool {
    use chrono::Datelike;
    (1..=9999).contains(&at.year())
}

/// A place in a list of jobs: the last job of the previous page.
///
/// Its text form (`<unix micros>_<uuid>`, or `<priority>_<unix micros>_<uuid>` in a list
/// sorted by priority) is what APIs hand out as an opaque cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCursor {
    pub created_at: DateTime<Utc>,
    pub id: JobId,
    /// The job's priority, in a list sorted by priority ([`JobSort::Priority`]).
    pub priority: Option<i32>,
}

impl JobCursor {
    /// The cursor after `job` in a list sorted by time.
    pub fn after(job: &JobRow) -> Self {
        JobCursor {
            created_at: job.created_at,
            id: job.id,
            priority: None,
        }
    }

    /// The cursor after `job` in a list sorted by `sort`.
    pub fn after_in(job: &JobRow, sort: JobSort) -> Self {
        JobCursor {
            priority: (sort == JobSort::Priority).then_some(job.priority),
            ..JobCursor::after(job)
        }
    }

    /// Whether the cursor comes from a list sorted by `sort` (a cursor of another order
    /// would skip or repeat jobs).
    pub fn fits(&self, sort: JobSort) -> bool {
        self.priority.is_some() == (sort == JobSort::Priority)
    }
}

impl fmt::Display for JobCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(priority) = self.priority {
            write!(f, "{priority}_")?;
        }
        write!(f, "{}_{}", self.created_at.timestamp_micros(), self.id)
    }
}

/// A cursor that was not made by [`JobCursor`]'s `Display`. Callers answer "invalid cursor"
/// (a client error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor {0:?}")]
pub struct InvalidCursor(pub String);

impl FromStr for JobCursor {
    type Err = InvalidCursor;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidCursor(s.to_owned());
        let (first, rest) = s.split_once('_').ok_or_else(invalid)?;
        let (priority, micros, id) = match rest.split_once('_') {
            Some((micros, id)) => (Some(first.parse().map_err(|_| invalid())?), micros, id),
            None => (None, first, rest),
        };
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        let created_at = DateTime::from_timestamp_micros(micros)
            .filter(|at| supported_time(*at))
            .ok_or_else(invalid)?;
        let id = JobId::from_uuid(Uuid::parse_str(id).map_err(|_| invalid())?);
        Ok(JobCursor {
            created_at,
            id,
            priority,
        })
    }
}

/// A page of jobs from [`crate::readmodel::ReadModelStore::list_jobs`].
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    pub jobs: Vec<JobRow>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<JobCursor>,
}

/// Every count the REST overview shows, from the analytics tables.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Overview {
    pub total_jobs: i64,
    pub completed_jobs: i64,
    pub failed_jobs: i64,
    /// RUNNING.
    pub running_jobs: i64,
    /// PENDING, CREATING_TASKS or ENQUEUED.
    pub pending_jobs: i64,
    pub cancelled_jobs: i64,
    /// `completed_jobs / total_jobs * 100` (0 without jobs), unrounded.
    pub success_rate: f64,
    pub total_tasks: i64,
    pub completed_tasks: i64,
    pub failed_tasks: i64,
    pub running_tasks: i64,
    /// PENDING or ENQUEUED.
    pub pending_tasks: i64,
    pub retrying_tasks: i64,
    /// Over completed tasks; 0 without any.
    pub avg_processing_time_seconds: f64,
    pub total_processing_time_seconds: f64,
}

/// One day of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayCounts {
    pub date: NaiveDate,
    pub jobs_submitted: i64,
    pub tasks_completed: i64,
    pub tasks_failed: i64,
}

/// One minute of throughput.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteCounts {
    pub minute: DateTime<Utc>,
    pub tasks_completed: i64,
    pub tasks_failed: i64,
}

/// Processing-time statistics over every completed task, in seconds. The percentiles come
/// from the histogram (see [`histogram`]); min, max, avg and total are exact.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProcessingTimeStats {
    pub count: i64,
    pub total_seconds: f64,
    pub min_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
    pub avg_seconds: Option<f64>,
    pub p50_seconds: Option<f64>,
    pub p95_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
}

/// Everything a projection's tables hold, in a canonical order (for tests comparing a
/// projection with a fresh replay).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReadModelDump {
    pub jobs: Vec<JobRow>,
    pub tasks: Vec<TaskRow>,
    pub job_states: Vec<AnalyticsJobState>,
    pub jobs_by_type: Vec<(String, i64)>,
    pub jobs_by_status: Vec<(String, i64)>,
    pub tasks_by_status: Vec<(String, i64)>,
    pub daily: Vec<DayCounts>,
    /// `(count, sum_ms, min_ms, max_ms)`.
    pub processing: Option<(i64, i64, i64, i64)>,
    pub buckets: Vec<(u32, i64)>,
    pub throughput: Vec<MinuteCounts>,
    /// `task_attempts`, by task id then `seq`.
    pub attempts: Vec<AttemptRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log_spaced_and_cover_an_hour() {
        assert_eq!(histogram::bucket(0), 0);
        assert_eq!(histogram::bucket(1), 1);
        assert_eq!(histogram::bucket(10), 21);
        assert_eq!(histogram::bucket(1000), 61);
        assert!(histogram::bucket(3_600_000) <= histogram::LAST_REGULAR);
        assert_eq!(histogram::bucket(u64::MAX), histogram::OVERFLOW);
        for ms in [1u64, 7, 99, 1234, 55_555, 3_000_000] {
            let (low, high) = histogram::bounds(histogram::bucket(ms));
            assert!(
                low <= ms as f64 && (ms as f64) < high,
                "{ms} in [{low}, {high})"
            );
        }
    }

    #[test]
    fn quantiles_are_within_bucket_precision() {
        let samples: Vec<u64> = (1..=1000).collect();
        let mut buckets = std::collections::BTreeMap::new();
        for &s in &samples {
            *buckets.entry(histogram::bucket(s)).or_insert(0i64) += 1;
        }
        let buckets: Vec<(u32, i64)> = buckets.into_iter().collect();
        for (p, exact) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
            let estimate = histogram::quantile(&buckets, p, 1.0, 1000.0).unwrap();
            assert!(
                (estimate - exact).abs() / exact < 0.07,
                "p{p}: {estimate} vs {exact}"
            );
        }
        assert_eq!(histogram::quantile(&[], 0.5, 0.0, 0.0), None);
    }

    #[test]
    fn cursors_round_trip() {
        let cursor = JobCursor {
            created_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            id: JobId::new(),
            priority: None,
        };
        assert_eq!(cursor.to_string().parse::<JobCursor>(), Ok(cursor));
        // In a list sorted by priority, the cursor carries it (negative ones too).
        for priority in [7, -3] {
            let by_priority = JobCursor {
                priority: Some(priority),
                ..cursor
            };
            assert_eq!(by_priority.to_string().parse(), Ok(by_priority));
            assert!(by_priority.fits(JobSort::Priority) && !by_priority.fits(JobSort::Newest));
        }
        assert!(cursor.fits(JobSort::Oldest) && !cursor.fits(JobSort::Priority));
        assert!(format!("x_{cursor}").parse::<JobCursor>().is_err());
        assert!("nope".parse::<JobCursor>().is_err());
        assert!("12_notauuid".parse::<JobCursor>().is_err());
        // Times the databases cannot compare against are invalid cursors, not errors later.
        let id = JobId::new();
        for micros in [i64::MIN, i64::MAX, -8_334_601_228_800_000_000] {
            assert!(
                format!("{micros}_{id}").parse::<JobCursor>().is_err(),
                "{micros}"
            );
        }
    }

    #[test]
    fn projection_names_parse() {
        assert_eq!("jobs".parse(), Ok(ProjectionName::Jobs));
        assert_eq!("analytics".parse(), Ok(ProjectionName::Analytics));
        assert!("tasks".parse::<ProjectionName>().is_err());
    }
}
