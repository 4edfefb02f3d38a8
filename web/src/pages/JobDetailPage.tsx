import { Link, useParams, useSearchParams } from 'react-router-dom';
import {
  parseAsOf,
  parseTaskTable,
  serializeAsOf,
  serializeTaskTable,
  type TaskTableState,
} from '../lib/urlState';
import { useNow } from '../lib/useNow';
import { lifetime, Scrubber } from './job/Scrubber';
import { Timeline } from './job/Timeline';
import { useJobDetail } from './job/useJobDetail';
import { JobHeader } from './job/JobHeader';
import { JobParameters, JobProgress } from './job/JobProgress';
import { TaskTable } from './job/TaskTable';
import { History } from './job/History';

export function JobDetailPage() {
  const { id = '' } = useParams();
  const [params, setParams] = useSearchParams();
  const table = parseTaskTable(params);
  const asOf = parseAsOf(params);
  const { job, liveJob, travelling, notYet, error, fetching, gaveUp, refresh, history, pace, shownPace } =
    useJobDetail(id, table, asOf);
  const now = useNow(1000);

  if (error && !job) {
    return (
      <p className="error" role="alert">
        Could not load the job: {error.message}
      </p>
    );
  }
  if (!job || !pace || !shownPace || !liveJob) {
    return (
      <section>
        <h1>Job {id}</h1>
        {gaveUp ? (
          <p className="error" role="alert">
            There is no job with this id. <Link to="/">Back to the jobs</Link>
          </p>
        ) : (
          <p aria-busy="true">{fetching ? 'Loading…' : 'Waiting for the job to appear…'}</p>
        )}
      </section>
    );
  }

  const setTable = (next: TaskTableState) =>
    setParams(serializeTaskTable(next, params), { replace: false });
  return (
    <section aria-labelledby="job-title">
      <JobHeader job={liveJob} isLive={pace.isLive} onChanged={refresh} />
      <Scrubber
        createdAt={liveJob.createdAt}
        completedAt={liveJob.completedAt}
        now={now}
        asOf={asOf}
        busy={travelling}
        onChange={(at) => setParams(serializeAsOf(at, params), { replace: true })}
      />
      {notYet && (
        <p className="notice">The job had not been submitted yet at that moment.</p>
      )}
      <JobProgress job={job} pace={shownPace} past={Boolean(asOf)} />
      <Timeline
        jobId={job.id}
        asOf={asOf}
        version={liveJob.updatedAt}
        bounds={(() => {
          const { start, end } = lifetime(liveJob.createdAt, liveJob.completedAt, now);
          return { from: start, to: asOf ? Math.max(start + 1, Date.parse(asOf)) : end };
        })()}
      />
      <JobParameters job={job} />
      <div className="detail-grid">
        <TaskTable jobId={job.id} tasks={job.tasks} table={table} onChange={setTable} />
        <History jobId={job.id} {...history} />
      </div>
    </section>
  );
}
