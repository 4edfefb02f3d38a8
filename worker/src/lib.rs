//! The worker runtime: receives task messages from a queue, appends `TaskStarted`, runs the
//! task's handler, appends `TaskCompleted` or `TaskFailed`, and only then acknowledges the
//! message. Built-in handlers and a library API to register your own.
//!
//! It never changes a task except through events appended with an expected version, so a
//! duplicate delivery can never complete a task twice.
