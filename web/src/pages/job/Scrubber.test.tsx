import { describe, expect, it } from 'vitest';
import { lifetime, SCRUBBER_STEPS, stepToTime, timeToStep } from './Scrubber';
import { parseAsOf, serializeAsOf } from '../../lib/urlState';

describe('scrubber', () => {
  it('spans the job from its submission to its end, or to now while it runs', () => {
    expect(lifetime('2026-01-01T10:00:00Z', '2026-01-01T10:01:00Z', 0)).toEqual({
      start: Date.parse('2026-01-01T10:00:00Z'),
      end: Date.parse('2026-01-01T10:01:00Z'),
    });
    const now = Date.parse('2026-01-01T10:00:30Z');
    expect(lifetime('2026-01-01T10:00:00Z', null, now).end).toBe(now);
    // A job that ended the instant it started still has a range.
    const { start, end } = lifetime('2026-01-01T10:00:00Z', '2026-01-01T10:00:00Z', 0);
    expect(end).toBeGreaterThan(start);
  });

  it('maps steps to instants and back, clamped to the lifetime', () => {
    const [start, end] = [1_000, 11_000];
    expect(stepToTime(0, start, end)).toBe(start);
    expect(stepToTime(SCRUBBER_STEPS, start, end)).toBe(end);
    expect(stepToTime(250, start, end)).toBe(3_500);
    expect(timeToStep(3_500, start, end)).toBe(250);
    expect(timeToStep(0, start, end)).toBe(0);
    expect(timeToStep(99_000, start, end)).toBe(SCRUBBER_STEPS);
  });

  it('keeps the moment in the address', () => {
    expect(parseAsOf(new URLSearchParams('at=2026-01-01T10:00:05Z'))).toBe('2026-01-01T10:00:05.000Z');
    expect(parseAsOf(new URLSearchParams('at=yesterday'))).toBeNull();
    expect(parseAsOf(new URLSearchParams(''))).toBeNull();
    const params = new URLSearchParams('tasks=FAILED&taskAfter=49');
    expect(serializeAsOf('2026-01-01T10:00:05.000Z', params).toString()).toBe(
      'tasks=FAILED&at=2026-01-01T10%3A00%3A05.000Z',
    );
    expect(serializeAsOf(null, new URLSearchParams('at=x&tasks=FAILED')).toString()).toBe('tasks=FAILED');
  });
});
