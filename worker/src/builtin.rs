//! The built-in handlers: the original system's workloads (`cpu_bound`, `io_bound`,
//! `matrix_multiply`), `noop`, and two that do real work elsewhere (`http`, `exec`).
//!
//! Parameters (as the original's workers read them): `work_duration_seconds` (default 2.0;
//! `duration_seconds` is accepted too), `matrix_size` (default 100). A parameter of the wrong
//! shape fails the task at once (retrying cannot fix it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::config::{ExecHandlerConfig, HttpHandlerConfig};
use crate::handler::{Handler, TaskContext, TaskError};

/// `work_duration_seconds` when a task gives none.
pub const DEFAULT_WORK_DURATION_SECONDS: f64 = 2.0;
/// `matrix_size` when a task gives none.
pub const DEFAULT_MATRIX_SIZE: usize = 100;
/// The largest `matrix_size` accepted (three such matrices take ~100 MB).
pub const MAX_MATRIX_SIZE: usize = 2000;
/// The longest `work_duration_seconds` accepted (a day).
pub const MAX_WORK_DURATION_SECONDS: f64 = 86_400.0;
/// How much of a failed program's stderr is kept in the error message.
const STDERR_TAIL_BYTES: usize = 2048;
/// How much of an HTTP error response's body is kept in the error message.
const HTTP_ERROR_BODY_BYTES: usize = 512;

/// A number, or a string holding one (the original's clients sent both).
fn number(parameters: &Value, name: &str) -> Result<Option<f64>, TaskError> {
    match parameters.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s.trim().parse::<f64>().map(Some).map_err(|_| {
            TaskError::fatal(format!("parameters.{name} must be a number, not {s:?}"))
        }),
        Some(other) => Err(TaskError::fatal(format!(
            "parameters.{name} must be a number, not {other}"
        ))),
    }
}

/// `work_duration_seconds` (or `duration_seconds`), default 2.0.
pub fn work_duration(parameters: &Value) -> Result<Duration, TaskError> {
    let (name, seconds) = match number(parameters, "work_duration_seconds")? {
        Some(s) => ("work_duration_seconds", s),
        None => match number(parameters, "duration_seconds")? {
            Some(s) => ("duration_seconds", s),
            None => ("work_duration_seconds", DEFAULT_WORK_DURATION_SECONDS),
        },
    };
    if !(0.0..=MAX_WORK_DURATION_SECONDS).contains(&seconds) {
        return Err(TaskError::fatal(format!(
            "parameters.{name} must be between 0 and {MAX_WORK_DURATION_SECONDS}, not {seconds}"
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `matrix_size`, default 100, 1 to [`MAX_MATRIX_SIZE`].
pub fn matrix_size(parameters: &Value) -> Result<usize, TaskError> {
    let Some(size) = number(parameters, "matrix_size")? else {
        return Ok(DEFAULT_MATRIX_SIZE);
    };
    if size.fract() != 0.0 || !(1.0..=MAX_MATRIX_SIZE as f64).contains(&size) {
        return Err(TaskError::fatal(format!(
            "parameters.matrix_size must be a whole number from 1 to {MAX_MATRIX_SIZE}, not {size}"
        )));
    }
    Ok(size as usize)
}

/// Set when dropped: tells work on a blocking thread that nobody waits for it any more
/// (timeout, shutdown), since dropping a `spawn_blocking` handle does not stop the thread.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The cores CPU-bound handlers compute on: at most [`CpuPool::size`] of them at once, each on
/// a blocking thread of its own; the others wait for one (holding their task slot, within their
/// task's timeout). A worker with more slots than cores would otherwise run a thread per slot,
/// and those threads would take the cores from everything else in the process (the runtime's
/// threads: heartbeats, group commits, and with `shoal dev` the APIs and the dashboard).
///
/// Cheap to clone; clones share the cores. Use it in your own CPU-bound handlers too (see
/// [`CpuPool::run`]) so that they share the cores with the built-in ones.
#[derive(Debug, Clone)]
pub struct CpuPool {
    inner: Arc<CpuPoolInner>,
}

#[derive(Debug)]
struct CpuPoolInner {
    cores: Arc<Semaphore>,
    size: usize,
    running: AtomicUsize,
    waiting: AtomicUsize,
    peak: AtomicUsize,
}

impl CpuPool {
    /// A pool of `size` cores (at least 1).
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        CpuPool {
            inner: Arc::new(CpuPoolInner {
                cores: Arc::new(Semaphore::new(size)),
                size,
                running: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
            }),
        }
    }

    /// How many may compute at once.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// How many compute now.
    pub fn running(&self) -> usize {
        self.inner.running.load(Ordering::Relaxed)
    }

    /// How many wait for a core now.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    /// The most that ever computed at once: never more than [`CpuPool::size`].
    pub fn peak(&self) -> usize {
        self.inner.peak.load(Ordering::Relaxed)
    }

    /// Waits for a core, then runs `work` on a blocking thread; `work` gets a flag that turns
    /// true when the caller gives up (timeout, shutdown), and should stop soon after. The core
    /// is held until `work` returns, even when the caller gave up before: a thread that still
    /// computes still uses it.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&AtomicBool) -> T + Send + 'static,
    ) -> Result<T, TaskError> {
        let core = {
            let _waiting = Count::up(&self.inner.waiting, None);
            // The semaphore is never closed.
            self.inner
                .cores
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| TaskError::retryable("the CPU pool is closed"))?
        };
        let inner = self.inner.clone();
        blocking(move |cancelled| {
            let _core = core;
            let _running = Count::up(&inner.running, Some(&inner.peak));
            work(cancelled)
        })
        .await
    }
}

/// Counts one in `counter` while it lives (and raises `peak` to the count).
struct Count<'a>(&'a AtomicUsize);

impl<'a> Count<'a> {
    fn up(counter: &'a AtomicUsize, peak: Option<&AtomicUsize>) -> Self {
        let now = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(peak) = peak {
            peak.fetch_max(now, Ordering::Relaxed);
        }
        Count(counter)
    }
}

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `work` on a blocking thread; `work` gets a flag that turns true when the caller gives
/// up, and should stop soon after.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce(&AtomicBool) -> T + Send + 'static,
) -> Result<T, TaskError> {
    let cancelled = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancelled.clone());
    tokio::task::spawn_blocking(move || work(&cancelled))
        .await
        .map_err(|e| TaskError::retryable(format!("handler thread failed: {e}")))
}

