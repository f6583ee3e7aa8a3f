"""Benchmark: a whole soak-profile rehearsal at several speeds, side by side in one run.

For each speed it runs `orch soak start --profile P --speed S` in a fresh home (real worker
processes, real faults), samples the supervisor's RSS against soak time, and reads the verdict
and SLIs from the run's JSONL with the SLI aggregator. It reports the wall time, whether the
SLOs were met, p95 and success, and the supervisor's RSS after the first soak hour and at the
end (their ratio: memory should stay flat). The highest speed that met every SLO and the first
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

from orchestrator.sli import aggregate_file  # noqa: E402


def run_one(profile: str, speed: float, seed: int, workers: int | None) -> dict:
    home = Path(tempfile.mkdtemp(prefix="soakbench-"))
    argv = [sys.executable, "-m", "orchestrator", "soak", "start", "--profile", profile, "--speed", str(speed),
            "--seed", str(seed), "--home", str(home)]
    if workers:
        argv += ["--workers", str(workers)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
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
            rss_end = rss
        samples += 1
        time.sleep(0.1)
    _, err = proc.communicate()
    wall = time.monotonic() - started
    log = next(iter(sorted((home / "logs" / "soak").glob("soak_*_*.jsonl"))), None)
    figures = aggregate_file(log).figures() if log else {}
    return {
        "speed": speed, "wall": wall, "code": proc.returncode, "verdict": figures.get("verdict"),
        "p95": figures.get("sli2", {}).get("p95"), "success": figures.get("sli1", {}).get("success"),
        "slo": figures.get("slo", []), "events": figures.get("run", {}).get("events"),
        "rss_1h": rss_1h, "rss_end": rss_end, "rss_max": rss_max, "home": str(home),
        "stderr": err.decode(errors="replace")[-400:],
    }


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
        "| speed | wall s | verdict | p95 soak s | success | events | RSS after 1st soak hour MB | RSS at end MB | end / 1h | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['rss_end'] / r['rss_1h']:.2f}" if r["rss_1h"] else "-"
        p95 = f"{r['p95']:.1f}" if r["p95"] is not None else "-"
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
