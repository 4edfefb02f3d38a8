//! [`SqsQueue`]: the [`TaskQueue`] operations as SQS calls (see the parent module for where
//! SQS's semantics differ, and why that is harmless).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use super::batch::{BATCH, retry_failed_entries};
use super::counters::SqsCallCounts;
use super::provision::{client_from_env, dead_letter_queue_url};
use super::sdk_error;
use crate::queue::{
    DeadLetter, Delivery, OutgoingMessage, PoisonMessage, QueueDepth, QueueError, QueueResult,
    Receipt, TaskMessage, TaskQueue,
};

/// The payload of one `SendMessageBatch` (bodies and attributes), kept under SQS's classic
/// 256 KiB limit, which every region and emulator accepts.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Batch calls in flight at once per operation.
const IN_FLIGHT: usize = 8;
/// SQS limits, in seconds.
const MAX_DELAY_SECS: u64 = 900;
const MAX_VISIBILITY_SECS: u64 = 43_200;
const MAX_WAIT_SECS: u64 = 20;
/// Receives while listing dead letters (at most ten messages each).
const MAX_PEEK_CALLS: usize = 100;
/// The longest a listing of dead letters waits for messages on each call: long polling asks
/// every SQS server, so a small DLQ is not missed.
const PEEK_WAIT_SECS: i32 = 1;
/// How long this instance keeps the body of a received message for `dead_letter`: after SQS's
/// longest visibility timeout its receipt cannot be current any more.
const HOLD_FOR: Duration = Duration::from_secs(MAX_VISIBILITY_SECS + 60);

/// Message attributes Shoal sets. The ids let a dead letter whose body cannot be parsed still
/// name its job and task.
const ATTR_JOB_ID: &str = "job_id";
const ATTR_TASK_ID: &str = "task_id";
const ATTR_ATTEMPT: &str = "attempt";
const ATTR_REASON: &str = "reason";
const ATTR_DEAD_LETTERED_AT: &str = "dead_lettered_at";

/// The reason of a dead letter that the redrive policy moved (it carries no `reason`).
const REDRIVEN_REASON: &str = "received too many times without being handled";

/// The task queue on an SQS standard queue and, optionally, its dead-letter queue (see the
/// module docs). Cheap to clone; clones share the call counts and the bodies of received
/// messages (which `dead_letter` needs), so create one per process and queue, and clone it.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    queue_url: String,
    dlq_url: Option<String>,
    calls: SqsCallCounts,
    /// Received messages by receipt handle, until acknowledged, released or dead-lettered.
    held: Mutex<HashMap<String, Held>>,
}

/// A received message's body and attributes, kept for `dead_letter`.
#[derive(Debug, Clone)]
struct Held {
    body: String,
    attributes: HashMap<String, MessageAttributeValue>,
    received_at: Instant,
    /// `dead_letter` has sent the copy to the DLQ (and failed to delete the original).
    copied: bool,
}

/// One queue or the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Queue,
    DeadLetters,
}

impl SqsQueue {
    /// The longest task timeout a job may ask for on SQS, in seconds: 11 h 55 min. SQS hides
    /// a received message for at most 12 hours from its receipt, however often its visibility
    /// is extended; a task must end (and its worker record it) within that, or its message
    /// comes back to another worker while it still runs. The 5 minutes between are for the
    /// worker to receive, start and record the end. See `docs/sqs.md`.
    pub const MAX_TASK_TIMEOUT_SECONDS: u32 = 42_900;

    /// How long [`TaskQueue::dead_letters`] hides the dead letters it lists.
    pub const PEEK_VISIBILITY: Duration = Duration::from_secs(1);

