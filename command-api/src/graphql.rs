//! The GraphQL mutations (submit, cancel, retry failed tasks, set a job's priority), on top of
//! [`CommandService`].
//!
//! Every error a client can cause carries `extensions.code` (the domain's code:
//! `INVALID_INPUT`, `LIMIT_EXCEEDED`, `NOT_FOUND`, `INVALID_TRANSITION`, ...; `BAD_USER_INPUT`
//! for malformed ids and for requests the GraphQL layer itself rejects) and, when it is about an
//! input, `extensions.field` (the input field in GraphQL naming: `totalTasks`, `batchSize`, ...).
//! Infrastructure failures answer `INTERNAL` with a generic message and are logged once, here.
//!
//! The schema served here is [`CommandQuery`] + [`MutationRoot`]: the command API on its own.
//! `MutationRoot` and [`DeadLettersQuery`] are plain `Default` objects, so the `shoal` binary
//! combines them with query-api's roots into one schema. The enums both schemas use
//! (`JobStatus`) are `shoal_api::graphql`'s.

mod dead_letters;
mod depth;

pub use dead_letters::{DeadLetter, RedriveResult};
pub use depth::DepthLimit;

use async_graphql::http::GraphiQLSource;
use async_graphql::{
    Context, EmptySubscription, ErrorExtensions, ID, InputObject, Json, MergedObject, Object,
    Schema, ServerError, SimpleObject,
};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse};
use axum::Router;
use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde_json::Value;
use shoal_api::auth::Principal;
use shoal_api::error::Chain;
use shoal_api::graphql::{JobStatus, Limit, LimitKind, limits_of};
use shoal_domain::admission::JobConcurrency;
use shoal_domain::{JobId, TaskId};

use crate::commands::{
    CommandError, CommandService, JobSnapshot, RetryOutcome, SubmitJobInput as SubmitCommand,
    count, split_from_input,
};

pub use shoal_api::graphql::BAD_USER_INPUT;

/// Deepest query accepted, counted from a data root field (see [`DepthLimit`]).
pub const MAX_DEPTH: usize = 12;
/// Deepest introspection accepted: GraphiQL's schema query is 13 deep, so it cannot share
/// [`MAX_DEPTH`] (see [`DepthLimit`]).
pub const MAX_INTROSPECTION_DEPTH: usize = 16;
/// Most complex query accepted.
pub const MAX_COMPLEXITY: usize = 500;

/// The command API's schema.
pub type CommandSchema = Schema<CommandQuery, MutationRoot, EmptySubscription>;

/// The schema with `service` in its context, and the depth and complexity limits. (The depth
/// limit is [`DepthLimit`] rather than async-graphql's `limit_depth`, which would refuse
/// GraphiQL's introspection query.)
pub fn schema(service: CommandService) -> CommandSchema {
    Schema::build(CommandQuery::default(), MutationRoot, EmptySubscription)
        .data(service)
        .extension(DepthLimit {
            application: MAX_DEPTH,
            introspection: MAX_INTROSPECTION_DEPTH,
        })
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// The schema's SDL, for committing and checking it (needs no database).
pub fn sdl() -> String {
    Schema::build(CommandQuery::default(), MutationRoot, EmptySubscription)
        .finish()
        .sdl()
}

/// `POST /graphql` runs queries and mutations (single or batched); `GET /graphql` serves
/// GraphiQL.
pub fn router(schema: CommandSchema) -> Router {
    Router::new()
        .route("/graphql", get(graphiql).post(execute))
        .with_state(schema)
}

async fn execute(
    State(schema): State<CommandSchema>,
    request: GraphQLBatchRequest,
) -> GraphQLResponse {
    let mut response = schema.execute_batch(request.into_inner()).await;
    match &mut response {
        async_graphql::BatchResponse::Single(one) => tag_request_errors(&mut one.errors),
        async_graphql::BatchResponse::Batch(many) => {
            for one in many {
                tag_request_errors(&mut one.errors);
            }
        }
    }
    response.into()
}

/// Errors raised by async-graphql itself (parsing, validation, coercing an argument, limits)
/// have no code; they are all about the request the client sent: tags them `BAD_USER_INPUT`.
pub fn tag_request_errors(errors: &mut [ServerError]) {
    for error in errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", BAD_USER_INPUT);
        }
    }
}

