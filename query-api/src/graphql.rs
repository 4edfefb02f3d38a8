//! The GraphQL read side: [`QueryRoot`] (a job with its tasks and history, lists of jobs,
//! analytics) answered from the projector's read tables, and [`SubscriptionRoot`] (live jobs,
//! tasks and analytics) fed by the projector's commit notifications.
//!
//! The roots are plain `Default` objects that read what they need from the schema's context
//! data, so the `shoal` binary can combine them with command-api's mutations into one schema:
//!
//! - [`ReadContext`]: the read tables and the event log (a job's history is read from the
//!   log);
//! - [`LiveConfig`]: where change notifications come from ([`ChangeFeed`]) and how often a
//!   subscription may send (default at most 20 messages/s: one every 50 ms).
//!
//! Errors a client can cause carry `extensions.code` (`BAD_USER_INPUT` for a malformed id or
//! cursor, with `extensions.field`); infrastructure failures answer `INTERNAL` and are logged.
//!
//! Subscriptions are coalesced: a subscription sends at once when it has been quiet for the
//! interval, otherwise it collects the changes until the interval has passed since its last
//! message and then sends the latest state once. A subscriber that falls behind the projector's
//! notifications (`Lagged`) re-reads everything it shows.

mod as_of;
mod live;
mod timeline;
mod types;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, ErrorExtensions, ID, Object};
use chrono::{DateTime, Utc};
use shoal_api::error::Chain;
use shoal_api::graphql::JobStatus;
use shoal_domain::{JobId, TaskId};
use shoal_infra::eventlog::{EventLog, LogPosition, RecordedEvent};
use shoal_infra::readmodel::{
    ChangeSource, JobCursor, JobFilter, ProjectionChange, ReadModelStore,
};
use tokio::sync::broadcast;

pub use live::SubscriptionRoot;
pub use shoal_api::graphql::{BAD_USER_INPUT, INTERNAL, TaskStatus};
pub use timeline::{JobTimeline, TimelineBar, TimelineBucket, TimelineGroup};
pub use types::{
    Analytics, AnalyticsOverview, HistoryEvent, Job, JobSortOrder, JobsChange, ProcessingTime,
    Task, TaskUpdates,
};

/// Default page size of `jobs`, `tasks` and `history`.
pub const DEFAULT_PAGE: i32 = 50;
/// Largest page of `jobs`, `tasks` and `history`.
pub const MAX_PAGE: i32 = 1000;
/// Task streams read per round trip while assembling a page of history.
const HISTORY_STREAMS_PER_READ: usize = 1000;

/// What the query resolvers read: put it in the schema's context data.
#[derive(Debug, Clone)]
pub struct ReadContext {
    pub store: ReadModelStore,
    pub log: Arc<dyn EventLog>,
}

/// A source of projector change notifications: each call gives a receiver of every commit
/// from then on (`Projector::subscribe`).
#[derive(Clone)]
pub struct ChangeFeed(Arc<dyn Fn() -> broadcast::Receiver<Arc<ProjectionChange>> + Send + Sync>);

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeFeed")
    }
}

impl ChangeFeed {
    pub fn new(
        subscribe: impl Fn() -> broadcast::Receiver<Arc<ProjectionChange>> + Send + Sync + 'static,
    ) -> Self {
        ChangeFeed(Arc::new(subscribe))
    }

