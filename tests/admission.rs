//! Cluster-wide concurrency and rate limits, and fair share on SQS, as a user meets them
//! (docs/limits-and-rates.md): `shoal dev` without workers plus separate `shoal worker`
//! processes, limits set over GraphQL, and the event log read back to check, at every instant,
//! how many tasks ran.
//!
//! Several processes need Postgres (`SHOAL_TEST_DATABASE_URL`; skipped without it unless
//! `SHOAL_REQUIRE_POSTGRES=1`). The starvation scenario on SQS needs `moto_server` (skipped
//! without it unless `SHOAL_REQUIRE_MOTO=1`). Bad inputs run on SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shoal_domain::{Event, JobId};
use shoal_infra::eventlog::RecordedEvent;
use shoal_infra::testing::{fresh_sqs_queue, moto};

use support::{Dev, Process, free_port, job_events, task_events, wait_until};

// ---------------------------------------------------------------------------------------------
// Harness

impl Dev {
    /// A GraphQL request whose errors are returned, not asserted away.
    async fn graphql_raw(&self, query: &str, variables: Value) -> Value {
        self.http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("POST /graphql")
            .json()
            .await
            .expect("a JSON response")
    }

    async fn set_limit(&self, kind: &str, name: &str, max: Option<i64>, rate: Option<f64>) {
        self.graphql(
            "mutation($kind: LimitKind!, $name: String!, $max: Int, $rate: Float) {
               setLimit(kind: $kind, name: $name, maxConcurrency: $max, ratePerSecond: $rate) {
                 kind name maxConcurrency ratePerSecond
               }
             }",
            json!({ "kind": kind, "name": name, "max": max, "rate": rate }),
        )
        .await;
    }

    async fn submit(&self, input: Value) -> JobId {
        self.submit_job(input).await.0
    }
}

/// `shoal worker` on the dev's database with `concurrency` slots, its admin port free.
fn worker(dev: &Dev, concurrency: u32) -> Process {
    let admin = format!("127.0.0.1:{}", free_port());
    let concurrency = concurrency.to_string();
    Process::start(
        &[
            "worker",
            "--database-url",
            &dev.database_url,
            "--concurrency",
            &concurrency,
            "--admin-listen",
            &admin,
        ],
        None,
        None,
    )
}

/// Waits until the job stream has `JobCompleted`.
async fn wait_completed(url: &str, job: JobId, within: Duration) {
    let url = url.to_owned();
    wait_until(&format!("job {job} completed"), within, || {
        let url = url.clone();
        async move {
            job_events(&url, job)
                .await
                .iter()
                .any(|t| t == "JobCompleted")
        }
    })
    .await;
}

fn decode(record: &RecordedEvent) -> Event {
    Event::decode(&record.event_type, record.schema_version, record.data.get()).unwrap()
}

/// The most attempts running at once among these tasks, from the log twice: in log order
/// (`TaskStarted` +1, `TaskCompleted`/`TaskFailed` -1), and by the workers' own instants (an
/// attempt runs from its `TaskStarted.at` to its end's `at`; at equal instants an end comes
/// first).
fn most_running(tasks: &[Vec<RecordedEvent>]) -> (usize, usize) {
    let mut by_position = Vec::new();
    let mut by_instant: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for events in tasks {
        for record in events {
            let delta = match decode(record) {
                Event::TaskStarted(e) => {
                    by_instant.push((e.at, 1));
                    1
                }
                Event::TaskCompleted(e) => {
                    by_instant.push((e.at, -1));
                    -1
                }
                Event::TaskFailed(e) => {
                    by_instant.push((e.at, -1));
                    -1
                }
                _ => continue,
            };
            by_position.push((record.log_position, delta));
        }
    }
    (peak(by_position), peak(by_instant))
}

/// The highest running sum of the deltas, in the order of their keys.
fn peak<T: Ord>(mut deltas: Vec<(T, i32)>) -> usize {
    deltas.sort();
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, delta) in deltas {
        now += delta;
        peak = peak.max(now);
    }
    usize::try_from(peak).unwrap()
}

/// Every task completed exactly once.
fn all_completed_once(tasks: &[Vec<RecordedEvent>]) {
    for events in tasks {
        let completed = events
            .iter()
            .filter(|e| e.event_type == "TaskCompleted")
            .count();
        assert_eq!(completed, 1, "{:?}", support::types(events));
    }
}

