//! Connecting to the database named by a URL, and running the embedded migrations.
//!
//! `postgres://` or `postgresql://` selects Postgres; `sqlite:` selects SQLite (a file in WAL
//! mode, created if missing; `sqlite::memory:` for a throwaway database).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::dialect::on_pool;
use crate::eventlog::{EventLog, SqlEventLog};

/// The Postgres schema, embedded at compile time.
pub static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The SQLite schema, embedded at compile time.
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// What went wrong while connecting or migrating.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no supported database. A configuration error: fix the URL.
    #[error("unsupported database URL {0}: expected postgres://, postgresql:// or sqlite:")]
    UnsupportedUrl(String),
    /// The database could not be reached or configured. Check that it runs and the URL's
    /// credentials; retrying later may help.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// TLS with Postgres failed: the server offers none (`sslmode=require`), or its certificate
    /// is not signed by a CA in `sslrootcert` or does not name the URL's host
    /// (`sslmode=verify-full`). A configuration error: retrying does not help.
    #[error(
        "cannot connect to the database over TLS: {0} (with sslmode=verify-full or verify-ca, \
         sslrootcert must name the CA that signed the server's certificate, and verify-full \
         needs the certificate to name the URL's host)"
    )]
    Tls(#[source] sqlx::Error),
    /// A migration failed, or the database has migrations this binary does not know (it is
    /// older than the schema). Do not start.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A database URL, by backend. Its `Debug` and `Display` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    Sqlite(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(url.to_owned()))
        } else if url.starts_with("sqlite:") {
            Ok(DatabaseUrl::Sqlite(url.to_owned()))
        } else {
            Err(DbError::UnsupportedUrl(redact(url)))
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            DatabaseUrl::Postgres(url) | DatabaseUrl::Sqlite(url) => url,
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = DbError;

    fn from_str(url: &str) -> Result<Self, DbError> {
        DatabaseUrl::parse(url)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(self.as_str()))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match self {
            DatabaseUrl::Postgres(_) => "Postgres",
            DatabaseUrl::Sqlite(_) => "Sqlite",
        };
        f.debug_tuple(backend)
            .field(&redact(self.as_str()))
            .finish()
    }
}

/// A failed Postgres connection, with TLS failures told apart. rustls reports a rejected
/// certificate during the handshake as an `InvalidData` I/O error.
fn connect_error(error: sqlx::Error) -> DbError {
    let tls = match &error {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::InvalidData && io.to_string().contains("certificate")
        }
        _ => false,
    };
    if tls {
        DbError::Tls(error)
    } else {
        DbError::Connect(error)
    }
}

/// `scheme://user:password@host/...` with the password replaced.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The default of [`PoolSettings::statement_timeout`].
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Pool sizing and timeouts.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most connections the pool opens (SQLite in-memory databases always use one).
    pub max_connections: u32,
    /// How long to wait for a free connection before failing.
    pub acquire_timeout: Duration,
    /// SQLite: how long a write waits for another process's write to finish.
    pub sqlite_busy_timeout: Duration,
    /// Postgres: the `statement_timeout` of every connection the pool opens (a statement
    /// running longer, lock waits included, is cancelled with SQLSTATE 57014 and its
    /// transaction rolled back); `None` for the server's setting. Default 60 s.
    pub statement_timeout: Option<Duration>,
    /// Postgres: whether the planner of the pool's connections may use bitmap scans
    /// (`enable_bitmapscan`). Off in the processes that claim from the SQL queue (`shoal worker`,
    /// `shoal dev` with workers): without statistics of the queue the planner answered a claim with a bitmap
    /// scan of every row waiting, where the fair index's scan reads only the rows it takes
    /// (ADR 26). Default: on.
    pub bitmap_scans: bool,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            sqlite_busy_timeout: Duration::from_secs(10),
            statement_timeout: Some(DEFAULT_STATEMENT_TIMEOUT),
            bitmap_scans: true,
        }
    }
}

/// A connection pool to one of the supported databases.
#[derive(Debug, Clone)]
pub enum Database {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Database {
    /// Connects with default pool settings.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        Database::connect_with(&DatabaseUrl::parse(url)?, &PoolSettings::default()).await
    }

