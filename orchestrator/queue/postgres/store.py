"""The PostgreSQL backend's connections, schema, driver-error mapping and write transactions.

Writers run side by side (READ COMMITTED): each takes ROW EXCLUSIVE on `tasks` at BEGIN (what
the lock hog's EXCLUSIVE lock keeps out), row locks where a transaction reads before it writes,
and the event counter's row just before COMMIT (docs/state-machine.md, "Gap-free seq"). A lock not
had within the busy timeout (`lock_timeout`, soak seconds through the clock), a statement past
its bound (`statement_timeout`), a deadlock or a serialization failure rolls the transaction back
and it is tried again, with jittered backoff, up to the lock bound; then `DbLockError` (class
`db_lock`), as the SQLite backend does with a busy database.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from tenacity import RetryError

from orchestrator.core.clock import Clock
from orchestrator.core.errors import DbLockError, StoreError
from orchestrator.core.model import QueueConfig
from orchestrator.queue.postgres.sqlfile import q
from orchestrator.queue.retries import LockRetries

SCHEMA_ID = "orch-queue/1"
CONNECT_TIMEOUT = 10  # seconds: an unreachable server is an error, not a hang
# Lock or timeout answers that a later try may not meet: the transaction is rolled back and retried.
RETRYABLE = (pg_errors.LockNotAvailable, pg_errors.QueryCanceled, pg_errors.DeadlockDetected,
             pg_errors.SerializationFailure)
T = TypeVar("T")


def is_busy(exc: BaseException) -> bool:
    return isinstance(exc, RETRYABLE)


def shown(url: str) -> str:
    """The database a URL names, for messages: host, port and database, never a password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "a malformed PostgreSQL URL"
    host = parts.get("host") or "localhost"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{host}{port}/{parts.get('dbname') or ''}"


def wrapped(exc: psycopg.Error, what: str = "read") -> DbLockError | StoreError:
    """A driver error as the package's own."""
    if is_busy(exc):
        return DbLockError(f"database is locked: {first_line(exc)}")
    return StoreError(f"cannot {what} the queue database: {first_line(exc)}")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(url: str, *, create: bool = True) -> psycopg.Connection:
    """Open the queue database at `url` (autocommit: each read outside a transaction stands alone),
    creating the schema on first use; refuse a foreign one."""
    try:
        conn = psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT,
                               application_name="orch")
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {shown(url)}: {first_line(exc)}") from None
    try:
        _check_schema(conn, url, create)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, psycopg.Error):
            raise StoreError(f"cannot open {shown(url)}: {first_line(exc)}") from None
        raise
    return conn


def _tables(conn: psycopg.Connection) -> set[str]:
    return {row["name"] for row in conn.execute(q("table_names"))}


def _check_schema(conn: psycopg.Connection, url: str, create: bool) -> None:
    tables = _tables(conn)
    if not tables:
        if not create:
            raise StoreError(f"no queue schema in {shown(url)}")
        with conn.transaction():  # one transaction: another process sees no tables or all of them
            conn.execute(q("schema_lock"))
            if not _tables(conn):
                conn.execute(q("schema"))
        tables = _tables(conn)
    if "meta" not in tables:
        raise StoreError(f"foreign schema in {shown(url)} (tables: {', '.join(sorted(tables))})")
    row = conn.execute(q("schema_version")).fetchone()
    if row is None or row["value"] != SCHEMA_ID or "event_counter" not in tables:
        found = row["value"] if row else "none"
        raise StoreError(f"foreign schema in {shown(url)} (schema {found}, expected {SCHEMA_ID})")


def wall_ms(seconds: float) -> int:
    """A wall duration as PostgreSQL's timeouts take it: whole milliseconds, at least 1 (0 is none)."""
    return max(1, math.ceil(seconds * 1000))


class Writer(LockRetries):
    """Runs functions inside write transactions, retrying lock timeouts with backoff
    (`queue.retries`). Each function is given `tx` (the backend's statements on this connection),
    never the connection; the events it wrote are numbered and inserted just before COMMIT
    (`tx.commit`)."""

    def __init__(self, conn: psycopg.Connection, clock: Clock, config: QueueConfig, *, tx: Any):
        self.conn = conn
        self.tx = tx
        self._lock_ms = wall_ms(self._retry_policy(clock, config, is_busy))  # the server's wait per try

    def __call__(self, fn: Callable[[Any], T]) -> T:
        try:
            try:
                return self._transaction(fn)  # the usual case: no contention, no retry machinery
            except RETRYABLE:
                self.lock_retries += 1
            self._retry_from = self.clock.now()
            return self._retrying(self._transaction, fn)
        except RetryError:
            raise self._lock_error() from None
        except psycopg.Error as exc:  # a lost connection, a full disk: wrapped, never leaked
            raise StoreError(f"cannot write the queue database: {first_line(exc)}") from None

    def close(self) -> None:
        pass  # the connection is the backend's

    def _transaction(self, fn: Callable[[Any], T], begin: str = "begin_write") -> T:
        conn, tx = self.conn, self.tx
        tx.writing = True
        try:
            conn.execute(q(begin).format(lock_ms=self._lock_ms, statement_ms=wall_ms(self._bound_wall)))
            result = fn(tx)
            tx.commit(wall_ms(self._bound_wall))  # the events, numbered under the counter's lock, and COMMIT
        except BaseException:
            tx.drop_events()
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                try:
                    conn.execute("ROLLBACK")
                except psycopg.Error:
                    pass  # the connection is gone: nothing was committed
            raise
        finally:
            tx.writing = False
        return result

    def unqueued(self, fn: Callable[[Any], T]) -> T:
        """A transaction that holds `tasks` in EXCLUSIVE mode: every other writer waits at its
        BEGIN (then retries, then `DbLockError` past the bound); readers go on. The lock hog."""
        self._retry_from = self.clock.now()
        try:
            return self._retrying(self._transaction, fn, "begin_hog")
        except RetryError:
            raise self._lock_error() from None
        except psycopg.Error as exc:
            raise StoreError(f"cannot write the queue database: {first_line(exc)}") from None

    def try_once(self, fn: Callable[[Any], T]) -> T:
        """One attempt with the busy timeout only: a held lock raises `DbLockError` at once."""
        try:
            return self._transaction(fn)
        except psycopg.Error as exc:
            raise wrapped(exc, "write") from None
