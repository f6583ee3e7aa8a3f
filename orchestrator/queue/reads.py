"""The queue database opened on the run's clock, and its reads (no writes: see `queue.Queue`)."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from orchestrator.core.clock import WALL, Clock, run_clock
from orchestrator.core.errors import UnknownTask
from orchestrator.core.model import QueueConfig, State
from orchestrator.queue.sqlfile import q
from orchestrator.queue.store import Writer, connect
from orchestrator.queue.tasks import Task, event_dict, task_name


def clock_file(run: sqlite3.Row) -> str | None:
    """A run row's skip-clock file (None: the constant clock, or a database too old to say)."""
    return run["clock"] if "clock" in run.keys() else None


class QueueView:
    """A connection to the queue database and every read of it. The connection's `Writer` is set
    up here too (it takes no lock and opens no file until `queue.Queue` writes through it).

    With no `clock`, it runs on the clock of the run in progress (else the wall clock), so every
    process of a run agrees on soak time.
    """

    def __init__(
        self,
        path: Path | str,
        clock: Clock | None = None,
        config: QueueConfig | None = None,
        *,
        rng: random.Random | None = None,
        create: bool = True,
    ):
        self.path = Path(path)
        self.config = config or QueueConfig()
        self.rng = rng or random.Random()
        self.write: Writer | None = None
        self.conn = connect(self.path, self.config, create=create)
        if clock is None:
            run = self.conn.execute(q("active_run")).fetchone()
            clock = WALL if run is None else run_clock(run["origin"], run["speed"], clock_file(run))
        self.use_clock(clock)

    def use_clock(self, clock: Clock) -> None:
        """Take durations (busy timeout, lock bound) through `clock` from now on."""
        self.clock = clock
        if self.write is not None:
            self.write.close()
        self.write = Writer(self.conn, clock, self.config,
                            self.path.with_name(self.path.name + "-writers") if self.config.writer_queue else None)

    def close(self) -> None:
        self.write.close()
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reads --------------------------------------------------------------------------
    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: every query inside sees the database as its first query found it
        (WAL: writers go on meanwhile, and their commits are not seen until it ends). Inside a
        transaction already, that one is the snapshot."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")  # a read transaction: nothing to commit, its snapshot ends

    def get(self, task: int) -> Task:
        row = self.conn.execute(q("task_by_id"), (task,)).fetchone()
        if row is None:
            raise UnknownTask(f"no task {task_name(task)}")
        return Task.from_row(row)

    def history(self, task: int) -> list[dict]:
        self.get(task)
        return [event_dict(r) for r in self.conn.execute(q("task_events"), (task,))]

    def events_after(self, seq: int, limit: int = 10_000) -> list[sqlite3.Row]:
        return self.conn.execute(q("events_after"), (seq, limit)).fetchall()

    def count_open(self) -> int:
        """Tasks PENDING or IN_PROGRESS."""
        return self.conn.execute(q("count_open")).fetchone()[0]

    def blocked_since(self, before: float, limit: int = 100) -> list[sqlite3.Row]:
        """BLOCKED tasks that have waited since `before` (soak time) or longer."""
        return self.conn.execute(q("blocked_since"), (before, limit)).fetchall()

    def busiest_workers(self) -> list[sqlite3.Row]:
        """Workers holding leases now, most leases first."""
        return self.conn.execute(q("busiest_workers")).fetchall()

    def faults_since(self, first_seq: int) -> dict[str, int]:
        """`fault_injected` events by kind from `first_seq` on (a run's faults so far)."""
        return {r["kind"]: r["n"] for r in self.conn.execute(q("faults_by_kind"), (first_seq,))}

    def last_event_t(self) -> float | None:
        row = self.conn.execute(q("last_event_t")).fetchone()
        return None if row is None else row[0]

    def last_seq(self) -> int:
        return self.conn.execute(q("last_seq")).fetchone()[0]

    def counts(self) -> dict[str, int]:
        """Tasks per state, every state named (zero included)."""
        counts = {s.value: 0 for s in State}
        counts.update({r["state"]: r["n"] for r in self.conn.execute(q("counts_by_state"))})
        return counts

    def status(self, recent: int = 10) -> dict:
        """Counts per state, oldest PENDING age, expired leases, in-flight per worker,
        errors by class, recent operator actions. Read-only, and one snapshot: every figure is
        of the same moment (the IN_PROGRESS count is the leases in flight, DONE the effects)."""
        with self.snapshot():
            return self._status(recent)

    def _status(self, recent: int) -> dict:
        conn = self.conn
        counts = self.counts()
        oldest = conn.execute(q("oldest_pending")).fetchone()[0]
        flights = conn.execute(q("in_flight_by_worker")).fetchall()
        now = self.clock.now()  # after the reads: a row written meanwhile is not younger than now

        def age(since: float | None) -> float | None:
            return None if since is None else round(max(now - since, 0.0), 3)

        return {
            "counts": counts,
            "total": sum(counts.values()),
            "effects": conn.execute(q("count_effects")).fetchone()[0],
            "oldest_pending_age": age(oldest),
            "expired_leases": conn.execute(q("count_expired"), (now,)).fetchone()[0],
            "in_flight": [{"worker": r["worker"], "tasks": r["n"], "heartbeat_age": age(r["oldest_heartbeat"])}
                          for r in flights],
            "errors": [{"error": r["error"], "state": r["state"], "tasks": r["n"]}
                       for r in conn.execute(q("errors_by_class"))],
            "recent_actions": [event_dict(r) for r in conn.execute(q("recent_operator_events"), (recent,))],
            "last_seq": self.last_seq(),
        }
