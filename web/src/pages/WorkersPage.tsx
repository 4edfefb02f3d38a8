import { useEffect } from 'react';
import { useQuery } from 'urql';
import { WORKERS_QUERY, type WorkerInfo } from '../lib/queries';

/** How often the page asks again (the workers report every 5 s by default). */
export const WORKERS_REFRESH_MS = 5000;

/** "just now", "12 s ago", "3 min ago", "2 h ago". */
export function formatAgo(seconds: number): string {
  if (seconds < 1) return 'just now';
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  return `${Math.floor(seconds / 3600)} h ago`;
}

/** Tasks per second, to a sensible precision. */
export function formatRate(perSecond: number): string {
  if (perSecond === 0) return '0';
  if (perSecond < 10) return perSecond.toFixed(1);
  return Math.round(perSecond).toLocaleString();
}

/** What the page's summary says: workers taking tasks, their slots and throughput. */
export function summarize(workers: readonly WorkerInfo[]) {
  const live = workers.filter((w) => w.status === 'RUNNING' || w.status === 'DRAINING');
  return {
    live: live.length,
    silent: workers.filter((w) => w.status === 'SILENT').length,
    slotsUsed: live.reduce((n, w) => n + w.slotsUsed, 0),
    slotsTotal: live.reduce((n, w) => n + w.slotsTotal, 0),
    tasksPerSecond: live.reduce((n, w) => n + w.tasksPerSecond, 0),
  };
}

const STATUS_TEXT: Record<string, string> = {
  RUNNING: 'running',
  DRAINING: 'draining',
  STOPPED: 'stopped',
  SILENT: 'silent',
};

const STATUS_HELP: Record<string, string> = {
  DRAINING: 'told to stop: finishing its tasks, taking no more',
  SILENT: 'missed three heartbeats: crashed, killed, or cut off from the database',
  STOPPED: 'stopped cleanly',
};

function SlotsBar({ used, total }: { used: number; total: number }) {
  const percent = total > 0 ? Math.min(100, (used * 100) / total) : 0;
  return (
    <div
      className="progress slots"
      role="img"
      aria-label={`${used} of ${total} slots in use`}
    >
      <div className="seg seg-running" style={{ width: `${percent}%` }} />
    </div>
  );
}

/**
 * The worker processes heard from in the last ten minutes: each one's host, queue, slots in
 * use, tasks per second, last heartbeat and version; a worker that stopped reporting is shown
 * silent, one stopped by SIGTERM stopped, and both disappear after ten minutes.
 */
export function WorkersPage() {
  const [result, reexecute] = useQuery({ query: WORKERS_QUERY });
  useEffect(() => {
    const id = setInterval(() => reexecute({ requestPolicy: 'network-only' }), WORKERS_REFRESH_MS);
    return () => clearInterval(id);
  }, [reexecute]);
  const workers = result.data?.workers ?? [];
  const summary = summarize(workers);

  return (
    <section aria-labelledby="workers-title">
      <div className="page-head">
        <h1 id="workers-title">Workers</h1>
        <p className="small" data-testid="workers-summary">
          {summary.live} running, {summary.slotsUsed} of {summary.slotsTotal} slots in use,{' '}
          {formatRate(summary.tasksPerSecond)} tasks/s
          {summary.silent > 0 && <strong className="silent-count">, {summary.silent} silent</strong>}
        </p>
      </div>
      {result.error && <p className="error">Could not list the workers: {result.error.message}</p>}
      <div className="table-wrap" tabIndex={0} role="region" aria-labelledby="workers-title">
        <table className="workers-table">
          <thead>
            <tr>
              <th scope="col">Worker</th>
              <th scope="col">Status</th>
              <th scope="col">Host</th>
              <th scope="col">Queue</th>
              <th scope="col">Slots used</th>
              <th scope="col">Tasks/s</th>
              <th scope="col">Completed / failed</th>
              <th scope="col">Last heartbeat</th>
              <th scope="col">Version</th>
            </tr>
          </thead>
          <tbody>
            {workers.map((w) => (
              <tr key={w.id} data-testid="worker-row" className={`worker-${w.status.toLowerCase()}`}>
                <td data-label="Worker" className="mono small wrap">
                  {w.id}
                </td>
                <td data-label="Status">
                  <span className={`badge badge-worker-${w.status.toLowerCase()}`} title={STATUS_HELP[w.status]}>
                    {STATUS_TEXT[w.status] ?? w.status}
                  </span>
                  {STATUS_HELP[w.status] && <span className="sr-only"> ({STATUS_HELP[w.status]})</span>}
                </td>
                <td data-label="Host" className="small wrap">
                  {w.host}
                </td>
                <td data-label="Queue" className="small wrap">
                  {w.queue}
                </td>
                <td data-label="Slots used" className="slots-cell">
                  {w.status === 'STOPPED' ? (
                    <span className="small">— of {w.slotsTotal}</span>
                  ) : (
                    <>
                      <SlotsBar used={w.slotsUsed} total={w.slotsTotal} />
                      <span className="small">
                        {w.slotsUsed} of {w.slotsTotal}
                      </span>
                    </>
                  )}
                </td>
                <td data-label="Tasks/s">{w.status === 'STOPPED' ? '—' : formatRate(w.tasksPerSecond)}</td>
                <td data-label="Completed / failed" className="small">
                  {w.tasksCompleted.toLocaleString()} / {w.tasksFailed.toLocaleString()}
                </td>
                <td data-label="Last heartbeat" className="small">
                  <time dateTime={w.lastHeartbeatAt} title={new Date(w.lastHeartbeatAt).toLocaleString()}>
                    {formatAgo(w.secondsSinceHeartbeat)}
                  </time>
                </td>
                <td data-label="Version" className="small mono">
                  {w.version}
                </td>
              </tr>
            ))}
            {workers.length === 0 && !result.fetching && (
              <tr>
                <td colSpan={9}>
                  No worker has reported in the last ten minutes. Start one with <code>shoal worker</code>, or
                  run <code>shoal dev</code> with <code>--workers</code> above 0.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      <p className="small">
        Each worker reports every few seconds (<code>--heartbeat-seconds</code>, 5 by default); one that misses three
        reports is shown silent. Workers not heard from for ten minutes are no longer listed.
      </p>
    </section>
  );
}
