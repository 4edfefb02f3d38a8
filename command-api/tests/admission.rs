//! Admission in the orchestrator (limits and fair share, `docs/limits-and-rates.md`), driven
//! step by step against a real log and SQL queue: on SQLite always, on Postgres when
//! `SHOAL_TEST_DATABASE_URL` is set. The test submits and sets limits through the
//! `CommandService`, and plays the worker (receive, `TaskStarted` + `TaskCompleted`, ack).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use shoal_command_api::commands::{CommandService, SubmitJobInput};
use shoal_command_api::orchestrator::{Orchestrator, OrchestratorConfig};
use shoal_domain::admission::JobConcurrency;
use shoal_domain::events::LimitKind;
use shoal_domain::{
    Event, JobId, Limits, Split, TaskCommand, TaskId, TaskState, decide_task, evolve_task,
};
use shoal_infra::db::Database;
use shoal_infra::eventlog::{AppendBatch, EventLog, ExpectedVersion, NewEvent, StreamAppend};
use shoal_infra::queue::{SqlQueue, TaskQueue};
use shoal_infra::testing;

struct Harness {
    db: Database,
    log: Arc<dyn EventLog>,
    queue: Arc<SqlQueue>,
    commands: CommandService,
}

impl Harness {
    fn on(db: Database) -> Harness {
        let log = db.event_log();
        Harness {
            commands: CommandService::new(log.clone(), Limits::default()),
            queue: Arc::new(SqlQueue::for_database(&db)),
            log,
            db,
        }
    }

    fn orchestrator(&self, window: Option<u32>) -> Orchestrator {
        Orchestrator::new(
            OrchestratorConfig {
                fair_share_window: window,
                ..OrchestratorConfig::default()
            },
            self.log.clone(),
            self.queue.clone() as Arc<dyn TaskQueue>,
            self.db.clone(),
        )
        .unwrap()
    }

    async fn drive(&self, orchestrator: &mut Orchestrator) {
        for _ in 0..3 {
            if let Database::Postgres(pool) = &self.db {
                testing::wait_until_readable(pool).await;
            }
            orchestrator.run_until_idle().await.unwrap();
        }
    }

    async fn submit(&self, tasks: u32, parameters: serde_json::Value, c: JobConcurrency) -> JobId {
        let input = SubmitJobInput {
            job_type: "noop".into(),
            split: Split::Total { total_tasks: tasks },
            parameters,
            max_attempts: None,
            timeout_seconds: None,
            idempotency_key: None,
            fallback_handler: None,
            priority: None,
        };
        let submitted = self.commands.submit_job_with(input, c).await.unwrap();
        submitted.job.job_id
    }

    /// Receives up to `max` messages and starts them (`TaskStarted`); returns their tasks.
    async fn start(&self, max: usize) -> Vec<(TaskId, u32)> {
        let deliveries = self
            .queue
            .receive(max, Duration::from_secs(300), Duration::from_millis(20))
            .await
            .unwrap();
        let mut started = Vec::new();
        for delivery in &deliveries {
            let message = delivery.body.clone().unwrap();
            let id = TaskId::from_uuid(message.task_id);
            self.transition(
                id,
                TaskCommand::StartTask {
                    attempt: message.attempt,
                    worker: "test".into(),
                    now: Utc::now(),
                },
            )
            .await;
            started.push((id, message.attempt));
        }
        let receipts: Vec<_> = deliveries.into_iter().map(|d| d.receipt).collect();
        self.queue.ack(&receipts).await.unwrap();
        started
    }

    async fn complete(&self, task: (TaskId, u32)) {
        self.transition(
            task.0,
            TaskCommand::CompleteTask {
                attempt: task.1,
                result: None,
                duration_ms: 1,
                now: Utc::now(),
            },
        )
        .await;
    }

    async fn transition(&self, id: TaskId, command: TaskCommand) {
        let records = self.log.read_stream(&id.stream_id(), 0).await.unwrap();
        let version = records.last().unwrap().stream_version;
        let state = records.iter().fold(TaskState::default(), |state, r| {
            let event = Event::decode(&r.event_type, r.schema_version, r.data.get()).unwrap();
            evolve_task(state, &event)
        });
        let events = decide_task(&state, command).unwrap();
        self.log
            .append(AppendBatch {
                streams: vec![StreamAppend {
                    stream_id: id.stream_id(),
                    expected: ExpectedVersion::Exact(version),
                    events: events
                        .iter()
                        .map(|e| {
                            let encoded = e.encode();
                            NewEvent {
                                event_type: encoded.event_type.to_owned(),
                                schema_version: encoded.schema_version,
                                data: encoded.data,
                                metadata: json!({ "actor": "test" }),
                            }
                        })
                        .collect(),
                }],
                ..AppendBatch::default()
            })
            .await
            .unwrap();
    }

    async fn queued(&self) -> u64 {
        self.queue.depth().await.unwrap().visible
    }
}

