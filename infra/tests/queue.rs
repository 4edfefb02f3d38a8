//! The SQL task queue's contract, one suite run on each backend: SQLite always, Postgres when
//! `SHOAL_TEST_DATABASE_URL` is set (see `shoal_infra::testing`; with
//! `SHOAL_REQUIRE_POSTGRES=1` a missing server fails the Postgres variants instead of skipping
//! them). Each test gets a fresh database.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_infra::queue::{
    Delivery, OutgoingMessage, QueueDepth, QueueError, Receipt, SqlQueue, TaskMessage, TaskQueue,
};
use shoal_infra::testing;
use sqlx::postgres::PgPool;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Harness

/// A backend under test: the queue, and what a test needs to build a second instance on the
/// same database.
struct Harness {
    queue: SqlQueue,
    pg: Option<PgPool>,
}

impl Harness {
    async fn sqlite() -> Harness {
        Harness {
            queue: SqlQueue::sqlite(testing::fresh_sqlite().await),
            pg: None,
        }
    }

    async fn postgres() -> Option<Harness> {
        let pool = testing::fresh_postgres().await?;
        Some(Harness {
            queue: SqlQueue::postgres(pool.clone()),
            pg: Some(pool),
        })
    }
}

/// Declares each suite test once per backend: `sqlite::<name>` and `postgres::<name>`.
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(harness) = super::Harness::postgres().await {
                        super::$name(harness).await;
                    }
                }
            )*
        }
    };
}

for_each_backend!(
    send_receive_ack,
    resend_of_the_same_task_attempt_is_a_no_op,
    resend_among_new_messages_queues_the_new_ones,
    a_large_batch_with_some_queued_already_queues_the_rest_in_order,
    unacked_message_is_redelivered_after_its_visibility_timeout,
    extend_keeps_a_message_hidden,
    release_with_delay,
    over_received_message_is_dead_lettered_not_delivered,
    poison_message_is_delivered_as_err_and_can_be_dead_lettered,
    malformed_receipts_are_stale,
    purge_job_drops_only_that_jobs_messages,
    depth_counts_each_state,
    dead_letters_oldest_first_by_job_and_removal,
    concurrent_receivers_get_every_message_exactly_once,
    long_poll_returns_promptly_when_a_message_is_sent,
    long_poll_returns_empty_after_wait,
    long_poll_wakes_when_a_delayed_message_becomes_visible,
    tasks_of_concurrent_jobs_interleave,
    a_small_job_is_not_stuck_behind_a_big_one,
    higher_priority_is_received_first,
    set_priority_reorders_waiting_and_later_messages,
    the_claim_reads_the_fair_index_without_sorting,
    a_message_received_before_goes_after_fresh_ones,
    a_drain_in_batches_takes_every_row_once_in_the_fair_order,
    a_message_whose_delay_ran_out_takes_its_turn_within_a_poll_interval,
    another_instances_send_takes_its_turn_when_heard,
    a_heartbeat_and_an_acknowledgement_of_the_same_messages_never_deadlock,
);

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

fn later(body: TaskMessage, delay: Duration) -> OutgoingMessage {
    OutgoingMessage { body, delay }
}

fn body(delivery: &Delivery) -> &TaskMessage {
    delivery.body.as_ref().expect("a well-formed message")
}

fn receipts(deliveries: &[Delivery]) -> Vec<Receipt> {
    deliveries.iter().map(|d| d.receipt.clone()).collect()
}

