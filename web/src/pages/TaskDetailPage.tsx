import { useRef } from 'react';
import { Link, useParams } from 'react-router-dom';
import { useQuery } from 'urql';
import { StatusBadge } from '../components/StatusBadge';
import { JsonBlock } from '../components/JsonBlock';
import { useLiveRefresh } from '../lib/live';
import { TASK_DETAIL_QUERY, TASK_UPDATED, type TaskAttempt, type TaskDetail } from '../lib/queries';

/** The task's own events the page shows at most. */
export const TASK_EVENTS = 200;

const time = (at: string | null | undefined) =>
  at ? (
    <time dateTime={at} title={at}>
      {new Date(at).toLocaleTimeString(undefined, { hour12: false, fractionalSecondDigits: 3 } as Intl.DateTimeFormatOptions)}
    </time>
  ) : (
    '—'
  );

export function formatMs(ms: number | null | undefined): string {
  if (ms == null) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/**
 * One task: its parameters and result, every attempt (worker, times, outcome, error, the retry
 * and its backoff), its dead-letter state and its own events; live through `taskUpdated`.
 */
export function TaskDetailPage() {
  const { id = '', index = '' } = useParams();
  const taskId = `${id}-task-${index}`;
  const [result, reexecute] = useQuery({
    query: TASK_DETAIL_QUERY,
    variables: { id: taskId, eventsFirst: TASK_EVENTS },
  });
  // Re-read when a message names this task (or may have: truncated), after a reconnect, and
  // while polling without a socket.
  const latest = useRef<{ truncated: boolean; tasks: { index: number }[] } | undefined>(undefined);
  const live = useLiveRefresh(TASK_UPDATED, { jobId: id }, () => {
    const message = latest.current;
    if (!message || message.truncated || message.tasks.some((t) => String(t.index) === index)) {
      reexecute({ requestPolicy: 'network-only' });
    }
  });
  latest.current = live.data?.taskUpdated;

  const task = result.data?.task;
  const crumbs = (
    <p className="crumbs">
      <Link to="/">Jobs</Link> / <Link to={`/jobs/${id}`}>job {id.slice(0, 8)}…</Link> / task {index}
    </p>
  );
  if (result.error && !task) {
    return (
      <section>
        {crumbs}
        <p className="error" role="alert">
          Could not load the task: {result.error.message}
        </p>
      </section>
    );
  }
  if (!task) {
    return (
      <section>
        {crumbs}
        <h1>Task {index}</h1>
        {result.fetching || task === undefined ? (
          <p aria-busy="true">Loading…</p>
        ) : (
          <p className="error" role="alert">
            This job has no task {index}. <Link to={`/jobs/${id}`}>Back to the job</Link>
          </p>
        )}
      </section>
    );
  }
  return (
    <section aria-labelledby="task-title">
      {crumbs}
      <div className="page-head">
        <h1 id="task-title">
          Task {task.index} <StatusBadge status={task.status} />
        </h1>
      </div>
      <TaskSummary task={task} />
      <div className="detail-grid">
        <section className="card" aria-labelledby="params-title">
          <h2 id="params-title">Parameters</h2>
          <JsonBlock value={task.parameters} label="Parameters" />
        </section>
        <section className="card" aria-labelledby="result-title">
          <h2 id="result-title">Result</h2>
          {task.result != null ? (
            <JsonBlock value={task.result} label="Result" />
          ) : (
            <p className="small">{task.status === 'COMPLETED' ? 'No result (null).' : 'No result yet.'}</p>
          )}
          {task.errorMessage && (
            <>
              <h3>Latest error</h3>
              <pre className="mono error-text" tabIndex={0} aria-label="Latest error">
                {task.errorMessage}
              </pre>
            </>
          )}
        </section>
      </div>
      <Attempts attempts={task.attempts} />
      <TaskEvents task={task} />
    </section>
  );
}

function TaskSummary({ task }: { task: TaskDetail }) {
  const deadLetter = task.attempts.find((a) => a.deadLetterReason)?.deadLetterReason;
  return (
    <div className="card">
      <dl className="stats">
        <div>
          <dt>Attempt</dt>
          <dd data-testid="task-detail-attempt">
            {task.attempt} <span className="small">of {task.maxAttempts}</span>
          </dd>
        </div>
        <div>
          <dt>Worker</dt>
          <dd className="mono small">{task.worker ?? '—'}</dd>
        </div>
        <div>
          <dt>Ran for</dt>
          <dd>{task.processingTimeSeconds != null ? `${task.processingTimeSeconds.toFixed(3)} s` : '—'}</dd>
        </div>
        <div>
          <dt>Created</dt>
          <dd className="small">{time(task.createdAt)}</dd>
        </div>
        <div>
          <dt>Next attempt</dt>
          <dd className="small">{time(task.nextAttemptAt)}</dd>
        </div>
        {task.waitingReason && (
          <div>
            <dt>Waiting</dt>
            <dd className="small" data-testid="waiting-reason">
              {task.waitingReason.detail}
            </dd>
          </div>
        )}
        <div>
          <dt>Dead letter</dt>
          <dd data-testid="dead-letter">
            {task.deadLettered ? (
              <span className="badge badge-failed" title={deadLetter ?? undefined}>
                in the DLQ
              </span>
            ) : (
              'no'
            )}
          </dd>
        </div>
      </dl>
      {task.deadLettered && deadLetter && (
        <p className="small">
          Dead-lettered: {deadLetter}. Redrive it from the <Link to="/dead-letters">dead letters</Link>.
        </p>
      )}
      <p className="small">
        Timeout {task.timeoutSeconds} s per attempt · job type {task.jobType || '(none)'}
      </p>
    </div>
  );
}

function outcomeClass(outcome: TaskAttempt['outcome']) {
  return `badge outcome-${outcome.toLowerCase()}`;
}

export function Attempts({ attempts }: { attempts: TaskAttempt[] }) {
  return (
    <section className="card" aria-labelledby="attempts-title">
      <h2 id="attempts-title">Attempts</h2>
      <div className="table-wrap" tabIndex={0} role="region" aria-labelledby="attempts-title">
        <table className="attempts-table">
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Outcome</th>
              <th scope="col">Worker</th>
              <th scope="col">Queued</th>
              <th scope="col">Started</th>
              <th scope="col">Ended</th>
              <th scope="col">Duration</th>
              <th scope="col">Error and retry</th>
            </tr>
          </thead>
          <tbody>
            {attempts.map((a) => (
              <tr key={`${a.attempt}-${a.queuedAt}`} data-testid="attempt-row">
                <td data-label="#">{a.attempt}</td>
                <td data-label="Outcome">
                  <span className={outcomeClass(a.outcome)}>{a.outcome.toLowerCase()}</span>
                </td>
                <td data-label="Worker" className="mono small">
                  {a.worker ?? '—'}
                </td>
                <td data-label="Queued" className="small">
                  {time(a.queuedAt)}
                  {a.notBefore && a.notBefore !== a.queuedAt && <> (not before {time(a.notBefore)})</>}
                </td>
                <td data-label="Started" className="small">
                  {time(a.startedAt)}
                </td>
                <td data-label="Ended" className="small">
                  {time(a.endedAt)}
                </td>
                <td data-label="Duration">{formatMs(a.durationMs)}</td>
                <td data-label="Error and retry" className="small wrap">
                  {a.error && <span className="ev-error">{a.error}</span>}
                  {a.retryBackoffMs != null && (
                    <span>
                      {' '}
                      → {a.retryManual ? 'retried by a user' : `retried after a backoff of ${formatMs(a.retryBackoffMs)}`}
                    </span>
                  )}
                  {a.deadLetterReason && <span> → dead-lettered: {a.deadLetterReason}</span>}
                </td>
              </tr>
            ))}
            {attempts.length === 0 && (
              <tr>
                <td colSpan={8}>No attempt yet.</td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
    </section>
  );
}

function TaskEvents({ task }: { task: TaskDetail }) {
  return (
    <section className="card" aria-labelledby="task-events-title">
      <h2 id="task-events-title">Events</h2>
      <ol className="timeline" data-testid="task-events" tabIndex={0} aria-labelledby="task-events-title">
        {task.events.edges.map(({ cursor, node: e }) => (
          <li key={cursor} className={`ev ev-${e.eventType}`}>
            {time(e.at)} <span className="ev-type">{e.eventType}</span>
            {e.attempt != null && <span className="small"> attempt {e.attempt}</span>}
            {e.worker && <span className="small"> on {e.worker}</span>}
            {e.error && <span className="small wrap ev-error"> — {e.error}</span>}
          </li>
        ))}
      </ol>
      {task.events.pageInfo.hasNextPage && (
        <p className="small">Showing the first {TASK_EVENTS} events.</p>
      )}
    </section>
  );
}
