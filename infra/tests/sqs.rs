//! The SQS task queue against a real `moto_server` (the SQS JSON protocol) on a loopback port,
//! started once per test binary. Without `moto_server` on the PATH the tests are skipped with a
//! note, unless `SHOAL_REQUIRE_MOTO=1` (CI), which makes them fail. Each test uses queues of
//! its own. moto is slow (a few hundred messages a second): keep message counts small.
//!
//! Where moto and SQS differ, the tests assert what SQS guarantees (see the notes inline).

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;
use shoal_infra::queue::{
    Delivery, OutgoingMessage, QueueDepth, QueueError, Receipt, SqsQueue, TaskMessage, TaskQueue,
    dead_letter_queue_url, init_queues,
};
use shoal_infra::testing::{Moto, fresh_sqs_queue, moto};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// moto_server (the shared harness of `shoal_infra::testing`)

fn client(moto: &Moto) -> aws_sdk_sqs::Client {
    moto.client()
}

/// A queue and DLQ of this test's own, or `None` (skipped) without moto.
async fn fresh(test: &str, max_receives: u32) -> Option<SqsQueue> {
    fresh_sqs_queue(test, max_receives).await
}

// ---------------------------------------------------------------------------------------------
// Helpers

const LONG: Duration = Duration::from_secs(60);
const NO_WAIT: Duration = Duration::ZERO;

fn task(job_id: Uuid, task_index: u32, attempt: u32) -> TaskMessage {
    TaskMessage {
        task_id: Uuid::now_v7(),
        job_id,
        task_index,
        parameters: json!({ "n": task_index, "items": [1, 2, 3] }),
        job_type: "cpu_bound".to_owned(),
        attempt,
        stream_version: 2,
        max_attempts: 3,
        timeout_seconds: 300,
        not_before: None,
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
        previous_attempt_traceparent: None,
        fallback_handler: None,
    }
}

fn now(body: TaskMessage) -> OutgoingMessage {
    OutgoingMessage {
        body,
        delay: Duration::ZERO,
    }
}

fn body(delivery: &Delivery) -> &TaskMessage {
    delivery.body.as_ref().expect("a well-formed message")
}

fn receipts(deliveries: &[Delivery]) -> Vec<Receipt> {
    deliveries.iter().map(|d| d.receipt.clone()).collect()
}

fn by_index(mut messages: Vec<TaskMessage>) -> Vec<TaskMessage> {
    // A standard SQS queue does not keep order.
    messages.sort_by_key(|m| (m.task_index, m.attempt));
    messages
}

async fn depth(queue: &SqsQueue) -> QueueDepth {
    queue.depth().await.unwrap()
}

fn depth_of(visible: u64, in_flight: u64, delayed: u64, dead_lettered: u64) -> QueueDepth {
    QueueDepth {
        visible,
        in_flight,
        delayed,
        dead_lettered,
    }
}

