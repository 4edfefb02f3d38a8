//! The local buffer: messages received ahead of the slots, started in the queue's fair order.
//!
//! The queue hands out messages by priority, then interleaved across jobs (ADR 0015). A buffer
//! that started them first in, first out would undo that for as long as it takes to drain: the
//! tasks of a small job received behind a buffer full of a big job's would wait for all of
//! them. So the buffer starts the highest priority it holds first and, within a priority,
//! takes one message per job in turn: a job whose messages arrive later is served from the
//! next start on. The priority is the one the message was received with; a change made while
//! it waits here applies to the messages the worker receives after it (`docs/fairness.md`).

use std::collections::{BTreeMap, HashMap, VecDeque};

use shoal_infra::queue::Delivery;
use uuid::Uuid;

/// A buffered delivery and its key among the messages the worker holds.
pub(super) type Held = (Delivery, u64);

/// The buffer: by priority (highest first), then by job in turn.
#[derive(Debug, Default)]
pub(super) struct FairBuffer {
    bands: BTreeMap<std::cmp::Reverse<i32>, Band>,
    len: usize,
}

/// The messages of one priority: each job's in arrival order, and the jobs in turn.
#[derive(Debug, Default)]
struct Band {
    turn: VecDeque<Uuid>,
    jobs: HashMap<Uuid, VecDeque<Held>>,
}

impl FairBuffer {
    pub(super) fn push(&mut self, held: Held) {
        // A message whose body could not be read has no job: those share one turn.
        let job = held.0.body.as_ref().map_or(Uuid::nil(), |m| m.job_id);
        let band = self
            .bands
            .entry(std::cmp::Reverse(held.0.priority))
            .or_default();
        let queue = band.jobs.entry(job).or_insert_with(|| {
            band.turn.push_back(job);
            VecDeque::new()
        });
        queue.push_back(held);
        self.len += 1;
    }

    /// The next message to start: the highest priority's next job in turn, which then goes to
    /// the back of the turn.
    pub(super) fn pop(&mut self) -> Option<Held> {
        let mut entry = self.bands.first_entry()?;
        let band = entry.get_mut();
        let job = band.turn.pop_front()?;
        let queue = band.jobs.get_mut(&job)?;
        let held = queue.pop_front();
        if queue.is_empty() {
            band.jobs.remove(&job);
        } else {
            band.turn.push_back(job);
        }
        if band.turn.is_empty() {
            entry.remove();
        }
        if held.is_some() {
            self.len -= 1;
        }
        held
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Empties the buffer (shutdown releases what it held).
    pub(super) fn drain(&mut self) -> impl Iterator<Item = Held> + use<> {
        self.len = 0;
        std::mem::take(&mut self.bands)
            .into_values()
            .flat_map(|band| band.jobs.into_values().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_infra::queue::{PoisonMessage, Receipt, TaskMessage};

    fn message(job: Uuid, index: u32, priority: i32) -> Held {
        let body = TaskMessage {
            task_id: Uuid::new_v4(),
            job_id: job,
            task_index: index,
            parameters: serde_json::Value::Null,
            job_type: "noop".into(),
            attempt: 1,
            stream_version: 1,
            max_attempts: 1,
            timeout_seconds: 0,
            not_before: None,
            traceparent: None,
            previous_attempt_traceparent: None,
            fallback_handler: None,
        };
        let delivery = Delivery {
            receipt: Receipt(format!("{job}:{index}")),
            body: Ok(body),
            receive_count: 1,
            priority,
            size: 100,
        };
        (delivery, u64::from(index))
    }

    fn popped(buffer: &mut FairBuffer) -> Vec<(Uuid, u32)> {
        std::iter::from_fn(|| buffer.pop())
            .map(|(d, _)| {
                let m = d.body.unwrap();
                (m.job_id, m.task_index)
            })
            .collect()
    }

    #[test]
    fn a_job_received_behind_a_full_buffer_is_served_next() {
        let (big, small) = (Uuid::new_v4(), Uuid::new_v4());
        let mut buffer = FairBuffer::default();
        for i in 0..100 {
            buffer.push(message(big, i, 0));
        }
        assert_eq!(buffer.pop().map(|(_, key)| key), Some(0));
        for i in 0..3 {
            buffer.push(message(small, i, 0));
        }
        assert_eq!(buffer.len(), 102);
        let order = popped(&mut buffer);
        // The small job's three tasks alternate with the big one's, each job in its own order.
        let small_at: Vec<usize> = (0..order.len()).filter(|&i| order[i].0 == small).collect();
        assert_eq!(small_at, vec![1, 3, 5], "{order:?}");
        let big_order: Vec<u32> = order.iter().filter(|m| m.0 == big).map(|m| m.1).collect();
        assert_eq!(big_order, (1..100).collect::<Vec<_>>());
        assert_eq!(buffer.len(), 0);
        assert!(buffer.pop().is_none());
    }

    #[test]
    fn a_higher_priority_goes_first() {
        let (low, high) = (Uuid::new_v4(), Uuid::new_v4());
        let mut buffer = FairBuffer::default();
        for i in 0..5 {
            buffer.push(message(low, i, -1));
        }
        for i in 0..2 {
            buffer.push(message(high, i, 5));
        }
        let order = popped(&mut buffer);
        let jobs: Vec<Uuid> = order.iter().map(|m| m.0).collect();
        assert_eq!(jobs[..2], [high, high]);
        assert!(jobs[2..].iter().all(|&j| j == low));
    }

    #[test]
    fn drain_returns_everything_including_unreadable_messages() {
        let mut buffer = FairBuffer::default();
        buffer.push(message(Uuid::new_v4(), 0, 0));
        buffer.push(message(Uuid::new_v4(), 1, 3));
        let poison = Delivery {
            receipt: Receipt("poison".into()),
            body: Err(PoisonMessage {
                raw: "{".into(),
                error: "eof".into(),
            }),
            receive_count: 1,
            priority: 0,
            size: 1,
        };
        buffer.push((poison, 9));
        assert_eq!(buffer.len(), 3);
        let mut keys: Vec<u64> = buffer.drain().map(|(_, key)| key).collect();
        keys.sort_unstable();
        assert_eq!(keys, vec![0, 1, 9]);
        assert_eq!(buffer.len(), 0);
        assert!(buffer.pop().is_none());
    }
}
