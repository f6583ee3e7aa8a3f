"""The SQLite backend: the storage interface of `orchestrator/queue/backend.py` on one connection.

Every statement is a named query of `queries.sql`. Rows leave as plain dicts (column -> value),
counts and ids as ints, never as `sqlite3.Row`. Inside a transaction the `Writer` hands its
function this same object as `tx`: SQLite has one writer at a time (`BEGIN IMMEDIATE`), so a row
read inside it cannot change before the commit, and `fenced_row` needs no lock of its own.

Driver errors do not leave: a read outside a write transaction that fails raises `DbLockError`
(busy) or `StoreError`; inside one, the `Writer` wraps them (and retries busy) as it always has.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.core.clock import Clock
from orchestrator.core.errors import DbLockError, StoreError
from orchestrator.core.model import QueueConfig
from orchestrator.queue.sqlfile import page_query
from orchestrator.queue.sqlite.sqlfile import q
from orchestrator.queue.sqlite.store import Writer, connect, is_busy

ENGINE = "sqlite"


def engine_version() -> str:
    return sqlite3.sqlite_version


def wrapped(exc: sqlite3.Error) -> DbLockError | StoreError:
    """A driver error of a read as the package's own."""
    if is_busy(exc):
        return DbLockError(f"database is locked: {exc}")
    return StoreError(f"cannot read the queue database: {exc}")


