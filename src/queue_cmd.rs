//! `shoal sqs ...` and `shoal dead-letters ...`: creating SQS queues, and listing and
//! redriving dead letters from the command line (the same [`CommandService`] calls as GraphQL).

use anyhow::Context;
use clap::{Args, Subcommand};
use shoal_command_api::commands::{CommandService, MAX_DEAD_LETTER_LIMIT};
use shoal_domain::{JobId, Limits};
use shoal_infra::queue::{SqsCalls, client_from_env, init_queues};

use crate::roles::{DatabaseArgs, Platform, QueueArgs};

#[derive(Debug, Subcommand)]
pub enum SqsCmd {
    /// Create (or update) an SQS queue and its dead-letter queue `<NAME>-dlq` with a redrive
    /// policy, and print the queue URL (for `--queue`). Uses the standard AWS chain
    /// (`AWS_ENDPOINT_URL` for an emulator such as moto).
    Init(SqsInitArgs),
}

#[derive(Debug, Args)]
pub struct SqsInitArgs {
    /// The queue's name (a standard queue, not `.fifo`).
    #[arg(long)]
    pub name: String,
    /// Receives without success after which SQS moves a message to the dead-letter queue.
    #[arg(long, default_value_t = 5)]
    pub max_receives: u32,
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCmd {
    /// List the dead letters, oldest first.
    List(DeadLettersArgs),
    /// Send dead letters back: FAILED tasks get another attempt (a manual retry in their
    /// history) and their dead letters are removed; poison messages are left.
    Redrive(DeadLettersArgs),
}

#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Only this job's dead letters.
    #[arg(long = "job")]
    pub job: Option<String>,
    /// Most dead letters listed.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

pub async fn sqs(cmd: SqsCmd) -> anyhow::Result<()> {
    match cmd {
        SqsCmd::Init(args) => {
            let client = client_from_env().await?;
            let (queue_url, dlq_url) = init_queues(&client, &args.name, args.max_receives)
                .await
                .with_context(|| format!("creating the SQS queue {:?}", args.name))?;
            eprintln!(
                "SQS queue ready, dead-lettering to {dlq_url} after {} receives.\n\
                 Use it with:  shoal dev --queue {queue_url}   (or shoal worker / orchestrator --queue ...)",
                args.max_receives.max(1)
            );
            println!("{queue_url}");
            Ok(())
        }
    }
}

pub async fn dead_letters(cmd: DeadLettersCmd) -> anyhow::Result<()> {
    let (args, redrive) = match cmd {
        DeadLettersCmd::List(args) => (args, false),
        DeadLettersCmd::Redrive(args) => (args, true),
    };
    let job = args
        .job
        .as_deref()
        .map(|id| JobId::parse(id).map_err(|_| anyhow::anyhow!("--job {id:?} is not a job id")))
        .transpose()?;
    let platform = Platform::connect(&args.db, &args.queue).await?;
    let service = CommandService::new(platform.log.clone(), Limits::default())
        .with_queue(platform.queue.clone());
    let result = if redrive {
        redrive_letters(&service, job).await
    } else {
        list_letters(&service, job, args.limit.min(MAX_DEAD_LETTER_LIMIT)).await
    };
    platform.database.close().await;
    result
}

async fn list_letters(
    service: &CommandService,
    job: Option<JobId>,
    limit: u32,
) -> anyhow::Result<()> {
    let letters = service
        .dead_letters(job, limit)
        .await
        .map_err(command_error)?;
    for letter in &letters {
        let id = |id: Option<uuid::Uuid>| id.map_or_else(|| "-".to_owned(), |id| id.to_string());
        println!(
            "{}\tjob {}\ttask {}\t{}",
            letter.dead_lettered_at.to_rfc3339(),
            id(letter.job_id),
            id(letter.task_id),
            letter.reason.replace(['\n', '\t'], " ")
        );
    }
    eprintln!("{} dead letter(s)", letters.len());
    Ok(())
}

async fn redrive_letters(service: &CommandService, job: Option<JobId>) -> anyhow::Result<()> {
    let outcome = service
        .redrive_dead_letters(job)
        .await
        .map_err(command_error)?;
    println!(
        "redriven {}\nresent {}\nremoved {}\nskipped {}",
        outcome.redriven, outcome.resent, outcome.removed, outcome.skipped
    );
    Ok(())
}

/// A command error with its causes (the CLI is not a client to hide details from).
fn command_error(error: shoal_command_api::commands::CommandError) -> anyhow::Error {
    anyhow::anyhow!("{}", shoal_api::error::Chain(&error))
}

/// The SQS calls a worker made, for its exit message: per message deleted (handled).
pub fn calls_summary(calls: &SqsCalls) -> String {
    let per_task = if calls.messages_deleted == 0 {
        "n/a".to_owned()
    } else {
        format!(
            "{:.2}",
            calls.total() as f64 / calls.messages_deleted as f64
        )
    };
    format!(
        "SQS calls: {} ({per_task} per message handled): {}",
        calls.total(),
        serde_json::to_string(calls).unwrap_or_default()
    )
}
