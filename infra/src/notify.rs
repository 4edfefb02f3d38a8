//! Postgres LISTEN/NOTIFY, shared by the event log (commits) and the SQL queue (sends).
//!
//! A [`Notifier`] announces after the commit, from a background task on a connection of its
//! own: a NOTIFY inside the writing transaction would hold a cluster-wide lock through the
//! commit's flush and serialize every writer. A [`Listener`] feeds a `watch` channel from
//! LISTEN, reconnecting on failure, and reports a gap (connected late, connection lost) so that
//! its readers look again. Either way a lost notification costs latency, never data: readers
//! also poll.
//!
//! Both tasks start on first use (outside a Tokio runtime they do not start, and readers only
//! poll). They end when their owner is dropped, or when the pool is closed; a listener also
//! ends when its channel has no receiver left, and starts again at the next
//! [`Listener::ensure`].

use std::fmt::Display;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgListener, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Announces the latest value of a `watch` channel on a NOTIFY channel. Cheap to share behind
/// an `Arc`; dropping it ends the task once the last value is announced.
#[derive(Debug)]
pub(crate) struct Notifier<T> {
    pool: PgPool,
    channel: &'static str,
    latest: watch::Sender<T>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl<T> Notifier<T>
where
    T: Display + Send + Sync + 'static,
{
    /// A notifier on `channel`; `initial` is not announced.
    pub fn new(pool: PgPool, channel: &'static str, initial: T) -> Self {
        Notifier {
            pool,
            channel,
            latest: watch::Sender::new(initial),
            task: Mutex::new(None),
        }
    }

    /// Changes the value to announce (`update` returns whether that is news) and announces it.
    /// Announcements that come faster than a round trip are coalesced into the latest value.
    pub fn announce(&self, update: impl FnOnce(&mut T) -> bool) {
        if !self.latest.send_if_modified(update) {
            return;
        }
        ensure_task(&self.task, || {
            let mut latest = self.latest.subscribe();
            // Announce the current value too: it may have been raised before this task ran.
            latest.mark_changed();
            announce(self.pool.clone(), self.channel, latest)
        });
    }
}

/// Feeds a `watch` channel from LISTEN on a NOTIFY channel.
#[derive(Debug, Default)]
pub(crate) struct Listener {
    task: Mutex<Option<JoinHandle<()>>>,
}

/// What a [`Listener`] heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard<'a> {
    /// A notification with this payload.
    Payload(&'a str),
    /// Notifications may have been missed (LISTEN took effect only now, or the connection was
    /// lost): readers should look again.
    Gap,
}

impl Listener {
    /// Starts listening on `channel` unless the task runs already. `hear` applies what was
    /// heard to the signal's value and returns whether its receivers should wake.
    pub fn ensure<S, F>(
        &self,
        pool: &PgPool,
        channel: &'static str,
        signal: &watch::Sender<S>,
        hear: F,
    ) where
        S: Send + Sync + 'static,
        F: Fn(&mut S, Heard<'_>) -> bool + Send + 'static,
    {
        ensure_task(&self.task, || {
            listen(pool.clone(), channel, signal.clone(), hear)
        });
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

/// Starts a background task in `slot` unless one is running. Outside a Tokio runtime it does
/// nothing.
fn ensure_task<F>(slot: &Mutex<Option<JoinHandle<()>>>, task: impl FnOnce() -> F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if slot.as_ref().is_some_and(|running| !running.is_finished()) {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        *slot = Some(runtime.spawn(task()));
    }
}

/// Announces each new value of `latest` with NOTIFY. Ends when the notifier is dropped.
async fn announce<T: Display>(pool: PgPool, channel: &'static str, mut latest: watch::Receiver<T>) {
    let mut conn: Option<PgConnection> = None;
    while latest.changed().await.is_ok() {
        let payload = latest.borrow_and_update().to_string();
        for attempt in 1..=2 {
            if conn.is_none() {
                match connect_notifier(&pool).await {
                    Ok(connected) => conn = Some(connected),
                    Err(error) => {
                        tracing::warn!(%error, channel, "cannot NOTIFY; readers will poll");
                        break;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { break };
            match sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(&payload)
                .execute(&mut *c)
                .await
            {
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, channel, attempt, "a NOTIFY failed; readers will poll");
                    conn = None;
                }
            }
        }
    }
}

async fn connect_notifier(pool: &PgPool) -> Result<PgConnection, sqlx::Error> {
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    // A NOTIFY takes a cluster-wide lock at commit and holds it until its commit record is
    // flushed. It announces rows that are already durable, so it need not wait for a flush.
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// Feeds `signal` from LISTEN while it has receivers, reconnecting on failure.
async fn listen<S, F>(pool: PgPool, channel: &'static str, signal: watch::Sender<S>, hear: F)
where
    F: Fn(&mut S, Heard<'_>) -> bool,
{
    let mut listener: Option<PgListener> = None;
    loop {
        let Some(active) = listener.as_mut() else {
            let connect = async {
                let mut connected = PgListener::connect_with(&pool).await?;
                connected.listen(channel).await?;
                Ok::<_, sqlx::Error>(connected)
            };
            tokio::select! {
                () = signal.closed() => return,
                connected = connect => match connected {
                    Ok(connected) => {
                        listener = Some(connected);
                        // What was announced before LISTEN took effect was missed.
                        signal.send_if_modified(|s| hear(s, Heard::Gap));
                    }
                    Err(sqlx::Error::PoolClosed) => return,
                    Err(error) => {
                        tracing::warn!(%error, channel, "cannot LISTEN; readers will poll");
                        tokio::select! {
                            () = signal.closed() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                },
            }
            continue;
        };
        tokio::select! {
            () = signal.closed() => return,
            received = active.try_recv() => match received {
                Ok(Some(notification)) => {
                    signal.send_if_modified(|s| hear(s, Heard::Payload(notification.payload())));
                }
                // The connection was lost (it reconnects on the next call): a gap.
                Ok(None) => {
                    signal.send_if_modified(|s| hear(s, Heard::Gap));
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(error) => {
                    tracing::warn!(%error, channel, "lost the LISTEN connection; reconnecting");
                    listener = None;
                }
            },
        }
    }
}
