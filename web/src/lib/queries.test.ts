import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildSchema, isEnumType, validate, type DocumentNode } from 'graphql';
import * as queries from './queries';
import { JOB_STATUSES, TASK_STATUSES } from './urlState';

// The merged SDL that the Rust side commits (docs/schema.graphql): every document the
// dashboard sends must be valid against it.
const sdlPath = resolve(process.cwd(), '../docs/schema.graphql');

describe.runIf(existsSync(sdlPath))('queries against docs/schema.graphql', () => {
  const schema = buildSchema(readFileSync(sdlPath, 'utf8'));
  const operations = Object.entries(queries).filter(([, doc]) =>
    (doc as DocumentNode).definitions.some((d) => d.kind === 'OperationDefinition'),
  );
  it('finds the operations', () => expect(operations.length).toBeGreaterThan(8));
  for (const [name, doc] of operations) {
    it(`${name} is valid`, () => {
      const errors = validate(schema, doc as DocumentNode).map((e) => e.message);
      expect(errors).toEqual([]);
    });
  }

  // The types say every listed status is one of the schema's; this says none is missing.
  it.each([
    ['JobStatus', JOB_STATUSES],
    ['TaskStatus', TASK_STATUSES],
  ] as const)('the filters offer every %s', (name, listed) => {
    const type = schema.getType(name);
    if (!isEnumType(type)) throw new Error(`${name} is not an enum`);
    expect([...listed].sort()).toEqual(type.getValues().map((v) => v.name).sort());
  });
});
