"""Benchmark of the on-call view (issue 7), against the real server over real sockets.

1. Tasks list and search latency (p50/p95 over HTTP, `orch soak serve` in this process's thread)
   at 10k, 100k and 1M tasks: first page, a deep page (keyset), by state, by state deep, by
   error class, state + error, key, id, an enqueue-time range. The databases are built with the
   queue's own named statements (`insert_task`, `operator_update`): 97 % DONE, 2 % FAILED across
   error classes, 0.5 % BLOCKED, the rest PENDING.
2. An accelerated 72h soak (`orch soak start --profile 72h --speed 2160`) with `orch soak serve`
   beside it: the server's RSS after the first soak hour and at the end, then the SSE backfill
   time of the whole run for a fresh client; and the same soak without the server just before it
   (verdict, wall time, p95 side by side).

    python bench/dashboard.py                    # everything -> reports/bench/dashboard.md
    python bench/dashboard.py --sizes 10000 --no-soak
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.core.home import Home  # noqa: E402
from orchestrator.queue.sqlite.sqlfile import q  # noqa: E402
from orchestrator.queue.writes import Queue  # noqa: E402
from orchestrator.web.server import ServeConfig, make_server  # noqa: E402

ERRORS = ("timeout", "network", "rate_limit", "param_error", "unknown", "lease_timeout")


def build(home: Home, n: int) -> None:
    home.ensure()
    with Queue(home.db) as queue:
        conn = queue.store.conn
        rng = random.Random(7)
        t0 = 1_000_000.0
        conn.execute("BEGIN")
        for start in range(0, n, 10_000):
            rows = [{"key": f"k{i:08d}", "payload": "{}", "max_attempts": 4, "due_at": t0 + i * 0.2,
                     "now": t0 + i * 0.2, "budget": None} for i in range(start, min(n, start + 10_000))]
            conn.executemany(q("insert_task"), rows)
        updates = []
        for i in range(1, n + 1):
            r = rng.random()
            state, error = ("DONE", None) if r < 0.97 else ("FAILED", rng.choice(ERRORS)) if r < 0.99 else \
                ("BLOCKED", "guardrail") if r < 0.995 else ("PENDING", None)
            updates.append({"id": i, "now": t0 + i * 0.2 + 30, "state": state, "due_at": t0 + i * 0.2, "attempt": 1,
                            "unknown_seen": 0, "budget": None, "plan": None, "error": error, "detail": None})
            if len(updates) == 10_000:
                conn.executemany(q("operator_update"), updates)
                updates = []
        conn.executemany(q("operator_update"), updates)
        conn.execute("COMMIT")


def timed_get(port: int, path: str, reps: int) -> tuple[float, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        times.append((time.perf_counter() - start) * 1000)
        assert resp.status == 200, (path, body[:200])
    conn.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def search_bench(n: int, reps: int) -> list[tuple]:
    home = Home(Path(tempfile.mkdtemp(prefix="dashbench-")))
    t = time.perf_counter()
    build(home, n)
    built = time.perf_counter() - t
    server = make_server(ServeConfig(home=home, port=0))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    port = server.server_address[1]
    mid = n // 2
    queries = [
        ("list, first page", "/api/tasks?limit=50"),
        ("list, deep page (keyset)", f"/api/tasks?limit=50&before=ORCH-{mid}"),
        ("state=DONE", "/api/tasks?state=DONE&limit=50"),
        ("state=DONE, deep page", f"/api/tasks?state=DONE&limit=50&before=ORCH-{mid}"),
        ("state=FAILED", "/api/tasks?state=FAILED&limit=50"),
        ("error=timeout", "/api/tasks?error=timeout&limit=50"),
        ("state=FAILED & error=network", "/api/tasks?state=FAILED&error=network&limit=50"),
        ("key", f"/api/tasks?key=k{mid:08d}"),
        ("id", f"/api/tasks?id=ORCH-{mid}"),
        ("time range (1 soak hour)", f"/api/tasks?from={mid * 0.2}&to={mid * 0.2 + 3600}&limit=50"),
        ("timeline of one task", f"/api/tasks/ORCH-{mid}"),
    ]
    rows = []
    try:
        for label, path in queries:
            p50, p95 = timed_get(port, path, reps)
            rows.append((n, label, p50, p95))
    finally:
        server.shutdown()
        server.monitor.stop()
        server.server_close()
    print(f"{n:,} tasks built in {built:.1f}s", flush=True)
    return rows


def child_env() -> dict[str, str]:
    """This environment without ORCH_* variables: each process gets only its own --home."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}


