import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanup, fireEvent, render, screen, waitFor, within } from '@testing-library/react';
import { MemoryRouter } from 'react-router-dom';
import { Provider, type Client } from 'urql';
import { fromValue } from 'wonka';
import { pan, rowCount, Timeline, xSpan, zoom } from './Timeline';
import type { JobTimeline } from '../../lib/queries';

afterEach(cleanup);

const base: JobTimeline = {
  from: '2026-01-01T10:00:00.000Z',
  to: '2026-01-01T10:00:10.000Z',
  groupBy: 'TASK',
  laneCount: 3,
  workers: [],
  attemptCount: 3,
  aggregated: false,
  bars: [0, 1, 2].map((i) => ({
    taskIndex: i,
    attempt: 1,
    lane: i,
    worker: 'w1',
    queuedAt: '2026-01-01T10:00:00.000Z',
    startedAt: '2026-01-01T10:00:01.000Z',
    endedAt: '2026-01-01T10:00:02.000Z',
    durationMs: 1000,
    outcome: 'COMPLETED' as const,
  })),
  buckets: [],
  slowest: [
    { taskIndex: 2, attempt: 1, worker: 'w1', durationMs: 9000, outcome: 'FAILED' as const },
    { taskIndex: 0, attempt: 1, worker: 'w1', durationMs: 1000, outcome: 'COMPLETED' as const },
  ],
  medianMs: 1000,
  p95Ms: 9000,
};

describe('timeline geometry', () => {
  const bounds = { from: 0, to: 1000 };
  it('zooms around the middle and stays inside the job', () => {
    expect(zoom(bounds, 0.5, bounds)).toEqual({ from: 250, to: 750 });
    expect(zoom({ from: 0, to: 100 }, 0.5, bounds)).toEqual({ from: 25, to: 75 });
    expect(zoom({ from: 900, to: 1000 }, 4, bounds)).toEqual({ from: 600, to: 1000 });
    expect(zoom({ from: 250, to: 750 }, 4, bounds)).toEqual({ from: 0, to: 1000 });
  });
  it('pans by a share of the window, not past the ends', () => {
    expect(pan({ from: 250, to: 750 }, 0.5, bounds)).toEqual({ from: 500, to: 1000 });
    expect(pan({ from: 500, to: 1000 }, 0.5, bounds)).toEqual({ from: 500, to: 1000 });
    expect(pan({ from: 100, to: 300 }, -1, bounds)).toEqual({ from: 0, to: 200 });
  });
  it('maps times to pixels, at least one pixel wide, clipped', () => {
    expect(xSpan(250, 500, bounds, 400)).toEqual([100, 200]);
    expect(xSpan(300, 300, bounds, 400)).toEqual([120, 121]);
    expect(xSpan(-100, 2000, bounds, 400)).toEqual([0, 400]);
  });
  it('draws a row per lane, or per block of lanes when aggregated', () => {
    expect(rowCount(base)).toBe(3);
    const bucket = { from: base.from, to: base.to, attempts: 5, failed: 0, running: 0 };
    expect(
      rowCount({
        ...base,
        aggregated: true,
        bars: [],
        laneCount: 100_000,
        buckets: [
          { ...bucket, laneFrom: 0, laneTo: 1000 },
          { ...bucket, laneFrom: 0, laneTo: 1000 },
          { ...bucket, laneFrom: 1000, laneTo: 2000 },
        ],
      }),
    ).toBe(2);
  });
});

describe('Timeline', () => {
  it('lists the slowest attempts with links, marks stragglers, and zooms by asking again', async () => {
    const executeQuery = vi.fn((request: { variables: Record<string, unknown> }) =>
      fromValue({ operation: request, data: { job: { id: 'j1', timeline: base } }, stale: false, hasNext: false }),
    );
    const client = { executeQuery, executeSubscription: vi.fn(), executeMutation: vi.fn(), suspense: false } as unknown as Client;
    render(
      <Provider value={client}>
        <MemoryRouter>
          <Timeline jobId="j1" asOf={null} version="v1" bounds={{ from: Date.parse(base.from), to: Date.parse(base.to) }} />
        </MemoryRouter>
      </Provider>,
    );
    const slowest = await screen.findByTestId('slowest');
    const items = within(slowest).getAllByRole('listitem');
    expect(items[0].textContent).toContain('task 2');
    expect(items[0].textContent).toContain('straggler');
    expect(items[1].textContent).not.toContain('straggler');
    expect(within(items[0]).getByRole('link').getAttribute('href')).toBe('/jobs/j1/tasks/2');
    expect(screen.getByTestId('timeline-summary').textContent).toContain('3 attempts on 3 tasks');

    fireEvent.click(screen.getByRole('button', { name: 'Zoom in' }));
    await waitFor(() =>
      expect(executeQuery.mock.calls.at(-1)?.[0].variables).toMatchObject({
        from: '2026-01-01T10:00:02.500Z',
        to: '2026-01-01T10:00:07.500Z',
      }),
    );
    fireEvent.change(screen.getByLabelText('Group by'), { target: { value: 'WORKER' } });
    await waitFor(() => expect(executeQuery.mock.calls.at(-1)?.[0].variables).toMatchObject({ groupBy: 'WORKER' }));
  });

  it('reads a change that comes too soon after a read once the wait is over', () => {
    vi.useFakeTimers();
    try {
      const executeQuery = vi.fn((request: { variables: Record<string, unknown> }) =>
        fromValue({ operation: request, data: { job: { id: 'j1', timeline: base } }, stale: false, hasNext: false }),
      );
      const client = { executeQuery, executeSubscription: vi.fn(), executeMutation: vi.fn(), suspense: false } as unknown as Client;
      const at = (version: string) => (
        <Provider value={client}>
          <MemoryRouter>
            <Timeline jobId="j1" asOf={null} version={version} bounds={{ from: Date.parse(base.from), to: Date.parse(base.to) }} />
          </MemoryRouter>
        </Provider>
      );
      const view = render(at('v1'));
      const first = executeQuery.mock.calls.length;
      expect(first).toBeGreaterThan(0);
      // The job changes at once, and again: too soon to read, but not forgotten.
      view.rerender(at('v2'));
      view.rerender(at('v3'));
      expect(executeQuery.mock.calls.length).toBe(first);
      vi.advanceTimersByTime(5_000);
      expect(executeQuery.mock.calls.length).toBe(first + 1);
      // One trailing read for the burst, not one per change.
      vi.advanceTimersByTime(10_000);
      expect(executeQuery.mock.calls.length).toBe(first + 1);
    } finally {
      vi.useRealTimers();
    }
  });
});