async fn postgres() -> Option<String> {
    support::database_url(support::Backend::Postgres).await
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Three worker processes (12 slots) run a job limited to 3 at once and two jobs sharing a
/// key limited to 2: from the log, never more ran at once, and the limits were reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_and_key_limits_hold_across_worker_processes() {
    let Some(url) = postgres().await else {
        return;
    };
    let dev = Dev::start(&url, None, &["--workers", "0"]).await;
    dev.set_limit("KEY", "acme", Some(2), None).await;
    let task = |tenant: &str| json!({ "work_type": "io_bound", "work_duration_seconds": 0.3, "tenant": tenant });
    let limited = dev
        .submit(json!({
            "jobType": "io_bound", "totalTasks": 12, "maxConcurrency": 3,
            "parameters": task("globex"),
        }))
        .await;
    let acme_a = dev
        .submit(json!({
            "jobType": "io_bound", "totalTasks": 8, "concurrencyKey": "tenant",
            "parameters": task("acme"),
        }))
        .await;
    let acme_b = dev
        .submit(json!({
            "jobType": "io_bound", "totalTasks": 8, "concurrencyKey": "tenant",
            "parameters": task("acme"),
        }))
        .await;
    let _workers: Vec<Process> = (0..3).map(|_| worker(&dev, 4)).collect();
    for job in [limited, acme_a, acme_b] {
        wait_completed(&url, job, Duration::from_secs(90)).await;
    }

    let limited_tasks = task_events(&url, limited, 12).await;
    all_completed_once(&limited_tasks);
    let (in_log, by_instant) = most_running(&limited_tasks);
    assert!(
        in_log <= 3 && by_instant <= 3,
        "{in_log} / {by_instant} ran at once"
    );
    assert_eq!(in_log, 3, "the job's limit was reached");

    let mut acme = task_events(&url, acme_a, 8).await;
    acme.extend(task_events(&url, acme_b, 8).await);
    all_completed_once(&acme);
    let (in_log, by_instant) = most_running(&acme);
    assert!(
        in_log <= 2 && by_instant <= 2,
        "{in_log} / {by_instant} ran at once"
    );
    assert_eq!(in_log, 2, "the key's limit was reached");
    // Each admitted attempt has its TaskReleased, before its start.
    for events in &acme {
        let types = support::types(events);
        let released = types.iter().position(|t| *t == "TaskReleased").unwrap();
        let started = types.iter().position(|t| *t == "TaskStarted").unwrap();
        assert!(released < started, "{types:?}");
    }

    // The history says who set the limit; the query lists it.
    let limits = dev
        .graphql(
            "{ limits { kind name maxConcurrency ratePerSecond } }",
            json!({}),
        )
        .await;
    assert_eq!(
        limits["limits"],
        json!([{ "kind": "KEY", "name": "acme", "maxConcurrency": 2, "ratePerSecond": null }])
    );
}

/// A job type limited to 5 tasks per second: the admissions in the log never run ahead of a
/// bucket of 5 tokens refilled at 5 per second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_observed_in_the_log() {
    let Some(url) = postgres().await else {
        return;
    };
    let dev = Dev::start(&url, None, &["--workers", "0"]).await;
    dev.set_limit("JOB_TYPE", "rated-api", None, Some(5.0))
        .await;
    let job = dev
        .submit(json!({
            "jobType": "rated-api", "totalTasks": 20,
            "parameters": { "work_type": "io_bound", "work_duration_seconds": 0 },
        }))
        .await;
    let _workers: Vec<Process> = (0..2).map(|_| worker(&dev, 8)).collect();
    wait_completed(&url, job, Duration::from_secs(60)).await;

    let tasks = task_events(&url, job, 20).await;
    all_completed_once(&tasks);
    let mut released: Vec<DateTime<Utc>> = tasks
        .iter()
        .flatten()
        .filter_map(|r| match decode(r) {
            Event::TaskReleased(e) => Some(e.at),
            _ => None,
        })
        .collect();
    released.sort();
    assert_eq!(released.len(), 20);
    // n admissions within t seconds: at most the burst (5) plus 5 per second (and a token of
    // slack for clock rounding).
    for i in 0..released.len() {
        for j in i..released.len() {
            let seconds = (released[j] - released[i]).num_milliseconds() as f64 / 1000.0;
            let n = (j - i + 1) as f64;
            assert!(n <= 6.0 + 5.0 * seconds, "{n} admissions in {seconds} s");
        }
    }
    let span = (released[19] - released[0]).num_milliseconds();
    assert!(
        span >= 2_500,
        "20 tasks at 5/s after a burst of 5 took {span} ms"
    );
}

