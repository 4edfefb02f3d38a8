//! The cluster-wide limits as both schemas show them (`setLimit` answers them, `limits` lists
//! them): one definition, so the combined schema has one `Limit`.

use async_graphql::{Enum, SimpleObject};
use chrono::{DateTime, Utc};
use shoal_domain::admission::LimitTable;

/// What a limit applies to.
#[derive(Debug, Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "LimitKind", remote = "shoal_domain::events::LimitKind")]
pub enum LimitKind {
    /// Every task of the jobs of one job type.
    JobType,
    /// Every task of the jobs whose concurrency key is `name` (`*`: each key on its own).
    Key,
}

/// A cluster-wide concurrency and rate limit, enforced when the orchestrator admits tasks to
/// the queue (see docs/limits-and-rates.md).
#[derive(Debug, Clone, PartialEq, SimpleObject)]
#[graphql(name = "Limit")]
pub struct Limit {
    /// What it applies to.
    pub kind: LimitKind,
    /// The job type, or the key (`*`: every key, each on its own).
    pub name: String,
    /// Most tasks admitted and not ended at once; null: no concurrency limit.
    pub max_concurrency: Option<u32>,
    /// Most tasks admitted per second; null: no rate limit.
    pub rate_per_second: Option<f64>,
    /// When it was last set.
    pub set_at: DateTime<Utc>,
}

/// Every limit of the table, by kind then name.
pub fn limits_of(table: &LimitTable) -> Vec<Limit> {
    table
        .iter()
        .map(|(kind, name, values, at)| Limit {
            kind: kind.into(),
            name: name.to_owned(),
            max_concurrency: values.max_concurrency,
            rate_per_second: values.rate_per_second,
            set_at: at,
        })
        .collect()
}
