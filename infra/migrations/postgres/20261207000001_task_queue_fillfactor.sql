-- A claim rewrites its row (visible_at, receive_count, receipt): never a HOT update, since
-- visible_at and receive_count are indexed. With pages filled to the brim, the new version goes
-- to another page, and before moving there the database marks the old one locked and logs that
-- (a Heap/LOCK record per claim, on top of the claim's own row lock). With pages filled to half,
-- the new version fits beside the old one.
ALTER TABLE task_queue SET (fillfactor = 50);
