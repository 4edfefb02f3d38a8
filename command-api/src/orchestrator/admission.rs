//! Admission: which waiting tasks the relay may hand to the queue now.
//!
//! A task is *gated* when its job is subject to a limit: its own `max_concurrency`, a
//! concurrency or rate limit of its job type or of its concurrency key, or the fair-share
//! window of a queue that cannot reorder its messages (SQS). The relay does not send a gated
//! task's message when it reads its `TaskEnqueued` (or its `TaskRetryScheduled`): the task is
//! *held*. Each round (after every batch of the log, and on a timer while tasks wait for a
//! rate limit's tokens or a retry's due time) the leader admits held tasks, in order of job
//! priority and then round-robin across the jobs of a priority, while:
//!
//! - fewer than the limit of the job, of its type and of its key are *in flight* (admitted
//!   and not ended: ENQUEUED, RUNNING or RETRYING and not held, which the consumer's task
//!   counts give for every active job, gated or not);
//! - the type's and the key's token buckets hold a token (rate limits);
//! - fewer than `window` of the job's admitted tasks have not started yet (fair share).
//!
//! Admitting appends `TaskReleased` to the task's stream (at its version: a second leader's
//! admission of the same attempt conflicts); the relay sends the message when it reads that
//! event, as for any outbox event. The slot is taken from the admission and freed by the
//! attempt's end or its retry, both in the log, so the counts are exact and cluster-wide by
//! construction: one leader decides, in the log's order, however many workers run.
//!
//! A new leader rebuilds the held tasks from the log (the gated jobs' task streams: waiting,
//! and no `TaskReleased` for the current attempt) and admits nothing before its consumer has
//! folded every event that rebuild saw, so its counts are those of the log. It runs a round as
//! it starts: the previous leader may have saved its last batch and stopped before admitting
//! what that batch freed, and no later event need come to start one.
//! See `docs/adr/0016-admission-limits-and-fair-share.md`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use shoal_domain::admission::{LimitTable, LimitValues};
use shoal_domain::events::{JobSubmitted, LimitKind, TaskReleased};
use shoal_domain::ids::LIMITS_STREAM;
use shoal_domain::{Event, JobId, JobProgress, TaskId, TaskState, TaskStatus, evolve_task};
use shoal_infra::eventlog::{EventLog, LogError, LogPosition, RecordedEvent};

/// Most tasks admitted per round (one append).
const MAX_PER_ROUND: usize = 2_000;
/// Streams read per query while rebuilding.
const STREAMS_PER_READ: usize = 500;
/// The longest a timer round waits (so a limit's change or a clock jump is noticed).
const MAX_WAKE: Duration = Duration::from_secs(1);

/// The tasks held by admission, shared with the reconciler (which must not requeue them: they
/// have no message on purpose).
pub(super) type HeldTasks = Arc<Mutex<HashSet<TaskId>>>;

/// The limits as admission last learned them, shared with the expander: on the SQL queue a
/// chunk's tasks are queued with the chunk unless a limit gates their job
/// ([`LimitTable::limits_job`]), and then admission sends them.
pub(super) type SharedLimits = Arc<std::sync::RwLock<LimitTable>>;

/// A task waiting for admission: its current attempt has no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Held {
    pub task_id: TaskId,
    pub index: u32,
    pub attempt: u32,
    /// The task stream's version as last seen (the admission appends after it).
    pub version: i64,
    /// A retry's due time: not admitted before.
    pub not_before: Option<DateTime<Utc>>,
}

/// What admission knows of an active job.
#[derive(Debug, Clone, Default)]
struct JobEntry {
    job_type: String,
    key: Option<String>,
    max_concurrency: Option<u32>,
    priority: i32,
    held: VecDeque<Held>,
}

/// A token bucket of one second's worth of tokens (at least one).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: DateTime<Utc>,
}

impl Bucket {
    fn capacity(rate: f64) -> f64 {
        rate.max(1.0)
    }

    fn refill(&mut self, rate: f64, now: DateTime<Utc>) {
        let elapsed = (now - self.at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
        if elapsed > 0.0 {
            self.tokens = (self.tokens + elapsed * rate).min(Self::capacity(rate));
            self.at = now;
        }
    }

    /// How long until one token is there.
    fn wait(&self, rate: f64) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / rate).clamp(0.0, 3600.0))
    }
}

