//! The GraphQL mutations through the axum router (real HTTP requests and JSON responses), on
//! SQLite always and on Postgres when `SHOAL_TEST_DATABASE_URL` is set (required with
//! `SHOAL_REQUIRE_POSTGRES=1`). Each test gets a fresh database.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use shoal_command_api::commands::CommandService;
use shoal_command_api::graphql;
use shoal_command_api::orchestrator::forget_idempotency_keys;
use shoal_domain::{
    Event, JobCommand, JobId, JobState, Limits, TaskCommand, TaskId, TaskState, decide_job,
    decide_task, evolve_job, evolve_task,
};
use shoal_infra::eventlog::{
    AppendBatch, EventLog, ExpectedVersion, LogPosition, NewEvent, PostgresEventLog, RecordedEvent,
    SqliteEventLog, StreamAppend,
};
use shoal_infra::testing;
use support::the_error;
use tower::ServiceExt;

// ---------------------------------------------------------------------------------------------
// Harness

struct Harness {
    log: Arc<dyn EventLog>,
    postgres: Option<PostgresEventLog>,
    app: Router,
}

impl Harness {
    fn new(log: Arc<dyn EventLog>, postgres: Option<PostgresEventLog>, chunk: usize) -> Harness {
        let service = CommandService::new(log.clone(), Limits::default()).with_chunk_size(chunk);
        Harness {
            log,
            postgres,
            app: graphql::router(graphql::schema(service)),
        }
    }

    async fn sqlite(chunk: usize) -> Harness {
        let log = SqliteEventLog::new(testing::fresh_sqlite().await);
        Harness::new(Arc::new(log), None, chunk)
    }

    async fn postgres(chunk: usize) -> Option<Harness> {
        let log = PostgresEventLog::new(testing::fresh_postgres().await?);
        Some(Harness::new(Arc::new(log.clone()), Some(log), chunk))
    }

