"""The skip clock's question to the database before a jump (core/skipclock.py `Probe`): is a
task due that the workers have not seen, when does the next one fall due or a lease expire, and
which event is the last. One read-only connection per thread (the backend's `clock_reader`): the
clock asks from any of them."""

from __future__ import annotations

import threading

from orchestrator.core.skipclock import Probe
from orchestrator.queue.backend import ClockReader, clock_reader, database_location


class ClockProbe:
    def __init__(self, db):
        self.db = database_location(db)  # a SQLite file, or a PostgreSQL URL
        self.local = threading.local()

    def _reader(self) -> ClockReader:
        reader = getattr(self.local, "reader", None)
        if reader is None:
            reader = self.local.reader = clock_reader(self.db)
        return reader

    def __call__(self, now: float) -> Probe:
        due_now, next_due, lease_end, last_seq = self._reader().clock_probe(now)
        return Probe(due_now=due_now, next_due=next_due, lease_end=lease_end, last_seq=last_seq)


def install(clock, db) -> None:
    """Give a skip clock this process's probe (the constant clock needs none)."""
    if getattr(clock, "skips", False) and clock.probe is None:
        clock.probe = ClockProbe(db)