type Scope = (LimitKind, String);

/// A task admitted by a round: append its `TaskReleased` at `version`.
#[derive(Debug, Clone)]
pub(super) struct Release {
    pub job_id: JobId,
    pub held: Held,
}

impl Release {
    pub(super) fn event(&self, now: DateTime<Utc>) -> Event {
        Event::TaskReleased(TaskReleased {
            job_id: self.job_id,
            task_id: self.held.task_id,
            index: self.held.index,
            attempt: self.held.attempt,
            at: now,
        })
    }
}

/// The admission state of the leader. See the module docs.
#[derive(Debug)]
pub(super) struct Admission {
    /// False with the Step Functions driver, whose executions relay the tasks.
    enabled: bool,
    /// The fair-share window per job, for a queue that cannot reorder.
    window: Option<u32>,
    limits: LimitTable,
    jobs: HashMap<JobId, JobEntry>,
    buckets: HashMap<Scope, Bucket>,
    /// Per priority, the job served last (round-robin goes on after it).
    cursor: HashMap<i32, JobId>,
    held_ids: HeldTasks,
    /// Where [`Admission::limits`] is published for the expander.
    published: SharedLimits,
    /// Task stream versions the rebuild read: replayed events up to them are already in the
    /// rebuilt state.
    rebuilt: HashMap<TaskId, i64>,
    /// No admission before the consumer has folded up to this log position (the newest event
    /// the rebuild saw).
    wait_for: LogPosition,
}

impl Admission {
    pub(super) fn new(
        enabled: bool,
        window: Option<u32>,
        held_ids: HeldTasks,
        published: SharedLimits,
    ) -> Self {
        if let Ok(mut ids) = held_ids.lock() {
            ids.clear();
        }
        Admission {
            enabled,
            window,
            limits: LimitTable::default(),
            jobs: HashMap::new(),
            buckets: HashMap::new(),
            cursor: HashMap::new(),
            held_ids,
            published,
            rebuilt: HashMap::new(),
            wait_for: LogPosition::START,
        }
    }

    /// Rebuilds the state of a new leader from the log: the limits, the active jobs' own
    /// streams, and the task streams (`created_upto` tasks each) of the gated jobs that have
    /// tasks waiting (`waiting`: ENQUEUED or RETRYING as of the checkpoint).
    pub(super) async fn rebuild(
        &mut self,
        log: &dyn EventLog,
        active: &[(JobId, u32, u32)],
    ) -> Result<(), LogError> {
        // Nothing is admitted before the consumer has folded the log as it is now: the
        // previous leader's admissions are all in it.
        let mut newest = log.head().await?;
        for record in log.read_stream(LIMITS_STREAM, 0).await? {
            newest = newest.max(record.log_position);
            if let Some(event) = decode(&record) {
                self.limits.apply(&event);
            }
        }
        self.publish_limits();
        let job_streams: Vec<String> = active.iter().map(|(id, _, _)| id.stream_id()).collect();
        for chunk in job_streams.chunks(STREAMS_PER_READ) {
            for record in log.read_streams(chunk).await? {
                newest = newest.max(record.log_position);
                if let Some(event) = decode(&record) {
                    self.apply_job_event(&event);
                }
            }
        }
        for &(job_id, created_upto, waiting) in active {
            if waiting == 0 || !self.gates(job_id) {
                continue;
            }
            let streams: Vec<String> = (0..created_upto)
                .map(|index| TaskId::for_task(job_id, index).stream_id())
                .collect();
            for chunk in streams.chunks(STREAMS_PER_READ) {
                let records = log.read_streams(chunk).await?;
                let mut by_stream: BTreeMap<&str, Vec<&RecordedEvent>> = BTreeMap::new();
                for record in &records {
                    newest = newest.max(record.log_position);
                    by_stream.entry(&record.stream_id).or_default().push(record);
                }
                let mut held = Vec::new();
                let mut versions = Vec::new();
                for stream in chunk {
                    let Some(records) = by_stream.get(stream.as_str()) else {
                        continue;
                    };
                    if let Some((task_id, version, waiting)) = fold_task(records) {
                        versions.push((task_id, version));
                        held.extend(waiting);
                    }
                }
                for task in held {
                    self.hold(job_id, task);
                }
                // Replayed events up to these versions are already folded in.
                self.rebuilt.extend(versions);
            }
        }
        self.wait_for = newest;
        Ok(())
    }

