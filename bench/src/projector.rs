//! `shoal-bench projector`: the projector over a large log, and subscription latency.
//!
//! Once: a fresh database on the given Postgres server, filled (not timed) with `--events`
//! events in the domain's encoding: jobs of 1,000 tasks, each task `TaskEnqueued`,
//! `TaskStarted`, then `TaskCompleted` (or, in every fourth job, 5 final `TaskFailed`), written
//! by 8 writers in appends of ~1,000 events. Per round: the read tables and checkpoints are
//! emptied and fresh projectors catch up over the whole log, both projections at once (events/s
//! of the log); then `rebuild(analytics)` of the same log
//! (seconds); then `pgbench` single-row INSERTs with 16 clients, the baseline of the round.
//!
//! Last, subscription latency: one job whose tasks run at `--latency-rate` tasks/s (each tick
//! of 10 ms appends, in one transaction, the `TaskCompleted` of the tasks due and the
//! `TaskStarted` of as many later ones), with the projector running as `shoal dev` runs it.
//! Two clients: a WebSocket client (graphql-transport-ws) of the `jobUpdated` subscription,
//! served by the real schema and `/graphql` router on a loopback port (resolver, coalescing at
//! `--subscription-max-rate` messages/s, read of the job row, framing, TCP), and a raw
//! subscriber of the projector's change feed. Each append is
//! timestamped just before it is sent; its latency is the time to the first `jobUpdated`
//! message whose `completedTasks` covers it (resp. the first jobs-projection commit at or past
//! its last position). Percentiles are nearest-rank, from an HdrHistogram of microseconds at 4
//! significant digits (each within 0.01% of the exact value).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Map, json};
use shoal_command_api::commands::CommandService;
use shoal_domain::events::{
    JobCompleted, JobFailed, JobSubmitted, TaskCompleted, TaskEnqueued, TaskFailed, TaskStarted,
    TasksCreated,
};
use shoal_domain::{Event, JobId, Limits, Split, TaskId};
use shoal_infra::db::Database;
use shoal_infra::eventlog::{AppendBatch, EventLog, ExpectedVersion, NewEvent, StreamAppend};
use shoal_infra::readmodel::ReadModelStore;
use shoal_projector::{ProjectionName, Projector, ProjectorConfig};
use tokio::sync::watch;

use crate::database::BenchDatabase;
use crate::system::load_average;
use crate::{Samples, which};

#[derive(Debug, Args)]
pub(crate) struct ProjectorArgs {
    /// A Postgres server URL; the benchmark creates (and drops) its own database there.
    #[arg(long, env = "SHOAL_BENCH_DATABASE_URL")]
    database_url: String,
    /// Events in the log (rounded up to whole jobs of 1,000 tasks, 3,003 events each).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Rounds of catch-up + rebuild + pgbench (the report gives the median and the range).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of `pgbench` per round for the baseline.
    #[arg(long, default_value_t = 10)]
    pgbench_seconds: u64,
    /// Tasks per second of the workload during the latency measurement (0 skips it).
    #[arg(long, default_value_t = 5000)]
    latency_rate: u32,
    /// Seconds of the latency measurement.
    #[arg(long, default_value_t = 20)]
    latency_seconds: u32,
    /// Most `jobUpdated` messages per second (as `shoal dev --subscription-max-rate`).
    #[arg(long, default_value_t = shoal_query_api::graphql::DEFAULT_MAX_MESSAGES_PER_SECOND)]
    subscription_max_rate: u32,
    /// Keep the benchmark database afterwards.
    #[arg(long)]
    keep: bool,
    /// Most events per projector batch (one transaction each).
    #[arg(long, default_value_t = ProjectorConfig::POSTGRES_BATCH_SIZE)]
    batch_size: usize,
}

const TASKS_PER_JOB: u32 = 1000;
const EVENTS_PER_JOB: u64 = 3 * TASKS_PER_JOB as u64 + 3;
const WRITERS: usize = 8;