async fn depth(queue: &SqlQueue) -> QueueDepth {
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
// The suite

async fn send_receive_ack(h: Harness) {
    let q = &h.queue;
    let job = Uuid::now_v7();
    let sent: Vec<TaskMessage> = (0..3).map(|i| task(job, i, 1)).collect();
    q.send(sent.iter().cloned().map(now).collect())
        .await
        .unwrap();
    assert_eq!(depth(q).await, depth_of(3, 0, 0, 0));

    let got = q.receive(10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 3);
    // Bodies come back as sent (every field), oldest first, each received once.
    let bodies: Vec<TaskMessage> = got.iter().map(|d| body(d).clone()).collect();
    assert_eq!(bodies, sent);
    assert!(got.iter().all(|d| d.receive_count == 1));
    assert_eq!(depth(q).await, depth_of(0, 3, 0, 0));

    // Nothing else is visible.
    assert!(q.receive(10, LONG, NO_WAIT).await.unwrap().is_empty());

    q.ack(&receipts(&got)).await.unwrap();
    assert_eq!(depth(q).await, QueueDepth::default());
    // Acknowledging again is a no-op, not an error; so is an empty batch.
    q.ack(&receipts(&got)).await.unwrap();
    q.ack(&[]).await.unwrap();
    q.send(Vec::new()).await.unwrap();
    assert!(q.receive(10, LONG, NO_WAIT).await.unwrap().is_empty());
    // max = 0 receives nothing.
    q.send(vec![now(task(job, 9, 1))]).await.unwrap();
    assert!(q.receive(0, LONG, NO_WAIT).await.unwrap().is_empty());
    // Durations beyond what the database stores are cut, not errors.
    assert_eq!(q.receive(5, Duration::MAX, NO_WAIT).await.unwrap().len(), 1);
    assert_eq!(depth(q).await, depth_of(0, 1, 0, 0));
}

/// A relay that restarts resends a window of messages, some queued already, some not: the new
/// ones are queued, the others are not queued twice.
async fn resend_among_new_messages_queues_the_new_ones(h: Harness) {
    let q = &h.queue;
    let job = Uuid::now_v7();
    let queued = task(job, 0, 1);
    q.send(vec![now(queued.clone())]).await.unwrap();
    let fresh = [task(job, 1, 1), task(job, 2, 1)];
    q.send(vec![
        now(fresh[0].clone()),
        now(queued.clone()),
        now(fresh[1].clone()),
    ])
    .await
    .unwrap();
    assert_eq!(depth(q).await, depth_of(3, 0, 0, 0));
    let got = q.receive(10, LONG, NO_WAIT).await.unwrap();
    let mut ranks: Vec<u64> = got.iter().map(|d| u64::from(body(d).task_index)).collect();
    ranks.sort_unstable();
    assert_eq!(ranks, [0, 1, 2]);
}

/// A large batch (300 messages) is queued whole, in order, and the messages in it that were
/// queued already are not queued twice, wherever they fall in it.
async fn a_large_batch_with_some_queued_already_queues_the_rest_in_order(h: Harness) {
    let q = &h.queue;
    let job = Uuid::now_v7();
    let messages: Vec<TaskMessage> = (0..300).map(|i| task(job, i, 1)).collect();
    let queued_before = [0, 63, 64, 150, 255, 256, 299];
    q.send(
        queued_before
            .iter()
            .map(|&i| now(messages[i].clone()))
            .collect(),
    )
    .await
    .unwrap();
    q.send(messages.iter().cloned().map(now).collect())
        .await
        .unwrap();
    assert_eq!(depth(q).await, depth_of(300, 0, 0, 0));
    let got = q.receive(500, LONG, NO_WAIT).await.unwrap();
    let indexes: Vec<u32> = got.iter().map(|d| body(d).task_index).collect();
    assert_eq!(indexes, (0..300).collect::<Vec<_>>(), "each once, in order");
}

async fn resend_of_the_same_task_attempt_is_a_no_op(h: Harness) {
    let q = &h.queue;
    let job = Uuid::now_v7();
    let first = task(job, 0, 1);
    // Twice in one batch, and again later (with another body: the first one stays).
    q.send(vec![now(first.clone()), now(first.clone())])
        .await
        .unwrap();
    let mut changed = first.clone();
    changed.stream_version = 99;
    q.send(vec![now(changed)]).await.unwrap();
    assert_eq!(depth(q).await, depth_of(1, 0, 0, 0));

    // Also while it is in flight.
    let got = q.receive(10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(body(&got[0]), &first);
    q.send(vec![now(first.clone())]).await.unwrap();
    assert_eq!(depth(q).await, depth_of(0, 1, 0, 0));

    // Another attempt of the same task is another message.
    let mut retry = first.clone();
    retry.attempt = 2;
    q.send(vec![now(retry.clone())]).await.unwrap();
    let got = q.receive(10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(body(&got[0]), &retry);
}

async fn unacked_message_is_redelivered_after_its_visibility_timeout(h: Harness) {
    let q = &h.queue;
    let sent = task(Uuid::now_v7(), 0, 1);
    q.send(vec![now(sent.clone())]).await.unwrap();

    let visibility = Duration::from_millis(1500);
    let first = q.receive(1, visibility, NO_WAIT).await.unwrap();
    let started = Instant::now();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].receive_count, 1);

    // Hidden until the timeout...
    assert!(q.receive(1, visibility, NO_WAIT).await.unwrap().is_empty());
    assert_eq!(depth(q).await, depth_of(0, 1, 0, 0));

    // ...then delivered again (a long poll wakes when it becomes visible), counted, with a new
    // receipt.
    let second = q.receive(1, LONG, Duration::from_secs(10)).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "redelivered after {:?}, before its visibility timeout",
        started.elapsed()
    );
    assert_eq!(second.len(), 1);
    assert_eq!(body(&second[0]), &sent);
    assert_eq!(second[0].receive_count, 2);
    assert_ne!(second[0].receipt, first[0].receipt);

    // The stale receipt touches nothing.
    q.ack(&receipts(&first)).await.unwrap();
    q.extend(&receipts(&first), Duration::ZERO).await.unwrap();
    assert_stale(q.release(&first[0].receipt, Duration::ZERO).await);
    assert_stale(q.dead_letter(&first[0].receipt, "stale").await);
    assert_eq!(depth(q).await, depth_of(0, 1, 0, 0));

    // The current one does.
    q.ack(&receipts(&second)).await.unwrap();
    assert_eq!(depth(q).await, QueueDepth::default());
}

async fn extend_keeps_a_message_hidden(h: Harness) {
    let q = &h.queue;
    q.send(vec![now(task(Uuid::now_v7(), 0, 1))]).await.unwrap();
    let got = q
        .receive(1, Duration::from_millis(500), NO_WAIT)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    q.extend(&receipts(&got), LONG).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(q.receive(1, LONG, NO_WAIT).await.unwrap().is_empty());
    assert_eq!(depth(q).await, depth_of(0, 1, 0, 0));

    // Extending to zero makes it visible again, under the same count and receipt until then.
    q.extend(&receipts(&got), Duration::ZERO).await.unwrap();
    let again = q.receive(1, LONG, NO_WAIT).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
    // Extend skips stale receipts among current ones.
    let mut mixed = receipts(&got);
    mixed.extend(receipts(&again));
    q.extend(&mixed, Duration::ZERO).await.unwrap();
    assert_eq!(q.receive(1, LONG, NO_WAIT).await.unwrap().len(), 1);
}

