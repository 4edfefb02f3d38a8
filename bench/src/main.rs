//! `shoal-bench`: benchmarks that compare Shoal with a baseline measured in the same run, kept
//! out of the `shoal` binary. They start the roles through the `shoal` library, as `shoal dev`
//! does. Run them with `scripts/bench.sh`; figures and how to read them: docs/benchmarks.md.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use shoal_infra::eventlog::{
    AppendBatch, EventLog, ExpectedVersion, LogPosition, NewEvent, PostgresEventLog, StreamAppend,
    raw_json,
};

mod database;
mod e2e;
mod enqueue;
mod fairness;
mod latency;
mod pgstats;
mod projector;
mod rig;
mod system;

use database::BenchDatabase;
use e2e::E2eArgs;
use enqueue::EnqueueArgs;
use fairness::FairnessArgs;
use latency::LatencyArgs;
use projector::ProjectorArgs;

#[derive(Debug, Parser)]
#[command(
    name = "shoal-bench",
    version,
    about = "Shoal's benchmarks, each beside a baseline measured in the same run"
)]
struct Cli {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, Subcommand)]
enum Which {
    /// Event log: append throughput (batches of 1, 100, 1,000 at concurrency 1 and 8) and
    /// full-log read throughput, beside `pgbench` single-row INSERT transactions.
    Log(LogArgs),
    /// End to end: one job of N tasks submitted through the command API, run by the
    /// orchestrator and a worker in this process on the SQL queue, timed from the submission to
    /// `JobCompleted` in the log; beside `pgbench` single-row INSERT transactions (16 clients).
    E2e(E2eArgs),
    /// Enqueue: one job of N tasks (default 1,000,000) submitted with no worker running; the
    /// time until it is accepted, and until every task is in the log and in the queue.
    Enqueue(EnqueueArgs),
    /// Latency: single-task jobs submitted one at a time on an idle system, run by the
    /// orchestrator and a worker in this process; p50/p99 from submission to `TaskStarted`.
    Latency(LatencyArgs),
    /// Projector: catch-up of a fresh projector over a log of N events (events/s), a rebuild
    /// of the analytics projection (seconds), and append-to-subscription-message latency while
    /// 5,000 tasks/s run; beside `pgbench` single-row INSERT transactions (16 clients).
    Projector(ProjectorArgs),
    /// Fairness: the same N tasks over concurrent jobs with priorities, a per-key concurrency
    /// limit and a priority change during the run (`on`), against the same jobs without them
    /// (`none`), interleaved; throughput and CPU per task of each, and their ratio.
    Fairness(FairnessArgs),
}

#[derive(Debug, Args)]
struct LogArgs {
    /// A Postgres server URL; the benchmark creates (and drops) its own database there.
    #[arg(long, env = "SHOAL_BENCH_DATABASE_URL")]
    database_url: String,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds of every measurement (the report gives the median).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Keep the benchmark database afterwards.
    #[arg(long)]
    keep: bool,
}

/// The allocator the `shoal` binary runs with (ADR 25), so that in-process figures match it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let result = match Cli::parse().which {
        Which::Log(args) => log(args).await,
        Which::E2e(args) => e2e::run(args).await,
        Which::Enqueue(args) => enqueue::run(args).await,
        Which::Latency(args) => latency::run(args).await,
        Which::Projector(args) => projector::run(args).await,
        Which::Fairness(args) => fairness::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Samples(pub(crate) Vec<f64>);

impl Samples {
    pub(crate) fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    pub(crate) fn range(&self) -> (f64, f64) {
        let min = self.0.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }
}

