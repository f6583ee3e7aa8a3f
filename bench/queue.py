"""Queue throughput beside a bare-SQLite ceiling and huey's SQLite queue, in one run (issue 3).

    python bench/queue.py [--quick] [--reps N] [--out reports/bench/queue.md] [--dir DIR]

Measures, at synchronous NORMAL and FULL: enqueue (one by one and batched); lease+complete with
1, 2 and 4 worker processes (real OS processes, each with its own connection, draining one
pre-filled database), one task per lease and up to 16 per lease; lease+complete at a queue depth
of 100k against 1k. Every measurement runs `reps` times, interleaved with its baselines; the
report gives medians of the rates and medians of the per-repetition ratios. Backends: bench/backends.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and `bench/queue.py` would shadow the
# standard library's `queue` (which multiprocessing, logging and tenacity import). Drop the folder.
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from bench import backends  # noqa: E402
from bench.queue_report import render  # noqa: E402

SYNCS = ("NORMAL", "FULL")
PROCS = (1, 2, 4)
LEASE_BATCH = 16
ENQUEUE_BATCH = 100
CHUNKS = 4  # slices per drain, interleaved with the other variants' slices


@dataclass(frozen=True)
class Plan:
    reps: int
    drain: dict[str, int]  # tasks per drain, by synchronous setting
    enqueue_one: dict[str, int]  # tasks enqueued one by one
    enqueue_batched: int
    depth_small: int
    depth_big: int
    depth_tasks: dict[str, int]  # tasks leased+completed out of each depth


FULL_PLAN = Plan(reps=3, drain={"NORMAL": 4000, "FULL": 1500}, enqueue_one={"NORMAL": 3000, "FULL": 1000},
                 enqueue_batched=20_000, depth_small=1_000, depth_big=100_000,
                 depth_tasks={"NORMAL": 2000, "FULL": 1000})
QUICK_PLAN = Plan(reps=2, drain={"NORMAL": 1000, "FULL": 400}, enqueue_one={"NORMAL": 800, "FULL": 300},
                  enqueue_batched=4_000, depth_small=1_000, depth_big=50_000,
                  depth_tasks={"NORMAL": 800, "FULL": 300})


class Workers:
    """Long-lived worker processes (`python -m bench.backends`), reused for every drain."""

    def __init__(self, count: int):
        self.procs = [
            subprocess.Popen([sys.executable, "-m", "bench.backends"], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, bufsize=1)
            for _ in range(count)
        ]

    def _read(self, proc: subprocess.Popen) -> dict:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench worker {proc.pid} died (exit {proc.wait()})")
        return json.loads(line)

    def drain(self, procs: int, cmd: dict) -> dict:
        """Start `procs` workers on one database behind a start line; total tasks/s across them."""
        active = self.procs[:procs]
        for i, proc in enumerate(active):
            proc.stdin.write(json.dumps({**cmd, "worker": f"w{i + 1}"}) + "\n")
        syncs = {self._read(proc)["sync"] for proc in active}
        for proc in active:
            proc.stdin.write("go\n")
        results = [self._read(proc) for proc in active]
        total = sum(r["n"] for r in results)
        elapsed = max(r["t1"] for r in results) - min(r["t0"] for r in results)
        return {"n": total, "elapsed": elapsed, "sync": "/".join(sorted(syncs)),
                "lock_retries": sum(r.get("lock_retries", 0) for r in results)}

    def close(self) -> None:
        for proc in self.procs:
            proc.stdin.close()
        for proc in self.procs:
            proc.wait(timeout=30)


class Bench:
    """One benchmark run: pre-filled templates, the measurement rounds, the rates they noted."""

    def __init__(self, plan: Plan, workdir: Path, log=print):
        self.plan = plan
        self.dir = workdir
        self.log = log
        self.runs = 0
        self.templates: dict[tuple[str, int], Path] = {}
        self.rates: dict[tuple, list[float]] = {}
        self.facts: dict[str, object] = {}

    def fresh(self, name: str) -> Path:
        self.runs += 1
        return self.dir / f"run{self.runs:04d}-{name}.db"

    def template(self, kind: str, n: int) -> Path:
        """A pre-filled database (built once, not timed); every drain runs on a copy."""
        if (kind, n) not in self.templates:
            path = self.dir / f"template-{kind}-{n}.db"
            if kind == "history":  # n pending behind depth_big done tasks
                backends.fill_history(path, self.plan.depth_big, n)
            else:
                backends.fill(kind, path, n)
            self.templates[kind, n] = path
        return self.templates[kind, n]

    def copy(self, kind: str, n: int) -> Path:
        path = self.fresh(f"{kind}-{n}")
        shutil.copyfile(self.template(kind, n), path)
        return path

    def note(self, key: tuple, rate: float) -> None:
        self.rates.setdefault(key, []).append(rate)

    def dispose(self, path: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    # --- the measurements -----------------------------------------------------------------
    def enqueue_round(self, rep: int) -> None:
        variants = [("queue", 1), ("bare", 1), ("huey", 1), ("queue", ENQUEUE_BATCH), ("bare", ENQUEUE_BATCH)]
        for sync in SYNCS:
            for kind, batch in rotate(variants, rep):
                n = self.plan.enqueue_one[sync] if batch == 1 else self.plan.enqueue_batched
                path = self.fresh(f"enq-{kind}")
                rate = n / backends.enqueue(kind, path, sync, n, batch)
                self.note(("enqueue", sync, batch, kind), rate)
                self.dispose(path)

    def interleaved(self, workers: Workers, procs: int, sync: str, runs: dict, quota: int | None) -> dict:
        """Drain every variant's database in CHUNKS slices, taking turns, so that a slow spell of
        this shared machine hits all variants alike. `runs` maps a name to (command, path); each
        slice stops after `quota` / CHUNKS tasks (the last slice of a full drain empties the
        database). Returns name -> totals (tasks, seconds, lock retries)."""
        totals = {name: {"n": 0, "elapsed": 0.0, "lock_retries": 0} for name in runs}
        for chunk in range(CHUNKS):
            last = chunk == CHUNKS - 1
            for name in rotate(list(runs), chunk):
                cmd, path = runs[name]
                if quota is None:
                    stop = None if last else -(-cmd["total"] // (CHUNKS * procs))
                else:
                    stop = quota // CHUNKS
                out = workers.drain(procs, {**cmd, "path": str(path), "sync": sync, "stop_after": stop})
                if out["sync"] != sync:
                    raise RuntimeError(f"{name} ran at synchronous={out['sync']}, not {sync}")
                for field in totals[name]:
                    totals[name][field] += out[field]
        for _cmd, path in runs.values():
            self.dispose(path)
        return totals

    def drain_round(self, rep: int, workers: Workers) -> None:
        for sync in SYNCS:
            n = self.plan.drain[sync]
            for procs in PROCS:
                variants = [("bare", 1), ("huey", 1), ("queue", 1), ("queue_cl", 1), ("queue", LEASE_BATCH),
                            ("queue_b", LEASE_BATCH)]
                if procs == 1:
                    variants.append(("bare1", 1))
                runs = {(kind, limit): ({"kind": kind, "limit": limit, "total": n},
                                        self.copy({"bare1": "bare", "queue_cl": "queue", "queue_b": "queue"}.get(kind, kind), n))
                        for kind, limit in rotate(variants, rep + procs)}
                for (kind, limit), out in self.interleaved(workers, procs, sync, runs, None).items():
                    if out["n"] != n:
                        raise RuntimeError(f"{kind} drained {out['n']} of {n} tasks")
                    self.note(("drain", sync, procs, kind, limit), out["n"] / out["elapsed"])
                    if kind.startswith("queue"):
                        self.note(("lock_retries", sync, procs, kind, limit), 1000 * out["lock_retries"] / n)

    def depth_round(self, rep: int, workers: Workers) -> None:
        extra = max(self.plan.depth_tasks.values())
        for sync in SYNCS:
            m = self.plan.depth_tasks[sync]
            # depth + extra tasks, m <= extra of them leased and completed: depth stays >= `depth`
            small, big = self.plan.depth_small, self.plan.depth_big
            runs = {depth: ({"kind": "queue", "limit": 1}, self.copy("queue", depth + extra))
                    for depth in rotate([small, big], rep)}
            # the same small depth behind a long history (big DONE tasks with effects and events)
            runs["history"] = ({"kind": "queue", "limit": 1}, self.copy("history", small + extra))
            for depth, out in self.interleaved(workers, 1, sync, runs, m).items():
                if out["n"] != m - m % CHUNKS:
                    raise RuntimeError(f"depth {depth}: completed {out['n']} of {m} tasks")
                self.note(("depth", sync, depth), out["n"] / out["elapsed"])

    def in_process_round(self, rep: int) -> None:
        """One process, NORMAL, no profiler: the queue, its own SQL replayed without its Python
        layer, and the bare ceiling (how much of the gap is SQL and how much Python)."""
        n = self.plan.drain["NORMAL"]
        for kind in rotate(["queue", "replay", "bare"], rep):
            path = self.copy("bare" if kind == "bare" else "queue", n)
            drain = backends.Drain({"kind": kind, "path": str(path), "sync": "NORMAL", "limit": 1})
            start = time.perf_counter()
            done = drain.run()["n"]
            self.note(("inproc", kind), done / (time.perf_counter() - start))
            drain.close()
            self.dispose(path)

    def evidence(self) -> None:
        """In-process evidence for the report: where one-task-per-lease time goes (cProfile), and
        how many WAL frames (pages) one lease+complete writes, queue against the bare ceiling."""
        n = self.plan.drain["NORMAL"]
        path = self.copy("queue", n)
        drain = backends.Drain({"kind": "queue", "path": str(path), "sync": "NORMAL", "limit": 1})
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.runcall(drain.run)
        elapsed = time.perf_counter() - start
        drain.close()
        self.dispose(path)
        self.facts["profile"] = {**profile_shares(pstats.Stats(profiler), n), "wall": 1e6 * elapsed / n}
        self.facts["wal_pages"] = {kind: self.wal_pages_per_task(kind, 500) for kind in ("queue", "bare")}
        db = sqlite3.connect(self.template("queue", n))
        self.facts["indexes"] = {table: [name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? ORDER BY name", (table,))]
            for table in ("tasks", "events", "effects")}
        db.close()

    def wal_pages_per_task(self, kind: str, n: int) -> float:
        """WAL frames per lease+complete (one process, NORMAL, automatic checkpoints off)."""
        path = self.copy(kind, n)
        drain = backends.Drain({"kind": kind, "path": str(path), "sync": "NORMAL", "limit": 1,
                                "no_checkpoint": True})
        page = drain.conn.execute("PRAGMA page_size").fetchone()[0]
        drain.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        done = drain.run()["n"]
        frames = (Path(f"{path}-wal").stat().st_size - 32) / (page + 24)
        drain.close()
        self.dispose(path)
        return frames / done

    def run(self) -> None:
        plan = self.plan
        workers = Workers(max(PROCS))
        try:
            for rep in range(plan.reps):
                self.log(f"rep {rep + 1}/{plan.reps}: enqueue")
                self.enqueue_round(rep)
                self.log(f"rep {rep + 1}/{plan.reps}: lease+complete")
                self.drain_round(rep, workers)
                self.log(f"rep {rep + 1}/{plan.reps}: depth")
                self.depth_round(rep, workers)
                self.log(f"rep {rep + 1}/{plan.reps}: in-process SQL against Python")
                self.in_process_round(rep)
        finally:
            workers.close()
        self.log("evidence: cProfile and WAL pages")
        self.evidence()


def rotate(items: list, k: int) -> list:
    """The same variants in a shifted order each repetition (no variant always runs first)."""
    k %= len(items)
    return items[k:] + items[:k]


def profile_shares(stats: pstats.Stats, n: int) -> dict:
    """Profiled time split into SQLite calls, the tenacity retry wrapper, orchestrator code and
    the rest, in microseconds per task."""
    buckets = {"sqlite": 0.0, "tenacity": 0.0, "orchestrator": 0.0, "other": 0.0}
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        if "sqlite3.Connection" in name or "sqlite3.Cursor" in name:
            buckets["sqlite"] += tottime
        elif "tenacity" in filename:
            buckets["tenacity"] += tottime
        elif f"{os.sep}orchestrator{os.sep}" in filename:
            buckets["orchestrator"] += tottime
        else:
            buckets["other"] += tottime
    return {k: 1e6 * v / n for k, v in buckets.items()}


def filesystem_of(path: Path) -> str:
    """The mount point and filesystem type holding `path` (from /proc/mounts, when there is one)."""
    best = ("?", "?")
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                _dev, mount, fstype, *_ = line.split()
                if str(path.resolve()).startswith(mount) and len(mount) >= len(best[0]):
                    best = (mount, fstype)
    except OSError:
        pass
    return f"{best[1]} (mounted at {best[0]})"


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "orchestrator"],
                               cwd=REPO, capture_output=True, text=True).stdout.split()[1::2]
        return sha + (f" plus uncommitted changes to {', '.join(dirty)}" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    import huey

    return {
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "huey": huey.__version__,
        "os": f"{platform.system()} {platform.release()}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, 2 repetitions (about 30 s)")
    parser.add_argument("--reps", type=int, help="repetitions of every measurement (default 3, quick 2)")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench" / "queue.md",
                        help="markdown report (default reports/bench/queue.md)")
    parser.add_argument("--dir", type=Path, help="where the databases go (default: a new temp dir)")
    args = parser.parse_args(argv)
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    if args.reps:
        plan = Plan(**{**plan.__dict__, "reps": args.reps})

    workdir = Path(tempfile.mkdtemp(prefix="bench-queue-", dir=args.dir))
    started = time.time()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    bench = Bench(plan, workdir, log=lambda msg: print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr))
    try:
        bench.run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    meta = {
        "command": " ".join(["python bench/queue.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "wall": time.perf_counter() - t0,
        "load": (load_before, os.getloadavg()),
        "machine": machine(),
        "commit": git_commit(),
        "filesystem": filesystem_of(workdir.parent),
        "plan": plan,
        "procs": PROCS, "syncs": SYNCS, "lease_batch": LEASE_BATCH, "enqueue_batch": ENQUEUE_BATCH, "chunks": CHUNKS,
    }
    text = render(bench.rates, bench.facts, meta)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
