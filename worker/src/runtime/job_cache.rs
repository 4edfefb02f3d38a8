//! Whether a delivery's job is cancelled, read from the job's stream and trusted for a short
//! while, so that a cancelled job's queued tasks are skipped without a read per task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_domain::{JobId, JobStatus, evolve_job};
use shoal_infra::eventlog::{EventLog, LogError};
use tokio::sync::OnceCell;

use super::delivery::decode_all;

/// Whether jobs are cancelled, as read from their streams, trusted for a short while. One
/// read per job at a time: concurrent deliveries of one job wait for the same read.
pub(super) struct JobCache {
    ttl: Duration,
    entries: std::sync::Mutex<HashMap<JobId, CachedStatus>>,
}

/// When a job's status was (or is being) read, and whether it is cancelled.
type CachedStatus = (Instant, Arc<OnceCell<bool>>);

impl JobCache {
    const MAX_ENTRIES: usize = 10_000;

    pub(super) fn new(ttl: Duration) -> Self {
        JobCache {
            ttl,
            entries: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Whether the job is cancelled; `false` when its stream cannot be read (not knowing is
    /// no reason to hold work up).
    pub(super) async fn is_cancelled(&self, log: &dyn EventLog, job_id: JobId) -> bool {
        let cell = {
            let mut entries = self
                .entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match entries.get(&job_id) {
                Some((read_at, cell)) if read_at.elapsed() < self.ttl => cell.clone(),
                _ => {
                    if entries.len() >= JobCache::MAX_ENTRIES {
                        let ttl = self.ttl;
                        entries.retain(|_, (read_at, _)| read_at.elapsed() < ttl);
                    }
                    let cell = Arc::new(OnceCell::new());
                    entries.insert(job_id, (Instant::now(), cell.clone()));
                    cell
                }
            }
        };
        let read = cell
            .get_or_try_init(|| async {
                let records = log.read_stream(&job_id.stream_id(), 0).await?;
                let state = decode_all(&records)
                    .iter()
                    .fold(Default::default(), evolve_job);
                Ok::<_, LogError>(state.status == JobStatus::Cancelled)
            })
            .await;
        match read {
            Ok(cancelled) => *cancelled,
            Err(error) => {
                // Not knowing is no reason to hold work up: run it (a cancelled job's task that
                // runs anyway is harmless; the job stays CANCELLED).
                tracing::warn!(%error, %job_id, "could not read the job's status; running its task");
                false
            }
        }
    }
}
