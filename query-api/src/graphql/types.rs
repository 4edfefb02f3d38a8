//! The GraphQL types of the read side.

use std::sync::Arc;

use super::waiting::WaitingReason;
use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, ID, Json, Object, SimpleObject};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use shoal_api::graphql::{JobStatus, Limit, LimitKind, TaskStatus, limits_of};
use shoal_domain::{Attempt, Attempts};
use shoal_infra::eventlog::RecordedEvent;
use shoal_infra::readmodel::{JobRow, JobSort, TaskRow, to_micros};

use super::as_of::AsOf;
use super::timeline::{JobTimeline, TimelineGroup, TimelineRequest};
use super::{
    HistoryFilter, history_cursor, history_page, internal, page_cost, page_size,
    parse_history_cursor, read, user_error,
};

/// How `jobs` is ordered.
#[derive(Debug, Enum, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobSortOrder {
    /// Newest first (by creation time, then id).
    #[default]
    Newest,
    /// Oldest first.
    Oldest,
    /// Highest priority first, then newest first.
    Priority,
}

impl From<JobSortOrder> for JobSort {
    fn from(sort: JobSortOrder) -> Self {
        match sort {
            JobSortOrder::Newest => JobSort::Newest,
            JobSortOrder::Oldest => JobSort::Oldest,
            JobSortOrder::Priority => JobSort::Priority,
        }
    }
}

/// A job, from the read model (a few milliseconds behind the log), or as it stood at a past
/// instant, folded from the log (`job(id, asOf:)`: then the second field holds its tasks).
#[derive(Debug, Clone)]
pub struct Job(pub JobRow, pub Option<Arc<AsOf>>);

#[Object]
impl Job {
    /// The job's id (a UUID).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// Which handler runs its tasks.
    async fn job_type(&self) -> &str {
        &self.0.job_type
    }

    /// Its status (RUNNING once a task has started).
    async fn status(&self) -> JobStatus {
        self.0.status.into()
    }

    /// How many tasks it has.
    async fn total_tasks(&self) -> u32 {
        self.0.progress.total_tasks
    }

    /// How many of its tasks exist so far (they are created in chunks after submission).
    async fn tasks_created(&self) -> u32 {
        self.0.progress.created
    }

    /// Tasks COMPLETED.
    async fn completed_tasks(&self) -> u32 {
        self.0.progress.completed
    }

    /// Tasks FAILED (no attempt left).
    async fn failed_tasks(&self) -> u32 {
        self.0.progress.failed
    }

    /// Tasks RUNNING.
    async fn running_tasks(&self) -> u32 {
        self.0.progress.running
    }

    /// Tasks PENDING or ENQUEUED: waiting for their first attempt.
    async fn queued_tasks(&self) -> u32 {
        self.0.progress.queued
    }

    /// Tasks RETRYING: waiting for a later attempt.
    async fn retrying_tasks(&self) -> u32 {
        self.0.progress.retrying
    }

    /// Percentage of tasks that have ended (COMPLETED or FAILED), 0 to 100.
    async fn progress(&self) -> f64 {
        let p = &self.0.progress;
        if p.total_tasks == 0 {
            0.0
        } else {
            f64::from(p.completed + p.failed) * 100.0 / f64::from(p.total_tasks)
        }
    }

    /// The parameters every task receives (a JSON object).
    async fn parameters(&self) -> Json<&Value> {
        Json(&self.0.parameters)
    }

    /// Attempts each task gets before it is FAILED.
    async fn max_attempts(&self) -> u32 {
        self.0.max_attempts
    }

    /// How long one attempt may run, in seconds.
    async fn timeout_seconds(&self) -> u32 {
        self.0.timeout_seconds
    }

    /// When it was submitted.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// The time of the latest event of the job or of one of its tasks.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// When its first task started.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }

    /// When it COMPLETED, FAILED or was CANCELLED; null while it is live.
    async fn completed_at(&self) -> Option<DateTime<Utc>> {
        self.0.completed_at
    }

    /// Why it failed.
    async fn error_message(&self) -> Option<&str> {
        self.0.error_message.as_deref()
    }

