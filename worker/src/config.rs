//! How a worker runs: concurrency, queue timings, retry backoff, and the optional built-in
//! `http` and `exec` handlers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A worker's settings. `Default` gives sensible values for the SQL queue; see each field.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Who runs the tasks, recorded in `TaskStarted` (default `<hostname>-<pid>`).
    pub worker_id: String,
    /// Most tasks running at once in this process (default 16, at least 1): the slots. A slot
    /// is busy only while a handler runs.
    pub concurrency: usize,
    /// The local buffer: how many messages the worker may hold beyond its slots (default
    /// [`default_prefetch`] of the default concurrency: 2,048; at most 100,000). Held messages
    /// are received ahead, started a little ahead of the slots, or finished and waiting for
    /// their end to commit; they stay hidden from other workers (the heartbeat extends them)
    /// and are released at once on shutdown. The worker fills the buffer only as far as its
    /// slots consume it (fast tasks fill it, slow ones hold little more than the slots), and
    /// stops receiving when it is full (slow commits). 0 receives no more than the slots.
    pub prefetch: usize,
    /// The local buffer's bound in bytes (default 64 MiB, [`DEFAULT_PREFETCH_BYTES`]): beyond
    /// its slots, the worker receives no more while the bodies of the messages it holds add
    /// up to this, and asks for no more than fit at their average size. Large messages
    /// (parameters up to the queue's limit, 256 KiB) then fill it by bytes long before
    /// `prefetch` counts them. 0 receives no more than the slots once they hold anything.
    pub prefetch_bytes: usize,
    /// Most messages taken in one receive (default 500); a receive never takes more than the
    /// buffer has room for. One receive is under way at a time, so this bounds the rate at
    /// about `receive_batch` per claim round trip (docs/benchmarks.md, "Issue 15: the
    /// thirteenth session": 100 held `shoal worker` near 10,500 tasks/s and `shoal dev` on
    /// SQLite near 3,600).
    pub receive_batch: usize,
    /// How long a received message stays hidden from other workers (default 30 s). A
    /// heartbeat extends it every third of this while the task runs, so it only needs to cover
    /// a stalled worker's detection time, not the longest task.
    pub visibility_timeout: Duration,
    /// How long a receive waits for a message when the queue is empty (default 1 s; use
    /// 20 s for SQS, where each receive is a billed request).
    pub long_poll: Duration,
    /// On shutdown, how long running tasks may take to finish before their messages are
    /// released to other workers (default 30 s).
    pub grace_period: Duration,
    /// The first retry's delay; it doubles per attempt, with jitter (default 1 s).
    pub retry_base: Duration,
    /// The longest retry delay (default 5 min).
    pub retry_max: Duration,
    /// How long the worker trusts what it read about a job being cancelled (default 1 s): a
    /// cancelled job's tasks may still start this long after the cancel (from the worker's
    /// buffer), none after.
    pub cancel_check_ttl: Duration,
    /// Most tasks' appends carried by one group commit (default 500).
    pub max_commit_batches: usize,
    /// Most group commits under way at once (default 2; at least 1). A second commit starts
    /// only while one is under way and a full one ([`WorkerConfig::max_commit_batches`]) is
    /// waiting, so a worker that is not behind still commits one at a time; one that is
    /// behind keeps the database busy while the other commit waits for its flush (ADR 34).
    /// `shoal` sets 1 on SQLite, whose one writer takes commits one at a time anyway.
    pub max_concurrent_commits: usize,
    /// The task queue is a table of the event log's own database (the SQL queue,
    /// `TaskQueue::is_log_table`): a completed task's message is then deleted in the commit of
    /// its `TaskCompleted` (ADR 31) instead of by a later acknowledgement of its own. Default
    /// false; `shoal` sets it for the SQL queue.
    pub acks_in_commit: bool,
    /// Largest result a handler may return, serialized as JSON, in bytes (default 1 MiB); a
    /// larger one fails its task ("the handler's result is N bytes, more than the limit").
    pub max_result_bytes: usize,
    /// The built-in `http` handler; absent unless configured.
    pub http: Option<HttpHandlerConfig>,
    /// The built-in `exec` handler; absent unless configured.
    pub exec: Option<ExecHandlerConfig>,
    /// Most CPU-bound built-in handlers (`cpu_bound`, `matrix_multiply`) computing at once
    /// (default: the cores this process may use, [`default_cpu_slots`]). Tasks beyond it hold
    /// their slot and wait for a core, so a worker with more slots than cores never has more
    /// computing threads than cores, and the rest of the process (its heartbeats and commits;
    /// with `shoal dev`, the APIs) stays responsive.
    pub cpu_slots: usize,
    /// How often the worker reports itself (slots, throughput) to its registry, when it has
    /// one (default 5 s; see [`crate::Worker::reporting_to`]).
    pub heartbeat_interval: Duration,
    /// How long the first attempt of a task may run before its `TaskStarted` is committed on
    /// its own (default 10 ms). An attempt that ends sooner has its start and its end
    /// committed together, in one append (ADR 27); a longer one shows RUNNING in the log at
    /// most this long after its handler began.
    pub start_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            worker_id: default_worker_id(),
            concurrency: 16,
            prefetch: default_prefetch(16),
            prefetch_bytes: DEFAULT_PREFETCH_BYTES,
            receive_batch: 500,
            visibility_timeout: Duration::from_secs(30),
            long_poll: Duration::from_secs(1),
            grace_period: Duration::from_secs(30),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            cancel_check_ttl: Duration::from_secs(1),
            max_commit_batches: 500,
            max_concurrent_commits: 2,
            acks_in_commit: false,
            max_result_bytes: crate::limits::DEFAULT_MAX_RESULT_BYTES,
            http: None,
            exec: None,
            cpu_slots: default_cpu_slots(),
            heartbeat_interval: Duration::from_secs(5),
            start_grace: DEFAULT_START_GRACE,
        }
    }
}

