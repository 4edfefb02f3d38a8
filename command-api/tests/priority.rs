//! Job priorities through the GraphQL mutations (`submitJob(input: {priority})`,
//! `setJobPriority`), with the SQL queue the command service orders: on SQLite always and on
//! Postgres when `SHOAL_TEST_DATABASE_URL` is set (required with `SHOAL_REQUIRE_POSTGRES=1`).
//! Each test gets a fresh database.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use shoal_command_api::commands::CommandService;
use shoal_command_api::graphql;
use shoal_domain::{Event, JobId, Limits, TaskId};
use shoal_infra::eventlog::{EventLog, PostgresEventLog, RecordedEvent, SqliteEventLog};
use shoal_infra::queue::{OutgoingMessage, SqlQueue, TaskMessage, TaskQueue};
use shoal_infra::testing;
use support::the_error;
use tower::ServiceExt;

struct Harness {
    log: Arc<dyn EventLog>,
    queue: SqlQueue,
    app: Router,
}

impl Harness {
    fn new(log: Arc<dyn EventLog>, queue: SqlQueue) -> Harness {
        let service =
            CommandService::new(log.clone(), Limits::default()).with_queue(Arc::new(queue.clone()));
        Harness {
            log,
            queue,
            app: graphql::router(graphql::schema(service)),
        }
    }

    async fn sqlite() -> Harness {
        let pool = testing::fresh_sqlite().await;
        Harness::new(
            Arc::new(SqliteEventLog::new(pool.clone())),
            SqlQueue::sqlite(pool),
        )
    }

    async fn postgres() -> Option<Harness> {
        let pool = testing::fresh_postgres().await?;
        Some(Harness::new(
            Arc::new(PostgresEventLog::new(pool.clone())),
            SqlQueue::postgres(pool),
        ))
    }

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

    async fn submit(&self, input: Value) -> Value {
        self.gql(
            "mutation($input: SubmitJobInput!) { submitJob(input: $input) { id priority } }",
            json!({ "input": input }),
        )
        .await
    }

    async fn submit_ok(&self, input: Value) -> JobId {
        let response = self.submit(input).await;
        assert!(response.get("errors").is_none(), "{response:#}");
        JobId::parse(response["data"]["submitJob"]["id"].as_str().unwrap()).unwrap()
    }

    async fn set_priority(&self, job_id: &str, priority: Value) -> Value {
        self.gql(
            "mutation($id: ID!, $priority: Int!) {
                setJobPriority(jobId: $id, priority: $priority) { id status priority }
            }",
            json!({ "id": job_id, "priority": priority }),
        )
        .await
    }

    async fn job_stream(&self, job: JobId) -> Vec<RecordedEvent> {
        self.log.read_stream(&job.stream_id(), 0).await.unwrap()
    }

    /// Plays the orchestrator's relay: sends the first attempt's message of tasks `range`.
    async fn relay(&self, job: JobId, range: std::ops::Range<u32>) {
        let messages = range
            .map(|index| OutgoingMessage {
                body: TaskMessage {
                    task_id: TaskId::for_task(job, index).as_uuid(),
                    job_id: job.as_uuid(),
                    task_index: index,
                    parameters: json!({}),
                    job_type: "t".into(),
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
            })
            .collect();
        self.queue.send(messages).await.unwrap();
    }

    /// The job of each message the next receive of `max` gets, in order.
    async fn receive_jobs(&self, max: usize) -> Vec<JobId> {
        self.queue
            .receive(max, Duration::from_secs(60), Duration::ZERO)
            .await
            .unwrap()
            .iter()
            .map(|d| JobId::from_uuid(d.body.as_ref().unwrap().job_id))
            .collect()
    }
}

for_each_backend!(
    submit_with_a_priority_and_change_it,
    bad_priorities_and_ended_jobs_are_refused,
    priorities_order_the_queue,
);

