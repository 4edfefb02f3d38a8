//! The built-in orchestrator's storage: per-job task counts saved together with its log
//! checkpoint, and the leader lock that lets one orchestrator process drive jobs at a time.
//!
//! The counts are the orchestrator's private memory, folded from the log up to its checkpoint
//! (table `orchestrator_jobs`). [`OrchestratorStore::save_batch`] writes the rows a batch
//! changed and moves the checkpoint atomically (one statement on Postgres), and only if the
//! checkpoint is still where this orchestrator left it: two orchestrators that both believe
//! they lead cannot interleave their saves into counts that match neither of them
//! ([`StoreError::Fenced`]).
//!
//! Leadership ([`LeaderLock`]): on Postgres a session advisory lock held on a dedicated
//! connection, outside the pool; it is released when that connection closes, whichever way
//! (see `docs/adr/0005-orchestrator-leadership.md`). On SQLite the orchestrator runs in the
//! one process that owns the file, and the lock is an in-process flag per database file.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use shoal_domain::{JobId, JobProgress};
use sqlx::postgres::{PgConnectOptions, PgPool, Postgres};
use sqlx::sqlite::{Sqlite, SqlitePool};
use sqlx::{Connection, PgConnection, Pool};
use uuid::Uuid;

use crate::db::Database;
use crate::dialect::{ColumnError, Dialect, QueryExt, col, on_pool};
use crate::eventlog::LogPosition;

/// Where a job is in the orchestrator's eyes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrackedStatus {
    /// Not ended: its tasks are relayed and monitored.
    #[default]
    Active,
    /// `JobCompleted` is in the log.
    Completed,
    /// `JobFailed` is in the log (a `JobRetryRequested` makes it active again).
    Failed,
    /// `JobCancelled` is in the log. For good.
    Cancelled,
}

impl TrackedStatus {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "ACTIVE" => Ok(Self::Active),
            "COMPLETED" => Ok(Self::Completed),
            "FAILED" => Ok(Self::Failed),
            "CANCELLED" => Ok(Self::Cancelled),
            other => Err(StoreError::Corrupt(format!("unknown status {other:?}"))),
        }
    }
}

/// One row of `orchestrator_jobs`: a job's counts as of the orchestrator's checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrackedJob {
    pub job_id: Uuid,
    /// Task counts by status (and `total_tasks`), folded from task events.
    pub progress: JobProgress,
    /// Tasks `0..created_upto` exist (from `TasksCreated`): where expansion resumes.
    pub created_upto: u32,
    pub status: TrackedStatus,
    /// The version of the last event of the job's stream folded into this row.
    pub job_version: i64,
}

impl TrackedJob {
    /// A job seen for the first time.
    pub fn new(job_id: JobId) -> Self {
        TrackedJob {
            job_id: job_id.as_uuid(),
            ..TrackedJob::default()
        }
    }
}

/// What went wrong, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The checkpoint is no longer where this orchestrator saved it last: another orchestrator
    /// has been saving too (two leaders for a moment). Nothing was written. Reload the state
    /// (checkpoint and rows) and carry on from there; not an error of the data.
    #[error("the orchestrator checkpoint {name:?} was moved by another orchestrator")]
    Fenced { name: String },
    /// A stored value is not what this build writes (a newer or damaged schema). Do not retry.
    #[error("orchestrator state is corrupt: {0}")]
    Corrupt(String),
    /// The database failed; nothing or everything of the statement was written. Retry.
    #[error("orchestrator store database error: {0}")]
    Database(#[from] sqlx::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The columns of a row, in the order the loaders read them.
macro_rules! columns {
    () => {
        "job_id, total_tasks, created_upto, created, queued, running, completed, failed, \
         retrying, status, job_version"
    };
}

const LOAD_CHECKPOINT: &str = "SELECT commit_id, position FROM checkpoints WHERE name = $1";

const LOAD_ACTIVE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM orchestrator_jobs WHERE status = 'ACTIVE' ORDER BY job_id"
);

/// What the orchestrator store does differently on each backend: the load by a list of ids,
/// and the batch save (one statement on Postgres; a transaction of two on SQLite, which has
/// no data-modifying CTEs).
trait StoreDialect: Dialect {
    /// The rows of the job ids `$1` (see `Dialect::bind_ids`).
    const LOAD_JOBS: &'static str;

