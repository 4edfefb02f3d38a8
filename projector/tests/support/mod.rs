//! Test support: realistic logs made by the domain's own `decide`, appended to a real log, and
//! the backends to run on.

// Test support: a setup failure here is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use shoal_domain::{
    Aggregate, Attempts, Event, JobAggregate, JobCommand, JobId, JobState, Limits, Split,
    SubmitJob, TaskAggregate, TaskCommand, TaskId, TaskState, TaskStatus, Views,
};
use shoal_infra::db::Database;
use shoal_infra::eventlog::{
    AppendBatch, EventLog, ExpectedVersion, LogPosition, NewEvent, RecordedEvent, StreamAppend,
};
use shoal_infra::readmodel::{
    AnalyticsChanges, AnalyticsJobState, AttemptRow, JobRow, JobsChanges, ReadModelDump,
    ReadModelStore, TaskRow, apply_to_attempts, to_micros,
};
use shoal_infra::testing;
use shoal_projector::{analytics, jobs};

/// One step of a simulated workload: `(what, which, how)`, interpreted by [`Sim::step`].
pub type Op = (u8, u8, u8);

struct SimJob {
    state: JobState,
    tasks: Vec<TaskState>,
}

/// A workload driven through the domain's `decide`, as command-api, the orchestrator and
/// workers would: every event it produces was accepted by the aggregates.
pub struct Sim {
    jobs: Vec<SimJob>,
    pub clock: DateTime<Utc>,
    max_jobs: usize,
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new(4)
    }
}

impl Sim {
    pub fn new(max_jobs: usize) -> Self {
        Sim {
            jobs: Vec::new(),
            // Just before midnight, so days and minutes change during a run.
            clock: Utc.with_ymd_and_hms(2026, 11, 27, 23, 50, 0).unwrap()
                + Duration::microseconds(123_457),
            max_jobs,
        }
    }

    /// The events of one step (one append), or nothing when the step does not apply.
    pub fn step(&mut self, (what, which, how): Op) -> Vec<Event> {
        self.clock += Duration::milliseconds(i64::from(how) * 7_919 + 1);
        let now = self.clock;
        if self.jobs.is_empty() || (what % 10 == 0 && self.jobs.len() < self.max_jobs) {
            return self.submit(how, now);
        }
        let j = usize::from(which) % self.jobs.len();
        match what % 10 {
            1 | 2 => self.job(
                j,
                JobCommand::CreateTasks {
                    max_chunk: u32::from(how % 3) + 1,
                    now,
                },
            ),
            3 | 4 => self.task(j, how, |t| TaskCommand::StartTask {
                attempt: t.attempt,
                worker: format!("w{}", how % 3),
                now,
            }),
            5 => self.task(j, how, |t| TaskCommand::CompleteTask {
                attempt: t.attempt,
                result: Some(json!({"n": how})),
                duration_ms: u64::from(how) * u64::from(how) * 13 + 1,
                now,
            }),
            6 => self.task(j, how, |t| TaskCommand::FailTask {
                attempt: t.attempt,
                error: format!("boom {how}"),
                retryable: how % 4 != 0,
                backoff_ms: u64::from(how) * 100,
                now,
            }),
            7 => self.retry_failed(j, now),
            8 => match how % 3 {
                0 => self.task(j, how, |_| TaskCommand::DeadLetterTask {
                    reason: "max receives".into(),
                    now,
                }),
                1 => self.job(
                    j,
                    JobCommand::CancelJob {
                        reason: Some("user".into()),
                        now,
                    },
                ),
                _ => self.finish(j, now),
            },
            9 if how % 2 == 0 => self.job(
                j,
                JobCommand::ChangePriority {
                    priority: i64::from(how) - 128,
                    now,
                },
            ),
            _ => self.finish(j, now),
        }
    }

