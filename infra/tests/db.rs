//! Connecting by URL and migrating, on both backends.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use shoal_infra::db::{self, Database, DatabaseUrl, DbError};
use shoal_infra::eventlog::{
    AppendBatch, EventLog, ExpectedVersion, LogPosition, NewEvent, StreamAppend, raw_json,
};
use shoal_infra::testing;

fn one_event(stream_id: &str) -> AppendBatch {
    AppendBatch {
        streams: vec![StreamAppend {
            stream_id: stream_id.into(),
            expected: ExpectedVersion::NoStream,
            events: vec![NewEvent {
                event_type: "JobSubmitted".into(),
                schema_version: 1,
                data: raw_json(&json!({})),
                metadata: json!({}),
            }],
        }],
        ..AppendBatch::default()
    }
}

async fn serves_the_event_log(database: &Database) {
    let log = database.event_log();
    log.append(one_event("job-1")).await.unwrap();
    if let Database::Postgres(pool) = database {
        testing::wait_until_readable(pool).await;
    }
    let read = log.read_all(LogPosition::START, 10).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].stream_id, "job-1");
}

#[tokio::test]
async fn sqlite_file_is_created_in_wal_mode_and_migrates_idempotently() {
    let path = testing::temp_sqlite_path();
    let url = format!("sqlite:{}", path.display());
    let database = db::migrate(&url).await.unwrap();
    database.migrate().await.unwrap();
    let Database::Sqlite(pool) = &database else {
        panic!("expected SQLite for {url}");
    };
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(foreign_keys, 1);
    serves_the_event_log(&database).await;
    database.close().await;
    assert!(path.exists());
}

/// A new SQLite file, migrated: its path, the database as `shoal` opens it, and its pool.
async fn migrated_sqlite_file() -> (std::path::PathBuf, Database, sqlx::SqlitePool) {
    let path = testing::temp_sqlite_path();
    let database = db::migrate(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let Database::Sqlite(pool) = &database else {
        panic!("expected SQLite");
    };
    let pool = pool.clone();
    (path, database, pool)
}

/// A file's write-ahead log is copied into the database file by a background checkpointer, not
/// by the commit that fills it (ADR 29): the commits of the pool's connections never checkpoint
/// (`wal_autocheckpoint` is 0), and yet what they write reaches the database file while the pool
/// is open, with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_log_is_checkpointed_in_the_background_not_by_commits() {
    let (path, database, pool) = migrated_sqlite_file().await;
    let pool = &pool;
    let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(autocheckpoint, 0, "commits do not checkpoint");
    let log = database.event_log();
    let padding = "x".repeat(1_000);
    for batch in 0..40 {
        let mut appends = one_event(&format!("job-{batch}-0"));
        for i in 1..100 {
            appends
                .streams
                .push(one_event(&format!("job-{batch}-{i}")).streams.remove(0));
        }
        for stream in &mut appends.streams {
            stream.events[0].data = raw_json(&json!({ "padding": padding }));
        }
        log.append(appends).await.unwrap();
    }
    // 4,000 events of 1 kB: about 4 MB, in 40 commits. The database file holds them once the
    // checkpointer has copied them.
    let mut size = 0;
    for _ in 0..100 {
        size = std::fs::metadata(&path).unwrap().len();
        if size > 4_000_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(size > 4_000_000, "the database file is {size} bytes");
    let read = log.read_all(LogPosition::START, 5_000).await.unwrap();
    assert_eq!(read.len(), 4_000);
    database.close().await;
}

/// A file's writes go through one connection of their own (ADR 30): every write transaction
/// of the process runs on it (what one leaves on its connection, a temporary table, the next
/// one finds), with the writer's page cache, not the shared pool's default; and closing the
/// database closes it too, after the pool's connections (the last connection to close removes
/// the write-ahead log file, which none does if two close at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writes_go_through_one_connection_with_a_cache_of_its_own() {
    let (path, database, pool) = migrated_sqlite_file().await;
    let pool = &pool;
    let log = shoal_infra::eventlog::SqliteEventLog::new(pool.clone());
    let shared_cache: i64 = sqlx::query_scalar("PRAGMA cache_size")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        shared_cache, -2000,
        "the pool's connections keep SQLite's default"
    );

    let mut first = log.begin_write().await.unwrap();
    let cache: i64 = sqlx::query_scalar("PRAGMA cache_size")
        .fetch_one(&mut *first)
        .await
        .unwrap();
    assert_eq!(
        cache,
        -i64::from(shoal_infra::sqlite_writer::WRITER_CACHE_KIB)
    );
    sqlx::query("CREATE TEMP TABLE IF NOT EXISTS left_by_a_writer (x INTEGER)")
        .execute(&mut *first)
        .await
        .unwrap();
    first.commit().await.unwrap();
    // Readers take every connection of the pool meanwhile: writers do not need one.
    let mut readers = Vec::new();
    while let Some(reader) = pool.try_acquire() {
        readers.push(reader);
    }
    for _ in 0..3 {
        let mut next = log.begin_write().await.unwrap();
        let found: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM temp.sqlite_master WHERE name = 'left_by_a_writer'",
        )
        .fetch_one(&mut *next)
        .await
        .unwrap();
        assert_eq!(
            found, 1,
            "each write transaction runs on the writer's connection"
        );
        next.commit().await.unwrap();
    }
    log.append(one_event("job-1")).await.unwrap();
    drop(readers);
    assert_eq!(log.read_all(LogPosition::START, 10).await.unwrap().len(), 1);

    database.close().await;
    let wal = path.with_file_name(format!(
        "{}-wal",
        path.file_name().unwrap().to_string_lossy()
    ));
    assert!(
        !wal.exists(),
        "every connection, the writer's last, is closed when close returns"
    );
}

