//! End-to-end tests of Shoal on AWS SQS (a `moto_server` on loopback, one per test binary,
//! from `shoal_infra::testing`), through the `shoal` binary as a user runs it: `shoal sqs init`,
//! `shoal dev --queue <url>`, separate `shoal worker --queue <url>` processes, GraphQL over
//! HTTP, the dead-letter CLI, and the event log checked afterwards.
//!
//! The event log is Postgres when `SHOAL_TEST_DATABASE_URL` is set (required when
//! `SHOAL_REQUIRE_POSTGRES=1`), else a SQLite file. SQS tests are skipped without
//! `moto_server`, unless `SHOAL_REQUIRE_MOTO=1`. moto is slow: message counts stay small.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_domain::{JobId, TaskId};
use shoal_infra::queue::{SqsQueue, TaskQueue, dead_letter_queue_url};
use shoal_infra::testing::{Moto, fresh_sqs_queue, moto, sqs_queue_name};

use support::{
    Dev, Process, count, flaky_program, free_port, job_events, run, task_events, temp_path, types,
    wait_until,
};

// ---------------------------------------------------------------------------------------------
// Harness

/// The GraphQL and metrics client of these tests, on top of the shared `shoal dev`.
impl Dev {
    async fn submit(&self, input: Value) -> JobId {
        self.submit_job(input).await.0
    }

    /// The job's status as the read side shows it; a job the projector has not reached yet
    /// (a few milliseconds after its submission) has none.
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

    async fn dead_letters(&self, job: Option<JobId>) -> Vec<Value> {
        let data = self
            .graphql(
                "query($job: ID) { deadLetters(jobId: $job) { id jobId taskId reason deadLetteredAt bodyPreview } }",
                json!({ "job": job.map(|j| j.to_string()) }),
            )
            .await;
        data["deadLetters"].as_array().expect("a list").clone()
    }

    async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("a text body")
    }
}

/// The event log of the test: Postgres when configured, else a SQLite file.
async fn database_url() -> String {
    match shoal_infra::testing::fresh_postgres_url().await {
        Some(url) => url,
        None => format!(
            "sqlite:{}",
            shoal_infra::testing::temp_sqlite_path().display()
        ),
    }
}

