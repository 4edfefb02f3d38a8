import { describe, expect, it } from 'vitest';
import { EMPTY_FORM, TEMPLATES, toInput } from './templates';

describe('toInput', () => {
  it('builds a count job', () => {
    const r = toInput({ ...EMPTY_FORM, jobType: ' noop ', totalTasks: '5', idempotencyKey: '' });
    expect(r.errors).toBeNull();
    expect(r.input).toEqual({ jobType: 'noop', totalTasks: 5, parameters: {}, maxAttempts: 3, timeoutSeconds: 300 });
  });
  it('builds every template without errors', () => {
    for (const t of TEMPLATES) expect(toInput(t.values).errors, t.id).toBeNull();
    const ml = toInput(TEMPLATES.find((t) => t.id === 'ml-inference')!.values);
    expect(ml.input?.batchSize).toBe(8);
    expect(ml.input?.items).toHaveLength(64);
    expect(ml.input?.totalTasks).toBeUndefined();
  });
  it('reports what cannot be sent at its field', () => {
    const r = toInput({
      ...EMPTY_FORM,
      mode: 'items',
      items: '{"a":1}',
      batchSize: 'x',
      parameters: '{oops',
      maxAttempts: '2.5',
    });
    expect(r.input).toBeNull();
    expect(Object.keys(r.errors ?? {}).sort()).toEqual(['batchSize', 'items', 'maxAttempts', 'parameters']);
  });
  it('leaves limits to the server (negative numbers are sent)', () => {
    const r = toInput({ ...EMPTY_FORM, totalTasks: '-1' });
    expect(r.input?.totalTasks).toBe(-1);
  });
});
