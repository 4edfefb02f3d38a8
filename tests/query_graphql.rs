//! The GraphQL read side (query-api) against real read tables (SQLite and Postgres; Postgres
//! required when `SHOAL_REQUIRE_POSTGRES=1`): events appended to a real log, projected, then
//! queried. It lives in the binary's package because it needs two roles, the projector and
//! query-api, which do not depend on each other.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{EmptyMutation, Schema};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Value, json};
use shoal_domain::events::{
    JobSubmitted, TaskCompleted, TaskEnqueued, TaskFailed, TaskStarted, TasksCreated,
};
use shoal_domain::{Event, JobId, Split, TaskId};
use shoal_infra::db::Database;
use shoal_infra::eventlog::{AppendBatch, EventLog, ExpectedVersion, NewEvent, StreamAppend};
use shoal_infra::readmodel::ReadModelStore;
use shoal_infra::testing;
use shoal_projector::{Projector, ProjectorConfig};
use shoal_query_api::graphql::{ChangeFeed, LiveConfig, QueryRoot, ReadContext, SubscriptionRoot};

type TestSchema = Schema<QueryRoot, EmptyMutation, SubscriptionRoot>;

struct Harness {
    database: Database,
    log: Arc<dyn EventLog>,
    projector: Projector,
    schema: TestSchema,
    versions: HashMap<String, i64>,
}

impl Harness {
    async fn new(database: Database) -> Harness {
        let log = database.event_log();
        let projector = Projector::new(
            ProjectorConfig {
                batch_size: 7,
                ..ProjectorConfig::default()
            },
            log.clone(),
            database.clone(),
        );
        let schema = Schema::build(QueryRoot, EmptyMutation, SubscriptionRoot)
            .data(ReadContext {
                store: ReadModelStore::new(database.clone()),
                log: log.clone(),
            })
            .data(LiveConfig::new(ChangeFeed::from_projector(&projector), 10))
            .finish();
        Harness {
            database,
            log,
            projector,
            schema,
            versions: HashMap::new(),
        }
    }

    /// Appends events as one atomic append.
    async fn append(&mut self, events: &[Event]) {
        let mut streams: Vec<StreamAppend> = Vec::new();
        for event in events {
            let stream_id = event.stream_id();
            let new = NewEvent {
                event_type: event.event_type().into(),
                schema_version: event.schema_version(),
                data: event.to_json(),
                metadata: json!({}),
            };
            match streams.iter_mut().find(|s| s.stream_id == stream_id) {
                Some(stream) => stream.events.push(new),
                None => streams.push(StreamAppend {
                    expected: ExpectedVersion::Exact(*self.versions.get(&stream_id).unwrap_or(&0)),
                    stream_id,
                    events: vec![new],
                }),
            }
        }
        for stream in &streams {
            *self.versions.entry(stream.stream_id.clone()).or_insert(0) +=
                stream.events.len() as i64;
        }
        self.log
            .append(AppendBatch {
                streams,
                ..AppendBatch::default()
            })
            .await
            .expect("append");
    }

    async fn project(&self) {
        if let Database::Postgres(pool) = &self.database {
            testing::wait_until_readable(pool).await;
        }
        self.projector.catch_up().await.expect("catch up");
    }

    async fn query(&self, query: &str, variables: Value) -> async_graphql::Response {
        self.schema
            .execute(
                async_graphql::Request::new(query)
                    .variables(async_graphql::Variables::from_json(variables)),
            )
            .await
    }

    async fn data(&self, query: &str, variables: Value) -> Value {
        let response = self.query(query, variables).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        response.data.into_json().expect("JSON data")
    }
}

fn t(seconds: i64) -> DateTime<Utc> {
    // Recent, so the timeline and throughput windows include it.
    let base = Utc::now() - chrono::Duration::minutes(5);
    base + chrono::Duration::seconds(seconds)
}

