// pg-boss throughput benchmark: node bench.mjs enqueue|work (driven by ../peers.py).
// enqueue: N no-op jobs through insert() in chunks of BATCH; work: the worker over the pre-filled
// queue until every job is completed. Progress queries carry the comment bench-driver, which the
// driver leaves out of its statement counts.
import { PgBoss } from "pg-boss";
import pg from "pg";

const N = Number(process.env.N || 20000);
const CONC = Number(process.env.CONCURRENCY || 16);   // localConcurrency (number of polling workers)
const FETCH = Number(process.env.FETCH_BATCH || 1);    // batchSize per fetch (pg-boss default 1)
const BURST = FETCH > 1 && process.env.BURST !== "0";  // burstWhenBatchFull: refetch immediately while batches come back full
const BATCH = Number(process.env.BATCH || 1000);       // insert() chunk size
const DB = process.env.DATABASE_URL || "postgres://postgres@127.0.0.1:55432/pgboss_bench";
const Q = "noop";

async function notDone(c) {
  const r = await c.query("select count(*)::int /* bench-driver */ c from pgboss.job where name=$1 and state <> 'completed'", [Q]);
  return r.rows[0].c;
}

const mode = process.argv[2];
const boss = new PgBoss({ connectionString: DB, max: Number(process.env.POOL || Math.min(CONC + 4, 100)) });
boss.on("error", (e) => console.error("[pg-boss error]", e.message));
const c = new pg.Client({ connectionString: DB }); await c.connect();
if (mode === "enqueue") {
  await boss.start();
  await boss.createQueue(Q);
  const t0 = performance.now();
  for (let i = 0; i < N; i += BATCH) {
    const jobs = [];
    for (let j = i; j < Math.min(N, i + BATCH); j++) jobs.push({ data: { i: j } });
    await boss.insert(Q, jobs);
  }
  const dt = (performance.now() - t0) / 1000;
  const n = await notDone(c);
  console.log(JSON.stringify({ phase: "enqueue", n, seconds: dt, rate: N / dt }));
  await boss.stop({ graceful: false, wait: true });
} else if (mode === "work") {
  await boss.start();
  let done = 0, tFirst = null, resolveAll;
  const allHandled = new Promise((r) => (resolveAll = r));
  await boss.work(Q, { localConcurrency: CONC, batchSize: FETCH, pollingIntervalSeconds: 0.5, burstWhenBatchFull: BURST }, async (jobs) => {
    if (tFirst === null) tFirst = performance.now();
    done += jobs.length;
    if (done >= N) resolveAll();
  });
  await allHandled;
  while ((await notDone(c)) > 0) await new Promise((r) => setTimeout(r, 5));
  const tEnd = performance.now();
  const dt = (tEnd - tFirst) / 1000;
  console.log(JSON.stringify({ phase: "work", n: done, concurrency: CONC, fetch_batch: FETCH, burst: BURST, poll_s: 0.5, seconds: dt, rate: N / dt,
    first_start_ms: performance.timeOrigin + tFirst, end_ms: performance.timeOrigin + tEnd }));
  await boss.stop({ graceful: false, wait: false });
}
await c.end();
process.exit(0);
