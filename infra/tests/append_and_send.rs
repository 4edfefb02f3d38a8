//! `EventLog::append_and_send`: an append and its task-queue rows in one transaction; and
//! `EventLog::append_many_and_ack`: a group commit and the deletion of its handled messages in
//! one transaction (ADR 31). On each backend (SQLite always, Postgres when `SHOAL_TEST_DATABASE_URL` is set; see
//! `shoal_infra::testing`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shoal_infra::db::Database;
use shoal_infra::eventlog::{
    AppendBatch, EventLog, ExpectedVersion, LogError, NewEvent, StreamAppend, raw_json,
};
use shoal_infra::queue::{OutgoingMessage, Receipt, SqlQueue, TaskMessage, TaskQueue};
use shoal_infra::testing;
use uuid::Uuid;

struct Harness {
    log: Arc<dyn EventLog>,
    queue: SqlQueue,
}

impl Harness {
    fn on(db: &Database) -> Harness {
        Harness {
            log: db.event_log(),
            queue: SqlQueue::for_database(db),
        }
    }

    async fn queued(&self) -> u64 {
        self.queue.depth().await.unwrap().visible
    }
}

fn task_append(stream_id: &str, expected: ExpectedVersion) -> StreamAppend {
    StreamAppend {
        stream_id: stream_id.into(),
        expected,
        events: vec![NewEvent {
            event_type: "TaskEnqueued".into(),
            schema_version: 1,
            data: raw_json(&json!({ "n": 1 })),
            metadata: json!({ "queued": true }),
        }],
    }
}

fn message(job_id: Uuid, task_id: Uuid) -> OutgoingMessage {
    OutgoingMessage {
        body: TaskMessage {
            task_id,
            job_id,
            task_index: 0,
            parameters: json!({}),
            job_type: "noop".into(),
            attempt: 1,
            stream_version: 1,
            max_attempts: 3,
            timeout_seconds: 60,
            not_before: None,
            traceparent: None,
            previous_attempt_traceparent: None,
            fallback_handler: None,
        },
        delay: Duration::ZERO,
    }
}

async fn events_and_messages_commit_together(db: Database) {
    let h = Harness::on(&db);
    let job_id = Uuid::now_v7();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let outcome = h
        .log
        .append_and_send(
            AppendBatch {
                streams: vec![
                    task_append("task-a", ExpectedVersion::NoStream),
                    task_append("task-b", ExpectedVersion::NoStream),
                ],
                ..AppendBatch::default()
            },
            vec![message(job_id, a), message(job_id, b)],
        )
        .await
        .unwrap();
    assert_eq!(outcome.positions.len(), 2);
    assert_eq!(h.queued().await, 2);
    let delivered = h
        .queue
        .receive(10, Duration::from_secs(60), Duration::ZERO)
        .await
        .unwrap();
    let mut ids: Vec<Uuid> = delivered
        .iter()
        .map(|d| d.body.as_ref().unwrap().task_id)
        .collect();
    ids.sort_unstable();
    let mut expected = vec![a, b];
    expected.sort_unstable();
    assert_eq!(ids, expected);

    // A conflicting append writes neither its events nor its messages.
    let c = Uuid::now_v7();
    let conflict = h
        .log
        .append_and_send(
            AppendBatch {
                streams: vec![
                    task_append("task-c", ExpectedVersion::NoStream),
                    task_append("task-a", ExpectedVersion::NoStream),
                ],
                ..AppendBatch::default()
            },
            vec![message(job_id, c)],
        )
        .await;
    assert!(
        matches!(conflict, Err(LogError::Conflict { ref stream_id, .. }) if stream_id == "task-a"),
        "{conflict:?}"
    );
    assert!(h.log.read_stream("task-c", 0).await.unwrap().is_empty());
    assert_eq!(h.queue.depth().await.unwrap().visible, 0, "no message of c");

    // A replayed idempotency key writes nothing again.
    let keyed = || AppendBatch {
        streams: vec![task_append("task-d", ExpectedVersion::NoStream)],
        idempotency_key: Some("once".into()),
        ..AppendBatch::default()
    };
    let d = Uuid::now_v7();
    let first = h
        .log
        .append_and_send(keyed(), vec![message(job_id, d)])
        .await
        .unwrap();
    assert!(!first.replayed);
    h.queue
        .receive(10, Duration::from_secs(60), Duration::ZERO)
        .await
        .unwrap();
    let again = h
        .log
        .append_and_send(keyed(), vec![message(job_id, Uuid::now_v7())])
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.positions, first.positions);
    assert_eq!(h.queued().await, 0, "the replay queued nothing");
}

