//! Readiness of the database: reachable, and every migration this build embeds applied.

use std::collections::BTreeSet;

use sqlx::Row;

use crate::db::{Database, POSTGRES_MIGRATOR, SQLITE_MIGRATOR};

/// Why a process is not ready.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// The database did not answer (down, unreachable, credentials): wait, or fix the URL.
    #[error("database unreachable: {0}")]
    Unreachable(#[source] sqlx::Error),
    /// The schema is older than this build: run `shoal migrate` (or start a role that does).
    #[error("{missing} migration(s) of this build not applied, first {first}")]
    MigrationsPending { missing: usize, first: i64 },
    /// No answer in time (a pool that keeps retrying a database that is gone): wait.
    #[error("no answer within {0:?}")]
    TimedOut(std::time::Duration),
    /// The task queue did not answer.
    #[error("task queue unreachable: {0}")]
    Queue(String),
}

/// `Ok` when the database answers and has every migration of this build applied.
pub async fn database_ready(database: &Database) -> Result<(), NotReady> {
    const APPLIED: &str = "SELECT version FROM _sqlx_migrations WHERE success";
    let (applied, migrator): (BTreeSet<i64>, _) = match database {
        Database::Postgres(pool) => (
            sqlx::query(APPLIED)
                .fetch_all(pool)
                .await
                .map_err(NotReady::Unreachable)?
                .iter()
                .filter_map(|row| row.try_get::<i64, _>(0).ok())
                .collect(),
            &POSTGRES_MIGRATOR,
        ),
        Database::Sqlite(pool) => (
            sqlx::query(APPLIED)
                .fetch_all(pool)
                .await
                .map_err(NotReady::Unreachable)?
                .iter()
                .filter_map(|row| row.try_get::<i64, _>(0).ok())
                .collect(),
            &SQLITE_MIGRATOR,
        ),
    };
    let missing: Vec<i64> = migrator
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    match missing.first() {
        None => Ok(()),
        Some(&first) => Err(NotReady::MigrationsPending {
            missing: missing.len(),
            first,
        }),
    }
}
