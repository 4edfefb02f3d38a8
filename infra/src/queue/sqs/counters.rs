//! Counts of the SQS calls an [`SqsQueue`](super::SqsQueue) makes: what a deployment pays for
//! (SQS bills per request) and what the benchmarks report as calls per task.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// SQS API calls made by one [`SqsQueue`](super::SqsQueue) and its clones, by operation, and
/// the messages they carried. Read it with [`SqsCallCounts::snapshot`]; calls per task is the
/// number of calls divided by the messages deleted.
#[derive(Debug, Default)]
pub struct SqsCallCounts {
    pub send_message: AtomicU64,
    pub send_message_batch: AtomicU64,
    pub receive_message: AtomicU64,
    pub change_message_visibility: AtomicU64,
    pub change_message_visibility_batch: AtomicU64,
    pub delete_message: AtomicU64,
    pub delete_message_batch: AtomicU64,
    pub get_queue_attributes: AtomicU64,
    /// Messages sent to the queue (not the DLQ), retries excluded.
    pub messages_sent: AtomicU64,
    /// Messages received from the queue (not the DLQ).
    pub messages_received: AtomicU64,
    /// Messages deleted from the queue by `ack` (not the DLQ).
    pub messages_deleted: AtomicU64,
}

/// A copy of [`SqsCallCounts`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SqsCalls {
    pub send_message: u64,
    pub send_message_batch: u64,
    pub receive_message: u64,
    pub change_message_visibility: u64,
    pub change_message_visibility_batch: u64,
    pub delete_message: u64,
    pub delete_message_batch: u64,
    pub get_queue_attributes: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub messages_deleted: u64,
}

impl SqsCallCounts {
    pub fn snapshot(&self) -> SqsCalls {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SqsCalls {
            send_message: get(&self.send_message),
            send_message_batch: get(&self.send_message_batch),
            receive_message: get(&self.receive_message),
            change_message_visibility: get(&self.change_message_visibility),
            change_message_visibility_batch: get(&self.change_message_visibility_batch),
            delete_message: get(&self.delete_message),
            delete_message_batch: get(&self.delete_message_batch),
            get_queue_attributes: get(&self.get_queue_attributes),
            messages_sent: get(&self.messages_sent),
            messages_received: get(&self.messages_received),
            messages_deleted: get(&self.messages_deleted),
        }
    }
}

impl SqsCalls {
    /// Every API call (the messages counts are not calls).
    pub fn total(&self) -> u64 {
        self.send_message
            + self.send_message_batch
            + self.receive_message
            + self.change_message_visibility
            + self.change_message_visibility_batch
            + self.delete_message
            + self.delete_message_batch
            + self.get_queue_attributes
    }

    /// The calls made between `earlier` and `self`.
    pub fn since(&self, earlier: &SqsCalls) -> SqsCalls {
        SqsCalls {
            send_message: self.send_message - earlier.send_message,
            send_message_batch: self.send_message_batch - earlier.send_message_batch,
            receive_message: self.receive_message - earlier.receive_message,
            change_message_visibility: self.change_message_visibility
                - earlier.change_message_visibility,
            change_message_visibility_batch: self.change_message_visibility_batch
                - earlier.change_message_visibility_batch,
            delete_message: self.delete_message - earlier.delete_message,
            delete_message_batch: self.delete_message_batch - earlier.delete_message_batch,
            get_queue_attributes: self.get_queue_attributes - earlier.get_queue_attributes,
            messages_sent: self.messages_sent - earlier.messages_sent,
            messages_received: self.messages_received - earlier.messages_received,
            messages_deleted: self.messages_deleted - earlier.messages_deleted,
        }
    }
}
