"""The skip clock (core/skipclock.py): it jumps only when every participant waits, never past the
earliest soak-time event, never backwards; a stopped or dead participant does not hold it; the
database's probe can forbid a jump; every process reads the same time.

The clocks here run at rate 1, so soak time hardly moves on its own: whatever moves it by a
thousand seconds is a jump, which the tests count. No test sleeps for a fixed time."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import sqlite3
import threading
import time

import pytest

from orchestrator.core import skipclock
from orchestrator.core.errors import DbLockError
from orchestrator.core.skipclock import (
    BUSY,
    HOLD,
    LOCK,
    REAP,
    SHIP,
    WAITING,
    WORK,
    Probe,
    SkipClock,
    process_state,
)

DEADLINE = 20.0  # wall seconds any wait of these tests may take at most


def idle_probe(_t: float) -> Probe:
    return Probe(due_now=None, next_due=None, lease_end=None, last_seq=0)


def finish(th) -> None:
    """Join a thread or process; one still waiting after DEADLINE is a stuck clock, a failure."""
    th.join(DEADLINE)
    assert not th.is_alive(), f"{th.name} still waiting after {DEADLINE:g} s"


@pytest.fixture
def clock(tmp_path):
    c = SkipClock.create(tmp_path / "clock.bin", 1_000_000.0, 1.0)
    c.probe = idle_probe
    return c  # not closed: a test's last sleeper may still be on its way out


@pytest.fixture
def until(wait_for):
    """Wait for a condition, at most DEADLINE wall seconds (conftest's `wait_for`)."""
    return lambda cond, what: wait_for(cond, DEADLINE, what, interval=0.001)


def slot_states(c: SkipClock) -> list[int]:
    return [c._slot(i)[2] for i in range(c._used())]


def sleeper(c: SkipClock, soak: float, out: list, started: threading.Event | None = None) -> threading.Thread:
    def run() -> None:
        with c.participant():
            if started is not None:
                started.set()
            t0 = c.now()
            c.sleep(soak)
            out.append((soak, c.now() - t0))

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def idle_worker(c: SkipClock, looked: float) -> threading.Event:
    """A thread that waits for work (its last look at the queue at soak time `looked`); the
    event is set once it is woken, its `jumps` the clock's jump count then (read before it
    leaves: once it has left, the others may jump)."""
    woken = threading.Event()

    def run() -> None:
        with c.participant():
            c.wait(None, None, WORK, seen=looked)
            woken.jumps = c.jumps
            woken.set()

    threading.Thread(target=run, daemon=True).start()
    return woken


def test_sleepers_jump_to_each_deadline_in_order_never_past_it(clock, until):
    out: list = []
    with clock.participant():  # busy until all three wait: no jump before that
        threads = [sleeper(clock, s, out) for s in (3600.0, 60.0, 900.0)]
        until(lambda: slot_states(clock).count(WAITING) == 3, "the three sleepers wait")
        assert clock.jumps == 0
    for th in threads:
        finish(th)
    assert [s for s, _ in out] == [60.0, 900.0, 3600.0]  # woken in soak-time order
    for soak, slept in out:
        assert soak <= slept < soak + 1.0  # never woken early; late only by the run of rate 1
    assert clock.jumps == 3


def test_no_jump_while_a_participant_is_busy(clock, until):
    busy_go = threading.Event()
    entered = threading.Event()

    def busy() -> None:
        with clock.participant():
            entered.set()
            busy_go.wait(DEADLINE)  # works (not a clock wait): the clock must not jump
            clock.sleep(10_000.0)

    b = threading.Thread(target=busy, daemon=True)
    b.start()
    entered.wait(DEADLINE)
    out: list = []
    s = sleeper(clock, 500.0, out)
    until(lambda: WAITING in slot_states(clock), "the sleeper waits")
    assert clock.jumps == 0 and not out
    busy_go.set()  # now both wait: the clock jumps to the sleeper's deadline, not the busy one's
    finish(s)
    assert out and 500.0 <= out[0][1] < 501.0
    finish(b)  # then, alone, to the other one's


def test_time_never_runs_backwards_across_jumps(clock):
    readings: list[float] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            readings.append(clock.now())

    r = threading.Thread(target=reader, daemon=True)
    r.start()
    out: list = []
    threads = [sleeper(clock, 10.0 * (k + 1), out) for k in range(20)]
    for th in threads:
        finish(th)
    stop.set()
    finish(r)
    assert clock.jumps >= 10
    assert all(b >= a for a, b in zip(readings, readings[1:]))


def test_unseen_due_work_wakes_the_workers_instead_of_jumping(clock, until):
    due = {"now": None}
    clock.probe = lambda t: Probe(due_now=due["now"], next_due=None, lease_end=None, last_seq=0)
    woken = idle_worker(clock, clock.now())
    until(lambda: WAITING in slot_states(clock), "the worker waits")
    assert not woken.is_set()
    due["now"] = clock.now()  # a task fell due after the worker's look (a backoff ended)
    out: list = []
    sleeper(clock, 1000.0, out)
    until(woken.is_set, "the worker is woken")
    assert woken.jumps == 0  # woken first: no jump happened before it looked again


def test_due_work_unseen_by_one_worker_wakes_that_one_not_one_that_looked_since(clock, until):
    """The check before a jump wakes one worker that has not looked since the task fell due: not
    the one that looked after it (woken again and again, it would find nothing each time, say
    at its in-flight cap, and the clock would never move on)."""
    base = clock.now()
    with clock.participant():
        stale = idle_worker(clock, base - 50.0)
        fresh = idle_worker(clock, base + 1.0)  # looked after the task fell due
        until(lambda: slot_states(clock).count(WAITING) == 2, "both workers wait")
        clock.probe = lambda t: Probe(due_now=base, next_due=None, lease_end=None, last_seq=0)
    until(stale.is_set, "the worker that had not looked is woken")
    assert stale.jumps == 0 and not fresh.is_set()
    assert slot_states(clock).count(WAITING) == 1


def test_a_task_falling_due_wakes_one_worker_the_one_that_looked_last(clock, until):
    """A jump to a backoff's end wakes one idle worker, not all (the others would each take the
    write lock to find nothing): the one that looked last, likeliest to be still spinning."""
    base = clock.now()
    leased = threading.Event()  # once a worker is woken, the task is leased: nothing is due
    clock.probe = lambda t: (idle_probe(t) if leased.is_set() else
                             Probe(due_now=None, next_due=base + 120.0, lease_end=None, last_seq=0))
    with clock.participant():  # no jump before all three wait
        workers = {looked: idle_worker(clock, base - looked) for looked in (30.0, 10.0, 20.0)}
        until(lambda: slot_states(clock).count(WAITING) == 3, "the three workers wait")
        leased_on = threading.Thread(target=lambda: (workers[10.0].wait(DEADLINE), leased.set()), daemon=True)
        leased_on.start()
    until(lambda: any(w.is_set() for w in workers.values()), "a worker is woken")
    assert workers[10.0].is_set() and workers[10.0].jumps == 1
    assert not workers[30.0].is_set() and not workers[20.0].is_set()
    assert slot_states(clock).count(WAITING) == 2


def test_a_kick_wakes_the_worker_that_looked_last_first(clock, until):
    base = clock.now()
    with clock.participant():
        workers = {looked: idle_worker(clock, base - looked) for looked in (5.0, 1.0, 9.0)}
        until(lambda: slot_states(clock).count(WAITING) == 3, "the three workers wait")
        clock.kick(1)
        until(workers[1.0].is_set, "the worker that looked last is woken")
        assert slot_states(clock).count(WAITING) == 2
        clock.kick(2)
        until(lambda: workers[5.0].is_set() and workers[9.0].is_set(), "the other two are woken")


def test_a_batch_of_unshipped_events_wakes_the_shipper_and_does_not_hold_the_jump(clock, until):
    """The shipper is an observer: a few events it has yet to ship neither wake it nor hold the
    clock; SHIP_BACKLOG of them wake it, and the clock jumps on while it ships."""
    last_seq = [10]
    clock.probe = lambda t: Probe(due_now=None, next_due=None, lease_end=None, last_seq=last_seq[0])
    shipped = threading.Event()
    release = threading.Event()

    def shipper() -> None:
        with clock.participant():
            clock.wait(None, None, SHIP, seen=5)  # 5 shipped of 10
            shipped.set()
            release.wait(2 * DEADLINE)  # at work (busy) while the others go on
            clock.wait(None, None, SHIP, seen=last_seq[0])

    sh = threading.Thread(target=shipper, daemon=True)
    sh.start()
    until(lambda: WAITING in slot_states(clock), "the shipper waits")
    out: list = []
    finish(sleeper(clock, 300.0, out))  # 5 events behind: no wake, and a jump
    assert out and 300.0 <= out[0][1] < 301.0 and clock.jumps == 1
    assert not shipped.is_set()
    last_seq[0] = 5 + skipclock.SHIP_BACKLOG
    out.clear()
    s = sleeper(clock, 300.0, out)
    until(shipped.is_set, "the shipper is woken for a batch of events")
    finish(s)  # the busy shipper did not hold the jump
    assert out and 300.0 <= out[0][1] < 301.0 and clock.jumps == 2
    release.set()


def test_a_log_reader_waits_for_the_shipper_and_holds_the_jump_meanwhile(clock, until):
    clock.probe = lambda t: Probe(due_now=None, next_due=None, lease_end=None, last_seq=10)
    at_five = threading.Event()
    go_on = threading.Event()
    read: list = []

    def shipper() -> None:
        with clock.participant():
            clock.wait(None, None, SHIP, seen=5)
            at_five.set()
            go_on.wait(DEADLINE)  # shipping events 6..10
            clock.wait(None, None, SHIP, seen=10)

    def reader() -> None:
        with clock.participant():
            clock.await_log(10, 60.0)
            read.append(clock.jumps)

    threading.Thread(target=shipper, daemon=True).start()
    until(lambda: WAITING in slot_states(clock), "the shipper waits")
    assert not at_five.is_set()  # 5 events behind: not woken for so few
    r = threading.Thread(target=reader, daemon=True)
    r.start()
    until(at_five.is_set, "the reader's wait wakes the shipper")
    until(lambda: WAITING in slot_states(clock), "the reader waits")
    out: list = []
    s = sleeper(clock, 30.0, out)  # a jump to 30 s would pass before the log is read
    until(lambda: slot_states(clock).count(WAITING) == 2, "the reader and the sleeper wait")
    assert clock.jumps == 0 and not read
    go_on.set()  # the shipper has shipped 10: the reader goes on before any jump
    finish(r)
    assert read == [0]
    finish(s)


def test_a_log_reader_with_no_shipper_waits_its_deadline_only(clock):
    clock.probe = lambda t: Probe(due_now=None, next_due=None, lease_end=None, last_seq=10)
    read: list = []

    def reader() -> None:
        with clock.participant():
            t0 = clock.now()
            clock.await_log(10, 60.0)
            read.append(clock.now() - t0)

    r = threading.Thread(target=reader, daemon=True)
    r.start()
    finish(r)
    assert read and 60.0 <= read[0] < 61.0 and clock.jumps == 1


def test_a_timer_that_ran_out_in_a_busy_stretch_is_woken_by_the_next_look(clock, until, monkeypatch):
    """A waiter whose deadline passed while the clock ran at its busy rate (not by a jump) is
    woken by whoever looks next, not at its own next periodic look."""
    monkeypatch.setattr(skipclock, "LOOK_WALL", 60.0)  # its own look would come after DEADLINE
    out: list = []
    woke = threading.Event()
    with clock.participant():  # busy until both wait: no jump before that
        late = sleeper(clock, 1000.0, out)
        until(lambda: WAITING in slot_states(clock), "the sleeper waits")
        deadline = clock._slot(slot_states(clock).index(WAITING))[4]

        def other() -> None:
            with clock.participant():
                clock.sleep(deadline - 0.01 - clock.now())  # the jump wakes this one only
                woke.set()
                until(lambda: clock.now() > deadline, "soak time to run past the other's deadline")  # busy, rate 1
                clock.sleep(5000.0)

        o = threading.Thread(target=other, daemon=True)
        o.start()
        until(lambda: slot_states(clock).count(WAITING) == 2, "both wait")
    until(woke.is_set, "the first jump")
    finish(late)
    assert out and 1000.0 <= out[0][1] < 1001.0
    finish(o)


@pytest.mark.parametrize(("gives_up", "waited"), [(None, 100.0), (30.0, 30.0)],
                         ids=["until-the-release", "until-its-bound"])
def test_a_writer_kept_out_by_a_hold_waits_for_its_release_not_its_backoff(clock, until, gives_up, waited):
    """A writer's backoff would be a jump to a try that meets the lock again: while a HOLD holds
    it, the writer waits for the release (or its lock bound, when that comes first)."""
    tried: list = []

    def holder() -> None:
        with clock.participant():
            clock.wait(None, 100.0, HOLD)  # holds the write lock meanwhile
            clock.released()

    def writer() -> None:
        with clock.participant():
            t0 = clock.now()
            clock.wait(None, 0.05, LOCK, seen=0.0 if gives_up is None else t0 + gives_up)
            tried.append((clock.now() - t0, clock.jumps))

    with clock.participant():  # busy until both wait: no jump before that
        h = threading.Thread(target=holder, daemon=True)
        h.start()
        until(lambda: WAITING in slot_states(clock), "the hold")
        w = threading.Thread(target=writer, daemon=True)
        w.start()
        until(lambda: slot_states(clock).count(WAITING) == 2, "the writer waits")
        bound = skipclock.INF if gives_up is None else gives_up
        assert clock._slot(slot_states(clock).index(WAITING, 2))[4] - clock.now() > min(bound, 29.0)
    finish(w)
    finish(h)
    # one jump to the release or the bound (the writer began a little after the hold)
    assert tried and waited - 1.0 < tried[0][0] < waited + 1.0 and tried[0][1] == 1


def test_a_writer_with_no_hold_waits_its_backoff(clock):
    tried: list = []

    def writer() -> None:
        with clock.participant():
            t0 = clock.now()
            clock.wait(None, 0.5, LOCK)  # a foreign writer's lock: retry after the backoff
            tried.append(clock.now() - t0)

    w = threading.Thread(target=writer, daemon=True)
    w.start()
    finish(w)
    assert tried and 0.5 <= tried[0] < 1.0


class _Recorded:
    """A connection whose statements are written down (then run as usual)."""

    def __init__(self, conn: sqlite3.Connection, said: list[str]):
        self._conn, self._said = conn, said

    def execute(self, sql: str, *args):
        self._said.append(sql)
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


def test_a_writer_that_meets_a_hold_is_told_busy_by_sqlite_without_its_busy_wait(clock, tmp_path, until):
    """While the clock shows a hold (the lock hog's HOLD), a writer's `BEGIN IMMEDIATE` runs with
    no busy wait: SQLite still answers (busy while the lock is held, a transaction once it is
    free), and the writer's busy wait is back for its next statement."""
    from orchestrator.queue.writes import Queue

    queue = Queue(tmp_path / "q.db", clock)
    said: list[str] = []
    queue.write.conn = _Recorded(queue.write.conn, said)
    hog = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    hog.execute("BEGIN IMMEDIATE")  # a real second connection holds the write lock
    try:
        with pytest.raises(DbLockError):
            queue.write.try_once(lambda tx: tx.last_seq())
        assert "PRAGMA busy_timeout=0" not in said  # no hold on the clock: SQLite's busy wait
        assert not clock.holding()
        held, done = threading.Event(), threading.Event()

        def holder() -> None:
            with clock.participant():
                held.set()
                clock.wait(done, 1e9, HOLD)

        clock.enter()  # this thread is at work: the clock cannot jump to the hold's end
        h = threading.Thread(target=holder, daemon=True)
        h.start()
        until(lambda: held.is_set() and clock.holding(), "the clock shows the hold")
        said.clear()
        with pytest.raises(DbLockError):
            queue.write.try_once(lambda tx: tx.last_seq())
        assert said[:2] == ["PRAGMA busy_timeout=0", "BEGIN IMMEDIATE"]
        assert queue.write.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 1  # restored
        hog.execute("ROLLBACK")  # the lock is free though the clock still shows the hold
        assert queue.write.try_once(lambda tx: tx.last_seq()) is not None
        clock.set(done)
        finish(h)
        clock.leave()
        assert not clock.holding()
    finally:
        if hog.in_transaction:
            hog.execute("ROLLBACK")
        hog.close()
        queue.close()


def test_the_database_bounds_the_jump(clock, until):
    base = clock.now()
    clock.probe = lambda t: Probe(due_now=None, next_due=base + 120.0, lease_end=base + 600.0, last_seq=0)
    woken = idle_worker(clock, base)
    until(woken.is_set, "the worker is woken when the backoff ends")
    assert base + 120.0 <= clock.now() < base + 121.0  # jumped to the backoff's end, not further


def test_a_frozen_clock_does_not_jump(clock, until):
    clock.freeze()
    started = threading.Event()
    out: list = []
    s = sleeper(clock, 5.0, out, started)  # rate 1: five wall seconds would pass without a jump
    started.wait(DEADLINE)
    until(lambda: WAITING in slot_states(clock), "the sleeper waits")
    t = clock.now()
    clock.kick()  # nothing to wake; the clock still must not jump
    assert clock.jumps == 0 and clock.now() < t + 5.0
    s.join(0.01)


def test_freezing_the_clock_wakes_the_workers_that_wait_for_work_and_no_timer(clock, until):
    """No jump wakes a worker once the clock is frozen (the run winds down): the freeze wakes the
    idle workers, so one that joined the run can look at the run's status and leave."""
    started = threading.Event()
    out: list = []
    with clock.participant():
        sleeper(clock, 3600.0, out, started)
        started.wait(DEADLINE)
        worker = idle_worker(clock, clock.now())
        until(lambda: slot_states(clock).count(WAITING) == 2, "the worker and the sleeper wait")
        clock.freeze()
        until(worker.is_set, "the idle worker is woken")
        assert worker.jumps == 0 and not out  # no jump; the sleeper's timer still runs
        assert slot_states(clock).count(WAITING) == 1


def _busy_child(path: str, ready, go) -> None:
    c = SkipClock(path)
    c.enter()
    ready.set()
    go.wait(DEADLINE)  # busy until killed or stopped


def _read_child(path: str, q) -> None:
    c = SkipClock(path)
    q.put((time.time(), c.now()))


def test_a_stopped_participant_does_not_hold_the_clock_and_a_killed_one_is_freed(clock, until):
    ctx = multiprocessing.get_context("fork")
    ready, go = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_busy_child, args=(str(clock.path), ready, go), daemon=True)
    child.start()
    try:
        assert ready.wait(DEADLINE)
        assert BUSY in slot_states(clock)
        clock.signal(child.pid, signal.SIGSTOP)  # under the clock's lock: never stopped inside it
        until(lambda: process_state(child.pid, skipclock._starttime(child.pid)) == "stopped", "the child is stopped")
        out: list = []
        finish(sleeper(clock, 700.0, out))
        assert out, "a SIGSTOPped participant held the clock"
        os.kill(child.pid, signal.SIGKILL)
        finish(child)
        out.clear()
        finish(sleeper(clock, 50.0, out))
        assert out and clock._slot(0)[2] in (0, 1)
        assert slot_states(clock).count(BUSY) == 0  # the dead child's slot was freed
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)