#[derive(Debug)]
struct Round {
    catch_up_events_per_second: f64,
    jobs_seconds: f64,
    analytics_seconds: f64,
    rebuild_seconds: f64,
    load_1m: f64,
    pgbench_tps: Option<f64>,
}

#[derive(Debug)]
struct Latency {
    tasks: u64,
    achieved_rate: f64,
    appends: usize,
    graphql: Latencies,
    graphql_messages: usize,
    feed: Latencies,
    load_1m: f64,
}

/// Latencies, each counted once per task it covers, in microseconds.
#[derive(Debug)]
struct Latencies(Histogram<u64>);

impl Latencies {
    fn new() -> anyhow::Result<Self> {
        // Auto-resizing, so that no latency is too large to record.
        let histogram = Histogram::new(4).context("a latency histogram of 4 significant digits")?;
        Ok(Self(histogram))
    }

    fn record(&mut self, latency: Duration, tasks: u64) -> anyhow::Result<()> {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0
            .record_n(micros, tasks)
            .context("recording a latency")
    }

    /// Tasks recorded.
    fn len(&self) -> u64 {
        self.0.len()
    }

    /// The nearest-rank `p`th percentile in ms (NaN without samples).
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.value_at_quantile(p / 100.0) as f64 / 1000.0
    }

    /// The largest latency in ms (NaN without samples).
    fn max_ms(&self) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.max() as f64 / 1000.0
    }
}

pub(crate) async fn run(args: ProjectorArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.events > 0, "--events must be at least 1");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let pgbench = which("pgbench");
    if !pgbench {
        eprintln!(
            "pgbench not found: the baseline is skipped (apt-get install postgresql-client-15)"
        );
    }
    let bench_db = BenchDatabase::create(&args.database_url, "shoal_bench_projector")
        .await
        .context("creating the benchmark database")?;
    let database = Database::Postgres(bench_db.pool().clone());
    let log = database.event_log();
    let jobs = args.events.div_ceil(EVENTS_PER_JOB);
    eprintln!(
        "bench projector: {jobs} jobs of {TASKS_PER_JOB} tasks ({} events), {} rounds, database {}",
        jobs * EVENTS_PER_JOB,
        args.rounds,
        bench_db.name()
    );
    let started = Instant::now();
    let written = write_log(&log, jobs).await?;
    eprintln!(
        "log written: {written} events in {:.1} s (not timed)",
        started.elapsed().as_secs_f64()
    );
    if pgbench {
        bench_db.create_baseline_table().await?;
    }

    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let load_1m = load_average();
        bench_db.reset_read_model().await?;
        // Both projections catch up at once, as `shoal projector run` does; each one's time is
        // from the common start to its last commit.
        let started = Instant::now();
        let catch_up = |name: ProjectionName| {
            let projector = Projector::new(
                ProjectorConfig {
                    projections: vec![name],
                    batch_size: args.batch_size,
                    ..ProjectorConfig::default()
                },
                log.clone(),
                database.clone(),
            );
            async move {
                let applied = projector.catch_up().await?;
                anyhow::ensure!(
                    applied == written,
                    "{name} caught up over {applied} events, not {written}"
                );
                anyhow::Ok(started.elapsed().as_secs_f64())
            }
        };
        let (jobs_done, analytics_done) = tokio::join!(
            catch_up(ProjectionName::Jobs),
            catch_up(ProjectionName::Analytics)
        );
        let seconds = [jobs_done?, analytics_done?];
        let total_seconds = started.elapsed().as_secs_f64();
        let summary = bench_db.read_model_counts().await?;
        anyhow::ensure!(
            summary == (jobs as i64, (jobs * u64::from(TASKS_PER_JOB)) as i64),
            "the read model holds {summary:?} (jobs, tasks), not {jobs} jobs"
        );
        let config = ProjectorConfig {
            batch_size: args.batch_size,
            ..ProjectorConfig::default()
        };
        let projector = Projector::new(config, log.clone(), database.clone());
        let rebuilt = projector.rebuild(ProjectionName::Analytics, |_| {}).await?;
        anyhow::ensure!(
            rebuilt.events == written,
            "the rebuild replayed {rebuilt:?}"
        );
        let overview = projector.store().overview().await?;
        let pgbench_tps = if pgbench {
            Some(
                bench_db
                    .pgbench_insert_tps(16, args.pgbench_seconds)
                    .await?,
            )
        } else {
            None
        };
        let r = Round {
            catch_up_events_per_second: written as f64 / total_seconds,
            jobs_seconds: seconds[0],
            analytics_seconds: seconds[1],
            rebuild_seconds: rebuilt.elapsed.as_secs_f64(),
            load_1m,
            pgbench_tps,
        };
        eprintln!(
            "round {round}: catch-up {:.0} events/s (concurrently: jobs done after {:.1} s, analytics after {:.1} s), \
             rebuild(analytics) {:.1} s, pgbench {} tx/s, load {load_1m:.2}; overview after \
             the rebuild: {overview:?}",
            r.catch_up_events_per_second,
            r.jobs_seconds,
            r.analytics_seconds,
            r.rebuild_seconds,
            r.pgbench_tps
                .map_or_else(|| "n/a".to_string(), |t| format!("{t:.0}")),
        );
        rounds.push(r);
    }

    let latency = if args.latency_rate > 0 && args.latency_seconds > 0 {
        Some(latency(&args, &database).await?)
    } else {
        None
    };
    report(&args, jobs, written, &rounds, latency.as_ref());
    if !args.keep {
        bench_db.drop().await?;
    }
    Ok(())
}

