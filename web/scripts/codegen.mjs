// Generates src/lib/graphql-env.d.ts, the schema's types for gql.tada, from ../docs/schema.graphql
// (the location and the schema are set in tsconfig.json's gql.tada plugin entry).
//
//   node scripts/codegen.mjs           write it
//   node scripts/codegen.mjs --check   fail if the committed file differs from a fresh one, and
//                                      check every document in src against the schema
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const web = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const committed = join(web, 'src/lib/graphql-env.d.ts');
const cli = join(web, 'node_modules/gql.tada/bin/cli.js');

function tada(...args) {
  const run = spawnSync(process.execPath, [cli, ...args], { cwd: web, stdio: 'inherit' });
  if (run.status !== 0) process.exit(run.status ?? 1);
}

if (!process.argv.includes('--check')) {
  tada('generate-output', '--output', committed);
} else {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-codegen-'));
  try {
    const fresh = join(dir, 'graphql-env.d.ts');
    tada('generate-output', '--output', fresh);
    if (!existsSync(committed) || readFileSync(fresh, 'utf8') !== readFileSync(committed, 'utf8')) {
      console.error(
        'src/lib/graphql-env.d.ts is out of date with ../docs/schema.graphql: run `npm run codegen` and commit it.',
      );
      process.exit(1);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // Unknown fields, wrong arguments, ...: errors and warnings both fail.
  tada('check', '--fail-on-warn');
  console.log('graphql-env.d.ts is up to date; the documents are valid.');
}