async fn harnesses() -> Vec<Harness> {
    let mut all = vec![Harness::on(Database::Sqlite(testing::fresh_sqlite().await))];
    if let Some(pool) = testing::fresh_postgres().await {
        all.push(Harness::on(Database::Postgres(pool)));
    }
    all
}

#[tokio::test]
async fn a_job_limit_admits_up_to_it_and_each_end_admits_the_next() {
    for h in harnesses().await {
        let mut orchestrator = h.orchestrator(None);
        let concurrency = JobConcurrency {
            max_concurrency: Some(2),
            concurrency_key: None,
        };
        h.submit(6, json!({}), concurrency).await;
        h.drive(&mut orchestrator).await;
        assert_eq!(h.queued().await, 2, "two admitted, four held");
        let running = h.start(10).await;
        assert_eq!(running.len(), 2);
        h.drive(&mut orchestrator).await;
        assert_eq!(h.queued().await, 0, "both slots are taken while they run");

        h.complete(running[0]).await;
        h.drive(&mut orchestrator).await;
        assert_eq!(h.queued().await, 1, "an end frees one slot");
        let mut running = vec![running[1]];
        running.extend(h.start(10).await);
        for task in running {
            h.complete(task).await;
        }
        h.drive(&mut orchestrator).await;
        assert_eq!(h.queued().await, 2);

        // A new orchestrator (a new leader) rebuilds the held task (the sixth) from the log.
        let mut next_leader = h.orchestrator(None);
        h.drive(&mut next_leader).await;
        assert_eq!(h.queued().await, 2, "nothing more is admitted");
        for task in h.start(10).await {
            h.complete(task).await;
        }
        h.drive(&mut next_leader).await;
        assert_eq!(h.queued().await, 1, "the last task");
    }
}

#[tokio::test]
async fn a_key_limit_set_at_run_time_is_shared_by_the_jobs_of_the_key() {
    for h in harnesses().await {
        let mut orchestrator = h.orchestrator(None);
        h.commands
            .set_limit(LimitKind::Key, "acme".into(), Some(3), None)
            .await
            .unwrap();
        let keyed = || JobConcurrency {
            max_concurrency: None,
            concurrency_key: Some("tenant".into()),
        };
        h.submit(4, json!({"tenant": "acme"}), keyed()).await;
        h.submit(4, json!({"tenant": "acme"}), keyed()).await;
        h.submit(4, json!({"tenant": "other"}), keyed()).await;
        h.drive(&mut orchestrator).await;
        assert_eq!(h.queued().await, 3 + 4, "acme: 3 of 8; other: all 4");

        // Removing the limit lets the held ones go.
        h.commands
            .set_limit(LimitKind::Key, "acme".into(), None, None)
            .await
            .unwrap();
        h.drive(&mut orchestrator).await;
        assert_eq!(h.queued().await, 12);
        let limits = h.commands.read_limits().await.unwrap().0;
        assert!(limits.is_empty());
    }
}

#[tokio::test]
async fn the_fair_share_window_lets_a_small_job_pass_a_big_one() {
    for h in harnesses().await {
        let mut orchestrator = h.orchestrator(Some(4));
        h.submit(100, json!({}), JobConcurrency::default()).await;
        h.drive(&mut orchestrator).await;
        assert_eq!(h.queued().await, 4, "a window of the big job");
        let small = h.submit(3, json!({}), JobConcurrency::default()).await;
        h.drive(&mut orchestrator).await;
        assert_eq!(h.queued().await, 7);
        // The small job's three tasks are among the next seven received.
        let started = h.start(7).await;
        let small_started = started
            .iter()
            .filter(|(id, _)| (0..3).any(|i| TaskId::for_task(small, i) == *id))
            .count();
        assert_eq!(small_started, 3);
    }
}

/// A leader that stops (dies, or loses its lock) after saving every event of the log, while
/// tasks wait for a rate limit's tokens: its successor admits them although no event follows.
/// A successor that ran admission rounds only after reading a batch waited for the next event
/// of the log, which with nothing else running never came.
#[tokio::test]
async fn a_new_leader_admits_waiting_tasks_when_no_event_follows() {
    for h in harnesses().await {
        h.commands
            .set_limit(LimitKind::JobType, "noop".into(), None, Some(1.0))
            .await
            .unwrap();
        let mut first = h.orchestrator(None);
        h.submit(3, json!({}), JobConcurrency::default()).await;
        h.drive(&mut first).await;
        assert_eq!(
            h.queued().await,
            1,
            "one token: one task admitted, two wait"
        );
        drop(first);

        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let successor = tokio::spawn(h.orchestrator(None).run(async {
            stopped.await.ok();
        }));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while h.queued().await < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the new leader admitted {} of the 3 tasks in 15 s",
                h.queued().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.send(()).unwrap();
        successor.await.unwrap().unwrap();
    }
}
