//! The `shoal` binary: parses the command line and wires the roles together. No logic of its
//! own lives here beyond that (and the benchmark driver, which only calls the roles' APIs).

mod bench;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "Shoal: an event-sourced job orchestration platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the event log lives.
#[derive(Debug, Clone, Args)]
struct DatabaseArgs {
    /// `postgres://user@host:port/db`, or `sqlite:path` for the embedded mode.
    #[arg(
        long,
        env = "SHOAL_DATABASE_URL",
        default_value = "sqlite:shoal-dev.db"
    )]
    database_url: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything in one process: database, queue, orchestrator, workers, APIs, dashboard.
    Dev,
    /// Create or upgrade the database schema (embedded migrations).
    Migrate(DatabaseArgs),
    /// Run a worker that takes tasks from the queue.
    Worker,
    /// Run the projector that builds the read tables from the log.
    Projector,
    /// Run the orchestrator that drives jobs through their lifecycle.
    Orchestrator,
    /// Serve the GraphQL and REST APIs and the dashboard.
    Serve,
    /// Run a benchmark (see docs/benchmarks.md).
    Bench(bench::BenchArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let cli = Cli::parse();
    let result = match cli.command {
        Command::Migrate(db) => migrate(&db).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Dev => not_yet("dev"),
        Command::Worker => not_yet("worker"),
        Command::Projector => not_yet("projector"),
        Command::Orchestrator => not_yet("orchestrator"),
        Command::Serve => not_yet("serve"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn not_yet(name: &str) -> anyhow::Result<()> {
    anyhow::bail!("`shoal {name}` is not available yet in this version of Shoal")
}

async fn migrate(db: &DatabaseArgs) -> anyhow::Result<()> {
    shoal_infra::db::migrate(&db.database_url)
        .await?
        .close()
        .await;
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