    fn submit(&mut self, how: u8, now: DateTime<Utc>) -> Vec<Event> {
        let command = JobCommand::SubmitJob(SubmitJob {
            job_id: JobId::new(),
            job_type: ["cpu_bound", "io_bound", "Matrix_Multiply"][usize::from(how % 3)].into(),
            split: Split::Total {
                total_tasks: u32::from(how % 4) + 1,
            },
            parameters: json!({"work_duration_seconds": how}),
            max_attempts: Some(u32::from(how % 3) + 1),
            timeout_seconds: None,
            limits: Limits::default(),
            now,
            fallback_handler: None,
            priority: i64::from(how % 5) - 2,
        });
        let events = JobAggregate::decide(&JobState::default(), command).unwrap_or_default();
        self.jobs.push(SimJob {
            state: JobState::default(),
            tasks: Vec::new(),
        });
        let j = self.jobs.len() - 1;
        self.evolve(j, &events);
        events
    }

    fn job(&mut self, j: usize, command: JobCommand) -> Vec<Event> {
        let events = JobAggregate::decide(&self.jobs[j].state, command).unwrap_or_default();
        self.evolve(j, &events);
        events
    }

    fn task(
        &mut self,
        j: usize,
        how: u8,
        command: impl FnOnce(&TaskState) -> TaskCommand,
    ) -> Vec<Event> {
        let tasks = &self.jobs[j].tasks;
        if tasks.is_empty() {
            return Vec::new();
        }
        let t = usize::from(how) % tasks.len();
        let events = TaskAggregate::decide(&tasks[t], command(&tasks[t])).unwrap_or_default();
        self.evolve(j, &events);
        events
    }

    fn retry_failed(&mut self, j: usize, now: DateTime<Utc>) -> Vec<Event> {
        let failed: Vec<usize> = (0..self.jobs[j].tasks.len())
            .filter(|&t| self.jobs[j].tasks[t].status == TaskStatus::Failed)
            .collect();
        let Ok(mut events) = JobAggregate::decide(
            &self.jobs[j].state,
            JobCommand::RequestRetry {
                failed_tasks: u32::try_from(failed.len()).unwrap_or(u32::MAX),
                now,
            },
        ) else {
            return Vec::new();
        };
        for t in failed {
            events.extend(
                TaskAggregate::decide(&self.jobs[j].tasks[t], TaskCommand::RetryTask { now })
                    .unwrap_or_default(),
            );
        }
        self.evolve(j, &events);
        events
    }

    /// What the orchestrator does when every task has ended.
    fn finish(&mut self, j: usize, now: DateTime<Utc>) -> Vec<Event> {
        let job = &self.jobs[j];
        if !job.state.all_tasks_created() {
            return Vec::new();
        }
        let completed = job
            .tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Completed);
        let failed = job.tasks.iter().filter(|t| t.status == TaskStatus::Failed);
        let (completed, failed) = (completed.count(), failed.count());
        let command = if completed == job.tasks.len() {
            JobCommand::CompleteJob { now }
        } else if completed + failed == job.tasks.len() {
            JobCommand::FailJob {
                failed_tasks: u32::try_from(failed).unwrap_or(u32::MAX),
                now,
            }
        } else {
            return Vec::new();
        };
        self.job(j, command)
    }

    fn evolve(&mut self, j: usize, events: &[Event]) {
        let job = &mut self.jobs[j];
        for event in events {
            match event {
                Event::TaskEnqueued(_) => job.tasks.push(TaskAggregate::fold([event])),
                e => match e.task() {
                    Some((_, index)) => {
                        let task = &mut job.tasks[index as usize];
                        *task = TaskAggregate::evolve(std::mem::take(task), e);
                    }
                    None => {
                        job.state = JobAggregate::evolve(std::mem::take(&mut job.state), e);
                    }
                },
            }
        }
    }
}

