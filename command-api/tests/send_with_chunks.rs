//! The orchestrator queueing each chunk's tasks in the chunk's own transaction
//! (`OrchestratorConfig::send_with_chunks`, what `shoal` does on the SQL queue), against a real
//! log and SQL queue: on SQLite always, and on Postgres when `SHOAL_TEST_DATABASE_URL` is set
//! (required with `SHOAL_REQUIRE_POSTGRES=1`; see `shoal_infra::testing`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use shoal_command_api::orchestrator::{Orchestrator, OrchestratorConfig};
use shoal_domain::{
    Event, JobCommand, JobId, JobState, Limits, Split, SubmitJob, TaskId, decide_job, evolve_job,
};
use shoal_infra::db::Database;
use shoal_infra::eventlog::{
    AppendBatch, EventLog, ExpectedVersion, LogPosition, NewEvent, RecordedEvent, StreamAppend,
};
use shoal_infra::queue::{SqlQueue, TaskMessage, TaskQueue};
use shoal_infra::testing;

struct Harness {
    db: Database,
    log: Arc<dyn EventLog>,
    queue: Arc<SqlQueue>,
}

impl Harness {
    fn on(db: Database) -> Harness {
        Harness {
            log: db.event_log(),
            queue: Arc::new(SqlQueue::for_database(&db)),
            db,
        }
    }

    async fn sqlite() -> Harness {
        Harness::on(Database::Sqlite(testing::fresh_sqlite().await))
    }

    async fn postgres() -> Option<Harness> {
        Some(Harness::on(Database::Postgres(
            testing::fresh_postgres().await?,
        )))
    }

    fn orchestrator(&self, send_with_chunks: bool, first: u32, chunk: u32) -> Orchestrator {
        Orchestrator::new(
            OrchestratorConfig {
                chunk_size: chunk,
                first_chunk_size: first,
                send_with_chunks,
                batch_size: 700,
                error_backoff: Duration::from_millis(50),
                ..OrchestratorConfig::default()
            },
            self.log.clone(),
            self.queue.clone() as Arc<dyn TaskQueue>,
            self.db.clone(),
        )
        .expect("valid configuration")
    }

    async fn settle(&self) {
        if let Database::Postgres(pool) = &self.db {
            testing::wait_until_readable(pool).await;
        }
    }

    /// Steps the orchestrator until it has nothing left to do.
    async fn drive(&self, orchestrator: &mut Orchestrator) {
        loop {
            self.settle().await;
            orchestrator.run_until_idle().await.expect("orchestrator");
            self.settle().await;
            let consumed = orchestrator.step().await.expect("orchestrator step");
            let chunks = orchestrator.expand_step().await.expect("expansion");
            if consumed == 0 && chunks == 0 {
                return;
            }
        }
    }

    async fn submit(&self, total_tasks: u32) -> JobId {
        let job_id = JobId::new();
        let events = decide_job(
            &JobState::default(),
            JobCommand::SubmitJob(SubmitJob {
                job_id,
                job_type: "cpu_bound".into(),
                split: Split::Total { total_tasks },
                parameters: json!({ "work_duration_seconds": 0 }),
                max_attempts: None,
                timeout_seconds: None,
                limits: Limits::default(),
                now: Utc::now(),
                fallback_handler: None,
                priority: 0,
            }),
        )
        .expect("valid job");
        self.append(job_id, ExpectedVersion::NoStream, &events)
            .await;
        job_id
    }

    async fn append(&self, job_id: JobId, expected: ExpectedVersion, events: &[Event]) {
        self.log
            .append(AppendBatch {
                streams: vec![StreamAppend {
                    stream_id: job_id.stream_id(),
                    expected,
                    events: events.iter().map(encode).collect(),
                }],
                ..AppendBatch::default()
            })
            .await
            .expect("append");
    }

    async fn cancel(&self, job_id: JobId) {
        let recorded = self.log.read_stream(&job_id.stream_id(), 0).await.unwrap();
        let version = recorded.last().map_or(0, |e| e.stream_version);
        let state = recorded
            .iter()
            .map(decode)
            .fold(JobState::default(), |s, e| evolve_job(s, &e));
        let events = decide_job(
            &state,
            JobCommand::CancelJob {
                reason: None,
                now: Utc::now(),
            },
        )
        .unwrap();
        self.append(job_id, ExpectedVersion::Exact(version), &events)
            .await;
    }