fn submitted(job_id: JobId, job_type: &str, total_tasks: u32, at: DateTime<Utc>) -> Event {
    Event::JobSubmitted(JobSubmitted {
        job_id,
        job_type: job_type.into(),
        split: Split::Total { total_tasks },
        parameters: serde_json::Map::new(),
        max_attempts: 1,
        timeout_seconds: 60,
        total_tasks,
        submitted_at: at,
        fallback_handler: None,
        priority: 0,
    })
}

fn created(job_id: JobId, n: u32, at: DateTime<Utc>) -> Vec<Event> {
    let mut events = vec![Event::TasksCreated(TasksCreated {
        job_id,
        from_index: 0,
        to_index: n,
        at,
    })];
    events.extend((0..n).map(|index| {
        Event::TaskEnqueued(TaskEnqueued {
            job_id,
            task_id: TaskId::for_task(job_id, index),
            index,
            job_type: "t".into(),
            input: json!({ "i": index }),
            attempt: 1,
            max_attempts: 1,
            timeout_seconds: 60,
            at,
            fallback_handler: None,
        })
    }));
    events
}

fn started(job_id: JobId, index: u32, worker: &str, at: DateTime<Utc>) -> Event {
    Event::TaskStarted(TaskStarted {
        job_id,
        task_id: TaskId::for_task(job_id, index),
        index,
        attempt: 1,
        worker: worker.into(),
        at,
    })
}

fn completed(job_id: JobId, index: u32, duration_ms: u64, at: DateTime<Utc>) -> Event {
    Event::TaskCompleted(TaskCompleted {
        job_id,
        task_id: TaskId::for_task(job_id, index),
        index,
        attempt: 1,
        result: Some(json!({ "ok": index })),
        duration_ms,
        at,
    })
}

fn failed(job_id: JobId, index: u32, at: DateTime<Utc>) -> Event {
    Event::TaskFailed(TaskFailed {
        job_id,
        task_id: TaskId::for_task(job_id, index),
        index,
        attempt: 1,
        error: "boom".into(),
        final_failure: true,
        at,
    })
}

/// Job A (cpu_bound, 5 tasks: 2 completed, 1 failed, 1 running, 1 queued) and job B
/// (io_bound, 1 task, queued).
async fn two_jobs(h: &mut Harness) -> (JobId, JobId) {
    let (a, b) = (JobId::new(), JobId::new());
    h.append(&[submitted(a, "cpu_bound", 5, t(0))]).await;
    h.append(&created(a, 5, t(1))).await;
    h.append(&[submitted(b, "io_bound", 1, t(2))]).await;
    h.append(&created(b, 1, t(3))).await;
    for (index, worker) in [(0, "w1"), (1, "w2"), (2, "w1"), (3, "w2")] {
        h.append(&[started(a, index, worker, t(4))]).await;
    }
    h.append(&[completed(a, 0, 100, t(5))]).await;
    h.append(&[completed(a, 1, 300, t(6))]).await;
    h.append(&[failed(a, 2, t(7))]).await;
    h.project().await;
    (a, b)
}

const JOB: &str = "query($id: ID!, $first: Int, $after: String, $status: [TaskStatus!]) {
  job(id: $id) {
    id jobType status totalTasks tasksCreated completedTasks failedTasks runningTasks
    queuedTasks retryingTasks createdAt updatedAt startedAt completedAt
    tasks(first: $first, after: $after, status: $status) {
      edges { cursor node { index status worker attempt } }
      pageInfo { hasNextPage hasPreviousPage endCursor }
    }
  }
}";

