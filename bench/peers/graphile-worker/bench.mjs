// graphile-worker throughput benchmark: node bench.mjs enqueue|work (driven by ../peers.py).
// enqueue: N no-op jobs through addJobs in chunks of BATCH; prints {n, seconds, rate}.
// work: a worker pool over the pre-filled queue until every job's completion is committed;
// prints {rate, first_start_ms, end_ms} (epoch milliseconds). The queries of this file that only
// observe progress carry the comment bench-driver, which the driver leaves out of its statement
// counts.
import { run, runMigrations, makeWorkerUtils, Logger } from "graphile-worker";
import pg from "pg";

const N = Number(process.env.N || 20000);
const CONC = Number(process.env.CONCURRENCY || 16);
const BATCH = Number(process.env.BATCH || 1000);
const DB = process.env.DATABASE_URL || "postgres://postgres@127.0.0.1:55432/gw_bench";
const TUNED = process.env.TUNED === "1";
// A pool of CONCURRENCY + 2 as in the reference runs, capped below the server's connection limit.
const POOL = Number(process.env.POOL || Math.min(CONC + 2, 100));
const quiet = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`[${level}] ${message}`);
});
const preset = TUNED
  ? { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } }
  : undefined;

async function remaining(client) {
  const r = await client.query("select count(*)::int /* bench-driver */ c from graphile_worker._private_jobs");
  return r.rows[0].c;
}

const mode = process.argv[2];
if (mode === "enqueue") {
  await runMigrations({ connectionString: DB, logger: quiet });
  const utils = await makeWorkerUtils({ connectionString: DB, logger: quiet });
  const c = new pg.Client({ connectionString: DB }); await c.connect();
  await c.query("truncate graphile_worker._private_jobs cascade");
  const t0 = performance.now();
  for (let i = 0; i < N; i += BATCH) {
    const specs = [];
    for (let j = i; j < Math.min(N, i + BATCH); j++) specs.push({ identifier: "noop", payload: { i: j } });
    await utils.addJobs(specs);
  }
  const dt = (performance.now() - t0) / 1000;
  const n = await remaining(c);
  console.log(JSON.stringify({ phase: "enqueue", n, seconds: dt, rate: N / dt }));
  await c.end(); await utils.release();
} else if (mode === "work") {
  const c = new pg.Client({ connectionString: DB }); await c.connect();
  let done = 0, tFirst = null, resolveAll;
  const allHandled = new Promise((r) => (resolveAll = r));
  const runner = await run({
    connectionString: DB, concurrency: CONC, maxPoolSize: POOL, noHandleSignals: true,
    pollInterval: 1000, logger: quiet, preset,
    taskList: {
      noop: async () => {
        if (tFirst === null) tFirst = performance.now();
        if (++done === N) resolveAll();
      },
    },
  });
  await allHandled;
  // wait until the queue table is actually drained (completions committed)
  while ((await remaining(c)) > 0) await new Promise((r) => setTimeout(r, 5));
  const tEnd = performance.now();
  const dt = (tEnd - tFirst) / 1000;
  console.log(JSON.stringify({ phase: "work", n: done, concurrency: CONC, tuned: TUNED, seconds: dt, rate: N / dt,
    first_start_ms: performance.timeOrigin + tFirst, end_ms: performance.timeOrigin + tEnd }));
  await runner.stop(); await c.end();
} else {
  console.error("usage: bench.mjs enqueue|work"); process.exit(2);
}