    /// Writes the rows and moves the checkpoint, atomically; false when the checkpoint was
    /// not at `from` (nothing written).
    fn save_batch(
        pool: &Pool<Self>,
        name: &str,
        from: LogPosition,
        to: LogPosition,
        jobs: &[TrackedJob],
    ) -> impl Future<Output = StoreResult<bool>> + Send;
}

const PG_SAVE_BATCH: &str = "
WITH cp AS (
    INSERT INTO checkpoints (name, commit_id, position) VALUES ($1, $2, $3)
    ON CONFLICT (name) DO UPDATE
    SET commit_id = EXCLUDED.commit_id, position = EXCLUDED.position, updated_at = now()
    WHERE checkpoints.commit_id = $4 AND checkpoints.position = $5
    RETURNING 1 AS moved
), jobs AS (
    INSERT INTO orchestrator_jobs (job_id, total_tasks, created_upto, created, queued, running,
                                   completed, failed, retrying, status, job_version)
    SELECT u.*
    FROM UNNEST($6::uuid[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[],
                $12::int8[], $13::int8[], $14::int8[], $15::text[], $16::int8[]) AS u
    WHERE EXISTS (SELECT 1 FROM cp)
    ON CONFLICT (job_id) DO UPDATE
    SET total_tasks = EXCLUDED.total_tasks, created_upto = EXCLUDED.created_upto,
        created = EXCLUDED.created, queued = EXCLUDED.queued, running = EXCLUDED.running,
        completed = EXCLUDED.completed, failed = EXCLUDED.failed,
        retrying = EXCLUDED.retrying, status = EXCLUDED.status,
        job_version = EXCLUDED.job_version, updated_at = now()
)
SELECT count(*) FROM cp";

impl StoreDialect for Postgres {
    const LOAD_JOBS: &'static str = concat!(
        "SELECT ",
        columns!(),
        " FROM orchestrator_jobs WHERE job_id = ANY($1)"
    );

    async fn save_batch(
        pool: &PgPool,
        name: &str,
        from: LogPosition,
        to: LogPosition,
        jobs: &[TrackedJob],
    ) -> StoreResult<bool> {
        let col = |f: fn(&TrackedJob) -> i64| jobs.iter().map(f).collect::<Vec<i64>>();
        let moved: i64 = sqlx::query_scalar(PG_SAVE_BATCH)
            .bind(name)
            .bind(to.commit)
            .bind(to.position)
            .bind(from.commit)
            .bind(from.position)
            .bind(jobs.iter().map(|j| j.job_id).collect::<Vec<Uuid>>())
            .bind(col(|j| j.progress.total_tasks.into()))
            .bind(col(|j| j.created_upto.into()))
            .bind(col(|j| j.progress.created.into()))
            .bind(col(|j| j.progress.queued.into()))
            .bind(col(|j| j.progress.running.into()))
            .bind(col(|j| j.progress.completed.into()))
            .bind(col(|j| j.progress.failed.into()))
            .bind(col(|j| j.progress.retrying.into()))
            .bind(
                jobs.iter()
                    .map(|j| j.status.as_str())
                    .collect::<Vec<&str>>(),
            )
            .bind(col(|j| j.job_version))
            .fetch_one(pool)
            .await?;
        Ok(moved > 0)
    }
}

const SQLITE_MOVE_CHECKPOINT: &str = "
INSERT INTO checkpoints (name, commit_id, position) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE
SET commit_id = excluded.commit_id, position = excluded.position,
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE checkpoints.commit_id = $4 AND checkpoints.position = $5";

/// `$1` is a JSON array of rows in the order of `columns!()`. (`WHERE true` keeps `ON CONFLICT`
/// from parsing as a join constraint.)
const SQLITE_UPSERT_JOBS: &str = "
INSERT INTO orchestrator_jobs (job_id, total_tasks, created_upto, created, queued, running,
                               completed, failed, retrying, status, job_version)
SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'),
       json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'),
       json_extract(j.value, '$[4]'), json_extract(j.value, '$[5]'),
       json_extract(j.value, '$[6]'), json_extract(j.value, '$[7]'),
       json_extract(j.value, '$[8]'), json_extract(j.value, '$[9]'),
       json_extract(j.value, '$[10]')
