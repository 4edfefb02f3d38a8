import { Link } from 'react-router-dom';
import { HISTORY_MAX, type HistoryState } from './useJobDetail';

/** The job's events as a timeline, oldest first, with "Show more events". */
export function History({
  jobId,
  history,
  error,
  canShowMore,
  showMore,
}: HistoryState & { jobId: string }) {
  return (
    <section className="card" aria-labelledby="history-title">
      <h2 id="history-title">History</h2>
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
            {e.error && <span className="small wrap ev-error"> — {e.error}</span>}
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