/// Does nothing and succeeds: for measuring the platform itself.
#[derive(Debug, Clone, Copy)]
pub struct Noop;

#[async_trait::async_trait]
impl Handler for Noop {
    async fn handle(&self, _task: &TaskContext) -> Result<Option<Value>, TaskError> {
        Ok(None)
    }
}

/// Keeps one CPU busy for `work_duration_seconds` (on a core of its [`CpuPool`]; the wait for
/// a core is not counted in the duration).
#[derive(Debug, Clone)]
pub struct CpuBound {
    cores: CpuPool,
}

impl CpuBound {
    /// Computes on `cores`.
    pub fn new(cores: CpuPool) -> Self {
        CpuBound { cores }
    }
}

#[async_trait::async_trait]
impl Handler for CpuBound {
    async fn handle(&self, task: &TaskContext) -> Result<Option<Value>, TaskError> {
        let duration = work_duration(&task.parameters)?;
        let (iterations, elapsed) = self
            .cores
            .run(move |cancelled| {
                let start = Instant::now();
                let mut iterations = 0u64;
                let mut x = 0x9E37_79B9_7F4A_7C15u64;
                while start.elapsed() < duration && !cancelled.load(Ordering::Relaxed) {
                    for _ in 0..10_000 {
                        // xorshift: real work the optimizer cannot remove.
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                    }
                    iterations += 10_000;
                }
                std::hint::black_box(x);
                (iterations, start.elapsed())
            })
            .await?;
        Ok(Some(json!({
            "work_type": "cpu_bound",
            "duration_seconds": round3(elapsed.as_secs_f64()),
            "iterations": iterations,
        })))
    }
}

/// Waits `work_duration_seconds` without using a CPU (like a call to a slow service).
#[derive(Debug, Clone, Copy)]
pub struct IoBound;

#[async_trait::async_trait]
impl Handler for IoBound {
    async fn handle(&self, task: &TaskContext) -> Result<Option<Value>, TaskError> {
        let duration = work_duration(&task.parameters)?;
        tokio::time::sleep(duration).await;
        Ok(Some(json!({
            "work_type": "io_bound",
            "duration_seconds": round3(duration.as_secs_f64()),
        })))
    }
}

/// Multiplies two random `matrix_size` x `matrix_size` matrices (on a core of its [`CpuPool`]);
/// the result holds the sum of the product's entries as a checksum.
#[derive(Debug, Clone)]
pub struct MatrixMultiply {
    cores: CpuPool,
}

impl MatrixMultiply {
    /// Computes on `cores`.
    pub fn new(cores: CpuPool) -> Self {
        MatrixMultiply { cores }
    }
}

#[async_trait::async_trait]
impl Handler for MatrixMultiply {
    async fn handle(&self, task: &TaskContext) -> Result<Option<Value>, TaskError> {
        let n = matrix_size(&task.parameters)?;
        let (checksum, elapsed) = self
            .cores
            .run(move |cancelled| {
                let started = Instant::now();
                (multiply_random(n, cancelled), started.elapsed())
            })
            .await?;
        let checksum =
            checksum.ok_or_else(|| TaskError::retryable("matrix multiplication was cancelled"))?;
        Ok(Some(json!({
            "work_type": "matrix_multiply",
            "matrix_size": n,
            "checksum": checksum,
            "duration_seconds": round3(elapsed.as_secs_f64()),
        })))
    }
}

