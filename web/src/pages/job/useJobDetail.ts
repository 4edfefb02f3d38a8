import { useEffect, useRef, useState } from 'react';
import { useQuery, type CombinedError } from 'urql';
import {
  HISTORY_QUERY,
  JOB_QUERY,
  JOB_UPDATED,
  type JobDetail,
  type JobHistory,
} from '../../lib/queries';
import { useLiveRefresh } from '../../lib/live';
import { useTrailingThrottle } from '../../lib/throttle';
import { useNow } from '../../lib/useNow';
import {
  addSample,
  etaSeconds,
  progressOf,
  throughputPerSecond,
  type Sample,
} from '../../lib/progress';
import type { JobStatus, TaskTableState } from '../../lib/urlState';

/** Tasks in a page of the task table. */
export const TASK_PAGE = 50;
/** Events the history shows at first, and adds with each "Show more events". */
const HISTORY_PAGE = 100;
/** Events the history shows at most. */
export const HISTORY_MAX = 1000;
const HISTORY_REFRESH_MS = 3_000;
const NOT_FOUND_AFTER_MS = 10_000;
const LIVE = new Set<JobStatus>(['PENDING', 'CREATING_TASKS', 'ENQUEUED', 'RUNNING']);

/** How fast a job goes: throughput and ETA while it is live, and how long it has run. */
export interface Pace {
  isLive: boolean;
  /** Tasks ended per second; null when unknown or when the job is over. */
  rate: number | null;
  /** Seconds until every task has ended; null when unknown or when the job is over. */
  eta: number | null;
  /** Seconds since the job started (until it completed); null before it started. */
  elapsed: number | null;
}

/** Which events the history shows, in which order. */
export interface HistoryFilter {
  newestFirst: boolean;
  /** One event type, or null for all. */
  eventType: string | null;
  /** One task's events, or null for all. */
  taskIndex: number | null;
}

export interface HistoryState {
  history: JobHistory | undefined;
  filter: HistoryFilter;
  setFilter: (filter: HistoryFilter) => void;
  error: CombinedError | undefined;
  /** Whether "Show more events" can load more (false at HISTORY_MAX). */
  canShowMore: boolean;
  showMore: () => void;
}

export interface JobDetailState {
  /** undefined while loading; null when there is no such job (yet). As of `asOf` if set. */
  job: JobDetail | null | undefined;
  /** The job now (the scrubber's bounds), whatever `asOf` is. */
  liveJob: JobDetail | null | undefined;
  /** The job as of `asOf` is being read (the page shows the previous one meanwhile). */
  travelling: boolean;
  /** The job had not been submitted at `asOf`. */
  notYet: boolean;
  error: CombinedError | undefined;
  fetching: boolean;
  /** The job did not show up within NOT_FOUND_AFTER_MS: there is none with this id. */
  gaveUp: boolean;
  /** Re-reads the job now, and its history unless it was read a moment ago. */
  refresh: () => void;
  history: HistoryState;
  /** The live job's pace (its actions depend on it). */
  pace: Pace | null;
  /** The pace of the job as shown: as of `asOf` when set. */
  shownPace: Pace | null;
}

/**
 * The job page's data: the job with one page of its tasks (`table`), its event history, kept
 * live by `jobUpdated(id)`, and its throughput and ETA sampled from the changing counts.
 */