    /// The reason given when it was cancelled.
    async fn cancel_reason(&self) -> Option<&str> {
        self.0.cancel_reason.as_deref()
    }

    /// Its priority: higher runs first (`setJobPriority` changes it).
    async fn priority(&self) -> i32 {
        self.0.priority
    }

    /// The instant this job is shown as of (`job(id, asOf:)`); null for the live job.
    async fn as_of(&self) -> Option<DateTime<Utc>> {
        self.1.as_ref().map(|a| a.at)
    }

    /// Its tasks in index order, a page at a time (`first`: default 50, at most 1000;
    /// `after`: the `endCursor` of the previous page), optionally only those in `status`.
    /// As of the job's `asOf` when it has one.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<Vec<TaskStatus>>,
    ) -> async_graphql::Result<Connection<String, Task>> {
        let read = read(ctx)?;
        let limit = page_size(first)?;
        let after_index = after
            .as_deref()
            .map(|c| {
                c.parse::<u32>()
                    .map_err(|_| user_error(format!("invalid cursor {c:?}"), "after"))
            })
            .transpose()?;
        let statuses: Vec<shoal_domain::TaskStatus> = status
            .unwrap_or_default()
            .into_iter()
            .map(Into::into)
            .collect();
        let mut tasks = match &self.1 {
            Some(as_of) => as_of
                .tasks
                .iter()
                .filter(|t| after_index.is_none_or(|after| t.task_index > after))
                .filter(|t| statuses.is_empty() || statuses.contains(&t.status))
                .take(limit as usize + 1)
                .cloned()
                .collect(),
            None => read
                .store
                .tasks_of_job(self.0.id, &statuses, after_index, i64::from(limit) + 1)
                .await
                .map_err(internal)?,
        };
        let more = tasks.len() > limit as usize;
        tasks.truncate(limit as usize);
        let at = self.1.as_ref().map(|a| a.at);
        let mut connection = Connection::new(after_index.is_some(), more);
        connection.edges.extend(
            tasks
                .into_iter()
                .map(|task| Edge::new(task.task_index.to_string(), Task(task, at))),
        );
        Ok(connection)
    }

    /// The job's attempts laid out in time: one bar per attempt (queued -> started ->
    /// ended), grouped by task or by worker, in the window `from`..`to` (default: the job's
    /// lifetime up to its end, its `asOf`, or now). When more than `maxBars` attempts (default
    /// 2000, at most 5000) fall in the window, the answer has `buckets` (`laneBuckets` blocks
    /// of lanes x `timeBuckets` slices of time, default 100 x 200, at most 500 each) instead of
    /// bars: ask again for a narrower window to see bars. `slowest` (default 10, at most 100)
    /// lists the attempts that ran longest. Reads the attempts table, which counts the
    /// buckets; as of a past instant (`asOf`) it folds the job's events from the log.
    #[allow(clippy::too_many_arguments)]
    async fn timeline(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] group_by: TimelineGroup,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        #[graphql(default = 2000)] max_bars: i32,
        #[graphql(default = 100)] lane_buckets: i32,
        #[graphql(default = 200)] time_buckets: i32,
        #[graphql(default = 10)] slowest: i32,
    ) -> async_graphql::Result<JobTimeline> {
        let read = read(ctx)?;
        let check = |value: i32, max: i32, field: &str| {
            if (1..=max).contains(&value) || (field == "slowest" && value == 0) {
                Ok(value as u32)
            } else {
                Err(user_error(
                    format!("{field} must be between 1 and {max}, not {value}"),
                    field,
                ))
            }
        };
        let max_bars = check(max_bars, 5000, "maxBars")?;
        let lane_buckets = check(lane_buckets, 500, "laneBuckets")?;
        let time_buckets = check(time_buckets, 500, "timeBuckets")?;
        let slowest = check(slowest, 100, "slowest")?;
        let until = self.1.as_ref().map(|a| a.at);
        let end = until
            .or(self.0.completed_at)
            .unwrap_or_else(Utc::now)
            .max(self.0.created_at);
        // To the microsecond, as the attempts' times are stored and laid out.
        let from = to_micros(from.unwrap_or(self.0.created_at));
        let to = to_micros(to.unwrap_or(end).min(end));
        if to < from {
            return Err(user_error("to must not be before from".into(), "to"));
        }
        let request = TimelineRequest {
            group_by,
            from,
            to,
            max_bars: max_bars as usize,
            lane_buckets,
            time_buckets,
            slowest: slowest as usize,
        };
        if self.1.is_none() {
            // The live job: from the attempts table, unless some of its tasks predate it.
            let cache = ctx.data_opt::<super::as_of::TimelineCache>();
            let key = (self.0.id, self.0.updated_at, request);
            if let Some(timeline) = cache.and_then(|c| c.answer(&key)) {
                return Ok(timeline);
            }
            let timeline = super::timeline::from_table(
                &read.store,
                self.0.id,
                self.0.progress.created,
                request,
            )
            .await
            .map_err(internal)?;
            if let Some(timeline) = timeline {
                if let Some(cache) = cache {
                    cache.keep_answer(key, timeline.clone());
                }
                return Ok(timeline);
            }
        }
        let attempts = super::as_of::TimelineCache::attempts(
            ctx.data_opt::<super::as_of::TimelineCache>(),
            read.log.as_ref(),
            self.0.id,
            self.0.updated_at,
            until,
        )
        .await
        .map_err(internal)?;
        Ok(super::timeline::layout(&attempts, request))
    }

    /// The job's own concurrency limit (`maxConcurrency` at submission), if any.
    async fn max_concurrency(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<u32>> {
        let read = read(ctx)?;
        let job = super::waiting::job_limits(read.log.as_ref(), self.0.id)
            .await
            .map_err(internal)?;
        Ok(job.max_concurrency)
    }

    /// The job's concurrency key (the value of the parameter `concurrencyKey` named at
    /// submission), if any.
    async fn concurrency_key(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        let read = read(ctx)?;
        let job = super::waiting::job_limits(read.log.as_ref(), self.0.id)
            .await
            .map_err(internal)?;
        Ok(job.concurrency_key)
    }

    /// The cluster-wide limits that apply to the job now: its job type's and its key's.
    async fn limits(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Limit>> {
        let read = read(ctx)?;
        let job = super::waiting::job_limits(read.log.as_ref(), self.0.id)
            .await
            .map_err(internal)?;
        let table = super::waiting::limit_table(read.log.as_ref())
            .await
            .map_err(internal)?;
        Ok(limits_of(&table)
            .into_iter()
            .filter(|limit| match limit.kind {
                LimitKind::JobType => limit.name == self.0.job_type,
                LimitKind::Key => job.concurrency_key.as_deref().is_some_and(|key| {
                    let own = table.iter().any(|(kind, name, _, _)| {
                        kind == shoal_domain::events::LimitKind::Key && name == key
                    });
                    limit.name == key || (!own && limit.name == shoal_domain::admission::EVERY_KEY)
                }),
            })
            .collect())
    }

    /// The job's AWS Step Functions execution, when the Step Functions driver runs it (null
    /// with the built-in driver): read from the job's stream, so always current.
    async fn execution(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<JobExecution>> {
        let read = read(ctx)?;
        let records = read
            .log
            .read_stream(&self.0.id.stream_id(), 0)
            .await
            .map_err(internal)?;
        Ok(JobExecution::from_stream(&records))
    }

    /// What happened to the job and its tasks, in log order: the events of the job's stream
    /// and of its tasks' streams, a page at a time (`first`: default 50, at most 1000; `after`:
    /// the `endCursor` of the previous page). Up to the job's `asOf` when it has one.
    /// `newestFirst`: latest first (`after` then pages back in time); `eventTypes`: only these
    /// types (`TaskFailed`, ...); `taskIndex`: only that task's events (read alone: cheap).
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        #[graphql(default)] newest_first: bool,
        event_types: Option<Vec<String>>,
        task_index: Option<u32>,
    ) -> async_graphql::Result<Connection<String, HistoryEvent>> {
        let read = read(ctx)?;
        let limit = page_size(first)?;
        let cursor = after.as_deref().map(parse_history_cursor).transpose()?;
        if event_types.as_ref().is_some_and(|t| t.len() > 50) {
            return Err(user_error(
                "eventTypes takes at most 50 types".into(),
                "eventTypes",
            ));
        }
        let filter = HistoryFilter {
            until: self.1.as_ref().map(|a| a.at),
            newest_first,
            event_types,
            task_index,
        };
        let (events, more) = history_page(
            read.log.as_ref(),
            self.0.id,
            self.0.created_upto.max(self.0.progress.created),
            cursor,
            limit as usize,
            &filter,
        )
        .await
        .map_err(internal)?;
        let mut connection = Connection::new(cursor.is_some(), more);
        connection.edges.extend(
            events.into_iter().map(|event| {
                Edge::new(history_cursor(event.log_position), HistoryEvent::new(event))
            }),
        );
        Ok(connection)
    }
}

/// A job's execution of the Step Functions state machine (the latest one: a retry of a FAILED
/// job's tasks starts another).
#[derive(Debug, Clone, PartialEq, SimpleObject)]
pub struct JobExecution {
    /// The execution's ARN.
    pub arn: String,
    /// Its page in the AWS console.
    pub console_url: Option<String>,
    /// The state machine's state the driver last saw (`CreateTasks`, `EnqueueTasks`,
    /// `Monitor`, `CompleteJob`, `FailJob`), null before the first step.
    pub current_state: Option<String>,
    /// What happened to that state last: `STARTED`, `RETRIED`, `SUCCEEDED` or `FAILED`.
    pub state_transition: Option<String>,
}

impl JobExecution {
    /// From the job stream's events: its latest `JobExecutionStarted` and the step events
    /// after it.
    pub fn from_stream(records: &[RecordedEvent]) -> Option<Self> {
        let mut execution: Option<JobExecution> = None;
        for record in records {
            let transition = match record.event_type.as_str() {
                "JobExecutionStarted" => {
                    let data = record.data_json();
                    let arn = data.get("execution_arn")?.as_str()?.to_owned();
                    execution = Some(JobExecution {
                        console_url: shoal_infra::stepfunctions::console_url(&arn),
                        arn,
                        current_state: None,
                        state_transition: None,
                    });
                    continue;
                }
                "JobStepStarted" => "STARTED",
                "JobStepRetried" => "RETRIED",
                "JobStepSucceeded" => "SUCCEEDED",
                "JobStepFailed" => "FAILED",
                _ => continue,
            };
            if let Some(execution) = &mut execution {
                let data = record.data_json();
                execution.current_state =
                    data.get("step").and_then(Value::as_str).map(str::to_owned);
                execution.state_transition = Some(transition.to_owned());
            }
        }
        execution
    }
}

/// A task, from the read model, or as it stood at the instant of the second field (then its
/// attempts and events stop there too).
#[derive(Debug, Clone)]
pub struct Task(pub TaskRow, pub Option<DateTime<Utc>>);

#[Object]
impl Task {
    /// The task's id (a UUID).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// Its job's id.
    async fn job_id(&self) -> ID {
        ID(self.0.job_id.to_string())
    }

    /// Its place in the job, from 0.
    async fn index(&self) -> u32 {
        self.0.task_index
    }

    /// Its job's type.
    async fn job_type(&self) -> &str {
        &self.0.job_type
    }

    async fn status(&self) -> TaskStatus {
        self.0.status.into()
    }

    /// The current attempt: running, or next to run (1 = first).
    async fn attempt(&self) -> u32 {
        self.0.attempt
    }

    /// Attempts per budget (a manual retry grants a fresh budget).
    async fn max_attempts(&self) -> u32 {
        self.0.max_attempts
    }

    async fn timeout_seconds(&self) -> u32 {
        self.0.timeout_seconds
    }

    /// The task's input.
    async fn parameters(&self) -> Json<&Value> {
        Json(&self.0.parameters)
    }

    /// What the handler returned, once COMPLETED.
    async fn result(&self) -> Option<Json<&Value>> {
        self.0.result.as_ref().map(Json)
    }

    /// The latest failure's error (cleared on completion).
    async fn error_message(&self) -> Option<&str> {
        self.0.error_message.as_deref()
    }

    /// The worker of the latest start.
    async fn worker(&self) -> Option<&str> {
        self.0.worker.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// The time of the task's latest event.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// When the latest attempt started.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }

    /// When it completed or failed for good.
    async fn completed_at(&self) -> Option<DateTime<Utc>> {
        self.0.completed_at
    }

    /// Earliest start of the next attempt, while RETRYING.
    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.0.next_attempt_at
    }

    /// How long the completing attempt ran, in seconds.
    async fn processing_time_seconds(&self) -> Option<f64> {
        self.0.processing_time_seconds()
    }

    /// Its latest final failure went to the dead-letter queue.
    async fn dead_lettered(&self) -> bool {
        self.0.dead_lettered
    }

    /// Why the task waits, while it is ENQUEUED or RETRYING without a message in the queue:
    /// a concurrency limit (of its job, job type or key) is full, a rate limit has no token
    /// for now, its turn has not come (fair share and priority on SQS), or a retry's backoff.
    /// Null when it is queued for a worker, running or ended. Read from the log.
    async fn waiting_reason(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<WaitingReason>> {
        if self.1.is_some() {
            return Ok(None);
        }
        let read = read(ctx)?;
        super::waiting::waiting_reason(
            read.log.as_ref(),
            self.0.job_id,
            self.0.id,
            self.0.status,
            self.0.attempt,
            self.0.next_attempt_at,
            Utc::now(),
        )
        .await
        .map_err(internal)
    }

    /// Every attempt so far, oldest first: who ran it, when, how it ended, why it failed and
    /// the retry that followed (folded from the task's own stream, so always current; up to
    /// the task's instant for a job shown `asOf`).
    async fn attempts(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<TaskAttempt>> {
        let events = self.own_events(ctx).await?;
        let decoded = super::as_of::decode(events);
        let Attempts(attempts) = Attempts::fold(decoded.iter().map(|(_, _, e)| e));
        Ok(attempts.into_iter().map(TaskAttempt).collect())
    }

    /// The task's own events, oldest first (`first`: default 50, at most 1000; `after`: the
    /// `endCursor` of the previous page).
    async fn events(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, HistoryEvent>> {
        let limit = page_size(first)? as usize;
        let after_version = after
            .as_deref()
            .map(|c| {
                c.parse::<i64>()
                    .map_err(|_| user_error(format!("invalid cursor {c:?}"), "after"))
            })
            .transpose()?;
        let mut events: Vec<RecordedEvent> = self
            .own_events(ctx)
            .await?
            .into_iter()
            .filter(|e| after_version.is_none_or(|v| e.stream_version > v))
            .take(limit + 1)
            .collect();
        let more = events.len() > limit;
        events.truncate(limit);
        let mut connection = Connection::new(after_version.is_some(), more);
        connection.edges.extend(
            events
                .into_iter()
                .map(|event| Edge::new(event.stream_version.to_string(), HistoryEvent::new(event))),
        );
        Ok(connection)
    }
}

impl Task {
    /// The task's stream, up to the task's instant when it has one.
    async fn own_events(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<RecordedEvent>> {
        let read = read(ctx)?;
        let stream = [self.0.id.stream_id()];
        let events = match self.1 {
            Some(at) => read.log.read_streams_until(&stream, at).await,
            None => read.log.read_streams(&stream).await,
        };
        events.map_err(internal)
    }
}

/// How an attempt stands or ended.
#[derive(Debug, Enum, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Not started yet (queued, or waiting for its backoff).
    Queued,
    /// Started, not ended.
    Running,
    /// Succeeded.
    Completed,
    /// Failed, and another attempt was scheduled.
    Retried,
    /// Failed for good.
    Failed,
}

impl From<shoal_domain::AttemptOutcome> for AttemptOutcome {
    fn from(outcome: shoal_domain::AttemptOutcome) -> Self {
        match outcome {
            shoal_domain::AttemptOutcome::Queued => AttemptOutcome::Queued,
            shoal_domain::AttemptOutcome::Running => AttemptOutcome::Running,
            shoal_domain::AttemptOutcome::Completed => AttemptOutcome::Completed,
            shoal_domain::AttemptOutcome::Retried => AttemptOutcome::Retried,
            shoal_domain::AttemptOutcome::Failed => AttemptOutcome::Failed,
        }
    }
}

/// One attempt of a task.
#[derive(Debug, Clone)]
pub struct TaskAttempt(pub Attempt);

#[Object]
impl TaskAttempt {
    /// Its number (1 = first).
    async fn attempt(&self) -> u32 {
        self.0.attempt
    }

    /// When it was queued: the task's creation for the first, the retry's scheduling after.
    async fn queued_at(&self) -> DateTime<Utc> {
        self.0.queued_at
    }

    /// Earliest start, when it follows a retry with a backoff.
    async fn not_before(&self) -> Option<DateTime<Utc>> {
        self.0.not_before
    }

    /// The worker that ran it.
    async fn worker(&self) -> Option<&str> {
        self.0.worker.as_deref()
    }

    /// When it started.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }

    /// When it ended.
    async fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.0.ended_at
    }

    /// How long it ran, in milliseconds (the handler's measure when it completed).
    async fn duration_ms(&self) -> Option<f64> {
        self.0.duration_ms.map(|ms| ms as f64)
    }

    /// How it stands or ended.
    async fn outcome(&self) -> AttemptOutcome {
        self.0.outcome.into()
    }

    /// Why it failed (also the reason of the retry that followed).
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }

    /// The backoff chosen before the next attempt, in milliseconds, when one followed.
    async fn retry_backoff_ms(&self) -> Option<f64> {
        self.0.retry.as_ref().map(|r| r.backoff_ms as f64)
    }

    /// Whether the next attempt was asked for by a user (a manual retry).
    async fn retry_manual(&self) -> Option<bool> {
        self.0.retry.as_ref().map(|r| r.manual)
    }

    /// Why its message went to the dead-letter queue, when it did.
    async fn dead_letter_reason(&self) -> Option<&str> {
        self.0.dead_letter_reason.as_deref()
    }
}

/// One event of a job's history.
#[derive(Debug, Clone)]
pub struct HistoryEvent {
    record: RecordedEvent,
    data: Value,
    actor: Option<String>,
}

impl HistoryEvent {
    pub fn new(record: RecordedEvent) -> Self {
        let data = record.data_json();
        let actor = serde_json::from_str::<Value>(record.metadata.get())
            .ok()
            .and_then(|metadata| metadata.get("actor")?.as_str().map(str::to_owned));
        HistoryEvent {
            record,
            data,
            actor,
        }
    }

    fn field(&self, name: &str) -> Option<&Value> {
        self.data.get(name).filter(|v| !v.is_null())
    }
}

#[Object]
impl HistoryEvent {
    /// What happened: the event's type (`JobSubmitted`, `TaskStarted`, `TaskFailed`, ...).
    async fn event_type(&self) -> &str {
        &self.record.event_type
    }

    /// When it happened (the event's own time; when it was stored if it has none).
    async fn at(&self) -> DateTime<Utc> {
        ["at", "submitted_at"]
            .iter()
            .filter_map(|f| self.field(f))
            .find_map(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or(self.record.recorded_at)
    }

    /// When it was stored in the log.
    async fn recorded_at(&self) -> DateTime<Utc> {
        self.record.recorded_at
    }

    /// The stream it belongs to (`job-<id>` or `task-<id>`).
    async fn stream_id(&self) -> &str {
        &self.record.stream_id
    }

    /// The task it is about; null for the job's own events.
    async fn task_id(&self) -> Option<ID> {
        self.field("task_id")
            .and_then(Value::as_str)
            .map(|s| ID(s.to_owned()))
    }

    /// The task's index in the job; null for the job's own events.
    async fn task_index(&self) -> Option<u32> {
        self.field("task_id")?;
        self.field("index")
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
    }

    /// The attempt it is about (task events).
    async fn attempt(&self) -> Option<u32> {
        self.field("attempt")
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
    }

    /// Who appended it: the API token's name for a command issued with a token,
    /// `orchestrator`, or `worker:<id>` for a Shoal worker; null for a command issued without
    /// a token (an API running without tokens, or the old system's workers on the internal
    /// listener).
    async fn actor(&self) -> Option<&str> {
        self.actor.as_deref()
    }

    /// The worker that started the attempt (`TaskStarted`).
    async fn worker(&self) -> Option<&str> {
        self.field("worker").and_then(Value::as_str)
    }

    /// The error or reason, when there is one.
    async fn error(&self) -> Option<&str> {
        ["error", "reason", "error_message"]
            .iter()
            .find_map(|f| self.field(f).and_then(Value::as_str))
    }

    /// The job's priority it set: `JobPriorityChanged`, and `JobSubmitted` with a priority
    /// other than the default 0.
    async fn priority(&self) -> Option<i32> {
        self.field("priority")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
    }

    /// The priority before a `JobPriorityChanged`.
    async fn previous_priority(&self) -> Option<i32> {
        self.field("previous")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
    }

    /// The Step Functions state it is about (`JobStep*` events of that driver).
    async fn step(&self) -> Option<&str> {
        self.field("step").and_then(Value::as_str)
    }

    /// What the step answered or failed with (`JobStep*` events).
    async fn detail(&self) -> Option<&str> {
        self.field("detail").and_then(Value::as_str)
    }

    /// The event's payload as stored.
    async fn data(&self) -> Json<&Value> {
        Json(&self.data)
    }
}

// ---------------------------------------------------------------------------------------------
// Analytics

/// Counts and statistics over every job and task.
#[derive(Debug, Default)]
pub struct Analytics;

/// The headline numbers.
#[derive(Debug, Clone, SimpleObject)]
pub struct AnalyticsOverview {
    pub total_jobs: i64,
    pub completed_jobs: i64,
    pub failed_jobs: i64,
    /// RUNNING.
    pub running_jobs: i64,
    /// PENDING, CREATING_TASKS or ENQUEUED.
    pub pending_jobs: i64,
    pub cancelled_jobs: i64,
    /// Completed jobs per 100 jobs.
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

impl From<shoal_infra::readmodel::Overview> for AnalyticsOverview {
    fn from(o: shoal_infra::readmodel::Overview) -> Self {
        AnalyticsOverview {
            total_jobs: o.total_jobs,
            completed_jobs: o.completed_jobs,
            failed_jobs: o.failed_jobs,
            running_jobs: o.running_jobs,
            pending_jobs: o.pending_jobs,
            cancelled_jobs: o.cancelled_jobs,
            success_rate: o.success_rate,
            total_tasks: o.total_tasks,
            completed_tasks: o.completed_tasks,
            failed_tasks: o.failed_tasks,
            running_tasks: o.running_tasks,
            pending_tasks: o.pending_tasks,
            retrying_tasks: o.retrying_tasks,
            avg_processing_time_seconds: o.avg_processing_time_seconds,
            total_processing_time_seconds: o.total_processing_time_seconds,
        }
    }
}

/// Jobs of one type.
#[derive(Debug, SimpleObject)]
pub struct JobTypeCount {
    pub job_type: String,
    pub count: i64,
}

/// Jobs in one status.
#[derive(Debug, SimpleObject)]
pub struct JobStatusCount {
    pub status: JobStatus,
    pub count: i64,
}

/// Tasks in one status.
#[derive(Debug, SimpleObject)]
pub struct TaskStatusCount {
    pub status: TaskStatus,
    pub count: i64,
}

/// One UTC day.
#[derive(Debug, SimpleObject)]
pub struct TimelineDay {
    pub date: NaiveDate,
    pub jobs_submitted: i64,
    pub tasks_completed: i64,
    pub tasks_failed: i64,
}

/// One minute.
#[derive(Debug, SimpleObject)]
pub struct ThroughputMinute {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    pub tasks_completed: i64,
    pub tasks_failed: i64,
}

/// Processing times of every completed task, in seconds (null without any). Min, max and avg
/// are exact; percentiles come from a histogram (within ~6%).
#[derive(Debug, SimpleObject)]
pub struct ProcessingTime {
    pub count: i64,
    pub total: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub avg: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

#[Object]
impl Analytics {
    /// The headline numbers.
    async fn overview(&self, ctx: &Context<'_>) -> async_graphql::Result<AnalyticsOverview> {
        Ok(read(ctx)?.store.overview().await.map_err(internal)?.into())
    }

    /// Jobs per type, most frequent first.
    async fn jobs_by_type(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<JobTypeCount>> {
        let counts = read(ctx)?.store.jobs_by_type().await.map_err(internal)?;
        Ok(counts
            .into_iter()
            .map(|(job_type, count)| JobTypeCount { job_type, count })
            .collect())
    }

    /// Jobs per status (statuses with jobs only).
    async fn jobs_by_status(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<JobStatusCount>> {
        let counts = read(ctx)?.store.jobs_by_status().await.map_err(internal)?;
        Ok(counts
            .into_iter()
            .map(|(status, count)| JobStatusCount {
                status: status.into(),
                count,
            })
            .collect())
    }

    /// Tasks per status (statuses with tasks only).
    async fn tasks_by_status(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<TaskStatusCount>> {
        let counts = read(ctx)?.store.tasks_by_status().await.map_err(internal)?;
        Ok(counts
            .into_iter()
            .map(|(status, count)| TaskStatusCount {
                status: status.into(),
                count,
            })
            .collect())
    }

    /// The last `days` UTC days (default 30, at most 366), oldest first, one entry per day.
    async fn timeline(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 30)] days: i32,
    ) -> async_graphql::Result<Vec<TimelineDay>> {
        if !(1..=366).contains(&days) {
            return Err(user_error(
                format!("days must be between 1 and 366, not {days}"),
                "days",
            ));
        }
        let days = read(ctx)?
            .store
            .timeline(days as u32, Utc::now())
            .await
            .map_err(internal)?;
        Ok(days
            .into_iter()
            .map(|d| TimelineDay {
                date: d.date,
                jobs_submitted: d.jobs_submitted,
                tasks_completed: d.tasks_completed,
                tasks_failed: d.tasks_failed,
            })
            .collect())
    }

    /// Processing-time statistics.
    async fn processing_time(&self, ctx: &Context<'_>) -> async_graphql::Result<ProcessingTime> {
        let s = read(ctx)?.store.processing_time().await.map_err(internal)?;
        Ok(ProcessingTime {
            count: s.count,
            total: s.total_seconds,
            min: s.min_seconds,
            max: s.max_seconds,
            avg: s.avg_seconds,
            p50: s.p50_seconds,
            p95: s.p95_seconds,
            p99: s.p99_seconds,
        })
    }

    /// Tasks ended per minute over the last `minutes` minutes (default 60, at most 1440),
    /// oldest first, one entry per minute.
    async fn throughput(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 60)] minutes: i32,
    ) -> async_graphql::Result<Vec<ThroughputMinute>> {
        if !(1..=1440).contains(&minutes) {
            return Err(user_error(
                format!("minutes must be between 1 and 1440, not {minutes}"),
                "minutes",
            ));
        }
        let minutes = read(ctx)?
            .store
            .throughput(minutes as u32, Utc::now())
            .await
            .map_err(internal)?;
        Ok(minutes
            .into_iter()
            .map(|m| ThroughputMinute {
                minute: m.minute,
                tasks_completed: m.tasks_completed,
                tasks_failed: m.tasks_failed,
            })
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Subscription payloads

/// Jobs that changed since the previous message.
#[derive(Debug, SimpleObject)]
pub struct JobsChange {
    /// The jobs whose row changed (at most 1000; see `everything`).
    pub job_ids: Vec<ID>,
    /// Everything may have changed (a rebuild, or this subscriber fell behind): re-read.
    pub everything: bool,
}

/// Tasks of a job that changed since the previous message, in their latest state.
#[derive(Debug, SimpleObject)]
pub struct TaskUpdates {
    pub job_id: ID,
    /// The changed tasks (at most 100 per message, see `truncated`).
    pub tasks: Vec<Task>,
    /// More tasks changed than `tasks` holds (or everything may have): re-read the job's
    /// tasks if all of them matter.
    pub truncated: bool,
}
