//! What an operator sees, through the binary: `/metrics` during a real job (queue depth and
//! the oldest message's age while no worker runs, then tasks started, completed, retried and
//! failed by job type on a `shoal worker`'s admin port, event-log appends, the projector's lag
//! back at zero, GraphQL requests by operation), and the health endpoints (readiness turns
//! 503 when the database is gone or behind this build's migrations).

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Dev, Process, for_each_backend, free_port, wait_until};

/// A scrape: the value of the sample named exactly `series` (name and labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// A scrape as Prometheus makes it (asking for OpenMetrics).
async fn scrape(http: &reqwest::Client, url: &str) -> String {
    let response = http
        .get(url)
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.expect("the exposition")
}

/// Waits until the scrape at `url` has `series` at `value`.
async fn wait_for_sample(http: &reqwest::Client, url: &str, series: &str, value: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let last = scrape(http, url).await;
        if sample(&last, series) == Some(value) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} never reached {value} at {url}; last scrape:\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(http: &reqwest::Client, url: &str) -> u16 {
    http.get(url).send().await.expect("GET").status().as_u16()
}

async fn metrics_move_during_a_job(url: &str) {
    // No in-process workers: the tasks wait in the queue until a `shoal worker` starts.
    let dev = Dev::start(url, None, &["--workers", "0"]).await;
    let metrics = dev.url("/metrics");
    let before = scrape(&dev.http, &metrics).await;
    assert_eq!(sample(&before, "shoal_queue_up"), Some(1.0));
    assert_eq!(sample(&before, "shoal_queue_messages"), Some(0.0));
    // Without asking for OpenMetrics (curl), the Prometheus text format 0.0.4.
    let classic = dev.http.get(&metrics).send().await.expect("GET /metrics");
    assert!(
        classic.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let classic = classic.text().await.unwrap();
    assert_eq!(sample(&classic, "shoal_queue_messages"), Some(0.0));
    assert!(classic.contains("# TYPE shoal_queue_depth gauge"));
    let (job, _) = dev
        .submit_job(json!({ "jobType": "noop", "totalTasks": 20 }))
        .await;
    wait_for_sample(&dev.http, &metrics, "shoal_queue_messages", 20.0).await;
    wait_for_sample(
        &dev.http,
        &metrics,
        "shoal_orchestrator_tasks_created_total",
        20.0,
    )
    .await;
    wait_until(
        "the oldest message has waited",
        Duration::from_secs(30),
        || async {
            let text = scrape(&dev.http, &metrics).await;
            sample(&text, "shoal_queue_oldest_message_age_seconds").is_some_and(|age| age > 0.0)
        },
    )
    .await;

    let admin = format!("127.0.0.1:{}", free_port());
    let _worker = Process::start(
        &[
            "worker",
            "--database-url",
            url,
            "--concurrency",
            "4",
            "--admin-listen",
            &admin,
            "--exec",
            "fail=false",
            "--worker-id",
            "metrics-test",
        ],
        None,
        None,
    );
    let worker_metrics = format!("http://{admin}/metrics");
    wait_until(
        "the worker's admin port answers",
        Duration::from_secs(60),
        || async { dev.http.get(&worker_metrics).send().await.is_ok() },
    )
    .await;
    let (failing, _) = dev
        .submit_job(json!({
            "jobType": "exec",
            "totalTasks": 2,
            "maxAttempts": 2,
            "parameters": { "command": "fail" },
        }))
        .await;

    for (series, value) in [
        ("shoal_tasks_started_total{job_type=\"noop\"}", 20.0),
        ("shoal_tasks_completed_total{job_type=\"noop\"}", 20.0),
        (
            "shoal_task_duration_seconds_count{job_type=\"noop\",outcome=\"completed\"}",
            20.0,
        ),
        ("shoal_tasks_started_total{job_type=\"exec\"}", 4.0),
        ("shoal_tasks_retried_total{job_type=\"exec\"}", 2.0),
        ("shoal_tasks_failed_total{job_type=\"exec\"}", 2.0),
        (
            "shoal_task_duration_seconds_count{job_type=\"exec\",outcome=\"failed\"}",
            4.0,
        ),
        ("shoal_worker_tasks_completed_total", 20.0),
        ("shoal_worker_tasks_failed_total", 2.0),
        ("shoal_worker_tasks_in_flight", 0.0),
        ("shoal_worker_held_bytes", 0.0),
    ] {
        wait_for_sample(&dev.http, &worker_metrics, series, value).await;
    }
    let worker_scrape = scrape(&dev.http, &worker_metrics).await;
    // TaskStarted and TaskCompleted of 20 tasks, TaskStarted and TaskFailed (+ the retry or
    // the dead-lettering) of 4 attempts: the worker's group commits carried all of them.
    let appended = sample(
        &worker_scrape,
        "shoal_eventlog_append_events_sum{caller=\"worker\"}",
    )
    .expect("the worker's appends are measured");
    assert!(
        appended >= 40.0 + 8.0,
        "{appended} events appended\n{worker_scrape}"
    );
    assert!(
        sample(
            &worker_scrape,
            "shoal_eventlog_append_duration_seconds_count{caller=\"worker\"}"
        )
        .is_some_and(|n| n >= 1.0)
    );

    // The platform's side: the queue drained, both jobs closed, the projections caught up.
    wait_for_sample(&dev.http, &metrics, "shoal_queue_messages", 0.0).await;
    wait_for_sample(
        &dev.http,
        &metrics,
        "shoal_orchestrator_jobs_completed_total",
        1.0,
    )
    .await;
    wait_for_sample(
        &dev.http,
        &metrics,
        "shoal_orchestrator_jobs_failed_total",
        1.0,
    )
    .await;
    for projection in ["jobs", "analytics"] {
        wait_for_sample(
            &dev.http,
            &metrics,
            &format!("shoal_projector_lag_events{{projection=\"{projection}\"}}"),
            0.0,
        )
        .await;
        wait_for_sample(
            &dev.http,
            &metrics,
            &format!("shoal_projector_lag_seconds{{projection=\"{projection}\"}}"),
            0.0,
        )
        .await;
    }
    assert_eq!(dev.job_status(job).await.as_deref(), Some("COMPLETED"));
    assert_eq!(dev.job_status(failing).await.as_deref(), Some("FAILED"));

    // GraphQL requests by operation name; the commands' appends.
    dev.graphql(
        "query JobsForMetrics { jobs(first: 1) { pageInfo { hasNextPage } } }",
        json!({}),
    )
    .await;
    let text = scrape(&dev.http, &metrics).await;
    assert_eq!(
        sample(
            &text,
            "shoal_graphql_request_duration_seconds_count{operation=\"JobsForMetrics\",type=\"query\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "shoal_graphql_request_duration_seconds_count{operation=\"anonymous\",type=\"mutation\"}")
            .is_some_and(|n| n >= 2.0)
    );
    assert!(
        sample(
            &text,
            "shoal_eventlog_append_events_count{caller=\"command\"}"
        )
        .is_some_and(|n| n >= 2.0)
    );
    assert_eq!(sample(&text, "shoal_graphql_subscriptions_open"), Some(0.0));
    assert!(text.ends_with("# EOF\n"));

    // Every metric the Grafana dashboard plots is one that Shoal exports.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/infra/deploy/grafana/shoal.json"
    ))
    .expect("the dashboard");
    let exported = format!("{text}{worker_scrape}");
    let mut plotted = 0;
    for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some(name) = word.strip_prefix("shoal_") {
            let family = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n));
            // A labelled family shows only once it has a series: no append failed here.
            let seen_only_on_failure = family == "eventlog_append_errors";
            assert!(
                seen_only_on_failure || exported.contains(&format!("# TYPE shoal_{family} ")),
                "the dashboard plots shoal_{name}, which is not exported"
            );
            plotted += 1;
        }
    }
    assert!(plotted > 20);

    for endpoint in ["/health/live", "/health/ready"] {
        assert_eq!(
            status(&dev.http, &dev.url(endpoint)).await,
            200,
            "{endpoint}"
        );
    }
    assert_eq!(
        status(&dev.http, &format!("http://{admin}/health/ready")).await,
        200
    );
}