fn assert_stale(result: Result<(), QueueError>) {
    assert!(
        matches!(result, Err(QueueError::StaleReceipt(_))),
        "expected a stale receipt, got {result:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_receive_ack() {
    let Some(q) = fresh("send-receive-ack", 5).await else {
        return;
    };
    let job = Uuid::now_v7();
    let sent: Vec<TaskMessage> = (0..3).map(|i| task(job, i, 1)).collect();
    q.send(sent.iter().cloned().map(now).collect())
        .await
        .unwrap();
    assert_eq!(depth(&q).await, depth_of(3, 0, 0, 0));

    let got = q.receive(10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 3);
    // Bodies come back as sent (every field), each received once.
    let bodies = got.iter().map(|d| body(d).clone()).collect();
    assert_eq!(by_index(bodies), sent);
    assert!(got.iter().all(|d| d.receive_count == 1));
    assert_eq!(depth(&q).await, depth_of(0, 3, 0, 0));
    assert!(q.receive(10, LONG, NO_WAIT).await.unwrap().is_empty());

    q.ack(&receipts(&got)).await.unwrap();
    assert_eq!(depth(&q).await, QueueDepth::default());
    // Acknowledging again is a no-op, not an error; so are empty batches.
    q.ack(&receipts(&got)).await.unwrap();
    q.ack(&[]).await.unwrap();
    q.extend(&[], LONG).await.unwrap();
    q.send(Vec::new()).await.unwrap();
    assert!(q.receive(10, LONG, NO_WAIT).await.unwrap().is_empty());

    // max = 0 receives nothing; durations beyond SQS's limits are capped, not errors.
    q.send(vec![now(task(job, 9, 1))]).await.unwrap();
    assert!(q.receive(0, LONG, NO_WAIT).await.unwrap().is_empty());
    assert_eq!(q.receive(5, Duration::MAX, NO_WAIT).await.unwrap().len(), 1);
    assert_eq!(depth(&q).await, depth_of(0, 1, 0, 0));
    // Cancellation cannot select messages on SQS.
    assert_eq!(q.purge_job(job).await.unwrap(), 0);
    assert_eq!(depth(&q).await, depth_of(0, 1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_ten_and_calls_per_task() {
    let Some(q) = fresh("batches", 5).await else {
        return;
    };
    let job = Uuid::now_v7();
    let sent: Vec<TaskMessage> = (0..25).map(|i| task(job, i, 1)).collect();
    let before = q.calls().snapshot();
    q.send(sent.iter().cloned().map(now).collect())
        .await
        .unwrap();
    let got = q.receive(25, LONG, Duration::from_secs(1)).await.unwrap();
    assert_eq!(got.len(), 25);
    let bodies = got.iter().map(|d| body(d).clone()).collect();
    assert_eq!(by_index(bodies), sent);
    q.ack(&receipts(&got)).await.unwrap();
    assert_eq!(depth(&q).await, QueueDepth::default());

    // 25 tasks: three calls each to send, receive and delete (10 + 10 + 5).
    let calls = q.calls().snapshot().since(&before);
    assert_eq!(calls.send_message_batch, 3, "{calls:?}");
    assert_eq!(calls.receive_message, 3, "{calls:?}");
    assert_eq!(calls.delete_message_batch, 3, "{calls:?}");
    assert_eq!(calls.get_queue_attributes, 2, "{calls:?}"); // depth: queue + DLQ
    assert_eq!(
        (
            calls.messages_sent,
            calls.messages_received,
            calls.messages_deleted
        ),
        (25, 25, 25)
    );
    assert_eq!(calls.total(), 11);
    eprintln!(
        "SQS calls per task (send + receive + delete): {:.2}",
        (calls.total() - calls.get_queue_attributes) as f64 / 25.0
    );

    // A receive of fewer than ten asks once; a receive stops at the first short call.
    q.send((0..4).map(|i| now(task(job, i, 2))).collect())
        .await
        .unwrap();
    let before = q.calls().snapshot();
    let got = q.receive(30, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!(q.calls().snapshot().since(&before).receive_message, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_message_is_redelivered_after_its_visibility_timeout() {
    let Some(q) = fresh("redeliver", 5).await else {
        return;
    };
    let sent = task(Uuid::now_v7(), 0, 1);
    q.send(vec![now(sent.clone())]).await.unwrap();

    let visibility = Duration::from_secs(1);
    let first = q.receive(1, visibility, NO_WAIT).await.unwrap();
    let started = Instant::now();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].receive_count, 1);
    assert!(q.receive(1, visibility, NO_WAIT).await.unwrap().is_empty());
    assert_eq!(depth(&q).await, depth_of(0, 1, 0, 0));

    // Delivered again after the timeout (a long poll sees it), counted, with a new receipt.
    let second = q.receive(1, LONG, Duration::from_secs(10)).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "redelivered after {:?}, before its visibility timeout",
        started.elapsed()
    );
    assert_eq!(second.len(), 1);
    assert_eq!(body(&second[0]), &sent);
    assert_eq!(second[0].receive_count, 2);
    assert_ne!(second[0].receipt, first[0].receipt);

    // SQS guarantees that the newest receipt works and that a request with an older one
    // succeeds; not whether the older one still deletes the message (moto: it does). So only
    // "not an error" is asserted for the old receipt.
    q.ack(&receipts(&first)).await.unwrap();
    let old_receipt_deleted = depth(&q).await.in_flight == 0;
    eprintln!(
        "an ack with an older receipt deleted the redelivered message: {old_receipt_deleted}"
    );
    q.ack(&receipts(&second)).await.unwrap();
    assert_eq!(depth(&q).await, QueueDepth::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_keeps_a_message_hidden() {
    let Some(q) = fresh("extend", 5).await else {
        return;
    };
    q.send(vec![now(task(Uuid::now_v7(), 0, 1))]).await.unwrap();
    let got = q.receive(1, Duration::from_secs(1), NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    // Invalid receipts among current ones are skipped.
    let mut mixed = receipts(&got);
    mixed.push(Receipt("not-a-receipt-handle".to_owned()));
    q.extend(&mixed, LONG).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(q.receive(1, LONG, NO_WAIT).await.unwrap().is_empty());
    assert_eq!(depth(&q).await, depth_of(0, 1, 0, 0));

    // Extending to zero makes it visible again.
    q.extend(&receipts(&got), Duration::ZERO).await.unwrap();
    let again = q.receive(1, LONG, NO_WAIT).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
    // Twelve extends in one call: two ChangeMessageVisibilityBatch calls.
    let before = q.calls().snapshot();
    let many: Vec<Receipt> = (0..11)
        .map(|i| Receipt(format!("invalid-{i}")))
        .chain(receipts(&again))
        .collect();
    q.extend(&many, LONG).await.unwrap();
    let calls = q.calls().snapshot().since(&before);
    assert_eq!(calls.change_message_visibility_batch, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_with_delay_and_delayed_send() {
    let Some(q) = fresh("release", 5).await else {
        return;
    };
    let sent = task(Uuid::now_v7(), 0, 1);
    q.send(vec![now(sent.clone())]).await.unwrap();
    let got = q.receive(1, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 1);

    q.release(&got[0].receipt, Duration::from_secs(1))
        .await
        .unwrap();
    let released = Instant::now();
    // On SQS a released message is in flight until visible (not "delayed").
    assert_eq!(depth(&q).await, depth_of(0, 1, 0, 0));
    assert!(q.receive(1, LONG, NO_WAIT).await.unwrap().is_empty());
    // A released receipt cannot dead-letter (this queue no longer holds its body).
    assert_stale(q.dead_letter(&got[0].receipt, "released").await);

    let again = q.receive(1, LONG, Duration::from_secs(10)).await.unwrap();
    assert!(released.elapsed() >= Duration::from_millis(900));
    assert_eq!(again.len(), 1);
    assert_eq!(body(&again[0]), &sent);
    assert_eq!(again[0].receive_count, 2);

    // Without a delay it is visible at once.
    q.release(&again[0].receipt, Duration::ZERO).await.unwrap();
    assert_eq!(depth(&q).await, depth_of(1, 0, 0, 0));
    let third = q.receive(1, LONG, NO_WAIT).await.unwrap();
    assert_eq!(third.len(), 1);
    q.ack(&receipts(&third)).await.unwrap();

    // An invalid receipt is stale.
    assert_stale(
        q.release(&Receipt("garbage".to_owned()), Duration::ZERO)
            .await,
    );

    // A delayed send is counted as delayed, then delivered (delays round up to seconds).
    q.send(vec![OutgoingMessage {
        body: task(Uuid::now_v7(), 1, 1),
        delay: Duration::from_millis(1200),
    }])
    .await
    .unwrap();
    let sent_at = Instant::now();
    assert_eq!(depth(&q).await, depth_of(0, 0, 1, 0));
    assert!(q.receive(1, LONG, NO_WAIT).await.unwrap().is_empty());
    let late = q.receive(1, LONG, Duration::from_secs(10)).await.unwrap();
    assert_eq!(late.len(), 1);
    assert!(sent_at.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_policy_moves_an_over_received_message_to_the_dlq() {
    let Some(q) = fresh("redrive", 2).await else {
        return;
    };
    let job = Uuid::now_v7();
    let doomed = task(job, 0, 1);
    q.send(vec![now(doomed.clone())]).await.unwrap();

    // A zero visibility timeout makes each receive's message visible again at once.
    for count in 1..=2 {
        let got = q.receive(1, Duration::ZERO, NO_WAIT).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].receive_count, count);
    }
    // The next receive moves it to the DLQ instead of delivering it.
    let other = task(job, 1, 1);
    q.send(vec![now(other.clone())]).await.unwrap();
    let got = q.receive(10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(body(&got[0]), &other);
    assert_eq!(depth(&q).await, depth_of(0, 1, 0, 1));

    let dead = q.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].reason,
        "received too many times without being handled"
    );
    assert_eq!(dead[0].job_id, Some(job));
    assert_eq!(dead[0].task_id, Some(doomed.task_id));
    assert_eq!(
        serde_json::from_str::<TaskMessage>(&dead[0].raw).unwrap(),
        doomed
    );
    // Removing it by its id (the DLQ receipt) empties the DLQ.
    q.remove_dead_letters(&[dead[0].id.clone()]).await.unwrap();
    assert_eq!(depth(&q).await.dead_lettered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_delivered_as_err_and_can_be_dead_lettered() {
    let Some(q) = fresh("poison", 5).await else {
        return;
    };
    let job = Uuid::now_v7();
    let task_id = Uuid::now_v7();
    let raws = ["this is not JSON {", r#"{"task_id": "nope", "job_id": 7}"#];
    for (attempt, raw) in (1..).zip(raws) {
        q.send_raw(job, task_id, attempt, raw).await.unwrap();
    }
    // And a well-formed message of another job, dead-lettered by a worker.
    let other_job = Uuid::now_v7();
    let failed = task(other_job, 0, 3);
    q.send(vec![now(failed.clone())]).await.unwrap();

    let got = q.receive(10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 3);
    let mut poisoned = HashSet::new();
    for delivery in &got {
        match &delivery.body {
            Err(poison) => {
                assert!(!poison.error.is_empty());
                poisoned.insert(poison.raw.clone());
                q.dead_letter(&delivery.receipt, "malformed message")
                    .await
                    .unwrap();
            }
            Ok(message) => {
                assert_eq!(message, &failed);
                q.dead_letter(&delivery.receipt, "failed after 3 attempts")
                    .await
                    .unwrap();
            }
        }
    }
    assert_eq!(poisoned, raws.iter().map(|r| r.to_string()).collect());
    assert_eq!(depth(&q).await, depth_of(0, 0, 0, 3));
    // A dead-lettered receipt is spent.
    assert_stale(q.dead_letter(&got[0].receipt, "again").await);

    let dead = q.dead_letters(Some(job), 10).await.unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for letter in &dead {
        assert!(raws.contains(&letter.raw.as_str()));
        assert_eq!(letter.reason, "malformed message");
        // From the message attributes: the bodies do not say.
        assert_eq!(letter.job_id, Some(job));
        assert_eq!(letter.task_id, Some(task_id));
        let age = chrono::Utc::now() - letter.dead_lettered_at;
        assert!(
            age < chrono::Duration::minutes(1),
            "dead-lettered {age} ago"
        );
    }
    // The listing hid what it saw for a moment; after that all three are listed, oldest first.
    tokio::time::sleep(SqsQueue::PEEK_VISIBILITY + Duration::from_millis(200)).await;
    let all = q.dead_letters(None, 10).await.unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(
        all.windows(2)
            .all(|w| w[0].dead_lettered_at <= w[1].dead_lettered_at)
    );
    let failed_letter = all.iter().find(|l| l.job_id == Some(other_job)).unwrap();
    assert_eq!(failed_letter.reason, "failed after 3 attempts");
    assert_eq!(failed_letter.task_id, Some(failed.task_id));

    let ids: Vec<String> = all.iter().map(|l| l.id.clone()).collect();
    q.remove_dead_letters(&ids).await.unwrap();
    // Removing again (and an empty list) is harmless.
    q.remove_dead_letters(&ids).await.unwrap();
    q.remove_dead_letters(&[]).await.unwrap();
    assert_eq!(depth(&q).await, QueueDepth::default());
    assert!(q.dead_letters(None, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_counts_each_state() {
    let Some(q) = fresh("depth", 5).await else {
        return;
    };
    let job = Uuid::now_v7();
    q.send(vec![
        now(task(job, 0, 1)),
        now(task(job, 1, 1)),
        OutgoingMessage {
            body: task(job, 2, 1),
            delay: Duration::from_secs(60),
        },
    ])
    .await
    .unwrap();
    assert_eq!(q.receive(1, LONG, NO_WAIT).await.unwrap().len(), 1);
    assert_eq!(depth(&q).await, depth_of(1, 1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_promptly_when_a_message_is_sent() {
    let Some(q) = fresh("long-poll", 5).await else {
        return;
    };
    let sender = q.clone();
    let sent = task(Uuid::now_v7(), 0, 1);
    let message = sent.clone();
    let send = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sender.send(vec![now(message)]).await.unwrap();
    });
    let started = Instant::now();
    let got = q.receive(10, LONG, Duration::from_secs(15)).await.unwrap();
    send.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(body(&got[0]), &sent);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    // Nothing more: empty after the wait, not much later.
    let started = Instant::now();
    assert!(
        q.receive(10, LONG, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty()
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_queues_is_idempotent_and_the_dlq_is_found_from_the_queue() {
    let Some(moto) = moto() else {
        return;
    };
    let client = client(moto);
    let name = format!("init-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let (queue_url, dlq_url) = init_queues(&client, &name, 3).await.unwrap();
    assert!(queue_url.ends_with(&format!("/{name}")), "{queue_url}");
    assert!(dlq_url.ends_with(&format!("/{name}-dlq")), "{dlq_url}");

    let q = SqsQueue::new(client.clone(), queue_url.clone(), Some(dlq_url.clone()));
    q.send(vec![now(task(Uuid::now_v7(), 0, 1))]).await.unwrap();

    // Again, with another max receive count: same queues, messages kept, policy updated.
    assert_eq!(
        init_queues(&client, &name, 7).await.unwrap(),
        (queue_url.clone(), dlq_url.clone())
    );
    assert_eq!(depth(&q).await, depth_of(1, 0, 0, 0));
    let policy = client
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
        .remove(&QueueAttributeName::RedrivePolicy)
        .unwrap();
    let policy: serde_json::Value = serde_json::from_str(&policy).unwrap();
    assert_eq!(policy["maxReceiveCount"].to_string().trim_matches('"'), "7");

    // The queue URL alone finds the DLQ; the DLQ has none of its own.
    assert_eq!(
        dead_letter_queue_url(&client, &queue_url).await.unwrap(),
        Some(dlq_url.clone())
    );
    assert_eq!(
        dead_letter_queue_url(&client, &dlq_url).await.unwrap(),
        None
    );
    assert!(matches!(
        init_queues(&client, "bad.fifo", 3).await,
        Err(QueueError::InvalidQueueName(name)) if name == "bad.fifo"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_carry_the_aws_error_code() {
    let Some(moto) = moto() else {
        return;
    };
    let client = client(moto);
    let missing = format!("{}/000000000000/no-such-queue", moto.endpoint());
    let q = SqsQueue::new(client.clone(), missing.clone(), None);
    let error = q.depth().await.unwrap_err();
    assert!(
        matches!(&error, QueueError::Sqs { operation: "GetQueueAttributes", code: Some(code), .. }
            if code.contains("QueueDoesNotExist") || code.contains("NonExistentQueue")),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("QueueDoesNotExist") || message.contains("NonExistentQueue"),
        "{message}"
    );
    // The SDK's own error is kept as the source.
    assert!(std::error::Error::source(&error).is_some());
    assert!(dead_letter_queue_url(&client, &missing).await.is_err());

    // Without a DLQ: no dead letters to list, and dead-lettering fails clearly.
    let name = format!("no-dlq-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let url = client
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let q = SqsQueue::new(client, url, None);
    assert!(q.dead_letters(None, 10).await.unwrap().is_empty());
    assert_eq!(depth(&q).await.dead_lettered, 0);
    q.send(vec![now(task(Uuid::now_v7(), 0, 1))]).await.unwrap();
    let got = q.receive(1, LONG, NO_WAIT).await.unwrap();
    let error = q.dead_letter(&got[0].receipt, "no DLQ").await.unwrap_err();
    assert!(matches!(&error, QueueError::NoDeadLetterQueue), "{error}");
    assert!(
        error.to_string().contains("no dead-letter queue"),
        "{error}"
    );
}

/// Set in the child process of [`from_env_finds_the_queue_and_its_dlq`]: the queue URL.
const FROM_ENV_CHILD: &str = "SHOAL_TEST_SQS_FROM_ENV_QUEUE";

/// `SqsQueue::from_env` reads the process environment, so the test runs it in a child process
/// (this test binary again, with the AWS variables set) rather than changing its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_env_finds_the_queue_and_its_dlq() {
    if let Ok(queue_url) = std::env::var(FROM_ENV_CHILD) {
        let q = SqsQueue::from_env(queue_url).await.unwrap();
        let dlq_url = q.dlq_url().expect("the DLQ, from the redrive policy");
        assert!(dlq_url.ends_with("-dlq"), "{dlq_url}");
        let sent = task(Uuid::now_v7(), 0, 1);
        q.send(vec![now(sent.clone())]).await.unwrap();
        let got = q.receive(1, LONG, Duration::from_secs(5)).await.unwrap();
        assert_eq!(body(&got[0]), &sent);
        q.ack(&receipts(&got)).await.unwrap();
        return;
    }
    let Some(moto) = moto() else {
        return;
    };
    let name = format!("from-env-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let (queue_url, _) = init_queues(&client(moto), &name, 5).await.unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "from_env_finds_the_queue_and_its_dlq",
            "--exact",
            "--nocapture",
        ])
        .env(FROM_ENV_CHILD, &queue_url)
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the child failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("1 passed"), "{stdout}");
}