impl WorkerConfig {
    /// Why the configuration cannot run, if it cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.worker_id.trim().is_empty() {
            return Err(ConfigError::EmptyWorkerId);
        }
        let positive = |setting: &'static str, value: usize| {
            if value == 0 {
                Err(ConfigError::Zero { setting })
            } else {
                Ok(())
            }
        };
        positive("concurrency", self.concurrency)?;
        positive("receive_batch", self.receive_batch)?;
        if self.prefetch > MAX_PREFETCH {
            return Err(ConfigError::PrefetchTooLarge(self.prefetch));
        }
        if self.visibility_timeout < MIN_VISIBILITY_TIMEOUT {
            return Err(ConfigError::VisibilityTimeoutTooShort(
                self.visibility_timeout,
            ));
        }
        positive("max_commit_batches", self.max_commit_batches)?;
        positive("max_concurrent_commits", self.max_concurrent_commits)?;
        positive("cpu_slots", self.cpu_slots)?;
        if self.heartbeat_interval < MIN_HEARTBEAT_INTERVAL {
            return Err(ConfigError::HeartbeatIntervalTooShort(
                self.heartbeat_interval,
            ));
        }
        if let Some(exec) = &self.exec {
            for (name, argv) in &exec.commands {
                if argv.is_empty() || argv[0].is_empty() {
                    return Err(ConfigError::ExecWithoutProgram(name.clone()));
                }
            }
            if let Some(dir) = &exec.working_dir
                && !dir.is_dir()
            {
                return Err(ConfigError::ExecWorkingDirMissing(dir.clone()));
            }
        }
        Ok(())
    }
}

/// The shortest visibility timeout a worker accepts: the heartbeat runs every third of it.
const MIN_VISIBILITY_TIMEOUT: Duration = Duration::from_millis(300);