/// Appends events as one atomic append, each stream at its current version.
pub async fn append(log: &dyn EventLog, versions: &mut HashMap<String, i64>, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    let mut streams: Vec<StreamAppend> = Vec::new();
    for event in events {
        let stream_id = event.stream_id();
        let new = NewEvent {
            event_type: event.event_type().into(),
            schema_version: event.schema_version(),
            data: event.to_json(),
            metadata: json!({}),
        };
        match streams.iter_mut().find(|s| s.stream_id == stream_id) {
            Some(stream) => stream.events.push(new),
            None => streams.push(StreamAppend {
                expected: ExpectedVersion::Exact(*versions.get(&stream_id).unwrap_or(&0)),
                stream_id,
                events: vec![new],
            }),
        }
    }
    for stream in &streams {
        *versions.entry(stream.stream_id.clone()).or_insert(0) += stream.events.len() as i64;
    }
    log.append(AppendBatch {
        streams,
        ..AppendBatch::default()
    })
    .await
    .expect("append");
}

/// Runs `ops` through a fresh simulation and appends the events; returns them in log order.
pub async fn write_log(log: &dyn EventLog, ops: &[Op]) -> Vec<Event> {
    let mut sim = Sim::default();
    let mut versions = HashMap::new();
    let mut all = Vec::new();
    for &op in ops {
        let events = sim.step(op);
        append(log, &mut versions, &events).await;
        all.extend(events);
    }
    all
}

/// A backend under test.
pub struct Backend {
    pub database: Database,
    pub log: Arc<dyn EventLog>,
}

impl Backend {
    pub async fn sqlite() -> Backend {
        let database = Database::Sqlite(testing::fresh_sqlite().await);
        Backend {
            log: database.event_log(),
            database,
        }
    }

    pub async fn postgres() -> Option<Backend> {
        let database = Database::Postgres(testing::fresh_postgres().await?);
        Some(Backend {
            log: database.event_log(),
            database,
        })
    }

    /// The same database through a pool of its own (another "process").
    pub async fn reopen(&self) -> Backend {
        let database = match &self.database {
            Database::Postgres(pool) => Database::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(4)
                    .connect_with((*pool.connect_options()).clone())
                    .await
                    .expect("reopen Postgres"),
            ),
            Database::Sqlite(pool) => Database::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with((*pool.connect_options()).clone())
                    .await
                    .expect("reopen SQLite"),
            ),
        };
        Backend {
            log: database.event_log(),
            database,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.database, Database::Postgres(_))
    }

    pub fn store(&self) -> ReadModelStore {
        ReadModelStore::new(self.database.clone())
    }

    /// Waits until everything appended so far is readable (Postgres readers stay below the
    /// oldest running transaction on the cluster).
    pub async fn settle(&self) {
        if let Database::Postgres(pool) = &self.database {
            testing::wait_until_readable(pool).await;
        }
    }

    /// Every event of the log, in read order.
    pub async fn read_everything(&self) -> Vec<RecordedEvent> {
        self.settle().await;
        let mut all = Vec::new();
        let mut after = LogPosition::START;
        loop {
            let batch = self.log.read_all(after, 1000).await.expect("read_all");
            let Some(last) = batch.last() else {
                return all;
            };
            after = last.log_position;
            all.extend(batch);
        }
    }
}

/// The tables a full replay of `events` must give, folded in memory in one go.
pub fn expected_dump(events: &[Event]) -> ReadModelDump {
    let JobsChanges {
        jobs,
        tasks,
        attempts,
        ..
    } = jobs::fold(Vec::new(), Vec::new(), Vec::new(), events);
    let AnalyticsChanges {
        job_states,
        jobs_by_type,
        jobs_by_status,
        tasks_by_status,
        daily,
        processing,
        buckets,
        throughput,
    } = analytics::fold(Vec::new(), events);
    let mut dump = ReadModelDump {
        jobs,
        tasks,
        job_states,
        jobs_by_type,
        jobs_by_status: jobs_by_status
            .into_iter()
            .map(|(s, n)| (s.as_str().to_owned(), n))
            .collect(),
        tasks_by_status: tasks_by_status
            .into_iter()
            .map(|(s, n)| (s.as_str().to_owned(), n))
            .collect(),
        daily: daily
            .into_iter()
            .map(|d| shoal_infra::readmodel::DayCounts {
                date: d.day,
                jobs_submitted: d.jobs_submitted,
                tasks_completed: d.tasks_completed,
                tasks_failed: d.tasks_failed,
            })
            .collect(),
        processing: processing.map(|p| (p.count, p.sum_ms, p.min_ms, p.max_ms)),
        buckets,
        throughput: throughput
            .into_iter()
            .map(|m| shoal_infra::readmodel::MinuteCounts {
                minute: m.minute,
                tasks_completed: m.tasks_completed,
                tasks_failed: m.tasks_failed,
            })
            .collect(),
        attempts,
    };
    canonical(&mut dump);
    dump
}

