//! `job(id, asOf:)` against the live projection during a real run: `shoal dev` runs a job with
//! failing (retried, then dead-lettered) and slow tasks; at several instants of the run the
//! test reads the job and its tasks from the read tables, and once the job has ended it asks
//! for the job as of each of those instants, folded from the log. Both must agree, field by
//! field. And the timeline: the same kind of job, run by `shoal dev`'s workers and a second
//! worker process; once it has ended, its timeline read from the attempts table (the live job)
//! must equal the timeline folded from the log (the job as of now): bars, buckets, slowest and
//! percentiles, grouped by task and by worker, over the whole run and a part of it. Runs on
//! SQLite and on Postgres (required when `SHOAL_REQUIRE_POSTGRES=1`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use support::{Dev, Process, for_each_backend, free_port, temp_path};

for_each_backend!(
    as_of_agrees_with_the_live_projection_at_every_sampled_instant,
    the_timeline_from_the_attempts_table_is_the_one_folded_from_the_log,
);

/// What both sides must agree on: every field of the job a dashboard shows, and its tasks.
const JOB: &str = "
query($id: ID!, $asOf: DateTime) {
  job(id: $id, asOf: $asOf) {
    id status totalTasks tasksCreated completedTasks failedTasks runningTasks queuedTasks
    retryingTasks progress createdAt updatedAt startedAt completedAt errorMessage
    tasks(first: 1000) {
      edges { node {
        index status attempt worker result errorMessage createdAt updatedAt startedAt
        completedAt nextAttemptAt processingTimeSeconds deadLettered
      } }
    }
  }
}";

