//! The event log's contract, one suite run on each backend: SQLite always, Postgres when
//! `SHOAL_TEST_DATABASE_URL` is set (see `shoal_infra::testing`; with
//! `SHOAL_REQUIRE_POSTGRES=1` a missing server fails the Postgres variants instead of skipping
//! them). Each test gets a fresh database.
//!
//! `gap_free_under_concurrency` is the proof of gap-free reading on Postgres; run the ignored
//! `postgres_only::gap_free_fails_without_remedy` to see the same workload defeat a naive
//! `position > last` reader.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use shoal_infra::eventlog::{
    AppendBatch, AppendOutcome, CheckpointUpdate, EventLog, ExpectedVersion, LogError, LogPosition,
    LogResult, NewEvent, PostgresEventLog, RecordedEvent, SqliteEventLog, SqliteWriteTx,
    StreamAppend, TxAppend, raw_json,
};
use shoal_infra::testing;

// ---------------------------------------------------------------------------------------------
// Harness

/// A backend under test: the log as the trait object the suite uses, and the concrete log for
/// what the trait does not offer (raw inserts, holding a transaction open).
struct Harness {
    log: Arc<dyn EventLog>,
    backend: Backend,
}

/// An append whose transaction is still open.
enum OpenAppend {
    Postgres(
        PostgresEventLog,
        sqlx::Transaction<'static, sqlx::Postgres>,
        TxAppend,
    ),
    Sqlite(SqliteEventLog, SqliteWriteTx, TxAppend),
}

impl OpenAppend {
    async fn commit(self) -> LogResult<AppendOutcome> {
        match self {
            OpenAppend::Postgres(log, tx, written) => {
                tx.commit().await?;
                log.committed(&written);
                Ok(written.outcome)
            }
            OpenAppend::Sqlite(log, tx, written) => {
                tx.commit().await?;
                log.committed(&written);
                Ok(written.outcome)
            }
        }
    }
}

#[derive(Clone)]
enum Backend {
    Postgres(PostgresEventLog),
    Sqlite(SqliteEventLog),
}

impl Harness {
    async fn sqlite() -> Harness {
        let log = SqliteEventLog::new(testing::fresh_sqlite().await);
        Harness {
            log: Arc::new(log.clone()),
            backend: Backend::Sqlite(log),
        }
    }

    async fn postgres() -> Option<Harness> {
        let log = PostgresEventLog::new(testing::fresh_postgres().await?);
        Some(Harness {
            log: Arc::new(log.clone()),
            backend: Backend::Postgres(log),
        })
    }

    /// Inserts an event as the log stored one before its `job_id` column (the column empty),
    /// as version 1 of a new stream.
    async fn insert_without_job_id(&self, stream_id: &str, data: &Value) {
        let sql = "INSERT INTO events (stream_id, stream_version, event_type, schema_version, data)
                   VALUES ($1, 1, 'E', 1, $2)";
        match &self.backend {
            Backend::Postgres(log) => {
                sqlx::query(&sql.replace("$2)", "$2::json)"))
                    .bind(stream_id)
                    .bind(data.to_string())
                    .execute(log.pool())
                    .await
                    .unwrap();
            }
            Backend::Sqlite(log) => {
                let mut tx = log.begin_write().await.unwrap();
                sqlx::query(sql)
                    .bind(stream_id)
                    .bind(data.to_string())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }
    }

    fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// The same log (sharing its commit signal) with another poll interval.
    fn with_poll_interval(&self, poll: Duration) -> Arc<dyn EventLog> {
        match &self.backend {
            Backend::Postgres(log) => Arc::new(log.clone().with_poll_interval(poll)),
            Backend::Sqlite(log) => Arc::new(log.clone().with_poll_interval(poll)),
        }
    }

    /// Appends, then keeps the transaction open for `hold` before committing: commit order
    /// then differs from position order, which is what a naive reader trips over.
    async fn append_held(&self, batch: &AppendBatch, hold: Duration) -> LogResult<AppendOutcome> {
        let open = self.open_append(batch).await?;
        tokio::time::sleep(hold).await;
        open.commit().await
    }

    /// Appends inside a transaction and leaves it open (holding its idempotency key, its
    /// stream versions and, on SQLite, the write lock) until `commit`.
    async fn open_append(&self, batch: &AppendBatch) -> LogResult<OpenAppend> {
        match &self.backend {
            Backend::Postgres(log) => {
                let mut tx = log.pool().begin().await?;
                match log.append_in_tx(&mut tx, batch).await {
                    Ok(written) => Ok(OpenAppend::Postgres(log.clone(), tx, written)),
                    Err(error) => {
                        tx.rollback().await?;
                        Err(error)
                    }
                }
            }
            Backend::Sqlite(log) => {
                let mut tx = log.begin_write().await?;
                match log.append_in_tx(&mut tx, batch).await {
                    Ok(written) => Ok(OpenAppend::Sqlite(log.clone(), tx, written)),
                    Err(error) => {
                        tx.rollback().await?;
                        Err(error)
                    }
                }
            }
        }
    }

    /// Waits until every committed event is readable: on Postgres, other tests' transactions
    /// on the same cluster hold readers back for a moment (see `testing::wait_until_readable`).
    async fn settle(&self) {
        if let Backend::Postgres(log) = &self.backend {
            testing::wait_until_readable(log.pool()).await;
        }
    }

    /// Inserts a row by hand, as an older version of Shoal would have written it.
    async fn insert_raw(&self, stream_id: &str, version: i64, schema_version: i32, data: Value) {
        let event_type = "JobSubmitted";
        match &self.backend {
            Backend::Postgres(log) => {
                sqlx::query(
                    "INSERT INTO events
                     (stream_id, stream_version, event_type, schema_version, data, metadata)
                     VALUES ($1, $2, $3, $4, $5, '{}')",
                )
                .bind(stream_id)
                .bind(version)
                .bind(event_type)
                .bind(schema_version)
                .bind(&data)
                .execute(log.pool())
                .await
                .unwrap();
            }
            Backend::Sqlite(log) => {
                sqlx::query(
                    "INSERT INTO events
                     (stream_id, stream_version, event_type, schema_version, data, metadata)
                     VALUES (?1, ?2, ?3, ?4, ?5, '{}')",
                )
                .bind(stream_id)
                .bind(version)
                .bind(event_type)
                .bind(schema_version)
                .bind(data.to_string())
                .execute(log.pool())
                .await
                .unwrap();
            }
        }
    }
}

/// Declares each suite test once per backend: `sqlite::<name>` and `postgres::<name>`.
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(harness) = super::Harness::postgres().await {
                        super::$name(harness).await;
                    }
                }
            )*
        }
    };
}

