//! `shoal-bench enqueue`: how fast a big job is accepted and queued, with no worker running.
//!
//! Per round: a fresh database on the given Postgres server; the orchestrator wired as `shoal
//! dev` wires it (`roles::orchestrator`; `--first-chunk-size`, `--chunk-size` and
//! `--batch-size` change its batch sizes), on the SQL queue, and nothing else; after a 0.5 s start-up (leader
//! lock, checkpoint load; not timed) one job of N tasks is submitted through
//! [`CommandService::submit_job`]. Two times are taken from just before the submission:
//! **accepted**, when `submit_job` returns (the `JobSubmitted` append committed: what a client
//! waits for), and **enqueued**, when the orchestrator has queued the N-th message: by the relay
//! (`shoal`'s way on Postgres; its counter moves after the queue's insert committed, and every
//! `TaskEnqueued` was committed before the relay read it), or with its chunk with
//! `--send-with-chunks` (the chunk's `TaskEnqueued` events and queue rows commit together). Afterwards the
//! database is checked to hold exactly N `TaskEnqueued` events and N queue rows.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::Value;
use shoal::roles::{DatabaseArgs, Platform, QueueArgs};
use shoal_command_api::commands::{CommandService, SubmitJobInput};
use shoal_command_api::orchestrator::{Orchestrator, OrchestratorConfig};
use shoal_domain::{Limits, Split};
use shoal_infra::telemetry::InstrumentedLog;
use tokio::sync::watch;

use crate::Samples;
use crate::database::BenchDatabase;
use crate::e2e::with_database;
use crate::system::{load_average, postgres_cpu_ms, process_cpu_ms};

#[derive(Debug, Args)]
pub(crate) struct EnqueueArgs {
    /// A Postgres server URL; each round creates (and drops) its own database there.
    #[arg(long, env = "SHOAL_BENCH_DATABASE_URL")]
    database_url: String,
    /// Tasks in the job.
    #[arg(long, default_value_t = 1_000_000)]
    tasks: u32,
    /// Rounds (the report gives the median and the range).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Tasks per expansion chunk (one append); default: the orchestrator's.
    #[arg(long)]
    chunk_size: Option<u32>,
    /// Most events the orchestrator's consumer relays per batch; default: the orchestrator's.
    #[arg(long)]
    batch_size: Option<i64>,
    /// Tasks of the job's first chunk; default: the orchestrator's.
    #[arg(long)]
    first_chunk_size: Option<u32>,
    /// Queue the tasks in their chunk's own transaction (`send_with_chunks`, what `shoal`
    /// does on SQLite) instead of through the relay (what it does on Postgres).
    #[arg(long)]
    send_with_chunks: bool,
    /// Give up on a round after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
    /// Keep each round's database afterwards.
    #[arg(long)]
    keep: bool,
}

/// One round's figures.
#[derive(Debug)]
struct Round {
    accepted_ms: f64,
    enqueued_s: f64,
    shoal_cpu_ms_per_task: f64,
    postgres_cpu_ms_per_task: f64,
    wal_bytes_per_task: f64,
    load_1m: f64,
}

pub(crate) async fn run(args: EnqueueArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.tasks > 0, "--tasks must be at least 1");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let limits = Limits::default();
    anyhow::ensure!(
        u64::from(args.tasks) <= u64::from(limits.max_tasks_per_job),
        "--tasks is above the default limit of {} tasks per job",
        limits.max_tasks_per_job
    );
    let defaults = OrchestratorConfig::default();
    eprintln!(
        "bench enqueue: one job of {} tasks, no worker, {} rounds, expansion chunks of {} up to \
         {}, consumer batches of {}, tasks queued {}",
        args.tasks,
        args.rounds,
        args.first_chunk_size.unwrap_or(defaults.first_chunk_size),
        args.chunk_size.unwrap_or(defaults.chunk_size),
        args.batch_size.unwrap_or(defaults.batch_size),
        queued_how(&args),
    );
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let r = one_round(&args)
            .await
            .with_context(|| format!("round {round}"))?;
        eprintln!(
            "round {round}: accepted after {:.1} ms, every task queued after {:.2} s \
             ({:.0} tasks/s), CPU/task {:.4} ms shoal + {:.4} ms postgres, WAL {:.0} B/task, load {:.2}",
            r.accepted_ms,
            r.enqueued_s,
            f64::from(args.tasks) / r.enqueued_s,
            r.shoal_cpu_ms_per_task,
            r.postgres_cpu_ms_per_task,
            r.wal_bytes_per_task,
            r.load_1m,
        );
        rounds.push(r);
    }
    report(&args, &rounds);
    Ok(())
}

