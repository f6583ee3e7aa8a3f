"""Benchmark of the tasks view's error filter (issue 16): `error=CLASS` finds the tasks that ever had
the class (any attempt), read from the events through the partial index `events_error`.

A queue of N tasks (default 100,000) is built with the queue's own named statements
(`insert_task`, `insert_event`, `operator_update`) and event histories like a soak's: 90 % DONE at
the first attempt, 6 % DONE after one transient retry (timeout / network / rate_limit /
server_error), 1 % DONE after an expired lease, 2 % FAILED after four attempts of mixed transient
errors, 1 % FAILED on param_error. Then, side by side on the same database, p50/p95 over
repeated queries (first page of 50, a deep page, state + error):

- `last error (before)`: the previous version's statement, `tasks.error` through its index
  `tasks_error (error, id)` (created here for the comparison);
- `ever, no index`: the same answer as this version's without `events_error`: tasks newest first,
  each probed for an event of the class through `events_task (task, seq)`;
- `ever, events_error`: this version's named statements (`tasks_page_error`,
  `tasks_page_state_error`).

Also: the time to build `events_error` on the existing events (what a database made by an earlier
version pays once, when it is first opened) and its size (SQLite's dbstat).

    python bench/task_errors.py                       # -> reports/bench/task_errors.md
    python bench/task_errors.py --tasks 20000 --reps 20 --out -
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.queue.sqlite.sqlfile import q  # noqa: E402
from orchestrator.queue.writes import Queue  # noqa: E402

TRANSIENT = ("timeout", "network", "rate_limit", "server_error")
COLUMNS = "id, key, state, attempt, max_attempts, epoch, worker, error, enqueued_at, updated_at"
# The statement this version replaced (the last error only), and the same answer as this version's
# without the events' error index: the baselines, kept here for the comparison only.
LAST_ERROR = (f"SELECT {COLUMNS} FROM tasks INDEXED BY tasks_error "
              "WHERE error = :error AND id BETWEEN :lo AND :hi ORDER BY id DESC LIMIT :limit")
LAST_ERROR_STATE = (f"SELECT {COLUMNS} FROM tasks INDEXED BY tasks_error_state "
                    "WHERE state = :state AND error = :error AND id BETWEEN :lo AND :hi ORDER BY id DESC LIMIT :limit")
EVER_NO_INDEX = (f"SELECT {COLUMNS} FROM tasks AS t WHERE t.id BETWEEN :lo AND :hi AND EXISTS "
                 "(SELECT 1 FROM events INDEXED BY events_task WHERE task = t.id AND error = :error) "
                 "ORDER BY t.id DESC LIMIT :limit")
EVER_NO_INDEX_STATE = (f"SELECT {COLUMNS} FROM tasks AS t INDEXED BY tasks_state_id "
                       "WHERE t.state = :state AND t.id BETWEEN :lo AND :hi AND EXISTS "
                       "(SELECT 1 FROM events INDEXED BY events_task WHERE task = t.id AND error = :error) "
                       "ORDER BY t.id DESC LIMIT :limit")


def history(rng: random.Random) -> tuple[list[str | None], str]:
    """The error class each attempt ended with (None: completed), and the final state."""
    r = rng.random()
    if r < 0.90:
        return [None], "DONE"
    if r < 0.96:
        return [rng.choice(TRANSIENT), None], "DONE"
    if r < 0.97:
        return ["lease_timeout", None], "DONE"
    if r < 0.99:
        return [rng.choice(TRANSIENT) for _ in range(4)], "FAILED"
    return ["param_error"], "FAILED"


def build(db: Path, n: int) -> dict[str, int]:
    """N tasks and their events in one transaction; returns how many events of each kind."""
    rng = random.Random(16)
    t0 = 1_000_000.0
    kinds: dict[str, int] = {}
    with Queue(db) as queue:
        conn = queue.store.conn
        conn.execute("BEGIN")
        tasks, events, updates = [], [], []
        for i in range(1, n + 1):
            t = t0 + i * 0.5
            key = f"k{i:08d}"
            tasks.append({"key": key, "payload": "{}", "max_attempts": 4, "due_at": t, "now": t, "budget": None})
            attempts, final = history(rng)

            def ev(name: str, state: str, prev: str | None, attempt: int, error: str | None = None) -> None:
                kinds[name] = kinds.get(name, 0) + 1
                events.append((t, t, name, i, key, state, prev, attempt, attempt, "w1", error, None, None, None))

            ev("enqueued", "PENDING", None, 0)
            last_error = None
            for a, error in enumerate(attempts, start=1):
                ev("leased", "IN_PROGRESS", "PENDING", a)
                if error is None:
                    ev("completed", "DONE", "IN_PROGRESS", a)
                    last_error = None
                elif error == "lease_timeout":
                    ev("lease_expired", "PENDING", "IN_PROGRESS", a, error)
                    last_error = error
                else:
                    end = a == len(attempts) and final == "FAILED"
                    ev("failed" if end else "retry_scheduled", "FAILED" if end else "PENDING", "IN_PROGRESS", a, error)
                    last_error = error
            updates.append({"id": i, "now": t + 30, "state": final, "due_at": t, "attempt": len(attempts),
                            "unknown_seen": 0, "budget": None, "plan": None, "error": last_error, "detail": None})
            if len(tasks) == 10_000:
                _flush(conn, tasks, events, updates)
        _flush(conn, tasks, events, updates)
        conn.execute("COMMIT")
    return kinds


def _flush(conn: sqlite3.Connection, tasks: list, events: list, updates: list) -> None:
    conn.executemany(q("insert_task"), tasks)
    conn.executemany(q("insert_event"), events)
    conn.executemany(q("operator_update"), updates)
    for batch in (tasks, events, updates):
        batch.clear()


def timed(conn: sqlite3.Connection, sql: str, params: dict, reps: int) -> tuple[float, float, list[int]]:
    times, ids = [], []
    for _ in range(reps):
        start = time.perf_counter()
        ids = [row[0] for row in conn.execute(sql, params).fetchall()]
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)], ids


def run(n: int, reps: int) -> tuple[list[tuple], dict]:
    folder = Path(tempfile.mkdtemp(prefix="task-errors-"))
    db = folder / "queue.db"
    started = time.perf_counter()
    kinds = build(db, n)
    built = time.perf_counter() - started
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP INDEX events_error")
    conn.execute("CREATE INDEX tasks_error ON tasks (error, id) WHERE error IS NOT NULL")
    mid = n // 2
    cases = [("error=timeout, first page", {"error": "timeout", "lo": 0, "hi": 2**62, "limit": 51}, None),
             ("error=timeout, deep page", {"error": "timeout", "lo": 0, "hi": mid, "limit": 51}, None),
             ("error=lease_timeout (rarer), first page", {"error": "lease_timeout", "lo": 0, "hi": 2**62,
                                                          "limit": 51}, None),
             ("state=DONE & error=timeout", {"error": "timeout", "lo": 0, "hi": 2**62, "limit": 51}, "DONE")]
    results = []
    for label, params, state in cases:
        params = {**params, "state": state}
        before = LAST_ERROR_STATE if state else LAST_ERROR
        results.append((label, "last error (before)", *timed(conn, before, params, reps)))
        no_index = EVER_NO_INDEX_STATE if state else EVER_NO_INDEX
        results.append((label, "ever, no index", *timed(conn, no_index, params, reps)))
    start = time.perf_counter()
    conn.execute("CREATE INDEX events_error ON events (error, task) WHERE error IS NOT NULL")
    index_s = time.perf_counter() - start
    index_mb = conn.execute("SELECT sum(pgsize) FROM dbstat WHERE name = 'events_error'").fetchone()[0] / 1e6
    file_mb = os.path.getsize(db) / 1e6
    conn.execute("DROP INDEX tasks_error")
    for label, params, state in cases:
        params = {**params, "state": state}
        sql = q("tasks_page_state_error" if state else "tasks_page_error")
        results.append((label, "ever, events_error", *timed(conn, sql, params, reps)))
    answers = {}
    for label, variant, _p50, _p95, ids in results:
        answers.setdefault(label, {})[variant] = ids
    same = all(a["ever, no index"] == a["ever, events_error"] for a in answers.values())
    events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    with_error = conn.execute("SELECT count(*) FROM events WHERE error IS NOT NULL").fetchone()[0]
    conn.close()
    info = {"tasks": n, "events": events, "error_events": with_error, "kinds": kinds, "built_s": built,
            "index_s": index_s, "index_mb": index_mb, "file_mb": file_mb, "same": same}
    return results, info


def report(results: list[tuple], info: dict, reps: int) -> str:
    uname = platform.uname()
    lines = ["# Tasks view: the error filter over every error a task had (bench/task_errors.py)", "",
             f"Machine: {uname.machine}, {os.cpu_count()} cores (shared with other people's tests: timings are "
             f"noisy), Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}. "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.", "",
             f"{info['tasks']:,} tasks, {info['events']:,} events ({info['error_events']:,} with an error class), "
             f"built in {info['built_s']:.1f} s. {reps} runs of each query, one connection, page of 50 "
             "(+1 to know whether a next page exists). Milliseconds.", "",
             "| query | variant | rows | p50 ms | p95 ms |", "|---|---|---:|---:|---:|"]
    for label, variant, p50, p95, ids in results:
        lines.append(f"| {label} | {variant} | {len(ids)} | {p50:.2f} | {p95:.2f} |")
    same = "the same rows in the same order" if info["same"] else "DIFFERENT rows (a bug)"
    lines += ["", "`last error (before)` answers another question (the tasks whose last error is the class), "
              f"so it finds fewer rows. The two `ever` variants returned {same} in every case.", "",
              f"Building `events_error` on the existing events (an older database, once, when first opened): "
              f"{info['index_s'] * 1000:.0f} ms; the index takes {info['index_mb']:.2f} MB of the "
              f"{info['file_mb']:.1f} MB file. It holds the events with an error class only, so a lease, a "
              "heartbeat or a completion does not write it.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench" / "task_errors.md"), help="'-' prints it")
    args = ap.parse_args()
    results, info = run(args.tasks, args.reps)
    text = report(results, info, args.reps)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text)
        print(text)
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
