"""The PostgreSQL backend: the storage interface of `orchestrator/queue/backend.py` on one
connection (psycopg 3).

Every statement is a named query of `queries.sql`. Rows leave as plain dicts, counts and ids as
ints. Inside a transaction the `Writer` hands its function this same object as `tx`. Writers run
side by side here, so what SQLite's single writer gave for free is asked for explicitly: a task
read before it is written is read with its row locked (`fenced_row`, and `task`/`task_by_key`
inside a write), the lease and the reaper take rows with `FOR UPDATE SKIP LOCKED`, the in-flight
cap is counted under a lock, and a transaction's events are numbered at its end, under the event
counter's row lock, so `seq` is gap-free and in commit order (`insert_event` buffers them, and
returns None: the number is not known before the commit's last statement).

Driver errors do not leave: a read outside a write transaction that fails raises `DbLockError`
(a lock or statement timeout) or `StoreError`; inside one, the `Writer` wraps them (and retries).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from orchestrator.core.clock import Clock
from orchestrator.core.errors import OrchestratorError, StoreError
from orchestrator.core.model import QueueConfig
from orchestrator.queue.postgres.sqlfile import q
from orchestrator.queue.postgres.store import CONNECT_TIMEOUT, Writer, connect, first_line, shown, wrapped
from orchestrator.queue.sqlfile import page_query

ENGINE = "postgresql"
COUNTER_TABLE = "event_counter"
EVENT_COLUMNS = ("t", "wall", "event", "task", "key", "state", "prev", "attempt", "epoch", "worker", "error",
                 "actor", "notes", "data")


def engine_version() -> str:
    """The client library's version (a server's own is asked of the server)."""
    return f"libpq {psycopg.pq.version()}"


class PgStore:
    """The queue database at `url`: every read, and, handed to functions run by `write`, every
    write statement of the state machine (`write` is set by `use_clock`)."""

    engine = ENGINE

    def __init__(self, url: str, config: QueueConfig, *, create: bool = True):
        self.url = url
        self.config = config
        self.write: Writer | None = None
        self.writing = False  # inside a write transaction: the `Writer` sets it, and wraps errors itself
        self._events: list[tuple] = []  # the transaction's events, numbered and inserted before COMMIT
        self._dump_key: tuple | None = None  # the schema `_dump_plan` was worked out for
        self._dump_plan: list[tuple[str, str]] = []
        self._work_channel: str | None = None  # `_channel`: asked once
        self.conn = connect(url, create=create)

    def use_clock(self, clock: Clock) -> Writer:
        """A new writer whose durations (lock timeout, lock bound) go through `clock`."""
        self.write = Writer(self.conn, clock, self.config, tx=self)
        return self.write

    def close(self) -> None:
        self.conn.close()

    @property
    def location(self) -> str:
        return self.url

    # --- plumbing -----------------------------------------------------------------------
    def _run(self, name: str, params: Any) -> psycopg.Cursor:
        try:
            return self.conn.execute(q(name), params)
        except psycopg.Error as exc:
            if self.writing:
                raise
            raise wrapped(exc) from None

    def _one(self, name: str, params: Any = None) -> dict | None:
        return self._run(name, params).fetchone()

    def _all(self, name: str, params: Any = None) -> list[dict]:
        return self._run(name, params).fetchall()

    def _value(self, name: str, params: Any = None) -> Any:
        return next(iter(self._run(name, params).fetchone().values()))

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One REPEATABLE READ, READ ONLY transaction: every read inside sees the database as its
        first read found it. Inside a transaction already, that one is the snapshot."""
        if self.in_transaction:
            yield
            return
        try:
            self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        except psycopg.Error as exc:
            raise wrapped(exc) from None
        try:
            yield
        finally:
            try:
                self.conn.execute("COMMIT")  # read only: nothing to commit, its snapshot ends
            except psycopg.Error:
                pass  # the connection is gone: the next read says so

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    # --- tasks --------------------------------------------------------------------------
    def task(self, task: int) -> dict | None:
        return self._one("task_by_id_locked" if self.writing else "task_by_id", {"id": task})

    def task_by_key(self, key: str) -> dict | None:
        return self._one("task_by_key_locked" if self.writing else "task_by_key", {"key": key})

    def any_due(self, now: float) -> bool:
        return self._one("any_due", {"now": now}) is not None

    def count_open(self) -> int:
        return self._value("count_open")

    def count_in_flight(self) -> int:
        """Tasks IN_PROGRESS; inside a write, counted under the in-flight lock (held to the commit),
        so a cap checked with it and then leased up to is exact."""
        if self.writing:
            self._run("in_flight_cap_lock", None)
        return self._value("count_in_flight")

    def counts_by_state(self) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self._all("counts_by_state")}

    def oldest_pending(self) -> float | None:
        return self._value("oldest_pending")

    def count_expired(self, now: float) -> int:
        return self._value("count_expired", {"now": now})

    def in_flight_by_worker(self) -> list[dict]:
        return self._all("in_flight_by_worker")

    def busiest_workers(self) -> list[dict]:
        return self._all("busiest_workers")

    def errors_by_class(self) -> list[dict]:
        return self._all("errors_by_class")

    def blocked_since(self, before: float, limit: int) -> list[dict]:
        return self._all("blocked_since", {"before": before, "limit": limit})

    def ids_by_state_error(self, state: str, error: str | None) -> list[int]:
        return [r["id"] for r in self._all("ids_by_state_error", {"state": state, "error": error})]

    # --- effects ------------------------------------------------------------------------
    def effect(self, key: str) -> dict | None:
        return self._one("effect_by_key", {"key": key})

    def effect_exists(self, key: str) -> bool:
        return bool(self._value("effect_exists", {"key": key}))

    def count_effects(self) -> int:
        return self._value("count_effects")

    # --- events -------------------------------------------------------------------------
    def events_after(self, seq: int, limit: int) -> list[dict]:
        """The shipping cursor: up to `limit` events with `seq` > `seq`, in `seq` order. Numbers
        are handed out under the counter's row lock, held to the commit: an event committed later
        always gets a higher `seq` than every event already visible (docs/state-machine.md)."""
        return self._all("events_after", {"seq": seq, "limit": limit})

    def task_events(self, task: int) -> list[dict]:
        return self._all("task_events", {"task": task})

    def recent_operator_events(self, limit: int) -> list[dict]:
        return self._all("recent_operator_events", {"limit": limit})

    def faults_by_kind(self, first_seq: int) -> dict[str, int]:
        return {r["kind"]: r["n"] for r in self._all("faults_by_kind", {"seq": first_seq})}

    def last_event_t(self) -> float | None:
        row = self._one("last_event_t")
        return None if row is None else row["t"]

    def last_seq(self) -> int:
        return self._value("last_seq")

    # --- runs ---------------------------------------------------------------------------
    def run(self, run_id: str) -> dict | None:
        return self._one("run_by_id", {"id": run_id})

    def latest_run(self) -> dict | None:
        return self._one("latest_run")

    def active_run(self) -> dict | None:
        return self._one("active_run")

    def current_run(self) -> dict | None:
        return self._one("current_run")

    def run_finished_event(self, first_seq: int) -> dict | None:
        return self._one("run_finished_event", {"seq": first_seq})

    # --- the tasks view -----------------------------------------------------------------
    def task_row(self, task: int) -> dict | None:
        return self._one("task_row_by_id", {"id": task})

    def task_row_by_key(self, key: str) -> dict | None:
        return self._one("task_row_by_key", {"key": key})

    def tasks_page(self, state: str | None, error: str | None, lo: int, hi: int, limit: int) -> list[dict]:
        params = {"lo": lo, "hi": hi, "limit": limit, "state": state, "error": error}
        return self._all(page_query(state, error), params)

    def task_had_error(self, error: str, task: int) -> bool:
        return bool(self._value("task_had_error", {"error": error, "task": task}))

    def first_id_enqueued_since(self, t: float) -> int | None:
        row = self._one("first_id_enqueued_since", {"t": t})
        return None if row is None else row["id"]

    def last_id_enqueued_until(self, t: float) -> int | None:
        row = self._one("last_id_enqueued_until", {"t": t})
        return None if row is None else row["id"]

    # --- idle workers -----------------------------------------------------------------------
    def _channel(self) -> str:
        """The notification channel of this queue: one per schema (channels are database-wide)."""
        if self._work_channel is None:
            self._work_channel = "orch_work_" + self._value("current_schema", None)
        return self._work_channel

    def notify_work(self) -> None:
        """Tell the idle workers listening on other connections, on any host, that tasks may be
        due (NOTIFY, delivered when this autocommit statement ends). A hint only: one that does not
        arrive leaves the task to the workers' next look."""
        try:
            self._run("notify_work", {"channel": self._channel()})
        except OrchestratorError:
            pass

    def listen(self, on_work: Callable[[], None]) -> Callable[[], None]:
        """Call `on_work` (from a thread of its own, on a connection of its own) whenever a commit
        says tasks may be due; returns how to stop listening."""
        listener = WorkListener(self.url, self._channel(), on_work)
        listener.start()
        return listener.stop

    # --- the whole database ---------------------------------------------------------------
    def integrity_check(self) -> list[str]:
        """["ok"], or what is wrong: the gap-free event counter, effects without their task."""
        problems = [next(iter(r.values())) for r in self._all("integrity_check")]
        return problems or ["ok"]

    def dump(self) -> dict[str, list[dict]]:
        """Every row of every table in key order, and the schema (`schema`): equal dumps, nothing
        written (one read-only snapshot). The event counter's row is not listed: it is the last
        event's `seq`, part of the events table's state (`integrity_check` checks that it is).

        One pipeline: the tables' SELECTs are the ones worked out for the schema seen last time; a
        schema that changed since is read again."""
        for _ in range(2):
            plan = self._dump_plan
            schema, keys, *tables = self._results([q("schema_rows"), q("table_keys"), *(s for _, s in plan)])
            if self._dump_key == self._schema_key(schema):
                return {"schema": schema, **{name: rows for (name, _), rows in zip(plan, tables)}}
            self._plan_dump(schema, keys)
        raise StoreError("the queue database's schema changed while it was dumped")

    def _results(self, statements: list[str]) -> list[list[dict]]:
        """The rows of each statement, in one read-only snapshot, sent in one pipeline (one round
        trip; the statements are the same every time, so the driver prepares them once)."""
        inside = self.in_transaction
        try:
            with self.conn.pipeline():
                if not inside:
                    self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cursors = [self.conn.execute(statement) for statement in statements]
                if not inside:
                    self.conn.execute("COMMIT")
            return [cursor.fetchall() for cursor in cursors]
        except psycopg.Error as exc:
            if not inside and self.in_transaction:
                self.conn.execute("ROLLBACK")
            raise wrapped(exc) from None

    @staticmethod
    def _schema_key(schema: list[dict]) -> tuple:
        return tuple((r["name"], r["sql"]) for r in schema)

    def _plan_dump(self, schema: list[dict], keys: list[dict]) -> None:
        """(table, SELECT of its rows in key order) per table but the counter, for this schema."""
        self._dump_plan = [
            (r["name"], sql.SQL("SELECT * FROM {} ORDER BY {}").format(
                sql.Identifier(r["name"]), sql.SQL(", ").join(sql.Identifier(c) for c in r["columns"])
            ).as_string(self.conn))
            for r in keys if r["name"] != COUNTER_TABLE]
        self._dump_key = self._schema_key(schema)

    # --- writes (inside `write`) ----------------------------------------------------------
    def insert_event(self, t: float, wall: float, event: str, task: int | None, key: str | None,
                     state: str | None, prev: str | None, attempt: int | None, epoch: int | None,
                     worker: str | None, error: str | None, actor: str | None, notes: str | None,
                     data: str | None) -> None:
        """Append one event at the transaction's end (`commit`). None: its `seq` is given
        by the commit's last statement."""
        self._events.append((t, wall, event, task, key, state, prev, attempt, epoch, worker, error, actor, notes, data))

    def commit(self, lock_ms: int) -> None:
        """Number the transaction's events, insert them and commit, in one round trip: the event
        counter's row is locked from its UPDATE to the COMMIT (`lock_ms`: how long to wait for it)."""
        events, self._events = self._events, []
        with self.conn.pipeline():
            if events:
                columns = {name: [e[i] for e in events] for i, name in enumerate(EVENT_COLUMNS)}
                self.conn.execute(q("counter_wait").format(lock_ms=lock_ms))
                self.conn.execute(q("insert_events"), {"n": len(events), **columns})
            self.conn.execute("COMMIT")

    def drop_events(self) -> None:
        self._events = []

    def insert_task(self, key: str, payload: str, max_attempts: int, due_at: float, now: float,
                    budget: float | None) -> int | None:
        row = self._one("insert_task", {"key": key, "payload": payload, "max_attempts": max_attempts,
                                        "due_at": due_at, "now": now, "budget": budget})
        return None if row is None else row["id"]

    def lease(self, worker: str, until: float, now: float, limit: int) -> list[dict]:
        return self._all("lease", {"worker": worker, "until": until, "now": now, "limit": limit})

    def heartbeat(self, task: int, epoch: int, until: float, now: float) -> bool:
        done = self._run("heartbeat", {"id": task, "epoch": epoch, "until": until, "now": now})
        return done.rowcount == 1

    def fenced_row(self, task: int) -> dict | None:
        """The row of a task about to be changed, locked (`FOR UPDATE`) to the commit."""
        return self._one("fenced_row", {"id": task})

    def finish_returning(self, task: int, epoch: int, state: str, now: float, error: str | None,
                         detail: str | None, *, fenced: bool = True) -> dict | None:
        return self._one("finish_returning" if fenced else "finish_unfenced_returning",
                         {"state": state, "now": now, "error": error, "detail": detail, "id": task, "epoch": epoch})

    def finish(self, task: int, epoch: int, state: str, now: float, error: str | None, detail: str | None) -> None:
        self._run("finish", {"state": state, "now": now, "error": error, "detail": detail, "id": task, "epoch": epoch})

    def reschedule(self, task: int, epoch: int, now: float, due_at: float, error: str | None,
                   detail: str | None, unknown: int, refund: int) -> None:
        self._run("reschedule", {"now": now, "due_at": due_at, "error": error, "detail": detail,
                                 "unknown": unknown, "refund": refund, "id": task, "epoch": epoch})

    def insert_effect(self, key: str, task: int, epoch: int, worker: str | None, t: float,
                      result: str | None) -> bool:
        """The effect of `key`; False when the key has one (nothing written)."""
        done = self._run("insert_effect", {"key": key, "task": task, "epoch": epoch, "worker": worker,
                                           "t": t, "result": result})
        return done.rowcount == 1

    def expired_leases(self, now: float, limit: int) -> list[dict]:
        return self._all("expired_leases", {"now": now, "limit": limit})

    def operator_update(self, update: dict[str, Any]) -> None:
        self._run("operator_update", update)

    def insert_run(self, values: dict[str, Any]) -> None:
        self._run("insert_run", values)

    def start_run(self, run_id: str, origin: float) -> None:
        self._run("start_run", {"origin": origin, "id": run_id})

    def set_arrival_cursor(self, run_id: str, next_arrival: int, next_dup: int) -> None:
        self._run("set_arrival_cursor", {"next": next_arrival, "dup": next_dup, "id": run_id})

    def set_supervisor(self, run_id: str, pid: int, wall: float) -> None:
        self._run("set_supervisor", {"pid": pid, "wall": wall, "id": run_id})

    def end_run(self, run_id: str, status: str, wall: float, verdict: str | None) -> None:
        self._run("end_run", {"status": status, "wall": wall, "verdict": verdict, "id": run_id})