/// An `exec` program: every task sleeps 0.3 s, task 4 sleeps 1.5 s, tasks 0 and 3 fail.
fn slow_and_failing_program() -> PathBuf {
    let script = temp_path("time-travel").with_extension("sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         index=$(sed -n 's/.*\"task_index\":\\([0-9]*\\).*/\\1/p')\n\
         sleep 0.3\n\
         if [ \"$index\" = 4 ]; then sleep 1.2; fi\n\
         if [ \"$index\" = 0 ] || [ \"$index\" = 3 ]; then echo \"bad input $index\" >&2; exit 1; fi\n\
         echo \"{\\\"index\\\": $index}\"\n",
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

/// Whether the projection of jobs and tasks has applied every event in the log, from
/// `/metrics` (`shoal_projector_lag_events`, computed at scrape time).
async fn jobs_projection_caught_up(dev: &Dev) -> bool {
    let text = dev
        .http
        .get(dev.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("reading /metrics");
    text.lines().any(|line| {
        line.strip_prefix("shoal_projector_lag_events{projection=\"jobs\"} ")
            .is_some_and(|value| value.trim() == "0")
    })
}

/// Every field of a timeline.
const TIMELINE: &str = "
query($id: ID!, $asOf: DateTime, $groupBy: TimelineGroup, $from: DateTime, $to: DateTime,
      $maxBars: Int, $laneBuckets: Int, $timeBuckets: Int, $slowest: Int) {
  job(id: $id, asOf: $asOf) {
    timeline(groupBy: $groupBy, from: $from, to: $to, maxBars: $maxBars,
             laneBuckets: $laneBuckets, timeBuckets: $timeBuckets, slowest: $slowest) {
      from to groupBy laneCount workers attemptCount aggregated
      bars { taskIndex attempt lane worker queuedAt startedAt endedAt durationMs outcome }
      buckets { laneFrom laneTo from to attempts failed running }
      slowest { taskIndex attempt lane worker queuedAt startedAt endedAt durationMs outcome }
      medianMs p95Ms
    }
  }
}";

async fn live(dev: &Dev, job: &str) -> Value {
    dev.graphql(JOB, json!({ "id": job, "asOf": null })).await["job"].clone()
}

async fn as_of_agrees_with_the_live_projection_at_every_sampled_instant(url: &str) {
    let program = slow_and_failing_program();
    let exec = format!("work={}", program.display());
    let dev = Dev::start(url, None, &["--workers", "2", "--exec", &exec]).await;
    let before_submission: DateTime<Utc> = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (job, _) = dev
        .submit_job(json!({
            "jobType": "exec",
            "totalTasks": 6,
            "maxAttempts": 2,
            "parameters": { "command": "work" },
        }))
        .await;
    let id = job.to_string();

    // Sample: a reading of the projection, the instant, the projector caught up with the log
    // (so every event committed by then is in the read tables: on a loaded machine the
    // projector can be well behind), and a second reading a little later that must be the same
    // as the first (so the first already held all of them).
    let mut samples: Vec<(DateTime<Utc>, Value)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(Instant::now() < deadline, "the job did not end");
        let first = live(&dev, &id).await;
        let at = Utc::now();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let caught_up = jobs_projection_caught_up(&dev).await;
        let second = live(&dev, &id).await;
        if !first.is_null() && caught_up && first == second {
            let ended = matches!(first["status"].as_str(), Some("FAILED" | "COMPLETED"));
            let dead_lettered = first["tasks"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["node"]["deadLettered"] == true)
                .count();
            if samples.last().is_none_or(|(_, last)| *last != first) {
                samples.push((at, first));
            }
            if ended && dead_lettered == 2 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // The run went through several distinct states: queued, running, retrying, ended.
    assert!(samples.len() >= 4, "only {} distinct states", samples.len());
    let statuses: Vec<&str> = samples
        .iter()
        .map(|(_, s)| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.last(), Some(&"FAILED"));
    assert!(
        samples.iter().any(|(_, s)| s["retryingTasks"] != 0),
        "no sample saw a task waiting for its retry"
    );
    assert!(
        samples.iter().any(|(_, s)| s["runningTasks"] != 0),
        "no sample saw a running task"
    );

    for (at, expected) in &samples {
        let past = dev
            .graphql(JOB, json!({ "id": id, "asOf": at.to_rfc3339() }))
            .await;
        assert_eq!(
            &past["job"], expected,
            "job {id} as of {at} differs from the projection then"
        );
    }

    // Before its submission the job did not exist.
    let past = dev
        .graphql(
            JOB,
            json!({ "id": id, "asOf": before_submission.to_rfc3339() }),
        )
        .await;
    assert_eq!(past["job"], Value::Null);

    // The attempts of a failing task: two, the first retried after a backoff, the second
    // failed for good and dead-lettered.
    let task = dev
        .graphql(
            "query($id: ID!) { task(id: $id) { attempts { attempt worker outcome error
               retryBackoffMs deadLetterReason startedAt endedAt durationMs } } }",
            json!({ "id": format!("{id}-task-0") }),
        )
        .await;
    let attempts = task["task"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["outcome"], "RETRIED");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("bad input 0")
    );
    assert!(attempts[0]["retryBackoffMs"].as_f64().unwrap() > 0.0);
    assert!(attempts[0]["worker"].is_string());
    assert_eq!(attempts[1]["outcome"], "FAILED");
    assert!(attempts[1]["deadLetterReason"].is_string());

    // The timeline: one bar per attempt (six tasks, two of them tried twice), the slow task
    // first among the slowest; with fewer bars allowed than attempts, buckets instead.
    let timeline = |args: &str| {
        format!(
            "query($id: ID!) {{ job(id: $id) {{ timeline({args}) {{ aggregated attemptCount
               laneCount bars {{ taskIndex attempt outcome }} buckets {{ attempts }}
               slowest {{ taskIndex durationMs }} }} }} }}"
        )
    };
    let data = dev
        .graphql(&timeline("slowest: 3"), json!({ "id": id }))
        .await;
    let t = &data["job"]["timeline"];
    assert_eq!(t["aggregated"], false);
    assert_eq!(
        (t["attemptCount"].as_u64(), t["laneCount"].as_u64()),
        (Some(8), Some(6))
    );
    assert_eq!(t["bars"].as_array().unwrap().len(), 8);
    assert_eq!(t["slowest"][0]["taskIndex"], 4);
    assert!(t["slowest"][0]["durationMs"].as_f64().unwrap() >= 1_400.0);
    let data = dev
        .graphql(
            &timeline("maxBars: 3, laneBuckets: 2, timeBuckets: 10"),
            json!({ "id": id }),
        )
        .await;
    let t = &data["job"]["timeline"];
    assert_eq!(t["aggregated"], true);
    assert!(t["bars"].as_array().unwrap().is_empty());
    let buckets = t["buckets"].as_array().unwrap();
    assert!(!buckets.is_empty() && buckets.len() <= 20);

    let _ = std::fs::remove_file(program);
}