    async fn all_events(&self) -> Vec<RecordedEvent> {
        self.settle().await;
        let mut out = Vec::new();
        let mut after = LogPosition::START;
        loop {
            let batch = self.log.read_all(after, 5000).await.unwrap();
            let Some(last) = batch.last() else {
                return out;
            };
            after = last.log_position;
            out.extend(batch);
        }
    }

    /// The sizes of the job's expansion chunks, in order.
    async fn chunk_sizes(&self, job_id: JobId) -> Vec<u32> {
        let mut chunks = BTreeMap::new();
        for record in self.all_events().await {
            if let Event::TasksCreated(e) = decode(&record)
                && e.job_id == job_id
            {
                chunks.insert(e.from_index, e.to_index - e.from_index);
            }
        }
        chunks.into_values().collect()
    }

    /// Receives (and acknowledges) every visible message.
    async fn drain(&self) -> Vec<TaskMessage> {
        let mut all = Vec::new();
        loop {
            let deliveries = self
                .queue
                .receive(500, Duration::from_secs(300), Duration::from_millis(20))
                .await
                .unwrap();
            if deliveries.is_empty() {
                return all;
            }
            let receipts: Vec<_> = deliveries.iter().map(|d| d.receipt.clone()).collect();
            all.extend(
                deliveries
                    .into_iter()
                    .map(|d| d.body.expect("well-formed message")),
            );
            self.queue.ack(&receipts).await.unwrap();
        }
    }

    async fn visible(&self) -> u64 {
        let depth = self.queue.depth().await.unwrap();
        depth.visible + depth.delayed
    }

    /// Makes every insert into the queue's table fail, or lifts that.
    async fn break_queue(&self, broken: bool) {
        match (&self.db, broken) {
            (Database::Postgres(pool), true) => {
                sqlx::query(
                    "CREATE FUNCTION refuse_queue_rows() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'no queue rows today'; END; $$",
                )
                .execute(pool)
                .await
                .unwrap();
                sqlx::query(
                    "CREATE TRIGGER refuse_queue_rows BEFORE INSERT ON task_queue \
                     FOR EACH ROW EXECUTE FUNCTION refuse_queue_rows()",
                )
                .execute(pool)
                .await
                .unwrap();
            }
            (Database::Postgres(pool), false) => {
                sqlx::query("DROP TRIGGER refuse_queue_rows ON task_queue")
                    .execute(pool)
                    .await
                    .unwrap();
            }
            (Database::Sqlite(pool), true) => {
                sqlx::query(
                    "CREATE TRIGGER refuse_queue_rows BEFORE INSERT ON task_queue \
                     BEGIN SELECT RAISE(ABORT, 'no queue rows today'); END",
                )
                .execute(pool)
                .await
                .unwrap();
            }
            (Database::Sqlite(pool), false) => {
                sqlx::query("DROP TRIGGER refuse_queue_rows")
                    .execute(pool)
                    .await
                    .unwrap();
            }
        }
    }
}

fn encode(event: &Event) -> NewEvent {
    let encoded = event.encode();
    NewEvent {
        event_type: encoded.event_type.to_owned(),
        schema_version: encoded.schema_version,
        data: encoded.data,
        metadata: json!({}),
    }
}

fn decode(record: &RecordedEvent) -> Event {
    Event::decode(&record.event_type, record.schema_version, record.data.get()).expect("decodable")
}

/// Every task of the job was queued exactly once, with the message the relay would send.
fn assert_one_message_per_task(messages: &[TaskMessage], job_id: JobId, total: u32) {
    let mine: Vec<_> = messages
        .iter()
        .filter(|m| m.job_id == job_id.as_uuid())
        .collect();
    let tasks: HashSet<u32> = mine.iter().map(|m| m.task_index).collect();
    assert_eq!(mine.len(), total as usize, "one message per task");
    assert_eq!(tasks.len(), total as usize, "every task has its message");
    for m in mine {
        assert_eq!(m.task_id, TaskId::for_task(job_id, m.task_index).as_uuid());
        assert_eq!(
            (m.attempt, m.stream_version, m.job_type.as_str()),
            (1, 1, "cpu_bound")
        );
        assert_eq!(m.parameters, json!({ "work_duration_seconds": 0 }));
    }
}

