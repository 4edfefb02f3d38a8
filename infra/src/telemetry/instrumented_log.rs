//! An [`EventLog`] that measures its appends (latency, events per commit, failures) into the
//! process's [`metrics`](super::metrics), by caller. Reads pass through untouched.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::metrics::metrics;
use crate::eventlog::{
    AppendBatch, AppendOutcome, EventLog, EventStream, LogPosition, LogResult, RecordedEvent,
};
use crate::queue::{OutgoingMessage, Receipt};

/// Wraps an event log; `caller` labels its appends (`worker`, `command`, `orchestrator`, ...).
#[derive(Debug, Clone)]
pub struct InstrumentedLog {
    inner: Arc<dyn EventLog>,
    caller: &'static str,
}

impl InstrumentedLog {
    /// Records a group commit's metrics (one commit for the whole group, more only when some
    /// batches conflicted) and hands its results back.
    fn group_appended(
        &self,
        events: usize,
        began: Instant,
        results: Vec<LogResult<AppendOutcome>>,
    ) -> Vec<LogResult<AppendOutcome>> {
        let written = results.iter().filter(|r| r.is_ok()).count();
        metrics().log_append(
            self.caller,
            events,
            began.elapsed(),
            written > 0 || results.is_empty(),
        );
        results
    }

    /// `inner`, measured under `caller`.
    pub fn wrap(inner: Arc<dyn EventLog>, caller: &'static str) -> Arc<dyn EventLog> {
        Arc::new(InstrumentedLog { inner, caller })
    }
}

fn events_in(batch: &AppendBatch) -> usize {
    batch.streams.iter().map(|s| s.events.len()).sum()
}

#[async_trait::async_trait]
impl EventLog for InstrumentedLog {
    async fn append(&self, batch: AppendBatch) -> LogResult<AppendOutcome> {
        let events = events_in(&batch);
        let began = Instant::now();
        let result = self.inner.append(batch).await;
        metrics().log_append(self.caller, events, began.elapsed(), result.is_ok());
        result
    }

    async fn append_and_send(
        &self,
        batch: AppendBatch,
        messages: Vec<OutgoingMessage>,
    ) -> LogResult<AppendOutcome> {
        let events = events_in(&batch);
        let began = Instant::now();
        let result = self.inner.append_and_send(batch, messages).await;
        metrics().log_append(self.caller, events, began.elapsed(), result.is_ok());
        result
    }

    async fn read_all(&self, after: LogPosition, limit: i64) -> LogResult<Vec<RecordedEvent>> {
        self.inner.read_all(after, limit).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: i64,
    ) -> LogResult<Vec<RecordedEvent>> {
        self.inner.read_stream(stream_id, after_version).await
    }

    async fn read_streams(&self, stream_ids: &[String]) -> LogResult<Vec<RecordedEvent>> {
        self.inner.read_streams(stream_ids).await
    }

    async fn read_streams_until(
        &self,
        stream_ids: &[String],
        until: DateTime<Utc>,
    ) -> LogResult<Vec<RecordedEvent>> {
        self.inner.read_streams_until(stream_ids, until).await
    }

    async fn read_positions(&self, positions: &[i64]) -> LogResult<Vec<RecordedEvent>> {
        self.inner.read_positions(positions).await
    }

    async fn read_job(
        &self,
        job_id: uuid::Uuid,
        after: LogPosition,
        limit: i64,
    ) -> LogResult<Vec<RecordedEvent>> {
        self.inner.read_job(job_id, after, limit).await
    }

    async fn job_failed_task_streams(
        &self,
        job_id: uuid::Uuid,
        after: Option<&str>,
        limit: i64,
    ) -> LogResult<Vec<String>> {
        self.inner
            .job_failed_task_streams(job_id, after, limit)
            .await
    }

    async fn append_many(&self, batches: Vec<AppendBatch>) -> Vec<LogResult<AppendOutcome>> {
        let events: usize = batches.iter().map(events_in).sum();
        let began = Instant::now();
        let results = self.inner.append_many(batches).await;
        self.group_appended(events, began, results)
    }

    async fn append_many_and_ack(
        &self,
        batches: Vec<AppendBatch>,
        acks: Vec<Option<Receipt>>,
    ) -> Vec<LogResult<AppendOutcome>> {
        let events: usize = batches.iter().map(events_in).sum();
        let began = Instant::now();
        let results = self.inner.append_many_and_ack(batches, acks).await;
        self.group_appended(events, began, results)
    }

    async fn head(&self) -> LogResult<LogPosition> {
        self.inner.head().await
    }

    async fn forget_idempotency_keys(
        &self,
        used_before: DateTime<Utc>,
        limit: i64,
    ) -> LogResult<u64> {
        self.inner.forget_idempotency_keys(used_before, limit).await
    }

    async fn load_checkpoint(&self, name: &str) -> LogResult<LogPosition> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoint(&self, name: &str, position: LogPosition) -> LogResult<()> {
        self.inner.save_checkpoint(name, position).await
    }

    fn subscribe(&self, after: LogPosition, batch_size: i64) -> EventStream {
        self.inner.subscribe(after, batch_size)
    }
}