async fn graphiql() -> impl IntoResponse {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
}

// ---------------------------------------------------------------------------------------------
// Types

/// A job, as its own event stream tells it. (Counts of tasks by status come from the read
/// model, on the query API.) Named `JobSnapshot` in GraphQL: query-api's read-model `Job` owns
/// that name in the combined schema.
#[derive(Debug, Clone)]
pub struct Job(pub JobSnapshot);

#[Object(name = "JobSnapshot")]
impl Job {
    /// The job's id (a UUID).
    async fn id(&self) -> ID {
        ID(self.0.job_id.to_string())
    }

    /// Which handler runs its tasks.
    async fn job_type(&self) -> &str {
        &self.0.job_type
    }

    /// Its status.
    async fn status(&self) -> JobStatus {
        self.0.status.into()
    }

    /// How many tasks it has.
    async fn total_tasks(&self) -> u32 {
        self.0.total_tasks
    }

    /// How many of its tasks exist so far (they are created in chunks after submission).
    async fn tasks_created(&self) -> u32 {
        self.0.tasks_created
    }

    /// Items per task, for a job of items.
    async fn batch_size(&self) -> Option<u32> {
        self.0.batch_size
    }

    /// The parameters every task receives (a JSON object).
    async fn parameters(&self) -> Json<&serde_json::Map<String, Value>> {
        Json(&self.0.parameters)
    }

    /// Attempts each task gets before it is FAILED.
    async fn max_attempts(&self) -> u32 {
        self.0.max_attempts
    }

    /// How long one attempt may run, in seconds.
    async fn timeout_seconds(&self) -> u32 {
        self.0.timeout_seconds
    }

    /// When it was submitted.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.submitted_at
    }

    /// When it last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// When it COMPLETED, FAILED or was CANCELLED; null while it is live.
    async fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.0.ended_at
    }

    /// The reason given when it was cancelled.
    async fn cancel_reason(&self) -> Option<&str> {
        self.0.cancel_reason.as_deref()
    }

    /// Its priority: higher runs first.
    async fn priority(&self) -> i32 {
        self.0.priority
    }
}

/// What `retryFailedTasks` did.
#[derive(Debug, SimpleObject)]
pub struct RetryResult {
    /// The job.
    pub job_id: ID,
    /// How many FAILED tasks were scheduled for another attempt.
    pub retried_tasks: u32,
    /// The job after the request (RUNNING again once the orchestrator picks it up).
    pub job: Job,
}

impl From<RetryOutcome> for RetryResult {
    fn from(outcome: RetryOutcome) -> Self {
        RetryResult {
            job_id: ID(outcome.job_id.to_string()),
            retried_tasks: outcome.retried_tasks,
            job: Job(outcome.job),
        }
    }
}