async fn a_message_queued_already_is_skipped(db: Database) {
    let h = Harness::on(&db);
    let job_id = Uuid::now_v7();
    let (queued, fresh) = (Uuid::now_v7(), Uuid::now_v7());
    h.queue.send(vec![message(job_id, queued)]).await.unwrap();
    h.log
        .append_and_send(
            AppendBatch {
                streams: vec![
                    task_append("task-queued", ExpectedVersion::NoStream),
                    task_append("task-fresh", ExpectedVersion::NoStream),
                ],
                ..AppendBatch::default()
            },
            vec![message(job_id, queued), message(job_id, fresh)],
        )
        .await
        .unwrap();
    assert_eq!(h.log.read_stream("task-queued", 0).await.unwrap().len(), 1);
    assert_eq!(h.log.read_stream("task-fresh", 0).await.unwrap().len(), 1);
    assert_eq!(h.queued().await, 2, "one message each, none twice");
}

async fn a_waiting_receiver_wakes_on_the_announcement(db: Database) {
    let h = Harness::on(&db);
    // A long poll interval: only the announcement can wake the receiver in time.
    let queue = h.queue.clone().with_poll_interval(Duration::from_secs(30));
    let waiting = {
        let queue = queue.clone();
        tokio::spawn(async move {
            queue
                .receive(1, Duration::from_secs(60), Duration::from_secs(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    h.log
        .append_and_send(
            AppendBatch {
                streams: vec![task_append("task-w", ExpectedVersion::NoStream)],
                ..AppendBatch::default()
            },
            vec![message(Uuid::now_v7(), Uuid::now_v7())],
        )
        .await
        .unwrap();
    queue.announce_sent();
    let delivered = waiting.await.unwrap().unwrap();
    assert_eq!(delivered.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by the announcement, not by a poll ({:?})",
        started.elapsed()
    );
}

/// A group commit deletes the messages of the batches it writes, in their transaction: not the
/// message of a batch that conflicts (its events are not written either), and a stale receipt
/// deletes nothing without stopping the append.
async fn handled_messages_leave_the_queue_with_their_events(db: Database) {
    let h = Harness::on(&db);
    let job_id = Uuid::now_v7();
    let tasks = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    h.queue
        .send(tasks.iter().map(|&t| message(job_id, t)).collect())
        .await
        .unwrap();
    let delivered = h
        .queue
        .receive(10, Duration::from_secs(60), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(delivered.len(), 3);
    let receipt = |task: Uuid| {
        delivered
            .iter()
            .find(|d| d.body.as_ref().unwrap().task_id == task)
            .unwrap()
            .receipt
            .clone()
    };
    h.log
        .append(AppendBatch {
            streams: vec![task_append("task-b", ExpectedVersion::NoStream)],
            ..AppendBatch::default()
        })
        .await
        .unwrap();

    let batch = |stream: &str, expected| AppendBatch {
        streams: vec![task_append(stream, expected)],
        ..AppendBatch::default()
    };
    let results = h
        .log
        .append_many_and_ack(
            vec![
                batch("task-a", ExpectedVersion::NoStream),
                // Conflicts: task-b has an event already.
                batch("task-b", ExpectedVersion::NoStream),
                batch("task-c", ExpectedVersion::NoStream),
                batch("task-d", ExpectedVersion::NoStream),
            ],
            vec![
                Some(receipt(tasks[0])),
                Some(receipt(tasks[1])),
                // Stale: the message was received again since, or is gone.
                Some(Receipt(format!("{}:stale", i64::MAX))),
                None,
            ],
        )
        .await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(&results[1], Err(LogError::Conflict { stream_id, .. }) if stream_id == "task-b"),
        "{:?}",
        results[1]
    );
    assert!(results[2].is_ok() && results[3].is_ok(), "{results:?}");
    assert_eq!(h.log.read_stream("task-a", 0).await.unwrap().len(), 1);
    assert_eq!(h.log.read_stream("task-b", 0).await.unwrap().len(), 1);
    assert_eq!(h.log.read_stream("task-c", 0).await.unwrap().len(), 1);

    let depth = h.queue.depth().await.unwrap();
    assert_eq!(
        (depth.visible, depth.in_flight),
        (0, 2),
        "a's message is gone; b's (its batch conflicted) and c's are still held"
    );
    // The held ones are still acknowledged with their own receipts.
    h.queue
        .ack(&[receipt(tasks[1]), receipt(tasks[2])])
        .await
        .unwrap();
    assert_eq!(h.queue.depth().await.unwrap().in_flight, 0);
}

macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Database::Sqlite(super::testing::fresh_sqlite().await))
                        .await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(pool) = super::testing::fresh_postgres().await {
                        super::$name(super::Database::Postgres(pool)).await;
                    }
                }
            )*
        }
    };
}

for_each_backend!(
    events_and_messages_commit_together,
    a_message_queued_already_is_skipped,
    a_waiting_receiver_wakes_on_the_announcement,
    handled_messages_leave_the_queue_with_their_events,
);
