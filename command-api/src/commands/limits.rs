//! The cluster-wide limits: set one (a `LimitSet` in the stream `limits`, with its actor), and
//! read them all as that stream tells.

use chrono::Utc;
use shoal_domain::admission::{LimitTable, SetLimit, decide_set_limit};
use shoal_domain::ids::LIMITS_STREAM;
use shoal_domain::{Event, events::LimitKind};
use shoal_infra::eventlog::{AppendBatch, ExpectedVersion, LogError, StreamAppend};

use super::streams::encode_all;
use super::{CONFLICT_ATTEMPTS, CommandError, CommandService};

impl CommandService {
    /// Sets, changes or removes (both values `None`) the concurrency and rate limit of a job
    /// type or a concurrency key; returns the limits now in force. The orchestrator applies it
    /// to the tasks it admits from then on.
    #[tracing::instrument(name = "command.set_limit", skip_all, fields(?kind, %name))]
    pub async fn set_limit(
        &self,
        kind: LimitKind,
        name: String,
        max_concurrency: Option<i64>,
        rate_per_second: Option<f64>,
    ) -> Result<LimitTable, CommandError> {
        let events = decide_set_limit(SetLimit {
            kind,
            name,
            max_concurrency,
            rate_per_second,
            now: Utc::now(),
        })?;
        for _ in 0..CONFLICT_ATTEMPTS {
            let (mut table, version) = self.read_limits().await?;
            let batch = AppendBatch {
                streams: vec![StreamAppend {
                    stream_id: LIMITS_STREAM.to_owned(),
                    expected: ExpectedVersion::Exact(version),
                    events: encode_all(&events, "set_limit", self.actor()),
                }],
                ..AppendBatch::default()
            };
            match self.log().append(batch).await {
                Ok(_) => {
                    for event in &events {
                        table.apply(event);
                    }
                    return Ok(table);
                }
                Err(LogError::Conflict { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(CommandError::Conflict)
    }

    /// The limits in force, and the version of the stream `limits`.
    pub async fn read_limits(&self) -> Result<(LimitTable, i64), CommandError> {
        let records = self.log().read_stream(LIMITS_STREAM, 0).await?;
        let version = records.last().map_or(0, |r| r.stream_version);
        let mut table = LimitTable::default();
        for record in &records {
            if let Ok(event) =
                Event::decode(&record.event_type, record.schema_version, record.data.get())
            {
                table.apply(&event);
            }
        }
        Ok((table, version))
    }
}
