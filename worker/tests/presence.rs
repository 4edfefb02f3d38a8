//! A worker's heartbeats in the `workers` table (`Worker::reporting_to`): it appears at once
//! with its slots, shows the tasks it runs, says `draining` then `stopped` when it is shut
//! down, and goes silent when it dies without a word. SQLite always, Postgres when configured.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_infra::db::Database;
use shoal_infra::eventlog::{EventLog, PostgresEventLog, SqliteEventLog};
use shoal_infra::queue::{SqlQueue, TaskQueue};
use shoal_infra::testing;
use shoal_infra::workers::{SqlWorkerRegistry, WorkerRecord, WorkerRegistry, WorkerState};
use shoal_worker::{Handlers, Worker, WorkerConfig, handler_fn};
use support::{JobSpec, submit};
use tokio::sync::oneshot;

struct Env {
    log: Arc<dyn EventLog>,
    queue: Arc<dyn TaskQueue>,
    registry: Arc<dyn WorkerRegistry>,
}

async fn sqlite() -> Env {
    let pool = testing::fresh_sqlite().await;
    Env {
        log: Arc::new(SqliteEventLog::new(pool.clone())),
        queue: Arc::new(
            SqlQueue::sqlite(pool.clone()).with_poll_interval(Duration::from_millis(25)),
        ),
        registry: Arc::new(SqlWorkerRegistry::new(Database::Sqlite(pool))),
    }
}

async fn postgres() -> Option<Env> {
    let pool = testing::fresh_postgres().await?;
    Some(Env {
        log: Arc::new(PostgresEventLog::new(pool.clone())),
        queue: Arc::new(
            SqlQueue::postgres(pool.clone()).with_poll_interval(Duration::from_millis(25)),
        ),
        registry: Arc::new(SqlWorkerRegistry::new(Database::Postgres(pool))),
    })
}

fn config(id: &str) -> WorkerConfig {
    WorkerConfig {
        worker_id: id.into(),
        concurrency: 4,
        long_poll: Duration::from_millis(100),
        grace_period: Duration::from_secs(5),
        heartbeat_interval: Duration::from_millis(200),
        ..WorkerConfig::default()
    }
}

async fn find(env: &Env, id: &str) -> Option<WorkerRecord> {
    env.registry
        .list(Duration::from_secs(600))
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.report.worker_id == id)
}

async fn wait_for(
    env: &Env,
    id: &str,
    what: &str,
    check: impl Fn(&WorkerRecord) -> bool,
) -> WorkerRecord {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(record) = find(env, id).await
            && check(&record)
        {
            return record;
        }
        assert!(Instant::now() < deadline, "{id}: {what} within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reports_while_running_then_stopped_or_silent(env: Env) {
    // A handler that holds its slot until told to go on.
    let (release, released) = tokio::sync::watch::channel(false);
    let mut handlers = Handlers::new();
    handlers.register(
        "hold",
        handler_fn(move |_task| {
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|go| *go).await;
                Ok(Some(json!({})))
            }
        }),
    );

    let (stop, stopped) = oneshot::channel::<()>();
    let worker = Worker::new(
        config("w-graceful"),
        handlers,
        env.log.clone(),
        env.queue.clone(),
    )
    .reporting_to(env.registry.clone(), "sql");
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let record = wait_for(&env, "w-graceful", "running", |w| {
        w.report.state == WorkerState::Running
    })
    .await;
    assert_eq!(record.report.slots_total, 4);
    assert_eq!(record.report.slots_used, 0);
    assert_eq!(record.report.queue, "sql");
    assert_eq!(record.report.heartbeat_interval, Duration::from_millis(200));
    assert!(!record.is_silent());
    // Heartbeats keep coming.
    let first = record.last_heartbeat;
    wait_for(&env, "w-graceful", "a later heartbeat", |w| {
        w.last_heartbeat > first
    })
    .await;

    // Two tasks held: two slots in use.
    submit(
        env.log.as_ref(),
        env.queue.as_ref(),
        JobSpec {
            max_attempts: 1,
            ..JobSpec::new("hold", 2)
        },
    )
    .await;
    wait_for(&env, "w-graceful", "two slots used", |w| {
        w.report.slots_used == 2
    })
    .await;

    // Shutdown: draining while the tasks finish, then stopped.
    stop.send(()).unwrap();
    wait_for(&env, "w-graceful", "draining", |w| {
        w.report.state == WorkerState::Draining
    })
    .await;
    release.send_replace(true);
    running.await.unwrap().unwrap();
    let record = find(&env, "w-graceful").await.unwrap();
    assert_eq!(record.report.state, WorkerState::Stopped);
    assert_eq!(record.report.slots_used, 0);
    // A stopped worker is never silent, however long ago it reported.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!find(&env, "w-graceful").await.unwrap().is_silent());

    // A worker that dies (its future dropped, like a killed process) goes silent after three
    // missed heartbeats.
    let worker = Worker::new(
        config("w-crash"),
        Handlers::new(),
        env.log.clone(),
        env.queue.clone(),
    )
    .reporting_to(env.registry.clone(), "sql");
    let crashing = tokio::spawn(worker.run(std::future::pending::<()>()));
    wait_for(&env, "w-crash", "running", |w| {
        w.report.state == WorkerState::Running
    })
    .await;
    crashing.abort();
    let died = Instant::now();
    let record = wait_for(&env, "w-crash", "silent", WorkerRecord::is_silent).await;
    assert!(died.elapsed() >= Duration::from_millis(500));
    assert_eq!(record.report.state, WorkerState::Running);

    // Long-silent workers are forgotten; recent ones are kept.
    assert_eq!(
        env.registry
            .forget(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(env.registry.forget(Duration::ZERO).await.unwrap(), 2);
    assert!(find(&env, "w-crash").await.is_none());
}

#[tokio::test]
async fn sqlite_reports_while_running_then_stopped_or_silent() {
    reports_while_running_then_stopped_or_silent(sqlite().await).await;
}

#[tokio::test]
async fn postgres_reports_while_running_then_stopped_or_silent() {
    if let Some(env) = postgres().await {
        reports_while_running_then_stopped_or_silent(env).await;
    }
}
