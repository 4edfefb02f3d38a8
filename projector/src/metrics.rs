//! How far each projection is behind the log, at scrape time: in events, and in seconds since
//! the oldest event it has not applied yet was recorded (0 when caught up).

use chrono::Utc;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use shoal_infra::telemetry::metrics::ScrapeSource;
use shoal_infra::telemetry::prometheus_client;

use crate::Projector;

/// The projector's lag per projection, as `shoal_projector_lag_events{projection}` and
/// `shoal_projector_lag_seconds{projection}`.
#[derive(Debug, Clone)]
pub struct LagSource(pub Projector);

type ByProjection<G> = Family<[(&'static str, &'static str); 1], G>;

#[async_trait::async_trait]
impl ScrapeSource for LagSource {
    async fn collect(&self, registry: &mut Registry) {
        let statuses = match self.0.status().await {
            Ok(statuses) => statuses,
            Err(error) => {
                tracing::warn!(%error, "cannot read the projections' checkpoints for /metrics");
                return;
            }
        };
        let events = ByProjection::<Gauge>::default();
        let seconds = ByProjection::<Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let skipped = ByProjection::<Gauge>::default();
        let parked = ByProjection::<Gauge>::default();
        for status in statuses {
            let labels = [("projection", status.name.as_str())];
            events
                .get_or_create(&labels)
                .set(i64::try_from(status.lag_events).unwrap_or(i64::MAX));
            skipped
                .get_or_create(&labels)
                .set(i64::try_from(status.skipped_events).unwrap_or(i64::MAX));
            parked
                .get_or_create(&labels)
                .set(i64::try_from(status.parked_events).unwrap_or(i64::MAX));
            let behind = match self.0.inner.log.read_all(status.checkpoint, 1).await {
                Ok(next) => next.first().map_or(0.0, |event| {
                    (Utc::now() - event.recorded_at)
                        .to_std()
                        .unwrap_or_default()
                        .as_secs_f64()
                }),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the log for the projector's lag");
                    continue;
                }
            };
            seconds.get_or_create(&labels).set(behind);
        }
        registry.register(
            "shoal_projector_lag_events",
            "Events in the log that a projection has not applied yet",
            events,
        );
        registry.register_with_unit(
            "shoal_projector_lag",
            "Age of the oldest event a projection has not applied yet (0 when caught up)",
            Unit::Seconds,
            seconds,
        );
        registry.register(
            "shoal_projector_skipped_events",
            "Events this process skipped because it could not decode them",
            skipped,
        );
        registry.register(
            "shoal_projector_parked_events",
            "Events a projection left out because the database refused their effect (ADR 0012)",
            parked,
        );
    }
}
