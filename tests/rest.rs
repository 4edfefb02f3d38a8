//! Conformance of the original system's REST API (`../shared/API-COMPAT.md`, documented in
//! `docs/rest-api.md`), black-box over HTTP against a real `shoal dev` process: every
//! endpoint's success and error cases, status codes and body shapes. Each test runs on SQLite
//! and on Postgres (required when `SHOAL_REQUIRE_POSTGRES=1`).
//!
//! `shoal dev` runs with `--workers 0`, so tasks move only when the test moves them through
//! the REST task transitions, as the original's external workers did.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shoal_domain::{JobId, TaskId};
use shoal_infra::db::Database;

use support::for_each_backend;

/// `shoal dev --workers 0` on a free port, and an HTTP client for it.
struct Dev(support::Dev);

impl std::ops::Deref for Dev {
    type Target = support::Dev;

    fn deref(&self) -> &support::Dev {
        &self.0
    }
}

/// A response: status and JSON body (`Value::Null` when the body is not JSON).
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Dev {
    async fn start(database_url: &str, extra: &[&str]) -> Dev {
        let mut args = vec!["--workers", "0"];
        args.extend_from_slice(extra);
        Dev(support::Dev::start(database_url, None, &args).await)
    }

    async fn request(&self, method: Method, path: &str, body: Option<&str>) -> Answer {
        let mut request = self.0.http.request(method, self.0.url(path));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.expect("an HTTP response");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a body");
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.request(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.request(Method::POST, path, Some(&body.to_string()))
            .await
    }

    async fn post_raw(&self, path: &str, body: Option<&str>) -> Answer {
        self.request(Method::POST, path, body).await
    }

    /// Submits a job and returns its id (asserting 201).
    async fn submit(&self, body: Value) -> JobId {
        let answer = self.post("/api/v1/jobs", body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        JobId::parse(answer.body["id"].as_str().expect("an id")).expect("a job id")
    }

    /// Polls `path` until `done` holds for the answer (projections are asynchronous).
    async fn eventually(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = self.get(path).await;
            if answer.status == StatusCode::OK && done(&answer.body) {
                return answer.body;
            }
            assert!(
                Instant::now() < deadline,
                "GET {path} never satisfied the condition: {} {}",
                answer.status,
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every task of `job` exists (the orchestrator creates them after the 201).
    async fn wait_enqueued(&self, job: JobId) {
        self.eventually(&format!("/api/v1/jobs/{job}"), |job| {
            job["status"] == "ENQUEUED"
        })
        .await;
    }

    async fn event_types(&self, stream_id: &str) -> Vec<(String, Value)> {
        let database = Database::connect(&self.0.database_url)
            .await
            .expect("connecting");
        let events = database
            .event_log()
            .read_stream(stream_id, 0)
            .await
            .expect("reading a stream");
        database.close().await;
        events
            .into_iter()
            .map(|e| (e.event_type.clone(), e.data_json()))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Shape checks

/// `2025-11-27T10:01:02.123456Z`.
fn assert_datetime(value: &Value, what: &str) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {value} is not a string"));
    let bytes = text.as_bytes();
    let ok = text.len() == 27
        && text.ends_with('Z')
        && bytes[10] == b'T'
        && bytes[19] == b'.'
        && chrono::DateTime::parse_from_rfc3339(text).is_ok();
    assert!(
        ok,
        "{what}: {text:?} is not ISO-8601 UTC with Z and microseconds"
    );
}

fn assert_optional_datetime(value: &Value, what: &str) {
    if !value.is_null() {
        assert_datetime(value, what);
    }
}

fn assert_keys(object: &Value, keys: &[&str]) {
    let map = object
        .as_object()
        .unwrap_or_else(|| panic!("{object} is not an object"));
    for key in keys {
        assert!(map.contains_key(*key), "{key} missing from {object}");
    }
}

const JOB_STATUSES: [&str; 7] = [
    "PENDING",
    "CREATING_TASKS",
    "ENQUEUED",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
];
const TASK_STATUSES: [&str; 6] = [
    "PENDING",
    "ENQUEUED",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "RETRYING",
];

fn assert_job(job: &Value) {
    assert_keys(
        job,
        &[
            "id",
            "job_type",
            "status",
            "total_tasks",
            "completed_tasks",
            "failed_tasks",
            "parameters",
            "created_at",
            "updated_at",
            "started_at",
            "completed_at",
            "error_message",
        ],
    );
    assert!(JobId::parse(job["id"].as_str().unwrap()).is_ok());
    assert!(job["job_type"].is_string());
    assert!(
        JOB_STATUSES.contains(&job["status"].as_str().unwrap()),
        "{job}"
    );
    for count in ["total_tasks", "completed_tasks", "failed_tasks"] {
        assert!(job[count].is_u64(), "{count} of {job}");
    }
    assert!(job["parameters"].is_object() || job["parameters"].is_null());
    assert_datetime(&job["created_at"], "created_at");
    for at in ["updated_at", "started_at", "completed_at"] {
        assert_optional_datetime(&job[at], at);
    }
    assert!(job["error_message"].is_string() || job["error_message"].is_null());
}

fn assert_task(task: &Value) {
    assert_keys(
        task,
        &[
            "id",
            "job_id",
            "status",
            "task_index",
            "retry_count",
            "max_retries",
            "parameters",
            "result",
            "error_message",
            "created_at",
            "updated_at",
            "started_at",
            "completed_at",
            "processing_time_seconds",
        ],
    );
    assert!(TaskId::parse(task["id"].as_str().unwrap()).is_ok());
    assert!(JobId::parse(task["job_id"].as_str().unwrap()).is_ok());
    assert!(
        TASK_STATUSES.contains(&task["status"].as_str().unwrap()),
        "{task}"
    );
    for count in ["task_index", "retry_count", "max_retries"] {
        assert!(task[count].is_u64(), "{count} of {task}");
    }
    assert!(task["result"].is_object() || task["result"].is_null());
    assert_datetime(&task["created_at"], "created_at");
    for at in ["updated_at", "started_at", "completed_at"] {
        assert_optional_datetime(&task[at], at);
    }
    assert!(task["processing_time_seconds"].is_f64() || task["processing_time_seconds"].is_null());
}

/// A 422 with exactly one entry of `kind` at `loc`.
fn assert_invalid(answer: &Answer, kind: &str, loc: Value) {
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.body
    );
    let detail = answer.body["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("no detail list in {}", answer.body));
    let found = detail
        .iter()
        .find(|e| e["type"] == kind && e["loc"] == loc)
        .unwrap_or_else(|| panic!("no {kind} at {loc} in {}", answer.body));
    assert_keys(found, &["type", "loc", "msg", "input"]);
    assert!(found["msg"].is_string());
}

fn assert_detail(answer: &Answer, status: StatusCode, detail: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body, json!({ "detail": detail }));
}

for_each_backend!(
    service_endpoints_docs_cors_404_and_405,
    cross_origin_callers_are_an_explicit_allow_list,
    the_original_task_ids_name_the_same_tasks,
    a_trailing_slash_is_redirected_as_the_original_did,
    the_document_states_the_servers_limits,
    submit_job_answers_201_and_validates_like_the_original,
    job_and_task_reads_and_their_404s,
    task_transitions_append_the_workers_events,
    a_failed_task_is_retried_then_failed_and_so_is_its_job,
    query_parameters_are_validated,
    lists_pagination_search_and_analytics,
);

// ---------------------------------------------------------------------------------------------
// Tests

async fn service_endpoints_docs_cors_404_and_405(url: &str) {
    let dev = Dev::start(url, &[]).await;

    let root = dev.get("/").await;
    assert_eq!(root.status, StatusCode::OK);
    assert_eq!(root.body["status"], "healthy");
    assert!(root.body["service"].is_string() && root.body["version"].is_string());

    let health = dev.get("/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(
        health.body,
        json!({"status": "healthy", "database": "connected"})
    );

    let openapi = dev.get("/openapi.json").await;
    assert_eq!(openapi.status, StatusCode::OK);
    assert_eq!(openapi.body["openapi"], "3.1.0");
    let paths = &openapi.body["paths"];
    assert!(paths["/api/v1/jobs"]["get"].is_object() && paths["/api/v1/jobs"]["post"].is_object());
    for path in [
        "/",
        "/health",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/tasks",
        "/api/v1/tasks/{task_id}",
        "/api/v1/tasks/{task_id}/running",
        "/api/v1/tasks/{task_id}/complete",
        "/api/v1/tasks/{task_id}/failed",
        "/api/v1/analytics/overview",
        "/api/v1/analytics/jobs-by-type",
        "/api/v1/analytics/jobs-by-status",
        "/api/v1/analytics/tasks-by-status",
        "/api/v1/analytics/timeline",
        "/api/v1/analytics/processing-time-stats",
        "/api/v1/analytics/recent-jobs",
    ] {
        assert!(paths[path].is_object(), "{path} missing from /openapi.json");
    }

    // The interactive page and its assets are served by Shoal itself (no CDN).
    let docs = dev
        .http
        .get(format!("{}/docs/", dev.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("swagger"));
    let config = dev
        .http
        .get(format!("{}/docs/swagger-initializer.js", dev.base))
        .send()
        .await
        .unwrap();
    assert_eq!(config.status(), StatusCode::OK);
    assert!(config.text().await.unwrap().contains("/openapi.json"));
    let bundle = dev
        .http
        .get(format!("{}/docs/swagger-ui-bundle.js", dev.base))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), StatusCode::OK);

    // 405 on known paths, 404 on unknown ones.
    for (method, path) in [
        (Method::DELETE, "/api/v1/jobs".to_owned()),
        (Method::PUT, format!("/api/v1/jobs/{}", JobId::new())),
        (
            Method::GET,
            format!("/api/v1/tasks/{}/running", JobId::new()),
        ),
        (Method::POST, "/api/v1/analytics/overview".to_owned()),
        (Method::POST, "/health".to_owned()),
    ] {
        let answer = dev.request(method.clone(), &path, None).await;
        assert_detail(
            &answer,
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
        );
    }
    assert_detail(
        &dev.get("/api/v1/nothing-here").await,
        StatusCode::NOT_FOUND,
        "Not Found",
    );

    // Without an allowed origin, no preflight is answered.
    let preflight = dev
        .http
        .request(Method::OPTIONS, dev.url("/api/v1/jobs"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

async fn submit_job_answers_201_and_validates_like_the_original(url: &str) {
    let dev = Dev::start(url, &[]).await;

    let answer = dev
        .post(
            "/api/v1/jobs",
            json!({
                "job_type": "cpu_bound",
                "num_tasks": 3,
                "parameters": {"work_duration_seconds": 0.1},
                "unknown_field": "ignored",
            }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let job = &answer.body;
    assert_job(job);
    assert_eq!(job["job_type"], "cpu_bound");
    // Accepted, not yet expanded: see docs/rest-api.md on PENDING and ENQUEUED.
    assert_eq!(job["status"], "PENDING");
    assert_eq!(job["total_tasks"], 3);
    assert_eq!(job["completed_tasks"], 0);
    assert_eq!(job["failed_tasks"], 0);
    assert_eq!(job["parameters"], json!({"work_duration_seconds": 0.1}));
    assert!(job["started_at"].is_null() && job["completed_at"].is_null());
    // Tasks are created and enqueued right after the 201.
    let id = job["id"].as_str().unwrap().to_owned();
    let job = dev
        .eventually(&format!("/api/v1/jobs/{id}"), |j| j["status"] == "ENQUEUED")
        .await;
    assert_job(&job);

    // Accepted forms: a numeric string, `total_tasks`, an empty job type, no parameters.
    for body in [
        json!({"job_type": "a", "num_tasks": "3"}),
        json!({"job_type": "a", "total_tasks": 3}),
        json!({"job_type": "a", "num_tasks": 3.0}),
        json!({"job_type": "", "num_tasks": 1}),
        json!({"job_type": "a", "num_tasks": 1, "parameters": null}),
    ] {
        let answer = dev.post("/api/v1/jobs", body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "{body}: {}",
            answer.body
        );
        assert_job(&answer.body);
    }
    let answer = dev
        .post("/api/v1/jobs", json!({"job_type": "a", "num_tasks": "3"}))
        .await;
    assert_eq!(answer.body["total_tasks"], 3);

    // Validation errors: FastAPI's shape.
    let post = |body: Value| dev.post("/api/v1/jobs", body);
    let answer = post(json!({"job_type": "a", "num_tasks": 0})).await;
    assert_invalid(&answer, "greater_than_equal", json!(["body", "num_tasks"]));
    assert_eq!(answer.body["detail"][0]["input"], 0);
    let answer = post(json!({"job_type": "a", "num_tasks": 1_000_001})).await;
    assert_invalid(&answer, "less_than_equal", json!(["body", "num_tasks"]));
    assert_eq!(answer.body["detail"][0]["ctx"], json!({"le": 1_000_000}));
    assert_invalid(
        &post(json!({"job_type": "a", "num_tasks": 2.5})).await,
        "int_from_float",
        json!(["body", "num_tasks"]),
    );
    assert_invalid(
        &post(json!({"job_type": "a", "num_tasks": "three"})).await,
        "int_parsing",
        json!(["body", "num_tasks"]),
    );
    assert_invalid(
        &post(json!({"job_type": "a", "total_tasks": 0})).await,
        "greater_than_equal",
        json!(["body", "total_tasks"]),
    );
    assert_invalid(
        &post(json!({"job_type": "a", "num_tasks": 1, "parameters": [1, 2]})).await,
        "dict_type",
        json!(["body", "parameters"]),
    );
    assert_invalid(
        &post(json!({"job_type": "a", "num_tasks": 1, "parameters": "x"})).await,
        "dict_type",
        json!(["body", "parameters"]),
    );
    let answer = post(json!({"num_tasks": 1})).await;
    assert_invalid(&answer, "missing", json!(["body", "job_type"]));
    assert_eq!(answer.body["detail"][0]["msg"], "Field required");
    assert_invalid(
        &post(json!({"job_type": 5, "num_tasks": 1})).await,
        "string_type",
        json!(["body", "job_type"]),
    );
    assert_invalid(
        &post(json!({"job_type": "a"})).await,
        "missing",
        json!(["body", "num_tasks"]),
    );
    // Several problems are reported at once.
    let answer = post(json!({"num_tasks": 0, "parameters": []})).await;
    assert_eq!(
        answer.body["detail"].as_array().unwrap().len(),
        3,
        "{}",
        answer.body
    );
    // Malformed JSON, a body that is not an object, no body.
    assert_invalid(
        &dev.post_raw("/api/v1/jobs", Some("{\"job_type\": ")).await,
        "json_invalid",
        json!(["body", 13]),
    );
    assert_invalid(
        &dev.post_raw("/api/v1/jobs", Some("[1]")).await,
        "model_attributes_type",
        json!(["body"]),
    );
    assert_invalid(
        &dev.post_raw("/api/v1/jobs", None).await,
        "missing",
        json!(["body"]),
    );
    // A job type over the limit.
    assert_invalid(
        &post(json!({"job_type": "x".repeat(201), "num_tasks": 1})).await,
        "string_too_long",
        json!(["body", "job_type"]),
    );

    // Shoal: a priority from -1000 to 1000 (docs/fairness.md); without one, 0.
    let answer = post(json!({"job_type": "a", "num_tasks": 1, "priority": 5})).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_job(&answer.body);
    let id = answer.body["id"].as_str().unwrap().to_owned();
    let events = dev.event_types(&format!("job-{id}")).await;
    assert_eq!(events[0].0, "JobSubmitted");
    assert_eq!(events[0].1["priority"], 5);
    let answer = post(json!({"job_type": "a", "num_tasks": 1, "priority": null})).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let answer = post(json!({"job_type": "a", "num_tasks": 1, "priority": 1001})).await;
    assert_invalid(&answer, "less_than_equal", json!(["body", "priority"]));
    assert_eq!(answer.body["detail"][0]["ctx"], json!({"le": 1000}));
    assert_invalid(
        &post(json!({"job_type": "a", "num_tasks": 1, "priority": -1001})).await,
        "greater_than_equal",
        json!(["body", "priority"]),
    );
    assert_invalid(
        &post(json!({"job_type": "a", "num_tasks": 1, "priority": "high"})).await,
        "int_parsing",
        json!(["body", "priority"]),
    );

    // Shoal: an idempotency key returns the first job again.
    let submit_with_key = || async {
        dev.http
            .post(format!("{}/api/v1/jobs", dev.base))
            .header("idempotency-key", "rest-key-1")
            .json(&json!({"job_type": "a", "num_tasks": 2}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let first = submit_with_key().await;
    let second = submit_with_key().await;
    assert_eq!(first["id"], second["id"]);
}

async fn job_and_task_reads_and_their_404s(url: &str) {
    let dev = Dev::start(url, &[]).await;
    let job = dev
        .submit(json!({"job_type": "noop", "num_tasks": 3, "parameters": {"k": "v"}}))
        .await;

    let answer = dev.get(&format!("/api/v1/jobs/{job}")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_job(&answer.body);
    assert_eq!(answer.body["id"], job.to_string());
    dev.wait_enqueued(job).await;

    // The job's tasks, in index order (once projected).
    let tasks = dev
        .eventually(&format!("/api/v1/jobs/{job}/tasks"), |b| b["total"] == 3)
        .await;
    assert_eq!(
        tasks.as_object().unwrap().len(),
        2,
        "only tasks and total: {tasks}"
    );
    let list = tasks["tasks"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    for (index, task) in list.iter().enumerate() {
        assert_task(task);
        assert_eq!(task["task_index"], index);
        assert_eq!(task["job_id"], job.to_string());
        assert_eq!(task["status"], "ENQUEUED");
        assert_eq!(task["parameters"]["k"], "v");
        assert_eq!(task["retry_count"], 0);
        assert_eq!(task["max_retries"], 2);
    }
    let task_id = TaskId::for_task(job, 1);
    let answer = dev.get(&format!("/api/v1/tasks/{task_id}")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_task(&answer.body);
    assert_eq!(answer.body["task_index"], 1);

    // Shoal: the tasks of a job, paginated.
    let page = dev
        .get(&format!("/api/v1/jobs/{job}/tasks?page=2&page_size=2"))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body["total"], 3);
    assert_eq!(page.body["total_pages"], 2);
    assert_eq!(page.body["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(page.body["tasks"][0]["task_index"], 2);

    // Unknown ids.
    let unknown = JobId::new();
    assert_detail(
        &dev.get(&format!("/api/v1/jobs/{unknown}")).await,
        StatusCode::NOT_FOUND,
        &format!("Job {unknown} not found"),
    );
    assert_detail(
        &dev.get("/api/v1/jobs/not-a-uuid").await,
        StatusCode::NOT_FOUND,
        "Job not-a-uuid not found",
    );
    let answer = dev.get(&format!("/api/v1/jobs/{unknown}/tasks")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, json!({"tasks": [], "total": 0}));
    let unknown_task = TaskId::for_task(unknown, 0);
    assert_detail(
        &dev.get(&format!("/api/v1/tasks/{unknown_task}")).await,
        StatusCode::NOT_FOUND,
        &format!("Task {unknown_task} not found"),
    );
    assert_detail(
        &dev.get("/api/v1/tasks/xyz").await,
        StatusCode::NOT_FOUND,
        "Task xyz not found",
    );
    for action in ["running", "complete", "failed"] {
        let answer = dev
            .post(&format!("/api/v1/tasks/{unknown_task}/{action}"), json!({}))
            .await;
        assert_detail(
            &answer,
            StatusCode::NOT_FOUND,
            &format!("Task {unknown_task} not found"),
        );
    }
}

async fn task_transitions_append_the_workers_events(url: &str) {
    let dev = Dev::start(url, &[]).await;
    let job = dev
        .submit(json!({"job_type": "noop", "num_tasks": 3}))
        .await;
    dev.wait_enqueued(job).await;
    let [t0, t1, t2] = [0, 1, 2].map(|i| TaskId::for_task(job, i));
    // A job of the original REST API keeps its workers' default handler, `cpu_bound`, for
    // tasks whose type no worker has and that name no `work_type`; its tasks carry it.
    let submitted = &dev.event_types(&job.stream_id()).await[0];
    assert_eq!(submitted.0, "JobSubmitted");
    assert_eq!(submitted.1["fallback_handler"], "cpu_bound");
    let enqueued = &dev.event_types(&t0.stream_id()).await[0];
    assert_eq!(enqueued.1["fallback_handler"], "cpu_bound");

    // running: ENQUEUED -> RUNNING; again: unchanged.
    let answer = dev
        .post_raw(&format!("/api/v1/tasks/{t0}/running"), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_task(&answer.body);
    assert_eq!(answer.body["status"], "RUNNING");
    assert_datetime(&answer.body["started_at"], "started_at");
    let again = dev
        .post_raw(&format!("/api/v1/tasks/{t0}/running"), None)
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, answer.body);

    // complete: a JSON body is required; `result` must be an object.
    assert_invalid(
        &dev.post_raw(&format!("/api/v1/tasks/{t0}/complete"), None)
            .await,
        "missing",
        json!(["body"]),
    );
    assert_invalid(
        &dev.post(
            &format!("/api/v1/tasks/{t0}/complete"),
            json!({"result": [1]}),
        )
        .await,
        "dict_type",
        json!(["body", "result"]),
    );
    assert_invalid(
        &dev.post(
            &format!("/api/v1/tasks/{t0}/complete"),
            json!({"processing_time_seconds": "slow"}),
        )
        .await,
        "float_parsing",
        json!(["body", "processing_time_seconds"]),
    );
    // An absurd processing time is refused at the edge and appends nothing (it used to be
    // accepted and then stop the analytics projection with "bigint out of range").
    let before = dev.event_types(&t0.stream_id()).await;
    for absurd in [json!(1e300), json!(2_592_001), json!("1e300")] {
        assert_invalid(
            &dev.post(
                &format!("/api/v1/tasks/{t0}/complete"),
                json!({"processing_time_seconds": absurd}),
            )
            .await,
            "less_than_equal",
            json!(["body", "processing_time_seconds"]),
        );
    }
    assert_eq!(dev.event_types(&t0.stream_id()).await, before);
    assert_invalid(
        &dev.post_raw(&format!("/api/v1/tasks/{t0}/complete"), Some("{"))
            .await,
        "json_invalid",
        json!(["body", 1]),
    );
    let done = dev
        .post(
            &format!("/api/v1/tasks/{t0}/complete"),
            json!({"result": {"answer": 42}, "processing_time_seconds": 1.25}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_task(&done.body);
    assert_eq!(done.body["status"], "COMPLETED");
    assert_eq!(done.body["result"], json!({"answer": 42}));
    assert_eq!(done.body["processing_time_seconds"], 1.25);
    assert_datetime(&done.body["completed_at"], "completed_at");
    // Completing again is a no-op; the first result stands.
    let again = dev
        .post(
            &format!("/api/v1/tasks/{t0}/complete"),
            json!({"result": {"answer": 0}}),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, done.body);
    // Guard rail: a COMPLETED task is never moved back. As on the original, the report is
    // answered 200 with the task unchanged (old workers treat any other status as an error),
    // and nothing is appended.
    let before = dev.event_types(&t0.stream_id()).await.len();
    let answer = dev
        .post(
            &format!("/api/v1/tasks/{t0}/failed"),
            json!({"error_message": "late"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, done.body);
    let running = dev
        .post_raw(&format!("/api/v1/tasks/{t0}/running"), None)
        .await;
    assert_eq!(running.status, StatusCode::OK);
    assert_eq!(running.body, done.body);
    assert_eq!(dev.event_types(&t0.stream_id()).await.len(), before);

    // `{}` is enough, and a worker may complete without reporting the start.
    let answer = dev
        .post(&format!("/api/v1/tasks/{t1}/complete"), json!({}))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["status"], "COMPLETED");
    assert!(answer.body["result"].is_null());
    assert!(answer.body["processing_time_seconds"].is_f64());

    // The events are those Shoal's own workers append.
    let events = dev.event_types(&t0.stream_id()).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["TaskEnqueued", "TaskStarted", "TaskCompleted"]);
    assert_eq!(events[1].1["worker"], "rest");
    assert_eq!(events[2].1["duration_ms"], 1250);
    let types: Vec<String> = dev
        .event_types(&t1.stream_id())
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(types, ["TaskEnqueued", "TaskStarted", "TaskCompleted"]);

    // The last task completes, and with it the job.
    dev.post(&format!("/api/v1/tasks/{t2}/complete"), json!({}))
        .await;
    let job = dev
        .eventually(&format!("/api/v1/jobs/{job}"), |j| {
            j["status"] == "COMPLETED" && j["completed_tasks"] == 3
        })
        .await;
    assert_job(&job);
    assert_datetime(&job["completed_at"], "completed_at");
    assert_datetime(&job["started_at"], "started_at");
    // The read model agrees with what the writes answered.
    let task = dev
        .eventually(&format!("/api/v1/tasks/{t0}"), |t| {
            t["status"] == "COMPLETED"
        })
        .await;
    assert_eq!(task, done.body);
}

async fn a_failed_task_is_retried_then_failed_and_so_is_its_job(url: &str) {
    let dev = Dev::start(url, &[]).await;
    let job = dev
        .submit(json!({"job_type": "noop", "num_tasks": 1, "max_attempts": 2}))
        .await;
    dev.wait_enqueued(job).await;
    let task = TaskId::for_task(job, 0);
    let path = |action: &str| format!("/api/v1/tasks/{task}/{action}");

    dev.post_raw(&path("running"), None).await;
    let first = dev
        .post(&path("failed"), json!({"error_message": "boom"}))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_task(&first.body);
    assert_eq!(first.body["status"], "RETRYING");
    assert_eq!(first.body["retry_count"], 1);
    assert_eq!(first.body["max_retries"], 1);
    assert_eq!(first.body["error_message"], "boom");
    assert!(first.body["completed_at"].is_null());

    let running = dev.post_raw(&path("running"), None).await;
    assert_eq!(running.body["status"], "RUNNING");
    // The body of `failed` is optional.
    let last = dev.post_raw(&path("failed"), None).await;
    assert_eq!(last.status, StatusCode::OK, "{}", last.body);
    assert_eq!(last.body["status"], "FAILED");
    assert_datetime(&last.body["completed_at"], "completed_at");
    assert!(last.body["error_message"].is_string());
    // Failing a FAILED task changes nothing, and neither does completing it late: both are
    // answered 200 with the task as it is, as on the original.
    let again = dev.post_raw(&path("failed"), None).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, last.body);
    let answer = dev
        .post(&path("complete"), json!({"result": {"late": true}}))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, last.body);
    let answer = dev.post_raw(&path("running"), None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, last.body);

    let types: Vec<String> = dev
        .event_types(&task.stream_id())
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(
        types,
        [
            "TaskEnqueued",
            "TaskStarted",
            "TaskFailed",
            "TaskRetryScheduled",
            "TaskStarted",
            "TaskFailed"
        ]
    );

    // Shoal: a job whose tasks all failed is FAILED.
    let job = dev
        .eventually(&format!("/api/v1/jobs/{job}"), |j| {
            j["status"] == "FAILED" && j["failed_tasks"] == 1
        })
        .await;
    assert_job(&job);
}

async fn query_parameters_are_validated(url: &str) {
    let dev = Dev::start(url, &[]).await;
    let cases = [
        ("/api/v1/jobs?page=0", "greater_than_equal", "page"),
        ("/api/v1/jobs?page=x", "int_parsing", "page"),
        (
            "/api/v1/jobs?page_size=0",
            "greater_than_equal",
            "page_size",
        ),
        ("/api/v1/jobs?page_size=101", "less_than_equal", "page_size"),
        (
            "/api/v1/analytics/timeline?days=0",
            "greater_than_equal",
            "days",
        ),
        (
            "/api/v1/analytics/timeline?days=31",
            "less_than_equal",
            "days",
        ),
        (
            "/api/v1/analytics/recent-jobs?limit=0",
            "greater_than_equal",
            "limit",
        ),
        (
            "/api/v1/analytics/recent-jobs?limit=51",
            "less_than_equal",
            "limit",
        ),
        (
            "/api/v1/analytics/recent-jobs?limit=2.5",
            "int_parsing",
            "limit",
        ),
    ];
    for (path, kind, name) in cases {
        assert_invalid(&dev.get(path).await, kind, json!(["query", name]));
    }
    let job = JobId::new();
    assert_invalid(
        &dev.get(&format!("/api/v1/jobs/{job}/tasks?page_size=10001"))
            .await,
        "less_than_equal",
        json!(["query", "page_size"]),
    );

    // Empty: 0 pages, and every analytics shape.
    let answer = dev.get("/api/v1/jobs").await;
    assert_eq!(
        answer.body,
        json!({"jobs": [], "total": 0, "page": 1, "page_size": 20, "total_pages": 0})
    );
    let stats = dev.get("/api/v1/analytics/processing-time-stats").await;
    assert_eq!(stats.status, StatusCode::OK);
    assert!(stats.body["median_seconds"].is_null());
    assert_eq!(stats.body["min_seconds"], 0.0);
    let overview = dev.get("/api/v1/analytics/overview").await;
    assert_eq!(overview.body["total_jobs"], 0);
    assert_eq!(overview.body["success_rate"], 0.0);
    let timeline = dev.get("/api/v1/analytics/timeline").await;
    assert_eq!(timeline.body.as_array().unwrap().len(), 7);
    for path in [
        "/api/v1/analytics/jobs-by-type",
        "/api/v1/analytics/jobs-by-status",
        "/api/v1/analytics/tasks-by-status",
        "/api/v1/analytics/recent-jobs",
    ] {
        let answer = dev.get(path).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, json!([]), "{path}");
    }
}

async fn lists_pagination_search_and_analytics(url: &str) {
    let dev = Dev::start(url, &[]).await;
    let mut ids = Vec::new();
    for job_type in ["alpha", "alpha", "Beta-Report", "gamma", "alpha"] {
        ids.push(
            dev.submit(json!({"job_type": job_type, "num_tasks": 2}))
                .await,
        );
    }
    for id in &ids {
        dev.wait_enqueued(*id).await;
    }
    // One task completes in 2 s, another fails for good.
    let done = TaskId::for_task(ids[0], 0);
    dev.post(
        &format!("/api/v1/tasks/{done}/complete"),
        json!({"processing_time_seconds": 2.0}),
    )
    .await;
    let failing = dev
        .submit(json!({"job_type": "delta", "num_tasks": 1, "max_attempts": 1}))
        .await;
    dev.wait_enqueued(failing).await;
    let answer = dev
        .post(
            &format!("/api/v1/tasks/{}/failed", TaskId::for_task(failing, 0)),
            json!({}),
        )
        .await;
    assert_eq!(answer.body["status"], "FAILED");
    ids.push(failing);

    // Pagination: newest first, total_pages = ceil(total / page_size).
    let all = dev
        .eventually("/api/v1/jobs?page_size=100", |b| b["total"] == 6)
        .await;
    let listed: Vec<String> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            assert_job(j);
            j["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let newest_first: Vec<String> = ids.iter().rev().map(ToString::to_string).collect();
    assert_eq!(listed, newest_first);
    let page = dev.get("/api/v1/jobs?page=2&page_size=4").await;
    assert_eq!(page.body["total"], 6);
    assert_eq!(page.body["page"], 2);
    assert_eq!(page.body["page_size"], 4);
    assert_eq!(page.body["total_pages"], 2);
    assert_eq!(page.body["jobs"].as_array().unwrap().len(), 2);
    let past = dev.get("/api/v1/jobs?page=9&page_size=4").await;
    assert_eq!(past.status, StatusCode::OK);
    assert_eq!(past.body["jobs"], json!([]));
    assert_eq!(past.body["total_pages"], 2);
    let numeric = dev.get("/api/v1/jobs?page=1&page_size=5").await;
    assert_eq!(numeric.body["total_pages"], 2);

    // Search: trimmed, case-insensitive, on the type or the id.
    let beta = dev.get("/api/v1/jobs?search=%20beta%20").await;
    assert_eq!(beta.body["total"], 1);
    assert_eq!(beta.body["jobs"][0]["job_type"], "Beta-Report");
    let alpha = dev.get("/api/v1/jobs?search=ALPH&page_size=2").await;
    assert_eq!(alpha.body["total"], 3);
    assert_eq!(alpha.body["total_pages"], 2);
    let id = ids[3].to_string();
    let by_id = dev
        .get(&format!("/api/v1/jobs?search={}", &id[id.len() - 12..]))
        .await;
    assert_eq!(by_id.body["total"], 1);
    assert_eq!(by_id.body["jobs"][0]["id"], id);
    let none = dev.get("/api/v1/jobs?search=nothing-like-this").await;
    assert_eq!(none.body["total"], 0);
    assert_eq!(none.body["total_pages"], 0);

    // Analytics.
    let overview = dev
        .eventually("/api/v1/analytics/overview", |o| {
            o["total_jobs"] == 6
                && o["completed_tasks"] == 1
                && o["failed_tasks"] == 1
                && o["failed_jobs"] == 1
        })
        .await;
    assert_keys(
        &overview,
        &[
            "total_jobs",
            "completed_jobs",
            "failed_jobs",
            "running_jobs",
            "pending_jobs",
            "success_rate",
            "total_tasks",
            "completed_tasks",
            "failed_tasks",
            "running_tasks",
            "pending_tasks",
            "avg_processing_time_seconds",
            "total_processing_time_seconds",
        ],
    );
    assert_eq!(overview["total_tasks"], 11);
    assert_eq!(overview["failed_jobs"], 1);
    assert_eq!(overview["running_jobs"], 1);
    assert_eq!(overview["pending_jobs"], 4);
    assert_eq!(overview["pending_tasks"], 9);
    assert_eq!(overview["success_rate"], 0.0);
    assert_eq!(overview["avg_processing_time_seconds"], 2.0);
    assert_eq!(overview["total_processing_time_seconds"], 2.0);

    let by_type = dev.get("/api/v1/analytics/jobs-by-type").await.body;
    let alpha = by_type
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["job_type"] == "alpha")
        .expect("alpha counted");
    assert_eq!(alpha["count"], 3);
    assert_eq!(by_type.as_array().unwrap().len(), 4);

    let by_status = dev.get("/api/v1/analytics/jobs-by-status").await.body;
    let count_of = |list: &Value, status: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|e| e["status"] == status)
            .map(|e| e["count"].clone())
    };
    assert_eq!(count_of(&by_status, "ENQUEUED"), Some(json!(4)));
    assert_eq!(count_of(&by_status, "RUNNING"), Some(json!(1)));
    assert_eq!(count_of(&by_status, "FAILED"), Some(json!(1)));
    assert_eq!(
        count_of(&by_status, "COMPLETED"),
        None,
        "statuses present only"
    );
    let tasks = dev.get("/api/v1/analytics/tasks-by-status").await.body;
    assert_eq!(count_of(&tasks, "ENQUEUED"), Some(json!(9)));
    assert_eq!(count_of(&tasks, "COMPLETED"), Some(json!(1)));
    assert_eq!(count_of(&tasks, "FAILED"), Some(json!(1)));

    let timeline = dev.get("/api/v1/analytics/timeline?days=3").await.body;
    let days = timeline.as_array().unwrap();
    assert_eq!(days.len(), 3);
    let dates: Vec<&str> = days.iter().map(|d| d["date"].as_str().unwrap()).collect();
    let mut sorted = dates.clone();
    sorted.sort_unstable();
    assert_eq!(dates, sorted, "ascending");
    for d in days {
        assert_eq!(d["date"].as_str().unwrap().len(), 10);
        assert!(chrono::NaiveDate::parse_from_str(d["date"].as_str().unwrap(), "%Y-%m-%d").is_ok());
    }
    assert_eq!(days[2]["count"], 6, "today's jobs");

    let stats = dev
        .get("/api/v1/analytics/processing-time-stats")
        .await
        .body;
    assert_keys(
        &stats,
        &[
            "min_seconds",
            "max_seconds",
            "avg_seconds",
            "median_seconds",
        ],
    );
    assert_eq!(stats["min_seconds"], 2.0);
    assert_eq!(stats["max_seconds"], 2.0);
    assert_eq!(stats["median_seconds"], 2.0);

    let recent = dev.get("/api/v1/analytics/recent-jobs?limit=2").await.body;
    let recent = recent.as_array().unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0]["id"], ids[5].to_string());
    assert_eq!(recent[1]["id"], ids[4].to_string());
    for job in recent {
        assert_keys(
            job,
            &[
                "id",
                "job_type",
                "status",
                "total_tasks",
                "completed_tasks",
                "failed_tasks",
                "created_at",
                "completed_at",
            ],
        );
        assert_datetime(&job["created_at"], "created_at");
    }
    assert_eq!(
        dev.get("/api/v1/analytics/recent-jobs")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        6
    );
}

/// A browser's request from `origin`: a preflight asking for `method` and `headers`.
async fn preflight(dev: &Dev, path: &str, origin: &str, method: &str) -> reqwest::Response {
    dev.http
        .request(Method::OPTIONS, dev.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "content-type,idempotency-key",
        )
        .send()
        .await
        .unwrap()
}

async fn cross_origin_callers_are_an_explicit_allow_list(url: &str) {
    let dashboard = "http://localhost:3000";
    let dev = Dev::start(
        url,
        &[
            "--cors-allow-origin",
            dashboard,
            "--cors-allow-origin",
            "https://ops.example.com/",
        ],
    )
    .await;
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };

    // The old dashboard's preflight (it posts JSON), for both APIs; and the second origin,
    // given with a trailing slash, as browsers send it.
    for (path, origin) in [
        ("/api/v1/jobs", dashboard),
        ("/graphql", dashboard),
        ("/api/v1/tasks/x/complete", "https://ops.example.com"),
    ] {
        let answer = preflight(&dev, path, origin, "POST").await;
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
        assert_eq!(
            header(&answer, "access-control-allow-origin").as_deref(),
            Some(origin)
        );
        let methods = header(&answer, "access-control-allow-methods").unwrap();
        assert!(
            methods.contains("POST") && methods.contains("GET"),
            "{methods}"
        );
        let headers = header(&answer, "access-control-allow-headers").unwrap();
        assert!(
            headers.contains("content-type") && headers.contains("idempotency-key"),
            "{headers}"
        );
    }
    // Its actual requests carry the header that lets the page read the answer.
    let submitted = dev
        .http
        .post(dev.url("/api/v1/jobs"))
        .header("origin", dashboard)
        .json(&json!({"job_type": "noop", "num_tasks": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), StatusCode::CREATED);
    assert_eq!(
        header(&submitted, "access-control-allow-origin").as_deref(),
        Some(dashboard)
    );
    dev.eventually("/api/v1/jobs", |b| b["total"] == 1).await;
    let listed = dev
        .http
        .get(dev.url("/api/v1/jobs"))
        .header("origin", dashboard)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&listed, "access-control-allow-origin").as_deref(),
        Some(dashboard)
    );
    assert_eq!(listed.json::<Value>().await.unwrap()["total"], 1);

    // Any other origin: no permission to read, and its writes are refused before they reach
    // a handler (whatever their content type: a text/plain POST needs no preflight).
    for origin in [
        "http://localhost:3001",
        "https://localhost:3000",
        "http://evil.test",
        "null",
    ] {
        let answer = preflight(&dev, "/api/v1/jobs", origin, "POST").await;
        assert!(
            header(&answer, "access-control-allow-origin").is_none(),
            "{origin}"
        );
        let read = dev
            .http
            .get(dev.url("/api/v1/jobs"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert!(
            header(&read, "access-control-allow-origin").is_none(),
            "{origin}"
        );
        for (path, body) in [
            ("/api/v1/jobs", json!({"job_type": "noop", "num_tasks": 1})),
            (
                "/graphql",
                json!({"query": "mutation { submitJob(input: {jobType: \"noop\", totalTasks: 1}) { id } }"}),
            ),
        ] {
            let write = dev
                .http
                .post(dev.url(path))
                .header("origin", origin)
                .header("content-type", "text/plain")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(write.status(), StatusCode::FORBIDDEN, "{origin} {path}");
            let body: Value = write.json().await.unwrap();
            assert!(
                body["detail"].as_str().unwrap().contains("not allowed"),
                "{body}"
            );
        }
    }
    // Programs send no Origin, and a page of Shoal's own origin is its own: both may write.
    let own_origin = dev.base.clone();
    for origin in [None, Some(own_origin.as_str())] {
        let mut request = dev
            .http
            .post(dev.url("/api/v1/jobs"))
            .json(&json!({"job_type": "noop", "num_tasks": 1}));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        assert_eq!(request.send().await.unwrap().status(), StatusCode::CREATED);
    }
    // Nothing the refused requests sent was submitted: the two jobs above and the first.
    dev.eventually("/api/v1/jobs", |b| b["total"] == 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(dev.get("/api/v1/jobs").await.body["total"], 3);

    // A wildcard, or something that is not an origin, stops the server with a clear message.
    for bad in ["*", "localhost:3000", "http://localhost:3000/app"] {
        let output = support::shoal(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                url,
                "--cors-allow-origin",
                bad,
            ],
            None,
        )
        .output()
        .unwrap();
        assert!(!output.status.success(), "{bad} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--cors-allow-origin"), "{bad}: {stderr}");
    }
}

async fn the_original_task_ids_name_the_same_tasks(url: &str) {
    let dev = Dev::start(url, &[]).await;
    let job = dev
        .submit(json!({"job_type": "noop", "num_tasks": 3}))
        .await;
    dev.wait_enqueued(job).await;
    let old = |index: u32| TaskId::legacy_name(job, index);
    assert_eq!(old(2), format!("{job}-task-2"));

    // Reads: the same task as its UUID names, once projected.
    let by_uuid = dev
        .eventually(
            &format!("/api/v1/tasks/{}", TaskId::for_task(job, 2)),
            |_| true,
        )
        .await;
    let by_old_id = dev.get(&format!("/api/v1/tasks/{}", old(2))).await;
    assert_eq!(by_old_id.status, StatusCode::OK, "{}", by_old_id.body);
    assert_eq!(by_old_id.body, by_uuid);
    assert_eq!(by_old_id.body["id"], TaskId::for_task(job, 2).to_string());

    // The transitions, as an old worker sends them.
    let running = dev
        .post_raw(&format!("/api/v1/tasks/{}/running", old(0)), None)
        .await;
    assert_eq!(running.status, StatusCode::OK, "{}", running.body);
    assert_eq!(running.body["status"], "RUNNING");
    assert_eq!(running.body["task_index"], 0);
    let complete = dev
        .post(
            &format!("/api/v1/tasks/{}/complete", old(0)),
            json!({"result": {"ok": true}}),
        )
        .await;
    assert_eq!(complete.status, StatusCode::OK, "{}", complete.body);
    assert_eq!(complete.body["status"], "COMPLETED");
    let failed = dev
        .post(
            &format!("/api/v1/tasks/{}/failed", old(1)),
            json!({"error_message": "boom"}),
        )
        .await;
    assert_eq!(failed.status, StatusCode::OK, "{}", failed.body);
    assert_eq!(failed.body["status"], "RETRYING");
    assert_eq!(failed.body["task_index"], 1);
    let types: Vec<String> = dev
        .event_types(&TaskId::for_task(job, 0).stream_id())
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(types, ["TaskEnqueued", "TaskStarted", "TaskCompleted"]);

    // GraphQL's `task(id)` too (from the read model, once projected).
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let answer = dev
            .graphql(
                "query($id: ID!) { task(id: $id) { id index status } }",
                json!({"id": old(0)}),
            )
            .await;
        if answer["task"]["status"] == "COMPLETED" || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        answer["task"],
        json!({"id": TaskId::for_task(job, 0).to_string(), "index": 0, "status": "COMPLETED"})
    );

    // An index the job does not have, or a malformed one, names no task: 404 with the id as
    // it was given; GraphQL answers null or says what an id looks like.
    for id in [old(3), format!("{job}-task-01"), format!("{job}-task-x")] {
        assert_detail(
            &dev.get(&format!("/api/v1/tasks/{id}")).await,
            StatusCode::NOT_FOUND,
            &format!("Task {id} not found"),
        );
        for action in ["running", "complete", "failed"] {
            assert_detail(
                &dev.post(&format!("/api/v1/tasks/{id}/{action}"), json!({}))
                    .await,
                StatusCode::NOT_FOUND,
                &format!("Task {id} not found"),
            );
        }
    }
    let answer = dev
        .graphql(
            "query($id: ID!) { task(id: $id) { id } }",
            json!({"id": old(3)}),
        )
        .await;
    assert!(answer["task"].is_null(), "{answer}");
}

async fn a_trailing_slash_is_redirected_as_the_original_did(url: &str) {
    let dev = Dev::start(url, &[]).await;
    let job = dev
        .submit(json!({"job_type": "noop", "num_tasks": 1}))
        .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (method, path, location) in [
        (
            Method::GET,
            "/api/v1/jobs/".to_owned(),
            "/api/v1/jobs".to_owned(),
        ),
        (
            Method::GET,
            "/api/v1/jobs/?page=1&search=noop".to_owned(),
            "/api/v1/jobs?page=1&search=noop".to_owned(),
        ),
        (
            Method::POST,
            "/api/v1/jobs/".to_owned(),
            "/api/v1/jobs".to_owned(),
        ),
        (
            Method::GET,
            format!("/api/v1/jobs/{job}/"),
            format!("/api/v1/jobs/{job}"),
        ),
        (
            Method::GET,
            format!("/api/v1/jobs/{job}/tasks/"),
            format!("/api/v1/jobs/{job}/tasks"),
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{job}-task-0/running/"),
            format!("/api/v1/tasks/{job}-task-0/running"),
        ),
        (
            Method::GET,
            "/api/v1/analytics/overview/".to_owned(),
            "/api/v1/analytics/overview".to_owned(),
        ),
    ] {
        let answer = http
            .request(method.clone(), dev.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::TEMPORARY_REDIRECT,
            "{method} {path}"
        );
        assert_eq!(answer.headers()["location"], location.as_str(), "{path}");
    }
    // A client that follows redirects (as the old ones did) gets the answer, POST included.
    dev.eventually("/api/v1/jobs", |b| b["total"] == 1).await;
    let listed = dev.get("/api/v1/jobs/").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["total"], 1);
    let submitted = dev
        .post("/api/v1/jobs/", json!({"job_type": "noop", "num_tasks": 1}))
        .await;
    assert_eq!(submitted.status, StatusCode::CREATED, "{}", submitted.body);
    // Paths that are not the API's stay 404.
    for path in ["/api/v1/nothing/", "/api/v1/jobs//", "/api/v1/jobs/x/y/"] {
        assert_detail(&dev.get(path).await, StatusCode::NOT_FOUND, "Not Found");
    }
}

async fn the_document_states_the_servers_limits(url: &str) {
    let dev = Dev::start(
        url,
        &["--max-tasks-per-job", "20", "--rest-max-tasks", "500"],
    )
    .await;
    let doc = dev.get("/openapi.json").await.body;
    let submit = &doc["components"]["schemas"]["SubmitJobRequest"]["properties"];
    assert_eq!(submit["num_tasks"]["maximum"], 20);
    assert_eq!(submit["max_attempts"]["maximum"], 25);
    assert_eq!(submit["timeout_seconds"]["maximum"], 86_400);
    assert_eq!(submit["priority"]["minimum"], -1000);
    assert_eq!(submit["priority"]["maximum"], 1000);
    let page_size = doc["paths"]["/api/v1/jobs/{job_id}/tasks"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "page_size")
        .unwrap()
        .clone();
    assert_eq!(page_size["schema"]["maximum"], 500);

    // And the server holds to them, REST and GraphQL alike.
    let answer = dev
        .post("/api/v1/jobs", json!({"job_type": "noop", "num_tasks": 21}))
        .await;
    assert_invalid(&answer, "less_than_equal", json!(["body", "num_tasks"]));
    assert_eq!(answer.body["detail"][0]["ctx"], json!({"le": 20}));
    dev.submit(json!({"job_type": "noop", "num_tasks": 20.0}))
        .await;
    let refused = dev
        .http
        .post(dev.url("/graphql"))
        .json(&json!({"query": "mutation { submitJob(input: {jobType: \"noop\", totalTasks: 21}) { id } }"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "LIMIT_EXCEEDED",
        "{refused}"
    );
    assert_invalid(
        &dev.get(&format!(
            "/api/v1/jobs/{}/tasks?page_size=501",
            JobId::new()
        ))
        .await,
        "less_than_equal",
        json!(["query", "page_size"]),
    );

    // A 422's `loc` holds names and positions, its `input` whatever was sent: the document
    // says so, and the answers are so.
    let field_error = &doc["components"]["schemas"]["FieldError"]["properties"];
    assert_eq!(
        field_error["loc"]["items"]["type"],
        json!(["string", "integer"])
    );
    assert!(field_error["input"].get("type").is_none());
    let answer = dev.post_raw("/api/v1/jobs", Some("{\"job_type\": ")).await;
    assert_invalid(&answer, "json_invalid", json!(["body", 13]));
    let answer = dev
        .post("/api/v1/jobs", json!({"job_type": 7, "num_tasks": "many"}))
        .await;
    assert_eq!(answer.body["detail"][0]["input"], 7);
    assert_eq!(answer.body["detail"][1]["input"], "many");
    // Integers are 64-bit (the document says `int64`, with its maximum): beyond is out of
    // range, not unreadable; the largest page is past the end.
    assert_invalid(
        &dev.get("/api/v1/jobs?page_size=9223372036854775808").await,
        "less_than_equal",
        json!(["query", "page_size"]),
    );
    let answer = dev.get("/api/v1/jobs?page=99999999999999999999").await;
    assert_invalid(&answer, "less_than_equal", json!(["query", "page"]));
    assert_eq!(answer.body["detail"][0]["ctx"], json!({"le": i64::MAX}));
    let far = dev.get(&format!("/api/v1/jobs?page={}", i64::MAX)).await;
    assert_eq!(far.status, StatusCode::OK, "{}", far.body);
    assert_eq!(far.body["jobs"], json!([]));
}
