//! One way to speak two SQL dialects (see `docs/adr/0008-one-pattern-for-two-sql-dialects.md`).
//!
//! Code that is the same on Postgres and SQLite is written once, generic over `D: Dialect`,
//! where `D` is `sqlx::Postgres` or `sqlx::Sqlite`. Statements are written with `$n`
//! placeholders, which both drivers bind by number. What really differs stays side by side in
//! the two `impl`s of a trait: here, how ids, times and id arrays are stored and bound and how a
//! write transaction begins; in each area (event log, read model, queue, orchestrator store),
//! the few statements that differ (`UNNEST` against `json_each`, the queue's claim).
//!
//! The runtime choice of a backend is made once per public call, by [`on_pool!`]: a `match` on
//! [`crate::db::Database`] whose two arms run the same generic code.
//!
//! sqlx's own generic bounds (`T: Encode<'q, DB>`, `&mut DB::Connection: Executor`) are not
//! implied by a trait bound, so every generic function would have to repeat them. Instead the
//! capabilities are supertraits of [`Dialect`] ([`Bind`], [`Get`]) with blanket impls, and the
//! three ways of running a statement are methods of the dialect.

use std::future::Future;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::BoxFuture;
use serde_json::value::RawValue;
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, Pool, Postgres, Row, Sqlite, Transaction, Type,
};
use uuid::Uuid;

use crate::sqlite_writer::WriteGuard;

/// A statement of dialect `D` with its arguments.
pub(crate) type Q<'q, D> = Query<'q, D, <D as Database>::Arguments<'q>>;

/// `T` binds to a statement of this database as it is.
pub(crate) trait Bind<'q, T>: Database {
    fn bind_value(query: Q<'q, Self>, value: T) -> Q<'q, Self>;
}

impl<'q, D: Database, T: 'q + Encode<'q, D> + Type<D>> Bind<'q, T> for D {
    fn bind_value(query: Q<'q, Self>, value: T) -> Q<'q, Self> {
        query.bind(value)
    }
}

/// A column of this database decodes as `T`.
pub(crate) trait Get<T>: Database {
    fn get_value(row: &Self::Row, index: usize) -> sqlx::Result<T>;
}

impl<D: Database, T> Get<T> for D
where
    T: for<'r> Decode<'r, D> + Type<D>,
    usize: ColumnIndex<D::Row>,
{
    fn get_value(row: &Self::Row, index: usize) -> sqlx::Result<T> {
        row.try_get(index)
    }
}

/// A stored value that is not what this build writes (an id that is not a UUID, a time that
/// does not parse), or the database's own error reading a column.
#[derive(Debug)]
pub(crate) enum ColumnError {
    Database(sqlx::Error),
    Corrupt(String),
}

impl From<sqlx::Error> for ColumnError {
    fn from(error: sqlx::Error) -> Self {
        ColumnError::Database(error)
    }
}

pub(crate) type ColumnResult<T> = Result<T, ColumnError>;

/// What differs between the two dialects for the code that is written once. Implemented for
/// `sqlx::Postgres` and `sqlx::Sqlite`, side by side below.
pub(crate) trait Dialect:
    Database
    + for<'q> Bind<'q, i64>
    + for<'q> Bind<'q, i32>
    + for<'q> Bind<'q, bool>
    + for<'q> Bind<'q, f64>
    + for<'q> Bind<'q, &'q str>
    + for<'q> Bind<'q, String>
    + for<'q> Bind<'q, Option<&'q str>>
    + for<'q> Bind<'q, Option<String>>
    + for<'q> Bind<'q, Option<i64>>
    + Get<i64>
    + Get<i32>
    + Get<bool>
    + Get<Option<bool>>
    + Get<f64>
    + Get<String>
    + Get<Option<String>>
    + Get<Option<i64>>
    + Get<DateTime<Utc>>
    + Get<Json<Box<RawValue>>>
{
    /// The backend's name in traces.
    const BACKEND: &'static str;

    /// Begins a transaction that will write. SQLite: takes the database's in-process write
    /// lock ([`crate::sqlite_writer`]), then `BEGIN IMMEDIATE` on the writer's connection, so
    /// that it waits for the write lock instead of failing with `SQLITE_BUSY` when it upgrades
    /// from reading.
    fn begin_write(pool: &Pool<Self>) -> BoxFuture<'_, sqlx::Result<WriteTx<Self>>>;

    /// A connection (of a transaction, say) as an executor.
    fn conn<'c>(conn: &'c mut Self::Connection) -> impl Executor<'c, Database = Self> + 'c;

