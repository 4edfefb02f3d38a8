import { Link } from 'react-router-dom';
import { Pager } from '../../components/Pager';
import { StatusBadge } from '../../components/StatusBadge';
import type { JobDetail } from '../../lib/queries';
import { TASK_STATUSES, type TaskStatus, type TaskTableState } from '../../lib/urlState';
import { TASK_PAGE } from './useJobDetail';

/** A short label of why a task waits (its detail is the tooltip). */
export function waitingLabel(kind: string): string {
  switch (kind) {
    case 'LIMITED':
      return 'waiting: limited';
    case 'RATE_LIMITED':
      return 'waiting: rate-limited';
    case 'FAIR_SHARE':
      return 'waiting: behind other jobs';
    case 'BACKOFF':
      return 'waiting: retry backoff';
    default:
      return `waiting: ${kind.toLowerCase()}`;
  }
}

/** One page of the job's tasks, with a status filter and the pager. */
export function TaskTable({
  jobId,
  tasks,
  table,
  onChange,
}: {
  jobId: string;
  tasks: JobDetail['tasks'];
  table: TaskTableState;
  onChange: (table: TaskTableState) => void;
}) {
  const first = table.cursors.length * TASK_PAGE;
  return (
    <section className="card" aria-labelledby="tasks-title">
      <div className="page-head">
        <h2 id="tasks-title">Tasks</h2>
        <label>
          Status{' '}
          <select
            value={table.status ?? ''}
            onChange={(e) =>
              onChange({ status: (e.target.value || null) as TaskStatus | null, cursors: [] })
            }
          >
            <option value="">Any</option>
            {TASK_STATUSES.map((s) => (
              <option key={s} value={s}>
                {s.toLowerCase()}
              </option>
            ))}
          </select>
        </label>
      </div>
      <div className="table-wrap" tabIndex={0} role="region" aria-labelledby="tasks-title">
        <table className="tasks-table">
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Status</th>
              <th scope="col">Attempt</th>
              <th scope="col">Time</th>
              <th scope="col">Error / worker</th>
            </tr>
          </thead>
          <tbody>
            {tasks.edges.map(({ node: t }) => (
              <tr key={t.id}>
                <td data-label="#">
                  <Link to={`/jobs/${jobId}/tasks/${t.index}`} aria-label={`Task ${t.index}`}>
                    {t.index}
                  </Link>
                </td>
                <td data-label="Status">
                  <StatusBadge status={t.status} />
                  {t.deadLettered && <span className="small"> dead letter</span>}
                </td>
                <td
                  data-label="Attempt"
                  data-testid="task-attempt"
                  title={`${t.maxAttempts} attempts per budget (a retry grants a fresh one)`}
                >
                  {t.attempt}
                </td>
                <td data-label="Time">
                  {t.processingTimeSeconds != null
                    ? `${t.processingTimeSeconds.toFixed(2)} s`
                    : '—'}
                </td>
                <td data-label="Error / worker" className="small wrap">
                  {t.errorMessage ?? t.worker ?? ''}
                  {t.waitingReason && (
                    <span data-testid="waiting-reason" title={t.waitingReason.detail}>
                      {t.errorMessage || t.worker ? ' · ' : ''}
                      {waitingLabel(t.waitingReason.kind)}
                    </span>
                  )}
                </td>
              </tr>
            ))}
            {tasks.edges.length === 0 && (
              <tr>
                <td colSpan={5}>No tasks{table.status ? ' in this status' : ' yet'}.</td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      <Pager
        label="Pages of tasks"
        cursors={table.cursors}
        pageInfo={tasks.pageInfo}
        onChange={(cursors) => onChange({ status: table.status, cursors })}
      >
        Tasks {first + 1}–{first + tasks.edges.length}
      </Pager>
    </section>
  );
}