/// A queue of the test's own and its URL, or `None` (skipped) without moto.
async fn sqs_queue(test: &str, max_receives: u32) -> Option<(&'static Moto, SqsQueue)> {
    let queue = fresh_sqs_queue(test, max_receives).await?;
    Some((moto().expect("moto runs"), queue))
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_init_creates_the_queue_and_its_dlq_and_prints_the_url() {
    let Some(moto) = moto() else {
        return;
    };
    let name = sqs_queue_name("init");
    let output = run(
        &["sqs", "init", "--name", &name, "--max-receives", "3"],
        Some(moto),
    );
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let url = stdout.lines().last().expect("a line").trim().to_owned();
    assert!(url.starts_with(moto.endpoint()), "{stdout}");
    assert!(url.ends_with(&format!("/{name}")), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--queue"), "a hint on stderr: {stderr}");
    let dlq = dead_letter_queue_url(&moto.client(), &url).await.unwrap();
    assert!(dlq.is_some_and(|dlq| dlq.ends_with(&format!("/{name}-dlq"))));

    // Idempotent: the same URL again.
    let again = run(&["sqs", "init", "--name", &name], Some(moto));
    let again = String::from_utf8(again.stdout).expect("UTF-8");
    assert_eq!(again.lines().last().map(str::trim), Some(url.as_str()));
}

/// Three `shoal worker` processes on one SQS queue run a job; one is SIGKILLed mid-task and its
/// task is redelivered after the visibility timeout and completed once; a poison message lands
/// in the DLQ while the workers keep going. Prints the SQS calls per task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_survive_a_killed_worker_and_a_poison_message() {
    let Some((moto, queue)) = sqs_queue("three-workers", 5).await else {
        return;
    };
    let url = database_url().await;
    let queue_url = queue.queue_url().to_owned();
    let dev = Dev::start(&url, Some(moto), &["--workers", "0", "--queue", &queue_url]).await;

    queue
        .send_raw(
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
            1,
            "{ this is not a task",
        )
        .await
        .unwrap();
    let logs: Vec<PathBuf> = (0..3).map(|i| temp_path(&format!("worker{i}"))).collect();
    let mut workers: Vec<Process> = (0..3)
        .map(|i| {
            let id = format!("w{i}");
            Process::start(
                &[
                    "worker",
                    "--database-url",
                    &url,
                    "--queue",
                    &queue_url,
                    "--concurrency",
                    "2",
                    "--visibility-timeout-seconds",
                    "3",
                    "--grace-period-seconds",
                    "10",
                    "--worker-id",
                    &id,
                ],
                Some(moto),
                Some(&logs[i]),
            )
        })
        .collect();

    let tasks = 30;
    let job = dev
        .submit(json!({
            "jobType": "io_bound",
            "totalTasks": tasks,
            "parameters": { "work_duration_seconds": 0.5 },
        }))
        .await;

    // Kill w0 while it runs a task.
    let running_on_w0 = |url: String| async move {
        task_events(&url, job, tasks)
            .await
            .into_iter()
            .position(|events| {
                events.last().is_some_and(|e| {
                    e.event_type == "TaskStarted" && e.data_json()["worker"] == "w0"
                })
            })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed_task = loop {
        if let Some(index) = running_on_w0(url.clone()).await {
            break index;
        }
        assert!(Instant::now() < deadline, "w0 never ran a task");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    workers[0].signal("-KILL");
    assert!(!workers[0].wait_exit(Duration::from_secs(10)).await);

    dev.wait_for_status(job, "COMPLETED", Duration::from_secs(120))
        .await;
    let all = task_events(&url, job, tasks).await;
    for (index, events) in all.iter().enumerate() {
        assert_eq!(
            count(events, "TaskCompleted"),
            1,
            "task {index}: {:?}",
            types(events)
        );
        assert_eq!(count(events, "TaskFailed"), 0, "task {index}");
    }
    let killed = &all[killed_task];
    assert!(
        killed
            .iter()
            .any(|e| e.event_type == "TaskStarted" && e.data_json()["worker"] == "w0"),
        "{:?}",
        types(killed)
    );

    // The poison message is in the DLQ, with its reason; the workers kept going.
    let letters = dev.dead_letters(None).await;
    assert!(
        letters.iter().any(|l| l["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unparseable"))
            && l["bodyPreview"] == "{ this is not a task"),
        "{letters:?}"
    );
    let metrics = dev.metrics().await;
    assert!(metrics.contains("shoal_queue_messages "), "{metrics}");
    assert!(
        metrics.contains("shoal_queue_depth{state=\"dead_lettered\"}"),
        "{metrics}"
    );

    // Stop the others; each reports its SQS calls.
    for worker in &workers[1..] {
        worker.signal("-TERM");
    }
    for worker in &mut workers[1..] {
        assert!(worker.wait_exit(Duration::from_secs(30)).await);
    }
    for log in &logs[1..] {
        let text = std::fs::read_to_string(log).expect("reading a worker log");
        let line = text
            .lines()
            .find(|l| l.starts_with("SQS calls:"))
            .unwrap_or_else(|| panic!("no SQS calls line in\n{text}"));
        eprintln!("{} {line}", log.display());
        let _ = std::fs::remove_file(log);
    }
}

/// Tasks that fail for good end in the DLQ (FAILED job); once their handler works, a redrive
/// over GraphQL brings the job to COMPLETED, and the task history shows it. A poison message
/// without a task is left in the DLQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_redrive_brings_dead_lettered_tasks_to_completion() {
    let Some((moto, queue)) = sqs_queue("redrive", 5).await else {
        return;
    };
    let queue_url = queue.queue_url().to_owned();
    redrive_scenario(Some((moto, &queue_url)), Some(&queue)).await;
}

/// The same on the SQL queue, through the `shoal dead-letters` CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_redrive_brings_dead_lettered_tasks_to_completion() {
    redrive_scenario(None, None).await;
}

