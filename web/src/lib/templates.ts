/** Ready-made jobs for the submit form. */

import type { VariablesOf } from './graphql';
import type { SUBMIT_JOB } from './queries';

export interface FormValues {
  jobType: string;
  mode: 'count' | 'items';
  totalTasks: string;
  items: string;
  batchSize: string;
  parameters: string;
  maxAttempts: string;
  timeoutSeconds: string;
  idempotencyKey: string;
}

export interface Template {
  id: string;
  name: string;
  description: string;
  values: FormValues;
}

const base: FormValues = {
  jobType: '',
  mode: 'count',
  totalTasks: '',
  items: '',
  batchSize: '',
  parameters: '{}',
  maxAttempts: '3',
  timeoutSeconds: '300',
  idempotencyKey: '',
};

const json = (value: unknown) => JSON.stringify(value, null, 2);

export const TEMPLATES: Template[] = [
  {
    id: 'thumbnails',
    name: 'Thumbnail batch',
    description: 'One task per 10 images; each waits like a call to an image service.',
    values: {
      ...base,
      jobType: 'thumbnails',
      mode: 'items',
      items: json(Array.from({ length: 50 }, (_, i) => `images/photo-${i + 1}.jpg`)),
      batchSize: '10',
      parameters: json({ work_type: 'io_bound', work_duration_seconds: 0.5, size: '256x256' }),
    },
  },
  {
    id: 'ml-inference',
    name: 'ML inference in batches',
    description: 'Records split into batches of N; each batch is CPU work.',
    values: {
      ...base,
      jobType: 'ml_inference',
      mode: 'items',
      items: json(Array.from({ length: 64 }, (_, i) => ({ record: i + 1 }))),
      batchSize: '8',
      parameters: json({ work_type: 'cpu_bound', work_duration_seconds: 0.3, model: 'resnet50' }),
    },
  },
  {
    id: 'cpu',
    name: 'CPU-bound',
    description: 'Identical tasks that keep a CPU busy.',
    values: {
      ...base,
      jobType: 'cpu_bound',
      totalTasks: '20',
      parameters: json({ work_duration_seconds: 0.2 }),
    },
  },
  {
    id: 'io',
    name: 'IO-bound',
    description: 'Identical tasks that wait without using a CPU.',
    values: {
      ...base,
      jobType: 'io_bound',
      totalTasks: '50',
      parameters: json({ work_duration_seconds: 0.3 }),
    },
  },
];

export const EMPTY_FORM: FormValues = { ...base, jobType: 'noop', totalTasks: '10' };

/** The schema's `SubmitJobInput`. */
export type SubmitInput = VariablesOf<typeof SUBMIT_JOB>['input'];

/**
 * The mutation's input from the form, or messages per field for what cannot even be sent
 * (JSON that does not parse, a number that is not one). Limits are the server's to check.
 */
export function toInput(
  values: FormValues,
): { input: SubmitInput; errors: null } | { input: null; errors: Record<string, string> } {
  const errors: Record<string, string> = {};
  const input: SubmitInput = { jobType: values.jobType.trim() };
  const integer = (field: keyof FormValues & keyof SubmitInput, label: string) => {
    const text = values[field].trim();
    if (!text) return undefined;
    if (!/^-?\d+$/.test(text)) {
      errors[field] = `${label} must be a whole number.`;
      return undefined;
    }
    return Number(text);
  };
  if (values.mode === 'count') {
    input.totalTasks = integer('totalTasks', 'Number of tasks');
    if (input.totalTasks === undefined && !errors.totalTasks)
      errors.totalTasks = 'Give the number of tasks.';
  } else {
    try {
      const items: unknown = JSON.parse(values.items || 'null');
      if (!Array.isArray(items)) errors.items = 'Items must be a JSON array.';
      else input.items = items;
    } catch (e) {
      errors.items = `Items are not valid JSON: ${(e as Error).message}`;
    }
    input.batchSize = integer('batchSize', 'Batch size');
  }
  if (values.parameters.trim()) {
    try {
      input.parameters = JSON.parse(values.parameters);
    } catch (e) {
      errors.parameters = `Parameters are not valid JSON: ${(e as Error).message}`;
    }
  }
  input.maxAttempts = integer('maxAttempts', 'Max attempts');
  input.timeoutSeconds = integer('timeoutSeconds', 'Timeout');
  if (values.idempotencyKey.trim()) input.idempotencyKey = values.idempotencyKey.trim();
  for (const key of Object.keys(input) as (keyof SubmitInput)[]) {
    if (input[key] === undefined) delete input[key];
  }
  return Object.keys(errors).length ? { input: null, errors } : { input, errors: null };
}