/// A worker whose database falls behind this build's migrations is not ready, but alive.
async fn ready_turns_503_when_migrations_are_missing(url: &str) {
    let admin = format!("127.0.0.1:{}", free_port());
    let _worker = Process::start(
        &["worker", "--database-url", url, "--admin-listen", &admin],
        None,
        None,
    );
    let http = reqwest::Client::new();
    let ready = format!("http://{admin}/health/ready");
    wait_until("the worker is ready", Duration::from_secs(60), || async {
        http.get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let database = shoal_infra::db::Database::connect(url)
        .await
        .expect("connecting");
    let removed = match &database {
        shoal_infra::db::Database::Postgres(pool) => sqlx::query(
            "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
        )
        .execute(pool)
        .await
        .map(|r| r.rows_affected()),
        shoal_infra::db::Database::Sqlite(pool) => sqlx::query(
            "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
        )
        .execute(pool)
        .await
        .map(|r| r.rows_affected()),
    };
    assert_eq!(removed.expect("deleting a migration's record"), 1);
    database.close().await;
    let response = http.get(&ready).send().await.expect("GET /health/ready");
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert!(
        body["reason"].as_str().unwrap().contains("migration"),
        "{body}"
    );
    assert_eq!(
        status(&http, &format!("http://{admin}/health/live")).await,
        200
    );
}

for_each_backend!(
    metrics_move_during_a_job,
    ready_turns_503_when_migrations_are_missing
);

/// Readiness turns 503 when the database is gone (dropped under a running worker), and back
/// is not expected: liveness stays 200 so that a probe does not restart-loop the pod.
#[tokio::test]
async fn ready_turns_503_when_the_database_is_gone() {
    let Some(url) = shoal_infra::testing::fresh_postgres_url().await else {
        return;
    };
    let admin = format!("127.0.0.1:{}", free_port());
    let _worker = Process::start(
        &["worker", "--database-url", &url, "--admin-listen", &admin],
        None,
        None,
    );
    let http = reqwest::Client::new();
    let ready = format!("http://{admin}/health/ready");
    wait_until("the worker is ready", Duration::from_secs(60), || async {
        http.get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let server = std::env::var(shoal_infra::testing::TEST_DATABASE_URL_ENV).unwrap();
    let name = url.rsplit_once('/').unwrap().1.to_owned();
    let admin_db = shoal_infra::db::Database::connect(&server)
        .await
        .expect("connecting");
    let shoal_infra::db::Database::Postgres(pool) = &admin_db else {
        panic!("a Postgres server URL");
    };
    sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .execute(pool)
        .await
        .expect("dropping the worker's database");
    admin_db.close().await;
    wait_until("readiness notices", Duration::from_secs(30), || async {
        http.get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    assert_eq!(
        status(&http, &format!("http://{admin}/health/live")).await,
        200
    );
}

/// With `--otlp-endpoint`, `shoal dev` exports its spans over OTLP HTTP/protobuf: a collector
/// (here a stand-in that keeps what it is sent) receives the job's spans from the submission
/// to the task, at the latest when the process stops.
#[tokio::test]
async fn traces_are_exported_to_an_otlp_collector() {
    use std::sync::{Arc, Mutex};

    /// What the collector was sent: content type and body of each request.
    type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let received: Received = Arc::default();
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", collector.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(
                |axum::extract::State(received): axum::extract::State<Received>,
                 headers: axum::http::HeaderMap,
                 body: axum::body::Bytes| async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    received.lock().unwrap().push((content_type, body.to_vec()));
                    axum::http::StatusCode::OK
                },
            ),
        )
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(collector, app).await });

    let url = support::database_url(support::Backend::Sqlite)
        .await
        .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut dev = Process::start(
        &[
            "dev",
            "--listen",
            &listen,
            "--database-url",
            &url,
            "--workers",
            "2",
            "--otlp-endpoint",
            &endpoint,
        ],
        None,
        None,
    );
    let http = reqwest::Client::new();
    let graphql = format!("http://{listen}/graphql");
    wait_until("shoal dev listens", Duration::from_secs(60), || async {
        http.get(&graphql).send().await.is_ok()
    })
    .await;
    let response: serde_json::Value = http
        .post(&graphql)
        .json(&json!({ "query": "mutation { submitJob(input: {jobType: \"noop\", totalTasks: 3}) { id } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = response["data"]["submitJob"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until("the job completes", Duration::from_secs(60), || async {
        let response: serde_json::Value = http
            .post(&graphql)
            .json(&json!({ "query": format!("{{ job(id: \"{job}\") {{ status }} }}") }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        response["data"]["job"]["status"] == "COMPLETED"
    })
    .await;
    dev.terminate();
    assert!(dev.wait_exit(Duration::from_secs(60)).await);

    let received = received.lock().unwrap();
    assert!(!received.is_empty(), "no export reached the collector");
    let contains = |needle: &[u8]| {
        received
            .iter()
            .any(|(_, body)| body.windows(needle.len()).any(|w| w == needle))
    };
    for (content_type, _) in received.iter() {
        assert_eq!(content_type, "application/x-protobuf");
    }
    for span in [
        &b"command.submit_job"[..],
        b"orchestrator.expand",
        b"task",
        b"shoal",
        job.as_bytes(),
    ] {
        assert!(
            contains(span),
            "{:?} not in what the collector received",
            String::from_utf8_lossy(span)
        );
    }
}

/// Off a terminal, logs are JSON lines without colour codes, and a task's lines carry its job
/// id, task id, attempt and worker id.
#[tokio::test]
async fn logs_are_json_lines_with_the_task_fields_off_a_terminal() {
    let url = support::database_url(support::Backend::Sqlite)
        .await
        .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let log = support::temp_path("json-log").with_extension("log");
    let mut child = support::shoal(
        &[
            "dev",
            "--listen",
            &listen,
            "--database-url",
            &url,
            "--workers",
            "1",
            "--exec",
            "fail=false",
            "--worker-id",
            "json-log-test",
        ],
        None,
    )
    .env("RUST_LOG", "info,sqlx=warn")
    .stdin(std::process::Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .expect("starting shoal dev");
    let http = reqwest::Client::new();
    let graphql = format!("http://{listen}/graphql");
    wait_until("shoal dev listens", Duration::from_secs(60), || async {
        http.get(&graphql).send().await.is_ok()
    })
    .await;
    let response: serde_json::Value = http
        .post(&graphql)
        .json(&json!({ "query": "mutation { submitJob(input: {jobType: \"exec\", totalTasks: 1, maxAttempts: 1, parameters: {command: \"fail\"}}) { id } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = response["data"]["submitJob"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed_line = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|line| line["message"] == "attempt failed")
    };
    wait_until(
        "the attempt's failure is logged",
        Duration::from_secs(60),
        || async { failed_line().is_some() },
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let line = failed_line().unwrap();
    let span = &line["span"];
    assert_eq!(span["name"], "task", "{line}");
    assert_eq!(span["job_id"], job.as_str(), "{line}");
    assert_eq!(span["job_type"], "exec", "{line}");
    assert_eq!(span["attempt"], 1, "{line}");
    assert_eq!(span["worker_id"], "json-log-test", "{line}");
    assert!(span["task_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(line["level"], "INFO");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "no terminal colour codes in a log file"
    );
    let json_lines = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .count();
    assert!(json_lines >= 3, "the log is JSON lines:\n{text}");
    let _ = std::fs::remove_file(&log);
}
