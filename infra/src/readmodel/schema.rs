//! The DDL of a rebuild: shadow tables (`<table>_rebuild`) and the swap that puts them in
//! place of the live ones. The live tables come from the migrations
//! `20261127000300_read_model.sql` and `20261206006001_task_attempts.sql`; what is written here must define the same tables (the
//! rebuild tests compare the schemas before and after a swap).
//!
//! Postgres: shadows are `LIKE` their live table (so columns cannot drift), with their primary
//! key at once and their secondary indexes created before the final catch-up; the swap drops
//! the live tables, renames the shadows and their indexes, all in one transaction (readers of
//! the old tables finish first; new readers wait for the commit, then see the new tables).
//! SQLite: no `LIKE`, so the shadow DDL is spelled out; secondary indexes are created inside
//! the swap transaction (SQLite has no `ALTER INDEX ... RENAME`), which in WAL mode blocks
//! writers, not readers.

use super::types::ProjectionName;

/// Postgres: drop any leftover shadows and create empty ones (primary keys only).
pub(crate) const fn pg_prepare(projection: ProjectionName) -> &'static str {
    match projection {
        ProjectionName::Jobs => {
            "DROP TABLE IF EXISTS jobs_rebuild;
             DROP TABLE IF EXISTS tasks_rebuild;
             CREATE TABLE jobs_rebuild (LIKE jobs INCLUDING ALL EXCLUDING INDEXES);
             ALTER TABLE jobs_rebuild ADD CONSTRAINT jobs_rebuild_pkey PRIMARY KEY (id);
             CREATE TABLE tasks_rebuild (LIKE tasks INCLUDING ALL EXCLUDING INDEXES);
             ALTER TABLE tasks_rebuild ADD CONSTRAINT tasks_rebuild_pkey PRIMARY KEY (id);
             DROP TABLE IF EXISTS task_attempts_rebuild;
             CREATE TABLE task_attempts_rebuild
                 (LIKE task_attempts INCLUDING ALL EXCLUDING INDEXES);
             ALTER TABLE task_attempts_rebuild
                 ADD CONSTRAINT task_attempts_rebuild_pkey PRIMARY KEY (task_id, seq);"
        }
        ProjectionName::Analytics => {
            "DROP TABLE IF EXISTS analytics_job_state_rebuild;
             DROP TABLE IF EXISTS analytics_jobs_by_type_rebuild;
             DROP TABLE IF EXISTS analytics_jobs_by_status_rebuild;
             DROP TABLE IF EXISTS analytics_tasks_by_status_rebuild;
             DROP TABLE IF EXISTS analytics_daily_rebuild;
             DROP TABLE IF EXISTS analytics_processing_time_rebuild;
             DROP TABLE IF EXISTS analytics_processing_time_buckets_rebuild;
             DROP TABLE IF EXISTS analytics_throughput_rebuild;
             CREATE TABLE analytics_job_state_rebuild
                 (LIKE analytics_job_state INCLUDING ALL EXCLUDING INDEXES);
             ALTER TABLE analytics_job_state_rebuild
                 ADD CONSTRAINT analytics_job_state_rebuild_pkey PRIMARY KEY (job_id);
             CREATE TABLE analytics_jobs_by_type_rebuild
                 (LIKE analytics_jobs_by_type INCLUDING ALL EXCLUDING INDEXES);
             ALTER TABLE analytics_jobs_by_type_rebuild
                 ADD CONSTRAINT analytics_jobs_by_type_rebuild_pkey PRIMARY KEY (job_type);
             CREATE TABLE analytics_jobs_by_status_rebuild
                 (LIKE analytics_jobs_by_status INCLUDING ALL EXCLUDING INDEXES);
             ALTER TABLE analytics_jobs_by_status_rebuild
                 ADD CONSTRAINT analytics_jobs_by_status_rebuild_pkey PRIMARY KEY (status);
             CREATE TABLE analytics_tasks_by_status_rebuild
                 (LIKE analytics_tasks_by_status INCLUDING ALL EXCLUDING INDEXES);
             ALTER TABLE analytics_tasks_by_status_rebuild
                 ADD CONSTRAINT analytics_tasks_by_status_rebuild_pkey PRIMARY KEY (status);
             CREATE TABLE analytics_daily_rebuild
                 (LIKE analytics_daily INCLUDING ALL EXCLUDING INDEXES);
             ALTER TABLE analytics_daily_rebuild
                 ADD CONSTRAINT analytics_daily_rebuild_pkey PRIMARY KEY (day);
             CREATE TABLE analytics_processing_time_rebuild
                 (LIKE analytics_processing_time INCLUDING ALL EXCLUDING INDEXES);
             ALTER TABLE analytics_processing_time_rebuild
                 ADD CONSTRAINT analytics_processing_time_rebuild_pkey PRIMARY KEY (id);
             CREATE TABLE analytics_processing_time_buckets_rebuild
                 (LIKE analytics_processing_time_buckets INCLUDING ALL EXCLUDING INDEXES);
             ALTER TABLE analytics_processing_time_buckets_rebuild
                 ADD CONSTRAINT analytics_processing_time_buckets_rebuild_pkey PRIMARY KEY (bucket);
             CREATE TABLE analytics_throughput_rebuild
                 (LIKE analytics_throughput INCLUDING ALL EXCLUDING INDEXES);
             ALTER TABLE analytics_throughput_rebuild
                 ADD CONSTRAINT analytics_throughput_rebuild_pkey PRIMARY KEY (minute);"
        }
    }
}