def start_soak(speed: float, prefix: str) -> tuple[Path, dict, subprocess.Popen]:
    """`orch soak start --profile 72h` in a fresh home, without the caller's ORCH_* variables."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    env = child_env()
    soak = subprocess.Popen([sys.executable, "-m", "orchestrator", "soak", "start", "--profile", "72h", "--speed",
                             str(speed), "--home", str(home)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    return home, env, soak


def soak_bench(speed: float) -> dict:
    started = time.monotonic()
    home, env, soak = start_soak(speed, "dashsoak-")
    serve = subprocess.Popen([sys.executable, "-m", "orchestrator", "soak", "serve", "--port", "0", "--home",
                              str(home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT, text=True)
    line = serve.stdout.readline()
    port = int(line.split()[1].rstrip("/").rsplit(":", 1)[1])
    ps = psutil.Process(serve.pid)
    rss_1h = rss_end = rss_max = 0
    tick = threading.Event()
    try:
        while soak.poll() is None:
            rss = ps.memory_info().rss
            rss_max = max(rss_max, rss)
            soak_t = _soak_t(port)
            if soak_t is not None and soak_t >= 3600 and not rss_1h:
                rss_1h = rss
            tick.wait(0.25)
        wall = time.monotonic() - started
        end = time.monotonic() + 60
        while time.monotonic() < end and not (_overview(port) or {}).get("complete"):
            tick.wait(0.2)
        rss_end = ps.memory_info().rss
        rss_max = max(rss_max, rss_end)
        points = _overview(port, "points")
        start = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("GET", "/events")
        resp = conn.getresponse()
        got = 0
        while got < points:
            raw = resp.fp.readline()
            if raw.startswith(b"event: point"):
                got += 1
        backfill = time.perf_counter() - start
        conn.close()
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        if soak.poll() is None:
            soak.terminate()
            soak.wait(timeout=120)
    return {"speed": speed, "exit": soak.returncode, "rss_1h": rss_1h, "rss_end": rss_end, "rss_max": rss_max,
            "points": points, "backfill_s": backfill, "run": _run_figures(home), "wall": wall,
            "load": os.getloadavg()}


def control_bench(speed: float) -> dict:
    """The same soak with no server beside it: the baseline for the soak's own figures."""
    started = time.monotonic()
    home, _, soak = start_soak(speed, "dashsoak-control-")
    code = soak.wait()
    return {"exit": code, "wall": time.monotonic() - started, "run": _run_figures(home), "load": os.getloadavg()}


def _run_figures(home: Path) -> dict | None:
    from orchestrator.judge.sli import aggregate_file

    for log in (home / "logs" / "soak").glob("soak_72h_*.jsonl"):
        f = aggregate_file(log).figures()
        return {"verdict": f["verdict"], "soak_t": f["run"]["end_t"],
                "aborts": [f"rule {a['rule']} {a['name']} at soak {a['t']:.0f} s" for a in f["aborts"]],
                "p95": f["sli2"]["p95"], "success": f["sli1"]["success"]}
    return None


