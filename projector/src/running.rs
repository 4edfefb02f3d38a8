//! The rows of running tasks, kept in memory between batches of the live jobs projection.
//!
//! A task's `TaskStarted` and its `TaskCompleted` (or `TaskFailed`) usually fall into
//! consecutive batches. Without this, the second batch reads back the task's row and attempt
//! rows that the first one has just written (on Postgres about 15 % of the database's time in a
//! drain: docs/benchmarks.md). With it, the batch that leaves a task running keeps its row and
//! attempt rows here, and the next batch takes them instead of reading them; they are written
//! with a plain update, as loaded rows are.
//!
//! What is kept is exactly what the previous batch committed, so it is what a read would return:
//! - Kept rows are valid at one log position, the end of the batch that wrote them. A batch that
//!   starts anywhere else (another process moved the checkpoint, [`Projector::step`] from a
//!   reloaded checkpoint) drops them all first, and so does any failed batch (its commit may or
//!   may not have happened). A batch from the kept position whose checkpoint is not there any
//!   more is fenced and writes nothing.
//! - One batch at a time: the lock is held from taking the rows to keeping the new ones.
//! - A rebuild swapped in by this process drops them. One swapped in by another process at
//!   exactly the kept position leaves them: its tables are the fold of the same log, so the
//!   rows are the same.
//! - Bounded: at most [`MAX_TASKS`] tasks and about [`MAX_BYTES`] of rows, least recently
//!   written first out; a task that is no longer running leaves.
//!
//! [`Projector::step`]: crate::Projector::step

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use shoal_domain::TaskId;
use shoal_infra::eventlog::LogPosition;
use shoal_infra::readmodel::{AttemptRow, JobsKeys, TaskRow};

/// Most tasks kept (running tasks in the whole cluster, past which the oldest are read again).
pub const MAX_TASKS: usize = 8_192;
/// Most bytes of rows kept, about (parameters, errors and names counted).
pub const MAX_BYTES: usize = 32 << 20;

struct Kept {
    row: TaskRow,
    attempts: Vec<AttemptRow>,
    bytes: usize,
    stamp: u64,
}

/// See the module docs.
#[derive(Default)]
pub struct RunningRows {
    /// The position the kept rows are valid at.
    at: Option<LogPosition>,
    kept: HashMap<TaskId, Kept>,
    /// Eviction order: stamp of the latest write -> task.
    order: BTreeMap<u64, TaskId>,
    next_stamp: u64,
    bytes: usize,
}

impl std::fmt::Debug for RunningRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningRows")
            .field("at", &self.at)
            .field("tasks", &self.kept.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl RunningRows {
    /// Moves the kept rows of `keys.tasks` into `keys.known_*` for a batch from `from` (drops
    /// everything first if the rows are not valid at `from`).
    pub fn lend(&mut self, from: LogPosition, keys: &mut JobsKeys) {
        if self.at != Some(from) {
            self.clear();
            return;
        }
        if self.kept.is_empty() {
            return;
        }
        let before = keys.tasks.len();
        keys.tasks.retain(|&id| match self.take(id) {
            Some(kept) => {
                keys.known_tasks.push(kept.row);
                keys.known_attempts.extend(kept.attempts);
                false
            }
            None => true,
        });
        tracing::debug!(
            kept = self.kept.len(),
            lent = before - keys.tasks.len(),
            read = keys.tasks.len(),
            "running rows lent"
        );
    }

    /// After a batch committed up to `to`: keeps the rows of the tasks it left running
    /// (`attempts`: all of each one's attempt rows). The rows lent to it and not given back
    /// are gone (their tasks are not running any more, or were not written).
    pub fn keep(
        &mut self,
        to: LogPosition,
        tasks: impl IntoIterator<Item = TaskRow>,
        mut attempts: BTreeMap<TaskId, Vec<AttemptRow>>,
    ) {
        self.at = Some(to);
        for row in tasks {
            let Some(attempts) = attempts.remove(&row.id) else {
                continue;
            };
            self.take(row.id);
            let bytes = row_bytes(&row, &attempts);
            if bytes > MAX_BYTES / 64 {
                continue;
            }
            let stamp = self.next_stamp;
            self.next_stamp += 1;
            self.order.insert(stamp, row.id);
            self.bytes += bytes;
            self.kept.insert(
                row.id,
                Kept {
                    row,
                    attempts,
                    bytes,
                    stamp,
                },
            );
        }
        while self.kept.len() > MAX_TASKS || self.bytes > MAX_BYTES {
            let Some((_, oldest)) = self.order.first_key_value() else {
                break;
            };
            self.take(*oldest);
        }
    }

    /// Drops every kept row.
    pub fn clear(&mut self) {
        *self = RunningRows::default();
    }

    /// Removes and returns a task's kept rows.
    fn take(&mut self, id: TaskId) -> Option<Kept> {
        let kept = self.kept.remove(&id)?;
        self.order.remove(&kept.stamp);
        self.bytes -= kept.bytes;
        Some(kept)
    }
}

/// About how much memory a task's rows take.
fn row_bytes(row: &TaskRow, attempts: &[AttemptRow]) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let task = std::mem::size_of::<TaskRow>()
        + row.job_type.len()
        + json_bytes(&row.parameters)
        + row.result.as_ref().map_or(0, json_bytes)
        + text(&row.error_message)
        + text(&row.worker);
    let attempts: usize = attempts
        .iter()
        .map(|a| {
            std::mem::size_of::<AttemptRow>()
                + text(&a.attempt.worker)
                + text(&a.attempt.error)
                + text(&a.attempt.dead_letter_reason)
        })
        .sum();
    task + attempts
}

/// About how much memory a JSON value takes.
fn json_bytes(value: &Value) -> usize {
    let node = std::mem::size_of::<Value>();
    match value {
        Value::String(s) => node + s.len(),
        Value::Array(items) => node + items.iter().map(json_bytes).sum::<usize>(),
        Value::Object(map) => {
            node + map
                .iter()
                .map(|(k, v)| k.len() + json_bytes(v))
                .sum::<usize>()
        }
        _ => node,
    }
}
