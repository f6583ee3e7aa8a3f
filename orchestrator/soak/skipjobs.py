"""The supervisor's jobs on the skip clock (docs/soak.md, "The skip clock").

APScheduler 3's schedulers read the wall clock themselves, so on the skip clock the same job
functions run from this loop instead: one participant thread that waits on the soak clock until
the earliest job is due (which lets the clock jump there), runs every due job in turn, and
schedules each again. Periodic jobs keep their times on APScheduler's `IntervalTrigger` (on the
soak axis, coalesced: a job due several times runs once); the arrivals and the worker faults
name their own next time (the next planned arrival, the next crash or stall). The reaper has no
timer: the clock wakes the loop when a lease has expired (the `REAP` wait), so a lease that
heartbeats keep moving costs no wake-up at its old end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from apscheduler.triggers.interval import IntervalTrigger

from orchestrator.core.skipclock import INF, REAP, TIMER

log = logging.getLogger("orchestrator.soak.skipjobs")
RETRY_AFTER = 1.0  # soak seconds: a job (or its schedule) that raised runs again this much later
EPSILON = 1e-6  # soak seconds: "strictly after now" on the trigger's grid (microseconds)


def _dt(soak_t: float) -> datetime:
    return datetime.fromtimestamp(soak_t, timezone.utc)


@dataclass
class Job:
    name: str
    fn: Callable[[], None]
    after: Callable[[float], float]  # soak now -> the next soak time the job is due
    next_t: float = 0.0
    on_expiry: bool = False  # also due whenever the clock wakes the loop for an expired lease


def never(_now: float) -> float:
    """No timer (a job due only `on_expiry`)."""
    return INF


def every(period: float, start: float) -> Callable[[float], float]:
    """Due every `period` soak seconds after `start`, on APScheduler's interval trigger."""
    trigger = IntervalTrigger(seconds=period, start_date=_dt(start + period), timezone=timezone.utc)

    def after(now: float) -> float:
        return trigger.get_next_fire_time(None, _dt(now) + timedelta(seconds=EPSILON)).timestamp()
    return after


class SkipJobs(threading.Thread):
    """Runs `jobs` on the soak clock until `stopping` is set; `done()` is asked after each round
    (the run has drained: stop now, before the clock jumps past the end)."""

    def __init__(self, clock, jobs: list[Job], stopping: threading.Event, done: Callable[[], bool]):
        super().__init__(name="skip-jobs", daemon=True)
        self.clock = clock
        self.jobs = jobs
        self.stopping = stopping
        self.done = done
        self.slot_ready = threading.Event()
        self.reaps = any(job.on_expiry for job in jobs)

    def start(self) -> None:
        super().start()
        self.slot_ready.wait(5.0)  # the thread is a participant before the run goes on

    def run(self) -> None:
        clock = self.clock
        with clock.participant():
            self.slot_ready.set()
            now = clock.now()
            for job in self.jobs:
                job.next_t = now  # every job once at the start, as APScheduler's first ticks
            while not self.stopping.is_set():
                for job in self.jobs:
                    if job.next_t <= clock.now() and not self.stopping.is_set():
                        try:
                            job.fn()
                            after = job.after(clock.now())
                        except Exception:  # said, and tried again a soak second on (APScheduler too goes on)
                            log.exception("skip-clock job %s failed", job.name)
                            after = clock.now() + RETRY_AFTER
                        job.next_t = max(after, clock.now() + EPSILON)
                if self.done():
                    return
                due = min(job.next_t for job in self.jobs)
                left = due - clock.now()
                if left > 0:
                    clock.wait(self.stopping, left, REAP if self.reaps else TIMER)
                    if clock.now() < due:  # woken before any timer: a lease expired
                        for job in self.jobs:
                            if job.on_expiry:
                                job.next_t = clock.now()

    def shutdown(self, wait: bool = True) -> None:
        self.stopping.set()
        if wait and self.is_alive():
            self.join()
