import { useState, type ReactNode } from 'react';
import { useNavigate } from 'react-router-dom';
import { useMutation } from 'urql';
import { SUBMIT_JOB } from '../lib/queries';
import { mapErrors } from '../lib/errors';
import { EMPTY_FORM, TEMPLATES, toInput, type FormValues } from '../lib/templates';

const FIELDS = [
  'jobType',
  'totalTasks',
  'items',
  'batchSize',
  'parameters',
  'maxAttempts',
  'timeoutSeconds',
  'idempotencyKey',
] as const;

function Field({
  id,
  label,
  hint,
  error,
  children,
}: {
  id: string;
  label: string;
  hint?: string;
  error?: string;
  children: (props: {
    id: string;
    'aria-invalid': boolean;
    'aria-describedby': string | undefined;
  }) => ReactNode;
}) {
  const describedBy = [hint && `${id}-hint`, error && `${id}-error`].filter(Boolean).join(' ');
  return (
    <div className={error ? 'field has-error' : 'field'}>
      <label htmlFor={id}>{label}</label>
      {children({ id, 'aria-invalid': Boolean(error), 'aria-describedby': describedBy || undefined })}
      {hint && (
        <p className="hint" id={`${id}-hint`}>
          {hint}
        </p>
      )}
      {error && (
        <p className="field-error" id={`${id}-error`} data-field-error={id}>
          {error}
        </p>
      )}
    </div>
  );
}

export function SubmitPage() {
  const [values, setValues] = useState<FormValues>(EMPTY_FORM);
  const [fieldErrors, setFieldErrors] = useState<Record<string, string>>({});
  const [formErrors, setFormErrors] = useState<string[]>([]);
  const [template, setTemplate] = useState<string | null>(null);
  const [{ fetching }, submit] = useMutation(SUBMIT_JOB);
  const navigate = useNavigate();

  const set = (field: keyof FormValues) => (value: string) => {
    setValues((v) => ({ ...v, [field]: value }));
    setFieldErrors((errors) => {
      const rest = { ...errors };
      delete rest[field];
      return rest;
    });
  };

  const onSubmit = async (e: React.FormEvent) => {
    e.preventDefault();
    setFormErrors([]);
    const parsed = toInput(values);
    if (parsed.errors) {
      setFieldErrors(parsed.errors);
      focusFirstError(parsed.errors);
      return;
    }
    const result = await submit({ input: parsed.input });
    if (result.error) {
      const mapped = mapErrors(result.error.graphQLErrors, FIELDS, result.error.networkError);
      setFieldErrors(mapped.fields);
      setFormErrors(mapped.form);
      focusFirstError(mapped.fields);
      return;
    }
    const id = result.data?.submitJob?.id;
    if (id) navigate(`/jobs/${id}`);
  };

  return (
    <section aria-labelledby="submit-title">
      <h1 id="submit-title">Submit a job</h1>
      <fieldset className="templates">
        <legend>Start from a template</legend>
        <div className="template-list">
          {TEMPLATES.map((t) => (
            <button
              key={t.id}
              type="button"
              className={template === t.id ? 'template selected' : 'template'}
              aria-pressed={template === t.id}
              onClick={() => {
                setTemplate(t.id);
                setValues(t.values);
                setFieldErrors({});
                setFormErrors([]);
              }}
            >
              <strong>{t.name}</strong>
              <span>{t.description}</span>
            </button>
          ))}
        </div>
      </fieldset>

      <form className="submit-form" onSubmit={onSubmit} noValidate>
        {formErrors.length > 0 && (
          <div className="error" role="alert">
            {formErrors.map((m) => (
              <p key={m}>{m}</p>
            ))}
          </div>
        )}
        <Field
          id="jobType"
          label="Job type"
          hint="The handler that runs the tasks: noop, cpu_bound, io_bound, matrix_multiply, or any name with parameters.work_type."
          error={fieldErrors.jobType}
        >
          {(p) => (
            <input {...p} value={values.jobType} onChange={(e) => set('jobType')(e.target.value)} />
          )}
        </Field>

        <fieldset className="mode">
          <legend>Tasks</legend>
          <label>
            <input
              type="radio"
              name="mode"
              value="count"
              checked={values.mode === 'count'}
              onChange={() => setValues((v) => ({ ...v, mode: 'count' }))}
            />
            A number of identical tasks
          </label>
          <label>
            <input
              type="radio"
              name="mode"
              value="items"
              checked={values.mode === 'items'}
              onChange={() => setValues((v) => ({ ...v, mode: 'items' }))}
            />
            Items split into batches
          </label>
        </fieldset>

        {values.mode === 'count' ? (
          <Field id="totalTasks" label="Number of tasks" error={fieldErrors.totalTasks}>
            {(p) => (
              <input
                {...p}
                inputMode="numeric"
                value={values.totalTasks}
                onChange={(e) => set('totalTasks')(e.target.value)}
              />
            )}
          </Field>
        ) : (
          <>
            <Field
              id="items"
              label="Items (JSON array)"
              hint="Each task gets its batch under parameters.items."
              error={fieldErrors.items}
            >
              {(p) => (
                <textarea
                  {...p}
                  rows={6}
                  className="mono"
                  value={values.items}
                  onChange={(e) => set('items')(e.target.value)}
                />
              )}
            </Field>
            <Field id="batchSize" label="Batch size" error={fieldErrors.batchSize}>
              {(p) => (
                <input
                  {...p}
                  inputMode="numeric"
                  value={values.batchSize}
                  onChange={(e) => set('batchSize')(e.target.value)}
                />
              )}
            </Field>
          </>
        )}

        <Field
          id="parameters"
          label="Parameters (JSON object)"
          hint="Given to every task."
          error={fieldErrors.parameters}
        >
          {(p) => (
            <textarea
              {...p}
              rows={5}
              className="mono"
              value={values.parameters}
              onChange={(e) => set('parameters')(e.target.value)}
            />
          )}
        </Field>
        <div className="row">
          <Field id="maxAttempts" label="Max attempts" error={fieldErrors.maxAttempts}>
            {(p) => (
              <input
                {...p}
                inputMode="numeric"
                value={values.maxAttempts}
                onChange={(e) => set('maxAttempts')(e.target.value)}
              />
            )}
          </Field>
          <Field id="timeoutSeconds" label="Timeout (seconds)" error={fieldErrors.timeoutSeconds}>
            {(p) => (
              <input
                {...p}
                inputMode="numeric"
                value={values.timeoutSeconds}
                onChange={(e) => set('timeoutSeconds')(e.target.value)}
              />
            )}
          </Field>
        </div>
        <Field
          id="idempotencyKey"
          label="Idempotency key (optional)"
          hint="Submitting again with the same key returns the first job."
          error={fieldErrors.idempotencyKey}
        >
          {(p) => (
            <input
              {...p}
              value={values.idempotencyKey}
              onChange={(e) => set('idempotencyKey')(e.target.value)}
            />
          )}
        </Field>
        <button type="submit" className="btn primary" disabled={fetching}>
          {fetching ? 'Submitting…' : 'Submit job'}
        </button>
      </form>
    </section>
  );
}

function focusFirstError(errors: Record<string, string>) {
  const first = FIELDS.find((f) => errors[f]);
  if (first) setTimeout(() => document.getElementById(first)?.focus(), 0);
}