async fn job_counts_and_tasks(mut h: Harness) {
    let (a, _) = two_jobs(&mut h).await;
    let data = h
        .data(JOB, json!({ "id": a.to_string(), "first": 2 }))
        .await;
    let job = &data["job"];
    assert_eq!(job["id"], a.to_string());
    assert_eq!(job["jobType"], "cpu_bound");
    assert_eq!(job["status"], "RUNNING");
    assert_eq!(job["totalTasks"], 5);
    assert_eq!(job["tasksCreated"], 5);
    assert_eq!(job["completedTasks"], 2);
    assert_eq!(job["failedTasks"], 1);
    assert_eq!(job["runningTasks"], 1);
    assert_eq!(job["queuedTasks"], 1);
    assert_eq!(job["retryingTasks"], 0);
    assert!(job["startedAt"].is_string());
    assert!(job["completedAt"].is_null());

    // Pages of 2 in index order.
    let mut indexes = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = h
            .data(
                JOB,
                json!({ "id": a.to_string(), "first": 2, "after": after }),
            )
            .await;
        let tasks = &data["job"]["tasks"];
        for edge in tasks["edges"].as_array().unwrap() {
            indexes.push(edge["node"]["index"].as_u64().unwrap());
        }
        if tasks["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = tasks["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(indexes, [0, 1, 2, 3, 4]);

    // Filtered by status.
    let data = h
        .data(
            JOB,
            json!({ "id": a.to_string(), "status": ["COMPLETED", "RUNNING"] }),
        )
        .await;
    let nodes: Vec<(u64, String)> = data["job"]["tasks"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["node"]["index"].as_u64().unwrap(),
                e["node"]["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [
            (0, "COMPLETED".to_owned()),
            (1, "COMPLETED".to_owned()),
            (3, "RUNNING".to_owned())
        ]
    );

    // Unknown and malformed ids.
    let data = h.data(JOB, json!({ "id": JobId::new().to_string() })).await;
    assert!(data["job"].is_null());
    let response = h.query(JOB, json!({ "id": "nope" })).await;
    let error = &response.errors[0];
    let ext = error.extensions.as_ref().unwrap();
    assert_eq!(ext.get("code").unwrap().to_string(), "\"BAD_USER_INPUT\"");
    assert_eq!(ext.get("field").unwrap().to_string(), "\"id\"");
    let response = h
        .query(JOB, json!({ "id": a.to_string(), "after": "x" }))
        .await;
    assert!(!response.errors.is_empty());
}

const HISTORY: &str = "query($id: ID!, $first: Int, $after: String) {
  job(id: $id) {
    history(first: $first, after: $after) {
      edges { cursor node { eventType at taskIndex taskId attempt worker error } }
      pageInfo { hasNextPage endCursor }
    }
  }
}";

async fn history_in_log_order(mut h: Harness) {
    let (a, _) = two_jobs(&mut h).await;
    let all = h
        .data(HISTORY, json!({ "id": a.to_string(), "first": 1000 }))
        .await;
    let all = all["job"]["history"]["edges"].as_array().unwrap().clone();
    let types: Vec<&str> = all
        .iter()
        .map(|e| e["node"]["eventType"].as_str().unwrap())
        .collect();
    // Job B's events are not in A's history; A's are in the order appended.
    let mut expected = vec!["JobSubmitted", "TasksCreated"];
    expected.extend(["TaskEnqueued"; 5]);
    expected.extend(["TaskStarted"; 4]);
    expected.extend(["TaskCompleted", "TaskCompleted", "TaskFailed"]);
    assert_eq!(types, expected);
    let first_start = &all[7]["node"];
    assert_eq!(first_start["taskIndex"], 0);
    assert_eq!(first_start["worker"], "w1");
    assert_eq!(first_start["attempt"], 1);
    assert_eq!(first_start["taskId"], TaskId::for_task(a, 0).to_string());
    assert_eq!(all[0]["node"]["taskIndex"], Value::Null);
    assert_eq!(all[13]["node"]["error"], "boom");

    // Pages of 4 give the same events.
    let mut paged = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = h
            .data(
                HISTORY,
                json!({ "id": a.to_string(), "first": 4, "after": after }),
            )
            .await;
        let history = &data["job"]["history"];
        paged.extend(history["edges"].as_array().unwrap().iter().cloned());
        if history["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = history["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(paged, all);
}

const JOBS: &str = "query($first: Int, $after: String, $status: [JobStatus!], $jobType: String,
                          $createdAfter: DateTime, $createdBefore: DateTime, $search: String,
                          $sort: JobSortOrder! = NEWEST) {
  jobs(first: $first, after: $after, status: $status, jobType: $jobType,
       createdAfter: $createdAfter, createdBefore: $createdBefore, search: $search, sort: $sort) {
    edges { cursor node { id jobType status } }
    pageInfo { hasNextPage endCursor }
  }
}";

