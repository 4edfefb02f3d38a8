//! The harness shared by the end-to-end test binaries (`e2e`, `sqs_e2e`, `rest`): `shoal`
//! processes, a `shoal dev` with an HTTP client, the event log read back, and polling.
//! Each test binary compiles this module on its own and uses only part of it.

// Test support: a setup failure here is a failed test, reported with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_domain::{JobId, TaskId};
use shoal_infra::db::Database;
use shoal_infra::eventlog::RecordedEvent;
use shoal_infra::testing::Moto;

/// A `shoal` process, killed when dropped.
pub struct Process(Child);

impl Process {
    /// Starts `shoal args...` with the AWS environment of `moto`, if any, and stderr to `log`
    /// (else inherited).
    pub fn start(args: &[&str], moto: Option<&Moto>, log: Option<&Path>) -> Process {
        let mut command = shoal(args, moto);
        command.stdin(Stdio::null());
        if let Some(log) = log {
            command.stderr(std::fs::File::create(log).expect("creating the log file"));
        }
        Process(command.spawn().expect("starting shoal"))
    }

    /// Like [`Process::start`] without AWS, with info-level logs (the tests' default is
    /// warnings only) in `log`: for tests that explain a failure with what the process did.
    pub fn start_logging_info(args: &[&str], log: &Path) -> Process {
        let mut command = shoal(args, None);
        command
            .env("RUST_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(log).expect("creating the log file"));
        Process(command.spawn().expect("starting shoal"))
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success());
    }