FROM json_each($1) AS j
WHERE true
ON CONFLICT (job_id) DO UPDATE
SET total_tasks = excluded.total_tasks, created_upto = excluded.created_upto,
    created = excluded.created, queued = excluded.queued, running = excluded.running,
    completed = excluded.completed, failed = excluded.failed, retrying = excluded.retrying,
    status = excluded.status, job_version = excluded.job_version,
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

impl StoreDialect for Sqlite {
    const LOAD_JOBS: &'static str = concat!(
        "SELECT ",
        columns!(),
        " FROM orchestrator_jobs WHERE job_id IN (SELECT value FROM json_each($1))"
    );

    async fn save_batch(
        pool: &SqlitePool,
        name: &str,
        from: LogPosition,
        to: LogPosition,
        jobs: &[TrackedJob],
    ) -> StoreResult<bool> {
        let mut tx = <Sqlite as crate::dialect::Dialect>::begin_write(pool).await?;
        let moved = sqlx::query(SQLITE_MOVE_CHECKPOINT)
            .bind(name)
            .bind(to.commit)
            .bind(to.position)
            .bind(from.commit)
            .bind(from.position)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        if !jobs.is_empty() {
            let rows: Vec<serde_json::Value> = jobs
                .iter()
                .map(|j| {
                    serde_json::json!([
                        j.job_id.to_string(),
                        j.progress.total_tasks,
                        j.created_upto,
                        j.progress.created,
                        j.progress.queued,
                        j.progress.running,
                        j.progress.completed,
                        j.progress.failed,
                        j.progress.retrying,
                        j.status.as_str(),
                        j.job_version,
                    ])
                })
                .collect();
            sqlx::query(SQLITE_UPSERT_JOBS)
                .bind(serde_json::Value::Array(rows).to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// The orchestrator's tables on the Postgres or SQLite database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OrchestratorStore {
    database: Database,
}

impl OrchestratorStore {
    pub fn new(database: Database) -> Self {
        OrchestratorStore { database }
    }

    /// The checkpoint `name` (`START` when it was never saved).
    #[tracing::instrument(
        name = "orchestrator_store.load_checkpoint",
        skip_all,
        err(level = "debug")
    )]
    pub async fn load_checkpoint(&self, name: &str) -> StoreResult<LogPosition> {
        on_pool!(&self.database, pool => load_checkpoint(pool, name).await)
    }

    /// Every job that has not ended (status ACTIVE).
    #[tracing::instrument(
        name = "orchestrator_store.load_active",
        skip_all,
        err(level = "debug")
    )]
    pub async fn load_active(&self) -> StoreResult<Vec<TrackedJob>> {
        on_pool!(&self.database, pool => load(pool, LOAD_ACTIVE, None).await)
    }

    /// The rows of these jobs that exist, in any order.
    #[tracing::instrument(
        name = "orchestrator_store.load_jobs",
        skip_all,
        fields(jobs = job_ids.len()),
        err(level = "debug")
    )]
    pub async fn load_jobs(&self, job_ids: &[Uuid]) -> StoreResult<Vec<TrackedJob>> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        on_pool!(&self.database, pool => load_jobs(pool, job_ids).await)
    }

    /// Writes `jobs` (whole rows, upserted) and moves checkpoint `name` from `from` to `to`,
    /// atomically. `Err(Fenced)` when the checkpoint is not at `from` any more (nothing is
    /// written then).
    #[tracing::instrument(
        name = "orchestrator_store.save_batch",
        skip_all,
        fields(jobs = jobs.len(), to.commit = to.commit, to.position = to.position),
        err(level = "debug")
    )]
    pub async fn save_batch(
        &self,
        name: &str,
        from: LogPosition,
        to: LogPosition,
        jobs: &[TrackedJob],
    ) -> StoreResult<()> {
        let moved = on_pool!(&self.database, pool => StoreDialect::save_batch(pool, name, from, to, jobs).await)?;
        if moved {
            Ok(())
        } else {
            Err(StoreError::Fenced { name: name.into() })
        }
    }
}

async fn load_checkpoint<D: Dialect>(pool: &Pool<D>, name: &str) -> StoreResult<LogPosition> {
    let row = sqlx::query::<D>(LOAD_CHECKPOINT)
        .arg(name)
        .optional(D::pool(pool))
        .await?;
    Ok(match row {
        Some(row) => LogPosition {
            commit: col::<D, _>(&row, 0)?,
            position: col::<D, _>(&row, 1)?,
        },
        None => LogPosition::START,
    })
}

