"""The drill's machinery: its home, its run record (the soak clock every process shares), its
worker processes, a monitor that reaps, ships the event log and feeds the SLI aggregator, and
the operator actions it takes. `Harness.finish` stops what it started (by PID) and checks.

Test-only hook (never set it in a real run; a drill with any ORCH_TEST_UNSAFE_* set cannot pass):
  ORCH_TEST_UNSAFE_DRILL_HANDLER=module:function  every worker the drill starts runs this handler
No switch turns a guard off: a test that needs unfenced workers builds them through the API.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from orchestrator.core import profiles
from orchestrator.core.clock import Clock
from orchestrator.core.errors import DbLockError, OrchestratorError
from orchestrator.core.home import Home
from orchestrator.core.model import QueueConfig
from orchestrator.core.skipclock import await_stopped
from orchestrator.drills.base import Check, Drill, Evidence, Recovery
from orchestrator.judge.sli import Aggregator, LogTail
from orchestrator.queue.runs import RunStore
from orchestrator.queue.tasks import event_dict, task_name
from orchestrator.queue.writes import Queue
from orchestrator.soak.shipper import Shipper, header_line, write_header

UNSAFE_PREFIX = "ORCH_TEST_UNSAFE_"
HANDLER_HOOK = "ORCH_TEST_UNSAFE_DRILL_HANDLER"
DRILL_TTL = 60.0  # soak seconds: a lease outlives 3 missed heartbeats (every ttl/3)
REAP_EVERY = 5.0  # soak seconds between the harness's reaper passes


def unsafe_hooks() -> list[str]:
    return sorted(k for k in os.environ if k.startswith(UNSAFE_PREFIX))


def drill_profile(drill: Drill, duration: float) -> profiles.Profile:
    base = profiles.BUILTIN["24h"]
    retry = profiles.Retry(max_attempts=3)  # the drills enqueue with 3 attempts where it matters
    limits = {"min_volume": 10**9, **drill.abort}  # rule 1 off unless the drill wants it
    return dataclasses.replace(
        base, name=f"drill-{drill.name}", description=f"drill {drill.name}: {drill.causes}",
        duration=duration, lease_ttl=DRILL_TTL, faults=profiles.Faults(), retry=retry,
        abort=dataclasses.replace(profiles.Abort(), **limits), oncall=profiles.Oncall(replan_after=0.0),
    )


class Monitor(threading.Thread):
    """Plays the supervisor's background jobs for a drill: reaper, shipper, abort evaluation."""

    def __init__(self, h: Harness):
        super().__init__(name="drill-monitor", daemon=True)
        self.h = h
        self.stop = threading.Event()
        self.reaping = True
        self.shipping = True
        self.queue = Queue(h.home.db, h.clock, h.config)
        self.shipper = Shipper(self.queue, h.run)
        self.tail = LogTail(h.log_path)
        self.agg: Aggregator | None = None
        self.aborts: list = []
        self.lock = threading.Lock()
        self.ticking = threading.Lock()
        self.last_reap = float("-inf")
        self.error: str | None = None

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.tick()

    def tick(self, final: bool = False) -> None:
        with self.ticking:  # the drill's thread ships too (`finish_log`): one shipper at a time
            self._tick(final)

    def _tick(self, final: bool) -> None:
        try:
            now = self.h.clock.now()
            if self.reaping and now - self.last_reap >= REAP_EVERY and not final:
                self.last_reap = now
                self.queue.reap()
            if self.shipping or final:
                with open(self.h.log_path, "ab") as fh:
                    while self.shipper.ship_once(fh):
                        pass
            events = self.tail.read()
            with self.lock:
                for event in events:
                    if self.agg is None:
                        self.agg = Aggregator(event)
                    else:
                        self.agg.feed(event)
                if self.agg is not None and not final:
                    self.aborts.extend(self.agg.check(self.h.now_t(), self.queue.last_seq()))
        except DbLockError:
            pass  # the write lock is held (a drill's own lock storm): the next tick tries again
        except OrchestratorError as exc:  # a corrupt or broken log: reported as a failed invariant
            self.error = self.error or f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        self.stop.set()
        if self.is_alive():
            self.join(10)
        self.tick(final=True)
        self.queue.close()


