//! The one writer of a SQLite database in this process: its write lock, and the checkpointer
//! that copies the write-ahead log into the database file outside that lock.
//!
//! **The lock.** SQLite has one writer at a time. A connection that finds the write lock taken
//! waits in SQLite's busy handler, which sleeps and looks again (1, 2, 5, 10, ... up to 100 ms
//! between looks): under load most of those sleeps outlast the write they wait for by far, and
//! the database sits idle meanwhile. Writers of this process (the event log, the SQL queue, the
//! read tables, the orchestrator's tables, the workers table) queue on [`lock`] instead, in
//! order, and each starts the moment the one before commits; the busy handler is left to
//! arbitrate with other processes on the same file. Every SQLite write transaction takes it
//! through `Dialect::begin_write`, every autocommit write through `Dialect::lock_writes`. Never
//! take it while holding it: it is not re-entrant.
//!
//! **The checkpointer** (ADR 29). In WAL mode a commit appends pages to the `-wal` file, and
//! by default the commit that takes the log past 1,000 pages then copies them into the database
//! file (an automatic checkpoint) before it returns: inside its transaction's hold of the write
//! lock, so every other writer waits for that copy and its `fsync`. In `shoal dev` the lock is
//! busy nearly all the time, and those checkpoints were a tenth to a fifth of it. The pools
//! [`crate::db::Database::connect_with`] opens on a file turn the automatic checkpoint off
//! (`wal_autocheckpoint = 0`) and run [`spawn_checkpointer`]: a task that, after writes, waits
//! [`CHECKPOINT_AFTER`] and runs `PRAGMA wal_checkpoint(PASSIVE)` on a connection of its own
//! pool, without the write lock. A passive checkpoint never blocks writers or readers (it copies
//! what no reader still needs, and the next one copies the rest), which is what the automatic
//! one did; only where it runs changed. The log restarts from its beginning, as before, once a
//! checkpoint has copied all of it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::{Notify, OwnedMutexGuard};

/// How long the checkpointer lets writes gather after one before it copies them.
pub const CHECKPOINT_AFTER: Duration = Duration::from_millis(100);

/// The write lock of one database file, and the signal that someone wrote.
#[derive(Debug, Default)]
struct Writer {
    lock: Arc<tokio::sync::Mutex<()>>,
    written: Notify,
}

/// The write lock held: released (and the checkpointer told) when dropped.
#[derive(Debug)]
pub struct WriteGuard {
    _held: OwnedMutexGuard<()>,
    writer: Arc<Writer>,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        // A stored permit if the checkpointer is busy: one more pass, not one per write.
        self.writer.written.notify_one();
    }
}

/// Waits for the write lock of the database `pool` opens; see the module's documentation.
pub async fn lock(pool: &SqlitePool) -> WriteGuard {
    let writer = writer(pool);
    WriteGuard {
        _held: writer.lock.clone().lock_owned().await,
        writer,
    }
}

/// The writer of the database file `pool` opens: one per file in this process, found by the
/// path as the pool spells it (no file system call on every write), else by the canonical path,
/// which two spellings of one file share (an in-memory database has a name of its own per
/// pool). It lives while someone holds it: a writer, or a checkpointer.
fn writer(pool: &SqlitePool) -> Arc<Writer> {
    type Writers = Mutex<HashMap<PathBuf, Weak<Writer>>>;
    static WRITERS: LazyLock<Writers> = LazyLock::new(Writers::default);

    let options = pool.connect_options();
    let file = options.get_filename();
    let mut writers = WRITERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(writer) = writers.get(file).and_then(Weak::upgrade) {
        return writer;
    }
    let canonical = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let writer = match writers.get(&canonical).and_then(Weak::upgrade) {
        Some(writer) => writer,
        None => {
            writers.retain(|_, writer| writer.strong_count() > 0);
            Arc::new(Writer::default())
        }
    };
    writers.insert(canonical, Arc::downgrade(&writer));
    writers.insert(file.to_path_buf(), Arc::downgrade(&writer));
    writer
}

/// Starts the checkpointer of `pool` (a file, whose connections have `wal_autocheckpoint = 0`):
/// after each write of this process to the file it waits [`CHECKPOINT_AFTER`], then checkpoints
/// passively. It ends when the pool is closed. Call it from within a Tokio runtime.
pub fn spawn_checkpointer(pool: SqlitePool) {
    let writer = writer(&pool);
    tokio::spawn(async move {
        // Ends with `Err` when the pool closes, which is the only way it ends.
        let _closed = pool
            .close_event()
            .do_until(async {
                loop {
                    writer.written.notified().await;
                    tokio::time::sleep(CHECKPOINT_AFTER).await;
                    checkpoint(&pool).await;
                }
            })
            .await;
    });
}

/// One passive checkpoint; a failure is logged (the next write brings another try).
async fn checkpoint(pool: &SqlitePool) {
    match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await
    {
        Ok((busy, log, copied)) => {
            tracing::trace!(busy, log, copied, "sqlite checkpoint");
        }
        Err(error) => {
            tracing::warn!(%error, "sqlite checkpoint failed; the next write retries it");
        }
    }
}
