//! Live workers: the `workers` table. Each worker process upserts its row every few seconds (its
//! heartbeat: slots, throughput, state); the query API lists the rows for the dashboard.
//!
//! This is presence, not history: the log keeps what workers did (each `TaskStarted` names its
//! worker), the table only who is there now, so it is overwritten in place and never folded
//! (see `docs/adr/0017-worker-heartbeats-in-a-table.md`). A heartbeat's time is the database's
//! clock, and so is the "now" a listing is read at, so that silence is judged on one clock
//! whatever the workers' own clocks say.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Pool, Postgres, Sqlite};

use crate::db::Database;
use crate::dialect::{ColumnError, Dialect, QueryExt, col, on_pool};

/// Where a worker stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerState {
    /// Taking and running tasks.
    Running,
    /// Told to stop (SIGTERM): takes no more tasks, finishes those it runs.
    Draining,
    /// Stopped cleanly.
    Stopped,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Running => "running",
            WorkerState::Draining => "draining",
            WorkerState::Stopped => "stopped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "running" => Some(WorkerState::Running),
            "draining" => Some(WorkerState::Draining),
            "stopped" => Some(WorkerState::Stopped),
            _ => None,
        }
    }
}

/// What a worker says about itself in a heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerReport {
    /// Its id, as recorded in `TaskStarted` (`<hostname>-<pid>` by default).
    pub worker_id: String,
    pub host: String,
    /// The queue it takes tasks from: `sql`, or `sqs:<queue name>`.
    pub queue: String,
    /// Its build's version.
    pub version: String,
    pub state: WorkerState,
    /// Tasks it may run at once.
    pub slots_total: u32,
    /// Tasks it runs now.
    pub slots_used: u32,
    /// Tasks it ended (completed or failed) per second since its previous heartbeat.
    pub tasks_per_second: f64,
    /// Tasks it completed since it started.
    pub tasks_completed: u64,
    /// Tasks that failed for good on it since it started.
    pub tasks_failed: u64,
    /// How often it reports: a worker is silent once it has missed a few.
    pub heartbeat_interval: Duration,
    /// When it started (its own clock).
    pub started_at: DateTime<Utc>,
}

/// A worker as last reported.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRecord {
    pub report: WorkerReport,
    /// When its latest heartbeat arrived (the database's clock).
    pub last_heartbeat: DateTime<Utc>,
    /// How long ago that was, when the listing was read (the database's clock again).
    pub since_heartbeat: Duration,
}

impl WorkerRecord {
    /// Silent: it is not stopped, yet it missed [`MISSED_HEARTBEATS`] heartbeats in a row (it
    /// crashed, was killed, or cannot reach the database).
    pub fn is_silent(&self) -> bool {
        self.report.state != WorkerState::Stopped
            && self.since_heartbeat > self.report.heartbeat_interval * MISSED_HEARTBEATS
    }
}

/// Heartbeats a worker may miss before it counts as silent.
pub const MISSED_HEARTBEATS: u32 = 3;

/// What went wrong, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum WorkerRegistryError {
    /// A stored value is not what this build writes. Do not retry.
    #[error("workers table is corrupt: {0}")]
    Corrupt(String),
    /// The database failed; nothing was written. Retry at the next heartbeat.
    #[error("workers table database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<ColumnError> for WorkerRegistryError {
    fn from(error: ColumnError) -> Self {
        match error {
            ColumnError::Database(e) => WorkerRegistryError::Database(e),
            ColumnError::Corrupt(what) => WorkerRegistryError::Corrupt(what),
        }
    }
}

pub type WorkerRegistryResult<T> = Result<T, WorkerRegistryError>;

/// Where workers report themselves and where they are listed.
#[async_trait::async_trait]
pub trait WorkerRegistry: Send + Sync + std::fmt::Debug {
    /// Records a heartbeat: the worker's row as `report` says, stamped with the registry's
    /// clock. A failure writes nothing; the next heartbeat tries again.
    async fn heartbeat(&self, report: &WorkerReport) -> WorkerRegistryResult<()>;

