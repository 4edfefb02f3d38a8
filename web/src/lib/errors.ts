/** Maps GraphQL errors to messages at the form's fields (`extensions.field`). */

export interface GraphQLErrorLike {
  message: string;
  extensions?: Record<string, unknown> | null;
}

export interface MappedErrors {
  /** Message per input field, in GraphQL naming (`totalTasks`, `batchSize`, ...). */
  fields: Record<string, string>;
  /** Messages not about a field the form shows. */
  form: string[];
}

/** Server error fields that the form shows under another input. */
const ALIASES: Record<string, string> = {
  total_tasks: 'totalTasks',
  batch_size: 'batchSize',
  max_attempts: 'maxAttempts',
  timeout_seconds: 'timeoutSeconds',
  job_type: 'jobType',
  idempotency_key: 'idempotencyKey',
  'input.jobType': 'jobType',
};

export function mapErrors(
  errors: readonly GraphQLErrorLike[] | undefined,
  knownFields: readonly string[],
  networkError?: { message: string } | null,
): MappedErrors {
  const out: MappedErrors = { fields: {}, form: [] };
  for (const error of errors ?? []) {
    const raw = error.extensions?.field;
    let field = typeof raw === 'string' ? raw : undefined;
    if (field) {
      field = ALIASES[field] ?? field;
      if (field.startsWith('input.')) field = field.slice('input.'.length);
    }
    if (field && knownFields.includes(field)) {
      out.fields[field] = out.fields[field]
        ? `${out.fields[field]} ${error.message}`
        : error.message;
    } else {
      const code = error.extensions?.code;
      out.form.push(typeof code === 'string' ? `${error.message} (${code})` : error.message);
    }
  }
  if (networkError) out.form.push(`Could not reach the server: ${networkError.message}`);
  return out;
}
