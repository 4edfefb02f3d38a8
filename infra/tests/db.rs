//! Connecting by URL and migrating, on both backends.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use shoal_infra::db::{self, Database, DatabaseUrl, DbError};
use shoal_infra::eventlog::{
    AppendBatch, ExpectedVersion, LogPosition, NewEvent, StreamAppend, raw_json,
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

#[tokio::test]
async fn sqlite_in_memory_keeps_its_data_across_statements() {
    let database = db::migrate("sqlite::memory:").await.unwrap();
    serves_the_event_log(&database).await;
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