async fn release_with_delay(h: Harness) {
    let q = &h.queue;
    let sent = task(Uuid::now_v7(), 0, 1);
    q.send(vec![now(sent.clone())]).await.unwrap();
    let got = q.receive(1, LONG, NO_WAIT).await.unwrap();

    q.release(&got[0].receipt, Duration::from_millis(700))
        .await
        .unwrap();
    // Released: delayed, not in flight, and the releasing receipt is spent.
    assert_eq!(depth(q).await, depth_of(0, 0, 1, 0));
    assert_stale(q.release(&got[0].receipt, Duration::ZERO).await);
    q.ack(&receipts(&got)).await.unwrap();
    assert!(q.receive(1, LONG, NO_WAIT).await.unwrap().is_empty());

    let started = Instant::now();
    let again = q.receive(1, LONG, Duration::from_secs(10)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(again.len(), 1);
    assert_eq!(body(&again[0]), &sent);
    // A release does not undo the receive it ends.
    assert_eq!(again[0].receive_count, 2);

    // Without a delay it is visible at once.
    q.release(&again[0].receipt, Duration::ZERO).await.unwrap();
    assert_eq!(depth(q).await, depth_of(1, 0, 0, 0));
    assert_eq!(q.receive(1, LONG, NO_WAIT).await.unwrap().len(), 1);
}

async fn over_received_message_is_dead_lettered_not_delivered(h: Harness) {
    let q = &h.queue.clone().with_max_receives(2);
    assert_eq!(h.queue.max_receives(), SqlQueue::DEFAULT_MAX_RECEIVES);
    let job = Uuid::now_v7();
    let doomed = task(job, 0, 1);
    let other = task(job, 1, 1);
    q.send(vec![now(doomed.clone())]).await.unwrap();

    // A zero visibility timeout makes each receive's message visible again at once.
    for count in 1..=2 {
        let got = q.receive(1, Duration::ZERO, NO_WAIT).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].receive_count, count);
    }
    q.send(vec![now(other.clone())]).await.unwrap();
    // The third receive dead-letters it and delivers the next message instead.
    let got = q.receive(10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(body(&got[0]), &other);
    assert_eq!(depth(q).await, depth_of(0, 1, 0, 1));

    let dead = q.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "received 2 times without being handled");
    assert_eq!(dead[0].job_id, Some(job));
    assert_eq!(dead[0].task_id, Some(doomed.task_id));
    assert_eq!(
        serde_json::from_str::<TaskMessage>(&dead[0].raw).unwrap(),
        doomed
    );
    assert!(
        q.receive(10, Duration::ZERO, NO_WAIT)
            .await
            .unwrap()
            .is_empty()
    );

    // A receive that only dead-letters still waits for (and gets) a later message.
    let q2 = q.clone();
    let third = task(job, 2, 1);
    q.send(vec![now(third.clone())]).await.unwrap();
    q.receive(1, Duration::ZERO, NO_WAIT).await.unwrap();
    q.receive(1, Duration::ZERO, NO_WAIT).await.unwrap();
    let late = task(job, 3, 1);
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        q2.send(vec![now(late)]).await.unwrap();
    });
    let got = q.receive(10, LONG, Duration::from_secs(10)).await.unwrap();
    sender.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(body(&got[0]).task_index, 3);
    assert_eq!(depth(q).await.dead_lettered, 2);
}

