//! What the projector tells the read side after each commit: which rows of the read tables
//! changed. The projector sends these, the query API's subscriptions receive them; the type
//! lives here, beside the tables it describes, so neither role depends on the other.

use std::sync::Arc;

use shoal_domain::{JobId, TaskId};
use tokio::sync::broadcast;

use super::ProjectionName;
use crate::eventlog::LogPosition;

/// What one committed batch (or a rebuild's swap) changed, broadcast after the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionChange {
    pub projection: ProjectionName,
    /// The projection's checkpoint after the commit.
    pub position: LogPosition,
    /// Jobs whose `jobs` row changed (jobs projection).
    pub jobs: Vec<JobId>,
    /// Tasks whose `tasks` row changed, with their job (jobs projection).
    pub tasks: Vec<(JobId, TaskId)>,
    /// An analytics counter changed (analytics projection).
    pub analytics: bool,
    /// The projection's tables were replaced by a rebuild: everything may have changed.
    pub rebuilt: bool,
}

/// Something that announces [`ProjectionChange`]s: the projector of this process.
pub trait ChangeSource: Send + Sync {
    /// A receiver of every change committed from now on. A receiver that falls behind gets
    /// `Lagged` and should re-read what it shows.
    fn subscribe(&self) -> broadcast::Receiver<Arc<ProjectionChange>>;
}
