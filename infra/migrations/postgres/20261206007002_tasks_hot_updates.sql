-- A task's row is written when it is enqueued and updated when it starts and when it ends. Each
-- of those updates changes `status`, which `tasks_job_status_idx` indexed: so no update could be
-- a heap-only tuple (HOT) update, and each wrote a new entry into all three indexes of the table
-- (and its WAL). Without that index, and with pages filled to half so that a row's new version
-- fits beside it, both updates are HOT: no index entry at all. Measured on the peers' benchmark
-- (docs/benchmarks.md, "Issue 15: the sixth session"): 1.16-1.22x tasks/s, 0.78-0.85x CPU per
-- task, 0.83-0.90x WAL per task.
--
-- What the index served: a job's tasks filtered by status (the dashboard's task table, REST
-- `GET /jobs/{id}/tasks?status=`). They now walk the job's tasks in index order
-- (`tasks_job_index_idx`) and keep those of the status; the figures for a 100,000-task job are
-- in docs/benchmarks.md too.
DROP INDEX tasks_job_status_idx;
ALTER TABLE tasks SET (fillfactor = 50);