    /// Every worker that reported within `within` (silent and stopped ones included), by id.
    async fn list(&self, within: Duration) -> WorkerRegistryResult<Vec<WorkerRecord>>;

    /// Deletes the rows of workers whose latest heartbeat is older than `silent_for`; returns
    /// how many. Live workers call it now and then, so the table holds only recent workers.
    async fn forget(&self, silent_for: Duration) -> WorkerRegistryResult<u64>;
}

/// The registry on the Postgres or SQLite database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqlWorkerRegistry {
    database: Database,
}

impl SqlWorkerRegistry {
    pub fn new(database: Database) -> Self {
        SqlWorkerRegistry { database }
    }
}

#[async_trait::async_trait]
impl WorkerRegistry for SqlWorkerRegistry {
    #[tracing::instrument(name = "workers.heartbeat", skip_all, fields(worker_id = %report.worker_id), err(level = "debug"))]
    async fn heartbeat(&self, report: &WorkerReport) -> WorkerRegistryResult<()> {
        on_pool!(&self.database, pool => heartbeat(pool, report).await)
    }

    #[tracing::instrument(name = "workers.list", skip_all, err(level = "debug"))]
    async fn list(&self, within: Duration) -> WorkerRegistryResult<Vec<WorkerRecord>> {
        on_pool!(&self.database, pool => list(pool, within).await)
    }

    #[tracing::instrument(name = "workers.forget", skip_all, err(level = "debug"))]
    async fn forget(&self, silent_for: Duration) -> WorkerRegistryResult<u64> {
        on_pool!(&self.database, pool => forget(pool, silent_for).await)
    }
}

/// The two statements that read the database's clock, which each dialect spells its own way.
trait WorkersDialect: Dialect {
    const UPSERT: &'static str;
    const LIST: &'static str;
}

/// The upsert, with `$clock` as the heartbeat's time.
macro_rules! upsert {
    ($clock:literal) => {
        concat!(
            "
INSERT INTO workers (worker_id, host, queue, version, state, slots_total, slots_used,
    tasks_per_second, tasks_completed, tasks_failed, heartbeat_interval_ms, started_at,
    last_heartbeat)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, ",
            $clock,
            ")
ON CONFLICT (worker_id) DO UPDATE SET
    host = excluded.host, queue = excluded.queue, version = excluded.version,
    state = excluded.state, slots_total = excluded.slots_total,
    slots_used = excluded.slots_used, tasks_per_second = excluded.tasks_per_second,
    tasks_completed = excluded.tasks_completed, tasks_failed = excluded.tasks_failed,
    heartbeat_interval_ms = excluded.heartbeat_interval_ms, started_at = excluded.started_at,
    last_heartbeat = excluded.last_heartbeat"
        )
    };
}

/// Every row, with the clock's reading as the last column.
macro_rules! list {
    ($clock:literal) => {
        concat!(
            "
SELECT worker_id, host, queue, version, state, slots_total, slots_used, tasks_per_second,
    tasks_completed, tasks_failed, heartbeat_interval_ms, started_at, last_heartbeat, ",
            $clock,
            "
FROM workers
ORDER BY worker_id"
        )
    };
}

impl WorkersDialect for Postgres {
    const UPSERT: &'static str = upsert!("now()");
    const LIST: &'static str = list!("now()");
}

// SQLite's `%f` is `SS.SSS`: padded to the microseconds of the times this crate stores, so
// that every stored time has the same width and sorts as text.
impl WorkersDialect for Sqlite {
    const UPSERT: &'static str = upsert!("strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')");
    const LIST: &'static str = list!("strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')");
}

const FORGET: &str = "DELETE FROM workers WHERE last_heartbeat < $1";

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