/// The shortest heartbeat interval a worker accepts.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// The largest [`WorkerConfig::prefetch`] accepted.
pub const MAX_PREFETCH: usize = 100_000;

/// [`WorkerConfig::start_grace`]'s default: longer than a fast handler takes, short enough
/// that a slow one shows RUNNING at once to a person watching.
pub const DEFAULT_START_GRACE: Duration = Duration::from_millis(10);

/// The default [`WorkerConfig::prefetch`] for `concurrency` slots: 2,048, or 32 per slot
/// beyond 64 slots, at most 4,096. Fast tasks need it whatever the slots: a worker of no-op
/// tasks at 16 slots held its 512 of old and waited on them (the receive and the group commits
/// carry what the buffer holds, so a deeper buffer halves the statements per task;
/// docs/benchmarks.md, "the eighth session"). Slow tasks never fill it (the buffer fills only as
/// far as the slots consume it), and [`WorkerConfig::prefetch_bytes`] bounds what large
/// messages cost.
pub fn default_prefetch(concurrency: usize) -> usize {
    concurrency.saturating_mul(32).clamp(2048, 4096)
}

/// The default [`WorkerConfig::prefetch_bytes`]: 64 MiB.
pub const DEFAULT_PREFETCH_BYTES: usize = 64 * 1024 * 1024;

/// Why a [`WorkerConfig`] cannot run. Each names the setting to fix; none goes away by
/// retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `worker_id` is empty or blank.
    #[error("worker_id must not be empty")]
    EmptyWorkerId,
    /// A count that must be positive is 0.
    #[error("{setting} must be at least 1")]
    Zero { setting: &'static str },
    /// `prefetch` is larger than [`MAX_PREFETCH`].
    #[error("prefetch must be at most 100000 (it is {0})")]
    PrefetchTooLarge(usize),
    /// `visibility_timeout` is shorter than 300 ms.
    #[error("visibility_timeout must be at least 300 ms (it is {0:?})")]
    VisibilityTimeoutTooShort(Duration),
    /// `heartbeat_interval` is shorter than 100 ms.
    #[error("heartbeat_interval must be at least 100 ms (it is {0:?})")]
    HeartbeatIntervalTooShort(Duration),
    /// An `exec` command's argv is empty or its program is blank.
    #[error("exec command {0:?} has no program")]
    ExecWithoutProgram(String),
    /// The `exec` handler's working directory does not exist (or is not a directory).
    #[error("exec working directory {} is not a directory", .0.display())]
    ExecWorkingDirMissing(PathBuf),
}

/// The built-in `http` handler: POSTs the task as JSON to `url`.
///
/// Redirects are not followed (a 3xx fails the task: a task's data goes only where it was
/// configured to go), and a response larger than `max_response_bytes` fails it. Error
/// messages show `url` without its user name, password and query string.
#[derive(Clone)]
pub struct HttpHandlerConfig {
    /// Where tasks are POSTed. May carry credentials (userinfo, query); they never appear in
    /// task errors or logs.
    pub url: String,
    /// How long one request may take (the task's own timeout applies as well).
    pub timeout: Duration,
    /// The largest response body read (default 1 MiB); a larger one fails the task.
    pub max_response_bytes: usize,
}

/// The default [`HttpHandlerConfig::max_response_bytes`].
pub const DEFAULT_HTTP_MAX_RESPONSE_BYTES: usize = 1024 * 1024;

impl HttpHandlerConfig {
    /// POSTs to `url`, with `timeout` and the default response cap.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Self {
        HttpHandlerConfig {
            url: url.into(),
            timeout,
            max_response_bytes: DEFAULT_HTTP_MAX_RESPONSE_BYTES,
        }
    }
}

impl std::fmt::Debug for HttpHandlerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpHandlerConfig")
            .field("url", &crate::builtin::redact_url(&self.url))
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

