//! `shoal-bench fairness`: what priorities, a per-key concurrency limit and a priority change
//! cost in throughput, against the same tasks without them, in the same run.
//!
//! Two arms, the same N tasks split the same way over the same number of concurrent jobs (same
//! job type, same parameters), each round on a fresh database with the orchestrator and a
//! worker with the settings `shoal worker` has by default ([`crate::rig`]):
//! - **none**: every job at the default priority, no limit;
//! - **on**: the jobs at different priorities, half of them with a `concurrencyKey` whose key
//!   has a concurrency limit (`setLimit(kind: KEY)`, set before the submissions) that the
//!   orchestrator's admission enforces, and, when the first job completes, the job of the lowest
//!   priority still running raised above all others (`setJobPriority`).
//!
//! The arms alternate within a round, and which goes first alternates between rounds, so that
//! the machine's other load hits both alike. The clock runs from just before the first
//! submission until every job's `JobCompleted` is read back. Afterwards the log is checked to
//! hold every task's transitions, and, in the `on` arm, one `TaskReleased` per keyed task and
//! never more of the keyed tasks in flight than the limit (from the log, in its order).

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::json;
use shoal_command_api::commands::{CommandService, SubmitJobInput};
use shoal_domain::admission::JobConcurrency;
use shoal_domain::events::LimitKind;
use shoal_domain::{JobId, Limits, Split};

use crate::Samples;
use crate::e2e::default_worker_args;
use crate::rig::{JobEnds, Rig, check_every_task_logged};
use crate::system::CpuTime;

/// The parameter that names the key of the keyed jobs, and its value (every job has it).
const KEY_PARAMETER: &str = "tenant";
const KEY: &str = "acme";
/// The priority the priority change gives (above every job's priority in the plan).
const RAISED_PRIORITY: i64 = 100;
/// Priority step between two jobs in the `on` arm.
const PRIORITY_STEP: i64 = 10;

#[derive(Debug, Args)]
pub(crate) struct FairnessArgs {
    /// A Postgres server URL; each round creates (and drops) its own database there.
    #[arg(long, env = "SHOAL_BENCH_DATABASE_URL")]
    database_url: String,
    /// Tasks in all, in each arm.
    #[arg(long, default_value_t = 20_000)]
    tasks: u32,
    /// Concurrent jobs the tasks are split over, in each arm (at least 2).
    #[arg(long, default_value_t = 4)]
    jobs: u32,
    /// The job type, which selects the handler (`noop` does nothing).
    #[arg(long, default_value = "noop")]
    handler: String,
    /// The worker's slots (16: `shoal worker`'s default; its other settings are the defaults
    /// too).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The concurrency limit on the keyed jobs' key in the `on` arm (see docs/benchmarks.md
    /// for why this default does not bound the throughput).
    #[arg(long, default_value_t = 2_000)]
    key_limit: i64,
    /// Rounds; each runs both arms (the report gives the medians and the range).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Give up on an arm after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
    /// Keep each arm's database afterwards.
    #[arg(long)]
    keep: bool,
}

/// Which machinery an arm turns on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arm {
    None,
    On,
}

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Arm::None => "none",
            Arm::On => "on",
        }
    }
}

/// The arms of round `round` (from 1), in the order they run: alternating which goes first.
fn arm_order(round: usize) -> [Arm; 2] {
    if round % 2 == 1 {
        [Arm::None, Arm::On]
    } else {
        [Arm::On, Arm::None]
    }
}

/// One job of an arm.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JobPlan {
    tasks: u32,
    /// `None`: the default priority.
    priority: Option<i64>,
    /// Whether the job's concurrency key is set (to the limited key).
    keyed: bool,
}

/// `tasks` split over `jobs` jobs as evenly as possible (the first jobs take the remainder);
/// in the `on` arm the jobs' priorities fall by [`PRIORITY_STEP`] from the first to the last
/// (0), and every second job, starting with the second, is keyed.
fn plan(arm: Arm, tasks: u32, jobs: u32) -> Vec<JobPlan> {
    (0..jobs)
        .map(|i| JobPlan {
            tasks: tasks / jobs + u32::from(i < tasks % jobs),
            priority: match arm {
                Arm::None => None,
                Arm::On => Some(i64::from(jobs - 1 - i) * PRIORITY_STEP),
            },
            keyed: arm == Arm::On && i % 2 == 1,
        })
        .collect()
}

