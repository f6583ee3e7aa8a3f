"""A worker process: lease -> run the handler -> complete / fail / block, with heartbeats.

Signal handlers only set a flag; the loop notices, finishes (or releases) its tasks and exits.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .clock import Clock
from .errors import DbLockError, OrchestratorError
from .faults import lock_requester
from .handlers import LeaseLost, Stopping, TaskContext, load_handler, payload_of
from .model import GuardrailExceeded, QueueConfig, classify, describe
from .queue import Lease, Queue
from .sqlfile import q


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


class Heartbeats(threading.Thread):
    """Extends the lease of the running task every ttl/3; flags it lost when refused."""

    def __init__(self, queue: Queue, worker: str, stop: threading.Event):
        super().__init__(name="heartbeats", daemon=True)
        self.queue = queue
        self.worker = worker
        self.stop = stop
        self.lock = threading.Lock()
        self.current: tuple[Lease, TaskContext, float] | None = None
        self.period = max(queue.clock.to_wall(queue.config.lease_ttl / 3), 0.001)

    def watch(self, lease: Lease | None, ctx: TaskContext | None = None) -> None:
        with self.lock:
            self.current = None if lease is None else (lease, ctx, self.queue.clock.now())

    def run(self) -> None:
        while not self.stop.wait(self.period):
            with self.lock:
                current = self.current
            if current is None:
                continue
            lease, ctx, since = current
            if self.queue.clock.now() - since < self.queue.config.lease_ttl / 3:
                continue
            try:
                alive = self.queue.heartbeat(lease.task, lease.epoch, self.worker)
            except OrchestratorError:
                continue  # a locked database: try again next period; the lease may expire
            with self.lock:
                if self.current is current:
                    self.current = (lease, ctx, self.queue.clock.now())
            if not alive:
                ctx.lost.set()


class Worker:
    def __init__(self, queue: Queue, config: WorkerConfig, handler: Callable[[TaskContext], Any] | None = None,
                 heartbeat_queue: Queue | None = None):
        self.queue = queue
        self.config = config
        self.handler = handler or load_handler(config.handler)
        self.stopping = threading.Event()
        self.finished = threading.Event()
        self.heartbeats = Heartbeats(heartbeat_queue or queue, config.name, self.finished)
        self.done = 0
        self.lock_failures = 0

    def install_signals(self) -> None:
        def on_signal(signum, _frame):
            self.stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def run(self) -> int:
        cfg, queue, clock = self.config, self.queue, self.queue.clock
        queue.record("worker_started", worker=cfg.name, data={"pid": os.getpid(), "handler": cfg.handler})
        self.heartbeats.start()
        idle_since = clock.now()
        last_reap = float("-inf")
        pause = max(clock.to_wall(cfg.poll), cfg.poll_wall_floor)
        reason = "stopped"
        leases: list[Lease] = []
        try:
            while not self.stopping.is_set():
                now = clock.now()
                if cfg.reap_every is not None and now - last_reap >= cfg.reap_every:
                    last_reap = now
                    try:
                        queue.reap()
                    except DbLockError:
                        self.lock_failures += 1
                if not leases:
                    leases = self._lease() if queue.has_due() else []
                if not leases:
                    if cfg.idle_exit is not None and clock.now() - idle_since >= cfg.idle_exit:
                        reason = "idle"
                        break
                    self.stopping.wait(pause)
                    continue
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
                queue.release(rest.task, rest.epoch, cfg.name)
        finally:
            self.finished.set()
            queue.record("worker_exited", worker=cfg.name, data={"pid": os.getpid(), "reason": reason,
                                                                 "tasks": self.done})
        return 0

    def _lease(self) -> list[Lease]:
        try:
            return self.queue.lease(self.config.name, self.config.batch)
        except DbLockError:
            return []

    def _context(self, lease: Lease) -> TaskContext:
        return TaskContext(
            task=lease.name, key=lease.key, payload=payload_of(lease.payload), attempt=lease.attempt,
            epoch=lease.epoch, budget=lease.budget, clock=self.queue.clock,
            probe_write=self._probe_write,
            request_lock=None if self.config.lock_socket is None else
            lock_requester(Path(self.config.lock_socket), self.queue.clock, lease.name),
        )

    def _probe_write(self) -> None:
        """One write with SQLite's busy timeout only, no retries (how db_lock faults surface)."""
        self.queue.write.try_once(lambda conn: conn.execute(q("last_seq")).fetchone())

    def _run_one(self, lease: Lease, more: int) -> list[Lease]:
        """Run one leased task and report it; a success also leases up to `more` next tasks in
        the same transaction. Returns those leases."""
        queue, name = self.queue, self.config.name
        self.done += 1
        if lease.has_effect:  # second line of defence: the effect exists, do not run the handler
            return queue.complete_and_lease(lease.task, lease.epoch, name, limit=more)[1]
        ctx = self._context(lease)
        self.heartbeats.watch(lease, ctx)
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
        finally:
            self.heartbeats.watch(None)
        if self.stopping.is_set():
            more = 0
        return queue.complete_and_lease(lease.task, lease.epoch, name, result, limit=more,
                                        spend=ctx.spent if ctx.budget is not None else None)[1]


def run_worker(home_db, clock: Clock, queue_config: QueueConfig, config: WorkerConfig) -> int:
    """Entry point of `orch worker`: open two connections (work, heartbeats) and loop."""
    queue = Queue(home_db, clock, queue_config)
    beats = Queue(home_db, clock, queue_config)
    worker = Worker(queue, config, heartbeat_queue=beats)
    worker.install_signals()
    try:
        return worker.run()
    finally:
        queue.close()
        beats.close()