    /// Whether the job's tasks wait for admission now.
    pub(super) fn gates(&self, job_id: JobId) -> bool {
        if !self.enabled {
            return false;
        }
        let Some(job) = self.jobs.get(&job_id) else {
            return self.window.is_some();
        };
        self.window.is_some()
            || job.max_concurrency.is_some()
            || self.limits.job_type(&job.job_type).is_some()
            || job
                .key
                .as_deref()
                .and_then(|k| self.limits.key(k))
                .is_some()
    }

    /// Learns a job's type, key, limit and priority from its stream's events, and the limits
    /// from `LimitSet`.
    pub(super) fn apply_job_event(&mut self, event: &Event) {
        match event {
            Event::JobSubmitted(e) => {
                let entry = self.jobs.entry(e.job_id).or_default();
                entry.job_type = e.job_type.clone();
                entry.priority = priority_of(e);
            }
            Event::JobConcurrencySet(e) => {
                let entry = self.jobs.entry(e.job_id).or_default();
                entry.max_concurrency = e.max_concurrency;
                entry.key = e.concurrency_key.clone();
            }
            Event::JobPriorityChanged(e) => {
                self.jobs.entry(e.job_id).or_default().priority = e.priority;
            }
            Event::LimitSet(_) => {
                self.limits.apply(event);
                self.publish_limits();
            }
            _ => {}
        }
    }

    fn publish_limits(&self) {
        if let Ok(mut published) = self.published.write() {
            published.clone_from(&self.limits);
        }
    }

    /// Holds a task's current attempt (once: a replayed hold, or one the rebuild already
    /// has, changes nothing).
    pub(super) fn hold(&mut self, job_id: JobId, task: Held) {
        if self
            .rebuilt
            .get(&task.task_id)
            .is_some_and(|version| task.version <= *version)
        {
            return;
        }
        let maybe_held = self.maybe_held(task.task_id);
        let entry = self.jobs.entry(job_id).or_default();
        if maybe_held
            && let Some(existing) = entry.held.iter_mut().find(|h| h.task_id == task.task_id)
        {
            if task.version > existing.version {
                *existing = task;
            }
            return;
        }
        entry.held.push_back(task);
        if let Ok(mut ids) = self.held_ids.lock() {
            ids.insert(task.task_id);
        }
    }

    /// Whether admission knows the job's submission.
    pub(super) fn knows(&self, job_id: JobId) -> bool {
        self.jobs.contains_key(&job_id)
    }

    /// Whether the task's current attempt is held.
    pub(super) fn is_held(&self, job_id: JobId, task_id: TaskId) -> bool {
        self.maybe_held(task_id)
            && self
                .jobs
                .get(&job_id)
                .is_some_and(|job| job.held.iter().any(|h| h.task_id == task_id))
    }

    /// False when the task is certainly not held: the set of held ids answers in constant
    /// time what a scan of the job's held list (thousands of tasks under a limit) would, for
    /// every event of a gated job's tasks. True when held, or when the set cannot be read.
    fn maybe_held(&self, task_id: TaskId) -> bool {
        self.held_ids
            .lock()
            .map_or(true, |ids| ids.contains(&task_id))
    }

    /// Follows a task event of the log: a held task's stream moved (its version), or it is no
    /// longer waiting (started, ended, or admitted by someone).
    pub(super) fn observe_task(
        &mut self,
        job_id: JobId,
        task_id: TaskId,
        version: i64,
        event: &Event,
    ) {
        if !self.maybe_held(task_id) {
            return;
        }
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let Some(position) = job.held.iter().position(|h| h.task_id == task_id) else {
            return;
        };
        if version <= job.held[position].version {
            return;
        }
        match event {
            Event::TaskStarted(_)
            | Event::TaskCompleted(_)
            | Event::TaskFailed(_)
            | Event::TaskReleased(_) => {
                job.held.remove(position);
                if let Ok(mut ids) = self.held_ids.lock() {
                    ids.remove(&task_id);
                }
            }
            _ => job.held[position].version = version,
        }
    }

