//! The workers page's data (`workers`) from real processes: `shoal dev`'s in-process workers
//! appear with their slots and what they run; a `shoal worker` that is killed turns silent; one
//! stopped with SIGTERM turns stopped. Runs on SQLite and on Postgres (required when
//! `SHOAL_REQUIRE_POSTGRES=1`).
//!
//! And the worker's sense of the machine's cores: while a job of CPU-bound tasks fills every
//! slot of `shoal dev`, the API still answers promptly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use support::{Dev, Process, for_each_backend, free_port, wait_until};

for_each_backend!(workers_are_listed_with_their_slots_and_turn_silent_or_stopped);

const WORKERS: &str = "{ workers { id host queue version status slotsTotal slotsUsed
    tasksPerSecond tasksCompleted tasksFailed startedAt lastHeartbeatAt secondsSinceHeartbeat
    heartbeatIntervalSeconds } }";

async fn workers(dev: &Dev) -> Vec<Value> {
    dev.graphql(WORKERS, json!({})).await["workers"]
        .as_array()
        .unwrap()
        .clone()
}

async fn worker(dev: &Dev, id: &str) -> Option<Value> {
    workers(dev).await.into_iter().find(|w| w["id"] == id)
}

async fn status_is(dev: &Dev, id: &str, status: &str) -> bool {
    worker(dev, id).await.is_some_and(|w| w["status"] == status)
}

/// `shoal worker` on the same database, reporting every half second.
fn shoal_worker(url: &str, id: &str) -> Process {
    let admin = format!("127.0.0.1:{}", free_port());
    Process::start(
        &[
            "worker",
            "--database-url",
            url,
            "--concurrency",
            "2",
            "--worker-id",
            id,
            "--heartbeat-seconds",
            "0.5",
            "--admin-listen",
            &admin,
        ],
        None,
        None,
    )
}

async fn workers_are_listed_with_their_slots_and_turn_silent_or_stopped(url: &str) {
    let dev = Dev::start(
        url,
        None,
        &[
            "--workers",
            "3",
            "--worker-id",
            "dev-worker",
            "--heartbeat-seconds",
            "0.5",
        ],
    )
    .await;

    // shoal dev's worker reports itself at once, with its three slots.
    wait_until("the dev worker listed", Duration::from_secs(20), || {
        status_is(&dev, "dev-worker", "RUNNING")
    })
    .await;
    let w = worker(&dev, "dev-worker").await.unwrap();
    assert_eq!(w["slotsTotal"], 3, "{w}");
    assert_eq!(w["queue"], "sql");
    assert_eq!(w["version"], env!("CARGO_PKG_VERSION"));
    assert!(!w["host"].as_str().unwrap().is_empty());
    assert_eq!(w["heartbeatIntervalSeconds"], 0.5);
    assert!(w["secondsSinceHeartbeat"].as_f64().unwrap() < 1.5, "{w}");

    // While a job of slow tasks runs, its slots are in use; once it has ended, they are free
    // and its tasks are counted.
    let (job, _) = dev
        .submit_job(json!({
            "jobType": "io_bound",
            "totalTasks": 6,
            "parameters": { "work_duration_seconds": 1.5 },
        }))
        .await;
    wait_until("every slot in use", Duration::from_secs(30), || async {
        worker(&dev, "dev-worker")
            .await
            .is_some_and(|w| w["slotsUsed"] == 3)
    })
    .await;
    wait_until("the job completed", Duration::from_secs(60), || async {
        dev.job_status(job).await.as_deref() == Some("COMPLETED")
    })
    .await;
    wait_until("the slots free again", Duration::from_secs(10), || async {
        worker(&dev, "dev-worker")
            .await
            .is_some_and(|w| w["slotsUsed"] == 0 && w["tasksCompleted"] == 6)
    })
    .await;

    // Two more worker processes: one killed (it cannot say so: silent after three missed
    // heartbeats), one stopped with SIGTERM (it drains and says it stopped).
    let killed = shoal_worker(url, "killed-worker");
    let mut stopped = shoal_worker(url, "stopped-worker");
    for id in ["killed-worker", "stopped-worker"] {
        wait_until(&format!("{id} listed"), Duration::from_secs(30), || {
            status_is(&dev, id, "RUNNING")
        })
        .await;
    }
    assert_eq!(
        worker(&dev, "killed-worker").await.unwrap()["slotsTotal"],
        2
    );
    killed.signal("-KILL");
    stopped.terminate();
    assert!(
        stopped.wait_exit(Duration::from_secs(30)).await,
        "shoal worker did not exit cleanly on SIGTERM"
    );
    assert!(status_is(&dev, "stopped-worker", "STOPPED").await);
    let killed_at = Instant::now();
    wait_until("the killed worker silent", Duration::from_secs(20), || {
        status_is(&dev, "killed-worker", "SILENT")
    })
    .await;
    // Not before it missed three heartbeats (1.5 s), nor much later.
    let silent = worker(&dev, "killed-worker").await.unwrap();
    assert!(
        silent["secondsSinceHeartbeat"].as_f64().unwrap() > 1.5,
        "{silent}"
    );
    assert!(killed_at.elapsed() < Duration::from_secs(10));
    // Order: the live first, then the silent, then the stopped.
    let order: Vec<String> = workers(&dev)
        .await
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order, ["dev-worker", "killed-worker", "stopped-worker"]);
}

/// The median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// `shoal dev` with 16 slots and a job of CPU-bound tasks that fills them all: the CPU-bound
/// tasks compute on as many threads as there are cores (`--cpu-slots`, default the cores), so
/// the rest of the process (the API) still has the cores' time it needs. Without the pool,
/// sixteen computing threads on this machine's cores leave the API a sixteenth of them.
#[tokio::test]
async fn shoal_dev_stays_responsive_while_cpu_bound_tasks_fill_its_slots() {
    let url = support::database_url(support::Backend::Sqlite)
        .await
        .unwrap();
    let dev = Dev::start(&url, None, &["--workers", "16"]).await;
    let query = "{ jobs(first: 20) { edges { node { id status completedTasks } } } workers { id slotsUsed } }";
    let time_query = || async {
        let started = Instant::now();
        dev.graphql(query, json!({})).await;
        started.elapsed()
    };
    // At rest.
    let mut idle = Vec::new();
    for _ in 0..15 {
        idle.push(time_query().await);
    }
    let idle = median(idle);

    let (job, _) = dev
        .submit_job(json!({
            "jobType": "cpu_bound",
            "totalTasks": 64,
            "parameters": { "work_duration_seconds": 1.0 },
        }))
        .await;
    wait_until("every slot busy", Duration::from_secs(30), || async {
        workers(&dev)
            .await
            .first()
            .is_some_and(|w| w["slotsUsed"] == 16)
    })
    .await;
    let mut busy = Vec::new();
    for _ in 0..15 {
        busy.push(time_query().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let busy = median(busy);
    eprintln!("GraphQL query median: {idle:?} at rest, {busy:?} with 16 CPU-bound tasks running");
    assert!(
        busy < idle * 4 + Duration::from_millis(150),
        "the API slowed from {idle:?} to {busy:?} while CPU-bound tasks ran"
    );
    let _ = dev
        .graphql(
            "mutation($id: ID!) { cancelJob(id: $id, reason: \"done\") { id } }",
            json!({ "id": job.to_string() }),
        )
        .await;
}