/// A job to submit: give `totalTasks` for that many identical tasks, or `items` (with
/// `batchSize`, default 1) for one task per batch of items.
#[derive(Debug, InputObject)]
#[graphql(name = "SubmitJobInput")]
pub struct SubmitJobInput {
    /// Which handler runs the tasks. May be empty.
    pub job_type: String,
    /// How many identical tasks (each gets `parameters`). Not with `items`.
    pub total_tasks: Option<i32>,
    /// Items to split into tasks of `batchSize` items (each task gets `parameters` plus its
    /// batch under `"items"`). Not with `totalTasks`.
    pub items: Option<Vec<Json<Value>>>,
    /// Items per task (default 1); only with `items`.
    pub batch_size: Option<i32>,
    /// A JSON object given to every task.
    pub parameters: Option<Json<Value>>,
    /// Attempts per task before it is FAILED. Default 3 (or the server's limit, if lower).
    pub max_attempts: Option<i32>,
    /// Timeout of one attempt in seconds. Default 300 (or the server's limit, if lower).
    pub timeout_seconds: Option<i32>,
    /// Submitting again with the same key returns the first job and creates nothing.
    pub idempotency_key: Option<String>,
    /// At most this many of the job's tasks running (admitted and not ended) at once, across
    /// every worker (1 to 1,000,000; default: no limit).
    pub max_concurrency: Option<i32>,
    /// The parameter whose value is the job's concurrency key (a tenant, an account): the
    /// limits set on that key with `setLimit` apply to the job. The parameter must exist and
    /// be a string, a number or a boolean.
    pub concurrency_key: Option<String>,
    /// Higher runs first: from -1000 to 1000, default 0. Jobs of the same priority share the
    /// workers fairly. Change it later with `setJobPriority`.
    pub priority: Option<i32>,
}

impl SubmitJobInput {
    fn concurrency(&self) -> JobConcurrency {
        JobConcurrency {
            max_concurrency: self.max_concurrency.map(i64::from),
            concurrency_key: self.concurrency_key.clone(),
        }
    }

