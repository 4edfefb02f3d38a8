#!/usr/bin/env node
// Browser test of cross-origin access (CORS), the way the old system's dashboard used the API:
// from a page on its own origin, with `Content-Type: application/json` (so the browser sends a
// preflight first).
//
// Starts `shoal dev` ($SHOAL_BIN, default ../target/debug/shoal) on a free port with a temporary
// SQLite database and `--cors-allow-origin` for one origin, and two tiny static servers on
// other loopback ports: the allowed origin and another one. Then, in Debian's Chromium
// ($CHROMIUM, default /usr/bin/chromium) driven by playwright-core:
//   1. a page from the allowed origin submits a job (REST), lists jobs, follows its job to
//      COMPLETED, reads its tasks (also by the old `<job id>-task-<index>` ids) and asks GraphQL;
//   2. a page from any other origin can neither read (REST, GraphQL) nor write: a JSON POST
//      fails its preflight, and a "simple" text/plain POST, which browsers send without one,
//      is refused by Shoal (403) and submits nothing; nor can it open a GraphQL WebSocket;
//   3. Shoal's own page (same origin) still works without any flag.
// Exits non-zero on the first failure.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const repoDir = path.resolve(webDir, '..');
const shoalBin = path.resolve(process.env.SHOAL_BIN ?? path.join(repoDir, 'target/debug/shoal'));
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

const cleanups = [];
const log = (...args) => console.log(`[cors ${new Date().toISOString().slice(11, 19)}]`, ...args);
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

