"""The queue's storage interface: what the state machine (`writes.Queue`, `reads.QueueView`), the
run store, the task search, `ops diagnose`, the skip clock's probe and the drills ask of a
database. Two backends implement it, SQLite (`orchestrator/queue/sqlite/`, the default: a file's
path) and PostgreSQL (`orchestrator/queue/postgres/`, a `postgresql://` URL), and pass the same
contract tests (tests/test_queue_contract.py, tests/test_queue_stateful.py, tests/test_taskquery.py,
parametrized by backend). What a backend must guarantee is written
down in docs/storage.md.

Values cross the interface as plain Python: rows are dicts (column name -> value), counts and
ids ints, times floats (soak seconds), payloads, results and event `data` JSON text. No driver
type (connection, cursor, row) and no driver error crosses it: a backend raises `StoreError`
(cannot open, cannot write, foreign schema) or `DbLockError` (the write lock not taken within its
bound) from `orchestrator.core.errors`.

Writes happen only inside `Backend.write(fn)`: `fn(tx)` runs in one transaction, with `tx` a
`Tx`; every statement it runs commits together, or none does (an exception rolls back and is
raised). `Tx` also has every read, seeing the transaction's own writes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from orchestrator.core.clock import Clock
from orchestrator.core.model import QueueConfig
from orchestrator.queue.sqlite.backend import ProbeReader, SqliteStore, engine_version

T = TypeVar("T")


@runtime_checkable
class Reads(Protocol):
    """Every read of the queue's tables."""

    # tasks
    def task(self, task: int) -> dict | None: ...
    def task_by_key(self, key: str) -> dict | None: ...
    def any_due(self, now: float) -> bool: ...
    def count_open(self) -> int: ...
    def count_in_flight(self) -> int: ...
    def counts_by_state(self) -> dict[str, int]: ...
    def oldest_pending(self) -> float | None: ...
    def count_expired(self, now: float) -> int: ...
    def in_flight_by_worker(self) -> list[dict]: ...
    def busiest_workers(self) -> list[dict]: ...
    def errors_by_class(self) -> list[dict]: ...
    def blocked_since(self, before: float, limit: int) -> list[dict]: ...
    def ids_by_state_error(self, state: str, error: str | None) -> list[int]: ...
    # effects
    def effect(self, key: str) -> dict | None: ...
    def effect_exists(self, key: str) -> bool: ...
    def count_effects(self) -> int: ...

    # events
    def events_after(self, seq: int, limit: int) -> list[dict]:
        """The shipping cursor: up to `limit` events with a `seq` above `seq`, in `seq` order, such
        that no event committed later ever gets a `seq` at or below one this call returned (a reader
        that goes on from the last `seq` it read never skips one)."""
        ...

    def task_events(self, task: int) -> list[dict]: ...
    def recent_operator_events(self, limit: int) -> list[dict]: ...
    def faults_by_kind(self, first_seq: int) -> dict[str, int]: ...
    def last_event_t(self) -> float | None: ...
    def last_seq(self) -> int: ...
    # runs
    def run(self, run_id: str) -> dict | None: ...
    def latest_run(self) -> dict | None: ...
    def active_run(self) -> dict | None: ...
    def current_run(self) -> dict | None: ...
    def run_finished_event(self, first_seq: int) -> dict | None: ...
    # the tasks view
    def task_row(self, task: int) -> dict | None: ...
    def task_row_by_key(self, key: str) -> dict | None: ...
    def tasks_page(self, state: str | None, error: str | None, lo: int, hi: int, limit: int) -> list[dict]: ...
    def task_had_error(self, error: str, task: int) -> bool: ...
    def first_id_enqueued_since(self, t: float) -> int | None: ...
    def last_id_enqueued_until(self, t: float) -> int | None: ...


