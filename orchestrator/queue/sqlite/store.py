"""The SQLite backend's connections: WAL, pragmas, schema checks, and write transactions.

Writers take the write lock with `BEGIN IMMEDIATE`. SQLite's busy timeout (in soak seconds,
converted through the clock) waits for it; when SQLite still answers busy, tenacity retries with
jittered backoff until the lock bound, then `DbLockError` (class `db_lock`) is raised.
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tenacity import RetryError

from orchestrator.core.clock import Clock
from orchestrator.core.errors import DbLockError, StoreError
from orchestrator.core.model import QueueConfig
from orchestrator.queue.retries import LockRetries
from orchestrator.queue.sqlite.sqlfile import q

SCHEMA_ID = "orch-queue/1"
_INDEX_DDL = re.compile(r"^(CREATE|DROP) INDEX IF (?:NOT )?EXISTS (\w+)", re.MULTILINE)
# A new database's page size. A lease or a completion writes about ten pages (the task row, its
# index entries, an event and its index entry, the effect), each a whole page in the WAL: 1 KiB
# pages made a commit 40 % cheaper than SQLite's default 4 KiB and four workers drain about 15 %
# more, while full scans (`ops status` counts every task) take about 1.7x as long.
PAGE_SIZE = 1024
T = TypeVar("T")


def is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


def connect(path: Path, config: QueueConfig, *, create: bool = True) -> sqlite3.Connection:
    """Open (and on first use create) the queue database; refuse a foreign or broken file."""
    path = Path(path)
    if not path.exists():
        if not create:
            raise StoreError(f"no queue database at {path}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {path.parent}: {exc.strerror}") from None
        if not os.access(path.parent, os.W_OK):
            raise StoreError(f"home is not writable: {path.parent}")
    conn = None
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=1.0, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        _check_schema(conn, path, create)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={config.synchronous}")
    except BaseException as exc:
        if conn is not None:
            conn.close()
        if not isinstance(exc, sqlite3.DatabaseError):
            raise
        if is_busy(exc):
            raise DbLockError(f"database is locked: {path}") from None
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise StoreError(f"not a SQLite database: {path}") from None
        if "readonly" in str(exc) or "unable to open" in str(exc):
            raise StoreError(f"cannot write the queue database {path}: {exc}") from None
        raise StoreError(f"cannot open {path}: {exc}") from None
    return conn


def _check_schema(conn: sqlite3.Connection, path: Path, create: bool) -> None:
    tables = {row[0] for row in conn.execute(q("table_names"))}
    if not tables:
        if not create:
            raise StoreError(f"no queue schema in {path}")
        _create_schema(conn)
        return
    if "meta" not in tables:
        raise StoreError(f"foreign schema in {path} (tables: {', '.join(sorted(tables))})")
    row = conn.execute(q("schema_version")).fetchone()
    if row is None or row[0] != SCHEMA_ID:
        found = row[0] if row else "none"
        raise StoreError(f"foreign schema in {path} (schema {found}, expected {SCHEMA_ID})")
    _upgrade_indexes(conn)
    _upgrade_runs(conn)


def _upgrade_runs(conn: sqlite3.Connection) -> None:
    """A database made before the skip clock gets the runs table's `clock` column (NULL for its
    runs: they ran on the constant clock). One that cannot be written now is read as it is."""
    if "clock" in {row[0] for row in conn.execute(q("runs_columns"))}:
        return
    try:
        conn.execute(q("add_runs_clock"))
    except sqlite3.OperationalError:
        pass


@functools.cache
def _index_names() -> tuple[frozenset[str], frozenset[str]]:
    """The indexes queries.sql's `indexes` block creates, and the ones it drops."""
    found = _INDEX_DDL.findall(q("indexes"))
    return (frozenset(name for verb, name in found if verb == "CREATE"),
            frozenset(name for verb, name in found if verb == "DROP"))


