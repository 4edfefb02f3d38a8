//! The GraphQL read side: [`QueryRoot`] (a job with its tasks and history, lists of jobs,
//! analytics) answered from the projector's read tables, and [`SubscriptionRoot`] (live jobs,
//! tasks and analytics) fed by the projector's commit notifications.
//!
//! The roots are plain `Default` objects that read what they need from the schema's context
//! data, so the `shoal` binary can combine them with command-api's mutations into one schema:
//!
//! - [`ReadContext`]: the read tables and the event log (a job's history is read from the
//!   log), and the workers' heartbeats (`workers`, on the read tables' database);
//! - [`TimelineCache`] (optional): the attempts of the last timelines read, so that one asked
//!   again while nothing happened to its job is not read from the log again;
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
mod waiting;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, ErrorExtensions, ID, Object};
use chrono::{DateTime, Utc};
use shoal_api::error::Chain;
use shoal_api::graphql::{JobStatus, Limit, limits_of};
use shoal_domain::{JobId, TaskId};
use shoal_infra::eventlog::{EventLog, LogPosition, RecordedEvent};
use shoal_infra::readmodel::{
    ChangeSource, JobCursor, JobFilter, JobSort, ProjectionChange, ReadModelStore, supported_time,
};
use shoal_infra::workers::{SqlWorkerRegistry, WorkerRegistry};
use tokio::sync::broadcast;

pub use as_of::TimelineCache;
pub use live::{SubscriptionRoot, SubscriptionSlots, TOO_MANY_SUBSCRIPTIONS};
pub use shoal_api::graphql::{BAD_USER_INPUT, INTERNAL, TaskStatus};
pub use timeline::{JobTimeline, TimelineBar, TimelineBucket, TimelineGroup};
pub use types::{
    Analytics, AnalyticsOverview, HistoryEvent, Job, JobSortOrder, JobsChange, ProcessingTime,
    Task, TaskUpdates,
};
pub use waiting::{WaitingKind, WaitingReason};
pub use workers::{WORKERS_SHOWN_FOR, Worker, WorkerStatus};