async fn poison_message_is_delivered_as_err_and_can_be_dead_lettered(h: Harness) {
    let q = &h.queue;
    let job = Uuid::now_v7();
    let task_id = Uuid::now_v7();
    let raws = ["this is not JSON {", r#"{"task_id": "nope", "job_id": 7}"#];
    for (attempt, raw) in (1..).zip(raws) {
        q.send_raw(job, task_id, attempt, raw).await.unwrap();
    }

    let got = q.receive(10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 2);
    for (delivery, raw) in got.iter().zip(raws) {
        let poison = delivery.body.as_ref().expect_err("a poison message");
        assert_eq!(poison.raw, raw);
        assert!(!poison.error.is_empty());
        q.dead_letter(&delivery.receipt, "malformed message")
            .await
            .unwrap();
    }
    assert_eq!(depth(q).await, depth_of(0, 0, 0, 2));
    // A dead-lettered receipt is spent.
    assert_stale(q.dead_letter(&got[0].receipt, "again").await);

    let dead = q.dead_letters(Some(job), 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    for (letter, raw) in dead.iter().zip(raws) {
        assert_eq!(letter.raw, raw);
        assert_eq!(letter.reason, "malformed message");
        assert_eq!(letter.job_id, Some(job));
        assert_eq!(letter.task_id, Some(task_id));
        let age = chrono::Utc::now() - letter.dead_lettered_at;
        assert!(
            age < chrono::Duration::minutes(1),
            "dead-lettered {age} ago"
        );
    }
    assert!(q.receive(10, LONG, NO_WAIT).await.unwrap().is_empty());
}

async fn malformed_receipts_are_stale(h: Harness) {
    let q = &h.queue;
    q.send(vec![now(task(Uuid::now_v7(), 0, 1))]).await.unwrap();
    let got = q.receive(1, LONG, NO_WAIT).await.unwrap();
    let (id, token) = got[0].receipt.0.split_once(':').unwrap();
    let bad: Vec<Receipt> = [
        String::new(),
        "garbage".to_owned(),
        format!("x:{token}"),
        format!("{id}:"),
        format!("{id}:not-a-token"),
        format!("{id}:{}", Uuid::now_v7()),
        format!("{}:{token}", id.parse::<i64>().unwrap() + 1),
    ]
    .into_iter()
    .map(Receipt)
    .collect();
    q.ack(&bad).await.unwrap();
    q.extend(&bad, Duration::ZERO).await.unwrap();
    for receipt in &bad {
        assert_stale(q.release(receipt, Duration::ZERO).await);
        assert_stale(q.dead_letter(receipt, "bad").await);
    }
    assert_eq!(depth(q).await, depth_of(0, 1, 0, 0));
    q.ack(&receipts(&got)).await.unwrap();
    assert_eq!(depth(q).await, QueueDepth::default());
}

async fn purge_job_drops_only_that_jobs_messages(h: Harness) {
    let q = &h.queue;
    let (cancelled, kept) = (Uuid::now_v7(), Uuid::now_v7());
    q.send(vec![
        now(task(cancelled, 0, 1)),
        now(task(kept, 0, 1)),
        now(task(kept, 1, 1)),
    ])
    .await
    .unwrap();
    // Queued in every state: in flight, visible, delayed.
    let in_flight = q.receive(1, LONG, NO_WAIT).await.unwrap();
    assert_eq!(body(&in_flight[0]).job_id, cancelled);
    q.send(vec![
        now(task(cancelled, 1, 1)),
        later(task(cancelled, 2, 1), LONG),
    ])
    .await
    .unwrap();

    assert_eq!(q.purge_job(cancelled).await.unwrap(), 3);
    assert_eq!(q.purge_job(cancelled).await.unwrap(), 0);
    assert_eq!(depth(q).await, depth_of(2, 0, 0, 0));
    let got = q.receive(10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|d| body(d).job_id == kept));
    // The purged in-flight message's holder finds its receipt stale.
    assert_stale(q.release(&in_flight[0].receipt, Duration::ZERO).await);
}

async fn depth_counts_each_state(h: Harness) {
    let q = &h.queue;
    assert_eq!(depth(q).await, QueueDepth::default());
    let job = Uuid::now_v7();
    q.send((0..4).map(|i| now(task(job, i, 1))).collect())
        .await
        .unwrap();
    q.send(vec![
        later(task(job, 10, 1), LONG),
        later(task(job, 11, 1), LONG),
    ])
    .await
    .unwrap();
    assert_eq!(depth(q).await, depth_of(4, 0, 2, 0));

    let got = q.receive(3, LONG, NO_WAIT).await.unwrap();
    assert_eq!(depth(q).await, depth_of(1, 3, 2, 0));
    q.ack(&receipts(&got[..1])).await.unwrap();
    q.dead_letter(&got[1].receipt, "failed for good")
        .await
        .unwrap();
    q.release(&got[2].receipt, LONG).await.unwrap();
    assert_eq!(depth(q).await, depth_of(1, 0, 3, 1));

    // A message whose visibility timeout ran out is visible again, not in flight. (The
    // timeout leaves room for a slow machine between the receive and the first count.)
    let short = q
        .receive(1, Duration::from_millis(1500), NO_WAIT)
        .await
        .unwrap();
    assert_eq!(short.len(), 1);
    assert_eq!(depth(q).await, depth_of(0, 1, 3, 1));
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(depth(q).await, depth_of(1, 0, 3, 1));
}

async fn dead_letters_oldest_first_by_job_and_removal(h: Harness) {
    let q = &h.queue;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let sent = [task(a, 0, 1), task(b, 0, 1), task(a, 1, 1), task(b, 1, 1)];
    q.send(sent.iter().cloned().map(now).collect())
        .await
        .unwrap();
    let got = q.receive(10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 4);
    for (i, delivery) in got.iter().enumerate() {
        q.dead_letter(&delivery.receipt, &format!("reason {i}"))
            .await
            .unwrap();
    }

    let all = q.dead_letters(None, 10).await.unwrap();
    let reasons: Vec<&str> = all.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons, ["reason 0", "reason 1", "reason 2", "reason 3"]);
    assert_eq!(q.dead_letters(None, 2).await.unwrap(), all[..2]);
    assert!(q.dead_letters(None, 0).await.unwrap().is_empty());
    let of_a = q.dead_letters(Some(a), 10).await.unwrap();
    assert_eq!(of_a, vec![all[0].clone(), all[2].clone()]);
    assert!(
        q.dead_letters(Some(Uuid::now_v7()), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Removing: unknown and malformed ids are ignored.
    q.remove_dead_letters(&[all[0].id.clone(), "999999".to_owned(), "nope".to_owned()])
        .await
        .unwrap();
    q.remove_dead_letters(&[]).await.unwrap();
    assert_eq!(
        q.dead_letters(Some(a), 10).await.unwrap(),
        vec![all[2].clone()]
    );
    assert_eq!(depth(q).await, depth_of(0, 0, 0, 3));
}

async fn concurrent_receivers_get_every_message_exactly_once(h: Harness) {
    const MESSAGES: u32 = 1_000;
    let q = Arc::new(h.queue);
    let job = Uuid::now_v7();
    let sent: Vec<TaskMessage> = (0..MESSAGES).map(|i| task(job, i, 1)).collect();
    for chunk in sent.chunks(250) {
        q.send(chunk.iter().cloned().map(now).collect())
            .await
            .unwrap();
    }

    let receivers: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let got = q
                        .receive(25, LONG, Duration::from_millis(300))
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return seen;
                    }
                    assert!(got.iter().all(|d| d.receive_count == 1));
                    seen.extend(got.iter().map(|d| body(d).task_id));
                    q.ack(&receipts(&got)).await.unwrap();
                }
            })
        })
        .collect();

    let mut times_seen: HashMap<Uuid, u32> = HashMap::new();
    let mut per_receiver = Vec::new();
    for receiver in receivers {
        let seen = receiver.await.unwrap();
        per_receiver.push(seen.len());
        for task_id in seen {
            *times_seen.entry(task_id).or_default() += 1;
        }
    }
    assert_eq!(
        times_seen.len(),
        sent.len(),
        "per receiver: {per_receiver:?}"
    );
    assert!(sent.iter().all(|t| times_seen.get(&t.task_id) == Some(&1)));
    assert_eq!(depth(&q).await, QueueDepth::default());
}