/// The job whose priority the `on` arm raises once the first job has completed: the one of the
/// lowest priority among those not completed (the last of them on a tie); `None` if every job
/// has completed.
fn priority_change_target(plans: &[JobPlan], completed: &[bool]) -> Option<usize> {
    plans
        .iter()
        .enumerate()
        .filter(|(i, _)| !completed[*i])
        .min_by_key(|(i, p)| (p.priority.unwrap_or(0), std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
}

/// The highest running sum of `deltas`, taken in order (0 if it never rises above 0).
fn peak_in_flight(deltas: impl IntoIterator<Item = i32>) -> i64 {
    let (mut now, mut peak) = (0i64, 0i64);
    for delta in deltas {
        now += i64::from(delta);
        peak = peak.max(now);
    }
    peak
}

/// One figure of a [`Run`], for the report's rows.
type Figure = fn(&Run) -> f64;

/// One arm's figures in one round.
#[derive(Debug)]
struct Run {
    tasks_per_second: f64,
    shoal_cpu_ms_per_task: f64,
    postgres_cpu_ms_per_task: f64,
    load_1m: f64,
    /// `on` only: the most keyed tasks in flight at once, from the log.
    key_peak: Option<i64>,
    /// `on` only: ms from the first submission to the priority change.
    priority_changed_ms: Option<f64>,
}

pub(crate) async fn run(args: FairnessArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.jobs >= 2, "--jobs must be at least 2");
    anyhow::ensure!(
        args.tasks >= args.jobs,
        "--tasks must be at least --jobs ({})",
        args.jobs
    );
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    eprintln!(
        "bench fairness: {} {} tasks over {} jobs, worker concurrency {}, key limit {}, {} rounds",
        args.tasks, args.handler, args.jobs, args.concurrency, args.key_limit, args.rounds
    );
    let (mut none, mut on) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        for arm in arm_order(round) {
            let r = one_arm(&args, arm)
                .await
                .with_context(|| format!("round {round}, arm {}", arm.name()))?;
            eprintln!(
                "round {round}, {:>4}: {:.0} tasks/s, CPU/task {:.3} ms shoal + {:.3} ms postgres, \
                 load {:.2}{}",
                arm.name(),
                r.tasks_per_second,
                r.shoal_cpu_ms_per_task,
                r.postgres_cpu_ms_per_task,
                r.load_1m,
                match (r.key_peak, r.priority_changed_ms) {
                    (Some(peak), Some(ms)) => format!(
                        ", keyed tasks in flight at most {peak} (limit {}), priority changed after {ms:.0} ms",
                        args.key_limit
                    ),
                    _ => String::new(),
                }
            );
            match arm {
                Arm::None => none.push(r),
                Arm::On => on.push(r),
            }
        }
    }
    report(&args, &none, &on);
    Ok(())
}

