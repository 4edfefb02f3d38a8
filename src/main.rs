//! The `shoal` binary: parses the command line and wires the roles together (with the role
//! wiring of this package's library, `shoal::roles`). No logic of its own lives here.

mod projector_cmd;
mod queue_cmd;
mod sfn_cmd;
mod token_cmd;
mod web;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use roles::{
    ApiArgs, DatabaseArgs, OrchestratorArgs, Platform, ProjectorArgs, QueueArgs, Shutdown,
    WorkerArgs,
};
use shoal::admin::{self, Admin};
use shoal::{graphql, roles, telemetry};
use shoal_command_api::orchestrator::prometheus;

#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "Shoal: an event-sourced job orchestration platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    telemetry: telemetry::TelemetryArgs,
}

// Parsed once at start-up: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything in one process: database, queue, orchestrator, workers and the APIs.
    Dev(DevArgs),
    /// Create or upgrade the database schema (embedded migrations).
    Migrate(DatabaseArgs),
    /// Run a worker that takes tasks from the queue.
    Worker(WorkerCmd),
    /// The projector that builds the read tables from the log: run it, see where it is, or
    /// rebuild a projection.
    #[command(subcommand)]
    Projector(projector_cmd::ProjectorCmd),
    /// Print the GraphQL schema (SDL) of `shoal serve` (committed as docs/schema.graphql).
    Schema,
    /// Run the orchestrator that drives jobs through their lifecycle (one leader at a time;
    /// start several for failover).
    Orchestrator(OrchestratorCmd),
    /// Serve the GraphQL API.
    Serve(ServeArgs),
    /// AWS SQS queues (see docs/sqs.md).
    #[command(subcommand)]
    Sqs(queue_cmd::SqsCmd),
    /// API tokens: create, list, revoke (see docs/auth.md).
    #[command(subcommand)]
    Token(token_cmd::TokenCmd),
    /// List or redrive the task queue's dead letters.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(queue_cmd::DeadLettersCmd),
    /// AWS Step Functions: the job state machine of `--driver stepfunctions` (see
    /// docs/stepfunctions.md).
    #[command(subcommand)]
    Sfn(sfn_cmd::SfnCmd),
}

#[derive(Debug, Args)]
struct DevArgs {
    /// Where the APIs listen (port 0: a free port, named in the banner).
    #[arg(long, env = "SHOAL_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    queue: QueueArgs,
    /// Tasks run at once by the in-process workers; 0 runs none (use `shoal worker`).
    #[arg(long, env = "SHOAL_WORKERS", default_value_t = 16)]
    workers: usize,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    orchestrator: OrchestratorArgs,
    #[command(flatten)]
    driver: sfn_cmd::DriverArgs,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    projector: ProjectorArgs,
}

#[derive(Debug, Args)]
struct WorkerCmd {
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    queue: QueueArgs,
    /// Tasks run at once by this process.
    #[arg(long, env = "SHOAL_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    #[command(flatten)]
    worker: WorkerArgs,
    /// Where `/metrics` and `/health/live|ready` of this worker are served.
    #[arg(long, env = "SHOAL_ADMIN_LISTEN", default_value = "127.0.0.1:9465")]
    admin_listen: SocketAddr,
}

#[derive(Debug, Args)]
struct OrchestratorCmd {
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    queue: QueueArgs,
    /// Where `GET /metrics` (Prometheus: queue depth for autoscaling) and `/health/live|ready`
    /// are served.
    #[arg(long, env = "SHOAL_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    metrics_listen: SocketAddr,
    #[command(flatten)]
    orchestrator: OrchestratorArgs,
    #[command(flatten)]
    driver: sfn_cmd::DriverArgs,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Where the APIs listen.
    #[arg(long, env = "SHOAL_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    projector: ProjectorArgs,
}

