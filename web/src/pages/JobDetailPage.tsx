import { useEffect, useRef, useState } from 'react';
import { Link, useParams, useSearchParams } from 'react-router-dom';
import { useMutation, useQuery } from 'urql';
import {
  CANCEL_JOB,
  HISTORY_QUERY,
  JOB_QUERY,
  JOB_UPDATED,
  REDRIVE,
  RETRY_FAILED,
} from '../lib/queries';
import { useLiveRefresh } from '../lib/live';
import { useNow } from '../lib/useNow';
import {
  addSample,
  etaSeconds,
  formatDuration,
  formatRate,
  progressOf,
  throughputPerSecond,
  type Sample,
} from '../lib/progress';
import {
  TASK_STATUSES,
  parseTaskTable,
  serializeTaskTable,
  type TaskStatus,
} from '../lib/urlState';
import type { HistoryEvent, Job, Page, Task } from '../lib/types';
import { ProgressBar } from '../components/ProgressBar';
import { StatusBadge } from '../components/StatusBadge';
import { ConfirmButton } from '../components/ConfirmButton';
import { ExecutionLink } from '../components/ExecutionLink';

const TASK_PAGE = 50;
const HISTORY_PAGE = 100;
const HISTORY_REFRESH_MS = 3_000;
const NOT_FOUND_AFTER_MS = 10_000;
const LIVE = new Set(['PENDING', 'CREATING_TASKS', 'ENQUEUED', 'RUNNING']);

type JobWithTasks = Job & { tasks: Page<Task> };

