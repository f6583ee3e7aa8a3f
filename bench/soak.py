"""Benchmark: a whole soak-profile rehearsal at several speeds, side by side in one run.

For each speed it runs `orch soak start --profile P --speed S` in a fresh home (real worker
processes, real faults), samples the supervisor's RSS against soak time, and reads the verdict
and SLIs from the run's JSONL with the SLI aggregator. It reports the wall time, whether the
SLOs were met, p50/p95/p99 and success, and the supervisor's RSS after the first soak hour and at
the end of soak time, before the summary and its charts are drawn (their ratio: memory should stay
flat; the peak column includes the report). The highest speed that met every SLO and the first
that did not are named. Results go to reports/bench/soak.md.

    python bench/soak.py                      # 72h profile at 1440, 2160, 2880, 4320, 5760
    python bench/soak.py --profile 24h --speeds 1440,2880,5760
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator import profiles  # noqa: E402
from orchestrator.clock import WALL  # noqa: E402
from orchestrator.model import QueueConfig  # noqa: E402
from orchestrator.queue import Queue  # noqa: E402
from orchestrator.sli import aggregate_file  # noqa: E402

DRAIN_TASKS = 6000  # tasks in the queue the pool drains for its ceiling


def child_env() -> dict[str, str]:
    """This environment without ORCH_* variables: each run gets only its own --home."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}


def run_one(profile: str, speed: float, seed: int, workers: int | None) -> dict:
    duration = profiles.load(profile).duration
    home = Path(tempfile.mkdtemp(prefix="soakbench-"))
    argv = [sys.executable, "-m", "orchestrator", "soak", "start", "--profile", profile, "--speed", str(speed),
            "--seed", str(seed), "--home", str(home)]
    if workers:
        argv += ["--workers", str(workers)]
    env = child_env()
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    ps = psutil.Process(proc.pid)
    origin = None
    rss_1h = rss_end = rss_max = 0
    samples = 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss
        except psutil.Error:
            break
        rss_max = max(rss_max, rss)
        if origin is None:
            origin = _origin(home)
        if origin is not None:
            soak_t = (time.time() - origin) * speed
            if soak_t >= 3600 and not rss_1h:
                rss_1h = rss
            if soak_t <= duration:  # the end of soak time, before the summary and its charts
                rss_end = rss
        samples += 1
        time.sleep(0.1)
    _, err = proc.communicate()
    wall = time.monotonic() - started
    log = next(iter(sorted((home / "logs" / "soak").glob("soak_*_*.jsonl"))), None)
    figures = aggregate_file(log).figures() if log else {}
    return {
        "speed": speed, "wall": wall, "code": proc.returncode, "verdict": figures.get("verdict"),
        "p95": figures.get("sli2", {}).get("p95"),
        "p50": figures.get("sli2", {}).get("p50"), "p99": figures.get("sli2", {}).get("p99"),
        "success": figures.get("sli1", {}).get("success"),
        "slo": figures.get("slo", []), "events": figures.get("run", {}).get("events"),
        "rss_1h": rss_1h, "rss_end": rss_end, "rss_max": rss_max, "home": str(home),
        "stderr": err.decode(errors="replace")[-400:],
    }


def drain_rate(workers: int, work_wall: float, tasks: int = DRAIN_TASKS) -> float:
    """The pool's ceiling: `workers` real `orch worker` processes (wall clock, no supervisor, no
    faults) draining a pre-filled queue of tasks that each work `work_wall` seconds. Tasks per
    second of wall time, counted from the first completion (start-up not timed)."""
    home = Path(tempfile.mkdtemp(prefix="soakbench-drain-"))
    db = home / "db" / "queue.db"
    with Queue(db, WALL, QueueConfig()) as queue:
        for start in range(0, tasks, 200):
            queue.enqueue_many([(f"k{i}", {"work": work_wall}) for i in range(start, min(tasks, start + 200))])
    env = child_env()
    procs = [subprocess.Popen([sys.executable, "-m", "orchestrator", "worker", "--home", str(home), "--name", f"w{i}",
                               "--idle-exit", "0.5", "--poll", "0.001", "--no-reap"], env=env, cwd=ROOT)
             for i in range(workers)]
    first = None
    with Queue(db, WALL, QueueConfig()) as queue:  # one indexed count per look: the drain keeps the CPUs
        while (done := tasks - queue.count_open()) < tasks:
            if done and first is None:
                first = (time.monotonic(), done)
            time.sleep(0.005)
        end = time.monotonic()
    for proc in procs:
        proc.wait()
    return (tasks - first[1]) / (end - first[0])