/// jemalloc instead of glibc's malloc: less CPU per task at the same memory (ADR 25), with one
/// arena (`.cargo/config.toml`, ADR 34).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = match telemetry::init(&cli.telemetry) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Migrate(db) => migrate(&db).await,
        Command::Sqs(cmd) => queue_cmd::sqs(cmd).await,
        Command::Token(cmd) => token_cmd::run(cmd).await,
        Command::DeadLetters(cmd) => queue_cmd::dead_letters(cmd).await,
        Command::Sfn(cmd) => sfn_cmd::run(cmd).await,
        Command::Dev(args) => dev(args).await,
        Command::Worker(args) => worker(args).await,
        Command::Projector(cmd) => projector_cmd::run(cmd).await,
        Command::Schema => {
            print!("{}", graphql::sdl());
            Ok(())
        }
        Command::Orchestrator(args) => orchestrator(args).await,
        Command::Serve(args) => serve(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let worker_config = (args.workers > 0)
        .then(|| args.worker.config(args.workers))
        .transpose()?;
    let platform = if worker_config.is_some() {
        Platform::connect_for_workers(&args.db, &args.queue).await?
    } else {
        Platform::connect(&args.db, &args.queue).await?
    };
    let shutdown = Shutdown::on_signals()?;
    let orchestrator = roles::orchestrator(&platform, &args.orchestrator)?;
    let orchestrator = args.driver.apply(orchestrator).await?;
    let mut admin = Admin::new(platform.database.clone()).needs_queue(platform.queue.clone());
    for source in prometheus::sources(&orchestrator.metrics()) {
        admin = admin.source(source);
    }
    let orchestrating = tokio::spawn(orchestrator.run(shutdown.clone().wait()));
    let projector = roles::projector(&platform, &args.projector);
    admin = admin.source(Arc::new(shoal_projector::metrics::LagSource(
        projector.clone(),
    )));
    let projecting = {
        let (projector, shutdown) = (projector.clone(), shutdown.clone());
        tokio::spawn(async move { projector.run(shutdown.wait()).await })
    };
    let working = worker_config.map(|config| {
        let worker = roles::worker(&platform, config);
        admin = admin
            .clone()
            .source(Arc::new(shoal_worker::telemetry::WorkerSource::new(
                worker.metrics(),
            )));
        tokio::spawn(worker.run(shutdown.clone().wait()))
    });
    let web_dir = args.api.web_dir.clone();
    // Bound before anything names the address: with port 0 the system picks a free one, which
    // the router (its allowed hosts) and the banner below then name.
    let listener = roles::bind(args.listen).await?;
    let listen = listener.local_addr()?;
    let router = roles::api_router(&platform, &args.api, &projector, listen, |api| {
        web::with_dashboard(api.merge(admin.router()), web_dir)
    })?;
    let internal = internal_listener(&platform, &args.api, &shutdown)?;
    let serving = tokio::spawn(roles::serve_on(listener, router, shutdown.clone()));

    let url = format!("http://{listen}/graphql");
    eprintln!(
        "\nShoal is running: {db}, {queue} queue, {workers}, {driver}.\n\n  \
         Dashboard:          http://{listen}/\n  \
         GraphQL + GraphiQL: {url}\n  \
         REST API (original):  http://{listen}/api/v1/jobs  (docs: http://{listen}/docs)\n\n\
         Open GraphiQL and submit a first job:\n\n  \
         mutation {{ submitJob(input: {{jobType: \"noop\", totalTasks: 1000}}) {{ id status }} }}\n\n\
         then follow it with  query {{ job(id: \"<id>\") {{ status totalTasks tasksCreated }} }}\n\
         (or from a shell: curl -s {url} -H 'content-type: application/json' \\\n   \
         -d '{{\"query\":\"mutation {{ submitJob(input: {{jobType: \\\"noop\\\", totalTasks: 1000}}) {{ id status }} }}\"}}')\n\n\
         Auth: {auth}.\n\
         Ctrl-C stops; a restart resumes unfinished jobs.\n",
        auth = args.api.auth.describe(),
        db = redact(&args.db.database_url),
        queue = args.queue.queue,
        driver = args.driver.describe(),
        workers = match args.workers {
            0 => "no in-process workers (run `shoal worker`)".to_string(),
            n => format!("{n} in-process worker slots"),
        },
    );

    let served = serving.await?;
    if let Some(internal) = internal {
        internal.await??;
    }
    let orchestrated = orchestrating.await?;
    let projected = projecting.await?;
    if let Some(working) = working {
        let stats = working.await??;
        tracing::info!(?stats, "workers stopped");
    }
    platform.database.close().await;
    served?;
    orchestrated?;
    projected?;
    Ok(())
}