for_each_backend!(
    append_and_read_one_stream,
    multi_stream_batch_returns_positions_in_input_order,
    read_all_in_batches_in_order,
    conflict_on_stale_expected_version,
    stale_stream_among_others_is_the_conflict_and_nothing_is_written,
    a_batch_of_many_statements_is_one_append,
    a_jobs_events_include_those_from_before_the_job_id_column,
    conflict_on_no_stream_for_an_existing_stream,
    conflict_on_expected_version_beyond_head,
    conflicting_batch_writes_nothing_of_any_stream,
    idempotent_append_replays_the_first_outcome,
    expired_idempotency_keys_are_forgotten,
    concurrent_appends_with_the_same_key_write_once,
    checkpoint_save_and_load,
    append_with_checkpoint_commits_both,
    old_schema_version_reads_back_unchanged,
    subscription_sees_existing_then_new_events,
    bad_input_is_invalid_and_writes_nothing,
    gap_free_under_concurrency,
    read_streams_returns_whole_streams_in_the_order_asked,
    read_positions_returns_the_events_asked_for,
    append_many_writes_the_rest_when_one_batch_conflicts,
    readers_at_the_newest_events_read_them_from_the_database_once_between_them,
);

// ---------------------------------------------------------------------------------------------
// Helpers

fn event(event_type: &str, data: Value) -> NewEvent {
    NewEvent {
        event_type: event_type.into(),
        schema_version: 1,
        data: raw_json(&data),
        metadata: json!({}),
    }
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| event("Happened", json!({ "i": i })))
        .collect()
}

fn stream(stream_id: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> StreamAppend {
    StreamAppend {
        stream_id: stream_id.into(),
        expected,
        events,
    }
}

fn batch(streams: Vec<StreamAppend>) -> AppendBatch {
    AppendBatch {
        streams,
        ..AppendBatch::default()
    }
}

fn single(stream_id: &str, expected: ExpectedVersion, n: usize) -> AppendBatch {
    batch(vec![stream(stream_id, expected, events(n))])
}

async fn read_everything(log: &dyn EventLog) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut after = LogPosition::START;
    loop {
        let page = log.read_all(after, 100).await.unwrap();
        let Some(last) = page.last() else {
            return all;
        };
        after = last.log_position;
        all.extend(page);
    }
}

fn assert_conflict<T: std::fmt::Debug>(result: LogResult<T>, stream_id: &str, expected: i64) {
    match result {
        Err(LogError::Conflict {
            stream_id: s,
            expected: e,
        }) => assert_eq!((s.as_str(), e), (stream_id, expected)),
        other => panic!("expected a conflict on {stream_id} at {expected}, got {other:?}"),
    }
}

fn assert_invalid<T: std::fmt::Debug>(result: LogResult<T>) {
    assert!(
        matches!(result, Err(LogError::Invalid(_))),
        "expected Invalid, got {result:?}"
    );
}

/// Deterministic randomness for the concurrency tests (SplitMix64); the seed is printed and
/// can be replayed with `SHOAL_TEST_SEED`.
struct Rng(u64);

impl Rng {
    fn seed() -> u64 {
        std::env::var("SHOAL_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| uuid::Uuid::now_v7().as_u64_pair().1)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

// ---------------------------------------------------------------------------------------------
// The suite

async fn append_and_read_one_stream(h: Harness) {
    let before = chrono::Utc::now() - chrono::Duration::seconds(60);
    let mut first = event("JobSubmitted", json!({ "name": "thumbnails", "tasks": 3 }));
    first.metadata = json!({ "actor": "alice" });
    let outcome = h
        .log
        .append(batch(vec![stream(
            "job-1",
            ExpectedVersion::NoStream,
            vec![
                first,
                event("TaskEnqueued", json!({ "index": 0 })),
                event("TaskEnqueued", json!({ "index": 1 })),
            ],
        )]))
        .await
        .unwrap();
    assert!(!outcome.replayed);
    assert_eq!(outcome.positions.len(), 3);
    assert!(outcome.positions.windows(2).all(|w| w[0] < w[1]));

    let read = h.log.read_stream("job-1", 0).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        read.iter()
            .map(|e| e.log_position.position)
            .collect::<Vec<_>>(),
        outcome.positions
    );
    assert_eq!(read[0].event_type, "JobSubmitted");
    assert_eq!(read[0].schema_version, 1);
    assert_eq!(
        read[0].data_json(),
        json!({ "name": "thumbnails", "tasks": 3 })
    );
    assert_eq!(read[0].metadata_json(), json!({ "actor": "alice" }));
    assert_eq!(read[1].data_json(), json!({ "index": 0 }));
    assert!(read.iter().all(|e| e.stream_id == "job-1"));
    assert!(read.iter().all(|e| e.recorded_at > before));

    let tail = h.log.read_stream("job-1", 2).await.unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].stream_version, 3);
    assert!(h.log.read_stream("job-2", 0).await.unwrap().is_empty());

    let more = h
        .log
        .append(single("job-1", ExpectedVersion::Exact(3), 1))
        .await
        .unwrap();
    let read = h.log.read_stream("job-1", 3).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].stream_version, 4);
    assert_eq!(read[0].log_position.position, more.positions[0]);
    h.settle().await;
    assert_eq!(h.log.head().await.unwrap(), read[0].log_position);
}

async fn multi_stream_batch_returns_positions_in_input_order(h: Harness) {
    h.log
        .append(single("task-b", ExpectedVersion::NoStream, 2))
        .await
        .unwrap();
    let input = batch(vec![
        stream(
            "task-c",
            ExpectedVersion::NoStream,
            vec![event("C1", json!(1)), event("C2", json!(2))],
        ),
        stream(
            "task-b",
            ExpectedVersion::Exact(2),
            vec![event("B3", json!(3))],
        ),
        stream(
            "task-a",
            ExpectedVersion::NoStream,
            vec![
                event("A1", json!(4)),
                event("A2", json!(5)),
                event("A3", json!(6)),
            ],
        ),
    ]);
    let outcome = h.log.append(input).await.unwrap();
    assert_eq!(outcome.positions.len(), 6);
    assert_eq!(
        outcome.positions.iter().collect::<HashSet<_>>().len(),
        6,
        "positions are distinct"
    );

    // Readers see the batch in the order it was given, at the positions returned.
    h.settle().await;
    let after_first = h.log.read_all(LogPosition::START, 2).await.unwrap();
    let batch_events = h
        .log
        .read_all(after_first.last().unwrap().log_position, 100)
        .await
        .unwrap();
    assert_eq!(
        batch_events
            .iter()
            .map(|e| (e.event_type.as_str(), e.stream_version))
            .collect::<Vec<_>>(),
        [
            ("C1", 1),
            ("C2", 2),
            ("B3", 3),
            ("A1", 1),
            ("A2", 2),
            ("A3", 3)
        ]
    );
    assert_eq!(
        batch_events
            .iter()
            .map(|e| e.log_position.position)
            .collect::<Vec<_>>(),
        outcome.positions
    );
}

