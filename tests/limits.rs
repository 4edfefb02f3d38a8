//! The limits of the HTTP and WebSocket APIs as a client meets them (docs/limits.md): each
//! refusal says which limit and which flag, and a refused request appends nothing. The APIs
//! run in-process (`roles::api_router`, as `shoal serve` builds them) on SQLite and, when
//! `SHOAL_TEST_DATABASE_URL` is set, on Postgres.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use clap::Parser;
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal::roles::{self, ApiArgs, DatabaseArgs, Platform, QueueArgs};
use shoal_infra::eventlog::LogPosition;
use shoal_infra::testing;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    api: ApiArgs,
}

struct Server {
    base: String,
    http: reqwest::Client,
    platform: Platform,
    _serving: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(database_url: &str, flags: &[&str]) -> Server {
        let platform = Platform::connect(
            &DatabaseArgs::new(database_url.to_owned()),
            &QueueArgs {
                queue: "sql".into(),
            },
        )
        .await
        .unwrap();
        let mut argv = vec!["shoal"];
        argv.extend_from_slice(flags);
        let api = Cli::parse_from(argv).api;
        let projector = roles::projector(&platform, &roles::ProjectorArgs::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = roles::api_router(&platform, &api, &projector, address, |api| api).unwrap();
        let base = format!("http://{address}");
        let serving = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Server {
            base,
            http: reqwest::Client::new(),
            platform,
            _serving: serving,
        }
    }

    /// How many events the log holds, once the count has held still for a moment: on Postgres
    /// a read of the whole log stays below the oldest transaction running on the server, which
    /// under load (other tests' transactions) can briefly hide a commit.
    async fn events(&self) -> usize {
        let count = async || {
            self.platform
                .log
                .read_all(LogPosition::START, 100_000)
                .await
                .unwrap()
                .len()
        };
        let mut last = count().await;
        for _ in 0..60 {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            let now = count().await;
            if now == last {
                return now;
            }
            last = now;
        }
        last
    }

    /// Waits until the log holds `expected` events (see [`Server::events`]) and returns the
    /// count it settled on.
    async fn events_reach(&self, expected: usize) -> usize {
        for _ in 0..40 {
            let now = self.events().await;
            if now >= expected {
                return now;
            }
        }
        self.events().await
    }

    async fn post(&self, body: String) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/graphql", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.post(json!({ "query": query, "variables": variables }).to_string())
            .await
            .1
    }

    async fn websocket(
        &self,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tokio_tungstenite::tungstenite::Error,
    > {
        let mut request = format!("{}/graphql", self.base.replace("http://", "ws://"))
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        tokio_tungstenite::connect_async(request)
            .await
            .map(|(ws, _)| ws)
    }
}

fn text(value: Value) -> Message {
    Message::Text(value.to_string().into())
}

const SUBMIT: &str = "mutation($input: SubmitJobInput!) { submitJob(input: $input) { id } }";

async fn each_backend(test: impl AsyncFn(&str)) {
    let sqlite = format!("sqlite:{}", testing::temp_sqlite_path().display());
    test(&sqlite).await;
    if let Some(url) = testing::fresh_postgres_url().await {
        test(&url).await;
    }
}

/// `--max-request-bytes`: a larger body is refused with 413 and a GraphQL error that names the
/// flag; nothing is appended.
#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    each_backend(async |url| {
        let server = Server::start(url, &["--max-request-bytes", "2000"]).await;
        let before = server.events().await;
        let big = json!({
            "query": SUBMIT,
            "variables": { "input": {
                "jobType": "noop", "totalTasks": 1,
                "parameters": { "blob": "x".repeat(5000) } } },
        })
        .to_string();
        let (status, body) = server.post(big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("larger than 2000 bytes (--max-request-bytes)"),
            "{message}"
        );
        // REST bodies share the limit.
        let response = server
            .http
            .post(format!("{}/api/v1/jobs", server.base))
            .header("content-type", "application/json")
            .body(json!({"job_type": "noop", "num_tasks": 1, "parameters": {"blob": "x".repeat(5000)}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(server.events().await, before);
        // Under the limit, it works.
        let ok = server
            .graphql(SUBMIT, json!({ "input": { "jobType": "noop", "totalTasks": 1 } }))
            .await;
        assert!(ok["errors"].is_null(), "{ok}");
    })
    .await;
}

/// `--graphql-max-batch`: a batch of more operations is refused as a whole, with the count.
#[tokio::test]
async fn a_batch_over_the_limit_is_refused() {
    each_backend(async |url| {
        let server = Server::start(url, &["--graphql-max-batch", "3"]).await;
        let one = json!({ "query": SUBMIT, "variables": { "input": { "jobType": "noop", "totalTasks": 1 } } });
        let (status, body) = server.post(json!([one, one, one, one]).to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["errors"][0]["extensions"]["code"], "BATCH_TOO_LARGE");
        assert_eq!(
            body["errors"][0]["message"],
            "a batched request may hold at most 3 operations (--graphql-max-batch), this one holds 4"
        );
        assert_eq!(server.events().await, 0);
        let (status, body) = server.post(json!([one, one]).to_string()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_array().unwrap().len(), 2);
        assert_eq!(server.events_reach(2).await, 2);
    })
    .await;
}

/// Complexity multiplies by `first`: a thousand jobs' thousand-event histories cost about a
/// million and are refused before anything runs; small pages pass.
#[tokio::test]
async fn complexity_multiplies_by_the_page_size() {
    each_backend(async |url| {
        let server = Server::start(url, &[]).await;
        let nested = "{ jobs(first: 1000) { edges { node { id history(first: 1000) { edges { node { eventType at } } } } } } }";
        let body = server.graphql(nested, json!({})).await;
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("too complex"), "{body}");
        let small = "{ jobs(first: 10) { edges { node { id history(first: 10) { edges { node { eventType at } } } } } } }";
        let body = server.graphql(small, json!({})).await;
        assert!(body["errors"].is_null(), "{body}");
        // A full page of jobs with many fields is still fine.
        let page = "{ jobs(first: 1000) { edges { cursor node { id jobType status totalTasks completedTasks failedTasks runningTasks queuedTasks createdAt updatedAt } } pageInfo { hasNextPage endCursor } } }";
        let body = server.graphql(page, json!({})).await;
        assert!(body["errors"].is_null(), "{body}");
    })
    .await;
}