async fn load_jobs<D: StoreDialect>(
    pool: &Pool<D>,
    job_ids: &[Uuid],
) -> StoreResult<Vec<TrackedJob>> {
    load(pool, D::LOAD_JOBS, Some(job_ids.to_vec())).await
}

/// Rows of `sql` (columns in `columns!()` order), bound to `ids` when given.
async fn load<D: Dialect>(
    pool: &Pool<D>,
    sql: &'static str,
    ids: Option<Vec<Uuid>>,
) -> StoreResult<Vec<TrackedJob>> {
    let mut query = sqlx::query::<D>(sql);
    if let Some(ids) = ids {
        query = query.ids(ids);
    }
    let rows = query.all(D::pool(pool)).await?;
    rows.iter()
        .map(|row| {
            let mut n = [0i64; 8];
            for (i, slot) in n.iter_mut().enumerate() {
                *slot = col::<D, _>(row, i + 1)?;
            }
            let status: String = col::<D, _>(row, 9)?;
            tracked(D::get_id(row, 0)?, n, &status, col::<D, _>(row, 10)?)
        })
        .collect()
}

impl From<ColumnError> for StoreError {
    fn from(error: ColumnError) -> Self {
        match error {
            ColumnError::Database(e) => StoreError::Database(e),
            ColumnError::Corrupt(what) => StoreError::Corrupt(what),
        }
    }
}

fn count(value: i64, column: &str) -> StoreResult<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} = {value}")))
}

/// Builds a row from the columns in `columns!()` order, with the job id already parsed.
fn tracked(job_id: Uuid, n: [i64; 8], status: &str, job_version: i64) -> StoreResult<TrackedJob> {
    Ok(TrackedJob {
        job_id,
        progress: JobProgress {
            total_tasks: count(n[0], "total_tasks")?,
            created: count(n[2], "created")?,
            queued: count(n[3], "queued")?,
            running: count(n[4], "running")?,
            completed: count(n[5], "completed")?,
            failed: count(n[6], "failed")?,
            retrying: count(n[7], "retrying")?,
        },
        created_upto: count(n[1], "created_upto")?,
        status: TrackedStatus::parse(status)?,
        job_version,
    })
}

// ---------------------------------------------------------------------------------------------
// Leadership

/// The advisory lock key of the orchestrator ("SHOALORC"). Advisory locks are per database, so
/// orchestrators of different Shoal databases on one server do not contend.
pub const ORCHESTRATOR_LOCK_KEY: i64 = 0x5348_4F41_4C4F_5243;

/// How long a liveness check of the lock's connection may take before it counts as lost.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Leadership among orchestrator processes. At most one holder per database at a time, as
/// long as the holder keeps checking ([`LeaderLock::check`]) and stops leading when it fails.
///
/// Postgres: `pg_try_advisory_lock` on a dedicated connection that is never returned to a
/// pool. The server releases the lock when that connection ends (process crash, network
/// loss, `pg_terminate_backend`), which is what lets a standby take over; the holder notices
/// at its next check. SQLite: an in-process flag per database file (the database has one
/// process).
#[derive(Debug)]
pub struct LeaderLock {
    inner: Inner,
    key: i64,
}

#[derive(Debug)]
enum Inner {
    Postgres {
        options: Box<PgConnectOptions>,
        conn: Option<Box<PgConnection>>,
        held: bool,
    },
    Sqlite {
        file: String,
        held: bool,
    },
}

/// SQLite databases whose lock a `LeaderLock` of this process holds.
fn sqlite_holders() -> &'static Mutex<HashSet<String>> {
    static HOLDERS: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    HOLDERS.get_or_init(Default::default)
}

impl LeaderLock {
    /// The orchestrator's lock ([`ORCHESTRATOR_LOCK_KEY`]) on `database`, not yet held.
    pub fn new(database: &Database) -> Self {
        LeaderLock::with_key(database, ORCHESTRATOR_LOCK_KEY)
    }