async fn read_all_in_batches_in_order(h: Harness) {
    let sizes = [1, 5, 3, 8, 2, 7, 1, 4, 6];
    let mut positions = Vec::new();
    for (i, n) in sizes.into_iter().enumerate() {
        let outcome = h
            .log
            .append(single(&format!("job-{i}"), ExpectedVersion::NoStream, n))
            .await
            .unwrap();
        positions.extend(outcome.positions);
    }
    let total: usize = sizes.iter().sum();

    let mut paged = Vec::new();
    h.settle().await;
    let mut after = LogPosition::START;
    loop {
        let page = h.log.read_all(after, 4).await.unwrap();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        after = last.log_position;
        paged.extend(page);
    }
    assert_eq!(paged.len(), total);
    assert!(
        paged
            .windows(2)
            .all(|w| w[0].log_position < w[1].log_position)
    );
    assert_eq!(
        paged
            .iter()
            .map(|e| e.log_position.position)
            .collect::<Vec<_>>(),
        positions,
        "sequential appends are read in append order"
    );
    let at_once = h.log.read_all(LogPosition::START, 1000).await.unwrap();
    assert_eq!(at_once, paged);
    assert_eq!(h.log.head().await.unwrap(), after);
    assert!(h.log.read_all(after, 10).await.unwrap().is_empty());
}

async fn conflict_on_stale_expected_version(h: Harness) {
    h.log
        .append(single("task-1", ExpectedVersion::NoStream, 2))
        .await
        .unwrap();
    assert_conflict(
        h.log
            .append(single("task-1", ExpectedVersion::Exact(1), 1))
            .await,
        "task-1",
        1,
    );
    assert_eq!(h.log.read_stream("task-1", 0).await.unwrap().len(), 2);
}

/// A group commit's batch: one stream's writer is stale (its next version is taken), the
/// others are right. The append names the stale stream, whatever its place in the batch, and
/// writes nothing of any stream, so the caller can drop it and append the rest.
async fn stale_stream_among_others_is_the_conflict_and_nothing_is_written(h: Harness) {
    for id in ["task-1", "task-2", "task-3"] {
        h.log
            .append(single(id, ExpectedVersion::NoStream, 1))
            .await
            .unwrap();
    }
    h.log
        .append(single("task-2", ExpectedVersion::Exact(1), 1))
        .await
        .unwrap();
    h.settle().await;
    let head = h.log.head().await.unwrap();
    let stale = batch(vec![
        stream("task-1", ExpectedVersion::Exact(1), events(1)),
        stream("task-2", ExpectedVersion::Exact(1), events(1)),
        stream("task-3", ExpectedVersion::Exact(1), events(1)),
    ]);
    assert_conflict(h.log.append(stale).await, "task-2", 1);
    assert_eq!(h.log.head().await.unwrap(), head);
    for (id, versions) in [("task-1", 1), ("task-2", 2), ("task-3", 1)] {
        assert_eq!(
            h.log.read_stream(id, 0).await.unwrap().len(),
            versions,
            "{id}"
        );
    }
    // Without the stale stream, the rest goes in.
    let rest = batch(vec![
        stream("task-1", ExpectedVersion::Exact(1), events(1)),
        stream("task-3", ExpectedVersion::Exact(1), events(1)),
    ]);
    h.log.append(rest).await.unwrap();
    assert_eq!(h.log.read_stream("task-3", 0).await.unwrap().len(), 2);
}

/// A batch bigger than one statement takes (SQLite binds at most 256 rows per statement, see
/// `sqlite_rows`): its events come back in input order, and a stale stream in a later
/// statement still writes nothing of the batch.
async fn a_batch_of_many_statements_is_one_append(h: Harness) {
    let ids: Vec<String> = (0..300).map(|i| format!("task-{i}")).collect();
    let first = batch(
        ids.iter()
            .map(|id| stream(id, ExpectedVersion::NoStream, events(2)))
            .collect(),
    );
    let outcome = h.log.append(first).await.unwrap();
    assert_eq!(outcome.positions.len(), 600);
    assert!(outcome.positions.windows(2).all(|w| w[0] < w[1]));
    h.settle().await;
    let read = h.log.read_all(LogPosition::START, 1000).await.unwrap();
    let order: Vec<(String, i64)> = read
        .iter()
        .map(|e| (e.stream_id.clone(), e.stream_version))
        .collect();
    let expected: Vec<(String, i64)> = ids
        .iter()
        .flat_map(|id| [(id.clone(), 1), (id.clone(), 2)])
        .collect();
    assert_eq!(order, expected);
    let positions: Vec<i64> = read.iter().map(|e| e.log_position.position).collect();
    assert_eq!(positions, outcome.positions);

    h.log
        .append(single("task-290", ExpectedVersion::Exact(2), 1))
        .await
        .unwrap();
    h.settle().await;
    let head = h.log.head().await.unwrap();
    let stale = batch(
        ids.iter()
            .map(|id| stream(id, ExpectedVersion::Exact(2), events(1)))
            .collect(),
    );
    assert_conflict(h.log.append(stale).await, "task-290", 2);
    assert_eq!(h.log.head().await.unwrap(), head);
    assert_eq!(h.log.read_stream("task-0", 0).await.unwrap().len(), 2);
}

/// `read_job` finds a job's events by their `job_id` column, and those appended before the
/// column existed (no `job_id`: inserted here as such a row was) by their JSON field, merged in
/// log order, across pages. A payload whose `job_id` is not a UUID as the platform writes one
/// is found by its text, as before the column.
async fn a_jobs_events_include_those_from_before_the_job_id_column(h: Harness) {
    let job = uuid::Uuid::now_v7();
    let other = uuid::Uuid::now_v7();
    let data = |n: i64| json!({ "job_id": job.to_string(), "n": n });
    let append = |stream_id: &'static str, data: Value| {
        let log = h.log.clone();
        async move {
            log.append(batch(vec![stream(
                stream_id,
                ExpectedVersion::NoStream,
                vec![event("E", data)],
            )]))
            .await
            .unwrap();
        }
    };
    append("a", data(1)).await;
    h.insert_without_job_id("b", &data(2)).await;
    append("c", json!({ "job_id": other.to_string(), "n": 0 })).await;
    append("d", data(3)).await;
    h.insert_without_job_id("e", &data(4)).await;
    append(
        "f",
        json!({ "job_id": job.to_string().to_uppercase(), "n": 9 }),
    )
    .await;
    append("g", data(5)).await;
    h.settle().await;

    let mut seen = Vec::new();
    let mut after = LogPosition::START;
    loop {
        let page = h.log.read_job(job, after, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.log_position;
        seen.extend(page.iter().map(|e| e.data_json()["n"].as_i64().unwrap()));
    }
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    let shouted = job.to_string().to_uppercase();
    let all = h.log.read_all(LogPosition::START, 100).await.unwrap();
    assert_eq!(
        all.iter()
            .filter(|e| e.data_json()["job_id"] == shouted.as_str())
            .count(),
        1
    );
    let others = h.log.read_job(other, LogPosition::START, 10).await.unwrap();
    assert_eq!(others.len(), 1);
}