def _upgrade_indexes(conn: sqlite3.Connection) -> None:
    """A database made by an earlier version gets this version's indexes (queries name some of
    them in INDEXED BY) and loses the ones that only slowed writes. Nothing is written when the
    indexes already match; a database that cannot be written now keeps its old ones."""
    have = {row[0] for row in conn.execute(q("index_names"))}
    wanted, dropped = _index_names()
    if wanted <= have and not dropped & have:
        return
    try:
        conn.executescript("BEGIN IMMEDIATE;\n" + q("indexes") + "\nCOMMIT;")
    except sqlite3.OperationalError:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _create_schema(conn: sqlite3.Connection) -> None:
    """Create the schema in one transaction, so that a process opening the database at the same
    moment sees either no tables or all of them with the schema row (never a half-made schema,
    which would read as a foreign one). WAL first, so readers are not blocked meanwhile."""
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before WAL: it applies to an empty database only
    conn.execute("PRAGMA journal_mode=WAL")
    try:
        conn.executescript("BEGIN IMMEDIATE;\n" + q("schema") + "\n" + q("indexes") + "\nCOMMIT;")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class Writer(LockRetries):
    """Runs functions inside `BEGIN IMMEDIATE` transactions, retrying busy with backoff
    (`queue.retries`). Each function is given `tx` (the backend's statements on this connection),
    never the connection."""

    def __init__(self, conn: sqlite3.Connection, clock: Clock, config: QueueConfig,
                 queue_file: Path | None = None, *, tx: Any):
        self.conn = conn
        self.tx = tx
        # Writers of this package queue on a kernel lock before `BEGIN IMMEDIATE`: the next one
        # wakes as soon as the lock is free instead of sleeping in SQLite's busy handler. A writer
        # that does not take it (another tool, the chaos agent's lock hog) still meets the busy
        # timeout and the retries. The kernel drops the lock of a killed process.
        # The lock file is opened at the first write, so readers (`ops status`) create nothing.
        self._queue_file = queue_file
        self._queue_fd: int | None = None
        try_wall = self._retry_policy(clock, config, is_busy)
        self._busy_ms = max(int(try_wall * 1000), 1)
        conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        # On the skip clock the lock hog's hold is known to the clock: a writer that would meet
        # it is told busy at once instead of after its busy wait (the answer is the same, SQLite's).
        self._held = clock.holding if clock.skips else None

    def __call__(self, fn: Callable[[Any], T]) -> T:
        try:
            try:
                return self._once(fn)  # the usual case: no contention, no retry machinery
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                self.lock_retries += 1
            self._retry_from = self.clock.now()
            return self._retrying(self._once, fn)
        except RetryError:
            raise self._lock_error() from None
        except sqlite3.Error as exc:  # disk full, read-only file, I/O error: wrapped, never leaked
            raise StoreError(f"cannot write the queue database: {exc}") from None

    def close(self) -> None:
        if self._queue_fd is not None:
            os.close(self._queue_fd)
            self._queue_fd = None

    def _once(self, fn: Callable[[Any], T]) -> T:
        if self._queue_file is None:
            return self._transaction(fn)
        self._take_turn()
        try:
            return self._transaction(fn)
        finally:
            fcntl.flock(self._queue_fd, fcntl.LOCK_UN)

    def _take_turn(self) -> None:
        """Wait for the writers' kernel lock, polling with short sleeps up to the lock bound (a
        blocking flock could wait forever behind a writer held by SIGSTOP)."""
        if self._queue_fd is None:
            try:
                self._queue_fd = os.open(self._queue_file, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StoreError(f"cannot open the writers' lock file {self._queue_file}: {exc.strerror}") from None
        pause, deadline = 0.00005, time.monotonic() + self._bound_wall
        while True:
            try:
                fcntl.flock(self._queue_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise self._lock_error() from None
                time.sleep(pause)
                pause = min(pause * 2, 0.0002)

    def _begin(self) -> None:
        conn = self.conn
        if self._held is None or not self._held():
            conn.execute("BEGIN IMMEDIATE")
            return
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        finally:
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")

    def _transaction(self, fn: Callable[[Any], T]) -> T:
        conn = self.conn
        self._begin()
        tx = self.tx
        tx.writing = True
        try:
            result = fn(tx)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            tx.writing = False
        return result

    def unqueued(self, fn: Callable[[Any], T]) -> T:
        """A transaction that skips the writers' kernel queue and meets the write lock as a
        foreign writer would (busy timeout and retries only): how the lock hog holds it."""
        self._retry_from = self.clock.now()
        try:
            return self._retrying(self._transaction, fn)
        except RetryError:
            raise self._lock_error() from None

    def try_once(self, fn: Callable[[Any], T]) -> T:
        """One attempt with SQLite's busy timeout only: busy raises `DbLockError` at once."""
        try:
            return self._once(fn)
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                raise DbLockError(f"database is locked: {exc}") from None
            raise