/// A worker's heartbeat (extend) and its acknowledgement of handled messages run at once over
/// overlapping sets of held messages, each in whatever order its caller has them. Each statement
/// locks rows in id order, so they wait for each other instead of deadlocking (a deadlock costs
/// the server's `deadlock_timeout`, a second, and fails one of the two: the acknowledged messages
/// come back after their visibility timeout). The arrays are given in opposite orders, which
/// with the statements joining them as given deadlocked within a few rounds.
async fn a_heartbeat_and_an_acknowledgement_of_the_same_messages_never_deadlock(h: Harness) {
    const MESSAGES: u32 = 2_000;
    let q = Arc::new(h.queue);
    for round in 0..10 {
        let job = Uuid::now_v7();
        let sent: Vec<OutgoingMessage> = (0..MESSAGES).map(|i| now(task(job, i, 1))).collect();
        q.send(sent).await.unwrap();
        let mut held = Vec::new();
        while held.len() < MESSAGES as usize {
            let got = q.receive(500, LONG, NO_WAIT).await.unwrap();
            assert!(!got.is_empty(), "round {round}: the queue ran dry early");
            held.extend(receipts(&got));
        }
        let mut backwards = held.clone();
        backwards.reverse();
        let heartbeat = {
            let (q, held) = (q.clone(), held.clone());
            tokio::spawn(async move { q.extend(&held, LONG).await })
        };
        let ack = {
            let q = q.clone();
            tokio::spawn(async move { q.ack(&backwards).await })
        };
        let (heartbeat, ack) = (heartbeat.await.unwrap(), ack.await.unwrap());
        assert!(
            heartbeat.is_ok() && ack.is_ok(),
            "round {round}: extend {heartbeat:?}, ack {ack:?}"
        );
        assert_eq!(depth(&q).await, QueueDepth::default(), "round {round}");
    }
}