export function JobDetailPage() {
  const { id = '' } = useParams();
  const [params, setParams] = useSearchParams();
  const table = parseTaskTable(params);
  const now = useNow(1000);

  const [result, reexecute] = useQuery<{ job: JobWithTasks | null }>({
    query: JOB_QUERY,
    variables: {
      id,
      first: TASK_PAGE,
      after: table.cursors[table.cursors.length - 1] ?? null,
      status: table.status ? [table.status] : null,
    },
  });
  // The history grows by pages: the first HISTORY_PAGE events, then more on demand.
  const [historyPages, setHistoryPages] = useState(1);
  useEffect(() => setHistoryPages(1), [id]);
  const [history, reexecuteHistory] = useQuery<{
    job: { id: string; history: Page<HistoryEvent> } | null;
  }>({
    query: HISTORY_QUERY,
    variables: { id, first: Math.min(1000, HISTORY_PAGE * historyPages) },
  });

  // Reading the history reads every task's stream: at most every HISTORY_REFRESH_MS while the
  // job runs, and once more when its status changes.
  const lastHistory = useRef(0);
  const refreshHistory = () => {
    lastHistory.current = Date.now();
    reexecuteHistory({ requestPolicy: 'network-only' });
  };
  const refresh = () => {
    reexecute({ requestPolicy: 'network-only' });
    if (Date.now() - lastHistory.current >= HISTORY_REFRESH_MS) refreshHistory();
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

  const job = result.data?.job;
  const status = job?.status;
  useEffect(() => {
    if (status) refreshHistory();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [status]);
  const [samples, setSamples] = useState<Sample[]>([]);
  const lastEnded = useRef<number | null>(null);
  useEffect(() => {
    if (!job) return;
    const ended = job.completedTasks + job.failedTasks;
    if (ended === lastEnded.current) return;
    lastEnded.current = ended;
    setSamples((s) => addSample(s, { at: Date.now(), ended }));
  }, [job]);

  const [, cancel] = useMutation(CANCEL_JOB);
  const [, retry] = useMutation(RETRY_FAILED);
  const [, redrive] = useMutation(REDRIVE);
  const [notice, setNotice] = useState<{ kind: 'ok' | 'error'; text: string } | null>(null);
  const [reason, setReason] = useState('');

  if (result.error && !job) {
    return (
      <p className="error" role="alert">
        Could not load the job: {result.error.message}
      </p>
    );
  }
  if (!job) {
    return (
      <section>
        <h1>Job {id}</h1>
        {gaveUp ? (
          <p className="error" role="alert">
            There is no job with this id. <Link to="/">Back to the jobs</Link>
          </p>
        ) : (
          <p aria-busy="true">{result.fetching ? 'Loading…' : 'Waiting for the job to appear…'}</p>
        )}
      </section>
    );
  }

  const p = progressOf(job);
  const isLive = LIVE.has(job.status);
  const rate = isLive
    ? throughputPerSecond(samples, now, job.startedAt ? Date.parse(job.startedAt) : null, p.ended)
    : null;
  const eta = isLive ? etaSeconds(p.remaining, rate) : null;
  const elapsed = job.startedAt
    ? ((job.completedAt ? Date.parse(job.completedAt) : now) - Date.parse(job.startedAt)) / 1000
    : null;

  const act = async <T,>(
    run: () => Promise<{ error?: { message: string }; data?: T }>,
    done: (data: T | undefined) => string,
  ): Promise<void> => {
    const r = await run();
    setNotice(
      r.error ? { kind: 'error', text: r.error.message } : { kind: 'ok', text: done(r.data) },
    );
    refresh();
  };

  const setTable = (status: TaskStatus | null, cursors: string[]) =>
    setParams(serializeTaskTable({ status, cursors }, params), { replace: false });

  const tasks = job.tasks;
  return (
    <section aria-labelledby="job-title">
      <p className="crumbs">
        <Link to="/">Jobs</Link> / <span className="mono">{job.id}</span>
      </p>
      <div className="page-head">
        <h1 id="job-title">
          {job.jobType || '(no type)'} <StatusBadge status={job.status} />
        </h1>
        <div className="actions">
          <ConfirmButton
            label="Cancel job"
            title="Cancel this job?"
            body={<p>No further tasks will be created or started. This cannot be undone.</p>}
            confirmLabel="Cancel job"
            danger
            disabled={!isLive}
            onConfirm={() =>
              act(
                () => cancel({ id: job.id, reason: reason || null }),
                () => 'Job cancelled.',
              )
            }
          >
            <label className="field">
              Reason (optional)
              <input value={reason} onChange={(e) => setReason(e.target.value)} />
            </label>
          </ConfirmButton>
          <ConfirmButton
            label="Retry failed tasks"
            title="Retry the failed tasks?"
            body={
              <p>
                {job.failedTasks} failed task{job.failedTasks === 1 ? '' : 's'} will run again, each
                with a fresh budget of attempts.
              </p>
            }
            confirmLabel="Retry failed tasks"
            disabled={job.failedTasks === 0}
            onConfirm={() =>
              act(
                () => retry({ jobId: job.id }),
                (d: { retryFailedTasks?: { retriedTasks: number } } | undefined) =>
                  `${d?.retryFailedTasks?.retriedTasks ?? 'The'} failed task(s) scheduled for another attempt.`,
              )
            }
          />
          <ConfirmButton
            label="Redrive dead letters"
            title="Redrive this job's dead letters?"
            body={<p>Each dead-lettered task of this job gets another attempt.</p>}
            confirmLabel="Redrive"
            disabled={job.failedTasks === 0}
            onConfirm={() =>
              act(
                () => redrive({ jobId: job.id }),
                (d: { redriveDeadLetters?: { redriven: number; removed: number } } | undefined) =>
                  `${d?.redriveDeadLetters?.redriven ?? 0} task(s) redriven, ${d?.redriveDeadLetters?.removed ?? 0} dead letter(s) removed.`,
              )
            }
          />
        </div>
      </div>
      {notice && (
        <p className={notice.kind === 'ok' ? 'notice' : 'error'} role="status">
          {notice.text}
        </p>
      )}
      {job.errorMessage && <p className="error">Error: {job.errorMessage}</p>}
      {job.cancelReason && <p className="notice">Cancelled: {job.cancelReason}</p>}
      <ExecutionLink jobId={job.id} refreshKey={job.updatedAt} />

      <div className="card progress-card">
        <div className="progress-line">
          <ProgressBar job={job} label="Job progress" />
          <strong data-testid="job-progress">{Math.floor(p.percent)}%</strong>
        </div>
        <dl className="stats">
          <div>
            <dt>Completed</dt>
            <dd data-testid="count-completed">{job.completedTasks}</dd>
          </div>
          <div>
            <dt>Failed</dt>
            <dd data-testid="count-failed">{job.failedTasks}</dd>
          </div>
          <div>
            <dt>Running</dt>
            <dd>{job.runningTasks}</dd>
          </div>
          <div>
            <dt>Queued</dt>
            <dd>{job.queuedTasks}</dd>
          </div>
          <div>
            <dt>Retrying</dt>
            <dd>{job.retryingTasks}</dd>
          </div>
          <div>
            <dt>Total</dt>
            <dd>
              {job.totalTasks}
              {job.tasksCreated < job.totalTasks && (
                <span className="small"> ({job.tasksCreated} created)</span>
              )}
            </dd>
          </div>
          <div>
            <dt>Throughput</dt>
            <dd>{formatRate(rate)}</dd>
          </div>
          <div>
            <dt>ETA</dt>
            <dd>{isLive ? formatDuration(eta) : 'done'}</dd>
          </div>
          <div>
            <dt>Elapsed</dt>
            <dd>{formatDuration(elapsed)}</dd>
          </div>
        </dl>
      </div>

      <details className="card params">
        <summary>Parameters and limits</summary>
        <p className="small">
          Max attempts {job.maxAttempts ?? '—'} · timeout {job.timeoutSeconds ?? '—'} s · submitted{' '}
          {new Date(job.createdAt).toLocaleString()}
        </p>
        {/* Scrollable regions are focusable, so the keyboard can scroll them. */}
        <pre className="mono" tabIndex={0} aria-label="Job parameters (JSON)">
          {JSON.stringify(job.parameters ?? {}, null, 2)}
        </pre>
      </details>

      <div className="detail-grid">
        <section className="card" aria-labelledby="tasks-title">
          <div className="page-head">
            <h2 id="tasks-title">Tasks</h2>
            <label>
              Status{' '}
              <select
                value={table.status ?? ''}
                onChange={(e) => setTable((e.target.value || null) as TaskStatus | null, [])}
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
                    <td data-label="#">{t.index}</td>
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
          <nav className="pager" aria-label="Pages of tasks">
            <button
              type="button"
              className="btn secondary"
              disabled={table.cursors.length === 0}
              onClick={() => setTable(table.status, table.cursors.slice(0, -1))}
            >
              Previous
            </button>
            <span>
              Tasks {table.cursors.length * TASK_PAGE + 1}–
              {table.cursors.length * TASK_PAGE + tasks.edges.length}
            </span>
            <button
              type="button"
              className="btn secondary"
              disabled={!tasks.pageInfo.hasNextPage || !tasks.pageInfo.endCursor}
              onClick={() =>
                tasks.pageInfo.endCursor &&
                setTable(table.status, [...table.cursors, tasks.pageInfo.endCursor])
              }
            >
              Next
            </button>
          </nav>
        </section>

        <section className="card" aria-labelledby="history-title">
          <h2 id="history-title">History</h2>
          {history.error && <p className="error">Could not load the history.</p>}
          <ol className="timeline" data-testid="history" tabIndex={0} aria-labelledby="history-title">
            {history.data?.job?.history.edges.map(({ cursor, node: e }) => (
              <li key={cursor} className={`ev ev-${e.eventType}`}>
                <time dateTime={e.at}>{new Date(e.at).toLocaleTimeString()}</time>
                <span className="ev-type">{e.eventType}</span>
                {e.step && <span className="small"> {e.step}</span>}
                {e.taskIndex != null && <span className="small"> task {e.taskIndex}</span>}
                {e.attempt != null && <span className="small"> attempt {e.attempt}</span>}
                {e.error && <span className="small wrap ev-error"> — {e.error}</span>}
              </li>
            ))}
          </ol>
          {history.data?.job?.history.pageInfo.hasNextPage &&
            (HISTORY_PAGE * historyPages < 1000 ? (
              <button
                type="button"
                className="btn secondary"
                onClick={() => setHistoryPages((n) => n + 1)}
              >
                Show more events
              </button>
            ) : (
              <p className="small">Showing the first 1000 events.</p>
            ))}
        </section>
      </div>
    </section>
  );
}
