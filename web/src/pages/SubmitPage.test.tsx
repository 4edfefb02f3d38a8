import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanup, fireEvent, render, screen, waitFor } from '@testing-library/react';

afterEach(cleanup);
import { MemoryRouter, Route, Routes } from 'react-router-dom';
import { Provider, CombinedError, type Client } from 'urql';
import { fromValue } from 'wonka';
import { SubmitPage } from './SubmitPage';

function renderWith(executeMutation: ReturnType<typeof vi.fn>) {
  const client = { executeMutation } as unknown as Client;
  return render(
    <Provider value={client}>
      <MemoryRouter initialEntries={['/submit']}>
        <Routes>
          <Route path="/submit" element={<SubmitPage />} />
          <Route path="/jobs/:id" element={<p>job page</p>} />
        </Routes>
      </MemoryRouter>
    </Provider>,
  );
}

describe('SubmitPage', () => {
  it('shows a server error at the field named by extensions.field', async () => {
    const executeMutation = vi.fn(() =>
      fromValue({
        operation: {},
        error: new CombinedError({
          graphQLErrors: [
            {
              message: 'total_tasks must be at most 100000',
              extensions: { code: 'LIMIT_EXCEEDED', field: 'totalTasks' },
            },
          ],
        }),
      }),
    );
    renderWith(executeMutation);
    fireEvent.change(screen.getByLabelText('Number of tasks'), { target: { value: '999999' } });
    fireEvent.click(screen.getByRole('button', { name: 'Submit job' }));
    const input = screen.getByLabelText('Number of tasks');
    await waitFor(() => expect(input.getAttribute('aria-invalid')).toBe('true'));
    expect(input.getAttribute('aria-describedby')).toContain('totalTasks-error');
    expect(document.getElementById('totalTasks-error')?.textContent).toBe(
      'total_tasks must be at most 100000',
    );
    expect(executeMutation).toHaveBeenCalledTimes(1);
  });

  it('does not send JSON that does not parse', () => {
    const executeMutation = vi.fn();
    renderWith(executeMutation);
    fireEvent.change(screen.getByLabelText('Parameters (JSON object)'), { target: { value: '{' } });
    fireEvent.click(screen.getByRole('button', { name: 'Submit job' }));
    expect(document.getElementById('parameters-error')?.textContent).toMatch(/not valid JSON/);
    expect(executeMutation).not.toHaveBeenCalled();
  });

  it('fills the form from a template and opens the new job', async () => {
    const executeMutation = vi.fn(() =>
      fromValue({ operation: {}, data: { submitJob: { id: 'abc', status: 'PENDING' } } }),
    );
    renderWith(executeMutation);
    fireEvent.click(screen.getByRole('button', { name: /ML inference in batches/ }));
    expect((screen.getByLabelText('Batch size') as HTMLInputElement).value).toBe('8');
    fireEvent.click(screen.getByRole('button', { name: 'Submit job' }));
    await screen.findByText('job page');
    const [operation] = executeMutation.mock.calls[0] as unknown as [{ variables: { input: Record<string, unknown> } }];
    expect(operation.variables.input.jobType).toBe('ml_inference');
    expect(operation.variables.input.batchSize).toBe(8);
  });
});
