import { useEffect, useLayoutEffect, useRef, useState } from 'react';
import { Link } from 'react-router-dom';
import { useQuery } from 'urql';
import { JOB_TIMELINE_QUERY, type JobTimeline } from '../../lib/queries';
import type { Enum } from '../../lib/graphql';
import { useTrailingThrottle } from '../../lib/throttle';

type Group = Enum<'TimelineGroup'>;
type Outcome = Enum<'AttemptOutcome'>;

/** Bars the server sends at most; past that it sends aggregated buckets. */
export const MAX_BARS = 2000;
/** Height of a lane, in CSS pixels. */
export const ROW_HEIGHT = 14;
/** Height of the visible part of the timeline. */
const VIEW_HEIGHT = 300;
/** Least time between two re-reads of a live job's timeline (it reads every task's stream). */
const REFRESH_MS = 5_000;

export const OUTCOME_COLOURS: Record<Outcome, string> = {
  QUEUED: '#8c959f',
  RUNNING: '#0969da',
  COMPLETED: '#1a7f37',
  RETRIED: '#bc4c00',
  FAILED: '#cf222e',
};

export interface Window {
  from: number;
  to: number;
}

/** The window `factor` times as wide, around its middle, kept inside `bounds`. */
export function zoom(window: Window, factor: number, bounds: Window): Window {
  const middle = (window.from + window.to) / 2;
  const half = Math.max(1, ((window.to - window.from) * factor) / 2);
  let from = middle - half;
  let to = middle + half;
  if (from < bounds.from) [from, to] = [bounds.from, Math.min(bounds.to, bounds.from + 2 * half)];
  if (to > bounds.to) [from, to] = [Math.max(bounds.from, bounds.to - 2 * half), bounds.to];
  return { from: Math.round(from), to: Math.round(to) };
}

/** The window moved by `fraction` of its width, kept inside `bounds`. */
export function pan(window: Window, fraction: number, bounds: Window): Window {
  const width = window.to - window.from;
  const from = Math.min(Math.max(bounds.from, window.from + width * fraction), bounds.to - width);
  return { from: Math.round(from), to: Math.round(from + width) };
}

/** The horizontal extent of `[start, end]` on a canvas `width` wide showing `window`. */
export function xSpan(start: number, end: number, window: Window, width: number): [number, number] {
  const scale = width / Math.max(1, window.to - window.from);
  const x0 = Math.max(0, (start - window.from) * scale);
  const x1 = Math.min(width, (end - window.from) * scale);
  return [x0, Math.max(x0 + 1, x1)];
}

/** Rows the timeline draws: one per lane for bars, one per block of lanes for buckets. */
export function rowCount(timeline: JobTimeline): number {
  if (!timeline.aggregated) return timeline.laneCount;
  return new Set(timeline.buckets.map((b) => b.laneFrom)).size;
}

function draw(
  canvas: HTMLCanvasElement,
  timeline: JobTimeline,
  window: Window,
  firstRow: number,
  rows: number,
) {
  const ctx = canvas.getContext?.('2d');
  if (!ctx) return;
  const ratio = globalThis.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  canvas.width = width * ratio;
  canvas.height = rows * ROW_HEIGHT * ratio;
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, rows * ROW_HEIGHT);
  const end = Date.parse(timeline.to);
  if (!timeline.aggregated) {
    for (const bar of timeline.bars) {
      const row = bar.lane - firstRow;
      if (row < 0 || row >= rows) continue;
      const y = row * ROW_HEIGHT + 2;
      const queued = Date.parse(bar.queuedAt);
      const started = bar.startedAt ? Date.parse(bar.startedAt) : end;
      // The wait in the queue, thin and grey; the run, full height in the outcome's colour.
      const [qx0, qx1] = xSpan(queued, started, window, width);
      ctx.fillStyle = '#d0d7de';
      ctx.fillRect(qx0, y + ROW_HEIGHT / 2 - 2, qx1 - qx0, 2);
      if (bar.startedAt) {
        const ended = bar.endedAt ? Date.parse(bar.endedAt) : end;
        const [x0, x1] = xSpan(started, ended, window, width);
        ctx.fillStyle = OUTCOME_COLOURS[bar.outcome];
        ctx.fillRect(x0, y, x1 - x0, ROW_HEIGHT - 4);
      }
    }
    return;
  }
  const blocks = [...new Set(timeline.buckets.map((b) => b.laneFrom))].sort((a, b) => a - b);
  const most = Math.max(1, ...timeline.buckets.map((b) => b.attempts));
  for (const bucket of timeline.buckets) {
    const row = blocks.indexOf(bucket.laneFrom) - firstRow;
    if (row < 0 || row >= rows) continue;
    const [x0, x1] = xSpan(Date.parse(bucket.from), Date.parse(bucket.to), window, width);
    const share = bucket.failed / bucket.attempts;
    // Busier cells are darker; cells with failures lean red.
    const alpha = 0.15 + (0.85 * bucket.attempts) / most;
    ctx.fillStyle = share > 0 ? `rgba(207, 34, 46, ${alpha})` : `rgba(26, 127, 55, ${alpha})`;
    ctx.fillRect(x0, row * ROW_HEIGHT + 1, x1 - x0, ROW_HEIGHT - 2);
  }
}