    /// The queue at `queue_url`, dead-lettering to `dlq_url` (without one, `dead_letter` fails
    /// and there are no dead letters to list).
    pub fn new(client: Client, queue_url: impl Into<String>, dlq_url: Option<String>) -> Self {
        SqsQueue {
            inner: Arc::new(Inner {
                client,
                queue_url: queue_url.into(),
                dlq_url,
                calls: SqsCallCounts::default(),
                held: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The queue at `queue_url` with a client from the standard AWS configuration chain
    /// (environment, profile, IRSA web identity; `AWS_ENDPOINT_URL` overrides the endpoint) and
    /// the dead-letter queue named by the queue's redrive policy, if any.
    ///
    /// `Err` when no region is configured or the queue's attributes cannot be read (wrong URL,
    /// no credentials, no permission).
    pub async fn from_env(queue_url: impl Into<String>) -> QueueResult<Self> {
        let client = client_from_env().await?;
        let queue_url = queue_url.into();
        let dlq_url = dead_letter_queue_url(&client, &queue_url).await?;
        Ok(SqsQueue::new(client, queue_url, dlq_url))
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    pub fn queue_url(&self) -> &str {
        &self.inner.queue_url
    }

    pub fn dlq_url(&self) -> Option<&str> {
        self.inner.dlq_url.as_deref()
    }

    /// The SQS calls made so far by this queue and its clones.
    pub fn calls(&self) -> &SqsCallCounts {
        &self.inner.calls
    }

    /// Sends a message with an arbitrary body, visible at once: for tests of malformed
    /// (poison) messages, which [`TaskQueue::send`] cannot produce.
    #[doc(hidden)]
    #[tracing::instrument(name = "queue.send_raw", skip_all, err(level = "debug"))]
    pub async fn send_raw(
        &self,
        job_id: Uuid,
        task_id: Uuid,
        attempt: u32,
        raw_body: &str,
    ) -> QueueResult<()> {
        let attributes = HashMap::from([
            (
                ATTR_ATTEMPT.to_owned(),
                string_attribute(attempt.to_string())?,
            ),
            (
                ATTR_JOB_ID.to_owned(),
                string_attribute(job_id.to_string())?,
            ),
            (
                ATTR_TASK_ID.to_owned(),
                string_attribute(task_id.to_string())?,
            ),
        ]);
        self.send_one(Which::Queue, raw_body, attributes).await
    }

    fn url(&self, which: Which) -> QueueResult<&str> {
        match which {
            Which::Queue => Ok(&self.inner.queue_url),
            Which::DeadLetters => self
                .inner
                .dlq_url
                .as_deref()
                .ok_or(QueueError::NoDeadLetterQueue),
        }
    }

    fn count(&self, counter: impl Fn(&SqsCallCounts) -> &AtomicU64, n: u64) {
        counter(&self.inner.calls).fetch_add(n, Ordering::Relaxed);
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.inner
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn forget(&self, receipts: &[&str]) {
        let mut held = self.held();
        for receipt in receipts {
            held.remove(*receipt);
        }
    }

    /// Settles a call on one receipt: done or stale, the receipt is no longer held (a stale one
    /// is reported as [`QueueError::StaleReceipt`]); any other error keeps it held for a retry.
    fn settle_one<T, E>(
        &self,
        receipt: &Receipt,
        operation: &'static str,
        result: Result<T, E>,
    ) -> QueueResult<()>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match result {
            Ok(_) => {
                self.forget(&[&receipt.0]);
                Ok(())
            }
            Err(e) if is_stale_code(e.code().unwrap_or_default()) => {
                self.forget(&[&receipt.0]);
                Err(QueueError::StaleReceipt(receipt.0.clone()))
            }
            Err(e) => Err(sdk_error(operation, e)),
        }
    }

    /// One `SendMessage` (dead letters and raw test messages; tasks go in batches).
    async fn send_one(
        &self,
        which: Which,
        body: &str,
        attributes: HashMap<String, MessageAttributeValue>,
    ) -> QueueResult<()> {
        let url = self.url(which)?;
        self.count(|c| &c.send_message, 1);
        self.inner
            .client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .set_message_attributes(Some(attributes))
            .send()
            .await
            .map_err(|e| sdk_error("SendMessage", e))?;
        if which == Which::Queue {
            self.count(|c| &c.messages_sent, 1);
        }
        Ok(())
    }

    /// One `SendMessageBatch` of at most ten entries, retrying the entries that failed without
    /// the sender's fault.
    async fn send_batch(&self, entries: Vec<SendMessageBatchRequestEntry>) -> QueueResult<()> {
        let sent = entries.len() as u64;
        retry_failed_entries(
            "SendMessageBatch",
            entries,
            |_| false,
            |entries| async {
                self.count(|c| &c.send_message_batch, 1);
                let output = self
                    .inner
                    .client
                    .send_message_batch()
                    .queue_url(&self.inner.queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| sdk_error("SendMessageBatch", e))?;
                Ok(output.failed)
            },
        )
        .await?;
        self.count(|c| &c.messages_sent, sent);
        Ok(())
    }

    /// One `ReceiveMessage` call, with the receive count and every message attribute.
    async fn receive_once(
        &self,
        which: Which,
        max: usize,
        visibility_secs: i32,
        wait_secs: i32,
    ) -> QueueResult<Vec<Message>> {
        let url = self.url(which)?;
        self.count(|c| &c.receive_message, 1);
        let output = self
            .inner
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(clamp_i32(max.min(BATCH)))
            .visibility_timeout(visibility_secs)
            .wait_time_seconds(wait_secs)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| sdk_error("ReceiveMessage", e))?;
        let messages = output.messages.unwrap_or_default();
        if which == Which::Queue {
            self.count(|c| &c.messages_received, messages.len() as u64);
        }
        Ok(messages)
    }

    /// `DeleteMessageBatch` of any number of receipt handles, ten per call, several calls in
    /// flight. Stale receipts are skipped.
    async fn delete_batches(&self, which: Which, receipts: &[&str]) -> QueueResult<()> {
        let url = self.url(which)?;
        // The calls are collected first: a stream that maps borrowed chunks lazily trips the
        // compiler's `Send` check inside `async_trait`.
        let calls: Vec<_> = receipts
            .chunks(BATCH)
            .map(|chunk| self.delete_batch(which, url, chunk))
            .collect();
        futures::stream::iter(calls)
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await
    }

    async fn delete_batch(&self, which: Which, url: &str, receipts: &[&str]) -> QueueResult<()> {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, receipt)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*receipt)
                    .build()
                    .map_err(|source| QueueError::InvalidRequest {
                        operation: "DeleteMessageBatch",
                        source,
                    })
            })
            .collect::<QueueResult<Vec<_>>>()?;
        retry_failed_entries(
            "DeleteMessageBatch",
            entries,
            is_stale_code,
            |entries| async {
                self.count(|c| &c.delete_message_batch, 1);
                let output = self
                    .inner
                    .client
                    .delete_message_batch()
                    .queue_url(url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| sdk_error("DeleteMessageBatch", e))?;
                if which == Which::Queue {
                    self.count(|c| &c.messages_deleted, output.successful.len() as u64);
                }
                Ok(output.failed)
            },
        )
        .await
    }

