//! A `moto_server` on a loopback port as SQS and Step Functions, for tests of this and other
//! crates (feature `testing`). One server per test process, started at first use, with its
//! real ASL interpreter switched on (`execute_state_machine`); each test creates queues and
//! state machines of its own ([`fresh_sqs_queue`], [`fresh_step_functions`]).
//!
//! Without `moto_server` on the PATH the SQS tests are skipped with a note, unless
//! `SHOAL_REQUIRE_MOTO=1` (CI, `scripts/test.sh`), which makes them fail. moto is slow (a few
//! hundred messages a second): keep message counts small.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};

use crate::queue::{SqsQueue, init_queues};
use crate::stepfunctions::{StepFunctions, init_state_machine};

/// Set to `1` to make SQS tests fail, rather than skip, without `moto_server`.
pub const REQUIRE_MOTO_ENV: &str = "SHOAL_REQUIRE_MOTO";

/// The region and static credentials the tests use with moto.
pub const MOTO_REGION: &str = "us-east-1";
const MOTO_KEY: &str = "test";

/// The moto_server of this test process. It runs under a small shell that kills it when its
/// standard input closes, which happens when the test process exits however it exits (a
/// `static` is never dropped, so `Drop` alone would leave it running).
#[derive(Debug)]
pub struct Moto {
    endpoint: String,
    shell: Mutex<(Child, ChildStdin)>,
}

static MOTO: OnceLock<Option<Moto>> = OnceLock::new();

/// The moto_server of this test process, started at the first call; `None` (with a note on
/// stderr) when `moto_server` is not installed. Panics when it is required
/// ([`REQUIRE_MOTO_ENV`]) but missing, or does not start.
pub fn moto() -> Option<&'static Moto> {
    MOTO.get_or_init(start_moto).as_ref()
}

fn start_moto() -> Option<Moto> {
    if !on_path("moto_server") {
        let hint = "moto_server is not on the PATH: install with pip install 'moto[server]'";
        if std::env::var(REQUIRE_MOTO_ENV).is_ok_and(|v| v == "1") {
            panic!("{REQUIRE_MOTO_ENV}=1 but {hint}");
        }
        eprintln!("skipped: SQS test ({hint})");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port();
    let mut shell = Command::new("sh")
        .arg("-c")
        .arg(r#"moto_server -H 127.0.0.1 -p "$MOTO_PORT" >/dev/null 2>&1 & m=$!; read -r _; kill "$m"; wait "$m""#)
        .env("MOTO_PORT", port.to_string())
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh runs");
    let stdin = shell.stdin.take().expect("a piped stdin");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = shell.try_wait() {
            panic!("moto_server exited at start-up: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "moto_server did not answer on port {port} within a minute"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Executions stay RUNNING forever unless moto's ASL interpreter is switched on.
    crate::stepfunctions::moto_execute_state_machines(&format!("127.0.0.1:{port}"))
        .unwrap_or_else(|e| panic!("moto refused to execute state machines: {e}"));
    Some(Moto {
        endpoint: format!("http://127.0.0.1:{port}"),
        shell: Mutex::new((shell, stdin)),
    })
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Ok(mut shell) = self.shell.lock() {
            let _ = writeln!(shell.1);
            let _ = shell.0.wait();
        }
    }
}

impl Moto {
    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A client of this moto, built explicitly (the process environment is left alone).
    pub fn client(&self) -> aws_sdk_sqs::Client {
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(MOTO_REGION))
            .credentials_provider(Credentials::new(
                MOTO_KEY,
                MOTO_KEY,
                None,
                None,
                "shoal-tests",
            ))
            .endpoint_url(&self.endpoint)
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }

    /// A Step Functions client of this moto.
    pub fn sfn_client(&self) -> aws_sdk_sfn::Client {
        let config = aws_sdk_sfn::Config::builder()
            .behavior_version(aws_sdk_sfn::config::BehaviorVersion::latest())
            .region(aws_sdk_sfn::config::Region::new(MOTO_REGION))
            .credentials_provider(aws_sdk_sfn::config::Credentials::new(
                MOTO_KEY,
                MOTO_KEY,
                None,
                None,
                "shoal-tests",
            ))
            .endpoint_url(&self.endpoint)
            .build();
        aws_sdk_sfn::Client::from_conf(config)
    }

    /// The AWS environment that points a child process (`shoal ... --queue <url>`) at this
    /// moto through the standard AWS chain.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", MOTO_REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", MOTO_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", MOTO_KEY.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// A queue name of the test's own: `<test>-<random>`.
pub fn sqs_queue_name(test: &str) -> String {
    format!("{test}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]).replace('_', "-")
}

/// A queue and DLQ of this test's own (`init_queues` with `max_receives`), or `None`
/// (skipped) without moto.
pub async fn fresh_sqs_queue(test: &str, max_receives: u32) -> Option<SqsQueue> {
    let moto = moto()?;
    let client = moto.client();
    let (queue_url, dlq_url) = init_queues(&client, &sqs_queue_name(test), max_receives)
        .await
        .unwrap_or_else(|e| panic!("cannot create test SQS queues: {e}"));
    Some(SqsQueue::new(client, queue_url, Some(dlq_url)))
}

/// A moto_server of the caller's own (its ASL interpreter on), or `None` (with a note) without
/// moto; it stops when dropped. For Step Functions tests: moto runs one execution per process.
pub fn own_moto() -> Option<Moto> {
    start_moto()
}

/// The role moto's state machines are created with (moto does not check it).
pub const MOTO_SFN_ROLE: &str = "arn:aws:iam::123456789012:role/shoal-step-functions";

/// A moto_server of this test's own, with a state machine and control queue
/// (`init_state_machine`), or `None` (skipped) without moto. Keep the [`Moto`] for as long as
/// the test runs: dropping it stops the server.
///
/// A server per test because moto (5.2) runs one execution per server: once an execution
/// exists, `StartExecution` answers HTTP 500 (it deep-copies the backend, the running
/// executions' locks included).
pub async fn fresh_step_functions(test: &str) -> Option<(StepFunctions, Moto)> {
    let moto = tokio::task::spawn_blocking(start_moto)
        .await
        .expect("starting moto_server")?;
    let (sfn, sqs) = (moto.sfn_client(), moto.client());
    let setup = init_state_machine(&sfn, &sqs, &sqs_queue_name(test), MOTO_SFN_ROLE)
        .await
        .unwrap_or_else(|e| panic!("cannot create the test state machine: {e}"));
    Some((
        StepFunctions::new(sfn, sqs, setup.state_machine_arn, setup.control_queue_url),
        moto,
    ))
}
