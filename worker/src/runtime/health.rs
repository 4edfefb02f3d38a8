//! Whether the event log answers, as the worker last saw it.
//!
//! While the log fails, receiving more messages would only hide them and use up their receive
//! budget: the receive loop stops and probes the log instead, and deliveries that hit the
//! failure keep their messages (the heartbeat extends them) and wait here until the log
//! answers again, then carry on where they stopped.

use std::time::Duration;

use tokio::sync::watch;

/// The first pause after a failure; it doubles up to [`MAX_BACKOFF`].
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between two tries while the log fails.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The log's health: healthy until an operation fails, healthy again once one succeeds.
#[derive(Debug)]
pub(super) struct LogHealth {
    healthy: watch::Sender<bool>,
}

impl Default for LogHealth {
    fn default() -> Self {
        LogHealth {
            healthy: watch::Sender::new(true),
        }
    }
}

impl LogHealth {
    pub(super) fn is_healthy(&self) -> bool {
        *self.healthy.borrow()
    }

    /// An operation on the log failed (an infrastructure error, not a conflict).
    pub(super) fn failed(&self) {
        self.healthy.send_if_modified(|healthy| {
            let changed = *healthy;
            if changed {
                tracing::warn!("the event log fails: holding messages and not receiving more");
            }
            *healthy = false;
            changed
        });
    }

    /// An operation on the log succeeded.
    pub(super) fn succeeded(&self) {
        self.healthy.send_if_modified(|healthy| {
            let changed = !*healthy;
            if changed {
                tracing::info!("the event log answers again: resuming");
            }
            *healthy = true;
            changed
        });
    }

    /// Waits until the log is healthy again or `backoff` has passed, whichever comes first
    /// (a holder then tries again itself: its own success is also a sign of health).
    pub(super) async fn wait(&self, backoff: Duration) {
        let mut healthy = self.healthy.subscribe();
        let _ = tokio::time::timeout(backoff, healthy.wait_for(|h| *h)).await;
    }
}

/// The pause after `previous` (zero at first), doubling from [`FIRST_BACKOFF`] to
/// [`MAX_BACKOFF`].
pub(super) fn next_backoff(previous: Duration) -> Duration {
    (previous * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF)
}
