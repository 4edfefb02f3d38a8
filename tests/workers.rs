//! The workers page's data (`workers`) from real processes: `shoal dev`'s in-process workers
//! appear with their slots and what they run; a `shoal worker` that is killed turns silent; one
//! stopped with SIGTERM turns stopped. Runs on SQLite and on Postgres (required when
//! `SHOAL_REQUIRE_POSTGRES=1`).
//!
//! And the worker's sense of the machine's cores: while a job of CPU-bound tasks fills every
//! slot of `shoal dev`, at most `--cpu-slots` of them compute at once, and the API still answers
//! promptly.

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

/// The most of `intervals` (start, end in seconds) that overlap at any instant.
fn most_at_once(intervals: &[(f64, f64)]) -> usize {
    let mut edges: Vec<(f64, i32)> = intervals
        .iter()
        .flat_map(|&(start, end)| [(start, 1), (end, -1)])
        .collect();
    // At equal times, ends before starts: touching intervals do not overlap.
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

/// `shoal dev` with 16 slots and a job of 16 one-second CPU-bound tasks, with a pool of two
/// cores (`--cpu-slots 2`): every slot holds a task, but at most two compute at any instant
/// (from each task's result: it computed `duration_seconds` up to its completion), so the job
/// takes eight seconds instead of one (a task's work is a wall-clock second: without the pool,
/// sixteen threads would share the cores and all end after one second, at an eighth of a core
/// each). Meanwhile the API answers promptly.
#[tokio::test]
async fn cpu_bound_tasks_compute_on_at_most_their_cores_and_shoal_dev_stays_responsive() {
    let url = support::database_url(support::Backend::Sqlite)
        .await
        .unwrap();
    let dev = Dev::start(
        &url,
        None,
        &[
            "--workers",
            "16",
            "--cpu-slots",
            "2",
            "--heartbeat-seconds",
            "0.5",
        ],
    )
    .await;
    let query = "{ jobs(first: 20) { edges { node { id status completedTasks } } } workers { id slotsUsed } }";
    let time_query = || async {
        let started = Instant::now();
        dev.graphql(query, json!({})).await;
        started.elapsed()
    };
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(time_query().await);
    }
    let idle = median(idle);

    let (job, _) = dev
        .submit_job(json!({
            "jobType": "cpu_bound",
            "totalTasks": 16,
            "parameters": { "work_duration_seconds": 1.0 },
        }))
        .await;
    wait_until(
        "every slot holding a task",
        Duration::from_secs(30),
        || async {
            workers(&dev)
                .await
                .first()
                .is_some_and(|w| w["slotsUsed"] == 16)
        },
    )
    .await;
    let mut busy = Vec::new();
    for _ in 0..10 {
        busy.push(time_query().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let busy = median(busy);
    eprintln!("GraphQL query median: {idle:?} at rest, {busy:?} with 16 CPU-bound tasks held");
    assert!(
        busy < Duration::from_millis(500),
        "the API took {busy:?} to answer (median) while CPU-bound tasks ran"
    );

    wait_until("the job completed", Duration::from_secs(120), || async {
        dev.job_status(job).await.as_deref() == Some("COMPLETED")
    })
    .await;
    let data = dev
        .graphql(
            "query($id: ID!) { job(id: $id) { tasks(first: 16) { edges { node { result completedAt } } } } }",
            json!({ "id": job.to_string() }),
        )
        .await;
    // Each task computed from `completedAt - duration_seconds` to `completedAt`, give or take
    // the time between the end of its computation and its completion's timestamp: shrunk by
    // 150 ms at each end for that.
    let intervals: Vec<(f64, f64)> = data["job"]["tasks"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| {
            let node = &edge["node"];
            let end = chrono::DateTime::parse_from_rfc3339(node["completedAt"].as_str().unwrap())
                .unwrap()
                .timestamp_micros() as f64
                / 1e6;
            let computed = node["result"]["duration_seconds"].as_f64().unwrap();
            assert!(computed >= 1.0, "{node}");
            (end - computed + 0.15, end - 0.15)
        })
        .collect();
    assert_eq!(intervals.len(), 16);
    let at_once = most_at_once(&intervals);
    eprintln!("CPU-bound tasks computing at once: at most {at_once}");
    assert!(
        at_once <= 2,
        "{at_once} CPU-bound tasks computed at once with --cpu-slots 2"
    );
}

#[test]
fn overlaps_are_counted() {
    assert_eq!(most_at_once(&[(0.0, 1.0), (1.0, 2.0), (0.5, 1.5)]), 2);
    assert_eq!(most_at_once(&[(0.0, 3.0), (1.0, 2.0), (1.5, 2.5)]), 3);
    assert_eq!(most_at_once(&[]), 0);
}
