//! API tokens: the `api_tokens` table, written together with the token's events.
//!
//! The log is the history (`TokenCreated`, `TokenRevoked` in the stream `token-<id>`, each with
//! its actor); the table is what a request is checked against, and it is written in the same
//! transaction as the event, so a revocation is in force as soon as it is in the log. Only the
//! SHA-256 of a token's secret is stored: deciding what a token is, how its secret is made and
//! compared, is the caller's (`shoal_api::auth`); this module stores and reads.

use chrono::{DateTime, Utc};
use sqlx::Pool;
use uuid::Uuid;

use crate::db::Database;
use crate::dialect::{ColumnError, Dialect, QueryExt, col, on_pool};
use crate::eventlog::sql::LogDialect;
use crate::eventlog::{
    AppendBatch, ExpectedVersion, LogError, NewEvent, SqlEventLog, StreamAppend,
};

/// A token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub token_id: Uuid,
    /// Unique among every token ever created (revoked ones included).
    pub name: String,
    pub scopes: Vec<String>,
    /// Lower-case hex SHA-256 of the token's secret.
    pub secret_sha256: String,
    pub created_at: DateTime<Utc>,
    /// When it was revoked; a revoked token is refused.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What went wrong, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    /// A token with this name exists (or existed: names are never reused). Nothing was
    /// written; pick another name.
    #[error("a token named {0:?} exists already (names are never reused, even once revoked)")]
    NameTaken(String),
    /// No token has this name. Nothing was written.
    #[error("no token is named {0:?}")]
    NotFound(String),
    /// The token was revoked before. Nothing was written.
    #[error("the token {0:?} is revoked already")]
    AlreadyRevoked(String),
    /// A stored value is not what this build writes. Do not retry.
    #[error("api_tokens is corrupt: {0}")]
    Corrupt(String),
    /// The log refused the event (a concurrent write of the same token's stream): nothing was
    /// written; retry.
    #[error("token event log error: {0}")]
    Log(#[from] LogError),
    /// The database failed; nothing was written. Retry.
    #[error("token store database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<ColumnError> for TokenStoreError {
    fn from(error: ColumnError) -> Self {
        match error {
            ColumnError::Database(e) => TokenStoreError::Database(e),
            ColumnError::Corrupt(what) => TokenStoreError::Corrupt(what),
        }
    }
}

pub type TokenStoreResult<T> = Result<T, TokenStoreError>;

const INSERT: &str = "
INSERT INTO api_tokens (token_id, name, scopes, secret_sha256, created_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING";

const BY_NAME: &str = "SELECT token_id, revoked_at FROM api_tokens WHERE name = $1";

const REVOKE: &str =
    "UPDATE api_tokens SET revoked_at = $2 WHERE token_id = $1 AND revoked_at IS NULL";

macro_rules! select {
    ($tail:literal) => {
        concat!(
            "SELECT token_id, name, scopes, secret_sha256, created_at, revoked_at FROM api_tokens",
            $tail
        )
    };
}

const LIST: &str = select!(" ORDER BY created_at, name");
const FIND: &str = select!(" WHERE token_id = $1");

/// The tokens on the Postgres or SQLite database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TokenStore {
    database: Database,
}

impl TokenStore {
    pub fn new(database: Database) -> Self {
        TokenStore { database }
    }

    /// Stores a new token and appends `created` (its `TokenCreated`) to `token-<id>`, in one
    /// transaction. `Err(NameTaken)` when the name was ever used.
    #[tracing::instrument(name = "tokens.create", skip_all, fields(name = %token.name), err(level = "debug"))]
    pub async fn create(&self, token: &StoredToken, created: NewEvent) -> TokenStoreResult<()> {
        on_pool!(&self.database, pool => create(pool, token, created).await)
    }

    /// Revokes the token `name` and appends the event `revoked(token_id)` gives (its
    /// `TokenRevoked`) to `token-<id>`, in one transaction; returns the token's id.
    #[tracing::instrument(name = "tokens.revoke", skip_all, fields(name), err(level = "debug"))]
    pub async fn revoke(
        &self,
        name: &str,
        at: DateTime<Utc>,
        revoked: impl FnOnce(Uuid) -> NewEvent + Send,
    ) -> TokenStoreResult<Uuid> {
        on_pool!(&self.database, pool => revoke(pool, name, at, revoked).await)
    }