@runtime_checkable
class Tx(Reads, Protocol):
    """The statements of one write transaction. Every call that names (task, epoch) changes the
    task only while `state = 'IN_PROGRESS' AND epoch = <epoch>` holds, checked in the same
    statement (the fence); `fenced_row` reads a row that no other writer may change before the
    commit."""

    def insert_event(self, t: float, wall: float, event: str, task: int | None, key: str | None,
                     state: str | None, prev: str | None, attempt: int | None, epoch: int | None,
                     worker: str | None, error: str | None, actor: str | None, notes: str | None,
                     data: str | None) -> int | None:
        """Append one event in this transaction: its `seq`, or None where the backend numbers a
        transaction's events at its commit (PostgreSQL: docs/state-machine.md, "Gap-free seq"; a
        transaction does not read its own events there before it commits)."""
        ...
    def insert_task(self, key: str, payload: str, max_attempts: int, due_at: float, now: float,
                    budget: float | None) -> int | None: ...
    def lease(self, worker: str, until: float, now: float, limit: int) -> list[dict]: ...
    def heartbeat(self, task: int, epoch: int, until: float, now: float) -> bool: ...
    def fenced_row(self, task: int) -> dict | None: ...
    def finish_returning(self, task: int, epoch: int, state: str, now: float, error: str | None,
                         detail: str | None, *, fenced: bool = True) -> dict | None: ...
    def finish(self, task: int, epoch: int, state: str, now: float, error: str | None,
               detail: str | None) -> None: ...
    def reschedule(self, task: int, epoch: int, now: float, due_at: float, error: str | None,
                   detail: str | None, unknown: int, refund: int) -> None: ...
    def insert_effect(self, key: str, task: int, epoch: int, worker: str | None, t: float,
                      result: str | None) -> bool: ...
    def expired_leases(self, now: float, limit: int) -> list[dict]: ...
    def operator_update(self, update: dict[str, Any]) -> None: ...
    def insert_run(self, values: dict[str, Any]) -> None: ...
    def start_run(self, run_id: str, origin: float) -> None: ...
    def set_arrival_cursor(self, run_id: str, next_arrival: int, next_dup: int) -> None: ...
    def set_supervisor(self, run_id: str, pid: int, wall: float) -> None: ...
    def end_run(self, run_id: str, status: str, wall: float, verdict: str | None) -> None: ...


class Writes(Protocol):
    """Runs functions of a `Tx` in write transactions. `lock_retries` counts the times the write
    lock was busy."""

    lock_retries: int

    def __call__(self, fn: Callable[[Tx], T]) -> T:
        """`fn(tx)` in one transaction, waiting for the write lock up to the config's lock bound
        (`DbLockError` past it)."""
        ...

    def try_once(self, fn: Callable[[Tx], T]) -> T:
        """One attempt: a busy write lock raises `DbLockError` at once (how db_lock faults surface)."""
        ...

    def unqueued(self, fn: Callable[[Tx], T]) -> T:
        """Take the write lock as a foreign writer would (the lock hog's way in)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Backend(Reads, Protocol):
    """One open database: its reads, its writer, its snapshots."""

    engine: str  # "sqlite" | "postgresql"
    write: Writes

    @property
    def location(self) -> str:
        """The database as a `--db` URL."""
        ...

    def use_clock(self, clock: Clock) -> Writes:
        """A new writer (replacing the old one) whose waits go through `clock`."""
        ...

    def snapshot(self) -> AbstractContextManager[None]:
        """Every read inside sees one moment of the database."""
        ...

    @property
    def in_transaction(self) -> bool: ...

    def notify_work(self) -> None:
        """After a commit that made tasks due: tell idle workers elsewhere (PostgreSQL: NOTIFY; SQLite
        has no notifications and does nothing). A hint: workers also look every poll."""
        ...

    def listen(self, on_work: Callable[[], None]) -> Callable[[], None] | None:
        """Call `on_work` from a thread of the backend's own whenever `notify_work` was said on any
        connection; returns how to stop, or None where the engine has no notifications."""
        ...

    def integrity_check(self) -> list[str]: ...

    def dump(self) -> dict[str, list[dict]]:
        """Every row of every table in key order (and the schema): equal dumps, nothing written."""
        ...

    def close(self) -> None: ...


class ClockReader(Protocol):
    """The skip clock's question, on a connection of its own (read-only)."""

    def clock_probe(self, now: float) -> tuple[float | None, float | None, float | None, int]: ...


PG_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location: Path | str) -> bool:
    """Whether `location` names a PostgreSQL database (a `postgresql://` URL) rather than a SQLite file."""
    return isinstance(location, str) and location.strip().lower().startswith(PG_SCHEMES)


def database_location(location: Path | str) -> Path | str:
    """A database's location as the backends take it: a PostgreSQL URL stays a string, anything
    else is a SQLite file's path."""
    return location.strip() if is_postgres(location) else Path(location)


def open_backend(location: Path | str, config: QueueConfig, *, create: bool = True) -> Backend:
    """Open the queue database at `location`: a `postgresql://` URL (the PostgreSQL backend), else a
    SQLite file's path."""
    if is_postgres(location):
        from orchestrator.queue.postgres.backend import PgStore  # here: SQLite's users never load psycopg

        return PgStore(location.strip(), config, create=create)
    return SqliteStore(Path(location), config, create=create)


def clock_reader(location: Path | str) -> ClockReader:
    if is_postgres(location):
        from orchestrator.queue.postgres.backend import ProbeReader as PgProbeReader

        return PgProbeReader(location.strip())
    return ProbeReader(Path(location))


def engine_versions() -> dict[str, str]:
    """The version of each backend's engine (`ops diagnose` records them); PostgreSQL's client
    library only where psycopg is installed."""
    versions = {"sqlite": engine_version()}
    try:
        from orchestrator.queue.postgres.backend import engine_version as pg_version
    except ImportError:
        return versions
    versions["postgresql"] = pg_version()
    return versions
