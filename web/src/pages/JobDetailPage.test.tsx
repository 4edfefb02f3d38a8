import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanup, fireEvent, render, screen, waitFor, within } from '@testing-library/react';
import { MemoryRouter, Route, Routes } from 'react-router-dom';
import { Provider, type Client } from 'urql';
import { fromValue, never } from 'wonka';
import type { DocumentNode } from 'graphql';
import { JobDetailPage } from './JobDetailPage';

afterEach(cleanup);

const job = (failed: number) => ({
  id: 'j1',
  jobType: 'thumbnails',
  status: failed ? 'FAILED' : 'RUNNING',
  totalTasks: 120,
  tasksCreated: 120,
  completedTasks: 30,
  failedTasks: failed,
  runningTasks: 4,
  queuedTasks: 80,
  retryingTasks: 0,
  progress: 0.25,
  createdAt: '2026-01-01T10:00:00Z',
  updatedAt: '2026-01-01T10:01:00Z',
  startedAt: '2026-01-01T10:00:01Z',
  completedAt: null,
  errorMessage: null,
  cancelReason: null,
  priority: 0,
  parameters: { size: 128 },
  maxAttempts: 3,
  timeoutSeconds: 60,
  maxConcurrency: 4,
  concurrencyKey: 'acme',
  limits: [{ kind: 'KEY', name: 'acme', maxConcurrency: 2, ratePerSecond: null }],
  tasks: {
    edges: [0, 1].map((index) => ({
      cursor: `t${index}`,
      node: {
        id: `task-${index}`,
        index,
        status: 'COMPLETED',
        attempt: 1,
        maxAttempts: 3,
        worker: 'worker-a',
        errorMessage: null,
        startedAt: '2026-01-01T10:00:02Z',
        completedAt: '2026-01-01T10:00:03Z',
        processingTimeSeconds: 1.25,
        deadLettered: false,
        waitingReason: null,
      },
    })),
    pageInfo: { hasNextPage: true, endCursor: 't1' },
  },
});

const history = {
  id: 'j1',
  history: {
    edges: ['JobSubmitted', 'TasksCreated'].map((eventType, i) => ({
      cursor: `h${i}`,
      node: {
        eventType,
        at: '2026-01-01T10:00:00Z',
        taskId: null,
        taskIndex: null,
        attempt: null,
        worker: null,
        error: null,
        priority: null,
        previousPriority: null,
      },
    })),
    pageInfo: { hasNextPage: true, endCursor: 'h1' },
  },
};

const priorityChanged = {
  cursor: 'h2',
  node: {
    eventType: 'JobPriorityChanged',
    at: '2026-01-01T10:00:30Z',
    taskId: null,
    taskIndex: null,
    attempt: null,
    worker: null,
    error: null,
    priority: 5,
    previousPriority: 0,
  },
};

const operationName = (query: DocumentNode) =>
  query.definitions.flatMap((d) => (d.kind === 'OperationDefinition' ? [d.name?.value] : []))[0];

function renderPage(
  failed = 0,
  executeMutation = vi.fn(),
  url = '/jobs/j1',
  tweak: (j: ReturnType<typeof job>) => ReturnType<typeof job> = (j) => j,
  moreHistory: (typeof priorityChanged)[] = [],
) {
  type Request = { query: DocumentNode; variables: Record<string, unknown> };
  const jobAt = (asOf: unknown) =>
    asOf
      ? { ...tweak(job(failed)), asOf, completedTasks: 3, queuedTasks: 107, progress: 0.025 }
      : {
          ...tweak(job(failed)),
          asOf: null,
          completedAt: url.includes('at=') ? '2026-01-01T10:00:50Z' : null,
        };
  const executeQuery = vi.fn((request: Request) =>
    fromValue({
      operation: request,
      data:
        operationName(request.query) === 'Job'
          ? { job: jobAt(request.variables.asOf) }
          : { job: { ...history, history: { ...history.history, edges: [...history.history.edges, ...moreHistory] } } },
      stale: false,
      hasNext: false,
    }),
  );
  const client = {
    executeQuery,
    executeSubscription: vi.fn(() => never),
    executeMutation,
    suspense: false,
  } as unknown as Client;
  render(
    <Provider value={client}>
      <MemoryRouter initialEntries={[url]}>
        <Routes>
          <Route path="/jobs/:id" element={<JobDetailPage />} />
        </Routes>
      </MemoryRouter>
    </Provider>,
  );
  return { executeQuery };
}

