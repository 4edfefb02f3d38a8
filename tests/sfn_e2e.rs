//! End-to-end test of the Step Functions driver through the `shoal` binary, as a user tries it:
//! `shoal sfn init` against a moto_server, `shoal dev --driver stepfunctions ...`, a job
//! submitted over GraphQL, its execution on the job, and `shoal sfn history`.
//!
//! Skipped without `moto_server`, unless `SHOAL_REQUIRE_MOTO=1`. The moto_server is the test's
//! own (moto runs one execution per process).

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use shoal_infra::testing::{own_moto, sqs_queue_name};

use support::{Dev, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sfn_init_then_dev_runs_a_job_through_an_execution() {
    let Some(moto) = tokio::task::spawn_blocking(own_moto).await.expect("moto") else {
        return;
    };
    let name = sqs_queue_name("e2e");
    let init = run(&["sfn", "init", "--name", &name], Some(&moto));
    let flags = String::from_utf8(init.stdout).expect("UTF-8");
    let flags: Vec<&str> = flags
        .lines()
        .last()
        .expect("the options on stdout")
        .split_whitespace()
        .collect();
    assert_eq!(flags[..2], ["--driver", "stepfunctions"], "{flags:?}");

    let database_url = format!(
        "sqlite:{}",
        shoal_infra::testing::temp_sqlite_path().display()
    );
    let mut args = flags.clone();
    args.extend(["--sfn-wait-seconds", "1", "--sfn-heartbeat-seconds", "20"]);
    let dev = Dev::start(&database_url, Some(&moto), &args).await;

    let (job, _) = dev
        .submit_job(json!({ "jobType": "noop", "totalTasks": 5 }))
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = dev.job_status(job).await;
        if status.as_deref() == Some("COMPLETED") {
            break;
        }
        assert!(Instant::now() < deadline, "job {job} is {status:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let data = dev
        .graphql(
            "query($id: ID!) { job(id: $id) { execution { arn consoleUrl currentState } } }",
            json!({ "id": job.to_string() }),
        )
        .await;
    let execution = &data["job"]["execution"];
    let arn = execution["arn"].as_str().expect("an execution").to_owned();
    assert!(arn.ends_with(&format!(":{name}:{job}")), "{arn}");
    assert!(
        execution["consoleUrl"]
            .as_str()
            .is_some_and(|url| url.contains("console.aws.amazon.com") && url.ends_with(&arn)),
        "{execution}"
    );

    // The execution ends right after the answer that completed the job.
    let deadline = Instant::now() + Duration::from_secs(30);
    let history = loop {
        let output = run(&["sfn", "history", &arn], Some(&moto));
        let history = String::from_utf8(output.stdout).expect("UTF-8");
        if history.contains("SUCCEEDED") {
            break history;
        }
        assert!(Instant::now() < deadline, "{history}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for state in [
        "CreateTasks",
        "EnqueueTasks",
        "Monitor",
        "CompleteJob",
        "Completed",
    ] {
        assert!(history.contains(state), "{state} in\n{history}");
    }
}