/// What the domain's own fold of `events` ([`Views::fold`]) says the tables hold: the jobs and
/// tasks rows field by field, and the analytics tables that count jobs and tasks (by type, by
/// status, and each job's state). The counters of time (days, minutes, processing times) are
/// not views and stay empty. Times are truncated to the microsecond, as the tables keep them.
pub fn domain_tables(events: &[Event]) -> ReadModelDump {
    let views = Views::fold(events);
    let mut dump = ReadModelDump::default();
    let count = |counts: &mut Vec<(String, i64)>, key: &str| match counts
        .iter_mut()
        .find(|(k, _)| k == key)
    {
        Some((_, n)) => *n += 1,
        None => counts.push((key.to_owned(), 1)),
    };
    for job in views.jobs.values() {
        dump.jobs.push(JobRow {
            id: job.job_id,
            job_type: job.job_type.clone(),
            status: job.status(),
            stream_status: job.stream_status,
            progress: job.progress,
            created_upto: job.created_upto,
            parameters: job.parameters.clone(),
            max_attempts: job.max_attempts,
            timeout_seconds: job.timeout_seconds,
            created_at: micros(job.created_at),
            updated_at: micros(job.updated_at),
            started_at: job.started_at.map(micros),
            completed_at: job.completed_at.map(micros),
            error_message: job.error_message.clone(),
            cancel_reason: job.cancel_reason.clone(),
            priority: job.priority,
        });
        dump.job_states.push(AnalyticsJobState {
            job_id: job.job_id,
            stream_status: job.stream_status,
            total_tasks: job.total_tasks(),
            created_upto: job.created_upto,
            started: job.progress.any_started(),
        });
        count(&mut dump.jobs_by_type, &job.job_type);
        count(&mut dump.jobs_by_status, job.status().as_str());
    }
    for task in views.tasks.values() {
        dump.tasks.push(TaskRow {
            id: task.task_id,
            job_id: task.job_id,
            task_index: task.index,
            job_type: task.job_type.clone(),
            status: task.status,
            attempt: task.attempt,
            max_attempts: task.max_attempts,
            timeout_seconds: task.timeout_seconds,
            parameters: task.parameters.clone(),
            result: task.result.clone(),
            error_message: task.error_message.clone(),
            worker: task.worker.clone(),
            created_at: micros(task.created_at),
            updated_at: micros(task.updated_at),
            started_at: task.started_at.map(micros),
            completed_at: task.completed_at.map(micros),
            next_attempt_at: task.next_attempt_at.map(micros),
            duration_ms: task.duration_ms,
            dead_lettered: task.dead_lettered,
        });
        count(&mut dump.tasks_by_status, task.status.as_str());
    }
    // Each task's attempts: its own stream folded by the domain (`Attempts`), as the timeline
    // folds them from the log, for the tasks that were enqueued.
    let mut attempts: BTreeMap<TaskId, (JobId, Option<u32>, Attempts)> = BTreeMap::new();
    for event in events {
        let (Some(job_id), Some(task_id)) = (event.job_id(), event.task_id()) else {
            continue;
        };
        let task = attempts
            .entry(task_id)
            .or_insert_with(|| (job_id, None, Attempts::default()));
        if let Event::TaskEnqueued(e) = event {
            task.1 = Some(e.index);
        }
        apply_to_attempts(&mut task.2, event);
    }
    for (task_id, (job_id, index, list)) in attempts {
        let Some(index) = index else { continue };
        for (seq, attempt) in list.0.into_iter().enumerate() {
            dump.attempts.push(AttemptRow {
                job_id,
                task_id,
                task_index: index,
                seq: seq as u32,
                attempt,
            });
        }
    }
    canonical(&mut dump);
    dump
}

