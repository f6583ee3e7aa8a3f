"""The synthetic handler's downstream: a ledger that is not the queue, where each task's side
effect lands the way a payment or a publish would, keyed by the task's idempotency key.

It is its own SQLite file (`ledger.db` in the run's folder), outside the queue's database and
outside its transactions: the effect happens before the queue hears of it, so a worker that
stalls past its lease and wakes up performs it again for real. SQLite because it is already
here, every worker process can write it at once (one transaction per entry), and the file can be
opened after the run to count what landed. Its few statements are the downstream's own, not the
queue's (they live here, not in `queue/sqlite/queries.sql`).

`apply(key, ..., dedupe=True)` is what a downstream that honours idempotency keys does: the
second entry of a key is refused (False). `dedupe=False` is a downstream that does not: every
call lands (True), and a duplicate execution becomes a real second entry.

A run on a PostgreSQL server may take workers from other hosts, which share no file: its ledger
is a table of its own on the same server (`ServerLedger`, table `downstream_ledger` in the queue's
schema), written on a connection of its own, outside the queue's transactions as the file is.
`open_ledger` picks the one that suits the queue's database.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from pathlib import Path

from orchestrator.core.home import is_postgres_url

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    task TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    worker TEXT,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_key ON entries (key);
"""
# One statement applies an entry, or refuses it when the key has one (the deduping downstream).
APPLY_ONCE = ("INSERT INTO entries (key, task, epoch, worker, at) SELECT ?, ?, ?, ?, ? "
              "WHERE NOT EXISTS (SELECT 1 FROM entries WHERE key = ?)")
APPLY = "INSERT INTO entries (key, task, epoch, worker, at) VALUES (?, ?, ?, ?, ?)"
BUSY_WALL = 10.0  # seconds a writer waits for another's entry (one short transaction each)


class Ledger:
    """Opened on first use: a worker whose handler never applies a side effect here never creates
    the file, and a worker's start costs no write."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._turn: int | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Writers queue on a kernel lock before they write, as the queue's do: SQLite's busy
            # handler sleeps whole milliseconds when it meets the lock (at 2880x a 5 ms sleep is 14
            # soak seconds).
            self._turn = os.open(self.path.with_name(self.path.name + "-writers"), os.O_RDWR | os.O_CREAT, 0o644)
            conn = sqlite3.connect(self.path, timeout=BUSY_WALL, isolation_level=None, check_same_thread=False)
            fcntl.flock(self._turn, fcntl.LOCK_EX)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(SCHEMA)
            finally:
                fcntl.flock(self._turn, fcntl.LOCK_UN)
            # OFF: a process killed mid-write (a worker's SIGKILL) loses nothing in WAL mode; only a
            # crash of the machine could, which a soak's figures would not survive anyway. It spares
            # the checkpoints' fsyncs, a stall of every worker's side effect at a rehearsal's speed.
            conn.execute("PRAGMA synchronous=OFF")
            self._conn = conn
        return self._conn

    def apply(self, key: str, task: str, epoch: int, worker: str | None, dedupe: bool = True) -> bool:
        """Apply one entry for `key`; False when the ledger refused it as a duplicate of the key."""
        row = (key, task, epoch, worker, time.time())
        conn = self.conn
        fcntl.flock(self._turn, fcntl.LOCK_EX)
        try:  # one statement, its own transaction (autocommit)
            done = conn.execute(APPLY_ONCE, (*row, key)) if dedupe else conn.execute(APPLY, row)
            return done.rowcount == 1
        finally:
            fcntl.flock(self._turn, fcntl.LOCK_UN)

    def entries(self, key: str | None = None) -> list[dict]:
        """What landed (for one key, or all), in order."""
        sql, args = "SELECT key, task, epoch, worker, at FROM entries", ()
        if key is not None:
            sql, args = sql + " WHERE key = ?", (key,)
        cur = self.conn.execute(sql + " ORDER BY id", args)
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._turn is not None:
            os.close(self._turn)
            self._turn = None


# The server's ledger: the same entries, one table in the queue's schema. Its creation and each
# deduped entry take an advisory lock of the transaction (entries of one key queue on its hash), so
# two hosts never both find the key absent; the lock goes with the commit.
SERVER_SCHEMA = """
CREATE TABLE IF NOT EXISTS downstream_ledger (
    id BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL,
    task TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    worker TEXT,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS downstream_ledger_key ON downstream_ledger (key)
"""
SERVER_CREATE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('orch downstream_ledger', 0))"
SERVER_KEY_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
SERVER_APPLY_ONCE = ("INSERT INTO downstream_ledger (key, task, epoch, worker, at) SELECT %s, %s, %s, %s, %s "
                     "WHERE NOT EXISTS (SELECT 1 FROM downstream_ledger WHERE key = %s)")
SERVER_APPLY = "INSERT INTO downstream_ledger (key, task, epoch, worker, at) VALUES (%s, %s, %s, %s, %s)"
CONNECT_WALL = 10  # seconds: an unreachable server is an error, not a hang


class ServerLedger:
    """The ledger of a run whose queue is on a PostgreSQL server (`url`): every host's workers
    write the same one. Opened on first use, as the file is."""

    def __init__(self, url: str):
        self.url = url
        self._conn = None

    @property
    def conn(self):
        if self._conn is None:
            import psycopg  # only a server run needs the driver

            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_WALL,
                                   application_name="orch ledger")
            with conn.transaction():
                conn.execute(SERVER_CREATE_LOCK)
                for statement in SERVER_SCHEMA.split(";"):
                    conn.execute(statement)
            self._conn = conn
        return self._conn

    def apply(self, key: str, task: str, epoch: int, worker: str | None, dedupe: bool = True) -> bool:
        """Apply one entry for `key`; False when the ledger refused it as a duplicate of the key."""
        row = (key, task, epoch, worker, time.time())
        conn = self.conn
        with conn.transaction():
            if not dedupe:
                return conn.execute(SERVER_APPLY, row).rowcount == 1
            conn.execute(SERVER_KEY_LOCK, (key,))
            return conn.execute(SERVER_APPLY_ONCE, (*row, key)).rowcount == 1

    def entries(self, key: str | None = None) -> list[dict]:
        """What landed (for one key, or all), in order."""
        sql, args = "SELECT key, task, epoch, worker, at FROM downstream_ledger", ()
        if key is not None:
            sql, args = sql + " WHERE key = %s", (key,)
        cur = self.conn.execute(sql + " ORDER BY id", args)
        names = [c.name for c in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def open_ledger(db: Path | str, workdir: Path | str) -> Ledger | ServerLedger:
    """The run's downstream for a queue at `db`: the table on the server of a PostgreSQL queue
    (shared by every host), else `ledger.db` in the run's folder `workdir`."""
    return ServerLedger(db) if is_postgres_url(db) else Ledger(Path(workdir) / "ledger.db")