/// The sum of the entries of the product of two random n x n matrices, or `None` when
/// cancelled part way.
fn multiply_random(n: usize, cancelled: &AtomicBool) -> Option<f64> {
    let a: Vec<f64> = (0..n * n).map(|_| rand::random::<f64>()).collect();
    let b: Vec<f64> = (0..n * n).map(|_| rand::random::<f64>()).collect();
    let mut c = vec![0.0f64; n * n];
    for i in 0..n {
        if cancelled.load(Ordering::Relaxed) {
            return None;
        }
        let row = &mut c[i * n..(i + 1) * n];
        for k in 0..n {
            let aik = a[i * n + k];
            let b_row = &b[k * n..(k + 1) * n];
            for (cij, bkj) in row.iter_mut().zip(b_row) {
                *cij += aik * bkj;
            }
        }
    }
    Some(c.iter().sum())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// POSTs the task (see [`TaskContext::to_json`]) to a configured URL.
///
/// A 2xx response succeeds, with its JSON body (if it has one) as the result. 408, 429 and
/// 5xx responses and network errors are retryable; other statuses fail the task at once,
/// redirects included (they are not followed), as does a body over the configured size.
/// Errors show the URL without credentials or query string (see [`redact_url`]).
#[derive(Debug, Clone)]
pub struct HttpHandler {
    config: HttpHandlerConfig,
    client: reqwest::Client,
}

impl HttpHandler {
    /// A handler for `config`, with its own connection pool.
    pub fn new(config: HttpHandlerConfig) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("shoal-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .or_else(|_| {
                reqwest::Client::builder()
                    .timeout(config.timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
            })
            .unwrap_or_default();
        HttpHandler { config, client }
    }
}

/// What an HTTP status means for the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpOutcome {
    /// 2xx.
    Success,
    /// 408, 429, 5xx: the service may answer differently later.
    Retryable,
    /// Any other status: the request itself is wrong.
    Fatal,
}

/// See [`HttpOutcome`].
pub fn classify_status(status: u16) -> HttpOutcome {
    match status {
        200..=299 => HttpOutcome::Success,
        408 | 429 | 500..=599 => HttpOutcome::Retryable,
        _ => HttpOutcome::Fatal,
    }
}

/// `url` fit for an error message or a log: without user name, password, query string and
/// fragment (where credentials and tokens hide); `<invalid URL>` when it does not parse.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return "<invalid URL>".to_owned();
    };
    let had_query = parsed.query().is_some();
    // Both fail only for URLs that cannot have userinfo (no host), which then have none.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_query(None);
    parsed.set_fragment(None);
    let mut shown = parsed.to_string();
    if had_query {
        shown.push_str("?<redacted>");
    }
    shown
}

#[async_trait::async_trait]
impl Handler for HttpHandler {
    async fn handle(&self, task: &TaskContext) -> Result<Option<Value>, TaskError> {
        let url = redact_url(&self.config.url);
        let max = self.config.max_response_bytes;
        let mut response = self
            .client
            .post(&self.config.url)
            .json(&task.to_json())
            .send()
            .await
            // `without_url`: reqwest's message would quote the URL with its credentials.
            .map_err(|e| TaskError::retryable(format!("POST {url} failed: {}", e.without_url())))?;
        let status = response.status().as_u16();
        let too_large = || {
            TaskError::fatal(format!(
                "the response of {url} (HTTP {status}) is larger than {max} bytes"
            ))
        };
        if response
            .content_length()
            .is_some_and(|length| length > max as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            TaskError::retryable(format!(
                "reading the response of {url}: {}",
                e.without_url()
            ))
        })? {
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        match classify_status(status) {
            HttpOutcome::Success => Ok(serde_json::from_slice(&body).ok()),
            outcome => {
                let cut = body.len().min(HTTP_ERROR_BODY_BYTES);
                let redirect = if (300..400).contains(&status) {
                    " (redirects are not followed)"
                } else {
                    ""
                };
                let message = format!(
                    "HTTP {status} from {url}{redirect}: {}",
                    String::from_utf8_lossy(&body[..cut]).trim()
                );
                if outcome == HttpOutcome::Retryable {
                    Err(TaskError::retryable(message))
                } else {
                    Err(TaskError::fatal(message))
                }
            }
        }
    }
}

/// Runs the allow-listed program named by `parameters.command`, with the task JSON on stdin
/// and no shell. Exit status 0 succeeds with stdout (cut to `max_output_bytes`) as the
/// result: parsed JSON if it is JSON, else a string, `None` when empty. Another exit status
/// is a retryable failure that quotes the end of stderr. A command not on the list, or a
/// program that cannot be started, fails the task at once.
///
/// The program's environment holds only the allow-listed variables; it runs in the configured
/// working directory (default: a fresh temporary one per attempt) and in a process group of
/// its own, which is killed when the attempt ends: on timeout (the worker drops the attempt),
/// and when the program exits while processes it started still run.
#[derive(Debug, Clone)]
pub struct ExecHandler {
    config: ExecHandlerConfig,
}

impl ExecHandler {
    /// A handler for `config`.
    pub fn new(config: ExecHandlerConfig) -> Self {
        ExecHandler { config }
    }
}

