import { useEffect } from 'react';
import { useQuery } from 'urql';
import { JOB_EXECUTION_QUERY } from '../lib/queries';

/**
 * The job's AWS Step Functions execution (Step Functions driver only; renders nothing with the
 * built-in driver): the state machine's current state and a link to the execution in the AWS
 * console. Refetched whenever `refreshKey` (the job's `updatedAt`) changes.
 */
export function ExecutionLink({ jobId, refreshKey }: { jobId: string; refreshKey: string }) {
  const [result, reexecute] = useQuery({
    query: JOB_EXECUTION_QUERY,
    variables: { id: jobId },
  });
  useEffect(() => {
    reexecute({ requestPolicy: 'network-only' });
  }, [refreshKey, reexecute]);
  const execution = result.data?.job?.execution;
  if (!execution) return null;
  const state = execution.currentState
    ? `${execution.currentState} (${(execution.stateTransition ?? '').toLowerCase()})`
    : 'starting';
  return (
    <p className="notice" data-testid="job-execution">
      Step Functions: <span data-testid="execution-state">{state}</span> ·{' '}
      {execution.consoleUrl ? (
        <a href={execution.consoleUrl} target="_blank" rel="noreferrer" className="mono">
          {execution.arn}
        </a>
      ) : (
        <span className="mono">{execution.arn}</span>
      )}
    </p>
  );
}