// A page that stands for the old dashboard: it only has to exist on its origin; the test runs
// the dashboard's calls in it.
async function staticSite(name) {
  const port = await freePort();
  const server = createHttpServer((_, response) => {
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end(`<!doctype html><html lang="en"><title>${name}</title><h1>${name}</h1></html>`);
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  cleanups.push(() => new Promise((r) => server.close(() => r())));
  return `http://127.0.0.1:${port}`;
}

function startShoal({ port, db, allowed }) {
  const args = ['dev', '--database-url', `sqlite:${db}`, '--listen', `127.0.0.1:${port}`, '--workers', '4', '--cors-allow-origin', allowed];
  const child = spawn(shoalBin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' } });
  const output = [];
  const keep = (chunk) => {
    output.push(chunk.toString());
    if (output.length > 200) output.shift();
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.output = output;
  return child;
}

function stop(child) {
  return new Promise((resolve) => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 5_000).unref();
  });
}

// What the API holds, asked by this process (no Origin header: not a browser).
async function jobCount(api) {
  const response = await fetch(`${api}/api/v1/jobs?page_size=1`);
  return (await response.json()).total;
}

// Runs `calls` in the page: each a fetch described as {name, url, init}; returns, per call,
// {ok, status, body} or {error} when the browser refused it (a CORS failure is a TypeError).
function callsIn(page, calls) {
  return page.evaluate(async (calls) => {
    const results = {};
    for (const { name, url, init } of calls) {
      try {
        const response = await fetch(url, init);
        const text = response.type === 'opaque' ? null : await response.text();
        results[name] = { type: response.type, status: response.status, body: text ? JSON.parse(text) : null };
      } catch (e) {
        results[name] = { error: `${e.name}: ${e.message}` };
      }
    }
    return results;
  }, calls);
}

// Opens a GraphQL WebSocket (graphql-transport-ws) from the page; resolves to 'acked' when the
// server accepted the connection, else to how it ended.
function webSocketFrom(page, url) {
  return page.evaluate(
    (url) =>
      new Promise((resolve) => {
        const socket = new WebSocket(url, 'graphql-transport-ws');
        const timer = setTimeout(() => resolve('timeout'), 5_000);
        socket.onopen = () => socket.send(JSON.stringify({ type: 'connection_init' }));
        socket.onmessage = (m) => {
          clearTimeout(timer);
          resolve(JSON.parse(m.data).type === 'connection_ack' ? 'acked' : `message ${m.data}`);
          socket.close();
        };
        socket.onerror = () => {
          clearTimeout(timer);
          resolve('error');
        };
      }),
    url,
  );
}

const json = (body) => ({ method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

async function main() {
  check(existsSync(shoalBin), `no shoal binary at ${shoalBin} (build it: cargo build --bin shoal, or set SHOAL_BIN)`);
  check(existsSync(chromiumPath), `no Chromium at ${chromiumPath} (apt-get install -y chromium, or set CHROMIUM)`);
  const tmp = mkdtempSync(path.join(tmpdir(), 'shoal-cors-e2e-'));
  cleanups.push(() => rmSync(tmp, { recursive: true, force: true }));

  const allowed = await staticSite('old dashboard (allowed origin)');
  const other = await staticSite('some other site');
  const port = await freePort();
  const api = `http://127.0.0.1:${port}`;
  const shoal = startShoal({ port, db: path.join(tmp, 'shoal.db'), allowed });
  cleanups.push(() => stop(shoal));
  await waitFor('shoal to answer', async () => (await fetch(`${api}/health`)).ok, 60_000).catch((e) => {
    throw new Error(`${e.message}\n--- shoal output ---\n${shoal.output.join('')}`);
  });
  log(`shoal dev on ${api}, allowing ${allowed}; other origin ${other}`);

  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run', '--disable-sync'],
  });
  cleanups.push(() => browser.close());
  const context = await browser.newContext();
  const page = await context.newPage();

  // --- 1. The allowed origin: submit, list, follow, tasks, GraphQL.
  await page.goto(allowed);
  const submitted = await callsIn(page, [
    {
      name: 'submit',
      url: `${api}/api/v1/jobs`,
      init: json({ job_type: 'io_bound', num_tasks: 3, parameters: { work_duration_seconds: 0.1 } }),
    },
  ]);
  check(submitted.submit.status === 201, `allowed origin: submit answered ${JSON.stringify(submitted.submit)}`);
  const jobId = submitted.submit.body.id;
  log(`allowed origin: submitted job ${jobId} (${submitted.submit.body.status})`);

  // The list is the read model's: it shows the job a few milliseconds after the 201.
  await waitFor('the job in the list, from the allowed origin', async () => {
    const { list } = await callsIn(page, [{ name: 'list', url: `${api}/api/v1/jobs?page=1&page_size=20` }]);
    check(list.status === 200, `allowed origin: list answered ${JSON.stringify(list)}`);
    return list.body.jobs.some((j) => j.id === jobId);
  }, 10_000, 100);

  const done = await waitFor('the job to complete, followed from the allowed origin', async () => {
    const { job } = await callsIn(page, [{ name: 'job', url: `${api}/api/v1/jobs/${jobId}` }]);
    return job.status === 200 && job.body.status === 'COMPLETED' && job.body;
  }, 30_000, 300);
  check(done.completed_tasks === 3, `completed_tasks ${done.completed_tasks}`);

  const reads = await callsIn(page, [
    { name: 'tasks', url: `${api}/api/v1/jobs/${jobId}/tasks` },
    { name: 'oldId', url: `${api}/api/v1/tasks/${jobId}-task-2` },
    { name: 'graphql', url: `${api}/graphql`, init: json({ query: `{ job(id: "${jobId}") { status totalTasks } }` }) },
  ]);
  check(reads.tasks.status === 200 && reads.tasks.body.total === 3, `allowed origin: tasks ${JSON.stringify(reads.tasks)}`);
  check(reads.oldId.status === 200 && reads.oldId.body.task_index === 2 && reads.oldId.body.job_id === jobId, `allowed origin: task by the old id ${JSON.stringify(reads.oldId)}`);
  check(reads.graphql.status === 200 && reads.graphql.body.data.job.status === 'COMPLETED', `allowed origin: GraphQL ${JSON.stringify(reads.graphql)}`);
  // A report from a worker page on the allowed origin (a preflighted POST without a body).
  const running = await callsIn(page, [{ name: 'running', url: `${api}/api/v1/tasks/${jobId}-task-0/running`, init: { method: 'POST' } }]);
  check(running.running.status === 200 && running.running.body.status === 'COMPLETED', `allowed origin: running on a completed task ${JSON.stringify(running.running)}`);
  check((await webSocketFrom(page, `ws://127.0.0.1:${port}/graphql`)) === 'acked', 'allowed origin: the GraphQL WebSocket was not accepted');
  log('allowed origin: submitted, listed, followed to COMPLETED, read tasks (old ids too), GraphQL and its WebSocket');

  // --- 2. Another origin: no reads, no writes.
  await page.goto(other);
  const before = await jobCount(api);
  const refused = await callsIn(page, [
    { name: 'list', url: `${api}/api/v1/jobs` },
    { name: 'job', url: `${api}/api/v1/jobs/${jobId}` },
    { name: 'submitJson', url: `${api}/api/v1/jobs`, init: json({ job_type: 'noop', num_tasks: 1 }) },
    { name: 'graphqlRead', url: `${api}/graphql`, init: json({ query: '{ jobs(first: 5) { edges { node { id } } } }' }) },
    {
      name: 'graphqlWrite',
      url: `${api}/graphql`,
      init: json({ query: 'mutation { submitJob(input: {jobType: "noop", totalTasks: 1}) { id } }' }),
    },
  ]);
  for (const [name, result] of Object.entries(refused)) {
    check(result.error?.startsWith('TypeError'), `other origin: ${name} was not blocked: ${JSON.stringify(result)}`);
  }
  // Requests a browser sends without asking first ("simple" requests): the page cannot read the
  // answers (opaque), and Shoal refuses the writes itself.
  const simple = await callsIn(page, [
    {
      name: 'submitText',
      url: `${api}/api/v1/jobs`,
      init: { method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'text/plain' }, body: JSON.stringify({ job_type: 'noop', num_tasks: 1 }) },
    },
    {
      name: 'failText',
      url: `${api}/api/v1/tasks/${jobId}-task-1/failed`,
      init: { method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'text/plain' }, body: '{"error_message": "from elsewhere"}' },
    },
    {
      name: 'graphqlForm',
      url: `${api}/graphql`,
      init: {
        method: 'POST',
        mode: 'no-cors',
        headers: { 'Content-Type': 'text/plain' },
        body: JSON.stringify({ query: 'mutation { submitJob(input: {jobType: "noop", totalTasks: 1}) { id } }' }),
      },
    },
  ]);
  for (const [name, result] of Object.entries(simple)) {
    check(result.type === 'opaque' || result.error, `other origin: ${name} was readable: ${JSON.stringify(result)}`);
  }
  const direct = await fetch(`${api}/api/v1/jobs`, {
    method: 'POST',
    headers: { Origin: other, 'Content-Type': 'text/plain' },
    body: JSON.stringify({ job_type: 'noop', num_tasks: 1 }),
  });
  check(direct.status === 403, `a write with Origin ${other} answered ${direct.status}, not 403`);
  const ws = await webSocketFrom(page, `ws://127.0.0.1:${port}/graphql`);
  check(ws !== 'acked', 'other origin: the GraphQL WebSocket was accepted');
  await sleep(500);
  check((await jobCount(api)) === before, `other origin: jobs went from ${before} to ${await jobCount(api)}`);
  const task = await (await fetch(`${api}/api/v1/tasks/${jobId}-task-1`)).json();
  check(task.status === 'COMPLETED' && task.error_message === null, `other origin: the task changed: ${JSON.stringify(task)}`);
  log(`other origin: reads blocked, JSON and text/plain writes refused, WebSocket ${ws}; ${before} jobs before and after`);

  // --- 3. Shoal's own origin needs no flag.
  await page.goto(`${api}/health`);
  const own = await callsIn(page, [
    { name: 'submit', url: '/api/v1/jobs', init: json({ job_type: 'noop', num_tasks: 1 }) },
    { name: 'graphql', url: '/graphql', init: json({ query: '{ jobs(first: 1) { edges { node { id } } } }' }) },
  ]);
  check(own.submit.status === 201, `same origin: submit answered ${JSON.stringify(own.submit)}`);
  check(own.graphql.status === 200 && !own.graphql.body.errors, `same origin: GraphQL answered ${JSON.stringify(own.graphql)}`);
  log('same origin: submit and GraphQL work');
  log('all passed');
}

let code = 0;
try {
  await main();
} catch (e) {
  code = 1;
  console.error(`[cors] FAILED: ${e.stack ?? e}`);
}
for (const cleanup of cleanups.reverse()) {
  try {
    await cleanup();
  } catch {
    /* ignore */
  }
}
process.exit(code);