/// Readers holding every connection of a file database's pool do not stop its writers: a write
/// does not wait for a connection of the pool (which, taken while holding the write lock, would
/// also have kept every other writer waiting), so it succeeds well within the pool's acquire
/// timeout, and the readers then see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writers_do_not_wait_for_connections_readers_hold() {
    let path = testing::temp_sqlite_path();
    let settings = db::PoolSettings {
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_millis(500),
        ..db::PoolSettings::default()
    };
    let url = DatabaseUrl::parse(&format!("sqlite:{}", path.display())).unwrap();
    let database = Database::connect_with(&url, &settings).await.unwrap();
    database.migrate().await.unwrap();
    let Database::Sqlite(pool) = &database else {
        panic!("expected SQLite");
    };
    let log = database.event_log();
    let readers = [pool.acquire().await.unwrap(), pool.acquire().await.unwrap()];
    for i in 0..5 {
        log.append(one_event(&format!("job-{i}"))).await.unwrap();
    }
    drop(readers);
    assert_eq!(log.read_all(LogPosition::START, 10).await.unwrap().len(), 5);
    database.close().await;
}

#[tokio::test]
async fn sqlite_in_memory_keeps_its_data_across_statements() {
    let database = db::migrate("sqlite::memory:").await.unwrap();
    serves_the_event_log(&database).await;
}

/// The bundled SQLite is built without its memory statistics (`.cargo/config.toml`): with
/// them every allocation of every connection takes one process-wide mutex.
#[tokio::test]
async fn sqlite_is_built_without_memory_statistics() {
    let Database::Sqlite(pool) = db::migrate("sqlite::memory:").await.unwrap() else {
        unreachable!("a sqlite URL opens SQLite");
    };
    let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "{options:?}"
    );
}

#[tokio::test]
async fn postgres_migrates_idempotently() {
    let Some(pool) = testing::fresh_postgres().await else {
        return;
    };
    let database = Database::Postgres(pool);
    database.migrate().await.unwrap();
    serves_the_event_log(&database).await;
}

#[tokio::test]
async fn unknown_scheme_is_a_configuration_error() {
    assert!(matches!(
        Database::connect("mysql://root:secret@localhost/shoal").await,
        Err(DbError::UnsupportedUrl(url)) if !url.contains("secret")
    ));
    assert!("postgresql://h/db".parse::<DatabaseUrl>().is_ok());
}

/// Every connection of a Postgres pool has the configured `statement_timeout`: a statement
/// that runs longer is cancelled (SQLSTATE 57014) instead of holding a connection for ever.
#[tokio::test]
async fn postgres_statements_are_cut_at_the_statement_timeout() {
    let Some(url) = testing::fresh_postgres_url().await else {
        return;
    };
    let settings = db::PoolSettings {
        statement_timeout: Some(std::time::Duration::from_millis(300)),
        ..db::PoolSettings::default()
    };
    let database = Database::connect_with(&DatabaseUrl::parse(&url).unwrap(), &settings)
        .await
        .unwrap();
    let Database::Postgres(pool) = &database else {
        unreachable!()
    };
    let shown: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(shown, "300ms");
    let error = sqlx::query("SELECT pg_sleep(5)")
        .execute(pool)
        .await
        .unwrap_err();
    let code = error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("57014"), "{error}");
    // The default applies without settings.
    let default = Database::connect(&url).await.unwrap();
    let Database::Postgres(pool) = &default else {
        unreachable!()
    };
    let shown: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(shown, "1min");
}

