import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanup, fireEvent, render, screen, within } from '@testing-library/react';
import { MemoryRouter } from 'react-router-dom';
import { Provider, type Client } from 'urql';
import { fromValue } from 'wonka';
import { DeadLettersPage, taskIndexOf } from './DeadLettersPage';

afterEach(cleanup);

const letter = (n: number, taskId: string | null) => ({
  id: `dl${n}`,
  jobId: 'aaaaaaaa-0000-0000-0000-000000000001',
  taskId,
  reason: `attempts exhausted ${n}`,
  deadLetteredAt: '2026-01-01T10:00:00Z',
  bodyPreview: taskId ? `{"task_id":"${taskId}","task_index":${n},"parameters":{}}` : 'not json',
});

describe('DeadLettersPage', () => {
  it('lists the dead letters and redrives the selected ones only', async () => {
    const letters = [letter(0, 't0'), letter(1, 't1'), letter(2, null)];
    const executeQuery = vi.fn((request: unknown) =>
      fromValue({ operation: request, data: { deadLetters: letters }, stale: false, hasNext: false }),
    );
    const executeMutation = vi.fn(() =>
      fromValue({ operation: {}, data: { redriveDeadLetters: { redriven: 1, resent: 0, removed: 1, skipped: 0 } } }),
    );
    const client = { executeQuery, executeMutation, executeSubscription: vi.fn(), suspense: false } as unknown as Client;
    render(
      <Provider value={client}>
        <MemoryRouter>
          <DeadLettersPage />
        </MemoryRouter>
      </Provider>,
    );
    const rows = await screen.findAllByTestId('dead-letter-row');
    expect(rows).toHaveLength(3);
    expect(rows[1].textContent).toContain('attempts exhausted 1');
    expect(within(rows[1]).getByRole('link', { name: 'task 1' }).getAttribute('href')).toBe(
      '/jobs/aaaaaaaa-0000-0000-0000-000000000001/tasks/1',
    );
    expect(rows[2].textContent).toContain('poison message');
    expect(within(rows[2]).queryByRole('checkbox')).toBeNull();

    const redrive = screen.getByRole('button', { name: /Redrive selected/ }) as HTMLButtonElement;
    expect(redrive.disabled).toBe(true);
    fireEvent.click(within(rows[1]).getByRole('checkbox'));
    expect(redrive.textContent).toBe('Redrive selected (1)');
    fireEvent.click(redrive);
    await screen.findByText(/1 task\(s\) scheduled for another attempt/);
    const [operation] = executeMutation.mock.calls[0] as unknown as [{ variables: unknown }];
    expect(operation.variables).toEqual({ taskIds: ['t1'] });
  });

  it('reads the task index from the message', () => {
    expect(taskIndexOf(letter(7, 't7'))).toBe(7);
    expect(taskIndexOf(letter(2, null))).toBeNull();
  });
});
