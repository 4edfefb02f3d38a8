//! Fair share and priorities on the SQL queue, end to end through the `shoal` binary: `shoal
//! dev` with its in-process workers, GraphQL over HTTP, and the event log read back for the
//! order in which tasks started. Each test runs on SQLite and on Postgres (required when
//! `SHOAL_REQUIRE_POSTGRES=1`).

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use shoal_domain::JobId;
use shoal_infra::eventlog::{LogPosition, RecordedEvent};

use support::{Dev, for_each_backend, task_events, wait_until};

for_each_backend!(
    a_small_job_is_not_stuck_behind_a_big_one,
    priorities_are_honoured_and_a_change_takes_effect_while_running,
);

/// `io_bound` tasks that each wait `seconds`.
fn io_job(tasks: u32, seconds: f64, priority: i32) -> Value {
    json!({
        "jobType": "io_bound",
        "totalTasks": tasks,
        "parameters": { "work_duration_seconds": seconds },
        "priority": priority,
    })
}

/// Every event of the job's tasks, flattened.
async fn events_of(url: &str, job: JobId, tasks: u32) -> Vec<RecordedEvent> {
    task_events(url, job, tasks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The log positions of the job's `TaskStarted` events, in log order.
async fn starts(url: &str, job: JobId, tasks: u32) -> Vec<LogPosition> {
    let mut positions: Vec<LogPosition> = events_of(url, job, tasks)
        .await
        .into_iter()
        .filter(|e| e.event_type == "TaskStarted")
        .map(|e| e.log_position)
        .collect();
    positions.sort_unstable();
    positions
}

/// How many of the job's tasks completed, from the read model (cheap to poll).
async fn completed(dev: &Dev, job: JobId) -> u64 {
    let data = dev
        .graphql(
            "query($id: ID!) { job(id: $id) { completedTasks } }",
            json!({ "id": job.to_string() }),
        )
        .await;
    data["job"]["completedTasks"].as_u64().unwrap_or(0)
}

/// The scenario: a job of thousands of tasks is running when a job of 3 tasks is
/// submitted. First in, first out, the small job would wait for the whole big one (about 12
/// seconds here); with fair share its tasks take the next free workers.
async fn a_small_job_is_not_stuck_behind_a_big_one(url: &str) {
    let dev = &Dev::start(url, None, &["--workers", "8"]).await;
    let (big, _) = dev.submit_job(io_job(2_000, 0.05, 0)).await;
    wait_until(
        "the big job is under way",
        Duration::from_secs(60),
        || async move { completed(dev, big).await >= 50 },
    )
    .await;

    let (small, _) = dev.submit_job(io_job(3, 0.0, 0)).await;
    wait_until(
        "the small job completes",
        Duration::from_secs(30),
        || async move { completed(dev, small).await == 3 },
    )
    .await;

    let database = shoal_infra::db::Database::connect(url).await.unwrap();
    let submitted = database
        .event_log()
        .read_stream(&small.stream_id(), 0)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == "JobSubmitted")
        .unwrap();
    database.close().await;
    let done = events_of(url, small, 3)
        .await
        .into_iter()
        .filter(|e| e.event_type == "TaskCompleted")
        .max_by_key(|e| e.log_position)
        .unwrap();
    let took = (done.recorded_at - submitted.recorded_at)
        .to_std()
        .unwrap_or_default();
    eprintln!("the 3-task job took {took:?} from its submission to its last task's completion");
    // What the small job waited behind: the big job's tasks started in the meantime. First in,
    // first out, that would be all of the ~1,900 left; with fair share, about what the 8 slots
    // and the worker's buffer hold when it arrives. Counted from the log, so a slow machine
    // does not change it.
    let overtaken = events_of(url, big, 2_000)
        .await
        .iter()
        .filter(|e| {
            e.event_type == "TaskStarted"
                && e.log_position > submitted.log_position
                && e.log_position < done.log_position
        })
        .count();
    eprintln!("{overtaken} of the big job's tasks started meanwhile");
    assert!(
        overtaken < 200,
        "{overtaken} of the big job's tasks started between the small job's submission and its end"
    );
    // And in time, with room for a loaded machine (typically 0.15-0.4 s: docs/fairness.md).
    assert!(
        took < Duration::from_millis(2_000),
        "the 3-task job took {took:?} from its submission to its last task's completion"
    );
    let big_done = completed(dev, big).await;
    assert!(
        big_done < 2_000,
        "the big job should still be running, but all {big_done} tasks completed"
    );
}

/// A job of higher priority goes first from its submission; raising a running job's priority
/// puts its remaining tasks before the others'.
async fn priorities_are_honoured_and_a_change_takes_effect_while_running(url: &str) {
    const TASKS: u32 = 150;
    const SLOTS: usize = 4;
    // No local buffer: the order under test is the queue's. A worker's buffer (`--prefetch`)
    // holds messages it has already claimed, which run before a job of higher priority that
    // arrives after them (docs/fairness.md).
    let dev = &Dev::start(url, None, &["--workers", "4", "--prefetch", "0"]).await;
    let (a, _) = dev.submit_job(io_job(TASKS, 0.02, 0)).await;
    let (b, _) = dev.submit_job(io_job(TASKS, 0.02, 0)).await;
    wait_until(
        "both jobs are under way",
        Duration::from_secs(60),
        || async move {
            starts(url, a, TASKS).await.len() >= 10 && starts(url, b, TASKS).await.len() >= 10
        },
    )
    .await;

    // B goes first from now on.
    let data = dev
        .graphql(
            "mutation($id: ID!) { setJobPriority(jobId: $id, priority: 10) { priority } }",
            json!({ "id": b.to_string() }),
        )
        .await;
    assert_eq!(data["setJobPriority"]["priority"], 10);
    // A job submitted now with a higher priority still goes before B.
    let (c, _) = dev.submit_job(io_job(20, 0.02, 20)).await;

    wait_until(
        "every job completes",
        Duration::from_secs(120),
        || async move {
            completed(dev, a).await == u64::from(TASKS)
                && completed(dev, b).await == u64::from(TASKS)
                && completed(dev, c).await == 20
        },
    )
    .await;

    let database = shoal_infra::db::Database::connect(url).await.unwrap();
    let changed = database
        .event_log()
        .read_stream(&b.stream_id(), 0)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == "JobPriorityChanged")
        .expect("the change is in B's history")
        .log_position;
    database.close().await;
    let (a_starts, b_starts, c_starts) = (
        starts(url, a, TASKS).await,
        starts(url, b, TASKS).await,
        starts(url, c, 20).await,
    );
    let between = |starts: &[LogPosition], from: LogPosition, to: LogPosition| {
        starts.iter().filter(|p| **p > from && **p < to).count()
    };

    // After the change, A started only what workers had already taken (at most a batch of
    // free slots) before B's last task.
    let b_last = *b_starts.last().unwrap();
    let b_after_change = between(&b_starts, changed, b_last) + 1;
    assert!(b_after_change > 50, "B had {b_after_change} tasks left");
    let a_meanwhile = between(&a_starts, changed, b_last);
    assert!(
        a_meanwhile <= 2 * SLOTS,
        "A started {a_meanwhile} tasks while B, of higher priority, had tasks waiting"
    );
    // C, of the highest priority, ran as one block: B did not start more than what workers had
    // taken before C's tasks were queued.
    let (c_first, c_last) = (c_starts[0], *c_starts.last().unwrap());
    let b_during_c = between(&b_starts, c_first, c_last);
    assert!(
        b_during_c <= 2 * SLOTS,
        "B started {b_during_c} tasks while C, of higher priority, had tasks waiting"
    );
}