/// SQLite has one writer. A write whose future is dropped while its transaction begins (an
/// aborted task, a timeout, a `select!`) must not leave its connection inside the transaction:
/// back in the pool, that connection would hold the database's write lock for good, and every
/// later write would wait out the busy timeout and fail. The writes here are cancelled after a
/// varying number of polls, a varying time apart (0-390 us: a begin waits for the write lock,
/// then for the writer's connection, then runs `BEGIN IMMEDIATE`), so that some are cut between
/// `BEGIN IMMEDIATE` and the transaction being handed over; after each, a write goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writes_cancelled_as_they_begin_leave_the_database_writable() {
    use std::time::{Duration, Instant};

    let path = testing::temp_sqlite_path();
    let url = DatabaseUrl::parse(&format!("sqlite:{}", path.display())).unwrap();
    let settings = db::PoolSettings {
        max_connections: 2,
        sqlite_busy_timeout: Duration::from_secs(2),
        ..db::PoolSettings::default()
    };
    let database = Database::connect_with(&url, &settings).await.unwrap();
    database.migrate().await.unwrap();
    let Database::Sqlite(pool) = &database else {
        unreachable!()
    };
    let log = shoal_infra::eventlog::SqliteEventLog::new(pool.clone());
    let mut began = 0;
    for i in 0..600u32 {
        {
            let mut begin = std::pin::pin!(log.begin_write());
            for _ in 0..i % 7 {
                if futures::poll!(begin.as_mut()).is_ready() {
                    began += 1;
                    break;
                }
                let pause = Instant::now();
                while pause.elapsed() < Duration::from_micros(u64::from(i % 40) * 10) {
                    std::hint::spin_loop();
                }
            }
        }
        let tx = tokio::time::timeout(Duration::from_secs(10), log.begin_write())
            .await
            .expect("a write begins")
            .unwrap_or_else(|e| panic!("after {i} cancelled writes a write cannot begin: {e}"));
        tx.commit().await.unwrap();
    }
    // Some began before they were dropped (rolled back as a dropped transaction is).
    assert!(began > 0, "no write began before it was dropped");
    database.close().await;
}

/// The same on Postgres, where the harm is quieter: a connection left inside a transaction
/// nothing owns runs the next statements given to it (an acknowledgement, a checkpoint) inside
/// that transaction, unseen by everyone else and holding back the log's read horizon once it
/// writes, until some later transaction on that connection happens to commit it. Appends are
/// cancelled after a varying number of polls; after each, a statement run through the pool
/// must be visible at once from another connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writes_cancelled_as_they_begin_leave_no_transaction_behind() {
    use sqlx::Connection;
    use std::time::{Duration, Instant};

    let Some(test_pool) = testing::fresh_postgres().await else {
        return;
    };
    let options = test_pool.connect_options().as_ref().clone();
    test_pool.close().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone())
        .await
        .unwrap();
    let mut observer = sqlx::PgConnection::connect_with(&options).await.unwrap();
    sqlx::query("CREATE TABLE probe (i int)")
        .execute(&pool)
        .await
        .unwrap();
    let log = Database::Postgres(pool.clone()).event_log();
    for i in 0..300u32 {
        {
            let mut append = std::pin::pin!(log.append(one_event(&format!("probe-{i}"))));
            for _ in 0..i % 7 {
                if futures::poll!(append.as_mut()).is_ready() {
                    break;
                }
                let pause = Instant::now();
                while pause.elapsed() < Duration::from_micros(u64::from(i % 40) * 10) {
                    std::hint::spin_loop();
                }
            }
        }
        sqlx::query("INSERT INTO probe VALUES ($1)")
            .bind(i64::from(i))
            .execute(&pool)
            .await
            .unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM probe")
            .fetch_one(&mut observer)
            .await
            .unwrap();
        assert_eq!(
            seen,
            i64::from(i) + 1,
            "after {i} cancelled appends, a statement through the pool is not visible: its \
             connection was left inside a transaction"
        );
    }
    observer.close().await.unwrap();
    pool.close().await;
}