#[async_trait::async_trait]
impl Handler for ExecHandler {
    async fn handle(&self, task: &TaskContext) -> Result<Option<Value>, TaskError> {
        let name = match task.param("command") {
            Some(Value::String(name)) => name,
            Some(other) => {
                return Err(TaskError::fatal(format!(
                    "parameters.command must be a string, not {other}"
                )));
            }
            None => return Err(TaskError::fatal("parameters.command is required")),
        };
        let Some((program, args)) = self
            .config
            .commands
            .get(name)
            .and_then(|argv| argv.split_first())
        else {
            let allowed: Vec<&str> = self.config.commands.keys().map(String::as_str).collect();
            return Err(TaskError::fatal(format!(
                "command {name:?} is not allowed (allowed: {})",
                allowed.join(", ")
            )));
        };
        // Declared before the child: dropped after it is killed.
        let scratch;
        let dir = match &self.config.working_dir {
            Some(dir) => dir.as_path(),
            None => {
                scratch = ScratchDir::create(task).map_err(|e| {
                    TaskError::retryable(format!("cannot create a working directory: {e}"))
                })?;
                scratch.0.as_path()
            }
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(
                std::env::vars_os()
                    .filter(|(key, _)| self.config.env_allow.iter().any(|k| key == k.as_str())),
            )
            .current_dir(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| TaskError::fatal(format!("cannot start {program:?}: {e}")))?;
        // Kills the whole group when the attempt ends, however it ends.
        let group = ProcessGroup(child.id());
        let input = serde_json::to_vec(&task.to_json()).unwrap_or_default();
        let mut stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let max = self.config.max_output_bytes;
        let write = async move {
            if let Some(stdin) = stdin.as_mut() {
                // A program that does not read its input closes the pipe: not an error.
                let _ = stdin.write_all(&input).await;
            }
            drop(stdin);
        };
        let wait = async {
            let status = child.wait().await;
            // What the program left running would hold its output open: the attempt is over.
            group.kill();
            status
        };
        let (_, out, err, status) = tokio::join!(
            write,
            read_head(stdout, max),
            read_tail(stderr, STDERR_TAIL_BYTES),
            wait
        );
        let status =
            status.map_err(|e| TaskError::retryable(format!("waiting for {program:?}: {e}")))?;
        if status.success() {
            return Ok(output_value(&out));
        }
        let err = String::from_utf8_lossy(&err);
        let code = status.code().map_or_else(
            || "killed by a signal".to_owned(),
            |c| format!("exit status {c}"),
        );
        Err(TaskError::retryable(format!(
            "command {name:?} failed ({code}): {}",
            err.trim()
        )))
    }
}

/// The process group of a program the `exec` handler started (its id is the program's pid);
/// killed when dropped.
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    fn kill(&self) {
        #[cfg(unix)]
        if let Some(pid) = self
            .0
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            // ESRCH (nothing left in the group) is the usual, fine outcome.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh directory for one attempt, removed with what the program left in it when dropped.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn create(task: &TaskContext) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "shoal-exec-{}-{}-{:016x}",
            task.task_id,
            task.attempt,
            rand::random::<u64>()
        ));
        std::fs::create_dir(&dir)?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// stdout as a result: JSON if it parses, else a string; `None` when blank.
fn output_value(out: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(out);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return None;
    }
    Some(serde_json::from_str(trimmed).unwrap_or_else(|_| Value::String(trimmed.to_owned())))
}

/// The first `max` bytes; the rest is read and dropped, so the writer never blocks.
async fn read_head(reader: Option<impl AsyncRead + Unpin>, max: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut reader) = reader else {
        return kept;
    };
    let mut chunk = [0u8; 8192];
    while let Ok(n) = reader.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = max.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
    kept
}

