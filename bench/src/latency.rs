//! `shoal-bench latency`: how long a task waits from its submission to its start, on an idle
//! system.
//!
//! Once: a fresh database on the given Postgres server; the orchestrator and a worker wired
//! exactly as `shoal dev` wires them (`roles`), on the SQL queue, with `shoal worker`'s default
//! concurrency (16); after a 0.5 s start-up (not timed) and `--warmup` jobs (not counted),
//! `--jobs` jobs of one no-op task each are submitted through [`CommandService::submit_job`],
//! one at a time: each after the previous one has completed and the system has been idle for
//! `--pause-ms`. Per job:
//!
//! * **submit → first `TaskStarted`** (the measure, as `shoal-bench e2e` takes it):
//!   from the `recorded_at` of `JobSubmitted` to that of the task's `TaskStarted`, both on the
//!   server's clock (`recorded_at` is the writing transaction's start);
//! * **submit call → `TaskStarted` readable**: on this process's clock, from just before
//!   `submit_job` to the moment a subscriber of the log (`EventLog::subscribe`, as the
//!   projector reads) receives the `TaskStarted`: what a client waiting for the start sees.
//!
//! p50, p90, p99 and the maximum are nearest-rank percentiles from an HdrHistogram of
//! microseconds. `--separate-pools` gives the command service, the orchestrator and the worker
//! a connection pool (and log and queue instances) each, so that every wake-up between them
//! goes through Postgres LISTEN/NOTIFY, as between the processes of a deployment; by default
//! they share one, as in `shoal dev`. `--send-with-chunks` queues the tasks in their chunk's
//! own transaction instead of through the orchestrator's relay.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::Value;
use shoal::roles::{self, DatabaseArgs, Platform, QueueArgs};
use shoal_command_api::commands::{CommandService, SubmitJobInput};
use shoal_command_api::orchestrator::{Orchestrator, OrchestratorConfig};
use shoal_domain::{Limits, Split, TaskId};
use shoal_infra::eventlog::EventStream;
use shoal_infra::telemetry::InstrumentedLog;
use tokio::sync::watch;

use crate::database::BenchDatabase;
use crate::e2e::with_database;
use crate::system::load_average;

#[derive(Debug, Args)]
pub(crate) struct LatencyArgs {
    /// A Postgres server URL; the benchmark creates (and drops) its own database there.
    #[arg(long, env = "SHOAL_BENCH_DATABASE_URL")]
    database_url: String,
    /// Single-task jobs measured.
    #[arg(long, default_value_t = 300)]
    jobs: u32,
    /// Jobs run first and not counted (connections, caches).
    #[arg(long, default_value_t = 10)]
    warmup: u32,
    /// Idle time after a job completed before the next is submitted, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pause_ms: u64,
    /// Worker slots (`shoal worker`'s default is 16).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// One connection pool per role (wake-ups through LISTEN/NOTIFY, as between processes)
    /// instead of one shared pool (as in `shoal dev`).
    #[arg(long)]
    separate_pools: bool,
    /// Queue the tasks in their chunk's own transaction (`send_with_chunks`, what `shoal`
    /// does on SQLite) instead of through the relay (what it does on Postgres).
    #[arg(long)]
    send_with_chunks: bool,
    /// Give up on a job after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout_seconds: u64,
    /// Keep the benchmark database afterwards.
    #[arg(long)]
    keep: bool,
}

/// Latencies in microseconds.
#[derive(Debug)]
struct Latencies(Histogram<u64>);

impl Latencies {
    fn new() -> anyhow::Result<Self> {
        let histogram = Histogram::new(4).context("a latency histogram of 4 significant digits")?;
        Ok(Self(histogram))
    }

    fn record_ms(&mut self, ms: f64) -> anyhow::Result<()> {
        let micros = (ms.max(0.0) * 1000.0).round() as u64;
        self.0.record(micros).context("recording a latency")
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.value_at_quantile(p / 100.0) as f64 / 1000.0
    }

    fn max_ms(&self) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.max() as f64 / 1000.0
    }

    fn row(&self, what: &str) -> String {
        format!(
            "| {what} | {:.1} | {:.1} | **{:.1}** | {:.1} |",
            self.percentile_ms(50.0),
            self.percentile_ms(90.0),
            self.percentile_ms(99.0),
            self.max_ms()
        )
    }
}