    pub async fn connect_with(url: &DatabaseUrl, settings: &PoolSettings) -> Result<Self, DbError> {
        match url {
            DatabaseUrl::Postgres(url) => {
                let mut options: PgConnectOptions = url.parse().map_err(DbError::Connect)?;
                if let Some(timeout) = settings.statement_timeout {
                    options = options.options([(
                        "statement_timeout",
                        format!("{}ms", timeout.as_millis().max(1)),
                    )]);
                }
                if !settings.bitmap_scans {
                    options = options.options([("enable_bitmapscan", "off")]);
                }
                PgPoolOptions::new()
                    .max_connections(settings.max_connections)
                    .acquire_timeout(settings.acquire_timeout)
                    .connect_with(options)
                    .await
                    .map(Database::Postgres)
                    .map_err(connect_error)
            }
            DatabaseUrl::Sqlite(url) => {
                let options = sqlite_options(url, settings.sqlite_busy_timeout)?;
                let in_memory = url.contains(":memory:") || url.contains("mode=memory");
                let pool = if in_memory {
                    // The database lives as long as a connection to it: keep exactly one.
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                } else {
                    SqlitePoolOptions::new().max_connections(settings.max_connections)
                };
                // A file's log is checkpointed in the background, outside the write lock
                // (ADR 29): not by the commit that fills it; its writes go through a
                // connection of their own (ADR 30).
                let options = if in_memory {
                    options
                } else {
                    options.pragma("wal_autocheckpoint", "0")
                };
                let pool = pool
                    .acquire_timeout(settings.acquire_timeout)
                    .connect_with(options)
                    .await
                    .map_err(DbError::Connect)?;
                if !in_memory {
                    crate::sqlite_writer::start(pool.clone());
                }
                Ok(Database::Sqlite(pool))
            }
        }
    }

    /// Applies the migrations this binary embeds that the database lacks.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Database::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await?,
            Database::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await?,
        }
        Ok(())
    }

    /// The event log on this database. Call it once and clone the result: clones share the
    /// commit signal that wakes subscriptions (and, on SQLite, the write lock).
    pub fn event_log(&self) -> Arc<dyn EventLog> {
        on_pool!(self, pool => Arc::new(SqlEventLog::new(pool.clone())))
    }

    /// Runs a trivial query: `Ok` when the database answers (health checks).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))
    }

    /// Closes the pool, waiting for connections in use to be returned (on SQLite, the writer's
    /// connection too).
    pub async fn close(&self) {
        match self {
            Database::Postgres(pool) => close_pool(pool).await,
            Database::Sqlite(pool) => {
                close_pool(pool).await;
                crate::sqlite_writer::close(pool).await;
            }
        }
    }
}

/// Closes `pool` and waits until every connection of it is closed. sqlx's `Pool::close` alone
/// can return with one still open: a connection that someone returns while the pool closes
/// can reach the pool's idle queue after `close` last looked there, and it stays open until the
/// pool's last handle is dropped (seen with 0.8.6 in a test of `Database::close`). Another
/// `close` closes what is idle; a connection in use still is waited for, as by the first.
pub(crate) async fn close_pool<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) {
    pool.close().await;
    while pool.size() > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        pool.close().await;
    }
}

/// Connects to `url` and applies the migrations; returns the connected database.
pub async fn migrate(url: &str) -> Result<Database, DbError> {
    let database = Database::connect(url).await?;
    database.migrate().await?;
    Ok(database)
}

/// The connection settings every SQLite connection of Shoal uses: WAL (readers never block
/// the writer), created if missing, a busy timeout for writers from other processes, foreign
/// keys enforced, and `synchronous = FULL` (a commit survives a power loss, not only a crash).
///
/// Write transactions on these connections should start with `BEGIN IMMEDIATE` (sqlx:
/// `pool.begin_with("BEGIN IMMEDIATE")`), so that they wait for the write lock instead of
/// failing with `SQLITE_BUSY` when they upgrade from reading.
pub fn sqlite_options(url: &str, busy_timeout: Duration) -> Result<SqliteConnectOptions, DbError> {
    Ok(SqliteConnectOptions::from_str(url)
        .map_err(DbError::Connect)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(busy_timeout)
        .foreign_keys(true)
        .row_buffer_size(SQLITE_ROW_BUFFER))
}

/// Rows a SQLite connection's thread may hand over before the reader takes them (sqlx's default
/// is 50): a statement's rows then cross to the runtime in one go instead of the connection's
/// thread stopping every 50 rows until a busy runtime takes them.
const SQLITE_ROW_BUFFER: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_by_scheme() {
        assert!(matches!(
            DatabaseUrl::parse("postgres://u@h/db"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!(matches!(
            DatabaseUrl::parse("postgresql://u@h/db"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!(matches!(
            DatabaseUrl::parse("sqlite:shoal.db"),
            Ok(DatabaseUrl::Sqlite(_))
        ));
        assert!(matches!(
            DatabaseUrl::parse("mysql://u@h/db"),
            Err(DbError::UnsupportedUrl(_))
        ));
    }

    #[test]
    fn hides_passwords() {
        let url = DatabaseUrl::parse("postgres://shoal:s3cret@db:5432/shoal").unwrap();
        assert_eq!(url.to_string(), "postgres://shoal:***@db:5432/shoal");
        assert!(!format!("{url:?}").contains("s3cret"));
        let err = DatabaseUrl::parse("mysql://root:s3cret@db/x").unwrap_err();
        assert!(!err.to_string().contains("s3cret"));
    }
}
