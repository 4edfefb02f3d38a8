/** The jobs list's and the job page's state, kept in the address so links can be shared. */

import type { Enum } from './graphql';

export type JobStatus = Enum<'JobStatus'>;
export type TaskStatus = Enum<'TaskStatus'>;
export type JobSortOrder = Enum<'JobSortOrder'>;

export const JOB_STATUSES = [
  'PENDING',
  'CREATING_TASKS',
  'ENQUEUED',
  'RUNNING',
  'COMPLETED',
  'FAILED',
  'CANCELLED',
] as const satisfies readonly JobStatus[];

export const TASK_STATUSES = [
  'PENDING',
  'ENQUEUED',
  'RUNNING',
  'COMPLETED',
  'FAILED',
  'RETRYING',
] as const satisfies readonly TaskStatus[];

export interface JobsListState {
  status: JobStatus | null;
  jobType: string;
  search: string;
  /** Cursors of the pages before this one: `after` of the current page is the last. */
  cursors: string[];
  pageSize: number;
  /** The order, when not the default (newest first). */
  sort?: JobSortOrder;
}

/** The orders of the jobs list other than the default, newest first. */
export const JOB_SORTS = ['OLDEST', 'PRIORITY'] as const satisfies readonly JobSortOrder[];

export const PAGE_SIZES = [10, 25, 50, 100] as const;
const DEFAULT_PAGE_SIZE = 25;

function oneOf<T extends string>(value: string | null, allowed: readonly T[]): T | null {
  return value && (allowed as readonly string[]).includes(value) ? (value as T) : null;
}

export function parseJobsList(params: URLSearchParams): JobsListState {
  const size = Number(params.get('size'));
  return {
    status: oneOf(params.get('status'), JOB_STATUSES),
    jobType: params.get('type') ?? '',
    search: params.get('q') ?? '',
    cursors: params.getAll('after').filter(Boolean),
    pageSize: (PAGE_SIZES as readonly number[]).includes(size) ? size : DEFAULT_PAGE_SIZE,
    sort: oneOf(params.get('sort'), JOB_SORTS) ?? undefined,
  };
}

export function serializeJobsList(state: JobsListState): URLSearchParams {
  const params = new URLSearchParams();
  if (state.status) params.set('status', state.status);
  if (state.jobType) params.set('type', state.jobType);
  if (state.search) params.set('q', state.search);
  for (const cursor of state.cursors) params.append('after', cursor);
  if (state.pageSize !== DEFAULT_PAGE_SIZE) params.set('size', String(state.pageSize));
  if (state.sort && state.sort !== 'NEWEST') params.set('sort', state.sort);
  return params;
}

/** A filter change goes back to the first page. */
export function withFilter(state: JobsListState, change: Partial<JobsListState>): JobsListState {
  return { ...state, ...change, cursors: [] };
}

export interface TaskTableState {
  status: TaskStatus | null;
  cursors: string[];
}

export function parseTaskTable(params: URLSearchParams): TaskTableState {
  return {
    status: oneOf(params.get('tasks'), TASK_STATUSES),
    cursors: params.getAll('taskAfter').filter(Boolean),
  };
}

/** Updates only the task table's keys of `params`, keeping the others. */
export function serializeTaskTable(state: TaskTableState, params: URLSearchParams): URLSearchParams {
  const next = new URLSearchParams(params);
  next.delete('tasks');
  next.delete('taskAfter');
  if (state.status) next.set('tasks', state.status);
  for (const cursor of state.cursors) next.append('taskAfter', cursor);
  return next;
}

export const TIMELINE_DAYS = [7, 14, 30] as const;

export function parseDays(params: URLSearchParams): number {
  const days = Number(params.get('days'));
  return (TIMELINE_DAYS as readonly number[]).includes(days) ? days : 7;
}

/** The instant the job page shows the job as of (`?at=`, RFC 3339); null for live. */
export function parseAsOf(params: URLSearchParams): string | null {
  const at = params.get('at');
  return at && !Number.isNaN(Date.parse(at)) ? new Date(at).toISOString() : null;
}

/** Sets or clears `?at=`, keeping the other keys (and the task table's page: it restarts). */
export function serializeAsOf(at: string | null, params: URLSearchParams): URLSearchParams {
  const next = new URLSearchParams(params);
  next.delete('at');
  next.delete('taskAfter');
  if (at) next.set('at', at);
  return next;
}