async fn worker(args: WorkerCmd) -> anyhow::Result<()> {
    let config = args.worker.config(args.concurrency)?;
    let platform = Platform::connect_for_workers(&args.db, &args.queue).await?;
    let shutdown = Shutdown::on_signals()?;
    eprintln!(
        "shoal worker {} running up to {} tasks at once from the {} queue",
        config.worker_id, config.concurrency, args.queue.queue
    );
    let worker = roles::worker(&platform, config);
    let admin = admin::spawn(
        args.admin_listen,
        Admin::new(platform.database.clone())
            .needs_queue(platform.queue.clone())
            .source(Arc::new(shoal_worker::telemetry::WorkerSource::new(
                worker.metrics(),
            ))),
        shutdown.clone(),
    );
    let stats = worker.run(shutdown.wait()).await?;
    admin.await?;
    eprintln!("shoal worker stopped: {stats:?}");
    if let Some(sqs) = &platform.sqs {
        eprintln!("{}", queue_cmd::calls_summary(&sqs.calls().snapshot()));
    }
    platform.database.close().await;
    Ok(())
}

async fn orchestrator(args: OrchestratorCmd) -> anyhow::Result<()> {
    let platform = Platform::connect(&args.db, &args.queue).await?;
    let shutdown = Shutdown::on_signals()?;
    eprintln!("shoal orchestrator running (standby until it holds the leader lock)");
    let orchestrator = roles::orchestrator(&platform, &args.orchestrator)?;
    let orchestrator = args.driver.apply(orchestrator).await?;
    let mut admin = Admin::new(platform.database.clone());
    for source in prometheus::sources(&orchestrator.metrics()) {
        admin = admin.source(source);
    }
    // Metrics are not worth stopping the orchestrator for (e.g. a second one on the host).
    let listen = args.metrics_listen;
    let metrics_server = admin::spawn(listen, admin, shutdown.clone());
    eprintln!("metrics (Prometheus) at http://{listen}/metrics");
    orchestrator.run(shutdown.wait()).await?;
    metrics_server.await?;
    platform.database.close().await;
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let platform = Platform::connect(&args.db, &args.queue).await?;
    let shutdown = Shutdown::on_signals()?;
    eprintln!(
        "shoal serve: GraphQL at http://{0}/graphql, REST at http://{0}/api/v1 (docs: http://{0}/docs)",
        args.listen
    );
    // The projector runs in-process, so subscriptions hear of commits at once (another
    // `shoal projector run` may run too: checkpoints are fenced, each batch is applied once).
    let projector = roles::projector(&platform, &args.projector);
    let projecting = {
        let (projector, shutdown) = (projector.clone(), shutdown.clone());
        tokio::spawn(async move { projector.run(shutdown.wait()).await })
    };
    let admin = Admin::new(platform.database.clone())
        .source(Arc::new(shoal_infra::telemetry::queue::QueueSource::new(
            platform.queue.clone(),
        )))
        .source(Arc::new(shoal_projector::metrics::LagSource(
            projector.clone(),
        )));
    let web_dir = args.api.web_dir.clone();
    let router = roles::api_router(&platform, &args.api, &projector, args.listen, |api| {
        web::with_dashboard(api.merge(admin.router()), web_dir)
    })?;
    eprintln!("auth: {}", args.api.auth.describe());
    let internal = internal_listener(&platform, &args.api, &shutdown)?;
    roles::serve(args.listen, router, shutdown).await?;
    if let Some(internal) = internal {
        internal.await??;
    }
    projecting.await??;
    platform.database.close().await;
    Ok(())
}

/// The `--internal-listen` listener, when asked for: the REST task transitions without tokens.
fn internal_listener(
    platform: &Platform,
    api: &ApiArgs,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let Some(listen) = api.internal_listen else {
        return Ok(None);
    };
    let router = roles::internal_router(platform, api, listen)?;
    eprintln!(
        "internal listener (REST task transitions, no tokens) at http://{listen}/api/v1/tasks/..."
    );
    Ok(Some(tokio::spawn(roles::serve(
        listen,
        router,
        shutdown.clone(),
    ))))
}

async fn migrate(db: &DatabaseArgs) -> anyhow::Result<()> {
    db.open().await?.close().await;
    eprintln!("database at {} is up to date", redact(&db.database_url));
    Ok(())
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