class WorkListener(threading.Thread):
    """LISTEN on a queue's channel and call `on_work` for each notification; when the connection
    is lost, it stops (the worker goes on looking every poll, as without notifications)."""

    def __init__(self, url: str, channel: str, on_work: Callable[[], None]):
        super().__init__(name="listen-work", daemon=True)
        try:
            self.conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                        application_name="orch-listen")
            self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {shown(url)}: {first_line(exc)}") from None
        self.on_work = on_work
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                for _ in self.conn.notifies(timeout=0.5):  # a look at `stopping` twice a second
                    self.on_work()
        except psycopg.Error:
            pass  # the server went away: the worker polls
        finally:
            self.conn.close()

    def stop(self) -> None:
        self.stopping.set()


class ProbeReader:
    """The skip clock's probe on its own read-only connection (one per thread: see queue/probe.py)."""

    def __init__(self, url: str):
        try:
            self.conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                        application_name="orch-probe")
            self.conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {shown(url)}: {first_line(exc)}") from None

    def clock_probe(self, now: float) -> tuple[float | None, float | None, float | None, int]:
        """(due_now, next_due, lease_end, last_seq), as the SQLite backend's probe answers."""
        try:
            return self.conn.execute(q("clock_probe"), {"now": now}).fetchone()
        except psycopg.Error as exc:
            raise wrapped(exc) from None