    /// Sends SIGTERM, as Kubernetes does to a pod it stops.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Waits for the process to exit; returns whether it exited successfully.
    pub async fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().expect("waiting for shoal") {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "shoal did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `shoal args...`, with the AWS environment of `moto`, if any.
pub fn shoal(args: &[&str], moto: Option<&Moto>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    command.args(args).env("RUST_LOG", "warn");
    if let Some(moto) = moto {
        command.envs(moto.env()).env_remove("AWS_PROFILE");
    }
    command
}

/// Runs `shoal args...` to its end.
pub fn run(args: &[&str], moto: Option<&Moto>) -> Output {
    let output = shoal(args, moto).output().expect("running shoal");
    assert!(
        output.status.success(),
        "shoal {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `shoal dev` on a free port, and an HTTP client for it. Each test binary adds its own
/// client methods (GraphQL helpers, REST requests) in an `impl` block or a wrapper.
pub struct Dev {
    _process: Process,
    pub base: String,
    pub http: reqwest::Client,
    pub database_url: String,
}

impl Dev {
    /// `shoal dev --listen <free port> --database-url <database_url> extra...`, with the AWS
    /// environment of `moto`, if any; returns once it listens.
    pub async fn start(database_url: &str, moto: Option<&Moto>, extra: &[&str]) -> Dev {
        // Port 0: `shoal dev` binds a free port and names it in its banner. (A port picked
        // here and bound there could be taken in between by another test's server, which this
        // test would then talk to.)
        let mut args = vec![
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            database_url,
        ];
        args.extend_from_slice(extra);
        let mut command = shoal(&args, moto);
        command.stdin(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting shoal");
        let stderr = child.stderr.take().expect("the piped stderr");
        let (found, listening) = std::sync::mpsc::channel();
        // Passes the process's stderr on, and the address of its banner's first line that
        // names one.
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut found = Some(found);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.trim().strip_prefix("Dashboard:")
                    && let Some(found) = found.take()
                {
                    let _ = found.send(url.trim().trim_end_matches('/').to_owned());
                }
                eprintln!("{line}");
            }
        });
        let process = Process(child);
        // Waited for off the runtime's threads (a blocking receive).
        let base =
            tokio::task::spawn_blocking(move || listening.recv_timeout(Duration::from_secs(60)))
                .await
                .expect("the wait for the banner")
                .expect("shoal dev names where it listens within 60 s");
        let dev = Dev {
            _process: process,
            base,
            http: reqwest::Client::new(),
            database_url: database_url.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while dev.http.get(dev.url("/graphql")).send().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "shoal dev did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        dev
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        let response: Value = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("POST /graphql")
            .json()
            .await
            .expect("a JSON response");
        assert!(
            response.get("errors").is_none(),
            "GraphQL errors: {response}"
        );
        response["data"].clone()
    }

    /// Submits a job over GraphQL; returns its id and the status `submitJob` answered.
    pub async fn submit_job(&self, input: Value) -> (JobId, Value) {
        let data = self
            .graphql(
                "mutation($input: SubmitJobInput!) { submitJob(input: $input) { id status } }",
                json!({ "input": input }),
            )
            .await;
        let id = JobId::parse(data["submitJob"]["id"].as_str().expect("an id")).expect("a job id");
        (id, data["submitJob"]["status"].clone())
    }

    /// The job's status over GraphQL; `None` while `job(id)` is null.
    pub async fn job_status(&self, job: JobId) -> Option<String> {
        let data = self
            .graphql(
                "query($id: ID!) { job(id: $id) { status } }",
                json!({ "id": job.to_string() }),
            )
            .await;
        data["job"]["status"].as_str().map(str::to_owned)
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh event log on `backend`; `None` (skipped) for Postgres when it is not configured.
pub async fn database_url(backend: Backend) -> Option<String> {
    match backend {
        Backend::Sqlite => Some(format!(
            "sqlite:{}",
            shoal_infra::testing::temp_sqlite_path().display()
        )),
        Backend::Postgres => shoal_infra::testing::fresh_postgres_url().await,
    }
}

/// For each `async fn name(url: &str)` of the test file, the tests `sqlite::name` and
/// `postgres::name` (skipped when Postgres is not configured).
#[allow(unused_macros)]
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let url = crate::support::database_url(crate::support::Backend::Sqlite)
                        .await
                        .unwrap();
                    super::$name(&url).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(url) =
                        crate::support::database_url(crate::support::Backend::Postgres).await
                    {
                        super::$name(&url).await;
                    }
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use for_each_backend;

/// The events of every task of `job`, by task index (read per stream: no reader lag).
pub async fn task_events(database_url: &str, job: JobId, tasks: u32) -> Vec<Vec<RecordedEvent>> {
    let database = Database::connect(database_url).await.expect("connecting");
    let log = database.event_log();
    let ids: Vec<String> = (0..tasks)
        .map(|i| TaskId::for_task(job, i).stream_id())
        .collect();
    let mut by_stream: HashMap<String, Vec<RecordedEvent>> = HashMap::new();
    for chunk in ids.chunks(500) {
        for event in log.read_streams(chunk).await.expect("reading task streams") {
            by_stream
                .entry(event.stream_id.clone())
                .or_default()
                .push(event);
        }
    }
    database.close().await;
    ids.iter()
        .map(|id| by_stream.remove(id).unwrap_or_default())
        .collect()
}

/// The event types of the job's stream.
pub async fn job_events(database_url: &str, job: JobId) -> Vec<String> {
    let database = Database::connect(database_url).await.expect("connecting");
    let events = database
        .event_log()
        .read_stream(&job.stream_id(), 0)
        .await
        .expect("reading the job stream");
    database.close().await;
    events.into_iter().map(|e| e.event_type).collect()
}

pub fn count(events: &[RecordedEvent], event_type: &str) -> usize {
    events.iter().filter(|e| e.event_type == event_type).count()
}

pub fn types(events: &[RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

/// A program for the `exec` handler that fails until a flag file exists.
pub fn flaky_program(flag: &Path) -> PathBuf {
    let script = flag.with_extension("sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat >/dev/null\nif [ -f '{}' ]; then echo '{{\"ok\": true}}'; else echo 'not yet' >&2; exit 1; fi\n",
            flag.display()
        ),
    )
    .expect("writing the script");
    let status = Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .expect("chmod");
    assert!(status.success());
    script
}

/// A fresh path in the temporary directory: `shoal-test-<name>-<uuid>`.
pub fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "shoal-test-{name}-{}",
        uuid::Uuid::now_v7().simple()
    ))
}

/// Waits for `condition` (checked every 100 ms), failing with `what` after `within`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
