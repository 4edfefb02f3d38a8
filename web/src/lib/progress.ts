/** Progress, throughput and ETA of a job, from its task counts. Pure functions, unit-tested. */

export interface JobCounts {
  totalTasks: number;
  completedTasks: number;
  failedTasks: number;
  runningTasks: number;
  queuedTasks: number;
  retryingTasks: number;
}

export interface ProgressBreakdown {
  /** Ended tasks (completed + failed) per 100 tasks, 0..100. */
  percent: number;
  completedPct: number;
  failedPct: number;
  runningPct: number;
  ended: number;
  remaining: number;
}

const pct = (part: number, total: number) =>
  total > 0 ? Math.min(100, Math.max(0, (part / total) * 100)) : 0;

export function progressOf(job: JobCounts): ProgressBreakdown {
  const ended = job.completedTasks + job.failedTasks;
  return {
    percent: pct(ended, job.totalTasks),
    completedPct: pct(job.completedTasks, job.totalTasks),
    failedPct: pct(job.failedTasks, job.totalTasks),
    runningPct: pct(job.runningTasks, job.totalTasks),
    ended,
    remaining: Math.max(0, job.totalTasks - ended),
  };
}

/** One observation of how many tasks had ended at a time (ms since epoch). */
export interface Sample {
  at: number;
  ended: number;
}

/** Keeps the samples of the last `windowMs` (and at least the newest two). */
export function addSample(samples: Sample[], sample: Sample, windowMs = 30_000): Sample[] {
  const last = samples[samples.length - 1];
  // A count that went down (a retry re-opened failed tasks) restarts the window.
  const base = last && sample.ended < last.ended ? [] : samples;
  const next = [...base, sample];
  const cutoff = sample.at - windowMs;
  let first = 0;
  while (first < next.length - 2 && next[first].at < cutoff) first++;
  return next.slice(first);
}

/**
 * Tasks ended per second: over the recent samples when they span at least a second, otherwise
 * the average since the job started (`startedAt`, ms) — or null when neither is known.
 */
export function throughputPerSecond(
  samples: Sample[],
  now: number,
  startedAt?: number | null,
  ended?: number,
): number | null {
  if (samples.length >= 2) {
    const a = samples[0];
    const b = samples[samples.length - 1];
    const span = (b.at - a.at) / 1000;
    if (span >= 1 && b.ended > a.ended) return (b.ended - a.ended) / span;
  }
  if (startedAt != null && ended != null && ended > 0) {
    const span = (now - startedAt) / 1000;
    if (span > 0) return ended / span;
  }
  return null;
}

/** Seconds until every remaining task has ended at `rate` per second; null if unknown. */
export function etaSeconds(remaining: number, rate: number | null): number | null {
  if (remaining <= 0) return 0;
  if (rate == null || !(rate > 0) || !Number.isFinite(rate)) return null;
  return remaining / rate;
}

/** "45 s", "3 min 20 s", "2 h 05 min", "3 d 4 h". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds == null || !Number.isFinite(seconds)) return '—';
  if (seconds < 10) return `${Math.max(0, seconds).toFixed(seconds < 1 ? 2 : 1)} s`;
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${String(m % 60).padStart(2, '0')} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** "12.3/s", "45/min" for slow rates. */
export function formatRate(rate: number | null): string {
  if (rate == null) return '—';
  if (rate >= 1) return `${rate >= 100 ? Math.round(rate) : rate.toFixed(1)} tasks/s`;
  return `${(rate * 60).toFixed(1)} tasks/min`;
}

/** Age of a timestamp relative to `now`: "5 s ago". */
export function formatAge(iso: string, now: number): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '—';
  const s = Math.max(0, (now - t) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** The distinctive end of a job id (UUIDv7 ids share their time-based start). */
export function shortId(id: string): string {
  return id.replace(/-/g, '').slice(-10);
}