    async fn change_visibility_batch(&self, receipts: &[&str], secs: i32) -> QueueResult<()> {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, receipt)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*receipt)
                    .visibility_timeout(secs)
                    .build()
                    .map_err(|source| QueueError::InvalidRequest {
                        operation: "ChangeMessageVisibilityBatch",
                        source,
                    })
            })
            .collect::<QueueResult<Vec<_>>>()?;
        let operation = "ChangeMessageVisibilityBatch";
        retry_failed_entries(operation, entries, is_stale_code, |entries| async {
            self.count(|c| &c.change_message_visibility_batch, 1);
            let output = self
                .inner
                .client
                .change_message_visibility_batch()
                .queue_url(&self.inner.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sdk_error(operation, e))?;
            Ok(output.failed)
        })
        .await
    }

    /// A received message as a delivery, its body kept for `dead_letter`.
    fn deliver(&self, message: Message) -> Option<Delivery> {
        let receipt = message.receipt_handle?;
        let receive_count = message
            .attributes
            .as_ref()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|count| count.parse().ok())
            .unwrap_or(1);
        let raw = message.body.unwrap_or_default();
        let size = raw.len();
        let body = TaskMessage::decode(&raw).map_err(|error| PoisonMessage {
            error: error.to_string(),
            raw: raw.clone(),
        });
        self.held().insert(
            receipt.clone(),
            Held {
                body: raw,
                attributes: message.message_attributes.unwrap_or_default(),
                received_at: Instant::now(),
                copied: false,
            },
        );
        Some(Delivery {
            receipt: Receipt(receipt),
            size,
            body,
            receive_count,
            priority: 0,
        })
    }

    /// Drops the bodies of messages received so long ago that their receipts are stale.
    fn prune_held(&self) {
        let now = Instant::now();
        self.held()
            .retain(|_, held| now.duration_since(held.received_at) < HOLD_FOR);
    }

    async fn queue_counts(&self, url: &str) -> QueueResult<(u64, u64, u64)> {
        self.count(|c| &c.get_queue_attributes, 1);
        let output = self
            .inner
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| sdk_error("GetQueueAttributes", e))?;
        let attributes = output.attributes.unwrap_or_default();
        let get = |name: QueueAttributeName| {
            attributes
                .get(&name)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        ))
    }
}