    /// POSTs a GraphQL request; returns the JSON response (always HTTP 200 for GraphQL).
    async fn gql(&self, query: &str, variables: Value) -> Value {
        let body = json!({ "query": query, "variables": variables }).to_string();
        let request = Request::post("/graphql")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Every event in the log, in log order.
    async fn all_events(&self) -> Vec<RecordedEvent> {
        if let Some(pg) = &self.postgres {
            testing::wait_until_readable(pg.pool()).await;
        }
        let mut out = Vec::new();
        let mut after = LogPosition::START;
        loop {
            let batch = self.log.read_all(after, 1_000).await.unwrap();
            let Some(last) = batch.last() else {
                return out;
            };
            after = last.log_position;
            out.extend(batch);
        }
    }

    async fn event_types(&self) -> Vec<String> {
        self.all_events()
            .await
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }

    async fn submit(&self, input: Value) -> Value {
        self.gql(SUBMIT, json!({ "input": input })).await
    }

    /// Submits a job; returns its id.
    async fn submit_ok(&self, input: Value) -> JobId {
        let response = self.submit(input).await;
        assert_no_errors(&response);
        JobId::parse(response["data"]["submitJob"]["id"].as_str().unwrap()).unwrap()
    }

    /// Reads a stream, decoded.
    async fn stream(&self, stream_id: &str) -> Vec<Event> {
        self.log
            .read_stream(stream_id, 0)
            .await
            .unwrap()
            .iter()
            .map(|r| Event::decode(&r.event_type, r.schema_version, r.data.get()).unwrap())
            .collect()
    }

    /// Appends `events` (already decided), each stream at its current version.
    async fn append(&self, events: Vec<Event>) {
        let mut streams: Vec<StreamAppend> = Vec::new();
        for event in events {
            let stream_id = event.stream_id();
            let encoded = event.encode();
            let new = NewEvent {
                event_type: encoded.event_type.into(),
                schema_version: encoded.schema_version,
                data: encoded.data,
                metadata: json!({}),
            };
            if let Some(s) = streams.iter_mut().find(|s| s.stream_id == stream_id) {
                s.events.push(new);
            } else {
                let version = self.log.read_stream(&stream_id, 0).await.unwrap().len();
                streams.push(StreamAppend {
                    stream_id,
                    expected: ExpectedVersion::Exact(version as i64),
                    events: vec![new],
                });
            }
        }
        self.log
            .append(AppendBatch {
                streams,
                ..AppendBatch::default()
            })
            .await
            .unwrap();
    }

    /// Does what the orchestrator would: creates every task of the job (one chunk).
    async fn expand(&self, job_id: JobId) {
        let state = self
            .stream(&job_id.stream_id())
            .await
            .iter()
            .fold(JobState::default(), evolve_job);
        let events = decide_job(
            &state,
            JobCommand::CreateTasks {
                max_chunk: u32::MAX,
                now: chrono::Utc::now(),
            },
        )
        .unwrap();
        self.append(events).await;
    }

    /// Decides `command` on task `index` of the job and appends the result.
    async fn task(&self, job_id: JobId, index: u32, command: TaskCommand) {
        let stream_id = TaskId::for_task(job_id, index).stream_id();
        let state = self
            .stream(&stream_id)
            .await
            .iter()
            .fold(TaskState::default(), evolve_task);
        let events = decide_task(&state, command).unwrap();
        self.append(events).await;
    }

    async fn start(&self, job_id: JobId, index: u32) {
        let command = TaskCommand::StartTask {
            attempt: 1,
            worker: "w1".into(),
            now: chrono::Utc::now(),
        };
        self.task(job_id, index, command).await;
    }

    async fn fail_finally(&self, job_id: JobId, index: u32) {
        self.start(job_id, index).await;
        let command = TaskCommand::FailTask {
            attempt: 1,
            error: "boom".into(),
            retryable: false,
            backoff_ms: 0,
            now: chrono::Utc::now(),
        };
        self.task(job_id, index, command).await;
    }

    async fn complete(&self, job_id: JobId, index: u32) {
        self.start(job_id, index).await;
        let command = TaskCommand::CompleteTask {
            attempt: 1,
            result: None,
            duration_ms: 1,
            now: chrono::Utc::now(),
        };
        self.task(job_id, index, command).await;
    }
}

for_each_backend!(
    submit_with_total_tasks: 1000,
    submit_with_items_and_batch_size: 1000,
    a_million_tasks_are_one_event: 1000,
    invalid_submissions_append_nothing: 1000,
    idempotency_key_returns_the_first_job: 1000,
    an_expired_idempotency_key_submits_a_new_job: 1000,
    cancel_a_running_job_once: 1000,
    cancel_unknown_or_malformed_ids: 1000,
    retry_failed_tasks_schedules_each_failed_task: 1000,
    retry_failed_tasks_in_chunks: 2,
    retry_without_failed_tasks_is_refused: 1000,
    job_query_answers_from_the_stream: 1000,
    malformed_requests_are_bad_user_input: 1000,
    graphiql_is_served_on_get: 1000,
);

const JOB_FIELDS: &str = "id jobType status totalTasks tasksCreated batchSize parameters \
                          maxAttempts timeoutSeconds createdAt updatedAt endedAt cancelReason";

const SUBMIT: &str = "mutation($input: SubmitJobInput!) {
    submitJob(input: $input) { id jobType status totalTasks tasksCreated batchSize parameters
                               maxAttempts timeoutSeconds createdAt updatedAt endedAt }
}";

const CANCEL: &str = "mutation($id: ID!, $reason: String) {
    cancelJob(id: $id, reason: $reason) { id status endedAt cancelReason }
}";

const RETRY: &str = "mutation($jobId: ID!) {
    retryFailedTasks(jobId: $jobId) { jobId retriedTasks job { id status } }
}";