def test_a_check_reads_proc_once_per_signal_and_a_look_finds_an_outsiders_stop(clock, until, monkeypatch):
    """A check on the way into a wait takes a participant it saw running to run on (no `/proc`
    read each time) until a signal goes through the clock; a SIGSTOP behind the clock's back is
    found by the waiters' periodic look."""
    ctx = multiprocessing.get_context("fork")
    ready, go = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_busy_child, args=(str(clock.path), ready, go), daemon=True)
    child.start()
    reads: list[int] = []
    real = skipclock.process_state
    monkeypatch.setattr(skipclock, "process_state", lambda pid, start: reads.append(pid) or real(pid, start))
    try:
        assert ready.wait(DEADLINE)

        def check() -> None:
            with clock._locked():
                clock._try_jump()

        check()
        check()
        assert reads == [child.pid]  # read once, then remembered
        clock.signal(child.pid, signal.SIGCONT)  # any signal through the clock: read again
        check()
        assert reads == [child.pid, child.pid]
        os.kill(child.pid, signal.SIGSTOP)  # an outsider's stop: the clock is not told
        until(lambda: real(child.pid, skipclock._starttime(child.pid)) == "stopped", "the child is stopped")
        out: list = []
        finish(sleeper(clock, 700.0, out))
        assert out and 700.0 <= out[0][1] < 701.0, "a participant stopped behind the clock's back held it"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(DEADLINE)


