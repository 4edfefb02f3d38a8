#!/usr/bin/env node
// Browser test of the dashboard against a Shoal that requires tokens (docs/auth.md).
//
// Creates two tokens with `shoal token create` ($SHOAL_BIN, default ../target/debug/shoal) in a
// temporary SQLite database, starts `shoal dev --auth tokens --web-dir web/dist` on a free port,
// and in Debian's Chromium ($CHROMIUM, default /usr/bin/chromium) driven by playwright-core:
//   1. the dashboard asks for a token (the server answered 401), and refuses to show jobs;
//   2. with a `read,submit` token entered, it lists the jobs, and its live socket connects
//      (the token goes in `connection_init`); a job submitted from the page lands in the log
//      with the token's name as its actor (the job's history shows it);
//   3. once the token is revoked, the next request is refused and the dashboard asks again.
// Exits non-zero on the first failure.

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const repoDir = path.resolve(webDir, '..');
const distDir = path.join(webDir, 'dist');
const shoalBin = path.resolve(process.env.SHOAL_BIN ?? path.join(repoDir, 'target/debug/shoal'));
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

const cleanups = [];
const log = (...args) => console.log(`[auth ${new Date().toISOString().slice(11, 19)}]`, ...args);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function waitFor(what, check, timeoutMs = 30_000, everyMs = 200) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function stop(child) {
  return new Promise((resolve) => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 5_000).unref();
  });
}

async function main() {
  check(existsSync(shoalBin), `no shoal binary at ${shoalBin} (build it: cargo build --bin shoal, or set SHOAL_BIN)`);
  check(existsSync(chromiumPath), `no Chromium at ${chromiumPath} (apt-get install -y chromium, or set CHROMIUM)`);
  if (!existsSync(path.join(distDir, 'index.html'))) {
    log('web/dist is missing: building it');
    const built = spawnSync('npm', ['run', 'build'], { cwd: webDir, stdio: 'inherit' });
    check(built.status === 0, 'npm run build failed');
  }
  const tmp = mkdtempSync(path.join(tmpdir(), 'shoal-auth-e2e-'));
  cleanups.push(() => rmSync(tmp, { recursive: true, force: true }));
  const database = `sqlite:${path.join(tmp, 'shoal.db')}`;
  const token = execFileSync(shoalBin, ['token', 'create', '--name', 'browser-user', '--scope', 'read,submit', '--database-url', database], {
    encoding: 'utf8',
  }).trim();
  check(token.startsWith('shoal_'), `token create printed ${token}`);

  const port = await freePort();
  const api = `http://127.0.0.1:${port}`;
  const args = ['dev', '--database-url', database, '--listen', `127.0.0.1:${port}`, '--workers', '2', '--auth', 'tokens', '--web-dir', distDir];
  const shoal = spawn(shoalBin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' } });
  const output = [];
  shoal.stdout.on('data', (c) => output.push(c.toString()));
  shoal.stderr.on('data', (c) => output.push(c.toString()));
  cleanups.push(() => stop(shoal));
  await waitFor('shoal to answer', async () => (await fetch(`${api}/health`)).ok, 60_000).catch((e) => {
    throw new Error(`${e.message}\n--- shoal output ---\n${output.join('')}`);
  });
  log(`shoal dev --auth tokens on ${api}`);

  const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox'] });
  cleanups.push(() => browser.close());
  const page = await browser.newPage();

  // --- 1. Asked for a token.
  await page.goto(`${api}/`);
  const prompt = page.getByRole('dialog', { name: 'This Shoal requires an API token' });
  await prompt.waitFor({ timeout: 30_000 });
  log('the dashboard asks for a token');

  // --- 2. With the token: jobs, live socket, a submission with the token's name as actor.
  await page.getByRole('textbox', { name: 'API token' }).fill(token);
  await page.getByRole('button', { name: 'Use this token' }).click();
  await page.waitForLoadState('load');
  await waitFor('the live socket', async () => (await page.getByTestId('connection').getAttribute('data-state')) === 'live', 30_000);
  check(!(await prompt.isVisible()), 'the prompt stayed after a valid token');
  const stored = await page.evaluate(() => window.sessionStorage.getItem('shoal.token'));
  check(stored === token, 'the token is not in sessionStorage');
  const submitted = await page.evaluate(async (token) => {
    const response = await fetch('/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: 'mutation { submitJob(input: {jobType: "noop", totalTasks: 3}) { id } }' }),
    });
    return response.json();
  }, token);
  const jobId = submitted?.data?.submitJob?.id;
  check(jobId, `submitJob answered ${JSON.stringify(submitted)}`);
  await page.goto(`${api}/jobs/${jobId}`);
  await waitFor(
    'the job in the dashboard',
    async () => (await page.getByText(jobId).count()) > 0,
    30_000,
  );
  // The page shows the id from its URL at once; the job itself once the projector has it.
  let history;
  await waitFor(
    'the job in the read model',
    async () => {
      history = await (
        await fetch(`${api}/graphql`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
          body: JSON.stringify({ query: `{ job(id: "${jobId}") { history { nodes { eventType actor } } } }` }),
        })
      ).json();
      return history?.data?.job != null;
    },
    30_000,
  );
  const submittedEvent = history.data.job.history.nodes.find((n) => n.eventType === 'JobSubmitted');
  check(submittedEvent?.actor === 'browser-user', `JobSubmitted actor: ${JSON.stringify(submittedEvent)}`);
  log('with the token: the job page loads, the socket is live, the actor is the token\'s name');

  // --- 3. Revoked: asked again.
  execFileSync(shoalBin, ['token', 'revoke', '--name', 'browser-user', '--database-url', database]);
  await page.goto(`${api}/`);
  await prompt.waitFor({ timeout: 30_000 });
  const after = await page.evaluate(() => window.sessionStorage.getItem('shoal.token'));
  check(after === null, 'the revoked token was kept');
  log('revoked: the dashboard asks again');
  log('all passed');
}

let code = 0;
try {
  await main();
} catch (e) {
  code = 1;
  console.error(`[auth] FAILED: ${e.stack ?? e}`);
}
for (const cleanup of cleanups.reverse()) {
  try {
    await cleanup();
  } catch {
    /* ignore */
  }
}
process.exit(code);