for_each_backend!(
    a_chunk_and_its_messages_commit_together_and_the_relay_leaves_them_alone,
    a_chunk_whose_messages_cannot_be_queued_is_not_written,
    relay_then_chunks_after_a_restart_queues_each_task_once,
    a_cancelled_job_keeps_no_message,
);

async fn a_chunk_and_its_messages_commit_together_and_the_relay_leaves_them_alone(h: Harness) {
    let job_id = h.submit(2500).await;
    let mut orchestrator = h.orchestrator(true, 250, 1000);
    let metrics = orchestrator.metrics();
    h.drive(&mut orchestrator).await;

    // Chunks start small and grow with the job.
    assert_eq!(h.chunk_sizes(job_id).await, [250, 250, 500, 1000, 500]);
    assert_eq!(metrics.messages_sent_with_chunks(), 2500);
    assert_eq!(
        metrics.messages_relayed(),
        0,
        "the relay sent nothing again"
    );
    let enqueued: Vec<_> = h
        .all_events()
        .await
        .into_iter()
        .filter(|r| r.event_type == "TaskEnqueued")
        .collect();
    assert_eq!(enqueued.len(), 2500);
    assert!(
        enqueued
            .iter()
            .all(|r| r.metadata_json()["queued"] == json!(true)),
        "each TaskEnqueued says its message was queued with it"
    );
    assert_eq!(h.visible().await, 2500);
    assert_one_message_per_task(&h.drain().await, job_id, 2500);
}

async fn a_chunk_whose_messages_cannot_be_queued_is_not_written(h: Harness) {
    let job_id = h.submit(300).await;
    let mut orchestrator = h.orchestrator(true, 100, 100);
    h.settle().await;
    assert_eq!(orchestrator.step().await.unwrap(), 1);
    h.break_queue(true).await;
    assert!(
        orchestrator.expand_step().await.is_err(),
        "the chunk's transaction fails"
    );
    let events = h.all_events().await;
    assert!(
        events
            .iter()
            .all(|r| r.event_type != "TaskEnqueued" && r.event_type != "TasksCreated"),
        "no event of the failed chunk was written"
    );

    h.break_queue(false).await;
    h.drive(&mut orchestrator).await;
    assert_eq!(h.chunk_sizes(job_id).await, [100, 100, 100]);
    assert_one_message_per_task(&h.drain().await, job_id, 300);
}

async fn relay_then_chunks_after_a_restart_queues_each_task_once(h: Harness) {
    let job_id = h.submit(1200).await;
    // An orchestrator that relays (as on SQS) expands two chunks and stops before relaying.
    let mut relaying = h.orchestrator(false, 400, 400);
    h.settle().await;
    assert_eq!(relaying.step().await.unwrap(), 1);
    assert_eq!(relaying.expand_step().await.unwrap(), 1);
    assert_eq!(relaying.expand_step().await.unwrap(), 1);
    drop(relaying);
    assert_eq!(h.visible().await, 0, "nothing relayed yet");

    // Its successor queues its own chunks with them, and relays the first two.
    let mut sending = h.orchestrator(true, 400, 400);
    let metrics = sending.metrics();
    h.drive(&mut sending).await;
    assert_eq!(h.chunk_sizes(job_id).await, [400, 400, 400]);
    assert_eq!(metrics.messages_relayed(), 800);
    assert_eq!(metrics.messages_sent_with_chunks(), 400);
    assert_one_message_per_task(&h.drain().await, job_id, 1200);
}

async fn a_cancelled_job_keeps_no_message(h: Harness) {
    let job_id = h.submit(3000).await;
    let mut orchestrator = h.orchestrator(true, 500, 500);
    h.settle().await;
    assert_eq!(orchestrator.step().await.unwrap(), 1);
    assert_eq!(orchestrator.expand_step().await.unwrap(), 1);
    assert_eq!(orchestrator.expand_step().await.unwrap(), 1);
    assert_eq!(h.visible().await, 1000, "queued with their chunks");

    h.cancel(job_id).await;
    h.drive(&mut orchestrator).await;
    assert_eq!(h.chunk_sizes(job_id).await, [500, 500], "expansion stopped");
    assert_eq!(h.visible().await, 0, "the queued messages were purged");
    assert!(h.drain().await.is_empty());
}