def _locking_child(path: str, ready) -> None:
    """A process that takes and lets go of the clock's lock as fast as it can (two threads, as a
    worker has: its main loop and its heartbeat)."""
    c = SkipClock(path)

    def spin() -> None:
        while True:
            c.kick(topic=REAP)

    threading.Thread(target=spin, daemon=True).start()
    ready.set()
    spin()


def test_sigstop_sent_by_the_clock_never_stops_a_process_holding_its_lock(clock, until):
    """`kill` returns before the target has stopped: a thread of it woken from the lock's wait
    by our own release could take the lock and then stop holding it, and every participant of
    the run (the thread that would send SIGCONT among them) would wait on it for ever. The clock
    lets go of its lock only once every thread of the target has stopped."""
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_locking_child, args=(str(clock.path), ready), daemon=True)
    child.start()
    held = 0
    try:
        assert ready.wait(DEADLINE)
        for _ in range(300):
            assert clock.signal(child.pid, signal.SIGSTOP)
            until(lambda: skipclock.threads_stopped(child.pid), "every thread of the child stopped")
            fd = os.open(clock.path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held += 1  # stopped holding the clock's lock
            finally:
                os.close(fd)
            os.kill(child.pid, signal.SIGCONT)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(DEADLINE)
    assert held == 0, f"{held} of 300 SIGSTOPs stopped the child holding the clock's lock"


def test_every_process_reads_the_same_time(clock):
    out: list = []
    finish(sleeper(clock, 86_400.0, out))  # a jump a day ahead, then compare
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_read_child, args=(str(clock.path), q))
    child.start()
    wall, theirs = q.get(timeout=DEADLINE)
    finish(child)
    ours = clock.now() - (time.time() - wall)  # our reading at the child's wall instant (rate 1)
    assert abs(theirs - ours) < 0.05