fn assert_no_errors(response: &Value) {
    assert!(
        response.get("errors").is_none(),
        "unexpected errors: {response:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// Submit

async fn submit_with_total_tasks(h: Harness) {
    let response = h
        .submit(json!({"jobType": "cpu_bound", "totalTasks": 5, "parameters": {"work_duration_seconds": 1}}))
        .await;
    assert_no_errors(&response);
    let job = &response["data"]["submitJob"];
    let id = JobId::parse(job["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.as_uuid().get_version_num(), 7);
    assert_eq!(job["status"], "PENDING");
    assert_eq!(job["jobType"], "cpu_bound");
    assert_eq!(job["totalTasks"], 5);
    assert_eq!(job["tasksCreated"], 0);
    assert_eq!(job["batchSize"], Value::Null);
    assert_eq!(job["parameters"], json!({"work_duration_seconds": 1}));
    assert_eq!(job["maxAttempts"], 3);
    assert_eq!(job["timeoutSeconds"], 300);
    assert!(
        job["createdAt"].as_str().unwrap().ends_with('Z')
            || job["createdAt"].as_str().unwrap().contains('+')
    );
    assert_eq!(job["endedAt"], Value::Null);

    let events = h.all_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "JobSubmitted");
    assert_eq!(events[0].stream_id, id.stream_id());
    assert_eq!(events[0].stream_version, 1);
}

async fn submit_with_items_and_batch_size(h: Harness) {
    let items: Vec<Value> = (0..250).map(|i| json!({"record": i})).collect();
    let response = h
        .submit(json!({"jobType": "score", "items": items, "batchSize": 100, "maxAttempts": 5, "timeoutSeconds": 60}))
        .await;
    assert_no_errors(&response);
    let job = &response["data"]["submitJob"];
    assert_eq!(job["totalTasks"], 3);
    assert_eq!(job["batchSize"], 100);
    assert_eq!(job["maxAttempts"], 5);
    assert_eq!(job["timeoutSeconds"], 60);
    assert_eq!(job["parameters"], json!({}));
    let id = JobId::parse(job["id"].as_str().unwrap()).unwrap();

    let events = h.stream(&id.stream_id()).await;
    let [Event::JobSubmitted(submitted)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(submitted.total_tasks, 3);
    assert_eq!(h.event_types().await, ["JobSubmitted"]);

    // Without batchSize, one task per item.
    let response = h
        .submit(json!({"jobType": "score", "items": [1, 2, 3]}))
        .await;
    assert_no_errors(&response);
    assert_eq!(response["data"]["submitJob"]["totalTasks"], 3);
}

async fn a_million_tasks_are_one_event(h: Harness) {
    // Accepting a job never creates its tasks: one event, however many tasks. (The bound is a
    // guard against task creation in the request path, not a benchmark.)
    let started = Instant::now();
    let response = h
        .submit(json!({"jobType": "cpu_bound", "totalTasks": 1_000_000}))
        .await;
    let elapsed = started.elapsed();
    assert_no_errors(&response);
    assert_eq!(response["data"]["submitJob"]["totalTasks"], 1_000_000);
    assert_eq!(response["data"]["submitJob"]["status"], "PENDING");
    assert_eq!(h.event_types().await, ["JobSubmitted"]);
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

async fn invalid_submissions_append_nothing(h: Harness) {
    let big = "x".repeat(70 * 1024);
    let cases = [
        (
            json!({"jobType": "t", "totalTasks": 0}),
            "INVALID_INPUT",
            "totalTasks",
        ),
        (
            json!({"jobType": "t", "totalTasks": 2_000_000}),
            "LIMIT_EXCEEDED",
            "totalTasks",
        ),
        (
            json!({"jobType": "t", "totalTasks": -1}),
            "INVALID_INPUT",
            "totalTasks",
        ),
        (
            json!({"jobType": "t", "totalTasks": 2, "items": [1]}),
            "INVALID_INPUT",
            "items",
        ),
        (json!({"jobType": "t"}), "INVALID_INPUT", "totalTasks"),
        (
            json!({"jobType": "t", "items": []}),
            "INVALID_INPUT",
            "items",
        ),
        (
            json!({"jobType": "t", "items": [1], "batchSize": 0}),
            "INVALID_INPUT",
            "batchSize",
        ),
        (
            json!({"jobType": "t", "totalTasks": 2, "batchSize": 5}),
            "INVALID_INPUT",
            "batchSize",
        ),
        (
            json!({"jobType": "t", "totalTasks": 1, "parameters": [1, 2]}),
            "INVALID_INPUT",
            "parameters",
        ),
        (
            json!({"jobType": "t", "totalTasks": 1, "parameters": "x"}),
            "INVALID_INPUT",
            "parameters",
        ),
        (
            json!({"jobType": "t", "totalTasks": 1, "parameters": {"blob": big}}),
            "LIMIT_EXCEEDED",
            "parameters",
        ),
        (
            json!({"jobType": "t", "items": [1], "parameters": {"items": 1}}),
            "INVALID_INPUT",
            "parameters",
        ),
        (
            json!({"jobType": "t", "totalTasks": 1, "maxAttempts": 0}),
            "INVALID_INPUT",
            "maxAttempts",
        ),
        (
            json!({"jobType": "t", "totalTasks": 1, "maxAttempts": 1000}),
            "LIMIT_EXCEEDED",
            "maxAttempts",
        ),
        (
            json!({"jobType": "t", "totalTasks": 1, "timeoutSeconds": 0}),
            "INVALID_INPUT",
            "timeoutSeconds",
        ),
        (
            json!({"jobType": "t", "totalTasks": 1, "timeoutSeconds": -5}),
            "INVALID_INPUT",
            "timeoutSeconds",
        ),
        (
            json!({"jobType": "x".repeat(201), "totalTasks": 1}),
            "LIMIT_EXCEEDED",
            "jobType",
        ),
        (
            json!({"jobType": "a\u{0}b", "totalTasks": 1}),
            "INVALID_INPUT",
            "jobType",
        ),
        (
            json!({"jobType": "t", "totalTasks": 1, "parameters": {"k": "a\u{0}"}}),
            "INVALID_INPUT",
            "parameters",
        ),
        (
            json!({"jobType": "t", "totalTasks": 1, "idempotencyKey": ""}),
            "INVALID_INPUT",
            "idempotencyKey",
        ),
    ];
    for (input, code, field) in cases {
        let response = h.submit(input.clone()).await;
        let (got_code, got_field, message) = the_error(&response);
        assert_eq!(
            (got_code.as_str(), got_field.as_deref()),
            (code, Some(field)),
            "input {input}: {message}"
        );
        assert!(!message.is_empty());
        assert_eq!(response["data"], Value::Null, "{response:#}");
    }
    assert!(h.all_events().await.is_empty(), "something was appended");
}

async fn idempotency_key_returns_the_first_job(h: Harness) {
    let input = json!({"jobType": "t", "totalTasks": 2, "idempotencyKey": "order-42"});
    let first = h.submit_ok(input.clone()).await;
    let second = h.submit_ok(input).await;
    assert_eq!(first, second);
    // The key wins over the rest of the input: the first job comes back.
    let third = h
        .submit(json!({"jobType": "other", "totalTasks": 9, "idempotencyKey": "order-42"}))
        .await;
    assert_no_errors(&third);
    assert_eq!(third["data"]["submitJob"]["id"], first.to_string());
    assert_eq!(third["data"]["submitJob"]["totalTasks"], 2);
    assert_eq!(h.event_types().await, ["JobSubmitted"]);

    // Another key, another job.
    let other = h
        .submit_ok(json!({"jobType": "t", "totalTasks": 2, "idempotencyKey": "order-43"}))
        .await;
    assert_ne!(other, first);
    assert_eq!(h.event_types().await, ["JobSubmitted", "JobSubmitted"]);
}

async fn an_expired_idempotency_key_submits_a_new_job(h: Harness) {
    let input = json!({"jobType": "t", "totalTasks": 2, "idempotencyKey": "order-7"});
    let first = h.submit_ok(input.clone()).await;
    // Within the retention the key is remembered.
    let week = shoal_command_api::orchestrator::DEFAULT_IDEMPOTENCY_KEY_RETENTION;
    assert_eq!(forget_idempotency_keys(&*h.log, week).await.unwrap(), 0);
    assert_eq!(h.submit_ok(input.clone()).await, first);
    // Past it (here: a retention of zero), the orchestrator forgets it: a new job.
    assert_eq!(
        forget_idempotency_keys(&*h.log, Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    let second = h.submit_ok(input).await;
    assert_ne!(second, first);
    assert_eq!(h.event_types().await, ["JobSubmitted", "JobSubmitted"]);
}

// ---------------------------------------------------------------------------------------------
// Cancel

async fn cancel_a_running_job_once(h: Harness) {
    let job = h.submit_ok(json!({"jobType": "t", "totalTasks": 2})).await;
    h.expand(job).await;
    h.start(job, 0).await;
    let before = h.all_events().await.len();

    let response = h
        .gql(
            CANCEL,
            json!({"id": job.to_string(), "reason": "no longer needed"}),
        )
        .await;
    assert_no_errors(&response);
    let cancelled = &response["data"]["cancelJob"];
    assert_eq!(cancelled["id"], job.to_string());
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(cancelled["cancelReason"], "no longer needed");
    assert!(cancelled["endedAt"].is_string());
    let events = h.all_events().await;
    assert_eq!(events.len(), before + 1);
    assert_eq!(events[before].event_type, "JobCancelled");
    assert_eq!(events[before].stream_id, job.stream_id());

    let again = h.gql(CANCEL, json!({"id": job.to_string()})).await;
    let (code, field, message) = the_error(&again);
    assert_eq!(code, "INVALID_TRANSITION");
    assert_eq!(field.as_deref(), Some("status"));
    assert!(message.contains("already CANCELLED"), "{message}");
    assert_eq!(h.all_events().await.len(), before + 1);
}

async fn cancel_unknown_or_malformed_ids(h: Harness) {
    let unknown = JobId::new();
    let response = h.gql(CANCEL, json!({"id": unknown.to_string()})).await;
    let (code, field, message) = the_error(&response);
    assert_eq!(code, "NOT_FOUND");
    assert_eq!(field.as_deref(), Some("id"));
    assert_eq!(message, format!("Job {unknown} not found"));

    let response = h.gql(CANCEL, json!({"id": "not-a-uuid"})).await;
    let (code, field, _) = the_error(&response);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("BAD_USER_INPUT", Some("id"))
    );

    let response = h.gql(RETRY, json!({"jobId": "42"})).await;
    let (code, field, _) = the_error(&response);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("BAD_USER_INPUT", Some("jobId"))
    );

    let response = h.gql(RETRY, json!({"jobId": unknown.to_string()})).await;
    let (code, field, _) = the_error(&response);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("NOT_FOUND", Some("jobId"))
    );
    assert!(h.all_events().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Retry failed tasks

/// A job of `n` tasks with one attempt each; tasks in `failed` fail, the others complete.
async fn job_with_failures(h: &Harness, n: u32, failed: &[u32]) -> JobId {
    let job = h
        .submit_ok(json!({"jobType": "t", "totalTasks": n, "maxAttempts": 1}))
        .await;
    h.expand(job).await;
    for index in 0..n {
        if failed.contains(&index) {
            h.fail_finally(job, index).await;
        } else {
            h.complete(job, index).await;
        }
    }
    job
}

/// The retries in the log: (task index, attempt, manual) of each `TaskRetryScheduled`, and the
/// `tasks` of each `JobRetryRequested`.
async fn retries(h: &Harness) -> (Vec<(u32, u32, bool)>, Vec<u32>) {
    let mut tasks = Vec::new();
    let mut jobs = Vec::new();
    for record in h.all_events().await {
        match Event::decode(&record.event_type, record.schema_version, record.data.get()).unwrap() {
            Event::TaskRetryScheduled(e) => tasks.push((e.index, e.attempt, e.manual)),
            Event::JobRetryRequested(e) => jobs.push(e.tasks),
            _ => {}
        }
    }
    tasks.sort_unstable();
    (tasks, jobs)
}

async fn retry_failed_tasks_schedules_each_failed_task(h: Harness) {
    let job = job_with_failures(&h, 3, &[0, 2]).await;
    let response = h.gql(RETRY, json!({"jobId": job.to_string()})).await;
    assert_no_errors(&response);
    let result = &response["data"]["retryFailedTasks"];
    assert_eq!(result["jobId"], job.to_string());
    assert_eq!(result["retriedTasks"], 2);
    assert_eq!(result["job"]["id"], job.to_string());
    assert_eq!(
        retries(&h).await,
        (vec![(0, 2, true), (2, 2, true)], vec![2])
    );

    // Nothing is FAILED any more: a second request is refused and appends nothing.
    let before = h.all_events().await.len();
    let again = h.gql(RETRY, json!({"jobId": job.to_string()})).await;
    let (code, _, message) = the_error(&again);
    assert_eq!(code, "INVALID_TRANSITION");
    assert!(message.contains("has no failed tasks"), "{message}");
    assert_eq!(h.all_events().await.len(), before);
}

async fn retry_failed_tasks_in_chunks(h: Harness) {
    // Chunk size 2: five failed tasks are retried in three appends.
    let job = job_with_failures(&h, 6, &[0, 1, 3, 4, 5]).await;
    let response = h.gql(RETRY, json!({"jobId": job.to_string()})).await;
    assert_no_errors(&response);
    assert_eq!(response["data"]["retryFailedTasks"]["retriedTasks"], 5);
    let (tasks, jobs) = retries(&h).await;
    let indexes: Vec<u32> = tasks.iter().map(|t| t.0).collect();
    assert_eq!(indexes, [0, 1, 3, 4, 5]);
    assert_eq!(jobs, [5]);
}

async fn retry_without_failed_tasks_is_refused(h: Harness) {
    let job = job_with_failures(&h, 2, &[]).await;
    let before = h.all_events().await.len();
    let response = h.gql(RETRY, json!({"jobId": job.to_string()})).await;
    let (code, field, message) = the_error(&response);
    assert_eq!(code, "INVALID_TRANSITION");
    assert_eq!(field.as_deref(), Some("failedTasks"));
    assert_eq!(message, format!("job {job} has no failed tasks to retry"));
    assert_eq!(h.all_events().await.len(), before);

    // A job whose tasks do not exist yet cannot retry anything either.
    let pending = h.submit_ok(json!({"jobType": "t", "totalTasks": 2})).await;
    let response = h.gql(RETRY, json!({"jobId": pending.to_string()})).await;
    let (code, field, _) = the_error(&response);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("INVALID_TRANSITION", Some("status"))
    );
}

// ---------------------------------------------------------------------------------------------
// Query, protocol, GraphiQL

async fn job_query_answers_from_the_stream(h: Harness) {
    let job = h.submit_ok(json!({"jobType": "t", "totalTasks": 4})).await;
    h.expand(job).await;
    let query = format!("query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}");
    let response = h.gql(&query, json!({"id": job.to_string()})).await;
    assert_no_errors(&response);
    assert_eq!(response["data"]["job"]["status"], "ENQUEUED");
    assert_eq!(response["data"]["job"]["tasksCreated"], 4);

    let response = h.gql(&query, json!({"id": JobId::new().to_string()})).await;
    assert_no_errors(&response);
    assert_eq!(response["data"]["job"], Value::Null);
}

async fn malformed_requests_are_bad_user_input(h: Harness) {
    // A value of the wrong type, a missing required field, an unknown field, a syntax error.
    for (query, variables) in [
        (
            SUBMIT,
            json!({"input": {"jobType": "t", "totalTasks": "three"}}),
        ),
        (SUBMIT, json!({"input": {"totalTasks": 3}})),
        (
            "mutation { submitJob(input: {jobType: \"t\", totalTasks: 1}) { nope } }",
            json!({}),
        ),
        ("mutation { submitJob(", json!({})),
    ] {
        let response = h.gql(query, variables).await;
        let errors = response["errors"].as_array().unwrap();
        assert!(!errors.is_empty());
        for error in errors {
            assert_eq!(
                error["extensions"]["code"], "BAD_USER_INPUT",
                "{response:#}"
            );
        }
    }
    // Too deep for the limit.
    let deep = format!(
        "{{ __schema {{ queryType {{ fields {{ type {{ {} name {} }} }} }} }} }}",
        "ofType { ".repeat(12),
        "} ".repeat(12)
    );
    let response = h.gql(&deep, json!({})).await;
    assert_eq!(
        response["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{response:#}"
    );
    assert!(h.all_events().await.is_empty());
}

async fn graphiql_is_served_on_get(h: Harness) {
    let request = Request::get("/graphql").body(Body::empty()).unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let page = String::from_utf8(body.to_vec()).unwrap();
    assert!(page.to_lowercase().contains("graphiql"));
    assert!(page.contains("/graphql"));

    // GraphiQL's schema fetch (the standard introspection query) passes the limits.
    let response = h.gql(INTROSPECTION, json!({})).await;
    assert_no_errors(&response);
    assert!(response["data"]["__schema"]["mutationType"]["name"] == "MutationRoot");
}

/// graphql-js 16's `getIntrospectionQuery()`, as GraphiQL sends it.
const INTROSPECTION: &str = "
query IntrospectionQuery {
  __schema {
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description
    args { ...InputValue }
    type { ...TypeRef }
    isDeprecated deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue {
  name description
  type { ...TypeRef }
  defaultValue
}
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}";
