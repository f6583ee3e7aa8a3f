"""Benchmark: the skip clock (`orch soak start --clock skip`) beside the constant clock, in one run.

- Speed: the 72h and 24h profiles on the skip clock, `--repeat` runs each on an idle machine: wall
  time with start-up, drain and summary, the number of jumps, the share of wall time the clock ran
  at its busy rate (soak time not skipped / busy rate / wall), and tasks per wall second.
- Robustness: the 72h profile, `--repeat` runs while a spinning process of this script keeps one of
  the two cores busy.
- Fidelity: the same profile and seed on the skip clock and on the constant clock at a low speed
  (default a 6-hour cut of the 72h profile at 60x, about 6 minutes; `--fidelity-24h` adds the 24h
  profile at 60x, about 24 minutes): SLI-1, p50, p95 and the tasks that ended FAILED or were ever
  BLOCKED, with the differences.
- Baseline: the constant clock's 72h rehearsal at `--constant-speed` (1440x), in the same run.

Results go to reports/bench/skip.md.

    python bench/skip.py                       # 5 + 5 72h runs, 3 24h runs, the 6h fidelity pair
    python bench/skip.py --repeat 1 --fidelity-24h
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from soak import run_one  # noqa: E402

from orchestrator.core import profiles  # noqa: E402
from orchestrator.core.skipclock import SkipClock  # noqa: E402

SKIP = ("--clock", "skip")


def clock_figures(row: dict) -> dict:
    """Jumps and the busy share of a skip run, read from its clock file."""
    found = sorted(Path(row["home"]).glob("run/*/clock.bin"))
    if not found:
        return {"jumps": None, "busy": None}
    clock = SkipClock(found[0])
    soak = row["soak_end"] or 0.0
    busy_wall = max(soak - clock.skipped, 0.0) / clock.rate
    return {"jumps": clock.jumps, "busy": busy_wall / row["wall"] if row["wall"] else None}


def final_states(home: str) -> tuple[float, dict[int, str], set[int]]:
    """From the run's JSONL: the soak end, each planned arrival's final state, the arrivals ever
    BLOCKED (by arrival number: the keys carry the run id, which differs between two runs)."""
    log = next(iter(sorted((Path(home) / "logs" / "soak").glob("soak_*_*.jsonl"))))
    arrival: dict[str, int] = {}
    state: dict[int, str] = {}
    blocked: set[int] = set()
    end = 0.0
    with open(log, "rb") as fh:
        next(fh)
        for line in fh:
            e = orjson.loads(line)
            end = max(end, e.get("t") or 0.0)
            if e["event"] == "enqueued" and e.get("arrival") is not None:
                arrival[e["key"]] = int(e["arrival"])
            n = arrival.get(e.get("key"))
            if n is not None and e.get("state"):
                state[n] = e["state"]
                if e["state"] == "BLOCKED":
                    blocked.add(n)
    return end, state, blocked


def run(profile: str, seed: int, clock: tuple[str, ...], label: str, speed: float = 0.0) -> dict:
    row = run_one(profile, speed, seed, None, clock)
    row["label"] = label
    row["load"] = os.getloadavg()[0]  # what else ran: the machine's 1-minute load as the run ended
    row["soak_end"], row["states"], row["blocked"] = final_states(row["home"])
    row["tasks"] = len(row["states"])
    row.update(clock_figures(row) if clock else {"jumps": None, "busy": None})
    print(f"{label}: wall {row['wall']:.1f}s verdict {row['verdict']} p95 {row['p95']} success {row['success']} "
          f"jumps {row['jumps']}", flush=True)
    return row


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def num(x, fmt=".1f") -> str:
    return "-" if x is None else format(x, fmt)


def rows_table(rows: list[dict]) -> list[str]:
    out = ["| run | wall s | verdict | success | p50 / p95 soak s | tasks | tasks per wall s | jumps | busy share "
           "| load at end |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['label']} | {r['wall']:.1f} | {r['verdict']} | {pct(r['success'])} | "
                   f"{num(r['p50'])} / {num(r['p95'])} | {r['tasks']} | {r['tasks'] / r['wall']:.0f} | "
                   f"{num(r['jumps'], 'd') if r['jumps'] is not None else '-'} | {pct(r['busy'])} | "
                   f"{r['load']:.2f} |")
    return out


def summary_line(name: str, rows: list[dict]) -> str:
    walls = [r["wall"] for r in rows]
    passed = sum(1 for r in rows if r["verdict"] == "PASS")
    return (f"| {name} | {passed} of {len(rows)} | {min(walls):.1f} / {median(walls):.1f} / {max(walls):.1f} | "
            f"{num(median([r['p95'] for r in rows if r['p95'] is not None]))} |")


def fidelity(skip: dict, slow: dict) -> list[str]:
    def failed(r):
        return {k for k, v in r["states"].items() if v == "FAILED"}

    rows = [("SLI-1 success", pct(skip["success"]), pct(slow["success"]),
             f"{100 * (skip['success'] - slow['success']):+.2f} points", "0.2 points"),
            ("p50 soak s", num(skip["p50"]), num(slow["p50"]), f"{skip['p50'] - slow['p50']:+.1f}", "1 s"),
            ("p95 soak s", num(skip["p95"]), num(slow["p95"]), f"{skip['p95'] - slow['p95']:+.1f}", "3 s"),
            ("tasks FAILED", str(len(failed(skip))), str(len(failed(slow))),
             f"{len(failed(skip) ^ failed(slow))} differ", "same tasks"),
            ("tasks ever BLOCKED", str(len(skip["blocked"])), str(len(slow["blocked"])),
             f"{len(skip['blocked'] ^ slow['blocked'])} differ", "same tasks"),
            ("wall s", f"{skip['wall']:.1f}", f"{slow['wall']:.1f}", f"{slow['wall'] / skip['wall']:.0f}x", "")]
    out = [f"| figure | {skip['label']} | {slow['label']} | difference | goal |", "|---|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    return out


def cut(profile: str, hours: float) -> str:
    p = dataclasses.replace(profiles.load(profile), name=f"{profile}-cut{hours:g}h", duration=hours * 3600.0)
    path = Path(tempfile.mkdtemp(prefix="skipbench-")) / f"{p.name}.toml"
    path.write_text(p.to_toml())
    return str(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="72h runs per condition (idle, one core busy)")
    ap.add_argument("--repeat-24h", type=int, default=3)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--constant-speed", type=float, default=1440.0)
    ap.add_argument("--fidelity-speed", type=float, default=60.0)
    ap.add_argument("--fidelity-24h", action="store_true", help="also the 24h profile at the fidelity speed (24 min)")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench" / "skip.md"))
    args = ap.parse_args()

    idle = [run("72h", args.seed, SKIP, f"72h skip #{k + 1}") for k in range(args.repeat)]
    day = [run("24h", args.seed, SKIP, f"24h skip #{k + 1}") for k in range(args.repeat_24h)]
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        loaded = [run("72h", args.seed, SKIP, f"72h skip, a core busy #{k + 1}") for k in range(args.repeat)]
    finally:
        spinner.kill()
        spinner.wait()
    base = run("72h", args.seed, (), f"72h constant {args.constant_speed:g}x", args.constant_speed)
    pairs = []
    six = cut("72h", 6)
    pairs.append((run(six, args.seed, SKIP, "72h 6h cut, skip"),
                  run(six, args.seed, (), f"72h 6h cut, {args.fidelity_speed:g}x", args.fidelity_speed)))
    if args.fidelity_24h:
        pairs.append((run("24h", args.seed, SKIP, "24h, skip"),
                      run("24h", args.seed, (), f"24h, {args.fidelity_speed:g}x", args.fidelity_speed)))

    lines = [
        "# The skip clock: speed, robustness, fidelity",
        "",
        f"Command: `python bench/skip.py --repeat {args.repeat} --repeat-24h {args.repeat_24h} --seed {args.seed}"
        + (" --fidelity-24h" if args.fidelity_24h else "") + "`  ",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.machine()}. Every run is one whole rehearsal (`orch soak start`, real processes and faults) in "
        "a fresh home, one after the other; wall time includes start-up, drain and the summary. Busy rate: "
        "the default (`--busy-rate`). \"load at end\" is the machine's 1-minute load average as each run ended "
        "(2 cores: about 1 is one core's worth of other work; the one-core-busy runs add 1 themselves).",
        "",
        "| runs | met every SLO | wall s min / median / max | p95 soak s (median) |",
        "|---|---|---|---|",
        summary_line("72h skip, idle machine", idle),
        summary_line("24h skip, idle machine", day),
        summary_line("72h skip, one core kept busy", loaded),
        summary_line(f"72h constant {args.constant_speed:g}x (baseline)", [base]),
        "",
        f"Baseline ratio: the 72h profile on the skip clock took {median([r['wall'] for r in idle]) / base['wall']:.2f}"
        f" of the constant clock's wall time at {args.constant_speed:g}x (medians).",
        "",
        "## Fidelity (same profile and seed)",
        "",
    ]
    for skip, slow in pairs:
        lines += fidelity(skip, slow) + [""]
    lines += ["## Every run", "", *rows_table(idle + day + loaded + [base] + [r for p in pairs for r in p]), ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
