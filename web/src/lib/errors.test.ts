import { describe, expect, it } from 'vitest';
import { mapErrors } from './errors';

const FIELDS = ['jobType', 'totalTasks', 'batchSize', 'items', 'maxAttempts'];

describe('mapErrors', () => {
  it('puts an error with extensions.field at that field', () => {
    const m = mapErrors(
      [{ message: 'totalTasks must be at least 1', extensions: { code: 'INVALID_INPUT', field: 'totalTasks' } }],
      FIELDS,
    );
    expect(m.fields).toEqual({ totalTasks: 'totalTasks must be at least 1' });
    expect(m.form).toEqual([]);
  });
  it('accepts snake_case and input. prefixes', () => {
    const m = mapErrors(
      [
        { message: 'too big', extensions: { field: 'batch_size' } },
        { message: 'too many', extensions: { field: 'input.maxAttempts' } },
      ],
      FIELDS,
    );
    expect(m.fields).toEqual({ batchSize: 'too big', maxAttempts: 'too many' });
  });
  it('joins two errors of one field', () => {
    const m = mapErrors(
      [
        { message: 'a.', extensions: { field: 'items' } },
        { message: 'b.', extensions: { field: 'items' } },
      ],
      FIELDS,
    );
    expect(m.fields.items).toBe('a. b.');
  });
  it('keeps errors without a known field for the form, with their code', () => {
    const m = mapErrors(
      [
        { message: 'limit exceeded', extensions: { code: 'LIMIT_EXCEEDED' } },
        { message: 'odd', extensions: { field: 'somethingElse' } },
        { message: 'plain' },
      ],
      FIELDS,
      { message: 'Failed to fetch' },
    );
    expect(m.fields).toEqual({});
    expect(m.form).toEqual([
      'limit exceeded (LIMIT_EXCEEDED)',
      'odd',
      'plain',
      'Could not reach the server: Failed to fetch',
    ]);
  });
});
