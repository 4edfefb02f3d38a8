//! The handler API: what a task handler gets, what it returns, and how a task finds its
//! handler.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_domain::{JobId, TaskId};

use crate::builtin;
use crate::config::WorkerConfig;

/// The handler used when neither the job type nor `parameters.work_type` names one (the
/// original system's default).
pub const DEFAULT_HANDLER: &str = "cpu_bound";

/// Runs one attempt of a task.
///
/// Contract:
/// - `Ok(result)`: the attempt succeeded; `result` (keep it small: it is stored in the event
///   log and shown by the APIs) becomes the task's result.
/// - `Err(TaskError)`: the attempt failed. A [`TaskError::retryable`] failure is retried with
///   exponential backoff while the task has attempts left; a [`TaskError::fatal`] one fails
///   the task at once.
/// - The worker enforces the task's timeout by dropping the future (a timeout counts as a
///   retryable failure), and a panic counts as a retryable failure: neither takes the worker
///   down. Work on blocking threads is not interrupted by a drop, so long blocking work
///   should check [`TaskContext::deadline`] now and then.
/// - Delivery is at least once: after a worker crash, an attempt may run again on another
///   worker, so side effects should be idempotent (key them by `task_id` and `attempt`). The
///   log still records exactly one outcome per attempt.
#[async_trait::async_trait]
pub trait Handler: Send + Sync {
    /// Runs the task.
    async fn handle(&self, task: &TaskContext) -> Result<Option<Value>, TaskError>;
}

/// What a handler knows about the task it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskContext {
    /// The task's job.
    pub job_id: JobId,
    /// The task.
    pub task_id: TaskId,
    /// Its position in the job, from 0.
    pub index: u32,
    /// The job's type.
    pub job_type: String,
    /// This attempt's number (1 = first).
    pub attempt: u32,
    /// How many attempts the task gets.
    pub max_attempts: u32,
    /// The task's input: the job's parameters (plus `items` for item splits).
    pub parameters: Value,
    /// How long this attempt may run.
    pub timeout: Duration,
    /// When this attempt is cut off (`tokio` clock).
    pub deadline: tokio::time::Instant,
    /// The worker running it.
    pub worker_id: String,
}

impl TaskContext {
    /// The task as JSON, as the `http` and `exec` handlers send it: the original system's
    /// message fields (`task_id`, `job_id`, `task_index`, `parameters`) plus `job_type`,
    /// `attempt` and `max_attempts`.
    pub fn to_json(&self) -> Value {
        json!({
            "task_id": self.task_id,
            "job_id": self.job_id,
            "task_index": self.index,
            "job_type": self.job_type,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "parameters": self.parameters,
        })
    }

    /// `parameters[name]`, when the parameters are an object that has it.
    pub fn param(&self, name: &str) -> Option<&Value> {
        self.parameters.get(name)
    }
}

/// A failed attempt: what went wrong, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// Stored as the task's error message.
    pub message: String,
    /// True: retry while attempts remain. False: fail the task now.
    pub retryable: bool,
}

impl TaskError {
    /// A failure that another attempt may fix (a timeout, an unavailable service).
    pub fn retryable(message: impl fmt::Display) -> Self {
        TaskError {
            message: message.to_string(),
            retryable: true,
        }
    }

