"""A worker process: lease -> run the handler -> complete / fail / block, with heartbeats.

Signal handlers only set a flag; the loop notices, finishes (or releases) its tasks and exits.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.clock import Clock
from orchestrator.core.errors import DbLockError, OrchestratorError
from orchestrator.core.heap import keep_freed_memory
from orchestrator.core.home import no_password
from orchestrator.core.model import GuardrailExceeded, QueueConfig, classify, describe
from orchestrator.core.skipclock import WORK
from orchestrator.faults.client import lock_requester
from orchestrator.handlers.context import LeaseLost, Stopping, TaskContext, load_handler, payload_of
from orchestrator.handlers.ledger import open_ledger
from orchestrator.queue.probe import install
from orchestrator.queue.runs import RunStore
from orchestrator.queue.tasks import Lease, SideEffect
from orchestrator.queue.writes import Queue

RUN_LOOK_WALL = 1.0  # wall seconds between an idle joined worker's looks at its run's status


@dataclass(frozen=True)
class WorkerConfig:
    name: str
    handler: str = "orchestrator.handlers:synthetic"
    batch: int = 1
    poll: float = 0.5  # soak seconds between looks when idle
    poll_wall_floor: float = 0.001
    reap_every: float | None = None  # soak seconds; None: someone else reaps
    idle_exit: float | None = None  # exit after this many idle soak seconds (demos, tests)
    max_tasks: int | None = None
    lock_socket: str | None = None  # the chaos agent's socket (db_lock faults)
    run: str | None = None  # the soak run it joined (`orch worker --run`, or one in progress): it exits
    # when that run is over (a run's own workers are stopped by their supervisor; one from another
    # host is not its child)
    workdir: str | None = None  # the run's folder: the synthetic downstream's ledger.db lives here (a
    # queue on a PostgreSQL server keeps its ledger on the server: `handlers.ledger.open_ledger`)


class Heartbeats(threading.Thread):
    """Extends every lease the worker holds (the running task and any leased in a batch) once
    it is ttl/3 old; a refused heartbeat sets that lease's `lost` event."""

    def __init__(self, queue: Queue, worker: str, stop: threading.Event):
        super().__init__(name="heartbeats", daemon=True)
        self.queue = queue
        self.worker = worker
        self.stop = stop
        self.lock = threading.Lock()
        self.held: dict[tuple[int, int], tuple[Lease, threading.Event, float]] = {}  # by (task, epoch)
        self.period = max(queue.clock.to_wall(queue.config.lease_ttl / 3), 0.001)
        self.changed = threading.Event()  # the skip clock: a lease taken, beat for it
        self.slot: int | None = None  # the skip clock: this thread's participant slot

    def hold(self, lease: Lease, lost: threading.Event) -> None:
        """Start beating for `lease` (leased just now)."""
        clock = self.queue.clock
        with self.lock:
            self.held[lease.task, lease.epoch] = (lease, lost, clock.now())
        if clock.skips:  # beat in ttl/3: bring the thread's wait forward, or have it look again
            slot = self.slot
            if slot is None or not clock.retime(slot, clock.now() + self.queue.config.lease_ttl / 3,
                                                sooner_only=True):
                clock.set(self.changed)

    def drop(self, lease: Lease) -> None:
        clock = self.queue.clock
        with self.lock:
            self.held.pop((lease.task, lease.epoch), None)
            beats = [at for _, _, at in self.held.values()]
        if clock.skips and self.slot is not None:  # no beat for a lease let go: no jump to it either
            clock.retime(self.slot, min(beats) + self.queue.config.lease_ttl / 3 if beats else math.inf)

    def run(self) -> None:
        clock = self.queue.clock
        if not clock.skips:
            while not self.stop.wait(self.period):
                self._beat()
            return
        try:
            self._beat_on_skip_clock(clock)
        finally:
            self.slot = None  # a freed slot may be another thread's soon: retime it no more

    def _beat_on_skip_clock(self, clock) -> None:
        with clock.participant() as self.slot:  # wait for the next beat due, or a new lease
            while not self.stop.is_set():
                self.changed.clear()
                with self.lock:
                    beats = [at for _, _, at in self.held.values()]
                third = self.queue.config.lease_ttl / 3
                wait = None if not beats else min(beats) + third - clock.now()
                if wait is None or wait > 0:
                    clock.wait(self.changed, wait)  # the worker's end sets `changed` too
                if self.stop.is_set():
                    return
                self._beat()

    def _beat(self) -> None:
        third = self.queue.config.lease_ttl / 3
        with self.lock:
            due = [v for v in self.held.values() if self.queue.clock.now() - v[2] >= third]
        for lease, lost, _ in due:
            try:
                alive = self.queue.heartbeat(lease.task, lease.epoch, self.worker)
            except OrchestratorError:
                continue  # a locked database: try again next period; the lease may expire
            with self.lock:
                if (lease.task, lease.epoch) in self.held:
                    self.held[lease.task, lease.epoch] = (lease, lost, self.queue.clock.now())
            if not alive:
                self.queue.clock.set(lost)