    /// A pool as an executor.
    fn pool<'p>(pool: &'p Pool<Self>) -> impl Executor<'p, Database = Self> + 'p;

    /// Runs `query` and returns its rows.
    fn fetch_all<'c, 'q, E: Executor<'c, Database = Self>>(
        query: Q<'q, Self>,
        executor: E,
    ) -> impl Future<Output = sqlx::Result<Vec<Self::Row>>> + Send;

    /// Runs `query` and returns its first row, if any.
    fn fetch_optional<'c, 'q, E: Executor<'c, Database = Self>>(
        query: Q<'q, Self>,
        executor: E,
    ) -> impl Future<Output = sqlx::Result<Option<Self::Row>>> + Send;

    /// Runs `query` and returns how many rows it changed.
    fn execute<'c, 'q, E: Executor<'c, Database = Self>>(
        query: Q<'q, Self>,
        executor: E,
    ) -> impl Future<Output = sqlx::Result<u64>> + Send;

    /// Binds an id (Postgres `uuid`; SQLite hyphenated text).
    fn bind_id(query: Q<'_, Self>, id: Option<Uuid>) -> Q<'_, Self>;

    /// Binds a list of ids as one parameter (Postgres `uuid[]`, for `= ANY($n)`; SQLite a JSON
    /// array, for `IN (SELECT value FROM json_each($n))`).
    fn bind_ids(query: Q<'_, Self>, ids: Vec<Uuid>) -> Q<'_, Self>;

    /// Binds a list of strings as one parameter (Postgres `text[]`; SQLite a JSON array).
    fn bind_strs<'q>(query: Q<'q, Self>, values: Vec<&'q str>) -> Q<'q, Self>;

    /// Binds a list of numbers as one parameter (Postgres `bigint[]`; SQLite a JSON array).
    fn bind_i64s(query: Q<'_, Self>, values: Vec<i64>) -> Q<'_, Self>;

    /// Binds a time (Postgres `timestamptz`; SQLite fixed-width RFC 3339 text, which sorts as
    /// time does).
    fn bind_time(query: Q<'_, Self>, at: Option<DateTime<Utc>>) -> Q<'_, Self>;

    /// Reads an id column.
    fn get_id(row: &Self::Row, index: usize) -> ColumnResult<Uuid>;

    /// Reads a nullable time column.
    fn get_time(row: &Self::Row, index: usize) -> ColumnResult<Option<DateTime<Utc>>>;
}

/// Ergonomic binding and running for statements of a [`Dialect`].
pub(crate) trait QueryExt<'q, D: Dialect>: Sized {
    /// Binds a value that both dialects store alike.
    fn arg<T>(self, value: T) -> Self
    where
        D: Bind<'q, T>;
    fn id(self, id: Uuid) -> Self;
    fn opt_id(self, id: Option<Uuid>) -> Self;
    fn ids(self, ids: Vec<Uuid>) -> Self;
    fn strs(self, values: Vec<&'q str>) -> Self;
    fn i64s(self, values: Vec<i64>) -> Self;
    fn time(self, at: Option<DateTime<Utc>>) -> Self;
    fn all<'c, E: Executor<'c, Database = D>>(
        self,
        executor: E,
    ) -> impl Future<Output = sqlx::Result<Vec<D::Row>>> + Send;
    fn optional<'c, E: Executor<'c, Database = D>>(
        self,
        executor: E,
    ) -> impl Future<Output = sqlx::Result<Option<D::Row>>> + Send;
    fn run<'c, E: Executor<'c, Database = D>>(
        self,
        executor: E,
    ) -> impl Future<Output = sqlx::Result<u64>> + Send;
}

impl<'q, D: Dialect> QueryExt<'q, D> for Q<'q, D> {
    fn arg<T>(self, value: T) -> Self
    where
        D: Bind<'q, T>,
    {
        D::bind_value(self, value)
    }

    fn id(self, id: Uuid) -> Self {
        D::bind_id(self, Some(id))
    }

    fn opt_id(self, id: Option<Uuid>) -> Self {
        D::bind_id(self, id)
    }

    fn ids(self, ids: Vec<Uuid>) -> Self {
        D::bind_ids(self, ids)
    }

    fn strs(self, values: Vec<&'q str>) -> Self {
        D::bind_strs(self, values)
    }

    fn i64s(self, values: Vec<i64>) -> Self {
        D::bind_i64s(self, values)
    }

    fn time(self, at: Option<DateTime<Utc>>) -> Self {
        D::bind_time(self, at)
    }

    fn all<'c, E: Executor<'c, Database = D>>(
        self,
        executor: E,
    ) -> impl Future<Output = sqlx::Result<Vec<D::Row>>> + Send {
        D::fetch_all(self, executor)
    }

    fn optional<'c, E: Executor<'c, Database = D>>(
        self,
        executor: E,
    ) -> impl Future<Output = sqlx::Result<Option<D::Row>>> + Send {
        D::fetch_optional(self, executor)
    }

    fn run<'c, E: Executor<'c, Database = D>>(
        self,
        executor: E,
    ) -> impl Future<Output = sqlx::Result<u64>> + Send {
        D::execute(self, executor)
    }
}

/// Reads column `index` of a row of `D`.
pub(crate) fn col<D: Get<T>, T>(row: &D::Row, index: usize) -> sqlx::Result<T> {
    D::get_value(row, index)
}

/// The stored text form of a time on SQLite, `%Y-%m-%dT%H:%M:%S%.6fZ`: fixed width, so it
/// sorts as text. Written by chrono's RFC 3339 writer, which gives that form without reading a
/// format string on every call (a row of the read tables has up to five times, and a `shoal
/// dev` drain writes them inside the write lock).
pub(crate) fn sqlite_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses a time stored as RFC 3339 text.
pub(crate) fn parse_time(text: &str) -> ColumnResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ColumnError::Corrupt(format!("time {text:?}")))
}