    /// A failure that no retry fixes (bad input, no handler): the task fails at once.
    pub fn fatal(message: impl fmt::Display) -> Self {
        TaskError {
            message: message.to_string(),
            retryable: false,
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TaskError {}

/// A handler made of an async closure that takes the task by value: see [`handler_fn`].
pub struct FnHandler<F>(F);

impl<F> fmt::Debug for FnHandler<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnHandler")
    }
}

/// Wraps `f(task) -> impl Future<Output = Result<Option<Value>, TaskError>>` as a [`Handler`].
///
/// ```
/// use shoal_worker::{Handlers, TaskError, handler_fn};
/// let mut handlers = Handlers::new();
/// handlers.register(
///     "double",
///     handler_fn(|task| async move {
///         let n = task.param("n").and_then(|v| v.as_i64()).ok_or_else(|| TaskError::fatal("n is required"))?;
///         Ok(Some(serde_json::json!({ "doubled": n * 2 })))
///     }),
/// );
/// ```
pub fn handler_fn<F, Fut>(f: F) -> FnHandler<F>
where
    F: Fn(TaskContext) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Option<Value>, TaskError>> + Send,
{
    FnHandler(f)
}

#[async_trait::async_trait]
impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(TaskContext) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Option<Value>, TaskError>> + Send,
{
    async fn handle(&self, task: &TaskContext) -> Result<Option<Value>, TaskError> {
        (self.0)(task.clone()).await
    }
}

/// The handlers a worker knows, by name.
///
/// A task runs the handler registered under its job's type; failing that, the one named by
/// `parameters.work_type` (the original system's way); failing that, the task's fallback
/// (`cpu_bound`, the original's default, for jobs of the original REST API only: see
/// [`Handlers::select_for`]). A `work_type` that is not registered fails the task at once,
/// with "no handler for ...".
#[derive(Clone, Default)]
pub struct Handlers {
    by_name: BTreeMap<String, Arc<dyn Handler>>,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handlers")
            .field("names", &self.by_name.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Handlers {
    /// No handlers at all.
    pub fn new() -> Self {
        Handlers::default()
    }

    /// The built-in handlers: `noop`, `cpu_bound`, `io_bound`, `matrix_multiply` (the two
    /// CPU-bound ones sharing a [`builtin::CpuPool`] of `config.cpu_slots` cores), and `http`
    /// and `exec` when `config` configures them.
    pub fn builtin(config: &WorkerConfig) -> Self {
        let mut handlers = Handlers::new();
        let cores = builtin::CpuPool::new(config.cpu_slots);
        handlers
            .register("noop", builtin::Noop)
            .register("cpu_bound", builtin::CpuBound::new(cores.clone()))
            .register("io_bound", builtin::IoBound)
            .register("matrix_multiply", builtin::MatrixMultiply::new(cores));
        if let Some(http) = &config.http {
            handlers.register("http", builtin::HttpHandler::new(http.clone()));
        }
        if let Some(exec) = &config.exec {
            handlers.register("exec", builtin::ExecHandler::new(exec.clone()));
        }
        handlers
    }

    /// Registers `handler` under `name`, replacing any handler of that name.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        handler: impl Handler + 'static,
    ) -> &mut Self {
        self.by_name.insert(name.into(), Arc::new(handler));
        self
    }

    /// Registers a shared handler under `name`.
    pub fn register_arc(
        &mut self,
        name: impl Into<String>,
        handler: Arc<dyn Handler>,
    ) -> &mut Self {
        self.by_name.insert(name.into(), handler);
        self
    }

    /// The handler registered under `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Handler>> {
        self.by_name.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// The handler for a task of `job_type` with `parameters` by the original system's rule
    /// (see the type's docs: `cpu_bound` when nothing else names one), with the name it was
    /// chosen by; a fatal [`TaskError`] when there is none. The runtime uses
    /// [`Handlers::select_for`], which falls back only where the task says so.
    ///
    /// Equivalent to `select_for(job_type, parameters, Some("cpu_bound"))`.
    pub fn select(
        &self,
        job_type: &str,
        parameters: &Value,
    ) -> Result<(String, Arc<dyn Handler>), TaskError> {
        self.select_for(job_type, parameters, Some(DEFAULT_HANDLER))
    }
}

impl Handlers {
    /// The handler for a task: the one registered under `job_type`; failing that, the one
    /// named by `parameters.work_type` (a fatal error when this worker has none of that name);
    /// failing that, `fallback` (the task's `fallback_handler`: `cpu_bound` for jobs of the
    /// original system's REST API). A task with none of these fails its attempt, retryably:
    /// another worker may have a handler for its type, and after its attempts (`max_attempts`,
    /// with backoff) the task is FAILED with "no handler for job type ...". It never runs a
    /// handler nobody asked for.
    pub fn select_for(
        &self,
        job_type: &str,
        parameters: &Value,
        fallback: Option<&str>,
    ) -> Result<(String, Arc<dyn Handler>), TaskError> {
        if let Some(handler) = self.by_name.get(job_type) {
            return Ok((job_type.to_owned(), handler.clone()));
        }
        let named = match parameters.get("work_type") {
            Some(Value::String(work_type)) => Some(work_type.as_str()),
            Some(Value::Null) | None => None,
            Some(other) => {
                return Err(TaskError::fatal(format!(
                    "parameters.work_type must be a string, not {other}"
                )));
            }
        };
        let Some(name) = named.or(fallback) else {
            return Err(TaskError::retryable(format!(
                "no handler for job type {job_type:?} on this worker (it has: {}); register \
                 one, or name a handler in parameters.work_type",
                self.names().collect::<Vec<_>>().join(", ")
            )));
        };
        self.by_name
            .get(name)
            .map(|handler| (name.to_owned(), handler.clone()))
            .ok_or_else(|| {
                TaskError::fatal(format!(
                    "no handler for job type {job_type:?} (work_type {name:?}); this worker has: {}",
                    self.names().collect::<Vec<_>>().join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handlers() -> Handlers {
        let mut handlers = Handlers::builtin(&WorkerConfig::default());
        handlers.register("thumbnail", builtin::Noop);
        handlers
    }

    #[test]
    fn job_type_wins_then_work_type_then_cpu_bound() {
        let h = handlers();
        let (name, _) = h
            .select("thumbnail", &json!({"work_type": "io_bound"}))
            .unwrap();
        assert_eq!(name, "thumbnail");
        let (name, _) = h
            .select("reports", &json!({"work_type": "io_bound"}))
            .unwrap();
        assert_eq!(name, "io_bound");
        let (name, _) = h.select("reports", &json!({})).unwrap();
        assert_eq!(name, "cpu_bound");
        let (name, _) = h.select("", &Value::Null).unwrap();
        assert_eq!(name, "cpu_bound");
    }

    #[test]
    fn without_a_fallback_an_unknown_job_type_runs_nothing() {
        let h = handlers();
        // Jobs of the original REST API keep its default.
        let (name, _) = h
            .select_for("reports", &json!({}), Some("cpu_bound"))
            .unwrap();
        assert_eq!(name, "cpu_bound");
        // Others fail their attempt (retryably: another worker may have the handler).
        let error = h.select_for("reports", &json!({}), None).err().unwrap();
        assert!(error.retryable);
        assert!(
            error
                .message
                .starts_with("no handler for job type \"reports\" on this worker"),
            "{error}"
        );
        // The job type and work_type still win.
        assert_eq!(
            h.select_for("thumbnail", &json!({}), None).unwrap().0,
            "thumbnail"
        );
        let by_work_type = h.select_for("reports", &json!({"work_type": "io_bound"}), None);
        assert_eq!(by_work_type.unwrap().0, "io_bound");
        let unknown = h.select_for("reports", &json!({"work_type": "gpu"}), None);
        assert!(!unknown.err().unwrap().retryable);
    }

    #[test]
    fn unknown_names_fail_for_good() {
        let h = handlers();
        let error = h
            .select("reports", &json!({"work_type": "gpu"}))
            .err()
            .unwrap();
        assert!(!error.retryable);
        assert!(error.message.starts_with("no handler for"), "{error}");
        assert!(h.select("x", &json!({"work_type": 3})).is_err());
        assert!(Handlers::new().select("x", &json!({})).is_err());
    }

    #[test]
    fn http_and_exec_only_when_configured() {
        let names: Vec<_> = handlers().names().map(str::to_owned).collect();
        assert!(!names.contains(&"http".to_owned()));
        assert!(!names.contains(&"exec".to_owned()));
        let config = WorkerConfig {
            http: Some(crate::HttpHandlerConfig::new(
                "http://127.0.0.1:1/",
                Duration::from_secs(1),
            )),
            exec: Some(crate::ExecHandlerConfig::default()),
            ..WorkerConfig::default()
        };
        let h = Handlers::builtin(&config);
        assert!(h.get("http").is_some() && h.get("exec").is_some());
    }
}
