import { useState } from 'react';
import { Link } from 'react-router-dom';
import { useMutation } from 'urql';
import {
  CANCEL_JOB,
  REDRIVE,
  RETRY_FAILED,
  SET_JOB_PRIORITY,
  type JobDetail,
} from '../../lib/queries';
import { StatusBadge } from '../../components/StatusBadge';
import { ConfirmButton } from '../../components/ConfirmButton';
import { ExecutionLink } from '../../components/ExecutionLink';

type Notice = { kind: 'ok' | 'error'; text: string };

/** Highest and lowest priorities (the server refuses others). */
export const MAX_PRIORITY = 1000;
export const MIN_PRIORITY = -1000;

const ENDED = ['COMPLETED', 'FAILED', 'CANCELLED'];

/**
 * The job's title and status, its actions (Cancel, Retry failed tasks, Redrive dead letters,
 * each confirmed in a dialog; its priority, set in place) with their outcome, and why the job
 * failed or was cancelled. `onChanged` runs after each action (the page re-reads the job).
 */
export function JobHeader({
  job,
  isLive,
  onChanged,
}: {
  job: JobDetail;
  isLive: boolean;
  onChanged: () => void;
}) {
  const [, cancel] = useMutation(CANCEL_JOB);
  const [, retry] = useMutation(RETRY_FAILED);
  const [, redrive] = useMutation(REDRIVE);
  const [, setPriority] = useMutation(SET_JOB_PRIORITY);
  const [notice, setNotice] = useState<Notice | null>(null);
  const [reason, setReason] = useState('');
  // The priority being edited; null shows the job's own.
  const [priority, setPriorityDraft] = useState<string | null>(null);
  const shownPriority = priority ?? String(job.priority);
  const wanted = Number(shownPriority);
  const priorityValid =
    shownPriority.trim() !== '' &&
    Number.isInteger(wanted) &&
    wanted >= MIN_PRIORITY &&
    wanted <= MAX_PRIORITY;
  const canPrioritize = isLive && !ENDED.includes(job.status);

  const act = async <T,>(
    run: () => Promise<{ error?: { message: string }; data?: T }>,
    done: (data: T | undefined) => string,
  ): Promise<void> => {
    const r = await run();
    setNotice(
      r.error ? { kind: 'error', text: r.error.message } : { kind: 'ok', text: done(r.data) },
    );
    onChanged();
  };

  return (
    <>
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
                (d) =>
                  `${d?.retryFailedTasks.retriedTasks ?? 'The'} failed task(s) scheduled for another attempt.`,
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
                (d) =>
                  `${d?.redriveDeadLetters.redriven ?? 0} task(s) redriven, ${d?.redriveDeadLetters.removed ?? 0} dead letter(s) removed.`,
              )
            }
          />
        </div>
      </div>
      <form
        className="priority-form"
        onSubmit={(e) => {
          e.preventDefault();
          if (!priorityValid) return;
          void act(
            () => setPriority({ jobId: job.id, priority: wanted }),
            (d) => `Priority set to ${d?.setJobPriority.priority ?? wanted}.`,
          ).then(() => setPriorityDraft(null));
        }}
      >
        <label>
          Priority{' '}
          <input
            type="number"
            inputMode="numeric"
            min={MIN_PRIORITY}
            max={MAX_PRIORITY}
            step={1}
            value={shownPriority}
            disabled={!canPrioritize}
            aria-describedby="priority-help"
            onChange={(e) => setPriorityDraft(e.target.value)}
          />
        </label>{' '}
        <button
          type="submit"
          className="btn secondary"
          disabled={!canPrioritize || !priorityValid || wanted === job.priority}
        >
          Set priority
        </button>{' '}
        <span id="priority-help" className="small">
          Higher runs first ({MIN_PRIORITY} to {MAX_PRIORITY}); jobs of equal priority share the
          workers.
        </span>
      </form>
      {notice && (
        <p className={notice.kind === 'ok' ? 'notice' : 'error'} role="status">
          {notice.text}
        </p>
      )}
      {(job.maxConcurrency != null || job.concurrencyKey != null || job.limits.length > 0) && (
        <p className="small" data-testid="job-limits">
          Limits:{' '}
          {[
            job.maxConcurrency != null ? `${job.maxConcurrency} at once (this job)` : null,
            job.concurrencyKey != null ? `key ${job.concurrencyKey}` : null,
            ...job.limits.map(
              (l) =>
                `${l.kind === 'JOB_TYPE' ? 'type' : 'key'} ${l.name}: ` +
                [
                  l.maxConcurrency != null ? `${l.maxConcurrency} at once` : null,
                  l.ratePerSecond != null ? `${l.ratePerSecond}/s` : null,
                ]
                  .filter(Boolean)
                  .join(', '),
            ),
          ]
            .filter(Boolean)
            .join(' · ')}
        </p>
      )}
      {job.errorMessage && <p className="error">Error: {job.errorMessage}</p>}
      {job.cancelReason && <p className="notice">Cancelled: {job.cancelReason}</p>}
      <ExecutionLink jobId={job.id} refreshKey={job.updatedAt} />
    </>
  );
}
