//! Fresh, migrated databases for integration tests, in this crate and others (feature
//! `testing`), and a `moto_server` as SQS ([`moto`], [`fresh_sqs_queue`]).
//!
//! Postgres tests need a server: set `SHOAL_TEST_DATABASE_URL` to a URL that may create
//! databases (for example `postgres://postgres@127.0.0.1:55499/postgres`); each call creates
//! its own database, so tests run in parallel. Without it Postgres tests are skipped, unless
//! `SHOAL_REQUIRE_POSTGRES=1` (CI), which makes them fail instead.
//!
//! Databases (`shoal_test_<unix time>_<random>`) and SQLite files (`shoal-test-*` in the
//! temporary directory) are left behind for inspection; the first helper call of a later test
//! process removes those older than an hour.

// Test support: a setup failure here is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::SqlitePool;
use sqlx::{Connection, PgConnection};

use crate::db::{POSTGRES_MIGRATOR, SQLITE_MIGRATOR, sqlite_options};

mod moto;

pub use moto::{
    MOTO_REGION, MOTO_SFN_ROLE, Moto, REQUIRE_MOTO_ENV, fresh_sqs_queue, fresh_step_functions,
    moto, own_moto, sqs_queue_name,
};

/// The server URL Postgres tests create their databases on.
pub const TEST_DATABASE_URL_ENV: &str = "SHOAL_TEST_DATABASE_URL";

/// Set to `1` to make Postgres tests fail, rather than skip, without a server.
pub const REQUIRE_POSTGRES_ENV: &str = "SHOAL_REQUIRE_POSTGRES";

/// Connections in a test pool: enough for the concurrent-writer tests.
const TEST_POOL_SIZE: u32 = 20;

/// Test databases and files older than this are removed.
const STALE_AFTER: Duration = Duration::from_secs(3600);

const DATABASE_PREFIX: &str = "shoal_test_";
const FILE_PREFIX: &str = "shoal-test-";

static POSTGRES_CLEANED: AtomicBool = AtomicBool::new(false);
static SQLITE_CLEANED: AtomicBool = AtomicBool::new(false);

/// A new, migrated Postgres database, or `None` (with a note on stderr) when no server is
/// configured. Panics when the server is configured but unusable, or required but missing.
pub async fn fresh_postgres() -> Option<PgPool> {
    let Ok(server_url) = std::env::var(TEST_DATABASE_URL_ENV) else {
        if std::env::var(REQUIRE_POSTGRES_ENV).is_ok_and(|v| v == "1") {
            panic!("{REQUIRE_POSTGRES_ENV}=1 but {TEST_DATABASE_URL_ENV} is not set");
        }
        eprintln!("skipped: Postgres test ({TEST_DATABASE_URL_ENV} is not set)");
        return None;
    };
    let server = PgConnectOptions::from_str(&server_url)
        .unwrap_or_else(|e| panic!("{TEST_DATABASE_URL_ENV} is not a Postgres URL: {e}"));
    let name = format!(
        "{DATABASE_PREFIX}{}_{}",
        unix_time(SystemTime::now()),
        uuid::Uuid::now_v7().simple()
    );
    let mut admin = PgConnection::connect_with(&server)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {TEST_DATABASE_URL_ENV}: {e}"));
    if !POSTGRES_CLEANED.swap(true, Ordering::SeqCst) {
        drop_stale_databases(&mut admin).await;
    }
    // An identifier cannot be a bound parameter; `name` is ours and only [a-z0-9_].
    let create = format!("CREATE DATABASE \"{name}\"");
    sqlx::raw_sql(&create)
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let _ = admin.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(TEST_POOL_SIZE)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(server.database(&name))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to test database {name}: {e}"));
    POSTGRES_MIGRATOR
        .run(&pool)
        .await
        .unwrap_or_else(|e| panic!("cannot migrate test database {name}: {e}"));
    Some(pool)
}

