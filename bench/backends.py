"""The three backends that bench/queue.py compares, and the worker-process side of its drains.

- `queue`: the orchestrator's lease queue (orchestrator/queue/writes.py) through its public API only:
  `Queue(path, clock, QueueConfig(synchronous=...))`, `enqueue`, `enqueue_many`, `lease`, `complete`.
  `queue_cl` drains through `complete_and_lease` (complete one task and lease the next in one
  transaction), one task per lease; `queue_b` leases a batch and acknowledges it with
  `complete_many` (one transaction for the batch's completions).
- `bare`: a ceiling, not a product: the least SQL that can lease and complete one row. One table
  (id, state, epoch, worker, lease_until) with a partial index on the PENDING rows; a lease is one
  transaction (`BEGIN IMMEDIATE; UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING; COMMIT`),
  a completion another (`UPDATE ... SET state = 'DONE'`). `bare1` takes and finishes a row in one
  transaction (no lease at all): the bare analogue of huey's dequeue.
- `replay`: the queue's own lease+complete statements from orchestrator/queue/sqlite/queries.sql on the queue's
  schema, without the queue's Python layer (evidence: what the SQL alone costs).
- `huey`: huey's SqliteStorage, raw serialized task messages through `storage.enqueue` and
  `storage.dequeue` (one transaction that selects and deletes the row: no lease, no timeout, no fencing).

Every backend opens SQLite in WAL mode with the synchronous level asked for, a 5 s busy timeout
(the queue's own busy timeout at clock speed 1) and the same Python `sqlite3` module.

Run as `python -m bench.backends` (what bench/queue.py does, once per worker process), this module
serves drain commands: one JSON object a line on stdin, `ready` once its connection is open, then
`go` starts the drain and one JSON line reports the count and the monotonic start/end times.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

from orchestrator.core.clock import WALL
from orchestrator.core.heap import keep_freed_memory
from orchestrator.core.model import QueueConfig
from orchestrator.queue.sqlite.sqlfile import q
from orchestrator.queue.sqlite.store import PAGE_SIZE
from orchestrator.queue.writes import Queue

BUSY_TIMEOUT = 5.0  # seconds: QueueConfig.busy_timeout through the wall clock
FILL_CHUNK = 1000

# The bare ceiling's SQL. It is the baseline's own schema, deliberately not the queue's.
BARE_SCHEMA = """
CREATE TABLE IF NOT EXISTS task (
    id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS task_pending ON task (id) WHERE state = 'PENDING';
"""
BARE_ENQUEUE = "INSERT INTO task (state) VALUES ('PENDING')"
BARE_LEASE = (
    "UPDATE task SET state = 'IN_PROGRESS', epoch = epoch + 1, worker = ?, lease_until = ? "
    "WHERE id = (SELECT id FROM task WHERE state = 'PENDING' ORDER BY id LIMIT 1) RETURNING id, epoch"
)
BARE_COMPLETE = "UPDATE task SET state = 'DONE', worker = NULL, lease_until = NULL WHERE id = ? AND epoch = ?"
BARE_TAKE = (
    "UPDATE task SET state = 'DONE' "
    "WHERE id = (SELECT id FROM task WHERE state = 'PENDING' ORDER BY id LIMIT 1) RETURNING id"
)
# Only to build a long history fast (fill_history): the first step of Queue.lease for one known id.
HISTORY_LEASE = (
    "UPDATE tasks SET state = 'IN_PROGRESS', epoch = epoch + 1, attempt = attempt + 1, worker = 'history', "
    "lease_until = :until, heartbeat_at = :now, updated_at = :now WHERE id = :id"
)
# huey's own enqueue statement (SqliteStorage.enqueue), used only to pre-fill in one transaction.
HUEY_INSERT = "insert into task (queue, data, priority) values (?, ?, ?)"


def payload(i: int) -> dict:
    """A queue task's payload: about the size of a serialized huey task message (~120 bytes)."""
    return {"n": i, "task": "bench.work", "args": [i], "kwargs": {}, "note": "x" * 48}


def task_key(prefix: str, i: int) -> str:
    return f"{prefix}-{i:07d}"


# --- opening ------------------------------------------------------------------------------
def open_queue(path: Path, sync: str) -> Queue:
    return Queue(path, WALL, QueueConfig(synchronous=sync))


def open_bare(path: Path, sync: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT)
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # the queue's (a new database only): the same setting
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.executescript(BARE_SCHEMA)
    return conn


def open_huey(path: Path, sync: str):
    """huey's storage with its defaults (WAL, no `fsync` argument, which leaves SQLite's default
    FULL). Its constructor offers only fsync=True (FULL) or fsync=False (OFF); NORMAL is set with a
    PRAGMA on the storage's own connection after it opened."""
    import huey

    app = huey.SqliteHuey(name="bench", filename=str(path), results=False)
    storage = app.storage
    if sync == "NORMAL":
        storage.conn.execute("PRAGMA synchronous=NORMAL")
    elif sync != "FULL":
        raise ValueError(sync)
    return app, storage


def huey_message(app) -> bytes:
    """One real serialized huey task message (what SqliteHuey.enqueue stores)."""

    @app.task(name="bench.work")
    def work(n):
        return None

    return app.serialize_task(work.s(1))


def effective_sync(conn: sqlite3.Connection) -> str:
    return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[conn.execute("PRAGMA synchronous").fetchone()[0]]


# --- pre-fill (not timed) -----------------------------------------------------------------
def fill(kind: str, path: Path, n: int, prefix: str = "fill") -> None:
    """A database holding `n` due tasks of `kind`, closed (checkpointed) so it can be copied."""
    if kind == "queue":
        with open_queue(path, "NORMAL") as queue:
            for start in range(0, n, FILL_CHUNK):
                stop = min(n, start + FILL_CHUNK)
                queue.enqueue_many([(task_key(prefix, i), payload(i)) for i in range(start, stop)])
    elif kind == "bare":
        conn = open_bare(path, "NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(BARE_ENQUEUE, ([] for _ in range(n)))
        conn.execute("COMMIT")
        conn.close()
    elif kind == "huey":
        app, storage = open_huey(path, "NORMAL")
        message = huey_message(app)
        with storage.db(commit=True) as cursor:
            cursor.executemany(HUEY_INSERT, ((storage.name, message, 0) for _ in range(n)))
        storage.close()
    else:
        raise ValueError(kind)


def fill_history(path: Path, done: int, pending: int) -> None:
    """A queue with a long history: `done` tasks leased and completed (DONE, an effect row, a
    `leased` and a `completed` event each), then `pending` due tasks. Enqueued through the API;
    the history is written in transactions of FILL_CHUNK tasks with the statements Queue.complete
    runs (queries.sql) after a direct lease of each id: fast, not timed, and the same rows."""
    fill("queue", path, done + pending, prefix="hist")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    for start in range(1, done + 1, FILL_CHUNK):
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        for task in range(start, min(done, start + FILL_CHUNK - 1) + 1):
            conn.execute(HISTORY_LEASE, {"until": now + 30.0, "now": now, "id": task})
            row = conn.execute(q("finish_returning"), {"state": "DONE", "now": now, "error": None, "detail": None,
                                                       "id": task, "epoch": 1}).fetchone()
            conn.execute(q("insert_effect"), {"key": row["key"], "task": task, "epoch": 1, "worker": "history",
                                              "t": now, "result": None})
            for event, state, prev in (("leased", "IN_PROGRESS", "PENDING"), ("completed", "DONE", "IN_PROGRESS")):
                # (t, wall, event, task, key, state, prev, attempt, epoch, worker, error, actor, notes, data)
                conn.execute(q("insert_event"), (now, now, event, task, row["key"], state, prev, 1, 1, "history",
                                                 None, None, None, None))
        conn.execute("COMMIT")
    conn.close()


# --- enqueue (timed in the calling process) -----------------------------------------------
def enqueue(kind: str, path: Path, sync: str, n: int, batch: int) -> float:
    """Seconds to enqueue `n` tasks one by one (batch 1) or `batch` per call/transaction."""
    if kind == "queue":
        queue = open_queue(path, sync)
        items = [(task_key("enq", i), payload(i)) for i in range(n)]
        start = time.perf_counter()
        if batch == 1:
            for key, body in items:
                queue.enqueue(key, body)
        else:
            for i in range(0, n, batch):
                queue.enqueue_many(items[i:i + batch])
        elapsed = time.perf_counter() - start
        queue.close()
    elif kind == "bare":
        conn = open_bare(path, sync)
        start = time.perf_counter()
        for i in range(0, n, batch):
            conn.execute("BEGIN IMMEDIATE")
            if batch == 1:
                conn.execute(BARE_ENQUEUE)
            else:
                conn.executemany(BARE_ENQUEUE, ([] for _ in range(min(batch, n - i))))
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
    elif kind == "huey":
        if batch != 1:
            raise ValueError("huey's storage has no batched enqueue")
        app, storage = open_huey(path, sync)
        message = huey_message(app)
        start = time.perf_counter()
        for _ in range(n):
            storage.enqueue(message)
        elapsed = time.perf_counter() - start
        storage.close()
    else:
        raise ValueError(kind)
    return elapsed


# --- drains (one per worker process) ------------------------------------------------------
class Drain:
    """One backend opened for a drain: `run()` leases and completes (or dequeues) until the
    database is empty or `stop_after` tasks are done."""

    def __init__(self, cmd: dict):
        self.kind, path, sync = cmd["kind"], Path(cmd["path"]), cmd["sync"]
        self.worker = cmd.get("worker", "w1")
        self.limit = int(cmd.get("limit", 1))
        self.stop_after = cmd.get("stop_after") or float("inf")
        self.queue = self.storage = None
        if self.kind in ("queue", "queue_cl", "queue_b", "replay"):
            self.queue = open_queue(path, sync)
            self.conn = self.queue.store.conn
        elif self.kind in ("bare", "bare1"):
            self.conn = open_bare(path, sync)
        elif self.kind == "huey":
            _app, self.storage = open_huey(path, sync)
            self.conn = self.storage.conn
        else:
            raise ValueError(self.kind)
        if cmd.get("no_checkpoint"):  # to count the WAL frames a drain writes
            self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self.sync = effective_sync(self.conn)

    def run(self) -> dict:
        return getattr(self, f"_run_{self.kind}")()

    def close(self) -> None:
        if self.queue is not None:
            self.queue.close()
        elif self.storage is not None:
            self.storage.close()
        else:
            self.conn.close()

    def _run_queue(self) -> dict:
        queue, worker, done = self.queue, self.worker, 0
        while done < self.stop_after and (leases := queue.lease(worker, self.limit)):
            for lease in leases:
                if queue.complete(lease.task, lease.epoch, worker) == "completed":
                    done += 1
        return {"n": done, "lock_retries": queue.write.lock_retries}

    def _run_queue_b(self) -> dict:
        """Lease a batch, then acknowledge all of it with `complete_many` (one transaction)."""
        queue, worker, done = self.queue, self.worker, 0
        while done < self.stop_after and (leases := queue.lease(worker, self.limit)):
            outcomes = queue.complete_many([(lease.task, lease.epoch, None) for lease in leases], worker)
            done += outcomes.count("completed")
        return {"n": done, "lock_retries": queue.write.lock_retries}

    def _run_replay(self) -> dict:
        """The statements `Queue.lease` and `Queue.complete` run for one task (orchestrator/queue/sqlite/queries.sql,
        same schema, same pragmas), with no Python layer around them: no tenacity, no writer lock,
        no dataclasses, one fixed event row. What the SQL alone costs. Mirrors queue.py's
        `_lease`/`_complete` as of this commit: keep it in step when they change."""
        conn, worker, done = self.conn, self.worker, 0
        # insert_event's columns: (t, wall, event, task, key, state, prev, attempt, epoch, worker, error, actor,
        # notes, data)
        rest = (1, 1, worker, None, None, None, None)
        while done < self.stop_after:
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(q("lease"), {"worker": worker, "until": now + 30.0, "now": now, "limit": 1}).fetchone()
            if row is not None:
                conn.execute(q("insert_event"), (now, now, "leased", row["id"], row["key"], "IN_PROGRESS", "PENDING",
                                                 *rest))
            conn.execute("COMMIT")
            if row is None:
                break
            conn.execute("BEGIN IMMEDIATE")
            fenced = conn.execute(q("finish_returning"), {"state": "DONE", "now": now, "error": None, "detail": None,
                                                          "id": row["id"], "epoch": row["epoch"]}).fetchone()
            conn.execute(q("insert_effect"), {"key": fenced["key"], "task": row["id"], "epoch": row["epoch"],
                                              "worker": worker, "t": now, "result": None})
            conn.execute(q("insert_event"), (now, now, "completed", row["id"], row["key"], "DONE", "IN_PROGRESS",
                                             *rest))
            conn.execute("COMMIT")
            done += 1
        return {"n": done}

    def _run_queue_cl(self) -> dict:
        """One task per lease through `complete_and_lease`: each transaction completes one task and
        leases the next (the last one of a slice only completes)."""
        queue, worker, done = self.queue, self.worker, 0
        leases = queue.lease(worker, 1) if self.stop_after > 0 else []
        while leases:
            lease = leases[0]
            more = 0 if done + 1 >= self.stop_after else 1
            outcome, leases = queue.complete_and_lease(lease.task, lease.epoch, worker, limit=more)
            done += outcome == "completed"
        return {"n": done, "lock_retries": queue.write.lock_retries}

    def _run_bare(self) -> dict:
        conn, done = self.conn, 0
        while done < self.stop_after:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(BARE_LEASE, (self.worker, time.time() + 30.0)).fetchone()
            conn.execute("COMMIT")
            if row is None:
                break
            conn.execute("BEGIN IMMEDIATE")
            done += conn.execute(BARE_COMPLETE, row).rowcount
            conn.execute("COMMIT")
        return {"n": done}

    def _run_bare1(self) -> dict:
        conn, done = self.conn, 0
        while done < self.stop_after:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(BARE_TAKE).fetchone()
            conn.execute("COMMIT")
            if row is None:
                break
            done += 1
        return {"n": done}

    def _run_huey(self) -> dict:
        storage, done = self.storage, 0
        while done < self.stop_after and storage.dequeue() is not None:
            done += 1
        return {"n": done}


def serve() -> None:
    """The worker-process loop: command -> `ready` -> `go` -> result, until stdin closes. Every
    backend's process starts as an `orch worker` does, with the heap setting of orchestrator/core/heap.py
    (the same setting for all three)."""
    keep_freed_memory()
    out = sys.stdout
    for line in sys.stdin:
        drain = Drain(json.loads(line))
        out.write(json.dumps({"ready": True, "sync": drain.sync}) + "\n")
        out.flush()
        if sys.stdin.readline().strip() != "go":
            drain.close()
            return
        t0 = time.monotonic()
        result = drain.run()
        t1 = time.monotonic()
        drain.close()
        out.write(json.dumps({**result, "t0": t0, "t1": t1}) + "\n")
        out.flush()


if __name__ == "__main__":
    serve()
