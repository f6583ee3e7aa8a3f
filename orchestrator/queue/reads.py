"""The queue database opened on the run's clock, and its reads (no writes: see `queue.Queue`)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from orchestrator.core.clock import WALL, Clock, run_clock
from orchestrator.core.errors import UnknownTask
from orchestrator.core.model import QueueConfig, State
from orchestrator.queue.backend import Backend, Writes, database_location, open_backend
from orchestrator.queue.tasks import Task, event_dict, task_name


def clock_file(run: dict) -> str | None:
    """A run row's skip-clock file (None: the constant clock, or a database too old to say)."""
    return run.get("clock")


class QueueView:
    """The queue database (a `Backend`, `store`) and every read of it. Its writer is set up here
    too (it takes no lock and opens no file until `queue.Queue` writes through it).

    With no `clock`, it runs on the clock of the run in progress (else the wall clock), so every
    process of a run agrees on soak time.
    """

    def __init__(
        self,
        path: Path | str,  # a SQLite file, or a `postgresql://` URL
        clock: Clock | None = None,
        config: QueueConfig | None = None,
        *,
        rng: random.Random | None = None,
        create: bool = True,
    ):
        self.path = database_location(path)  # a SQLite file's Path, or a PostgreSQL URL
        self.config = config or QueueConfig()
        self.rng = rng or random.Random()
        self.store: Backend = open_backend(self.path, self.config, create=create)
        if clock is None:
            run = self.store.active_run()
            clock = WALL if run is None else run_clock(run["origin"], run["speed"], clock_file(run))
        self.use_clock(clock)

    def use_clock(self, clock: Clock) -> None:
        """Take durations (busy timeout, lock bound) through `clock` from now on."""
        self.clock = clock
        self.write: Writes = self.store.use_clock(clock)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reads --------------------------------------------------------------------------
    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: every read inside sees the database as its first read found it
        (writers go on meanwhile, and their commits are not seen until it ends). Inside a
        transaction already, that one is the snapshot."""
        with self.store.snapshot():
            yield

    def get(self, task: int) -> Task:
        row = self.store.task(task)
        if row is None:
            raise UnknownTask(f"no task {task_name(task)}")
        return Task.from_row(row)

    def history(self, task: int) -> list[dict]:
        self.get(task)
        return [event_dict(r) for r in self.store.task_events(task)]

    def events_after(self, seq: int, limit: int = 10_000) -> list[dict]:
        """The shipping cursor (`Backend.events_after`): events after `seq`, in `seq` order."""
        return self.store.events_after(seq, limit)

    def count_open(self) -> int:
        """Tasks PENDING or IN_PROGRESS."""
        return self.store.count_open()

    def blocked_since(self, before: float, limit: int = 100) -> list[dict]:
        """(id, budget) of BLOCKED tasks that have waited since `before` (soak time) or longer."""
        return self.store.blocked_since(before, limit)

    def busiest_workers(self) -> list[dict]:
        """(worker, n): workers holding leases now, most leases first."""
        return self.store.busiest_workers()

    def faults_since(self, first_seq: int) -> dict[str, int]:
        """`fault_injected` events by kind from `first_seq` on (a run's faults so far)."""
        return self.store.faults_by_kind(first_seq)

    def last_event_t(self) -> float | None:
        return self.store.last_event_t()

    def last_seq(self) -> int:
        return self.store.last_seq()

    def counts(self) -> dict[str, int]:
        """Tasks per state, every state named (zero included)."""
        counts = {s.value: 0 for s in State}
        counts.update(self.store.counts_by_state())
        return counts

    def status(self, recent: int = 10) -> dict:
        """Counts per state, oldest PENDING age, expired leases, in-flight per worker,
        errors by class, recent operator actions. Read-only, and one snapshot: every figure is
        of the same moment (the IN_PROGRESS count is the leases in flight, DONE the effects)."""
        with self.snapshot():
            return self._status(recent)

    def _status(self, recent: int) -> dict:
        store = self.store
        counts = self.counts()
        oldest = store.oldest_pending()
        flights = store.in_flight_by_worker()
        now = self.clock.now()  # after the reads: a row written meanwhile is not younger than now

        def age(since: float | None) -> float | None:
            return None if since is None else round(max(now - since, 0.0), 3)

        return {
            "counts": counts,
            "total": sum(counts.values()),
            "effects": store.count_effects(),
            "oldest_pending_age": age(oldest),
            "expired_leases": store.count_expired(now),
            "in_flight": [{"worker": r["worker"], "tasks": r["n"], "heartbeat_age": age(r["oldest_heartbeat"])}
                          for r in flights],
            "errors": [{"error": r["error"], "state": r["state"], "tasks": r["n"]}
                       for r in store.errors_by_class()],
            "recent_actions": [event_dict(r) for r in store.recent_operator_events(recent)],
            "last_seq": self.last_seq(),
        }