fn new_event(event: impl Into<Event>) -> NewEvent {
    let encoded = event.into().encode();
    NewEvent {
        event_type: encoded.event_type.to_string(),
        schema_version: encoded.schema_version,
        data: encoded.data,
        metadata: json!({"actor": "bench"}),
    }
}

fn one(stream_id: String, expected: i64, event: impl Into<Event>) -> StreamAppend {
    StreamAppend {
        stream_id,
        expected: ExpectedVersion::Exact(expected),
        events: vec![new_event(event)],
    }
}

fn submitted(job_id: JobId, tasks: u32) -> JobSubmitted {
    JobSubmitted {
        job_id,
        job_type: "noop".into(),
        split: Split::Total { total_tasks: tasks },
        parameters: Map::new(),
        max_attempts: 1,
        timeout_seconds: 300,
        total_tasks: tasks,
        submitted_at: Utc::now(),
        fallback_handler: None,
        priority: 0,
    }
}

fn enqueued(job_id: JobId, index: u32) -> TaskEnqueued {
    TaskEnqueued {
        job_id,
        task_id: TaskId::for_task(job_id, index),
        index,
        job_type: "noop".into(),
        input: json!({}),
        attempt: 1,
        max_attempts: 1,
        timeout_seconds: 300,
        at: Utc::now(),
        fallback_handler: None,
    }
}

fn started(job_id: JobId, index: u32) -> TaskStarted {
    TaskStarted {
        job_id,
        task_id: TaskId::for_task(job_id, index),
        index,
        attempt: 1,
        worker: "bench-worker".into(),
        at: Utc::now(),
    }
}

fn completed(job_id: JobId, index: u32) -> TaskCompleted {
    TaskCompleted {
        job_id,
        task_id: TaskId::for_task(job_id, index),
        index,
        attempt: 1,
        result: Some(json!({"ok": true})),
        duration_ms: 12,
        at: Utc::now(),
    }
}

async fn append(log: &Arc<dyn EventLog>, streams: Vec<StreamAppend>) -> anyhow::Result<i64> {
    let outcome = log
        .append(AppendBatch {
            streams,
            ..Default::default()
        })
        .await?;
    Ok(outcome.positions.iter().copied().max().unwrap_or(0))
}