fn json_array<T: serde::Serialize>(values: &[T]) -> String {
    // A list of strings or numbers always serializes.
    serde_json::to_string(values).unwrap_or_else(|_| "[]".into())
}

/// The executor methods of [`Dialect`], the same for both drivers (each needs the concrete
/// driver's types to satisfy sqlx's bounds).
macro_rules! executor_methods {
    () => {
        fn conn<'c>(conn: &'c mut Self::Connection) -> impl Executor<'c, Database = Self> + 'c {
            conn
        }

        fn pool<'p>(pool: &'p Pool<Self>) -> impl Executor<'p, Database = Self> + 'p {
            pool
        }

        fn fetch_all<'c, 'q, E: Executor<'c, Database = Self>>(
            query: Q<'q, Self>,
            executor: E,
        ) -> impl Future<Output = sqlx::Result<Vec<Self::Row>>> + Send {
            async move { query.fetch_all(executor).await }
        }

        fn fetch_optional<'c, 'q, E: Executor<'c, Database = Self>>(
            query: Q<'q, Self>,
            executor: E,
        ) -> impl Future<Output = sqlx::Result<Option<Self::Row>>> + Send {
            async move { query.fetch_optional(executor).await }
        }

        fn execute<'c, 'q, E: Executor<'c, Database = Self>>(
            query: Q<'q, Self>,
            executor: E,
        ) -> impl Future<Output = sqlx::Result<u64>> + Send {
            async move { Ok(query.execute(executor).await?.rows_affected()) }
        }
    };
}

