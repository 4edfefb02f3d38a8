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
//! through `Dialect::begin_write`, every autocommit write through [`lock`] and then writes on
//! [`WriteGuard::pool`]. Never take it while holding it: it is not re-entrant.
//!
//! **The writer's connection** (ADR 30). SQLite keeps a page cache per connection, and a
//! connection drops its whole cache when it finds that another connection has written since its
//! last transaction. With writes spread over the pool's connections every write transaction
//! began cold, reading the B-tree pages it changes back from the file (65 KB read per task in
//! a `shoal dev` drain), and the default cache (2 MiB) spilled a large transaction's
//! changed pages to the log before its commit wrote them again. A pool that [`start`] set up
//! writes on a connection of its own instead (a pool of one, opened with the same settings and
//! a cache of [`WRITER_CACHE_KIB`]): since nobody else in this process writes, its cache stays
//! valid from one write to the next, and the writer never waits for a connection of the shared
//! pool (which readers may hold) while everyone else waits for the lock it holds. Pools that
//! were not started (in-memory databases, which live in their one connection) write on
//! themselves, as before.
//!
//! **The checkpointer** (ADR 29). In WAL mode a commit appends pages to the `-wal` file, and
//! by default the commit that takes the log past 1,000 pages then copies them into the database
//! file (an automatic checkpoint) before it returns: inside its transaction's hold of the write
//! lock, so every other writer waits for that copy and its `fsync`. In `shoal dev` the lock is
//! busy nearly all the time, and those checkpoints were a tenth to a fifth of it. The pools
//! [`crate::db::Database::connect_with`] opens on a file turn the automatic checkpoint off
//! (`wal_autocheckpoint = 0`), and [`start`] runs a task that, after writes, waits
//! [`CHECKPOINT_AFTER`] and runs `PRAGMA wal_checkpoint(PASSIVE)` on a connection of its own
//! pool, without the write lock. A passive checkpoint never blocks writers or readers (it copies
//! what no reader still needs, and the next one copies the rest), which is what the automatic
//! one did; only where it runs changed. The log restarts from its beginning, as before, once a
//! checkpoint has copied all of it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::SqlitePoolOptions;
use tokio::sync::{Notify, OwnedMutexGuard};

/// How long the checkpointer lets writes gather after one before it copies them.
pub const CHECKPOINT_AFTER: Duration = Duration::from_millis(100);

/// The page cache of the writer's connection, in KiB (SQLite's default is 2,000): enough for the
/// B-tree pages a `shoal dev` drain keeps changing to stay cached (32 MiB ran a 100,000-task
/// job as fast as 64 MiB, 16 MiB a little slower; docs/benchmarks.md, the fifteenth session).
/// It fills only as pages are used.
pub const WRITER_CACHE_KIB: u32 = 32 * 1024;

/// The write lock of one database file, the signal that someone wrote, and the connection
/// writes go through (set by [`start`]).
#[derive(Debug, Default)]
struct Writer {
    lock: Arc<tokio::sync::Mutex<()>>,
    written: Notify,
    /// The writer's connection, and which [`start`] opened it (it closes it with its pool).
    connection: Mutex<Option<(u64, SqlitePool)>>,
}

/// The write lock held: released (and the checkpointer told) when dropped.
#[derive(Debug)]
pub struct WriteGuard {
    _held: OwnedMutexGuard<()>,
    writer: Arc<Writer>,
}

impl WriteGuard {
    /// The pool to write on while the lock is held: the writer's own connection when a pool on
    /// this file was [`start`]ed (and is open), else `pool` itself.
    pub fn pool(&self, pool: &SqlitePool) -> SqlitePool {
        match &*relock(&self.writer.connection) {
            Some((_, connection)) if !connection.is_closed() => connection.clone(),
            _ => pool.clone(),
        }
    }
}

/// A std mutex's guard, poisoned or not (nothing held under these locks can be left half done).
fn relock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
    let mut writers = relock(&WRITERS);
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

/// Sets up the writing of the database file `pool` opens (its connections have
/// `wal_autocheckpoint = 0`): writes of this process go through a connection of their own (see
/// the module's documentation), and a checkpointer, after each write, waits
/// [`CHECKPOINT_AFTER`] and then checkpoints passively. Both end when `pool` is closed. Call it
/// once per file, from within a Tokio runtime.
pub fn start(pool: SqlitePool) {
    static STARTS: AtomicU64 = AtomicU64::new(0);
    let start = STARTS.fetch_add(1, Ordering::Relaxed);
    let writer = writer(&pool);
    // A second pool on a file whose writer is open shares that connection.
    let opened = {
        let mut connection = relock(&writer.connection);
        connection.is_none().then(|| {
            let options = (*pool.connect_options())
                .clone()
                .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"));
            let opened = SqlitePoolOptions::new()
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(pool.options().get_acquire_timeout())
                .connect_lazy_with(options);
            *connection = Some((start, opened.clone()));
            opened
        })
    };
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
        if let Some(opened) = opened {
            // The writer's connection closes after every connection of the pool: the last
            // connection to a file to close copies the log into it and removes the `-wal` file,
            // which none does if two close at once (each finds the other still open).
            crate::db::close_pool(&pool).await;
            // Later writes (of another pool on the file) go through their own pool.
            crate::db::close_pool(&opened).await;
            relock(&writer.connection).take_if(|(by, _)| *by == start);
        }
    });
}

/// Closes the writer's connection of the file `pool` opens, if it has one: for
/// [`crate::db::Database::close`], after `pool` is closed, so that the file is closed when that
/// returns (the connection would otherwise close a moment later, when the checkpointer sees the
/// pool closed).
pub async fn close(pool: &SqlitePool) {
    let connection = relock(&writer(pool).connection)
        .as_ref()
        .map(|(_, connection)| connection.clone());
    if let Some(connection) = connection {
        crate::db::close_pool(&connection).await;
    }
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
