"""The synthetic handler's downstream: a ledger that is not the queue, where each task's side
effect lands the way a payment or a publish would, keyed by the task's idempotency key.

It is its own SQLite file (`ledger.db` in the run's folder), outside the queue's database and
outside its transactions: the effect happens before the queue hears of it, so a worker that
stalls past its lease and wakes up performs it again for real. SQLite because it is already
here, every worker process can write it at once (one transaction per entry), and the file can be
opened after the run to count what landed. Its few statements are the downstream's own, not the
queue's (they live here, not in `queue.sql`).

`apply(key, ..., dedupe=True)` is what a downstream that honours idempotency keys does: the
second entry of a key is refused (False). `dedupe=False` is a downstream that does not: every
call lands (True), and a duplicate execution becomes a real second entry.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

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
BUSY_WALL = 10.0  # seconds a writer waits for another's entry (one short transaction each)


class Ledger:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=BUSY_WALL, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)

    def apply(self, key: str, task: str, epoch: int, worker: str | None, dedupe: bool = True) -> bool:
        """Apply one entry for `key`; False when the ledger refused it as a duplicate of the key."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if dedupe and conn.execute("SELECT 1 FROM entries WHERE key = ? LIMIT 1", (key,)).fetchone():
                conn.execute("COMMIT")
                return False
            conn.execute("INSERT INTO entries (key, task, epoch, worker, at) VALUES (?, ?, ?, ?, ?)",
                         (key, task, epoch, worker, time.time()))
            conn.execute("COMMIT")
            return True
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def entries(self, key: str | None = None) -> list[dict]:
        """What landed (for one key, or all), in order."""
        sql, args = "SELECT key, task, epoch, worker, at FROM entries", ()
        if key is not None:
            sql, args = sql + " WHERE key = ?", (key,)
        cur = self.conn.execute(sql + " ORDER BY id", args)
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def close(self) -> None:
        self.conn.close()