/// `pool.begin()` on Postgres, carried to its end even when the caller stops waiting (an
/// aborted task, a timeout, a `select!`). sqlx 0.8 rolls back nothing when a `BEGIN` is cut off
/// after the server ran it and before the transaction was handed over: the connection goes back
/// to the pool inside a transaction nothing owns, and the statements it runs next (an
/// acknowledgement, a checkpoint) stay uncommitted, unseen by others and holding back the log's
/// read horizon once they write, until a later transaction on that connection commits them.
/// Spawned, the `BEGIN` completes; a transaction nobody takes is then dropped, which rolls it
/// back before the connection's next use. SQLite has the same flaw: [`sqlite_begin`].
pub(crate) async fn pg_begin(
    pool: &Pool<Postgres>,
) -> sqlx::Result<Transaction<'static, Postgres>> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        .unwrap_or(Err(sqlx::Error::WorkerCrashed))
}

/// `BEGIN IMMEDIATE` on SQLite, carried to its end as [`pg_begin`] is. Cut off after SQLite
/// ran it and before sqlx handed the transaction over (sqlx issue 3932), the connection would go
/// back to the pool inside a transaction nothing owns, holding the database's write lock for
/// good: every later write would wait out the busy timeout and fail. Every SQLite write
/// transaction of Shoal begins here (with the in-process write lock already taken).
pub(crate) async fn sqlite_begin(
    pool: &Pool<Sqlite>,
) -> sqlx::Result<Transaction<'static, Sqlite>> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin_with("BEGIN IMMEDIATE").await })
        .await
        .unwrap_or(Err(sqlx::Error::WorkerCrashed))
}

/// A write transaction of [`Dialect::begin_write`]: the transaction, and on SQLite the
/// database's in-process write lock, held until it commits or rolls back (or is dropped).
pub(crate) struct WriteTx<D: Database> {
    tx: Transaction<'static, D>,
    _lock: Option<WriteGuard>,
}

impl<D: Database> WriteTx<D> {
    pub(crate) async fn commit(self) -> sqlx::Result<()> {
        self.tx.commit().await
    }

    pub(crate) async fn rollback(self) -> sqlx::Result<()> {
        self.tx.rollback().await
    }
}

impl<D: Database> std::ops::Deref for WriteTx<D> {
    type Target = D::Connection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl<D: Database> std::ops::DerefMut for WriteTx<D> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl Dialect for Postgres {
    const BACKEND: &'static str = "postgres";

    fn begin_write(pool: &Pool<Self>) -> BoxFuture<'_, sqlx::Result<WriteTx<Self>>> {
        Box::pin(async move {
            Ok(WriteTx {
                tx: pg_begin(pool).await?,
                _lock: None,
            })
        })
    }

    executor_methods!();