    /// Forgets a job that ended or was cancelled (its held tasks are never sent).
    pub(super) fn forget_job(&mut self, job_id: JobId) {
        if let Some(job) = self.jobs.remove(&job_id)
            && let Ok(mut ids) = self.held_ids.lock()
        {
            for held in &job.held {
                ids.remove(&held.task_id);
            }
        }
    }

    /// Puts back tasks whose admission could not be appended (their stream moved: the news
    /// will come through the log).
    pub(super) fn restore(&mut self, releases: Vec<Release>) {
        for release in releases.into_iter().rev() {
            let entry = self.jobs.entry(release.job_id).or_default();
            entry.held.push_front(release.held);
            if let Ok(mut ids) = self.held_ids.lock() {
                ids.insert(release.held.task_id);
            }
        }
    }

    /// Whether any task is held.
    pub(super) fn has_held(&self) -> bool {
        self.jobs.values().any(|j| !j.held.is_empty())
    }

    /// How many tasks are held.
    pub(super) fn held_count(&self) -> usize {
        self.jobs.values().map(|j| j.held.len()).sum()
    }

    /// One admission round at `now`, `folded_upto` being the consumer's checkpoint position,
    /// with the task counts of the active jobs. Returns the tasks admitted (already taken off
    /// the held lists) and when to run the next round if tasks still wait on time (a rate
    /// limit's tokens, a retry's due time).
    pub(super) fn round(
        &mut self,
        now: DateTime<Utc>,
        folded_upto: LogPosition,
        progress: &HashMap<JobId, JobProgress>,
    ) -> (Vec<Release>, Option<Duration>) {
        if !self.enabled || folded_upto < self.wait_for || self.held_count() == 0 {
            return (Vec::new(), None);
        }
        // In flight, and admitted but not started, per job; in flight per limited scope.
        let mut in_flight: HashMap<JobId, u32> = HashMap::new();
        let mut unstarted: HashMap<JobId, u32> = HashMap::new();
        let mut scopes: HashMap<Scope, u32> = HashMap::new();
        for (job_id, p) in progress {
            let held = self
                .jobs
                .get(job_id)
                .map_or(0, |j| u32::try_from(j.held.len()).unwrap_or(u32::MAX));
            let flying = (p.queued + p.running + p.retrying).saturating_sub(held);
            let waiting = (p.queued + p.retrying).saturating_sub(held);
            in_flight.insert(*job_id, flying);
            unstarted.insert(*job_id, waiting);
            if let Some(job) = self.jobs.get(job_id) {
                for (scope, _) in self.job_scopes(job) {
                    *scopes.entry(scope).or_default() += flying;
                }
            }
        }

        // Bands of priority, highest first; round-robin within a band from its cursor.
        let mut bands: BTreeMap<std::cmp::Reverse<i32>, Vec<JobId>> = BTreeMap::new();
        for (job_id, job) in &self.jobs {
            if !job.held.is_empty() && progress.contains_key(job_id) {
                bands
                    .entry(std::cmp::Reverse(job.priority))
                    .or_default()
                    .push(*job_id);
            }
        }
        let mut releases = Vec::new();
        let mut wake: Option<Duration> = None;
        let mut note_wake = |d: Duration| {
            wake = Some(wake.map_or(d, |w: Duration| w.min(d)));
        };
        for (std::cmp::Reverse(priority), mut ids) in bands {
            ids.sort_unstable();
            if let Some(last) = self.cursor.get(&priority) {
                let start = ids.partition_point(|id| id <= last);
                ids.rotate_left(start);
            }
            loop {
                let mut admitted_any = false;
                for job_id in &ids {
                    if releases.len() >= MAX_PER_ROUND {
                        break;
                    }
                    let Some(job) = self.jobs.get(job_id) else {
                        continue;
                    };
                    let Some(position) = job
                        .held
                        .iter()
                        .position(|h| h.not_before.is_none_or(|t| t <= now))
                    else {
                        if let Some(due) = job.held.iter().filter_map(|h| h.not_before).min() {
                            note_wake((due - now).to_std().unwrap_or_default());
                        }
                        continue;
                    };
                    let flying = in_flight.get(job_id).copied().unwrap_or(0);
                    if job.max_concurrency.is_some_and(|max| flying >= max) {
                        continue;
                    }
                    if self
                        .window
                        .is_some_and(|w| unstarted.get(job_id).copied().unwrap_or(0) >= w)
                    {
                        continue;
                    }
                    let job_scopes = self.job_scopes(job);
                    let mut blocked = false;
                    for (scope, values) in &job_scopes {
                        if values
                            .max_concurrency
                            .is_some_and(|max| scopes.get(scope).copied().unwrap_or(0) >= max)
                        {
                            blocked = true;
                        }
                        if let Some(rate) = values.rate_per_second {
                            let bucket = self.buckets.entry(scope.clone()).or_insert(Bucket {
                                tokens: Bucket::capacity(rate),
                                at: now,
                            });
                            bucket.refill(rate, now);
                            if bucket.tokens < 1.0 {
                                note_wake(bucket.wait(rate));
                                blocked = true;
                            }
                        }
                    }
                    if blocked {
                        continue;
                    }
                    for (scope, values) in &job_scopes {
                        *scopes.entry(scope.clone()).or_default() += 1;
                        if values.rate_per_second.is_some()
                            && let Some(bucket) = self.buckets.get_mut(scope)
                        {
                            bucket.tokens -= 1.0;
                        }
                    }
                    *in_flight.entry(*job_id).or_default() += 1;
                    *unstarted.entry(*job_id).or_default() += 1;
                    let Some(job) = self.jobs.get_mut(job_id) else {
                        continue;
                    };
                    if let Some(held) = job.held.remove(position) {
                        if let Ok(mut ids) = self.held_ids.lock() {
                            ids.remove(&held.task_id);
                        }
                        releases.push(Release {
                            job_id: *job_id,
                            held,
                        });
                        self.cursor.insert(priority, *job_id);
                        admitted_any = true;
                    }
                }
                if !admitted_any || releases.len() >= MAX_PER_ROUND {
                    break;
                }
            }
        }
        if releases.len() >= MAX_PER_ROUND {
            note_wake(Duration::ZERO);
        }
        (releases, wake.map(|w| w.min(MAX_WAKE)))
    }