/// The built-in `exec` handler: runs an allow-listed program with the task JSON on stdin.
///
/// The program gets an environment of only the `env_allow` variables of the worker's own (a
/// worker's database URL and cloud credentials stay with the worker), runs in its own process
/// group, and is killed with its whole group when the attempt ends (timeout, shutdown, or the
/// program exiting while something it started still runs).
#[derive(Debug, Clone)]
pub struct ExecHandlerConfig {
    /// The programs a task may name in `parameters.command`: name -> argv (program first).
    /// Run directly, never through a shell.
    pub commands: BTreeMap<String, Vec<String>>,
    /// stdout beyond this many bytes is cut off (default 64 KiB).
    pub max_output_bytes: usize,
    /// The names of the worker's environment variables a program sees (default
    /// [`DEFAULT_EXEC_ENV_ALLOW`]); every other variable is cleared.
    pub env_allow: Vec<String>,
    /// The working directory of every program; `None` (the default): a fresh, empty directory
    /// under the system's temporary directory for each attempt, removed when it ends.
    pub working_dir: Option<PathBuf>,
}

/// The environment variables an `exec` program gets by default: where to find programs, and
/// the locale and time zone.
pub const DEFAULT_EXEC_ENV_ALLOW: [&str; 5] = ["PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ"];

impl Default for ExecHandlerConfig {
    fn default() -> Self {
        ExecHandlerConfig {
            commands: BTreeMap::new(),
            max_output_bytes: 64 * 1024,
            env_allow: DEFAULT_EXEC_ENV_ALLOW.map(str::to_owned).to_vec(),
            working_dir: None,
        }
    }
}

/// `<hostname>-<pid>`.
pub fn default_worker_id() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

/// The cores this process may use (`std::thread::available_parallelism`: CPU affinity and
/// cgroup quotas included), 1 when it cannot tell.
pub fn default_cpu_slots() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The machine's (or pod's) host name: `HOSTNAME`, else the kernel's, else `worker`.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "worker".to_owned())
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = WorkerConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.prefetch, 2048);
        assert_eq!(default_prefetch(1), 2048);
        assert_eq!(default_prefetch(100), 3200);
        assert_eq!(default_prefetch(1024), 4096);
        assert_eq!(config.prefetch_bytes, 64 << 20);
        assert!(
            config
                .worker_id
                .ends_with(&format!("-{}", std::process::id()))
        );
    }

    #[test]
    fn rejects_nonsense() {
        let bad = WorkerConfig {
            concurrency: 0,
            ..WorkerConfig::default()
        };
        assert_eq!(
            bad.validate(),
            Err(ConfigError::Zero {
                setting: "concurrency"
            })
        );
        let mut exec = ExecHandlerConfig::default();
        exec.commands.insert("x".into(), vec![]);
        let bad = WorkerConfig {
            exec: Some(exec),
            ..WorkerConfig::default()
        };
        let error = bad.validate().unwrap_err();
        assert_eq!(error, ConfigError::ExecWithoutProgram("x".into()));
        assert!(error.to_string().contains("no program"), "{error}");
        let bad = WorkerConfig {
            prefetch: MAX_PREFETCH + 1,
            ..WorkerConfig::default()
        };
        let error = bad.validate().unwrap_err();
        assert_eq!(error, ConfigError::PrefetchTooLarge(100_001));
        assert_eq!(
            error.to_string(),
            "prefetch must be at most 100000 (it is 100001)"
        );
        let no_buffer = WorkerConfig {
            prefetch: 0,
            ..WorkerConfig::default()
        };
        assert_eq!(no_buffer.validate(), Ok(()));
        let bad = WorkerConfig {
            exec: Some(ExecHandlerConfig {
                working_dir: Some("/nonexistent/shoal".into()),
                ..ExecHandlerConfig::default()
            }),
            ..WorkerConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err(),
            ConfigError::ExecWorkingDirMissing("/nonexistent/shoal".into())
        );
    }
}