    fn bind_id(query: Q<'_, Self>, id: Option<Uuid>) -> Q<'_, Self> {
        query.bind(id)
    }

    fn bind_ids(query: Q<'_, Self>, ids: Vec<Uuid>) -> Q<'_, Self> {
        query.bind(ids)
    }

    fn bind_strs<'q>(query: Q<'q, Self>, values: Vec<&'q str>) -> Q<'q, Self> {
        query.bind(values)
    }

    fn bind_i64s(query: Q<'_, Self>, values: Vec<i64>) -> Q<'_, Self> {
        query.bind(values)
    }

    fn bind_time(query: Q<'_, Self>, at: Option<DateTime<Utc>>) -> Q<'_, Self> {
        query.bind(at)
    }

    fn get_id(row: &Self::Row, index: usize) -> ColumnResult<Uuid> {
        Ok(row.try_get(index)?)
    }

    fn get_time(row: &Self::Row, index: usize) -> ColumnResult<Option<DateTime<Utc>>> {
        Ok(row.try_get(index)?)
    }
}

impl Dialect for Sqlite {
    const BACKEND: &'static str = "sqlite";

    fn begin_write(pool: &Pool<Self>) -> BoxFuture<'_, sqlx::Result<WriteTx<Self>>> {
        Box::pin(async move {
            let lock = crate::sqlite_writer::lock(pool).await;
            Ok(WriteTx {
                tx: sqlite_begin(&lock.pool(pool)).await?,
                _lock: Some(lock),
            })
        })
    }

    executor_methods!();

    fn bind_id(query: Q<'_, Self>, id: Option<Uuid>) -> Q<'_, Self> {
        query.bind(id.map(|id| id.to_string()))
    }

    fn bind_ids(query: Q<'_, Self>, ids: Vec<Uuid>) -> Q<'_, Self> {
        query.bind(json_array(&ids))
    }

    fn bind_strs<'q>(query: Q<'q, Self>, values: Vec<&'q str>) -> Q<'q, Self> {
        query.bind(json_array(&values))
    }

    fn bind_i64s(query: Q<'_, Self>, values: Vec<i64>) -> Q<'_, Self> {
        query.bind(json_array(&values))
    }

    fn bind_time(query: Q<'_, Self>, at: Option<DateTime<Utc>>) -> Q<'_, Self> {
        query.bind(at.map(sqlite_time))
    }

    fn get_id(row: &Self::Row, index: usize) -> ColumnResult<Uuid> {
        let text: String = row.try_get(index)?;
        Uuid::parse_str(&text).map_err(|_| ColumnError::Corrupt(format!("id {text:?}")))
    }

    fn get_time(row: &Self::Row, index: usize) -> ColumnResult<Option<DateTime<Utc>>> {
        let text: Option<String> = row.try_get(index)?;
        text.map(|t| parse_time(&t)).transpose()
    }
}

/// Runs the same generic code on whichever pool `database` holds: `$pool` is a `&PgPool` in
/// one arm and a `&SqlitePool` in the other.
macro_rules! on_pool {
    ($database:expr, $pool:ident => $body:expr) => {
        match $database {
            $crate::db::Database::Postgres($pool) => $body,
            $crate::db::Database::Sqlite($pool) => $body,
        }
    };
}

pub(crate) use on_pool;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_times_are_fixed_width_and_round_trip() {
        let at = DateTime::from_timestamp_micros(1_764_000_000_000_001).unwrap();
        assert_eq!(sqlite_time(at), "2025-11-24T16:00:00.000001Z");
        assert_eq!(parse_time(&sqlite_time(at)).unwrap(), at);
        let whole = DateTime::from_timestamp(1_764_000_000, 0).unwrap();
        assert_eq!(sqlite_time(whole).len(), sqlite_time(at).len());
    }

    /// Rows written before keep comparing with rows written now: every time from year 1 to
    /// 9999 gets the text the format string gave.
    #[test]
    fn sqlite_times_keep_their_stored_form() {
        let first = DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z").unwrap();
        let last = DateTime::parse_from_rfc3339("9999-12-31T23:59:59.999999Z").unwrap();
        let (first, last) = (first.timestamp_micros(), last.timestamp_micros());
        let step = (last - first) / 10_007;
        for micros in (first..=last)
            .step_by(step as usize)
            .chain([last, 0, 1, 999_999])
        {
            let at = DateTime::from_timestamp_micros(micros).unwrap();
            let text = sqlite_time(at);
            assert_eq!(text, at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
            assert_eq!(parse_time(&text).unwrap(), at);
        }
    }
}
