import { initGraphQLTada } from 'gql.tada';
import type { introspection } from './graphql-env';

/**
 * `graphql()` parses a document and gives it its result and variable types, inferred by
 * TypeScript from the document's text and the schema: `graphql-env.d.ts` is generated from
 * `docs/schema.graphql` (`npm run codegen`; `npm run codegen:check` fails if it is stale).
 */
export const graphql = initGraphQLTada<{
  introspection: introspection;
  scalars: {
    /** RFC 3339. */
    DateTime: string;
    /** YYYY-MM-DD. */
    NaiveDate: string;
    JSON: unknown;
  };
}>();

export type { ResultOf, VariablesOf } from 'gql.tada';

/** A value of one of the schema's enums, e.g. `Enum<'JobStatus'>`. */
export type Enum<Name extends string> = ReturnType<typeof graphql.scalar<Name>>;
