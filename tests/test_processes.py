"""Integration: real OS processes on one database.

- `orch worker` processes drain ~2000 tasks while some are SIGKILLed (and replaced) and one is
  paused with SIGSTOP past its lease TTL: every task ends terminal, no key has two effects, and the
  paused worker's late completion is refused (`stale_rejected` with its name). On every backend
  (`--db postgresql://…` for the workers on PostgreSQL), read through the storage interface.
- Ten processes enqueue one key at the same moment: one task, nine `duplicate_enqueue` (on every
  backend, through the storage interface).
- A second process holds the write lock: work waits and retries, then continues; past the lock
  bound `DbLockError` is raised and nothing is written.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from test_queue_concurrency import release, write_past

from orchestrator.core.clock import WALL
from orchestrator.core.errors import DbLockError, KeyConflict
from orchestrator.core.model import QueueConfig
from orchestrator.queue.tasks import event_dict
from orchestrator.queue.writes import Queue

TESTS_DIR = Path(__file__).resolve().parent
TASKS = 2000
KILLS_AT = (300, 700, 1100, 1500)  # DONE counts at which a worker is SIGKILLed and replaced


class Look:
    """Read-only looks at the queue from the test process, through the storage interface (any
    backend): the events seen so far are kept, read on from the last `seq` (the shipping cursor)."""

    def __init__(self, location):
        self.queue = Queue(location, WALL, create=False)
        self.store = self.queue.store
        self.events: list[dict] = []

    def new_events(self) -> list[dict]:
        rows = [event_dict(r) for r in self.store.events_after(self.events[-1]["seq"] if self.events else 0, 100_000)]
        self.events += rows
        return self.events

    def has_event(self, event: str, **fields) -> dict | None:
        return next((e for e in self.new_events() if e["event"] == event
                     and all(e.get(k) == v for k, v in fields.items())), None)

    def count(self, state: str) -> int:
        return self.store.counts_by_state().get(state, 0)

    def close(self) -> None:
        self.queue.close()


def write_lock_is_free(db: Path) -> bool:
    """True when nobody holds SQLite's write lock, nor the writers' kernel lock beside the
    database if the queue uses one."""
    writers = db.with_name(db.name + "-writers")
    fd = os.open(writers, os.O_RDWR) if writers.exists() else None
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
        probe = sqlite3.connect(db, timeout=0.5, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            probe.close()
    finally:
        if fd is not None:
            os.close(fd)  # also drops the flock


def no_open_transaction(url: str, pid: int) -> bool:
    """True when none of process `pid`'s sessions on the PostgreSQL server is inside a transaction
    (its row locks, or the event counter's, would stall the other workers)."""
    import psutil
    import psycopg

    proc = psutil.Process(pid)
    connections = proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") else proc.connections("tcp")
    ports = {c.laddr.port for c in connections}
    with psycopg.connect(url) as conn:
        busy = conn.execute("SELECT client_port FROM pg_stat_activity WHERE xact_start IS NOT NULL "
                            "AND pid <> pg_backend_pid()").fetchall()
    return not any(port in ports for (port,) in busy)


def stop_outside_a_write(proc: subprocess.Popen, location, tries: int = 20) -> None:
    """SIGSTOP `proc`, making sure it is not frozen inside a write transaction (which would stall
    every other process for reasons that are not the point of this test)."""
    for _ in range(tries):
        os.kill(proc.pid, signal.SIGSTOP)
        if (no_open_transaction(location, proc.pid) if isinstance(location, str) else write_lock_is_free(location)):
            return
        os.kill(proc.pid, signal.SIGCONT)
    raise AssertionError("could not stop the worker outside a write transaction")


def test_workers_drain_the_queue_through_kills_and_a_stall(location, tmp_path, children, wait_for, orch_cmd,
                                                           clean_env):
    home = tmp_path / "home"
    db = location  # every backend: a SQLite file (the home's own), a PostgreSQL database (conftest.py)
    rng = random.Random(1234)
    with Queue(db) as queue:
        long_task = queue.enqueue("long-task", {"work": 3.0}, max_attempts=10).task

    env = clean_env(PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
    on_db = ["--db", db] if isinstance(db, str) else []
    common = ["--home", str(home), *on_db, "--ttl", "1", "--poll", "0.01", "--idle-exit", "3"]
    out = subprocess.DEVNULL

    def start_worker(name: str, *extra: str) -> subprocess.Popen:
        return children.start(orch_cmd("worker", "--name", name, *common, *extra), env=env, stdout=out, stderr=out)

    look = Look(db)
    try:
        # 1. the worker to be paused takes the long task (nothing else is queued yet)
        paused = start_worker("paused", "--handler", "stubborn_handler:run", "--no-reap")
        wait_for(lambda: look.has_event("leased", task="ORCH-%d" % long_task, worker="paused"),
                 30, "the paused worker to lease the long task")
        stale_epoch = look.store.task(long_task)["epoch"]
        stop_outside_a_write(paused, db)

        # 2. thousands of tasks, four workers, random SIGKILLs with replacements
        with Queue(db) as queue:
            queue.enqueue_many([(f"task-{i}", {"work": rng.choice((0.0, 0.001, 0.005))}) for i in range(TASKS)])
        live = {f"w{i}": start_worker(f"w{i}") for i in range(4)}
        killed: list[str] = []
        for threshold in KILLS_AT:
            wait_for(lambda: look.count("DONE") >= threshold, 90, f"{threshold} tasks done")
            victim = rng.choice(sorted(live))
            # a replacement started just now may not have said so yet: a kill before its
            # `worker_started` would leave nothing to check it against
            wait_for(lambda: look.has_event("worker_started", worker=victim), 30, f"{victim} to start")
            proc = live.pop(victim)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
            killed.append(victim)
            name = f"w{len(live) + len(killed)}"
            live[name] = start_worker(name)

        # 3. the long task was taken from the paused worker and finished by another one
        wait_for(lambda: look.store.task(long_task)["state"] == "DONE", 60, "the long task to be re-leased and completed")
        assert look.store.task(long_task)["epoch"] > stale_epoch
        os.kill(paused.pid, signal.SIGCONT)
        late = wait_for(lambda: look.has_event("stale_rejected", worker="paused", task="ORCH-%d" % long_task,
                                               call="complete"), 30, "the paused worker's late completion")

        # 4. drained: every worker exits on its own once idle
        wait_for(lambda: look.store.count_open() == 0, 120, "every task to be terminal")
        for name, proc in [("paused", paused), *live.items()]:
            assert proc.wait(timeout=30) == 0, name

        # --- what must be true ---
        tables = look.store.dump()
        tasks, effects, rows = tables["tasks"], tables["effects"], tables["events"]
        counts = Counter(t["state"] for t in tasks)
        assert sum(counts.values()) == TASKS + 1
        assert set(counts) <= {"DONE", "FAILED"}
        assert [t["id"] for t in tasks if t["state"] == "FAILED" and t["error"] != "lease_timeout"] == []
        assert len(effects) == counts["DONE"]
        completed = Counter(r["key"] for r in rows if r["event"] == "completed")
        assert [k for k, n in completed.items() if n > 1] == []
        assert sum(completed.values()) == len(effects)
        effect_of = {e["key"]: e for e in effects}
        assert [t["id"] for t in tasks if t["state"] == "DONE"
                and (t["key"] not in effect_of or effect_of[t["key"]]["task"] != t["id"])] == []
        # the late completion was refused with the paused worker's epoch; the effect is another's
        assert late["epoch"] > stale_epoch and late["stale_epoch"] == stale_epoch
        effect = effect_of["long-task"]
        assert effect["worker"] != "paused" and effect["epoch"] > stale_epoch
        assert look.has_event("lease_expired", task="ORCH-%d" % long_task, worker="paused")
        # gap-free event log
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
        # the killed workers really died by SIGKILL: they never wrote `worker_exited`
        exited = {r["worker"] for r in rows if r["event"] == "worker_exited"}
        started = {r["worker"] for r in rows if r["event"] == "worker_started"}
        assert set(killed) <= started and not set(killed) & exited
        assert exited == started - set(killed)
    finally:
        look.close()


# --- ten processes, one key -------------------------------------------------------------------

def _enqueue_at_barrier(db: str, barrier, results) -> None:
    from orchestrator.queue.writes import Queue as ChildQueue

    barrier.wait(timeout=60)
    try:
        with ChildQueue(db) as queue:
            got = queue.enqueue("same-key", {"order": 42, "work": 0.1})
        results.put((os.getpid(), got.task, got.created, None))
    except Exception as exc:  # reported to the test, which fails on it
        results.put((os.getpid(), None, None, repr(exc)))


@pytest.mark.parametrize("database", ["fresh", "existing"])
def test_ten_processes_enqueue_one_key_at_once(database, location):
    db = location  # every backend: a SQLite file, a PostgreSQL database (conftest.py)
    if database == "existing":
        Queue(db).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(10)
    results = ctx.Queue()
    procs = [ctx.Process(target=_enqueue_at_barrier, args=(str(db), barrier, results)) for _ in range(10)]
    try:
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
            assert proc.exitcode == 0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
    assert [o[3] for o in outcomes] == [None] * 10
    assert {o[1] for o in outcomes} == {1}
    assert sorted(o[2] for o in outcomes) == [False] * 9 + [True]

    with Queue(db) as queue:
        assert queue.status()["total"] == 1
        names = [r["event"] for r in queue.events_after(0)]
        assert names == ["enqueued"] + ["duplicate_enqueue"] * 9
        before = queue.store.dump()
        with pytest.raises(KeyConflict):
            queue.enqueue("same-key", {"order": 43, "work": 0.1})
        assert queue.store.dump() == before


# --- a second process holds the write lock ---------------------------------------------------

HOG = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()          # hold the write lock until the test says so
conn.execute("COMMIT")
print("released", flush=True)
"""


def start_hog(children, db: Path) -> subprocess.Popen:
    hog = children.start([sys.executable, "-c", HOG, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert hog.stdout.readline() == "locked\n"
    return hog


def test_work_waits_for_a_held_write_lock_then_continues(tmp_path, children, wait_for):
    db = tmp_path / "home" / "db" / "queue.db"
    config = QueueConfig(busy_timeout=0.05, lock_bound=60.0, lock_bound_wall_floor=60.0)
    with Queue(db, config=config) as queue:
        queue.enqueue_many([(f"k{i}", {}) for i in range(10)])
        outcome = write_past(queue, start_hog(children, db), wait_for, 20)
        assert outcome.get("ok"), outcome
        assert outcome["enqueued"].created
        counts = queue.status()["counts"]
        assert counts["DONE"] == 11 and sum(counts.values()) == 11
        assert [r["seq"] for r in queue.events_after(0)] == list(range(1, 11 + 11 + 11 + 1))


def test_a_lock_held_past_the_bound_raises_db_lock_error_and_writes_nothing(tmp_path, children, dump):
    db = tmp_path / "home" / "db" / "queue.db"
    config = QueueConfig(busy_timeout=0.05, lock_bound=0.3, lock_bound_wall_floor=0.3)
    with Queue(db, config=config) as queue:
        queue.enqueue("k", {})
        before = dump(db)
        hog = start_hog(children, db)
        try:
            with pytest.raises(DbLockError, match=r"^write lock not acquired within 0.3 soak seconds$"):
                queue.enqueue("blocked-out", {})
            assert queue.write.lock_retries > 0
            with pytest.raises(DbLockError):
                queue.operate("cancel", 1, actor="alice")
        finally:
            release(hog)
        assert dump(db) == before
        assert queue.enqueue("after", {}).created
