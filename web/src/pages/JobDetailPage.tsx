import { Link, useParams, useSearchParams } from 'react-router-dom';
import { parseTaskTable, serializeTaskTable, type TaskTableState } from '../lib/urlState';
import { useJobDetail } from './job/useJobDetail';
import { JobHeader } from './job/JobHeader';
import { JobParameters, JobProgress } from './job/JobProgress';
import { TaskTable } from './job/TaskTable';
import { History } from './job/History';

export function JobDetailPage() {
  const { id = '' } = useParams();
  const [params, setParams] = useSearchParams();
  const table = parseTaskTable(params);
  const { job, error, fetching, gaveUp, refresh, history, pace } = useJobDetail(id, table);

  if (error && !job) {
    return (
      <p className="error" role="alert">
        Could not load the job: {error.message}
      </p>
    );
  }
  if (!job || !pace) {
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
      <JobHeader job={job} isLive={pace.isLive} onChanged={refresh} />
      <JobProgress job={job} pace={pace} />
      <JobParameters job={job} />
      <div className="detail-grid">
        <TaskTable tasks={job.tasks} table={table} onChange={setTable} />
        <History {...history} />
      </div>
    </section>
  );
}
