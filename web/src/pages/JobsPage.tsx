import { useEffect, useState } from 'react';
import { Link, useSearchParams } from 'react-router-dom';
import { useQuery } from 'urql';
import { JOBS_CHANGED, JOBS_QUERY, JOB_TYPES_QUERY } from '../lib/queries';
import { useLiveRefresh } from '../lib/live';
import { useNow } from '../lib/useNow';
import {
  JOB_SORTS,
  JOB_STATUSES,
  PAGE_SIZES,
  parseJobsList,
  serializeJobsList,
  withFilter,
  type JobStatus,
  type JobsListState,
} from '../lib/urlState';
import { formatAge, progressOf, shortId } from '../lib/progress';
import { ProgressBar } from '../components/ProgressBar';
import { StatusBadge } from '../components/StatusBadge';
import { Pager } from '../components/Pager';

export function JobsPage() {
  const [params, setParams] = useSearchParams();
  const state = parseJobsList(params);
  const update = (next: JobsListState) => setParams(serializeJobsList(next));
  const now = useNow(1000);

  // The search and type boxes write to the address a moment after typing stops.
  const [search, setSearch] = useState(state.search);
  const [jobType, setJobType] = useState(state.jobType);
  useEffect(() => setSearch(state.search), [state.search]);
  useEffect(() => setJobType(state.jobType), [state.jobType]);
  useEffect(() => {
    if (search === state.search && jobType === state.jobType) return;
    const id = setTimeout(() => update(withFilter(state, { search, jobType })), 300);
    return () => clearTimeout(id);
  });
  const [types] = useQuery({ query: JOB_TYPES_QUERY });

  const variables = {
    first: state.pageSize,
    after: state.cursors[state.cursors.length - 1] ?? null,
    status: state.status ? [state.status] : null,
    jobType: state.jobType || null,
    search: state.search || null,
    sort: state.sort ?? 'NEWEST',
  };
  const [result, reexecute] = useQuery({ query: JOBS_QUERY, variables });
  useLiveRefresh(JOBS_CHANGED, {}, () => reexecute({ requestPolicy: 'network-only' }));

  const jobs = result.data?.jobs;
  return (
    <section aria-labelledby="jobs-title">
      <div className="page-head">
        <h1 id="jobs-title">Jobs</h1>
        <Link className="btn" to="/submit">
          Submit a job
        </Link>
      </div>
      <form className="filters" role="search" onSubmit={(e) => e.preventDefault()}>
        <label>
          Search
          <input
            type="search"
            value={search}
            placeholder="Id, type or parameters"
            onChange={(e) => setSearch(e.target.value)}
          />
        </label>
        <label>
          Status
          <select
            value={state.status ?? ''}
            onChange={(e) =>
              update(withFilter(state, { status: (e.target.value || null) as JobStatus | null }))
            }
          >
            <option value="">Any</option>
            {JOB_STATUSES.map((s) => (
              <option key={s} value={s}>
                {s.replace('_', ' ').toLowerCase()}
              </option>
            ))}
          </select>
        </label>
        <label>
          Type
          <input
            type="text"
            list="job-types"
            value={jobType}
            placeholder="Any"
            onChange={(e) => setJobType(e.target.value)}
          />
          <datalist id="job-types">
            {types.data?.analytics.jobsByType.map((t) => (
              <option key={t.jobType} value={t.jobType} />
            ))}
          </datalist>
        </label>
        <label>
          Sort
          <select
            value={state.sort ?? 'NEWEST'}
            onChange={(e) =>
              update(
                withFilter(state, {
                  sort: JOB_SORTS.find((s) => s === e.target.value),
                }),
              )
            }
          >
            <option value="NEWEST">Newest first</option>
            <option value="OLDEST">Oldest first</option>
            <option value="PRIORITY">Highest priority first</option>
          </select>
        </label>
        <label>
          Per page
          <select
            value={state.pageSize}
            onChange={(e) => update(withFilter(state, { pageSize: Number(e.target.value) }))}
          >
            {PAGE_SIZES.map((n) => (
              <option key={n}>{n}</option>
            ))}
          </select>
        </label>
      </form>

      {result.error && (
        <p className="error" role="alert">
          Could not load jobs: {result.error.message}
        </p>
      )}
      {!jobs && result.fetching && <p aria-busy="true">Loading…</p>}
      {jobs && jobs.edges.length === 0 && (
        <p className="empty">
          No jobs {state.status || state.jobType || state.search ? 'match these filters' : 'yet'}.{' '}
          <Link to="/submit">Submit one</Link>.
        </p>
      )}
      {jobs && jobs.edges.length > 0 && (
        <div className="table-wrap" tabIndex={0} role="region" aria-label="Jobs">
          <table className="jobs-table">
            <caption className="sr-only">
              Jobs,{' '}
              {state.sort === 'PRIORITY'
                ? 'highest priority first'
                : state.sort === 'OLDEST'
                  ? 'oldest first'
                  : 'newest first'}
            </caption>
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Status</th>
                <th scope="col">Progress</th>
                <th scope="col">Tasks</th>
                <th scope="col">Priority</th>
                <th scope="col">Age</th>
              </tr>
            </thead>
            <tbody>
              {jobs.edges.map(({ node: job }) => {
                const p = progressOf(job);
                return (
                  <tr key={job.id} data-job-id={job.id}>
                    <td data-label="Job">
                      <Link to={`/jobs/${job.id}`}>
                        <span className="job-type">{job.jobType || '(no type)'}</span>
                        <span className="mono small">…{shortId(job.id)}</span>
                      </Link>
                    </td>
                    <td data-label="Status">
                      <StatusBadge status={job.status} />
                    </td>
                    <td data-label="Progress" className="progress-cell">
                      <ProgressBar job={job} label={`Progress of job ${shortId(job.id)}`} />
                      <span className="small">{Math.floor(p.percent)}%</span>
                    </td>
                    <td data-label="Tasks" className="small">
                      <span>
                        <span title="completed">✓ {job.completedTasks}</span>{' '}
                        <span title="failed">✗ {job.failedTasks}</span>{' '}
                        <span title="running">▶ {job.runningTasks}</span> / {job.totalTasks}
                      </span>
                    </td>
                    <td data-label="Priority" className="small" data-testid="job-priority">
                      {job.priority}
                    </td>
                    <td data-label="Age" className="small">
                      <time dateTime={job.createdAt}>{formatAge(job.createdAt, now)}</time>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      <Pager
        label="Pages of jobs"
        cursors={state.cursors}
        pageInfo={jobs?.pageInfo}
        onChange={(cursors) => update({ ...state, cursors })}
        withFirst
      >
        Page {state.cursors.length + 1}
      </Pager>
    </section>
  );
}