/// One job's life in three appends (expansion, starts, outcomes); the events written.
async fn write_job(log: Arc<dyn EventLog>, n: u64) -> anyhow::Result<u64> {
    let job_id = JobId::new();
    let job_stream = job_id.stream_id();
    let tasks = 0..TASKS_PER_JOB;
    let mut streams = vec![StreamAppend {
        stream_id: job_stream.clone(),
        expected: ExpectedVersion::NoStream,
        events: vec![
            new_event(submitted(job_id, TASKS_PER_JOB)),
            new_event(TasksCreated {
                job_id,
                from_index: 0,
                to_index: TASKS_PER_JOB,
                at: Utc::now(),
            }),
        ],
    }];
    streams.extend(tasks.clone().map(|i| {
        let e = enqueued(job_id, i);
        one(e.task_id.stream_id(), 0, e)
    }));
    append(&log, streams).await?;
    let streams = tasks
        .clone()
        .map(|i| {
            let e = started(job_id, i);
            one(e.task_id.stream_id(), 1, e)
        })
        .collect();
    append(&log, streams).await?;
    // Every fourth job has 5 tasks that fail for good (and the job fails).
    let failing = |i: u32| n.is_multiple_of(4) && i % 200 == 199;
    let mut streams: Vec<StreamAppend> = tasks
        .clone()
        .map(|i| {
            let task_id = TaskId::for_task(job_id, i);
            if failing(i) {
                one(
                    task_id.stream_id(),
                    2,
                    TaskFailed {
                        job_id,
                        task_id,
                        index: i,
                        attempt: 1,
                        error: "bench: simulated failure".into(),
                        final_failure: true,
                        at: Utc::now(),
                    },
                )
            } else {
                one(task_id.stream_id(), 2, completed(job_id, i))
            }
        })
        .collect();
    let failed = tasks.filter(|&i| failing(i)).count() as u32;
    streams.push(if failed > 0 {
        one(
            job_stream,
            2,
            JobFailed {
                job_id,
                failed_tasks: failed,
                at: Utc::now(),
            },
        )
    } else {
        one(
            job_stream,
            2,
            JobCompleted {
                job_id,
                at: Utc::now(),
            },
        )
    });
    append(&log, streams).await?;
    Ok(EVENTS_PER_JOB)
}

async fn write_log(log: &Arc<dyn EventLog>, jobs: u64) -> anyhow::Result<u64> {
    let mut writes = futures::stream::iter(0..jobs)
        .map(|n| write_job(log.clone(), n))
        .buffer_unordered(WRITERS);
    let mut written = 0;
    let mut next_report = 100_000;
    while let Some(events) = writes.next().await {
        written += events?;
        if written >= next_report {
            eprintln!("  {written} events written");
            next_report += 100_000;
        }
    }
    Ok(written)
}

/// Tasks started ahead of the completions, so each tick starts as many as it completes.
const LEAD: u32 = 1000;

