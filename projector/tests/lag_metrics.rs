//! The projector's lag as Prometheus shows it: events and seconds behind, per projection,
//! moving back to zero as the projector catches up.

// Integration tests: helpers outside `#[test]` functions unwrap too; a failure fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use shoal_infra::telemetry::metrics::{ScrapeSource, render};
use shoal_projector::metrics::LagSource;
use shoal_projector::{Projector, ProjectorConfig};
use support::{Backend, write_log};

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

async fn lag_moves(backend: Backend) {
    let events = write_log(backend.log.as_ref(), &[(0, 0, 3), (1, 0, 2), (3, 0, 0)]).await;
    backend.settle().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let projector = Projector::new(
        ProjectorConfig::default(),
        backend.log.clone(),
        backend.database.clone(),
    );
    let sources: Vec<Arc<dyn ScrapeSource>> = vec![Arc::new(LagSource(projector.clone()))];
    let before = render(&sources).await;
    for projection in ["jobs", "analytics"] {
        let lag_events = format!("shoal_projector_lag_events{{projection=\"{projection}\"}}");
        assert_eq!(
            sample(&before, &lag_events),
            Some(events.len() as f64),
            "{before}"
        );
        let lag_seconds = format!("shoal_projector_lag_seconds{{projection=\"{projection}\"}}");
        assert!(
            sample(&before, &lag_seconds).is_some_and(|s| s >= 0.05),
            "the oldest unapplied event is at least 50 ms old:\n{before}"
        );
    }
    projector.catch_up().await.unwrap();
    let after = render(&sources).await;
    for projection in ["jobs", "analytics"] {
        for series in ["lag_events", "lag_seconds"] {
            let name = format!("shoal_projector_{series}{{projection=\"{projection}\"}}");
            assert_eq!(sample(&after, &name), Some(0.0), "{after}");
        }
    }
}

#[tokio::test]
async fn lag_moves_to_zero_as_the_projector_catches_up_sqlite() {
    lag_moves(Backend::sqlite().await).await;
}

#[tokio::test]
async fn lag_moves_to_zero_as_the_projector_catches_up_postgres() {
    if let Some(backend) = Backend::postgres().await {
        lag_moves(backend).await;
    }
}