async fn conflict_on_no_stream_for_an_existing_stream(h: Harness) {
    h.log
        .append(single("task-1", ExpectedVersion::NoStream, 1))
        .await
        .unwrap();
    assert_conflict(
        h.log
            .append(single("task-1", ExpectedVersion::NoStream, 1))
            .await,
        "task-1",
        0,
    );
    assert_conflict(
        h.log
            .append(single("task-1", ExpectedVersion::Exact(0), 1))
            .await,
        "task-1",
        0,
    );
    assert_eq!(h.log.read_stream("task-1", 0).await.unwrap().len(), 1);
}

async fn conflict_on_expected_version_beyond_head(h: Harness) {
    h.log
        .append(single("task-1", ExpectedVersion::NoStream, 2))
        .await
        .unwrap();
    h.settle().await;
    let head = h.log.head().await.unwrap();
    // Would leave a hole in the stream's versions.
    assert_conflict(
        h.log
            .append(single("task-1", ExpectedVersion::Exact(3), 1))
            .await,
        "task-1",
        3,
    );
    assert_conflict(
        h.log
            .append(single("task-1", ExpectedVersion::Exact(5), 2))
            .await,
        "task-1",
        5,
    );
    // A stream that does not exist is not at version 1.
    assert_conflict(
        h.log
            .append(single("task-2", ExpectedVersion::Exact(1), 1))
            .await,
        "task-2",
        1,
    );
    assert_eq!(h.log.head().await.unwrap(), head);
    assert_eq!(h.log.read_stream("task-1", 0).await.unwrap().len(), 2);
    assert!(h.log.read_stream("task-2", 0).await.unwrap().is_empty());
    // Exact(0) is NoStream.
    h.log
        .append(single("task-3", ExpectedVersion::Exact(0), 1))
        .await
        .unwrap();

    // Among streams that do go in (in the first and in the last of several SQLite statements):
    // the same conflict, and nothing of the batch is written.
    h.settle().await;
    let head = h.log.head().await.unwrap();
    for place in [1, 299] {
        let mut streams: Vec<StreamAppend> = (0..300)
            .map(|i| stream(&format!("new-{i}"), ExpectedVersion::NoStream, events(1)))
            .collect();
        streams[place] = stream("task-2", ExpectedVersion::Exact(1), events(1));
        assert_conflict(h.log.append(batch(streams)).await, "task-2", 1);
        assert_eq!(h.log.head().await.unwrap(), head, "{place}");
        assert!(h.log.read_stream("new-0", 0).await.unwrap().is_empty());
    }
}

async fn conflicting_batch_writes_nothing_of_any_stream(h: Harness) {
    h.log
        .append(single("task-b", ExpectedVersion::NoStream, 1))
        .await
        .unwrap();
    h.settle().await;
    let head = h.log.head().await.unwrap();
    let mut conflicting = batch(vec![
        stream("task-a", ExpectedVersion::NoStream, events(2)),
        stream("task-b", ExpectedVersion::NoStream, events(1)),
        stream("task-c", ExpectedVersion::NoStream, events(1)),
    ]);
    conflicting.idempotency_key = Some("retry-me".into());
    conflicting.checkpoint = Some(CheckpointUpdate {
        name: "orchestrator".into(),
        position: head,
    });
    assert_conflict(h.log.append(conflicting.clone()).await, "task-b", 0);
    assert_eq!(h.log.head().await.unwrap(), head);
    assert_eq!(read_everything(&*h.log).await.len(), 1);
    for id in ["task-a", "task-c"] {
        assert!(h.log.read_stream(id, 0).await.unwrap().is_empty());
    }
    assert_eq!(
        h.log.load_checkpoint("orchestrator").await.unwrap(),
        LogPosition::START,
        "the checkpoint of a failed append is not saved"
    );

    // The idempotency key was not used up: the corrected append goes through.
    conflicting.streams[1].expected = ExpectedVersion::Exact(1);
    let outcome = h.log.append(conflicting).await.unwrap();
    assert!(!outcome.replayed);
    assert_eq!(outcome.positions.len(), 4);
    assert_eq!(h.log.load_checkpoint("orchestrator").await.unwrap(), head);
}

async fn idempotent_append_replays_the_first_outcome(h: Harness) {
    let mut first = single("job-1", ExpectedVersion::NoStream, 2);
    first.streams[0].events[0].metadata = json!({ "actor": "alice" });
    first.idempotency_key = Some("submit-42".into());
    let outcome = h.log.append(first).await.unwrap();
    assert!(!outcome.replayed);

    // Same key, different content: nothing is written, the first result comes back.
    let mut second = single("job-2", ExpectedVersion::NoStream, 3);
    second.idempotency_key = Some("submit-42".into());
    let replay = h.log.append(second.clone()).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.positions, outcome.positions);
    let again = h.log.append(second).await.unwrap();
    assert_eq!(again, replay);

    h.settle().await;
    let all = read_everything(&*h.log).await;
    assert_eq!(all.len(), 2);
    assert!(h.log.read_stream("job-2", 0).await.unwrap().is_empty());
    // The key is recorded with the events.
    assert_eq!(
        all[0].metadata_json(),
        json!({ "actor": "alice", "idempotency_key": "submit-42" })
    );
    assert_eq!(
        all[1].metadata_json(),
        json!({ "idempotency_key": "submit-42" })
    );
}

async fn expired_idempotency_keys_are_forgotten(h: Harness) {
    for (stream, key) in [("job-1", "k1"), ("job-2", "k2"), ("job-3", "k3")] {
        let mut batch = single(stream, ExpectedVersion::NoStream, 1);
        batch.idempotency_key = Some(key.into());
        assert!(!h.log.append(batch).await.unwrap().replayed);
    }
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let soon = chrono::Utc::now() + chrono::Duration::seconds(5);
    // Keys used after the bound are kept.
    assert_eq!(
        h.log
            .forget_idempotency_keys(an_hour_ago, 100)
            .await
            .unwrap(),
        0
    );
    // At most `limit` at a time.
    assert_eq!(h.log.forget_idempotency_keys(soon, 2).await.unwrap(), 2);
    assert_eq!(h.log.forget_idempotency_keys(soon, 2).await.unwrap(), 1);
    assert_eq!(h.log.forget_idempotency_keys(soon, 2).await.unwrap(), 0);
    assert!(matches!(
        h.log.forget_idempotency_keys(soon, 0).await,
        Err(LogError::Invalid(_))
    ));

    // A forgotten key is free again: the same append writes anew instead of replaying.
    let mut again = single("job-4", ExpectedVersion::NoStream, 1);
    again.idempotency_key = Some("k1".into());
    let outcome = h.log.append(again.clone()).await.unwrap();
    assert!(!outcome.replayed);
    assert!(h.log.append(again).await.unwrap().replayed);
    h.settle().await;
    assert_eq!(read_everything(&*h.log).await.len(), 4);
}

