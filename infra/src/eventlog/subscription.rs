//! The subscription loop both backends share: read in batches; when caught up, wait for a
//! commit signal or the poll timer, whichever comes first.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};

use super::{EventStream, LogPosition, LogResult, RecordedEvent};

/// What a backend tells its subscriptions about commits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CommitSignal {
    /// The highest `LogPosition::commit` known to hold committed events.
    pub max_commit: i64,
    /// Bumped when commits may have gone unannounced (a lost LISTEN connection, a payload that
    /// is not ours): subscriptions re-read.
    pub resync: u64,
}

impl CommitSignal {
    /// Records a commit; true if that is news.
    pub fn raise(&mut self, commit: i64) -> bool {
        let news = commit > self.max_commit;
        self.max_commit = self.max_commit.max(commit);
        news
    }

    /// Records that commits may have gone unannounced; always news.
    pub fn resync(&mut self) -> bool {
        self.resync += 1;
        true
    }
}

/// While a commit we were told about is not readable yet (on Postgres: an older transaction is
/// still running, and readers stay below it), re-read on this backoff instead of waiting for
/// the next signal, which may never come: the older transaction need not be an append.
const CATCH_UP_FIRST: Duration = Duration::from_millis(1);
const CATCH_UP_MAX: Duration = Duration::from_millis(50);

struct State<R, E> {
    read: R,
    ensure_signal: E,
    signal: watch::Receiver<CommitSignal>,
    after: LogPosition,
    batch_size: i64,
    poll: Duration,
    buffer: VecDeque<RecordedEvent>,
    backoff: Duration,
    failed: bool,
}

/// A subscription from `after`. `read` is the backend's `read_all`; `ensure_signal` is called
/// before each wait so the backend can (re)start whatever feeds `signal`.
pub(crate) fn subscription<R, F, E>(
    read: R,
    ensure_signal: E,
    signal: watch::Receiver<CommitSignal>,
    after: LogPosition,
    batch_size: i64,
    poll: Duration,
) -> EventStream
where
    R: Fn(LogPosition, i64) -> F + Send + 'static,
    F: Future<Output = LogResult<Vec<RecordedEvent>>> + Send,
    E: Fn() + Send + 'static,
{
    let state = State {
        read,
        ensure_signal,
        signal,
        after,
        batch_size: batch_size.max(1),
        poll,
        buffer: VecDeque::new(),
        backoff: CATCH_UP_FIRST,
        failed: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(event) = st.buffer.pop_front() {
                return Some((Ok(event), st));
            }
            if st.failed {
                st.failed = false;
                sleep(st.poll).await;
            }
            (st.ensure_signal)();
            // Taken before reading, so a commit that lands during the read is noticed.
            let seen = *st.signal.borrow_and_update();
            match (st.read)(st.after, st.batch_size).await {
                Err(error) => {
                    st.failed = true;
                    return Some((Err(error), st));
                }
                Ok(events) => {
                    if let Some(last) = events.last() {
                        st.after = last.log_position;
                        st.buffer.extend(events);
                        st.backoff = CATCH_UP_FIRST;
                        continue;
                    }
                }
            }
            if seen.max_commit > st.after.commit {
                sleep(st.backoff.min(st.poll)).await;
                st.backoff = (st.backoff * 2).min(CATCH_UP_MAX);
                continue;
            }
            st.backoff = CATCH_UP_FIRST;
            wait_for_news(&mut st.signal, seen, st.after, st.poll).await;
        }
    }))
}

/// Waits until a signal says there may be something after `after`, or `poll` has passed.
async fn wait_for_news(
    signal: &mut watch::Receiver<CommitSignal>,
    seen: CommitSignal,
    after: LogPosition,
    poll: Duration,
) {
    let deadline = Instant::now() + poll;
    loop {
        tokio::select! {
            changed = signal.changed() => {
                if changed.is_err() {
                    // No one signals any more: poll only.
                    sleep_until(deadline).await;
                    return;
                }
                let now = *signal.borrow_and_update();
                if now.resync != seen.resync || now.max_commit > after.commit {
                    return;
                }
                // An announcement of something already read (our own NOTIFY coming back).
            }
            () = sleep_until(deadline) => return,
        }
    }
}