describe('JobDetailPage', () => {
  it('shows the job limits and why a task waits', async () => {
    renderPage(0, vi.fn(), '/jobs/j1', (j) => ({
      ...j,
      tasks: {
        ...j.tasks,
        edges: j.tasks.edges.map((edge, i) =>
          i === 0
            ? edge
            : {
                ...edge,
                node: {
                  ...edge.node,
                  status: 'ENQUEUED',
                  worker: null as unknown as string,
                  waitingReason: {
                    kind: 'LIMITED',
                    detail: "limited by the job's maxConcurrency 4",
                  } as unknown as null,
                },
              },
        ),
      },
    }));
    await screen.findByRole('heading', { level: 1, name: /thumbnails/ });
    expect(screen.getByTestId('job-limits').textContent).toBe(
      'Limits: 4 at once (this job) · key acme · key acme: 2 at once',
    );
    const waiting = screen.getByTestId('waiting-reason');
    expect(waiting.textContent).toBe('waiting: limited');
    expect(waiting.getAttribute('title')).toBe("limited by the job's maxConcurrency 4");
  });

  it('shows the job, its counts, tasks and history; Next reads the next page', async () => {
    const { executeQuery } = renderPage();
    await screen.findByRole('heading', { level: 1, name: /thumbnails/ });
    expect(screen.getByTestId('count-completed').textContent).toBe('30');
    expect(screen.getByTestId('job-progress').textContent).toBe('25%');
    expect(screen.getAllByTestId('task-attempt')).toHaveLength(2);
    expect(screen.getAllByText('1.25 s')).toHaveLength(2);
    const history = screen.getByTestId('history');
    expect(within(history).getAllByRole('listitem').map((li) => li.textContent)).toEqual([
      expect.stringContaining('JobSubmitted'),
      expect.stringContaining('TasksCreated'),
    ]);
    expect(screen.getByRole('button', { name: 'Show more events' })).toBeTruthy();
    // Nothing failed: nothing to retry or redrive; the job runs: it can be cancelled.
    const button = (name: string) => screen.getByRole('button', { name }) as HTMLButtonElement;
    expect(button('Retry failed tasks').disabled).toBe(true);
    expect(button('Cancel job').disabled).toBe(false);

    const pager = screen.getByRole('navigation', { name: 'Pages of tasks' });
    expect(pager.textContent).toContain('Tasks 1–2');
    fireEvent.click(within(pager).getByRole('button', { name: 'Next' }));
    await waitFor(() => expect(pager.textContent).toContain('Tasks 51–52'));
    const jobReads = executeQuery.mock.calls.filter(([r]) => operationName(r.query) === 'Job');
    expect(jobReads.at(-1)?.[0].variables).toMatchObject({ id: 'j1', first: 50, after: 't1' });
  });

  it('retries the failed tasks after confirmation and says how many', async () => {
    const executeMutation = vi.fn(() =>
      fromValue({ operation: {}, data: { retryFailedTasks: { retriedTasks: 2 } } }),
    );
    renderPage(2, executeMutation);
    fireEvent.click(await screen.findByRole('button', { name: 'Retry failed tasks' }));
    const dialog = await screen.findByRole('dialog', { name: 'Retry the failed tasks?' });
    expect(dialog.textContent).toContain('2 failed tasks will run again');
    fireEvent.click(within(dialog).getByRole('button', { name: 'Retry failed tasks' }));
    await screen.findByText('2 failed task(s) scheduled for another attempt.');
    const [operation] = executeMutation.mock.calls[0] as unknown as [{ variables: unknown }];
    expect(operation.variables).toEqual({ jobId: 'j1' });
  });

  it('sets the job priority in place, within its range', async () => {
    const executeMutation = vi.fn(() =>
      fromValue({ operation: {}, data: { setJobPriority: { id: 'j1', priority: 5 } } }),
    );
    renderPage(0, executeMutation);
    const input = (await screen.findByLabelText('Priority')) as HTMLInputElement;
    expect(input.value).toBe('0');
    const set = screen.getByRole('button', { name: 'Set priority' }) as HTMLButtonElement;
    expect(set.disabled).toBe(true);
    fireEvent.change(input, { target: { value: '2000' } });
    expect(set.disabled).toBe(true);
    fireEvent.change(input, { target: { value: '5' } });
    expect(set.disabled).toBe(false);
    fireEvent.click(set);
    await screen.findByText('Priority set to 5.');
    const [operation] = executeMutation.mock.calls[0] as unknown as [{ variables: unknown }];
    expect(operation.variables).toEqual({ jobId: 'j1', priority: 5 });
  });

  it('shows a priority change in the history', async () => {
    renderPage(0, vi.fn(), '/jobs/j1', (j) => j, [priorityChanged]);
    const history = await screen.findByTestId('history');
    await waitFor(() =>
      expect(within(history).getAllByRole('listitem').at(-1)?.textContent).toContain(
        'JobPriorityChanged priority 0 → 5',
      ),
    );
  });

  it('shows the job as of the moment in the address, and the scrubber moves it', async () => {
    const { executeQuery } = renderPage(0, vi.fn(), '/jobs/j1?at=2026-01-01T10:00:10.000Z');
    await screen.findByRole('heading', { level: 1, name: /thumbnails/ });
    await waitFor(() => expect(screen.getByTestId('count-completed').textContent).toBe('3'));
    expect(screen.getByTestId('job-progress').textContent).toBe('2%');
    const scrubber = screen.getByTestId('scrubber');
    expect(scrubber.textContent).toContain('As of');
    expect(within(scrubber).getByRole('button', { name: 'Back to live' })).toBeTruthy();

    // Moving the slider reads the job as of the new moment once it rests.
    const slider = within(scrubber).getByRole('slider') as HTMLInputElement;
    fireEvent.change(slider, { target: { value: '500' } });
    await waitFor(() => {
      const asOfs = executeQuery.mock.calls
        .filter(([r]) => operationName(r.query) === 'Job')
        .map(([r]) => r.variables.asOf);
      expect(asOfs).toContain('2026-01-01T10:00:25.000Z');
    });

    // Back to live: the live counts again.
    fireEvent.click(within(scrubber).getByRole('button', { name: 'Back to live' }));
    await waitFor(() => expect(screen.getByTestId('count-completed').textContent).toBe('30'));
    expect(screen.getByTestId('scrubber').textContent).toContain('Live');
  });

  it('filters the history by event type and task, newest first by default; events link to their task', async () => {
    const { executeQuery } = renderPage();
    await screen.findByRole('heading', { level: 1, name: /thumbnails/ });
    const historyReads = () =>
      executeQuery.mock.calls.filter(([r]) => operationName(r.query) === 'JobHistory').map(([r]) => r.variables);
    expect(historyReads()[0]).toMatchObject({ newestFirst: true, eventTypes: null, taskIndex: null });
    fireEvent.change(screen.getByLabelText('Event'), { target: { value: 'TaskFailed' } });
    await waitFor(() => expect(historyReads().at(-1)).toMatchObject({ eventTypes: ['TaskFailed'] }));
    fireEvent.change(screen.getByLabelText('Task'), { target: { value: '7' } });
    await waitFor(() => expect(historyReads().at(-1)).toMatchObject({ eventTypes: ['TaskFailed'], taskIndex: 7 }));
    fireEvent.change(screen.getByLabelText('Order'), { target: { value: 'oldest' } });
    await waitFor(() => expect(historyReads().at(-1)).toMatchObject({ newestFirst: false }));
  });
});
