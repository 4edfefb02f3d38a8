import { describe, expect, it } from 'vitest';
import {
  addSample,
  etaSeconds,
  formatAge,
  formatDuration,
  formatRate,
  progressOf,
  throughputPerSecond,
} from './progress';

const job = {
  totalTasks: 200,
  completedTasks: 90,
  failedTasks: 10,
  runningTasks: 20,
  queuedTasks: 80,
  retryingTasks: 0,
};

describe('progressOf', () => {
  it('counts completed and failed tasks as ended', () => {
    const p = progressOf(job);
    expect(p.percent).toBe(50);
    expect(p.completedPct).toBe(45);
    expect(p.failedPct).toBe(5);
    expect(p.runningPct).toBe(10);
    expect(p.remaining).toBe(100);
  });
  it('is 0 for a job without tasks, and never above 100', () => {
    expect(progressOf({ ...job, totalTasks: 0 }).percent).toBe(0);
    expect(progressOf({ ...job, totalTasks: 50 }).percent).toBe(100);
    expect(progressOf({ ...job, totalTasks: 50 }).remaining).toBe(0);
  });
});

describe('throughput and ETA', () => {
  it('measures the rate over the samples of the window', () => {
    let s = addSample([], { at: 0, ended: 0 });
    s = addSample(s, { at: 2000, ended: 10 });
    s = addSample(s, { at: 4000, ended: 20 });
    expect(throughputPerSecond(s, 4000)).toBe(5);
    expect(etaSeconds(100, 5)).toBe(20);
  });
  it('drops samples older than the window but keeps two', () => {
    let s = addSample([], { at: 0, ended: 0 }, 1000);
    s = addSample(s, { at: 5000, ended: 5 }, 1000);
    s = addSample(s, { at: 10_000, ended: 10 }, 1000);
    expect(s.map((x) => x.at)).toEqual([5000, 10_000]);
  });
  it('restarts when the ended count goes down (a retry)', () => {
    let s = addSample([], { at: 0, ended: 10 });
    s = addSample(s, { at: 1000, ended: 5 });
    expect(s).toEqual([{ at: 1000, ended: 5 }]);
  });
  it('falls back to the average since the start', () => {
    expect(throughputPerSecond([], 10_000, 0, 50)).toBe(5);
    expect(throughputPerSecond([], 10_000, null, 50)).toBeNull();
    expect(throughputPerSecond([{ at: 0, ended: 3 }], 10_000, null, 3)).toBeNull();
  });
  it('has no ETA without a rate, and 0 when nothing remains', () => {
    expect(etaSeconds(10, null)).toBeNull();
    expect(etaSeconds(10, 0)).toBeNull();
    expect(etaSeconds(0, null)).toBe(0);
  });
});

describe('formatting', () => {
  it('formats durations', () => {
    expect(formatDuration(null)).toBe('—');
    expect(formatDuration(42.4)).toBe('42 s');
    expect(formatDuration(0.356)).toBe('0.36 s');
    expect(formatDuration(3.25)).toBe('3.3 s');
    expect(formatDuration(200)).toBe('3 min 20 s');
    expect(formatDuration(2 * 3600 + 5 * 60)).toBe('2 h 05 min');
    expect(formatDuration(3 * 86400 + 4 * 3600)).toBe('3 d 4 h');
  });
  it('formats rates and ages', () => {
    expect(formatRate(null)).toBe('—');
    expect(formatRate(12.34)).toBe('12.3 tasks/s');
    expect(formatRate(0.5)).toBe('30.0 tasks/min');
    expect(formatAge('2026-01-01T00:00:00Z', Date.parse('2026-01-01T00:02:30Z'))).toBe('2 min ago');
  });
});