/// Postgres: the shadows' secondary indexes (after the bulk of the replay, before the swap).
pub(crate) const fn pg_index(projection: ProjectionName) -> &'static str {
    match projection {
        ProjectionName::Jobs => {
            "CREATE INDEX jobs_rebuild_created_idx ON jobs_rebuild (created_at, id);
             CREATE INDEX jobs_rebuild_status_created_idx ON jobs_rebuild (status, created_at, id);
             CREATE INDEX jobs_rebuild_type_created_idx ON jobs_rebuild (job_type, created_at, id);
             CREATE INDEX jobs_rebuild_priority_created_idx
                 ON jobs_rebuild (priority, created_at, id);
             CREATE INDEX tasks_rebuild_job_index_idx ON tasks_rebuild (job_id, task_index);
             CREATE INDEX task_attempts_rebuild_job_idx
                 ON task_attempts_rebuild (job_id, task_index, seq);"
        }
        ProjectionName::Analytics => "",
    }
}

/// Postgres: the swap, inside the transaction that also moves the live checkpoint.
pub(crate) const fn pg_swap(projection: ProjectionName) -> &'static str {
    match projection {
        ProjectionName::Jobs => {
            "DROP TABLE jobs;
             DROP TABLE tasks;
             ALTER TABLE jobs_rebuild RENAME TO jobs;
             ALTER TABLE jobs RENAME CONSTRAINT jobs_rebuild_pkey TO jobs_pkey;
             ALTER INDEX jobs_rebuild_created_idx RENAME TO jobs_created_idx;
             ALTER INDEX jobs_rebuild_status_created_idx RENAME TO jobs_status_created_idx;
             ALTER INDEX jobs_rebuild_type_created_idx RENAME TO jobs_type_created_idx;
             ALTER INDEX jobs_rebuild_priority_created_idx RENAME TO jobs_priority_created_idx;
             ALTER TABLE tasks_rebuild RENAME TO tasks;
             ALTER TABLE tasks RENAME CONSTRAINT tasks_rebuild_pkey TO tasks_pkey;
             ALTER INDEX tasks_rebuild_job_index_idx RENAME TO tasks_job_index_idx;
             ALTER TABLE tasks SET (fillfactor = 50);
             DROP TABLE task_attempts;
             ALTER TABLE task_attempts_rebuild RENAME TO task_attempts;
             ALTER TABLE task_attempts
                 RENAME CONSTRAINT task_attempts_rebuild_pkey TO task_attempts_pkey;
             ALTER INDEX task_attempts_rebuild_job_idx RENAME TO task_attempts_job_idx;
             ALTER TABLE task_attempts SET (fillfactor = 50);"
        }
        ProjectionName::Analytics => {
            "DROP TABLE analytics_job_state;
             DROP TABLE analytics_jobs_by_type;
             DROP TABLE analytics_jobs_by_status;
             DROP TABLE analytics_tasks_by_status;
             DROP TABLE analytics_daily;
             DROP TABLE analytics_processing_time;
             DROP TABLE analytics_processing_time_buckets;
             DROP TABLE analytics_throughput;
             ALTER TABLE analytics_job_state_rebuild RENAME TO analytics_job_state;
             ALTER TABLE analytics_job_state
                 RENAME CONSTRAINT analytics_job_state_rebuild_pkey TO analytics_job_state_pkey;
             ALTER TABLE analytics_jobs_by_type_rebuild RENAME TO analytics_jobs_by_type;
             ALTER TABLE analytics_jobs_by_type
                 RENAME CONSTRAINT analytics_jobs_by_type_rebuild_pkey
                 TO analytics_jobs_by_type_pkey;
             ALTER TABLE analytics_jobs_by_status_rebuild RENAME TO analytics_jobs_by_status;
             ALTER TABLE analytics_jobs_by_status
                 RENAME CONSTRAINT analytics_jobs_by_status_rebuild_pkey
                 TO analytics_jobs_by_status_pkey;
             ALTER TABLE analytics_tasks_by_status_rebuild RENAME TO analytics_tasks_by_status;
             ALTER TABLE analytics_tasks_by_status
                 RENAME CONSTRAINT analytics_tasks_by_status_rebuild_pkey
                 TO analytics_tasks_by_status_pkey;
             ALTER TABLE analytics_daily_rebuild RENAME TO analytics_daily;
             ALTER TABLE analytics_daily
                 RENAME CONSTRAINT analytics_daily_rebuild_pkey TO analytics_daily_pkey;
             ALTER TABLE analytics_processing_time_rebuild RENAME TO analytics_processing_time;
             ALTER TABLE analytics_processing_time
                 RENAME CONSTRAINT analytics_processing_time_rebuild_pkey
                 TO analytics_processing_time_pkey;
             ALTER TABLE analytics_processing_time_buckets_rebuild
                 RENAME TO analytics_processing_time_buckets;
             ALTER TABLE analytics_processing_time_buckets
                 RENAME CONSTRAINT analytics_processing_time_buckets_rebuild_pkey
                 TO analytics_processing_time_buckets_pkey;
             ALTER TABLE analytics_throughput_rebuild RENAME TO analytics_throughput;
             ALTER TABLE analytics_throughput
                 RENAME CONSTRAINT analytics_throughput_rebuild_pkey TO analytics_throughput_pkey;"
        }
    }
}

