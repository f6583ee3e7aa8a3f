"""Writers in several processes at once, on every backend (the `location` fixture), through the
storage interface only.

- Many writer processes commit events side by side, some holding their transaction open after
  writing an event (an event "committed late"), while this process polls the shipping cursor
  (`events_after(last)`): the log is gap-free (seq 1..N), and the reader never skips an event,
  that is every batch it reads starts right after the last seq it saw (docs/storage.md, guarantee 5).
- A foreign writer holds the write lock (`Writes.unqueued`, the lock hog's way in): the queue's
  writers wait and retry, then go on once it lets go; past the lock bound `DbLockError` is raised
  and nothing is written.
- On PostgreSQL an idle worker is woken by the commit that makes a task due (LISTEN/NOTIFY), not
  by its next look.
"""

from __future__ import annotations

import multiprocessing
import random
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

from orchestrator.core.clock import WALL
from orchestrator.core.errors import DbLockError
from orchestrator.core.model import QueueConfig
from orchestrator.queue.writes import Queue
from orchestrator.worker.loop import Worker, WorkerConfig

WRITERS = 8
ROUNDS = 40


def _write_side_by_side(location, number: int, barrier, results, commits, committed) -> None:
    """One writer process: ROUNDS transactions of 1-3 events; every third one keeps its
    transaction open after its events until another writer has committed (numbered at insert,
    they would commit late), at most a few ms: where writers take turns (SQLite) none can."""
    rng = random.Random(number)
    try:
        with Queue(location, WALL, QueueConfig(lock_bound=120.0, lock_bound_wall_floor=120.0)) as queue:
            barrier.wait(timeout=60)
            written = 0
            for i in range(ROUNDS):
                n = rng.randint(1, 3)
                pause = 0.002 + rng.random() * 0.01 if i % 3 == 0 else 0.0

                def work(tx, n=n, pause=pause, i=i) -> None:
                    before = commits.value
                    for j in range(n):
                        tx.insert_event(0.0, 0.0, "checkpoint", None, None, None, None, None, None,
                                        f"writer-{number}", None, None, f"{i}.{j}", None)
                    if pause:  # the transaction stays open with its events written
                        with committed:
                            committed.wait_for(lambda: commits.value > before, timeout=pause)

                queue.write(work)
                with committed:
                    commits.value += 1
                    committed.notify_all()
                written += n
        results.put((number, written, None))
    except Exception as exc:  # reported to the test, which fails on it
        results.put((number, 0, repr(exc)))


def test_concurrent_writers_leave_a_gap_free_log_that_a_polling_reader_never_skips(location):
    Queue(location, WALL).close()  # the schema exists before the writers race
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WRITERS + 1)
    results = ctx.Queue()
    commits, committed = ctx.Value("i", 0), ctx.Condition()  # transactions committed, by all writers
    procs = [ctx.Process(target=_write_side_by_side, args=(location, n, barrier, results, commits, committed))
             for n in range(WRITERS)]
    seen: list[int] = []
    skipped: list[tuple[int, int]] = []
    try:
        for proc in procs:
            proc.start()
        with Queue(location, WALL) as reader:
            barrier.wait(timeout=60)
            last, idle_after_exit = 0, 0
            while idle_after_exit < 2:
                done = all(not proc.is_alive() for proc in procs)
                rows = reader.events_after(last, 50)
                if rows and rows[0]["seq"] != last + 1:
                    skipped.append((last, rows[0]["seq"]))
                for row in rows:
                    if row["seq"] != (seen[-1] + 1 if seen else 1):
                        skipped.append((seen[-1] if seen else 0, row["seq"]))
                    seen.append(row["seq"])
                last = seen[-1] if seen else 0
                idle_after_exit = idle_after_exit + 1 if done and not rows else 0
            outcomes = [results.get(timeout=60) for _ in procs]
            final = [r["seq"] for r in reader.events_after(0, 1_000_000)]
            assert reader.store.integrity_check() == ["ok"]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
    assert [o[2] for o in outcomes] == [None] * WRITERS
    total = sum(o[1] for o in outcomes)
    assert total >= WRITERS * ROUNDS
    assert final == list(range(1, total + 1))  # gap-free, in seq order
    assert skipped == [] and seen == final  # the polling reader saw every event, in order, none skipped


HOG = r"""
import sys
from orchestrator.core.clock import WALL
from orchestrator.core.model import QueueConfig
from orchestrator.queue.writes import Queue

class Release(Exception):
    pass

def hold(tx):
    print("locked", flush=True)
    sys.stdin.readline()          # hold the write lock until the test says so
    raise Release                 # roll back: the hog writes nothing

with Queue(sys.argv[1], WALL, QueueConfig(lock_bound=600.0)) as queue:
    try:
        queue.write.unqueued(hold)
    except Release:
        print("released", flush=True)
"""