#[async_trait::async_trait]
impl TaskQueue for SqsQueue {
    #[tracing::instrument(
        name = "queue.send",
        skip_all,
        err(level = "debug"),
        fields(messages = messages.len())
    )]
    async fn send(&self, messages: Vec<OutgoingMessage>) -> QueueResult<()> {
        let mut batches: Vec<Vec<SendMessageBatchRequestEntry>> = Vec::new();
        let mut batch: Vec<SendMessageBatchRequestEntry> = Vec::with_capacity(BATCH);
        let mut batch_bytes = 0;
        for message in messages {
            let body = serde_json::to_string(&message.body).map_err(QueueError::Serialize)?;
            let attributes = [
                (ATTR_JOB_ID, message.body.job_id.to_string()),
                (ATTR_TASK_ID, message.body.task_id.to_string()),
                (ATTR_ATTEMPT, message.body.attempt.to_string()),
            ];
            let bytes = body.len()
                + attributes
                    .iter()
                    .map(|(name, value)| name.len() + "String".len() + value.len())
                    .sum::<usize>();
            let full = batch.len() == BATCH || batch_bytes + bytes > MAX_BATCH_BYTES;
            if full && !batch.is_empty() {
                batches.push(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
                batch_bytes = 0;
            }
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(batch.len().to_string())
                .message_body(body)
                .delay_seconds(clamp_i32(ceil_secs(message.delay).min(MAX_DELAY_SECS)));
            for (name, value) in attributes {
                entry = entry.message_attributes(name, string_attribute(value)?);
            }
            batch.push(entry.build().map_err(|source| QueueError::InvalidRequest {
                operation: "SendMessageBatch",
                source,
            })?);
            batch_bytes += bytes;
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        let calls: Vec<_> = batches
            .into_iter()
            .map(|batch| self.send_batch(batch))
            .collect();
        futures::stream::iter(calls)
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await
    }

    #[tracing::instrument(
        name = "queue.receive",
        skip_all,
        err(level = "debug"),
        fields(max = max, delivered = tracing::field::Empty)
    )]
    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> QueueResult<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.prune_held();
        let visibility_secs = clamp_i32(ceil_secs(visibility).min(MAX_VISIBILITY_SECS));
        let deadline = Instant::now().checked_add(wait);
        // Long-poll (20 s per call at most) until something arrives or `wait` is over.
        let mut wait_secs = ceil_secs(wait).min(MAX_WAIT_SECS);
        let mut messages = loop {
            let got = self
                .receive_once(Which::Queue, max, visibility_secs, clamp_i32(wait_secs))
                .await?;
            if !got.is_empty() {
                break got;
            }
            let remaining = deadline.map_or(wait, |deadline| {
                deadline.saturating_duration_since(Instant::now())
            });
            // Round to the nearest second: what is left of a sub-second wait is not worth a call.
            wait_secs = ((remaining.as_millis() + 500) / 1000)
                .min(u128::from(MAX_WAIT_SECS))
                .try_into()
                .unwrap_or(MAX_WAIT_SECS);
            if wait_secs == 0 {
                return Ok(Vec::new());
            }
        };
        // Then fill the batch without waiting, while calls come back full.
        let mut asked = max.min(BATCH);
        let mut got = messages.len();
        for _ in 1..max.div_ceil(BATCH) {
            if got < asked || messages.len() >= max {
                break;
            }
            asked = (max - messages.len()).min(BATCH);
            let more = self
                .receive_once(Which::Queue, asked, visibility_secs, 0)
                .await?;
            got = more.len();
            messages.extend(more);
        }
        let deliveries: Vec<Delivery> = messages
            .into_iter()
            .filter_map(|message| self.deliver(message))
            .collect();
        tracing::Span::current().record("delivered", deliveries.len());
        Ok(deliveries)
    }

    #[tracing::instrument(
        name = "queue.extend",
        skip_all,
        err(level = "debug"),
        fields(receipts = receipts.len())
    )]
    async fn extend(&self, receipts: &[Receipt], visibility: Duration) -> QueueResult<()> {
        let receipts = distinct(receipts);
        let secs = clamp_i32(ceil_secs(visibility).min(MAX_VISIBILITY_SECS));
        let calls: Vec<_> = receipts
            .chunks(BATCH)
            .map(|chunk| self.change_visibility_batch(chunk, secs))
            .collect();
        futures::stream::iter(calls)
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await
    }

    #[tracing::instrument(name = "queue.release", skip_all, err(level = "debug"))]
    async fn release(&self, receipt: &Receipt, delay: Duration) -> QueueResult<()> {
        let secs = clamp_i32(ceil_secs(delay).min(MAX_VISIBILITY_SECS));
        self.count(|c| &c.change_message_visibility, 1);
        let result = self
            .inner
            .client
            .change_message_visibility()
            .queue_url(&self.inner.queue_url)
            .receipt_handle(&receipt.0)
            .visibility_timeout(secs)
            .send()
            .await;
        self.settle_one(receipt, "ChangeMessageVisibility", result)
    }

    #[tracing::instrument(
        name = "queue.ack",
        skip_all,
        err(level = "debug"),
        fields(receipts = receipts.len())
    )]
    async fn ack(&self, receipts: &[Receipt]) -> QueueResult<()> {
        let receipts = distinct(receipts);
        self.delete_batches(Which::Queue, &receipts).await?;
        self.forget(&receipts);
        Ok(())
    }

    #[tracing::instrument(name = "queue.dead_letter", skip_all, err(level = "debug"))]
    async fn dead_letter(&self, receipt: &Receipt, reason: &str) -> QueueResult<()> {
        // The copy first: if deleting the original then fails for good, the message is
        // delivered again and dead-lettered again (a duplicate dead letter), rather than lost.
        let held = self.held().get(&receipt.0).cloned();
        let Some(held) = held else {
            // Acknowledged, released or dead-lettered already, or received by another
            // instance (which alone holds the body).
            return Err(QueueError::StaleReceipt(receipt.0.clone()));
        };
        if !held.copied {
            let mut attributes = held.attributes;
            let reason = if reason.trim().is_empty() {
                "(no reason given)"
            } else {
                reason
            };
            attributes.insert(ATTR_REASON.to_owned(), string_attribute(reason.to_owned())?);
            attributes.insert(
                ATTR_DEAD_LETTERED_AT.to_owned(),
                string_attribute(Utc::now().to_rfc3339())?,
            );
            self.send_one(Which::DeadLetters, &held.body, attributes)
                .await?;
            // A retry after a failed delete below must not copy it again.
            if let Some(held) = self.held().get_mut(&receipt.0) {
                held.copied = true;
            }
        }
        self.count(|c| &c.delete_message, 1);
        let result = self
            .inner
            .client
            .delete_message()
            .queue_url(&self.inner.queue_url)
            .receipt_handle(&receipt.0)
            .send()
            .await;
        // A retryable error keeps the receipt held, its copy made.
        self.settle_one(receipt, "DeleteMessage", result)
    }

    async fn purge_job(&self, _job_id: Uuid) -> QueueResult<u64> {
        // SQS cannot select messages by content; workers skip a cancelled job's tasks.
        Ok(0)
    }

    #[tracing::instrument(name = "queue.depth", skip_all, err(level = "debug"))]
    async fn depth(&self) -> QueueResult<QueueDepth> {
        let queue = self.queue_counts(&self.inner.queue_url);
        let dead = async {
            match &self.inner.dlq_url {
                Some(url) => self.queue_counts(url).await,
                None => Ok((0, 0, 0)),
            }
        };
        let ((visible, in_flight, delayed), (dead_visible, dead_hidden, dead_delayed)) =
            futures::try_join!(queue, dead)?;
        Ok(QueueDepth {
            visible,
            in_flight,
            delayed,
            dead_lettered: dead_visible + dead_hidden + dead_delayed,
        })
    }

    #[tracing::instrument(name = "queue.dead_letters", skip_all, err(level = "debug"))]
    async fn dead_letters(&self, job_id: Option<Uuid>, limit: i64) -> QueueResult<Vec<DeadLetter>> {
        let limit = usize::try_from(limit).unwrap_or(0);
        if limit == 0 || self.inner.dlq_url.is_none() {
            return Ok(Vec::new());
        }
        let visibility = clamp_i32(ceil_secs(SqsQueue::PEEK_VISIBILITY));
        // By message id: a message seen twice (its peek expired during the scan) keeps its
        // newest receipt, the one SQS promises to honour.
        let mut found: HashMap<String, DeadLetter> = HashMap::new();
        let mut seen = HashSet::new();
        for _ in 0..MAX_PEEK_CALLS {
            let messages = self
                .receive_once(Which::DeadLetters, BATCH, visibility, PEEK_WAIT_SECS)
                .await?;
            let mut new = false;
            for message in messages {
                let Some(letter) = dead_letter_of(&message) else {
                    continue;
                };
                let id = message.message_id.unwrap_or_else(|| letter.id.clone());
                new |= seen.insert(id.clone());
                if job_id.is_none() || letter.job_id == job_id {
                    found.insert(id, letter);
                }
            }
            // Empty, or only messages whose peek expired during the scan: it went around.
            if !new || found.len() >= limit {
                break;
            }
        }
        let mut letters: Vec<DeadLetter> = found.into_values().collect();
        letters.sort_by_key(|letter| letter.dead_lettered_at);
        letters.truncate(limit);
        Ok(letters)
    }

    #[tracing::instrument(
        name = "queue.remove_dead_letters",
        skip_all,
        err(level = "debug"),
        fields(ids = ids.len())
    )]
    async fn remove_dead_letters(&self, ids: &[String]) -> QueueResult<()> {
        let ids: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if ids.is_empty() || self.inner.dlq_url.is_none() {
            return Ok(());
        }
        self.delete_batches(Which::DeadLetters, &ids).await
    }
}