class Harness:
    def __init__(self, drill: Drill, home: Home, folder: Path, seed: int, run_id: str, own_run: bool = True):
        self.drill = drill
        self.home = Home(home.root.absolute()).ensure()
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.prefix = f"drill-{run_id}-{drill.name}"
        self.checks: list[Check] = []
        self.recoveries: list[Recovery] = []
        self.actions: list[dict] = []  # operator actions the drill took (each must be in the log)
        self.tasks: list[int] = []
        self.procs: list[subprocess.Popen] = []
        self.log_path = folder / "events.jsonl"
        self.expected_aborts: set[int] = set()
        self.soak_aborts: list = []  # aborts of a soak the drill ran (soak drills)
        self.config = QueueConfig(lease_ttl=DRILL_TTL)
        self.handler_hook = os.environ.get(HANDLER_HOOK)
        self.unsafe = unsafe_hooks()
        self.expect_settled = True
        self.run = None
        self.monitor = None
        if not own_run:  # the drill runs a soak of its own, whose supervisor keeps the clock
            self.queue = Queue(self.home.db, config=self.config)
            self.clock = self.queue.clock
            self.first_seq = self.queue.last_seq() + 1
            return
        with Queue(self.home.db) as probe:
            store = RunStore(probe)
            self.run = store.create(self.prefix, drill_profile(drill, 3600.0).to_dict(), seed, drill.speed,
                                    time.time(), self.log_path, None)
            if self.run.status != "running":  # a run is created `starting`; its clock runs from here
                self.run = store.go(self.run.id, time.time())
        self.clock = Clock(self.run.origin, self.run.speed)
        self.first_seq = self.run.first_seq
        write_header(self.log_path, header_line(self.run, {"arrivals": 0, "faults": {}, "bursts": []}, 0))
        self.queue = Queue(self.home.db, self.clock, self.config)
        self.monitor = Monitor(self)
        self.monitor.start()

    # --- time --------------------------------------------------------------------------
    def now_t(self) -> float:
        return self.clock.now() - (self.run.started_soak if self.run else 0.0)

    def wall(self, soak_seconds: float) -> float:
        return self.clock.to_wall(soak_seconds)

    def wait(self, predicate: Callable[[], Any], soak_seconds: float, floor_wall: float = 3.0) -> Any:
        """Poll `predicate` until truthy (returned) or the deadline (falsy returned)."""
        deadline = time.monotonic() + max(self.wall(soak_seconds), floor_wall)
        pause = threading.Event()
        while True:
            try:
                value = predicate()
            except DbLockError:
                value = None
            if value or time.monotonic() >= deadline:
                return value
            pause.wait(0.01)

    # --- tasks -------------------------------------------------------------------------
    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def enqueue(self, name: str, payload: Any = None, **options: Any) -> int:
        result = self.queue.enqueue(self.key(name), payload if payload is not None else {}, **options)
        if result.task not in self.tasks:
            self.tasks.append(result.task)
        return result.task

    def enqueue_many(self, items: list[tuple[str, Any]], **options: Any) -> list[int]:
        out = self.queue.enqueue_many([(self.key(n), p) for n, p in items], **options)
        ids = [r.task for r in out]
        self.tasks.extend(i for i in ids if i not in self.tasks)
        return ids

    def state(self, task: int) -> str:
        return self.queue.get(task).state.value

    def states(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for task in self.tasks:
            s = self.state(task)
            out[s] = out.get(s, 0) + 1
        return out

    def settled(self) -> bool:
        """No task of the drill is PENDING or IN_PROGRESS."""
        return all(self.state(t) not in ("PENDING", "IN_PROGRESS") for t in self.tasks)

    def history(self, task: int) -> list[dict]:
        return self.queue.history(task)

    def events(self, name: str | None = None, task: int | None = None) -> list[dict]:
        """The drill's events from the database (seq order), optionally one name / one task."""
        out, last = [], self.first_seq - 1
        while True:
            rows = self.queue.events_after(last, 5000)
            if not rows:
                return out
            last = rows[-1]["seq"]
            for r in rows:
                if (name is None or r["event"] == name) and (task is None or r["task"] == task):
                    out.append(event_dict(r))

    def operate(self, action: str, task: int, notes: str | None = None, budget: float | None = None,
                actor: str = "drill-oncall") -> None:
        self.queue.operate(action, task, actor=actor, notes=notes, budget=budget)
        self.actions.append({"action": action, "task": task_name(task), "actor": actor, "notes": notes})

    # --- processes ---------------------------------------------------------------------
    def orch(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "orchestrator", *args]

    def spawn(self, argv: list[str], name: str, env: dict | None = None) -> subprocess.Popen:
        out = open(self.folder / f"{name}.out", "ab")
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env)
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def worker(self, name: str, handler: str, *extra: str, ttl: float = DRILL_TTL) -> subprocess.Popen:
        spec = self.handler_hook or handler
        return self.spawn(self.orch("worker", "--home", str(self.home.root), "--name", name, "--handler", spec,
                                    "--ttl", repr(ttl), "--poll", "0.5", "--no-reap", *extra), name)

    def leased_by(self, worker: str, task: int | None = None) -> dict | None:
        for ev in self.events("leased", task):
            if ev["worker"] == worker:
                return ev
        return None

    def signal(self, proc: subprocess.Popen, sig: signal.Signals) -> bool:
        try:
            os.kill(proc.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def stop_outside_a_write(self, proc: subprocess.Popen, tries: int = 50) -> bool:
        """SIGSTOP `proc`, but never while it holds the write lock (every writer would wait on
        it, which is the db-lock drill's business, not a stall's)."""
        for _ in range(tries):
            self.signal(proc, signal.SIGSTOP)
            await_stopped(proc.pid, 2.0)  # the lock is looked at once it can no longer change hands
            if self.write_lock_free():
                return True
            self.signal(proc, signal.SIGCONT)
        return False

    def write_lock_free(self) -> bool:
        """True when nobody holds the writers' kernel lock nor SQLite's write lock."""
        writers = self.home.db.with_name(self.home.db.name + "-writers")
        fd = os.open(writers, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)  # also drops the flock
        try:
            self.queue.write.try_once(lambda tx: None)  # take the write lock with the busy timeout only
            return True
        except DbLockError:
            return False

    def db_digest(self) -> str:
        """A digest of every row of the database: equal digests, nothing written."""
        digest = hashlib.sha256()
        digest.update(orjson.dumps(self.queue.store.dump(), option=orjson.OPT_SORT_KEYS))
        return digest.hexdigest()

    def figures(self) -> dict:
        """The SLI aggregator's figures over the drill's log so far (call `finish_log` first)."""
        with self.monitor.lock:
            return self.monitor.agg.figures()

    def finish_log(self) -> None:
        """Ship every event written so far to the log (a check reads the log next)."""
        self.monitor.tick()

    def stop_procs(self, wall_timeout: float = 5.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.signal(proc, signal.SIGCONT)
                self.signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + wall_timeout
        for proc in self.procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                self.signal(proc, signal.SIGKILL)
                proc.wait()

    # --- results -----------------------------------------------------------------------
    def check(self, scenario: str, done: str, expected: str, observed: str, passed: bool,
              tasks: tuple | list = (), seqs: tuple | list = (), note: str = "") -> bool:
        ev = Evidence(tuple(t if isinstance(t, str) else task_name(t) for t in tasks), tuple(seqs), note)
        self.checks.append(Check(scenario, done, expected, observed, bool(passed), ev))
        return bool(passed)

    def recovery(self, what: str, soak_seconds: float | None) -> None:
        self.recoveries.append(Recovery(what, None if soak_seconds is None else round(soak_seconds, 1)))

    def log_events(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_bytes().splitlines()
        return [orjson.loads(x) for x in lines[1:]]

    def db_events(self) -> list[dict]:
        return self.events()

    def finish(self) -> None:
        """Stop the processes, ship the rest of the log, end the run record."""
        self.stop_procs()
        if self.monitor is not None:
            self.monitor.close()
        if self.run is not None:
            try:
                RunStore(self.queue).end(self.run.id, "finished", None)
            except OrchestratorError:
                pass

    @property
    def queue_ro(self) -> Queue:
        return self.queue

    def close(self) -> None:
        self.queue.close()

    def abort_rules(self) -> list:
        if self.monitor is None:
            return list(self.soak_aborts)
        with self.monitor.lock:
            return list(self.monitor.aborts)