async fn log(args: LogArgs) -> anyhow::Result<()> {
    let bench_db = BenchDatabase::create(&args.database_url, "shoal_bench_log")
        .await
        .context("creating the benchmark database")?;
    let log: Arc<dyn EventLog> = Arc::new(PostgresEventLog::new(bench_db.pool().clone()));
    let seconds = Duration::from_secs(args.seconds);

    eprintln!(
        "bench log: {} s per measurement, {} rounds, database {}",
        args.seconds,
        args.rounds,
        bench_db.name()
    );
    let pgbench_available = which("pgbench");
    if pgbench_available {
        bench_db.create_baseline_table().await?;
    } else {
        eprintln!(
            "pgbench not found: the baseline is skipped (apt-get install postgresql-client-15)"
        );
    }

    let scenarios: Vec<(usize, usize)> = [1usize, 100, 1000]
        .into_iter()
        .flat_map(|b| [1usize, 8].into_iter().map(move |c| (b, c)))
        .collect();
    let mut appends: Vec<Samples> = scenarios.iter().map(|_| Samples::default()).collect();
    let mut pgbench: Vec<Samples> = [1, 8].iter().map(|_| Samples::default()).collect();
    let mut reads = Samples::default();

    for round in 1..=args.rounds {
        // Interleave everything within a round so that every figure sees similar machine noise.
        for (i, &(batch, concurrency)) in scenarios.iter().enumerate() {
            let rate = append_rate(&log, batch, concurrency, seconds).await?;
            eprintln!(
                "round {round}: append batch {batch:>4} x {concurrency} writers: {rate:>10.0} events/s"
            );
            appends[i].0.push(rate);
        }
        if pgbench_available {
            for (i, clients) in [1usize, 8].into_iter().enumerate() {
                let tps = bench_db.pgbench_insert_tps(clients, args.seconds).await?;
                eprintln!(
                    "round {round}: pgbench single-row INSERT x {clients} clients: {tps:>10.0} tx/s"
                );
                pgbench[i].0.push(tps);
            }
        }
        let (events, rate) = read_rate(&log).await?;
        eprintln!("round {round}: full-log read of {events} events: {rate:>10.0} events/s");
        reads.0.push(rate);
    }

    println!(
        "\n## shoal-bench log ({} rounds of {} s; medians, [min-max])\n",
        args.rounds, args.seconds
    );
    println!("| measurement | events/s | vs pgbench (same clients) |");
    println!("|---|---|---|");
    for (i, &(batch, concurrency)) in scenarios.iter().enumerate() {
        let m = appends[i].median();
        let (lo, hi) = appends[i].range();
        let base = if concurrency == 1 {
            &pgbench[0]
        } else {
            &pgbench[1]
        };
        let ratio = if base.0.is_empty() {
            "n/a".to_string()
        } else {
            format!("{:.1}x", m / base.median())
        };
        println!(
            "| append, batch {batch}, {concurrency} writer(s) | {m:.0} [{lo:.0}-{hi:.0}] | {ratio} |"
        );
    }
    for (i, clients) in [1usize, 8].into_iter().enumerate() {
        if !pgbench[i].0.is_empty() {
            let (lo, hi) = pgbench[i].range();
            println!(
                "| baseline: pgbench single-row INSERT, {clients} client(s) | {:.0} [{lo:.0}-{hi:.0}] tx/s | 1.0x |",
                pgbench[i].median()
            );
        }
    }
    let (lo, hi) = reads.range();
    println!(
        "| full-log read (batches of 10,000) | {:.0} [{lo:.0}-{hi:.0}] | |",
        reads.median()
    );

    if !args.keep {
        bench_db.drop().await?;
    }
    Ok(())
}

fn payload(i: u64) -> NewEvent {
    NewEvent {
        event_type: "TaskCompleted".into(),
        schema_version: 1,
        data: raw_json(&json!({
            "job_id": "0193a0b2-7c4e-7d3a-9f1e-3b2a1c0d9e8f",
            "task_id": uuid::Uuid::now_v7(),
            "index": i,
            "attempt": 1,
            "result": {"ok": true},
            "duration_ms": 12,
        })),
        metadata: json!({"actor": "bench"}),
    }
}

/// Appends batches of `batch` events (each to a new stream, like a chunk of enqueued tasks) from
/// `concurrency` writers for `duration`; returns committed events per second.
async fn append_rate(
    log: &Arc<dyn EventLog>,
    batch: usize,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..concurrency {
        let log = log.clone();
        writers.push(tokio::spawn(async move {
            let mut written = 0u64;
            while start.elapsed() < duration {
                let streams = (0..batch)
                    .map(|i| StreamAppend {
                        stream_id: format!("task-{}", uuid::Uuid::now_v7()),
                        expected: ExpectedVersion::NoStream,
                        events: vec![payload(i as u64)],
                    })
                    .collect();
                log.append(AppendBatch {
                    streams,
                    ..Default::default()
                })
                .await?;
                written += batch as u64;
            }
            anyhow::Ok(written)
        }));
    }
    let mut total = 0;
    for w in writers {
        total += w.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

async fn read_rate(log: &Arc<dyn EventLog>) -> anyhow::Result<(u64, f64)> {
    let start = Instant::now();
    let mut after = LogPosition::START;
    let mut count = 0u64;
    loop {
        let events = log.read_all(after, 10_000).await?;
        let Some(last) = events.last() else { break };
        after = last.log_position;
        count += events.len() as u64;
    }
    Ok((count, count as f64 / start.elapsed().as_secs_f64()))
}

pub(crate) fn which(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}