pub(crate) async fn run(args: LatencyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.jobs > 0, "--jobs must be at least 1");
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    eprintln!(
        "bench latency: {} single-task jobs (after {} not counted), one at a time, {} ms idle \
         between them, worker concurrency {}, {}",
        args.jobs,
        args.warmup,
        args.pause_ms,
        args.concurrency,
        pools(&args),
    );
    let bench_db = BenchDatabase::create(&args.database_url, "shoal_bench_latency")
        .await
        .context("creating the benchmark database")?;
    let load_start = load_average();
    let database_url = with_database(&args.database_url, bench_db.name())?;
    let connect = || async {
        Platform::connect(
            &DatabaseArgs::new(database_url.clone()),
            &QueueArgs {
                queue: "sql".into(),
            },
        )
        .await
    };
    let orchestrator_platform = connect().await?;
    let (worker_platform, command_platform) = if args.separate_pools {
        (Some(connect().await?), Some(connect().await?))
    } else {
        (None, None)
    };
    let worker_side = worker_platform.as_ref().unwrap_or(&orchestrator_platform);
    let command_side = command_platform.as_ref().unwrap_or(&orchestrator_platform);

    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // As `roles::orchestrator` wires it on Postgres (or as on SQLite, `--send-with-chunks`).
    let orchestrator = Orchestrator::new(
        OrchestratorConfig {
            send_with_chunks: args.send_with_chunks,
            ..OrchestratorConfig::for_database(&orchestrator_platform.database, true)
        },
        InstrumentedLog::wrap(orchestrator_platform.log.clone(), "orchestrator"),
        orchestrator_platform.queue.clone(),
        orchestrator_platform.database.clone(),
    )?;
    let orchestrating = tokio::spawn(orchestrator.run(until_stopped(stopped.clone())));
    let worker_args = crate::e2e::default_worker_args();
    let config = worker_args.config(args.concurrency)?;
    let working =
        tokio::spawn(roles::worker(worker_side, config).run(until_stopped(stopped.clone())));
    // Start-up (leader lock, checkpoint load, the worker's first receive) is not timed.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let service = CommandService::new(command_side.log.clone(), Limits::default());
    let head = command_side.log.head().await?;
    let mut events = command_side.log.subscribe(head, 1000);
    let mut server = Latencies::new()?;
    let mut client = Latencies::new()?;
    let timeout = Duration::from_secs(args.timeout_seconds);
    for n in 0..args.warmup + args.jobs {
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        let job = one_job(&service, &mut events, timeout)
            .await
            .with_context(|| format!("job {}", n + 1))?;
        if n >= args.warmup {
            server.record_ms(job.server_ms)?;
            client.record_ms(job.client_ms)?;
        }
    }
    let load_end = load_average();

    let _ = stop.send(true);
    working.await??;
    orchestrating.await??;
    drop(events);
    for platform in [
        Some(&orchestrator_platform),
        worker_platform.as_ref(),
        command_platform.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        platform.database.close().await;
    }
    if !args.keep {
        bench_db.drop().await?;
    }

    println!(
        "\n## shoal-bench latency --jobs {} ({} single-task jobs, one at a time, {} ms idle between them)\n",
        args.jobs, args.jobs, args.pause_ms
    );
    println!(
        "Orchestrator and worker (concurrency {}) in one process on the SQL queue, {}; load \
         average (1 min) {:.2} at the start, {:.2} at the end.\n",
        args.concurrency,
        pools(&args),
        load_start,
        load_end
    );
    println!("| latency, ms | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "{}",
        server.row("submit → first `TaskStarted` (`recorded_at`, server clock)")
    );
    println!(
        "{}",
        client.row("`submitJob` call → `TaskStarted` read by a log subscriber")
    );
    Ok(())
}

fn pools(args: &LatencyArgs) -> String {
    let pools = if args.separate_pools {
        "one connection pool per role (wake-ups through LISTEN/NOTIFY)"
    } else {
        "one shared connection pool (as `shoal dev`)"
    };
    let queued = if !args.send_with_chunks {
        "tasks queued by the relay"
    } else {
        "tasks queued with their chunk"
    };
    format!("{pools}, {queued}")
}

/// One job's latencies.
struct Job {
    server_ms: f64,
    client_ms: f64,
}

/// Submits a single-task job and follows the log until it has completed.
async fn one_job(
    service: &CommandService,
    events: &mut EventStream,
    timeout: Duration,
) -> anyhow::Result<Job> {
    let called = Instant::now();
    let submitted = service
        .submit_job(SubmitJobInput {
            job_type: "noop".into(),
            split: Split::Total { total_tasks: 1 },
            parameters: Value::Null,
            max_attempts: None,
            timeout_seconds: None,
            idempotency_key: None,
            fallback_handler: None,
            priority: None,
        })
        .await?;
    let job_id = submitted.job.job_id;
    let job_stream = job_id.stream_id();
    let task_stream = TaskId::for_task(job_id, 0).stream_id();
    let deadline = called + timeout;
    let (mut submitted_at, mut started) = (None, None);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.next())
            .await
            .context("the job did not complete in time")?
            .context("the log subscription ended")??;
        match (event.event_type.as_str(), event.stream_id.as_str()) {
            ("JobSubmitted", stream) if stream == job_stream => {
                submitted_at = Some(event.recorded_at);
            }
            ("TaskStarted", stream) if stream == task_stream && started.is_none() => {
                started = Some((event.recorded_at, called.elapsed()));
            }
            ("JobCompleted", stream) if stream == job_stream => break,
            ("JobFailed" | "JobCancelled", stream) if stream == job_stream => {
                anyhow::bail!("the job ended {}", event.event_type)
            }
            _ => {}
        }
    }
    let submitted_at = submitted_at.context("no JobSubmitted read")?;
    let (started_at, seen_after) = started.context("no TaskStarted read")?;
    Ok(Job {
        server_ms: (started_at - submitted_at)
            .num_microseconds()
            .unwrap_or(i64::MAX) as f64
            / 1000.0,
        client_ms: seen_after.as_secs_f64() * 1000.0,
    })
}