async fn one_arm(args: &FairnessArgs, arm: Arm) -> anyhow::Result<Run> {
    let plans = plan(arm, args.tasks, args.jobs);
    let config = default_worker_args().config(args.concurrency)?;
    let rig = Rig::start(&args.database_url, "shoal_bench_fairness", config).await?;
    // As the APIs wire it: a priority is given to the queue too.
    let service = CommandService::new(rig.platform.log.clone(), Limits::default())
        .with_queue(rig.platform.queue.clone());
    if arm == Arm::On {
        service
            .set_limit(LimitKind::Key, KEY.into(), Some(args.key_limit), None)
            .await?;
    }

    let cpu_before = CpuTime::now();
    let started = Instant::now();
    let mut jobs: Vec<JobId> = Vec::new();
    for job in &plans {
        let input = SubmitJobInput {
            job_type: args.handler.clone(),
            split: Split::Total {
                total_tasks: job.tasks,
            },
            parameters: json!({ KEY_PARAMETER: KEY }),
            max_attempts: None,
            timeout_seconds: None,
            idempotency_key: None,
            fallback_handler: None,
            priority: job.priority,
        };
        let concurrency = JobConcurrency {
            max_concurrency: None,
            concurrency_key: job.keyed.then(|| KEY_PARAMETER.to_owned()),
        };
        jobs.push(
            service
                .submit_job_with(input, concurrency)
                .await?
                .job
                .job_id,
        );
    }

    let deadline = started + Duration::from_secs(args.timeout_seconds);
    let log = rig.platform.log.clone();
    let mut ends = JobEnds::new(&jobs);
    let mut completed = vec![false; jobs.len()];
    let mut priority_changed_ms = None;
    while !ends.all_done() {
        for i in ends.poll(log.as_ref()).await? {
            completed[i] = true;
        }
        if arm == Arm::On
            && priority_changed_ms.is_none()
            && completed.iter().any(|c| *c)
            && let Some(target) = priority_change_target(&plans, &completed)
        {
            service
                .set_job_priority(jobs[target], RAISED_PRIORITY)
                .await
                .with_context(|| format!("raising the priority of job {target}"))?;
            priority_changed_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        }
        ends.sleep_before(deadline).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = CpuTime::now().since(cpu_before);
    let load_1m = rig.load_1m;

    let (bench_db, stats) = rig.stop().await?;
    check_every_task_logged(&bench_db.e2e_log_summary().await?, args.tasks, &stats)?;
    let keyed: Vec<String> = plans
        .iter()
        .zip(&jobs)
        .filter(|(p, _)| p.keyed)
        .map(|(_, j)| j.to_string())
        .collect();
    let keyed_tasks: u32 = plans.iter().filter(|p| p.keyed).map(|p| p.tasks).sum();
    let released = bench_db.task_released().await?;
    anyhow::ensure!(
        released == i64::from(keyed_tasks),
        "the log holds {released} TaskReleased, not one per keyed task ({keyed_tasks})"
    );
    let key_peak = if arm == Arm::On {
        let peak = peak_in_flight(bench_db.in_flight_deltas(&keyed).await?);
        anyhow::ensure!(
            peak <= args.key_limit,
            "{peak} keyed tasks were in flight at once, above the limit {}",
            args.key_limit
        );
        anyhow::ensure!(
            priority_changed_ms.is_some(),
            "no priority was changed during the run"
        );
        Some(peak)
    } else {
        None
    };
    if !args.keep {
        bench_db.drop().await?;
    }
    let tasks = f64::from(args.tasks);
    Ok(Run {
        tasks_per_second: tasks / elapsed,
        shoal_cpu_ms_per_task: cpu.shoal_ms / tasks,
        postgres_cpu_ms_per_task: cpu.postgres_ms / tasks,
        load_1m,
        key_peak,
        priority_changed_ms,
    })
}

fn report(args: &FairnessArgs, none: &[Run], on: &[Run]) {
    let samples = |runs: &[Run], f: Figure| Samples(runs.iter().map(f).collect());
    let cell = |s: &Samples, decimals: usize| {
        let (lo, hi) = s.range();
        format!("{:.d$} [{lo:.d$}-{hi:.d$}]", s.median(), d = decimals)
    };
    // The arms of a round ran one right after the other: their ratio is the paired figure.
    let ratio = |f: Figure| Samples(none.iter().zip(on).map(|(n, o)| f(o) / f(n)).collect());
    let on_plan = plan(Arm::On, args.tasks, args.jobs);
    let priorities: Vec<String> = on_plan
        .iter()
        .map(|p| p.priority.unwrap_or(0).to_string())
        .collect();
    let keyed = on_plan.iter().filter(|p| p.keyed).count();
    println!(
        "\n## shoal-bench fairness --tasks {} --jobs {} --handler {} --key-limit {} ({} rounds; medians [min-max])\n",
        args.tasks,
        args.jobs,
        args.handler,
        args.key_limit,
        none.len()
    );
    println!(
        "{} tasks over {} concurrent jobs in each arm; worker concurrency {} (other settings: \
         `shoal worker`'s defaults); SQL queue; orchestrator and worker in one process. `on`: \
         priorities {}, {keyed} of the jobs keyed with a limit of {} on their key, and the \
         lowest-priority job raised to {RAISED_PRIORITY} when the first job completes.\n",
        args.tasks,
        args.jobs,
        args.concurrency,
        priorities.join(", "),
        args.key_limit,
    );
    println!("| measurement | none | on | on / none (same round) |");
    println!("|---|---|---|---|");
    let rows: [(&str, Figure, usize); 4] = [
        (
            "throughput, first submit to last `JobCompleted`, tasks/s",
            |r| r.tasks_per_second,
            0,
        ),
        (
            "CPU per task, shoal process, ms",
            |r| r.shoal_cpu_ms_per_task,
            3,
        ),
        (
            "CPU per task, all postgres processes, ms",
            |r| r.postgres_cpu_ms_per_task,
            3,
        ),
        (
            "CPU per task, both, ms",
            |r| r.shoal_cpu_ms_per_task + r.postgres_cpu_ms_per_task,
            3,
        ),
    ];
    for (what, f, decimals) in rows {
        println!(
            "| {what} | {} | {} | {} |",
            cell(&samples(none, f), decimals),
            cell(&samples(on, f), decimals),
            cell(&ratio(f), 3),
        );
    }
    println!(
        "| load average (1 min) at the start of an arm | {} | {} | |",
        cell(&samples(none, |r| r.load_1m), 2),
        cell(&samples(on, |r| r.load_1m), 2),
    );
    println!(
        "| keyed tasks in flight at most (log order; limit {}) | | {} | |",
        args.key_limit,
        cell(
            &samples(on, |r| r.key_peak.map_or(f64::NAN, |p| p as f64)),
            0
        ),
    );
    println!(
        "| priority change, ms after the first submission | | {} | |",
        cell(
            &samples(on, |r| r.priority_changed_ms.unwrap_or(f64::NAN)),
            0
        ),
    );
    let throughput = samples(on, |r| r.tasks_per_second).median()
        / samples(none, |r| r.tasks_per_second).median();
    println!(
        "\nThroughput on / none: {:.3} (median of the paired ratios), {throughput:.3} (ratio of \
         the medians). Every arm's log held exactly {} `TaskCompleted` on as many task streams, \
         and as many `TaskStarted` and `TaskEnqueued`; the `on` arm one `TaskReleased` per keyed \
         task, the `none` arm none.",
        ratio(|r| r.tasks_per_second).median(),
        args.tasks
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tasks_are_split_evenly_and_only_the_on_arm_has_priorities_and_keys() {
        let none = plan(Arm::None, 10, 4);
        assert_eq!(
            none.iter().map(|p| p.tasks).collect::<Vec<_>>(),
            [3, 3, 2, 2]
        );
        assert!(none.iter().all(|p| p.priority.is_none() && !p.keyed));

        let on = plan(Arm::On, 10, 4);
        assert_eq!(on.iter().map(|p| p.tasks).collect::<Vec<_>>(), [3, 3, 2, 2]);
        assert_eq!(
            on.iter().map(|p| p.priority).collect::<Vec<_>>(),
            [Some(30), Some(20), Some(10), Some(0)]
        );
        assert_eq!(
            on.iter().map(|p| p.keyed).collect::<Vec<_>>(),
            [false, true, false, true]
        );
        assert_eq!(
            plan(Arm::On, 20_000, 4)
                .iter()
                .map(|p| p.tasks)
                .sum::<u32>(),
            20_000
        );
        assert_eq!(
            plan(Arm::None, 20_001, 3)
                .iter()
                .map(|p| p.tasks)
                .sum::<u32>(),
            20_001
        );
    }

    #[test]
    fn the_lowest_priority_job_still_running_is_raised() {
        let on = plan(Arm::On, 100, 4);
        assert_eq!(
            priority_change_target(&on, &[true, false, false, false]),
            Some(3)
        );
        assert_eq!(
            priority_change_target(&on, &[true, false, false, true]),
            Some(2)
        );
        assert_eq!(priority_change_target(&on, &[true; 4]), None);
        // At equal priorities, the last job.
        let none = plan(Arm::None, 100, 3);
        assert_eq!(
            priority_change_target(&none, &[true, false, false]),
            Some(2)
        );
    }

    #[test]
    fn arms_alternate_which_goes_first() {
        assert_eq!(arm_order(1), [Arm::None, Arm::On]);
        assert_eq!(arm_order(2), [Arm::On, Arm::None]);
        assert_eq!(arm_order(3), [Arm::None, Arm::On]);
    }

    #[test]
    fn the_peak_is_the_highest_running_sum() {
        assert_eq!(peak_in_flight([]), 0);
        assert_eq!(peak_in_flight([1, 1, -1, 1, 1, -1, -1, -1]), 3);
        assert_eq!(peak_in_flight([-1, 1]), 0);
    }
}
