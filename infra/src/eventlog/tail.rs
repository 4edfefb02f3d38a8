//! The newest stretch of the log that this process has read, kept for its other readers.
//!
//! In one process (`shoal dev`), the orchestrator and both projections each read every event
//! from the log, at nearly the same place. On SQLite those reads were 40 % of the database's
//! statement time in a drain (docs/benchmarks.md, "`shoal dev` on SQLite"): the same rows read
//! and decoded three times. The first reader of a stretch reads it from the database and leaves
//! it here; the others take it from here, and ask the database only for what follows it. Since
//! the three are woken by the same commit and would all find the new events missing here at
//! once, the readers at the newest events take turns ([`SharedReads`]): the first reads, the
//! others then find its read here (a 20,000-task drain on SQLite read 180,000 rows for 60,000
//! events before, 66,000 after).
//!
//! What is kept is a run of records exactly as reads returned them: every event of the log after
//! `after`, up to the last record kept. That holds because a read is gap-free in `LogPosition`
//! order: once a read has returned the events up to `p`, no event at or before `p` can appear
//! later. On SQLite positions become visible in order (one writer at a time, an append-only
//! table); on Postgres a read returns only events of transactions older than every transaction
//! still running, and a later transaction's events come after them in `(commit, position)`
//! order (ADR 2). The Postgres reader without that horizon (`naive_reading_for_tests`) skips
//! events, and does not use the tail.
//!
//! Bounded by [`MAX_EVENTS`] events and about [`MAX_BYTES`] bytes; the oldest go first. A reader
//! far behind (a rebuild, a consumer catching up) reads from the database and leaves the kept
//! run alone.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{LogPosition, LogResult, RecordedEvent};

/// Most events kept.
pub const MAX_EVENTS: usize = 16_384;
/// Most bytes of events kept, about.
pub const MAX_BYTES: usize = 16 << 20;

#[derive(Debug, Default)]
pub(crate) struct Tail {
    inner: Mutex<Run>,
}

/// Every event after `after` up to the last of `records`, in position order.
#[derive(Debug, Default)]
struct Run {
    after: LogPosition,
    records: VecDeque<RecordedEvent>,
    bytes: usize,
}

impl Run {
    fn end(&self) -> LogPosition {
        self.records.back().map_or(self.after, |r| r.log_position)
    }
}

impl Tail {
    /// The kept events after position `after`, at most `limit` (none when the kept run does not
    /// reach past `after`, or starts after it).
    pub fn read(&self, after: LogPosition, limit: usize) -> Vec<RecordedEvent> {
        let run = self.lock();
        if after < run.after || after >= run.end() {
            return Vec::new();
        }
        let start = run.records.partition_point(|r| r.log_position <= after);
        run.records.range(start..).take(limit).cloned().collect()
    }

    /// The position the kept events follow: a reader before it is behind them.
    pub fn start(&self) -> LogPosition {
        self.lock().after
    }

