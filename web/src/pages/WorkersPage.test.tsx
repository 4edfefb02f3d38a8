import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanup, render, screen, within } from '@testing-library/react';
import { Provider, type Client } from 'urql';
import { fromValue } from 'wonka';
import { WorkersPage, formatAgo, formatRate, summarize } from './WorkersPage';
import type { WorkerInfo } from '../lib/queries';

afterEach(cleanup);

const worker = (id: string, status: string, slotsUsed: number, tasksPerSecond: number, since: number): WorkerInfo => ({
  id,
  host: 'host-a',
  queue: 'sql',
  version: '0.1.0',
  status: status as WorkerInfo['status'],
  slotsTotal: 16,
  slotsUsed,
  tasksPerSecond,
  tasksCompleted: 1234,
  tasksFailed: 5,
  startedAt: '2026-01-01T10:00:00Z',
  lastHeartbeatAt: '2026-01-01T10:05:00Z',
  secondsSinceHeartbeat: since,
  heartbeatIntervalSeconds: 5,
});

function renderPage(workers: WorkerInfo[]) {
  const executeQuery = vi.fn((request: unknown) =>
    fromValue({ operation: request, data: { workers }, stale: false, hasNext: false }),
  );
  const client = { executeQuery, executeMutation: vi.fn(), executeSubscription: vi.fn(), suspense: false } as unknown as Client;
  render(
    <Provider value={client}>
      <WorkersPage />
    </Provider>,
  );
  return executeQuery;
}

describe('WorkersPage', () => {
  it('lists each worker with its slots, throughput, last heartbeat and version; silent ones as such', async () => {
    renderPage([
      worker('host-a-11', 'RUNNING', 12, 41.5, 2),
      worker('host-b-12', 'DRAINING', 3, 2.25, 1),
      worker('host-c-13', 'SILENT', 16, 0, 42),
      worker('host-d-14', 'STOPPED', 0, 0, 300),
    ]);
    const rows = await screen.findAllByTestId('worker-row');
    expect(rows).toHaveLength(4);
    const [running, draining, silent, stopped] = rows;
    expect(running.textContent).toContain('host-a-11');
    expect(running.textContent).toContain('running');
    expect(running.textContent).toContain('12 of 16');
    expect(within(running).getByRole('img', { name: '12 of 16 slots in use' })).toBeTruthy();
    expect(running.textContent).toContain('42');
    expect(running.textContent).toContain('2 s ago');
    expect(running.textContent).toContain('0.1.0');
    expect(running.textContent).toContain('sql');
    expect(draining.textContent).toContain('draining');
    expect(silent.textContent).toContain('silent');
    expect(silent.textContent).toContain('missed three heartbeats');
    expect(silent.textContent).toContain('42 s ago');
    expect(stopped.textContent).toContain('stopped');
    expect(stopped.textContent).toContain('5 min ago');
    // The summary counts the workers taking tasks (running and draining) only.
    expect(screen.getByTestId('workers-summary').textContent).toBe('2 running, 15 of 32 slots in use, 44 tasks/s, 1 silent');
  });

  it('says how to start a worker when none reported', async () => {
    renderPage([]);
    expect(await screen.findByText(/No worker has reported in the last ten minutes/)).toBeTruthy();
  });

  it('formats ages and rates', () => {
    expect(formatAgo(0.4)).toBe('just now');
    expect(formatAgo(59.9)).toBe('59 s ago');
    expect(formatAgo(125)).toBe('2 min ago');
    expect(formatAgo(7300)).toBe('2 h ago');
    expect(formatRate(0)).toBe('0');
    expect(formatRate(2.25)).toBe('2.3');
    expect(formatRate(1234.4)).toBe('1,234');
    const s = summarize([worker('a', 'RUNNING', 1, 1, 0), worker('b', 'SILENT', 4, 9, 60)]);
    expect(s).toEqual({ live: 1, silent: 1, slotsUsed: 1, slotsTotal: 16, tasksPerSecond: 1 });
  });
});