async fn long_poll_returns_promptly_when_a_message_is_sent(h: Harness) {
    // The receiver's poll interval is long, so only the wake-up can make it prompt.
    let receiver = h.queue.clone().with_poll_interval(Duration::from_secs(30));
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let got = receiver
            .receive(10, LONG, Duration::from_secs(20))
            .await
            .unwrap();
        (got, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_at = Instant::now();
    h.queue
        .send(vec![now(task(Uuid::now_v7(), 0, 1))])
        .await
        .unwrap();
    let (got, waited) = waiting.await.unwrap();
    assert_eq!(got.len(), 1);
    let after_send = sent_at.elapsed();
    assert!(
        after_send < Duration::from_millis(500),
        "returned {after_send:?} after the send"
    );
    assert!(
        waited >= Duration::from_millis(250),
        "returned before the send ({waited:?})"
    );

    // On Postgres, another instance (another process, as far as it knows) is woken by
    // LISTEN/NOTIFY.
    let Some(pool) = h.pg else { return };
    let other = SqlQueue::postgres(pool).with_poll_interval(Duration::from_secs(30));
    // Let it LISTEN first: a receive that waits starts the listener.
    assert!(
        other
            .receive(1, LONG, Duration::from_millis(200))
            .await
            .unwrap()
            .is_empty()
    );
    let waiting = tokio::spawn(async move {
        other
            .receive(10, LONG, Duration::from_secs(20))
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_at = Instant::now();
    h.queue
        .send(vec![now(task(Uuid::now_v7(), 0, 1))])
        .await
        .unwrap();
    let got = waiting.await.unwrap();
    assert_eq!(got.len(), 1);
    let after_send = sent_at.elapsed();
    assert!(
        after_send < Duration::from_millis(500),
        "returned {after_send:?} after the send"
    );
}

async fn long_poll_returns_empty_after_wait(h: Harness) {
    let q = &h.queue;
    let started = Instant::now();
    assert!(
        q.receive(10, LONG, Duration::from_millis(600))
            .await
            .unwrap()
            .is_empty()
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(600),
        "gave up after {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");

    // A delayed message that becomes visible only after the wait is not delivered.
    q.send(vec![later(
        task(Uuid::now_v7(), 0, 1),
        Duration::from_secs(5),
    )])
    .await
    .unwrap();
    let started = Instant::now();
    assert!(
        q.receive(10, LONG, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

async fn long_poll_wakes_when_a_delayed_message_becomes_visible(h: Harness) {
    // Nothing is sent during the wait: the receive must wake by itself when the delay ends,
    // not at its (long) poll interval.
    let q = h.queue.clone().with_poll_interval(Duration::from_secs(30));
    let sent = task(Uuid::now_v7(), 0, 1);
    q.send(vec![later(sent.clone(), Duration::from_millis(800))])
        .await
        .unwrap();
    assert_eq!(depth(&q).await, depth_of(0, 0, 1, 0));
    let started = Instant::now();
    let got = q.receive(10, LONG, Duration::from_secs(20)).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(got.len(), 1);
    assert_eq!(body(&got[0]), &sent);
    assert!(
        waited >= Duration::from_millis(600),
        "delivered after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "delivered after {waited:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Fair share and priorities

/// `(job, task index)` of each delivery, in the order received.
fn order(deliveries: &[Delivery], jobs: &[(Uuid, &'static str)]) -> Vec<(&'static str, u32)> {
    deliveries
        .iter()
        .map(|d| {
            let body = body(d);
            let name = jobs
                .iter()
                .find(|(id, _)| *id == body.job_id)
                .map(|(_, name)| *name)
                .expect("a message of a known job");
            (name, body.task_index)
        })
        .collect()
}

async fn send_job(q: &SqlQueue, job: Uuid, tasks: std::ops::Range<u32>) {
    q.send(tasks.map(|i| now(task(job, i, 1))).collect())
        .await
        .unwrap();
}

async fn tasks_of_concurrent_jobs_interleave(h: Harness) {
    let q = &h.queue;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let jobs = [(a, "a"), (b, "b")];
    // A's tasks were all queued first; B's come after. The claim takes them in turn.
    send_job(q, a, 0..5).await;
    send_job(q, b, 0..3).await;
    let got = q.receive(6, LONG, NO_WAIT).await.unwrap();
    assert_eq!(
        order(&got, &jobs),
        [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    );
    // A retry keeps its task's rank: it is not sent to the back of the queue.
    let mut retry = body(&got[0]).clone();
    retry.attempt = 2;
    q.send(vec![now(retry)]).await.unwrap();
    let got = q.receive(10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(order(&got, &jobs), [("a", 0), ("a", 3), ("a", 4)]);
}

async fn a_small_job_is_not_stuck_behind_a_big_one(h: Harness) {
    let q = &h.queue;
    let (big, small) = (Uuid::now_v7(), Uuid::now_v7());
    let jobs = [(big, "big"), (small, "small")];
    send_job(q, big, 0..2_000).await;
    // The big job is under way: 100 of its tasks were taken and handled.
    let taken = q.receive(100, LONG, NO_WAIT).await.unwrap();
    q.ack(&receipts(&taken)).await.unwrap();
    // A job of 3 tasks arrives: the next receive of 3 gets its tasks, not the big job's.
    send_job(q, small, 0..3).await;
    let got = q.receive(3, LONG, NO_WAIT).await.unwrap();
    assert_eq!(
        order(&got, &jobs),
        [("small", 0), ("small", 1), ("small", 2)]
    );
}

async fn higher_priority_is_received_first(h: Harness) {
    let q = &h.queue;
    let (normal, urgent, background) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let jobs = [
        (normal, "normal"),
        (urgent, "urgent"),
        (background, "background"),
    ];
    q.set_priority(urgent, 10).await.unwrap();
    q.set_priority(background, -5).await.unwrap();
    send_job(q, background, 0..2).await;
    send_job(q, normal, 0..2).await;
    send_job(q, urgent, 0..2).await;
    let got = q.receive(10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(
        order(&got, &jobs),
        [
            ("urgent", 0),
            ("urgent", 1),
            ("normal", 0),
            ("normal", 1),
            ("background", 0),
            ("background", 1)
        ]
    );
}

async fn set_priority_reorders_waiting_and_later_messages(h: Harness) {
    let q = &h.queue;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let jobs = [(a, "a"), (b, "b")];
    send_job(q, a, 0..3).await;
    send_job(q, b, 0..3).await;
    let first = q.receive(2, LONG, NO_WAIT).await.unwrap();
    assert_eq!(order(&first, &jobs), [("a", 0), ("b", 0)]);
    // B goes first from now on: its waiting messages, and those sent later.
    q.set_priority(b, 3).await.unwrap();
    q.set_priority(b, 3).await.unwrap();
    send_job(q, b, 3..4).await;
    let got = q.receive(3, LONG, NO_WAIT).await.unwrap();
    assert_eq!(order(&got, &jobs), [("b", 1), ("b", 2), ("b", 3)]);
    // Back to the default: fair share again.
    q.set_priority(b, 0).await.unwrap();
    send_job(q, b, 4..6).await;
    let got = q.receive(10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(order(&got, &jobs), [("a", 1), ("a", 2), ("b", 4), ("b", 5)]);
    // In-flight messages keep working as before (ack, depth).
    q.ack(&receipts(&got)).await.unwrap();
    q.ack(&receipts(&first)).await.unwrap();
    assert_eq!(depth(q).await, depth_of(0, 3, 0, 0));
    // Purging a job forgets its priority.
    q.set_priority(a, 9).await.unwrap();
    assert_eq!(q.purge_job(a).await.unwrap(), 0);
    let c = Uuid::now_v7();
    send_job(q, c, 0..1).await;
    send_job(q, a, 7..8).await;
    let got = q.receive(2, LONG, NO_WAIT).await.unwrap();
    assert_eq!(order(&got, &[(a, "a"), (c, "c")]), [("c", 0), ("a", 7)]);
}

/// A message whose visibility timeout ran out (its worker died) is delivered again, after the
/// messages of its priority never received yet: it cannot hold the head of the queue.
async fn a_message_received_before_goes_after_fresh_ones(h: Harness) {
    let q = &h.queue;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let jobs = [(a, "a"), (b, "b")];
    send_job(q, a, 0..1).await;
    let first = q
        .receive(1, Duration::from_millis(200), NO_WAIT)
        .await
        .unwrap();
    assert_eq!(order(&first, &jobs), [("a", 0)]);
    send_job(q, b, 5..7).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = q.receive(3, LONG, NO_WAIT).await.unwrap();
    assert_eq!(order(&got, &jobs), [("b", 5), ("b", 6), ("a", 0)]);
    assert_eq!(got[2].receive_count, 2);
}

/// Draining a queue in acknowledged batches, as a worker does: on Postgres every claim after
/// the first starts after the last row taken (past the dead index entries of the rows taken
/// before); the rows still come in the fair order, every one once.
async fn a_drain_in_batches_takes_every_row_once_in_the_fair_order(h: Harness) {
    let q = &h.queue;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let jobs = [(a, "a"), (b, "b")];
    send_job(q, a, 0..600).await;
    send_job(q, b, 0..300).await;
    let mut taken = Vec::new();
    loop {
        let got = q.receive(50, LONG, NO_WAIT).await.unwrap();
        if got.is_empty() {
            break;
        }
        q.ack(&receipts(&got)).await.unwrap();
        taken.extend(order(&got, &jobs));
    }
    let expected: Vec<_> = (0..300)
        .flat_map(|i| [("a", i), ("b", i)])
        .chain((300..600).map(|i| ("a", i)))
        .collect();
    assert_eq!(taken, expected);
    assert_eq!(depth(q).await, depth_of(0, 0, 0, 0));
}

/// A message that becomes visible without a send (its delay ran out) while the queue is being
/// drained is taken in its fair turn within one poll interval.
async fn a_message_whose_delay_ran_out_takes_its_turn_within_a_poll_interval(h: Harness) {
    let poll = Duration::from_millis(300);
    let q = h.queue.clone().with_poll_interval(poll);
    let (big, late) = (Uuid::now_v7(), Uuid::now_v7());
    let jobs = [(big, "big"), (late, "late")];
    send_job(&q, big, 0..1_000).await;
    let delay = Duration::from_millis(500);
    q.send(vec![later(task(late, 0, 1), delay)]).await.unwrap();
    // Two claims, the second once the listener the first started is up (its start counts as
    // a gap in the notifications, which makes the next claim scan from the start).
    let got = q.receive(10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(order(&got, &jobs)[9], ("big", 9));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = q.receive(10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(order(&got, &jobs)[9], ("big", 19));
    tokio::time::sleep(delay + poll).await;
    let got = q.receive(3, LONG, NO_WAIT).await.unwrap();
    assert_eq!(order(&got, &jobs), [("late", 0), ("big", 20), ("big", 21)]);
}

/// A send by another instance (another process) is taken in its fair turn once its
/// notification is heard, though the receiver's poll interval is long. (On SQLite, where
/// another process's sends are seen at the next poll, the same instance sends.)
async fn another_instances_send_takes_its_turn_when_heard(h: Harness) {
    let receiver = h.queue.clone().with_poll_interval(Duration::from_secs(60));
    let sender = match &h.pg {
        Some(pool) => SqlQueue::postgres(pool.clone()),
        None => h.queue.clone(),
    };
    let (big, small) = (Uuid::now_v7(), Uuid::now_v7());
    let jobs = [(big, "big"), (small, "small")];
    send_job(&sender, big, 0..1_000).await;
    let got = receiver.receive(10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(order(&got, &jobs)[9], ("big", 9));
    // The receiver listens from its first claim; let the LISTEN take effect.
    tokio::time::sleep(Duration::from_millis(500)).await;
    send_job(&sender, small, 0..2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.receive(3, LONG, NO_WAIT).await.unwrap();
    assert_eq!(
        order(&got, &jobs),
        [("small", 0), ("small", 1), ("big", 10)]
    );
}

/// The claim is an index scan in the fair order that stops after `max` rows: no sort of the
/// queue, however long it is. (Postgres plans by statistics: they are taken after the load.)
async fn the_claim_reads_the_fair_index_without_sorting(h: Harness) {
    let q = &h.queue;
    for job in 0..20 {
        let job = Uuid::from_u128(job + 1);
        q.send((0..500).map(|i| now(task(job, i, 1))).collect())
            .await
            .unwrap();
    }
    if let Some(pool) = &h.pg {
        sqlx::query("ANALYZE task_queue")
            .execute(pool)
            .await
            .unwrap();
    }
    let plan = q.explain_claim(16).await.unwrap().join("\n");
    assert!(plan.contains("task_queue_fair_idx"), "{plan}");
    assert!(!plan.contains("Sort"), "{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    // On Postgres, so is a claim that starts after the last row taken, and the index gives it
    // its starting point (an index condition, not a filter).
    if let Some(plan) = q.explain_claim_after_head(16).await.unwrap() {
        let plan = plan.join("\n");
        assert!(plan.contains("task_queue_fair_idx"), "{plan}");
        let start = plan
            .lines()
            .find(|line| line.trim_start().starts_with("Index Cond:"))
            .unwrap_or_default();
        assert!(
            start.contains("priority =") && start.contains("ROW(receive_count, job_rank, id) >"),
            "{plan}"
        );
        assert!(!plan.contains("Sort"), "{plan}");
    }
    // And it takes what it plans to.
    let got = q.receive(16, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 16);
    assert!(got.iter().all(|d| body(d).task_index == 0));
}

/// A claim from the head walks the fair index and stops after its rows even when the planner
/// has no statistics of the queue (a new or freshly emptied table, before autovacuum analyzes
/// it), in a pool opened as the processes that claim open theirs (`bitmap_scans: false`). The
/// planner then expects a few dozen rows past the head; with bitmap scans allowed it answered
/// (when this was written, Postgres 15) with a bitmap scan that reads every row behind the head
/// and sorts them (ADR 26).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_from_the_head_walks_the_index_before_the_queue_has_statistics() {
    use shoal_infra::db::{Database, DatabaseUrl, PoolSettings};

    let Some(url) = testing::fresh_postgres_url().await else {
        return;
    };
    let settings = PoolSettings {
        bitmap_scans: false,
        ..PoolSettings::default()
    };
    let db = Database::connect_with(&DatabaseUrl::parse(&url).unwrap(), &settings)
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let Database::Postgres(pool) = &db else {
        unreachable!("a Postgres URL")
    };
    sqlx::query("ALTER TABLE task_queue SET (autovacuum_enabled = off)")
        .execute(pool)
        .await
        .unwrap();
    let queue = SqlQueue::for_database(&db);
    for job in 0..20 {
        let job = Uuid::from_u128(job + 1);
        queue
            .send((0..1_000).map(|i| now(task(job, i, 1))).collect())
            .await
            .unwrap();
    }
    let analyzed: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT COALESCE(last_analyze, last_autoanalyze) FROM pg_stat_user_tables WHERE relname = 'task_queue'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(analyzed, None, "the queue must be without statistics here");
    let plan = queue
        .explain_claim_after_head(100)
        .await
        .unwrap()
        .unwrap()
        .join("\n");
    assert!(
        plan.contains("Index Scan using task_queue_fair_idx"),
        "{plan}"
    );
    assert!(!plan.contains("Bitmap"), "{plan}");
    assert!(!plan.contains("Sort"), "{plan}");
    // And it takes its rows in the fair order.
    let got = queue.receive(100, LONG, NO_WAIT).await.unwrap();
    let first: Vec<_> = got
        .iter()
        .map(|d| (body(d).job_id, body(d).task_index))
        .collect();
    let expected: Vec<_> = (0..5)
        .flat_map(|i| (0..20).map(move |job| (Uuid::from_u128(job + 1), i)))
        .collect();
    assert_eq!(first, expected);
}

/// On SQLite the queue, the event log and the read tables of one process share one write lock
/// (`sqlite_writer::lock`): their writers wait for each other in that lock, in order, not in
/// SQLite's busy handler. With a busy timeout of zero, a writer that found the database locked
/// would fail at once with `SQLITE_BUSY` ("database is locked").
#[tokio::test]
async fn sqlite_writers_of_one_process_queue_for_the_lock_instead_of_failing_busy() {
    use shoal_infra::db::{Database, DatabaseUrl, PoolSettings};
    use shoal_infra::eventlog::{AppendBatch, ExpectedVersion, NewEvent, StreamAppend, raw_json};

    let path = testing::temp_sqlite_path();
    let url = DatabaseUrl::parse(&format!("sqlite:{}", path.display())).unwrap();
    let settings = PoolSettings {
        sqlite_busy_timeout: Duration::ZERO,
        ..PoolSettings::default()
    };
    let database = Database::connect_with(&url, &settings).await.unwrap();
    database.migrate().await.unwrap();
    let log = database.event_log();
    let queue = Arc::new(SqlQueue::for_database(&database));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..8u32 {
        let (log, queue) = (log.clone(), queue.clone());
        writers.spawn(async move {
            let job = Uuid::now_v7();
            for round in 0..20u32 {
                log.append(AppendBatch {
                    streams: vec![StreamAppend {
                        stream_id: format!("job-{job}-{round}"),
                        expected: ExpectedVersion::NoStream,
                        events: vec![NewEvent {
                            event_type: "JobSubmitted".into(),
                            schema_version: 1,
                            data: raw_json(&json!({ "writer": writer })),
                            metadata: json!({}),
                        }],
                    }],
                    ..AppendBatch::default()
                })
                .await
                .map_err(|e| format!("append: {e}"))?;
                queue
                    .send(vec![now(task(job, round, 1))])
                    .await
                    .map_err(|e| format!("send: {e}"))?;
                let got = queue
                    .receive(1, LONG, NO_WAIT)
                    .await
                    .map_err(|e| format!("receive: {e}"))?;
                queue
                    .ack(&receipts(&got))
                    .await
                    .map_err(|e| format!("ack: {e}"))?;
            }
            Ok::<_, String>(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap().unwrap();
    }
    assert_eq!(depth(&queue).await, depth_of(0, 0, 0, 0));
    database.close().await;
}