async fn one_round(args: &EnqueueArgs) -> anyhow::Result<Round> {
    let bench_db = BenchDatabase::create(&args.database_url, "shoal_bench_enqueue")
        .await
        .context("creating the benchmark database")?;
    let load_1m = load_average();
    let database_url = with_database(&args.database_url, bench_db.name())?;
    let platform = Platform::connect(
        &DatabaseArgs::new(database_url),
        &QueueArgs {
            queue: "sql".into(),
        },
    )
    .await?;

    let (stop, stopped) = watch::channel(false);
    // As `roles::orchestrator` sets it up on Postgres with the SQL queue.
    let defaults = OrchestratorConfig::for_database(&platform.database, true);
    let config = OrchestratorConfig {
        chunk_size: args.chunk_size.unwrap_or(defaults.chunk_size),
        first_chunk_size: args.first_chunk_size.unwrap_or(defaults.first_chunk_size),
        batch_size: args.batch_size.unwrap_or(defaults.batch_size),
        send_with_chunks: args.send_with_chunks,
        ..defaults
    };
    // As `roles::orchestrator` wires it, with the batch sizes of the command line.
    let orchestrator = Orchestrator::new(
        config,
        InstrumentedLog::wrap(platform.log.clone(), "orchestrator"),
        platform.queue.clone(),
        platform.database.clone(),
    )?;
    let metrics = orchestrator.metrics();
    let orchestrating = tokio::spawn(orchestrator.run(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|s| *s).await;
    }));
    // Start-up (leader lock, checkpoint load) is not timed.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let wal_before = bench_db.wal_lsn().await?;
    let cpu_before = (process_cpu_ms(), postgres_cpu_ms());
    let service = CommandService::new(platform.log.clone(), Limits::default());
    let started = Instant::now();
    service
        .submit_job(SubmitJobInput {
            job_type: "noop".into(),
            split: Split::Total {
                total_tasks: args.tasks,
            },
            parameters: Value::Null,
            max_attempts: None,
            timeout_seconds: None,
            idempotency_key: None,
            fallback_handler: None,
            priority: None,
        })
        .await?;
    let accepted = started.elapsed();
    let deadline = started + Duration::from_secs(args.timeout_seconds);
    // Both counters move once the queue rows are committed (with their chunk, or by the
    // relay, which reads only committed `TaskEnqueued`).
    let queued = || metrics.messages_relayed() + metrics.messages_sent_with_chunks();
    let queued_before = queued();
    while queued() - queued_before < u64::from(args.tasks) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} tasks queued in time",
            queued() - queued_before,
            args.tasks
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let enqueued = started.elapsed();
    let cpu_after = (process_cpu_ms(), postgres_cpu_ms());
    let wal_after = bench_db.wal_lsn().await?;

    let _ = stop.send(true);
    orchestrating.await??;
    platform.database.close().await;

    let (task_enqueued, queue_rows) = bench_db.enqueue_summary().await?;
    let n = i64::from(args.tasks);
    anyhow::ensure!(
        task_enqueued == n && queue_rows == n,
        "the log holds {task_enqueued} TaskEnqueued and the queue {queue_rows} rows, not {n}"
    );
    if !args.keep {
        bench_db.drop().await?;
    }
    let tasks = f64::from(args.tasks);
    Ok(Round {
        accepted_ms: accepted.as_secs_f64() * 1000.0,
        enqueued_s: enqueued.as_secs_f64(),
        shoal_cpu_ms_per_task: (cpu_after.0 - cpu_before.0) / tasks,
        postgres_cpu_ms_per_task: (cpu_after.1 - cpu_before.1) / tasks,
        wal_bytes_per_task: (wal_after - wal_before) as f64 / tasks,
        load_1m,
    })
}

fn queued_how(args: &EnqueueArgs) -> &'static str {
    if !args.send_with_chunks {
        "by the relay"
    } else {
        "with their chunks"
    }
}

fn report(args: &EnqueueArgs, rounds: &[Round]) {
    let samples = |f: fn(&Round) -> f64| Samples(rounds.iter().map(f).collect());
    let cell = |s: &Samples, decimals: usize| {
        let (lo, hi) = s.range();
        format!("{:.d$} [{lo:.d$}-{hi:.d$}]", s.median(), d = decimals)
    };
    let tasks = f64::from(args.tasks);
    println!(
        "\n## shoal-bench enqueue --tasks {} ({} rounds; medians [min-max])\n",
        args.tasks,
        rounds.len()
    );
    let defaults = OrchestratorConfig::default();
    println!(
        "One job, no worker; SQL queue; the orchestrator in this process (expansion chunks of {} \
         up to {}, consumer batches of {}; tasks queued {}).\n",
        args.first_chunk_size.unwrap_or(defaults.first_chunk_size),
        args.chunk_size.unwrap_or(defaults.chunk_size),
        args.batch_size.unwrap_or(defaults.batch_size),
        queued_how(args),
    );
    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| accepted: `submitJob` returned (`JobSubmitted` committed) | {} ms |",
        cell(&samples(|r| r.accepted_ms), 1)
    );
    println!(
        "| enqueued: every `TaskEnqueued` and queue row committed | {} s |",
        cell(&samples(|r| r.enqueued_s), 2)
    );
    println!(
        "| enqueue rate | {} tasks/s |",
        cell(
            &Samples(rounds.iter().map(|r| tasks / r.enqueued_s).collect()),
            0
        )
    );
    println!(
        "| CPU per task, shoal process | {} ms |",
        cell(&samples(|r| r.shoal_cpu_ms_per_task), 4)
    );
    println!(
        "| CPU per task, all postgres processes | {} ms |",
        cell(&samples(|r| r.postgres_cpu_ms_per_task), 4)
    );
    println!(
        "| WAL per task | {} bytes |",
        cell(&samples(|r| r.wal_bytes_per_task), 0)
    );
    println!(
        "| load average (1 min) at the start of a round | {} |",
        cell(&samples(|r| r.load_1m), 2)
    );
}
