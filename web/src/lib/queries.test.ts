import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildSchema, validate, type DocumentNode } from 'graphql';
import * as queries from './queries';

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
});