/// The leader dies in the middle of a job limited to 2 at once; the standby rebuilds the
/// held tasks from the log and the limit still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_keeps_the_limit() {
    let Some(url) = postgres().await else {
        return;
    };
    let dev = Dev::start(&url, None, &["--workers", "0"]).await;
    let job = dev
        .submit(json!({
            "jobType": "io_bound", "totalTasks": 16, "maxConcurrency": 2,
            "parameters": { "work_duration_seconds": 0.3 },
        }))
        .await;
    let _workers: Vec<Process> = (0..2).map(|_| worker(&dev, 4)).collect();
    let standby_metrics = format!("127.0.0.1:{}", free_port());
    let standby_log = support::temp_path("standby").with_extension("log");
    let _standby = Process::start_logging_info(
        &[
            "orchestrator",
            "--database-url",
            &url,
            "--metrics-listen",
            &standby_metrics,
        ],
        &standby_log,
    );
    let progress_url = url.clone();
    wait_until("four tasks completed", Duration::from_secs(60), || {
        let url = progress_url.clone();
        async move {
            task_events(&url, job, 16)
                .await
                .iter()
                .filter(|e| e.iter().any(|e| e.event_type == "TaskCompleted"))
                .count()
                >= 4
        }
    })
    .await;
    // The leader (in `shoal dev`) is killed outright.
    drop(dev);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !job_events(&url, job)
        .await
        .iter()
        .any(|t| t == "JobCompleted")
    {
        if std::time::Instant::now() > deadline {
            // What the new leader saw and did, to tell a stall from a slow machine.
            let last: Vec<String> = task_events(&url, job, 16)
                .await
                .iter()
                .map(|t| t.last().map_or("-".into(), |e| e.event_type.clone()))
                .collect();
            let log = std::fs::read_to_string(&standby_log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            // Who holds the leader lock, and which transactions hold the server's read horizon
            // (log readers stay below the oldest one).
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let sessions: Vec<String> = sqlx::query_scalar(
                "SELECT concat_ws(' | ', a.pid, a.datname, a.state, now() - a.xact_start,
                                  left(a.query, 100))
                 FROM pg_stat_activity a
                 WHERE a.backend_xid IS NOT NULL OR a.pid IN
                       (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)
                 ORDER BY a.xact_start NULLS LAST LIMIT 10",
            )
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
            pool.close().await;
            panic!(
                "job {job} did not complete within 90 s of the leader's death; each task's last \
                 event: {last:?}; sessions holding a transaction id or an advisory lock: \
                 {sessions:?}; the standby's log, newest first:\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let tasks = task_events(&url, job, 16).await;
    all_completed_once(&tasks);
    let (in_log, by_instant) = most_running(&tasks);
    assert!(
        in_log <= 2 && by_instant <= 2,
        "{in_log} / {by_instant} ran at once"
    );
}

/// Bad limits and keys are refused with a clear error, and nothing is appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_limits_and_keys_get_clear_errors() {
    let url = support::database_url(support::Backend::Sqlite)
        .await
        .unwrap();
    let dev = Dev::start(&url, None, &["--workers", "0"]).await;
    let set = "mutation($kind: LimitKind!, $name: String!, $max: Int, $rate: Float) {
                 setLimit(kind: $kind, name: $name, maxConcurrency: $max, ratePerSecond: $rate) {
                   name
                 }
               }";
    let cases = [
        (
            json!({"kind": "KEY", "name": "acme", "max": -1}),
            "maxConcurrency",
            "between 1 and",
        ),
        (
            json!({"kind": "KEY", "name": "acme", "max": 0}),
            "maxConcurrency",
            "between 1 and",
        ),
        (
            json!({"kind": "JOB_TYPE", "name": "t", "rate": 1e9}),
            "ratePerSecond",
            "tasks per second",
        ),
        (
            json!({"kind": "JOB_TYPE", "name": "t", "rate": 0}),
            "ratePerSecond",
            "tasks per second",
        ),
        (
            json!({"kind": "JOB_TYPE", "name": "", "max": 1}),
            "name",
            "characters",
        ),
    ];
    for (variables, field, text) in cases {
        let response = dev.graphql_raw(set, variables.clone()).await;
        let error = &response["errors"][0];
        assert_eq!(
            error["extensions"]["code"], "INVALID_INPUT",
            "{variables}: {response}"
        );
        assert_eq!(
            error["extensions"]["field"], field,
            "{variables}: {response}"
        );
        assert!(
            error["message"].as_str().unwrap().contains(text),
            "{response}"
        );
    }
    let limits = dev.graphql("{ limits { name } }", json!({})).await;
    assert_eq!(limits["limits"], json!([]));

    // A key naming a parameter the job does not have; a negative job limit.
    let submit = "mutation($input: SubmitJobInput!) { submitJob(input: $input) { id } }";
    let response = dev
        .graphql_raw(
            submit,
            json!({"input": {"jobType": "noop", "totalTasks": 1, "concurrencyKey": "tenant",
                             "parameters": {"customer": "acme"}}}),
        )
        .await;
    let error = &response["errors"][0];
    assert_eq!(error["extensions"]["field"], "concurrencyKey", "{response}");
    assert!(
        error["message"].as_str().unwrap().contains("\"tenant\""),
        "{response}"
    );
    let response = dev
        .graphql_raw(
            submit,
            json!({"input": {"jobType": "noop", "totalTasks": 1, "maxConcurrency": -3}}),
        )
        .await;
    assert_eq!(
        response["errors"][0]["extensions"]["field"], "maxConcurrency",
        "{response}"
    );

    // REST: the same checks.
    let response = dev
        .http
        .post(dev.url("/api/v1/jobs"))
        .json(&json!({"job_type": "noop", "num_tasks": 1, "max_concurrency": -1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let response = dev
        .http
        .post(dev.url("/api/v1/jobs"))
        .json(&json!({"job_type": "noop", "num_tasks": 1, "concurrency_key": "tenant"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert!(body.to_string().contains("tenant"), "{body}");
}

/// On SQS (which cannot reorder a queue), a 3-task job submitted after a big one completes
/// while the big one still runs: the orchestrator keeps only a window of each job's tasks in
/// the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqs_a_small_job_is_not_starved_by_a_big_one() {
    let Some(queue) = fresh_sqs_queue("fair-share", 5).await else {
        return;
    };
    let moto = moto().expect("moto runs");
    let url = match postgres().await {
        Some(url) => url,
        None => support::database_url(support::Backend::Sqlite)
            .await
            .unwrap(),
    };
    let queue_url = queue.queue_url().to_owned();
    let dev = Dev::start(
        &url,
        Some(moto),
        &[
            "--workers",
            "4",
            "--queue",
            &queue_url,
            "--fair-share-window",
            "4",
        ],
    )
    .await;
    let big = dev
        .submit(json!({
            "jobType": "io_bound", "totalTasks": 200,
            "parameters": { "work_duration_seconds": 0.2 },
        }))
        .await;
    let url_big = url.clone();
    wait_until("the big job started", Duration::from_secs(60), || {
        let url = url_big.clone();
        async move {
            task_events(&url, big, 4)
                .await
                .iter()
                .any(|e| e.iter().any(|e| e.event_type == "TaskStarted"))
        }
    })
    .await;
    let small = dev
        .submit(json!({
            "jobType": "io_bound", "totalTasks": 3,
            "parameters": { "work_duration_seconds": 0 },
        }))
        .await;
    let submitted = Instant::now();
    wait_completed(&url, small, Duration::from_secs(60)).await;
    let waited = submitted.elapsed();
    assert!(
        !job_events(&url, big)
            .await
            .iter()
            .any(|t| t == "JobCompleted"),
        "the small job completed only after the big one"
    );
    // 200 tasks of 0.2 s on 4 slots take 10 s; the small job waited behind a window.
    assert!(
        waited < Duration::from_secs(8),
        "the small job waited {waited:?}"
    );
}
