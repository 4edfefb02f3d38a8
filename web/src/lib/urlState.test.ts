import { describe, expect, it } from 'vitest';
import {
  parseDays,
  parseJobsList,
  parseTaskTable,
  serializeJobsList,
  serializeTaskTable,
  withFilter,
} from './urlState';

describe('jobs list URL state', () => {
  it('round-trips through the address', () => {
    const state = {
      status: 'RUNNING' as const,
      jobType: 'thumbnails',
      search: 'cat pics',
      cursors: ['c1', 'c2'],
      pageSize: 50,
    };
    const params = serializeJobsList(state);
    expect(params.toString()).toBe('status=RUNNING&type=thumbnails&q=cat+pics&after=c1&after=c2&size=50');
    expect(parseJobsList(new URLSearchParams(params.toString()))).toEqual(state);
  });
  it('ignores unknown statuses and page sizes, and omits defaults', () => {
    const s = parseJobsList(new URLSearchParams('status=BOGUS&size=7'));
    expect(s).toEqual({ status: null, jobType: '', search: '', cursors: [], pageSize: 25 });
    expect(serializeJobsList(s).toString()).toBe('');
  });
  it('keeps a sort order other than newest first', () => {
    const s = parseJobsList(new URLSearchParams('sort=PRIORITY&after=c1'));
    expect(s.sort).toBe('PRIORITY');
    expect(serializeJobsList(s).toString()).toBe('after=c1&sort=PRIORITY');
    expect(parseJobsList(new URLSearchParams('sort=NEWEST')).sort).toBeUndefined();
    expect(withFilter(s, { sort: 'OLDEST' }).cursors).toEqual([]);
  });
  it('goes back to the first page when a filter changes', () => {
    const s = parseJobsList(new URLSearchParams('after=c1&after=c2'));
    expect(withFilter(s, { status: 'FAILED' }).cursors).toEqual([]);
  });
});

describe('task table URL state', () => {
  it('keeps the other keys of the address', () => {
    const params = new URLSearchParams('foo=1&tasks=RUNNING&taskAfter=9');
    expect(parseTaskTable(params)).toEqual({ status: 'RUNNING', cursors: ['9'] });
    const next = serializeTaskTable({ status: 'FAILED', cursors: [] }, params);
    expect(next.toString()).toBe('foo=1&tasks=FAILED');
  });
});

describe('timeline days', () => {
  it('accepts 7, 14 or 30, else 7', () => {
    expect(parseDays(new URLSearchParams('days=30'))).toBe(30);
    expect(parseDays(new URLSearchParams('days=31'))).toBe(7);
    expect(parseDays(new URLSearchParams())).toBe(7);
  });
});