/// Default page size of `jobs`, `tasks` and `history`.
pub const DEFAULT_PAGE: i32 = 50;
/// Largest page of `jobs`, `tasks` and `history`.
pub const MAX_PAGE: i32 = 1000;

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
    /// read of the job's events (about three per task) through the log's index by job: see
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

    /// The cluster-wide concurrency and rate limits in force, by kind then name (set with
    /// `setLimit`; a job's own `maxConcurrency` is on the job).
    async fn limits(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Limit>> {
        let read = read(ctx)?;
        let table = waiting::limit_table(read.log.as_ref())
            .await
            .map_err(internal)?;
        Ok(limits_of(&table))
    }

    /// Jobs, newest first by default, a page at a time (`first`: default 50, at most 1000;
    /// `after`: the `endCursor` of the previous page). Filters combine with AND.
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "page_cost(first, child_complexity)")]
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
        let sort = JobSort::from(sort);
        if let Some(cursor) = &cursor
            && !cursor.fits(sort)
        {
            return Err(user_error(
                "after is a cursor of a list in another order".to_owned(),
                "after",
            ));
        }
        for (at, field) in [
            (created_after, "createdAfter"),
            (created_before, "createdBefore"),
        ] {
            if let Some(at) = at
                && !supported_time(at)
            {
                return Err(user_error(
                    format!("{field} must be between the years 1 and 9999, not {at}"),
                    field,
                ));
            }
        }
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
            .list_jobs(&filter, sort, cursor, i64::from(limit))
            .await
            .map_err(internal)?;
        let mut connection = Connection::new(cursor.is_some(), page.next.is_some());
        connection.edges.extend(
            page.jobs
                .into_iter()
                .map(|job| Edge::new(JobCursor::after_in(&job, sort).to_string(), Job(job, None))),
        );
        Ok(connection)
    }

    /// Counts and statistics over every job and task.
    async fn analytics(&self) -> Analytics {
        Analytics
    }

    /// The worker processes heard from in the last ten minutes, as each last reported itself
    /// in its heartbeat (every 5 s by default): running and draining ones first, then silent
    /// ones (missed three heartbeats), then stopped ones.
    async fn workers(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Worker>> {
        let read = read(ctx)?;
        let registry = SqlWorkerRegistry::new(read.store.database().clone());
        let mut workers: Vec<Worker> = registry
            .list(WORKERS_SHOWN_FOR)
            .await
            .map_err(internal)?
            .into_iter()
            .map(Worker)
            .collect();
        workers::sort(&mut workers);
        Ok(workers)
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

/// How many of a job's events one read of the log's index by job returns.
const HISTORY_EVENTS_PER_READ: i64 = 1000;

/// A page of a job's history: the job stream's and its tasks' events after `after` (before it,
/// newest first), in log order (reversed newest first), at most `first`.
///
/// Read through the log's index by job. Oldest first, a page costs what it reads up to the
/// page's last event (the filters may skip some on the way). Newest first, the index is read
/// forward up to the cursor, keeping only the `first + 1` latest: memory is bounded by the page,
/// the cost by the job's events before the cursor. Filtered by task, only that task's stream is
/// read.
pub(crate) async fn history_page(
    log: &dyn EventLog,
    job: JobId,
    tasks: u32,
    after: Option<LogPosition>,
    first: usize,
    filter: &HistoryFilter,
) -> Result<(Vec<RecordedEvent>, bool), shoal_infra::eventlog::LogError> {
    let keep = first.saturating_add(1);
    let newest_first = filter.newest_first;
    let wanted = |e: &RecordedEvent| {
        filter.until.is_none_or(|u| e.recorded_at <= u)
            && filter
                .event_types
                .as_ref()
                .is_none_or(|types| types.contains(&e.event_type))
    };
    let past_cursor = |e: &RecordedEvent| {
        after.is_none_or(|cursor| {
            if newest_first {
                e.log_position < cursor
            } else {
                e.log_position > cursor
            }
        })
    };
    let mut page: Vec<RecordedEvent> = Vec::new();
    if let Some(index) = filter.task_index {
        if index < tasks {
            let stream = TaskId::for_task(job, index).stream_id();
            page = log.read_stream(&stream, 0).await?;
            page.retain(|e| wanted(e) && past_cursor(e));
            if newest_first {
                page.reverse();
            }
            page.truncate(keep);
        }
    } else if !newest_first {
        let mut cursor = after.unwrap_or(LogPosition::START);
        loop {
            let events = log
                .read_job(job.as_uuid(), cursor, HISTORY_EVENTS_PER_READ)
                .await?;
            let read = events.len();
            if let Some(last) = events.last() {
                cursor = last.log_position;
            }
            page.extend(events.into_iter().filter(|e| wanted(e)));
            if page.len() >= keep
                || i64::try_from(read).unwrap_or(i64::MAX) < HISTORY_EVENTS_PER_READ
            {
                break;
            }
        }
        page.truncate(keep);
    } else {
        let mut cursor = LogPosition::START;
        loop {
            let events = log
                .read_job(job.as_uuid(), cursor, HISTORY_EVENTS_PER_READ)
                .await?;
            let read = events.len();
            if let Some(last) = events.last() {
                cursor = last.log_position;
            }
            page.extend(events.into_iter().filter(|e| wanted(e) && past_cursor(e)));
            page.sort_by_key(|e| std::cmp::Reverse(e.log_position));
            page.truncate(keep);
            let done = i64::try_from(read).unwrap_or(i64::MAX) < HISTORY_EVENTS_PER_READ
                || after.is_some_and(|c| cursor >= c);
            if done {
                break;
            }
        }
    }
    let more = page.len() > first;
    page.truncate(first);
    Ok((page, more))
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

/// The complexity of a page: what one element costs times the elements asked for, so that
/// `jobs(first: 1000) { ... history(first: 1000) { ... } }` costs about 1,000,000, not a few
/// points. An out-of-range `first` is priced as the nearest valid one (and refused when run).
pub fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let elements = first.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    usize::try_from(elements)
        .unwrap_or(1)
        .saturating_mul(child_complexity.max(1))
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
