//! Tokens and the browser rules, black-box against real `shoal dev` / `shoal serve` processes
//! (docs/auth.md): `shoal token create|list|revoke`, every refusal (401 without a token or with
//! a revoked one, 403 without the scope, WebSockets refused at `connection_init`), the token's
//! name as the actor in the log and in the job's history, the internal listener for the old
//! system's workers, and the rules that hold whatever the mode (foreign `Origin` on a
//! WebSocket, `text/plain` GraphQL, `Sec-Fetch-Site: cross-site`, a foreign `Host`). On SQLite
//! and on Postgres (required when `SHOAL_REQUIRE_POSTGRES=1`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal_domain::{JobId, TaskId};
use shoal_infra::db::Database;
use shoal_infra::eventlog::LogPosition;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use support::{Dev, for_each_backend, free_port, run, shoal};

for_each_backend!(
    tokens_scopes_revocation_and_actors,
    browser_rules_hold_without_tokens
);

/// `shoal token create --name <name> --scope <scopes>`; returns the token.
fn create_token(url: &str, name: &str, scopes: &str) -> String {
    let output = run(
        &[
            "token",
            "create",
            "--name",
            name,
            "--scope",
            scopes,
            "--database-url",
            url,
        ],
        None,
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("shoal_"), "{token}");
    token
}

async fn graphql(
    dev: &Dev,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> (StatusCode, Value) {
    let mut request = dev
        .http
        .post(dev.url("/graphql"))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn rest(
    dev: &Dev,
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = dev.http.request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// Opens a GraphQL WebSocket (graphql-transport-ws) with `origin`, sends `connection_init`
/// with `payload`; returns the first answer: `connection_ack`, or the close frame's code.
async fn websocket(dev: &Dev, origin: Option<&str>, payload: Value) -> Result<String, String> {
    let mut request = dev
        .url("/graphql")
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("upgrade refused: {e}"))?;
    ws.send(Message::Text(
        json!({ "type": "connection_init", "payload": payload })
            .to_string()
            .into(),
    ))
    .await
    .map_err(|e| e.to_string())?;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer to connection_init");
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                return Ok(value["type"].as_str().unwrap_or_default().to_owned());
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(format!(
                    "closed {}",
                    frame.map(|f| u16::from(f.code)).unwrap_or_default()
                ));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed".into()),
        }
    }
}