async fn the_timeline_from_the_attempts_table_is_the_one_folded_from_the_log(url: &str) {
    let program = slow_and_failing_program();
    let exec = format!("work={}", program.display());
    let dev = Dev::start(url, None, &["--workers", "2", "--exec", &exec]).await;
    // A second worker process, holding no more than its slot.
    let admin = format!("127.0.0.1:{}", free_port());
    let _worker = Process::start(
        &[
            "worker",
            "--database-url",
            url,
            "--exec",
            &exec,
            "--concurrency",
            "1",
            "--prefetch",
            "0",
            "--worker-id",
            "second-worker",
            "--admin-listen",
            &admin,
        ],
        None,
        None,
    );
    let (job, _) = dev
        .submit_job(json!({
            "jobType": "exec",
            "totalTasks": 6,
            "maxAttempts": 2,
            "parameters": { "command": "work" },
        }))
        .await;
    let id = job.to_string();
    // Ended, both failing tasks dead-lettered, and every attempt's end projected.
    support::wait_until("the job to end", Duration::from_secs(90), || async {
        let data = dev
            .graphql(
                "query($id: ID!) { job(id: $id) { status
                   tasks(first: 10) { edges { node { deadLettered } } }
                   timeline { attemptCount bars { endedAt } } } }",
                json!({ "id": id }),
            )
            .await;
        let job = &data["job"];
        let dead = job["tasks"]["edges"].as_array().is_some_and(|t| {
            t.iter()
                .filter(|t| t["node"]["deadLettered"] == true)
                .count()
                == 2
        });
        let bars = job["timeline"]["bars"].as_array();
        job["status"] == "FAILED"
            && dead
            && job["timeline"]["attemptCount"] == 8
            && bars.is_some_and(|b| b.iter().all(|b| b["endedAt"].is_string()))
    })
    .await;

    // The live job's timeline comes from the attempts table; the job as of now folds the log:
    // the same window, bars or buckets, grouped by task or by worker, must give the same answer.
    let ended = dev
        .graphql(
            "query($id: ID!) { job(id: $id) { createdAt completedAt } }",
            json!({ "id": id }),
        )
        .await;
    let (from, to) = (&ended["job"]["createdAt"], &ended["job"]["completedAt"]);
    let now = Utc::now().to_rfc3339();
    let mut workers_seen = Vec::new();
    for group_by in ["TASK", "WORKER"] {
        for (max_bars, lane_buckets, time_buckets, slowest) in [
            (2000, 100, 200, 100),
            (3, 2, 10, 3),
            (1, 4, 7, 1),
            (2, 3, 5, 100),
        ] {
            let variables = |as_of: Option<&str>| {
                json!({
                    "id": id, "asOf": as_of, "groupBy": group_by, "from": from, "to": to,
                    "maxBars": max_bars, "laneBuckets": lane_buckets, "timeBuckets": time_buckets,
                    "slowest": slowest,
                })
            };
            let table = dev.graphql(TIMELINE, variables(None)).await;
            let folded = dev.graphql(TIMELINE, variables(Some(&now))).await;
            let t = &table["job"]["timeline"];
            assert_eq!(
                t, &folded["job"]["timeline"],
                "{group_by} {max_bars}: the table and the log disagree"
            );
            assert_eq!(t["attemptCount"], 8, "{t}");
            assert_eq!(t["aggregated"], max_bars < 8);
            assert!(t["medianMs"].as_f64().unwrap() > 0.0);
            if group_by == "WORKER" {
                workers_seen = t["workers"].as_array().unwrap().clone();
            }
        }
    }
    // A narrower window: the middle of the run, bars then buckets.
    let middle = dev
        .graphql(
            "query($id: ID!) { job(id: $id) { timeline { bars { startedAt endedAt } } } }",
            json!({ "id": id }),
        )
        .await;
    let bars = middle["job"]["timeline"]["bars"].as_array().unwrap();
    let (start, end) = (&bars[1]["startedAt"], &bars[1]["endedAt"]);
    for max_bars in [2000, 1] {
        let variables = |as_of: Option<&str>| {
            json!({ "id": id, "asOf": as_of, "groupBy": "TASK", "from": start, "to": end,
                    "maxBars": max_bars, "laneBuckets": 3, "timeBuckets": 5, "slowest": 2 })
        };
        let table = dev.graphql(TIMELINE, variables(None)).await;
        let folded = dev.graphql(TIMELINE, variables(Some(&now))).await;
        assert_eq!(table["job"]["timeline"], folded["job"]["timeline"]);
    }
    eprintln!("workers of the run: {workers_seen:?}");
    let _ = std::fs::remove_file(program);
}
