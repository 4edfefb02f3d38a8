import { useState } from 'react';
import { Link } from 'react-router-dom';
import { useMutation, useQuery } from 'urql';
import { DEAD_LETTERS_QUERY, REDRIVE_SELECTED, type DeadLetter } from '../lib/queries';

/** Dead letters the page lists at most. */
export const DEAD_LETTERS_SHOWN = 500;

/** The task's index, read from the start of the message body (`"task_index":N`). */
export function taskIndexOf(letter: DeadLetter): number | null {
  const match = /"task_index"\s*:\s*(\d+)/.exec(letter.bodyPreview);
  return match ? Number(match[1]) : null;
}

/**
 * The task queue's dead-letter queue: what is there, why, from which job and task; redrive of
 * a selection (each FAILED task gets another attempt) or of everything.
 */
export function DeadLettersPage() {
  const [result, reexecute] = useQuery({ query: DEAD_LETTERS_QUERY, variables: { limit: DEAD_LETTERS_SHOWN } });
  const [redriving, redrive] = useMutation(REDRIVE_SELECTED);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [notice, setNotice] = useState<{ kind: 'ok' | 'error'; text: string } | null>(null);
  const letters = result.data?.deadLetters ?? [];
  const selectable = letters.filter((l) => l.taskId);

  const run = async (taskIds: string[] | null) => {
    const r = await redrive({ taskIds });
    if (r.error) {
      setNotice({ kind: 'error', text: r.error.message });
    } else if (r.data) {
      const o = r.data.redriveDeadLetters;
      setNotice({
        kind: 'ok',
        text: `${o.redriven} task(s) scheduled for another attempt, ${o.resent} message(s) sent back, ${o.removed} dead letter(s) removed, ${o.skipped} left.`,
      });
      setSelected(new Set());
    }
    reexecute({ requestPolicy: 'network-only' });
  };
  const toggle = (taskId: string) =>
    setSelected((s) => {
      const next = new Set(s);
      if (next.has(taskId)) next.delete(taskId);
      else next.add(taskId);
      return next;
    });

  return (
    <section aria-labelledby="dlq-title">
      <div className="page-head">
        <h1 id="dlq-title">Dead letters</h1>
        <div className="actions">
          <button
            type="button"
            className="btn"
            disabled={selected.size === 0 || redriving.fetching}
            onClick={() => run([...selected])}
          >
            Redrive selected ({selected.size})
          </button>
          <button
            type="button"
            className="btn secondary"
            disabled={letters.length === 0 || redriving.fetching}
            onClick={() => run(null)}
          >
            Redrive all
          </button>
        </div>
      </div>
      {notice && (
        <p className={notice.kind === 'ok' ? 'notice' : 'error'} role="status">
          {notice.text}
        </p>
      )}
      {result.error && <p className="error">Could not list the dead letters: {result.error.message}</p>}
      <div className="table-wrap" tabIndex={0} role="region" aria-labelledby="dlq-title">
        <table className="dlq-table">
          <thead>
            <tr>
              <th scope="col">
                <input
                  type="checkbox"
                  aria-label="Select every dead letter"
                  checked={selectable.length > 0 && selectable.every((l) => selected.has(l.taskId!))}
                  onChange={(e) => setSelected(new Set(e.target.checked ? selectable.map((l) => l.taskId!) : []))}
                />
              </th>
              <th scope="col">Job and task</th>
              <th scope="col">Why</th>
              <th scope="col">When</th>
              <th scope="col">Message</th>
            </tr>
          </thead>
          <tbody>
            {letters.map((l) => {
              const index = taskIndexOf(l);
              return (
                <tr key={l.id} data-testid="dead-letter-row">
                  <td data-label="Select">
                    {l.taskId && (
                      <input
                        type="checkbox"
                        aria-label={`Select task ${index ?? l.taskId}`}
                        checked={selected.has(l.taskId)}
                        onChange={() => toggle(l.taskId!)}
                      />
                    )}
                  </td>
                  <td data-label="Job and task">
                    {l.jobId ? <Link to={`/jobs/${l.jobId}`}>job {l.jobId.slice(0, 8)}…</Link> : 'no job'}
                    {l.jobId && index != null && (
                      <>
                        {' / '}
                        <Link to={`/jobs/${l.jobId}/tasks/${index}`}>task {index}</Link>
                      </>
                    )}
                    {!l.taskId && <span className="small"> (poison message: no task)</span>}
                  </td>
                  <td data-label="Why" className="small wrap">
                    {l.reason}
                  </td>
                  <td data-label="When" className="small">
                    <time dateTime={l.deadLetteredAt}>{new Date(l.deadLetteredAt).toLocaleString()}</time>
                  </td>
                  <td data-label="Message" className="mono small wrap">
                    {l.bodyPreview}
                  </td>
                </tr>
              );
            })}
            {letters.length === 0 && !result.fetching && (
              <tr>
                <td colSpan={5}>The dead-letter queue is empty.</td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
    </section>
  );
}
