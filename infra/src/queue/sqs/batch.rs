//! SQS batch calls answer per entry: some entries may fail while the rest succeed. One loop,
//! shared by `SendMessageBatch`, `DeleteMessageBatch` and `ChangeMessageVisibilityBatch`, retries
//! the entries that failed on SQS's side and gives up at once on one that was the sender's fault.

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry,
};

use crate::queue::{QueueError, QueueResult};

/// Entries per batch call (an SQS limit).
pub(super) const BATCH: usize = 10;
/// Rounds of retries for the entries of a batch that failed without the sender's fault.
const BATCH_ATTEMPTS: u32 = 5;
/// The pause before the first retry; it doubles each round.
const RETRY_BASE: Duration = Duration::from_millis(100);

/// An entry of a batch request, named by its id in the answer's list of failures.
pub(super) trait BatchEntry: Clone {
    fn entry_id(&self) -> &str;
}

impl BatchEntry for SendMessageBatchRequestEntry {
    fn entry_id(&self) -> &str {
        self.id()
    }
}

impl BatchEntry for DeleteMessageBatchRequestEntry {
    fn entry_id(&self) -> &str {
        self.id()
    }
}

impl BatchEntry for ChangeMessageVisibilityBatchRequestEntry {
    fn entry_id(&self) -> &str {
        self.id()
    }
}

/// Makes the batch call `call` with `entries`, then again with those that failed on SQS's side,
/// up to [`BATCH_ATTEMPTS`] calls with a doubling pause in between. `call` answers the failed
/// entries of one call. A failure whose code `settled` accepts (a stale receipt) counts as
/// done; any other that was the sender's fault ends the loop with
/// [`QueueError::EntryRejected`]. `Ok` once every entry succeeded or settled.
pub(super) async fn retry_failed_entries<E, F, Fut>(
    operation: &'static str,
    mut entries: Vec<E>,
    settled: fn(&str) -> bool,
    mut call: F,
) -> QueueResult<()>
where
    E: BatchEntry,
    F: FnMut(Vec<E>) -> Fut,
    Fut: Future<Output = QueueResult<Vec<BatchResultErrorEntry>>>,
{
    for attempt in 0..BATCH_ATTEMPTS {
        let failed = call(entries.clone()).await?;
        if let Some(rejected) = failed
            .iter()
            .find(|f| f.sender_fault() && !settled(f.code()))
        {
            return Err(QueueError::EntryRejected {
                operation,
                code: rejected.code().to_owned(),
                message: rejected.message().unwrap_or("(no message)").to_owned(),
            });
        }
        let retry: HashSet<&str> = failed
            .iter()
            .filter(|f| !settled(f.code()))
            .map(|f| f.id())
            .collect();
        if retry.is_empty() {
            return Ok(());
        }
        entries.retain(|entry| retry.contains(entry.entry_id()));
        tracing::debug!(
            operation,
            failed = entries.len(),
            "retrying failed batch entries"
        );
        tokio::time::sleep(RETRY_BASE * 2u32.pow(attempt)).await;
    }
    Err(QueueError::BatchRetriesExhausted {
        operation,
        entries: entries.len(),
        attempts: BATCH_ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn entry(id: &str) -> DeleteMessageBatchRequestEntry {
        DeleteMessageBatchRequestEntry::builder()
            .id(id)
            .receipt_handle(format!("receipt-{id}"))
            .build()
            .unwrap()
    }

    fn failure(id: &str, code: &str, sender_fault: bool) -> BatchResultErrorEntry {
        BatchResultErrorEntry::builder()
            .id(id)
            .code(code)
            .sender_fault(sender_fault)
            .message("from the test")
            .build()
            .unwrap()
    }

    fn stale(code: &str) -> bool {
        code == "ReceiptHandleIsInvalid"
    }

    /// Runs the loop on `entries` against answers given in turn, and returns its result and
    /// the ids each call carried.
    async fn run(
        entries: &[&str],
        answers: Vec<Vec<BatchResultErrorEntry>>,
    ) -> (QueueResult<()>, Vec<Vec<String>>) {
        let calls = Mutex::new(Vec::new());
        let answers = Mutex::new(answers.into_iter());
        let result = retry_failed_entries(
            "DeleteMessageBatch",
            entries.iter().map(|id| entry(id)).collect(),
            stale,
            |batch: Vec<DeleteMessageBatchRequestEntry>| {
                calls
                    .lock()
                    .unwrap()
                    .push(batch.iter().map(|e| e.id().to_owned()).collect());
                let failed = answers.lock().unwrap().next().unwrap_or_default();
                async move { Ok(failed) }
            },
        )
        .await;
        (result, calls.into_inner().unwrap())
    }

    #[tokio::test]
    async fn retries_only_the_entries_that_failed_on_the_service_side() {
        let (result, calls) = run(
            &["0", "1", "2"],
            vec![vec![failure("1", "InternalError", false)], vec![]],
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(calls, vec![vec!["0", "1", "2"], vec!["1"]]);
    }

    #[tokio::test]
    async fn a_settled_failure_is_not_retried() {
        let (result, calls) = run(
            &["0", "1"],
            vec![vec![failure("0", "ReceiptHandleIsInvalid", true)]],
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(calls.len(), 1);
    }

    #[tokio::test]
    async fn a_sender_fault_stops_at_once() {
        let (result, calls) = run(
            &["0", "1"],
            vec![vec![
                failure("0", "InternalError", false),
                failure("1", "InvalidParameterValue", true),
            ]],
        )
        .await;
        assert!(
            matches!(&result, Err(QueueError::EntryRejected { operation: "DeleteMessageBatch", code, .. })
                if code == "InvalidParameterValue"),
            "{result:?}"
        );
        assert_eq!(calls.len(), 1);
    }

    #[tokio::test]
    async fn gives_up_after_the_last_attempt() {
        let always = (0..BATCH_ATTEMPTS)
            .map(|_| vec![failure("1", "InternalError", false)])
            .collect();
        let (result, calls) = run(&["0", "1"], always).await;
        assert!(
            matches!(
                result,
                Err(QueueError::BatchRetriesExhausted {
                    entries: 1,
                    attempts: BATCH_ATTEMPTS,
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(calls.len(), BATCH_ATTEMPTS as usize);
    }

    #[tokio::test]
    async fn an_error_of_the_call_itself_is_returned() {
        let result = retry_failed_entries(
            "DeleteMessageBatch",
            vec![entry("0")],
            stale,
            |_: Vec<DeleteMessageBatchRequestEntry>| async { Err(QueueError::NoDeadLetterQueue) },
        )
        .await;
        assert!(matches!(result, Err(QueueError::NoDeadLetterQueue)));
    }
}
