//! Projections: folds the event log into the read tables (jobs, tasks, analytics), in batches,
//! each batch committed with its checkpoint, so a crash replays at most one batch and the result
//! equals a full replay. Rebuilds replay the whole log into fresh tables and swap them in.
//!
//! It never appends events and never makes decisions.
