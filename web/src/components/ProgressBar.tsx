import { progressOf, type JobCounts } from '../lib/progress';

export function ProgressBar({ job, label }: { job: JobCounts; label: string }) {
  const p = progressOf(job);
  return (
    <div
      className="progress"
      role="progressbar"
      aria-label={label}
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={Math.round(p.percent)}
      aria-valuetext={`${Math.floor(p.percent)}% (${job.completedTasks} completed, ${job.failedTasks} failed of ${job.totalTasks})`}
    >
      <div className="seg seg-completed" style={{ width: `${p.completedPct}%` }} />
      <div className="seg seg-failed" style={{ width: `${p.failedPct}%` }} />
      <div className="seg seg-running" style={{ width: `${p.runningPct}%` }} />
    </div>
  );
}
