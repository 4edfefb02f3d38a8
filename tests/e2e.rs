//! End-to-end tests through the `shoal` binary, as a user runs it: `shoal dev` (and separate
//! `shoal worker` processes), GraphQL over HTTP, and the event log checked afterwards. Each
//! test runs on SQLite and on Postgres (required when `SHOAL_REQUIRE_POSTGRES=1`).

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_domain::JobId;

use support::{Dev, Process, count, flaky_program, for_each_backend, job_events, task_events};

/// The GraphQL client of these tests, on top of the shared `shoal dev`.
impl Dev {
    async fn submit(&self, input: Value) -> JobId {
        let (job, status) = self.submit_job(input).await;
        assert_eq!(status, "PENDING");
        job
    }

    /// The job's status; `"(not projected yet)"` while `job(id)` is null (the read model is
    /// a few milliseconds behind a submission).
    async fn status(&self, job: JobId) -> String {
        self.job_status(job)
            .await
            .unwrap_or_else(|| "(not projected yet)".to_owned())
    }

    async fn wait_for_status(&self, job: JobId, wanted: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let status = self.status(job).await;
            if status == wanted {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "job {job} is {status}, not {wanted}, after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

for_each_backend!(
    a_thousand_tasks_complete_exactly_once,
    failed_tasks_retried_by_the_user_complete,
    cancel_stops_a_running_job,
    sigterm_drains_a_worker_and_releases_what_it_cannot_finish,
    a_subscription_follows_a_job_to_completed,
    a_legacy_graphql_ws_subscription_follows_a_job_to_completed,
);

async fn a_thousand_tasks_complete_exactly_once(url: &str) {
    let dev = Dev::start(url, None, &["--workers", "16"]).await;
    let job = dev
        .submit(json!({ "jobType": "noop", "totalTasks": 1000 }))
        .await;
    dev.wait_for_status(job, "COMPLETED", Duration::from_secs(120))
        .await;

    let tasks = task_events(url, job, 1000).await;
    for (index, events) in tasks.iter().enumerate() {
        assert_eq!(count(events, "TaskEnqueued"), 1, "task {index}");
        assert_eq!(count(events, "TaskStarted"), 1, "task {index}");
        assert_eq!(count(events, "TaskCompleted"), 1, "task {index}");
    }
    let job_stream = job_events(url, job).await;
    assert_eq!(
        job_stream.iter().filter(|t| *t == "JobCompleted").count(),
        1
    );
}

async fn failed_tasks_retried_by_the_user_complete(url: &str) {
    let flag =
        std::env::temp_dir().join(format!("shoal-test-flag-{}", uuid::Uuid::now_v7().simple()));
    let program = flaky_program(&flag);
    let exec = format!("flaky={}", program.display());
    let dev = Dev::start(url, None, &["--workers", "4", "--exec", &exec]).await;
    let job = dev
        .submit(json!({
            "jobType": "exec",
            "totalTasks": 3,
            "maxAttempts": 2,
            "parameters": { "command": "flaky" },
        }))
        .await;
    // Two attempts each (one retry after a backoff of about a second), then FAILED.
    dev.wait_for_status(job, "FAILED", Duration::from_secs(60))
        .await;
    // The job can close before the worker has recorded moving the last message to the
    // dead-letter queue: wait for that too.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = task_events(url, job, 3).await;
        if tasks
            .iter()
            .all(|events| count(events, "TaskDeadLettered") == 1)
        {
            for events in tasks {
                assert_eq!(count(&events, "TaskStarted"), 2);
                assert_eq!(count(&events, "TaskFailed"), 2);
                assert_eq!(count(&events, "TaskCompleted"), 0);
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failed tasks were not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    std::fs::write(&flag, "").expect("creating the flag");
    let data = dev
        .graphql(
            "mutation($id: ID!) { retryFailedTasks(jobId: $id) { retriedTasks } }",
            json!({ "id": job.to_string() }),
        )
        .await;
    assert_eq!(data["retryFailedTasks"]["retriedTasks"], 3);
    dev.wait_for_status(job, "COMPLETED", Duration::from_secs(60))
        .await;
    for events in task_events(url, job, 3).await {
        assert_eq!(count(&events, "TaskCompleted"), 1);
        let last = events.last().expect("events");
        assert_eq!(last.event_type, "TaskCompleted");
        assert_eq!(last.data_json()["attempt"], 3);
    }
    let job_stream = job_events(url, job).await;
    assert_eq!(
        job_stream,
        [
            "JobSubmitted",
            "TasksCreated",
            "JobFailed",
            "JobRetryRequested",
            "JobCompleted"
        ]
    );
    let _ = std::fs::remove_file(flag);
    let _ = std::fs::remove_file(program);
}

async fn cancel_stops_a_running_job(url: &str) {
    let dev = Dev::start(url, None, &["--workers", "2"]).await;
    let job = dev
        .submit(json!({
            "jobType": "io_bound",
            "totalTasks": 200,
            "parameters": { "work_duration_seconds": 0.3 },
        }))
        .await;
    // Let a few tasks run, then cancel.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let started: usize = task_events(url, job, 200)
            .await
            .iter()
            .map(|e| count(e, "TaskStarted"))
            .sum();
        if started >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no task started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let data = dev
        .graphql(
            "mutation($id: ID!) { cancelJob(id: $id, reason: \"changed my mind\") { status cancelReason } }",
            json!({ "id": job.to_string() }),
        )
        .await;
    assert_eq!(data["cancelJob"]["status"], "CANCELLED");

    // Tasks already running may finish, and a worker may start what it holds for up to its
    // cancel check's 1 s; then no new one starts.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let started_after_settling: usize = task_events(url, job, 200)
        .await
        .iter()
        .map(|e| count(e, "TaskStarted"))
        .sum();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started_later: usize = task_events(url, job, 200)
        .await
        .iter()
        .map(|e| count(e, "TaskStarted"))
        .sum();
    assert_eq!(
        started_after_settling, started_later,
        "tasks kept starting after the cancel"
    );
    assert!(started_later < 200);
    assert_eq!(dev.status(job).await, "CANCELLED");
    let job_stream = job_events(url, job).await;
    assert!(
        !job_stream
            .iter()
            .any(|t| t == "JobCompleted" || t == "JobFailed")
    );
}

async fn sigterm_drains_a_worker_and_releases_what_it_cannot_finish(url: &str) {
    // The platform without workers; tasks run in separate `shoal worker` processes.
    let dev = Dev::start(url, None, &["--workers", "0"]).await;
    let job = dev
        .submit(json!({
            "jobType": "io_bound",
            "totalTasks": 4,
            "parameters": { "work_duration_seconds": 2 },
        }))
        .await;
    let worker_args = |grace: &'static str| {
        vec![
            "worker",
            "--database-url",
            url,
            "--concurrency",
            "4",
            "--grace-period-seconds",
            grace,
            "--visibility-timeout-seconds",
            "30",
        ]
    };
    let started = |url: String| async move {
        task_events(&url, job, 4)
            .await
            .iter()
            .map(|e| count(e, "TaskStarted"))
            .sum::<usize>()
    };

    // A worker with a grace period long enough: SIGTERM lets the running tasks finish.
    let mut worker = Process::start(&worker_args("10"), None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while started(url.to_owned()).await < 4 {
        assert!(Instant::now() < deadline, "the tasks did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.terminate();
    assert!(
        worker.wait_exit(Duration::from_secs(15)).await,
        "worker exit status"
    );
    dev.wait_for_status(job, "COMPLETED", Duration::from_secs(10))
        .await;

    // A worker with a short grace period: SIGTERM releases the unfinished tasks at once, and
    // another worker completes them, each exactly once.
    let job = dev
        .submit(json!({
            "jobType": "io_bound",
            "totalTasks": 2,
            "parameters": { "work_duration_seconds": 4 },
        }))
        .await;
    let mut worker = Process::start(&worker_args("1"), None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: usize = task_events(url, job, 2)
            .await
            .iter()
            .map(|e| count(e, "TaskStarted"))
            .sum();
        if n == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the tasks did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopping = Instant::now();
    worker.terminate();
    assert!(
        worker.wait_exit(Duration::from_secs(10)).await,
        "worker exit status"
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "the worker waited for its tasks"
    );
    let _second = Process::start(&worker_args("10"), None, None);
    dev.wait_for_status(job, "COMPLETED", Duration::from_secs(60))
        .await;
    for events in task_events(url, job, 2).await {
        assert_eq!(count(&events, "TaskCompleted"), 1);
        assert_eq!(
            count(&events, "TaskStarted"),
            1,
            "a released attempt is taken over, not restarted"
        );
    }
}

/// A GraphQL subscription client over a WebSocket speaking `graphql-transport-ws`, as GraphiQL
/// and `graphql-ws` clients do: it follows a job from submission to COMPLETED without polling.
async fn a_subscription_follows_a_job_to_completed(url: &str) {
    follow_a_job_over_a_websocket(url, &TRANSPORT_WS).await;
}

/// The same with the older `graphql-ws` subprotocol (subscriptions-transport-ws, as Apollo's
/// legacy clients speak it).
async fn a_legacy_graphql_ws_subscription_follows_a_job_to_completed(url: &str) {
    follow_a_job_over_a_websocket(url, &LEGACY_WS).await;
}

/// The message types of a GraphQL-over-WebSocket subprotocol.
struct WsProtocol {
    name: &'static str,
    subscribe: &'static str,
    data: &'static str,
    stop: &'static str,
}

const TRANSPORT_WS: WsProtocol = WsProtocol {
    name: "graphql-transport-ws",
    subscribe: "subscribe",
    data: "next",
    stop: "complete",
};

const LEGACY_WS: WsProtocol = WsProtocol {
    name: "graphql-ws",
    subscribe: "start",
    data: "data",
    stop: "stop",
};

async fn follow_a_job_over_a_websocket(url: &str, protocol: &WsProtocol) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let dev = Dev::start(url, None, &["--workers", "8"]).await;
    let job = dev
        .submit(json!({
            "jobType": "io_bound",
            "totalTasks": 100,
            "parameters": { "work_duration_seconds": 0.05 },
        }))
        .await;

    let mut request = dev
        .url("/graphql")
        .replace("http://", "ws://")
        .into_client_request()
        .expect("a WebSocket request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        protocol.name.parse().expect("a header value"),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket upgrade of /graphql");
    assert_eq!(response.headers()["sec-websocket-protocol"], protocol.name);
    let send = |value: Value| Message::Text(value.to_string().into());
    ws.send(send(json!({ "type": "connection_init", "payload": {} })))
        .await
        .expect("connection_init");
    ws.send(send(json!({
        "id": "1",
        "type": protocol.subscribe,
        "payload": {
            "query": "subscription($id: ID!) { jobUpdated(id: $id) { id status totalTasks completedTasks runningTasks queuedTasks } }",
            "variables": { "id": job.to_string() },
        },
    })))
    .await
    .expect("subscribe");

    let started = Instant::now();
    let mut acked = false;
    let mut updates: Vec<Value> = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("a message within 60 s")
            .expect("the socket stays open")
            .expect("a WebSocket message");
        let text = match message {
            Message::Text(text) => text.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        };
        let message: Value = serde_json::from_str(&text).expect("JSON");
        match message["type"].as_str() {
            Some("connection_ack") => acked = true,
            Some("ping") => ws
                .send(send(json!({ "type": "pong" })))
                .await
                .expect("pong"),
            // graphql-ws keep-alive
            Some("ka") => {}
            Some(t) if t == protocol.data => {
                assert_eq!(message["id"], "1");
                assert!(message["payload"].get("errors").is_none(), "{message}");
                let job = message["payload"]["data"]["jobUpdated"].clone();
                let done = job["status"] == "COMPLETED";
                updates.push(job);
                if done {
                    break;
                }
            }
            other => panic!("unexpected {other:?}: {message}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(acked, "no connection_ack");
    let last = updates.last().expect("updates");
    assert_eq!(last["id"], job.to_string());
    assert_eq!(last["completedTasks"], 100);
    assert_eq!(last["totalTasks"], 100);
    assert!(
        updates.iter().any(|u| {
            let done = u["completedTasks"].as_u64().unwrap_or(0);
            u["status"] == "RUNNING" && done < 100
        }),
        "no progress update before COMPLETED: {updates:?}"
    );
    // Coalesced: at most the default rate of messages per second (plus the first, sent at once).
    let rate = f64::from(shoal_query_api::graphql::DEFAULT_MAX_MESSAGES_PER_SECOND);
    let allowed = (elapsed.as_secs_f64() * rate).ceil() as usize + 2;
    assert!(
        updates.len() <= allowed,
        "{} messages in {elapsed:?}",
        updates.len()
    );
    ws.send(send(json!({ "id": "1", "type": protocol.stop })))
        .await
        .expect("stop");
    let _ = ws.close(None).await;
}