    /// The notifications of a projector (in this process; `shoal_projector::Projector` is a
    /// [`ChangeSource`]).
    pub fn from_projector(projector: &(impl ChangeSource + Clone + 'static)) -> Self {
        let projector = projector.clone();
        ChangeFeed::new(move || projector.subscribe())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ProjectionChange>> {
        (self.0)()
    }
}

/// How subscriptions are fed: put it in the schema's context data.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub feed: ChangeFeed,
    /// Least time between two messages of one subscription (100 ms: at most 10/s).
    pub min_interval: Duration,
}

impl LiveConfig {
    /// `max_per_second` messages per subscription at most (clamped to 1..=1000).
    pub fn new(feed: ChangeFeed, max_per_second: u32) -> Self {
        LiveConfig {
            feed,
            min_interval: Duration::from_secs(1) / max_per_second.clamp(1, 1000),
        }
    }
}

/// Default rate limit of a subscription, messages per second.
pub const DEFAULT_MAX_MESSAGES_PER_SECOND: u32 = 20;

// ---------------------------------------------------------------------------------------------
// Query root

/// The read queries.
#[derive(Debug, Default)]
pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// The job with this id, or null (also while the projector has not seen it yet, a few
    /// milliseconds after its submission).
    ///
    /// With `asOf`: the job, its counts, its tasks and its history as they stood at that
    /// instant (every event the log recorded at or before it), folded from the log rather
    /// than read from the read tables; null if it had not been submitted then. It costs a
    /// read of the job's events up to the instant (about three per task): see
    /// `docs/dashboard.md`.
    async fn job(
        &self,
        ctx: &Context<'_>,
        id: ID,
        as_of: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<Option<Job>> {
        let read = read(ctx)?;
        let id = parse_job_id(&id, "id")?;
        match as_of {
            None => Ok(read
                .store
                .get_job(id)
                .await
                .map_err(internal)?
                .map(|row| Job(row, None))),
            Some(at) => Ok(as_of::job_as_of(read.log.as_ref(), id, at)
                .await
                .map_err(internal)?
                .map(|(row, as_of)| Job(row, Some(as_of)))),
        }
    }

    /// The task with this id, or null. The id is the task's UUID, or the original system's
    /// `<job id>-task-<index>`, which names the same task.
    async fn task(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Task>> {
        let read = read(ctx)?;
        let id = parse_task_id(&id, "id")?;
        Ok(read
            .store
            .get_task(id)
            .await
            .map_err(internal)?
            .map(|row| Task(row, None)))
    }

    /// Jobs, newest first by default, a page at a time (`first`: default 50, at most 1000;
    /// `after`: the `endCursor` of the previous page). Filters combine with AND.
    #[allow(clippy::too_many_arguments)]
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<Vec<JobStatus>>,
        job_type: Option<String>,
        created_after: Option<DateTime<Utc>>,
        created_before: Option<DateTime<Utc>>,
        search: Option<String>,
        #[graphql(default)] sort: JobSortOrder,
    ) -> async_graphql::Result<Connection<String, Job>> {
        let read = read(ctx)?;
        let limit = page_size(first)?;
        let cursor = after
            .as_deref()
            .map(|c| c.parse::<JobCursor>())
            .transpose()
            .map_err(|e| user_error(e.to_string(), "after"))?;
        let filter = JobFilter {
            statuses: status
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            job_type,
            created_from: created_after,
            created_to: created_before,
            search,
        };
        let page = read
            .store
            .list_jobs(&filter, sort.into(), cursor, i64::from(limit))
            .await
            .map_err(internal)?;
        let mut connection = Connection::new(cursor.is_some(), page.next.is_some());
        connection.edges.extend(
            page.jobs
                .into_iter()
                .map(|job| Edge::new(JobCursor::after(&job).to_string(), Job(job, None))),
        );
        Ok(connection)
    }

    /// Counts and statistics over every job and task.
    async fn analytics(&self) -> Analytics {
        Analytics
    }
}

// ---------------------------------------------------------------------------------------------
// History

/// Which events of a job's history, in which order.
#[derive(Debug, Clone, Default)]
pub(crate) struct HistoryFilter {
    /// Only events recorded at or before it (a job shown `asOf`).
    pub until: Option<DateTime<Utc>>,
    /// Newest first: the page holds the events before the cursor, latest first.
    pub newest_first: bool,
    /// Only these event types (all when `None`).
    pub event_types: Option<Vec<String>>,
    /// Only the events of this task.
    pub task_index: Option<u32>,
}

/// A page of a job's history: the job stream's and its tasks' events after `after` (before it,
/// newest first), in log order (reversed newest first), at most `first`.
///
/// The log has no index by job, so the streams are read a chunk at a time
/// ([`HISTORY_STREAMS_PER_READ`]) and only the `first + 1` nearest events past the cursor are
/// kept: memory is bounded by the page, not by the job, but every page reads each stream once
/// (one task's stream only, when filtered by task).
pub(crate) async fn history_page(
    log: &dyn EventLog,
    job: JobId,
    tasks: u32,
    after: Option<LogPosition>,
    first: usize,
    filter: &HistoryFilter,
) -> Result<(Vec<RecordedEvent>, bool), shoal_infra::eventlog::LogError> {
    let keep = first + 1;
    let newest_first = filter.newest_first;
    // The page's order: ascending log order, or descending newest first.
    let before = |a: LogPosition, b: LogPosition| if newest_first { a > b } else { a < b };
    let past_cursor = |p: LogPosition| after.is_none_or(|cursor| before(cursor, p));
    let mut best: Vec<RecordedEvent> = Vec::new();
    let merge = |events: Vec<RecordedEvent>, best: &mut Vec<RecordedEvent>| {
        let bound = (best.len() >= keep).then(|| best[keep - 1].log_position);
        best.extend(
            events
                .into_iter()
                .filter(|e| past_cursor(e.log_position))
                .filter(|e| bound.is_none_or(|b| before(e.log_position, b)))
                .filter(|e| filter.until.is_none_or(|u| e.recorded_at <= u))
                .filter(|e| {
                    filter
                        .event_types
                        .as_ref()
                        .is_none_or(|types| types.contains(&e.event_type))
                }),
        );
        if newest_first {
            best.sort_by_key(|e| std::cmp::Reverse(e.log_position));
        } else {
            best.sort_by_key(|e| e.log_position);
        }
        best.truncate(keep);
    };
    if let Some(index) = filter.task_index {
        if index < tasks {
            let stream = TaskId::for_task(job, index).stream_id();
            merge(log.read_stream(&stream, 0).await?, &mut best);
        }
    } else {
        let job_events = log.read_stream(&job.stream_id(), 0).await?;
        merge(job_events, &mut best);
        let mut index = 0u32;
        while index < tasks {
            let end = tasks.min(index.saturating_add(HISTORY_STREAMS_PER_READ as u32));
            let ids: Vec<String> = (index..end)
                .map(|i| TaskId::for_task(job, i).stream_id())
                .collect();
            merge(log.read_streams(&ids).await?, &mut best);
            index = end;
        }
    }
    let more = best.len() > first;
    best.truncate(first);
    Ok((best, more))
}

/// A history cursor: `<commit>.<position>` of the last event of the previous page.
pub(crate) fn history_cursor(at: LogPosition) -> String {
    format!("{}.{}", at.commit, at.position)
}

pub(crate) fn parse_history_cursor(text: &str) -> async_graphql::Result<LogPosition> {
    let invalid = || user_error(format!("invalid cursor {text:?}"), "after");
    let (commit, position) = text.split_once('.').ok_or_else(invalid)?;
    Ok(LogPosition {
        commit: commit.parse().map_err(|_| invalid())?,
        position: position.parse().map_err(|_| invalid())?,
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers and errors

pub(crate) fn read<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a ReadContext> {
    ctx.data::<ReadContext>().map_err(|_| {
        tracing::error!("the GraphQL schema has no ReadContext in its context data");
        internal_error()
    })
}

pub(crate) fn page_size(first: Option<i32>) -> async_graphql::Result<i32> {
    match first {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(user_error(
            format!("first must be between 1 and {MAX_PAGE}, not {n}"),
            "first",
        )),
    }
}

pub(crate) fn parse_job_id(id: &ID, field: &str) -> async_graphql::Result<JobId> {
    JobId::parse(id.as_str()).map_err(|_| {
        user_error(
            format!("{:?} is not a valid job id (a UUID)", id.as_str()),
            field,
        )
    })
}

pub(crate) fn parse_task_id(id: &ID, field: &str) -> async_graphql::Result<TaskId> {
    TaskId::parse_any_form(id.as_str()).map_err(|_| {
        user_error(
            format!(
                "{:?} is not a valid task id (a UUID, or <job id>-task-<index>)",
                id.as_str()
            ),
            field,
        )
    })
}

pub(crate) fn user_error(message: String, field: &str) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| {
        e.set("code", BAD_USER_INPUT);
        e.set("field", field);
    })
}

pub(crate) fn internal_error() -> async_graphql::Error {
    async_graphql::Error::new("internal error").extend_with(|_, e| e.set("code", INTERNAL))
}

/// Logs an infrastructure failure (the read model's or the log's) once, here, with its
/// causes, and hides it from the client.
pub(crate) fn internal(error: impl std::error::Error + 'static) -> async_graphql::Error {
    tracing::error!(error = %Chain(&error), "read query failed on infrastructure");
    internal_error()
}