    fn into_command(self) -> Result<SubmitCommand, CommandError> {
        let optional =
            |field, value: Option<i32>| value.map(|v| count(field, v.into())).transpose();
        Ok(SubmitCommand {
            split: split_from_input(
                self.total_tasks.map(i64::from),
                self.items
                    .map(|items| items.into_iter().map(|Json(item)| item).collect()),
                self.batch_size.map(i64::from),
            )?,
            job_type: self.job_type,
            parameters: self.parameters.map_or(Value::Null, |Json(p)| p),
            max_attempts: optional("max_attempts", self.max_attempts)?,
            timeout_seconds: optional("timeout_seconds", self.timeout_seconds)?,
            idempotency_key: self.idempotency_key,
            // A GraphQL job names its handler: no silent default (see `Handlers::select_for`).
            fallback_handler: None,
            priority: self.priority.map(i64::from),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Roots

/// The mutations. Reads the [`CommandService`] from the schema's context data.
#[derive(Debug, Default)]
pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Submits a job. It is accepted at once, PENDING, however many tasks it has; tasks are
    /// created and queued afterwards.
    async fn submit_job(
        &self,
        ctx: &Context<'_>,
        input: SubmitJobInput,
    ) -> async_graphql::Result<Job> {
        let service = service(ctx)?;
        let concurrency = input.concurrency();
        let command = input.into_command().map_err(|e| to_graphql(e, "id"))?;
        let submitted = service
            .submit_job_with(command, concurrency)
            .await
            .map_err(|e| to_graphql(e, "id"))?;
        Ok(Job(submitted.job))
    }

    /// Cancels a live job: no further tasks are created.
    async fn cancel_job(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
    ) -> async_graphql::Result<Job> {
        let service = service(ctx)?;
        let job_id = parse_job_id(&id, "id")?;
        let job = service
            .cancel_job(job_id, reason)
            .await
            .map_err(|e| to_graphql(e, "id"))?;
        Ok(Job(job))
    }

    /// Sets, changes or removes (both values null) the cluster-wide limit of a job type or of
    /// a concurrency key: at most `maxConcurrency` of its tasks admitted and not ended at once,
    /// at most `ratePerSecond` admitted per second. Recorded in the log (stream `limits`) with
    /// its actor; answers every limit now in force.
    async fn set_limit(
        &self,
        ctx: &Context<'_>,
        kind: LimitKind,
        name: String,
        max_concurrency: Option<i32>,
        rate_per_second: Option<f64>,
    ) -> async_graphql::Result<Vec<Limit>> {
        let service = service(ctx)?;
        let table = service
            .set_limit(
                kind.into(),
                name,
                max_concurrency.map(i64::from),
                rate_per_second,
            )
            .await
            .map_err(|e| to_graphql(e, "name"))?;
        Ok(limits_of(&table))
    }

    /// Sets a live job's priority, from -1000 to 1000 (higher runs first): its tasks waiting
    /// in the queue, and those queued later, are taken in the new order. Setting the priority
    /// the job already has changes nothing. Refused once the job has ended.
    async fn set_job_priority(
        &self,
        ctx: &Context<'_>,
        job_id: ID,
        priority: i32,
    ) -> async_graphql::Result<Job> {
        let service = service(ctx)?;
        let id = parse_job_id(&job_id, "jobId")?;
        let job = service
            .set_job_priority(id, i64::from(priority))
            .await
            .map_err(|e| to_graphql(e, "jobId"))?;
        Ok(Job(job))
    }

    /// Retries every FAILED task of the job, each with a fresh budget of attempts.
    async fn retry_failed_tasks(
        &self,
        ctx: &Context<'_>,
        job_id: ID,
    ) -> async_graphql::Result<RetryResult> {
        let service = service(ctx)?;
        let id = parse_job_id(&job_id, "jobId")?;
        let outcome = service
            .retry_failed_tasks(id)
            .await
            .map_err(|e| to_graphql(e, "jobId"))?;
        Ok(outcome.into())
    }

    /// Sends the dead letters (of one job, or all; with `taskIds`, only those of these tasks)
    /// back: each FAILED task gets another attempt (a manual retry, so its history shows it)
    /// and its dead letter is removed. Poison messages without a task are left (`skipped`).
    async fn redrive_dead_letters(
        &self,
        ctx: &Context<'_>,
        job_id: Option<ID>,
        task_ids: Option<Vec<ID>>,
    ) -> async_graphql::Result<RedriveResult> {
        let service = service(ctx)?;
        let id = job_id.map(|id| parse_job_id(&id, "jobId")).transpose()?;
        let tasks = task_ids
            .map(|ids| {
                if ids.len() > crate::commands::MAX_DEAD_LETTER_LIMIT as usize {
                    return Err(error_with(
                        format!(
                            "taskIds takes at most {} tasks",
                            crate::commands::MAX_DEAD_LETTER_LIMIT
                        ),
                        BAD_USER_INPUT,
                        Some("taskIds"),
                    ));
                }
                ids.iter()
                    .map(|id| {
                        TaskId::parse_any_form(id.as_str()).map_err(|_| {
                            error_with(
                                format!("{:?} is not a valid task id", id.as_str()),
                                BAD_USER_INPUT,
                                Some("taskIds"),
                            )
                        })
                    })
                    .collect::<Result<std::collections::HashSet<TaskId>, _>>()
            })
            .transpose()?;
        let outcome = service
            .redrive_dead_letters_of(id, tasks.as_ref())
            .await
            .map_err(|e| to_graphql(e, "jobId"))?;
        Ok(outcome.into())
    }
}

/// The query root of the command API alone: a job from its own event stream, and the dead
/// letters. The combined schema (the `shoal` binary) uses query-api's read-model queries plus
/// [`DeadLettersQuery`] instead.
#[derive(Debug, Default, MergedObject)]
pub struct CommandQuery(JobSnapshotQuery, DeadLettersQuery);

/// `job(id)` answered from the job's event stream.
#[derive(Debug, Default)]
pub struct JobSnapshotQuery;

#[Object]
impl JobSnapshotQuery {
    /// The job with this id, or null.
    async fn job(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Job>> {
        let service = service(ctx)?;
        let job_id = parse_job_id(&id, "id")?;
        match service.job_snapshot(job_id).await {
            Ok(job) => Ok(Some(Job(job))),
            Err(CommandError::NotFound(_)) => Ok(None),
            Err(other) => Err(to_graphql(other, "id")),
        }
    }
}

/// The dead-letter queries.
#[derive(Debug, Default)]
pub struct DeadLettersQuery;

#[Object]
impl DeadLettersQuery {
    /// Messages in the task queue's dead-letter queue, oldest first, optionally of one job
    /// (`limit`: default 100, at most 1000).
    async fn dead_letters(
        &self,
        ctx: &Context<'_>,
        job_id: Option<ID>,
        limit: Option<i32>,
    ) -> async_graphql::Result<Vec<DeadLetter>> {
        let service = service(ctx)?;
        let id = job_id.map(|id| parse_job_id(&id, "jobId")).transpose()?;
        let limit = match limit {
            None => crate::commands::DEFAULT_DEAD_LETTER_LIMIT,
            Some(limit) => u32::try_from(limit).map_err(|_| {
                error_with(
                    "limit must not be negative".to_owned(),
                    BAD_USER_INPUT,
                    Some("limit"),
                )
            })?,
        };
        let letters = service
            .dead_letters(id, limit)
            .await
            .map_err(|e| to_graphql(e, "jobId"))?;
        Ok(letters.into_iter().map(DeadLetter::from).collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// The command service, issuing commands as the request's token (its name is the actor).
fn service(ctx: &Context<'_>) -> async_graphql::Result<CommandService> {
    let service = ctx.data::<CommandService>().map_err(|_| {
        tracing::error!("the GraphQL schema has no CommandService in its context data");
        internal_error()
    })?;
    let actor = ctx.data_opt::<Principal>().map(|p| p.name.as_str());
    Ok(service.acting_as(actor))
}

fn parse_job_id(id: &ID, field: &'static str) -> async_graphql::Result<JobId> {
    JobId::parse(id).map_err(|_| {
        error_with(
            format!("{:?} is not a valid job id (a UUID)", id.as_str()),
            BAD_USER_INPUT,
            Some(field),
        )
    })
}

/// A command error as a GraphQL error. `id_field` names the argument holding the job id, for
/// errors about the job id. Infrastructure errors are logged here, once, and hidden.
fn to_graphql(error: CommandError, id_field: &'static str) -> async_graphql::Error {
    if let CommandError::Infrastructure(source) = &error {
        tracing::error!(error = %Chain(source), "command failed on infrastructure");
        return internal_error();
    }
    if matches!(error, CommandError::Conflict) {
        tracing::warn!("command gave up after repeated conflicts");
    }
    let field = error.field().map(|field| match field {
        "job_id" => id_field.to_owned(),
        other => camel_case(other),
    });
    error_with(error.to_string(), error.code(), field.as_deref())
}

fn internal_error() -> async_graphql::Error {
    error_with("internal error".to_owned(), crate::commands::INTERNAL, None)
}

fn error_with(message: String, code: &str, field: Option<&str>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, extensions| {
        extensions.set("code", code);
        if let Some(field) = field {
            extensions.set("field", field);
        }
    })
}

/// `total_tasks` -> `totalTasks`.
fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_in_graphql_naming() {
        assert_eq!(camel_case("total_tasks"), "totalTasks");
        assert_eq!(camel_case("timeout_seconds"), "timeoutSeconds");
        assert_eq!(camel_case("items"), "items");
    }

    #[test]
    fn sdl_has_the_mutations() {
        let sdl = sdl();
        for needle in [
            "submitJob(input: SubmitJobInput!): JobSnapshot!",
            "cancelJob(id: ID!, reason: String): JobSnapshot!",
            "retryFailedTasks(jobId: ID!): RetryResult!",
            "setLimit(kind: LimitKind!, name: String!, maxConcurrency: Int, ratePerSecond: Float): [Limit!]!",
            "setJobPriority(jobId: ID!, priority: Int!): JobSnapshot!",
            "redriveDeadLetters(jobId: ID, taskIds: [ID!]): RedriveResult!",
            "deadLetters(jobId: ID, limit: Int): [DeadLetter!]!",
            "CREATING_TASKS",
            "scalar JSON",
        ] {
            assert!(sdl.contains(needle), "{needle} missing from\n{sdl}");
        }
    }
}
