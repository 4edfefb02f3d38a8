import { Link } from 'react-router-dom';
import { HISTORY_MAX, type HistoryState } from './useJobDetail';

/** The job's events as a timeline, oldest first, with "Show more events". */
/** The event types the history can be filtered by. */
export const EVENT_TYPES = [
  'JobSubmitted',
  'TasksCreated',
  'TaskEnqueued',
  'TaskStarted',
  'TaskCompleted',
  'TaskFailed',
  'TaskRetryScheduled',
  'TaskDeadLettered',
  'JobRetryRequested',
  'JobCompleted',
  'JobFailed',
  'JobCancelled',
  'JobPriorityChanged',
] as const;

export function History({
  jobId,
  history,
  error,
  canShowMore,
  showMore,
  filter,
  setFilter,
}: HistoryState & { jobId: string }) {
  return (
    <section className="card" aria-labelledby="history-title">
      <h2 id="history-title">History</h2>
      <div className="history-filters">
        <label>
          Order{' '}
          <select
            value={filter.newestFirst ? 'newest' : 'oldest'}
            onChange={(e) => setFilter({ ...filter, newestFirst: e.target.value === 'newest' })}
          >
            <option value="newest">newest first</option>
            <option value="oldest">oldest first</option>
          </select>
        </label>
        <label>
          Event{' '}
          <select
            value={filter.eventType ?? ''}
            onChange={(e) => setFilter({ ...filter, eventType: e.target.value || null })}
          >
            <option value="">any</option>
            {EVENT_TYPES.map((t) => (
              <option key={t} value={t}>
                {t}
              </option>
            ))}
          </select>
        </label>
        <label>
          Task{' '}
          <input
            type="number"
            min={0}
            inputMode="numeric"
            className="task-filter"
            placeholder="any"
            value={filter.taskIndex ?? ''}
            onChange={(e) => {
              const n = e.target.value === '' ? null : Number(e.target.value);
              setFilter({ ...filter, taskIndex: n != null && Number.isInteger(n) && n >= 0 ? n : null });
            }}
          />
        </label>
      </div>
      {error && <p className="error">Could not load the history.</p>}
      <ol className="timeline" data-testid="history" tabIndex={0} aria-labelledby="history-title">
        {history?.edges.map(({ cursor, node: e }) => (
          <li key={cursor} className={`ev ev-${e.eventType}`}>
            <time dateTime={e.at}>{new Date(e.at).toLocaleTimeString()}</time>
            <span className="ev-type">{e.eventType}</span>
            {e.step && <span className="small"> {e.step}</span>}
            {e.taskIndex != null && (
              <>
                {' '}
                <Link className="small" to={`/jobs/${jobId}/tasks/${e.taskIndex}`}>
                  task {e.taskIndex}
                </Link>
              </>
            )}
            {e.attempt != null && <span className="small"> attempt {e.attempt}</span>}
            {e.priority != null && (
              <span className="small">
                {' '}
                priority {e.previousPriority != null && `${e.previousPriority} → `}
                {e.priority}
              </span>
            )}
            {e.error && <span className="small wrap ev-error"> — {e.error}</span>}
            {e.actor && (
              <span className="small ev-actor" data-testid="history-actor">
                {' '}
                by {e.actor}
              </span>
            )}
          </li>
        ))}
      </ol>
      {history?.pageInfo.hasNextPage &&
        (canShowMore ? (
          <button type="button" className="btn secondary" onClick={showMore}>
            Show more events
          </button>
        ) : (
          <p className="small">Showing the first {HISTORY_MAX} events.</p>
        ))}
    </section>
  );
}