    /// The limited scopes of a job now: its type's and its key's, with their limits.
    fn job_scopes(&self, job: &JobEntry) -> Vec<(Scope, LimitValues)> {
        let mut scopes = Vec::new();
        if let Some(values) = self.limits.job_type(&job.job_type) {
            scopes.push(((LimitKind::JobType, job.job_type.clone()), values));
        }
        if let Some(key) = &job.key
            && let Some(values) = self.limits.key(key)
        {
            scopes.push(((LimitKind::Key, key.clone()), values));
        }
        scopes
    }
}

/// A job's priority at submission (higher first).
fn priority_of(submitted: &JobSubmitted) -> i32 {
    submitted.priority
}

fn decode(record: &RecordedEvent) -> Option<Event> {
    match Event::decode(&record.event_type, record.schema_version, record.data.get()) {
        Ok(event) => Some(event),
        Err(error) => {
            tracing::warn!(stream_id = %record.stream_id, %error, "undecodable event skipped");
            None
        }
    }
}

/// A task stream folded for the rebuild: its id, its version, and its current attempt when it
/// waits with no `TaskReleased` for that attempt.
fn fold_task(records: &[&RecordedEvent]) -> Option<(TaskId, i64, Option<Held>)> {
    let mut state = TaskState::default();
    let mut released = 0;
    let mut version = 0;
    let mut index = 0;
    for record in records {
        version = record.stream_version;
        let Some(event) = decode(record) else {
            continue;
        };
        match &event {
            Event::TaskReleased(e) => released = e.attempt,
            Event::TaskEnqueued(e) => index = e.index,
            _ => {}
        }
        state = evolve_task(state, &event);
    }
    let task_id = state.task_id()?;
    let waiting = matches!(state.status, TaskStatus::Enqueued | TaskStatus::Retrying)
        && released != state.attempt;
    Some((
        task_id,
        version,
        waiting.then_some(Held {
            task_id,
            index,
            attempt: state.attempt,
            version,
            not_before: state.not_before,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_domain::admission::{SetLimit, decide_set_limit};

    fn job(n: u128) -> JobId {
        JobId::from_uuid(uuid::Uuid::from_u128(n))
    }

    fn admission() -> Admission {
        Admission::new(true, None, HeldTasks::default(), SharedLimits::default())
    }

    fn register(a: &mut Admission, id: JobId, job_type: &str, key: Option<&str>, max: Option<u32>) {
        a.jobs.insert(
            id,
            JobEntry {
                job_type: job_type.into(),
                key: key.map(str::to_owned),
                max_concurrency: max,
                priority: 0,
                held: VecDeque::new(),
            },
        );
    }

    fn hold_n(a: &mut Admission, id: JobId, n: u32) {
        for index in 0..n {
            a.hold(
                id,
                Held {
                    task_id: TaskId::for_task(id, index),
                    index,
                    attempt: 1,
                    version: 1,
                    not_before: None,
                },
            );
        }
    }

    fn queued(n: u32) -> JobProgress {
        JobProgress {
            total_tasks: n,
            created: n,
            queued: n,
            ..JobProgress::default()
        }
    }

    fn limit(a: &mut Admission, kind: LimitKind, name: &str, c: Option<i64>, r: Option<f64>) {
        let events = decide_set_limit(SetLimit {
            kind,
            name: name.into(),
            max_concurrency: c,
            rate_per_second: r,
            now: Utc::now(),
        })
        .unwrap();
        a.apply_job_event(&events[0]);
    }

    #[test]
    fn a_job_limit_admits_up_to_the_limit_and_a_finished_task_frees_a_slot() {
        let mut a = admission();
        let j = job(1);
        register(&mut a, j, "t", None, Some(2));
        assert!(a.gates(j));
        hold_n(&mut a, j, 5);
        let now = Utc::now();
        let mut progress = HashMap::from([(j, queued(5))]);
        let (released, _) = a.round(now, LogPosition::START, &progress);
        assert_eq!(released.len(), 2);
        assert_eq!(released[0].held.index, 0);
        // Nothing more while both run.
        progress.insert(
            j,
            JobProgress {
                queued: 3,
                running: 2,
                ..queued(5)
            },
        );
        assert!(a.round(now, LogPosition::START, &progress).0.is_empty());
        // One completes: one more.
        progress.insert(
            j,
            JobProgress {
                queued: 3,
                running: 1,
                completed: 1,
                ..queued(5)
            },
        );
        let (released, _) = a.round(now, LogPosition::START, &progress);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].held.index, 2);
    }

    #[test]
    fn a_key_limit_is_shared_by_the_jobs_of_the_key_and_round_robin_interleaves_them() {
        let mut a = admission();
        let (j1, j2, j3) = (job(1), job(2), job(3));
        register(&mut a, j1, "t", Some("acme"), None);
        register(&mut a, j2, "t", Some("acme"), None);
        register(&mut a, j3, "t", Some("other"), None);
        limit(&mut a, LimitKind::Key, "acme", Some(3), None);
        assert!(a.gates(j1) && !a.gates(j3));
        hold_n(&mut a, j1, 10);
        hold_n(&mut a, j2, 10);
        let progress = HashMap::from([(j1, queued(10)), (j2, queued(10)), (j3, queued(4))]);
        let (released, _) = a.round(Utc::now(), LogPosition::START, &progress);
        assert_eq!(released.len(), 3);
        let from_j1 = released.iter().filter(|r| r.job_id == j1).count();
        assert!((1..=2).contains(&from_j1), "{released:?}");
    }

    #[test]
    fn a_type_rate_limit_admits_a_burst_then_waits_for_tokens() {
        let mut a = admission();
        let j = job(1);
        register(&mut a, j, "api", None, None);
        limit(&mut a, LimitKind::JobType, "api", None, Some(2.0));
        hold_n(&mut a, j, 10);
        let now = Utc::now();
        let progress = HashMap::from([(j, queued(10))]);
        let (released, wake) = a.round(now, LogPosition::START, &progress);
        assert_eq!(released.len(), 2);
        assert!(
            wake.is_some_and(|w| w <= Duration::from_millis(500)),
            "{wake:?}"
        );
        let later = now + chrono::Duration::milliseconds(500);
        assert_eq!(a.round(later, LogPosition::START, &progress).0.len(), 1);
    }

    #[test]
    fn the_window_keeps_each_job_to_a_few_unstarted_tasks_and_a_new_job_goes_next() {
        let mut a = Admission::new(true, Some(4), HeldTasks::default(), SharedLimits::default());
        let (big, small) = (job(1), job(2));
        register(&mut a, big, "t", None, None);
        hold_n(&mut a, big, 100);
        let mut progress = HashMap::from([(big, queued(100))]);
        assert_eq!(
            a.round(Utc::now(), LogPosition::START, &progress).0.len(),
            4
        );
        register(&mut a, small, "t", None, None);
        hold_n(&mut a, small, 3);
        progress.insert(small, queued(3));
        let (released, _) = a.round(Utc::now(), LogPosition::START, &progress);
        assert_eq!(released.len(), 3);
        assert!(released.iter().all(|r| r.job_id == small));
    }

    #[test]
    fn higher_priority_goes_first_under_a_shared_limit() {
        let mut a = admission();
        let (low, high) = (job(1), job(2));
        register(&mut a, low, "t", None, None);
        register(&mut a, high, "t", None, None);
        if let Some(j) = a.jobs.get_mut(&high) {
            j.priority = 5;
        }
        limit(&mut a, LimitKind::JobType, "t", Some(2), None);
        hold_n(&mut a, low, 5);
        hold_n(&mut a, high, 5);
        let progress = HashMap::from([(low, queued(5)), (high, queued(5))]);
        let (released, _) = a.round(Utc::now(), LogPosition::START, &progress);
        assert_eq!(released.len(), 2);
        assert!(released.iter().all(|r| r.job_id == high));
    }

    #[test]
    fn nothing_is_admitted_before_the_rebuilt_log_is_folded_and_replays_do_not_hold_twice() {
        let mut a = admission();
        let j = job(1);
        register(&mut a, j, "t", None, Some(5));
        hold_n(&mut a, j, 3);
        a.wait_for = LogPosition {
            commit: 10,
            position: 10,
        };
        let progress = HashMap::from([(j, queued(3))]);
        assert!(
            a.round(
                Utc::now(),
                LogPosition {
                    commit: 9,
                    position: 9
                },
                &progress
            )
            .0
            .is_empty()
        );
        hold_n(&mut a, j, 3);
        assert_eq!(a.held_count(), 3);
        assert_eq!(
            a.round(
                Utc::now(),
                LogPosition {
                    commit: 10,
                    position: 10
                },
                &progress
            )
            .0
            .len(),
            3
        );
        assert!(a.held_ids.lock().unwrap().is_empty());
    }
    #[test]
    fn events_follow_held_tasks_and_leave_the_others_alone() {
        let mut a = admission();
        let j = job(1);
        register(&mut a, j, "t", None, Some(1));
        hold_n(&mut a, j, 3);
        let started = |index| {
            Event::TaskStarted(shoal_domain::events::TaskStarted {
                job_id: j,
                task_id: TaskId::for_task(j, index),
                index,
                attempt: 1,
                worker: "w".into(),
                at: Utc::now(),
            })
        };
        // A task of the job that is not held (say, admitted before): nothing changes.
        a.observe_task(j, TaskId::for_task(j, 7), 2, &started(7));
        assert_eq!(a.held_count(), 3);
        assert!(!a.is_held(j, TaskId::for_task(j, 7)));
        // A held task that starts is no longer held, here and in the shared set.
        assert!(a.is_held(j, TaskId::for_task(j, 1)));
        a.observe_task(j, TaskId::for_task(j, 1), 2, &started(1));
        assert!(!a.is_held(j, TaskId::for_task(j, 1)));
        assert!(!a.held_ids.lock().unwrap().contains(&TaskId::for_task(j, 1)));
        assert_eq!(a.held_count(), 2);
        // Holding it again (a retry) holds it once.
        hold_n(&mut a, j, 2);
        assert_eq!(a.held_count(), 3);
        assert_eq!(a.held_ids.lock().unwrap().len(), 3);
    }
}