async fn redrive_scenario(sqs: Option<(&Moto, &str)>, queue: Option<&SqsQueue>) {
    let url = database_url().await;
    let moto = sqs.map(|(moto, _)| moto);
    let queue_arg = sqs.map_or("sql", |(_, url)| url);
    let flag = temp_path("flag");
    let program = flaky_program(&flag);
    let exec = format!("flaky={}", program.display());
    let dev = Dev::start(
        &url,
        moto,
        &["--workers", "2", "--exec", &exec, "--queue", queue_arg],
    )
    .await;
    if let Some(queue) = queue {
        queue
            .send_raw(uuid::Uuid::now_v7(), uuid::Uuid::now_v7(), 1, "poison")
            .await
            .unwrap();
    }
    let job = dev
        .submit(json!({
            "jobType": "exec",
            "totalTasks": 3,
            "maxAttempts": 1,
            "parameters": { "command": "flaky" },
        }))
        .await;
    dev.wait_for_status(job, "FAILED", Duration::from_secs(60))
        .await;
    wait_until(
        "every task dead-lettered",
        Duration::from_secs(30),
        || async {
            task_events(&url, job, 3)
                .await
                .iter()
                .all(|events| count(events, "TaskDeadLettered") == 1)
        },
    )
    .await;

    let task_ids: Vec<String> = (0..3)
        .map(|i| TaskId::for_task(job, i).to_string())
        .collect();
    let cli = |command: &str| {
        let job = job.to_string();
        let output = run(
            &[
                "dead-letters",
                command,
                "--database-url",
                &url,
                "--queue",
                queue_arg,
                "--job",
                &job,
            ],
            moto,
        );
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    if sqs.is_some() {
        let letters = dev.dead_letters(Some(job)).await;
        assert_eq!(letters.len(), 3, "{letters:?}");
        for letter in &letters {
            assert_eq!(letter["jobId"], job.to_string());
            assert!(task_ids.iter().any(|t| letter["taskId"] == *t), "{letter}");
            assert!(!letter["reason"].as_str().unwrap_or_default().is_empty());
        }
        // Make sure the poison message is in the DLQ too.
        wait_until(
            "the poison message dead-lettered",
            Duration::from_secs(30),
            || async { queue.unwrap().depth().await.unwrap().dead_lettered >= 4 },
        )
        .await;
        // A listing hides SQS dead letters for a second (SqsQueue::PEEK_VISIBILITY).
        tokio::time::sleep(SqsQueue::PEEK_VISIBILITY * 2).await;
    } else {
        let listed = cli("list");
        assert_eq!(listed.lines().count(), 3, "{listed}");
        for task in &task_ids {
            assert!(listed.contains(task.as_str()), "{task} not in\n{listed}");
        }
    }

    std::fs::write(&flag, "").expect("creating the flag");
    if sqs.is_some() {
        let data = dev
            .graphql(
                "mutation { redriveDeadLetters { redriven resent removed skipped } }",
                json!({}),
            )
            .await;
        let result = &data["redriveDeadLetters"];
        assert_eq!(result["redriven"], 3, "{result}");
        assert_eq!(result["removed"], 3, "{result}");
        assert_eq!(result["skipped"], 1, "the poison message is left: {result}");
    } else {
        let out = cli("redrive");
        assert!(out.contains("redriven 3"), "{out}");
        assert!(out.contains("removed 3"), "{out}");
    }
    dev.wait_for_status(job, "COMPLETED", Duration::from_secs(60))
        .await;

    for events in task_events(&url, job, 3).await {
        let history = types(&events);
        let dead = history.iter().position(|t| *t == "TaskDeadLettered");
        let retry = events
            .iter()
            .position(|e| e.event_type == "TaskRetryScheduled" && e.data_json()["manual"] == true);
        let completed = history.iter().position(|t| *t == "TaskCompleted");
        assert!(
            matches!((dead, retry, completed), (Some(d), Some(r), Some(c)) if d < r && r < c),
            "{history:?}"
        );
        assert_eq!(count(&events, "TaskCompleted"), 1, "{history:?}");
    }
    assert_eq!(
        job_events(&url, job).await,
        [
            "JobSubmitted",
            "TasksCreated",
            "JobFailed",
            "JobRetryRequested",
            "JobCompleted"
        ]
    );
    if sqs.is_some() {
        tokio::time::sleep(SqsQueue::PEEK_VISIBILITY * 2).await;
        assert!(dev.dead_letters(Some(job)).await.is_empty());
        let left = dev.dead_letters(None).await;
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0]["taskId"].is_string(), "send_raw names a task");
    } else {
        assert_eq!(cli("list").lines().count(), 0);
    }
    let _ = std::fs::remove_file(flag);
    let _ = std::fs::remove_file(program);
}

