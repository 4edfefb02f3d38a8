//! `shoal projector run | status | rebuild <jobs|analytics>`.

use std::time::{Duration, Instant};

use clap::Subcommand;
use shoal_infra::db::Database;
use shoal_infra::readmodel::{JobFilter, JobSort};
use shoal_projector::{ProjectionName, Projector};

use crate::roles::{DatabaseArgs, ProjectorArgs, Shutdown};

#[derive(Debug, Subcommand)]
pub enum ProjectorCmd {
    /// Keep the read tables up to date with the log until Ctrl-C or SIGTERM.
    Run {
        #[command(flatten)]
        db: DatabaseArgs,
        /// Where `/metrics` (lag per projection) and `/health/live|ready` are served.
        #[arg(long, env = "SHOAL_ADMIN_LISTEN", default_value = "127.0.0.1:9466")]
        admin_listen: std::net::SocketAddr,
        #[command(flatten)]
        projector: ProjectorArgs,
    },
    /// Print each projection's checkpoint and how far it is behind the log.
    Status(DatabaseArgs),
    /// Replay the whole log into fresh tables of one projection and swap them in atomically,
    /// while queries keep being served from the old ones (progress on stderr).
    Rebuild {
        /// `jobs` (tables jobs, tasks, task_attempts) or `analytics`.
        projection: ProjectionName,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

async fn open(db: &DatabaseArgs, args: &ProjectorArgs) -> anyhow::Result<(Database, Projector)> {
    let database = db.open().await?;
    let projector = Projector::new(
        args.config(&database),
        database.event_log(),
        database.clone(),
    );
    Ok((database, projector))
}

pub async fn run(cmd: ProjectorCmd) -> anyhow::Result<()> {
    match cmd {
        ProjectorCmd::Run {
            db,
            admin_listen,
            projector,
        } => {
            let (database, projector) = open(&db, &projector).await?;
            let shutdown = Shutdown::on_signals()?;
            eprintln!("shoal projector running (jobs, analytics); Ctrl-C or SIGTERM stops");
            let admin = crate::admin::spawn(
                admin_listen,
                crate::admin::Admin::new(database.clone()).source(std::sync::Arc::new(
                    shoal_projector::metrics::LagSource(projector.clone()),
                )),
                shutdown.clone(),
            );
            projector.run(shutdown.wait()).await?;
            admin.await?;
            database.close().await;
            eprintln!("shoal projector stopped");
        }
        ProjectorCmd::Status(db) => {
            let (database, projector) = open(&db, &ProjectorArgs::default()).await?;
            let statuses = projector.status().await?;
            println!(
                "{:<10} {:>22} {:>22} {:>12} {:>7}  rebuild",
                "projection", "checkpoint", "head", "lag (events)", "parked"
            );
            let at = |p: shoal_infra::eventlog::LogPosition| format!("{}/{}", p.commit, p.position);
            let mut parked = Vec::new();
            for s in statuses {
                println!(
                    "{:<10} {:>22} {:>22} {:>12} {:>7}  {}",
                    s.name.as_str(),
                    at(s.checkpoint),
                    at(s.head),
                    s.lag_events,
                    s.parked_events,
                    s.rebuild
                        .map_or("-".to_owned(), |p| format!("in progress at {}", at(p))),
                );
                if let Some(last) = s.last_parked {
                    parked.push(format!(
                        "{}: {} event(s) parked (the database refused their effect), the latest \
                         at {}; see table projection_parked_events and docs/limits.md",
                        s.name.as_str(),
                        s.parked_events,
                        at(last)
                    ));
                }
            }
            for line in parked {
                println!("{line}");
            }
            database.close().await;
        }
        ProjectorCmd::Rebuild { projection, db } => {
            let (database, projector) = open(&db, &ProjectorArgs::default()).await?;
            eprintln!("rebuilding {projection} from the whole log; queries keep being served");
            let mut shown = Instant::now();
            let report = projector
                .rebuild(projection, |p| {
                    if shown.elapsed() >= Duration::from_millis(500) {
                        shown = Instant::now();
                        let percent = if p.total_estimate > 0 {
                            (p.events as f64 * 100.0 / p.total_estimate as f64).min(100.0)
                        } else {
                            100.0
                        };
                        eprintln!(
                            "  {projection}: {} / ~{} events ({percent:.0}%)",
                            p.events, p.total_estimate
                        );
                    }
                })
                .await?;
            eprintln!(
                "rebuilt {projection}: {} events in {:.1}s ({:.0} events/s), swapped in at {}/{}",
                report.events,
                report.elapsed.as_secs_f64(),
                report.events as f64 / report.elapsed.as_secs_f64().max(1e-9),
                report.position.commit,
                report.position.position,
            );
            let store = projector.store();
            match projection {
                ProjectionName::Jobs => {
                    let (_, jobs) = store
                        .page_jobs(&JobFilter::default(), JobSort::Newest, 1, 1)
                        .await?;
                    println!("jobs: {jobs}");
                }
                ProjectionName::Analytics => {
                    let o = store.overview().await?;
                    println!(
                        "jobs: {} (completed {}, failed {}, running {}, pending {}, cancelled {})",
                        o.total_jobs,
                        o.completed_jobs,
                        o.failed_jobs,
                        o.running_jobs,
                        o.pending_jobs,
                        o.cancelled_jobs
                    );
                    println!(
                        "tasks: {} (completed {}, failed {}, running {}, pending {}, retrying {})",
                        o.total_tasks,
                        o.completed_tasks,
                        o.failed_tasks,
                        o.running_tasks,
                        o.pending_tasks,
                        o.retrying_tasks
                    );
                    println!(
                        "processing time: avg {:.3}s, total {:.3}s",
                        o.avg_processing_time_seconds, o.total_processing_time_seconds
                    );
                }
            }
            database.close().await;
        }
    }
    Ok(())
}
