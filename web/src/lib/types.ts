import type { JobStatus, TaskStatus } from './urlState';

export interface Job {
  id: string;
  jobType: string;
  status: JobStatus;
  totalTasks: number;
  tasksCreated: number;
  completedTasks: number;
  failedTasks: number;
  runningTasks: number;
  queuedTasks: number;
  retryingTasks: number;
  progress: number;
  createdAt: string;
  updatedAt: string;
  startedAt: string | null;
  completedAt: string | null;
  errorMessage: string | null;
  cancelReason: string | null;
  parameters?: unknown;
  maxAttempts?: number;
  timeoutSeconds?: number;
}

/** A job's AWS Step Functions execution (Step Functions driver). */
export interface JobExecution {
  arn: string;
  consoleUrl: string | null;
  currentState: string | null;
  stateTransition: string | null;
}

export interface Task {
  id: string;
  index: number;
  status: TaskStatus;
  attempt: number;
  maxAttempts: number;
  worker: string | null;
  errorMessage: string | null;
  startedAt: string | null;
  completedAt: string | null;
  processingTimeSeconds: number | null;
  deadLettered: boolean;
}

export interface Page<T> {
  edges: { cursor: string; node: T }[];
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
}

export interface HistoryEvent {
  eventType: string;
  at: string;
  taskIndex: number | null;
  attempt: number | null;
  worker: string | null;
  error: string | null;
  /** The Step Functions state (`JobStep*` events of that driver). */
  step?: string | null;
}