async fn concurrent_appends_with_the_same_key_write_once(h: Harness) {
    let h = Arc::new(h);
    // One append holds its transaction open; a second with the same key arrives meanwhile
    // and must wait for it, then replay its result.
    let mut slow = single("job-slow", ExpectedVersion::NoStream, 3);
    slow.idempotency_key = Some("same-key".into());
    let mut fast = single("job-fast", ExpectedVersion::NoStream, 1);
    fast.idempotency_key = Some("same-key".into());
    let open = h.open_append(&slow).await.unwrap();
    let second = {
        let log = h.log.clone();
        tokio::spawn(async move { log.append(fast).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "the second append waits for the first"
    );
    let first = open.commit().await.unwrap();
    let second = second.await.unwrap().unwrap();
    assert!(!first.replayed);
    assert!(second.replayed);
    assert_eq!(second.positions, first.positions);
    assert!(h.log.read_stream("job-fast", 0).await.unwrap().is_empty());

    // Many at once, each to its own stream: exactly one writes.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let log = h.log.clone();
            let mut b = single(&format!("job-race-{i}"), ExpectedVersion::NoStream, 2);
            b.idempotency_key = Some("race-key".into());
            tokio::spawn(async move { log.append(b).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.push(racer.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| !o.replayed).count(), 1);
    assert!(
        outcomes
            .iter()
            .all(|o| o.positions == outcomes[0].positions)
    );
    h.settle().await;
    assert_eq!(read_everything(&*h.log).await.len(), 3 + 2);
}

async fn checkpoint_save_and_load(h: Harness) {
    assert_eq!(
        h.log.load_checkpoint("projector").await.unwrap(),
        LogPosition::START
    );
    let p1 = LogPosition {
        commit: 7,
        position: 3,
    };
    let p2 = LogPosition {
        commit: 9,
        position: 12,
    };
    h.log.save_checkpoint("projector", p1).await.unwrap();
    assert_eq!(h.log.load_checkpoint("projector").await.unwrap(), p1);
    h.log.save_checkpoint("projector", p2).await.unwrap();
    h.log.save_checkpoint("orchestrator", p1).await.unwrap();
    assert_eq!(h.log.load_checkpoint("projector").await.unwrap(), p2);
    assert_eq!(h.log.load_checkpoint("orchestrator").await.unwrap(), p1);
    assert_invalid(h.log.save_checkpoint("", p1).await);
    assert_invalid(h.log.load_checkpoint("").await);
}

async fn append_with_checkpoint_commits_both(h: Harness) {
    h.log
        .append(single("job-1", ExpectedVersion::NoStream, 1))
        .await
        .unwrap();
    h.settle().await;
    let consumed = h.log.head().await.unwrap();
    let mut output = single("task-1", ExpectedVersion::NoStream, 2);
    output.checkpoint = Some(CheckpointUpdate {
        name: "orchestrator".into(),
        position: consumed,
    });
    h.log.append(output).await.unwrap();
    assert_eq!(
        h.log.load_checkpoint("orchestrator").await.unwrap(),
        consumed
    );
    assert_eq!(h.log.read_stream("task-1", 0).await.unwrap().len(), 2);

    // A consumer with no output moves its checkpoint the same way.
    h.settle().await;
    let later = h.log.head().await.unwrap();
    let outcome = h
        .log
        .append(AppendBatch {
            checkpoint: Some(CheckpointUpdate {
                name: "orchestrator".into(),
                position: later,
            }),
            ..AppendBatch::default()
        })
        .await
        .unwrap();
    assert!(outcome.positions.is_empty());
    assert_eq!(h.log.load_checkpoint("orchestrator").await.unwrap(), later);
}

async fn old_schema_version_reads_back_unchanged(h: Harness) {
    h.insert_raw("job-1", 1, 1, json!({ "legacy_name": "old" }))
        .await;
    let mut newer = event("JobStarted", json!({ "name": "new" }));
    newer.schema_version = 3;
    h.log
        .append(batch(vec![stream(
            "job-1",
            ExpectedVersion::Exact(1),
            vec![newer],
        )]))
        .await
        .unwrap();
    let read = h.log.read_stream("job-1", 0).await.unwrap();
    assert_eq!(
        read.iter()
            .map(|e| (e.stream_version, e.schema_version))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 3)]
    );
    assert_eq!(read[0].data_json(), json!({ "legacy_name": "old" }));
    h.settle().await;
    assert_eq!(read_everything(&*h.log).await, read);
}

async fn subscription_sees_existing_then_new_events(h: Harness) {
    // Polling every 10 s: an event arriving within 1 s was delivered by the commit signal.
    let log = h.with_poll_interval(Duration::from_secs(10));
    log.append(single("job-1", ExpectedVersion::NoStream, 3))
        .await
        .unwrap();
    h.settle().await;
    let existing = read_everything(&*log).await;

    let mut from_start = log.subscribe(LogPosition::START, 2);
    let mut from_second = log.subscribe(existing[1].log_position, 2);
    for expected in &existing {
        let got = tokio::time::timeout(Duration::from_secs(5), from_start.next())
            .await
            .expect("existing events arrive at once")
            .unwrap()
            .unwrap();
        assert_eq!(&got, expected);
    }
    let got = tokio::time::timeout(Duration::from_secs(5), from_second.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, existing[2]);

    // Both are caught up and waiting now.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let appended_at = Instant::now();
    log.append(single("job-1", ExpectedVersion::Exact(3), 1))
        .await
        .unwrap();
    // On Postgres the event becomes readable only once older transactions on the cluster (of
    // other tests, say) have ended; the wake-up is measured from then.
    h.settle().await;
    let readable_at = Instant::now();
    for subscription in [&mut from_start, &mut from_second] {
        let got = tokio::time::timeout(Duration::from_secs(1), subscription.next())
            .await
            .expect("a commit wakes the subscription within 1 s of being readable")
            .unwrap()
            .unwrap();
        assert_eq!((got.stream_id.as_str(), got.stream_version), ("job-1", 4));
    }
    eprintln!(
        "new event delivered {:?} after its append returned ({:?} after it was readable)",
        appended_at.elapsed(),
        readable_at.elapsed()
    );
}

async fn bad_input_is_invalid_and_writes_nothing(h: Harness) {
    assert_invalid(h.log.append(single("", ExpectedVersion::NoStream, 1)).await);
    assert_invalid(
        h.log
            .append(single("job-1", ExpectedVersion::NoStream, 0))
            .await,
    );
    assert_invalid(
        h.log
            .append(single("job-1", ExpectedVersion::Exact(-1), 1))
            .await,
    );
    // One bad stream spoils the batch.
    assert_invalid(
        h.log
            .append(batch(vec![
                stream("job-1", ExpectedVersion::NoStream, events(2)),
                stream("job-2", ExpectedVersion::NoStream, vec![]),
            ]))
            .await,
    );
    assert_invalid(
        h.log
            .append(batch(vec![
                stream("job-1", ExpectedVersion::NoStream, events(1)),
                stream("job-1", ExpectedVersion::Exact(1), events(1)),
            ]))
            .await,
    );
    let mut bad_metadata = single("job-1", ExpectedVersion::NoStream, 1);
    bad_metadata.streams[0].events[0].metadata = json!("not an object");
    assert_invalid(h.log.append(bad_metadata).await);
    let mut nul = single("job-1", ExpectedVersion::NoStream, 1);
    nul.streams[0].events[0].data = raw_json(&json!({ "name": "a\u{0}b" }));
    assert_invalid(h.log.append(nul).await);
    let mut empty_type = single("job-1", ExpectedVersion::NoStream, 1);
    empty_type.streams[0].events[0].event_type = String::new();
    assert_invalid(h.log.append(empty_type).await);
    assert_invalid(h.log.read_all(LogPosition::START, 0).await);
    assert_invalid(h.log.read_stream("", 0).await);

    assert_eq!(h.log.head().await.unwrap(), LogPosition::START);
    assert!(read_everything(&*h.log).await.is_empty());

    // An empty batch is fine, and writes nothing.
    let outcome = h.log.append(AppendBatch::default()).await.unwrap();
    assert_eq!(outcome, AppendOutcome::default());
    assert_eq!(h.log.head().await.unwrap(), LogPosition::START);
}

// ---------------------------------------------------------------------------------------------
// Gap-free reading under concurrent writers

/// What a reader saw while concurrent writers appended, and what was committed in the end.
struct ConcurrentRun {
    /// Every position an append returned.
    appended: HashSet<i64>,
    /// What the first concurrent reader returned, in order.
    seen: Vec<LogPosition>,
    /// What the other concurrent readers (of the same log) returned, each in order.
    also_seen: Vec<Vec<LogPosition>>,
    /// A full read after all writers finished.
    full: Vec<RecordedEvent>,
}

impl ConcurrentRun {
    fn missed(&self) -> usize {
        let seen: HashSet<_> = self.seen.iter().map(|p| p.position).collect();
        self.full
            .iter()
            .filter(|e| !seen.contains(&e.log_position.position))
            .count()
    }
}

const WRITERS: usize = 8;
const APPENDS_PER_WRITER: usize = 25;

/// `WRITERS` tasks append batches of 1..=50 events over 1..=3 streams (new ones, or their own
/// earlier ones at the right version); about half of the appends hold their transaction open
/// for a while after inserting, so commit order differs from position order. Meanwhile
/// `reader` reads from where it left off, as fast as it can. `settle` says when the reader
/// may stop once the writers are done: with the remedy it reads until it has everything (or
/// 30 s pass); a naive reader stops at its first empty read. `readers` tasks read `reader`
/// alike (sharing what the log keeps of its newest events for its readers).
async fn run_concurrent_writers(
    h: Arc<Harness>,
    reader: Arc<dyn EventLog>,
    readers: usize,
    stop_at_first_empty_read: bool,
) -> ConcurrentRun {
    let seed = Rng::seed();
    eprintln!("concurrency run: seed {seed} (set SHOAL_TEST_SEED to replay)");
    let max_hold_ms = if h.is_postgres() { 20 } else { 3 };
    let writers_done = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicUsize::new(0));

    let reading: Vec<_> = (0..readers)
        .map(|_| {
            let writers_done = writers_done.clone();
            let total = total.clone();
            let reader = reader.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut after = LogPosition::START;
                let mut done_since: Option<Instant> = None;
                loop {
                    let page = reader.read_all(after, 97).await.unwrap();
                    if let Some(last) = page.last() {
                        after = last.log_position;
                        seen.extend(page.iter().map(|e| e.log_position));
                        continue;
                    }
                    if writers_done.load(Ordering::SeqCst) {
                        let since = *done_since.get_or_insert_with(Instant::now);
                        if stop_at_first_empty_read
                            || seen.len() >= total.load(Ordering::SeqCst)
                            || since.elapsed() > Duration::from_secs(30)
                        {
                            return seen;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let h = h.clone();
            tokio::spawn(async move {
                let mut rng = Rng(seed ^ (w as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
                let mut own: Vec<(String, i64)> = Vec::new();
                let mut appended = Vec::new();
                for a in 0..APPENDS_PER_WRITER {
                    let n = rng.between(1, 50) as usize;
                    let k = (rng.between(1, 3) as usize).min(n);
                    let mut used = HashSet::new();
                    let mut streams = Vec::new();
                    for s in 0..k {
                        let count = if s + 1 == k { n - (k - 1) } else { 1 };
                        let reuse = !own.is_empty() && rng.chance(50);
                        let slot = if reuse {
                            let i = rng.between(0, own.len() as u64 - 1) as usize;
                            if used.insert(i) { Some(i) } else { None }
                        } else {
                            None
                        };
                        let (id, expected, slot) = match slot {
                            Some(i) => (own[i].0.clone(), ExpectedVersion::Exact(own[i].1), i),
                            None => {
                                own.push((format!("task-w{w}-a{a}-s{s}"), 0));
                                used.insert(own.len() - 1);
                                (
                                    own.last().unwrap().0.clone(),
                                    ExpectedVersion::NoStream,
                                    own.len() - 1,
                                )
                            }
                        };
                        streams.push((slot, stream(&id, expected, events(count))));
                    }
                    let b = batch(streams.iter().map(|(_, s)| s.clone()).collect());
                    let hold = if rng.chance(50) {
                        Duration::from_millis(rng.between(0, max_hold_ms))
                    } else {
                        Duration::ZERO
                    };
                    let outcome = h.append_held(&b, hold).await.unwrap();
                    assert_eq!(outcome.positions.len(), n);
                    for (slot, s) in &streams {
                        own[*slot].1 += s.events.len() as i64;
                    }
                    appended.extend(outcome.positions);
                    // Let the other writers and the reader interleave.
                    tokio::task::yield_now().await;
                }
                appended
            })
        })
        .collect();

    let mut appended = HashSet::new();
    for writer in writers {
        for position in writer.await.unwrap() {
            assert!(
                appended.insert(position),
                "position {position} returned twice"
            );
        }
    }
    total.store(appended.len(), Ordering::SeqCst);
    writers_done.store(true, Ordering::SeqCst);
    let mut seen_by = Vec::new();
    for reader in reading {
        seen_by.push(reader.await.unwrap());
    }
    let seen = seen_by.remove(0);
    h.settle().await;
    let full = read_everything(&*h.log).await;
    ConcurrentRun {
        appended,
        seen,
        also_seen: seen_by,
        full,
    }
}

/// Readers woken by the same commit (in `shoal dev`, the orchestrator and both projections)
/// read the new events from the database once between them (each still asks it whether more
/// follow), and each gets all of them.
async fn readers_at_the_newest_events_read_them_from_the_database_once_between_them(h: Harness) {
    let read_from_database = || match &h.backend {
        Backend::Postgres(log) => log.events_read_from_database(),
        Backend::Sqlite(log) => log.events_read_from_database(),
    };
    let mut after = LogPosition::START;
    for round in 0..3 {
        let streams = (0..10)
            .map(|i| {
                stream(
                    &format!("s-{round}-{i}"),
                    ExpectedVersion::NoStream,
                    events(1),
                )
            })
            .collect();
        let appended = h.log.append(batch(streams)).await.unwrap().positions;
        h.settle().await;
        let before = read_from_database();
        let barrier = Arc::new(tokio::sync::Barrier::new(3));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (log, barrier) = (h.log.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    log.read_all(after, 100).await.unwrap()
                })
            })
            .collect();
        for reader in readers {
            let read = reader.await.unwrap();
            let positions: Vec<i64> = read.iter().map(|r| r.log_position.position).collect();
            assert_eq!(positions, appended, "round {round}");
            after = read.last().unwrap().log_position;
        }
        let rows = read_from_database() - before;
        assert_eq!(
            rows, 10,
            "round {round}: 10 new events, {rows} read from the database"
        );
    }
}

async fn gap_free_under_concurrency(h: Harness) {
    let h = Arc::new(h);
    let started = Instant::now();
    // Three readers of one log, as the orchestrator and both projections of `shoal dev` read
    // it: what one reads from the database serves the others (`tail`), still gap-free.
    let run = run_concurrent_writers(h.clone(), h.log.clone(), 3, false).await;
    eprintln!(
        "{} events in {} appends by {WRITERS} writers in {:?}; reader saw {}, missed {}",
        run.full.len(),
        WRITERS * APPENDS_PER_WRITER,
        started.elapsed(),
        run.seen.len(),
        run.missed()
    );

    // Everything committed is in the log, once.
    let full_positions: Vec<i64> = run.full.iter().map(|e| e.log_position.position).collect();
    assert_eq!(full_positions.len(), run.appended.len());
    assert_eq!(
        full_positions.iter().copied().collect::<HashSet<_>>(),
        run.appended
    );
    assert!(
        run.full
            .windows(2)
            .all(|w| w[0].log_position < w[1].log_position),
        "the log is read in strictly increasing order"
    );

    // The concurrent reader saw every event exactly once, in the final order.
    let seen_once: HashSet<_> = run.seen.iter().collect();
    assert_eq!(seen_once.len(), run.seen.len(), "no event is read twice");
    assert_eq!(run.missed(), 0, "no event is skipped");
    let full_order: Vec<LogPosition> = run.full.iter().map(|e| e.log_position).collect();
    assert_eq!(run.seen, full_order, "the reader saw the final order");
    for (i, seen) in run.also_seen.iter().enumerate() {
        assert_eq!(seen, &full_order, "reader {} saw the final order", i + 2);
    }

    // And no stream has a hole in its versions.
    let mut versions: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for e in &run.full {
        versions
            .entry(&e.stream_id)
            .or_default()
            .push(e.stream_version);
    }
    for (stream_id, mut v) in versions {
        v.sort_unstable();
        assert_eq!(v, (1..=v.len() as i64).collect::<Vec<_>>(), "{stream_id}");
    }
}

// ---------------------------------------------------------------------------------------------
// Postgres only

mod postgres_only {
    use super::*;

    async fn harness() -> Option<(Harness, PostgresEventLog)> {
        let h = Harness::postgres().await?;
        let Backend::Postgres(log) = h.backend.clone() else {
            unreachable!()
        };
        Some((h, log))
    }

    /// The mechanism, step by step: a transaction that is still open holds readers back, so
    /// an event committed after it (at a higher position) is not read before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reader_waits_for_an_older_open_transaction() {
        let Some((h, log)) = harness().await else {
            return;
        };
        let mut slow = log.pool().begin().await.unwrap();
        let written = log
            .append_in_tx(
                &mut slow,
                &single("task-slow", ExpectedVersion::NoStream, 1),
            )
            .await
            .unwrap();
        h.log
            .append(single("task-fast", ExpectedVersion::NoStream, 1))
            .await
            .unwrap();
        assert!(
            h.log
                .read_all(LogPosition::START, 10)
                .await
                .unwrap()
                .is_empty(),
            "nothing is readable while an older transaction may still commit"
        );
        assert_eq!(h.log.head().await.unwrap(), LogPosition::START);

        slow.commit().await.unwrap();
        log.committed(&written);
        // Other tests' transactions on the same cluster may hold readers back briefly too.
        let deadline = Instant::now() + Duration::from_secs(10);
        let read = loop {
            let read = h.log.read_all(LogPosition::START, 10).await.unwrap();
            if read.len() == 2 || Instant::now() > deadline {
                break read;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(
            read.iter()
                .map(|e| e.stream_id.as_str())
                .collect::<Vec<_>>(),
            ["task-slow", "task-fast"],
            "read in transaction order, not position order"
        );
        assert!(read[0].log_position.position < read[1].log_position.position);
    }

    /// Why the remedy is needed, deterministically: the naive reader passes the open
    /// transaction's event and never comes back for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn naive_reader_skips_an_event_that_commits_late() {
        let Some((h, log)) = harness().await else {
            return;
        };
        let naive = log.clone().naive_reading_for_tests(true);
        let mut slow = log.pool().begin().await.unwrap();
        let _ = log
            .append_in_tx(
                &mut slow,
                &single("task-slow", ExpectedVersion::NoStream, 1),
            )
            .await
            .unwrap();
        h.log
            .append(single("task-fast", ExpectedVersion::NoStream, 1))
            .await
            .unwrap();
        let first = naive.read_all(LogPosition::START, 10).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].stream_id, "task-fast");
        slow.commit().await.unwrap();
        let next = naive.read_all(first[0].log_position, 10).await.unwrap();
        assert!(next.is_empty(), "the naive reader never sees task-slow");
        h.settle().await;
        assert_eq!(read_everything(&*h.log).await.len(), 2);
    }

    /// Two appends that take the same streams in opposite orders deadlock; the one Postgres
    /// aborts is a `Conflict` (retry after re-reading), not a database error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deadlock_between_overlapping_appends_is_a_conflict() {
        let Some((h, log)) = harness().await else {
            return;
        };
        let mut second = log.pool().begin().await.unwrap();
        let _ = log
            .append_in_tx(&mut second, &single("task-b", ExpectedVersion::NoStream, 1))
            .await
            .unwrap();
        // Inserts task-a, then waits for task-b, which `second` holds.
        let first = {
            let log = h.log.clone();
            tokio::spawn(async move {
                log.append(batch(vec![
                    stream("task-a", ExpectedVersion::NoStream, events(1)),
                    stream("task-b", ExpectedVersion::NoStream, events(1)),
                ]))
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Now `second` waits for task-a, which `first` holds: a deadlock.
        let second_result = log
            .append_in_tx(&mut second, &single("task-a", ExpectedVersion::NoStream, 1))
            .await;
        let second_ok = second_result.is_ok();
        if second_ok {
            second.commit().await.unwrap();
        } else {
            second.rollback().await.unwrap();
        }
        let first_result = first.await.unwrap();
        let conflicts = [
            matches!(first_result, Err(LogError::Conflict { .. })),
            matches!(second_result, Err(LogError::Conflict { .. })),
        ];
        assert!(
            (first_result.is_ok() || conflicts[0]) && (second_ok || conflicts[1]),
            "only conflicts: {first_result:?} / {second_result:?}"
        );
        assert_eq!(
            conflicts.iter().filter(|c| **c).count(),
            1,
            "exactly one side loses: {first_result:?} / {second_result:?}"
        );
    }

    /// Another process's append wakes a subscription through LISTEN/NOTIFY.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscription_wakes_on_another_process_append() {
        let Some((_, log)) = harness().await else {
            return;
        };
        // Two instances share no in-process signal, as two processes would not.
        let here =
            PostgresEventLog::new(log.pool().clone()).with_poll_interval(Duration::from_secs(10));
        let elsewhere = PostgresEventLog::new(log.pool().clone());
        let mut subscription = here.subscribe(LogPosition::START, 10);
        let nothing = tokio::time::timeout(Duration::from_millis(300), subscription.next()).await;
        assert!(nothing.is_err(), "nothing to deliver yet");

        let appended_at = Instant::now();
        elsewhere
            .append(single("job-1", ExpectedVersion::NoStream, 1))
            .await
            .unwrap();
        testing::wait_until_readable(log.pool()).await;
        let got = tokio::time::timeout(Duration::from_secs(1), subscription.next())
            .await
            .expect("NOTIFY wakes the subscription within 1 s of the event being readable")
            .unwrap()
            .unwrap();
        assert_eq!(got.stream_id, "job-1");
        eprintln!(
            "delivered through NOTIFY {:?} after the append returned",
            appended_at.elapsed()
        );
    }

    /// The concurrency test with the naive reader: it must miss events. Ignored because it
    /// demonstrates a failure; run it with `--ignored --nocapture` to see how many.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "demonstrates that the naive reader loses events"]
    async fn gap_free_fails_without_remedy() {
        let Some((h, log)) = harness().await else {
            return;
        };
        let naive: Arc<dyn EventLog> = Arc::new(log.naive_reading_for_tests(true));
        let run = run_concurrent_writers(Arc::new(h), naive, 1, true).await;
        let seen: HashSet<_> = run.seen.iter().map(|p| p.position).collect();
        let full_order: Vec<LogPosition> = run.full.iter().map(|e| e.log_position).collect();
        eprintln!(
            "naive reader: {} of {} committed events seen, {} missed forever; \
             order equals the final order: {}",
            seen.len(),
            run.full.len(),
            run.missed(),
            run.seen == full_order
        );
        assert_eq!(run.full.len(), run.appended.len());
        assert!(
            run.missed() > 0,
            "the naive reader was expected to skip events"
        );
    }
}

async fn read_streams_returns_whole_streams_in_the_order_asked(h: Harness) {
    let log = h.log.as_ref();
    log.append(single("s-a", ExpectedVersion::NoStream, 2))
        .await
        .unwrap();
    log.append(single("s-b", ExpectedVersion::NoStream, 3))
        .await
        .unwrap();
    let read = log
        .read_streams(&["s-b".into(), "s-missing".into(), "s-a".into()])
        .await
        .unwrap();
    let seen: Vec<(&str, i64)> = read
        .iter()
        .map(|e| (e.stream_id.as_str(), e.stream_version))
        .collect();
    assert_eq!(
        seen,
        [("s-b", 1), ("s-b", 2), ("s-b", 3), ("s-a", 1), ("s-a", 2)]
    );
    assert!(log.read_streams(&[]).await.unwrap().is_empty());
    assert_invalid(log.read_streams(&[String::new()]).await);
}

async fn read_positions_returns_the_events_asked_for(h: Harness) {
    let log = h.log.as_ref();
    let a = log
        .append(single("p-a", ExpectedVersion::NoStream, 2))
        .await
        .unwrap();
    let b = log
        .append(single("p-b", ExpectedVersion::NoStream, 1))
        .await
        .unwrap();
    let read = log
        .read_positions(&[b.positions[0], 999_999, a.positions[1]])
        .await
        .unwrap();
    let seen: Vec<(&str, i64, i64)> = read
        .iter()
        .map(|e| {
            (
                e.stream_id.as_str(),
                e.stream_version,
                e.log_position.position,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("p-b", 1, b.positions[0]), ("p-a", 2, a.positions[1])]
    );
    assert!(log.read_positions(&[]).await.unwrap().is_empty());
}

async fn append_many_writes_the_rest_when_one_batch_conflicts(h: Harness) {
    let log = h.log.as_ref();
    log.append(single("m-taken", ExpectedVersion::NoStream, 1))
        .await
        .unwrap();
    let results = log
        .append_many(vec![
            single("m-1", ExpectedVersion::NoStream, 2),
            // Stale: the stream is at version 1 already.
            single("m-taken", ExpectedVersion::NoStream, 1),
            batch(vec![
                stream("m-2", ExpectedVersion::NoStream, events(1)),
                stream("m-3", ExpectedVersion::NoStream, events(1)),
            ]),
        ])
        .await;
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().unwrap().positions.len(), 2);
    assert!(
        matches!(results[1], Err(LogError::Conflict { .. })),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2].as_ref().unwrap().positions.len(), 2);
    for id in ["m-1", "m-2", "m-3"] {
        assert!(
            !log.read_stream(id, 0).await.unwrap().is_empty(),
            "{id} was not written"
        );
    }
    assert_eq!(log.read_stream("m-taken", 0).await.unwrap().len(), 1);

    // A stream in two batches, or a batch with a key, is refused on its own.
    let results = log
        .append_many(vec![
            single("m-4", ExpectedVersion::NoStream, 1),
            AppendBatch {
                idempotency_key: Some("k".into()),
                ..single("m-5", ExpectedVersion::NoStream, 1)
            },
        ])
        .await;
    assert!(results[0].is_ok());
    assert_invalid(results.into_iter().nth(1).unwrap());
}