/// Compares the tables of a dump that [`domain_tables`] fills, table by table.
pub fn assert_domain_tables_eq(got: &ReadModelDump, domain: &ReadModelDump) {
    assert_eq!(got.jobs.len(), domain.jobs.len(), "number of jobs");
    for (g, d) in got.jobs.iter().zip(&domain.jobs) {
        assert_eq!(g, d, "jobs row");
    }
    assert_eq!(got.tasks.len(), domain.tasks.len(), "number of tasks");
    for (g, d) in got.tasks.iter().zip(&domain.tasks) {
        assert_eq!(g, d, "tasks row");
    }
    assert_eq!(got.job_states, domain.job_states, "analytics_job_state");
    assert_eq!(
        got.jobs_by_type, domain.jobs_by_type,
        "analytics_jobs_by_type"
    );
    assert_eq!(
        got.jobs_by_status, domain.jobs_by_status,
        "analytics_jobs_by_status"
    );
    assert_eq!(
        got.tasks_by_status, domain.tasks_by_status,
        "analytics_tasks_by_status"
    );
    assert_eq!(
        got.attempts.len(),
        domain.attempts.len(),
        "number of attempts"
    );
    for (g, d) in got.attempts.iter().zip(&domain.attempts) {
        assert_eq!(g, d, "task_attempts row");
    }
}

/// Sorts a dump the way the database dumps are sorted (ids as text, statuses as text).
pub fn canonical(dump: &mut ReadModelDump) {
    dump.jobs.sort_by_key(|j| j.id.to_string());
    dump.tasks.sort_by_key(|t| t.id.to_string());
    dump.job_states.sort_by_key(|s| s.job_id.to_string());
    dump.jobs_by_type.sort();
    dump.jobs_by_status.sort();
    dump.tasks_by_status.sort();
    dump.attempts
        .sort_by_key(|a| (a.task_id.to_string(), a.seq));
}

/// The live tables, canonically sorted.
pub async fn dump(store: &ReadModelStore) -> ReadModelDump {
    let mut dump = store.dump().await.expect("dump");
    canonical(&mut dump);
    dump
}

/// Times in the expected dump are truncated like the stored ones.
pub fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    to_micros(at)
}

/// Compares two dumps table by table, so a failure names the table that differs.
pub fn assert_dumps_eq(got: &ReadModelDump, want: &ReadModelDump) {
    assert_eq!(got.jobs.len(), want.jobs.len(), "number of jobs");
    for (g, w) in got.jobs.iter().zip(&want.jobs) {
        assert_eq!(g, w, "jobs row");
    }
    assert_eq!(got.tasks.len(), want.tasks.len(), "number of tasks");
    for (g, w) in got.tasks.iter().zip(&want.tasks) {
        assert_eq!(g, w, "tasks row");
    }
    assert_eq!(got.job_states, want.job_states, "analytics_job_state");
    assert_eq!(
        got.jobs_by_type, want.jobs_by_type,
        "analytics_jobs_by_type"
    );
    assert_eq!(
        got.jobs_by_status, want.jobs_by_status,
        "analytics_jobs_by_status"
    );
    assert_eq!(
        got.tasks_by_status, want.tasks_by_status,
        "analytics_tasks_by_status"
    );
    assert_eq!(got.daily, want.daily, "analytics_daily");
    assert_eq!(got.processing, want.processing, "analytics_processing_time");
    assert_eq!(
        got.buckets, want.buckets,
        "analytics_processing_time_buckets"
    );
    assert_eq!(got.throughput, want.throughput, "analytics_throughput");
    assert_eq!(
        got.attempts.len(),
        want.attempts.len(),
        "number of attempts"
    );
    for (g, w) in got.attempts.iter().zip(&want.attempts) {
        assert_eq!(g, w, "task_attempts row");
    }
    assert_eq!(got, want);
}