def replay_bench(minutes: int = 72 * 60, per_minute: int = 5) -> dict:
    """A whole 72h-length log written into a home minute by minute while `orch soak serve` follows
    it (no soak processes, so the machine's load cannot cut the run short): the server's RSS after
    the first soak hour and at the end, and the SSE backfill of all 4,320 points."""
    sys.path.insert(0, str(ROOT / "tests"))
    from sli_logs import LogBuilder

    home = Path(tempfile.mkdtemp(prefix="dashreplay-"))
    log = home / "logs" / "soak" / "soak_72h_replay.jsonl"
    log.parent.mkdir(parents=True)
    b = LogBuilder()
    env = child_env()
    serve = subprocess.Popen([sys.executable, "-m", "orchestrator", "soak", "serve", "--port", "0", "--home",
                              str(home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT, text=True)
    port = int(serve.stdout.readline().split()[1].rstrip("/").rsplit(":", 1)[1])
    ps = psutil.Process(serve.pid)
    tick = threading.Event()
    written = 0
    rss_1h = rss_max = 0
    try:
        with open(log, "wb") as fh:
            for m in range(minutes):
                for k in range(per_minute):
                    t = m * 60.0 + k * (60.0 / per_minute) + 1
                    task = b.enqueue(t)
                    b.lease(task, t + 0.5)
                    (b.fail if (m * per_minute + k) % 211 == 0 else b.complete)(task, t + 2)
                if m == minutes - 1:
                    b.finish(minutes * 60.0 + 5)
                if m == 0:
                    fh.write(orjson.dumps(b.header) + b"\n")
                fh.write(b"".join(orjson.dumps(e) + b"\n" for e in b.events[written:]))
                fh.flush()
                written = len(b.events)
                if m % 60 == 59:  # an hour of log, then let the server catch up (as a 4320x run would)
                    want = m + 1
                    while _points(port) < want - 1:
                        tick.wait(0.05)
                    rss = ps.memory_info().rss
                    rss_max = max(rss_max, rss)
                    if m == 59:
                        rss_1h = rss
        while not (_overview(port) or {}).get("complete"):
            tick.wait(0.1)
        rss_end = ps.memory_info().rss
        points = _points(port)
        start = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("GET", "/events")
        resp = conn.getresponse()
        got = 0
        while got < points:
            if resp.fp.readline().startswith(b"event: point"):
                got += 1
        backfill = time.perf_counter() - start
        conn.close()
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    return {"events": len(b.events), "rss_1h": rss_1h, "rss_end": rss_end, "rss_max": max(rss_max, rss_end),
            "points": points, "backfill_s": backfill, "log_mb": log.stat().st_size / 1e6}


def _points(port: int) -> int:
    return _overview(port, "points") or 0


def _overview(port: int, key: str = "tiles"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/api/overview")
        return orjson.loads(conn.getresponse().read())[key]
    except (OSError, ValueError):
        return None
    finally:
        conn.close()


def _soak_t(port: int) -> float | None:
    tiles = _overview(port)
    return tiles["soak_t"] if tiles else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--speed", type=float, default=2160.0,
                    help="soak speed (default: the highest at which the 72h profile met its SLOs in bench/soak.py)")
    ap.add_argument("--no-soak", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench" / "dashboard.md"))
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        rows += search_bench(n, args.reps)
    replay = None if args.no_soak else replay_bench()
    control = None if args.no_soak else control_bench(args.speed)
    soak = None if args.no_soak else soak_bench(args.speed)
    lines = ["# On-call view benchmark (bench/dashboard.py)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other people's tests: timings are "
             f"noisy), Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}. "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             "## Tasks list and search over HTTP (`orch soak serve`, one keep-alive connection, "
             f"{args.reps} requests each, milliseconds)", "",
             "| tasks | query | p50 ms | p95 ms |", "|---:|---|---:|---:|"]
    lines += [f"| {n:,} | {label} | {p50:.1f} | {p95:.1f} |" for n, label, p50, p95 in rows]
    worst = max(rows, key=lambda r: r[3])
    lines += ["", f"Worst p95: {worst[3]:.1f} ms ({worst[1]} at {worst[0]:,} tasks); target 200 ms at one million.", ""]
    mb = 1024 * 1024
    if replay:
        lines += ["## The server following a whole 72h-length log", "",
                  f"A 72h log ({replay['events']:,} events, {replay['log_mb']:.1f} MB, 5 tasks a soak minute) written "
                  "an hour at a time while `orch soak serve` follows it (no soak processes: the machine's load cannot "
                  "end the run early).", "",
                  "| server RSS after the first soak hour | at the end | max | end / first hour |", "|---:|---:|---:|---:|",
                  f"| {replay['rss_1h'] / mb:.1f} MB | {replay['rss_end'] / mb:.1f} MB | {replay['rss_max'] / mb:.1f} MB | "
                  f"{replay['rss_end'] / replay['rss_1h']:.2f} |", "",
                  f"SSE backfill of the whole run for a fresh client: {replay['points']:,} points in "
                  f"{replay['backfill_s'] * 1000:.0f} ms.", ""]
    if soak:
        ratio = soak["rss_end"] / soak["rss_1h"] if soak["rss_1h"] else float("nan")
        lines += ["## An accelerated 72h soak with the server beside it", "",
                  f"`orch soak start --profile 72h --speed {soak['speed']:g}` (exit {soak['exit']}) and "
                  "`orch soak serve` on the same home.", "",
                  "| server RSS after the first soak hour | at the end | max | end / first hour |", "|---:|---:|---:|---:|",
                  f"| {soak['rss_1h'] / mb:.1f} MB | {soak['rss_end'] / mb:.1f} MB | {soak['rss_max'] / mb:.1f} MB | "
                  f"{ratio:.2f} |", "",
                  f"SSE backfill of the whole run for a fresh client: {soak['points']:,} points in "
                  f"{soak['backfill_s'] * 1000:.0f} ms.", "",
                  "The soak with the server beside it and, just before it, the same soak without it (the "
                  "baseline; a server that only reads should change neither verdict nor timing):", "",
                  "| run | exit | verdict | wall s | soak h | p95 s | success | aborts "
                  "| load (1/5/15 min) at the end |",
                  "|---|---:|---|---:|---:|---:|---:|---|---|"]
        for label, r in (("without the server", control), ("with the server", soak)):
            run = r["run"] or {}
            lines.append(f"| {label} | {r['exit']} | {run.get('verdict')} | {r['wall']:.1f} | "
                         f"{(run.get('soak_t') or 0) / 3600:.1f} | {run.get('p95') or 0:.1f} | "
                         f"{(run.get('success') or 0) * 100:.2f} % | {'; '.join(run.get('aborts') or []) or 'none'} | "
                         + " / ".join(f"{x:.1f}" for x in r["load"]) + " |")
        lines.append("")
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