export function useJobDetail(
  id: string,
  table: TaskTableState,
  asOf: string | null = null,
): JobDetailState {
  const page = {
    id,
    first: TASK_PAGE,
    after: table.cursors[table.cursors.length - 1] ?? null,
    status: table.status ? [table.status] : null,
  };
  const [result, reexecute] = useQuery({
    query: JOB_QUERY,
    variables: { ...page, asOf: null },
  });
  // The past does not change: read once per instant, never refreshed.
  const [past] = useQuery({ query: JOB_QUERY, variables: { ...page, asOf }, pause: !asOf });
  const lastPast = useRef<JobDetail | null | undefined>(undefined);
  if (past.data && !past.fetching) lastPast.current = past.data.job;
  const history = useJobHistory(id, asOf);

  const refresh = () => {
    reexecute({ requestPolicy: 'network-only' });
    history.refreshThrottled();
  };
  useLiveRefresh(JOB_UPDATED, { id }, refresh);

  // The read model is a few ms behind a submission: retry until the job shows up, for a while.
  const [firstLook] = useState(() => Date.now());
  const gaveUp = result.data?.job === null && Date.now() - firstLook > NOT_FOUND_AFTER_MS;
  useEffect(() => {
    if (result.fetching || result.error || result.data?.job !== null || gaveUp) return;
    const t = setTimeout(refresh, 500);
    return () => clearTimeout(t);
  });

  const liveJob = result.data?.job;
  const job = asOf ? (past.data?.job ?? lastPast.current ?? liveJob) : liveJob;
  // The history shows the status changes: read it again when the status changes.
  const status = job?.status;
  useEffect(() => {
    if (status) history.refresh();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [status]);

  const pace = usePace(liveJob);
  return {
    job,
    liveJob,
    travelling: Boolean(asOf) && past.fetching,
    notYet: Boolean(asOf) && past.data?.job === null,
    error: result.error ?? past.error,
    fetching: result.fetching,
    gaveUp,
    refresh,
    history: history.state,
    pace,
    shownPace: asOf && job && pace ? pastPace(job, asOf) : pace,
  };
}

/**
 * The job's event history, grown by pages on demand. Reading it reads every task's stream: it
 * is re-read at most every HISTORY_REFRESH_MS while the job runs (`refreshThrottled`), and when
 * asked (`refresh`).
 */
function useJobHistory(id: string, asOf: string | null) {
  const [pages, setPages] = useState(1);
  const [filter, setFilter] = useState<HistoryFilter>({ newestFirst: true, eventType: null, taskIndex: null });
  useEffect(() => setPages(1), [id, filter]);
  const [result, reexecute] = useQuery({
    query: HISTORY_QUERY,
    variables: {
      id,
      first: Math.min(HISTORY_MAX, HISTORY_PAGE * pages),
      asOf,
      newestFirst: filter.newestFirst,
      eventTypes: filter.eventType ? [filter.eventType] : null,
      taskIndex: filter.taskIndex,
    },
  });

  const throttle = useTrailingThrottle();
  const reread = () => reexecute({ requestPolicy: 'network-only' });
  const refresh = () => {
    throttle.mark();
    reread();
  };
  // Throttled, with a trailing read: the last change of a burst is always shown.
  const refreshThrottled = () => {
    if (asOf) return;
    throttle.call(reread, HISTORY_REFRESH_MS);
  };
  const state: HistoryState = {
    history: result.data?.job?.history,
    filter,
    setFilter,
    error: result.error,
    canShowMore: HISTORY_PAGE * pages < HISTORY_MAX,
    showMore: () => setPages((n) => n + 1),
  };
  return { state, refresh, refreshThrottled };
}

/** Throughput and ETA from samples of the ended-task count, taken whenever the job changes. */
function usePace(job: JobDetail | null | undefined): Pace | null {
  const now = useNow(1000);
  const [samples, setSamples] = useState<Sample[]>([]);
  const lastEnded = useRef<number | null>(null);
  useEffect(() => {
    if (!job) return;
    const ended = job.completedTasks + job.failedTasks;
    if (ended === lastEnded.current) return;
    lastEnded.current = ended;
    setSamples((s) => addSample(s, { at: Date.now(), ended }));
  }, [job]);

  if (!job) return null;
  const p = progressOf(job);
  const isLive = LIVE.has(job.status);
  const rate = isLive
    ? throughputPerSecond(samples, now, job.startedAt ? Date.parse(job.startedAt) : null, p.ended)
    : null;
  const eta = isLive ? etaSeconds(p.remaining, rate) : null;
  const elapsed = job.startedAt
    ? ((job.completedAt ? Date.parse(job.completedAt) : now) - Date.parse(job.startedAt)) / 1000
    : null;
  return { isLive, rate, eta, elapsed };
}

/** The pace of a job shown as of an instant: how long it had run then; no rate or ETA. */
export function pastPace(job: JobDetail, asOf: string): Pace {
  const at = job.completedAt ? Date.parse(job.completedAt) : Date.parse(asOf);
  return {
    isLive: false,
    rate: null,
    eta: null,
    elapsed: job.startedAt ? Math.max(0, at - Date.parse(job.startedAt)) / 1000 : null,
  };
}