async fn tokens_scopes_revocation_and_actors(url: &str) {
    let submitter = create_token(url, "ci-pipeline", "read,submit");
    let reader = create_token(url, "dashboard-viewer", "read");
    let operator = create_token(url, "on-call", "operate");
    let worker = create_token(url, "legacy-worker", "worker");
    // Names are never reused.
    let again = shoal(
        &[
            "token",
            "create",
            "--name",
            "on-call",
            "--scope",
            "read",
            "--database-url",
            url,
        ],
        None,
    )
    .output()
    .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    let internal = format!("127.0.0.1:{}", free_port());
    let dev = Dev::start(
        url,
        None,
        &[
            "--workers",
            "0",
            "--auth",
            "tokens",
            "--internal-listen",
            &internal,
        ],
    )
    .await;
    let public = dev.base.clone();
    let internal = format!("http://{internal}");

    // No token: 401 with a Bearer challenge, on GraphQL and REST; health stays public.
    let (status, body) = graphql(
        &dev,
        None,
        "{ jobs(first: 1) { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let answer = rest(
        &dev,
        &public,
        reqwest::Method::GET,
        "/api/v1/jobs",
        None,
        None,
    )
    .await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(answer.headers()["www-authenticate"], "Bearer");
    let answer = rest(&dev, &public, reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(answer.status(), StatusCode::OK);
    // A malformed or unknown token is 401 too.
    let (status, _) = graphql(&dev, Some("shoal_nope"), "{ __typename }", json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let forged = format!("{}{}", &reader[..reader.len() - 4], "0000");
    let (status, _) = graphql(&dev, Some(&forged), "{ __typename }", json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Scopes: a reader reads, and may not submit (GraphQL FORBIDDEN, REST 403).
    let (status, body) = graphql(
        &dev,
        Some(&reader),
        "{ jobs(first: 1) { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("errors").is_none(), "{body}");
    let submit = "mutation { submitJob(input: {jobType: \"noop\", totalTasks: 2}) { id } }";
    let (_, body) = graphql(&dev, Some(&reader), submit, json!({})).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );
    assert!(body["data"].is_null(), "{body}");
    let answer = rest(
        &dev,
        &public,
        reqwest::Method::POST,
        "/api/v1/jobs",
        Some(&reader),
        Some(json!({ "job_type": "noop", "num_tasks": 1 })),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);

    // The submitter submits over both APIs; its name is the actor.
    let (_, body) = graphql(&dev, Some(&submitter), submit, json!({})).await;
    let job = JobId::parse(
        body["data"]["submitJob"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}")),
    )
    .unwrap();
    let answer = rest(
        &dev,
        &public,
        reqwest::Method::POST,
        "/api/v1/jobs",
        Some(&submitter),
        Some(json!({ "job_type": "noop", "num_tasks": 1 })),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    // The operator may cancel, not submit nor read.
    let (_, body) = graphql(&dev, Some(&operator), submit, json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    // The operator may change a job's priority; the submitter may not.
    let prioritize = "mutation($id: ID!) { setJobPriority(jobId: $id, priority: 7) { priority } }";
    let (_, body) = graphql(
        &dev,
        Some(&submitter),
        prioritize,
        json!({ "id": job.to_string() }),
    )
    .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body}"
    );
    let (_, body) = graphql(
        &dev,
        Some(&operator),
        prioritize,
        json!({ "id": job.to_string() }),
    )
    .await;
    assert_eq!(body["data"]["setJobPriority"]["priority"], 7, "{body}");
    let cancel = "mutation($id: ID!) { cancelJob(id: $id) { status } }";
    let (_, body) = graphql(
        &dev,
        Some(&operator),
        cancel,
        json!({ "id": job.to_string() }),
    )
    .await;
    assert_eq!(body["data"]["cancelJob"]["status"], "CANCELLED", "{body}");

    // The history shows who did what.
    let history = "query($id: ID!) { job(id: $id) { history { nodes { eventType actor } } } }";
    let mut actors = Vec::new();
    for _ in 0..100 {
        let (_, body) = graphql(
            &dev,
            Some(&reader),
            history,
            json!({ "id": job.to_string() }),
        )
        .await;
        actors = body["data"]["job"]["history"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if actors.iter().any(|n| n["eventType"] == "JobCancelled") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let actor_of = |event: &str| {
        actors
            .iter()
            .find(|n| n["eventType"] == event)
            .map(|n| n["actor"].clone())
    };
    assert_eq!(
        actor_of("JobSubmitted"),
        Some(json!("ci-pipeline")),
        "{actors:?}"
    );
    assert_eq!(
        actor_of("JobPriorityChanged"),
        Some(json!("on-call")),
        "{actors:?}"
    );
    assert_eq!(
        actor_of("JobCancelled"),
        Some(json!("on-call")),
        "{actors:?}"
    );

    // The old system's worker: a bare POST (no body, no content type, no token) passes on the
    // internal listener, which serves nothing else; on the public one it needs the worker scope.
    let running = rest(
        &dev,
        &public,
        reqwest::Method::POST,
        "/api/v1/jobs",
        Some(&submitter),
        Some(json!({ "job_type": "noop", "num_tasks": 2 })),
    )
    .await;
    let running: Value = running.json().await.unwrap();
    let legacy_job = JobId::parse(running["id"].as_str().unwrap()).unwrap();
    let task = TaskId::for_task(legacy_job, 0);
    let path = format!("/api/v1/tasks/{task}/running");
    let mut status = StatusCode::NOT_FOUND;
    for _ in 0..100 {
        status = dev
            .http
            .post(format!("{internal}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::OK);
    for (base, path) in [(&internal, "/api/v1/jobs"), (&internal, "/graphql")] {
        let answer = dev.http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let other = format!("/api/v1/tasks/{}/running", TaskId::for_task(legacy_job, 1));
    let answer = dev.http.post(dev.url(&other)).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let answer = rest(
        &dev,
        &public,
        reqwest::Method::POST,
        &other,
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let answer = rest(
        &dev,
        &public,
        reqwest::Method::POST,
        &other,
        Some(&worker),
        None,
    )
    .await;
    assert_eq!(answer.status(), StatusCode::OK);

    // WebSockets: refused at connection_init without a valid token, acknowledged with one.
    let refused = websocket(&dev, None, json!({})).await;
    // async-graphql closes a refused graphql-transport-ws `connection_init` with 1002.
    assert!(
        matches!(&refused, Err(e) if e.contains("1002")),
        "{refused:?}"
    );
    let acked = websocket(
        &dev,
        None,
        json!({ "authorization": format!("Bearer {reader}") }),
    )
    .await;
    assert_eq!(acked, Ok("connection_ack".to_owned()));

    // Revoked: 401 from the next request on.
    run(
        &[
            "token",
            "revoke",
            "--name",
            "dashboard-viewer",
            "--database-url",
            url,
        ],
        None,
    );
    let (status, body) = graphql(
        &dev,
        Some(&reader),
        "{ jobs(first: 1) { edges { node { id } } } }",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    let refused = websocket(
        &dev,
        None,
        json!({ "authorization": format!("Bearer {reader}") }),
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");

    // `token list` shows every token, the revoked one marked, never a secret.
    let listed = run(&["token", "list", "--database-url", url], None);
    let listed = String::from_utf8(listed.stdout).unwrap();
    for name in [
        "ci-pipeline",
        "dashboard-viewer",
        "on-call",
        "legacy-worker",
    ] {
        assert!(listed.contains(name), "{listed}");
    }
    let viewer = listed
        .lines()
        .find(|l| l.starts_with("dashboard-viewer"))
        .unwrap();
    assert!(!viewer.trim_end().ends_with('-'), "{viewer}");
    assert!(!listed.contains(&reader[40..]), "{listed}");

    // The log: one TokenCreated per token, one TokenRevoked, each with the CLI's actor; no
    // secret anywhere.
    // (Read until the revocation shows: on Postgres a read of the whole log stays below the
    // oldest transaction still running on the server, which other tests may hold for a moment.)
    let database = Database::connect(url).await.unwrap();
    let log = database.event_log();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let events = loop {
        let events = log.read_all(LogPosition::START, 100_000).await.unwrap();
        if events.iter().any(|e| e.event_type == "TokenRevoked")
            || std::time::Instant::now() > deadline
        {
            break events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    database.close().await;
    let tokens: Vec<_> = events
        .iter()
        .filter(|e| e.event_type.starts_with("Token"))
        .collect();
    assert_eq!(
        tokens
            .iter()
            .filter(|e| e.event_type == "TokenCreated")
            .count(),
        4
    );
    let revoked: Vec<_> = tokens
        .iter()
        .filter(|e| e.event_type == "TokenRevoked")
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].data_json()["name"], "dashboard-viewer");
    for event in &tokens {
        assert!(event.stream_id.starts_with("token-"), "{}", event.stream_id);
        let actor = event.metadata_json()["actor"].as_str().unwrap().to_owned();
        assert!(actor.starts_with("cli:"), "{actor}");
        assert!(!event.data.get().contains(&reader[40..]));
    }
}

async fn browser_rules_hold_without_tokens(url: &str) {
    let dev = Dev::start(url, None, &["--workers", "0"]).await;
    let submit = json!({ "query": "mutation { submitJob(input: {jobType: \"noop\", totalTasks: 1}) { id } }" });

    // A text/plain POST (what a page sends cross-site without a preflight) never runs.
    let answer = dev
        .http
        .post(dev.url("/graphql"))
        .header("content-type", "text/plain")
        .body(submit.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Nor one without a content type; the GraphQL media types pass.
    let answer = dev
        .http
        .post(dev.url("/graphql"))
        .body(submit.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for media in [
        "application/json; charset=utf-8",
        "application/graphql-response+json",
    ] {
        let answer = dev
            .http
            .post(dev.url("/graphql"))
            .header("content-type", media)
            .body(submit.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{media}");
    }

    // Sec-Fetch-Site: cross-site on a write is refused; same-origin passes.
    let jobs = dev.url("/api/v1/jobs");
    let answer = dev
        .http
        .post(&jobs)
        .header("sec-fetch-site", "cross-site")
        .json(&json!({ "job_type": "noop", "num_tasks": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let answer = dev
        .http
        .post(&jobs)
        .header("sec-fetch-site", "same-origin")
        .json(&json!({ "job_type": "noop", "num_tasks": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    let job: Value = answer.json().await.unwrap();
    let job = JobId::parse(job["id"].as_str().unwrap()).unwrap();

    // A Host that is not this server's (DNS rebinding) is refused; loopback names pass.
    let answer = dev
        .http
        .get(dev.url("/api/v1/jobs"))
        .header("host", "rebind.attacker.example:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::MISDIRECTED_REQUEST);
    let port = dev.base.rsplit(':').next().unwrap().to_owned();
    let answer = dev
        .http
        .get(dev.url("/api/v1/jobs"))
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);

    // A WebSocket from another origin is refused at the upgrade; from Shoal's own, accepted.
    let foreign = websocket(&dev, Some("http://evil.example"), json!({})).await;
    assert!(
        matches!(&foreign, Err(e) if e.contains("403")),
        "{foreign:?}"
    );
    let own = websocket(&dev, Some(&dev.base), json!({})).await;
    assert_eq!(own, Ok("connection_ack".to_owned()));

    // The old system's worker: no body, no content type, no token.
    let task = TaskId::for_task(job, 0);
    let mut status = StatusCode::NOT_FOUND;
    for _ in 0..100 {
        status = dev
            .http
            .post(dev.url(&format!("/api/v1/tasks/{task}/running")))
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn serve_refuses_a_public_listen_without_tokens() {
    let database = format!(
        "sqlite:{}",
        shoal_infra::testing::temp_sqlite_path().display()
    );
    let listen = format!("0.0.0.0:{}", free_port());
    let output = shoal(
        &["serve", "--listen", &listen, "--database-url", &database],
        None,
    )
    .output()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--auth tokens") && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
}