def test_a_jump_left_half_written_by_a_killed_writer_is_repaired(clock):
    """SIGKILL between the two writes of the sequence lock leaves it odd: readers would spin for
    ever. A reader that keeps finding it odd takes the lock (free: its holder is dead) and closes it."""
    head = list(clock._header())
    head[0] += 1  # odd: a jump begun, never finished
    head[1] += 3600.0  # its new base, complete in the first write
    from orchestrator.core.skipclock import HEADER

    HEADER.pack_into(clock._map, 0, *head)
    assert clock.now() >= head[1]
    assert clock._header()[0] % 2 == 0


def test_skip_jobs_run_at_their_soak_times_and_outlive_a_failing_job(clock):
    from orchestrator.soak.skipjobs import Job, SkipJobs, every

    start = clock.now()
    runs: list[tuple[str, float]] = []

    def tick() -> None:
        runs.append(("tick", clock.now() - start))

    def boom() -> None:
        runs.append(("boom", clock.now() - start))
        raise RuntimeError("a bug in a job")

    def done() -> bool:
        return sum(1 for name, _ in runs if name == "tick") >= 4

    jobs = [Job("tick", tick, every(600.0, start)), Job("boom", boom, every(1000.0, start))]
    loop = SkipJobs(clock, jobs, threading.Event(), done)
    loop.start()
    finish(loop)
    assert not loop.is_alive()
    ticks = [t for name, t in runs if name == "tick"]
    assert ticks[0] < 1.0 and [round(t) for t in ticks[1:]] == [600, 1200, 1800]  # jumped to each
    assert [round(t) for name, t in runs if name == "boom"][:2] == [0, 1]  # failed, ran again a soak second on