function laneLabel(timeline: JobTimeline, lane: number): string {
  return timeline.groupBy === 'WORKER' ? (timeline.workers[lane] ?? '?') : `task ${lane}`;
}

/**
 * The job's attempts in time: a canvas that draws only the lanes in view (virtualised), zoom
 * and pan buttons (a narrower window asks the server again, and may get bars where it sent
 * buckets), grouping by task or worker, and the slowest attempts beside it.
 */
export function Timeline({
  jobId,
  asOf,
  version,
  bounds,
}: {
  jobId: string;
  asOf: string | null;
  /** Changes when the live job changes: the timeline re-reads (at most every REFRESH_MS). */
  version: string;
  /** The job's lifetime (ms), as shown. */
  bounds: Window;
}) {
  const [groupBy, setGroupBy] = useState<Group>('TASK');
  const [window, setWindow] = useState<Window | null>(null);
  const shown = window ?? bounds;
  const [result, reexecute] = useQuery({
    query: JOB_TIMELINE_QUERY,
    variables: {
      id: jobId,
      asOf,
      groupBy,
      from: window ? new Date(window.from).toISOString() : null,
      to: window ? new Date(window.to).toISOString() : null,
      maxBars: MAX_BARS,
    },
  });
  // A big job's timeline is slow to read: wait at least three times as long as the last read
  // took before the next one.
  const readTook = useRef(0);
  const began = useRef<number | null>(null);
  useEffect(() => {
    if (result.fetching && began.current === null) began.current = Date.now();
    if (!result.fetching && began.current !== null) {
      readTook.current = Date.now() - began.current;
      began.current = null;
    }
  }, [result.fetching]);
  const mounted = useRef(false);
  // Throttled, with a trailing read: a change that comes too soon after a read (or while one is
  // under way, which may have begun before it) is read when the wait is over, so the last
  // change of a burst is always shown.
  const throttle = useTrailingThrottle();
  useEffect(() => {
    // The first read is the query's own.
    if (!mounted.current) {
      mounted.current = true;
      throttle.mark();
      return;
    }
    if (asOf) return;
    throttle.call(
      () => reexecute({ requestPolicy: 'network-only' }),
      Math.max(REFRESH_MS, 3 * readTook.current),
      result.fetching,
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [version]);

  const timeline = result.data?.job?.timeline;
  const canvas = useRef<HTMLCanvasElement>(null);
  const scroller = useRef<HTMLDivElement>(null);
  const [scrollTop, setScrollTop] = useState(0);
  const rows = timeline ? rowCount(timeline) : 0;
  const firstRow = Math.floor(scrollTop / ROW_HEIGHT);
  const visibleRows = Math.min(rows - firstRow, Math.ceil(VIEW_HEIGHT / ROW_HEIGHT) + 1);
  const drawn: Window = timeline
    ? { from: Date.parse(timeline.from), to: Math.max(Date.parse(timeline.to), Date.parse(timeline.from) + 1) }
    : shown;
  useLayoutEffect(() => {
    if (canvas.current && timeline) draw(canvas.current, timeline, drawn, firstRow, Math.max(0, visibleRows));
  });

  const zoomed = window !== null;
  const median = timeline?.medianMs ?? null;
  return (
    <section className="card timeline-card" aria-labelledby="timeline-title" data-testid="timeline">
      <div className="page-head">
        <h2 id="timeline-title">Timeline</h2>
        <div className="actions">
          <label>
            Group by{' '}
            <select value={groupBy} onChange={(e) => setGroupBy(e.target.value as Group)}>
              <option value="TASK">task</option>
              <option value="WORKER">worker</option>
            </select>
          </label>
          <button type="button" className="btn secondary" onClick={() => setWindow(zoom(shown, 0.5, bounds))}>
            Zoom in
          </button>
          <button
            type="button"
            className="btn secondary"
            disabled={!zoomed}
            onClick={() => {
              const next = zoom(shown, 2, bounds);
              setWindow(next.to - next.from >= bounds.to - bounds.from ? null : next);
            }}
          >
            Zoom out
          </button>
          <button type="button" className="btn secondary" disabled={!zoomed} onClick={() => setWindow(pan(shown, -0.5, bounds))}>
            Earlier
          </button>
          <button type="button" className="btn secondary" disabled={!zoomed} onClick={() => setWindow(pan(shown, 0.5, bounds))}>
            Later
          </button>
          <button type="button" className="btn secondary" disabled={!zoomed} onClick={() => setWindow(null)}>
            Whole job
          </button>
        </div>
      </div>
      {result.error && <p className="error">Could not load the timeline: {result.error.message}</p>}
      {!timeline ? (
        <p aria-busy="true" className="small">
          Loading the timeline…
        </p>
      ) : (
        <div className="timeline-body">
          <div>
            <p className="small" data-testid="timeline-summary">
              {timeline.attemptCount.toLocaleString()} attempts on {timeline.laneCount.toLocaleString()}{' '}
              {timeline.groupBy === 'WORKER' ? 'workers' : 'tasks'},{' '}
              {new Date(drawn.from).toLocaleTimeString()}–{new Date(drawn.to).toLocaleTimeString()}
              {timeline.aggregated
                ? ` · too many to draw one by one: each row is a block of ${timeline.groupBy === 'WORKER' ? 'workers' : 'tasks'}, darker where more ran (red: with failures). Zoom in for bars.`
                : ''}
            </p>
            <div
              className="timeline-scroll"
              ref={scroller}
              style={{ height: Math.min(VIEW_HEIGHT, rows * ROW_HEIGHT + 2) }}
              onScroll={(e) => setScrollTop(e.currentTarget.scrollTop)}
              tabIndex={0}
              role="region"
              aria-label="Timeline lanes (scrollable)"
            >
              <div style={{ height: rows * ROW_HEIGHT, position: 'relative' }}>
                <canvas
                  ref={canvas}
                  data-testid="timeline-canvas"
                  className="timeline-canvas"
                  style={{ top: firstRow * ROW_HEIGHT, height: Math.max(0, visibleRows) * ROW_HEIGHT }}
                  role="img"
                  aria-label={`Timeline of ${timeline.attemptCount} attempts; lanes ${firstRow}–${firstRow + visibleRows - 1} in view`}
                />
              </div>
            </div>
            <p className="small legend">
              {(Object.keys(OUTCOME_COLOURS) as Outcome[]).map((o) => (
                <span key={o}>
                  <span className="swatch" style={{ background: OUTCOME_COLOURS[o] }} /> {o.toLowerCase()}{' '}
                </span>
              ))}
              {!timeline.aggregated && rows > 0 && (
                <span>
                  · lanes: {laneLabel(timeline, firstRow)} to {laneLabel(timeline, firstRow + Math.max(0, visibleRows - 1))}
                </span>
              )}
            </p>
          </div>
          <aside aria-labelledby="slowest-title" className="slowest">
            <h3 id="slowest-title">Slowest attempts</h3>
            {median != null && (
              <p className="small">
                median {Math.round(median)} ms · p95 {Math.round(timeline.p95Ms ?? 0)} ms
              </p>
            )}
            <ol data-testid="slowest">
              {timeline.slowest.map((s) => (
                <li key={`${s.taskIndex}-${s.attempt}`}>
                  <Link to={`/jobs/${jobId}/tasks/${s.taskIndex}`}>task {s.taskIndex}</Link>{' '}
                  <span className="small">
                    #{s.attempt} · {Math.round(s.durationMs ?? 0)} ms · {s.outcome.toLowerCase()}
                    {median != null && (s.durationMs ?? 0) > 3 * median && median > 0 ? ' · straggler' : ''}
                    {s.worker ? ` · ${s.worker}` : ''}
                  </span>
                </li>
              ))}
              {timeline.slowest.length === 0 && <li className="small">No attempt has started.</li>}
            </ol>
          </aside>
        </div>
      )}
    </section>
  );
}