/// SQLite: drop any leftover shadows and create empty ones (primary keys only).
pub(crate) const fn sqlite_prepare(projection: ProjectionName) -> &'static str {
    match projection {
        ProjectionName::Jobs => {
            "DROP TABLE IF EXISTS jobs_rebuild;
             DROP TABLE IF EXISTS tasks_rebuild;
             CREATE TABLE jobs_rebuild (
                 id              TEXT PRIMARY KEY,
                 job_type        TEXT NOT NULL,
                 status          TEXT NOT NULL,
                 stream_status   TEXT NOT NULL,
                 total_tasks     INTEGER NOT NULL,
                 created_upto    INTEGER NOT NULL,
                 created         INTEGER NOT NULL,
                 queued          INTEGER NOT NULL,
                 running         INTEGER NOT NULL,
                 completed       INTEGER NOT NULL,
                 failed          INTEGER NOT NULL,
                 retrying        INTEGER NOT NULL,
                 parameters      TEXT NOT NULL,
                 max_attempts    INTEGER NOT NULL,
                 timeout_seconds INTEGER NOT NULL,
                 created_at      TEXT NOT NULL,
                 updated_at      TEXT NOT NULL,
                 started_at      TEXT,
                 completed_at    TEXT,
                 error_message   TEXT,
                 cancel_reason   TEXT,
                 priority        INTEGER NOT NULL DEFAULT 0
             ) STRICT;
             CREATE TABLE tasks_rebuild (
                 id              TEXT PRIMARY KEY,
                 job_id          TEXT NOT NULL,
                 task_index      INTEGER NOT NULL,
                 job_type        TEXT NOT NULL,
                 status          TEXT NOT NULL,
                 attempt         INTEGER NOT NULL,
                 max_attempts    INTEGER NOT NULL,
                 timeout_seconds INTEGER NOT NULL,
                 parameters      TEXT,
                 result          TEXT,
                 error_message   TEXT,
                 worker          TEXT,
                 created_at      TEXT NOT NULL,
                 updated_at      TEXT NOT NULL,
                 started_at      TEXT,
                 completed_at    TEXT,
                 next_attempt_at TEXT,
                 duration_ms     INTEGER,
                 dead_lettered   INTEGER NOT NULL
             ) STRICT;
             DROP TABLE IF EXISTS task_attempts_rebuild;
             CREATE TABLE task_attempts_rebuild (
                 task_id            TEXT NOT NULL,
                 seq                INTEGER NOT NULL,
                 job_id             TEXT NOT NULL,
                 task_index         INTEGER NOT NULL,
                 attempt            INTEGER NOT NULL,
                 queued_us          INTEGER NOT NULL,
                 not_before_us      INTEGER,
                 worker             TEXT,
                 started_us         INTEGER,
                 ended_us           INTEGER,
                 duration_ms        INTEGER,
                 outcome            TEXT NOT NULL,
                 error              TEXT,
                 retry_at_us        INTEGER,
                 retry_not_before_us INTEGER,
                 retry_backoff_ms   INTEGER,
                 retry_manual       INTEGER,
                 dead_letter_reason TEXT,
                 PRIMARY KEY (task_id, seq)
             ) STRICT;"
        }
        ProjectionName::Analytics => {
            "DROP TABLE IF EXISTS analytics_job_state_rebuild;
             DROP TABLE IF EXISTS analytics_jobs_by_type_rebuild;
             DROP TABLE IF EXISTS analytics_jobs_by_status_rebuild;
             DROP TABLE IF EXISTS analytics_tasks_by_status_rebuild;
             DROP TABLE IF EXISTS analytics_daily_rebuild;
             DROP TABLE IF EXISTS analytics_processing_time_rebuild;
             DROP TABLE IF EXISTS analytics_processing_time_buckets_rebuild;
             DROP TABLE IF EXISTS analytics_throughput_rebuild;
             CREATE TABLE analytics_job_state_rebuild (
                 job_id          TEXT PRIMARY KEY,
                 stream_status   TEXT NOT NULL,
                 total_tasks     INTEGER NOT NULL,
                 created_upto    INTEGER NOT NULL,
                 started         INTEGER NOT NULL
             ) STRICT;
             CREATE TABLE analytics_jobs_by_type_rebuild (
                 job_type        TEXT PRIMARY KEY,
                 count           INTEGER NOT NULL
             ) STRICT;
             CREATE TABLE analytics_jobs_by_status_rebuild (
                 status          TEXT PRIMARY KEY,
                 count           INTEGER NOT NULL
             ) STRICT;
             CREATE TABLE analytics_tasks_by_status_rebuild (
                 status          TEXT PRIMARY KEY,
                 count           INTEGER NOT NULL
             ) STRICT;
             CREATE TABLE analytics_daily_rebuild (
                 day             TEXT PRIMARY KEY,
                 jobs_submitted  INTEGER NOT NULL,
                 tasks_completed INTEGER NOT NULL,
                 tasks_failed    INTEGER NOT NULL
             ) STRICT;
             CREATE TABLE analytics_processing_time_rebuild (
                 id              INTEGER PRIMARY KEY CHECK (id = 1),
                 count           INTEGER NOT NULL,
                 sum_ms          INTEGER NOT NULL,
                 min_ms          INTEGER NOT NULL,
                 max_ms          INTEGER NOT NULL
             ) STRICT;
             CREATE TABLE analytics_processing_time_buckets_rebuild (
                 bucket          INTEGER PRIMARY KEY,
                 count           INTEGER NOT NULL
             ) STRICT;
             CREATE TABLE analytics_throughput_rebuild (
                 minute          TEXT PRIMARY KEY,
                 tasks_completed INTEGER NOT NULL,
                 tasks_failed    INTEGER NOT NULL
             ) STRICT;"
        }
    }
}

