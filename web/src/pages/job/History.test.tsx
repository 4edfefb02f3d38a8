import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanup, render, screen, within } from '@testing-library/react';
import { MemoryRouter } from 'react-router-dom';
import { History } from './History';
import type { JobHistory } from '../../lib/queries';

afterEach(cleanup);

const JOB = 'aaaaaaaa-0000-0000-0000-000000000001';

const event = (n: number, eventType: string, actor: string | null, taskIndex: number | null = null) => ({
  cursor: `0.${n}`,
  node: {
    eventType,
    at: `2026-01-01T10:00:0${n}Z`,
    taskId: taskIndex == null ? null : `t${taskIndex}`,
    taskIndex,
    attempt: taskIndex == null ? null : 1,
    worker: null,
    actor,
    error: null,
    step: null,
    priority: null,
    previousPriority: null,
  },
});

function renderHistory(history: JobHistory) {
  render(
    <MemoryRouter>
      <History
        jobId={JOB}
        history={history}
        error={undefined}
        canShowMore
        showMore={vi.fn()}
        filter={{ newestFirst: true, eventType: null, taskIndex: null }}
        setFilter={vi.fn()}
      />
    </MemoryRouter>,
  );
}

describe('History', () => {
  it("shows who appended each event: a token's name, the orchestrator, a worker", () => {
    renderHistory({
      edges: [
        event(3, 'JobCancelled', 'ops-token'),
        event(2, 'TaskStarted', 'worker:host-7', 4),
        event(1, 'TasksCreated', 'orchestrator'),
        event(0, 'JobSubmitted', null),
      ],
      pageInfo: { hasNextPage: false, endCursor: '0.0' },
    });
    const items = within(screen.getByTestId('history')).getAllByRole('listitem');
    expect(items).toHaveLength(4);
    expect(items[0].textContent).toContain('JobCancelled');
    expect(within(items[0]).getByTestId('history-actor').textContent).toBe(' by ops-token');
    expect(items[1].textContent).toContain('by worker:host-7');
    expect(within(items[1]).getByRole('link', { name: 'task 4' }).getAttribute('href')).toBe(`/jobs/${JOB}/tasks/4`);
    expect(items[2].textContent).toContain('by orchestrator');
    // A command issued without a token has no actor: nothing is made up.
    expect(within(items[3]).queryByTestId('history-actor')).toBeNull();
    expect(items[3].textContent).not.toContain(' by ');
  });
});
