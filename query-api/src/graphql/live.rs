//! Subscriptions, fed by the projector's commit notifications and coalesced (see the module
//! docs of [`super`]).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Context, ErrorExtensions, ID, Subscription};
use futures::Stream;
use shoal_domain::{JobId, TaskId};
use shoal_infra::readmodel::{ProjectionChange, ProjectionName, ReadModelStore};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use super::types::{AnalyticsOverview, Job, JobsChange, Task, TaskUpdates};
use super::{LiveConfig, internal, internal_error, parse_job_id, read};

/// Most job ids one `jobsChanged` message lists.
const MAX_JOB_IDS: usize = 1000;
/// Most tasks one `taskUpdated` message carries.
const MAX_TASKS: usize = 100;

/// What changed during one window, as far as one subscription cares.
#[derive(Debug, Default)]
struct Changed {
    jobs: BTreeSet<JobId>,
    tasks: HashSet<TaskId>,
    /// The subscriber missed notifications, or a rebuild replaced the tables.
    everything: bool,
    any: bool,
}

/// Collects notifications into windows: a window opens with the first relevant change and is
/// sent at once if the previous message is at least `interval` old, else when it is.
struct Coalescer {
    rx: broadcast::Receiver<Arc<ProjectionChange>>,
    interval: Duration,
    last: Option<Instant>,
    /// This subscription's place among its connection's (released when it ends).
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// How many subscriptions one WebSocket connection may have at once: put one per connection
/// in its connection data (`GraphQLWebSocket::with_data`). Without it, no limit applies.
#[derive(Debug, Clone)]
pub struct SubscriptionSlots {
    slots: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl SubscriptionSlots {
    pub fn new(max: usize) -> Self {
        SubscriptionSlots {
            slots: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
        }
    }

    fn take(&self) -> async_graphql::Result<tokio::sync::OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            async_graphql::Error::new(format!(
                "this connection has reached its limit of {} subscriptions \
                 (--ws-max-subscriptions): complete one first, or open another connection",
                self.max
            ))
            .extend_with(|_, e| e.set("code", TOO_MANY_SUBSCRIPTIONS))
        })
    }
}

/// `extensions.code` of a subscription refused by [`SubscriptionSlots`].
pub const TOO_MANY_SUBSCRIPTIONS: &str = "TOO_MANY_SUBSCRIPTIONS";

type Accept = dyn Fn(&ProjectionChange, &mut Changed) + Send + Sync;

impl Coalescer {
    /// A coalescer for a subscription of `ctx`'s connection; refused when the connection has
    /// as many subscriptions as its [`SubscriptionSlots`] allow.
    fn new(ctx: &Context<'_>) -> async_graphql::Result<Self> {
        let live = live(ctx)?;
        let slot = ctx
            .data_opt::<SubscriptionSlots>()
            .map(SubscriptionSlots::take)
            .transpose()?;
        Ok(Coalescer {
            rx: live.feed.subscribe(),
            interval: live.min_interval,
            last: None,
            _slot: slot,
        })
    }

    /// The next window; `None` when the feed has closed.
    async fn next(&mut self, accept: &Accept) -> Option<Changed> {
        let mut changed = Changed::default();
        while !changed.any {
            match self.rx.recv().await {
                Ok(change) => accept(&change, &mut changed),
                Err(RecvError::Lagged(_)) => {
                    changed.everything = true;
                    changed.any = true;
                }
                Err(RecvError::Closed) => return None,
            }
        }
        if let Some(due) = self.last.map(|last| last + self.interval)
            && due > Instant::now()
        {
            let sleep = tokio::time::sleep_until(due);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    received = self.rx.recv() => match received {
                        Ok(change) => accept(&change, &mut changed),
                        Err(RecvError::Lagged(_)) => changed.everything = true,
                        Err(RecvError::Closed) => break,
                    },
                }
            }
        }
        self.last = Some(Instant::now());
        Some(changed)
    }
}

fn rebuilt(change: &ProjectionChange, projection: ProjectionName) -> bool {
    change.rebuilt && change.projection == projection
}