async fn heartbeat<D: WorkersDialect>(
    pool: &Pool<D>,
    report: &WorkerReport,
) -> WorkerRegistryResult<()> {
    let tasks_per_second = if report.tasks_per_second.is_finite() {
        report.tasks_per_second.max(0.0)
    } else {
        0.0
    };
    // A transaction of its own: on SQLite, the writer's lock and connection.
    let mut tx = D::begin_write(pool).await?;
    sqlx::query::<D>(D::UPSERT)
        .arg(report.worker_id.as_str())
        .arg(report.host.as_str())
        .arg(report.queue.as_str())
        .arg(report.version.as_str())
        .arg(report.state.as_str())
        .arg(i64::from(report.slots_total))
        .arg(i64::from(report.slots_used))
        .arg(tasks_per_second)
        .arg(int(report.tasks_completed))
        .arg(int(report.tasks_failed))
        .arg(int(
            u64::try_from(report.heartbeat_interval.as_millis()).unwrap_or(u64::MAX)
        ))
        .time(Some(report.started_at))
        .run(D::conn(&mut tx))
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn list<D: WorkersDialect>(
    pool: &Pool<D>,
    within: Duration,
) -> WorkerRegistryResult<Vec<WorkerRecord>> {
    let rows = sqlx::query::<D>(D::LIST).all(D::pool(pool)).await?;
    let mut workers = Vec::with_capacity(rows.len());
    for row in &rows {
        let record = record::<D>(row)?;
        if record.since_heartbeat <= within {
            workers.push(record);
        }
    }
    Ok(workers)
}

async fn forget<D: WorkersDialect>(
    pool: &Pool<D>,
    silent_for: Duration,
) -> WorkerRegistryResult<u64> {
    let silent_for = chrono::Duration::from_std(silent_for).unwrap_or(chrono::Duration::MAX);
    let before = Utc::now()
        .checked_sub_signed(silent_for)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut tx = D::begin_write(pool).await?;
    let forgotten = sqlx::query::<D>(FORGET)
        .time(Some(before))
        .run(D::conn(&mut tx))
        .await?;
    tx.commit().await?;
    Ok(forgotten)
}

fn record<D: WorkersDialect>(row: &D::Row) -> WorkerRegistryResult<WorkerRecord> {
    let count = |index: usize, what: &str| -> WorkerRegistryResult<i64> {
        let value: i64 = col::<D, _>(row, index)?;
        if value < 0 {
            return Err(WorkerRegistryError::Corrupt(format!("{what} is {value}")));
        }
        Ok(value)
    };
    let slots = |index: usize, what: &str| -> WorkerRegistryResult<u32> {
        Ok(u32::try_from(count(index, what)?).unwrap_or(u32::MAX))
    };
    let time = |index: usize, what: &str| -> WorkerRegistryResult<DateTime<Utc>> {
        D::get_time(row, index)?
            .ok_or_else(|| WorkerRegistryError::Corrupt(format!("{what} is null")))
    };
    let state: String = col::<D, _>(row, 4)?;
    let state = WorkerState::parse(&state)
        .ok_or_else(|| WorkerRegistryError::Corrupt(format!("state {state:?}")))?;
    let last_heartbeat = time(12, "last_heartbeat")?;
    let now = time(13, "the clock")?;
    Ok(WorkerRecord {
        report: WorkerReport {
            worker_id: col::<D, _>(row, 0)?,
            host: col::<D, _>(row, 1)?,
            queue: col::<D, _>(row, 2)?,
            version: col::<D, _>(row, 3)?,
            state,
            slots_total: slots(5, "slots_total")?,
            slots_used: slots(6, "slots_used")?,
            tasks_per_second: col::<D, f64>(row, 7)?,
            tasks_completed: count(8, "tasks_completed")?.unsigned_abs(),
            tasks_failed: count(9, "tasks_failed")?.unsigned_abs(),
            heartbeat_interval: Duration::from_millis(
                count(10, "heartbeat_interval_ms")?.unsigned_abs(),
            ),
            started_at: time(11, "started_at")?,
        },
        last_heartbeat,
        since_heartbeat: (now - last_heartbeat).to_std().unwrap_or(Duration::ZERO),
    })
}
