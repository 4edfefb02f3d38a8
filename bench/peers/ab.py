#!/usr/bin/env python3
"""Two or more Shoal builds side by side, in one sitting: `scripts/bench.sh ab`.

Runs `peers.py --systems SYSTEM --tasks N --rounds 1 --shoal BINARY` for each build in turn, one
round at a time (build A, build B, build A, ...), so that the machine's drift falls on every arm
alike, then prints each arm's medians and the ratios of each arm to the first. Example:

    python3 bench/peers/ab.py --system shoal --tasks 100000 --rounds 3 \\
        before=/tmp/shoal-main after=target/release/shoal

Every round's record (as peers.py writes it, plus `arm`) goes to WORK/results.jsonl.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
METRICS = [
    ("rate", "tasks/s", "{:,.0f}"),
    ("completed_first_second", "completed in the first second", "{:,.0f}"),
    ("cpu_ms_per_task", "CPU ms per task", "{:.3f}"),
    ("worker_cpu_s", "worker CPU s", "{:.2f}"),
    ("dev_cpu_s", "shoal dev CPU s", "{:.2f}"),
    ("pg_cpu_s", "postgres CPU s", "{:.2f}"),
    ("statements_per_task", "statements per task", "{:.3f}"),
    ("wal_per_task", "WAL bytes per task", "{:,.0f}"),
    ("worker_rss_mib", "worker peak RSS MiB", "{:.0f}"),
    ("load1", "load (1 min)", "{:.1f}"),
]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", default="shoal", help="a Shoal system of peers.py (shoal, shoal-tuned, shoal-dev-sqlite)")
    p.add_argument("--tasks", type=int, default=100000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--processes", type=int, default=1,
                   help="`shoal worker` processes draining the job (peers.py --worker-processes); "
                        "a change to the SQL claim wants 1, 2, 4 and 8")
    p.add_argument("--work", type=Path, default=Path("target/bench-ab"))
    p.add_argument("arms", nargs="+", help="name=path of a shoal binary, two or more")
    args = p.parse_args()
    arms = [a.split("=", 1) for a in args.arms]
    if len(arms) < 2 or any(len(a) != 2 for a in arms):
        p.error("give two or more arms as name=binary")
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.work / "results.jsonl"
    out.unlink(missing_ok=True)
    rows = {name: [] for name, _ in arms}
    for round_no in range(1, args.rounds + 1):
        for name, binary in arms:
            work = args.work / name
            subprocess.run([sys.executable, str(HERE / "peers.py"), "--systems", args.system,
                            "--tasks", str(args.tasks), "--rounds", "1", "--shoal", binary,
                            "--worker-processes", str(args.processes),
                            "--work", str(work)], check=True, stdout=subprocess.DEVNULL)
            last = (work / "results.jsonl").read_text().strip().splitlines()[-1]
            r = json.loads(last)
            r.update(arm=name, round=round_no)
            r.pop("top", None)
            rows[name].append(r)
            with open(out, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"round {round_no} {name}: {r['rate']:,.0f} tasks/s, {r['cpu_ms_per_task']:.3f} CPU ms per task",
                  file=sys.stderr)
    first = arms[0][0]
    procs = f", {args.processes} worker processes" if args.processes > 1 else ""
    print(f"{args.system}, {args.tasks:,} tasks{procs}, {args.rounds} round(s) alternated: median [each round]\n")
    print("| metric | " + " | ".join(name for name, _ in arms) + " | " +
          " | ".join(f"{name} / {first}" for name, _ in arms[1:]) + " |")
    print("| --- |" + " --- |" * (2 * len(arms) - 1))
    for key, label, fmt in METRICS:
        if not any(key in r for rs in rows.values() for r in rs):
            continue  # not measured for this system (SQLite has no worker process nor server)
        med = {name: statistics.median(r.get(key, 0) for r in rs) for name, rs in rows.items()}
        cells = [f"{fmt.format(med[name])} [{', '.join(fmt.format(r.get(key, 0)) for r in rows[name])}]"
                 for name, _ in arms]
        ratios = [f"{med[name] / med[first]:.3f}x" if med[first] else "-" for name, _ in arms[1:]]
        print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    print(f"\nper round: {out}")


if __name__ == "__main__":
    main()
