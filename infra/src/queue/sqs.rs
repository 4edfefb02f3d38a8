//! The task queue on AWS SQS (a standard queue and its dead-letter queue), with the semantics of
//! [`TaskQueue`] as far as SQS allows them. Where SQS differs, the difference is harmless
//! because the event log, not the queue, decides what happened to a task:
//!
//! - **No de-duplication.** Sending the same (task, attempt) twice queues two messages; the
//!   second worker's append with an expected stream version fails and it acknowledges the copy.
//! - **Whole seconds.** Visibility timeouts, delays and waits are rounded up to whole seconds;
//!   delays are capped at 15 minutes (`DelaySeconds`; the worker releases a message that
//!   arrives before its `not_before` again) and visibility timeouts at 12 hours.
//! - **Receipts.** A [`Receipt`] is the SQS receipt handle. SQS does not promise that an older
//!   handle of a message that was received again stops working (`ack` with it may or may not
//!   delete the message), only that the newest one works. A released message counts as in
//!   flight, not delayed, until it is visible again.
//! - **Dead letters.** The queue's redrive policy (`maxReceiveCount`, set by [`init_queues`])
//!   moves a message received too often to the DLQ at its next receive. [`TaskQueue::dead_letter`]
//!   cannot move a message (SQS has no such call): it sends a copy of the body, with a `reason`
//!   message attribute, to the DLQ and deletes the original. It needs the body, which only the
//!   [`SqsQueue`] (or a clone) that received the message holds.
//! - **No purge by job.** [`TaskQueue::purge_job`] does nothing and answers 0; workers skip a
//!   cancelled job's tasks anyway.
//! - **Peeking is receiving.** [`TaskQueue::dead_letters`] receives from the DLQ with a short
//!   visibility timeout ([`SqsQueue::PEEK_VISIBILITY`]): for that long, another listing does
//!   not see those messages. Its ids are the DLQ receipt handles that
//!   [`TaskQueue::remove_dead_letters`] deletes.
//!
//! Calls per task on the happy path: a tenth of a `SendMessageBatch`, a tenth of a
//! `ReceiveMessage` (or one, when workers receive one message at a time or the queue is
//! nearly empty) and a tenth of a `DeleteMessageBatch`; [`SqsQueue::calls`] counts them.
//!
//! Configuration comes from the standard AWS chain ([`SqsQueue::from_env`]: environment,
//! profile, IRSA web identity); `AWS_ENDPOINT_URL` points it at an emulator such as
//! `moto_server`.
//!
//! In four parts: `adapter` (the [`TaskQueue`] operations as SQS calls), `batch` (the one loop
//! that retries the entries of a batch call that SQS failed), `counters` ([`SqsCallCounts`])
//! and `provision` (the client, the queue and its dead-letter queue).

mod adapter;
mod batch;
mod counters;
mod provision;

pub use adapter::SqsQueue;
pub use counters::{SqsCallCounts, SqsCalls};
pub use provision::{client_from_env, dead_letter_queue_url, init_queues};

use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};

use super::QueueError;
#[cfg(doc)]
use super::{Receipt, TaskQueue};

/// An SDK error as [`QueueError::Sqs`], the error kept whole, with the AWS error code and
/// message when SQS answered.
fn sdk_error<E>(operation: &'static str, error: E) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = error.code().map(str::to_owned);
    let detail = match &code {
        Some(code) => format!("{code}: {}", error.message().unwrap_or("(no message)")),
        None => DisplayErrorContext(&error).to_string(),
    };
    QueueError::Sqs {
        operation,
        code,
        detail,
        source: Box::new(error),
    }
}