    /// A lock with another key (other singleton roles, tests).
    pub fn with_key(database: &Database, key: i64) -> Self {
        let inner = match database {
            Database::Postgres(pool) => Inner::Postgres {
                options: Box::new((*pool.connect_options()).clone()),
                conn: None,
                held: false,
            },
            Database::Sqlite(pool) => Inner::Sqlite {
                file: format!(
                    "{}#{key}",
                    pool.connect_options().get_filename().to_string_lossy()
                ),
                held: false,
            },
        };
        LeaderLock { inner, key }
    }

    /// Whether this lock believes it is held (as of the last acquire or check).
    pub fn is_held(&self) -> bool {
        match &self.inner {
            Inner::Postgres { held, .. } | Inner::Sqlite { held, .. } => *held,
        }
    }

    /// Tries to take the lock without waiting: `Ok(true)` when it is held (now or already),
    /// `Ok(false)` when someone else holds it. `Err` when the database cannot be reached
    /// (try again later).
    #[tracing::instrument(name = "leader_lock.try_acquire", skip_all, err(level = "debug"))]
    pub async fn try_acquire(&mut self) -> StoreResult<bool> {
        if self.is_held() {
            return self.check().await;
        }
        let key = self.key;
        match &mut self.inner {
            Inner::Postgres {
                options,
                conn,
                held,
            } => {
                if conn.is_none() {
                    *conn = Some(Box::new(PgConnection::connect_with(options).await?));
                }
                let Some(c) = conn.as_mut() else {
                    return Ok(false);
                };
                match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut **c)
                    .await
                {
                    Ok(got) => {
                        *held = got;
                        Ok(got)
                    }
                    Err(error) => {
                        *conn = None;
                        Err(error.into())
                    }
                }
            }
            Inner::Sqlite { file, held } => {
                let mut holders = sqlite_holders().lock().unwrap_or_else(|e| e.into_inner());
                *held = holders.insert(file.clone());
                Ok(*held)
            }
        }
    }

    /// Checks that the lock is still held: on Postgres, that its connection still answers
    /// (`SELECT 1`). `false` means leadership is lost: stop leading at once.
    #[tracing::instrument(name = "leader_lock.check", skip_all)]
    pub async fn check(&mut self) -> StoreResult<bool> {
        match &mut self.inner {
            Inner::Postgres { conn, held, .. } => {
                if !*held {
                    return Ok(false);
                }
                let alive = match conn.as_mut() {
                    Some(c) => matches!(
                        tokio::time::timeout(
                            CHECK_TIMEOUT,
                            sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut **c)
                        )
                        .await,
                        Ok(Ok(1))
                    ),
                    None => false,
                };
                if !alive {
                    tracing::warn!("the leader lock's connection is lost");
                    *held = false;
                    *conn = None;
                }
                Ok(alive)
            }
            Inner::Sqlite { held, .. } => Ok(*held),
        }
    }

    /// Gives the lock up (and closes its connection). Safe to call when not held.
    #[tracing::instrument(name = "leader_lock.release", skip_all)]
    pub async fn release(&mut self) {
        match &mut self.inner {
            Inner::Postgres { conn, held, .. } => {
                if let Some(mut c) = conn.take() {
                    if *held {
                        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                            .bind(self.key)
                            .execute(&mut *c)
                            .await;
                    }
                    let _ = c.close().await;
                }
                *held = false;
            }
            Inner::Sqlite { .. } => self.release_sqlite(),
        }
    }

    fn release_sqlite(&mut self) {
        if let Inner::Sqlite { file, held } = &mut self.inner
            && *held
        {
            let mut holders = sqlite_holders().lock().unwrap_or_else(|e| e.into_inner());
            holders.remove(file.as_str());
            *held = false;
        }
    }
}

/// Kills the connections holding the orchestrator's lock on this database, as a network failure
/// would (for tests of the takeover). Returns how many were terminated.
#[cfg(feature = "testing")]
pub async fn terminate_lock_holders(pool: &PgPool) -> StoreResult<u64> {
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(l.pid)
         FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.granted
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND ((l.classid::int8 << 32) | l.objid::int8) = $1",
    )
    .bind(ORCHESTRATOR_LOCK_KEY)
    .fetch_all(pool)
    .await?;
    Ok(killed.into_iter().filter(|k| *k).count() as u64)
}

impl Drop for LeaderLock {
    /// Postgres: dropping the connection closes it, which releases the lock on the server.
    fn drop(&mut self) {
        self.release_sqlite();
    }
}
