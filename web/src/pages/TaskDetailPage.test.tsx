import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanup, fireEvent, render, screen, waitFor, within } from '@testing-library/react';
import { MemoryRouter, Route, Routes } from 'react-router-dom';
import { Provider, type Client } from 'urql';
import { fromValue, makeSubject } from 'wonka';
import type { DocumentNode } from 'graphql';
import { TaskDetailPage } from './TaskDetailPage';
import { JsonBlock, JSON_PREVIEW_CHARS } from '../components/JsonBlock';

afterEach(cleanup);

const task = (status: string) => ({
  id: 't3',
  jobId: 'j1',
  index: 3,
  jobType: 'exec',
  status,
  attempt: 2,
  maxAttempts: 2,
  timeoutSeconds: 60,
  worker: 'worker-b',
  parameters: { command: 'work', items: [1, 2, 3] },
  result: status === 'COMPLETED' ? { rows: 7 } : null,
  errorMessage: status === 'FAILED' ? 'bad input 3' : null,
  createdAt: '2026-01-01T10:00:00Z',
  updatedAt: '2026-01-01T10:00:05Z',
  startedAt: '2026-01-01T10:00:03Z',
  completedAt: '2026-01-01T10:00:05Z',
  nextAttemptAt: null,
  processingTimeSeconds: null,
  deadLettered: status === 'FAILED',
  waitingReason: null,
  attempts: [
    {
      attempt: 1,
      queuedAt: '2026-01-01T10:00:00Z',
      notBefore: null,
      worker: 'worker-a',
      startedAt: '2026-01-01T10:00:01Z',
      endedAt: '2026-01-01T10:00:01.300Z',
      durationMs: 300,
      outcome: 'RETRIED',
      error: 'bad input 3',
      retryBackoffMs: 1500,
      retryManual: false,
      deadLetterReason: null,
    },
    {
      attempt: 2,
      queuedAt: '2026-01-01T10:00:01.300Z',
      notBefore: '2026-01-01T10:00:02.800Z',
      worker: 'worker-b',
      startedAt: '2026-01-01T10:00:03Z',
      endedAt: status === 'RUNNING' ? null : '2026-01-01T10:00:05Z',
      durationMs: status === 'RUNNING' ? null : 2000,
      outcome: status === 'RUNNING' ? 'RUNNING' : status === 'FAILED' ? 'FAILED' : 'COMPLETED',
      error: status === 'FAILED' ? 'bad input 3' : null,
      retryBackoffMs: null,
      retryManual: null,
      deadLetterReason: status === 'FAILED' ? 'attempts exhausted' : null,
    },
  ],
  events: {
    edges: ['TaskEnqueued', 'TaskStarted', 'TaskFailed'].map((eventType, i) => ({
      cursor: String(i + 1),
      node: { eventType, at: '2026-01-01T10:00:01Z', attempt: 1, worker: null, error: null },
    })),
    pageInfo: { hasNextPage: false },
  },
});

const operationName = (query: DocumentNode) =>
  query.definitions.flatMap((d) => (d.kind === 'OperationDefinition' ? [d.name?.value] : []))[0];

function renderPage(statuses: string[]) {
  let reads = 0;
  const executeQuery = vi.fn((request: { query: DocumentNode; variables: Record<string, unknown> }) => {
    const status = statuses[Math.min(reads++, statuses.length - 1)];
    return fromValue({ operation: request, data: { task: task(status) }, stale: false, hasNext: false });
  });
  const updates = makeSubject<unknown>();
  const client = {
    executeQuery,
    executeSubscription: vi.fn((request: { query: DocumentNode }) => {
      expect(operationName(request.query)).toBe('TaskUpdated');
      return updates.source;
    }),
    executeMutation: vi.fn(),
    suspense: false,
  } as unknown as Client;
  render(
    <Provider value={client}>
      <MemoryRouter initialEntries={['/jobs/j1/tasks/3']}>
        <Routes>
          <Route path="/jobs/:id/tasks/:index" element={<TaskDetailPage />} />
        </Routes>
      </MemoryRouter>
    </Provider>,
  );
  const send = (indexes: number[]) =>
    updates.next({
      operation: { kind: 'subscription' },
      data: { taskUpdated: { truncated: false, tasks: indexes.map((index) => ({ index })) } },
      stale: false,
      hasNext: true,
    });
  return { executeQuery, send };
}

describe('TaskDetailPage', () => {
  it('shows the attempts with their outcome, error, backoff and dead letter', async () => {
    renderPage(['FAILED']);
    await screen.findByRole('heading', { level: 1, name: /Task 3/ });
    const rows = screen.getAllByTestId('attempt-row');
    expect(rows).toHaveLength(2);
    expect(rows[0].textContent).toContain('retried');
    expect(rows[0].textContent).toContain('worker-a');
    expect(rows[0].textContent).toContain('300 ms');
    expect(rows[0].textContent).toContain('retried after a backoff of 1.50 s');
    expect(rows[1].textContent).toContain('failed');
    expect(rows[1].textContent).toContain('dead-lettered: attempts exhausted');
    expect(screen.getByTestId('dead-letter').textContent).toContain('in the DLQ');
    expect(screen.getByTestId('json-parameters').textContent).toContain('"command": "work"');
    expect(within(screen.getByTestId('task-events')).getAllByRole('listitem')).toHaveLength(3);
  });

  it('follows taskUpdated for its own task only', async () => {
    const { executeQuery, send } = renderPage(['RUNNING', 'COMPLETED']);
    await screen.findByRole('heading', { level: 1, name: /Task 3/ });
    expect(screen.getByText('No result yet.')).toBeTruthy();
    const reads = () => executeQuery.mock.calls.length;
    const before = reads();
    send([1, 2]);
    await new Promise((r) => setTimeout(r, 400));
    expect(reads()).toBe(before);
    send([3]);
    await waitFor(() => expect(screen.getByTestId('json-result').textContent).toContain('"rows": 7'));
  });
});

describe('JsonBlock', () => {
  it('truncates a large value and shows all of it on demand', () => {
    const big = { text: 'x'.repeat(JSON_PREVIEW_CHARS * 2) };
    render(<JsonBlock value={big} label="Result" />);
    const pre = screen.getByTestId('json-result');
    expect(pre.textContent!.length).toBeLessThan(JSON_PREVIEW_CHARS + 10);
    fireEvent.click(screen.getByRole('button', { name: /Show all/ }));
    expect(pre.textContent).toBe(JSON.stringify(big, null, 2));
  });

  it('copies the whole value', async () => {
    const writeText = vi.fn(() => Promise.resolve());
    Object.assign(navigator, { clipboard: { writeText } });
    render(<JsonBlock value={{ a: 1 }} label="Parameters" />);
    fireEvent.click(screen.getByRole('button', { name: 'Copy parameters' }));
    await screen.findByText('Copied.');
    expect(writeText).toHaveBeenCalledWith('{\n  "a": 1\n}');
  });
});