class SqliteStore:
    """The queue database at `path`: every read, and, handed to functions run by `write`, every
    write statement of the state machine (`write` is set by `use_clock`)."""

    engine = ENGINE

    def __init__(self, path: Path, config: QueueConfig, *, create: bool = True):
        self.path = Path(path)
        self.config = config
        self.write: Writer | None = None
        self.writing = False  # inside a write transaction: the `Writer` sets it, and wraps errors itself
        self._dump_key: tuple | None = None  # the schema `_dump_plan` was worked out for
        self._dump_plan: list[tuple[str, str]] = []
        self.conn = connect(self.path, config, create=create)

    def use_clock(self, clock: Clock) -> Writer:
        """A new writer whose durations (busy timeout, lock bound) go through `clock`."""
        if self.write is not None:
            self.write.close()
        lock_file = self.path.with_name(self.path.name + "-writers") if self.config.writer_queue else None
        self.write = Writer(self.conn, clock, self.config, lock_file, tx=self)
        return self.write

    def close(self) -> None:
        if self.write is not None:
            self.write.close()
        self.conn.close()

    @property
    def location(self) -> str:
        return f"sqlite:///{self.path}"

    # --- plumbing -----------------------------------------------------------------------
    def _one(self, name: str, params: Any = ()) -> dict | None:
        try:
            row = self.conn.execute(q(name), params).fetchone()
        except sqlite3.Error as exc:
            if self.writing:
                raise
            raise wrapped(exc) from None
        return None if row is None else dict(row)

    def _all(self, name: str, params: Any = ()) -> list[dict]:
        try:
            return [dict(r) for r in self.conn.execute(q(name), params)]
        except sqlite3.Error as exc:
            if self.writing:
                raise
            raise wrapped(exc) from None

    def _value(self, name: str, params: Any = ()) -> Any:
        try:
            return self.conn.execute(q(name), params).fetchone()[0]
        except sqlite3.Error as exc:
            if self.writing:
                raise
            raise wrapped(exc) from None

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: every read inside sees the database as its first read found it
        (WAL: writers go on meanwhile, unseen until it ends). Inside a transaction already, that
        one is the snapshot."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")  # a read transaction: nothing to commit, its snapshot ends

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    # --- tasks --------------------------------------------------------------------------
    def task(self, task: int) -> dict | None:
        return self._one("task_by_id", (task,))

    def task_by_key(self, key: str) -> dict | None:
        return self._one("task_by_key", (key,))

    def any_due(self, now: float) -> bool:
        return self._one("any_due", (now,)) is not None

    def count_open(self) -> int:
        return self._value("count_open")

    def count_in_flight(self) -> int:
        return self._value("count_in_flight")

    def counts_by_state(self) -> dict[str, int]:
        """Tasks per state that has any."""
        return {r["state"]: r["n"] for r in self._all("counts_by_state")}

    def oldest_pending(self) -> float | None:
        return self._value("oldest_pending")

    def count_expired(self, now: float) -> int:
        return self._value("count_expired", (now,))

    def in_flight_by_worker(self) -> list[dict]:
        """(worker, n, oldest_heartbeat) of the tasks IN_PROGRESS, by worker."""
        return self._all("in_flight_by_worker")

    def busiest_workers(self) -> list[dict]:
        """(worker, n) holding leases now, most leases first."""
        return self._all("busiest_workers")

    def errors_by_class(self) -> list[dict]:
        """(error, state, n) of the tasks' last error classes, most tasks first."""
        return self._all("errors_by_class")

    def blocked_since(self, before: float, limit: int) -> list[dict]:
        """(id, budget) of BLOCKED tasks that have waited since `before` or longer."""
        return self._all("blocked_since", (before, limit))

    def ids_by_state_error(self, state: str, error: str | None) -> list[int]:
        return [r["id"] for r in self._all("ids_by_state_error", {"state": state, "error": error})]

    # --- effects ------------------------------------------------------------------------
    def effect(self, key: str) -> dict | None:
        return self._one("effect_by_key", (key,))

    def effect_exists(self, key: str) -> bool:
        return bool(self._value("effect_exists", (key,)))

    def count_effects(self) -> int:
        return self._value("count_effects")

    # --- events -------------------------------------------------------------------------
    def events_after(self, seq: int, limit: int) -> list[dict]:
        """The shipping cursor: up to `limit` events with `seq` > `seq`, in `seq` order. SQLite has
        one writer at a time and `seq` is the rowid given at insert under its lock, so `seq` order is
        commit order and an event committed later never gets a `seq` below one already read."""
        return self._all("events_after", (seq, limit))

    def task_events(self, task: int) -> list[dict]:
        return self._all("task_events", (task,))

    def recent_operator_events(self, limit: int) -> list[dict]:
        return self._all("recent_operator_events", (limit,))

    def faults_by_kind(self, first_seq: int) -> dict[str, int]:
        return {r["kind"]: r["n"] for r in self._all("faults_by_kind", (first_seq,))}

    def last_event_t(self) -> float | None:
        row = self._one("last_event_t")
        return None if row is None else row["t"]

    def last_seq(self) -> int:
        return self._value("last_seq")

    # --- runs ---------------------------------------------------------------------------
    def run(self, run_id: str) -> dict | None:
        return self._one("run_by_id", (run_id,))

    def latest_run(self) -> dict | None:
        return self._one("latest_run")

    def active_run(self) -> dict | None:
        return self._one("active_run")

    def current_run(self) -> dict | None:
        return self._one("current_run")

    def run_finished_event(self, first_seq: int) -> dict | None:
        """(t, wall) of the last `run_finished` event from `first_seq` on."""
        return self._one("run_finished_event", (first_seq,))

    # --- the tasks view -----------------------------------------------------------------
    def task_row(self, task: int) -> dict | None:
        """A task's row as the tasks view shows one task (with its lease, budget and plan)."""
        return self._one("task_row_by_id", (task,))

    def task_row_by_key(self, key: str) -> dict | None:
        return self._one("task_row_by_key", (key,))

    def tasks_page(self, state: str | None, error: str | None, lo: int, hi: int, limit: int) -> list[dict]:
        """Tasks with ids in [lo, hi], newest first, at most `limit`: in `state` (if given), that
        ever had `error` (if given)."""
        params = {"lo": lo, "hi": hi, "limit": limit, "state": state, "error": error}
        return self._all(page_query(state, error), params)

    def task_had_error(self, error: str, task: int) -> bool:
        return bool(self._value("task_had_error", (error, task)))

    def first_id_enqueued_since(self, t: float) -> int | None:
        row = self._one("first_id_enqueued_since", (t,))
        return None if row is None else row["id"]

    def last_id_enqueued_until(self, t: float) -> int | None:
        row = self._one("last_id_enqueued_until", (t,))
        return None if row is None else row["id"]

    # --- idle workers -----------------------------------------------------------------------
    def notify_work(self) -> None:
        """SQLite has no notifications: idle workers look every poll (or the skip clock kicks them)."""

    def listen(self, on_work: Callable[[], None]) -> None:
        """No notifications to listen to (None: nothing to stop)."""

    # --- the whole database ---------------------------------------------------------------
    def integrity_check(self) -> list[str]:
        return [next(iter(r.values())) for r in self._all("integrity_check")]

    def dump(self) -> dict[str, list[dict]]:
        """Every row of every table in key order, and the schema (`schema`): equal dumps, nothing
        written."""
        with self.snapshot():
            out = {"schema": self._all("schema_rows")}
            for name, select in self._dump_selects(out["schema"]):
                try:
                    out[name] = [dict(r) for r in self.conn.execute(select)]
                except sqlite3.Error as exc:
                    raise wrapped(exc) from None
        return out

    def _dump_selects(self, schema: list[dict]) -> list[tuple[str, str]]:
        """(table, SELECT of its rows in key order) per table, worked out once per schema."""
        key = tuple((r["name"], r["sql"]) for r in schema)
        if self._dump_key != key:
            import sqlite_utils  # here: `orch worker` starts without it

            from orchestrator.queue.sqlite.inspect import key_order

            db = sqlite_utils.Database(self.conn)
            self._dump_plan = [(name, f"SELECT * FROM [{name}] ORDER BY {key_order(db, name)}")
                               for name in [r["name"] for r in self._all("table_names")]]
            self._dump_key = key
        return self._dump_plan

    # --- writes (inside `write`) ----------------------------------------------------------
    def insert_event(self, t: float, wall: float, event: str, task: int | None, key: str | None,
                     state: str | None, prev: str | None, attempt: int | None, epoch: int | None,
                     worker: str | None, error: str | None, actor: str | None, notes: str | None,
                     data: str | None) -> int:
        """Append one event (`data`: JSON text or None); its `seq`."""
        return self.conn.execute(q("insert_event"), (
            t, wall, event, task, key, state, prev, attempt, epoch, worker, error, actor, notes, data)).lastrowid

    def insert_task(self, key: str, payload: str, max_attempts: int, due_at: float, now: float,
                    budget: float | None) -> int | None:
        """A new PENDING task's id; None when the key is taken (nothing written)."""
        row = self.conn.execute(q("insert_task"), {"key": key, "payload": payload, "max_attempts": max_attempts,
                                                   "due_at": due_at, "now": now, "budget": budget}).fetchone()
        return None if row is None else row[0]

    def lease(self, worker: str, until: float, now: float, limit: int) -> list[dict]:
        """Move up to `limit` due PENDING tasks (oldest due first) to IN_PROGRESS for `worker`, each
        under epoch + 1; their (id, key, payload, attempt, max_attempts, epoch, budget, enqueued_at)."""
        return self._all("lease", {"worker": worker, "until": until, "now": now, "limit": limit})

    def heartbeat(self, task: int, epoch: int, until: float, now: float) -> bool:
        """Extend the lease while (IN_PROGRESS, epoch) holds; False when it does not."""
        done = self.conn.execute(q("heartbeat"), {"id": task, "epoch": epoch, "until": until, "now": now})
        return done.rowcount == 1

    def fenced_row(self, task: int) -> dict | None:
        """(id, key, state, attempt, max_attempts, epoch, unknown_seen) of a task about to be
        changed in this transaction; no other writer changes it before the commit."""
        return self._one("fenced_row", (task,))

    def finish_returning(self, task: int, epoch: int, state: str, now: float, error: str | None,
                         detail: str | None, *, fenced: bool = True) -> dict | None:
        """End the lease in `state` while (IN_PROGRESS, epoch) holds: its (key, attempt, budget),
        None when it did not hold. `fenced=False` is the test-only completion with no fence."""
        return self._one("finish_returning" if fenced else "finish_unfenced_returning",
                         {"state": state, "now": now, "error": error, "detail": detail, "id": task, "epoch": epoch})

    def finish(self, task: int, epoch: int, state: str, now: float, error: str | None, detail: str | None) -> None:
        self.conn.execute(q("finish"), {"state": state, "now": now, "error": error, "detail": detail,
                                        "id": task, "epoch": epoch})

    def reschedule(self, task: int, epoch: int, now: float, due_at: float, error: str | None,
                   detail: str | None, unknown: int, refund: int) -> None:
        """Back to PENDING, due at `due_at`, while (IN_PROGRESS, epoch) holds."""
        self.conn.execute(q("reschedule"), {"now": now, "due_at": due_at, "error": error, "detail": detail,
                                            "unknown": unknown, "refund": refund, "id": task, "epoch": epoch})

    def insert_effect(self, key: str, task: int, epoch: int, worker: str | None, t: float,
                      result: str | None) -> bool:
        """The key's effect; False when the key has one already (nothing written)."""
        return self.conn.execute(q("insert_effect"), {"key": key, "task": task, "epoch": epoch, "worker": worker,
                                                      "t": t, "result": result}).rowcount == 1

    def expired_leases(self, now: float, limit: int) -> list[dict]:
        """(id, key, attempt, max_attempts, epoch, worker, lease_until) of leases expired before
        `now`, oldest task first."""
        return self._all("expired_leases", (now, limit))

    def operator_update(self, update: dict[str, Any]) -> None:
        """Set a task's state and plan fields (id, now, state, due_at, attempt, unknown_seen, budget,
        plan, error, detail)."""
        self.conn.execute(q("operator_update"), update)

    def insert_run(self, values: dict[str, Any]) -> None:
        self.conn.execute(q("insert_run"), values)

    def start_run(self, run_id: str, origin: float) -> None:
        self.conn.execute(q("start_run"), {"origin": origin, "id": run_id})

    def set_arrival_cursor(self, run_id: str, next_arrival: int, next_dup: int) -> None:
        self.conn.execute(q("set_arrival_cursor"), {"next": next_arrival, "dup": next_dup, "id": run_id})

    def set_supervisor(self, run_id: str, pid: int, wall: float) -> None:
        self.conn.execute(q("set_supervisor"), {"pid": pid, "wall": wall, "id": run_id})

    def end_run(self, run_id: str, status: str, wall: float, verdict: str | None) -> None:
        self.conn.execute(q("end_run"), {"status": status, "wall": wall, "verdict": verdict, "id": run_id})


class ProbeReader:
    """The skip clock's probe on its own read-only connection (one per thread: see queue/probe.py)."""

    def __init__(self, path: Path):
        try:
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=1.0, check_same_thread=False)
            self.conn.execute("PRAGMA query_only=1")
        except sqlite3.Error as exc:
            raise wrapped(exc) from None

    def clock_probe(self, now: float) -> tuple[float | None, float | None, float | None, int]:
        """(due_now, next_due, lease_end, last_seq): the latest due_at of a task due now, the next
        due_at after now, the first lease end in flight, the last event's seq."""
        try:
            return self.conn.execute(q("clock_probe"), {"now": now}).fetchone()
        except sqlite3.Error as exc:
            raise wrapped(exc) from None