async fn latency(args: &ProjectorArgs, database: &Database) -> anyhow::Result<Latency> {
    let log = database.event_log();
    let total = args.latency_rate * args.latency_seconds;
    let job_id = JobId::new();
    // Set-up (not timed): the job, all its tasks enqueued, the first LEAD started.
    append(
        &log,
        vec![StreamAppend {
            stream_id: job_id.stream_id(),
            expected: ExpectedVersion::NoStream,
            events: vec![
                new_event(submitted(job_id, total)),
                new_event(TasksCreated {
                    job_id,
                    from_index: 0,
                    to_index: total,
                    at: Utc::now(),
                }),
            ],
        }],
    )
    .await?;
    for chunk in (0..total + LEAD).collect::<Vec<_>>().chunks(1000) {
        let streams = chunk
            .iter()
            .filter(|&&i| i < total)
            .map(|&i| {
                let e = enqueued(job_id, i);
                one(e.task_id.stream_id(), 0, e)
            })
            .collect();
        append(&log, streams).await?;
    }
    let streams = (0..LEAD.min(total))
        .map(|i| {
            let e = started(job_id, i);
            one(e.task_id.stream_id(), 1, e)
        })
        .collect();
    append(&log, streams).await?;

    let projector = Projector::new(ProjectorConfig::default(), log.clone(), database.clone());
    projector.catch_up().await?;
    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let projecting = tokio::spawn({
        let projector = projector.clone();
        let shutdown = until_stopped(stopped.clone());
        async move { projector.run(shutdown).await }
    });

    // The raw change feed: every jobs-projection commit, timestamped.
    let mut feed = projector.subscribe();
    let feed_task = tokio::spawn({
        let mut stopped = stopped.clone();
        async move {
            let mut seen = Vec::new();
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => break,
                    change = feed.recv() => match change {
                        Ok(change) if change.projection == ProjectionName::Jobs => {
                            seen.push((Instant::now(), change.position.position));
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
            seen
        }
    });

    // The GraphQL subscription, as a client sees it: the real schema and `/graphql` router
    // served on a loopback port, and a WebSocket client speaking graphql-transport-ws.
    let schema = shoal::graphql::schema(
        CommandService::new(log.clone(), Limits::default()),
        ReadModelStore::new(database.clone()),
        log.clone(),
        shoal_query_api::graphql::LiveConfig::new(
            shoal_query_api::graphql::ChangeFeed::from_projector(&projector),
            args.subscription_max_rate,
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let serving = tokio::spawn({
        let shutdown = until_stopped(stopped.clone());
        async move {
            axum::serve(listener, shoal::graphql::router(schema))
                .with_graceful_shutdown(shutdown)
                .await
        }
    });
    let mut ws = subscribe_over_websocket(
        &format!("ws://{address}/graphql"),
        json!({
            "query": "subscription($id: ID!) { jobUpdated(id: $id) { id status completedTasks } }",
            "variables": { "id": job_id.to_string() },
        }),
    )
    .await?;
    let graphql_task = tokio::spawn({
        let mut stopped = stopped.clone();
        async move {
            use futures::SinkExt;
            use tokio_tungstenite::tungstenite::Message;
            let mut seen: Vec<(Instant, u64)> = Vec::new();
            loop {
                let message = tokio::select! {
                    _ = stopped.wait_for(|s| *s) => break,
                    message = ws.next() => message,
                };
                let now = Instant::now();
                let Some(message) = message else {
                    anyhow::bail!("the subscription socket closed")
                };
                let Message::Text(text) = message? else {
                    continue;
                };
                let message: serde_json::Value = serde_json::from_str(&text)?;
                match message["type"].as_str() {
                    Some("next") => {
                        let payload = &message["payload"];
                        anyhow::ensure!(payload.get("errors").is_none(), "{payload}");
                        let done = payload["data"]["jobUpdated"]["completedTasks"]
                            .as_u64()
                            .unwrap_or(0);
                        seen.push((now, done));
                        if done >= u64::from(total) {
                            break;
                        }
                    }
                    Some("ping") => {
                        let pong = json!({ "type": "pong" }).to_string();
                        ws.send(Message::Text(pong.into())).await?;
                    }
                    Some("error" | "complete") => anyhow::bail!("subscription ended: {message}"),
                    _ => {}
                }
            }
            let _ = ws.close(None).await;
            anyhow::Ok(seen)
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The workload: every 10 ms, the completions due at the rate, in one append.
    let load_1m = load_average();
    let rate = f64::from(args.latency_rate);
    let mut sent: Vec<(Instant, u64, i64)> = Vec::new();
    let mut done = 0u32;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let begin = Instant::now();
    while done < total {
        tick.tick().await;
        // At most LEAD completions per append: a task completed here must not be started in the
        // same append (after a stall, the next ticks catch up).
        let due = ((begin.elapsed().as_secs_f64() * rate) as u32)
            .min(total)
            .min(done + LEAD);
        if due <= done {
            continue;
        }
        let mut streams: Vec<StreamAppend> = (done..due)
            .map(|i| {
                let e = completed(job_id, i);
                one(e.task_id.stream_id(), 2, e)
            })
            .collect();
        streams.extend((done + LEAD..due + LEAD).filter(|&i| i < total).map(|i| {
            let e = started(job_id, i);
            one(e.task_id.stream_id(), 1, e)
        }));
        let at = Instant::now();
        let last = append(&log, streams).await?;
        done = due;
        sent.push((at, u64::from(done), last));
    }
    let achieved_rate = f64::from(total) / begin.elapsed().as_secs_f64();
    // Wait for the last message (at most 30 s), then stop everything.
    let graphql_seen = tokio::time::timeout(Duration::from_secs(30), graphql_task)
        .await
        .context("no jobUpdated message with every task completed within 30 s")???;
    let _ = stop.send(true);
    let feed_seen = feed_task.await?;
    projecting.await??;
    serving.await??;

    // Each append's latency, once per task it completed.
    let mut graphql = Latencies::new()?;
    let mut feed = Latencies::new()?;
    let mut before = 0;
    for &(at, cumulative, last) in &sent {
        let tasks = cumulative - before;
        before = cumulative;
        if let Some((t, _)) = graphql_seen
            .iter()
            .find(|(t, c)| *c >= cumulative && *t >= at)
        {
            graphql.record(*t - at, tasks)?;
        }
        if let Some((t, _)) = feed_seen.iter().find(|(t, p)| *p >= last && *t >= at) {
            feed.record(*t - at, tasks)?;
        }
    }
    anyhow::ensure!(
        graphql.len() == u64::from(total),
        "only {} of {total} completions were seen in a jobUpdated message",
        graphql.len()
    );
    let result = Latency {
        tasks: u64::from(total),
        achieved_rate,
        appends: sent.len(),
        graphql,
        graphql_messages: graphql_seen.len(),
        feed,
        load_1m,
    };
    eprintln!(
        "latency: {} tasks at {:.0} tasks/s in {} appends; jobUpdated p50 {:.1} p99 {:.1} max \
         {:.1} ms ({} messages); change feed p50 {:.1} p99 {:.1} ms; load {load_1m:.2}",
        result.tasks,
        result.achieved_rate,
        result.appends,
        result.graphql.percentile_ms(50.0),
        result.graphql.percentile_ms(99.0),
        result.graphql.max_ms(),
        result.graphql_messages,
        result.feed.percentile_ms(50.0),
        result.feed.percentile_ms(99.0),
    );
    Ok(result)
}

fn report(
    args: &ProjectorArgs,
    jobs: u64,
    events: u64,
    rounds: &[Round],
    latency: Option<&Latency>,
) {
    let samples = |f: fn(&Round) -> f64| Samples(rounds.iter().map(f).collect());
    let cell = |s: &Samples, decimals: usize| {
        let (lo, hi) = s.range();
        format!("{:.d$} [{lo:.d$}-{hi:.d$}]", s.median(), d = decimals)
    };
    println!(
        "\n## shoal-bench projector --events {} ({} rounds; medians [min-max])\n",
        args.events,
        rounds.len()
    );
    println!(
        "Log: {events} events, {jobs} jobs of {TASKS_PER_JOB} tasks (TaskEnqueued, TaskStarted, \
         TaskCompleted; every fourth job with 5 final TaskFailed). Projector batch size {}.\n",
        args.batch_size
    );
    println!("| measurement | value |");
    println!("|---|---|");
    let rate = samples(|r| r.catch_up_events_per_second);
    println!(
        "| catch-up of a fresh projector, both projections at once | {} events/s |",
        cell(&rate, 0)
    );
    println!(
        "| jobs projection caught up after | {} s |",
        cell(&samples(|r| r.jobs_seconds), 1)
    );
    println!(
        "| analytics projection caught up after | {} s |",
        cell(&samples(|r| r.analytics_seconds), 1)
    );
    println!(
        "| `rebuild(analytics)` of the same log ({jobs} jobs) | {} s |",
        cell(&samples(|r| r.rebuild_seconds), 1)
    );
    let base = Samples(rounds.iter().filter_map(|r| r.pgbench_tps).collect());
    if !base.0.is_empty() {
        println!(
            "| baseline: pgbench single-row INSERT, 16 clients (`pgbench_insert_tps`) | {} tx/s |",
            cell(&base, 0)
        );
        let ratios = Samples(
            rounds
                .iter()
                .filter_map(|r| r.pgbench_tps.map(|b| r.catch_up_events_per_second / b))
                .collect(),
        );
        println!(
            "| ratio catch-up events/s / pgbench tx/s (same round) | {}x |",
            cell(&ratios, 1)
        );
    }
    println!(
        "| load average (1 min) at the start of a round | {} |",
        cell(&samples(|r| r.load_1m), 2)
    );
    if let Some(l) = latency {
        println!(
            "\n### Subscription latency ({} tasks at {:.0} tasks/s achieved, {} appends; one run)\n",
            l.tasks, l.achieved_rate, l.appends
        );
        println!("| append of `TaskCompleted` -> | p50 | p99 | max |");
        println!("|---|---|---|---|");
        println!(
            "| `jobUpdated` message (GraphQL, {} msg/s max; {} messages) | {:.1} ms | {:.1} ms | {:.1} ms |",
            args.subscription_max_rate,
            l.graphql_messages,
            l.graphql.percentile_ms(50.0),
            l.graphql.percentile_ms(99.0),
            l.graphql.max_ms()
        );
        println!(
            "| projector change feed (jobs commit) | {:.1} ms | {:.1} ms | {:.1} ms |",
            l.feed.percentile_ms(50.0),
            l.feed.percentile_ms(99.0),
            l.feed.max_ms()
        );
        println!("\nLoad average (1 min) at its start: {:.2}.", l.load_1m);
    }
}

/// A graphql-transport-ws connection to `url` with one subscription (id "1") started.
async fn subscribe_over_websocket(
    url: &str,
    payload: serde_json::Value,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "graphql-transport-ws".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let send = |value: serde_json::Value| Message::Text(value.to_string().into());
    ws.send(send(json!({ "type": "connection_init", "payload": {} })))
        .await?;
    loop {
        let message = ws
            .next()
            .await
            .context("the socket closed before connection_ack")??;
        if let Message::Text(text) = message
            && serde_json::from_str::<serde_json::Value>(&text)?["type"] == "connection_ack"
        {
            break;
        }
    }
    ws.send(send(
        json!({ "id": "1", "type": "subscribe", "payload": payload }),
    ))
    .await?;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_over_tasks() {
        let mut latencies = Latencies::new().unwrap();
        for ms in 1..=100 {
            latencies.record(Duration::from_millis(ms), 1).unwrap();
        }
        assert_eq!(latencies.len(), 100);
        // Within the histogram's 4 significant digits of the exact values.
        assert!((latencies.percentile_ms(50.0) - 50.0).abs() < 0.01);
        assert!((latencies.percentile_ms(99.0) - 99.0).abs() < 0.01);
        assert!((latencies.max_ms() - 100.0).abs() < 0.01);
    }

    #[test]
    fn an_append_counts_once_per_task_it_completed() {
        let mut latencies = Latencies::new().unwrap();
        latencies.record(Duration::from_millis(10), 99).unwrap();
        latencies.record(Duration::from_millis(500), 1).unwrap();
        assert_eq!(latencies.len(), 100);
        assert!((latencies.percentile_ms(99.0) - 10.0).abs() < 0.01);
        assert!((latencies.percentile_ms(100.0) - 500.0).abs() < 0.1);
    }

    #[test]
    fn no_samples_give_no_figures() {
        let latencies = Latencies::new().unwrap();
        assert!(latencies.percentile_ms(50.0).is_nan());
        assert!(latencies.max_ms().is_nan());
    }
}
