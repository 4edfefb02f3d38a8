import { useSearchParams } from 'react-router-dom';
import { useQuery } from 'urql';
import {
  Bar,
  BarChart,
  CartesianGrid,
  Cell,
  Legend,
  Line,
  LineChart,
  ResponsiveContainer,
  Tooltip,
  XAxis,
  YAxis,
} from 'recharts';
import { ANALYTICS_QUERY, ANALYTICS_UPDATED } from '../lib/queries';
import { useLiveRefresh } from '../lib/live';
import { TIMELINE_DAYS, parseDays } from '../lib/urlState';
import { formatDuration } from '../lib/progress';

// Colours readable on white (contrast >= 3:1 for graphics).
export const STATUS_COLORS: Record<string, string> = {
  COMPLETED: '#1a7f37',
  FAILED: '#c62828',
  RUNNING: '#0b5cad',
  RETRYING: '#b35900',
  CANCELLED: '#57606a',
  PENDING: '#6e40c9',
  ENQUEUED: '#8250df',
  CREATING_TASKS: '#9a6700',
};

function ChartCard({ title, children }: { title: string; children: React.ReactNode }) {
  return (
    <figure className="card chart" aria-label={title}>
      <figcaption>{title}</figcaption>
      <div className="chart-body">{children}</div>
    </figure>
  );
}

export function AnalyticsPage() {
  const [params, setParams] = useSearchParams();
  const days = parseDays(params);
  const [result, reexecute] = useQuery({
    query: ANALYTICS_QUERY,
    variables: { days },
  });
  useLiveRefresh(ANALYTICS_UPDATED, {}, () => reexecute({ requestPolicy: 'network-only' }));
  const a = result.data?.analytics;

  if (result.error && !a)
    return (
      <p className="error" role="alert">
        Could not load analytics: {result.error.message}
      </p>
    );
  if (!a) return <p aria-busy="true">Loading…</p>;

  const o = a.overview;
  const cards: [string, string][] = [
    ['Jobs', String(o.totalJobs)],
    ['Running jobs', String(o.runningJobs)],
    ['Completed jobs', String(o.completedJobs)],
    ['Failed jobs', String(o.failedJobs)],
    ['Success rate', `${o.successRate.toFixed(1)}%`],
    ['Tasks', String(o.totalTasks)],
    ['Tasks completed', String(o.completedTasks)],
    ['Tasks failed', String(o.failedTasks)],
    ['Avg task time', formatDuration(o.avgProcessingTimeSeconds)],
  ];
  const pt = a.processingTime;
  const percentiles = (['min', 'p50', 'avg', 'p95', 'p99', 'max'] as const).map((k) => ({
    name: k,
    seconds: pt[k] ?? 0,
  }));
  const throughput = a.throughput.map((m) => ({
    ...m,
    label: new Date(m.minute).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }),
  }));

  return (
    <section aria-labelledby="analytics-title">
      <div className="page-head">
        <h1 id="analytics-title">Analytics</h1>
        <label>
          Timeline{' '}
          <select
            value={days}
            onChange={(e) => {
              const next = new URLSearchParams(params);
              next.set('days', e.target.value);
              setParams(next);
            }}
          >
            {TIMELINE_DAYS.map((d) => (
              <option key={d} value={d}>
                last {d} days
              </option>
            ))}
          </select>
        </label>
      </div>
      <dl className="overview">
        {cards.map(([label, value]) => (
          <div className="card" key={label}>
            <dt>{label}</dt>
            <dd>{value}</dd>
          </div>
        ))}
      </dl>
      <div className="charts">
        <ChartCard title="Jobs by type">
          <ResponsiveContainer width="100%" height={240}>
            <BarChart data={a.jobsByType}>
              <CartesianGrid strokeDasharray="3 3" />
              <XAxis dataKey="jobType" />
              <YAxis allowDecimals={false} />
              <Tooltip />
              <Bar dataKey="count" name="Jobs" fill="#0b5cad" isAnimationActive={false} />
            </BarChart>
          </ResponsiveContainer>
        </ChartCard>
        <ChartCard title="Jobs by status">
          <ResponsiveContainer width="100%" height={240}>
            <BarChart data={a.jobsByStatus}>
              <CartesianGrid strokeDasharray="3 3" />
              <XAxis dataKey="status" />
              <YAxis allowDecimals={false} />
              <Tooltip />
              <Bar dataKey="count" name="Jobs" isAnimationActive={false}>
                {a.jobsByStatus.map((d) => (
                  <Cell key={d.status} fill={STATUS_COLORS[d.status] ?? '#444'} />
                ))}
              </Bar>
            </BarChart>
          </ResponsiveContainer>
        </ChartCard>
        <ChartCard title="Tasks by status">
          <ResponsiveContainer width="100%" height={240}>
            <BarChart data={a.tasksByStatus}>
              <CartesianGrid strokeDasharray="3 3" />
              <XAxis dataKey="status" />
              <YAxis allowDecimals={false} />
              <Tooltip />
              <Bar dataKey="count" name="Tasks" isAnimationActive={false}>
                {a.tasksByStatus.map((d) => (
                  <Cell key={d.status} fill={STATUS_COLORS[d.status] ?? '#444'} />
                ))}
              </Bar>
            </BarChart>
          </ResponsiveContainer>
        </ChartCard>
        <ChartCard title={`Timeline, last ${days} days`}>
          <ResponsiveContainer width="100%" height={240}>
            <BarChart data={a.timeline}>
              <CartesianGrid strokeDasharray="3 3" />
              <XAxis dataKey="date" />
              <YAxis allowDecimals={false} />
              <Tooltip />
              <Legend />
              <Bar dataKey="jobsSubmitted" name="Jobs submitted" fill="#6e40c9" isAnimationActive={false} />
              <Bar dataKey="tasksCompleted" name="Tasks completed" fill="#1a7f37" isAnimationActive={false} />
              <Bar dataKey="tasksFailed" name="Tasks failed" fill="#c62828" isAnimationActive={false} />
            </BarChart>
          </ResponsiveContainer>
        </ChartCard>
        <ChartCard title={`Processing time (seconds, ${pt.count ?? 0} tasks)`}>
          <ResponsiveContainer width="100%" height={240}>
            <BarChart data={percentiles}>
              <CartesianGrid strokeDasharray="3 3" />
              <XAxis dataKey="name" />
              <YAxis />
              <Tooltip />
              <Bar dataKey="seconds" name="Seconds" fill="#9a6700" isAnimationActive={false} />
            </BarChart>
          </ResponsiveContainer>
        </ChartCard>
        <ChartCard title="Throughput, tasks per minute (last hour)">
          <ResponsiveContainer width="100%" height={240}>
            <LineChart data={throughput}>
              <CartesianGrid strokeDasharray="3 3" />
              <XAxis dataKey="label" minTickGap={24} />
              <YAxis allowDecimals={false} />
              <Tooltip />
              <Legend />
              <Line dataKey="tasksCompleted" name="Completed" stroke="#1a7f37" dot={false} isAnimationActive={false} />
              <Line dataKey="tasksFailed" name="Failed" stroke="#c62828" dot={false} isAnimationActive={false} />
            </LineChart>
          </ResponsiveContainer>
        </ChartCard>
      </div>
    </section>
  );
}