class Worker:
    def __init__(self, queue: Queue, config: WorkerConfig, handler: Callable[[TaskContext], Any] | None = None,
                 heartbeat_queue: Queue | None = None):
        self.queue = queue
        self.config = config
        self.handler = handler or load_handler(config.handler)
        self.stopping = threading.Event()
        self.work_hint = threading.Event()  # set by a stop signal or a database's notification: look now
        self.finished = threading.Event()
        self.heartbeats = Heartbeats(heartbeat_queue or queue, config.name, self.finished)
        self.done = 0
        self.lock_failures = 0
        # per held lease (task, epoch: a stale report may lease its own task again, at a new epoch,
        # before the old lease is let go): set when it was revoked
        self.lost: dict[tuple[int, int], threading.Event] = {}
        self.ledger = open_ledger(queue.path, config.workdir) if config.workdir else None
        self._run_looked = -math.inf  # monotonic time of the last look at the joined run's status
        self.effects: dict[int, list[SideEffect]] = {}  # per running task: side effects not yet recorded
        self._report_looked: float | None = None  # skip clock: when the last report's lease found nothing

    def install_signals(self) -> None:
        def on_signal(signum, _frame):
            self.stopping.set()
            self.work_hint.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def _say(self, text: str) -> None:
        """What the worker is doing, on stderr (a person running `orch worker` sees it)."""
        print(f"{self.config.name}: {text}", file=sys.stderr, flush=True)

    def _record(self, event: str, **data: Any) -> None:
        """A worker's own event; a database locked past the bound does not stop the worker."""
        try:
            self.queue.record(event, worker=self.config.name, data={"pid": os.getpid(), **data})
        except DbLockError:
            self.lock_failures += 1

    def _held(self, leases: list[Lease]) -> list[Lease]:
        """Start heartbeats for leases just taken (batched ones wait their turn under them)."""
        for lease in leases:
            self.lost[lease.task, lease.epoch] = lost = threading.Event()
            self.heartbeats.hold(lease, lost)
        return leases

    def _let_go(self, lease: Lease) -> None:
        self.heartbeats.drop(lease)
        self.lost.pop((lease.task, lease.epoch), None)

    def run(self) -> int:
        cfg, queue, clock = self.config, self.queue, self.queue.clock
        if clock.skips:
            clock.enter()  # a participant of the skip clock until it exits (left in `finally`)
        self._record("worker_started", handler=cfg.handler, fencing=queue.config.fencing)
        self.heartbeats.start()
        # On the constant clock a database that notifies (PostgreSQL) wakes an idle worker as soon as
        # a commit makes tasks due, on any host; the look every poll stays as the fallback.
        try:
            unlisten = None if clock.skips else queue.store.listen(self.work_hint.set)
        except OrchestratorError as exc:
            unlisten = None
            self._say(f"not listening for work ({exc}): a look every {cfg.poll:g} soak s")
        idle_since = clock.now()
        last_reap = float("-inf")
        pause = max(clock.to_wall(cfg.poll), cfg.poll_wall_floor)
        reason = "stopped"
        leases: list[Lease] = []
        woken = False  # the skip clock woke this idle worker (for a task due, most often)
        waiting = False  # said once per idle spell, on stderr
        self._say(f"leasing from {no_password(str(queue.path))} with handler {cfg.handler}, "
                  f"lease TTL {queue.config.lease_ttl:g} soak s")
        try:
            while not self.stopping.is_set():
                now = clock.now()
                if cfg.reap_every is not None and now - last_reap >= cfg.reap_every:
                    last_reap = now
                    try:
                        queue.reap()
                    except DbLockError:
                        self.lock_failures += 1
                looked = clock.now()
                if not leases:
                    if self._report_looked is not None:
                        # the last report's transaction looked for a due task and found none: no
                        # second look (on the skip clock, a task due since then wakes this worker)
                        looked, self._report_looked = self._report_looked, None
                    elif woken or queue.has_due():  # woken by the skip clock: a task is due, lease it
                        leases = self._lease()
                    woken = False
                if not leases:
                    if self._run_over():
                        reason = "run_over"
                        self._say(f"soak run {cfg.run} is over: exiting")
                        break
                    if cfg.idle_exit is not None and clock.now() - idle_since >= cfg.idle_exit:
                        reason = "idle"
                        self._say(f"no task due for {cfg.idle_exit:g} soak s: exiting (--idle-exit)")
                        break
                    if not waiting:
                        waiting = True
                        until = "" if cfg.idle_exit is None else f", exiting after {cfg.idle_exit:g} idle soak s"
                        look = "woken by the skip clock" if clock.skips else f"a look every {cfg.poll:g} soak s"
                        self._say(f"no task due: waiting ({look}{until})")
                    if clock.skips:  # woken by an enqueue, a task falling due, or a signal's look
                        left = None if cfg.idle_exit is None else cfg.idle_exit - (clock.now() - idle_since)
                        if cfg.run is not None and clock.frozen:
                            # the run winds down: no jump wakes this worker again, so it looks at
                            # the run's status every RUN_LOOK_WALL (the run's own workers are stopped)
                            left = min(left if left is not None else math.inf, clock.to_soak(RUN_LOOK_WALL))
                        clock.wait(self.stopping, left, WORK, seen=looked)
                        woken = True
                    else:  # a look every poll, sooner on a stop signal or the database's word
                        self.work_hint.wait(pause)
                        self.work_hint.clear()
                    continue
                waiting = False
                lease = leases.pop(0)
                more = not leases and (cfg.max_tasks is None or self.done + 1 < cfg.max_tasks)
                try:
                    leases.extend(self._run_one(lease, cfg.batch if more else 0))
                except DbLockError as exc:
                    # The report could not get the write lock within the bound: the lease will
                    # expire and the reaper returns the task; the worker itself goes on.
                    self.lock_failures += 1
                    print(f"{cfg.name}: {lease.name}: report not written: {exc}", file=sys.stderr, flush=True)
                idle_since = clock.now()
                if cfg.max_tasks is not None and self.done >= cfg.max_tasks:
                    reason = "max_tasks"
                    break
            for rest in leases:
                self._let_go(rest)
                try:
                    queue.release(rest.task, rest.epoch, cfg.name)
                except DbLockError:
                    self.lock_failures += 1  # not released: its lease expires and the reaper returns it
        finally:
            if unlisten is not None:
                unlisten()
            self.finished.set()
            clock.set(self.heartbeats.changed)
            self._record("worker_exited", reason=reason, tasks=self.done)
            self._say(f"exited ({reason}) after {self.done} tasks")
            if clock.skips:
                clock.leave()
        return 0

    def _run_over(self) -> bool:
        """Whether the run this worker joined is over: looked up at most once a wall second, when
        idle (a lease in hand is finished first)."""
        if self.config.run is None or time.monotonic() < self._run_looked + RUN_LOOK_WALL:
            return False
        self._run_looked = time.monotonic()
        try:
            return RunStore(self.queue).get(self.config.run).status not in ("starting", "running")
        except OrchestratorError:
            return False  # the database cannot say now: look again later

    def _lease(self) -> list[Lease]:
        try:
            return self._held(self.queue.lease(self.config.name, self.config.batch))
        except DbLockError:
            return []

    def _context(self, lease: Lease) -> TaskContext:
        return TaskContext(
            task=lease.name, key=lease.key, payload=payload_of(lease.payload), attempt=lease.attempt,
            epoch=lease.epoch, budget=lease.budget, clock=self.queue.clock, lost=self.lost[lease.task, lease.epoch],
            probe_write=self._probe_write,
            request_lock=None if self.config.lock_socket is None else
            lock_requester(Path(self.config.lock_socket), self.queue.clock, lease.name),
            worker=self.config.name, ledger=self.ledger,
            on_side_effect=lambda applied, downstream, detail: self._side_effect(lease, applied, downstream, detail),
        )

    def _side_effect(self, lease: Lease, applied: bool, downstream: str, detail: str) -> None:
        """What a handler says its side effect did: kept for the attempt's report, whose
        transaction records it (`side_effect_applied` / `_deduped`, fenced or not), so reporting a
        side effect costs no write of its own; an attempt that ends without a completion records
        it on its own (`_flush_effects`)."""
        data = {"downstream": downstream or None, "detail": detail[:500] or None}
        self.effects.setdefault(lease.task, []).append(
            SideEffect(applied, lease.key, lease.attempt, {k: v for k, v in data.items() if v is not None}))

    def _flush_effects(self, lease: Lease) -> None:
        """Record the side effects of an attempt that ended without a completion (it failed, lost
        its lease, was released): the side effect happened; its record must not be lost."""
        for effect in self.effects.pop(lease.task, []):
            try:
                self.queue.record(effect.event, task=lease.task, key=effect.key, epoch=lease.epoch,
                                  attempt=effect.attempt, worker=self.config.name, data=effect.data)
            except DbLockError as exc:  # the side effect happened; only its record is missing
                self.lock_failures += 1
                print(f"{self.config.name}: {lease.name}: side effect not recorded: {exc}", file=sys.stderr,
                      flush=True)

    def _probe_write(self) -> None:
        """One write with SQLite's busy timeout only, no retries (how db_lock faults surface)."""
        self.queue.write.try_once(lambda tx: tx.last_seq())

    def _run_one(self, lease: Lease, more: int) -> list[Lease]:
        """Run one leased task and report it; a success also leases up to `more` next tasks in
        the same transaction. Returns those leases."""
        try:
            return self._held(self._run_and_report(lease, more))
        finally:
            if lease.task in self.effects:
                self._flush_effects(lease)
            self._let_go(lease)

    def _run_and_report(self, lease: Lease, more: int) -> list[Lease]:
        queue, name = self.queue, self.config.name
        self._report_looked = None
        self.done += 1
        if self.lost[lease.task, lease.epoch].is_set():
            return []  # revoked while it waited in a batch (its refused heartbeat is recorded)
        if lease.has_effect:  # second line of defence: the effect exists, do not run the handler
            return queue.complete_and_lease(lease.task, lease.epoch, name, limit=more)[1]
        ctx = self._context(lease)
        try:
            result = self.handler(ctx)
        except LeaseLost:
            return []  # the refused heartbeat was recorded as stale_rejected; nothing more to say
        except Stopping:
            queue.release(lease.task, lease.epoch, name)
            return []
        except GuardrailExceeded as exc:
            queue.block(lease.task, lease.epoch, name, exc.spend, exc.budget, getattr(exc, "injected", None))
            return []
        except Exception as exc:  # every handler failure is classified and reported, never lost
            queue.fail(lease.task, lease.epoch, name, classify(exc), describe(exc), getattr(exc, "injected", None))
            return []
        if self.stopping.is_set():
            more = 0
        looked = queue.clock.now() if more and queue.clock.skips else None  # the report leases what is due by then
        leases = queue.complete_and_lease(lease.task, lease.epoch, name, result, limit=more,
                                          spend=ctx.spent if ctx.budget is not None else None,
                                          side_effects=self.effects.get(lease.task, ()))[1]
        if not leases:
            self._report_looked = looked
        self.effects.pop(lease.task, None)  # recorded; had the report failed, `_run_one` records them alone
        return leases


def run_worker(home_db, clock: Clock, queue_config: QueueConfig, config: WorkerConfig) -> int:
    """Entry point of `orch worker`: open two connections (work, heartbeats) and loop."""
    keep_freed_memory()
    install(clock, home_db)
    queue = Queue(home_db, clock, queue_config)
    beats = Queue(home_db, clock, queue_config)
    worker = Worker(queue, config, heartbeat_queue=beats)
    worker.install_signals()
    try:
        return worker.run()
    finally:
        queue.close()
        beats.close()
        if worker.ledger is not None:
            worker.ledger.close()