/// A job that would copy its parameters into too many tasks, or whose one task's message would
/// be over a queue message's size, is refused at submission with the numbers; nothing is
/// appended. Over REST too.
#[tokio::test]
async fn job_byte_budget_and_message_size_are_checked_at_submission() {
    each_backend(async |url| {
        let server = Server::start(
            url,
            &["--max-job-bytes", "100000", "--max-message-bytes", "20000"],
        )
        .await;
        let params = json!({ "blob": "x".repeat(1000) });
        let body = server
            .graphql(
                SUBMIT,
                json!({ "input": { "jobType": "noop", "totalTasks": 1000, "parameters": params } }),
            )
            .await;
        let error = &body["errors"][0];
        assert_eq!(error["extensions"]["code"], "LIMIT_EXCEEDED", "{body}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("1000 tasks would carry") && message.contains("the limit is 100000"),
            "{message}"
        );
        let items: Vec<Value> = (0..10).map(|_| json!("y".repeat(3000))).collect();
        let body = server
            .graphql(
                SUBMIT,
                json!({ "input": { "jobType": "noop", "items": items, "batchSize": 10 } }),
            )
            .await;
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("task 0's queue message would be")
                && message.contains("the limit is 20000"),
            "{body}"
        );
        let response = server
            .http
            .post(format!("{}/api/v1/jobs", server.base))
            .json(&json!({"job_type": "noop", "num_tasks": 1000, "parameters": params}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: Value = response.json().await.unwrap();
        assert!(body.to_string().contains("tasks would carry"), "{body}");
        assert_eq!(server.events().await, 0);
        // Within both, it is accepted.
        let body = server
            .graphql(
                SUBMIT,
                json!({ "input": { "jobType": "noop", "items": items, "batchSize": 5 } }),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
        // A GraphQL job names its handler: no silent `cpu_bound` fallback is recorded.
        assert_eq!(server.events_reach(1).await, 1);
        let events = server
            .platform
            .log
            .read_all(LogPosition::START, 10)
            .await
            .unwrap();
        assert_eq!(events[0].event_type, "JobSubmitted");
        let data: Value = serde_json::from_str(events[0].data.get()).unwrap();
        assert!(data.get("fallback_handler").is_none(), "{data}");
    })
    .await;
}

/// `--ws-max-connections`, `--ws-max-subscriptions`, `--ws-init-timeout-seconds`,
/// `--ws-max-message-bytes`: each ends as the client can tell.
#[tokio::test]
async fn websocket_limits() {
    let sqlite = format!("sqlite:{}", testing::temp_sqlite_path().display());
    let server = Server::start(
        &sqlite,
        &[
            "--ws-max-connections",
            "1",
            "--ws-max-subscriptions",
            "1",
            "--ws-init-timeout-seconds",
            "1",
            "--ws-max-message-bytes",
            "1000",
        ],
    )
    .await;
    let next_text = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("a message")
                .expect("open")
                .expect("a message");
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).unwrap();
            }
        }
    };

    // One connection: a second is refused before the upgrade.
    let mut ws = server.websocket().await.unwrap();
    match server.websocket().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.contains("--ws-max-connections"), "{body}");
        }
        other => panic!("a second connection was not refused: {other:?}"),
    }
    ws.send(text(json!({ "type": "connection_init", "payload": {} })))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await["type"], "connection_ack");
    let subscribe = |id: &str| {
        text(json!({ "id": id, "type": "subscribe",
            "payload": { "query": "subscription { jobsChanged { everything } }" } }))
    };
    ws.send(subscribe("1")).await.unwrap();
    ws.send(subscribe("2")).await.unwrap();
    let refused = next_text(&mut ws).await;
    assert_eq!(refused["id"], "2", "{refused}");
    let error = &refused["payload"]["errors"][0];
    assert_eq!(
        error["extensions"]["code"], "TOO_MANY_SUBSCRIPTIONS",
        "{refused}"
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("limit of 1 subscriptions (--ws-max-subscriptions)"),
        "{refused}"
    );
    // A message over the size limit closes the connection with 1009.
    ws.send(text(json!({ "id": "3", "type": "subscribe",
        "payload": { "query": format!("subscription {{ jobsChanged {{ everything }} }} # {}", "z".repeat(2000)) } })))
        .await
        .unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("not closed: {other:?}"),
        }
    };
    let frame = close.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1009, "{frame:?}");
    assert!(frame.reason.contains("--ws-max-message-bytes"), "{frame:?}");
    drop(ws);

    // No connection_init: closed with 4408 after the timeout. (The connection's place is free
    // again once the previous one ended.)
    let mut ws = loop {
        match server.websocket().await {
            Ok(ws) => break ws,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("not closed: {other:?}"),
        }
    };
    let frame = close.expect("a close frame");
    assert_eq!(u16::from(frame.code), 4408);
    assert_eq!(frame.reason.as_str(), "Connection initialisation timeout");
}