/// SIGTERM on a worker long-polling SQS: it stops at once (no new receive), releases what it
/// cannot finish in its grace period, and another worker completes those tasks once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_worker_over_sqs() {
    let Some((moto, queue)) = sqs_queue("sigterm", 5).await else {
        return;
    };
    let url = database_url().await;
    let queue_url = queue.queue_url().to_owned();
    let dev = Dev::start(&url, Some(moto), &["--workers", "0", "--queue", &queue_url]).await;
    let worker_args = |grace: &'static str| {
        vec![
            "worker",
            "--database-url",
            url.as_str(),
            "--queue",
            queue_url.as_str(),
            "--concurrency",
            "4",
            "--grace-period-seconds",
            grace,
            "--visibility-timeout-seconds",
            "30",
        ]
    };

    // An idle worker (in a 20 s long poll) stops at once.
    let mut idle = Process::start(&worker_args("10"), Some(moto), None);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopping = Instant::now();
    idle.signal("-TERM");
    assert!(idle.wait_exit(Duration::from_secs(10)).await);
    assert!(stopping.elapsed() < Duration::from_secs(5));

    let job = dev
        .submit(json!({
            "jobType": "io_bound",
            "totalTasks": 2,
            "parameters": { "work_duration_seconds": 4 },
        }))
        .await;
    let mut worker = Process::start(&worker_args("1"), Some(moto), None);
    wait_until("both tasks started", Duration::from_secs(60), || async {
        task_events(&url, job, 2)
            .await
            .iter()
            .all(|events| count(events, "TaskStarted") == 1)
    })
    .await;
    let stopping = Instant::now();
    worker.signal("-TERM");
    assert!(worker.wait_exit(Duration::from_secs(10)).await);
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "the worker waited for its tasks"
    );
    // Released at once (visibility 0), not after the 30 s visibility timeout.
    let _second = Process::start(&worker_args("10"), Some(moto), None);
    dev.wait_for_status(job, "COMPLETED", Duration::from_secs(25))
        .await;
    for events in task_events(&url, job, 2).await {
        assert_eq!(count(&events, "TaskCompleted"), 1);
        assert_eq!(
            count(&events, "TaskStarted"),
            1,
            "a released attempt is taken over, not restarted"
        );
    }
}

/// `shoal orchestrator` serves the queue depth in the Prometheus text format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_serves_queue_metrics() {
    let url = format!(
        "sqlite:{}",
        shoal_infra::testing::temp_sqlite_path().display()
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let _orchestrator = Process::start(
        &[
            "orchestrator",
            "--database-url",
            &url,
            "--metrics-listen",
            &listen,
        ],
        None,
        None,
    );
    let http = reqwest::Client::new();
    let metrics_url = format!("http://{listen}/metrics");
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        if let Ok(response) = http.get(&metrics_url).send().await {
            assert!(
                response.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/plain; version=0.0.4")
            );
            break response.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "no metrics endpoint");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for line in [
        "shoal_queue_up 1",
        "shoal_queue_depth{state=\"visible\"} 0",
        "shoal_queue_depth{state=\"in_flight\"} 0",
        "shoal_queue_depth{state=\"delayed\"} 0",
        "shoal_queue_depth{state=\"dead_lettered\"} 0",
        "shoal_queue_messages 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
}
