-- An attempt row is inserted when its task starts and updated when it ends, usually within
-- moments. With full pages (the default fill factor, 100) the update finds no room beside the
-- row and writes the new version elsewhere, with a new entry in both indexes. Pages filled to
-- half leave that room, so the update is a heap-only tuple (HOT) update: no index entry, less
-- WAL (docs/benchmarks.md, "Issue 15: what this session changed"). It applies to pages filled
-- from now on; a rebuild's swap sets it again on the swapped-in table.
ALTER TABLE task_attempts SET (fillfactor = 50);
