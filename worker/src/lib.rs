//! The worker runtime: receives task messages from a queue, appends `TaskStarted`, runs the
//! task's handler, appends `TaskCompleted` or `TaskFailed`, and only then acknowledges the
//! message. Built-in handlers and a library API to register your own.
//!
//! It never changes a task except through events appended with an expected version, so a
//! duplicate delivery can never complete a task twice. It must never decide anything the
//! domain (`shoal_domain::decide_task`) did not decide, nor touch SQL or AWS directly: the
//! event log and the queue come in as `shoal_infra` traits.
//!
//! # Writing a handler
//!
//! A handler implements [`Handler`]: it gets a [`TaskContext`] (ids, attempt, the task's
//! `parameters`) and returns a small JSON result, or a [`TaskError`] that says whether
//! another attempt may help.
//!
//! ```no_run
//! use std::sync::Arc;
//! use serde_json::{Value, json};
//! use shoal_worker::{Handler, Handlers, TaskContext, TaskError, Worker, WorkerConfig};
//!
//! struct Thumbnail;
//!
//! #[async_trait::async_trait]
//! impl Handler for Thumbnail {
//!     async fn handle(&self, task: &TaskContext) -> Result<Option<Value>, TaskError> {
//!         let url = task.param("url").and_then(Value::as_str)
//!             .ok_or_else(|| TaskError::fatal("parameters.url is required"))?; // no retry
//!         // ... fetch and resize; a network error would be TaskError::retryable(e) ...
//!         Ok(Some(json!({ "thumbnail": format!("{url}.thumb.jpg") })))
//!     }
//! }
//!
//! # async fn run(log: Arc<dyn shoal_infra::eventlog::EventLog>, queue: Arc<dyn shoal_infra::queue::TaskQueue>) -> anyhow::Result<()> {
//! let config = WorkerConfig::default();
//! let mut handlers = Handlers::builtin(&config);
//! handlers.register("thumbnail", Thumbnail);
//! let stats = Worker::new(config, handlers, log, queue)
//!     .run(async { let _ = tokio::signal::ctrl_c().await; })
//!     .await?;
//! println!("completed {} tasks", stats.completed);
//! # Ok(()) }
//! ```
//!
//! `worker/examples/custom_handler.rs` is a complete program. Small handlers can be closures:
//! see [`handler_fn`].
//!
//! **Which handler runs a task:** the one registered under the job's type; failing that, the
//! one named by `parameters.work_type` (how the original system chose); failing that,
//! `cpu_bound` for jobs submitted through the original system's REST API (its default). A
//! `work_type` nobody registered fails the task at once ("no handler for ..."); a job type no
//! handler has, with no `work_type` (and not from the REST API), fails the attempt retryably
//! (another worker may have the handler) and the task after its attempts.
//!
//! **What a handler can count on, and what it must allow for:**
//! - It runs at most `timeout_seconds` (from the job); then its future is dropped and the
//!   attempt fails, retryably ("timed out after N s"). A panic is a retryable failure too.
//! - A retryable failure is retried with exponential backoff and jitter
//!   ([`WorkerConfig::retry_base`] doubling up to [`WorkerConfig::retry_max`]) while the task
//!   has attempts left (`max_attempts`, default 3); then the task is FAILED and its message
//!   dead-lettered. [`TaskError::fatal`] skips the retries.
//! - Delivery is at least once. The log records exactly one start and one end per attempt,
//!   but if a worker dies mid-task, the attempt is run again elsewhere after the visibility
//!   timeout: make side effects idempotent (key them by `task_id` + `attempt`).
//! - Tasks of a cancelled job that are still queued are skipped.
//!
//! # Built-in handlers
//!
//! `noop`; the original system's workloads `cpu_bound`, `io_bound` (both for
//! `parameters.work_duration_seconds`, default 2.0, alias `duration_seconds`) and
//! `matrix_multiply` (`parameters.matrix_size`, default 100); and, when configured, `http`
//! (POSTs the task JSON to a URL; 2xx succeeds, 408/429/5xx and network errors are
//! retryable, other statuses are not) and `exec` (runs an allow-listed program with the task
//! JSON on stdin, never through a shell). See [`builtin`]. `cpu_bound` and `matrix_multiply`
//! compute on a [`builtin::CpuPool`] of [`WorkerConfig::cpu_slots`] threads (the machine's
//! cores by default), whatever the number of slots: the rest of the process keeps its share of
//! the cores.
//!
//! # How the runtime works
//!
//! - A concurrency slot is busy only while a handler runs: it never waits for a commit.
//!   Messages are received ahead into a bounded local buffer ([`WorkerConfig::prefetch`]),
//!   their `TaskStarted` is committed a little ahead of the slots (never after the handler
//!   began: a handler runs only for an attempt the log shows started), and a finished task's
//!   end is committed and its message acknowledged in the background while its slot runs the
//!   next one. The buffer fills only as far as the slots consume it, and a worker whose
//!   commits lag stops receiving when it is full. See ADR 0013.
//! - Appends from all in-flight tasks go through one group committer: a commit carries every
//!   append queued while the previous one ran (up to [`WorkerConfig::max_commit_batches`]);
//!   when a full commit waits behind one under way, it runs beside it (up to
//!   [`WorkerConfig::max_concurrent_commits`], ADR 0034; never two on one task's stream).
//!   Acknowledgements are batched the same way; a message is acknowledged only after its
//!   task's end has committed.
//! - On the happy path a task costs no read: its `TaskStarted` is appended at the stream
//!   version the message carries. A conflict means the log knows more than the message; the
//!   worker then reads the task's stream: a completed task or a newer attempt is skipped; an
//!   attempt still RUNNING is taken over if this delivery is a redelivery (the previous
//!   holder's visibility timeout ran out, so it is presumed dead), and otherwise left to its
//!   holder. The end of an attempt is appended at the exact version after its start, so two
//!   holders can never both record it.
//! - A heartbeat extends the visibility of every message the worker holds (buffered ones
//!   included), in one call, every third of the visibility timeout.
//! - [`Worker::run`] returns when its shutdown future completes, after draining (see there).
//! - With [`Worker::reporting_to`], a task beside the loop reports the worker (slots in use,
//!   tasks per second, running / draining / stopped) to a `shoal_infra::workers` registry
//!   every [`WorkerConfig::heartbeat_interval`]: the dashboard's workers page.

pub mod builtin;

mod batching;
mod config;
mod handler;
mod limits;
mod metrics;
mod runtime;
pub mod telemetry;

pub use config::{
    ConfigError, DEFAULT_EXEC_ENV_ALLOW, DEFAULT_HTTP_MAX_RESPONSE_BYTES, DEFAULT_PREFETCH_BYTES,
    ExecHandlerConfig, HttpHandlerConfig, MAX_PREFETCH, WorkerConfig, default_prefetch,
    default_worker_id,
};
pub use handler::{
    DEFAULT_HANDLER, FnHandler, Handler, Handlers, TaskContext, TaskError, handler_fn,
};
pub use limits::{DEFAULT_MAX_RESULT_BYTES, MAX_ERROR_CHARS};
pub use metrics::{WorkerMetrics, WorkerStats};
pub use runtime::{Worker, WorkerError};
