import { ProgressBar } from '../../components/ProgressBar';
import { formatDuration, formatRate, progressOf } from '../../lib/progress';
import type { JobDetail } from '../../lib/queries';
import type { Pace } from './useJobDetail';

/** The job's progress bar and its counts, throughput, ETA and elapsed time. */
export function JobProgress({
  job,
  pace,
  past = false,
}: {
  job: JobDetail;
  pace: Pace;
  /** The job is shown as of a past moment: no throughput or ETA. */
  past?: boolean;
}) {
  const p = progressOf(job);
  return (
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
          <dd>{formatRate(pace.rate)}</dd>
        </div>
        <div>
          <dt>ETA</dt>
          <dd>{past ? '—' : pace.isLive ? formatDuration(pace.eta) : 'done'}</dd>
        </div>
        <div>
          <dt>Elapsed</dt>
          <dd>{formatDuration(pace.elapsed)}</dd>
        </div>
      </dl>
    </div>
  );
}

/** The job's limits and parameters, folded. */
export function JobParameters({ job }: { job: JobDetail }) {
  return (
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
  );
}