def start_hog(children, location) -> subprocess.Popen:
    hog = children.start([sys.executable, "-c", HOG, str(location)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert hog.stdout.readline() == "locked\n"
    return hog


def release(hog: subprocess.Popen) -> None:
    hog.stdin.write("go\n")
    hog.stdin.flush()
    assert hog.stdout.readline() == "released\n"
    assert hog.wait(timeout=10) == 0


def write_past(queue: Queue, hog: subprocess.Popen, wait_for, limit: int,
               while_held: Callable[[], object] = lambda: None) -> dict:
    """While `hog` holds the write lock, a thread enqueues one more task, then leases and completes
    up to `limit`: it must wait (retry, nothing gets through), and `while_held` runs meanwhile.
    Then the hog lets go; returns what the writer did (`enqueued`, `ok`, or its `error`)."""
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["enqueued"] = queue.enqueue("during-the-lock", {})
            for lease in queue.lease("w1", limit=limit):
                queue.complete(lease.task, lease.epoch, "w1")
            outcome["ok"] = True
        except Exception as exc:  # surfaced by the callers' assertions
            outcome["error"] = exc

    writer = threading.Thread(target=work)
    writer.start()
    try:
        wait_for(lambda: queue.write.lock_retries >= 3, 30, "the writer to retry the held lock")
        assert writer.is_alive() and outcome == {}  # it waits; nothing got through
        while_held()
    finally:
        release(hog)
        writer.join(timeout=30)
    return outcome


def test_writers_wait_for_a_foreign_writer_then_go_on(location, children, wait_for):
    config = QueueConfig(busy_timeout=0.05, lock_bound=60.0, lock_bound_wall_floor=60.0, writer_queue=False)
    with Queue(location, WALL, config) as queue:
        queue.enqueue_many([(f"k{i}", {}) for i in range(5)])

        def another_writer_fails_at_once() -> None:
            with Queue(location, WALL, config) as other, pytest.raises(DbLockError):
                other.write.try_once(lambda tx: tx.last_seq())  # how a db_lock fault surfaces in a worker

        outcome = write_past(queue, start_hog(children, location), wait_for, 10, another_writer_fails_at_once)
        assert outcome.get("ok"), outcome
        counts = queue.status()["counts"]
        assert counts["DONE"] == 6 and sum(counts.values()) == 6
        assert [r["seq"] for r in queue.events_after(0)] == list(range(1, 6 + 6 + 6 + 1))


def test_a_lock_held_past_the_bound_raises_db_lock_error_and_writes_nothing(location, children):
    config = QueueConfig(busy_timeout=0.05, lock_bound=0.3, lock_bound_wall_floor=0.3, writer_queue=False)
    with Queue(location, WALL, config) as queue:
        queue.enqueue("k", {})
        before = queue.store.dump()
        hog = start_hog(children, location)
        try:
            with pytest.raises(DbLockError, match=r"^write lock not acquired within 0.3 soak seconds$"):
                queue.enqueue("blocked-out", {})
            assert queue.write.lock_retries > 0
            with pytest.raises(DbLockError):
                queue.operate("cancel", 1, actor="alice")
            assert queue.status()["total"] == 1  # readers go on meanwhile
        finally:
            release(hog)
        assert queue.store.dump() == before
        assert queue.enqueue("after", {}).created


@pytest.mark.pg
def test_an_idle_worker_on_postgresql_is_woken_by_the_enqueue_not_its_next_look(pg_database, wait_for):
    url = pg_database()
    with Queue(url, WALL) as work, Queue(url, WALL) as beats, Queue(url, WALL) as producer:
        looked = threading.Event()
        has_due = work.has_due

        def look() -> bool:  # the worker's look at the queue; after the first, it waits its poll
            found = has_due()
            looked.set()
            return found

        work.has_due = look
        worker = Worker(work, WorkerConfig(name="w1", poll=3600.0, max_tasks=1),  # a look an hour
                        handler=lambda ctx: {"ok": True}, heartbeat_queue=beats)
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        assert looked.wait(30), "the worker never looked at the queue"
        task = producer.enqueue("woken", {"work": 0.0}).task
        runner.join(30)  # without the notification it would sleep out its hour
        assert not runner.is_alive(), "the idle worker was not woken by the enqueue"
        assert producer.get(task).state == "DONE"


def test_a_stale_report_that_leases_its_own_task_again_runs_it_under_the_new_lease(location, clock):
    """A worker paused past its lease reports late: the report is refused (stale) and, in the same
    transaction, leases the next due task, which can be that very task at a new epoch (the reaper
    returned it). The new lease is the worker's own: letting go of the old one must not drop it
    (the worker once kept its leases by task id and died on a KeyError here)."""
    config = QueueConfig(lease_ttl=30.0)
    with Queue(location, clock, config) as work, Queue(location, clock, config) as beats, \
            Queue(location, clock, config) as other:
        task = other.enqueue("again", {}).task
        epochs: list[int] = []
        reaped: list = []

        def handler(ctx) -> dict:  # (an assertion here would be a handler failure: checked after)
            epochs.append(ctx.epoch)
            if ctx.epoch == 1:  # paused past the lease; the reaper returns the task meanwhile
                clock.advance(config.lease_ttl + 1.0)
                reaped.extend(other.reap())
                clock.advance(3600.0)  # past the retry's backoff: due again when the late report leases
            return {"epoch": ctx.epoch}

        worker = Worker(work, WorkerConfig(name="w1", max_tasks=2), handler=handler, heartbeat_queue=beats)
        assert worker.run() == 0
        assert reaped == [(task, "PENDING")] and epochs == [1, 2]
        assert other.get(task).state == "DONE"
        story = [(e["event"], e["epoch"]) for e in other.history(task)
                 if e["event"] in ("stale_rejected", "leased", "completed")]
        assert story == [("leased", 1), ("stale_rejected", 1), ("leased", 2), ("completed", 2)]