/// A DLQ message as a dead letter (`None` without a receipt handle).
fn dead_letter_of(message: &Message) -> Option<DeadLetter> {
    let id = message.receipt_handle.clone()?;
    let raw = message.body.clone().unwrap_or_default();
    let attribute = |name: &str| {
        message
            .message_attributes
            .as_ref()?
            .get(name)?
            .string_value()
            .map(str::to_owned)
    };
    // The attributes Shoal set, or else the body's fields, however malformed the rest is.
    let json = serde_json::from_str::<Value>(&raw).ok();
    let id_of = |name: &str| {
        attribute(name)
            .or_else(|| json.as_ref()?.get(name)?.as_str().map(str::to_owned))
            .and_then(|s| s.parse::<Uuid>().ok())
    };
    let dead_lettered_at = attribute(ATTR_DEAD_LETTERED_AT)
        .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
        .map(|at| at.with_timezone(&Utc))
        .or_else(|| {
            let sent = message
                .attributes
                .as_ref()?
                .get(&MessageSystemAttributeName::SentTimestamp)?;
            DateTime::from_timestamp_millis(sent.parse().ok()?)
        })
        .unwrap_or_else(Utc::now);
    Some(DeadLetter {
        id,
        job_id: id_of(ATTR_JOB_ID),
        task_id: id_of(ATTR_TASK_ID),
        reason: attribute(ATTR_REASON).unwrap_or_else(|| REDRIVEN_REASON.to_owned()),
        raw,
        dead_lettered_at,
    })
}

/// Error codes that mean the receipt is no longer current (the JSON protocol answers the bare
/// name; the query protocol prefixes some with `AWS.SimpleQueueService.`).
fn is_stale_code(code: &str) -> bool {
    code.ends_with("ReceiptHandleIsInvalid") || code.ends_with("MessageNotInflight")
}

fn string_attribute(value: String) -> QueueResult<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|source| QueueError::InvalidRequest {
            operation: "SendMessage",
            source,
        })
}

/// The distinct receipt handles, in their first order.
fn distinct(receipts: &[Receipt]) -> Vec<&str> {
    let mut seen = HashSet::new();
    receipts
        .iter()
        .map(|r| r.0.as_str())
        .filter(|r| seen.insert(*r))
        .collect()
}

fn ceil_secs(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
}

fn clamp_i32<N: TryInto<i32>>(n: N) -> i32 {
    n.try_into().unwrap_or(i32::MAX)
}