def _origin(home: Path) -> float | None:
    db = home / "db" / "queue.db"
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("SELECT origin FROM runs ORDER BY started_wall DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def mb(n: int) -> str:
    return f"{n / 2**20:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="72h")
    ap.add_argument("--speeds", default="1440,2160,2880,4320,5760")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench" / "soak.md"))
    args = ap.parse_args()
    speeds = [float(s) for s in args.speeds.split(",")]
    profile = profiles.load(args.profile)
    pool = args.workers or profile.workers
    burst = max((b.rate for b in profile.arrivals.bursts), default=profile.arrivals.rate)
    drains = {label: drain_rate(pool, work) for label, work in
              (("no work", 0.0), (f"{profile.work_mean:g} soak s of work at speed {max(speeds):g}",
                                  profile.work_mean / max(speeds)))}
    print("drain:", drains, flush=True)
    rows = []
    for speed in speeds:
        row = run_one(args.profile, speed, args.seed, args.workers)
        rows.append(row)
        print(f"speed {speed:g}: wall {row['wall']:.1f}s verdict {row['verdict']} p95 {row['p95']} "
              f"success {row['success']} rss 1h {mb(row['rss_1h'])} MB end {mb(row['rss_end'])} MB", flush=True)
    passing = [r for r in rows if r["verdict"] == "PASS"]
    failing = [r for r in rows if r["verdict"] != "PASS"]
    best = max(passing, key=lambda r: r["speed"]) if passing else None
    first_fail = min((r for r in failing if not best or r["speed"] > best["speed"]), key=lambda r: r["speed"],
                     default=None)
    lines = [
        f"# Soak rehearsal benchmark: profile {args.profile}",
        "",
        f"Command: `python bench/soak.py --profile {args.profile} --speeds {args.speeds} --seed {args.seed}`  ",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.machine()}. Each row is one whole run in a fresh home, one after the other in the same "
        "process of this script (same machine, same minute).",
        "",
        "| speed | wall s | verdict | p50 / p95 / p99 soak s | success | events | RSS after 1st soak hour MB "
        "| RSS at soak end MB | end / 1h | peak RSS MB (with the report) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['rss_end'] / r['rss_1h']:.2f}" if r["rss_1h"] else "-"
        p95 = " / ".join(f"{r[k]:.1f}" for k in ("p50", "p95", "p99")) if r["p95"] is not None else "-"
        success = f"{100 * r['success']:.2f} %" if r["success"] is not None else "-"
        lines.append(f"| {r['speed']:g} | {r['wall']:.1f} | {r['verdict']} | {p95} | {success} | {r['events']} | "
                     f"{mb(r['rss_1h'])} | {mb(r['rss_end'])} | {ratio} | {mb(r['rss_max'])} |")
    lines.append("")
    if best:
        lines.append(f"Highest speed that met every SLO: **{best['speed']:g}** ({best['wall']:.1f} s of wall time).")
    else:
        lines.append("No speed met every SLO.")
    if first_fail:
        missed = [s["name"] for s in first_fail["slo"] if not s.get("pass")]
        lines.append(f"First speed above it that did not: **{first_fail['speed']:g}** "
                     f"(verdict {first_fail['verdict']}; missed: {', '.join(missed) or '-'}).")
    lines += [
        "",
        "## What limits the speed",
        "",
        f"The pool's ceiling, measured in the same run: {pool} `orch worker` processes on the wall clock "
        f"draining a pre-filled queue of {DRAIN_TASKS:,} tasks (no supervisor, no faults, no other process): "
        + "; ".join(f"{label}: **{rate:,.0f} tasks/s**" for label, rate in drains.items()) + ".",
        "",
        "Two things grow with the speed while the schedule stays the same (same seed, same arrivals, "
        "same success): every wall millisecond a task waits (for a poll, the write lock, a CPU) costs "
        "speed / 1000 soak seconds (" + ", ".join(f"{s / 1000:.1f} s at {s:g}" for s in speeds) + "); and the "
        f"bursts, {burst:g} tasks per soak minute, arrive at speed / 60 × {burst:g} tasks per wall second ("
        + ", ".join(f"{burst * s / 60:,.0f}/s at {s:g}" for s in speeds) + "). As that nears the ceiling, "
        "which the supervisor, the shipper and the faults share on the same cores, each burst leaves a "
        "backlog and the wait before the first lease grows: p95 enqueue->terminal passes its target. One "
        "worker alone drains faster than four (each SQLite connection re-reads its pages after another "
        "process writes), so more workers do not help on this machine.",
    ]
    lines.append("")
    lines.append("Goal (issue 4): the 72h profile in <= 60 s of wall time with its SLOs met (speed 4320 "
                 "gives 60 s of soak time at most); supervisor RSS at the end within 20 % of its RSS after "
                 "the first soak hour.")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