def test_a_probe_that_cannot_answer_holds_the_jump_but_stops_no_one(clock):
    calls = {"n": 0}

    def flaky(t: float) -> Probe:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise sqlite3.OperationalError("database is locked")
        return idle_probe(t)

    clock.probe = flaky
    out: list = []
    finish(sleeper(clock, 900.0, out))
    assert out and calls["n"] > 3 and clock.jumps == 1


def reaper(c: SkipClock, out: list) -> threading.Thread:
    """A thread that waits as the supervisor's reaper does: no timer, woken for an expired lease."""
    def run() -> None:
        with c.participant():
            c.wait(None, None, REAP)
            out.append(c.now())

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_the_reaper_is_woken_at_a_lease_expiry_without_a_timer_of_its_own(clock):
    end = clock.now() + 300.0
    clock.probe = lambda t: Probe(due_now=None, next_due=None, lease_end=end, last_seq=0)
    out: list = []
    finish(reaper(clock, out))  # alone and waiting "until woken": the jump goes to the lease's end
    assert out and end <= out[0] < end + 1.0 and clock.jumps == 1


def test_an_expired_lease_not_yet_returned_wakes_the_reaper_instead_of_jumping(clock):
    end = clock.now() - 1.0  # expired before the reaper waits (its last round missed it)
    clock.probe = lambda t: Probe(due_now=None, next_due=None, lease_end=end, last_seq=0)
    out: list = []
    t0 = clock.now()
    finish(reaper(clock, out))
    assert out and out[0] < t0 + 1.0 and clock.jumps == 0


def _jumping_child(path: str, jumps: int) -> None:
    c = SkipClock(path)
    c.probe = idle_probe
    with c.participant():  # alone: every sleep is a jump
        for _ in range(jumps):
            c.sleep(1.0)


def test_a_reader_without_the_lock_never_sees_a_jump_half_written(clock):
    """`now()` and the header's fields are read without the lock while another process jumps:
    no reading may show a rate of 0 or a time before an earlier one (a zero-filled record)."""
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_jumping_child, args=(str(clock.path), 3000), daemon=True)
    child.start()
    rates, times = set(), []
    while child.is_alive():
        rates.add(clock.rate)
        times.append(clock.now())
    finish(child)
    assert child.exitcode == 0 and clock.jumps == 3000
    assert rates == {1.0}
    assert all(b >= a for a, b in zip(times, times[1:]))