async fn submit_with_a_priority_and_change_it(h: Harness) {
    // Without one, the default 0.
    let response = h.submit(json!({"jobType": "t", "totalTasks": 2})).await;
    assert_eq!(response["data"]["submitJob"]["priority"], 0, "{response:#}");

    let response = h
        .submit(json!({"jobType": "t", "totalTasks": 2, "priority": 5}))
        .await;
    assert_eq!(response["data"]["submitJob"]["priority"], 5, "{response:#}");
    let job = JobId::parse(response["data"]["submitJob"]["id"].as_str().unwrap()).unwrap();
    let stream = h.job_stream(job).await;
    let Event::JobSubmitted(submitted) = Event::decode(
        &stream[0].event_type,
        stream[0].schema_version,
        stream[0].data.get(),
    )
    .unwrap() else {
        panic!("{stream:?}")
    };
    assert_eq!(submitted.priority, 5);

    let response = h.set_priority(&job.to_string(), json!(-20)).await;
    assert!(response.get("errors").is_none(), "{response:#}");
    assert_eq!(response["data"]["setJobPriority"]["priority"], -20);
    assert_eq!(response["data"]["setJobPriority"]["status"], "PENDING");
    let stream = h.job_stream(job).await;
    assert_eq!(stream.len(), 2);
    assert_eq!(stream[1].event_type, "JobPriorityChanged");
    assert_eq!(
        stream[1].data_json(),
        json!({"job_id": job.to_string(), "priority": -20, "previous": 5,
               "at": stream[1].data_json()["at"]})
    );
    assert_eq!(stream[1].metadata_json()["command"], "set_job_priority");

    // The same priority again: the same answer, nothing appended.
    let again = h.set_priority(&job.to_string(), json!(-20)).await;
    assert_eq!(
        again["data"]["setJobPriority"]["priority"], -20,
        "{again:#}"
    );
    assert_eq!(h.job_stream(job).await.len(), 2);
}

async fn bad_priorities_and_ended_jobs_are_refused(h: Harness) {
    for bad in [1001, -1001] {
        let response = h
            .submit(json!({"jobType": "t", "totalTasks": 1, "priority": bad}))
            .await;
        let (code, field, message) = the_error(&response);
        assert_eq!(
            (code.as_str(), field.as_deref()),
            ("INVALID_INPUT", Some("priority"))
        );
        assert_eq!(
            message,
            format!("priority must be between -1000 and 1000, got {bad}")
        );
    }
    // Not an Int at all: refused by the GraphQL layer.
    let response = h
        .submit(json!({"jobType": "t", "totalTasks": 1, "priority": "high"}))
        .await;
    assert_eq!(the_error(&response).0, "BAD_USER_INPUT");

    let job = h.submit_ok(json!({"jobType": "t", "totalTasks": 1})).await;
    let response = h.set_priority(&job.to_string(), json!(5000)).await;
    let (code, field, _) = the_error(&response);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("INVALID_INPUT", Some("priority"))
    );
    let response = h.set_priority("not-a-uuid", json!(1)).await;
    let (code, field, _) = the_error(&response);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("BAD_USER_INPUT", Some("jobId"))
    );
    let unknown = JobId::new();
    let response = h.set_priority(&unknown.to_string(), json!(1)).await;
    let (code, field, message) = the_error(&response);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("NOT_FOUND", Some("jobId"))
    );
    assert_eq!(message, format!("Job {unknown} not found"));

    // An ended job keeps the priority it had.
    let response = h
        .gql(
            "mutation($id: ID!) { cancelJob(id: $id) { status } }",
            json!({"id": job.to_string()}),
        )
        .await;
    assert_eq!(response["data"]["cancelJob"]["status"], "CANCELLED");
    let response = h.set_priority(&job.to_string(), json!(1)).await;
    let (code, field, message) = the_error(&response);
    assert_eq!(
        (code.as_str(), field.as_deref()),
        ("INVALID_TRANSITION", Some("status"))
    );
    assert_eq!(
        message,
        format!("job {job} is CANCELLED and cannot change priority")
    );
    let types: Vec<String> = h
        .job_stream(job)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(types, ["JobSubmitted", "JobCancelled"]);
}

async fn priorities_order_the_queue(h: Harness) {
    let normal = h.submit_ok(json!({"jobType": "t", "totalTasks": 3})).await;
    let urgent = h
        .submit_ok(json!({"jobType": "t", "totalTasks": 3, "priority": 7}))
        .await;
    h.relay(normal, 0..3).await;
    h.relay(urgent, 0..3).await;
    // The job submitted with a higher priority goes first, though its tasks came later.
    assert_eq!(h.receive_jobs(2).await, [urgent, urgent]);
    // Raised above it, the other job's waiting tasks go first.
    let response = h.set_priority(&normal.to_string(), json!(8)).await;
    assert!(response.get("errors").is_none(), "{response:#}");
    assert_eq!(h.receive_jobs(4).await, [normal, normal, normal, urgent]);
}