/// The last `max` bytes.
async fn read_tail(reader: Option<impl AsyncRead + Unpin>, max: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut reader) = reader else {
        return kept;
    };
    let mut chunk = [0u8; 8192];
    while let Ok(n) = reader.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&chunk[..n]);
        if kept.len() > max {
            kept.drain(..kept.len() - max);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_domain::{JobId, TaskId};
    use std::collections::BTreeMap;

    fn task(parameters: Value) -> TaskContext {
        let job_id = JobId::new();
        TaskContext {
            job_id,
            task_id: TaskId::for_task(job_id, 0),
            index: 0,
            job_type: "test".into(),
            attempt: 1,
            max_attempts: 3,
            parameters,
            timeout: Duration::from_secs(10),
            deadline: tokio::time::Instant::now() + Duration::from_secs(10),
            worker_id: "w".into(),
        }
    }

    #[test]
    fn durations_follow_the_original_with_its_documented_alias() {
        assert_eq!(work_duration(&json!({})).unwrap(), Duration::from_secs(2));
        assert_eq!(work_duration(&Value::Null).unwrap(), Duration::from_secs(2));
        assert_eq!(
            work_duration(&json!({"work_duration_seconds": 0.5})).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            work_duration(&json!({"duration_seconds": "1.5"})).unwrap(),
            Duration::from_millis(1500)
        );
        // The original's own field wins over the alias.
        assert_eq!(
            work_duration(&json!({"work_duration_seconds": 1, "duration_seconds": 9})).unwrap(),
            Duration::from_secs(1)
        );
        for bad in [
            json!({"work_duration_seconds": -1}),
            json!({"duration_seconds": "soon"}),
            json!({"work_duration_seconds": [1]}),
            json!({"work_duration_seconds": 1e9}),
        ] {
            let error = work_duration(&bad).unwrap_err();
            assert!(!error.retryable, "{error}");
        }
    }

    #[test]
    fn matrix_sizes() {
        assert_eq!(matrix_size(&json!({})).unwrap(), 100);
        assert_eq!(matrix_size(&json!({"matrix_size": 7})).unwrap(), 7);
        assert_eq!(matrix_size(&json!({"matrix_size": "12"})).unwrap(), 12);
        for bad in [
            json!({"matrix_size": 0}),
            json!({"matrix_size": 2.5}),
            json!({"matrix_size": 100_000}),
            json!({"matrix_size": true}),
        ] {
            assert!(!matrix_size(&bad).unwrap_err().retryable);
        }
    }

    #[test]
    fn multiplication_is_right() {
        // The sum of the entries of A*B is sum_k (column sums of A)_k * (row sums of B)_k;
        // with entries in [0, 1) it lies in [0, n^3).
        let sum = multiply_random(8, &AtomicBool::new(false)).unwrap();
        assert!((0.0..512.0).contains(&sum));
        assert_eq!(multiply_random(8, &AtomicBool::new(true)), None);
    }

    #[tokio::test]
    async fn workloads_run_and_report() {
        let quick = json!({"work_duration_seconds": 0.05, "matrix_size": 20});
        let cores = CpuPool::new(2);
        let out = CpuBound::new(cores.clone())
            .handle(&task(quick.clone()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out["work_type"], "cpu_bound");
        assert!(out["iterations"].as_u64().unwrap() > 0);
        let started = Instant::now();
        let out = IoBound.handle(&task(quick.clone())).await.unwrap().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(out["work_type"], "io_bound");
        let out = MatrixMultiply::new(cores.clone())
            .handle(&task(quick))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out["matrix_size"], 20);
        assert!(out["checksum"].as_f64().unwrap() > 0.0);
        assert_eq!(Noop.handle(&task(Value::Null)).await.unwrap(), None);
        let error = IoBound
            .handle(&task(json!({"work_duration_seconds": "x"})))
            .await
            .unwrap_err();
        assert!(!error.retryable);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_never_computes_more_than_its_size() {
        let cores = CpuPool::new(2);
        let cpu = CpuBound::new(cores.clone());
        let quick = json!({"work_duration_seconds": 0.1});
        let started = Instant::now();
        let runs: Vec<_> = (0..6)
            .map(|_| {
                let (cpu, parameters) = (cpu.clone(), quick.clone());
                tokio::spawn(async move { cpu.handle(&task(parameters)).await })
            })
            .collect();
        for run in runs {
            let out = run.await.unwrap().unwrap().unwrap();
            // The wait for a core is not counted in the work's duration.
            assert!(out["duration_seconds"].as_f64().unwrap() < 0.3, "{out}");
        }
        assert_eq!(cores.peak(), 2);
        assert_eq!((cores.running(), cores.waiting()), (0, 0));
        // Six tenths of a second of work on two cores: three rounds.
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_core_is_held_until_the_work_stops_even_after_its_caller_gave_up() {
        let cores = CpuPool::new(1);
        let cpu = CpuBound::new(cores.clone());
        let long = json!({"work_duration_seconds": 30});
        // Dropped after 50 ms, like a timeout: the thread sees the flag and stops.
        let cut = tokio::time::timeout(Duration::from_millis(50), cpu.handle(&task(long))).await;
        assert!(cut.is_err());
        let deadline = Instant::now() + Duration::from_secs(5);
        while cores.running() > 0 {
            assert!(Instant::now() < deadline, "the cancelled work did not stop");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let out = cpu
            .handle(&task(json!({"work_duration_seconds": 0.01})))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out["work_type"], "cpu_bound");
        assert_eq!(cores.peak(), 1);
    }

    #[test]
    fn http_statuses() {
        assert_eq!(classify_status(200), HttpOutcome::Success);
        assert_eq!(classify_status(204), HttpOutcome::Success);
        assert_eq!(classify_status(400), HttpOutcome::Fatal);
        assert_eq!(classify_status(404), HttpOutcome::Fatal);
        assert_eq!(classify_status(408), HttpOutcome::Retryable);
        assert_eq!(classify_status(429), HttpOutcome::Retryable);
        assert_eq!(classify_status(500), HttpOutcome::Retryable);
        assert_eq!(classify_status(503), HttpOutcome::Retryable);
        assert_eq!(classify_status(302), HttpOutcome::Fatal);
    }

    /// A one-request HTTP server on loopback that answers `status` with `body`, and hands back
    /// the request it got.
    async fn serve_once(
        status: u16,
        body: &'static str,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/tasks", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = socket.read(&mut chunk).await.unwrap();
                request.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let length = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if request.len() >= head_end + 4 + length || n == 0 {
                        break;
                    }
                }
            }
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&request).to_string()
        });
        (url, server)
    }

    fn http(url: String) -> HttpHandler {
        HttpHandler::new(HttpHandlerConfig::new(url, Duration::from_secs(5)))
    }

    #[tokio::test]
    async fn http_posts_the_task_and_maps_statuses() {
        let (url, server) = serve_once(200, r#"{"thumbnails": 3}"#).await;
        let t = task(json!({"size": 64}));
        let out = http(url).handle(&t).await.unwrap();
        assert_eq!(out, Some(json!({"thumbnails": 3})));
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /tasks"));
        let body: Value =
            serde_json::from_str(&request[request.find("\r\n\r\n").unwrap() + 4..]).unwrap();
        assert_eq!(body["task_id"], json!(t.task_id));
        assert_eq!(body["parameters"]["size"], 64);

        let (url, _server) = serve_once(422, r#"{"detail": "bad size"}"#).await;
        let error = http(url).handle(&t).await.unwrap_err();
        assert!(!error.retryable);
        assert!(
            error.message.contains("HTTP 422") && error.message.contains("bad size"),
            "{error}"
        );

        let (url, _server) = serve_once(503, "").await;
        assert!(http(url).handle(&t).await.unwrap_err().retryable);

        // Nothing listens there: a network error, retryable.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        assert!(http(url).handle(&t).await.unwrap_err().retryable);
    }

    fn exec(commands: &[(&str, &[&str])], max_output_bytes: usize) -> ExecHandler {
        let commands: BTreeMap<String, Vec<String>> = commands
            .iter()
            .map(|(name, argv)| {
                (
                    name.to_string(),
                    argv.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect();
        ExecHandler::new(ExecHandlerConfig {
            commands,
            max_output_bytes,
            ..ExecHandlerConfig::default()
        })
    }

    #[tokio::test]
    async fn exec_refuses_what_is_not_allowed() {
        let handler = exec(&[("echo", &["echo", "hi"])], 1024);
        let error = handler
            .handle(&task(json!({"command": "rm"})))
            .await
            .unwrap_err();
        assert!(!error.retryable);
        assert!(error.message.contains("not allowed"), "{error}");
        assert!(
            !handler
                .handle(&task(json!({})))
                .await
                .unwrap_err()
                .retryable
        );
        assert!(
            !handler
                .handle(&task(json!({"command": ["sh", "-c", "x"]})))
                .await
                .unwrap_err()
                .retryable
        );
        let missing = exec(&[("nope", &["/nonexistent/program"])], 1024);
        assert!(
            !missing
                .handle(&task(json!({"command": "nope"})))
                .await
                .unwrap_err()
                .retryable
        );
    }

    #[tokio::test]
    async fn exec_runs_with_the_task_on_stdin() {
        let handler = exec(
            &[
                ("cat", &["cat"]),
                ("text", &["echo", "hello world"]),
                ("fail", &["sh", "-c", "echo oops >&2; exit 3"]),
                ("big", &["head", "-c", "100000", "/dev/zero"]),
            ],
            10,
        );
        let t = task(json!({"command": "cat"}));
        // `cat` echoes the task JSON, cut to 10 bytes: no longer JSON, so a string.
        let out = handler.handle(&t).await.unwrap().unwrap();
        assert_eq!(out.as_str().unwrap().len(), 10);
        let roomy = exec(&[("cat", &["cat"])], 1 << 20);
        let out = roomy.handle(&t).await.unwrap().unwrap();
        assert_eq!(out["task_id"], json!(t.task_id));
        assert_eq!(out["parameters"]["command"], "cat");
        let out = handler
            .handle(&task(json!({"command": "text"})))
            .await
            .unwrap();
        assert_eq!(out, Some(json!("hello worl")));
        let error = handler
            .handle(&task(json!({"command": "fail"})))
            .await
            .unwrap_err();
        assert!(error.retryable);
        assert!(
            error.message.contains("exit status 3") && error.message.contains("oops"),
            "{error}"
        );
        assert!(
            handler
                .handle(&task(json!({"command": "big"})))
                .await
                .is_ok()
        );
    }
}

/// The `http` handler against a real HTTP server on loopback; the hardening of `exec`.
#[cfg(test)]
mod hardening_tests {
    use super::*;
    use crate::DEFAULT_EXEC_ENV_ALLOW;
    use axum::Router;
    use axum::body::Body;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use shoal_domain::{JobId, TaskId};
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::AtomicUsize;

    fn task(parameters: Value) -> TaskContext {
        let job_id = JobId::new();
        TaskContext {
            job_id,
            task_id: TaskId::for_task(job_id, 0),
            index: 0,
            job_type: "test".into(),
            attempt: 1,
            max_attempts: 3,
            parameters,
            timeout: Duration::from_secs(10),
            deadline: tokio::time::Instant::now() + Duration::from_secs(10),
            worker_id: "w".into(),
        }
    }

    /// An axum server on 127.0.0.1: `/redirect` (302 to `/landing`, which counts its hits),
    /// `/big` (2 MiB with a length), `/stream` (2 MiB chunked, no length), `/small` (a JSON
    /// result), `/fail` (500). Returns its base URL and the hit counter of `/landing`.
    async fn server() -> (String, Arc<AtomicUsize>) {
        let landed = Arc::new(AtomicUsize::new(0));
        let counter = landed.clone();
        let app = Router::new()
            .route(
                "/redirect",
                post(|| async { (StatusCode::FOUND, [(header::LOCATION, "/landing")]) }),
            )
            .route(
                "/landing",
                post(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { "{}" }
                })
                .get(|| async { "{}" }),
            )
            .route("/big", post(|| async { vec![b'x'; 2 << 20] }))
            .route(
                "/stream",
                post(|| async {
                    let chunks = (0..32).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 64 * 1024]));
                    Body::from_stream(futures::stream::iter(chunks)).into_response()
                }),
            )
            .route(
                "/small",
                post(|| async { ([(header::CONTENT_TYPE, "application/json")], r#"{"ok":1}"#) }),
            )
            .route(
                "/fail",
                post(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
            )
            .route("/health", get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, landed)
    }

    fn capped(url: String, max_response_bytes: usize) -> HttpHandler {
        HttpHandler::new(HttpHandlerConfig {
            max_response_bytes,
            ..HttpHandlerConfig::new(url, Duration::from_secs(5))
        })
    }

    #[tokio::test]
    async fn http_does_not_follow_redirects() {
        let (base, landed) = server().await;
        let error = capped(format!("{base}/redirect"), 1 << 20)
            .handle(&task(json!({})))
            .await
            .unwrap_err();
        assert!(!error.retryable, "{error}");
        assert!(
            error.message.contains("HTTP 302") && error.message.contains("not followed"),
            "{error}"
        );
        assert_eq!(
            landed.load(Ordering::SeqCst),
            0,
            "the redirect was followed"
        );
    }

    #[tokio::test]
    async fn http_caps_the_response_size() {
        let (base, _) = server().await;
        let t = task(json!({}));
        for path in ["big", "stream"] {
            let error = capped(format!("{base}/{path}"), 64 * 1024)
                .handle(&t)
                .await
                .unwrap_err();
            assert!(!error.retryable, "{path}: {error}");
            assert!(
                error.message.contains("larger than 65536 bytes"),
                "{path}: {error}"
            );
        }
        // Under the cap, the result is read as before.
        let out = capped(format!("{base}/small"), 64 * 1024)
            .handle(&t)
            .await
            .unwrap();
        assert_eq!(out, Some(json!({"ok": 1})));
        let out = capped(format!("{base}/big"), 4 << 20).handle(&t).await;
        assert!(out.is_ok(), "{out:?}");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://user:s3cret@hooks.example.com:8443/run?token=abc#frag"),
            "https://hooks.example.com:8443/run?<redacted>"
        );
        assert_eq!(
            redact_url("http://example.com/tasks"),
            "http://example.com/tasks"
        );
        assert_eq!(redact_url("not a url s3cret"), "<invalid URL>");
        let config = HttpHandlerConfig::new("https://u:pw@h.example/x?key=k", Duration::ZERO);
        let shown = format!("{config:?}");
        assert!(!shown.contains("pw") && !shown.contains("key=k"), "{shown}");
    }

    #[tokio::test]
    async fn http_errors_do_not_show_credentials() {
        let (base, _) = server().await;
        let t = task(json!({}));
        let with_secrets =
            |url: &str| url.replacen("http://", "http://alice:s3cret@", 1) + "?token=t0ken";
        // A status error, a redirect, an oversized body, and a network error.
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/x", listener.local_addr().unwrap())
        };
        for url in [
            format!("{base}/fail"),
            format!("{base}/redirect"),
            format!("{base}/big"),
            closed,
        ] {
            let error = capped(with_secrets(&url), 1024)
                .handle(&t)
                .await
                .unwrap_err();
            for secret in ["alice", "s3cret", "t0ken"] {
                assert!(!error.message.contains(secret), "{url}: {error}");
            }
            assert!(error.message.contains("127.0.0.1"), "{error}");
        }
    }

    fn exec_in(dir: Option<&Path>, commands: &[(&str, &[&str])]) -> ExecHandler {
        let commands: BTreeMap<String, Vec<String>> = commands
            .iter()
            .map(|(name, argv)| {
                (
                    name.to_string(),
                    argv.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect();
        ExecHandler::new(ExecHandlerConfig {
            commands,
            working_dir: dir.map(Path::to_path_buf),
            ..ExecHandlerConfig::default()
        })
    }

    /// A directory of this test's own, removed at the end.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "shoal-test-{name}-{}-{:x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TestDir(dir)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn exec_children_get_only_allow_listed_environment() {
        let handler = exec_in(None, &[("env", &["env"])]);
        let out = handler
            .handle(&task(json!({"command": "env"})))
            .await
            .unwrap()
            .unwrap();
        let out = out.as_str().unwrap_or_default().to_owned();
        let names: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        for name in &names {
            assert!(
                DEFAULT_EXEC_ENV_ALLOW.contains(name),
                "{name} leaked: {out}"
            );
        }
        if std::env::var_os("PATH").is_some() {
            assert!(names.contains(&"PATH"), "{out}");
        }

        // Another variable of this process (the test runner sets several): passed on only
        // once allowed.
        let (name, value) = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .find(|(k, v)| {
                !DEFAULT_EXEC_ENV_ALLOW.contains(&k.as_str())
                    && !v.is_empty()
                    && v.trim() == v
                    && !v.contains('\n')
            })
            .expect("the test process has some environment");
        assert!(!names.contains(&name.as_str()), "{name} leaked: {out}");
        let handler = ExecHandler::new(ExecHandlerConfig {
            env_allow: vec![name.clone()],
            ..exec_in(None, &[("env", &["env"])]).config
        });
        let out = handler
            .handle(&task(json!({"command": "env"})))
            .await
            .unwrap()
            .unwrap();
        // Without PATH, `env` is found in the default /bin:/usr/bin, and prints only NAME.
        let expected = format!("{name}={value}");
        assert_eq!(out.as_str().map(str::to_owned), Some(expected));
    }

    #[tokio::test]
    async fn exec_runs_in_its_working_directory() {
        // By default a fresh temporary directory, removed afterwards.
        let handler = exec_in(None, &[("pwd", &["pwd"])]);
        let out = handler
            .handle(&task(json!({"command": "pwd"})))
            .await
            .unwrap()
            .unwrap();
        let dir = PathBuf::from(out.as_str().unwrap());
        assert!(dir.starts_with(std::env::temp_dir()), "{}", dir.display());
        assert!(
            dir.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("shoal-exec-"),
            "{}",
            dir.display()
        );
        assert!(!dir.exists(), "the scratch directory is removed");
        // Or the configured one.
        let configured = TestDir::new("cwd");
        let handler = exec_in(Some(&configured.0), &[("pwd", &["pwd"])]);
        let out = handler
            .handle(&task(json!({"command": "pwd"})))
            .await
            .unwrap();
        assert_eq!(
            out,
            Some(json!(
                configured.0.canonicalize().unwrap().to_string_lossy()
            ))
        );
    }

    /// Whether process `pid` is gone (or a zombie nobody has reaped yet: it runs no more).
    fn gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    async fn read_pid(path: &Path) -> u32 {
        for _ in 0..200 {
            if let Ok(text) = std::fs::read_to_string(path)
                && let Ok(pid) = text.trim().parse()
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{} was never written", path.display());
    }

    async fn wait_gone(pid: u32, what: &str) {
        for _ in 0..200 {
            if gone(pid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the {what} (pid {pid}) still runs");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_timed_out_exec_task_takes_its_grandchildren_with_it() {
        let dir = TestDir::new("group");
        let script = "echo $$ > child.pid; sleep 1000 & echo $! > grandchild.pid; wait";
        let handler = exec_in(Some(&dir.0), &[("spawner", &["sh", "-c", script])]);
        let t = task(json!({"command": "spawner"}));
        // Boxed, so that dropping it below drops the attempt itself.
        let mut attempt = Box::pin(handler.handle(&t));
        let pids = async {
            (
                read_pid(&dir.0.join("child.pid")).await,
                read_pid(&dir.0.join("grandchild.pid")).await,
            )
        };
        let (child, grandchild) = tokio::select! {
            result = &mut attempt => panic!("the attempt ended on its own: {result:?}"),
            pids = pids => pids,
        };
        assert!(
            !gone(child) && !gone(grandchild),
            "both run during the attempt"
        );
        // The worker enforces a task's timeout by dropping the attempt, as this does.
        drop(attempt);
        wait_gone(child, "child").await;
        wait_gone(grandchild, "grandchild").await;
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn what_an_exec_program_leaves_running_ends_with_it() {
        let dir = TestDir::new("leftover");
        // Exits at once, leaving a process that holds stdout open.
        let script = "sleep 1000 & echo $! > grandchild.pid; echo done";
        let handler = exec_in(Some(&dir.0), &[("leaver", &["sh", "-c", script])]);
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            handler.handle(&task(json!({"command": "leaver"}))),
        )
        .await
        .expect("the attempt ends when its program does")
        .unwrap();
        assert_eq!(out, Some(json!("done")));
        let grandchild = read_pid(&dir.0.join("grandchild.pid")).await;
        wait_gone(grandchild, "grandchild").await;
    }
}
