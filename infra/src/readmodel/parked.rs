//! Events a projection could not apply, parked so that it goes on without them (ADR 0012):
//! the record of what was left out of the read tables, and why.

use sqlx::Row;

use super::{ProjectionName, ReadModelError, ReadModelResult, ReadModelStore};
use crate::db::Database;
use crate::eventlog::LogPosition;

/// One parked event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    pub projection: ProjectionName,
    pub position: LogPosition,
    pub stream_id: String,
    pub event_type: String,
    /// Why the database refused it.
    pub error: String,
}

impl ReadModelError {
    /// Whether the database refused the data of a batch (a value out of range, a character it
    /// cannot store, a violated constraint other than a duplicate key): retrying the same
    /// batch fails the same way, so the projector isolates the event that causes it. `false`
    /// for everything that may pass on a retry (connection lost, timeouts, `Fenced`).
    pub fn is_refused_data(&self) -> bool {
        let ReadModelError::Database(sqlx::Error::Database(error)) = self else {
            return false;
        };
        let Some(code) = error.code() else {
            return false;
        };
        match code.as_ref() {
            // Postgres: class 22 (data exception) and 23 (integrity constraint violation),
            // except a unique violation (a concurrent writer, not the data).
            c if c.starts_with("22") => true,
            "23505" => false,
            c if c.starts_with("23") && c.len() == 5 => true,
            // SQLite: TOOBIG (18), CONSTRAINT (19, and its extended codes except UNIQUE 2067
            // and PRIMARYKEY 1555), MISMATCH (20), RANGE (25).
            "18" | "20" | "25" => true,
            "2067" | "1555" => false,
            c => c.parse::<u32>().is_ok_and(|n| n & 0xff == 19),
        }
    }
}

impl ReadModelStore {
    /// Records that `projection` left out the event at `position` (once: parking it again, in
    /// a replay or a rebuild, keeps the first record).
    pub async fn park_event(&self, parked: &ParkedEvent) -> ReadModelResult<()> {
        const SQL: &str = "INSERT INTO projection_parked_events \
             (projection, commit_id, position, stream_id, event_type, error) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (projection, commit_id, position) DO NOTHING";
        macro_rules! insert {
            ($pool:expr) => {
                sqlx::query(SQL)
                    .bind(parked.projection.as_str())
                    .bind(parked.position.commit)
                    .bind(parked.position.position)
                    .bind(&parked.stream_id)
                    .bind(&parked.event_type)
                    .bind(&parked.error)
                    .execute($pool)
                    .await?
                    .rows_affected()
            };
        }
        match self.database() {
            Database::Postgres(pool) => insert!(pool),
            Database::Sqlite(pool) => insert!(pool),
        };
        Ok(())
    }

    /// How many events `projection` has parked, and the position of the latest.
    pub async fn parked_events(
        &self,
        projection: ProjectionName,
    ) -> ReadModelResult<(u64, Option<LogPosition>)> {
        const SQL: &str = "SELECT commit_id, position FROM projection_parked_events \
             WHERE projection = $1 ORDER BY commit_id DESC, position DESC";
        const COUNT: &str = "SELECT COUNT(*) FROM projection_parked_events WHERE projection = $1";
        macro_rules! query {
            ($pool:expr) => {{
                let count: i64 = sqlx::query(COUNT)
                    .bind(projection.as_str())
                    .fetch_one($pool)
                    .await?
                    .try_get(0)?;
                let latest = sqlx::query(SQL)
                    .bind(projection.as_str())
                    .fetch_optional($pool)
                    .await?
                    .map(|row| -> sqlx::Result<LogPosition> {
                        Ok(LogPosition {
                            commit: row.try_get(0)?,
                            position: row.try_get(1)?,
                        })
                    })
                    .transpose()?;
                (count, latest)
            }};
        }
        let (count, latest) = match self.database() {
            Database::Postgres(pool) => query!(pool),
            Database::Sqlite(pool) => query!(pool),
        };
        Ok((u64::try_from(count).unwrap_or(0), latest))
    }
}