/// The Step Functions driver's bookkeeping on the job: its execution, the state it is in, and
/// the steps in the history; null with the built-in driver.
async fn execution_of_a_step_functions_job(mut h: Harness) {
    let (a, b) = two_jobs(&mut h).await;
    let arn = format!("arn:aws:states:eu-west-1:123456789012:execution:shoal-job:{a}");
    let step = |name: &str, detail: Option<&str>| shoal_domain::events::JobStep {
        job_id: a,
        step: name.into(),
        retry_count: 0,
        detail: detail.map(str::to_owned),
        at: t(8),
    };
    h.append(&[Event::JobExecutionStarted(
        shoal_domain::events::JobExecutionStarted {
            job_id: a,
            execution_arn: arn.clone(),
            at: t(8),
        },
    )])
    .await;
    h.append(&[Event::JobStepStarted(step("CreateTasks", None))])
        .await;
    h.append(&[Event::JobStepSucceeded(step("CreateTasks", Some("{}")))])
        .await;
    h.append(&[Event::JobStepStarted(step("Monitor", None))])
        .await;
    h.project().await;
    let query = "query($id: ID!) { job(id: $id) {
        status
        execution { arn consoleUrl currentState stateTransition }
        history(first: 100) { edges { node { eventType step detail } } }
    } }";
    let data = h.data(query, json!({ "id": a.to_string() })).await;
    let job = &data["job"];
    assert_eq!(job["status"], "RUNNING", "bookkeeping changes no status");
    assert_eq!(job["execution"]["arn"], arn.as_str());
    assert_eq!(
        job["execution"]["consoleUrl"],
        format!(
            "https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1#/v2/executions/details/{arn}"
        )
    );
    assert_eq!(job["execution"]["currentState"], "Monitor");
    assert_eq!(job["execution"]["stateTransition"], "STARTED");
    let steps: Vec<(String, String)> = job["history"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["node"]["step"].is_null())
        .map(|e| {
            (
                e["node"]["eventType"].as_str().unwrap().to_owned(),
                e["node"]["step"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("JobStepStarted".to_owned(), "CreateTasks".to_owned()),
            ("JobStepSucceeded".to_owned(), "CreateTasks".to_owned()),
            ("JobStepStarted".to_owned(), "Monitor".to_owned()),
        ]
    );
    let other = h
        .data(
            "query($id: ID!) { job(id: $id) { execution { arn } } }",
            json!({ "id": b.to_string() }),
        )
        .await;
    assert!(other["job"]["execution"].is_null(), "built-in driver: none");
}

fn ids(data: &Value) -> Vec<String> {
    data["jobs"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn jobs_filters_and_pages(mut h: Harness) {
    let (a, b) = two_jobs(&mut h).await;
    let (a, b) = (a.to_string(), b.to_string());
    assert_eq!(
        ids(&h.data(JOBS, json!({})).await),
        [b.as_str(), a.as_str()]
    );
    assert_eq!(
        ids(&h.data(JOBS, json!({ "sort": "OLDEST" })).await),
        [a.as_str(), b.as_str()]
    );
    let page = h.data(JOBS, json!({ "first": 1 })).await;
    assert_eq!(ids(&page), [b.as_str()]);
    assert_eq!(page["jobs"]["pageInfo"]["hasNextPage"], true);
    let next = h
        .data(
            JOBS,
            json!({ "first": 1, "after": page["jobs"]["pageInfo"]["endCursor"] }),
        )
        .await;
    assert_eq!(ids(&next), [a.as_str()]);
    assert_eq!(next["jobs"]["pageInfo"]["hasNextPage"], false);
    assert_eq!(
        ids(&h.data(JOBS, json!({ "jobType": "io_bound" })).await),
        [b.as_str()]
    );
    assert_eq!(
        ids(&h.data(JOBS, json!({ "status": ["RUNNING"] })).await),
        [a.as_str()]
    );
    assert_eq!(
        ids(&h.data(JOBS, json!({ "search": "CPU" })).await),
        [a.as_str()]
    );
    assert_eq!(
        ids(&h.data(JOBS, json!({ "search": &b[b.len() - 12..] })).await),
        [b.as_str()]
    );
    assert_eq!(
        ids(&h
            .data(JOBS, json!({ "createdAfter": t(1).to_rfc3339() }))
            .await),
        [b.as_str()]
    );
    assert_eq!(
        ids(&h
            .data(JOBS, json!({ "createdBefore": t(1).to_rfc3339() }))
            .await),
        [a.as_str()]
    );
    for bad in [json!({ "after": "garbage" }), json!({ "first": 0 })] {
        let response = h.query(JOBS, bad).await;
        let ext = response.errors[0].extensions.as_ref().unwrap();
        assert_eq!(ext.get("code").unwrap().to_string(), "\"BAD_USER_INPUT\"");
    }
}

async fn analytics_shape(mut h: Harness) {
    two_jobs(&mut h).await;
    let data = h
        .data(
            "{ analytics {
                overview { totalJobs runningJobs pendingJobs totalTasks completedTasks failedTasks successRate }
                jobsByType { jobType count }
                jobsByStatus { status count }
                tasksByStatus { status count }
                timeline(days: 2) { date jobsSubmitted tasksCompleted tasksFailed }
                processingTime { count min max avg p50 p95 p99 }
                throughput(minutes: 10) { minute tasksCompleted tasksFailed }
            } }",
            json!({}),
        )
        .await;
    let a = &data["analytics"];
    assert_eq!(a["overview"]["totalJobs"], 2);
    assert_eq!(a["overview"]["runningJobs"], 1);
    assert_eq!(a["overview"]["pendingJobs"], 1);
    assert_eq!(a["overview"]["totalTasks"], 6);
    assert_eq!(a["overview"]["completedTasks"], 2);
    assert_eq!(a["overview"]["failedTasks"], 1);
    let mut by_type: Vec<(String, i64)> = a["jobsByType"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["jobType"].as_str().unwrap().to_owned(),
                c["count"].as_i64().unwrap(),
            )
        })
        .collect();
    by_type.sort();
    assert_eq!(
        by_type,
        [("cpu_bound".to_owned(), 1), ("io_bound".to_owned(), 1)]
    );
    let timeline = a["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 2);
    let sum = |key: &str| {
        timeline
            .iter()
            .map(|d| d[key].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!(sum("jobsSubmitted"), 2);
    assert_eq!(sum("tasksCompleted"), 2);
    let p = &a["processingTime"];
    assert_eq!(p["count"], 2);
    assert_eq!(p["min"], 0.1);
    assert_eq!(p["max"], 0.3);
    assert_eq!(p["avg"], 0.2);
    for q in ["p50", "p95", "p99"] {
        let v = p[q].as_f64().unwrap();
        assert!((0.1..=0.3).contains(&v), "{q} = {v}");
    }
    let throughput = a["throughput"].as_array().unwrap();
    assert_eq!(throughput.len(), 10);
    assert_eq!(
        throughput
            .iter()
            .map(|m| m["tasksCompleted"].as_i64().unwrap())
            .sum::<i64>(),
        2
    );
    let response = h
        .query("{ analytics { timeline(days: 0) { date } } }", json!({}))
        .await;
    assert!(!response.errors.is_empty());
}

/// `jobUpdated` sends the job at once, then the latest state after changes, coalesced: ten
/// commits within a few milliseconds give at most a few messages, the last one current.
async fn job_updated_is_coalesced(mut h: Harness) {
    let job = JobId::new();
    h.append(&[submitted(job, "noop", 10, t(0))]).await;
    h.append(&created(job, 10, t(1))).await;
    h.project().await;
    let mut stream = h.schema.execute_stream(
        async_graphql::Request::new(
            "subscription($id: ID!) { jobUpdated(id: $id) { status completedTasks } }",
        )
        .variables(async_graphql::Variables::from_json(
            json!({ "id": job.to_string() }),
        )),
    );
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the initial state")
        .expect("a message");
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let first = first.data.into_json().unwrap();
    assert_eq!(first["jobUpdated"]["status"], "ENQUEUED");

    let started_at = std::time::Instant::now();
    for index in 0..10 {
        h.append(&[
            started(job, index, "w", t(2)),
            completed(job, index, 10, t(3)),
        ])
        .await;
        h.project().await;
    }
    let mut messages = Vec::new();
    let mut last_at = started_at;
    loop {
        let next = tokio::time::timeout(Duration::from_millis(600), stream.next()).await;
        let Ok(Some(response)) = next else { break };
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        messages.push(response.data.into_json().unwrap());
        last_at = std::time::Instant::now();
    }
    let last = messages.last().expect("at least one update");
    assert_eq!(last["jobUpdated"]["completedTasks"], 10);
    // At most 10 per second (the first of a quiet period goes at once).
    let allowed = ((last_at - started_at).as_secs_f64() * 10.0).floor() as usize + 1;
    assert!(
        messages.len() <= allowed && messages.len() < 10,
        "not coalesced: {} messages for 10 appends in {:?}",
        messages.len(),
        last_at - started_at
    );
}

/// `jobs(createdAfter: "-200000-01-01T00:00:00Z")` and a cursor from year 200000 are the
/// client's mistakes: `BAD_USER_INPUT` naming the argument, never `INTERNAL`.
async fn extreme_times_are_user_errors(mut h: Harness) {
    two_jobs(&mut h).await;
    let id = JobId::new();
    let cases = [
        (
            json!({ "createdAfter": "-200000-01-01T00:00:00Z" }),
            "createdAfter",
        ),
        (
            json!({ "createdBefore": "+200000-01-01T00:00:00Z" }),
            "createdBefore",
        ),
        (
            json!({ "createdAfter": "0000-12-31T23:59:59Z" }),
            "createdAfter",
        ),
        (json!({ "after": format!("{}_{id}", i64::MIN) }), "after"),
        (
            json!({ "after": format!("-6311390400000000000_{id}") }),
            "after",
        ),
        (
            json!({ "after": format!("6311390400000000000_{id}") }),
            "after",
        ),
    ];
    for (variables, field) in cases {
        let response = h.query(JOBS, variables.clone()).await;
        let error = response
            .errors
            .first()
            .unwrap_or_else(|| panic!("{variables}: accepted"));
        let extensions = serde_json::to_value(&error.extensions).unwrap();
        assert_eq!(
            extensions["code"], "BAD_USER_INPUT",
            "{variables}: {error:?}"
        );
        assert_eq!(extensions["field"], field, "{variables}: {error:?}");
    }
    // The edges of the range still work.
    let edges = json!({
        "createdAfter": "0001-01-01T00:00:00Z",
        "createdBefore": "9999-12-31T23:59:59Z"
    });
    assert_eq!(ids(&h.data(JOBS, edges).await).len(), 2);
}

macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let database = super::Database::Sqlite(super::testing::fresh_sqlite().await);
                    super::$name(super::Harness::new(database).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(pool) = super::testing::fresh_postgres().await {
                        let database = super::Database::Postgres(pool);
                        super::$name(super::Harness::new(database).await).await;
                    }
                }
            )*
        }
    };
}

for_each_backend!(
    job_counts_and_tasks,
    history_in_log_order,
    execution_of_a_step_functions_job,
    jobs_filters_and_pages,
    analytics_shape,
    job_updated_is_coalesced,
    extreme_times_are_user_errors,
);