/// The live subscriptions.
#[derive(Debug, Default)]
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// The job, at once (when the projector has it) and again whenever it or one of its
    /// tasks changes, at most `--subscription-max-rate` messages per second (20 by default) (the latest state each time).
    async fn job_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Job>> + use<>> {
        let job_id = parse_job_id(&id, "id")?;
        let store = read(ctx)?.store.clone();
        let coalescer = Coalescer::new(ctx)?;
        let accept = move |change: &ProjectionChange, changed: &mut Changed| {
            if rebuilt(change, ProjectionName::Jobs)
                || change.jobs.contains(&job_id)
                || change.tasks.iter().any(|(job, _)| *job == job_id)
            {
                changed.any = true;
            }
        };
        let state = (
            coalescer,
            store,
            true,
            None::<shoal_infra::readmodel::JobRow>,
        );
        Ok(futures::stream::unfold(
            state,
            move |(mut coalescer, store, first, last)| async move {
                let mut first = first;
                loop {
                    if !first {
                        coalescer.next(&accept).await?;
                    }
                    first = false;
                    match store.get_job(job_id).await {
                        // Only when something a client sees changed.
                        Ok(Some(row)) if last.as_ref() != Some(&row) => {
                            let job = Job(row.clone(), None);
                            return Some((Ok(job), (coalescer, store, false, Some(row))));
                        }
                        Ok(_) => {}
                        Err(error) => {
                            return Some((Err(internal(error)), (coalescer, store, false, last)));
                        }
                    }
                }
            },
        ))
    }

    /// Which jobs changed, at most `--subscription-max-rate` messages per second (20 by default).
    async fn jobs_changed(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = JobsChange> + use<>> {
        let coalescer = Coalescer::new(ctx)?;
        let accept = |change: &ProjectionChange, changed: &mut Changed| {
            if change.projection != ProjectionName::Jobs {
                return;
            }
            if change.rebuilt {
                changed.everything = true;
                changed.any = true;
            }
            let from_tasks = change.tasks.iter().map(|(job, _)| *job);
            for job in change.jobs.iter().copied().chain(from_tasks) {
                changed.any = true;
                if changed.jobs.len() < MAX_JOB_IDS {
                    changed.jobs.insert(job);
                } else if !changed.jobs.contains(&job) {
                    changed.everything = true;
                }
            }
        };
        Ok(futures::stream::unfold(
            coalescer,
            move |mut coalescer| async move {
                let changed = coalescer.next(&accept).await?;
                let change = JobsChange {
                    job_ids: changed.jobs.iter().map(|j| ID(j.to_string())).collect(),
                    everything: changed.everything,
                };
                Some((change, coalescer))
            },
        ))
    }

    /// Tasks of the job that changed, in their latest state, at most `--subscription-max-rate` messages
    /// per second (20 by default; each with up to 100 tasks).
    async fn task_updated(
        &self,
        ctx: &Context<'_>,
        job_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<TaskUpdates>> + use<>> {
        let job = parse_job_id(&job_id, "jobId")?;
        let store = read(ctx)?.store.clone();
        let coalescer = Coalescer::new(ctx)?;
        let accept = move |change: &ProjectionChange, changed: &mut Changed| {
            if rebuilt(change, ProjectionName::Jobs) {
                changed.everything = true;
                changed.any = true;
            }
            for (_, task) in change.tasks.iter().filter(|(j, _)| *j == job) {
                changed.any = true;
                if changed.tasks.len() <= MAX_TASKS {
                    changed.tasks.insert(*task);
                }
            }
        };
        Ok(futures::stream::unfold(
            (coalescer, store),
            move |(mut coalescer, store)| async move {
                let changed = coalescer.next(&accept).await?;
                let truncated = changed.everything || changed.tasks.len() > MAX_TASKS;
                let result = task_rows(&store, changed.tasks.iter().take(MAX_TASKS)).await;
                let item = result.map(|mut tasks| {
                    tasks.sort_by_key(|t| t.0.task_index);
                    TaskUpdates {
                        job_id: ID(job.to_string()),
                        tasks,
                        truncated,
                    }
                });
                Some((item, (coalescer, store)))
            },
        ))
    }

    /// The analytics overview, at once and whenever a counter changes, at most `LiveConfig`
    /// messages per second.
    async fn analytics_updated(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<AnalyticsOverview>> + use<>>
    {
        let store = read(ctx)?.store.clone();
        let coalescer = Coalescer::new(ctx)?;
        let accept = |change: &ProjectionChange, changed: &mut Changed| {
            if change.projection == ProjectionName::Analytics
                && (change.analytics || change.rebuilt)
            {
                changed.any = true;
            }
        };
        Ok(futures::stream::unfold(
            (coalescer, store, true),
            move |(mut coalescer, store, first)| async move {
                if !first {
                    coalescer.next(&accept).await?;
                }
                let item = store
                    .overview()
                    .await
                    .map(AnalyticsOverview::from)
                    .map_err(internal);
                Some((item, (coalescer, store, false)))
            },
        ))
    }
}

async fn task_rows(
    store: &ReadModelStore,
    ids: impl Iterator<Item = &TaskId>,
) -> async_graphql::Result<Vec<Task>> {
    let mut tasks = Vec::new();
    for id in ids {
        if let Some(row) = store.get_task(*id).await.map_err(internal)? {
            tasks.push(Task(row, None));
        }
    }
    Ok(tasks)
}

fn live<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a LiveConfig> {
    ctx.data::<LiveConfig>().map_err(|_| {
        tracing::error!("the GraphQL schema has no LiveConfig in its context data");
        internal_error()
    })
}