    /// Every token, revoked ones included, oldest first.
    pub async fn list(&self) -> TokenStoreResult<Vec<StoredToken>> {
        on_pool!(&self.database, pool => list(pool).await)
    }

    /// The token with this id, revoked or not.
    pub async fn find(&self, token_id: Uuid) -> TokenStoreResult<Option<StoredToken>> {
        on_pool!(&self.database, pool => find(pool, token_id).await)
    }
}

async fn create<D: LogDialect>(
    pool: &Pool<D>,
    token: &StoredToken,
    created: NewEvent,
) -> TokenStoreResult<()> {
    let log = SqlEventLog::new(pool.clone());
    let mut tx = D::begin_write(pool).await?;
    let inserted = sqlx::query::<D>(INSERT)
        .id(token.token_id)
        .arg(token.name.as_str())
        .arg(token.scopes.join(" "))
        .arg(token.secret_sha256.as_str())
        .time(Some(token.created_at))
        .run(D::conn(&mut *tx))
        .await?;
    if inserted == 0 {
        tx.rollback().await?;
        return Err(TokenStoreError::NameTaken(token.name.clone()));
    }
    let append = log
        .append_in_tx(
            &mut *tx,
            &one_event(token.token_id, ExpectedVersion::NoStream, created),
        )
        .await;
    let append = match append {
        Ok(append) => append,
        Err(error) => {
            tx.rollback().await?;
            return Err(error.into());
        }
    };
    tx.commit().await?;
    log.committed(&append);
    Ok(())
}

async fn revoke<D: LogDialect>(
    pool: &Pool<D>,
    name: &str,
    at: DateTime<Utc>,
    revoked: impl FnOnce(Uuid) -> NewEvent,
) -> TokenStoreResult<Uuid> {
    let log = SqlEventLog::new(pool.clone());
    let mut tx = D::begin_write(pool).await?;
    let Some(row) = sqlx::query::<D>(BY_NAME)
        .arg(name)
        .optional(D::conn(&mut *tx))
        .await?
    else {
        tx.rollback().await?;
        return Err(TokenStoreError::NotFound(name.to_owned()));
    };
    let token_id = D::get_id(&row, 0)?;
    let changed = sqlx::query::<D>(REVOKE)
        .id(token_id)
        .time(Some(at))
        .run(D::conn(&mut *tx))
        .await?;
    if changed == 0 {
        tx.rollback().await?;
        return Err(TokenStoreError::AlreadyRevoked(name.to_owned()));
    }
    let append = match log
        .append_in_tx(
            &mut *tx,
            &one_event(token_id, ExpectedVersion::Exact(1), revoked(token_id)),
        )
        .await
    {
        Ok(append) => append,
        Err(error) => {
            tx.rollback().await?;
            return Err(error.into());
        }
    };
    tx.commit().await?;
    log.committed(&append);
    Ok(token_id)
}

/// `event` appended to the token's stream: a creation starts it, a revocation (at most one,
/// guarded by the row) follows it.
fn one_event(token_id: Uuid, expected: ExpectedVersion, event: NewEvent) -> AppendBatch {
    AppendBatch {
        streams: vec![StreamAppend {
            stream_id: format!("token-{}", token_id.hyphenated()),
            expected,
            events: vec![event],
        }],
        idempotency_key: None,
        checkpoint: None,
    }
}

async fn list<D: Dialect>(pool: &Pool<D>) -> TokenStoreResult<Vec<StoredToken>> {
    let rows = sqlx::query::<D>(LIST).all(D::pool(pool)).await?;
    rows.iter().map(stored::<D>).collect()
}

async fn find<D: Dialect>(pool: &Pool<D>, token_id: Uuid) -> TokenStoreResult<Option<StoredToken>> {
    let row = sqlx::query::<D>(FIND)
        .id(token_id)
        .optional(D::pool(pool))
        .await?;
    row.as_ref().map(stored::<D>).transpose()
}

fn stored<D: Dialect>(row: &D::Row) -> TokenStoreResult<StoredToken> {
    let scopes: String = col::<D, _>(row, 2)?;
    Ok(StoredToken {
        token_id: D::get_id(row, 0)?,
        name: col::<D, _>(row, 1)?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        secret_sha256: col::<D, _>(row, 3)?,
        created_at: D::get_time(row, 4)?
            .ok_or_else(|| TokenStoreError::Corrupt("created_at is null".into()))?,
        revoked_at: D::get_time(row, 5)?,
    })
}