/// Like [`fresh_postgres`], but returns the new database's URL, for tests that start `shoal`
/// processes.
pub async fn fresh_postgres_url() -> Option<String> {
    let pool = fresh_postgres().await?;
    let name = pool
        .connect_options()
        .get_database()
        .map(str::to_owned)
        .expect("test databases are named");
    pool.close().await;
    let server_url = std::env::var(TEST_DATABASE_URL_ENV).ok()?;
    let base = server_url.split('?').next().unwrap_or(&server_url);
    let (server, _) = base.rsplit_once('/').expect("a Postgres URL has a path");
    Some(format!("{server}/{name}"))
}

/// A new, migrated SQLite database in a file under the system's temporary directory.
pub async fn fresh_sqlite() -> SqlitePool {
    if !SQLITE_CLEANED.swap(true, Ordering::SeqCst) {
        remove_stale_files();
    }
    let path = temp_sqlite_path();
    let url = format!("sqlite:{}", path.display());
    let options = sqlite_options(&url, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("bad SQLite test URL {url}: {e}"));
    // Set up as `Database::connect_with` sets up a file: checkpoints in the background (ADR 29),
    // writes on the writer's own connection (ADR 30).
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options.pragma("wal_autocheckpoint", "0"))
        .await
        .unwrap_or_else(|e| panic!("cannot open SQLite test database {url}: {e}"));
    SQLITE_MIGRATOR
        .run(&pool)
        .await
        .unwrap_or_else(|e| panic!("cannot migrate SQLite test database {url}: {e}"));
    crate::sqlite_writer::start(pool.clone());
    pool
}

/// A new path for a SQLite test database (the file does not exist yet).
pub fn temp_sqlite_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{FILE_PREFIX}{}.db", uuid::Uuid::now_v7().simple()))
}

fn unix_time(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// When a database named by [`fresh_postgres`] was created; `None` for any other name.
fn created_at(name: &str) -> Option<u64> {
    let (secs, random) = name.strip_prefix(DATABASE_PREFIX)?.split_once('_')?;
    let ours = !random.is_empty() && random.bytes().all(|b| b.is_ascii_hexdigit());
    ours.then(|| secs.parse().ok()).flatten()
}

async fn drop_stale_databases(admin: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind(DATABASE_PREFIX)
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    let now = unix_time(SystemTime::now());
    for name in names {
        if created_at(&name).is_some_and(|t| now.saturating_sub(t) > STALE_AFTER.as_secs()) {
            // `name` matched our own pattern above: digits, hex and underscores only.
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(e) = sqlx::raw_sql(&drop).execute(&mut *admin).await {
                eprintln!("could not drop stale test database {name}: {e}");
            }
        }
    }
}

fn remove_stale_files() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(FILE_PREFIX)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_AFTER));
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Waits until every event committed so far on `pool` is readable by `read_all`.
///
/// On Postgres, readers stay below the oldest transaction still running on the whole cluster
/// (that is what makes reading gap-free), so another test's open transaction can hold back
/// even an event this test has just appended; call this before asserting on `read_all` or
/// `head`. Panics after 30 s (a transaction left open somewhere on the cluster).
pub async fn wait_until_readable(pool: &PgPool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let readable: bool = sqlx::query_scalar(
            "SELECT COALESCE(MAX(transaction_id), 0)
                    < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
             FROM events",
        )
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("cannot check the readers' horizon: {e}"));
        if readable {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events stayed unreadable for 30 s: a transaction is left open on the cluster"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_only_its_own_database_names() {
        assert_eq!(
            created_at("shoal_test_1764200000_0a1b2c"),
            Some(1_764_200_000)
        );
        assert_eq!(created_at("shoal_test_1764200000_"), None);
        assert_eq!(created_at("shoal_test_x_0a1b"), None);
        assert_eq!(created_at("shoal_test_1_0a\"; DROP"), None);
        assert_eq!(created_at("shoal_bench_1764200000_0a1b"), None);
    }
}
