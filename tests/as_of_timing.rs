//! How long `job(id, asOf:)` and `job { timeline }` take on a big job: a timing print, not a
//! pass/fail test (ignored by default; figures in `docs/dashboard.md`).
//!
//! ```text
//! cargo test --test as_of_timing -- --ignored --nocapture
//! ```
//!
//! - `SHOAL_TIMING_TASKS`: the job's tasks (default 100,000; `noop`, run by 8 workers);
//! - `SHOAL_TIMING_DB`: a SQLite file to keep the job in: it is made once (by the binary timed
//!   first: make it with the older build, whose migrations the newer one extends), and later runs
//!   reuse it (so two builds are timed on the same events);
//! - `SHOAL_TIMING_BIN`: the `shoal` binary to time (default this build's), e.g. a build of
//!   the previous commit, for a before/after on the same database.
//!
//! Before timing, the binary rebuilds the jobs projection of the database (`shoal projector
//! rebuild jobs`, timed too): a database made by an older build has no attempts of the job in
//! `task_attempts` (ADR 18) until then, and its timeline would be folded from the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use support::{free_port, wait_until};

struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(bin: &str, db: &str, workers: &str) -> Server {
        let listen = format!("127.0.0.1:{}", free_port());
        let child = Command::new(bin)
            .args([
                "dev",
                "--listen",
                &listen,
                "--database-url",
                db,
                "--workers",
                workers,
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("starting shoal");
        let server = Server {
            child,
            base: format!("http://{listen}"),
            http: reqwest::Client::new(),
        };
        wait_until("shoal to listen", Duration::from_secs(120), || async {
            server
                .http
                .get(format!("{}/graphql", server.base))
                .send()
                .await
                .is_ok()
        })
        .await;
        server
    }

    async fn graphql(&self, query: &str, variables: Value) -> Value {
        let response: Value = self
            .http
            .post(format!("{}/graphql", self.base))
            .timeout(Duration::from_secs(600))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(response.get("errors").is_none(), "{response}");
        response["data"].clone()
    }
}

#[tokio::test]
#[ignore = "a timing print for docs/dashboard.md: run it by hand"]
async fn as_of_and_timeline_of_a_big_job() {
    let tasks: u32 = std::env::var("SHOAL_TIMING_TASKS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(100_000);
    let bin = std::env::var("SHOAL_TIMING_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_shoal").to_owned());
    let path = std::env::var("SHOAL_TIMING_DB")
        .map(PathBuf::from)
        .unwrap_or_else(|_| support::temp_path("as-of-timing").with_extension("db"));
    let db = format!("sqlite:{}", path.display());
    let marker = path.with_extension("job");

    if !marker.exists() {
        let server = Server::start(&bin, &db, "8").await;
        let started = Instant::now();
        let data = server
            .graphql(
                "mutation($n: Int!) { submitJob(input: {jobType: \"noop\", totalTasks: $n}) { id } }",
                json!({ "n": tasks }),
            )
            .await;
        let id = data["submitJob"]["id"].as_str().unwrap().to_owned();
        wait_until(
            "the big job to complete",
            Duration::from_secs(3600),
            || async {
                server
                    .graphql(
                        "query($id: ID!) { job(id: $id) { status } }",
                        json!({ "id": &id }),
                    )
                    .await["job"]["status"]
                    == "COMPLETED"
            },
        )
        .await;
        eprintln!(
            "made a job of {tasks} tasks in {:?} ({})",
            started.elapsed(),
            path.display()
        );
        std::fs::write(&marker, &id).unwrap();
    }
    let id = std::fs::read_to_string(&marker).unwrap();

    let started = Instant::now();
    let status = Command::new(&bin)
        .args(["projector", "rebuild", "jobs", "--database-url", &db])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .status()
        .expect("rebuilding the jobs projection");
    assert!(status.success());
    eprintln!(
        "{bin}: rebuilt the jobs projection in {:?}",
        started.elapsed()
    );

    let server = Server::start(&bin, &db, "0").await;
    let job = server
        .graphql(
            "query($id: ID!) { job(id: $id) { completedAt startedAt } }",
            json!({ "id": id }),
        )
        .await;
    let ended = job["job"]["completedAt"].as_str().unwrap().to_owned();
    // Three runs each: the first, and the median.
    let timed = |query: &'static str, variables: Value| {
        let server = &server;
        async move {
            let mut runs = Vec::new();
            let mut answer = Value::Null;
            for _ in 0..3 {
                let started = Instant::now();
                answer = server.graphql(query, variables.clone()).await;
                runs.push(started.elapsed());
            }
            let first = runs[0];
            runs.sort();
            (first, runs[1], answer)
        }
    };
    let (_, as_of, answer) = timed(
        "query($id: ID!, $at: DateTime) { job(id: $id, asOf: $at) { completedTasks
           tasks(first: 50) { edges { node { index status } } } } }",
        json!({ "id": id, "at": ended }),
    )
    .await;
    assert_eq!(answer["job"]["completedTasks"], tasks);
    let (timeline, again, answer) = timed(
        "query($id: ID!) { job(id: $id) { timeline { aggregated attemptCount
           buckets { attempts } slowest { durationMs } medianMs } } }",
        json!({ "id": id }),
    )
    .await;
    assert_eq!(answer["job"]["timeline"]["attemptCount"], tasks);
    assert_eq!(answer["job"]["timeline"]["aggregated"], true);
    let (by_worker, _, answer) = timed(
        "query($id: ID!) { job(id: $id) { timeline(groupBy: WORKER) { attemptCount
           buckets { attempts } } } }",
        json!({ "id": id }),
    )
    .await;
    assert_eq!(answer["job"]["timeline"]["attemptCount"], tasks);
    eprintln!(
        "{bin}: a job of {tasks} tasks: asOf {as_of:?} (median of 3), timeline {timeline:?} \
         (first), {again:?} (median of 3), by worker {by_worker:?} (first)"
    );
}