    /// Keeps what a read of the database after position `after` returned (in position order,
    /// with nothing left out between `after` and its last record).
    pub fn add(&self, after: LogPosition, records: &[RecordedEvent]) {
        let Some(last) = records.last() else {
            return;
        };
        let mut run = self.lock();
        let end = run.end();
        if last.log_position <= end {
            return;
        }
        let mut new = &records[records.partition_point(|r| r.log_position <= end)..];
        if new.len() > MAX_EVENTS {
            // A long read (a rebuild, a consumer catching up): only its newest events could stay.
            let (dropped, kept) = new.split_at(new.len() - MAX_EVENTS);
            let after = dropped.last().map_or(after, |r| r.log_position);
            *run = Run {
                after,
                ..Run::default()
            };
            new = kept;
        } else if after > end {
            // A reader ahead of the kept run (it was never read here): start afresh from it.
            *run = Run {
                after,
                ..Run::default()
            };
        }
        for record in new {
            run.bytes += size(record);
            run.records.push_back(record.clone());
        }
        while run.records.len() > MAX_EVENTS || run.bytes > MAX_BYTES {
            let Some(oldest) = run.records.pop_front() else {
                break;
            };
            run.bytes -= size(&oldest);
            run.after = oldest.log_position;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Run> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The tail of one event log (shared by its clones), and the turns of its readers.
#[derive(Debug, Default)]
pub(crate) struct SharedReads {
    tail: Tail,
    /// Held by a reader at the newest events while it reads them from the database.
    reading: tokio::sync::Mutex<()>,
    /// Events read from the database (not from the tail), for tests.
    database_rows: AtomicU64,
}

impl SharedReads {
    /// `read_all`: what the tail holds after `after`, then what follows from the database
    /// (`read(from, limit)`), at most `limit` in all. The readers at the newest events read from
    /// the database one at a time, so that what the first reads serves the others; a reader
    /// behind the kept events (a rebuild, a catch-up) reads alone.
    pub async fn read_all<F, Fut>(
        &self,
        after: LogPosition,
        limit: i64,
        read: F,
    ) -> LogResult<Vec<RecordedEvent>>
    where
        F: FnOnce(LogPosition, i64) -> Fut,
        Fut: Future<Output = LogResult<Vec<RecordedEvent>>>,
    {
        let wanted = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut records = self.tail.read(after, wanted);
        let mut _turn = None;
        if records.len() < wanted && after >= self.tail.start() {
            _turn = Some(self.reading.lock().await);
            records = self.tail.read(after, wanted);
        }
        if records.len() < wanted {
            let from = records.last().map_or(after, |r| r.log_position);
            let more_limit = i64::try_from(wanted - records.len()).unwrap_or(i64::MAX);
            let more = read(from, more_limit).await?;
            self.database_rows.fetch_add(
                u64::try_from(more.len()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            self.tail.add(from, &more);
            records.extend(more);
        }
        Ok(records)
    }

    /// How many events `read_all` has read from the database (not from the tail).
    pub fn database_rows(&self) -> u64 {
        self.database_rows.load(Ordering::Relaxed)
    }
}

/// About how much memory a record takes.
fn size(record: &RecordedEvent) -> usize {
    std::mem::size_of::<RecordedEvent>()
        + record.stream_id.len()
        + record.event_type.len()
        + record.data.get().len()
        + record.metadata.get().len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::value::RawValue;

    fn at(position: i64) -> LogPosition {
        LogPosition {
            commit: position,
            position,
        }
    }

    fn record(position: i64) -> RecordedEvent {
        RecordedEvent {
            log_position: at(position),
            stream_id: format!("s-{position}"),
            stream_version: 1,
            event_type: "E".into(),
            schema_version: 1,
            data: RawValue::from_string("{}".into()).unwrap_or_else(|_| unreachable!()),
            metadata: RawValue::from_string("{}".into()).unwrap_or_else(|_| unreachable!()),
            recorded_at: Utc::now(),
        }
    }

    fn positions(records: &[RecordedEvent]) -> Vec<i64> {
        records.iter().map(|r| r.log_position.position).collect()
    }

    #[test]
    fn serves_what_was_read_and_only_that() {
        let tail = Tail::default();
        assert!(tail.read(at(0), 10).is_empty());
        tail.add(at(0), &(1..=5).map(record).collect::<Vec<_>>());
        assert_eq!(positions(&tail.read(at(0), 10)), vec![1, 2, 3, 4, 5]);
        assert_eq!(positions(&tail.read(at(2), 2)), vec![3, 4]);
        assert!(
            tail.read(at(5), 10).is_empty(),
            "nothing after the last read"
        );
        // A read that overlaps the kept run extends it with what is new.
        tail.add(at(3), &(4..=8).map(record).collect::<Vec<_>>());
        assert_eq!(positions(&tail.read(at(5), 10)), vec![6, 7, 8]);
        // A read ahead of the kept run starts a new one: what lies between was never read.
        tail.add(at(20), &(21..=22).map(record).collect::<Vec<_>>());
        assert!(tail.read(at(8), 10).is_empty());
        assert!(tail.read(at(0), 10).is_empty());
        assert_eq!(positions(&tail.read(at(20), 10)), vec![21, 22]);
        // A read from behind that ends inside the run changes nothing.
        tail.add(at(10), &(11..=21).map(record).collect::<Vec<_>>());
        assert_eq!(positions(&tail.read(at(20), 10)), vec![21, 22]);
        assert!(tail.read(at(15), 10).is_empty());
    }

    /// On Postgres events are read in `(commit, position)` order, where positions alone are
    /// not ordered: the kept run follows that order.
    #[test]
    fn follows_the_order_of_commits_then_positions() {
        let tail = Tail::default();
        let event = |commit: i64, position: i64| RecordedEvent {
            log_position: LogPosition { commit, position },
            ..record(position)
        };
        let read = [event(10, 7), event(10, 8), event(12, 3), event(15, 9)];
        tail.add(LogPosition::START, &read);
        let got = |after: LogPosition| -> Vec<LogPosition> {
            tail.read(after, 10)
                .iter()
                .map(|r| r.log_position)
                .collect()
        };
        let cursor = |commit, position| LogPosition { commit, position };
        assert_eq!(got(cursor(10, 8)), vec![cursor(12, 3), cursor(15, 9)]);
        assert_eq!(got(cursor(12, 3)), vec![cursor(15, 9)]);
        assert!(got(cursor(15, 9)).is_empty());
        // A later read from (15, 9) on extends the run.
        tail.add(cursor(15, 9), &[event(16, 4)]);
        assert_eq!(got(cursor(15, 9)), vec![cursor(16, 4)]);
    }

    #[test]
    fn keeps_the_newest_events_up_to_its_bound() {
        let tail = Tail::default();
        let total = i64::try_from(MAX_EVENTS).unwrap_or(i64::MAX) + 100;
        tail.add(at(0), &(1..=total).map(record).collect::<Vec<_>>());
        assert!(tail.read(at(0), 10).is_empty(), "the oldest were dropped");
        assert!(tail.read(at(99), 10).is_empty());
        assert_eq!(positions(&tail.read(at(100), 2)), vec![101, 102]);
        assert_eq!(tail.read(at(100), usize::MAX).len(), MAX_EVENTS);
    }
}
