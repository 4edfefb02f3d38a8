import { describe, expect, it } from 'vitest';
import { createConnectionStore } from './connection';

describe('connection store', () => {
  it('goes live, then reconnecting, and counts connections', () => {
    const c = createConnectionStore();
    let calls = 0;
    c.subscribe(() => calls++);
    c.set('reconnecting'); // closed before the first connection: still "connecting"
    expect(c.get()).toBe('connecting');
    c.set('live');
    expect(c.get()).toBe('live');
    expect(c.epoch()).toBe(1);
    c.set('reconnecting');
    c.set('connecting');
    c.set('live');
    expect(c.epoch()).toBe(2);
    expect(calls).toBe(4);
  });
});