/// SQLite: the swap, inside the write transaction that also moves the live checkpoint.
pub(crate) const fn sqlite_swap(projection: ProjectionName) -> &'static str {
    match projection {
        ProjectionName::Jobs => {
            "DROP TABLE jobs;
             DROP TABLE tasks;
             ALTER TABLE jobs_rebuild RENAME TO jobs;
             ALTER TABLE tasks_rebuild RENAME TO tasks;
             CREATE INDEX jobs_created_idx ON jobs (created_at, id);
             CREATE INDEX jobs_status_created_idx ON jobs (status, created_at, id);
             CREATE INDEX jobs_type_created_idx ON jobs (job_type, created_at, id);
             CREATE INDEX jobs_priority_created_idx ON jobs (priority, created_at, id);
             CREATE INDEX tasks_job_index_idx ON tasks (job_id, task_index);
             CREATE INDEX tasks_job_status_idx ON tasks (job_id, status, task_index);
             DROP TABLE task_attempts;
             ALTER TABLE task_attempts_rebuild RENAME TO task_attempts;
             CREATE INDEX task_attempts_job_idx ON task_attempts (job_id, task_index, seq);"
        }
        ProjectionName::Analytics => {
            "DROP TABLE analytics_job_state;
             DROP TABLE analytics_jobs_by_type;
             DROP TABLE analytics_jobs_by_status;
             DROP TABLE analytics_tasks_by_status;
             DROP TABLE analytics_daily;
             DROP TABLE analytics_processing_time;
             DROP TABLE analytics_processing_time_buckets;
             DROP TABLE analytics_throughput;
             ALTER TABLE analytics_job_state_rebuild RENAME TO analytics_job_state;
             ALTER TABLE analytics_jobs_by_type_rebuild RENAME TO analytics_jobs_by_type;
             ALTER TABLE analytics_jobs_by_status_rebuild RENAME TO analytics_jobs_by_status;
             ALTER TABLE analytics_tasks_by_status_rebuild RENAME TO analytics_tasks_by_status;
             ALTER TABLE analytics_daily_rebuild RENAME TO analytics_daily;
             ALTER TABLE analytics_processing_time_rebuild RENAME TO analytics_processing_time;
             ALTER TABLE analytics_processing_time_buckets_rebuild
                 RENAME TO analytics_processing_time_buckets;
             ALTER TABLE analytics_throughput_rebuild RENAME TO analytics_throughput;"
        }
    }
}
